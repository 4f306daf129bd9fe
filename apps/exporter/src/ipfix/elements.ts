// The IPFIX Information Elements kappa exports: IANA elements for the flow, RFC 5103 reverse
// elements, and kappa's enterprise-specific elements for process and Kubernetes fields. Each
// field says how to read its value from a record in place (ExportRecord): numbers, 64-bit
// counters as two halves, strings as byte ranges of the record.
import { FlowFields } from '@kappa/contracts';
import type { MessageCursor } from '@kappa/contracts';
import { divideUint64, readUint64, stringEnd, stringStart } from '../record/export-record.js';
import type { ExportRecord } from '../record/export-record.js';
import { labelsText } from '../record/labels.js';
import type { TextRange } from '../record/labels.js';

export type { TextRange };

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
  number?: (r: ExportRecord) => number;
  /** u64 fields: leaves the value in u64.lo / u64.hi. */
  uint64?: (r: ExportRecord) => void;
  /** string fields: points `out` at the value's UTF-8 bytes. */
  text?: (r: ExportRecord, out: TextRange) => void;
  /** ipv4 / ipv6: which end's address. */
  end?: 'src' | 'dst';
}

const F = FlowFields.FlowRecord;
const E = FlowFields.Endpoint;
const P = FlowFields.Process;
const K = FlowFields.Kube;
const T = FlowFields.TcpStats;
const A = FlowFields.AppLatency;
const D = FlowFields.Dns;
const DR = FlowFields.Drops;

/** A string field of a cursor, as a range of the record's bytes. */
function range(cursor: MessageCursor, field: number, out: TextRange): void {
  out.bytes = cursor.bytes;
  out.start = stringStart(cursor, field);
  out.end = stringEnd(cursor, field);
}

const iana = (name: string, id: number, kind: ElementKind): ElementSpec => ({ name, id, owner: 'iana', kind });
const kappa = (name: string, id: number, kind: ElementKind): ElementSpec => ({ name, id, owner: 'kappa', kind });

/** A uint64 field of the record, or of one of its nested messages. */
const u64Of = (read: (r: ExportRecord) => MessageCursor, field: number) => (r: ExportRecord) => readUint64(read(r), field);

/** flowStart/EndMilliseconds from the record's nanoseconds. */
const msOf = (field: number) => (r: ExportRecord) => {
  readUint64(r.record, field);
  divideUint64(1_000_000);
};

/** flowDirection (IANA 61): 0 ingress, 1 egress, seen from the observing node for src → dst. */
function flowDirection(r: ExportRecord): number {
  return r.record.int32(F.vantage) === 1 ? 1 : 0;
}

function icmpTypeCode(r: ExportRecord): number {
  return ((r.record.uint32(F.icmpType) & 0xff) << 8) | (r.record.uint32(F.icmpCode) & 0xff);
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
  // The DNS / drops template (kappaDnsDropsFields): FlowRecord.drops and FlowRecord.dns.
  dropReason: 15,
  dropReasonPackets: 16,
  dnsQueryName: 17,
  dnsQueryType: 18,
  dnsResponseCode: 19,
  dnsQueries: 20,
  dnsResponses: 21,
  dnsLatencyCount: 22,
  dnsLatencySumMicroseconds: 23,
  dnsLatencyMaxMicroseconds: 24,
  dnsNxdomain: 25,
  dnsFailed: 26,
  dnsUnparsable: 27,
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
  /** The name this end resolved the other end's address from (Endpoint.peer_dns_name). */
  peerDnsName: 22,
} as const;

function endFields(side: 'src' | 'dst'): FieldSpec[] {
  const base = side === 'src' ? 100 : 200;
  const name = (n: keyof typeof kappaEndElements) => `${side}${n[0]?.toUpperCase()}${n.slice(1)}`;
  const n = (element: keyof typeof kappaEndElements, kind: ElementKind, read: (r: ExportRecord) => number): FieldSpec => ({
    ...kappa(name(element), base + kappaEndElements[element], kind),
    number: read,
  });
  const s = (element: keyof typeof kappaEndElements, text: (r: ExportRecord, out: TextRange) => void): FieldSpec => ({
    ...kappa(name(element), base + kappaEndElements[element], 'string'),
    text,
  });
  const process = (field: number) => (r: ExportRecord, out: TextRange) => range(r.end(side).process, field, out);
  const kube = (field: number) => (r: ExportRecord, out: TextRange) => range(r.end(side).kube, field, out);
  return [
    n('pid', 'u32', (r) => r.end(side).process.uint32(P.pid)),
    n('backendPort', 'u16', (r) => r.end(side).endpoint.uint32(E.backendPort)),
    s('processName', process(P.name)),
    s('cmdline', process(P.cmdline)),
    s('exe', process(P.exe)),
    s('containerId', process(P.containerId)),
    s('containerName', process(P.containerName)),
    s('kubeNode', kube(K.node)),
    s('objectName', kube(K.objectName)),
    s('objectNamespace', kube(K.objectNamespace)),
    s('objectType', kube(K.objectType)),
    s('workloadName', kube(K.workloadName)),
    s('workloadNamespace', kube(K.workloadNamespace)),
    s('workloadKind', kube(K.workloadKind)),
    s('serviceName', kube(K.serviceName)),
    s('labels', labelsText(side)),
    s('backendAddress', (r, out) => range(r.end(side).endpoint, E.backendIp, out)),
  ];
}

/** The flow key of a record: addresses, ports, protocol, as the first fields of both templates. */
function keyFields(ipVersion: 4 | 6): FieldSpec[] {
  const addr: ElementKind = ipVersion === 4 ? 'ipv4' : 'ipv6';
  return [
    { ...iana(ipVersion === 4 ? 'sourceIPv4Address' : 'sourceIPv6Address', ipVersion === 4 ? 8 : 27, addr), end: 'src' },
    { ...iana(ipVersion === 4 ? 'destinationIPv4Address' : 'destinationIPv6Address', ipVersion === 4 ? 12 : 28, addr), end: 'dst' },
    { ...iana('sourceTransportPort', 7, 'u16'), number: (r) => r.end('src').endpoint.uint32(E.port) },
    { ...iana('destinationTransportPort', 11, 'u16'), number: (r) => r.end('dst').endpoint.uint32(E.port) },
    { ...iana('protocolIdentifier', 4, 'u8'), number: (r) => r.record.uint32(F.protocol) },
  ];
}

/** True when a record has something for the DNS / drops template. */
export function hasDnsOrDrops(r: ExportRecord): boolean {
  const record = r.record;
  return record.has(F.dns) || record.has(F.drops) || r.end('src').endpoint.byteLength(E.peerDnsName) > 0 || r.end('dst').endpoint.byteLength(E.peerDnsName) > 0;
}

/**
 * The DNS / drops options template, for one IP version (RFC 7011 §3.4.2.2). A record that has DNS
 * exchanges, drops or a peer DNS name goes out in it too, after its flow record. Its scope is that
 * flow record: the flow key, the flow's times, its vantage and its record id (kappaRecordId, also
 * in the flow record), so a collector can put the two together. Then IANA's
 * droppedOctet/PacketDeltaCount (RFC 5102) and kappa's elements for the drop reason, the DNS
 * exchanges and each end's peer name. An options template, not a second data template: nfcapd
 * (and collectors like it) would count each data record as one more flow, with zero bytes. A
 * second template at all: the flow template is at Wireshark's 60-field limit.
 */
/** Returns the fields and how many of the first are the scope. */
export function dnsDropsFields(ipVersion: 4 | 6): [fields: FieldSpec[], scopeFields: number] {
  const k = kappaRecordElements;
  const record = (r: ExportRecord) => r.record;
  const dns = (r: ExportRecord) => r.dns;
  const drops = (r: ExportRecord) => r.drops;
  const peer = (side: 'src' | 'dst'): FieldSpec => ({
    ...kappa(`${side}PeerDnsName`, (side === 'src' ? 100 : 200) + kappaEndElements.peerDnsName, 'string'),
    text: (r, out) => range(r.end(side).endpoint, E.peerDnsName, out),
  });
  const scope: FieldSpec[] = [
    ...keyFields(ipVersion),
    { ...iana('flowStartMilliseconds', 152, 'u64'), uint64: msOf(F.startNs) },
    { ...iana('flowEndMilliseconds', 153, 'u64'), uint64: msOf(F.endNs) },
    { ...kappa('kappaVantage', k.vantage, 'u8'), number: (r) => r.record.int32(F.vantage) },
    { ...kappa('kappaRecordId', k.recordId, 'string'), text: (r, out) => range(record(r), F.id, out) },
  ];
  const options: FieldSpec[] = [
    { ...iana('droppedOctetDeltaCount', 132, 'u64'), uint64: u64Of(drops, DR.bytes) },
    { ...iana('droppedPacketDeltaCount', 133, 'u64'), uint64: u64Of(drops, DR.packets) },
    { ...kappa('kappaDropReasonPackets', k.dropReasonPackets, 'u64'), uint64: u64Of(drops, DR.reasonPackets) },
    { ...kappa('kappaDnsQueryType', k.dnsQueryType, 'u16'), number: (r) => r.dns.uint32(D.queryType) },
    { ...kappa('kappaDnsResponseCode', k.dnsResponseCode, 'u16'), number: (r) => r.dns.uint32(D.rcode) },
    { ...kappa('kappaDnsQueries', k.dnsQueries, 'u64'), uint64: u64Of(dns, D.queries) },
    { ...kappa('kappaDnsResponses', k.dnsResponses, 'u64'), uint64: u64Of(dns, D.responses) },
    { ...kappa('kappaDnsLatencyCount', k.dnsLatencyCount, 'u64'), uint64: u64Of(dns, D.latencyCount) },
    { ...kappa('kappaDnsLatencySumMicroseconds', k.dnsLatencySumMicroseconds, 'u64'), uint64: u64Of(dns, D.latencySumUs) },
    { ...kappa('kappaDnsLatencyMaxMicroseconds', k.dnsLatencyMaxMicroseconds, 'u64'), uint64: u64Of(dns, D.latencyMaxUs) },
    { ...kappa('kappaDnsNxdomain', k.dnsNxdomain, 'u64'), uint64: u64Of(dns, D.nxdomain) },
    { ...kappa('kappaDnsFailed', k.dnsFailed, 'u64'), uint64: u64Of(dns, D.failed) },
    { ...kappa('kappaDnsUnparsable', k.dnsUnparsable, 'u64'), uint64: u64Of(dns, D.unparsable) },
    { ...kappa('kappaDropReason', k.dropReason, 'string'), text: (r, out) => range(r.drops, DR.reason, out) },
    { ...kappa('kappaDnsQueryName', k.dnsQueryName, 'string'), text: (r, out) => range(r.dns, D.queryName, out) },
    peer('src'),
    peer('dst'),
  ];
  return [[...scope, ...options], scope.length];
}

/**
 * The fields of the data template for one IP version, in record order: fixed-length fields first,
 * then the variable-length strings. At most 60 fields: Wireshark ignores templates with more
 * (its cflow.max_template_fields default), so ids kept in kappaRecordElements / kappaEndElements
 * but not listed here (min RTT, handshake, uid, service namespace, kube container, netns) stay
 * reserved.
 */
export function templateFields(ipVersion: 4 | 6): FieldSpec[] {
  const k = kappaRecordElements;
  const record = (r: ExportRecord) => r.record;
  const latency = (r: ExportRecord) => r.appLatency;
  const text = (field: number) => (r: ExportRecord, out: TextRange) => range(r.record, field, out);
  return [
    ...keyFields(ipVersion),
    { ...iana(ipVersion === 4 ? 'icmpTypeCodeIPv4' : 'icmpTypeCodeIPv6', ipVersion === 4 ? 32 : 139, 'u16'), number: icmpTypeCode },
    { ...iana('tcpControlBits', 6, 'u16'), number: (r) => r.tcp.uint32(T.flags) },
    { ...iana('flowDirection', 61, 'u8'), number: flowDirection },
    { ...iana('octetDeltaCount', 1, 'u64'), uint64: u64Of(record, F.bytes) },
    { ...iana('packetDeltaCount', 2, 'u64'), uint64: u64Of(record, F.packets) },
    { name: 'reverseOctetDeltaCount', id: 1, owner: 'reverse', kind: 'u64', uint64: u64Of(record, F.reverseBytes) },
    { name: 'reversePacketDeltaCount', id: 2, owner: 'reverse', kind: 'u64', uint64: u64Of(record, F.reversePackets) },
    { ...iana('flowStartMilliseconds', 152, 'u64'), uint64: msOf(F.startNs) },
    { ...iana('flowEndMilliseconds', 153, 'u64'), uint64: msOf(F.endNs) },
    { ...kappa('kappaVantage', k.vantage, 'u8'), number: (r) => r.record.int32(F.vantage) },
    { ...kappa('kappaJoined', k.joined, 'u8'), number: (r) => (r.record.bool(F.joined) ? 1 : 0) },
    { ...kappa('kappaClusterId', k.clusterId, 'u32'), number: (r) => r.record.uint32(F.clusterId) },
    { ...kappa('kappaSrttMicroseconds', k.srttMicroseconds, 'u32'), number: (r) => r.tcp.uint32(T.srttUs) },
    { ...kappa('kappaRetransmits', k.retransmits, 'u32'), number: (r) => r.tcp.uint32(T.retransmits) },
    { ...kappa('kappaAppLatencyCount', k.appLatencyCount, 'u64'), uint64: u64Of(latency, A.count) },
    { ...kappa('kappaAppLatencySumMicroseconds', k.appLatencySumMicroseconds, 'u64'), uint64: u64Of(latency, A.sumUs) },
    { ...kappa('kappaAppLatencyMaxMicroseconds', k.appLatencyMaxMicroseconds, 'u64'), uint64: u64Of(latency, A.maxUs) },
    ...endFields('src').filter((f) => f.kind !== 'string'),
    ...endFields('dst').filter((f) => f.kind !== 'string'),
    { ...kappa('kappaNode', k.node, 'string'), text: text(F.node) },
    { ...kappa('kappaObservation', k.observation, 'string'), text: text(F.observation) },
    { ...kappa('kappaJoinStatus', k.joinStatus, 'string'), text: text(F.joinStatus) },
    { ...kappa('kappaRecordId', k.recordId, 'string'), text: text(F.id) },
    ...endFields('src').filter((f) => f.kind === 'string'),
    ...endFields('dst').filter((f) => f.kind === 'string'),
  ];
}
