// Records/s enriched by process-enricher on one core (run under taskset -c 0), bytes in → bytes
// out as the stage runs: real processes in real runtime-shaped cgroups (prefix ke-bench), /proc
// read for real, warm and cold process cache, against baselines of decode + encode alone and the
// object-model enrichment of before in the same run. No NATS: this measures the
// stage's own work per record. Usage:
//   taskset -c 0 npx tsx tools/bench/process-enricher.ts [processes=200] [seconds=2]
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StageOutput } from '@kappa/bus';
import { FlowBatchView, FlowBatchWriter, IpProtocol, Partitioner, Vantage, decodeFlowBatch, encodeFlowBatch, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { CgroupTree, detectCgroup2Mount } from '../../apps/process-enricher/src/cgroup-tree.js';
import { FlowEnricher } from '../../apps/process-enricher/src/enricher.js';
import { ProcReader } from '../../apps/process-enricher/src/proc.js';
import { ProcessCache } from '../../apps/process-enricher/src/process-cache.js';
import { ProcessResolver } from '../../apps/process-enricher/src/resolver.js';
import { ObjectEnricher } from '../../apps/process-enricher/test/oracle/object-enricher.js';

const processCount = Number(process.argv[2] ?? 200);
const seconds = Number(process.argv[3] ?? 2);
const mount = detectCgroup2Mount();
if (!mount) throw new Error('no cgroup v2 mount');
const slice = join(mount, 'ke-bench.slice');
const groups = ['docker', 'cri-containerd', 'crio', 'libpod'].map((prefix) => {
  const dir = join(slice, `${prefix}-${randomBytes(32).toString('hex')}.scope`);
  mkdirSync(dir, { recursive: true });
  return { dir, id: statSync(dir, { bigint: true }).ino };
});

const children: ChildProcess[] = [];
const stamps: { pid: number; comm: string; cgroupId: bigint }[] = [];
for (let i = 0; i < processCount; i++) {
  const child = spawn('sleep', ['3600'], { stdio: 'ignore' });
  children.push(child);
  const group = groups[i % groups.length]!;
  writeFileSync(join(group.dir, 'cgroup.procs'), String(child.pid));
  stamps.push({ pid: child.pid!, comm: 'sleep', cgroupId: group.id });
}
// Let every child exec before /proc is read.
await new Promise((r) => setTimeout(r, 500));

async function cleanup(): Promise<void> {
  await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(undefined) : (c.once('exit', r), c.kill('SIGKILL'))))));
  for (const g of groups) {
    for (const pid of readFileSync(join(g.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) writeFileSync(join(mount!, 'cgroup.procs'), pid);
    rmdirSync(g.dir);
  }
  rmdirSync(slice);
}

function record(i: number, stamp: (typeof stamps)[number]): FlowRecord {
  return newFlowRecord({
    node: 'bench', vantage: Vantage.SRC, protocol: IpProtocol.TCP, startNs: 1n, endNs: BigInt(Date.now()) * 1_000_000n,
    src: { ip: '10.0.0.1', port: 30000 + (i % 30000), process: { pid: stamp.pid, name: stamp.comm, cgroupId: stamp.cgroupId } },
    dst: { ip: '10.0.0.2', port: 443 }, bytes: 1000n, packets: 10n, observation: 'socket', id: `bench:${i}`,
  });
}

/** One encoded captured batch: `size` records spread over `distinct` processes. */
function capturedBytes(size: number, distinct: number): Uint8Array {
  const records = Array.from({ length: size }, (_, i) => record(i, stamps[i % distinct]!));
  return encodeFlowBatch(newFlowBatch({ batchId: 'bench', producer: 'bench', records }));
}

const tree = new CgroupTree({ mount });
tree.rescan();
const redaction = { enabled: true, extraPatterns: [] };
const proc = new ProcReader();

async function measure(name: string, bytes: Uint8Array, work: (bytes: Uint8Array) => Promise<void>): Promise<void> {
  const perBatch = decodeFlowBatch(bytes).records.length;
  await work(bytes); // warm up JIT (and the cache, for warm runs)
  let batches = 0;
  const cpuStart = process.cpuUsage();
  const start = process.hrtime.bigint();
  const until = start + BigInt(seconds * 1e9);
  while (process.hrtime.bigint() < until) {
    await work(bytes);
    batches++;
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  const rate = (batches * perBatch) / elapsed;
  // CPU time as well: on a loaded shared machine the wall clock mostly measures waiting.
  const perCpuSecond = (batches * perBatch) / ((cpu.user + cpu.system) / 1e6);
  console.log(`${name.padEnd(66)} ${Math.round(perCpuSecond).toLocaleString('en-US').padStart(10)} records per CPU-second (${(1e6 / perCpuSecond).toFixed(2)} µs/record), wall ${Math.round(rate).toLocaleString('en-US')} records/s  (${batches} batches of ${perBatch} in ${elapsed.toFixed(2)} s)`);
}

// The stage's work: parse (validate) the received batch, enrich into one output buffer by
// partition, cut the parts. Baseline in the same run: the object model of before (decode, enrich
// objects, encode), kept as the differential test's oracle.
const view = new FlowBatchView();
const writer = new FlowBatchWriter();
const output: StageOutput = {
  batch: (_subject, key) => {
    writer.open({ batchId: `process-enricher:bench:${key ?? ''}`, producer: 'bench', createdNs: 1n }, 1 << 30);
    return writer;
  },
};
const partitioner = new Partitioner(16);
const warmResolver = new ProcessResolver({ proc, cgroupTree: tree, redaction });
const warm = new FlowEnricher({ node: 'bench', resolver: warmResolver, cgroupTree: tree });
const bytesPath = (enricher: () => FlowEnricher) => async (bytes: Uint8Array) => {
  writer.reset();
  await enricher().enrichInto(view.parse(bytes), output, partitioner);
  writer.parts();
};
const objectWarm = new ObjectEnricher({ node: 'bench', resolver: new ProcessResolver({ proc, cgroupTree: tree, redaction }), cgroupTree: tree });
const objectPath = async (bytes: Uint8Array) => void encodeFlowBatch(await objectWarm.enrichBatch(decodeFlowBatch(bytes)));
const cold = () => new FlowEnricher({ node: 'bench', resolver: new ProcessResolver({ proc, cgroupTree: tree, redaction, cache: new ProcessCache() }), cgroupTree: tree });

console.log(`process-enricher, ${processCount} live processes in 4 runtime cgroups, ${seconds} s per line, pid ${process.pid}`);
const distinct = capturedBytes(processCount, processCount);
const shared = capturedBytes(1000, 20);
await measure('baseline: decode + encode only (distinct processes)', distinct, async (b) => void encodeFlowBatch(decodeFlowBatch(b)));
await measure('cold cache: bytes in → bytes out, every record reads /proc', distinct, bytesPath(cold));
await measure('warm cache: bytes in → bytes out, distinct processes', distinct, bytesPath(() => warm));
await measure('object model of before, warm: decode + enrich + encode, distinct', distinct, objectPath);
await measure('baseline: decode + encode only (1000 records, 20 processes)', shared, async (b) => void encodeFlowBatch(decodeFlowBatch(b)));
await measure('warm cache: bytes in → bytes out, 1000 records of 20 processes', shared, bytesPath(() => warm));
await measure('object model of before, warm: 1000 records of 20 processes', shared, objectPath);
console.log(`process cache: ${warmResolver.cache.hits} hits, ${warmResolver.cache.misses} misses`);
await cleanup();
