// Fills Endpoint.kube on both ends of every record of a batch: the local end (the vantage says
// which) by container id first, then IP; the remote end by IP, as of the time of the flow.
import { create, decodeFlowBatch, EndpointSchema, FlowRecordSchema, KubeSchema, partitionOfRecord, toBinary, Vantage } from '@kappa/contracts';
import type { Endpoint, FlowBatch, FlowRecord, Kube } from '@kappa/contracts';
import { subjects } from '@kappa/bus';
import type { StageTransform } from '@kappa/bus';
import type { TaggerMetrics } from './metrics.js';
import type { KubeIndex } from './kube-index.js';

export type EndRole = 'local' | 'remote';

export interface TaggingStats {
  records: number;
  /** Per end: how many endpoints resolved to a Kubernetes object, and how many did not. */
  hits: Record<EndRole, number>;
  misses: Record<EndRole, number>;
}

export interface Tagger {
  /** undefined: no cluster configured, tag node names only. */
  index: KubeIndex | undefined;
  clusterId(): number;
  readonly metrics?: TaggerMetrics;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
// Templates copied per endpoint: a shallow copy is much cheaper than create() on the hot path.
const EMPTY_KUBE: Kube = create(KubeSchema);
const EXTERNAL_KUBE: Kube = create(KubeSchema, { objectType: 'external' });

/** The time a record's tags must reflect: the start of its interval. */
function flowTime(record: FlowRecord, fallbackNs: bigint): bigint {
  if (record.startNs > 0n) return record.startNs;
  if (record.firstSeenNs > 0n) return record.firstSeenNs;
  return fallbackNs;
}

function tagLocal(tagger: Tagger, record: FlowRecord, end: Endpoint, atNs: bigint, stats: TaggingStats): Kube {
  const index = tagger.index;
  if (!index) return { ...EMPTY_KUBE, node: record.node };
  const containerId = end.process?.containerId;
  let resolved = containerId ? index.resolveContainer(containerId, end.port) : ({ type: 'none' } as const);
  if (resolved.type === 'none' && end.ip) resolved = index.resolveIp(end.ip, atNs, end.port);
  let kube: Kube;
  if (resolved.type === 'none') {
    // Not a pod or Service on this node: a host process, i.e. the node itself.
    stats.misses.local += 1;
    kube = index.nodeByName(record.node) ?? create(KubeSchema, { objectName: record.node, objectType: 'node', workloadName: record.node, workloadKind: 'Node' });
  } else {
    stats.hits.local += 1;
    kube = resolved.kube;
  }
  kube.node = record.node;
  return kube;
}

function tagRemote(tagger: Tagger, record: FlowRecord, end: Endpoint, atNs: bigint, stats: TaggingStats): Kube | undefined {
  const index = tagger.index;
  if (!index) return undefined;
  const resolved = end.ip ? index.resolveIp(end.ip, atNs, end.port) : ({ type: 'none' } as const);
  if (resolved.type !== 'none') {
    stats.hits.remote += 1;
    return resolved.kube;
  }
  stats.misses.remote += 1;
  if (LOOPBACK.test(end.ip)) {
    const kube = index.nodeByName(record.node) ?? create(KubeSchema, { objectName: record.node, objectType: 'node' });
    kube.node = record.node;
    return kube;
  }
  return { ...EXTERNAL_KUBE };
}

/**
 * Tags every record of the batch in place and returns it re-stamped for kappa.flow.tagged, with
 * an id derived from the input's so a redelivered input republishes under the same id.
 */
export function tagBatch(tagger: Tagger, input: FlowBatch, producer: string, stats: TaggingStats): FlowBatch {
  const clusterId = tagger.clusterId();
  const fallbackNs = input.createdNs > 0n ? input.createdNs : BigInt(Date.now()) * 1_000_000n;
  for (const record of input.records) {
    const atNs = flowTime(record, fallbackNs);
    record.src ??= create(EndpointSchema);
    record.dst ??= create(EndpointSchema);
    // SRC: the local end initiated (it is src); DST: the local end accepted (it is dst).
    const localIsDst = record.vantage === Vantage.DST;
    const local = localIsDst ? record.dst : record.src;
    const remote = localIsDst ? record.src : record.dst;
    local.kube = tagLocal(tagger, record, local, atNs, stats);
    const remoteKube = tagRemote(tagger, record, remote, atNs, stats);
    if (remoteKube) remote.kube = remoteKube;
    if (clusterId !== 0) record.clusterId = clusterId;
    stats.records += 1;
  }
  // The input batch is ours once decoded: re-stamp it rather than copy 1000 records.
  input.batchId = `k8s-tagger:${input.batchId}`;
  input.producer = producer;
  input.createdNs = BigInt(Date.now()) * 1_000_000n;
  return input;
}

export function emptyStats(): TaggingStats {
  return { records: 0, hits: { local: 0, remote: 0 }, misses: { local: 0, remote: 0 } };
}

/**
 * The stage transform: one input batch of partition k → one tagged output batch of partition k
 * (kappa.flow.tagged.p<k>, id `k8s-tagger:<input id>`). Input without a partition token (an
 * enricher of an older version) is routed record by record.
 */
export function tagTransform(tagger: Tagger, partitions: number): StageTransform {
  return ({ view, partition }, output) => {
    const stats = emptyStats();
    const tagged = tagBatch(tagger, decodeFlowBatch(view.bytes), '', stats);
    if (partition !== undefined) {
      const writer = output.batch(subjects.tagged(partition));
      for (const record of tagged.records) writer.recordBytes(toBinary(FlowRecordSchema, record));
    } else {
      const byPartition = new Map<number, FlowRecord[]>();
      for (const record of tagged.records) {
        const k = partitionOfRecord(record, partitions);
        byPartition.set(k, [...(byPartition.get(k) ?? []), record]);
      }
      for (const [k, records] of [...byPartition].sort((a, b) => a[0] - b[0])) {
        const writer = output.batch(subjects.tagged(k), `p${k}`);
        for (const record of records) writer.recordBytes(toBinary(FlowRecordSchema, record));
      }
    }
    tagger.metrics?.recordTagged(stats);
  };
}
