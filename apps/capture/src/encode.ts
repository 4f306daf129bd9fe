// Drained kernel entries → FlowBatch protobuf bytes, in one pass per entry: the key and value
// bytes are read by offset (layout.ts) and the record is written straight into the batch buffer,
// with no FlowRecord object, no intermediate encoding and no allocation per record. The bytes
// are what protobuf-es would produce for the same record (fields in number order, zero values
// left out), which test/encode.test.ts checks field by field.
import { createHash } from 'node:crypto';
import { FLOW_KEY, FLOW_STATS, ROLE_DST, ROLE_SRC } from './layout.js';

/** What every record of one drain shares. */
export interface DrainInterval {
  readonly node: string;
  /** Unix ns of the interval's start and end (the previous drain and this one). */
  readonly startNs: bigint;
  readonly endNs: bigint;
  /** Unix ns minus kernel monotonic ns (bpf_ktime_get_ns), see clock.ts. */
  readonly ktimeToUnixNs: bigint;
  /** ifindex → interface name, for interface-mode records. */
  readonly interfaceName: (ifindex: number) => string;
}

/**
 * What a record carries besides the kernel's counts: the DNS exchanges of its conversation and
 * the name its local end resolved the other end's address from (dns/tracker.ts), and the names
 * of the kernel's drop reasons (drop-reasons.ts). Each returns a pre-encoded field, or undefined.
 */
export interface RecordAnnotations {
  /** FlowRecord.dns for the conversation whose key is at keys[keyAt]; taken once. */
  dnsField(keys: Buffer, keyAt: number): Buffer | undefined;
  /** Endpoint.peer_dns_name for the local end of the key at keys[keyAt]. */
  peerNameField(keys: Buffer, keyAt: number): Buffer | undefined;
  /** The Drops.reason field (tag, length, name) of a kernel drop reason value. */
  dropReasonField(reason: number): Buffer;
}

/** One encoded FlowBatch. */
export interface EncodedBatch {
  readonly batchId: string;
  readonly bytes: Uint8Array;
  readonly records: number;
}

const K = FLOW_KEY.fields;
const S = FLOW_STATS.fields;
const PROTOCOL_TCP = 6;
const PROTOCOL_ICMP = 1;
const PROTOCOL_ICMPV6 = 58;
const VANTAGE_SRC = 1;
const VANTAGE_DST = 2;
/** /proc/<pid>/stat counts start times in USER_HZ (100) ticks: 10 ms. */
const NS_PER_TICK = 10_000_000;
const TWO_32 = 4294967296;
/** Room one record can take at most (IPv6 text, comm, a 253-character name twice, every optional field), with margin. */
const MAX_RECORD_BYTES = 1536;
const PROTOCOL_UDP = 17;
/** One batch is written while one is in the sink's hands: two spare buffers are plenty. */
const MAX_FREE_BUFFERS = 2;
const DNS_PORT = 53;

// Wire-format tags: field number << 3 | wire type (0 varint, 2 length-delimited).
const tag = (field: number, wire: 0 | 2) => (field << 3) | wire;

const DIGITS: Uint8Array[] = Array.from({ length: 256 }, (_, i) => Buffer.from(String(i), 'latin1'));
const HEX = Buffer.from('0123456789abcdef', 'latin1');

/**
 * Writes FlowBatches of at most `maxBatchBytes` (the bus's message limit) from drained entries.
 * Usage per drain: `begin(interval)`, then `add` per entry; `add` returns a finished batch when
 * the current one is full, and `finish()` returns the last one.
 */
export class FlowBatchEncoder {
  private buffer: Buffer<ArrayBufferLike>;
  private position = 0;
  private recordCount = 0;
  private part = 0;
  private sequence = 0;
  private interval: DrainInterval | undefined;
  /** Pre-encoded per drain: node (1), and start/end (3, 4); the id prefix. */
  private nodeField: Buffer = Buffer.alloc(0);
  private timesField: Buffer = Buffer.alloc(0);
  private idPrefix: Buffer = Buffer.alloc(0);
  private batchIdPrefix = '';
  private offsetLo = 0;
  private offsetHi = 0;
  private readonly nodeTag: string;
  private readonly interfaceFields = new Map<number, Buffer>();
  /** The entry's key offset, while its record is written. */
  private keyAt = 0;
  /** Batch buffers handed back (recycle): a fresh 1 MiB costs ~2.5 ms of page faults here. */
  private readonly free: Buffer[] = [];

  constructor(
    private readonly node: string,
    private readonly maxBatchBytes: number,
    private readonly annotations?: RecordAnnotations,
  ) {
    if (maxBatchBytes < 4 * MAX_RECORD_BYTES) throw new RangeError(`maxBatchBytes ${maxBatchBytes} is below ${4 * MAX_RECORD_BYTES}`);
    this.buffer = Buffer.allocUnsafeSlow(maxBatchBytes); // its own memory, never a slice of a pool: see recycle
    // Record ids stay short whatever the node name: 8 hex digits of its hash.
    this.nodeTag = createHash('sha256').update(node).digest('hex').slice(0, 8);
  }

  begin(interval: DrainInterval): void {
    this.interval = interval;
    this.part = 0;
    this.sequence = 0;
    this.interfaceFields.clear();
    this.nodeField = stringField(1, interval.node);
    const times = Buffer.allocUnsafe(24);
    let at = writeVarint(times, 0, tag(3, 0));
    at = writeBigVarint(times, at, interval.startNs);
    at = writeVarint(times, at, tag(4, 0));
    at = writeBigVarint(times, at, interval.endNs);
    this.timesField = Buffer.from(times.subarray(0, at));
    const end36 = interval.endNs.toString(36);
    this.idPrefix = Buffer.from(`${this.nodeTag}.${end36}.`, 'latin1');
    this.batchIdPrefix = `${this.node}/${interval.endNs}/`;
    const offset = BigInt.asUintN(64, interval.ktimeToUnixNs);
    this.offsetLo = Number(offset & 0xffffffffn);
    this.offsetHi = Number(offset >> 32n);
    this.startBatch();
  }

  /** Appends the entry at keys[keyAt] / values[valueAt]; returns the batch it completed, if any. */
  add(keys: Buffer, keyAt: number, values: Buffer, valueAt: number): EncodedBatch | undefined {
    let done: EncodedBatch | undefined;
    if (this.position + MAX_RECORD_BYTES > this.maxBatchBytes) done = this.finish();
    this.position = this.writeRecord(keys, keyAt, values, valueAt, this.position);
    this.recordCount++;
    return done;
  }

  /** The batch being written (undefined when it holds no record); starts the next one. */
  finish(): EncodedBatch | undefined {
    if (this.recordCount === 0) return undefined;
    const batch = { batchId: this.currentBatchId(), bytes: this.buffer.subarray(0, this.position), records: this.recordCount };
    this.part++;
    // The finished bytes belong to the caller now (spooled, published, maybe kept for a retry),
    // until it hands them back with recycle().
    this.buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(this.maxBatchBytes);
    this.startBatch();
    return batch;
  }

  /**
   * Takes back the bytes of a batch this encoder finished, once nothing holds them any more (the
   * sink took them and the spool forgot them): the next batch is written into the same memory.
   * Touching fresh memory is what a new batch buffer costs: 1 MiB is 256 page faults, ~2.5 ms
   * of CPU on this machine (BENCHMARKS.md, Scenario 4), 0.7 µs per record.
   */
  recycle(bytes: Uint8Array): void {
    if (bytes.byteOffset !== 0 || bytes.buffer.byteLength !== this.maxBatchBytes || this.free.length >= MAX_FREE_BUFFERS) return;
    if (bytes.buffer === this.buffer.buffer || this.free.some((b) => b.buffer === bytes.buffer)) return; // already ours
    this.free.push(Buffer.from(bytes.buffer, 0, this.maxBatchBytes));
  }

  private currentBatchId(): string {
    // Stable across retries of the same interval: the bus uses it as Nats-Msg-Id.
    return `${this.batchIdPrefix}${this.part}`;
  }

  private startBatch(): void {
    const b = this.buffer;
    let at = 0;
    const id = Buffer.from(this.currentBatchId(), 'latin1');
    at = writeVarint(b, at, tag(1, 2));
    at = writeVarint(b, at, id.length);
    at += id.copy(b, at);
    const producer = this.nodeField; // FlowBatch.producer (2) = the node, same bytes as FlowRecord.node (1)
    b[at++] = tag(2, 2);
    at += producer.copy(b, at, 1);
    at = writeVarint(b, at, tag(3, 0));
    at = writeBigVarint(b, at, BigInt(Date.now()) * 1_000_000n);
    this.position = at;
    this.recordCount = 0;
  }

  private writeRecord(keys: Buffer, k: number, values: Buffer, v: number, start: number): number {
    const b = this.buffer;
    this.keyAt = k;
    const interval = this.interval!;
    // FlowBatch.records (4): a 2-byte length placeholder, fixed up below.
    b[start] = tag(4, 2);
    let at = start + 3;
    at = put(b, at, this.nodeField);
    const role = values[v + S.role.offset]!;
    const accepted = role === ROLE_DST;
    const vantage = role === ROLE_SRC ? VANTAGE_SRC : accepted ? VANTAGE_DST : 0;
    if (vantage) {
      b[at++] = tag(2, 0);
      b[at++] = vantage;
    }
    at = put(b, at, this.timesField);
    const protocol = keys[k + K.protocol.offset]!;
    if (protocol) {
      b[at++] = tag(5, 0);
      at = writeVarint(b, at, protocol);
    }
    const version = keys[k + K.ip_version.offset]!;
    const local = k + K.local_ip.offset;
    const remote = k + K.remote_ip.offset;
    const localPort = keys.readUInt16LE(k + K.local_port.offset);
    const remotePort = keys.readUInt16LE(k + K.remote_port.offset);
    // src is the initiator: the remote end when the local one accepted.
    const peerName = this.annotations?.peerNameField(keys, k);
    if (accepted) {
      at = this.writeEndpoint(b, at, 6, keys, remote, version, remotePort, values, v, false, undefined);
      at = this.writeEndpoint(b, at, 7, keys, local, version, localPort, values, v, true, peerName);
    } else {
      at = this.writeEndpoint(b, at, 6, keys, local, version, localPort, values, v, true, peerName);
      at = this.writeEndpoint(b, at, 7, keys, remote, version, remotePort, values, v, false, undefined);
    }
    const tx = v + S.tx_bytes.offset;
    const rx = v + S.rx_bytes.offset;
    const forward = accepted ? rx : tx;
    const reverse = accepted ? tx : rx;
    at = writeU64Field(b, at, 8, values, forward);
    at = writeU64Field(b, at, 9, values, forward + 8);
    at = writeU64Field(b, at, 10, values, reverse);
    at = writeU64Field(b, at, 11, values, reverse + 8);
    if (protocol === PROTOCOL_TCP) at = writeTcpStats(b, at, values, v);
    const appCount = values.readUInt32LE(v + S.app_count.offset);
    if (appCount > 0) {
      b[at] = tag(13, 2);
      const body = at + 2;
      let p = body;
      b[p++] = tag(1, 0);
      p = writeVarint(b, p, appCount);
      p = writeU64Field(b, p, 2, values, v + S.app_sum_us.offset);
      const max = values.readUInt32LE(v + S.app_max_us.offset);
      if (max) {
        b[p++] = tag(3, 0);
        p = writeVarint(b, p, max);
      }
      b[at + 1] = p - body;
      at = p;
    }
    // observation (16): "socket", or the interface's name.
    const ifindex = keys.readUInt32LE(k + K.ifindex.offset);
    at = put(b, at, ifindex === 0 ? SOCKET_OBSERVATION : this.interfaceField(ifindex, interval));
    // id (17): node tag, interval end, sequence — unique per node and interval, and a re-sent
    // (spooled) batch carries the very same bytes.
    b[at] = 0x8a; // tag(17, 2) as a two-byte varint: 0x8a 0x01
    b[at + 1] = 0x01;
    const idLengthAt = at + 2;
    let p = idLengthAt + 1;
    p = put(b, p, this.idPrefix);
    p = writeBase36(b, p, this.sequence++);
    b[idLengthAt] = p - idLengthAt - 1;
    at = p;
    if (protocol === PROTOCOL_ICMP || protocol === PROTOCOL_ICMPV6) {
      const type = values[v + S.icmp_type.offset]!;
      const code = values[v + S.icmp_code.offset]!;
      if (type) {
        b[at++] = 0x90; // tag(18, 0)
        b[at++] = 0x01;
        at = writeVarint(b, at, type);
      }
      if (code) {
        b[at++] = 0x98; // tag(19, 0)
        b[at++] = 0x01;
        at = writeVarint(b, at, code);
      }
    }
    // first_seen_ns (20), last_seen_ns (21): kernel monotonic ns + the unix offset, in 32-bit halves.
    const firstLo = values.readUInt32LE(v + S.first_ns.offset);
    const firstHi = values.readUInt32LE(v + S.first_ns.offset + 4);
    let lastLo = firstLo;
    let lastHi = firstHi;
    for (const field of [S.tx_last_ns.offset, S.rx_last_ns.offset]) {
      const lo = values.readUInt32LE(v + field);
      const hi = values.readUInt32LE(v + field + 4);
      if (hi > lastHi || (hi === lastHi && lo > lastLo)) [lastLo, lastHi] = [lo, hi];
    }
    at = this.writeKtime(b, at, 0xa0, firstLo, firstHi);
    at = this.writeKtime(b, at, 0xa8, lastLo, lastHi);
    // dns (23): the DNS exchanges of a conversation with port 53 at either end.
    if ((localPort === DNS_PORT || remotePort === DNS_PORT) && (protocol === PROTOCOL_UDP || protocol === PROTOCOL_TCP)) {
      const dns = this.annotations?.dnsField(keys, k);
      if (dns) at = put(b, at, dns);
    }
    // drops (24): what the kernel dropped of this conversation, and why.
    const dropPackets = values.readUInt32LE(v + S.drop_packets.offset);
    if (dropPackets > 0) at = this.writeDrops(b, at, values, v, dropPackets);
    // Fix up the record's length: it was given 2 bytes; a shorter record moves back by one.
    const length = at - start - 3;
    if (length < 128) {
      b[start + 1] = length;
      b.copyWithin(start + 2, start + 3, at);
      return at - 1;
    }
    b[start + 1] = (length & 0x7f) | 0x80;
    b[start + 2] = length >>> 7;
    return at;
  }

  /** Endpoint (1 ip, 2 port, and for the local end 3 process, 7 netns, 8 peer_dns_name). */
  private writeEndpoint(b: Buffer, at: number, field: number, keys: Buffer, ip: number, version: number, port: number, values: Buffer, v: number, local: boolean, peerName: Buffer | undefined): number {
    b[at] = tag(field, 2);
    // Under 128 bytes without a name: one length byte. With one, room for two; an endpoint that
    // turns out shorter moves back by one.
    const wide = peerName !== undefined;
    const body = at + (wide ? 3 : 2);
    let p = body;
    b[p] = tag(1, 2);
    const ipBody = p + 2;
    const ipEnd = version === 4 ? writeIpv4(b, ipBody, keys, ip + 12) : writeIpv6(b, ipBody, keys, ip);
    b[p + 1] = ipEnd - ipBody;
    p = ipEnd;
    if (port) {
      b[p++] = tag(2, 0);
      p = writeVarint(b, p, port);
    }
    if (local) {
      p = writeProcess(b, p, values, v);
      const netns = keys.readUInt32LE(this.keyAt + K.netns.offset);
      if (netns) {
        b[p++] = tag(7, 0);
        p = writeVarint(b, p, netns);
      }
    }
    const length = p - body;
    if (!wide) {
      b[at + 1] = length;
      return p;
    }
    p = put(b, p, peerName);
    return finishWide(b, at, body, p);
  }

  /** Drops (packets 1, bytes 2, reason 3: the most frequent of the kernel's slots, reason_packets 4). */
  private writeDrops(b: Buffer, at: number, values: Buffer, v: number, packets: number): number {
    b[at++] = 0xc2; // tag(24, 2) as a two-byte varint
    b[at++] = 0x01;
    const lengthAt = at++;
    let p = at;
    b[p++] = tag(1, 0);
    p = writeVarint(b, p, packets);
    p = writeU64Field(b, p, 2, values, v + S.drop_bytes.offset);
    let best = -1;
    let bestPackets = 0;
    for (let i = 0; i < 3; i++) {
      const reason = values.readUInt32LE(v + S.drop_reason.offset + 4 * i);
      const count = values.readUInt32LE(v + S.drop_reason_packets.offset + 4 * i);
      if (reason !== 0 && count > bestPackets) [best, bestPackets] = [reason, count];
    }
    if (best > 0 && this.annotations) {
      p = put(b, p, this.annotations.dropReasonField(best));
      b[p++] = tag(4, 0);
      p = writeVarint(b, p, bestPackets);
    }
    b[lengthAt] = p - at; // under 128: two varints of 5 bytes, a reason name under 64
    return p;
  }

  private writeKtime(b: Buffer, at: number, tagByte: number, lo: number, hi: number): number {
    if (lo === 0 && hi === 0) return at;
    const sumLo = lo + this.offsetLo;
    const carry = sumLo >= TWO_32 ? 1 : 0;
    b[at++] = tagByte;
    b[at++] = 0x01;
    return writeVarint64(b, at, sumLo >>> 0, (hi + this.offsetHi + carry) >>> 0);
  }

  private interfaceField(ifindex: number, interval: DrainInterval): Buffer {
    let field = this.interfaceFields.get(ifindex);
    if (!field) {
      const name = Buffer.from(interval.interfaceName(ifindex), 'utf8');
      field = Buffer.concat([Buffer.from([0x82, 0x01]), varintBytes(name.length), name]); // tag(16, 2)
      this.interfaceFields.set(ifindex, field);
    }
    return field;
  }
}

/**
 * Copies a short pre-encoded field (a few to a few hundred bytes) into b at `at`; returns the end.
 * A plain loop: Buffer#copy's per-call cost is larger than copying a field this size.
 */
function put(b: Buffer, at: number, field: Uint8Array): number {
  for (let i = 0; i < field.length; i++) b[at + i] = field[i]!;
  return at + field.length;
}

/** A length-delimited field written with a two-byte length placeholder at at+1 (body at at+3, ending at end). */
function finishWide(b: Buffer, at: number, body: number, end: number): number {
  const length = end - body;
  if (length < 128) {
    b[at + 1] = length;
    b.copyWithin(at + 2, body, end);
    return end - 1;
  }
  b[at + 1] = (length & 0x7f) | 0x80;
  b[at + 2] = length >>> 7;
  return end;
}

const SOCKET_OBSERVATION = Buffer.concat([Buffer.from([0x82, 0x01, 6]), Buffer.from('socket', 'latin1')]);

/** Process (pid 1, name 2, cgroup_id 8, start_time_ticks 11) when the kernel stamped an owner. */
function writeProcess(b: Buffer, at: number, values: Buffer, v: number): number {
  const pid = values.readUInt32LE(v + S.pid.offset);
  const comm = v + S.comm.offset;
  let commEnd = comm;
  while (commEnd < comm + S.comm.size - 1 && values[commEnd] !== 0) commEnd++;
  if (pid === 0 && commEnd === comm) return at;
  b[at] = tag(3, 2);
  const body = at + 2;
  let p = body;
  if (pid) {
    b[p++] = tag(1, 0);
    p = writeVarint(b, p, pid);
  }
  if (commEnd > comm) {
    b[p++] = tag(2, 2);
    const nameAt = p + 1;
    // comm is bytes the kernel copied from the task; keep it valid UTF-8 as protobuf strings must be.
    const end = writeLatin1AsUtf8(b, nameAt, values, comm, commEnd);
    b[p] = end - nameAt;
    p = end;
  }
  p = writeU64Field(b, p, 8, values, v + S.cgroup_id.offset);
  const startLo = values.readUInt32LE(v + S.owner_start_ns.offset);
  const startHi = values.readUInt32LE(v + S.owner_start_ns.offset + 4);
  const ticks = Math.floor((startHi * TWO_32 + startLo) / NS_PER_TICK);
  if (ticks) {
    b[p++] = tag(11, 0);
    p = writeVarint(b, p, ticks);
  }
  b[at + 1] = p - body;
  return p;
}

/** TcpStats (srtt 1, min_rtt 2, retransmits 3, handshake 4, flags 5): present for every TCP record. */
function writeTcpStats(b: Buffer, at: number, values: Buffer, v: number): number {
  b[at] = tag(12, 2);
  const body = at + 2;
  let p = body;
  const fields = [S.srtt_us.offset, S.min_rtt_us.offset, S.retransmits.offset, S.handshake_us.offset];
  for (let i = 0; i < fields.length; i++) {
    const value = values.readUInt32LE(v + fields[i]!);
    if (value) {
      b[p++] = tag(i + 1, 0);
      p = writeVarint(b, p, value);
    }
  }
  const flags = (values.readUInt32LE(v + S.tx_tcp_flags.offset) | values.readUInt32LE(v + S.rx_tcp_flags.offset)) >>> 0;
  if (flags) {
    b[p++] = tag(5, 0);
    p = writeVarint(b, p, flags);
  }
  b[at + 1] = p - body;
  return p;
}

/** A uint64 field read from `values` at `offset` (little-endian), left out when zero. */
function writeU64Field(b: Buffer, at: number, field: number, values: Buffer, offset: number): number {
  const lo = values.readUInt32LE(offset);
  const hi = values.readUInt32LE(offset + 4);
  if (lo === 0 && hi === 0) return at;
  b[at++] = tag(field, 0);
  return hi === 0 ? writeVarint(b, at, lo) : writeVarint64(b, at, lo, hi);
}

/** An unsigned varint of a number below 2^53. */
export function writeVarint(b: Buffer, at: number, value: number): number {
  while (value >= 0x80) {
    b[at++] = (value & 0x7f) | 0x80;
    value = value >= TWO_32 ? Math.floor(value / 128) : value >>> 7;
  }
  b[at++] = value;
  return at;
}

/** An unsigned varint of a 64-bit value given as 32-bit halves. */
function writeVarint64(b: Buffer, at: number, lo: number, hi: number): number {
  while (hi > 0 || lo >= 0x80) {
    b[at++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  b[at++] = lo;
  return at;
}

function writeBigVarint(b: Buffer, at: number, value: bigint): number {
  const v = BigInt.asUintN(64, value);
  return writeVarint64(b, at, Number(v & 0xffffffffn), Number(v >> 32n));
}

function varintBytes(value: number): Buffer {
  const b = Buffer.allocUnsafe(10);
  return Buffer.from(b.subarray(0, writeVarint(b, 0, value)));
}

function stringField(field: number, text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  return Buffer.concat([varintBytes(tag(field, 2)), varintBytes(bytes.length), bytes]);
}

function writeIpv4(b: Buffer, at: number, keys: Buffer, ip: number): number {
  for (let i = 0; i < 4; i++) {
    if (i) b[at++] = 0x2e; // '.'
    const digits = DIGITS[keys[ip + i]!]!;
    for (let d = 0; d < digits.length; d++) b[at++] = digits[d]!;
  }
  return at;
}

/** RFC 5952 text, as ipFromBytes in @kappa/contracts writes it. */
function writeIpv6(b: Buffer, at: number, keys: Buffer, ip: number): number {
  const group = (i: number) => (keys[ip + 2 * i]! << 8) | keys[ip + 2 * i + 1]!;
  let mapped = group(5) === 0xffff;
  for (let i = 0; i < 5 && mapped; i++) if (group(i) !== 0) mapped = false;
  if (mapped) {
    b.write('::ffff:', at, 'latin1');
    return writeIpv4(b, at + 7, keys, ip + 12);
  }
  // The longest run of two or more zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (group(i) !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && group(j) === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      b[at++] = 0x3a;
      b[at++] = 0x3a;
      i += bestLength - 1;
      continue;
    }
    if (i > 0 && i !== bestStart + bestLength) b[at++] = 0x3a;
    const g = group(i);
    let started = false;
    for (let shift = 12; shift >= 0; shift -= 4) {
      const nibble = (g >>> shift) & 0xf;
      if (nibble || started || shift === 0) {
        b[at++] = HEX[nibble]!;
        started = true;
      }
    }
  }
  return at;
}

function writeBase36(b: Buffer, at: number, value: number): number {
  let digits = 1;
  for (let rest = value; rest >= 36; rest = Math.floor(rest / 36)) digits++;
  for (let i = digits - 1; i >= 0; i--) {
    b[at + i] = BASE36[value % 36]!;
    value = Math.floor(value / 36);
  }
  return at + digits;
}

const BASE36 = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz', 'latin1');

function writeLatin1AsUtf8(b: Buffer, at: number, source: Buffer, from: number, to: number): number {
  for (let i = from; i < to; i++) {
    const c = source[i]!;
    if (c < 0x80) b[at++] = c;
    else {
      b[at++] = 0xc0 | (c >>> 6);
      b[at++] = 0x80 | (c & 0x3f);
    }
  }
  return at;
}
