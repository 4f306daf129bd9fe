// What each end of a record is, at the flow's time: a pod, Service or node the index knows; a
// host process (the node); outside the cluster; or a pod the index has not seen yet — a
// container in a kubelet cgroup whose id no pod lists, or an address in a pod network that no
// pod holds — which the transform holds for a while instead of tagging it wrong for good.
import { create, KubeSchema } from '@kappa/contracts';
import type { Endpoint, Kube } from '@kappa/contracts';
import type { KubeIndex } from './kube-index.js';

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
