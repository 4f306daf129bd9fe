// Services by every address a client reaches them at: ClusterIPs (any port), LoadBalancer
// ingress IPs and external IPs (on the Service's ports), NodePorts (on any node IP); and the ready
// backends of their EndpointSlices. Deleted Services stay for the event-time grace period, and
// a ClusterIP given to a new Service maps to the one that held it at the flow's time.
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import type { ServiceGetter, ServiceRef, TimeWindow } from './getters.js';
import { narrowAt, nowNs, portKey, protocolNumber, timeNs } from './getters.js';
import { normalizeIp } from './pods.js';

export interface ServiceEntry extends ServiceRef {
  key: string;
  uid: string;
  name: string;
  namespace: string;
  labels: Record<string, string>;
  fromNs: bigint;
  untilNs: bigint | undefined;
  clusterIps: string[];
  /** [ip, portKey] of LoadBalancer ingress IPs and external IPs. */
  vips: [string, number][];
  /** portKeys open on every node IP. */
  nodePorts: number[];
  deleted: boolean;
  deletedWallNs: bigint | undefined;
  confirmed: boolean;
  kube?: unknown;
}

export interface ServiceSnapshot {
  uid: string;
  name: string;
  namespace: string;
  labels: Record<string, string>;
  from: string;
  until?: string;
  deleted: boolean;
  clusterIps: string[];
  vips: [string, number][];
  nodePorts: number[];
}

interface SliceEntry {
  serviceKey: string;
  /** Ready backends. */
  backends: { ip: string; port: number }[];
}

export interface ServiceStoreEvents {
  changed(service: ServiceEntry): void;
  deleted(service: ServiceEntry): void;
  forgotten(service: ServiceEntry): void;
}

function byFrom(a: ServiceEntry, b: ServiceEntry): number {
  return a.fromNs < b.fromNs ? -1 : a.fromNs > b.fromNs ? 1 : 0;
}

/** The Service holding an address at a time. Before its first holder the address served no
 *  other Service, so the first holder answers (clocks of nodes and API server differ). */
/** The Services whose slices list one backend ip:port: slices per Service key, and the keys sorted. */
interface BackendServices {
  counts: Map<string, number>;
  sorted: string[];
}

function holderAt(held: readonly ServiceEntry[] | undefined, atNs: bigint, skewNs: bigint, window?: TimeWindow): ServiceEntry | undefined {
  if (!held || held.length === 0) return undefined;
  if (window) {
    for (const service of held) {
      narrowAt(window, service.fromNs - skewNs, atNs);
      if (service.untilNs !== undefined) narrowAt(window, service.untilNs + skewNs + 1n, atNs);
    }
  }
  let chosen: ServiceEntry | undefined;
  for (const service of held) if (service.fromNs - skewNs <= atNs) chosen = service;
  chosen ??= held[0]!;
  if (chosen.untilNs !== undefined && atNs > chosen.untilNs + skewNs) return undefined;
  return chosen;
}

function sameBackends(a: SliceEntry, b: SliceEntry): boolean {
  if (a.serviceKey !== b.serviceKey || a.backends.length !== b.backends.length) return false;
  for (let i = 0; i < a.backends.length; i++) if (a.backends[i]!.ip !== b.backends[i]!.ip || a.backends[i]!.port !== b.backends[i]!.port) return false;
  return true;
}

function addHolder<K>(map: Map<K, ServiceEntry[]>, key: K, entry: ServiceEntry): void {
  const held = (map.get(key) ?? []).filter((s) => s.uid !== entry.uid);
  held.push(entry);
  held.sort(byFrom);
  map.set(key, held);
}

function removeHolder<K>(map: Map<K, ServiceEntry[]>, key: K, entry: ServiceEntry): void {
  const held = map.get(key);
  if (!held) return;
  const remaining = held.filter((s) => s.uid !== entry.uid);
  if (remaining.length > 0) map.set(key, remaining);
  else map.delete(key);
}

export class ServiceStore implements ServiceGetter {
  /** uid → entry (deleted ones included, until forgotten). */
  private readonly services = new Map<string, ServiceEntry>();
  /** "namespace/name" → the current entry. */
  private readonly byKey = new Map<string, ServiceEntry>();
  private readonly clusterIps = new Map<string, ServiceEntry[]>();
  private readonly vips = new Map<string, Map<number, ServiceEntry[]>>();
  private readonly nodePorts = new Map<number, ServiceEntry[]>();
  private readonly slices = new Map<string, SliceEntry>();
  /** backend ip → port → service key → how many slices list it (no string keys built per lookup). */
  private readonly backends = new Map<string, Map<number, BackendServices>>();
  private changes = 0;

  constructor(
    private readonly isNodeIp: (ip: string) => boolean,
    private readonly skewNs: bigint,
    private readonly events: ServiceStoreEvents,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  get version(): number {
    return this.changes;
  }

  get addressCount(): number {
    return this.clusterIps.size + this.vips.size;
  }

  get backendCount(): number {
    return this.backends.size;
  }

  upsert(service: V1Service, observedNs: bigint = nowNs()): void {
    const metadata = service.metadata;
    if (!metadata?.name) return;
    const namespace = metadata.namespace ?? 'default';
    const key = `${namespace}/${metadata.name}`;
    const uid = metadata.uid ?? key;
    const current = this.byKey.get(key);
    if (current && current.uid !== uid) this.markDeleted(current, observedNs);
    const previous = this.services.get(uid);
    const clusterIps = new Set<string>();
    for (const raw of [service.spec?.clusterIP, ...(service.spec?.clusterIPs ?? [])]) {
      const ip = normalizeIp(raw);
      if (ip) clusterIps.add(ip);
    }
    const ports = (service.spec?.ports ?? []).map((p) => ({ port: p.port, protocol: protocolNumber(p.protocol), nodePort: p.nodePort }));
    const vipAddresses = new Set<string>();
    for (const raw of service.spec?.externalIPs ?? []) {
      const ip = normalizeIp(raw);
      if (ip) vipAddresses.add(ip);
    }
    if (service.spec?.type === 'LoadBalancer') {
      for (const ingress of service.status?.loadBalancer?.ingress ?? []) {
        const ip = normalizeIp(ingress.ip);
        if (ip) vipAddresses.add(ip);
      }
    }
    const vips: [string, number][] = [];
    for (const ip of vipAddresses) for (const p of ports) vips.push([ip, portKey(p.port, p.protocol)]);
    const nodePorts = service.spec?.type === 'NodePort' || service.spec?.type === 'LoadBalancer'
      ? ports.filter((p) => p.nodePort).map((p) => portKey(p.nodePort!, p.protocol))
      : [];
    const entry: ServiceEntry = {
      key,
      uid,
      name: metadata.name,
      namespace,
      labels: metadata.labels ?? {},
      fromNs: previous?.fromNs ?? timeNs(metadata.creationTimestamp as Date | string | undefined) ?? observedNs,
      untilNs: undefined,
      clusterIps: [...clusterIps],
      vips,
      nodePorts,
      deleted: false,
      deletedWallNs: undefined,
      confirmed: true,
    };
    if (previous) this.unplace(previous);
    this.place(entry);
    this.changes += 1;
    this.events.changed(entry);
  }

  remove(service: V1Service, observedNs: bigint = nowNs()): void {
    const uid = service.metadata?.uid ?? `${service.metadata?.namespace ?? 'default'}/${service.metadata?.name ?? ''}`;
    const entry = this.services.get(uid);
    if (entry && !entry.deleted) this.markDeleted(entry, observedNs);
  }

  removeByUid(uid: string, observedNs: bigint = nowNs()): void {
    const entry = this.services.get(uid);
    if (entry && !entry.deleted) this.markDeleted(entry, observedNs);
  }

  private markDeleted(entry: ServiceEntry, observedNs: bigint): void {
    entry.deleted = true;
    entry.untilNs = observedNs;
    entry.deletedWallNs = observedNs;
    this.changes += 1;
    if (this.byKey.get(entry.key) === entry) this.byKey.delete(entry.key);
    this.events.deleted(entry);
  }

  private place(entry: ServiceEntry): void {
    this.services.set(entry.uid, entry);
    if (!entry.deleted) this.byKey.set(entry.key, entry);
    for (const ip of entry.clusterIps) addHolder(this.clusterIps, ip, entry);
    for (const [ip, key] of entry.vips) {
      let ports = this.vips.get(ip);
      if (!ports) this.vips.set(ip, (ports = new Map()));
      addHolder(ports, key, entry);
    }
    for (const key of entry.nodePorts) addHolder(this.nodePorts, key, entry);
  }

  private unplace(entry: ServiceEntry): void {
    for (const ip of entry.clusterIps) removeHolder(this.clusterIps, ip, entry);
    for (const [ip, key] of entry.vips) {
      const ports = this.vips.get(ip);
      if (!ports) continue;
      removeHolder(ports, key, entry);
      if (ports.size === 0) this.vips.delete(ip);
    }
    for (const key of entry.nodePorts) removeHolder(this.nodePorts, key, entry);
  }

  prune(watermarkNs: bigint, graceNs: bigint, wallNs: bigint, retentionNs: bigint): number {
    let forgotten = 0;
    for (const entry of this.services.values()) {
      if (!entry.deleted) continue;
      const until = entry.untilNs ?? wallNs;
      if (watermarkNs - until <= graceNs && wallNs - (entry.deletedWallNs ?? until) <= retentionNs) continue;
      this.services.delete(entry.uid);
      this.unplace(entry);
      this.changes += 1;
      this.events.forgotten(entry);
      forgotten += 1;
    }
    return forgotten;
  }

  unconfirmed(): ServiceEntry[] {
    return [...this.services.values()].filter((s) => !s.confirmed && !s.deleted);
  }

  live(): IterableIterator<ServiceEntry> {
    return this.services.values();
  }

  snapshot(entry: ServiceEntry): ServiceSnapshot {
    return {
      uid: entry.uid,
      name: entry.name,
      namespace: entry.namespace,
      labels: entry.labels,
      from: String(entry.fromNs),
      ...(entry.untilNs !== undefined ? { until: String(entry.untilNs) } : {}),
      deleted: entry.deleted,
      clusterIps: entry.clusterIps,
      vips: entry.vips,
      nodePorts: entry.nodePorts,
    };
  }

  restore(saved: ServiceSnapshot, wallNs: bigint = nowNs()): void {
    if (this.services.has(saved.uid)) return;
    const key = `${saved.namespace}/${saved.name}`;
    if (!saved.deleted && this.byKey.has(key)) return;
    this.changes += 1;
    this.place({
      key,
      uid: saved.uid,
      name: saved.name,
      namespace: saved.namespace,
      labels: saved.labels,
      fromNs: BigInt(saved.from),
      untilNs: saved.until !== undefined ? BigInt(saved.until) : undefined,
      clusterIps: saved.clusterIps,
      vips: saved.vips,
      nodePorts: saved.nodePorts,
      deleted: saved.deleted,
      deletedWallNs: saved.deleted ? wallNs : undefined,
      confirmed: false,
    });
  }

  // ---- EndpointSlices ----

  upsertSlice(slice: V1EndpointSlice): void {
    const metadata = slice.metadata;
    const serviceName = metadata?.labels?.['kubernetes.io/service-name'];
    if (!metadata?.name) return;
    const sliceKey = `${metadata.namespace ?? 'default'}/${metadata.name}`;
    const previous = this.slices.get(sliceKey);
    this.removeSliceByKey(sliceKey);
    if (!serviceName) {
      if (previous) this.changes += 1;
      return;
    }
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
    // Most slice updates (conditions other than ready, hints) leave the ready backends alone.
    if (!previous || !sameBackends(previous, entry)) this.changes += 1;
    this.slices.set(sliceKey, entry);
    for (const { ip, port } of backends) {
      let byPort = this.backends.get(ip);
      if (!byPort) this.backends.set(ip, (byPort = new Map()));
      let services = byPort.get(port);
      if (!services) byPort.set(port, (services = { counts: new Map(), sorted: [] }));
      services.counts.set(entry.serviceKey, (services.counts.get(entry.serviceKey) ?? 0) + 1);
      services.sorted = [...services.counts.keys()].sort();
    }
  }

  removeSlice(slice: V1EndpointSlice): void {
    if (this.removeSliceByKey(`${slice.metadata?.namespace ?? 'default'}/${slice.metadata?.name ?? ''}`)) this.changes += 1;
  }

  /** Takes a slice's backends out; false when there was no such slice. */
  private removeSliceByKey(sliceKey: string): boolean {
    const entry = this.slices.get(sliceKey);
    if (!entry) return false;
    this.slices.delete(sliceKey);
    for (const { ip, port } of entry.backends) {
      const byPort = this.backends.get(ip);
      const services = byPort?.get(port);
      if (!byPort || !services) continue;
      const count = (services.counts.get(entry.serviceKey) ?? 0) - 1;
      if (count > 0) services.counts.set(entry.serviceKey, count);
      else services.counts.delete(entry.serviceKey);
      services.sorted = [...services.counts.keys()].sort();
      if (services.counts.size === 0) byPort.delete(port);
      if (byPort.size === 0) this.backends.delete(ip);
    }
    return true;
  }

  // ---- ServiceGetter ----

  serviceAt(ip: string, port: number, protocol: number, atNs: bigint, window?: TimeWindow): ServiceEntry | undefined {
    const byClusterIp = holderAt(this.clusterIps.get(ip), atNs, this.skewNs, window);
    if (byClusterIp) return byClusterIp;
    if (port === 0) return undefined;
    const key = portKey(port, protocol);
    const byVip = holderAt(this.vips.get(ip)?.get(key), atNs, this.skewNs, window);
    if (byVip) return byVip;
    if (this.nodePorts.has(key) && this.isNodeIp(ip)) return holderAt(this.nodePorts.get(key), atNs, this.skewNs, window);
    return undefined;
  }

  hasVips(ip: string): boolean {
    return this.vips.has(ip);
  }

  backendPortsOf(ip: string): number[] {
    const byPort = this.backends.get(ip);
    return byPort ? [...byPort.keys()] : [];
  }

  serviceForBackend(ip: string, port: number): ServiceEntry | undefined {
    // Per record end: no allocation (the keys are kept sorted as the slices change).
    const byPort = this.backends.get(ip);
    const keys = byPort === undefined ? undefined : byPort.get(port)?.sorted;
    if (keys === undefined || keys.length === 0) return undefined;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const service = this.byKey.get(key);
      if (service) return service;
    }
    // Slices of a Service the index has not seen (yet): name it anyway.
    const [namespace = '', name = ''] = (keys[0] ?? '/').split('/');
    return { key: keys[0] ?? '', uid: '', name, namespace, labels: {}, fromNs: 0n, untilNs: undefined, clusterIps: [], vips: [], nodePorts: [], deleted: false, deletedWallNs: undefined, confirmed: true };
  }

  backendsOf(serviceIp: string): string[] {
    const service = holderAt(this.clusterIps.get(serviceIp), nowNs(), this.skewNs);
    if (!service) return [];
    const result = new Set<string>();
    for (const slice of this.slices.values()) {
      if (slice.serviceKey !== service.key) continue;
      for (const { ip, port } of slice.backends) result.add(ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
    }
    return [...result].sort();
  }
}
