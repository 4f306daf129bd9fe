// The flow store's columns: the flow time, where the record's bytes are, and one column per
// field of @kappa/filter's field table. A record becomes one CSV line (the hot segment's
// format, which DuckDB reads natively), written straight from the record's bytes: strings are
// copied from the record, numbers written as digits, nothing is decoded into objects.
// A new field in the filter table needs its reader of the bytes here (one line in `readers`);
// the module refuses to load without it.
import { BytesMap, DnsSchema, DropsSchema, FlowFields, MessageCursor as Cursor, fieldNumbers } from '@kappa/contracts';
import type { Dns, Drops, FlowBatchView, MessageCursor } from '@kappa/contracts';
import { fields, ipHex } from '@kappa/filter';
import type { ColumnType } from '@kappa/filter';
import { ExportRecord, readUint64, stringEnd, stringStart, u64 } from '../record/export-record.js';
import type { EndCursors } from '../record/export-record.js';
import { labelsText } from '../record/labels.js';
import { utf8SequenceLength } from '../record/utf8.js';
import type { TextRange } from '../record/labels.js';

export interface StoreColumn {
  name: string;
  type: ColumnType;
}

/** Columns before the field columns. */
export const fixedColumns: readonly StoreColumn[] = [
  { name: 'time_ns', type: 'UBIGINT' },
  { name: 'start_ns', type: 'UBIGINT' },
  { name: 'received_ns', type: 'UBIGINT' },
  // The segment, byte offset and length of the encoded record in that segment's .rec file.
  { name: 'seg', type: 'UINTEGER' },
  { name: 'off', type: 'UBIGINT' },
  { name: 'len', type: 'UINTEGER' },
];

const ipHexColumns: readonly StoreColumn[] = [
  { name: 'src_ip_hex', type: 'VARCHAR' },
  { name: 'dst_ip_hex', type: 'VARCHAR' },
];

export const storeColumns: readonly StoreColumn[] = [...fixedColumns, ...fields.map((f) => ({ name: f.column, type: f.columnType })), ...ipHexColumns];

/** DuckDB's `columns={...}` argument of read_csv for the hot segment's files. */
export const csvColumnsSql = `{${storeColumns.map((c) => `'${c.name}': '${c.type}'`).join(', ')}}`;

const F = FlowFields.FlowRecord;
const E = FlowFields.Endpoint;
const P = FlowFields.Process;
const K = FlowFields.Kube;
const T = FlowFields.TcpStats;

const COMMA = 0x2c;
const QUOTE = 0x22;
const NEWLINE = 0x0a;
const BACKSLASH = 0x5c;
const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');

/** Writes one column's value (without the separator) for the record `r` points at. */
type ColumnWriter = (r: ExportRecord, out: CsvIndexWriter) => void;

const text =
  (cursor: (r: ExportRecord) => MessageCursor, field: number): ColumnWriter =>
  (r, out) => {
    const c = cursor(r);
    out.csvText(c.bytes, stringStart(c, field), stringEnd(c, field));
  };
const uint =
  (cursor: (r: ExportRecord) => MessageCursor, field: number): ColumnWriter =>
  (r, out) =>
    out.number(cursor(r).uint32(field));
const int =
  (cursor: (r: ExportRecord) => MessageCursor, field: number): ColumnWriter =>
  (r, out) =>
    out.number(cursor(r).int32(field));
const uint64 =
  (cursor: (r: ExportRecord) => MessageCursor, field: number): ColumnWriter =>
  (r, out) => {
    readUint64(cursor(r), field);
    out.uint64();
  };
const record = (r: ExportRecord) => r.record;
// The record's dns and drops messages (empty cursors when absent), read once per record.
const D = fieldNumbers<Dns>(DnsSchema);
const DR = fieldNumbers<Drops>(DropsSchema);
const dnsCursor = new Cursor(DnsSchema);
const dropsCursor = new Cursor(DropsSchema);
const dns = (r: ExportRecord) => (r.record.message(F.dns, dnsCursor), dnsCursor);
const drops = (r: ExportRecord) => (r.record.message(F.drops, dropsCursor), dropsCursor);
const tcp = (r: ExportRecord) => r.tcp;

/** The readers of one end's columns (`src_<name>` / `dst_<name>`). */
function endReaders(side: 'src' | 'dst'): Record<string, ColumnWriter> {
  const endpoint = (r: ExportRecord) => r.end(side).endpoint;
  const process = (r: ExportRecord) => r.end(side).process;
  const kube = (r: ExportRecord) => r.end(side).kube;
  const labels = labelsText(side);
  const scratch: TextRange = { bytes: new Uint8Array(0), start: 0, end: 0 };
  const readers: Record<string, ColumnWriter> = {
    ip: text(endpoint, E.ip),
    port: uint(endpoint, E.port),
    netns: uint(endpoint, E.netns),
    peer_dns_name: text(endpoint, E.peerDnsName),
    namespace: text(kube, K.objectNamespace),
    workload: text(kube, K.workloadName),
    workload_kind: text(kube, K.workloadKind),
    pod: (r, out) => {
      const k = r.end(side).kube;
      if (k.equalsAscii(K.objectType, 'pod')) out.csvText(k.bytes, stringStart(k, K.objectName), stringEnd(k, K.objectName));
    },
    object: text(kube, K.objectName),
    type: text(kube, K.objectType),
    service: text(kube, K.serviceName),
    node: text(kube, K.node),
    process: text(process, P.name),
    pid: uint(process, P.pid),
    // The process's container, else the pod spec's.
    container: (r, out) => {
      const end: EndCursors = r.end(side);
      const c = end.process.byteLength(P.containerName) > 0 ? end.process : end.kube;
      const field = c === end.process ? P.containerName : K.containerName;
      out.csvText(c.bytes, stringStart(c, field), stringEnd(c, field));
    },
    // `,k=v,k=v,` sorted by key (so `,k=v,` is a substring test), '' without labels.
    label: (r, out) => {
      labels(r, scratch);
      if (scratch.end === scratch.start) return;
      out.csvText(scratch.bytes, scratch.start, scratch.end, true);
    },
  };
  return Object.fromEntries(Object.entries(readers).map(([name, read]) => [`${side}_${name}`, read]));
}

/** Every field column's reader of the record bytes, by column name. */
const readers: Record<string, ColumnWriter> = {
  node: text(record, F.node),
  vantage: int(record, F.vantage),
  protocol: int(record, F.protocol),
  bytes: uint64(record, F.bytes),
  packets: uint64(record, F.packets),
  reverse_bytes: uint64(record, F.reverseBytes),
  reverse_packets: uint64(record, F.reversePackets),
  retransmits: uint(tcp, T.retransmits),
  srtt_us: uint(tcp, T.srttUs),
  joined: (r, out) => out.raw(r.record.bool(F.joined) ? TRUE : FALSE),
  join_status: text(record, F.joinStatus),
  cluster_id: uint(record, F.clusterId),
  observation: text(record, F.observation),
  dropped_packets: uint64(drops, DR.packets),
  dropped_bytes: uint64(drops, DR.bytes),
  drop_reason: text(drops, DR.reason),
  dns_query: text(dns, D.queryName),
  dns_qtype: uint(dns, D.queryType),
  dns_rcode: uint(dns, D.rcode),
  dns_latency_max_us: uint64(dns, D.latencyMaxUs),
  ...endReaders('src'),
  ...endReaders('dst'),
};

const columnWriters: readonly ColumnWriter[] = fields.map((f) => {
  const read = readers[f.column];
  if (!read) throw new Error(`flow store column ${f.column} (filter field ${f.name}) has no reader of the record bytes: add it to apps/exporter/src/store/columns.ts`);
  return read;
});

/**
 * Writes the hot segment's index lines of a batch into one reused buffer: one line per record,
 * read in place. Allocates nothing per record (an address's hex text is cached by its bytes).
 */
export class CsvIndexWriter {
  buffer = Buffer.allocUnsafe(256 * 1024);
  length = 0;
  private readonly r = new ExportRecord();
  private readonly hex = new BytesMap<Buffer>();
  private received = Buffer.alloc(0);
  /** Flow-time range of the lines written since reset(), as [hi, lo] halves; min > max when none. */
  minHi = 0xffffffff;
  minLo = 0xffffffff;
  maxHi = 0;
  maxLo = 0;
  lines = 0;
  /** Bytes of the longest line written since reset(), its newline included. */
  longestLine = 0;

  /** Starts a batch's lines: receivedNs is the same for all of them. */
  reset(receivedNs: bigint): void {
    this.length = 0;
    this.lines = 0;
    this.longestLine = 0;
    this.minHi = this.minLo = 0xffffffff;
    this.maxHi = this.maxLo = 0;
    this.received = Buffer.from(String(receivedNs));
  }

  /** Writes the line of record i of the view, whose bytes are at seg/off/len. */
  line(view: FlowBatchView, i: number, seg: number, off: number, len: number): void {
    const r = this.r.load(view, i);
    const lineStart = this.length;
    this.reserve(64);
    readUint64(r.record, F.endNs);
    const hi = u64.hi;
    const lo = u64.lo;
    if (hi < this.minHi || (hi === this.minHi && lo < this.minLo)) {
      this.minHi = hi;
      this.minLo = lo;
    }
    if (hi > this.maxHi || (hi === this.maxHi && lo > this.maxLo)) {
      this.maxHi = hi;
      this.maxLo = lo;
    }
    this.uint64();
    this.buffer[this.length++] = COMMA;
    readUint64(r.record, F.startNs);
    this.uint64();
    this.buffer[this.length++] = COMMA;
    this.raw(this.received);
    this.buffer[this.length++] = COMMA;
    this.number(seg);
    this.buffer[this.length++] = COMMA;
    this.number(off);
    this.buffer[this.length++] = COMMA;
    this.number(len);
    for (let c = 0; c < columnWriters.length; c++) {
      this.reserve(1);
      this.buffer[this.length++] = COMMA;
      columnWriters[c]!(r, this);
    }
    this.ipHex(r.end('src').endpoint);
    this.ipHex(r.end('dst').endpoint);
    this.reserve(1);
    this.buffer[this.length++] = NEWLINE;
    this.lines++;
    if (this.length - lineStart > this.longestLine) this.longestLine = this.length - lineStart;
  }

  /** The lowest / highest flow time written since reset() (call only when lines > 0). */
  get minNs(): bigint {
    return (BigInt(this.minHi) << 32n) | BigInt(this.minLo);
  }

  get maxNs(): bigint {
    return (BigInt(this.maxHi) << 32n) | BigInt(this.maxLo);
  }

  private ipHex(endpoint: MessageCursor): void {
    this.reserve(34);
    this.buffer[this.length++] = COMMA;
    const start = stringStart(endpoint, E.ip);
    const end = stringEnd(endpoint, E.ip);
    if (start === end) return;
    let hex = this.hex.get(endpoint.bytes, start, end);
    if (hex === undefined) {
      hex = Buffer.from(ipHex(Buffer.from(endpoint.bytes.buffer, endpoint.bytes.byteOffset, endpoint.bytes.byteLength).toString('utf8', start, end)));
      if (this.hex.size >= 100_000) this.hex.clear();
      this.hex.set(endpoint.bytes, start, end, hex);
    }
    this.raw(hex);
  }

  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + bytes));
    this.buffer.copy(grown, 0, 0, this.length);
    this.buffer = grown;
  }

  raw(bytes: Uint8Array): void {
    this.reserve(bytes.length);
    this.buffer.set(bytes, this.length);
    this.length += bytes.length;
  }

  /** A whole number below 2^53 in decimal. */
  number(value: number): void {
    this.reserve(17);
    if (value < 0) {
      this.buffer[this.length++] = 0x2d; // -
      value = -value;
    }
    let digits = 1;
    for (let v = value; v >= 10; v = Math.floor(v / 10)) digits++;
    let at = this.length + digits;
    this.length = at;
    do {
      const q = Math.floor(value / 10);
      this.buffer[--at] = 0x30 + (value - q * 10);
      value = q;
    } while (value > 0);
  }

  /** The uint64 in u64.hi / u64.lo, exactly, in decimal. */
  uint64(): void {
    const hi = u64.hi;
    const lo = u64.lo;
    if (hi < 0x200000) {
      this.number(hi * 4294967296 + lo);
      return;
    }
    // Split at 10^9 by long division in 16-bit limbs (every step stays below 2^53).
    const d = 1_000_000_000;
    let rem = hi >>> 16;
    const q3 = Math.floor(rem / d);
    rem = (rem - q3 * d) * 65536 + (hi & 0xffff);
    const q2 = Math.floor(rem / d);
    rem = (rem - q2 * d) * 65536 + (lo >>> 16);
    const q1 = Math.floor(rem / d);
    rem = (rem - q1 * d) * 65536 + (lo & 0xffff);
    const q0 = Math.floor(rem / d);
    rem -= q0 * d;
    this.number(((q3 * 65536 + q2) * 65536 + q1) * 65536 + q0);
    this.reserve(9);
    let at = this.length + 9;
    this.length = at;
    for (let k = 0; k < 9; k++) {
      const q = Math.floor(rem / 10);
      this.buffer[--at] = 0x30 + (rem - q * 10);
      rem = q;
    }
  }

  /**
   * A string from bytes[start, end) as DuckDB's read_csv (csvSource) reads it back to the same
   * text: as is, or in double quotes (quotes doubled) when it holds a comma, a quote or a line
   * break, or is exactly `\N` (the null string, which a quoted value is not: allow_quoted_nulls
   * is off). Bytes that are not UTF-8, which DuckDB would refuse the whole line for, become
   * U+FFFD as TextDecoder decodes them (one per maximal invalid subpart). `commas` wraps it in
   * commas inside the field (labels).
   */
  csvText(bytes: Uint8Array, start: number, end: number, commas = false): void {
    let plain = !commas && !isNullString(bytes, start, end);
    for (let i = start; i < end && plain; i++) {
      const b = bytes[i]!;
      if (b === COMMA || b === NEWLINE || b === 0x0d || b === QUOTE || b >= 0x80) plain = false;
    }
    if (!plain) {
      this.escapedText(bytes, start, end, commas);
      return;
    }
    this.reserve(end - start);
    const buffer = this.buffer;
    let o = this.length;
    for (let i = start; i < end; i++) buffer[o++] = bytes[i]!;
    this.length = o;
  }

  /** csvText of a value that needs quotes or holds bytes above ASCII (kept apart: the common case stays small). */
  private escapedText(bytes: Uint8Array, start: number, end: number, commas: boolean): void {
    let quote = commas || isNullString(bytes, start, end);
    let quotes = 0;
    let ascii = true;
    for (let i = start; i < end; i++) {
      const b = bytes[i]!;
      if (b === COMMA || b === NEWLINE || b === 0x0d) quote = true;
      else if (b === QUOTE) {
        quote = true;
        quotes++;
      } else if (b >= 0x80) ascii = false;
    }
    // An invalid byte becomes three (U+FFFD).
    this.reserve((ascii ? end - start : 3 * (end - start)) + quotes + 4);
    const buffer = this.buffer;
    let o = this.length;
    if (quote) buffer[o++] = QUOTE;
    if (commas) buffer[o++] = COMMA;
    for (let i = start; i < end; ) {
      const b = bytes[i]!;
      if (b < 0x80) {
        if (b === QUOTE) buffer[o++] = QUOTE;
        buffer[o++] = b;
        i++;
        continue;
      }
      const n = utf8SequenceLength(bytes, i, end);
      if (n < 0) {
        buffer[o++] = 0xef;
        buffer[o++] = 0xbf;
        buffer[o++] = 0xbd;
        i -= n;
        continue;
      }
      for (const stop = i + n; i < stop; i++) buffer[o++] = bytes[i]!;
    }
    if (commas) buffer[o++] = COMMA;
    if (quote) buffer[o++] = QUOTE;
    this.length = o;
  }
}

/** The value is `\N`, DuckDB's null string in csvSource. */
function isNullString(bytes: Uint8Array, start: number, end: number): boolean {
  return end - start === 2 && bytes[start] === BACKSLASH && bytes[start + 1] === 0x4e;
}
