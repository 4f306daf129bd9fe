// The one table of flow fields that the filter language, the flow store's columns and the
// hubble-style flags are all driven by. Adding a record field to filters and to the store is one
// row here (plus its hubble flag in flags.ts, if it has one).
import type { Endpoint, FlowRecord } from '@kappa/contracts';
import { ipToBytes } from '@kappa/contracts';

/**
 * How a field's values are written and compared:
 * - string: text, compared with ==, !=, in;
 * - uint: a whole number, compared with every operator (duration: in µs, 5ms is accepted);
 * - bool: true or false;
 * - enum: a name from the field's `names` (or its number);
 * - ip: an address, or a CIDR prefix with == / != / in (IPv4 and IPv6);
 * - labels: `key=value` (or `key`: the label is set), with == / != / in.
 */
export type FieldType = 'string' | 'uint' | 'duration' | 'bool' | 'enum' | 'ip' | 'labels';

/** The store's column type of a field. */
export type ColumnType = 'VARCHAR' | 'UBIGINT' | 'UINTEGER' | 'USMALLINT' | 'UTINYINT' | 'BOOLEAN';

export interface FieldDef {
  /** Name in the filter language: `node`, `src.namespace`, ... */
  readonly name: string;
  readonly type: FieldType;
  readonly description: string;
  /** Store column name (a valid SQL identifier). */
  readonly column: string;
  readonly columnType: ColumnType;
  /** Reads the value from a record (strings '' and numbers 0 when unset). */
  readonly read: (record: FlowRecord) => string | number | boolean;
  /** enum: name → number. */
  readonly names?: Readonly<Record<string, number>>;
}

/** A field that exists once per end: `src.<name>`, `dst.<name>`, and `<name>` for either end. */
interface EndFieldSpec {
  name: string;
  type: FieldType;
  description: string;
  columnType: ColumnType;
  read: (end: Endpoint | undefined) => string | number;
}

export const protocolNames: Readonly<Record<string, number>> = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58, sctp: 132 };
export const vantageNames: Readonly<Record<string, number>> = { unspecified: 0, src: 1, dst: 2 };

/** Labels as the store keeps them: `,k=v,k=v,` sorted, so `,k=v,` is a substring test. */
export function labelsText(labels: Readonly<Record<string, string>> | undefined): string {
  if (!labels) return '';
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  keys.sort();
  let text = ',';
  for (const key of keys) text += `${key}=${labels[key]},`;
  return text;
}

const endFields: EndFieldSpec[] = [
  { name: 'ip', type: 'ip', description: 'IP address (or CIDR prefix)', columnType: 'VARCHAR', read: (e) => e?.ip ?? '' },
  { name: 'port', type: 'uint', description: 'port', columnType: 'USMALLINT', read: (e) => e?.port ?? 0 },
  { name: 'namespace', type: 'string', description: 'Kubernetes namespace', columnType: 'VARCHAR', read: (e) => e?.kube?.objectNamespace ?? '' },
  { name: 'workload', type: 'string', description: 'owning workload (Deployment, StatefulSet, ...)', columnType: 'VARCHAR', read: (e) => e?.kube?.workloadName ?? '' },
  { name: 'workload_kind', type: 'string', description: 'kind of the owning workload', columnType: 'VARCHAR', read: (e) => e?.kube?.workloadKind ?? '' },
  {
    name: 'pod',
    type: 'string',
    description: 'pod name',
    columnType: 'VARCHAR',
    read: (e) => (e?.kube?.objectType === 'pod' ? e.kube.objectName : ''),
  },
  { name: 'object', type: 'string', description: 'Kubernetes object name (pod, service or node)', columnType: 'VARCHAR', read: (e) => e?.kube?.objectName ?? '' },
  { name: 'type', type: 'string', description: 'Kubernetes object type: pod, service, node or external', columnType: 'VARCHAR', read: (e) => e?.kube?.objectType ?? '' },
  { name: 'service', type: 'string', description: 'Kubernetes Service', columnType: 'VARCHAR', read: (e) => e?.kube?.serviceName ?? '' },
  { name: 'node', type: 'string', description: 'Kubernetes node the end runs on', columnType: 'VARCHAR', read: (e) => e?.kube?.node ?? '' },
  { name: 'process', type: 'string', description: 'process name (comm)', columnType: 'VARCHAR', read: (e) => e?.process?.name ?? '' },
  { name: 'pid', type: 'uint', description: 'process id', columnType: 'UINTEGER', read: (e) => e?.process?.pid ?? 0 },
  { name: 'netns', type: 'uint', description: 'network namespace inode of the socket (as /proc/<pid>/ns/net shows it)', columnType: 'UINTEGER', read: (e) => e?.netns ?? 0 },
  { name: 'container', type: 'string', description: 'container name', columnType: 'VARCHAR', read: (e) => e?.process?.containerName || e?.kube?.containerName || '' },
  { name: 'label', type: 'labels', description: 'pod label, key=value or key', columnType: 'VARCHAR', read: (e) => labelsText(e?.kube?.labels) },
  {
    name: 'peer_dns_name',
    type: 'string',
    description: 'DNS name this end resolved the other end\'s address from (the name it asked for)',
    columnType: 'VARCHAR',
    read: (e) => e?.peerDnsName ?? '',
  },
];

const recordFields: FieldDef[] = [
  { name: 'node', type: 'string', description: 'node that observed the flow', column: 'node', columnType: 'VARCHAR', read: (r) => r.node },
  { name: 'vantage', type: 'enum', names: vantageNames, description: 'src (observed at the initiator) or dst (at the responder)', column: 'vantage', columnType: 'UTINYINT', read: (r) => r.vantage },
  { name: 'protocol', type: 'enum', names: protocolNames, description: 'tcp, udp, icmp, icmpv6, sctp or a protocol number', column: 'protocol', columnType: 'UTINYINT', read: (r) => r.protocol },
  { name: 'bytes', type: 'uint', description: 'IP bytes src → dst', column: 'bytes', columnType: 'UBIGINT', read: (r) => Number(r.bytes) },
  { name: 'packets', type: 'uint', description: 'packets src → dst', column: 'packets', columnType: 'UBIGINT', read: (r) => Number(r.packets) },
  { name: 'reverse_bytes', type: 'uint', description: 'IP bytes dst → src', column: 'reverse_bytes', columnType: 'UBIGINT', read: (r) => Number(r.reverseBytes) },
  { name: 'reverse_packets', type: 'uint', description: 'packets dst → src', column: 'reverse_packets', columnType: 'UBIGINT', read: (r) => Number(r.reversePackets) },
  { name: 'retransmits', type: 'uint', description: 'TCP segments retransmitted', column: 'retransmits', columnType: 'UINTEGER', read: (r) => r.tcp?.retransmits ?? 0 },
  { name: 'rtt', type: 'duration', description: 'smoothed TCP round-trip time (µs; 5ms, 1s accepted)', column: 'srtt_us', columnType: 'UINTEGER', read: (r) => r.tcp?.srttUs ?? 0 },
  { name: 'joined', type: 'bool', description: 'both ends\' metadata joined', column: 'joined', columnType: 'BOOLEAN', read: (r) => r.joined },
  { name: 'join_status', type: 'string', description: 'why a record was released unjoined: no-peer, external', column: 'join_status', columnType: 'VARCHAR', read: (r) => r.joinStatus },
  { name: 'cluster', type: 'uint', description: 'cluster id', column: 'cluster_id', columnType: 'UINTEGER', read: (r) => r.clusterId },
  { name: 'observation', type: 'string', description: '"socket" or the capture interface', column: 'observation', columnType: 'VARCHAR', read: (r) => r.observation },
  { name: 'dropped_packets', type: 'uint', description: 'packets of the flow the kernel dropped', column: 'dropped_packets', columnType: 'UBIGINT', read: (r) => Number(r.drops?.packets ?? 0n) },
  { name: 'dropped_bytes', type: 'uint', description: 'IP bytes of the flow the kernel dropped', column: 'dropped_bytes', columnType: 'UBIGINT', read: (r) => Number(r.drops?.bytes ?? 0n) },
  { name: 'drop_reason', type: 'string', description: 'the kernel\'s reason for most drops: NETFILTER_DROP, NO_SOCKET, ...', column: 'drop_reason', columnType: 'VARCHAR', read: (r) => r.drops?.reason ?? '' },
  { name: 'dns_query', type: 'string', description: 'question of the flow\'s DNS exchanges', column: 'dns_query', columnType: 'VARCHAR', read: (r) => r.dns?.queryName ?? '' },
  { name: 'dns_qtype', type: 'uint', description: 'its query type: 1 A, 28 AAAA, 5 CNAME, ...', column: 'dns_qtype', columnType: 'USMALLINT', read: (r) => r.dns?.queryType ?? 0 },
  { name: 'dns_rcode', type: 'uint', description: 'first DNS response code other than NOERROR: 3 NXDOMAIN, 2 SERVFAIL, ...', column: 'dns_rcode', columnType: 'UTINYINT', read: (r) => r.dns?.rcode ?? 0 },
  { name: 'dns_latency', type: 'duration', description: 'largest DNS query→response latency (µs; 5ms, 1s accepted)', column: 'dns_latency_max_us', columnType: 'UBIGINT', read: (r) => Number(r.dns?.latencyMaxUs ?? 0n) },
];

function endField(side: 'src' | 'dst', spec: EndFieldSpec): FieldDef {
  return {
    name: `${side}.${spec.name}`,
    type: spec.type,
    description: `${side === 'src' ? 'initiator' : 'responder'} ${spec.description}`,
    column: `${side}_${spec.name}`,
    columnType: spec.columnType,
    read: side === 'src' ? (r) => spec.read(r.src) : (r) => spec.read(r.dst),
  };
}

/** Every field with a column, in column order. */
export const fields: readonly FieldDef[] = [
  ...recordFields,
  ...endFields.map((spec) => endField('src', spec)),
  ...endFields.map((spec) => endField('dst', spec)),
];

export const fieldsByName: ReadonlyMap<string, FieldDef> = new Map(fields.map((f) => [f.name, f]));

/** Names usable without src./dst.: they match when either end matches. */
export const eitherEndFields: ReadonlySet<string> = new Set(endFields.map((f) => f.name).filter((n) => !recordFields.some((r) => r.name === n)));

/**
 * Extra store columns that are not filter fields: the flow's time (end of its interval, unix
 * ns) and each end's address as 32 hex digits (IPv4 as IPv4-mapped IPv6), which turns a CIDR
 * test into a string range test.
 */
export const ipHexCache = new Map<string, string>();
export function ipHex(ip: string): string {
  if (ip === '') return '';
  let hex = ipHexCache.get(ip);
  if (hex !== undefined) return hex;
  try {
    const bytes = ipToBytes(ip);
    const full = bytes.length === 4 ? Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...bytes]) : bytes;
    hex = Buffer.from(full).toString('hex');
  } catch {
    hex = '';
  }
  if (ipHexCache.size > 100_000) ipHexCache.clear();
  ipHexCache.set(ip, hex);
  return hex;
}
