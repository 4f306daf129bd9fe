// k8s-tagger with 10 000 pods and 2 000 Services of real size loaded: memory and CPU of the tagger process (against
// the same process watching an empty cluster), records/s tagged end to end through NATS, and the
// stage's work in-process: bytes in → bytes out (against node-only tagging, the no-cluster path,
// and the object model of before: decode + tag + encode). `--in-process-only` runs the last part alone.
// Run: npx tsx tools/bench/k8s-tagger.ts
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { connectBus, subjects } from '@kappa/bus';
import { create, decodeFlowBatch, encodeFlowBatch, EndpointSchema, FlowBatchView, FlowBatchWriter, IpProtocol, newFlowBatch, newFlowRecord, ProcessSchema, Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, realEndpointSlice, realNode, realPod, realService, realWorkload, startKubeApiServer, startNatsServer } from '@kappa/testing';
import type { KubeApiServer, KubeObject } from '@kappa/testing';
import { KubeIndex } from '../../apps/k8s-tagger/src/kube-index.js';
import { BatchTagger, emptyStats } from '../../apps/k8s-tagger/src/tagging.js';
import type { TaggingStats } from '../../apps/k8s-tagger/src/tagging.js';
import { tagBatchWithObjects } from '../../apps/k8s-tagger/test/oracle/object-tagger.js';

const PODS = 10_000;
const SERVICES = 2_000;
const NODES = 100;
const CONTAINERS = 10;
const PODS_PER_DEPLOYMENT = PODS / SERVICES; // each Service selects one Deployment's pods
const E2E_BATCHES = 40;
const RECORDS_PER_BATCH = 1000;
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const taggerRoot = join(root, 'apps/k8s-tagger');

const podIp = (i: number) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const serviceIp = (s: number) => `10.96.${s >> 8}.${s & 255}`;
const nodeIp = (n: number) => `192.168.${n >> 8}.${n & 255}`;

/** The bench's container ids, one of 64 hex digits per container (unique: pod i's first digit
 *  says which container, the rest is i); the records' local ends carry the first (app). */
function containerIds(i: number): Record<string, string> {
  const ids: Record<string, string> = {};
  for (let k = 0; k < CONTAINERS; k++) ids[k === 0 ? 'app' : k === 1 ? 'proxy' : `sidecar-${k}`] = k.toString(16) + i.toString(16).padStart(63, '0');
  return ids;
}

/** Objects of real size, as a kube-apiserver returns them (@kappa/testing real*: managedFields,
 *  30 labels, annotations, 10 containers per pod with probes, volumes and resources). */
function clusterObjects(): KubeObject[] {
  const objects: KubeObject[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'kube-system', uid: 'bench-kube-system' } }];
  for (let n = 0; n < NODES; n++) objects.push(realNode({ name: `node-${n}`, internalIP: nodeIp(n) }));
  for (let s = 0; s < SERVICES; s++) {
    const ns = `team-${s % 50}`;
    const app = `app-${s}`;
    const replicaSet = `${app}-5f7c9`;
    objects.push(realWorkload('Deployment', app, ns));
    objects.push(realWorkload('ReplicaSet', replicaSet, ns, { kind: 'Deployment', name: app }));
    objects.push(realService({ name: app, namespace: ns, clusterIP: serviceIp(s), ports: [{ name: 'http', port: 80, targetPort: 8080 }] }));
    const endpoints = [];
    for (let r = 0; r < PODS_PER_DEPLOYMENT; r++) {
      const i = s * PODS_PER_DEPLOYMENT + r;
      endpoints.push({ ip: podIp(i), node: `node-${i % NODES}`, pod: `${replicaSet}-${r}` });
    }
    objects.push(realEndpointSlice({ service: app, namespace: ns, endpoints, ports: [{ name: 'http', port: 8080 }] }));
    for (let r = 0; r < PODS_PER_DEPLOYMENT; r++) {
      const i = s * PODS_PER_DEPLOYMENT + r;
      objects.push(
        realPod({
          name: `${replicaSet}-${r}`,
          namespace: ns,
          node: `node-${i % NODES}`,
          hostIP: nodeIp(i % NODES),
          ips: [podIp(i)],
          labels: { app, 'pod-template-hash': '5f7c9', team: `team-${s % 50}` },
          owner: { kind: 'ReplicaSet', name: replicaSet },
          containers: containerIds(i),
          createdMs: Date.parse('2026-11-26T00:00:00Z'),
        }),
      );
    }
  }
  return objects;
}

/**
 * 1000 records: the local pod (by container id) talking to another pod, a Service, or outside.
 * Spread: every record's local end a different pod of any node (the worst case for the index's
 * memory locality). One node (`oneNode`): the local ends are the pods of node seed % NODES, as in
 * the batches the tagger receives (kappa.flow.enriched.p<k>.<node>: one node's records).
 */
function records(seed: number, oneNode = false): FlowRecord[] {
  const startNs = BigInt(Date.now()) * 1_000_000n;
  return Array.from({ length: RECORDS_PER_BATCH }, (_, k) => {
    const i = oneNode ? ((seed % NODES) + NODES * ((k * 37) % (PODS / NODES))) % PODS : (seed * 7919 + k * 104_729) % PODS;
    const j = (i * 31 + 17) % PODS;
    const kind = k % 4;
    const remote = kind === 0 ? { ip: serviceIp(j % SERVICES), port: 80 } : kind === 3 ? { ip: `203.0.113.${k & 255}`, port: 443 } : { ip: podIp(j), port: 8080 };
    return newFlowRecord({
      node: `node-${i % NODES}`,
      vantage: Vantage.SRC,
      startNs,
      endNs: startNs + 10_000_000_000n,
      protocol: IpProtocol.TCP,
      src: create(EndpointSchema, { ip: podIp(i), port: 30000 + k, process: create(ProcessSchema, { pid: 100 + k, containerId: containerIds(i).app! }) }),
      dst: create(EndpointSchema, remote),
      bytes: 1000n,
      packets: 10n,
    });
  });
}

async function until(condition: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Tagger processes still running: killed if the bench fails half-way. */
const running = new Set<ChildProcess>();

interface TaggerProcess {
  child: ChildProcess;
  metricsPort: number;
  readyMs: number;
}

async function startTaggerProcess(api: KubeApiServer, natsUrl: string): Promise<TaggerProcess> {
  const metricsPort = await freePort();
  const grpcPort = await freePort();
  const started = Date.now();
  const child = spawn(process.execPath, [join(taggerRoot, 'bin/kappa-k8s-tagger.js'), '--kubeconfig', api.kubeconfigPath, '--nats-url', natsUrl, '--grpc-port', String(grpcPort), '--metrics-port', String(metricsPort), '--log-level', 'warn', '--instance', 'bench'], { stdio: ['ignore', 'ignore', 'inherit'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  // Listing 10 000 real-size pods (~300 MiB of JSON) takes minutes on a loaded 2-core machine.
  await until(async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined))?.status === 200, 900_000, 'tagger ready');
  return { child, metricsPort, readyMs: Date.now() - started };
}

async function memoryOf(tagger: TaggerProcess): Promise<{ rssMiB: number; heapMiB: number }> {
  await new Promise((resolve) => setTimeout(resolve, 3000)); // let the post-sync garbage settle
  const status = readFileSync(`/proc/${tagger.child.pid}/status`, 'utf8');
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const metrics = await (await fetch(`http://127.0.0.1:${tagger.metricsPort}/metrics`)).text();
  const heap = Number(/kappa_nodejs_heap_size_used_bytes\{[^}]*\} (\d+)/.exec(metrics)?.[1] ?? 0);
  return { rssMiB: rssKiB / 1024, heapMiB: heap / 1024 / 1024 };
}

/** CPU time (user + system) the process has used so far, from /proc/<pid>/stat. */
function cpuSecondsOf(tagger: TaggerProcess): number {
  const stat = readFileSync(`/proc/${tagger.child.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat (index 11 and 12 after the command name).
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

async function stopProcess(tagger: TaggerProcess): Promise<void> {
  const exited = new Promise((resolve) => tagger.child.once('exit', resolve));
  tagger.child.kill('SIGTERM');
  await exited;
}

type Path = 'bytes' | 'objects';

/** `--cpu-profile=DIR`: a CPU profile of the measured loop of the indexed byte path (last round). */
const profileDir = process.argv.find((a) => a.startsWith('--cpu-profile='))?.slice('--cpu-profile='.length);

/** Runs `work` under the in-process profiler and writes DIR/<name>.cpuprofile. */
function profiled(name: string, work: () => void): void {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 100 });
  session.post('Profiler.start');
  work();
  // The inspector answers synchronously within post's callback when the session is in-process.
  session.post('Profiler.stop', (error, result) => {
    if (!error) writeFileSync(join(profileDir!, `${name}.cpuprofile`), JSON.stringify(result.profile));
  });
  session.disconnect();
}

/**
 * `beforeEachBatch`: e.g. an index change, so that no answer the tagger keeps holds. `report`
 * false: a warm-up, run as measured but not printed.
 */
function tagRate(label: string, index: KubeIndex | undefined, path: Path, profileAs?: string, oneNode = false, beforeEachBatch?: () => void, report = true): number {
  const tagger = { index, clusterId: () => 42 };
  // What the stage does per batch. Bytes: parse (validate) the received batch, tag into one
  // output buffer, cut its parts. Objects (the path before, as a baseline): decode, tag, encode.
  const encoded = Array.from({ length: 5 }, (_, b) => encodeFlowBatch(newFlowBatch({ batchId: `b-${b}`, records: records(b, oneNode) })));
  const view = new FlowBatchView();
  const writer = new FlowBatchWriter();
  const batchTagger = new BatchTagger(tagger);
  const once = (bytes: Uint8Array, stats: TaggingStats): void => {
    beforeEachBatch?.();
    if (path === 'objects') {
      encodeFlowBatch(tagBatchWithObjects(tagger, decodeFlowBatch(bytes), 'bench', stats));
      return;
    }
    writer.reset();
    writer.open({ batchId: 'k8s-tagger:b', producer: 'bench', createdNs: 1n }, 1 << 30);
    batchTagger.tagInto(view.parse(bytes), writer, stats);
    writer.parts();
  };
  const rounds = 10;
  for (const bytes of encoded) once(bytes, emptyStats());
  const stats = emptyStats();
  const started = process.hrtime.bigint();
  const cpuStarted = process.cpuUsage();
  const loop = (): void => {
    for (let round = 0; round < rounds; round++) for (const bytes of encoded) once(bytes, stats);
  };
  if (profileAs !== undefined && profileDir !== undefined) profiled(profileAs, loop);
  else loop();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuStarted);
  // CPU time as well as wall time: on a loaded shared machine the wall clock mostly measures waiting.
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const rate = stats.records / cpuSeconds;
  if (report) console.log(`${label}: ${Math.round(rate)} records per CPU-second, ${(1e6 / rate).toFixed(2)} µs CPU per record; wall ${Math.round(stats.records / seconds)} records/s (${stats.records} records; local hits ${stats.hits.local}, remote hits ${stats.hits.remote}, remote misses ${stats.misses.remote})`);
  return rate;
}

/** The tagging step alone, in a process of its own (`--in-process-only`): full index vs
 *  node-only (no cluster). The generated objects are dropped once indexed, so the heap is what
 *  a tagger's would be (a bench process holding ~18 000 real-size objects spends most of its
 *  CPU in the garbage collector, not in tagging). The objects
 *  carry UIDs here because no API server assigns them. */
function tagInProcess(): void {
  const index = new KubeIndex({ deletedGraceMs: 120_000 });
  let aNode: never | undefined;
  for (const object of clusterObjects()) {
    const o = object as never;
    if (object.kind === 'Pod') index.upsertPod(o);
    else if (object.kind === 'Service') index.upsertService(o);
    else if (object.kind === 'EndpointSlice') index.upsertEndpointSlice(o);
    else if (object.kind === 'Node') index.upsertNode((aNode ??= o));
    else if (object.kind === 'ReplicaSet') index.upsertOwner('ReplicaSet', o);
  }
  // Steady state: the ~300 MiB of objects the index was built from are garbage now, and the
  // collector's concurrent marking and sweeping of them ran on the other core during the first
  // round, billed to it (process CPU counts every thread: that round of each case was 1.2–3.9×
  // slower, node-only tagging too; with a full collection first, 20–43 % of that round's CPU in
  // three of the four cases was still other threads', 0–2 % in the rounds after). So a full
  // collection here, outside any round, then one warm-up round of every case (the JIT's too),
  // run as measured and not reported; every round after it is.
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
  // Alternating rounds, so machine noise hits both alike; the last round of each is profiled.
  for (let round = -1; round < 3; round++) {
    const report = round >= 0;
    tagRate('bytes in → bytes out, node-only (no cluster)', undefined, 'bytes', undefined, false, undefined, report);
    tagRate(`bytes in → bytes out, ${PODS} pods / ${SERVICES} services indexed`, index, 'bytes', round === 2 ? 'k8s-tagger-bytes' : undefined, false, undefined, report);
    tagRate(`bytes in → bytes out, ${PODS} pods / ${SERVICES} services indexed, one node's batches (local ends: its ${PODS / NODES} pods)`, index, 'bytes', round === 2 ? 'k8s-tagger-bytes-one-node' : undefined, true, undefined, report);
    // The worst case for the answers the tagger keeps: the index changes before every batch
    // (a node updated), so every end is resolved again.
    tagRate(`bytes in → bytes out, ${PODS} pods / ${SERVICES} services indexed, one node's batches, the index changed before each batch`, index, 'bytes', round === 2 ? 'k8s-tagger-bytes-one-node-changing' : undefined, true, () => index.upsertNode(aNode!), report);
    tagRate(`object model of before (baseline): decode + tag + encode, ${PODS} pods / ${SERVICES} services indexed`, index, 'objects', undefined, false, undefined, report);
  }
}

if (process.argv.includes('--in-process-only')) {
  tagInProcess();
  process.exit(0);
}

execFileSync(process.execPath, [join(root, 'tools/build-app.mjs')], { cwd: taggerRoot, stdio: 'inherit' });
const objects = clusterObjects();
const nats = await startNatsServer();
const emptyApi = await startKubeApiServer();
emptyApi.apply(objects[0]!);
const loadedApi = await startKubeApiServer();
for (const object of objects) loadedApi.apply(object);

try {
  // Memory: the same tagger process on an empty cluster, then on the loaded one.
  const empty = await startTaggerProcess(emptyApi, nats.url);
  const emptyCpu = cpuSecondsOf(empty);
  const emptyMemory = await memoryOf(empty);
  await stopProcess(empty);
  const loaded = await startTaggerProcess(loadedApi, nats.url);
  const loadedCpu = cpuSecondsOf(loaded);
  const loadedMemory = await memoryOf(loaded);
  const pods = objects.filter((o) => o.kind === 'Pod');
  const podBytes = pods.reduce((sum, pod) => sum + Buffer.byteLength(JSON.stringify(pod)), 0);
  console.log(`objects: ${objects.length}, ${PODS} pods of ${(podBytes / pods.length / 1024).toFixed(1)} KiB JSON on average (${(podBytes / 1024 / 1024).toFixed(0)} MiB of pods)`);
  console.log(`empty cluster: RSS ${emptyMemory.rssMiB.toFixed(1)} MiB, heap used ${emptyMemory.heapMiB.toFixed(1)} MiB, ready in ${empty.readyMs} ms, CPU to ready ${emptyCpu.toFixed(2)} s`);
  console.log(`${PODS} pods / ${SERVICES} services: RSS ${loadedMemory.rssMiB.toFixed(1)} MiB, heap used ${loadedMemory.heapMiB.toFixed(1)} MiB, ready (every resource listed) in ${loaded.readyMs} ms, CPU to ready ${loadedCpu.toFixed(2)} s`);
  const peakKiB = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${loaded.child.pid}/status`, 'utf8'))?.[1] ?? 0);
  console.log(`${PODS} pods: peak RSS while listing (VmHWM) ${(peakKiB / 1024).toFixed(1)} MiB`);

  // End to end: publish on kappa.flow.enriched.<node>, count records arriving on kappa.flow.tagged.
  const logger = createLogger('bench', 'silent');
  const bus = await connectBus({ servers: [nats.url], name: 'bench', logger, registry: createRegistry('bench') });
  await bus.ensureStreams();
  let received = 0;
  let lastAt = 0;
  await bus.consumeBatches({ stage: 'bench-joiner', subject: subjects.allTagged, maxInFlight: 8, handler: async (batch) => {
    received += batch.records.length;
    lastAt = Date.now();
  } });
  const prepared = Array.from({ length: E2E_BATCHES }, (_, b) => newFlowBatch({ batchId: `e2e-${b}`, producer: 'bench', createdNs: BigInt(Date.now()) * 1_000_000n, records: records(b) }));
  const started = Date.now();
  const cpuBefore = cpuSecondsOf(loaded);
  for (const batch of prepared) await bus.publishBatch(subjects.enriched(0, `node-${Number(batch.batchId.slice(4)) % 4}`), batch);
  await until(() => received >= E2E_BATCHES * RECORDS_PER_BATCH, 300_000, 'all records tagged');
  const e2eRate = (E2E_BATCHES * RECORDS_PER_BATCH) / ((lastAt - started) / 1000);
  const taggingCpu = cpuSecondsOf(loaded) - cpuBefore;
  console.log(`end to end (publish → tagger process → kappa.flow.tagged): ${Math.round(e2eRate)} records/s over ${E2E_BATCHES * RECORDS_PER_BATCH} records; tagger process CPU ${((taggingCpu * 1e6) / (E2E_BATCHES * RECORDS_PER_BATCH)).toFixed(1)} µs per record`);
  const afterLoad = await memoryOf(loaded);
  const peakAfterKiB = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${loaded.child.pid}/status`, 'utf8'))?.[1] ?? 0);
  console.log(`after tagging: RSS ${afterLoad.rssMiB.toFixed(1)} MiB, heap used ${afterLoad.heapMiB.toFixed(1)} MiB, peak RSS (VmHWM) ${(peakAfterKiB / 1024).toFixed(1)} MiB`);
  await bus.close();
  await stopProcess(loaded);

  execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--in-process-only'], { stdio: 'inherit' });
  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, kernel ${release()}, node ${process.version}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
} finally {
  for (const child of running) child.kill('SIGKILL');
  await loadedApi.close();
  await emptyApi.close();
  await nats.stop();
}
