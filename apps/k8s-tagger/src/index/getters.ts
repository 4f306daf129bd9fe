// The narrow lookups the tagger's resolver needs, one interface per kind of object (as Cilium's
// hubble parser getters): each store answers its own, and nothing needs the whole index.
// Every time is unix ns in event time: the time a flow happened, not when it is tagged.

/** A pod as the index holds it: what tags need, and when it held its IPs. */
export interface PodRef {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly nodeName: string;
  readonly hostNetwork: boolean;
  readonly labels: Readonly<Record<string, string>>;
  readonly owner: { kind: string; name: string } | undefined;
  readonly templateHash: string | undefined;
  /** From when its IPs were its own: start time, else creation time. */
  readonly fromNs: bigint;
  /** Until when: its containers' end (terminal phase) or its deletion; undefined while it runs. */
  readonly untilNs: bigint | undefined;
}

export interface ServiceRef {
  readonly key: string;
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly fromNs: bigint;
  readonly untilNs: bigint | undefined;
}

export interface NodeRef {
  readonly name: string;
  readonly uid: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ips: readonly string[];
}

/**
 * The span of event time [fromNs, untilNs) around a flow's time over which the time-dependent
 * lookups made so far give the same answers (each narrows it by the times at which its answer
 * changes), so that an answer can be reused for other flows of that span.
 */
export interface TimeWindow {
  fromNs: bigint;
  untilNs: bigint;
}

const ALL_TIME_FROM = -(1n << 64n);
const ALL_TIME_UNTIL = 1n << 64n;

/** Widens a window to all time (before the first lookup). */
export function allTime(window: TimeWindow): void {
  window.fromNs = ALL_TIME_FROM;
  window.untilNs = ALL_TIME_UNTIL;
}

/** Narrows `window` around `atNs` by a time from which an answer may differ (`changeNs`). */
export function narrowAt(window: TimeWindow, changeNs: bigint, atNs: bigint): void {
  if (changeNs <= atNs) {
    if (changeNs > window.fromNs) window.fromNs = changeNs;
  } else if (changeNs < window.untilNs) window.untilNs = changeNs;
}

export interface PodGetter {
  /** Bumped on every change that may change an answer (answers kept elsewhere are checked against it). */
  readonly version: number;
  /** The pod and container a container id belongs to (hostNetwork pods included). */
  podByContainer(containerId: string): { pod: PodRef; containerName: string } | undefined;
  /** The (non-hostNetwork) pod that held the IP at that time (`window` narrowed around it). */
  podAt(ip: string, atNs: bigint, window?: TimeWindow): PodRef | undefined;
  /** The hostNetwork or hostPort pod serving ip:port (ip one of its node's IPs) at that time. */
  podOnHostPort(ip: string, port: number, protocol: number, atNs: bigint, window?: TimeWindow): PodRef | undefined;
  /** Whether the IP is in a pod network: a node's podCIDRs, --pod-cidr, or (without either) a
   *  prefix that holds known pods. An unknown IP there is a pod the tagger has not seen yet. */
  inPodNetwork(ip: string): boolean;
}

export interface ServiceGetter {
  /** Bumped on every change that may change an answer (answers kept elsewhere are checked against it). */
  readonly version: number;
  /** The Service reached at ip:port: a ClusterIP (any port), a LoadBalancer ingress IP or an
   *  external IP (on a Service port), or a node IP on a NodePort. */
  serviceAt(ip: string, port: number, protocol: number, atNs: bigint, window?: TimeWindow): ServiceRef | undefined;
  /** The Service whose EndpointSlices list ip:port as a ready backend. */
  serviceForBackend(ip: string, port: number): ServiceRef | undefined;
  /** The ports at which EndpointSlices list the address as a ready backend. */
  backendPortsOf(ip: string): number[];
  /** Whether a LoadBalancer ingress or external IP of a Service is this address (its answers
   *  then depend on the port). */
  hasVips(ip: string): boolean;
  /** Ready backends ("ip:port") of the Service at this IP. */
  backendsOf(serviceIp: string): string[];
}

export interface NodeGetter {
  /** Bumped on every change that may change an answer (answers kept elsewhere are checked against it). */
  readonly version: number;
  nodeByIp(ip: string): NodeRef | undefined;
  nodeByName(name: string): NodeRef | undefined;
}

export interface WorkloadGetter {
  /** Pod → ReplicaSet → Deployment, Pod → Job → CronJob, StatefulSet, DaemonSet; else the pod. */
  workloadOf(pod: PodRef): { kind: string; name: string };
  /** Bumped on every owner change, so tags built from workloads can be rebuilt. */
  readonly version: number;
}

export function timeNs(value: Date | string | undefined | null): bigint | undefined {
  if (value === undefined || value === null) return undefined;
  const ms = value instanceof Date ? value.getTime() : Date.parse(value);
  return Number.isFinite(ms) ? BigInt(ms) * 1_000_000n : undefined;
}

export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

/** IANA protocol number of a Kubernetes port protocol. */
export function protocolNumber(protocol: string | undefined): number {
  return protocol === 'UDP' ? 17 : protocol === 'SCTP' ? 132 : 6;
}

/** One number per port and protocol, so lookups build no string keys. */
export function portKey(port: number, protocol: number): number {
  return port * 256 + protocol;
}
