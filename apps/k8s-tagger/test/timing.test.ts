// The tagger in a living cluster, in time: pods that start while their flows are already on the
// bus, a list that fails before the first sync, an IP that passes from one pod to the next, and
// pods and Services deleted before their late flows are tagged — across a tagger restart. The
// API server plays the scheduler's and kubelet's status sequence with real-size pods; flows go
// through real NATS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { create, EndpointSchema, IpProtocol, newFlowRecord, ProcessSchema, Vantage } from '@kappa/contracts';
import type { FlowBatch, FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import type { Registry } from '@kappa/observability';
import { containerIdOf, realNode, realService, startKubeApiServer, startNatsServer, startPodLikeKubelet, stopPodLikeKubelet } from '@kappa/testing';
import type { KubeApiServer, RealPodSpec, TestServer } from '@kappa/testing';
import type { TaggerService } from '../src/tagger-service.js';
import { batchOf, eventually, namespace, sleep, startTagger, until } from './fixtures.js';

const NS = 'timing';
const podSpec = (name: string, ip: string, node = 'node-b'): RealPodSpec => ({
  name,
  namespace: NS,
  node,
  hostIP: node === 'node-a' ? '192.168.7.1' : '192.168.7.2',
  ips: [ip],
  labels: { app: name },
  containers: 3,
});
const cgroupOf = (containerId: string) => `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-${containerId}.scope`;

interface End {
  ip: string;
  port: number;
  containerId?: string;
}

function record(node: string, vantage: Vantage, src: End, dst: End, startMs: number): FlowRecord {
  const endpoint = (e: End) =>
    create(EndpointSchema, { ip: e.ip, port: e.port, ...(e.containerId ? { process: create(ProcessSchema, { pid: 4242, containerId: e.containerId, cgroupPath: cgroupOf(e.containerId) }) } : {}) });
  const startNs = BigInt(startMs) * 1_000_000n;
  return newFlowRecord({ node, vantage, startNs, endNs: startNs + 1_000_000_000n, protocol: IpProtocol.TCP, src: endpoint(src), dst: endpoint(dst), bytes: 100n, packets: 2n });
}

async function metric(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const values = (await registry.getSingleMetric(name)?.get())?.values ?? [];
  return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
}

/** One NATS server with a collector on kappa.flow.tagged; a test's taggers share it. */
class Bench {
  nats!: TestServer;
  bus!: Bus;
  readonly tagged = new Map<string, FlowBatch>();

  async start(): Promise<void> {
    this.nats = await startNatsServer();
    this.bus = await connectBus({ servers: [this.nats.url], name: 'timing-test', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
    await this.bus.ensureStreams();
    await this.bus.consumeBatches({ stage: 'timing-joiner', subject: subjects.allTagged, handler: async (batch) => void this.tagged.set(batch.batchId, batch) });
  }

  async publish(id: string, ...records: FlowRecord[]): Promise<void> {
    await this.bus.publishBatch(subjects.enriched(0, records[0]!.node), batchOf(id, records));
  }

  async out(id: string, timeoutMs = 20_000): Promise<FlowBatch> {
    await until(() => this.tagged.has(`k8s-tagger:${id}`), timeoutMs, `batch ${id} tagged`);
    return this.tagged.get(`k8s-tagger:${id}`)!;
  }

  async stop(): Promise<void> {
    await this.bus.close();
    await this.nats.stop();
  }
}

describe('k8s-tagger timing in a living cluster', () => {
  let api: KubeApiServer;
  const taggers: TaggerService[] = [];
  const benches: Bench[] = [];

  async function bench(): Promise<Bench> {
    const b = new Bench();
    await b.start();
    benches.push(b);
    return b;
  }

  async function tagger(b: Bench, options: Parameters<typeof startTagger>[1] = {}): Promise<TaggerService> {
    const t = await startTagger(api, { bus: { servers: [b.nats.url] }, ...options });
    taggers.push(t);
    return t;
  }

  async function stopTagger(t: TaggerService): Promise<void> {
    await t.stop();
    taggers.splice(taggers.indexOf(t), 1);
  }

  beforeAll(async () => {
    api = await startKubeApiServer();
    api.apply(namespace('kube-system', 'uid-timing'));
    api.apply(namespace(NS));
    api.apply(realNode({ name: 'node-a', internalIP: '192.168.7.1', podCIDRs: ['10.245.1.0/24'] }));
    api.apply(realNode({ name: 'node-b', internalIP: '192.168.7.2', podCIDRs: ['10.245.2.0/24'] }));
    await startPodLikeKubelet(api, podSpec('client', '10.245.1.10', 'node-a'), { stepMs: 0 });
  });

  afterAll(async () => {
    for (const t of [...taggers]) await t.stop();
    for (const b of benches) await b.stop();
    await api.close();
  });

  const client = { ip: '10.245.1.10', port: 40100, containerId: containerIdOf(`${NS}/client/0`) };

  it('holds flows of a pod the kubelet has not reported yet, then tags them with that pod, never external or the node', async () => {
    const b = await bench();
    const registry = createRegistry('k8s-tagger');
    await tagger(b, { holdMaxMs: 60_000, registry });
    const late = podSpec('late', '10.245.2.50');
    await startPodLikeKubelet(api, late, { stepMs: 5, until: 'accepted' }); // scheduled, no IP yet
    const lateContainer = containerIdOf(`${NS}/late/0`);
    const now = Date.now();
    await b.publish(
      'late-1',
      record('node-a', Vantage.SRC, client, { ip: '10.245.2.50', port: 8080 }, now),
      record('node-b', Vantage.DST, { ip: client.ip, port: 40101 }, { ip: '10.245.2.50', port: 8080, containerId: lateContainer }, now),
    );
    await eventually(async () => (await metric(registry, 'kappa_bus_held_batches_total', { stage: 'k8s-tagger' })) >= 2, 20_000, 'the batch held twice');
    expect(b.tagged.has('k8s-tagger:late-1')).toBe(false);
    // The kubelet reports the IP, then the container ids.
    await startPodLikeKubelet(api, late, { stepMs: 300 });
    const out = await b.out('late-1');
    expect(out.records[0]!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'late', node: 'node-b' });
    expect(out.records[1]!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'late', containerName: 'late', node: 'node-b' });
    expect(out.records[1]!.src!.kube).toMatchObject({ objectType: 'pod', objectName: 'client' });
    expect(await metric(registry, 'kappa_tagger_lookups_total', { result: 'unknown' })).toBe(0);
  });

  it('gives up after the hold budget: the end is tagged unknown and counted, never external or the node', async () => {
    const b = await bench();
    const registry = createRegistry('k8s-tagger');
    await tagger(b, { holdMaxMs: 1500, registry });
    const started = Date.now();
    const ghost = containerIdOf('ghost');
    await b.publish(
      'ghost-1',
      record('node-a', Vantage.SRC, client, { ip: '10.245.2.99', port: 8080 }, started),
      record('node-b', Vantage.DST, { ip: client.ip, port: 40102 }, { ip: '192.168.7.2', port: 9100, containerId: ghost }, started),
    );
    const out = await b.out('ghost-1');
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect(out.records[0]!.dst!.kube).toMatchObject({ objectType: 'unknown' });
    expect(out.records[1]!.dst!.kube).toMatchObject({ objectType: 'unknown', node: 'node-b' });
    expect(await metric(registry, 'kappa_tagger_lookups_total', { end: 'remote', result: 'unknown' })).toBe(1);
    expect(await metric(registry, 'kappa_tagger_lookups_total', { end: 'local', result: 'unknown' })).toBe(1);
  });

  it('consumes nothing before every resource is listed in full: throttled (429) and forbidden (403) lists first', async () => {
    const b = await bench();
    await startPodLikeKubelet(api, podSpec('early', '10.245.2.60'), { stepMs: 0 });
    await b.publish('early-1', record('node-a', Vantage.SRC, client, { ip: '10.245.2.60', port: 8080 }, Date.now()));
    const throttled = api.fail({ status: 429, verb: 'list', resource: 'pods', retryAfterSeconds: 1 });
    const forbidden = api.fail({ status: 403, verb: 'list', resource: 'endpointslices' });
    const t = await tagger(b, { wait: false });
    await until(() => throttled.hits >= 2 && forbidden.hits >= 2, 20_000, 'lists retried');
    expect(t.ready()).toBe(false);
    await expect(b.bus.consumerInfo('k8s-tagger')).rejects.toThrow(/not found/i);
    expect(b.tagged.size).toBe(0);
    throttled.clear();
    forbidden.clear();
    const out = await b.out('early-1');
    expect(out.records[0]!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'early' });
    expect(t.ready()).toBe(true);
  });

  it('returns, for a reused IP, the pod that held it at each flow’s time, and holds a flow of the new holder until it is known', async () => {
    const b = await bench();
    await tagger(b, { holdMaxMs: 60_000 });
    const ip = '10.245.2.77';
    await startPodLikeKubelet(api, podSpec('first', ip), { stepMs: 0 });
    await sleep(1200);
    const duringFirst = Date.now();
    await sleep(1200);
    await stopPodLikeKubelet(api, NS, 'first', { stepMs: 10, graceSeconds: 30 });
    await sleep(2500); // past the first pod's end plus the 2 s clock skew the tagger allows
    // A flow of the next holder (stamped after its start, which comes below) before the tagger
    // has seen it: held, never given to the deleted first pod.
    const duringSecond = Date.now() + 4000;
    await b.publish('reuse-1', record('node-a', Vantage.SRC, client, { ip, port: 8080 }, duringFirst), record('node-a', Vantage.SRC, { ...client, port: 40103 }, { ip, port: 8080 }, duringSecond));
    await sleep(1500);
    expect(b.tagged.has('k8s-tagger:reuse-1')).toBe(false);
    await startPodLikeKubelet(api, podSpec('second', ip), { stepMs: 50 });
    const out = await b.out('reuse-1');
    expect(out.records[0]!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'first' });
    expect(out.records[1]!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'second' });
  });

  it('keeps deleted pods and Services for late flows in flow time, across a tagger restart, and forgets them once the flows are past the grace', async () => {
    const b = await bench();
    const gone = podSpec('gone', '10.245.2.88');
    await startPodLikeKubelet(api, gone, { stepMs: 0 });
    api.apply(realService({ name: 'gone-svc', namespace: NS, clusterIP: '10.96.55.5', ports: [{ name: 'http', port: 80, targetPort: 8080 }] }));
    const first = await tagger(b, { deletedGraceMs: 2000, holdMaxMs: 1000 });
    await sleep(1200);
    const whileAlive = Date.now();
    await sleep(1200);
    await stopPodLikeKubelet(api, NS, 'gone', { stepMs: 10 });
    api.remove('v1', 'Service', NS, 'gone-svc');
    const later = BigInt(Date.now() + 10_000) * 1_000_000n;
    await until(() => first.index!.resolveIp('10.245.2.88', later).type === 'none' && first.index!.resolveIp('10.96.55.5', later).type === 'none', 10_000, 'deletions seen');
    await stopTagger(first);
    // Longer than the grace on the wall clock: the grace counts in flow time, not wall time.
    await sleep(3000);
    const second = await tagger(b, { deletedGraceMs: 2000, holdMaxMs: 1000 });
    // Prune rounds (every second with this grace) run on the wall clock before the late flows
    // come: only flow time may forget the deleted pod and Service.
    await sleep(2500);
    const late = (id: string, port: number) => b.publish(id, record('node-a', Vantage.SRC, { ...client, port }, { ip: '10.245.2.88', port: 8080 }, whileAlive), record('node-a', Vantage.SRC, { ...client, port: port + 1 }, { ip: '10.96.55.5', port: 80 }, whileAlive));
    await late('grace-1', 40110);
    const kept = await b.out('grace-1');
    expect(kept.records[0]!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'gone', node: 'node-b' });
    expect(kept.records[1]!.dst!.kube).toMatchObject({ objectType: 'service', objectName: 'gone-svc' });
    // Flows of now move the tagger's flow time past the deletions plus the grace: forgotten.
    await b.publish('now-1', record('node-a', Vantage.SRC, { ...client, port: 40120 }, { ip: '192.168.7.2', port: 10250 }, Date.now()));
    await b.out('now-1');
    await until(() => second.index!.resolveIp('10.96.55.5', BigInt(whileAlive) * 1_000_000n).type === 'none', 10_000, 'pruned');
    await late('grace-2', 40130);
    const forgotten = await b.out('grace-2');
    expect(forgotten.records[0]!.dst!.kube?.objectType).toBe('unknown');
    expect(forgotten.records[1]!.dst!.kube?.objectType).toBe('external');
  });

  it('knows, after a restart, a pod deleted while no tagger was running', async () => {
    const b = await bench();
    await startPodLikeKubelet(api, podSpec('while-away', '10.245.2.91'), { stepMs: 0 });
    const first = await tagger(b);
    await sleep(1200);
    const whileAlive = Date.now();
    await stopTagger(first);
    await stopPodLikeKubelet(api, NS, 'while-away', { stepMs: 0 });
    await tagger(b, { holdMaxMs: 1000 });
    await b.publish('away-1', record('node-a', Vantage.SRC, client, { ip: '10.245.2.91', port: 8080 }, whileAlive), record('node-a', Vantage.SRC, { ...client, port: 40140 }, { ip: '10.245.2.91', port: 8080 }, Date.now() + 5000));
    const out = await b.out('away-1');
    expect(out.records[0]!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'while-away' });
    // It ended no later than the restart: a flow after that is not its.
    expect(out.records[1]!.dst!.kube?.objectType).toBe('unknown');
  });
});
