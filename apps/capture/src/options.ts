// kappa-capture's command line and KAPPA_* environment, parsed once at start.
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { boolean, duration, integer, list, oneOf, regex, string } from '@kappa/config';
import { natsOptions } from '@kappa/bus';
import { logLevels, metricsHostOption } from '@kappa/observability';

/** bpf/.output/kappa.bpf.o of this checkout: the same depth from src/ and from dist/. */
export const DEFAULT_BPF_OBJECT = fileURLToPath(new URL('../../../bpf/.output/kappa.bpf.o', import.meta.url));
export const DEFAULT_BPF_COMPAT_OBJECT = fileURLToPath(new URL('../../../bpf/.output/kappa-compat.bpf.o', import.meta.url));

export const captureOptions = {
  interval: duration({ description: 'How often the kernel flow table is drained into records', default: '10s', minMs: 100 }),
  node: string({ description: 'Node name put on every record (default: the hostname)', default: hostname() }),
  stdout: boolean({ description: 'Print records as JSON lines (canonical protobuf JSON of FlowRecord) instead of publishing to NATS' }),
  mode: oneOf(['socket', 'interface', 'both'] as const, {
    description: 'socket: cgroup hooks see every local socket; interface: tc on --capture interfaces; both',
    default: 'socket',
  }),
  capture: regex({ description: 'Interfaces for interface mode (whole-name match)', default: 'en.*|veth.*|eth.*' }),
  cgroup: string({ description: 'cgroup v2 directory to attach to instead of the cgroup v2 root (a sub-tree: one tenant, or one simulated node)' }),
  btf: string({ description: 'BTF file for kernels without /sys/kernel/btf/vmlinux (e.g. from BTFHub)' }),
  stateDir: string({ description: 'Folder for the spool of drained batches not yet published (default /var/lib/kappa/capture/<node>-<hash of --cgroup>); not on bpffs' }),
  bpfObject: string({ description: 'The compiled BPF object, for kernels with bpf_cast_to_kern_ctx (6.2+)', default: DEFAULT_BPF_OBJECT }),
  bpfCompatObject: string({ description: 'The compiled BPF object for kernels before 6.2 (kappa-compat.bpf.o)', default: DEFAULT_BPF_COMPAT_OBJECT }),
  disableHooks: list({
    description:
      'Kernel hooks capture must not use (tracepoint, fexit, socket-iterator; cgroup-skb: the DNS copies at the skb hooks, which count on; sched_process_exec: the exec events): each feature then takes its next hook or goes off, and says so',
    default: [],
    item: /^(tracepoint|fexit|socket-iterator|cgroup-skb|sched_process_exec)$/,
    accepted: 'comma-separated: tracepoint, fexit, socket-iterator, cgroup-skb, sched_process_exec',
  }),
  check: boolean({ description: 'Print what this kernel offers capture (the object, the hook of each feature) and exit: 0 when capture can run here, 1 when not' }),
  maxConversations: integer({ description: 'Flow table size: conversations per interval before overflow is counted', default: 262144, min: 1024, max: 16_777_216 }),
  maxUnsentBatches: integer({
    description: 'Drained batches kept (memory and spool) while NATS refuses them (stream full, NATS down); beyond it the oldest are dropped and counted as lost',
    default: 100,
    min: 1,
    max: 100_000,
  }),
  metricsHost: metricsHostOption,
  dnsBuffer: integer({
    description: 'KiB of the ring buffer the kernel copies DNS messages into between reads (5 per second); rounded up to a power of two. Messages that do not fit are counted (kappa_capture_dns_lost_total)',
    default: 1024,
    min: 16,
    max: 1_048_576,
  }),
  execSocket: string({
    description: "The process-enricher's unix socket for what the watched processes exec'd (command lines of processes that exit before enrichment; default: /run/kappa/<node>/exec.sock, where the enricher of the same --node listens)",
  }),
  execBuffer: integer({
    description: 'KiB of the ring buffer the kernel copies exec events into between reads (5 per second); rounded up to a power of two. Events that do not fit are counted (kappa_capture_exec_events_total{result="lost_ring"})',
    default: 1024,
    min: 16,
    max: 1_048_576,
  }),
  dnsNames: integer({ description: 'Most (network namespace, address) → DNS name entries kept for naming the ends of records', default: 65536, min: 16, max: 16_777_216 }),
  metricsPort: integer({ description: 'Port of /metrics, /healthz and /readyz (0: any free port)', default: 9401, min: 0, max: 65535 }),
  logLevel: oneOf(logLevels, { description: 'Log level (logs go to stderr)', default: 'info' }),
  ...natsOptions,
};

/** Where the process-enricher of `node` listens for exec events (its --exec-socket default). */
export function execSocketPath(config: { execSocket?: string | undefined; node: string }): string {
  return config.execSocket ?? `/run/kappa/${config.node.replace(/[^A-Za-z0-9._-]/g, '_')}/exec.sock`;
}
