// The flow store's columns: the flow time, where the record's bytes are, and one column per
// field of @kappa/filter's field table. A record becomes one CSV line (the hot segment's
// format, which DuckDB reads natively), written straight from the record's bytes: strings are
// copied from the record, numbers written as digits, nothing is decoded into objects.
// A new field in the filter table needs its reading of the bytes here (one line in `columns`);
// the module refuses to load without it.
import { BytesMap, DnsSchema, DropsSchema, FlowFields, fieldNumbers } from '@kappa/contracts';
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

/**
 * Free bytes every reserve() leaves beyond what it was asked for: enough for all of one line's
 * writes of bounded size, at most 32 bytes a column (a separator and a uint64's 20 digits, or
 * an address's 32 hex digits, or the received time).
 */
const LINE_SLACK = 32 * storeColumns.length + 64;

/** DuckDB's `columns={...}` argument of read_csv for the hot segment's files. */
export const csvColumnsSql = `{${storeColumns.map((c) => `'${c.name}': '${c.type}'`).join(', ')}}`;

const F = FlowFields.FlowRecord;
const E = FlowFields.Endpoint;
const P = FlowFields.Process;
const K = FlowFields.Kube;
const T = FlowFields.TcpStats;
const D = fieldNumbers<Dns>(DnsSchema);
const DR = fieldNumbers<Drops>(DropsSchema);

const COMMA = 0x2c;
const QUOTE = 0x22;
const NEWLINE = 0x0a;
const BACKSLASH = 0x5c;
const TRUE = Buffer.from('true');
/** Bytes a CSV value cannot hold as is: separators, quotes, line breaks, and non-ASCII (checked as UTF-8). */
const NOT_PLAIN = new Uint8Array(256).map((_, b) => (b === COMMA || b === NEWLINE || b === 0x0d || b === QUOTE || b >= 0x80 ? 1 : 0));
/** "00" to "99", two bytes each. */
const DIGIT_PAIRS = Buffer.from(Array.from({ length: 100 }, (_, n) => String(n).padStart(2, '0')).join(''));

const FALSE = Buffer.from('false');
/** An IPv4 address's 16 bytes (IPv4-mapped) in hex, without its last 8 digits. */
const IPV4_HEX_PREFIX = Buffer.from('00000000000000000000ffff');
const HEX_DIGITS = Buffer.from('0123456789abcdef');

// The messages a line reads, each positioned once per record: a column names one by its slot.
const RECORD = 0;
const TCP = 1;
const DNS = 2;
const DROPS = 3;
const SRC = 4; // src endpoint, process, kube: SRC, SRC + 1, SRC + 2
const DST = 7;
const ENDPOINT = 0;
const PROCESS = 1;
const KUBE = 2;

// What a column writes of its message's field. One switch over these in line() rather than a
// closure per column: a call site that met 54 closures could not inline any of them.
const TEXT = 0;
const UINT32 = 1;
const INT32 = 2;
const UINT64 = 3;
const BOOL = 4;
/** The kube object's name when its type is `pod`, else ''. */
const POD = 5;
/** The process's container, else the pod spec's (slot: the end's first). */
const CONTAINER = 6;
/** `,k=v,k=v,` sorted by key (so `,k=v,` is a substring test), '' without labels (field: 0 src, 1 dst). */
const LABELS = 7;

/** A column: what it writes (kind), from which message (slot) and which field. */
type Column = readonly [kind: number, slot: number, field: number];

/** The columns of one end (`src_<name>` / `dst_<name>`). */
function endColumns(side: 'src' | 'dst'): Record<string, Column> {
  const end = side === 'src' ? SRC : DST;
  const columns: Record<string, Column> = {
    ip: [TEXT, end + ENDPOINT, E.ip],
    port: [UINT32, end + ENDPOINT, E.port],
    netns: [UINT32, end + ENDPOINT, E.netns],
    peer_dns_name: [TEXT, end + ENDPOINT, E.peerDnsName],
    namespace: [TEXT, end + KUBE, K.objectNamespace],
    workload: [TEXT, end + KUBE, K.workloadName],
    workload_kind: [TEXT, end + KUBE, K.workloadKind],
    pod: [POD, end + KUBE, K.objectName],
    object: [TEXT, end + KUBE, K.objectName],
    type: [TEXT, end + KUBE, K.objectType],
    service: [TEXT, end + KUBE, K.serviceName],
    node: [TEXT, end + KUBE, K.node],
    process: [TEXT, end + PROCESS, P.name],
    pid: [UINT32, end + PROCESS, P.pid],
    container: [CONTAINER, end, 0],
    label: [LABELS, end, side === 'src' ? 0 : 1],
  };
  return Object.fromEntries(Object.entries(columns).map(([name, column]) => [`${side}_${name}`, column]));
}

/** Every field column's reading of the record bytes, by column name. */
const columns: Record<string, Column> = {
  node: [TEXT, RECORD, F.node],
  vantage: [INT32, RECORD, F.vantage],
  protocol: [INT32, RECORD, F.protocol],
  bytes: [UINT64, RECORD, F.bytes],
  packets: [UINT64, RECORD, F.packets],
  reverse_bytes: [UINT64, RECORD, F.reverseBytes],
  reverse_packets: [UINT64, RECORD, F.reversePackets],
  retransmits: [UINT32, TCP, T.retransmits],
  srtt_us: [UINT32, TCP, T.srttUs],
  joined: [BOOL, RECORD, F.joined],
  join_status: [TEXT, RECORD, F.joinStatus],
  cluster_id: [UINT32, RECORD, F.clusterId],
  observation: [TEXT, RECORD, F.observation],
  dropped_packets: [UINT64, DROPS, DR.packets],
  dropped_bytes: [UINT64, DROPS, DR.bytes],
  drop_reason: [TEXT, DROPS, DR.reason],
  dns_query: [TEXT, DNS, D.queryName],
  dns_qtype: [UINT32, DNS, D.queryType],
  dns_rcode: [UINT32, DNS, D.rcode],
  dns_latency_max_us: [UINT64, DNS, D.latencyMaxUs],
  ...endColumns('src'),
  ...endColumns('dst'),
};

/** The field columns in order, as (kind, slot, field) triples. */
const program = Int32Array.from(
  fields.flatMap((f) => {
    const column = columns[f.column];
    if (!column) throw new Error(`flow store column ${f.column} (filter field ${f.name}) has no reader of the record bytes: add it to apps/exporter/src/store/columns.ts`);
    return column;
  }),
);

/**
 * Writes the hot segment's index lines of a batch into one reused buffer: one line per record,
 * read in place. Allocates nothing per record (an IPv6 address's hex text is cached by its bytes).
 */
export class CsvIndexWriter {
  buffer = Buffer.allocUnsafe(256 * 1024);
  length = 0;
  private readonly r = new ExportRecord();
  /** The messages of the record being written, by slot (the same cursors record after record). */
  private readonly cursors: readonly MessageCursor[];
  private readonly labels = [labelsText('src'), labelsText('dst')] as const;
  private readonly labelText: TextRange = { bytes: new Uint8Array(0), start: 0, end: 0 };
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

  constructor() {
    const r = this.r;
    const end = (e: EndCursors) => [e.endpoint, e.process, e.kube];
    this.cursors = [r.record, r.tcp, r.dns, r.drops, ...end(r.src), ...end(r.dst)];
  }

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
    // Every message a column reads, positioned once.
    r.end('src');
    r.end('dst');
    void r.tcp;
    void r.dns;
    void r.drops;
    const lineStart = this.length;
    this.reserve(0);
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
    const cursors = this.cursors;
    for (let c = 0; c < program.length; c += 3) {
      this.buffer[this.length++] = COMMA;
      const cursor = cursors[program[c + 1]!]!;
      const field = program[c + 2]!;
      switch (program[c]) {
        case TEXT:
          this.text(cursor, field);
          break;
        case UINT32:
          this.number(cursor.uint32(field));
          break;
        case INT32:
          this.number(cursor.int32(field));
          break;
        case UINT64:
          readUint64(cursor, field);
          this.uint64();
          break;
        case BOOL:
          this.raw(cursor.bool(field) ? TRUE : FALSE);
          break;
        case POD:
          if (cursor.equalsAscii(K.objectType, 'pod')) this.text(cursor, field);
          break;
        case CONTAINER: {
          const process = cursors[program[c + 1]! + PROCESS]!;
          if (process.byteLength(P.containerName) > 0) this.text(process, P.containerName);
          else this.text(cursors[program[c + 1]! + KUBE]!, K.containerName);
          break;
        }
        case LABELS: {
          const text = this.labelText;
          this.labels[field]!(r, text);
          if (text.end > text.start) this.csvText(text.bytes, text.start, text.end, true);
          break;
        }
      }
    }
    this.ipHex(r.src.endpoint);
    this.ipHex(r.dst.endpoint);
    this.buffer[this.length++] = NEWLINE;
    this.lines++;
    if (this.length - lineStart > this.longestLine) this.longestLine = this.length - lineStart;
  }

  /** A string field of the message as csvText writes it. */
  private text(cursor: MessageCursor, field: number): void {
    this.csvText(cursor.bytes, stringStart(cursor, field), stringEnd(cursor, field));
  }

  /** The lowest / highest flow time written since reset() (call only when lines > 0). */
  get minNs(): bigint {
    return (BigInt(this.minHi) << 32n) | BigInt(this.minLo);
  }

  get maxNs(): bigint {
    return (BigInt(this.maxHi) << 32n) | BigInt(this.maxLo);
  }

  private ipHex(endpoint: MessageCursor): void {
    this.buffer[this.length++] = COMMA;
    const start = stringStart(endpoint, E.ip);
    const end = stringEnd(endpoint, E.ip);
    if (start === end || this.ipv4Hex(endpoint.bytes, start, end)) return;
    let hex = this.hex.get(endpoint.bytes, start, end);
    if (hex === undefined) {
      hex = Buffer.from(ipHex(Buffer.from(endpoint.bytes.buffer, endpoint.bytes.byteOffset, endpoint.bytes.byteLength).toString('utf8', start, end)));
      if (this.hex.size >= 100_000) this.hex.clear();
      this.hex.set(endpoint.bytes, start, end, hex);
    }
    this.raw(hex);
  }

  /**
   * ipHex of a dotted quad as Node's isIPv4 accepts it (each part 0-255, no leading zero),
   * written from its bytes; false for any other text (left to ipHex), with nothing written.
   */
  private ipv4Hex(bytes: Uint8Array, start: number, end: number): boolean {
    if (end - start > 15) return false;
    const buffer = this.buffer;
    const at = this.length + IPV4_HEX_PREFIX.length;
    let o = at;
    let part = 0;
    let digits = 0;
    for (let i = start; i <= end; i++) {
      const b = i < end ? bytes[i]! : 0x2e;
      if (b === 0x2e) {
        if (digits === 0 || part > 255 || o === at + 8) return false;
        buffer[o++] = HEX_DIGITS[part >> 4]!;
        buffer[o++] = HEX_DIGITS[part & 15]!;
        part = 0;
        digits = 0;
      } else if (b >= 0x30 && b <= 0x39 && !(digits === 1 && part === 0)) {
        part = part * 10 + b - 0x30;
        digits++;
      } else return false;
    }
    if (o !== at + 8) return false;
    for (let k = 0; k < IPV4_HEX_PREFIX.length; k++) buffer[this.length + k] = IPV4_HEX_PREFIX[k]!;
    this.length = o;
    return true;
  }

  /**
   * Room for `bytes` more and LINE_SLACK beyond: a line's writes of bounded size (separators,
   * numbers, addresses' hex) reserve nothing; each line and each write of record text reserves.
   */
  private reserve(bytes: number): void {
    const needed = this.length + bytes + LINE_SLACK;
    if (needed <= this.buffer.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, needed));
    this.buffer.copy(grown, 0, 0, this.length);
    this.buffer = grown;
  }

  /** Bytes of bounded size (within LINE_SLACK): a timestamp's digits, `true`, an address's hex. */
  private raw(bytes: Uint8Array): void {
    const buffer = this.buffer;
    let o = this.length;
    for (let i = 0; i < bytes.length; i++) buffer[o++] = bytes[i]!;
    this.length = o;
  }

  /** A whole number below 2^53 in decimal (within LINE_SLACK). */
  private number(value: number): void {
    const buffer = this.buffer;
    if (value < 0) {
      buffer[this.length++] = 0x2d; // -
      value = -value;
    }
    let digits = 1;
    for (let power = 10; power <= value; power *= 10) digits++;
    let at = this.length + digits;
    this.length = at;
    // Two digits a step from a table; 31-bit integer arithmetic once the value fits.
    while (value >= 0x40000000) {
      const q = Math.floor(value / 100);
      const r = 2 * (value - q * 100);
      buffer[--at] = DIGIT_PAIRS[r + 1]!;
      buffer[--at] = DIGIT_PAIRS[r]!;
      value = q;
    }
    let v = value | 0;
    while (v >= 100) {
      const q = (v / 100) | 0;
      const r = 2 * (v - q * 100);
      buffer[--at] = DIGIT_PAIRS[r + 1]!;
      buffer[--at] = DIGIT_PAIRS[r]!;
      v = q;
    }
    if (v >= 10) {
      buffer[--at] = DIGIT_PAIRS[2 * v + 1]!;
      buffer[--at] = DIGIT_PAIRS[2 * v]!;
    } else buffer[--at] = 0x30 + v;
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
    // The low nine digits, zero-padded.
    const buffer = this.buffer;
    let at = this.length + 9;
    this.length = at;
    let v = rem | 0;
    for (let k = 0; k < 4; k++) {
      const q = (v / 100) | 0;
      const r = 2 * (v - q * 100);
      buffer[--at] = DIGIT_PAIRS[r + 1]!;
      buffer[--at] = DIGIT_PAIRS[r]!;
      v = q;
    }
    buffer[--at] = 0x30 + v;
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
    // Copied as is while checking (one pass: most values are plain); written again escaped if not.
    this.reserve(end - start);
    const buffer = this.buffer;
    let o = this.length;
    let i = commas || (end - start === 2 && isNullString(bytes, start, end)) ? -1 : start;
    if (i >= 0) {
      for (; i < end; i++) {
        const b = bytes[i]!;
        if (NOT_PLAIN[b] !== 0) break;
        buffer[o++] = b;
      }
    }
    if (i === end) this.length = o;
    else this.escapedText(bytes, start, end, commas);
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
