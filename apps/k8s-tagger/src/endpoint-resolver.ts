// What each end of a record is, at the flow's time: a pod, Service or node the index knows; a
// host process (the node); outside the cluster; or a pod the index has not seen yet — a
// container in a kubelet cgroup whose id no pod lists, or an address in a pod network that no
// pod holds — which the transform holds for a while instead of tagging it wrong for good.
// Answers are the index's shared tags plus what differs per end (the Service that selects a
// backend, the observing node), so the transform encodes each distinct answer once.
import { create, KubeSchema } from '@kappa/contracts';
import type { Kube } from '@kappa/contracts';
import type { KubeIndex, KubeTag } from './kube-index.js';
import type { ServiceRef } from './index/getters.js';

/** What the resolver reads of an end (the transform fills one per end and reuses it). */
export interface EndFacts {
  ip: string;
  port: number;
  /** The local process's container id ('' when none). */
  containerId: string;
  /** The local process's cgroup is one the kubelet made (its path names kubepods). */
  inPodCgroup: boolean;
}

/**
 * An end's tags: `base` with service_name/namespace from `service` (when set) and `node` (when
 * set). `base` is shared (the index's, or one of the constants here): never change it.
 */
export interface EndTag {
  base: Kube;
  service: ServiceRef | undefined;
  node: string | undefined;
  /** The pod is expected but not known: the tags are the best answer without it. */
  pending: boolean;
  /** Resolved to a pod, Service or node (for hit/miss counts). */
  hit: boolean;
}

export function newEndTag(): EndTag {
  return { base: EXTERNAL_KUBE, service: undefined, node: undefined, pending: false, hit: false };
}

/** The tags an EndTag stands for, as a new Kube. */
export function kubeOf(tag: EndTag): Kube {
  const kube = { ...tag.base };
  if (tag.service) {
    kube.serviceName = tag.service.name;
    kube.serviceNamespace = tag.service.namespace;
  }
  if (tag.node !== undefined) kube.node = tag.node;
  return kube;
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
export const EXTERNAL_KUBE: Kube = create(KubeSchema, { objectType: 'external' });
/** Given up waiting: the pod was expected and never became known within the hold budget. */
export const UNKNOWN_KUBE: Kube = create(KubeSchema, { objectType: 'unknown' });

/** Nodes the index does not know, by name (as far as the name says); bounded. */
const unknownNodes = new Map<string, Kube>();

function nodeBase(index: KubeIndex, node: string): Kube {
  const known = index.nodeTag(node);
  if (known) return known;
  let kube = unknownNodes.get(node);
  if (!kube) {
    if (unknownNodes.size >= 4096) unknownNodes.clear();
    unknownNodes.set(node, (kube = create(KubeSchema, { objectName: node, objectType: 'node', workloadName: node, workloadKind: 'Node' })));
  }
  return kube;
}

function set(out: EndTag, base: Kube, service: ServiceRef | undefined, node: string | undefined, pending: boolean, hit: boolean): EndTag {
  out.base = base;
  out.service = service;
  out.node = node;
  out.pending = pending;
  out.hit = hit;
  return out;
}

/** The end on this record's node (the vantage says which): by container id, then address. */
export function localEnd(index: KubeIndex, node: string, end: EndFacts, protocol: number, atNs: bigint, tag: KubeTag, out: EndTag): EndTag {
  if (end.containerId !== '' && index.containerTag(end.containerId, end.port, tag)) return set(out, tag.base!, tag.service, node, false, true);
  // A kubelet container whose pod does not list it yet (the kubelet reports container ids after
  // the pod's IP): its pod is coming; until then the best answer is what its address says.
  const expectedByContainer = end.containerId !== '' && end.inPodCgroup;
  if (end.ip !== '' && index.ipTag(end.ip, atNs, end.port, protocol, tag)) {
    if (expectedByContainer && tag.type !== 'pod') return set(out, UNKNOWN_KUBE, undefined, node, true, false);
    return set(out, tag.base!, tag.service, node, expectedByContainer, true);
  }
  if (expectedByContainer || (end.ip !== '' && index.expectsPod(end.ip))) return set(out, UNKNOWN_KUBE, undefined, node, true, false);
  // Not a pod or Service on this node: a host process, i.e. the node itself.
  return set(out, nodeBase(index, node), undefined, node, false, false);
}

/** The other end: by address and port, as of the flow's time. */
export function remoteEnd(index: KubeIndex, node: string, end: EndFacts, protocol: number, atNs: bigint, tag: KubeTag, out: EndTag): EndTag {
  if (end.ip !== '' && index.ipTag(end.ip, atNs, end.port, protocol, tag)) return set(out, tag.base!, tag.service, undefined, false, true);
  if (end.ip !== '' && index.expectsPod(end.ip)) return set(out, UNKNOWN_KUBE, undefined, undefined, true, false);
  if (LOOPBACK.test(end.ip)) return set(out, nodeBase(index, node), undefined, node, false, false);
  return set(out, EXTERNAL_KUBE, undefined, undefined, false, false);
}
