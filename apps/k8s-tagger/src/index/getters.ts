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

export interface PodGetter {
  /** The pod and container a container id belongs to (hostNetwork pods included). */
  podByContainer(containerId: string): { pod: PodRef; containerName: string } | undefined;
  /** The (non-hostNetwork) pod that held the IP at that time. */
  podAt(ip: string, atNs: bigint): PodRef | undefined;
  /** The hostNetwork or hostPort pod serving ip:port (ip one of its node's IPs) at that time. */
  podOnHostPort(ip: string, port: number, protocol: number, atNs: bigint): PodRef | undefined;
  /** Whether the IP is in a pod network: a node's podCIDRs, --pod-cidr, or (without either) a
   *  prefix that holds known pods. An unknown IP there is a pod the tagger has not seen yet. */
  inPodNetwork(ip: string): boolean;
}

export interface ServiceGetter {
  /** The Service reached at ip:port: a ClusterIP (any port), a LoadBalancer ingress IP or an
   *  external IP (on a Service port), or a node IP on a NodePort. */
  serviceAt(ip: string, port: number, protocol: number, atNs: bigint): ServiceRef | undefined;
  /** The Service whose EndpointSlices list ip:port as a ready backend. */
  serviceForBackend(ip: string, port: number): ServiceRef | undefined;
  /** Ready backends ("ip:port") of the Service at this IP. */
  backendsOf(serviceIp: string): string[];
}

export interface NodeGetter {
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
