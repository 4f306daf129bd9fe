// The tagger's view of the cluster: IP → pod | service | node (with time, so a deleted pod stays
// known for a grace period and a reused IP maps to the pod that held it when a flow happened),
// container id → pod and container, owner chain → workload, Service → ready backends.
import { createHash } from 'node:crypto';
import { canonicalIp, create, KubeSchema } from '@kappa/contracts';
import type { Kube } from '@kappa/contracts';
import type {
  V1DaemonSet,
  V1Deployment,
  V1EndpointSlice,
  V1Job,
  V1CronJob,
  V1Namespace,
  V1Node,
  V1ObjectMeta,
  V1OwnerReference,
  V1Pod,
  V1ReplicaSet,
  V1Service,
  V1StatefulSet,
} from '@kubernetes/client-node';

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

interface PodEntry {
  uid: string;
  name: string;
  namespace: string;
  nodeName: string;
  hostNetwork: boolean;
  labels: Record<string, string>;
  ips: string[];
  /** containerId → container name (current and previous instances). */
  containers: Map<string, string>;
  owner: { kind: string; name: string } | undefined;
  templateHash: string | undefined;
  /** When the pod's IPs became its own (unix ns): start time, else creation time. */
  fromNs: bigint;
  /** When the tagger saw the pod deleted (unix ns); undefined while it exists. */
  deletedNs: bigint | undefined;
  /** Tags built once per container name ('' for none), valid while the owners are unchanged. */
  kubeCache: { ownersVersion: number; byContainer: Map<string, Kube> } | undefined;
}

interface ServiceEntry {
  key: string;
  name: string;
  namespace: string;
  uid: string;
  labels: Record<string, string>;
  ips: string[];
  kube?: Kube;
}

interface SliceEntry {
  serviceKey: string;
  /** Ready backends. */
  backends: { ip: string; port: number }[];
}

interface NodeEntry {
  name: string;
  uid: string;
  labels: Record<string, string>;
  ips: string[];
  kube?: Kube;
}

export type EndpointResolution =
  | { type: 'pod'; kube: Kube }
  | { type: 'service'; kube: Kube }
  | { type: 'node'; kube: Kube }
  | { type: 'none' };

function timeNs(value: Date | string | undefined): bigint | undefined {
  if (value === undefined) return undefined;
  const ms = value instanceof Date ? value.getTime() : Date.parse(value);
  return Number.isFinite(ms) ? BigInt(ms) * 1_000_000n : undefined;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

function normalizeIp(ip: string | undefined): string | undefined {
  if (!ip || ip === 'None') return undefined;
  try {
    return canonicalIp(ip);
  } catch {
    return undefined;
  }
}

/** "containerd://abc" → "abc" (the runtime prefix is not part of the id the enricher reports). */
export function bareContainerId(id: string): string {
  const at = id.indexOf('://');
  return at >= 0 ? id.slice(at + 3) : id;
}

function controllerOf(metadata: V1ObjectMeta | undefined): V1OwnerReference | undefined {
  const owners = metadata?.ownerReferences ?? [];
  return owners.find((owner) => owner.controller) ?? owners[0];
}

/** The cluster id: the first 4 bytes (big-endian) of sha256 of the kube-system namespace UID. */
export function clusterIdFromUid(uid: string): number {
  return createHash('sha256').update(uid).digest().readUInt32BE(0);
}

export class KubeIndex {
  private readonly pods = new Map<string, PodEntry>();
  /** ip → pods that held it, oldest first; deleted ones stay until the grace period ends. */
  private readonly podsByIp = new Map<string, PodEntry[]>();
  private readonly containers = new Map<string, { pod: PodEntry; containerName: string }>();
  private readonly services = new Map<string, ServiceEntry>();
  private readonly servicesByIp = new Map<string, ServiceEntry>();
  private readonly slices = new Map<string, SliceEntry>();
  /** backend ip → port → service key → how many slices list it (no string keys built per lookup). */
  private readonly backends = new Map<string, Map<number, Map<string, number>>>();
  private readonly nodes = new Map<string, NodeEntry>();
  private readonly nodesByIp = new Map<string, NodeEntry>();
  /** "Kind/namespace/name" of ReplicaSets and Jobs → their controller; other workloads → null. */
  private readonly owners = new Map<string, { kind: string; name: string } | null>();
  /** Bumped on every owner change, so cached pod tags pick up a new workload. */
  private ownersVersion = 0;
  private readonly listeners = new Set<(change: IndexChange) => void>();
  private kubeSystemUid: string | undefined;

  constructor(private readonly options: { deletedGraceMs: number }) {}

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

  // ---- pods ----

  upsertPod(pod: V1Pod): void {
    const metadata = pod.metadata;
    if (!metadata?.uid || !metadata.name) return;
    const previous = this.pods.get(metadata.uid);
    const hostNetwork = pod.spec?.hostNetwork === true;
    const ips = new Set<string>();
    if (!hostNetwork) {
      for (const entry of pod.status?.podIPs ?? []) {
        const ip = normalizeIp(entry.ip);
        if (ip) ips.add(ip);
      }
      const ip = normalizeIp(pod.status?.podIP);
      if (ip) ips.add(ip);
    }
    // Current containers and the instance before each one's last restart; older ids are dropped
    // so a crash-looping pod does not grow the index.
    const containers = new Map<string, string>();
    const statuses = [
      ...(pod.status?.containerStatuses ?? []),
      ...(pod.status?.initContainerStatuses ?? []),
      ...(pod.status?.ephemeralContainerStatuses ?? []),
    ];
    for (const status of statuses) {
      if (status.containerID) containers.set(bareContainerId(status.containerID), status.name);
      const previousId = status.lastState?.terminated?.containerID;
      if (previousId) containers.set(bareContainerId(previousId), status.name);
    }
    const owner = controllerOf(metadata);
    const entry: PodEntry = {
      uid: metadata.uid,
      name: metadata.name,
      namespace: metadata.namespace ?? 'default',
      nodeName: pod.spec?.nodeName ?? '',
      hostNetwork,
      labels: metadata.labels ?? {},
      ips: [...ips],
      containers,
      owner: owner ? { kind: owner.kind, name: owner.name } : undefined,
      templateHash: metadata.labels?.['pod-template-hash'],
      fromNs: previous?.fromNs ?? timeNs(pod.status?.startTime) ?? timeNs(metadata.creationTimestamp) ?? nowNs(),
      deletedNs: undefined,
      kubeCache: undefined,
    };
    this.pods.set(entry.uid, entry);
    // IPs the pod no longer has: its binding ends now.
    for (const ip of previous?.ips ?? []) {
      if (!ips.has(ip)) this.unbindPodIp(ip, previous!, true);
    }
    for (const ip of entry.ips) {
      const held = this.podsByIp.get(ip) ?? [];
      const at = held.findIndex((p) => p.uid === entry.uid);
      if (at >= 0) held[at] = entry;
      else {
        held.push(entry);
        held.sort((a, b) => (a.fromNs < b.fromNs ? -1 : a.fromNs > b.fromNs ? 1 : 0));
      }
      this.podsByIp.set(ip, held);
    }
    for (const id of previous?.containers.keys() ?? []) {
      if (!containers.has(id) && this.containers.get(id)?.pod === previous) this.containers.delete(id);
    }
    for (const [id, containerName] of entry.containers) this.containers.set(id, { pod: entry, containerName });
    if (this.listeners.size > 0) {
      for (const ip of entry.ips) this.emit(`ip:${ip}`, this.podKube(entry, undefined, undefined), false);
      for (const [id, containerName] of entry.containers) this.emit(`container:${id}`, this.podKube(entry, containerName, undefined), false);
    }
  }

  /** Marks the pod deleted; it stays resolvable for flows until the grace period has passed. */
  deletePod(pod: V1Pod): void {
    const uid = pod.metadata?.uid;
    const entry = uid ? this.pods.get(uid) : undefined;
    if (!entry || entry.deletedNs !== undefined) return;
    entry.deletedNs = nowNs();
    if (this.listeners.size > 0) {
      for (const ip of entry.ips) this.emit(`ip:${ip}`, this.podKube(entry, undefined, undefined), true);
      for (const [id, containerName] of entry.containers) this.emit(`container:${id}`, this.podKube(entry, containerName, undefined), true);
    }
  }

  private unbindPodIp(ip: string, pod: PodEntry, notify: boolean): void {
    const held = this.podsByIp.get(ip);
    if (!held) return;
    const remaining = held.filter((p) => p.uid !== pod.uid);
    if (remaining.length > 0) this.podsByIp.set(ip, remaining);
    else this.podsByIp.delete(ip);
    if (notify && this.listeners.size > 0) this.emit(`ip:${ip}`, this.podKube(pod, undefined, undefined), true);
  }

  /** Forgets pods deleted more than the grace period ago. Returns how many were forgotten. */
  prune(now: bigint = nowNs()): number {
    const graceNs = BigInt(this.options.deletedGraceMs) * 1_000_000n;
    let forgotten = 0;
    for (const entry of this.pods.values()) {
      if (entry.deletedNs === undefined || now - entry.deletedNs < graceNs) continue;
      this.pods.delete(entry.uid);
      for (const ip of entry.ips) this.unbindPodIp(ip, entry, false);
      for (const id of entry.containers.keys()) {
        if (this.containers.get(id)?.pod === entry) this.containers.delete(id);
      }
      forgotten += 1;
    }
    return forgotten;
  }

  /** The pod that held the IP at that time: the latest to take it no later than then. */
  private podAt(ip: string, atNs: bigint): PodEntry | undefined {
    const held = this.podsByIp.get(ip);
    if (!held || held.length === 0) return undefined;
    let chosen: PodEntry | undefined;
    for (const pod of held) if (pod.fromNs <= atNs) chosen = pod;
    // A flow stamped before any holder took the IP (clock skew between node and API server):
    // the first holder is the best guess; never a pod that was already gone by then.
    return chosen ?? held[0];
  }

  // ---- services and endpoint slices ----

  upsertService(service: V1Service): void {
    const metadata = service.metadata;
    if (!metadata?.name) return;
    const key = `${metadata.namespace ?? 'default'}/${metadata.name}`;
    const previous = this.services.get(key);
    const ips = new Set<string>();
    for (const raw of [service.spec?.clusterIP, ...(service.spec?.clusterIPs ?? [])]) {
      const ip = normalizeIp(raw);
      if (ip) ips.add(ip);
    }
    const entry: ServiceEntry = {
      key,
      name: metadata.name,
      namespace: metadata.namespace ?? 'default',
      uid: metadata.uid ?? '',
      labels: metadata.labels ?? {},
      ips: [...ips],
    };
    this.services.set(key, entry);
    for (const ip of previous?.ips ?? []) {
      if (!ips.has(ip) && this.servicesByIp.get(ip) === previous) this.servicesByIp.delete(ip);
    }
    for (const ip of entry.ips) {
      this.servicesByIp.set(ip, entry);
      if (this.listeners.size > 0) this.emit(`ip:${ip}`, this.serviceKube(entry), false);
    }
  }

  deleteService(service: V1Service): void {
    const key = `${service.metadata?.namespace ?? 'default'}/${service.metadata?.name ?? ''}`;
    const entry = this.services.get(key);
    if (!entry) return;
    this.services.delete(key);
    for (const ip of entry.ips) {
      if (this.servicesByIp.get(ip) !== entry) continue;
      this.servicesByIp.delete(ip);
      if (this.listeners.size > 0) this.emit(`ip:${ip}`, this.serviceKube(entry), true);
    }
  }

  upsertEndpointSlice(slice: V1EndpointSlice): void {
    const metadata = slice.metadata;
    const serviceName = metadata?.labels?.['kubernetes.io/service-name'];
    if (!metadata?.name) return;
    const sliceKey = `${metadata.namespace ?? 'default'}/${metadata.name}`;
    this.removeSlice(sliceKey);
    if (!serviceName) return;
    const backends: { ip: string; port: number }[] = [];
    const ports = (slice.ports ?? []).map((port) => port.port).filter((port): port is number => typeof port === 'number');
    for (const endpoint of slice.endpoints ?? []) {
      // Kubernetes: a nil ready condition means ready.
      if (endpoint.conditions?.ready === false) continue;
      for (const address of endpoint.addresses ?? []) {
        const ip = normalizeIp(address);
        if (!ip) continue;
        for (const port of ports) backends.push({ ip, port });
      }
    }
    const entry: SliceEntry = { serviceKey: `${metadata.namespace ?? 'default'}/${serviceName}`, backends };
    this.slices.set(sliceKey, entry);
    for (const { ip, port } of backends) {
      let byPort = this.backends.get(ip);
      if (!byPort) this.backends.set(ip, (byPort = new Map()));
      let services = byPort.get(port);
      if (!services) byPort.set(port, (services = new Map()));
      services.set(entry.serviceKey, (services.get(entry.serviceKey) ?? 0) + 1);
    }
  }

  deleteEndpointSlice(slice: V1EndpointSlice): void {
    this.removeSlice(`${slice.metadata?.namespace ?? 'default'}/${slice.metadata?.name ?? ''}`);
  }

  private removeSlice(sliceKey: string): void {
    const entry = this.slices.get(sliceKey);
    if (!entry) return;
    this.slices.delete(sliceKey);
    for (const { ip, port } of entry.backends) {
      const byPort = this.backends.get(ip);
      const services = byPort?.get(port);
      if (!byPort || !services) continue;
      const count = (services.get(entry.serviceKey) ?? 0) - 1;
      if (count > 0) services.set(entry.serviceKey, count);
      else services.delete(entry.serviceKey);
      if (services.size === 0) byPort.delete(port);
      if (byPort.size === 0) this.backends.delete(ip);
    }
  }

  /** The Service whose EndpointSlices list ip:port as a ready backend (first by namespace/name). */
  private serviceForBackend(ip: string, port: number): ServiceEntry | undefined {
    const services = this.backends.get(ip)?.get(port);
    if (!services) return undefined;
    if (services.size === 1) {
      // The common case: one Service selects this backend.
      const [only] = services.keys();
      const service = only !== undefined ? this.services.get(only) : undefined;
      if (service) return service;
    }
    const keys = [...services.keys()].sort();
    for (const key of keys) {
      const service = this.services.get(key);
      if (service) return service;
    }
    const [namespace, name] = (keys[0] ?? '/').split('/');
    return { key: keys[0] ?? '', name: name ?? '', namespace: namespace ?? '', uid: '', labels: {}, ips: [] };
  }

  /** Ready backends ("ip:port") of the Service at this IP. */
  backendsOf(serviceIp: string): string[] {
    const service = this.servicesByIp.get(serviceIp);
    if (!service) return [];
    const result = new Set<string>();
    for (const slice of this.slices.values()) {
      if (slice.serviceKey !== service.key) continue;
      for (const { ip, port } of slice.backends) result.add(ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
    }
    return [...result].sort();
  }

  // ---- nodes ----

  upsertNode(node: V1Node): void {
    const name = node.metadata?.name;
    if (!name) return;
    const previous = this.nodes.get(name);
    const ips = new Set<string>();
    for (const address of node.status?.addresses ?? []) {
      if (address.type !== 'InternalIP' && address.type !== 'ExternalIP') continue;
      const ip = normalizeIp(address.address);
      if (ip) ips.add(ip);
    }
    const entry: NodeEntry = { name, uid: node.metadata?.uid ?? '', labels: node.metadata?.labels ?? {}, ips: [...ips] };
    this.nodes.set(name, entry);
    for (const ip of previous?.ips ?? []) {
      if (!ips.has(ip) && this.nodesByIp.get(ip) === previous) this.nodesByIp.delete(ip);
    }
    for (const ip of entry.ips) {
      this.nodesByIp.set(ip, entry);
      if (this.listeners.size > 0) this.emit(`ip:${ip}`, this.nodeKube(entry), false);
    }
  }

  deleteNode(node: V1Node): void {
    const entry = this.nodes.get(node.metadata?.name ?? '');
    if (!entry) return;
    this.nodes.delete(entry.name);
    for (const ip of entry.ips) {
      if (this.nodesByIp.get(ip) !== entry) continue;
      this.nodesByIp.delete(ip);
      if (this.listeners.size > 0) this.emit(`ip:${ip}`, this.nodeKube(entry), true);
    }
  }

  // ---- owners ----

  upsertOwner(kind: 'ReplicaSet' | 'Job' | 'Deployment' | 'StatefulSet' | 'DaemonSet' | 'CronJob', object: V1ReplicaSet | V1Job | V1Deployment | V1StatefulSet | V1DaemonSet | V1CronJob): void {
    const metadata = object.metadata;
    if (!metadata?.name) return;
    const controller = kind === 'ReplicaSet' || kind === 'Job' ? controllerOf(metadata) : undefined;
    this.ownersVersion += 1;
    this.owners.set(`${kind}/${metadata.namespace ?? 'default'}/${metadata.name}`, controller ? { kind: controller.kind, name: controller.name } : null);
  }

  deleteOwner(kind: string, object: { metadata?: V1ObjectMeta }): void {
    this.ownersVersion += 1;
    this.owners.delete(`${kind}/${object.metadata?.namespace ?? 'default'}/${object.metadata?.name ?? ''}`);
  }

  /** Pod → ReplicaSet → Deployment, Pod → Job → CronJob, StatefulSet, DaemonSet; a bare pod is its own workload. */
  private workloadOf(pod: PodEntry): { kind: string; name: string } {
    const owner = pod.owner;
    if (!owner) return { kind: 'Pod', name: pod.name };
    if (owner.kind === 'ReplicaSet' || owner.kind === 'Job') {
      const key = `${owner.kind}/${pod.namespace}/${owner.name}`;
      const parent = this.owners.get(key);
      if (parent) return parent;
      if (parent === undefined && owner.kind === 'ReplicaSet' && pod.templateHash && owner.name.endsWith(`-${pod.templateHash}`)) {
        // The ReplicaSet is not (yet) known: its name is <deployment>-<pod-template-hash>.
        return { kind: 'Deployment', name: owner.name.slice(0, -pod.templateHash.length - 1) };
      }
    }
    return owner;
  }

  // ---- tags ----

  // Tags are built once per object and handed out as shallow copies (protobuf-es messages are
  // plain objects), so tagging a record costs map lookups and two small copies.
  private podKube(pod: PodEntry, containerName: string | undefined, port: number | undefined, ip = pod.ips[0]): Kube {
    let cache = pod.kubeCache;
    if (!cache || cache.ownersVersion !== this.ownersVersion) {
      cache = { ownersVersion: this.ownersVersion, byContainer: new Map() };
      pod.kubeCache = cache;
    }
    let base = cache.byContainer.get(containerName ?? '');
    if (!base) {
      const workload = this.workloadOf(pod);
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
    const kube = { ...base };
    const service = ip !== undefined && port ? this.serviceForBackend(ip, port) : undefined;
    if (service) {
      kube.serviceName = service.name;
      kube.serviceNamespace = service.namespace;
    }
    return kube;
  }

  private serviceKube(service: ServiceEntry): Kube {
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
    return { ...service.kube };
  }

  private nodeKube(node: NodeEntry): Kube {
    node.kube ??= create(KubeSchema, {
      node: node.name,
      objectName: node.name,
      objectType: 'node',
      workloadName: node.name,
      workloadKind: 'Node',
      labels: node.labels,
      objectUid: node.uid,
    });
    return { ...node.kube };
  }

  /** The pod and container a container id belongs to (hostNetwork pods included). */
  resolveContainer(containerId: string, port?: number): EndpointResolution {
    const found = this.containers.get(bareContainerId(containerId));
    if (!found) return { type: 'none' };
    return { type: 'pod', kube: this.podKube(found.pod, found.containerName, found.pod.hostNetwork ? undefined : port) };
  }

  /** What an IP was at a time: a Service ClusterIP, a (non-hostNetwork) pod, a node, or nothing. */
  resolveIp(ip: string, atNs: bigint, port?: number): EndpointResolution {
    const service = this.servicesByIp.get(ip);
    if (service) return { type: 'service', kube: this.serviceKube(service) };
    const pod = this.podAt(ip, atNs);
    if (pod) return { type: 'pod', kube: this.podKube(pod, undefined, port, ip) };
    const node = this.nodesByIp.get(ip);
    if (node) return { type: 'node', kube: this.nodeKube(node) };
    return { type: 'none' };
  }

  /** Node tags by name (for the local end of a host process). */
  nodeByName(name: string): Kube | undefined {
    const node = this.nodes.get(name);
    return node ? this.nodeKube(node) : undefined;
  }

  sizes(): IndexSizes {
    return {
      podIps: this.podsByIp.size,
      containers: this.containers.size,
      serviceIps: this.servicesByIp.size,
      nodeIps: this.nodesByIp.size,
      backendIps: this.backends.size,
      pods: this.pods.size,
      owners: this.owners.size,
    };
  }

  /** Subscribes to index changes (for gRPC Watch); returns the unsubscribe function. */
  subscribe(listener: (change: IndexChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(key: string, kube: Kube, removed: boolean): void {
    const change: IndexChange = { key, kube, removed, atNs: nowNs() };
    for (const listener of this.listeners) listener(change);
  }
}
