// Test harness: real joiner processes (tsx src/main.ts) over a real nats-server and redis-server,
// records of both ends of made-up conversations, and a collector of kappa.flow.joined.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { FLOW_STREAM, connectBus, subjects } from '@kappa/bus';
import type { BatchConsumer, Bus } from '@kappa/bus';
import { DEFAULT_PARTITIONS, IpProtocol, Vantage, newFlowBatch, newFlowRecord, partitionOfRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { childEnv, startNatsServer, startRedisServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';

const appRoot = join(import.meta.dirname, '..');
// One process (node with the tsx loader), so a SIGKILL in a test kills the joiner itself, not a
// wrapper that would leave it running.
const node = join(appRoot, '../../node_modules/.bin/node');

export interface JoinerProcess {
  child: ChildProcess;
  metricsPort: number;
  output: string[];
  exited: Promise<number | null>;
  metric(name: string): Promise<number>;
  ready(): Promise<boolean>;
  /** Partitions this replica owns now (its kappa_joiner_partitions_owned), 0 once it died. */
  owned(): Promise<number>;
}

export async function startJoiner(options: { nats: string; redis: string; instance: string; args?: string[]; env?: Record<string, string> }): Promise<JoinerProcess> {
  const argv = [
    '--import',
    'tsx',
    join(appRoot, 'src/main.ts'),
    `--nats-url=${options.nats}`,
    `--redis-url=${options.redis}`,
    '--metrics-port=0',
    '--log-level=warn',
    `--instance=${options.instance}`,
    ...(options.args ?? []),
  ];
  const child = spawn(node, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...childEnv(), ...options.env } });
  const output: string[] = [];
  child.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const metricsPort = await new Promise<number>((resolve, reject) => {
    let buffer = '';
    child.stdout?.on('data', (d: Buffer) => {
      output.push(d.toString());
      buffer += d.toString();
      const match = /kappa-joiner ready metrics=(\d+)/.exec(buffer);
      if (match) resolve(Number(match[1]));
    });
    void exited.then((code) => reject(new Error(`joiner exited (${code}) before ready: ${output.join('')}`)));
  });
  const get = async (path: string) => fetch(`http://127.0.0.1:${metricsPort}${path}`);
  return {
    child,
    metricsPort,
    output,
    exited,
    ready: async () => (await get('/readyz')).status === 200,
    owned: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return 0;
      const text = await (await get('/metrics').catch(() => undefined))?.text().catch(() => '');
      const line = (text ?? '').split('\n').find((l) => l.startsWith('kappa_joiner_partitions_owned'));
      return Number(line?.split(' ').pop() ?? 0);
    },
    metric: async (name: string) => {
      const text = await (await get('/metrics')).text();
      let sum = 0;
      for (const line of text.split('\n')) {
        if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(' ').pop());
      }
      return sum;
    },
  };
}

export async function stopJoiner(joiner: JoinerProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (joiner.child.exitCode !== null || joiner.child.signalCode !== null) return;
  joiner.child.kill(signal);
  await joiner.exited;
}

export async function newBus(nats: string, name: string): Promise<Bus> {
  return connectBus({ servers: [nats], name, logger: createLogger(name, 'silent'), registry: createRegistry(name) });
}

/** Deletes the stream so each test starts empty (the joiners recreate it). */
export async function resetStreams(bus: Bus): Promise<void> {
  await bus.deleteStream(FLOW_STREAM);
  await bus.ensureStreams();
}

export interface Side {
  node: string;
  ip: string;
  port: number;
  pod: string;
  namespace?: string;
  pid: number;
  service?: string;
}

/** One record as a node's tagger emits it: the local end fully known, the remote end by IP only. */
export function sideRecord(options: {
  vantage: Vantage;
  src: Side;
  dst: Side & { viaService?: { ip: string; port: number; name: string; namespace: string } };
  interval?: number;
  protocol?: IpProtocol;
  bytes?: number;
}): FlowRecord {
  const { vantage, src, dst } = options;
  const interval = BigInt(options.interval ?? 0);
  const start = 1_800_000_000_000_000_000n + interval * 10_000_000_000n;
  const local = vantage === Vantage.SRC ? src : dst;
  const endpoint = (side: Side, isLocal: boolean) => ({
    ip: side.ip,
    port: side.port,
    ...(isLocal ? { process: { pid: side.pid, name: `proc-${side.pod}`, cmdline: `/bin/${side.pod} --serve`, containerId: `cid-${side.pod}` } } : {}),
    kube: isLocal
      ? { node: side.node, objectName: side.pod, objectNamespace: side.namespace ?? 'default', objectType: 'pod', workloadName: side.pod.replace(/-\w+$/, ''), labels: { app: side.pod }, containerName: 'main', serviceName: side.service ?? '', serviceNamespace: side.service ? (side.namespace ?? 'default') : '' }
      : { objectName: side.pod, objectNamespace: side.namespace ?? 'default', objectType: 'pod' },
  });
  const record = newFlowRecord({
    node: local.node,
    vantage,
    startNs: start,
    endNs: start + 10_000_000_000n,
    protocol: options.protocol ?? IpProtocol.TCP,
    src: endpoint(src, vantage === Vantage.SRC),
    dst: endpoint(dst, vantage === Vantage.DST),
    bytes: BigInt(options.bytes ?? 1000),
    packets: 10n,
    observation: 'socket',
  });
  const service = dst.viaService;
  if (service && vantage === Vantage.SRC && record.dst) {
    // The client's node saw the Service address; the tagger tagged it as the Service.
    record.dst.ip = service.ip;
    record.dst.port = service.port;
    record.dst.kube = { ...record.dst.kube!, objectType: 'service', objectName: service.name, objectNamespace: service.namespace, serviceName: service.name, serviceNamespace: service.namespace };
  }
  return record;
}

/** Both records of conversation i between two made-up pods on two nodes. */
export function conversation(i: number, interval = 0): { client: FlowRecord; server: FlowRecord; src: Side; dst: Side } {
  const src: Side = { node: 'node-a', ip: `10.1.${(i >> 8) & 255}.${i & 255}`, port: 30000 + (i % 30000), pod: `client-${i}`, pid: 1000 + i };
  const dst: Side = { node: 'node-b', ip: `10.2.${(i >> 8) & 255}.${i & 255}`, port: 8080, pod: `server-${i}`, pid: 5000 + i };
  return {
    client: sideRecord({ vantage: Vantage.SRC, src, dst, interval }),
    server: sideRecord({ vantage: Vantage.DST, src, dst, interval }),
    src,
    dst,
  };
}

/**
 * Publishes records as the tagger does: batches of up to batchSize records of one partition
 * each, on that partition's kappa.flow.tagged.p<k>, partitions taken in turn.
 */
export async function publishRecords(bus: Bus, records: FlowRecord[], batchSize: number, prefix: string): Promise<void> {
  const byPartition = new Map<number, FlowRecord[]>();
  for (const record of records) {
    const k = partitionOfRecord(record, DEFAULT_PARTITIONS);
    byPartition.set(k, [...(byPartition.get(k) ?? []), record]);
  }
  const queues = [...byPartition].map(([k, list]) => ({ k, list, next: 0 }));
  // Each round publishes one batch of every partition at once; a partition's batches stay in order.
  // One at a time, 40 batches took longer than a 1.5 s join wait at load ~30, so the two ends of
  // a conversation were rightly released unjoined, and tests that expect them joined failed.
  for (let n = 0; queues.some((q) => q.next < q.list.length); n++) {
    await Promise.all(
      queues
        .filter((q) => q.next < q.list.length)
        .map((q) => {
          const batch = q.list.slice(q.next, q.next + batchSize);
          q.next += batchSize;
          return bus.publishBatch(subjects.tagged(q.k), newFlowBatch({ batchId: `${prefix}-p${q.k}-${n}`, producer: 'test-tagger', records: batch }));
        }),
    );
  }
}

/**
 * The number of conversation i (harness.conversation) a record belongs to, read from the address
 * its own node saw of the client (src.ip = 10.1.<i >> 8>.<i & 255>), so a check of the metadata
 * the joiner added holds it against the record's OWN conversation.
 */
export function conversationOf(r: FlowRecord): number {
  const m = /^10\.1\.(\d+)\.(\d+)$/.exec(r.src?.ip ?? '');
  if (!m) throw new Error(`not a harness conversation: src ${r.src?.ip}`);
  return Number(m[1]) * 256 + Number(m[2]);
}

/** Both ends of conversation i as its own nodes saw them: what a joined record must carry. */
export function expectOwnConversation(r: FlowRecord): void {
  const i = conversationOf(r);
  const id = `${r.node} ${r.vantage} ${r.src?.ip}:${r.src?.port}`;
  expect(r.joined, id).toBe(true);
  expect(r.src?.kube?.objectName, id).toBe(`client-${i}`);
  expect(r.src?.kube?.node, id).toBe('node-a');
  expect(r.src?.process?.pid, id).toBe(1000 + i);
  expect(r.dst?.kube?.objectName, id).toBe(`server-${i}`);
  expect(r.dst?.kube?.node, id).toBe('node-b');
  expect(r.dst?.process?.pid, id).toBe(5000 + i);
}

export function shuffle<T>(items: T[], seed = 42): T[] {
  let s = seed;
  const random = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Identity of an emitted record: node, vantage, interval, conversation. */
export function recordIdentity(r: FlowRecord): string {
  return `${r.node}|${r.vantage}|${r.startNs}|${r.src?.ip}:${r.src?.port}|${r.dst?.ip}:${r.dst?.port}`;
}

export interface Collector {
  records: FlowRecord[];
  arrivals: number[];
  consumer: BatchConsumer;
  until(count: number, timeoutMs?: number): Promise<void>;
}

export async function collectJoined(bus: Bus): Promise<Collector> {
  const records: FlowRecord[] = [];
  const arrivals: number[] = [];
  const consumer = await bus.consumeBatches({
    stage: 'test-exporter',
    subject: subjects.allJoined,
    maxInFlight: 1,
    handler: async (batch) => {
      for (const r of batch.records) {
        records.push(r);
        arrivals.push(Date.now());
      }
    },
  });
  return {
    records,
    arrivals,
    consumer,
    until: async (count, timeoutMs = 30_000) => {
      const end = Date.now() + timeoutMs;
      while (records.length < count) {
        if (Date.now() > end) throw new Error(`collected ${records.length} of ${count} joined records`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** Waits for a condition; `what` may be a function, to name the state at the time it gave up. */
export async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 20_000, what: string | (() => string) = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`${typeof what === 'function' ? what() : what} not met in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function counts(records: FlowRecord[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of records) m.set(recordIdentity(r), (m.get(recordIdentity(r)) ?? 0) + 1);
  return m;
}

export interface Testbed {
  readonly nats: TestServer;
  readonly redis: TestServer;
  readonly bus: Bus;
  collector: Collector | undefined;
  joiner(instance: string, args?: string[], env?: Record<string, string>): Promise<JoinerProcess>;
}

/**
 * Real nats-server and redis-server for a test file; after each test the joiners are stopped
 * (with `stopSignal`), the stream deleted and Redis flushed; a failed test prints joiner logs.
 */
export function joinerTestbed(stopSignal: NodeJS.Signals = 'SIGTERM'): Testbed {
  const joiners: JoinerProcess[] = [];
  const state = {} as { nats: TestServer; redis: TestServer; bus: Bus };
  const bed: Testbed = {
    get nats() { return state.nats; },
    get redis() { return state.redis; },
    get bus() { return state.bus; },
    collector: undefined,
    joiner: async (instance, args = [], env = {}) => {
      const j = await startJoiner({ nats: state.nats.url, redis: state.redis.url, instance, args, env });
      joiners.push(j);
      return j;
    },
  };
  beforeAll(async () => {
    [state.nats, state.redis] = await Promise.all([startNatsServer(), startRedisServer()]);
    state.bus = await newBus(state.nats.url, 'test');
  });
  afterEach(async (context) => {
    if (context.task.result?.state === 'fail') for (const j of joiners) console.error(j.output.join('').slice(-4000));
    await Promise.all(joiners.splice(0).map((j) => stopJoiner(j, stopSignal)));
    await bed.collector?.consumer.stop();
    bed.collector = undefined;
    await resetStreams(state.bus);
    const admin = new Redis(state.redis.port, '127.0.0.1');
    await admin.flushall();
    admin.disconnect();
  });
  afterAll(async () => {
    await state.bus?.close();
    await Promise.all([state.nats?.stop(), state.redis?.stop()]);
  });
  return bed;
}

/**
 * A redis-server for the file (started before its tests, stopped after) and clients on it, all
 * disconnected at the end: for tests of the joiner's own Redis code in process.
 */
export function redisTestbed(): { server(): TestServer; client(): Redis } {
  let server: TestServer | undefined;
  const clients: Redis[] = [];
  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await server?.stop();
  });
  return {
    server: () => server!,
    client: () => {
      const c = new Redis({ port: server!.port, host: '127.0.0.1', enableAutoPipelining: true, maxRetriesPerRequest: 0 });
      clients.push(c);
      return c;
    },
  };
}
