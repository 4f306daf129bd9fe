// k8s-tagger with 10 000 pods and 2 000 Services loaded: memory of the tagger process (against
// the same process watching an empty cluster), records/s tagged end to end through NATS, and the
// handler's work in-process (decode + tag + encode, against node-only tagging, the no-cluster
// path). `--in-process-only` runs the last part alone.
// Run: npx tsx tools/bench/k8s-tagger.ts
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectBus, subjects } from '@kappa/bus';
import { create, decodeFlowBatch, encodeFlowBatch, EndpointSchema, IpProtocol, newFlowBatch, newFlowRecord, ProcessSchema, Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, startKubeApiServer, startNatsServer } from '@kappa/testing';
import type { KubeApiServer, KubeObject } from '@kappa/testing';
import { KubeIndex } from '../../apps/k8s-tagger/src/kube-index.js';
import { emptyStats, tagBatch } from '../../apps/k8s-tagger/src/tagging.js';

const PODS = 10_000;
const SERVICES = 2_000;
const NODES = 100;
const PODS_PER_DEPLOYMENT = PODS / SERVICES; // each Service selects one Deployment's pods
const E2E_BATCHES = 40;
const RECORDS_PER_BATCH = 1000;

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const taggerRoot = join(root, 'apps/k8s-tagger');

const podIp = (i: number) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
const serviceIp = (s: number) => `10.96.${s >> 8}.${s & 255}`;
const nodeIp = (n: number) => `192.168.${n >> 8}.${n & 255}`;

function clusterObjects(): KubeObject[] {
  const objects: KubeObject[] = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'kube-system', uid: 'bench-kube-system' } }];
  for (let n = 0; n < NODES; n++) {
    objects.push({ apiVersion: 'v1', kind: 'Node', metadata: { name: `node-${n}`, labels: { 'kubernetes.io/hostname': `node-${n}`, 'topology.kubernetes.io/zone': `zone-${n % 3}` } }, status: { addresses: [{ type: 'InternalIP', address: nodeIp(n) }] } });
  }
  for (let s = 0; s < SERVICES; s++) {
    const ns = `team-${s % 50}`;
    const app = `app-${s}`;
    objects.push({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: app, namespace: ns, labels: { app } }, spec: { replicas: PODS_PER_DEPLOYMENT } });
    objects.push({ apiVersion: 'apps/v1', kind: 'ReplicaSet', metadata: { name: `${app}-5f7c9`, namespace: ns, labels: { app, 'pod-template-hash': '5f7c9' }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: app, uid: `d-${s}`, controller: true }] } });
    objects.push({ apiVersion: 'v1', kind: 'Service', metadata: { name: app, namespace: ns, labels: { app } }, spec: { clusterIP: serviceIp(s), clusterIPs: [serviceIp(s)], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } });
    const endpoints = [];
    for (let r = 0; r < PODS_PER_DEPLOYMENT; r++) endpoints.push({ addresses: [podIp(s * PODS_PER_DEPLOYMENT + r)], conditions: { ready: true } });
    objects.push({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: `${app}-x1`, namespace: ns, labels: { 'kubernetes.io/service-name': app } }, addressType: 'IPv4', endpoints, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] });
    for (let r = 0; r < PODS_PER_DEPLOYMENT; r++) {
      const i = s * PODS_PER_DEPLOYMENT + r;
      objects.push({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `${app}-5f7c9-${r}`, namespace: ns, uid: `pod-uid-${i}`, labels: { app, 'pod-template-hash': '5f7c9', team: `team-${s % 50}` }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${app}-5f7c9`, uid: `rs-${s}`, controller: true }] },
        spec: { nodeName: `node-${i % NODES}`, containers: [{ name: 'app', image: 'app:1' }, { name: 'proxy', image: 'proxy:1' }] },
        status: {
          phase: 'Running',
          podIP: podIp(i),
          podIPs: [{ ip: podIp(i) }],
          startTime: '2026-11-26T00:00:00Z',
          containerStatuses: [
            { name: 'app', containerID: `containerd://${i.toString(16).padStart(64, 'a')}`, ready: true, restartCount: 0, image: 'app:1', imageID: '' },
            { name: 'proxy', containerID: `containerd://${i.toString(16).padStart(64, 'b')}`, ready: true, restartCount: 0, image: 'proxy:1', imageID: '' },
          ],
        },
      });
    }
  }
  return objects;
}

/** 1000 records: the local pod (by container id) talking to another pod, a Service, or outside. */
function records(seed: number): FlowRecord[] {
  const startNs = BigInt(Date.now()) * 1_000_000n;
  return Array.from({ length: RECORDS_PER_BATCH }, (_, k) => {
    const i = (seed * 7919 + k * 104_729) % PODS;
    const j = (i * 31 + 17) % PODS;
    const kind = k % 4;
    const remote = kind === 0 ? { ip: serviceIp(j % SERVICES), port: 80 } : kind === 3 ? { ip: `203.0.113.${k & 255}`, port: 443 } : { ip: podIp(j), port: 8080 };
    return newFlowRecord({
      node: `node-${i % NODES}`,
      vantage: Vantage.SRC,
      startNs,
      endNs: startNs + 10_000_000_000n,
      protocol: IpProtocol.TCP,
      src: create(EndpointSchema, { ip: podIp(i), port: 30000 + k, process: create(ProcessSchema, { pid: 100 + k, containerId: i.toString(16).padStart(64, 'a') }) }),
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
  await until(async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined))?.status === 200, 120_000, 'tagger ready');
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

async function stopProcess(tagger: TaggerProcess): Promise<void> {
  const exited = new Promise((resolve) => tagger.child.once('exit', resolve));
  tagger.child.kill('SIGTERM');
  await exited;
}

function tagRate(label: string, index: KubeIndex | undefined): number {
  const tagger = { index, clusterId: () => 42 };
  // What the handler does per batch: decode, tag, encode. Batches are decoded fresh each time,
  // as from the bus, so the garbage is as short-lived as in the service.
  const encoded = Array.from({ length: 5 }, (_, b) => encodeFlowBatch(newFlowBatch({ batchId: `b-${b}`, records: records(b) })));
  const rounds = 10;
  for (const bytes of encoded) encodeFlowBatch(tagBatch(tagger, decodeFlowBatch(bytes), 'bench', emptyStats()));
  const stats = emptyStats();
  const started = process.hrtime.bigint();
  const cpuStarted = process.cpuUsage();
  for (let round = 0; round < rounds; round++) for (const bytes of encoded) encodeFlowBatch(tagBatch(tagger, decodeFlowBatch(bytes), 'bench', stats));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuStarted);
  // CPU time as well as wall time: on a loaded shared machine the wall clock mostly measures waiting.
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  const rate = stats.records / cpuSeconds;
  console.log(`${label}: ${Math.round(rate)} records per CPU-second, ${(1e6 / rate).toFixed(1)} µs CPU per record; wall ${Math.round(stats.records / seconds)} records/s (${stats.records} records; local hits ${stats.hits.local}, remote hits ${stats.hits.remote}, remote misses ${stats.misses.remote})`);
  return rate;
}

const objects = clusterObjects();

/** The tagging step alone, in this process: full index vs node-only (no cluster). The objects
 *  carry UIDs here because no API server assigns them. */
function tagInProcess(): void {
  const index = new KubeIndex({ deletedGraceMs: 120_000 });
  for (const object of objects) {
    const o = object as never;
    if (object.kind === 'Pod') index.upsertPod(o);
    else if (object.kind === 'Service') index.upsertService(o);
    else if (object.kind === 'EndpointSlice') index.upsertEndpointSlice(o);
    else if (object.kind === 'Node') index.upsertNode(o);
    else if (object.kind === 'ReplicaSet') index.upsertOwner('ReplicaSet', o);
  }
  // Alternating rounds, so machine noise hits both alike; the last round of each is reported.
  for (let round = 0; round < 3; round++) {
    tagRate('decode + tag + encode, node-only (baseline)', undefined);
    tagRate(`decode + tag + encode, ${PODS} pods / ${SERVICES} services indexed`, index);
  }
}

if (process.argv.includes('--in-process-only')) {
  tagInProcess();
  process.exit(0);
}

execFileSync(process.execPath, [join(root, 'tools/build-app.mjs')], { cwd: taggerRoot, stdio: 'inherit' });
const nats = await startNatsServer();
const emptyApi = await startKubeApiServer();
emptyApi.apply(objects[0]!);
const loadedApi = await startKubeApiServer();
for (const object of objects) loadedApi.apply(object);

try {
  // Memory: the same tagger process on an empty cluster, then on the loaded one.
  const empty = await startTaggerProcess(emptyApi, nats.url);
  const emptyMemory = await memoryOf(empty);
  await stopProcess(empty);
  const loaded = await startTaggerProcess(loadedApi, nats.url);
  const loadedMemory = await memoryOf(loaded);
  console.log(`empty cluster: RSS ${emptyMemory.rssMiB.toFixed(1)} MiB, heap used ${emptyMemory.heapMiB.toFixed(1)} MiB, ready in ${empty.readyMs} ms`);
  console.log(`${PODS} pods / ${SERVICES} services: RSS ${loadedMemory.rssMiB.toFixed(1)} MiB, heap used ${loadedMemory.heapMiB.toFixed(1)} MiB, ready (all informers listed) in ${loaded.readyMs} ms`);

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
  for (const batch of prepared) await bus.publishBatch(subjects.enriched(0, `node-${Number(batch.batchId.slice(4)) % 4}`), batch);
  await until(() => received >= E2E_BATCHES * RECORDS_PER_BATCH, 300_000, 'all records tagged');
  const e2eRate = (E2E_BATCHES * RECORDS_PER_BATCH) / ((lastAt - started) / 1000);
  console.log(`end to end (publish → tagger process → kappa.flow.tagged): ${Math.round(e2eRate)} records/s over ${E2E_BATCHES * RECORDS_PER_BATCH} records`);
  const afterLoad = await memoryOf(loaded);
  console.log(`after tagging: RSS ${afterLoad.rssMiB.toFixed(1)} MiB, heap used ${afterLoad.heapMiB.toFixed(1)} MiB`);
  await bus.close();
  await stopProcess(loaded);

  tagInProcess();
  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, kernel ${release()}, node ${process.version}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
} finally {
  await loadedApi.close();
  await emptyApi.close();
  await nats.stop();
}
