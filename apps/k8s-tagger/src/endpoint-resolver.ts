// What each end of a record is, at the flow's time: a pod, Service or node the index knows; a
// host process (the node); outside the cluster; or a pod the index has not seen yet — a
// container in a kubelet cgroup whose id no pod lists, or an address in a pod network that no
// pod holds — which the transform holds for a while instead of tagging it wrong for good.
// Answers are the index's shared tags plus what differs per end (the Service that selects a
// backend, the observing node), so the transform encodes each distinct answer once; each says
// too whether it holds for other flows of that end, so the transform may keep it (tagging.ts).
import { create, KubeSchema } from '@kappa/contracts';
import type { Kube } from '@kappa/contracts';
import { newKubeTag } from './kube-index.js';
import type { KubeIndex, KubeTag } from './kube-index.js';
import { allTime } from './index/getters.js';
import type { ServiceRef, TimeWindow } from './index/getters.js';

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
export interface EndTag extends TimeWindow {
  base: Kube;
  service: ServiceRef | undefined;
  node: string | undefined;
  /** The pod is expected but not known: the tags are the best answer without it. */
  pending: boolean;
  /** Resolved to a pod, Service or node (for hit/miss counts). */
  hit: boolean;
  /**
   * While the index's version stays the same, every flow of [fromNs, untilNs) gets this answer
   * for the same end — the local end's container id on the same node, the remote end's address —
   * whatever its port and protocol, but for the Service that lists `backendIp` as a backend on
   * the port (when set). False: the answer depends on more (the local end's address, a node IP,
   * a LoadBalancer or external IP, the node of a loopback address).
   */
  reusable: boolean;
  backendIp: string | undefined;
}

export function newEndTag(): EndTag {
  return { base: EXTERNAL_KUBE, service: undefined, node: undefined, pending: false, hit: false, reusable: false, fromNs: 0n, untilNs: 0n, backendIp: undefined };
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

/** No lookup made: an answer for all time and every port. */
const NO_LOOKUP: KubeTag = newKubeTag();
allTime(NO_LOOKUP);

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
  out.reusable = false;
  return out;
}

/** An answer that holds as far as the index's lookups (`tag`) say. */
function reusable(out: EndTag, tag: KubeTag): EndTag {
  out.reusable = !tag.byPort;
  out.fromNs = tag.fromNs;
  out.untilNs = tag.untilNs;
  out.backendIp = tag.backendIp;
  return out;
}

/** The end on this record's node (the vantage says which): by container id, then address. */
export function localEnd(index: KubeIndex, node: string, end: EndFacts, protocol: number, atNs: bigint, tag: KubeTag, out: EndTag): EndTag {
  if (end.containerId !== '' && index.containerTag(end.containerId, end.port, tag)) return reusable(set(out, tag.base!, tag.service, node, false, true), tag);
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
  if (end.ip === '') return reusable(set(out, EXTERNAL_KUBE, undefined, undefined, false, false), NO_LOOKUP);
  if (index.ipTag(end.ip, atNs, end.port, protocol, tag)) return reusable(set(out, tag.base!, tag.service, undefined, false, true), tag);
  if (index.expectsPod(end.ip)) return reusable(set(out, UNKNOWN_KUBE, undefined, undefined, true, false), tag);
  // The node that saw the flow: not the same answer for every record of the address.
  if (LOOPBACK.test(end.ip)) return set(out, nodeBase(index, node), undefined, node, false, false);
  return reusable(set(out, EXTERNAL_KUBE, undefined, undefined, false, false), tag);
}
