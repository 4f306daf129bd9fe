// One simulated node and the whole pipeline (capture, process-enricher, k8s-tagger without a
// cluster, joiner, exporter to JSON Lines) as real processes with known metrics ports, for the
// resource-bound scenarios: a stage stopped, Redis gone, the stream full.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLUSTER_LOCK_WAIT_MS, CLUSTER_TOPOLOGY_LOCK, TestCgroup, VethPair, freePort, machineLock, nstat, run, runIn, startNatsCluster, startNatsServer, startRedisCluster, startRedisServer, uniqueName } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { logTail, startService, stopService, workspaceRoot } from './services.js';
import type { RunningService } from './services.js';

/**
 * The memory limit of every kappa container in infra/k8s/base (limits.memory: 512Mi); the tests
 * start each service with a V8 heap cap below it so a leak fails as an OOM, not as a slow test.
 */
export const SERVICE_MEMORY_LIMIT_BYTES = 512 * 2 ** 20;
export const SERVICE_HEAP_MIB = 384;

export interface PipelineOptions {
  natsUrl: string;
  redisUrl: string;
  workDir: string;
  node: string;
  /** cgroup v2 directory capture attaches to. */
  cgroup: string;
  /** Flags every service gets (e.g. --stream-max-bytes: every stage ensures the stream with its own). */
  common?: string[];
  capture?: string[];
  joiner?: string[];
  /** A smaller V8 heap cap for some services (MiB), so memory held without bound ends the process. */
  heapMiB?: Partial<Record<'capture' | 'enricher' | 'tagger' | 'joiner' | 'exporter', number>>;
  /** Node flags of one service (e.g. --trace-gc: its log then shows the live heap after each GC). */
  nodeArgs?: Partial<Record<'capture' | 'enricher' | 'tagger' | 'joiner' | 'exporter', string[]>>;
}

export interface Pipeline {
  services: Record<'capture' | 'enricher' | 'tagger' | 'joiner' | 'exporter', RunningService>;
  metricsPorts: Record<string, number>;
  jsonl: string;
}

export async function startPipeline(options: PipelineOptions): Promise<Pipeline> {
  const ports: Record<string, number> = {};
  for (const name of ['capture', 'enricher', 'tagger', 'joiner', 'exporter']) ports[name] = await freePort();
  const jsonl = join(options.workDir, 'flows.jsonl');
  const common = [`--nats-url=${options.natsUrl}`, ...(options.common ?? [])];
  type Name = keyof NonNullable<PipelineOptions['heapMiB']>;
  const heap = (name: string) => [`--max-old-space-size=${options.heapMiB?.[name as Name] ?? SERVICE_HEAP_MIB}`, ...(options.nodeArgs?.[name as Name] ?? [])];
  const start = (name: string, app: string, args: string[]) => startService(name, app, [...common, `--metrics-port=${ports[name]}`, ...args], options.workDir, heap(name));
  // Consumers first, so every stage's durable consumer exists before records flow.
  const exporter = start('exporter', 'exporter', [`--jsonl=${jsonl}`, '--observer=false']);
  const joiner = start('joiner', 'joiner', [`--redis-url=${options.redisUrl}`, '--instance=ksb-joiner', ...(options.joiner ?? [])]);
  const tagger = start('tagger', 'k8s-tagger', ['--grpc-port=0', '--grpc-host=127.0.0.1', '--instance=ksb-tagger']);
  const enricher = start('enricher', 'process-enricher', [`--node=${options.node}`, '--cri-socket=none']);
  const capture = start('capture', 'capture', [`--node=${options.node}`, `--cgroup=${options.cgroup}`, `--state-dir=${join(options.workDir, 'capture-state')}`, ...(options.capture ?? [])]);
  const pipeline = { services: { capture, enricher, tagger, joiner, exporter }, metricsPorts: ports, jsonl };
  try {
    for (const name of Object.keys(ports)) await until(`${name} ready`, async () => ((await readyz(pipeline, name)) ? true : undefined), 60_000, pipeline);
  } catch (error) {
    // The caller never gets the pipeline to stop: stop what started here (capture gracefully, so
    // that its BPF links and pins go), or the services outlive the test file.
    for (const [name, service] of Object.entries(pipeline.services)) await stopService(service, name === 'capture' ? 'SIGTERM' : 'SIGKILL');
    throw error;
  }
  return pipeline;
}

async function readyz(pipeline: Pipeline, name: string): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${pipeline.metricsPorts[name]}/readyz`)).ok;
  } catch {
    return false;
  }
}

/** One sample of a service's /metrics: the value of `name` with all of `labels`, summed. */
export async function metric(pipeline: Pipeline, service: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricIn(await (await fetch(`http://127.0.0.1:${pipeline.metricsPorts[service]}/metrics`)).text(), name, labels);
}

/** The value of `name` with all of `labels`, summed, in a /metrics text. */
export function metricIn(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || !/^[a-z_]+[{ ]/.test(line)) continue;
    const [series, value] = [line.slice(0, line.lastIndexOf(' ')), line.slice(line.lastIndexOf(' ') + 1)];
    const metricName = series.split('{')[0];
    if (metricName !== name) continue;
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) total += Number(value);
  }
  return total;
}

/**
 * The live V8 heap (MB) after each full GC a service started with --trace-gc logged since
 * `fromLine`: "Mark-Compact 45.1 (60.2) -> 30.2 (62.1) MB" gives 30.2.
 */
export function heapAfterFullGcs(service: RunningService, fromLine = 0): number[] {
  const lines = readFileSync(service.logFile, 'utf8').split('\n').slice(fromLine);
  return lines.flatMap((l) => {
    const m = /Mark-Compact[^>]*-> ([\d.]+) \(/.exec(l);
    return m ? [Number(m[1])] : [];
  });
}

export function logLineCount(service: RunningService): number {
  return readFileSync(service.logFile, 'utf8').split('\n').length - 1;
}

/** Peak resident set of a service so far (VmHWM), in bytes. */
export function peakRssBytes(service: RunningService): number {
  const line = readFileSync(`/proc/${service.child.pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmHWM:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) * 1024;
}

export interface ExportedRecord {
  vantage: string;
  protocol: string;
  src: { ip: string; port?: number };
  dst: { ip: string; port?: number };
  startNs?: string;
  packets?: string;
  joined?: boolean;
}

export function exportedRecords(pipeline: Pipeline): ExportedRecord[] {
  if (!existsSync(pipeline.jsonl)) return [];
  return readFileSync(pipeline.jsonl, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as ExportedRecord);
}

export async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs: number, pipeline?: Pipeline): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > end) {
      const logs = pipeline ? Object.values(pipeline.services).map((s) => `--- ${s.name}\n${logTail(s, 12)}`).join('\n') : '';
      throw new Error(`timed out waiting for ${what}\n${logs}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Waits until `count()` has not changed for `quietMs` (the pipeline has delivered what it will). */
export async function settled(what: string, count: () => number | Promise<number>, quietMs: number, timeoutMs: number, pipeline?: Pipeline): Promise<number> {
  let last = -1;
  let since = Date.now();
  return until(what, async () => {
    const now = await count();
    if (now !== last) {
      last = now;
      since = Date.now();
      return undefined;
    }
    return Date.now() - since >= quietMs ? now : undefined;
  }, timeoutMs, pipeline);
}

/** capture's test traffic generator; `udp-many HOST N PER_SOCKET` sends N one-datagram conversations. */
const TRAFFIC = join(workspaceRoot, 'apps/capture/test/fixtures/traffic.mjs');

/**
 * A node for the scenarios: namespace a sends one-datagram UDP conversations to an address on
 * the veth that nobody answers (`silentPeer`), from processes in the cgroup capture watches;
 * private nats-server and redis-server; the pipeline. `destroy` removes all of it.
 */
export interface Scenario {
  pair: VethPair;
  silentPeer: string;
  /** The NATS server (the first of the cluster with natsCluster). */
  nats: TestServer;
  /** Every NATS server: one, or natsCluster of them routed together. */
  natsServers: TestServer[];
  /** What the services were given as --nats-url: every server's URL. */
  natsUrl: string;
  redis: TestServer;
  /** With redisCluster: the six redis-servers of the Redis Cluster (redis is the first). */
  redisNodes: TestServer[];
  pipeline: Pipeline;
  /** With replicas: the second k8s-tagger, joiner and exporter (the first are pipeline.services). */
  replicas: Partial<Record<'tagger' | 'joiner' | 'exporter', RunningService>>;
  /** Every JSON Lines file an exporter replica writes. */
  jsonlFiles: string[];
  /** Runs one round of `conversations` conversations, `perSocket` per source socket. */
  sendRound(conversations: number, perSocket: number): Promise<void>;
  /** Datagrams that left namespace a so far (the kernel's counter, failed sends not in it). */
  datagramsSent(): number;
  destroy(): Promise<void>;
}

export async function startScenario(
  name: string,
  subnet: number,
  options: Omit<PipelineOptions, 'natsUrl' | 'redisUrl' | 'workDir' | 'node' | 'cgroup'> & {
    natsCluster?: number;
    /** A Redis Cluster of 3 primaries and 3 replicas (the joiners get --redis-cluster). */
    redisCluster?: boolean;
    /** A second replica of k8s-tagger, joiner and exporter (instances …-1, exporter-1 writes flows-1.jsonl). */
    replicas?: boolean;
  },
): Promise<Scenario> {
  // A cluster topology (three nats-servers, a Redis Cluster, replicas) runs alone on the machine:
  // two of them at once on 2 cores (two `npm test` runs at once) starve each other's elections
  // and takeovers, so the second waits for the first to be destroyed.
  const lock = options.natsCluster || options.redisCluster ? await machineLock(CLUSTER_TOPOLOGY_LOCK, CLUSTER_LOCK_WAIT_MS) : undefined;
  const workDir = mkdtempSync(join(tmpdir(), `ksb-${name}-`));
  const cgroup = new TestCgroup(uniqueName(`ksb-${name}`));
  const nodes = cgroup.child('nodes');
  const servers: TestServer[] = [];
  let pair: VethPair | undefined;
  let pipeline: Pipeline | undefined;
  const replicas: Scenario['replicas'] = {};
  const destroy = async () => {
    for (const s of Object.values(replicas)) await stopService(s, 'SIGKILL');
    for (const [name, s] of Object.entries(pipeline?.services ?? {})) {
      s.child.kill('SIGCONT'); // a stopped process does not act on a signal until continued
      // capture stops gracefully: a SIGKILL would leave its maps and links pinned in bpffs (by
      // design, for a restart to take over), and every test run would leak them.
      await stopService(s, name === 'capture' ? 'SIGTERM' : 'SIGKILL');
    }
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
    for (const server of servers) await server.stop();
    rmSync(workDir, { recursive: true, force: true });
    await lock?.release();
  };
  try {
    pair = await VethPair.create({ prefix: 'ksb-', subnet, cgroup: nodes });
    const silentPeer = `10.77.${subnet}.99`;
    run('ip', ['netns', 'exec', pair.a.netns, 'ip', 'neigh', 'replace', silentPeer, 'lladdr', pair.b.mac, 'dev', pair.a.ifname, 'nud', 'permanent']);
    const natsServers = options.natsCluster ? await startNatsCluster(`ksb-${name}-nats`, options.natsCluster, workDir) : [await startNatsServer()];
    servers.push(...natsServers);
    const nats = natsServers[0]!;
    const natsUrl = natsServers.map((s) => s.url).join(',');
    const redisNodes = options.redisCluster ? await startRedisCluster(servers) : [await startRedisServer()];
    if (!options.redisCluster) servers.push(redisNodes[0]!);
    const redis = redisNodes[0]!;
    const joinerArgs = [...(options.joiner ?? []), ...(options.redisCluster ? ['--redis-cluster'] : [])];
    pipeline = await startPipeline({ ...options, joiner: joinerArgs, natsUrl, redisUrl: redis.url, workDir, node: `ksb-${name}-node`, cgroup: cgroup.path });
    const jsonlFiles = [pipeline.jsonl];
    if (options.replicas) {
      const p = pipeline;
      const common = [`--nats-url=${natsUrl}`, ...(options.common ?? [])];
      const second = async (key: 'tagger' | 'joiner' | 'exporter', app: string, args: string[]) => {
        const port = await freePort();
        p.metricsPorts[`${key}-1`] = port;
        replicas[key] = startService(`${key}-1`, app, [...common, `--metrics-port=${port}`, ...args], workDir, [`--max-old-space-size=${SERVICE_HEAP_MIB}`]);
      };
      jsonlFiles.push(join(workDir, 'flows-1.jsonl'));
      await second('exporter', 'exporter', [`--jsonl=${jsonlFiles[1]}`, '--observer=false', '--instance=ksb-exporter-1']);
      await second('joiner', 'joiner', [`--redis-url=${redis.url}`, '--instance=ksb-joiner-1', ...joinerArgs]);
      await second('tagger', 'k8s-tagger', ['--grpc-port=0', '--grpc-host=127.0.0.1', '--instance=ksb-tagger-1']);
      for (const key of ['exporter-1', 'joiner-1', 'tagger-1']) await until(`${key} ready`, async () => ((await readyz(p, key)) ? true : undefined), 60_000, p);
    }
    const netns = pair.a.netns;
    return {
      pair,
      silentPeer,
      nats,
      natsServers,
      natsUrl,
      redis,
      redisNodes,
      pipeline,
      replicas,
      jsonlFiles,
      sendRound: async (conversations, perSocket) => {
        await runIn(netns, nodes, process.execPath, [TRAFFIC, 'udp-many', silentPeer, String(conversations), String(perSocket)]);
      },
      datagramsSent: () => nstat(netns).UdpOutDatagrams ?? 0,
      destroy,
    };
  } catch (error) {
    await destroy();
    throw error;
  }
}

/** A record of the scenario traffic, as the exporter wrote it. */
export function isScenarioRecord(scenario: Scenario) {
  return (r: ExportedRecord) => r.protocol === 'IP_PROTOCOL_UDP' && r.vantage === 'VANTAGE_SRC' && r.dst.ip === scenario.silentPeer;
}
