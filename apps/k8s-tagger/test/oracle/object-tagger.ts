// THE ORACLE of the tagger's differential test, not product code: the object-model tagging as it
// was before the byte path (protobuf-es objects changed in place: src/tagging.ts's tagBatch and
// src/endpoint-resolver.ts's localEnd/remoteEnd of before), kept verbatim. It shares nothing with
// the byte path; it asks its own KubeIndex through the copying getters (what the cluster is).
import { HoldBatch } from '@kappa/bus';
import { create, EndpointSchema, KubeSchema, Vantage } from '@kappa/contracts';
import type { Endpoint, FlowBatch, FlowRecord, Kube } from '@kappa/contracts';
import type { KubeIndex } from '../../src/kube-index.js';
import type { HoldPolicy, TaggingStats } from '../../src/tagging.js';

export interface ObjectTagger {
  index: KubeIndex | undefined;
  clusterId(): number;
}

// ---- endpoint-resolver.ts of before ----
/** An end's tags, and whether they may still be wrong because its pod is not known yet. */
export interface EndTags {
  kube: Kube;
  /** The pod is expected but not known: `kube` is the best answer without it. */
  pending: boolean;
  /** Resolved to a pod, Service or node (for hit/miss counts). */
  hit: boolean;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
// Templates copied per endpoint: a shallow copy is much cheaper than create() on the hot path.
const EXTERNAL_KUBE: Kube = create(KubeSchema, { objectType: 'external' });
/** Given up waiting: the pod was expected and never became known within the hold budget. */
export const UNKNOWN_KUBE: Kube = create(KubeSchema, { objectType: 'unknown' });

/** A process in a kubelet-made cgroup belongs to a pod (systemd and cgroupfs drivers). */
function inPodCgroup(end: Endpoint): boolean {
  return (end.process?.cgroupPath ?? '').includes('kubepods');
}

function nodeKube(index: KubeIndex, node: string): Kube {
  const kube = index.nodeByName(node) ?? create(KubeSchema, { objectName: node, objectType: 'node', workloadName: node, workloadKind: 'Node' });
  kube.node = node;
  return kube;
}

/** The end on this record's node (the vantage says which): by container id, then address. */
export function localEnd(index: KubeIndex, node: string, end: Endpoint, protocol: number, atNs: bigint): EndTags {
  const containerId = end.process?.containerId;
  if (containerId) {
    const byContainer = index.resolveContainer(containerId, end.port);
    if (byContainer.type !== 'none') return { kube: withNode(byContainer.kube, node), pending: false, hit: true };
  }
  // A kubelet container whose pod does not list it yet (the kubelet reports container ids after
  // the pod's IP): its pod is coming; until then the best answer is what its address says.
  const expectedByContainer = containerId !== undefined && containerId !== '' && inPodCgroup(end);
  const byIp = end.ip ? index.resolveIp(end.ip, atNs, end.port, protocol) : ({ type: 'none' } as const);
  if (byIp.type !== 'none') {
    const pending = expectedByContainer && byIp.type !== 'pod';
    return { kube: withNode(pending ? { ...UNKNOWN_KUBE } : byIp.kube, node), pending: expectedByContainer, hit: !pending };
  }
  if (expectedByContainer || (end.ip && index.expectsPod(end.ip))) return { kube: withNode({ ...UNKNOWN_KUBE }, node), pending: true, hit: false };
  // Not a pod or Service on this node: a host process, i.e. the node itself.
  return { kube: nodeKube(index, node), pending: false, hit: false };
}

/** The other end: by address and port, as of the flow's time. */
export function remoteEnd(index: KubeIndex, node: string, end: Endpoint, protocol: number, atNs: bigint): EndTags {
  const resolved = end.ip ? index.resolveIp(end.ip, atNs, end.port, protocol) : ({ type: 'none' } as const);
  if (resolved.type !== 'none') return { kube: resolved.kube, pending: false, hit: true };
  if (end.ip && index.expectsPod(end.ip)) return { kube: { ...UNKNOWN_KUBE }, pending: true, hit: false };
  if (LOOPBACK.test(end.ip)) return { kube: nodeKube(index, node), pending: false, hit: false };
  return { kube: { ...EXTERNAL_KUBE }, pending: false, hit: false };
}

function withNode(kube: Kube, node: string): Kube {
  kube.node = node;
  return kube;
}

// ---- tagging.ts of before ----

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
export function tagBatchWithObjects(tagger: ObjectTagger, input: FlowBatch, producer: string, stats: TaggingStats, hold?: HoldPolicy): FlowBatch {
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

