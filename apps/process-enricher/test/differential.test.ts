// The byte path against the object model it replaced: 100 000 generated records (every field of
// FlowRecord at random, the local process stamped as capture stamps it: live processes in
// runtime-shaped cgroups, exited ones, reused pids, unknown comms, no pid) go through the
// enricher's byte transform and through the object-model enrichment of before
// (test/oracle/object-enricher.ts); every record must come out equal (protobuf-es `equals`), in
// its partition's output, in input order. KAPPA_DIFF_RECORDS sets the count.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { EndpointSchema, FlowBatchView, FlowBatchWriter, FlowRecordSchema, Partitioner, ProcessSchema, Vantage, create, decodeFlowBatch, encodeFlowBatch, equals, flowRecordToJson, newFlowBatch, partitionOfRecord, toBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import type { StageOutput } from '@kappa/bus';
import { createLogger } from '@kappa/observability';
import { anyMessage } from '@kappa/testing';
import { CgroupTree } from '../src/cgroup-tree.js';
import { CriContainerNames } from '../src/cri.js';
import { FlowEnricher } from '../src/enricher.js';
import { ProcessCache } from '../src/process-cache.js';
import { ProcReader } from '../src/proc.js';
import { ProcessResolver } from '../src/resolver.js';
import { startCriServer } from './cri-server.js';
import type { FakeCri } from './cri-server.js';
import { CgroupFixture, commOf } from './helpers.js';
import { ObjectEnricher } from './oracle/object-enricher.js';

const RECORDS = Number(process.env.KAPPA_DIFF_RECORDS ?? 100_000);
const PER_BATCH = 1000;
const PARTITIONS = 16;

const fixture = new CgroupFixture('ke-diff');
const shapes = fixture.runtimeShapes();
let cri: FakeCri;
/** Stamps capture could make: [pid, comm, cgroup id, start time ticks]. */
const stamps: { pid: number; comm: string; cgroupId: bigint; startTimeTicks: bigint }[] = [];

/** One enricher of each kind, each with its own resolver, caches and CRI client. */
function pieces() {
  const proc = new ProcReader('/proc');
  const cgroupTree = new CgroupTree({ mount: fixture.mount });
  cgroupTree.rescan();
  const resolver = new ProcessResolver({ proc, cgroupTree, redaction: { enabled: true, extraPatterns: [] }, cache: new ProcessCache() });
  // Both sides ask the same test runtime; a lookup that times out (2 s by default, reached at load
  // ~30) gives that side no name, which is the runtime's timing, not a difference of the paths.
  const containerNames = new CriContainerNames({ sockets: [cri.socket], logger: createLogger('ke-diff', 'silent'), timeoutMs: 60_000 });
  return { resolver, cgroupTree, containerNames };
}

beforeAll(async () => {
  cri = await startCriServer('containerd');
  cri.containers.set(shapes.containerd.containerId, 'api');
  cri.containers.set(shapes.docker.containerId, 'web');
  // crio and podman containers stay unknown to the runtime: names come back empty.
  const proc = new ProcReader('/proc');
  const live = [
    await fixture.start('sleep', ['2001'], shapes.containerd),
    await fixture.start(process.execPath, ['-e', 'setInterval(() => {}, 1e9)', '--', '--password=hunter2', 'serve'], shapes.docker),
    await fixture.start('sleep', ['2003'], shapes.crio),
    await fixture.start('sh', ['-c', 'PGPASSWORD=x sleep 2004; :'], shapes.podman),
  ];
  const cgroups = [shapes.containerd, shapes.docker, shapes.crio, shapes.podman];
  live.forEach((child, i) => {
    const start = proc.stat(child.pid)!.startTimeTicks;
    const cgroupId = cgroups[i]!.id;
    stamps.push({ pid: child.pid, comm: commOf(child.pid), cgroupId, startTimeTicks: 0n });
    stamps.push({ pid: child.pid, comm: commOf(child.pid), cgroupId, startTimeTicks: start });
    // Reused: the pid is another process now (other start time, other comm).
    stamps.push({ pid: child.pid, comm: commOf(child.pid), cgroupId, startTimeTicks: start + 1n });
    stamps.push({ pid: child.pid, comm: 'not-its-comm', cgroupId, startTimeTicks: 0n });
    stamps.push({ pid: child.pid, comm: commOf(child.pid), cgroupId: cgroups[(i + 1) % 4]!.id, startTimeTicks: 0n });
  });
  // Exited: a process that ran in a container cgroup and is gone.
  const gone = await fixture.start('sleep', ['2005'], shapes.containerd);
  const goneStamp = { pid: gone.pid, comm: commOf(gone.pid), cgroupId: shapes.containerd.id, startTimeTicks: proc.stat(gone.pid)!.startTimeTicks };
  gone.kill('SIGKILL');
  await new Promise((r) => gone.once('exit', r));
  stamps.push(goneStamp, { ...goneStamp, startTimeTicks: 0n });
  // Kernel context (no pid) with a container's cgroup; no pid and no cgroup (left alone).
  stamps.push({ pid: 0, comm: '', cgroupId: shapes.crio.id, startTimeTicks: 0n }, { pid: 0, comm: 'swapper', cgroupId: 0n, startTimeTicks: 0n });
  stamps.push({ pid: 4_000_000, comm: 'no-such', cgroupId: 12345n, startTimeTicks: 7n });
}, 60_000);

afterAll(async () => {
  await cri?.stop();
  await fixture.cleanup();
});

/** A generated record whose local end (by vantage) carries one of the stamps, or none. */
const record = fc
  .tuple(anyMessage<FlowRecord>(FlowRecordSchema), fc.nat(), fc.constantFrom(Vantage.SRC, Vantage.DST, Vantage.UNSPECIFIED, 7), fc.integer({ min: 0, max: 9 }), fc.constantFrom('10.0.0.1', '127.0.0.1', '::1', 'fd00::5'))
  .map(([r, pick, vantage, shape, srcIp]) => {
    // A generated pid could be a live process whose comm changes between the two paths' reads (a
    // kworker renames itself by its work queue: seen in CI, "kworker/0:1-mm_percpu_wq" then
    // "-events"). Above Linux's largest pid_max (4 194 304) no process lives; the stamps below
    // bring the live ones.
    for (const end of [r.src, r.dst]) if (end?.process) end.process.pid = 4_194_305 + (end.process.pid % 1_000_000);
    r.vantage = vantage;
    const src = (r.src ??= create(EndpointSchema));
    if (shape < 3) src.ip = srcIp;
    const stamp = stamps[pick % stamps.length]!;
    const process = { pid: stamp.pid, name: stamp.comm, cgroupId: stamp.cgroupId, startTimeTicks: stamp.startTimeTicks, ...(shape === 4 ? { uid: 1000 } : {}) };
    // Either end may hold the stamp (for an unknown vantage, both or neither).
    if (shape !== 9) {
      const local = vantage === Vantage.DST ? (r.dst ??= create(EndpointSchema)) : src;
      local.process = create(ProcessSchema, process);
      if (vantage !== Vantage.SRC && vantage !== Vantage.DST && shape % 2 === 0) {
        const dst = (r.dst ??= create(EndpointSchema));
        dst.process = create(ProcessSchema, { ...process, pid: stamps[(pick + 1) % stamps.length]!.pid });
      }
    }
    // End times around now: a process that started after the interval cannot have talked.
    if (shape === 5) r.endNs = BigInt(Date.now() - 3_600_000) * 1_000_000n;
    else if (shape === 6) r.endNs = 0n;
    else r.endNs = BigInt(Date.now()) * 1_000_000n;
    return r;
  });

describe('the enricher byte path', () => {
  it(`gives ${RECORDS} generated records exactly what the object-model enricher gave them, in their partitions`, async () => {
    const byteSide = pieces();
    const objectSide = pieces();
    await byteSide.containerNames.connect();
    await objectSide.containerNames.connect();
    const enricher = new FlowEnricher({ node: 'ke-diff', resolver: byteSide.resolver, cgroupTree: byteSide.cgroupTree, containerNames: byteSide.containerNames });
    const oracle = new ObjectEnricher({ node: 'ke-diff', resolver: objectSide.resolver, cgroupTree: objectSide.cgroupTree, containerNames: objectSide.containerNames });
    const partitioner = new Partitioner(PARTITIONS);
    const view = new FlowBatchView();
    const writer = new FlowBatchWriter();
    const subjects: string[] = [];
    const output: StageOutput = {
      batch: (subject, key) => {
        subjects.push(subject);
        writer.open({ batchId: `out:${key ?? ''}`, producer: 'ke-diff', createdNs: 1n }, 1 << 30);
        return writer;
      },
    };
    let compared = 0;
    let seed = 1;
    while (compared < RECORDS) {
      const records = fc.sample(record, { numRuns: Math.min(PER_BATCH, RECORDS - compared), seed: seed++ });
      const input = encodeFlowBatch(newFlowBatch({ batchId: `in-${seed}`, producer: 'ke-diff', records }));

      const expected = (await oracle.enrichBatch(decodeFlowBatch(input))).records;
      writer.reset();
      subjects.length = 0;
      await enricher.enrichInto(view.parse(input), output, partitioner);
      const parts = writer.parts();

      // Each output batch is one partition's records, in input order; all records come out once.
      expect(parts.reduce((n, p) => n + p.records, 0)).toBe(records.length);
      for (const part of parts) {
        const k = Number(/\.p(\d+)\./.exec(subjects[part.batch]!)![1]);
        const want = expected.filter((r) => partitionOfRecord(r, PARTITIONS) === k);
        const got = decodeFlowBatch(part.bytes).records;
        expect(got.length, `partition ${k}`).toBe(want.length);
        got.forEach((r, i) => {
          if (!equals(FlowRecordSchema, r, want[i]!)) {
            expect(flowRecordToJson(r), `record ${i} of partition ${k} (seed ${seed - 1})`).toEqual(flowRecordToJson(want[i]!));
            expect(toBinary(FlowRecordSchema, r)).toEqual(toBinary(FlowRecordSchema, want[i]!));
          }
        });
      }
      compared += records.length;
    }
    expect(compared).toBe(RECORDS);
    byteSide.containerNames.close();
    objectSide.containerNames.close();
  }, 1_200_000);
});
