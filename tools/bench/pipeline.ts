// Scenario 3 — the pipeline: a generator publishes both vantages of pod-to-pod conversations on two
// nodes at rising rates through the built process-enricher (one per node) → k8s-tagger → joiner →
// exporter (JSON Lines), over real nats-server, redis-server and the test Kubernetes API. Per rate:
// records/s out of the exporter, lag per stage, CPU per process, end-to-end latency p50/p99.
// Run: npm run bench:pipeline [-- --rates=250,500,1000,2000,4000 --step=40 --all --profile=joiner --joiners=3]
//   (or env KAPPA_BENCH_RATES, KAPPA_BENCH_STEP, e.g. through `npm run bench`)
//   --step seconds per rate; --all keeps climbing after a rate is not held (default: stop there);
//   --profile=<app> runs that service with --cpu-prof and prints its top functions by self and by
//   total time (the whole profile is kept as $TMPDIR/kbp-profile-<app>.cpuprofile);
//   --joiners=N runs N joiner replicas sharing the partitions (default 1);
//   --exporter-args="--store=false …" adds flags to the exporter's command line (what a sink costs);
//   --node-args=<app>:<flags> runs that stage's Node with these flags (e.g. joiner:--max-semi-space-size=8);
//   --profile=nats-server takes a Go CPU profile of nats-server over the steps (its --profile port)
//   and prints where its CPU went by group and by function.
//   Every run reads nats-server's monitoring endpoint (-m) before and after each step: messages
//   and bytes through it per record, and what each hop's publishes weigh.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BusPublishError, connectBus, subjects } from '@kappa/bus';
import { FlowBatchWriter, FlowFields, FlowRecordSchema, IpProtocol, ProtoWriter, Vantage, newFlowRecord, toBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { cgroup2Mount, freePorts, removeCgroupTree, startKubeApiServer, startNatsServer, startRedisServer, sweepLeftovers, uniqueName } from '@kappa/testing';
import { describeCluster } from '../../tests/e2e/src/cluster.js';
import { logTail, startService, stopService } from '../../tests/e2e/src/services.js';
import type { RunningService } from '../../tests/e2e/src/services.js';
import type { Pod, Topology } from '../../tests/e2e/src/topology.js';
import { cpuSeconds, machineLine, table, writeSection } from './lib/report.mjs';
import { groupStacks, inclusiveTop, readGoProfile } from './lib/go-profile.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/s.exec(a)?.slice(1) ?? [a]));
const RATES = (args.rates ?? process.env.KAPPA_BENCH_RATES ?? '250,500,1000,2000,4000').split(',').map(Number);
const STEP_S = Number(args.step ?? process.env.KAPPA_BENCH_STEP ?? 40);
const PODS_PER_NODE = 10;
/** Joiner replicas (--joiners=N): they share the partitions through their leases in Redis. */
const JOINERS = Number(args.joiners ?? 1);
if (!Number.isInteger(JOINERS) || JOINERS < 1) throw new Error(`--joiners=${args.joiners}: give a whole number of joiner replicas, 1 or more`);
/** The generator plays capture with a 1 s interval: one batch per node per second. */
const TICK_MS = 1000;
const NODES = ['node-a', 'node-b'] as const;
type NodeName = (typeof NODES)[number];

const workDir = mkdtempSync(join(tmpdir(), 'kbp-pipeline-'));
const jsonl = join(workDir, 'flows.jsonl');
// One cgroup tree per run (kbp-pipeline-p<pid>-0): two runs at once no longer share one, and the
// tree of a run that was killed before its cleanup is swept by the next start.
sweepLeftovers(cgroup2Mount());
const cgroupRoot = join(cgroup2Mount(), uniqueName('kbp-pipeline'));

// --- The cluster: 10 pods per node, each a cgroup shaped like kubelet's with one live process in
// it, so the enricher resolves a real pid → container id and the tagger finds the pod by it.
interface BenchPod extends Pod {
  pid: number;
  cgroupId: bigint;
  child: ChildProcess;
}

function makePod(node: NodeName, n: number): BenchPod {
  const name = `app-${node.slice(-1)}${n}`;
  const hex = (seed: string, length: number) => Buffer.from(seed.padEnd(length, 'k')).toString('hex').slice(0, length);
  const uid = `${hex(name, 8)}-0000-4000-8000-${hex(name, 12)}`;
  const containerId = hex(`kbp-${name}`, 64).padEnd(64, '0');
  const podSlice = `kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice`;
  const cgroup = join(cgroupRoot, node, 'kubepods.slice', 'kubepods-besteffort.slice', podSlice, `cri-containerd-${containerId}.scope`);
  mkdirSync(cgroup, { recursive: true });
  const child = spawn('sh', ['-c', `echo $$ > ${cgroup}/cgroup.procs && exec sleep 3600`], { stdio: 'ignore' });
  const third = node === 'node-a' ? 1 : 2;
  return {
    name, namespace: 'shop', node, host: 10 + n, workload: `app-${n % 4}`, workloadKind: 'Deployment', labels: { app: `app-${n % 4}` },
    netns: '', hostVeth: '', ipv4: `10.244.${third}.${10 + n}`, ipv6: `fd00:244:${third}::${(10 + n).toString(16)}`,
    uid, containerId, containerName: 'app', cgroup, pid: child.pid ?? 0, cgroupId: statSync(cgroup, { bigint: true }).ino, child,
  };
}

const pods = NODES.flatMap((node) => Array.from({ length: PODS_PER_NODE }, (_, n) => makePod(node, n)));
const nodeInfo = (name: NodeName, third: number) => ({ name, bridge: '', subnet4: `10.244.${third}.0/24`, gateway4: `10.244.${third}.1`, gateway6: `fd00:244:${third}::1`, cgroup: join(cgroupRoot, name) });
const topology: Topology = {
  nodes: { 'node-a': nodeInfo('node-a', 1), 'node-b': nodeInfo('node-b', 2) },
  pods,
  external: { netns: '', hostVeth: '', ipv4: '203.0.113.9', ipv6: '2001:db8::9' },
  service: { name: 'app-0', namespace: 'shop', ipv4: '10.96.0.10', port: 80, backend: pods[0]!, targetPort: 8080 },
  // The other Service kinds the e2e cluster describes (the generator's records use none of them).
  kinds: {
    loadBalancer: { name: 'app-lb', namespace: 'shop', clusterIP: '10.96.0.20', port: 80, nodePort: 30080, ingressIP: '203.0.113.10', externalIP: '192.0.2.10', backend: pods[1]!, targetPort: 8080 },
    headless: { name: 'app-headless', namespace: 'shop', port: 8080, app: 'app-1' },
    hostNetwork: { name: 'agent-b', namespace: 'kube-system', workload: 'agent', node: 'node-b', ip: '192.168.77.2', port: 9100, uid: '00000000-0000-4000-8000-0000000a9e17', containerId: 'a9e17'.padEnd(64, '0'), containerName: 'agent', cgroup: join(cgroupRoot, 'node-b', 'agent') },
  },
  hostNetns: '',
  root: cgroupRoot,
};

// --- Records: conversation k of a rate is client pods[k % 20], port 10000 + k / 20, talking to
// another pod on :8080 (same node or across); it reports once per tick from each end, as a
// long-lived connection does every capture interval. endNs is the send time (see BENCHMARKS.md).
// Each end's record is encoded once (protobuf-es) without its per-tick fields, and so is its id up to
// the tick (`<node>/<src|dst>/<k>/`); a tick encodes its times (startNs, endNs, firstSeenNs,
// lastSeenNs) and its id's end (endNs) once, and each record is then four byte copies: the payload,
// the id's two pieces and the times (protobuf does not care about field order). Encoding the
// four 64-bit times per record (a BigInt a 7-bit step) and building its id string cost more
// than the rest of the generator.
const FIELDS = FlowFields.FlowRecord;
function recordsOf(k: number, startNs: bigint, endNs: bigint): [FlowRecord, FlowRecord] {
  const client = pods[k % pods.length]!;
  const server = pods[(k * 7 + 3) % pods.length]!;
  const peer = server === client ? pods[(k + 1) % pods.length]! : server;
  const port = 10_000 + Math.floor(k / pods.length);
  const common = { startNs, endNs, protocol: IpProtocol.TCP, bytes: 18_000n + BigInt(k % 997), packets: 30n, reverseBytes: 240_000n, reversePackets: 180n, observation: 'socket', firstSeenNs: startNs, lastSeenNs: endNs === 0n ? 0n : endNs - 1_000_000n };
  const tcp = { srttUs: 180, minRttUs: 90, retransmits: 0, handshakeUs: 0, flags: 0x18 };
  const process = (p: BenchPod) => ({ pid: p.pid, name: 'sleep', cgroupId: p.cgroupId });
  const src = newFlowRecord({ ...common, node: client.node, vantage: Vantage.SRC, src: { ip: client.ipv4, port, process: process(client) }, dst: { ip: peer.ipv4, port: 8080 }, tcp });
  const dst = newFlowRecord({ ...common, node: peer.node, vantage: Vantage.DST, src: { ip: client.ipv4, port }, dst: { ip: peer.ipv4, port: 8080, process: process(peer) }, tcp });
  return [src, dst];
}
/** Conversation k's two ends without their per-tick fields, by the node that reports each. */
interface EncodedEnd { node: NodeName; payload: Uint8Array; idPrefix: Uint8Array }
const encodedEnds: EncodedEnd[] = [];
function endsUpTo(conversations: number): void {
  for (let k = encodedEnds.length / 2; k < conversations; k++) {
    const [src, dst] = recordsOf(k, 0n, 0n);
    for (const [record, vantage] of [[src, 'src'], [dst, 'dst']] as const) {
      encodedEnds.push({ node: record.node as NodeName, payload: toBinary(FlowRecordSchema, record), idPrefix: Buffer.from(`${record.node}/${vantage}/${k}/`) });
    }
  }
}
/** A tick's times, encoded once per tick. */
const tickTimes = new ProtoWriter(64);
const LENGTH_DELIMITED = 2;
/** One tick's batch of a node: every end it reports, with the tick's id and times. */
function writeTick(writer: FlowBatchWriter, node: NodeName, conversations: number, startNs: bigint, endNs: bigint, maxBytes: number): number {
  writer.reset();
  writer.open({ batchId: `capture:${node}:${endNs}`, producer: node, createdNs: endNs }, maxBytes);
  tickTimes.reset();
  tickTimes.uint64Field(FIELDS.startNs, startNs);
  tickTimes.uint64Field(FIELDS.endNs, endNs);
  tickTimes.uint64Field(FIELDS.firstSeenNs, startNs);
  tickTimes.uint64Field(FIELDS.lastSeenNs, endNs - 1_000_000n);
  const times = tickTimes.buf.subarray(0, tickTimes.pos);
  const idEnd = Buffer.from(String(endNs));
  let records = 0;
  for (let i = 0; i < conversations * 2; i++) {
    const end = encodedEnds[i]!;
    if (end.node !== node) continue;
    writer.beginRecord();
    writer.raw(end.payload);
    // Stable identity (node, vantage, conversation, interval), as capture gives its records.
    writer.tag(FIELDS.id, LENGTH_DELIMITED);
    writer.varint32(end.idPrefix.length + idEnd.length);
    writer.raw(end.idPrefix);
    writer.raw(idEnd);
    writer.raw(times);
    writer.endRecord();
    records++;
  }
  writer.close();
  return records;
}

// --- Record identity: every record sent is (tick, conversation, vantage); each line out is marked
// in its tick's table by its id, so a second mark is a duplicate and an unmarked one is missing.
class Identity {
  /** By the tick's endNs in ms (every endNs the generator sends is a whole ms). */
  private readonly ticks = new Map<number, { seen: Uint8Array; joined: Uint8Array }>();
  duplicated = 0;
  unknown = 0;
  expect(endNs: bigint, conversations: number): void {
    this.ticks.set(Number(endNs / 1_000_000n), { seen: new Uint8Array(conversations * 2), joined: new Uint8Array(conversations * 2) });
  }
  /**
   * Marks the record whose id is bytes [start, end): `<node>/<src|dst>/<k>/<endNs>`, read in place
   * (no string per line). Returns its endNs in ms (NaN for an id of no record sent).
   */
  see(bytes: Uint8Array, start: number, end: number, joined: boolean): number {
    const last = bytes.lastIndexOf(0x2f /* / */, end - 1);
    const before = last > start ? bytes.lastIndexOf(0x2f, last - 1) : -1;
    // endNs is the send time in ms followed by six zeros.
    const ms = before > start && end - last > 7 && digits(bytes, end - 6, end) === 0 ? digits(bytes, last + 1, end - 6) : NaN;
    const tick = this.ticks.get(ms);
    const k = digits(bytes, before + 1, last);
    const slot = k * 2 + (bytes[before - 1] === 0x74 /* "dst" ends in t */ ? 1 : 0);
    if (!tick || !(slot < tick.seen.length)) {
      this.unknown++;
      return NaN;
    }
    if (tick.seen[slot]! > 0) this.duplicated++;
    tick.seen[slot] = 1;
    if (joined) tick.joined[slot] = 1;
    return ms;
  }
  /** Records sent and never seen, and seen without their peer, over every tick. */
  totals(): { sent: number; missing: number; unjoined: number } {
    let sent = 0;
    let missing = 0;
    let unjoined = 0;
    for (const { seen, joined } of this.ticks.values()) {
      sent += seen.length;
      for (let i = 0; i < seen.length; i++) {
        if (seen[i] === 0) missing++;
        else if (joined[i] === 0) unjoined++;
      }
    }
    return { sent, missing, unjoined };
  }
}
const identity = new Identity();

// --- The JSON Lines file, read as it grows: each line's endNs against the moment it was seen.
// Read as bytes: each line's id is found by a byte search and read in place (the generator decoded
// every line to text, ~half its CPU per record at 20 000 records/s; then a string per id).
const ID_AT = Buffer.from('"id":"');
const JOINED = Buffer.from('"joined":true');
class JsonlTail {
  private offset = 0;
  /** Bytes read and not yet parsed (an incomplete last line) at the start of `buffer`. */
  private kept = 0;
  private buffer = Buffer.allocUnsafe(1 << 20);
  private fd: number | undefined;
  lines = 0;
  joined = 0;
  latenciesMs: number[] = [];
  read(): void {
    let size: number;
    try {
      size = statSync(jsonl).size;
    } catch {
      return;
    }
    if (size <= this.offset) return;
    const fresh = size - this.offset;
    if (this.kept + fresh > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(2 * this.buffer.length, this.kept + fresh));
      this.buffer.copy(grown, 0, 0, this.kept);
      this.buffer = grown;
    }
    this.fd ??= openSync(jsonl, 'r');
    const got = readSync(this.fd, this.buffer, this.kept, fresh, this.offset);
    this.offset += got;
    const end = this.kept + got;
    const buf = this.buffer;
    const nowMs = Date.now();
    // The next "id": and "joined":true at or after the line being read (searched again only
    // once a line is past them, so the buffer is searched once).
    let idAt = -1;
    let joinedAt = -1;
    let start = 0;
    for (let newline = buf.indexOf(0x0a, start); newline !== -1 && newline < end; start = newline + 1, newline = buf.indexOf(0x0a, start)) {
      if (idAt < start) idAt = after(buf.indexOf(ID_AT, start), end);
      if (idAt >= newline) continue;
      const idStart = idAt + ID_AT.length;
      if (joinedAt < start) joinedAt = after(buf.indexOf(JOINED, start), end);
      const joined = joinedAt < newline;
      this.lines++;
      if (joined) this.joined++;
      // The id ends in the record's endNs (the send time).
      const sentMs = identity.see(buf, idStart, buf.indexOf(0x22, idStart), joined);
      if (!Number.isNaN(sentMs)) this.latenciesMs.push(nowMs - sentMs);
    }
    this.kept = end - start;
    buf.copy(buf, 0, start, end);
  }
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
/** The decimal number in bytes [start, end), or NaN when it is empty or not all digits. */
function digits(bytes: Uint8Array, start: number, end: number): number {
  if (end <= start) return NaN;
  let n = 0;
  for (let i = start; i < end; i++) {
    const d = bytes[i]! - 0x30;
    if (d < 0 || d > 9) return NaN;
    n = n * 10 + d;
  }
  return n;
}
/** A search's hit, or `end` when there is none before it (bytes past `end` are an older read's). */
const after = (at: number, end: number) => (at === -1 || at > end ? end : at);

const percentile = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};
const f = (n: number, digits = 0) => (Number.isNaN(n) ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// nats-server with its monitoring endpoint (the traffic table) and, for --profile=nats-server, its
// Go profiling endpoint.
const [natsMonitorPort = 0, natsProfilePort = 0] = await freePorts(2);
const natsArgs = ['-m', String(natsMonitorPort), ...(args.profile === 'nats-server' ? ['--profile', String(natsProfilePort)] : [])];
const [nats, redis, api] = await Promise.all([startNatsServer({ args: natsArgs }), startRedisServer(), startKubeApiServer()]);
describeCluster(api, topology);
const bus = await connectBus({ servers: [nats.url], name: 'bench-pipeline', logger: createLogger('bench', 'warn'), registry: createRegistry('bench') });
await bus.ensureStreams();

// --- The stages, as real processes from their bundles (dist/main.js; `npm run bench` builds them).
const profileDir = join(workDir, 'profile');
/** --node-args=<app>:<flags>[,<app>:<flags>…]: Node/V8 flags for one stage (e.g. joiner:--max-semi-space-size=8). */
const nodeArgs = new Map<string, string[]>(
  String(args['node-args'] ?? '')
    .split(',')
    .filter(Boolean)
    .map((a: string) => [a.slice(0, a.indexOf(':')), a.slice(a.indexOf(':') + 1).split(' ').filter(Boolean)]),
);
function stage(name: string, app: string, extra: string[]): RunningService {
  const profiled = args.profile === app;
  if (profiled) process.env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${profileDir}`;
  const service = startService(name, app, [`--nats-url=${nats.url}`, '--metrics-port=0', '--log-level=warn', ...extra], workDir, nodeArgs.get(app) ?? []);
  if (profiled) delete process.env.NODE_OPTIONS;
  return service;
}
const services: RunningService[] = [
  ...NODES.map((node) => stage(`process-enricher-${node}`, 'process-enricher', [`--node=${node}`, '--cri-socket=none'])),
  stage('k8s-tagger', 'k8s-tagger', [`--kubeconfig=${api.kubeconfigPath}`, '--grpc-port=0']),
  ...Array.from({ length: JOINERS }, (_, i) => stage(JOINERS === 1 ? 'joiner' : `joiner-${i}`, 'joiner', [`--redis-url=${redis.url}`, `--interval=${TICK_MS}ms`, `--instance=bench-${i}`])),
  stage('exporter', 'exporter', [`--jsonl=${jsonl}`, `--jsonl-max-bytes=${2 ** 40}`, '--prometheus=false', '--observer=false', ...(args['exporter-args'] ?? '').split(' ').filter(Boolean)]),
];
/** The consumers in front of each stage; the joiner has one per partition (joiner-p<k>). */
const PARTITIONS = 16;
const durables: string[][] = [['process-enricher-node-a'], ['process-enricher-node-b'], ['k8s-tagger'], Array.from({ length: PARTITIONS }, (_, k) => `joiner-p${k}`), ['exporter']];
/** Records each stage instance took in, from its heartbeats (kappa.status.<stage>.<instance>, every 2 s). */
const recordsInByInstance = new Map<string, number>();
bus.subscribeStatus((status) => recordsInByInstance.set(`${status.stage}/${status.instance}`, Number(status.recordsIn)));
/**
 * Every process of the run, whether its main thread is the one doing the work (Node, Redis), and
 * the records it handled: a stage's own count, or (servers, generator) every record sent.
 */
const processes: { name: string; pid: () => number | undefined; mainThread: boolean; records: () => number }[] = [
  ...services.map((s) => {
    const [, app = '', suffix = ''] = /^(process-enricher|k8s-tagger|joiner|exporter)-?(.*)$/.exec(s.name) ?? [];
    const key = app === 'process-enricher' ? `${app}/${suffix}` : app === 'joiner' ? `joiner/bench-${suffix || 0}` : `${app}/${app === 'k8s-tagger' || app === 'exporter' ? '' : suffix}`;
    const records = () => (app === 'k8s-tagger' || app === 'exporter' ? [...recordsInByInstance].filter(([k]) => k.startsWith(`${app}/`)).reduce((a, [, n]) => a + n, 0) : (recordsInByInstance.get(key) ?? NaN));
    return { name: s.name.replace('process-enricher-', 'enricher '), pid: () => s.child.pid, mainThread: true, records };
  }),
  { name: 'nats-server', pid: () => nats.process.pid, mainThread: false, records: () => published },
  { name: 'redis-server', pid: () => redis.process.pid, mainThread: true, records: () => published },
  { name: 'generator', pid: () => process.pid, mainThread: true, records: () => published },
];

/**
 * CPU seconds of the whole process, and of its main thread the seconds on a CPU plus the seconds
 * it was runnable but waiting for one (/proc/<pid>/schedstat): when the two together approach the
 * wall time, the thread would have used more CPU if it got it (saturated); when they do not, it
 * spent the rest waiting for I/O.
 */
function usage(pid: number | undefined): { cpu: number; wantedCpu: number } {
  if (pid === undefined) return { cpu: NaN, wantedCpu: NaN };
  const [running = 0, waiting = 0] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ').map(Number);
  return { cpu: cpuSeconds(pid), wantedCpu: (running + waiting) / 1e9 };
}

async function pendingPerStage(): Promise<number[]> {
  return Promise.all(durables.map(async (names) => {
    let pending = 0;
    for (const name of names) {
      const info = await bus.consumerInfo(name).catch(() => undefined);
      if (!info) return NaN;
      pending += info.num_pending + info.num_ack_pending;
    }
    return pending;
  }));
}

/**
 * What went through nats-server so far (its monitoring endpoint): messages and bytes in and out,
 * JetStream API requests, and the bytes each hop's publishers sent (their batches, and the acks,
 * pulls and API requests of the same connections, which weigh little beside them).
 */
interface NatsTraffic {
  inMsgs: number;
  outMsgs: number;
  inBytes: number;
  outBytes: number;
  apiRequests: number;
  byHop: Map<string, number>;
}
const HOPS = ['captured', 'enriched', 'tagged', 'joined'] as const;
/** The hop a connection publishes, by its name (the bench's own connection plays capture). */
const HOP_OF_CONNECTION: readonly [RegExp, (typeof HOPS)[number]][] = [[/^bench-pipeline$/, 'captured'], [/^kappa-process-enricher-/, 'enriched'], [/^kappa-k8s-tagger-/, 'tagged'], [/^kappa-joiner-/, 'joined']];
async function natsTraffic(): Promise<NatsTraffic | undefined> {
  const get = async (path: string) => (await fetch(`http://127.0.0.1:${natsMonitorPort}${path}`)).json() as Promise<Record<string, unknown>>;
  try {
    const [varz, connz] = await Promise.all([get('/varz'), get('/connz?limit=4096')]);
    const byHop = new Map<string, number>(HOPS.map((h) => [h, 0]));
    for (const c of connz.connections as { name?: string; in_bytes: number }[]) {
      const hop = HOP_OF_CONNECTION.find(([pattern]) => pattern.test(c.name ?? ''))?.[1];
      if (hop) byHop.set(hop, byHop.get(hop)! + c.in_bytes);
    }
    const api = (varz.jetstream as { stats?: { api?: { total?: number } } } | undefined)?.stats?.api?.total ?? NaN;
    return { inMsgs: varz.in_msgs as number, outMsgs: varz.out_msgs as number, inBytes: varz.in_bytes as number, outBytes: varz.out_bytes as number, apiRequests: api, byHop };
  } catch {
    return undefined;
  }
}

const tail = new JsonlTail();
// Read every 100 ms: a line's latency is taken when it is seen, so it is at most 0.1 s late.
const tailTimer = setInterval(() => tail.read(), 100);
let published = 0;
/** Publishes `rate` records/s for `seconds`, one batch per node per tick, on absolute tick times. */
const writers = NODES.map(() => new FlowBatchWriter(1 << 20));
/**
 * A publish JetStream did not confirm in time is sent again under the same ids
 * (a copy that did land is dropped as a duplicate). On a loaded machine (load 20-36 on 2 cores)
 * nats-server answered a 1 MB batch after the 2 s wait and the bench died there.
 */
async function publishRetrying(subject: string, parts: Parameters<typeof bus.publishParts>[1]): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await bus.publishParts(subject, parts);
    } catch (error) {
      if (!(error instanceof BusPublishError) || error.reason !== 'timeout' || attempt >= 5) throw error;
    }
  }
}
async function generate(rate: number, seconds: number): Promise<void> {
  const conversations = Math.max(1, Math.round(rate / 2));
  endsUpTo(conversations);
  const started = Date.now();
  for (let tick = 0; tick < (seconds * 1000) / TICK_MS; tick++) {
    const due = started + tick * TICK_MS;
    if (Date.now() < due) await sleep(due - Date.now());
    const endNs = BigInt(Date.now()) * 1_000_000n;
    const startNs = endNs - BigInt(TICK_MS) * 1_000_000n;
    identity.expect(endNs, conversations);
    await Promise.all(NODES.map((node, n) => {
      writeTick(writers[n]!, node, conversations, startNs, endNs, bus.messageLimit);
      return publishRetrying(subjects.captured(node), writers[n]!.parts());
    }));
    published += conversations * 2;
  }
}

interface Step {
  rate: number;
  offered: number;
  out: number;
  joinedPct: number;
  p50: number;
  p99: number;
  pending: number[];
  backlog: number;
  cpu: number[];
  /** Main thread on a CPU or waiting for one, % of the wall time. */
  wanted: number[];
  /** Records each process handled in the step (a stage's heartbeat count; every record sent for the others). */
  handled: number[];
  /** Seconds the step's figures cover. */
  elapsed: number;
  /** nats-server's counters at the start and the end of the step (undefined: not readable). */
  traffic: [NatsTraffic | undefined, NatsTraffic | undefined];
  held: boolean;
}

async function runStep(rate: number, seconds: number): Promise<Step> {
  tail.read();
  const linesBefore = tail.lines;
  const joinedBefore = tail.joined;
  tail.latenciesMs = [];
  const publishedBefore = published;
  const usageBefore = processes.map((p) => usage(p.pid()));
  const handledBefore = processes.map((p) => p.records());
  const trafficBefore = await natsTraffic();
  const started = Date.now();
  await generate(rate, seconds);
  // One more tick for the last batch to pass through, as a step's records are the ones sent in it.
  await sleep(TICK_MS);
  tail.read();
  const elapsed = (Date.now() - started) / 1000;
  const usageAfter = processes.map((p) => usage(p.pid()));
  const trafficAfter = await natsTraffic();
  const out = tail.lines - linesBefore;
  const step: Step = {
    rate,
    offered: (published - publishedBefore) / seconds,
    out: out / elapsed,
    joinedPct: out ? (100 * (tail.joined - joinedBefore)) / out : 0,
    p50: percentile(tail.latenciesMs, 50) / 1000,
    p99: percentile(tail.latenciesMs, 99) / 1000,
    pending: await pendingPerStage(),
    backlog: published - tail.lines,
    cpu: usageAfter.map((u, i) => (100 * (u.cpu - usageBefore[i]!.cpu)) / elapsed),
    wanted: usageAfter.map((u, i) => (processes[i]!.mainThread ? (100 * (u.wantedCpu - usageBefore[i]!.wantedCpu)) / elapsed : NaN)),
    handled: processes.map((p, i) => p.records() - handledBefore[i]!),
    elapsed,
    traffic: [trafficBefore, trafficAfter],
    held: false,
  };
  // Held: the exporter kept pace (≥ 95 % of what was sent) and no more than three ticks' worth of
  // records were inside the pipeline at the end (one tick in flight, the rest in queues).
  step.held = step.out >= 0.95 * step.offered && step.backlog <= 3 * rate * (TICK_MS / 1000);
  return step;
}

const steps: Step[] = [];
let profileFromUs = 0;
let natsProfile: Promise<Uint8Array | undefined> | undefined;
let natsProfileText = '';
let failure: unknown;
try {
  // Warm-up: every stage up (the tagger has synced, the consumers exist) and records coming out.
  const warmUpEnd = Date.now() + 120_000;
  await generate(20, 1);
  while (tail.lines < published) {
    if (Date.now() > warmUpEnd) throw new Error(`pipeline not flowing after 120 s (${tail.lines} of ${published} out)\n${services.map((s) => `--- ${s.name}\n${logTail(s, 10)}`).join('\n')}`);
    await sleep(200);
  }
  await sleep(3000); // the joiner's wait for the warm-up's last peers
  profileFromUs = Number(process.hrtime.bigint() / 1000n);
  // nats-server's Go profile covers the steps' seconds from here (not the last tick of each).
  natsProfile = args.profile === 'nats-server' ? fetch(`http://127.0.0.1:${natsProfilePort}/debug/pprof/profile?seconds=${RATES.length * STEP_S}`).then(async (r) => new Uint8Array(await r.arrayBuffer()), () => undefined) : undefined;
  for (const rate of RATES) {
    process.stderr.write(`pipeline: ${rate} records/s for ${STEP_S} s\n`);
    const step = await runStep(rate, STEP_S);
    steps.push(step);
    process.stderr.write(`  out ${step.out.toFixed(0)}/s, p99 ${step.p99.toFixed(2)} s, backlog ${step.backlog}, pending ${step.pending.join('/')}, ${step.held ? 'held' : 'NOT held'}\n`);
    if (!step.held && !('all' in args)) break;
  }
  const natsProfileBytes = await natsProfile;
  if (natsProfileBytes) natsProfileText = natsProfileReport(natsProfileBytes);
  // Identity is checked once everything sent came out (or 60 s passed): what never came is missing.
  const drainEnd = Date.now() + 60_000;
  while (tail.lines < published && Date.now() < drainEnd) {
    await sleep(500);
    tail.read();
  }
  await sleep(2000);
  tail.read();
} catch (error) {
  failure = error;
} finally {
  clearInterval(tailTimer);
  tail.close();
  await Promise.all(services.map((s) => stopService(s)));
  await bus.close();
  await Promise.all([nats.stop(), redis.stop(), api.close()]);
  for (const pod of pods) pod.child.kill('SIGKILL');
  // The whole tree, deepest first (what still runs in it is killed): nothing of this run is left.
  removeCgroupTree(cgroupRoot);
}

if (args.profile && args.profile !== 'nats-server') printProfile(profileFromUs);
rmSync(workDir, { recursive: true, force: true });
if (failure) throw failure;

function identityLine(): string {
  const { sent, missing, unjoined } = identity.totals();
  return `Record identity over the whole run (warm-up included, after waiting for the last records): ${f(sent)} sent, **${f(missing)} missing, ${f(identity.duplicated)} duplicated**, ${f(unjoined)} out without their peer (every record sent has one), ${f(identity.unknown)} lines of no record sent.`;
}
const held = steps.filter((s) => s.held);
const best = held.at(-1);
const firstMiss = steps.find((s) => !s.held);
const stageNames = ['enricher a', 'enricher b', 'tagger', 'joiner', 'exporter'];
const saturated = firstMiss ? stageNames[firstMiss.pending.indexOf(Math.max(...firstMiss.pending.map((n) => (Number.isNaN(n) ? -1 : n))))] : undefined;
const markdown = [
  `Command: \`npm run bench:pipeline${process.argv.slice(2).length ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\` (${STEP_S} s per rate, one batch per node per ${TICK_MS / 1000} s tick, ${pods.length} pods on 2 nodes)`,
  '',
  `**Highest rate held: ${best ? `${f(best.rate)} records/s` : 'none of the rates tried'}**${firstMiss ? `; at ${f(firstMiss.rate)} records/s the queue grew in front of the **${saturated}**` : ''}.`,
  '',
  table(
    ['sent, records/s', 'out of exporter, records/s', 'joined', 'latency p50, s', 'latency p99, s', 'batches pending at the end: enricher a / b, tagger, joiner, exporter', 'records inside at the end', 'held'],
    steps.map((s) => [f(s.offered), f(s.out), `${f(s.joinedPct, 1)} %`, f(s.p50, 2), f(s.p99, 2), s.pending.map((n) => f(n)).join(' / '), f(s.backlog), s.held ? 'yes' : '**no**']),
  ),
  '',
  identityLine(),
  '',
  'CPU per process, % of one core (and, after the slash, its main thread on a CPU or waiting for one, % of the wall time):',
  '',
  table(
    ['sent, records/s', ...processes.map((p) => p.name)],
    steps.map((s) => [f(s.offered), ...s.cpu.map((c, i) => (Number.isNaN(s.wanted[i]!) ? f(c) : `${f(c)} / ${f(s.wanted[i]!)}`))]),
  ),
  '',
  'CPU µs per record each process handled (= ms per 1 000 records; a stage\'s records from its heartbeats, ±2 s of a step; nats-server, redis-server and the generator: per record sent). "all": the CPU of every process over the records sent:',
  '',
  table(
    ['sent, records/s', ...processes.map((p) => p.name), 'all'],
    steps.map((s) => {
      const perRecord = s.cpu.map((c, i) => (s.handled[i]! > 0 ? (c * 10_000 * s.elapsed) / s.handled[i]! : NaN));
      const all = (s.cpu.reduce((a, b) => a + b, 0) * 10_000 * s.elapsed) / (s.offered * STEP_S);
      return [`${f(s.offered)}${s.held ? '' : ' (not held)'}`, ...perRecord.map((x) => f(x, 1)), f(all, 1)];
    }),
  ),
  '',
  'nats-server\'s traffic per record sent (its monitoring endpoint): messages (batches, acks, pulls, API requests, replies) and bytes in and out, and the bytes each hop\'s publishers sent (capture\'s played by the generator):',
  '',
  table(
    ['sent, records/s', 'messages in, /s', 'messages out, /s', 'bytes in per record', 'bytes out per record', ...HOPS.map((h) => `${h}, bytes per record`), 'JetStream API requests, /s'],
    steps.map((s) => {
      const [a, b] = s.traffic;
      if (!a || !b) return [f(s.offered), '–', '–', '–', '–', ...HOPS.map(() => '–'), '–'];
      const sent = s.offered * STEP_S;
      return [f(s.offered), f((b.inMsgs - a.inMsgs) / s.elapsed), f((b.outMsgs - a.outMsgs) / s.elapsed), f((b.inBytes - a.inBytes) / sent), f((b.outBytes - a.outBytes) / sent), ...HOPS.map((h) => f((b.byHop.get(h)! - a.byHop.get(h)!) / sent)), f((b.apiRequests - a.apiRequests) / s.elapsed)];
    }),
  ),
  ...(natsProfileText ? ['', natsProfileText] : []),
  '',
  machineLine(),
].join('\n');
console.log(markdown);
writeSection('pipeline', markdown);

/** nats-server's CPU over the steps by what it was doing, and its top functions (--profile=nats-server). */
function natsProfileReport(profile: Uint8Array): string {
  const stacks = readGoProfile(profile);
  const { groups, total } = groupStacks(stacks);
  const pct = (ns: number) => `${f((100 * ns) / total, 1)} %`;
  return [
    `nats-server's CPU over the steps by what it was doing (Go CPU profile, --profile=nats-server: ${f(total / 1e6)} ms of samples; a stack counts in the first group it matches, in this order):`,
    '',
    table(['group', 'share'], [...groups].map(([name, ns]) => [name, pct(ns)])),
    '',
    'Its top functions by total time (callees included):',
    '',
    table(['function', 'share'], inclusiveTop(stacks, 20).map(([name, ns]) => [`\`${name}\``, pct(ns)])),
  ].join('\n');
}

/**
 * The profiled service's CPU time by where it went, from the .cpuprofile it wrote at exit: only
 * samples taken during the steps (V8 stamps samples with the monotonic clock that hrtime reads),
 * idle excluded; grouped by package, then the top functions by self time.
 */
function shortUrl(url: string): string {
  return url.replace(/^file:\/\/.*\/node_modules\//, '').replace(/^file:\/\/.*\/apps\//, 'apps/');
}

function printProfile(fromUs: number): void {
  const dir = existsSync(profileDir) ? readdirSync(profileDir, { withFileTypes: true }).filter((e) => e.name.endsWith('.cpuprofile')) : [];
  if (dir.length === 0) console.log(`no CPU profile written: --profile=${args.profile} names no stage (process-enricher, k8s-tagger, joiner, exporter)`);
  for (const { name: file } of dir) {
    interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
    const profile = JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as { nodes: ProfileNode[]; startTime: number; samples: number[]; timeDeltas: number[] };
    const byId = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
    const parent = new Map<number, number>();
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const byFunction = new Map<string, number>();
    /** Inclusive time: each function once per sample whose stack holds it. */
    const inclusive = new Map<string, number>();
    const byGroup = new Map<string, number>();
    const add = (map: Map<string, number>, key: string, ms: number) => map.set(key, (map.get(key) ?? 0) + ms);
    let at = profile.startTime;
    profile.samples.forEach((id, i) => {
      const ms = (profile.timeDeltas[i] ?? 0) / 1000;
      at += profile.timeDeltas[i] ?? 0;
      const frame = byId.get(id);
      if (at < fromUs || !frame || frame.functionName === '(idle)') return;
      const url = shortUrl(frame.url);
      add(byFunction, `${frame.functionName || '(anonymous)'} ${url}:${frame.lineNumber + 1}`, ms);
      const onStack = new Set<string>();
      for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
        const f = byId.get(n);
        if (f && f.functionName !== '(root)') onStack.add(`${f.functionName || '(anonymous)'} ${shortUrl(f.url)}:${f.lineNumber + 1}`);
      }
      for (const key of onStack) add(inclusive, key, ms);
      const group = /^\(/.test(frame.functionName) && url === '' ? frame.functionName : /^apps\//.test(url) ? 'kappa (the bundle)' : url.startsWith('node:') || url === '' ? 'Node internals and natives' : url.split('/').slice(0, url.startsWith('@') ? 2 : 1).join('/');
      add(byGroup, group, ms);
    });
    const total = [...byGroup.values()].reduce((a, b) => a + b, 0);
    const top = (map: Map<string, number>, n: number) => [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, ms]) => `${f((100 * ms) / total, 1).padStart(5)} %  ${k}`).join('\n');
    const text = `profile of ${args.profile} during the steps (${file}): ${f(total)} ms of samples, idle excluded\nby package:\n${top(byGroup, 10)}\ntop functions by self time:\n${top(byFunction, 15)}\ntop functions by total time (callees included):\n${top(inclusive, 25)}`;
    console.log(text);
    writeFileSync(join(tmpdir(), `kbp-profile-${args.profile}.txt`), text);
    // The whole profile, for DevTools or speedscope, outlives the bench's folder.
    copyFileSync(join(profileDir, file), join(tmpdir(), `kbp-profile-${args.profile}.cpuprofile`));
  }
}
