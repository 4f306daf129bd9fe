// Fills Endpoint.kube on both ends of every record of a batch: the local end (the vantage says
// which) by container id first, then IP; the remote end by IP and port, as of the time of the
// flow (endpoint-resolver.ts). A batch with an end whose pod is not known yet is held (the bus
// redelivers it later) until its hold deadline; past it, such ends are tagged `unknown`.
import { HoldBatch, subjects } from '@kappa/bus';
import type { StageTransform } from '@kappa/bus';
import { create, decodeFlowBatch, EndpointSchema, FlowRecordSchema, KubeSchema, partitionOfRecord, toBinary, Vantage } from '@kappa/contracts';
import type { FlowBatch, FlowRecord, Kube } from '@kappa/contracts';
import { localEnd, remoteEnd } from './endpoint-resolver.js';
import type { KubeIndex } from './kube-index.js';
import type { TaggerMetrics } from './metrics.js';

export type EndRole = 'local' | 'remote';

export interface TaggingStats {
  records: number;
  /** Per end: how many endpoints resolved to a Kubernetes object, and how many did not. */
  hits: Record<EndRole, number>;
  misses: Record<EndRole, number>;
  /** Ends whose pod was expected but not known: held (the batch comes back) or given up. */
  pending: Record<EndRole, number>;
  /** Pending ends tagged as they were when the hold deadline passed. */
  unknown: Record<EndRole, number>;
}

export interface Tagger {
  /** undefined: no cluster configured, tag node names only. */
  index: KubeIndex | undefined;
  clusterId(): number;
  readonly metrics?: TaggerMetrics;
}

/** Hold a batch with unknown pods while `nowNs` is before `deadlineNs`; retry after delayMs. */
export interface HoldPolicy {
  nowNs: bigint;
  deadlineNs: bigint;
  retryDelayMs: number;
}

const EMPTY_KUBE: Kube = create(KubeSchema);

/** The time a record's tags must reflect: the start of its interval. */
function flowTime(record: FlowRecord, fallbackNs: bigint): bigint {
  if (record.startNs > 0n) return record.startNs;
  if (record.firstSeenNs > 0n) return record.firstSeenNs;
  return fallbackNs;
}

/**
 * Tags every record of the batch in place and returns it re-stamped for kappa.flow.tagged, with
 * an id derived from the input's so a redelivered input republishes under the same id.
 * Throws HoldBatch when an end's pod is not known yet and the hold policy allows waiting.
 */
export function tagBatch(tagger: Tagger, input: FlowBatch, producer: string, stats: TaggingStats, hold?: HoldPolicy): FlowBatch {
  const clusterId = tagger.clusterId();
  const index = tagger.index;
  const fallbackNs = input.createdNs > 0n ? input.createdNs : BigInt(Date.now()) * 1_000_000n;
  let pending = 0;
  let pendingLocal = 0;
  let pendingRemote = 0;
  let latestNs = 0n;
  for (const record of input.records) {
    const atNs = flowTime(record, fallbackNs);
    if (atNs > latestNs) latestNs = atNs;
    record.src ??= create(EndpointSchema);
    record.dst ??= create(EndpointSchema);
    // SRC: the local end initiated (it is src); DST: the local end accepted (it is dst).
    const localIsDst = record.vantage === Vantage.DST;
    const local = localIsDst ? record.dst : record.src;
    const remote = localIsDst ? record.src : record.dst;
    stats.records += 1;
    if (clusterId !== 0) record.clusterId = clusterId;
    if (!index) {
      local.kube = { ...EMPTY_KUBE, node: record.node };
      continue;
    }
    const l = localEnd(index, record.node, local, record.protocol, atNs);
    const r = remoteEnd(index, record.node, remote, record.protocol, atNs);
    local.kube = l.kube;
    remote.kube = r.kube;
    if (l.hit) stats.hits.local += 1;
    else stats.misses.local += 1;
    if (r.hit) stats.hits.remote += 1;
    else stats.misses.remote += 1;
    if (l.pending) pendingLocal += 1;
    if (r.pending) pendingRemote += 1;
    if (l.pending || r.pending) pending += 1;
  }
  stats.pending.local += pendingLocal;
  stats.pending.remote += pendingRemote;
  if (pending > 0 && hold && hold.nowNs < hold.deadlineNs) {
    const leftMs = Number((hold.deadlineNs - hold.nowNs) / 1_000_000n);
    throw new HoldBatch(Math.max(1, Math.min(hold.retryDelayMs, leftMs)), 'pod-not-known');
  }
  stats.unknown.local += pendingLocal;
  stats.unknown.remote += pendingRemote;
  index?.observeFlowTime(latestNs);
  // The input batch is ours once decoded: re-stamp it rather than copy 1000 records.
  input.batchId = `k8s-tagger:${input.batchId}`;
  input.producer = producer;
  input.createdNs = BigInt(Date.now()) * 1_000_000n;
  return input;
}

export function emptyStats(): TaggingStats {
  return {
    records: 0,
    hits: { local: 0, remote: 0 },
    misses: { local: 0, remote: 0 },
    pending: { local: 0, remote: 0 },
    unknown: { local: 0, remote: 0 },
  };
}

/**
 * The stage transform: one input batch of partition k → one tagged output batch of partition k
 * (kappa.flow.tagged.p<k>, id `k8s-tagger:<input id>`). Input without a partition token (an
 * enricher of an older version) is routed record by record.
 */
export function tagTransform(tagger: Tagger, partitions: number, holdMaxMs = 10_000): StageTransform {
  return ({ view, partition, storedNs }, output) => {
    const stats = emptyStats();
    // Ends whose pod is not known yet hold the batch (HoldBatch: the runner naks it with the
    // delay) until holdMaxMs after its first arrival.
    const hold = { nowNs: BigInt(Date.now()) * 1_000_000n, deadlineNs: storedNs + BigInt(holdMaxMs) * 1_000_000n, retryDelayMs: 500 };
    let tagged: FlowBatch;
    try {
      tagged = tagBatch(tagger, decodeFlowBatch(view.bytes), '', stats, hold);
    } catch (error) {
      if (error instanceof HoldBatch) tagger.metrics?.recordHeld(stats);
      throw error;
    }
    tagger.metrics?.recordTagged(stats);
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
  };
}
