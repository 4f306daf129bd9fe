// The IPFIX Information Elements kappa exports: IANA elements for the flow, RFC 5103 reverse
// elements, and kappa's enterprise-specific elements for process and Kubernetes fields.
import type { Endpoint, FlowRecord } from '@kappa/contracts';

/** RFC 5103: reverse elements are the forward element ids under this private enterprise number. */
export const REVERSE_PEN = 29305;
/** IANA's documentation PEN (RFC 5612); operators should configure their own. */
export const DEFAULT_KAPPA_PEN = 32473;
/** RFC 7011 §7: a variable-length field. */
export const VARIABLE_LENGTH = 0xffff;

export type ElementKind = 'u8' | 'u16' | 'u32' | 'u64' | 'ipv4' | 'ipv6' | 'string';

/** Where an element's enterprise number comes from: IANA (none), RFC 5103 or kappa's PEN. */
export type ElementOwner = 'iana' | 'reverse' | 'kappa';

export interface ElementSpec {
  /** The element's name (IANA name, or kappa's name for enterprise elements), for docs and tests. */
  name: string;
  id: number;
  owner: ElementOwner;
  kind: ElementKind;
}

export function fixedLength(kind: ElementKind): number {
  switch (kind) {
    case 'u8':
      return 1;
    case 'u16':
      return 2;
    case 'u32':
    case 'ipv4':
      return 4;
    case 'u64':
      return 8;
    case 'ipv6':
      return 16;
    case 'string':
      return VARIABLE_LENGTH;
  }
}

/** A field of a template: the element and how to read its value from a record. */
export interface FieldSpec extends ElementSpec {
  number?: (r: FlowRecord) => number;
  bigint?: (r: FlowRecord) => bigint;
  text?: (r: FlowRecord) => string;
  /** ipv4 / ipv6: which end's address. */
  end?: 'src' | 'dst';
}

const iana = (name: string, id: number, kind: ElementKind): ElementSpec => ({ name, id, owner: 'iana', kind });
const kappa = (name: string, id: number, kind: ElementKind): ElementSpec => ({ name, id, owner: 'kappa', kind });

const msFromNs = (ns: bigint): bigint => ns / 1_000_000n;

/** flowDirection (IANA 61): 0 ingress, 1 egress, seen from the observing node for src → dst. */
function flowDirection(r: FlowRecord): number {
  return r.vantage === 1 ? 1 : 0;
}

function icmpTypeCode(r: FlowRecord): number {
  return ((r.icmpType & 0xff) << 8) | (r.icmpCode & 0xff);
}

function labelsText(e: Endpoint | undefined): string {
  const labels = e?.kube?.labels;
  if (!labels) return '';
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k] ?? ''}`)
    .join(',');
}

/**
 * Enterprise element ids under kappa's PEN. Record-wide elements are 1..99; an end's elements are
 * 100 + n for the source and 200 + n for the destination, with the same n on both sides.
 */
export const kappaRecordElements = {
  node: 1,
  vantage: 2,
  joined: 3,
  clusterId: 4,
  srttMicroseconds: 5,
  minRttMicroseconds: 6,
  retransmits: 7,
  handshakeMicroseconds: 8,
  appLatencyCount: 9,
  appLatencySumMicroseconds: 10,
  appLatencyMaxMicroseconds: 11,
  observation: 12,
  joinStatus: 13,
  recordId: 14,
} as const;

export const kappaEndElements = {
  pid: 1,
  processName: 2,
  cmdline: 3,
  exe: 4,
  containerId: 5,
  containerName: 6,
  kubeNode: 7,
  objectName: 8,
  objectNamespace: 9,
  objectType: 10,
  workloadName: 11,
  workloadNamespace: 12,
  workloadKind: 13,
  serviceName: 14,
  serviceNamespace: 15,
  kubeContainerName: 16,
  labels: 17,
  backendAddress: 18,
  backendPort: 19,
  uid: 20,
  /** The end's network namespace inode (Endpoint.netns). */
  netns: 21,
} as const;

function endFields(side: 'src' | 'dst'): FieldSpec[] {
  const base = side === 'src' ? 100 : 200;
  const end = (r: FlowRecord) => r[side];
  const n = (name: keyof typeof kappaEndElements, kind: ElementKind, read: (e: Endpoint | undefined) => number): FieldSpec => ({
    ...kappa(`${side}${name[0]?.toUpperCase()}${name.slice(1)}`, base + kappaEndElements[name], kind),
    number: (r) => read(end(r)),
  });
  const s = (name: keyof typeof kappaEndElements, read: (e: Endpoint | undefined) => string): FieldSpec => ({
    ...kappa(`${side}${name[0]?.toUpperCase()}${name.slice(1)}`, base + kappaEndElements[name], 'string'),
    text: (r) => read(end(r)),
  });
  return [
    n('pid', 'u32', (e) => e?.process?.pid ?? 0),
    n('backendPort', 'u16', (e) => e?.backendPort ?? 0),
    s('processName', (e) => e?.process?.name ?? ''),
    s('cmdline', (e) => e?.process?.cmdline ?? ''),
    s('exe', (e) => e?.process?.exe ?? ''),
    s('containerId', (e) => e?.process?.containerId ?? ''),
    s('containerName', (e) => e?.process?.containerName ?? ''),
    s('kubeNode', (e) => e?.kube?.node ?? ''),
    s('objectName', (e) => e?.kube?.objectName ?? ''),
    s('objectNamespace', (e) => e?.kube?.objectNamespace ?? ''),
    s('objectType', (e) => e?.kube?.objectType ?? ''),
    s('workloadName', (e) => e?.kube?.workloadName ?? ''),
    s('workloadNamespace', (e) => e?.kube?.workloadNamespace ?? ''),
    s('workloadKind', (e) => e?.kube?.workloadKind ?? ''),
    s('serviceName', (e) => e?.kube?.serviceName ?? ''),
    s('labels', labelsText),
    s('backendAddress', (e) => e?.backendIp ?? ''),
  ];
}

/**
 * The fields of the data template for one IP version, in record order: fixed-length fields first,
 * then the variable-length strings. At most 60 fields: Wireshark ignores templates with more
 * (its cflow.max_template_fields default), so ids kept in kappaRecordElements / kappaEndElements
 * but not listed here (min RTT, handshake, uid, service namespace, kube container, netns) stay
 * reserved.
 */
export function templateFields(ipVersion: 4 | 6): FieldSpec[] {
  const addr: ElementKind = ipVersion === 4 ? 'ipv4' : 'ipv6';
  const k = kappaRecordElements;
  return [
    { ...iana(ipVersion === 4 ? 'sourceIPv4Address' : 'sourceIPv6Address', ipVersion === 4 ? 8 : 27, addr), end: 'src' },
    { ...iana(ipVersion === 4 ? 'destinationIPv4Address' : 'destinationIPv6Address', ipVersion === 4 ? 12 : 28, addr), end: 'dst' },
    { ...iana('sourceTransportPort', 7, 'u16'), number: (r) => r.src?.port ?? 0 },
    { ...iana('destinationTransportPort', 11, 'u16'), number: (r) => r.dst?.port ?? 0 },
    { ...iana('protocolIdentifier', 4, 'u8'), number: (r) => r.protocol },
    { ...iana(ipVersion === 4 ? 'icmpTypeCodeIPv4' : 'icmpTypeCodeIPv6', ipVersion === 4 ? 32 : 139, 'u16'), number: icmpTypeCode },
    { ...iana('tcpControlBits', 6, 'u16'), number: (r) => r.tcp?.flags ?? 0 },
    { ...iana('flowDirection', 61, 'u8'), number: flowDirection },
    { ...iana('octetDeltaCount', 1, 'u64'), bigint: (r) => r.bytes },
    { ...iana('packetDeltaCount', 2, 'u64'), bigint: (r) => r.packets },
    { name: 'reverseOctetDeltaCount', id: 1, owner: 'reverse', kind: 'u64', bigint: (r) => r.reverseBytes },
    { name: 'reversePacketDeltaCount', id: 2, owner: 'reverse', kind: 'u64', bigint: (r) => r.reversePackets },
    { ...iana('flowStartMilliseconds', 152, 'u64'), bigint: (r) => msFromNs(r.startNs) },
    { ...iana('flowEndMilliseconds', 153, 'u64'), bigint: (r) => msFromNs(r.endNs) },
    { ...kappa('kappaVantage', k.vantage, 'u8'), number: (r) => r.vantage },
    { ...kappa('kappaJoined', k.joined, 'u8'), number: (r) => (r.joined ? 1 : 0) },
    { ...kappa('kappaClusterId', k.clusterId, 'u32'), number: (r) => r.clusterId },
    { ...kappa('kappaSrttMicroseconds', k.srttMicroseconds, 'u32'), number: (r) => r.tcp?.srttUs ?? 0 },
    { ...kappa('kappaRetransmits', k.retransmits, 'u32'), number: (r) => r.tcp?.retransmits ?? 0 },
    { ...kappa('kappaAppLatencyCount', k.appLatencyCount, 'u64'), bigint: (r) => r.appLatency?.count ?? 0n },
    { ...kappa('kappaAppLatencySumMicroseconds', k.appLatencySumMicroseconds, 'u64'), bigint: (r) => r.appLatency?.sumUs ?? 0n },
    { ...kappa('kappaAppLatencyMaxMicroseconds', k.appLatencyMaxMicroseconds, 'u64'), bigint: (r) => r.appLatency?.maxUs ?? 0n },
    ...endFields('src').filter((f) => f.kind !== 'string'),
    ...endFields('dst').filter((f) => f.kind !== 'string'),
    { ...kappa('kappaNode', k.node, 'string'), text: (r) => r.node },
    { ...kappa('kappaObservation', k.observation, 'string'), text: (r) => r.observation },
    { ...kappa('kappaJoinStatus', k.joinStatus, 'string'), text: (r) => r.joinStatus },
    { ...kappa('kappaRecordId', k.recordId, 'string'), text: (r) => r.id },
    ...endFields('src').filter((f) => f.kind === 'string'),
    ...endFields('dst').filter((f) => f.kind === 'string'),
  ];
}
