// The byte path against the object model it replaced: 100 000 generated records (every field of
// FlowRecord at random; each end's address, port, container id, cgroup path, the node and the
// flow's time drawn from a cluster: pods (live, deleted, IP reused, hostNetwork, hostPort),
// Services of every kind with EndpointSlices, nodes with pod CIDRs, unknown pods in a pod network,
// loopback and outside addresses) go through the tagger's byte transform and through the
// object-model tagging of before (test/oracle/object-tagger.ts), each with its own index built
// from the same objects; every record must come out equal (protobuf-es `equals`), with the same
// counts, and a batch one holds the other holds. Between batches the cluster changes as
// informers change it (a pod gone and made again, a Service's ready backends, a workload's owner,
// a pod's labels, a node gone and back), the same in both indexes, so that the answers the byte
// path keeps must follow. Half the batches come with the fields of each record and of its ends
// in reverse order (valid protobuf that protobuf-es does not write), so that the byte path's copy
// of fields out of order is compared too. KAPPA_DIFF_RECORDS sets the count.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HoldBatch } from '@kappa/bus';
import { EndpointSchema, FlowBatchView, FlowBatchWriter, FlowFields, FlowRecordSchema, MessageCursor, ProcessSchema, Vantage, create, decodeFlowBatch, encodeFlowBatch, equals, flowRecordToJson, newFlowBatch, toBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { anyMessage, realEndpointSlice, realNode, realPod, realService, realWorkload } from '@kappa/testing';
import type { KubeObject } from '@kappa/testing';
import type { V1EndpointSlice, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import { KubeIndex } from '../src/kube-index.js';
import { BatchTagger, emptyStats } from '../src/tagging.js';
import type { HoldPolicy, Tagger } from '../src/tagging.js';
import { tagBatchWithObjects } from './oracle/object-tagger.js';

const RECORDS = Number(process.env.KAPPA_DIFF_RECORDS ?? 100_000);
const PER_BATCH = 500;
const NOW_MS = Date.now();
const ms = (m: number) => BigInt(m) * 1_000_000n;

// ---- the cluster ----
const nodes = [
  { name: 'node-a', internalIP: '192.168.7.10', podCIDRs: ['10.244.1.0/24'] },
  { name: 'node-b', internalIP: '192.168.7.11', podCIDRs: ['10.244.2.0/24'] },
];
const objects: { kind: 'node' | 'pod' | 'service' | 'slice' | 'owner' | 'delete-pod'; object: KubeObject }[] = [];
const podIps: string[] = [];
const containerIds: string[] = [];
for (const n of nodes) objects.push({ kind: 'node', object: realNode(n) });
objects.push({ kind: 'owner', object: realWorkload('Deployment', 'web', 'shop') });
objects.push({ kind: 'owner', object: realWorkload('ReplicaSet', 'web-6d4f9', 'shop', { kind: 'Deployment', name: 'web' }) });
objects.push({ kind: 'owner', object: realWorkload('StatefulSet', 'db', 'shop') });
objects.push({ kind: 'owner', object: realWorkload('DaemonSet', 'agent', 'kube-system') });
for (let i = 0; i < 24; i++) {
  const node = nodes[i % 2]!;
  const ip = `10.244.${(i % 2) + 1}.${10 + i}`;
  const owner = i % 3 === 0 ? { kind: 'ReplicaSet', name: 'web-6d4f9' } : i % 3 === 1 ? { kind: 'StatefulSet', name: 'db' } : undefined;
  const containers = { main: `c0ffee${i}`.padEnd(64, '0'), sidecar: `5eed${i}`.padEnd(64, '1') };
  containerIds.push(...Object.values(containers));
  podIps.push(ip);
  objects.push({ kind: 'pod', object: realPod({ name: `pod-${i}`, namespace: i % 4 === 0 ? 'default' : 'shop', node: node.name, hostIP: node.internalIP, ips: [ip], labels: { app: i % 3 === 0 ? 'web' : 'db' }, labelCount: 6, ...(owner ? { owner } : {}), containers, ports: [{ name: 'http', containerPort: 8080 }], createdMs: NOW_MS - 3_600_000, startedMs: NOW_MS - 3_500_000 }) });
}
// A deleted pod whose IP went to a new pod (event time decides which one a flow saw).
objects.push({ kind: 'delete-pod', object: realPod({ name: 'old-0', node: 'node-a', hostIP: '192.168.7.10', ips: ['10.244.1.200'], containers: { main: 'de1e7ed'.padEnd(64, '2') }, createdMs: NOW_MS - 7_200_000, startedMs: NOW_MS - 7_100_000 }) });
objects.push({ kind: 'pod', object: realPod({ name: 'new-0', node: 'node-a', hostIP: '192.168.7.10', ips: ['10.244.1.200'], containers: { main: 'fe5h'.padEnd(64, '3') }, createdMs: NOW_MS - 60_000, startedMs: NOW_MS - 50_000 }) });
// hostNetwork DaemonSet pod (node IP, port 9100) and a hostPort pod.
objects.push({ kind: 'pod', object: realPod({ name: 'agent-x', namespace: 'kube-system', node: 'node-b', hostIP: '192.168.7.11', hostNetwork: true, owner: { kind: 'DaemonSet', name: 'agent' }, containers: { agent: 'a9e17'.padEnd(64, '4') }, ports: [{ name: 'metrics', containerPort: 9100, hostPort: 9100 }], createdMs: NOW_MS - 3_600_000, startedMs: NOW_MS - 3_600_000 }) });
objects.push({ kind: 'pod', object: realPod({ name: 'hostport', node: 'node-a', hostIP: '192.168.7.10', ips: ['10.244.1.77'], containers: { main: 'b0b'.padEnd(64, '5') }, ports: [{ name: 'dns', containerPort: 53, hostPort: 5353, protocol: 'UDP' }], createdMs: NOW_MS - 3_600_000, startedMs: NOW_MS - 3_600_000 }) });
containerIds.push('de1e7ed'.padEnd(64, '2'), 'fe5h'.padEnd(64, '3'), 'a9e17'.padEnd(64, '4'), 'b0b'.padEnd(64, '5'), 'feedface'.padEnd(64, '6'));
podIps.push('10.244.1.200', '10.244.1.77', '10.244.2.250' /* in a pod CIDR, no pod: expected */);
objects.push({ kind: 'service', object: realService({ name: 'web', namespace: 'shop', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }] }) });
objects.push({ kind: 'service', object: realService({ name: 'db', namespace: 'shop', type: 'NodePort', clusterIP: '10.96.0.20', ports: [{ name: 'pg', port: 5432, targetPort: 8080, nodePort: 30432 }] }) });
objects.push({ kind: 'service', object: realService({ name: 'lb', type: 'LoadBalancer', clusterIP: '10.96.0.30', ports: [{ name: 'https', port: 443, targetPort: 8080, nodePort: 30443 }], loadBalancerIPs: ['203.0.113.10'], externalIPs: ['192.0.2.10'] }) });
objects.push({ kind: 'service', object: realService({ name: 'dns', namespace: 'kube-system', clusterIP: '10.96.0.53', ports: [{ name: 'dns', port: 53, targetPort: 53, protocol: 'UDP' }] }) });
objects.push({ kind: 'slice', object: realEndpointSlice({ service: 'web', namespace: 'shop', endpoints: podIps.slice(0, 12).filter((_, i) => i % 3 === 0).map((ip) => ({ ip })), ports: [{ name: 'http', port: 8080 }] }) });
objects.push({ kind: 'slice', object: realEndpointSlice({ service: 'db', namespace: 'shop', endpoints: podIps.slice(0, 12).filter((_, i) => i % 3 === 1).map((ip, i) => ({ ip, ready: i % 2 === 0 })), ports: [{ name: 'pg', port: 8080 }] }) });
// A slice of a Service the index never sees: its backends are still named.
objects.push({ kind: 'slice', object: realEndpointSlice({ service: 'ghost', namespace: 'shop', endpoints: [{ ip: podIps[2]! }], ports: [{ name: 'http', port: 8080 }] }) });

// ---- the cluster changing between batches ----
// A pod that goes (its IP unheld from 5 minutes ago) and comes back as a new pod (started a
// little later each time), with the same address and containers.
const moverIp = '10.244.1.150';
const moverContainers = { main: 'ba5e'.padEnd(64, '7') };
podIps.push(moverIp);
containerIds.push(moverContainers.main);
const mover = (round: number) => realPod({ name: 'mover', namespace: 'shop', uid: `mover-${round}`, node: 'node-a', hostIP: '192.168.7.10', ips: [moverIp], labels: { app: 'web' }, owner: { kind: 'ReplicaSet', name: 'web-6d4f9' }, containers: moverContainers, ports: [{ name: 'http', containerPort: 8080 }], createdMs: NOW_MS - 600_000 + round * 1000, startedMs: NOW_MS - 600_000 + round * 1000 });
const webBackends = (round: number) => podIps.slice(0, 12).filter((_, i) => i % 3 === 0).map((ip, i) => ({ ip, ready: (i + round) % 2 === 0 })).concat([{ ip: moverIp, ready: round % 2 === 0 }]);
const relabelled = (round: number) => realPod({ name: 'pod-3', namespace: 'shop', node: 'node-b', hostIP: '192.168.7.11', ips: [podIps[3]!], labels: { app: 'web', round: String(round % 3) }, labelCount: 6, owner: { kind: 'ReplicaSet', name: 'web-6d4f9' }, containers: { main: 'c0ffee3'.padEnd(64, '0'), sidecar: '5eed3'.padEnd(64, '1') }, ports: [{ name: 'http', containerPort: 8080 }], createdMs: NOW_MS - 3_600_000, startedMs: NOW_MS - 3_500_000 });
const changes: ((index: KubeIndex, round: number) => void)[] = [
  (index, round) => {
    if (round % 2 === 0) index.upsertPod(mover(round) as unknown as V1Pod);
    else {
      const pod = mover(round - 1) as unknown as V1Pod;
      index.deletePod({ ...pod, metadata: { ...pod.metadata, deletionTimestamp: new Date(NOW_MS - 300_000) } } as V1Pod);
    }
  },
  (index, round) => index.upsertEndpointSlice(realEndpointSlice({ service: 'web', namespace: 'shop', endpoints: webBackends(round), ports: [{ name: 'http', port: 8080 }] }) as unknown as V1EndpointSlice),
  (index, round) => index.upsertOwner('ReplicaSet', realWorkload('ReplicaSet', 'web-6d4f9', 'shop', { kind: 'Deployment', name: round % 2 === 0 ? 'web-next' : 'web' }) as never),
  (index, round) => index.upsertPod(relabelled(round) as unknown as V1Pod),
  (index, round) => {
    const node = realNode(nodes[1]!) as unknown as V1Node;
    if (round % 2 === 0) index.deleteNode(node);
    else index.upsertNode(node);
  },
];

/** The `n`th change (each kind in turn, toggling), the same for both indexes. */
function change(index: KubeIndex, n: number): void {
  changes[n % changes.length]!(index, Math.floor(n / changes.length));
}

function buildIndex(): KubeIndex {
  const index = new KubeIndex({ deletedGraceMs: 120_000, deletedRetentionMs: 24 * 3_600_000 });
  index.upsertNamespace({ metadata: { name: 'kube-system', uid: 'kube-system-diff' } });
  for (const { kind, object } of objects) {
    if (kind === 'node') index.upsertNode(object as unknown as V1Node);
    else if (kind === 'owner') index.upsertOwner(object.kind as never, object as never);
    else if (kind === 'pod') index.upsertPod(object as unknown as V1Pod);
    else if (kind === 'delete-pod') {
      index.upsertPod(object as unknown as V1Pod);
      index.deletePod({ ...(object as unknown as V1Pod), metadata: { ...(object as unknown as V1Pod).metadata, deletionTimestamp: new Date(NOW_MS - 120_000) } } as V1Pod);
    } else if (kind === 'service') index.upsertService(object as unknown as V1Service);
    else index.upsertEndpointSlice(object as unknown as V1EndpointSlice);
  }
  // A Service deleted 100 s ago, as a restarted tagger knows it from its saved state.
  index.restore([{ kind: 'service', service: { uid: 'gone-uid', name: 'gone', namespace: 'shop', labels: {}, from: String(ms(NOW_MS - 3_600_000)), until: String(ms(NOW_MS - 100_000)), deleted: true, clusterIps: ['10.96.0.40'], vips: [], nodePorts: [] } }]);
  return index;
}

// ---- the records ----
const ips = [...podIps, '10.96.0.10', '10.96.0.20', '10.96.0.30', '10.96.0.53', '10.96.0.40', '10.96.9.9', '203.0.113.10', '192.0.2.10', ...nodes.map((n) => n.internalIP), '127.0.0.1', '127.0.0.53', '::1', '::ffff:127.0.0.1', '8.8.8.8', '2001:db8::1', ''];
const ports = [0, 53, 80, 443, 5353, 5432, 8080, 9100, 30432, 30443, 40000];
const cgroupPaths = ['', '/kubepods.slice/kubepods-besteffort.slice/cri-containerd-x.scope', '/system.slice/sshd.service', '/kubepods/burstable/pod1/abc'];
// Between the changes of who holds an address: old-0 gone (-120 s) and new-0 not yet (-50 s); the
// mover (below) running and gone.
const times = [0, NOW_MS - 7_150_000, NOW_MS - 3_000_000, NOW_MS - 450_000, NOW_MS - 90_000, NOW_MS - 30_000, NOW_MS + 1000].map(ms);

const endFields = fc.record({ ip: fc.constantFrom(...ips), port: fc.constantFrom(...ports), containerId: fc.constantFrom('', ...containerIds), cgroupPath: fc.constantFrom(...cgroupPaths), process: fc.boolean() });
const record = fc
  .tuple(anyMessage<FlowRecord>(FlowRecordSchema), endFields, endFields, fc.constantFrom(Vantage.SRC, Vantage.DST, Vantage.UNSPECIFIED, 9), fc.constantFrom('node-a', 'node-b', 'node-z', ''), fc.constantFrom(6, 17, 132, 1), fc.constantFrom(...times), fc.constantFrom(...times), fc.nat(7))
  .map(([r, s, d, vantage, node, protocol, start, firstSeen, shape]) => {
    r.vantage = vantage;
    r.node = node;
    r.protocol = protocol;
    r.startNs = start;
    r.firstSeenNs = firstSeen;
    // Ends sometimes missing, sometimes carrying tags already (replaced), else as generated.
    for (const [end, facts] of [['src', s], ['dst', d]] as const) {
      if (shape === 7 && end === 'dst') {
        delete r.dst;
        continue;
      }
      const e = (r[end] ??= create(EndpointSchema));
      e.ip = facts.ip;
      e.port = facts.port;
      if (facts.process) {
        e.process ??= create(ProcessSchema);
        e.process.containerId = facts.containerId;
        e.process.cgroupPath = facts.cgroupPath;
      } else delete e.process;
    }
    if (shape === 6) delete r.src;
    return r;
  });

/** The same batch with the fields of every record and of its two ends in reverse order. */
function reversedFields(batch: Uint8Array): Uint8Array {
  const view = new FlowBatchView().parse(batch);
  const bytes = view.bytes.slice();
  const record = FlowBatchView.recordCursor();
  const end = new MessageCursor(EndpointSchema);
  for (let i = 0; i < view.length; i++) {
    view.record(i, record);
    // Each end first (in place: its length does not change), then the record's fields around them.
    for (const field of [FlowFields.FlowRecord.src, FlowFields.FlowRecord.dst]) if (record.message(field, end)) reverseInPlace(bytes, end);
    reverseInPlace(bytes, record);
  }
  return bytes;
}

function reverseInPlace(bytes: Uint8Array, message: MessageCursor): void {
  const fields: [number, number][] = [];
  message.eachField((_field, tagStart, _valueStart, end) => fields.push([tagStart, end]));
  const before = bytes.slice(message.start, message.end);
  let at = message.start;
  for (const [start, end] of fields.reverse()) {
    bytes.set(before.subarray(start - message.start, end - message.start), at);
    at += end - start;
  }
}

function taggerOf(index: KubeIndex | undefined, clusterId: number): Tagger {
  return { index, clusterId: () => clusterId };
}

describe('the tagger byte path', () => {
  it(`gives ${RECORDS} generated records exactly what the object-model tagging gave them`, () => {
    const byteIndex = buildIndex();
    const objectIndex = buildIndex();
    const view = new FlowBatchView();
    const writer = new FlowBatchWriter();
    const byteTaggers = [new BatchTagger(taggerOf(byteIndex, 0x2a2a)), new BatchTagger(taggerOf(byteIndex, 0)), new BatchTagger(taggerOf(undefined, 0))];
    const objectTaggers = [taggerOf(objectIndex, 0x2a2a), taggerOf(objectIndex, 0), taggerOf(undefined, 0)];
    let compared = 0;
    let held = 0;
    let changed = 0;
    const seen = new Map<string, number>();
    let seed = 1;
    while (compared < RECORDS) {
      const records = fc.sample(record, { numRuns: Math.min(PER_BATCH, RECORDS - compared), seed: seed++ });
      const which = seed % 3;
      const createdNs = seed % 2 === 0 ? ms(NOW_MS) : 0n;
      const encoded = encodeFlowBatch(newFlowBatch({ batchId: `in-${seed}`, producer: 'node-a', createdNs, records }));
      // Half the batches, of every tagger (`which`), with their fields in reverse order.
      const input = Math.floor(seed / 3) % 2 === 1 ? reversedFields(encoded) : encoded;
      // Half the batches see the cluster as the batch before did (answers kept hold).
      if (seed % 2 === 0) {
        change(byteIndex, changed);
        change(objectIndex, changed++);
      }
      // Every fourth batch may be held: both sides must agree on it (same reason, same delay).
      const hold: HoldPolicy | undefined = seed % 4 === 0 ? { nowNs: ms(NOW_MS), deadlineNs: ms(NOW_MS + 700), retryDelayMs: 500 } : undefined;

      const expectedStats = emptyStats();
      let expected: FlowRecord[] | HoldBatch;
      try {
        expected = tagBatchWithObjects(objectTaggers[which]!, decodeFlowBatch(input), 'x', expectedStats, hold).records;
      } catch (error) {
        if (!(error instanceof HoldBatch)) throw error;
        expected = error;
      }
      const stats = emptyStats();
      writer.reset();
      writer.open({ batchId: 'out', producer: 'x', createdNs: 1n }, 1 << 30);
      let got: FlowRecord[] | HoldBatch;
      try {
        byteTaggers[which]!.tagInto(view.parse(input), writer, stats, hold);
        const output = writer.parts()[0]!.bytes;
        got = decodeFlowBatch(output).records;
        if (input === encoded) {
          // Input in protobuf-es's order comes out as protobuf-es writes the tagged record: each
          // tag spliced where its field belongs, not only equal once decoded.
          const out = new FlowBatchView().parse(output);
          got.forEach((r, i) => expect(Buffer.from(out.bytes.subarray(out.recordStart(i), out.recordEnd(i))).equals(toBinary(FlowRecordSchema, r)), `record ${i} bytes (seed ${seed - 1})`).toBe(true));
        }
      } catch (error) {
        if (!(error instanceof HoldBatch)) throw error;
        got = error;
      }
      expect(stats, `counts (seed ${seed - 1})`).toEqual(expectedStats);
      if (expected instanceof HoldBatch || got instanceof HoldBatch) {
        expect(got instanceof HoldBatch && expected instanceof HoldBatch && [got.delayMs, got.reason], `held (seed ${seed - 1})`).toEqual(expected instanceof HoldBatch && [expected.delayMs, expected.reason]);
        held++;
      } else {
        expect(got.length).toBe(expected.length);
        for (const r of expected) {
          for (const end of [r.src, r.dst]) {
            const kube = end?.kube;
            if (!kube) continue;
            const what = `${kube.objectType || 'none'}${kube.serviceName && kube.objectType === 'pod' ? '+backend' : ''}${kube.containerName ? '+container' : ''}`;
            seen.set(what, (seen.get(what) ?? 0) + 1);
          }
        }
        got.forEach((r, i) => {
          const want = (expected as FlowRecord[])[i]!;
          if (!equals(FlowRecordSchema, r, want)) {
            expect(flowRecordToJson(r), `record ${i} (seed ${seed - 1})`).toEqual(flowRecordToJson(want));
            expect(toBinary(FlowRecordSchema, r)).toEqual(toBinary(FlowRecordSchema, want));
          }
        });
      }
      compared += records.length;
    }
    expect(compared).toBe(RECORDS);
    // The generator reaches every answer: each kind of object, a pod by container and as a
    // Service's backend, outside, unknown, a node-name-only tag (no cluster), and held batches.
    expect(held).toBeGreaterThan(0);
    expect([...seen.keys()].sort()).toEqual(expect.arrayContaining(['external', 'node', 'none', 'pod', 'pod+backend', 'pod+container', 'service', 'unknown']));
  }, 1_200_000);
});
