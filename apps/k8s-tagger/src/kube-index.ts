// The tagger's view of the cluster, in event time: which pod held an IP when a flow happened,
// which Service an address and port reach (every Service kind), container ids, nodes, workloads.
// Each kind of object has its own store answering a narrow getter (index/getters.ts); this class
// takes in the informers' objects, builds the tags, and keeps deleted objects for a grace period
// measured against the flows being tagged (and saved, so a restarted tagger still knows them).
import { createHash } from 'node:crypto';
import { create, KubeSchema } from '@kappa/contracts';
import type { Kube } from '@kappa/contracts';
import type { V1EndpointSlice, V1Namespace, V1Node, V1ObjectMeta, V1Pod, V1Service } from '@kubernetes/client-node';
import { PodNetworks } from './index/cidr.js';
import type { NodeGetter, PodGetter, ServiceGetter, ServiceRef, TimeWindow, WorkloadGetter } from './index/getters.js';
import { allTime, nowNs } from './index/getters.js';
import { NodeStore } from './index/nodes.js';
import type { NodeEntry } from './index/nodes.js';
import { OwnerStore } from './index/owners.js';
import type { OwnerKind } from './index/owners.js';
import { PodStore } from './index/pods.js';
import type { PodEntry, PodSnapshot } from './index/pods.js';
import { ServiceStore } from './index/services.js';
import type { ServiceEntry, ServiceSnapshot } from './index/services.js';

export { bareContainerId } from './index/pods.js';

/** A change to the index, as the gRPC Watch streams it: key "ip:<ip>" or "container:<id>". */
export interface IndexChange {
  key: string;
  kube: Kube;
  removed: boolean;
  atNs: bigint;
}

export interface IndexSizes {
  podIps: number;
  containers: number;
  serviceIps: number;
  nodeIps: number;
  backendIps: number;
  pods: number;
  owners: number;
}

export type EndpointResolution =
  | { type: 'pod'; kube: Kube }
  | { type: 'service'; kube: Kube }
  | { type: 'node'; kube: Kube }
  | { type: 'none' };

/**
 * A tag as the index holds it, without a copy (the tagger's byte path encodes each distinct tag
 * once): `base` is shared and stays the same object while what it says is unchanged — never
 * change it; `service` is the Service that selects a pod backend on the flow's port (its
 * service_name/namespace). Filled by containerTag/ipTag into a caller's object, with what the
 * answer depends on besides the index's version (so the caller may reuse it for other flows):
 * the span of event time it holds for (TimeWindow), and the port.
 */
export interface KubeTag extends TimeWindow {
  type: 'pod' | 'service' | 'node' | 'none';
  base: Kube | undefined;
  service: ServiceRef | undefined;
  /** The answer may differ on another port (a node IP, a LoadBalancer or external IP). */
  byPort: boolean;
  /** Else, only the Service may differ: the one whose slices list this address on the port. */
  backendIp: string | undefined;
}

export function newKubeTag(): KubeTag {
  return { type: 'none', base: undefined, service: undefined, fromNs: 0n, untilNs: 0n, byPort: false, backendIp: undefined };
}

/** Before a lookup: the answer holds for all time and every port until a lookup says otherwise. */
function openTag(out: KubeTag): void {
  allTime(out);
  out.byPort = false;
  out.backendIp = undefined;
}

function setTag(out: KubeTag, type: KubeTag['type'], base: Kube | undefined, service: ServiceRef | undefined): boolean {
  out.type = type;
  out.base = base;
  out.service = service;
  return type !== 'none';
}

/** The tags a KubeTag stands for, as a new Kube. */
function kubeOfTag(tag: KubeTag): Kube {
  const kube = { ...tag.base! };
  if (tag.service) {
    kube.serviceName = tag.service.name;
    kube.serviceNamespace = tag.service.namespace;
  }
  return kube;
}

/** What the index saves so a restarted tagger still knows deleted pods and Services. */
export type SavedObject = { kind: 'pod'; pod: PodSnapshot } | { kind: 'service'; service: ServiceSnapshot };

export interface KubeIndexOptions {
  /** How long (event time) a deleted pod or Service stays known after its end. */
  deletedGraceMs: number;
  /** Wall-clock bound on keeping deleted objects, whatever the flows' times. Default 1 h. */
  deletedRetentionMs?: number;
  /** Pod networks given by the operator (added to the nodes' podCIDRs). */
  podCidrs?: readonly string[];
  /** Tolerated clock difference between nodes and the API server. Default 2 s. */
  clockSkewMs?: number;
}

/** The cluster id: the first 4 bytes (big-endian) of sha256 of the kube-system namespace UID. */
export function clusterIdFromUid(uid: string): number {
  return createHash('sha256').update(uid).digest().readUInt32BE(0);
}

export class KubeIndex {
  readonly pods: PodGetter;
  readonly services: ServiceGetter;
  readonly nodes: NodeGetter;
  readonly workloads: WorkloadGetter;
  private readonly podStore: PodStore;
  private readonly serviceStore: ServiceStore;
  private readonly nodeStore: NodeStore;
  private readonly ownerStore: OwnerStore;
  private readonly listeners = new Set<(change: IndexChange) => void>();
  /** Scratch tag of the copying getters (resolveContainer, resolveIp). */
  private readonly scratch = newKubeTag();
  private kubeSystemUid: string | undefined;
  /** The latest flow time tagged (event time), never ahead of the wall clock. */
  private watermarkNs = 0n;
  /** Where saved objects go (set by the service that persists them). */
  saver: ((key: string, saved: SavedObject) => void) | undefined;

  constructor(private readonly options: KubeIndexOptions) {
    const skewNs = BigInt(options.clockSkewMs ?? 2000) * 1_000_000n;
    const networks = new PodNetworks(options.podCidrs ?? []);
    this.nodeStore = new NodeStore(networks, (node, removed) => {
      if (this.listeners.size > 0) for (const ip of node.ips) this.emit(`ip:${ip}`, this.nodeKube(node), removed);
    });
    this.podStore = new PodStore(networks, skewNs, {
      changed: (pod) => {
        this.save(pod);
        if (this.listeners.size > 0) this.emitPod(pod, false);
      },
      deleted: (pod) => {
        this.save(pod);
        if (this.listeners.size > 0) this.emitPod(pod, true);
      },
      forgotten: () => undefined,
    });
    this.serviceStore = new ServiceStore((ip) => this.nodeStore.nodeByIp(ip) !== undefined, skewNs, {
      changed: (service) => {
        this.saveService(service);
        if (this.listeners.size > 0) for (const ip of service.clusterIps) this.emit(`ip:${ip}`, this.serviceKube(service), false);
      },
      deleted: (service) => {
        this.saveService(service);
        if (this.listeners.size > 0) for (const ip of service.clusterIps) this.emit(`ip:${ip}`, this.serviceKube(service), true);
      },
      forgotten: () => undefined,
    });
    this.ownerStore = new OwnerStore();
    this.pods = this.podStore;
    this.services = this.serviceStore;
    this.nodes = this.nodeStore;
    this.workloads = this.ownerStore;
  }

  // ---- cluster id ----

  get clusterUid(): string | undefined {
    return this.kubeSystemUid;
  }

  upsertNamespace(namespace: V1Namespace): void {
    if (namespace.metadata?.name === 'kube-system') this.kubeSystemUid = namespace.metadata.uid;
  }

  deleteNamespace(_namespace: V1Namespace): void {
    // The cluster id stays stable for the life of the process even if kube-system vanishes.
  }

  // ---- taking in objects ----

  upsertPod(pod: V1Pod): void {
    this.podStore.upsert(pod);
  }

  deletePod(pod: V1Pod): void {
    this.podStore.remove(pod);
  }

  upsertService(service: V1Service): void {
    this.serviceStore.upsert(service);
  }

  deleteService(service: V1Service): void {
    this.serviceStore.remove(service);
  }

  upsertEndpointSlice(slice: V1EndpointSlice): void {
    this.serviceStore.upsertSlice(slice);
  }

  deleteEndpointSlice(slice: V1EndpointSlice): void {
    this.serviceStore.removeSlice(slice);
  }

  upsertNode(node: V1Node): void {
    this.nodeStore.upsert(node);
  }

  deleteNode(node: V1Node): void {
    this.nodeStore.remove(node);
  }

  upsertOwner(kind: OwnerKind, object: { metadata?: V1ObjectMeta }): void {
    this.ownerStore.upsert(kind, object);
  }

  deleteOwner(kind: string, object: { metadata?: V1ObjectMeta }): void {
    this.ownerStore.remove(kind, object);
  }

  // ---- event time ----

  /** The flows being tagged have reached this time: deleted objects older than the grace go. */
  observeFlowTime(atNs: bigint): void {
    if (atNs > this.watermarkNs) {
      const wall = nowNs();
      this.watermarkNs = atNs < wall ? atNs : wall;
    }
  }

  get flowWatermarkNs(): bigint {
    return this.watermarkNs;
  }

  /** Forgets deleted pods and Services past the grace (event time) or the retention (wall
   *  clock). Returns how many were forgotten. */
  prune(wallNs: bigint = nowNs()): number {
    const graceNs = BigInt(this.options.deletedGraceMs) * 1_000_000n;
    const retentionNs = BigInt(Math.max(this.options.deletedRetentionMs ?? 3_600_000, this.options.deletedGraceMs)) * 1_000_000n;
    return this.podStore.prune(this.watermarkNs, graceNs, wallNs, retentionNs) + this.serviceStore.prune(this.watermarkNs, graceNs, wallNs, retentionNs);
  }

  // ---- saved state ----

  private save(pod: PodEntry): void {
    this.saver?.(`pod.${pod.uid}`, { kind: 'pod', pod: this.podStore.snapshot(pod) });
  }

  private saveService(service: ServiceEntry): void {
    this.saver?.(`svc.${service.uid}`, { kind: 'service', service: this.serviceStore.snapshot(service) });
  }

  /** Every pod and Service as saved now (to refresh the saved copies). */
  *savedObjects(): Generator<[string, SavedObject]> {
    for (const pod of this.podStore.live()) yield [`pod.${pod.uid}`, { kind: 'pod', pod: this.podStore.snapshot(pod) }];
    for (const service of this.serviceStore.live()) yield [`svc.${service.uid}`, { kind: 'service', service: this.serviceStore.snapshot(service) }];
  }

  /** Takes back objects saved by an earlier run, before the first list. */
  restore(saved: Iterable<SavedObject>): number {
    let restored = 0;
    for (const object of saved) {
      if (object.kind === 'pod') this.podStore.restore(object.pod);
      else this.serviceStore.restore(object.service);
      restored += 1;
    }
    return restored;
  }

  /** After the first full list: what was saved as running but no longer exists was deleted
   *  while no tagger watched; it ends now (the latest it can have ended). */
  endUnconfirmed(atNs: bigint = nowNs()): number {
    const pods = this.podStore.unconfirmed();
    for (const pod of pods) this.podStore.removeByUid(pod.uid, atNs);
    const services = this.serviceStore.unconfirmed();
    for (const service of services) this.serviceStore.removeByUid(service.uid, atNs);
    return pods.length + services.length;
  }

  // ---- tags ----

  // Tags are built once per object and shared (the byte path encodes each once); the copying
  // getters hand out shallow copies (protobuf-es messages are plain objects).
  /** The pod's tag for one container name, rebuilt when the pod or the owners change. */
  private podBase(pod: PodEntry, containerName: string | undefined): Kube {
    let cache = pod.kubeCache as { ownersVersion: number; byContainer: Map<string, Kube> } | undefined;
    if (!cache || cache.ownersVersion !== this.ownerStore.version) {
      cache = { ownersVersion: this.ownerStore.version, byContainer: new Map() };
      pod.kubeCache = cache;
    }
    let base = cache.byContainer.get(containerName ?? '');
    if (!base) {
      const workload = this.ownerStore.workloadOf(pod);
      base = create(KubeSchema, {
        node: pod.nodeName,
        objectName: pod.name,
        objectNamespace: pod.namespace,
        objectType: 'pod',
        workloadName: workload.name,
        workloadNamespace: pod.namespace,
        workloadKind: workload.kind,
        labels: pod.labels,
        containerName: containerName ?? '',
        objectUid: pod.uid,
      });
      cache.byContainer.set(containerName ?? '', base);
    }
    return base;
  }

  /** The pod's tag and the Service that selects it as a backend on `port` (at `ip`). */
  private podTag(pod: PodEntry, containerName: string | undefined, port: number | undefined, ip: string | undefined, out: KubeTag): boolean {
    out.backendIp = port === undefined ? undefined : ip;
    return setTag(out, 'pod', this.podBase(pod, containerName), ip !== undefined && port ? this.serviceStore.serviceForBackend(ip, port) : undefined);
  }

  private podKube(pod: PodEntry, containerName: string | undefined, port: number | undefined, ip = pod.ips[0]): Kube {
    this.podTag(pod, containerName, port, ip, this.scratch);
    return kubeOfTag(this.scratch);
  }

  private serviceBase(service: ServiceEntry): Kube {
    service.kube ??= create(KubeSchema, {
      objectName: service.name,
      objectNamespace: service.namespace,
      objectType: 'service',
      workloadName: service.name,
      workloadNamespace: service.namespace,
      workloadKind: 'Service',
      labels: service.labels,
      serviceName: service.name,
      serviceNamespace: service.namespace,
      objectUid: service.uid,
    });
    return service.kube as Kube;
  }

  private serviceKube(service: ServiceEntry): Kube {
    return { ...this.serviceBase(service) };
  }

  private nodeBase(node: NodeEntry): Kube {
    node.kube ??= create(KubeSchema, {
      node: node.name,
      objectName: node.name,
      objectType: 'node',
      workloadName: node.name,
      workloadKind: 'Node',
      labels: node.labels,
      objectUid: node.uid,
    });
    return node.kube as Kube;
  }

  private nodeKube(node: NodeEntry): Kube {
    return { ...this.nodeBase(node) };
  }

  /** The pod and container a container id belongs to (hostNetwork pods included). */
  resolveContainer(containerId: string, port?: number): EndpointResolution {
    return this.resolution(this.containerTag(containerId, port, this.scratch));
  }

  /**
   * What ip:port was at a time: a Service (ClusterIP; LoadBalancer or external IP on a Service
   * port; NodePort on a node IP), a hostNetwork or hostPort pod on a node IP, the node, the pod
   * that held the IP then, or nothing.
   */
  resolveIp(ip: string, atNs: bigint, port = 0, protocol = 6): EndpointResolution {
    return this.resolution(this.ipTag(ip, atNs, port, protocol, this.scratch));
  }

  private resolution(found: boolean): EndpointResolution {
    const tag = this.scratch;
    if (!found || tag.type === 'none') return { type: 'none' };
    return { type: tag.type, kube: kubeOfTag(tag) };
  }

  /** resolveContainer without a copy, into `out` (see KubeTag); false: not known. */
  containerTag(containerId: string, port: number | undefined, out: KubeTag): boolean {
    openTag(out);
    const found = this.podStore.podByContainer(containerId);
    if (!found) return setTag(out, 'none', undefined, undefined);
    return this.podTag(found.pod, found.containerName, found.pod.hostNetwork ? undefined : port, found.pod.ips[0], out);
  }

  /** resolveIp without a copy, into `out` (see KubeTag); false: nothing at that address. */
  ipTag(ip: string, atNs: bigint, port: number, protocol: number, out: KubeTag): boolean {
    openTag(out);
    const node = this.nodeStore.nodeByIp(ip);
    // NodePorts and host ports on a node IP, and a LoadBalancer or external IP, answer by port.
    out.byPort = node !== undefined || this.serviceStore.hasVips(ip);
    const service = this.serviceStore.serviceAt(ip, port, protocol, atNs, out);
    if (service) return setTag(out, 'service', this.serviceBase(service), undefined);
    if (node) {
      const hostPod = port ? this.podStore.podOnHostPort(ip, port, protocol, atNs, out) : undefined;
      if (hostPod) return this.podTag(hostPod, undefined, undefined, undefined, out);
      return setTag(out, 'node', this.nodeBase(node), undefined);
    }
    const pod = this.podStore.podAt(ip, atNs, out);
    if (pod) return this.podTag(pod, undefined, port, ip, out);
    return setTag(out, 'none', undefined, undefined);
  }

  /** A node's tag by name, without a copy (never change it). */
  nodeTag(name: string): Kube | undefined {
    const node = this.nodeStore.nodeByName(name);
    return node ? this.nodeBase(node) : undefined;
  }

  /** Whether an address nothing resolves is a pod the index has not seen yet (it lies in a pod
   *  network and is no node's). */
  expectsPod(ip: string): boolean {
    return this.nodeStore.nodeByIp(ip) === undefined && this.podStore.inPodNetwork(ip);
  }

  /** Node tags by name (for the local end of a host process). */
  nodeByName(name: string): Kube | undefined {
    const node = this.nodeStore.nodeByName(name);
    return node ? this.nodeKube(node) : undefined;
  }

  /** Ready backends ("ip:port") of the Service at this IP. */
  backendsOf(serviceIp: string): string[] {
    return this.serviceStore.backendsOf(serviceIp);
  }

  sizes(): IndexSizes {
    return {
      podIps: this.podStore.ipCount,
      containers: this.podStore.containerCount,
      serviceIps: this.serviceStore.addressCount,
      nodeIps: this.nodeStore.size,
      backendIps: this.serviceStore.backendCount,
      pods: this.podStore.size,
      owners: this.ownerStore.size,
    };
  }

  /** Bumped by every change that may change an answer of containerTag, ipTag, expectsPod or
   *  nodeTag: answers kept by a caller are valid while it stays the same. */
  get version(): number {
    return this.podStore.version + this.serviceStore.version + this.nodeStore.version + this.ownerStore.version;
  }

  /** Subscribes to index changes (for gRPC Watch); returns the unsubscribe function. */
  subscribe(listener: (change: IndexChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emitPod(pod: PodEntry, removed: boolean): void {
    for (const ip of pod.ips) this.emit(`ip:${ip}`, this.podKube(pod, undefined, undefined), removed);
    for (const [id, containerName] of pod.containers) this.emit(`container:${id}`, this.podKube(pod, containerName, undefined), removed);
  }

  private emit(key: string, kube: Kube, removed: boolean): void {
    const change: IndexChange = { key, kube, removed, atNs: nowNs() };
    for (const listener of this.listeners) listener(change);
  }
}
