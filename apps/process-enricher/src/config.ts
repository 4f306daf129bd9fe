// process-enricher's options: its own, the shared NATS ones, metrics port, log level, instance.
import { hostname } from 'node:os';
import { natsOptions, partitionOptions } from '@kappa/bus';
import { ConfigError, boolean, duration, integer, list, oneOf, string } from '@kappa/config';
import type { ConfigOf, Option } from '@kappa/config';
import { logLevels } from '@kappa/observability';

/**
 * Extra redaction patterns, comma-separated; `\,` is a comma inside a pattern (e.g. `\d{3\,}`).
 * Each is checked here, so a bad pattern is a start-up error naming the flag.
 */
function patternList(description: string): Option<RegExp[], true> {
  const accepted = 'comma-separated regular expressions (write \\, for a comma inside one)';
  return {
    description,
    accepted,
    defaultValue: [],
    isSwitch: false,
    secret: false,
    parse(raw: string): RegExp[] {
      const sources = raw
        .split(/(?<!\\),/)
        .map((s) => s.replace(/\\,/g, ',').trim())
        .filter((s) => s.length > 0);
      return sources.map((source) => {
        try {
          return new RegExp(source);
        } catch (cause) {
          throw new ConfigError('redactPattern', source, `${accepted}; ${(cause as Error).message}`, '--redact-pattern');
        }
      });
    },
  } as Option<RegExp[], true>;
}

export const enricherOptions = {
  node: string({ description: 'node name: consumes kappa.flow.captured.<node>, publishes kappa.flow.enriched.p<k>.<node>', default: hostname() }),
  procRoot: string({ description: 'procfs of the node (the host /proc when run in a container with hostPID)', default: '/proc' }),
  cgroupRoot: string({ description: 'cgroup v2 mount (default: found in /proc/mounts, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified)' }),
  criSocket: list({ description: 'CRI runtime sockets to try for container names, or "none"', default: ['/run/containerd/containerd.sock', '/run/crio/crio.sock'] }),
  redact: boolean({ description: 'redact secrets in command lines (see README); --redact=false or --no-redact turns it off', default: true }),
  noRedact: boolean({ description: 'turn command-line redaction off' }),
  redactPattern: patternList('extra patterns to redact in command lines: a match becomes ***, or only its capture groups when it has some'),
  cmdlineMaxLength: integer({ description: 'longest command line kept (characters, after redaction)', default: 4096, min: 16, max: 1_048_576 }),
  processCacheSize: integer({ description: 'processes remembered by (pid, start time)', default: 16_384, min: 1 }),
  processCacheTtl: duration({ description: 'how long a remembered process is trusted before /proc is read again', default: '5m', minMs: 100 }),
  cgroupCacheSize: integer({ description: 'cgroups remembered by id (present and recently removed)', default: 200_000, min: 16 }),
  execSocket: string({ description: 'unix socket where capture sends what it saw at each exec (command lines of processes gone before enrichment), or "none" (default: /run/kappa/<node>/exec.sock, where capture of the same --node sends)' }),
  cgroupRetain: duration({ description: 'how long a removed cgroup still resolves (containers that just stopped)', default: '10m' }),
  maxInFlight: integer({ description: 'batches enriched at once', default: 4, min: 1, max: 256 }),
  ...partitionOptions,
  ...natsOptions,
  metricsPort: integer({ description: 'port of /metrics, /healthz and /readyz (0 = any free port)', default: 9402, min: 0, max: 65535 }),
  logLevel: oneOf(logLevels, { description: 'log level', default: 'info' }),
  instance: string({ description: 'instance name in heartbeats', default: `${hostname()}-${process.pid}` }),
};

export type EnricherConfig = ConfigOf<typeof enricherOptions>;

/** Where capture and the enricher of one node meet for exec events (both derive it from --node). */
export function execSocketPath(config: Pick<EnricherConfig, 'execSocket' | 'node'>): string {
  return config.execSocket ?? `/run/kappa/${config.node.replace(/[^A-Za-z0-9._-]/g, '_')}/exec.sock`;
}
