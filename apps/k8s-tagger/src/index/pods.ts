// Pods by IP (with the time each held it), by container id, and by host port (hostNetwork and
// hostPort pods). A pod's IPs are its own from its start until its containers end or it is
// deleted, in event time; deleted pods stay until the index's event-time grace has passed.
import { canonicalIp } from '@kappa/contracts';
import type { V1ObjectMeta, V1OwnerReference, V1Pod } from '@kubernetes/client-node';
import type { PodNetworks } from './cidr.js';
import type { PodGetter, PodRef, TimeWindow } from './getters.js';
import { narrowAt, nowNs, portKey, protocolNumber, timeNs } from './getters.js';

export interface PodEntry extends PodRef {
  uid: string;
  name: string;
  namespace: string;
  nodeName: string;
  hostNetwork: boolean;
  labels: Record<string, string>;
  owner: { kind: string; name: string } | undefined;
  templateHash: string | undefined;
  fromNs: bigint;
  untilNs: bigint | undefined;
  ips: string[];
  /** containerId → container name (current and previous instances). */
  containers: Map<string, string>;
  /** [ip, portKey] a hostNetwork or hostPort pod serves on. */
  hostPorts: [string, number][];
  /** The object is gone from the API (deleted, or missing from a relist). */
  deleted: boolean;
  /** Wall clock of the deletion, for the retention bound. */
  deletedWallNs: bigint | undefined;
  /** Seen in a list or watch of this run (false: restored from saved state only). */
  confirmed: boolean;
  /** Tags built once per container name ('' for none), valid while the owners are unchanged. */
  kubeCache: { ownersVersion: number; byContainer: Map<string, unknown> } | undefined;
}

/** What is saved of a pod so that a restarted tagger still knows it. */
export interface PodSnapshot {
  uid: string;
  name: string;
  namespace: string;
  node: string;
  hostNetwork: boolean;
  labels: Record<string, string>;
  owner?: { kind: string; name: string };
  templateHash?: string;
  from: string;
  until?: string;
  deleted: boolean;
  ips: string[];
  containers: [string, string][];
  hostPorts: [string, number][];
}

export function normalizeIp(ip: string | undefined | null): string | undefined {
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

export function controllerOf(metadata: V1ObjectMeta | undefined): V1OwnerReference | undefined {
  const owners = metadata?.ownerReferences ?? [];
  return owners.find((owner) => owner.controller) ?? owners[0];
}

/** When a pod that reached a terminal phase let go of its IPs: its last container's end. */
function terminalEnd(pod: V1Pod, observedNs: bigint): bigint | undefined {
  const phase = pod.status?.phase;
  if (phase !== 'Succeeded' && phase !== 'Failed') return undefined;
  let latest: bigint | undefined;
  for (const status of pod.status?.containerStatuses ?? []) {
    const finished = timeNs(status.state?.terminated?.finishedAt as Date | string | undefined);
    if (finished !== undefined && (latest === undefined || finished > latest)) latest = finished;
  }
  return latest ?? observedNs;
}

function byFrom(a: PodEntry, b: PodEntry): number {
  return a.fromNs < b.fromNs ? -1 : a.fromNs > b.fromNs ? 1 : 0;
}

/** A flow this much before its address's first known holder started still belongs to it (node
 *  and API server clocks differ; start times have one-second resolution). */
const EARLY_NS = 30_000_000_000n;

/** The holder at a time among holders sorted by fromNs; skew tolerates clock differences.
 *  `window` is narrowed to the times at which the answer may change. */
function holderAt(held: readonly PodEntry[] | undefined, atNs: bigint, skewNs: bigint, window: TimeWindow | undefined): PodEntry | undefined {
  if (!held || held.length === 0) return undefined;
  const earlyNs = skewNs > EARLY_NS ? skewNs : EARLY_NS;
  if (window) {
    narrowAt(window, held[0]!.fromNs - earlyNs, atNs);
    for (const pod of held) {
      narrowAt(window, pod.fromNs, atNs);
      if (pod.untilNs !== undefined) narrowAt(window, pod.untilNs + skewNs + 1n, atNs);
    }
  }
  let chosen: PodEntry | undefined;
  for (const pod of held) if (pod.fromNs <= atNs) chosen = pod;
  if (!chosen) {
    const first = held[0]!;
    return first.fromNs - earlyNs <= atNs ? first : undefined;
  }
  // The latest holder had let the address go by then: nobody held it (a new holder the index
  // has not seen yet, or a flow to a gone pod).
  if (chosen.untilNs !== undefined && atNs > chosen.untilNs + skewNs) return undefined;
  return chosen;
}

export interface PodStoreEvents {
  /** A pod was added or changed what it is known by (IPs, containers, host ports, end). */
  changed(pod: PodEntry, previous: PodEntry | undefined): void;
  /** A pod's object is gone (its entry stays for the grace period). */
  deleted(pod: PodEntry): void;
  /** A pod was forgotten (grace and retention passed). */
  forgotten(pod: PodEntry): void;
}

export class PodStore implements PodGetter {
  private readonly pods = new Map<string, PodEntry>();
  /** "namespace/name" → uid of the current pod of that name. */
  private readonly byName = new Map<string, string>();
  /** ip → pods that held it, by fromNs. */
  private readonly byIp = new Map<string, PodEntry[]>();
  private readonly containers = new Map<string, { pod: PodEntry; containerName: string }>();
  /** ip → portKey → pods serving there, by fromNs. */
  private readonly hostPorts = new Map<string, Map<number, PodEntry[]>>();
  private changes = 0;

  constructor(
    private readonly networks: PodNetworks,
    private readonly skewNs: bigint,
    private readonly events: PodStoreEvents,
  ) {}

  get size(): number {
    return this.pods.size;
  }

  get version(): number {
    return this.changes;
  }

  get ipCount(): number {
    return this.byIp.size;
  }

  get containerCount(): number {
    return this.containers.size;
  }

  upsert(pod: V1Pod, observedNs: bigint = nowNs()): void {
    const metadata = pod.metadata;
    if (!metadata?.uid || !metadata.name) return;
    const namespace = metadata.namespace ?? 'default';
    const nameKey = `${namespace}/${metadata.name}`;
    // A pod recreated under the same name (a StatefulSet's, or one missed in a watch gap) is a
    // new pod: the old one ends now.
    const sameName = this.byName.get(nameKey);
    if (sameName !== undefined && sameName !== metadata.uid) {
      const old = this.pods.get(sameName);
      if (old && !old.deleted) this.markDeleted(old, old.untilNs ?? observedNs, observedNs);
    }
    this.byName.set(nameKey, metadata.uid);
    const previous = this.pods.get(metadata.uid);
    const hostNetwork = pod.spec?.hostNetwork === true;
    const ips = new Set<string>();
    for (const entry of pod.status?.podIPs ?? []) {
      const ip = normalizeIp(entry.ip);
      if (ip) ips.add(ip);
    }
    const first = normalizeIp(pod.status?.podIP);
    if (first) ips.add(first);
    // Current containers and the instance before each one's last restart; older ids are dropped
    // so a crash-looping pod does not grow the index.
    const containers = new Map<string, string>();
    for (const status of [...(pod.status?.containerStatuses ?? []), ...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.ephemeralContainerStatuses ?? [])]) {
      if (status.containerID) containers.set(bareContainerId(status.containerID), status.name);
      const previousId = status.lastState?.terminated?.containerID;
      if (previousId) containers.set(bareContainerId(previousId), status.name);
    }
    const hostPorts: [string, number][] = [];
    const hostIp = normalizeIp(pod.status?.hostIP);
    for (const container of pod.spec?.containers ?? []) {
      for (const port of container.ports ?? []) {
        const key = (p: number) => portKey(p, protocolNumber(port.protocol));
        if (hostNetwork) for (const ip of ips) hostPorts.push([ip, key(port.hostPort ?? port.containerPort)]);
        else if (port.hostPort && hostIp) hostPorts.push([normalizeIp(port.hostIP) ?? hostIp, key(port.hostPort)]);
      }
    }
    const owner = controllerOf(metadata);
    const entry: PodEntry = {
      uid: metadata.uid,
      name: metadata.name,
      namespace,
      nodeName: pod.spec?.nodeName ?? '',
      hostNetwork,
      labels: metadata.labels ?? {},
      owner: owner ? { kind: owner.kind, name: owner.name } : undefined,
      templateHash: metadata.labels?.['pod-template-hash'],
      fromNs: previous?.confirmed ? previous.fromNs : (timeNs(pod.status?.startTime as Date | string | undefined) ?? timeNs(metadata.creationTimestamp as Date | string | undefined) ?? observedNs),
      untilNs: previous?.untilNs ?? terminalEnd(pod, observedNs),
      ips: hostNetwork ? [] : [...ips],
      containers,
      hostPorts,
      deleted: false,
      deletedWallNs: undefined,
      confirmed: true,
      kubeCache: undefined,
    };
    this.place(entry, previous);
    // Status updates that change nothing a lookup answers (most of them) keep answers valid.
    if (!previous || previous.deleted || !sameShape(previous, entry) || previous.fromNs !== entry.fromNs || previous.hostNetwork !== entry.hostNetwork || !sameHostPorts(previous, entry)) this.changes += 1;
    if (!previous || previous.deleted || !sameShape(previous, entry)) this.events.changed(entry, previous);
  }

  /** The pod's object is gone; `observedNs` is when the tagger learnt it. */
  remove(pod: V1Pod, observedNs: bigint = nowNs()): void {
    const uid = pod.metadata?.uid;
    const entry = uid ? this.pods.get(uid) : undefined;
    if (!entry || entry.deleted) return;
    // A deleted pod's IPs end with its containers; a deletionTimestamp is when the kubelet must
    // have killed them, so the end is no later than that, nor than now.
    let until = entry.untilNs ?? terminalEnd({ ...pod, status: { ...pod.status, phase: 'Failed' } }, observedNs);
    const deadline = timeNs(pod.metadata?.deletionTimestamp as Date | string | undefined);
    if (until === undefined || (deadline !== undefined && deadline < until)) until = deadline ?? observedNs;
    if (until > observedNs) until = observedNs;
    this.markDeleted(entry, until, observedNs);
  }

  /** Ends a pod missing from a relist (or from the API after a restart) at `observedNs`. */
  removeByUid(uid: string, observedNs: bigint = nowNs()): void {
    const entry = this.pods.get(uid);
    if (entry && !entry.deleted) this.markDeleted(entry, entry.untilNs ?? observedNs, observedNs);
  }

  private markDeleted(entry: PodEntry, untilNs: bigint, observedNs: bigint): void {
    entry.untilNs = untilNs;
    entry.deleted = true;
    entry.deletedWallNs = observedNs;
    this.changes += 1;
    if (this.byName.get(`${entry.namespace}/${entry.name}`) === entry.uid) this.byName.delete(`${entry.namespace}/${entry.name}`);
    this.events.deleted(entry);
  }

  /** Puts an entry in every map, replacing `previous` (same uid). */
  private place(entry: PodEntry, previous: PodEntry | undefined): void {
    this.pods.set(entry.uid, entry);
    if (previous) {
      for (const ip of previous.ips) if (!entry.ips.includes(ip)) this.unbindIp(ip, previous);
      for (const [ip, key] of previous.hostPorts) this.unbindHostPort(ip, key, previous);
      for (const id of previous.containers.keys()) {
        if (!entry.containers.has(id) && this.containers.get(id)?.pod === previous) this.containers.delete(id);
      }
    }
    for (const ip of entry.ips) {
      const held = this.byIp.get(ip) ?? [];
      const at = held.findIndex((p) => p.uid === entry.uid);
      if (at >= 0) held[at] = entry;
      else {
        held.push(entry);
        held.sort(byFrom);
        this.networks.podIpAdded(ip);
      }
      this.byIp.set(ip, held);
    }
    for (const [ip, key] of entry.hostPorts) {
      let ports = this.hostPorts.get(ip);
      if (!ports) this.hostPorts.set(ip, (ports = new Map()));
      const held = ports.get(key) ?? [];
      held.push(entry);
      held.sort(byFrom);
      ports.set(key, held);
    }
    for (const [id, containerName] of entry.containers) this.containers.set(id, { pod: entry, containerName });
  }

  private unbindIp(ip: string, pod: PodEntry): void {
    const held = this.byIp.get(ip);
    if (!held) return;
    const remaining = held.filter((p) => p.uid !== pod.uid);
    if (remaining.length === held.length) return;
    this.networks.podIpRemoved(ip);
    if (remaining.length > 0) this.byIp.set(ip, remaining);
    else this.byIp.delete(ip);
  }

  private unbindHostPort(ip: string, key: number, pod: PodEntry): void {
    const ports = this.hostPorts.get(ip);
    const held = ports?.get(key);
    if (!ports || !held) return;
    const remaining = held.filter((p) => p.uid !== pod.uid);
    if (remaining.length > 0) ports.set(key, remaining);
    else ports.delete(key);
    if (ports.size === 0) this.hostPorts.delete(ip);
  }

  /**
   * Forgets deleted pods whose end is more than graceNs behind the event-time watermark (the
   * flows being tagged are past them), or more than retentionNs behind the wall clock.
   */
  prune(watermarkNs: bigint, graceNs: bigint, wallNs: bigint, retentionNs: bigint): number {
    let forgotten = 0;
    for (const entry of this.pods.values()) {
      if (!entry.deleted) continue;
      const until = entry.untilNs ?? entry.deletedWallNs ?? wallNs;
      if (watermarkNs - until <= graceNs && wallNs - (entry.deletedWallNs ?? until) <= retentionNs) continue;
      this.forget(entry);
      forgotten += 1;
    }
    return forgotten;
  }

  private forget(entry: PodEntry): void {
    this.changes += 1;
    this.pods.delete(entry.uid);
    for (const ip of entry.ips) this.unbindIp(ip, entry);
    for (const [ip, key] of entry.hostPorts) this.unbindHostPort(ip, key, entry);
    for (const id of entry.containers.keys()) {
      if (this.containers.get(id)?.pod === entry) this.containers.delete(id);
    }
    this.events.forgotten(entry);
  }

  /** Pods restored from saved state that no list or watch of this run confirmed. */
  unconfirmed(): PodEntry[] {
    return [...this.pods.values()].filter((p) => !p.confirmed && !p.deleted);
  }

  live(): IterableIterator<PodEntry> {
    return this.pods.values();
  }

  snapshot(entry: PodEntry): PodSnapshot {
    return {
      uid: entry.uid,
      name: entry.name,
      namespace: entry.namespace,
      node: entry.nodeName,
      hostNetwork: entry.hostNetwork,
      labels: entry.labels,
      ...(entry.owner ? { owner: entry.owner } : {}),
      ...(entry.templateHash !== undefined ? { templateHash: entry.templateHash } : {}),
      from: String(entry.fromNs),
      ...(entry.untilNs !== undefined ? { until: String(entry.untilNs) } : {}),
      deleted: entry.deleted,
      ips: entry.ips,
      containers: [...entry.containers],
      hostPorts: entry.hostPorts,
    };
  }

  /** Takes back a pod saved by an earlier run (unless this run already knows it). */
  restore(saved: PodSnapshot, wallNs: bigint = nowNs()): void {
    if (this.pods.has(saved.uid)) return;
    const entry: PodEntry = {
      uid: saved.uid,
      name: saved.name,
      namespace: saved.namespace,
      nodeName: saved.node,
      hostNetwork: saved.hostNetwork,
      labels: saved.labels,
      owner: saved.owner,
      templateHash: saved.templateHash,
      fromNs: BigInt(saved.from),
      untilNs: saved.until !== undefined ? BigInt(saved.until) : undefined,
      ips: saved.ips,
      containers: new Map(saved.containers),
      hostPorts: saved.hostPorts,
      deleted: saved.deleted,
      deletedWallNs: saved.deleted ? wallNs : undefined,
      confirmed: false,
      kubeCache: undefined,
    };
    this.place(entry, undefined);
    this.changes += 1;
    if (!saved.deleted) this.byName.set(`${entry.namespace}/${entry.name}`, entry.uid);
  }

  // ---- PodGetter ----

  podByContainer(containerId: string): { pod: PodEntry; containerName: string } | undefined {
    return this.containers.get(bareContainerId(containerId));
  }

  podAt(ip: string, atNs: bigint, window?: TimeWindow): PodEntry | undefined {
    return holderAt(this.byIp.get(ip), atNs, this.skewNs, window);
  }

  podOnHostPort(ip: string, port: number, protocol: number, atNs: bigint, window?: TimeWindow): PodEntry | undefined {
    return holderAt(this.hostPorts.get(ip)?.get(portKey(port, protocol)), atNs, this.skewNs, window);
  }

  inPodNetwork(ip: string): boolean {
    return this.networks.contains(ip);
  }
}

/** Whether two states of a pod are known by the same things (so nothing needs saving again). */
function sameShape(a: PodEntry, b: PodEntry): boolean {
  if (a.untilNs !== b.untilNs || a.nodeName !== b.nodeName || a.ips.length !== b.ips.length || a.containers.size !== b.containers.size) return false;
  if (a.hostPorts.length !== b.hostPorts.length) return false;
  if (a.labels !== b.labels && JSON.stringify(a.labels) !== JSON.stringify(b.labels)) return false;
  for (let i = 0; i < a.ips.length; i++) if (a.ips[i] !== b.ips[i]) return false;
  for (const [id, name] of a.containers) if (b.containers.get(id) !== name) return false;
  return a.owner?.kind === b.owner?.kind && a.owner?.name === b.owner?.name;
}

function sameHostPorts(a: PodEntry, b: PodEntry): boolean {
  if (a.hostPorts.length !== b.hostPorts.length) return false;
  for (let i = 0; i < a.hostPorts.length; i++) if (a.hostPorts[i]![0] !== b.hostPorts[i]![0] || a.hostPorts[i]![1] !== b.hostPorts[i]![1]) return false;
  return true;
}
