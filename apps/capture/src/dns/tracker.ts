// What capture makes of the DNS messages the kernel copies (bpf/kappa_dns.h): per conversation
// and interval, the exchanges (queries, responses, query → response latency, response codes,
// the question), and per network namespace, the names the answers resolved addresses from.
// The drain asks it for a record's DNS field and for its local end's name (see encode.ts).
//
// Latency is the time between the query and its response at this node's socket hooks: at the
// client, what the client waited; at the resolver, what the resolver took.
import { DNS_EVENT } from '../layout.js';
import { DnsMessageParser, RCODE_NXDOMAIN, emptyMessage } from './message.js';
import type { DnsMessage } from './message.js';
import { AddressNames } from './names.js';

const E = DNS_EVENT.fields;
const KEY_SIZE = DNS_EVENT.fields.key.size;
const PROTOCOL_TCP = 6;
/** Key bytes: local ip 0, remote ip 16, ports 32/34, protocol 37, netns 44. */
const KEY_REMOTE_IP = 16;
const KEY_PROTOCOL = 37;
const KEY_NETNS = 44;
/** A query not answered within this long is forgotten (it still counts as a query). */
const PENDING_TIMEOUT_NS = 30_000_000_000n;
/** Queries waiting for an answer, at most (more are counted, not timed). */
const MAX_PENDING = 65536;
/** Conversations with DNS exchanges waiting for their record, at most. */
const MAX_CONVERSATIONS = 65536;

/** One conversation's DNS exchanges since its last record. */
export interface Exchanges {
  /** The newest drain epoch among its messages. */
  epoch: number;
  queries: number;
  responses: number;
  latencyCount: number;
  latencySumUs: number;
  latencyMaxUs: number;
  rcode: number;
  nxdomain: number;
  failed: number;
  unparsable: number;
  queryName: string;
  queryType: number;
}

/** Counts for capture's metrics, totals since start. */
export interface DnsCounts {
  messages: number;
  queries: number;
  responses: number;
  unparsable: number;
  /** Messages cut by the kernel's copy limit (512 bytes): what they held after it is unread. */
  cut: number;
  /** Exchanges whose conversation had no record in the interval they belonged to. */
  unmatched: number;
  /** Queries not timed because too many were waiting. */
  untimed: number;
  namesLearnt: number;
  /** Received messages timed by the kernel's receive timestamp (at the interface), not at the hook. */
  timedAtInterface: number;
}

export interface DnsTrackerOptions {
  /** Most (namespace, address) → name entries kept. */
  maxNames: number;
  /** Unix ns minus kernel monotonic ns, for TTL ends. */
  ktimeToUnixNs: () => bigint;
  /**
   * CLOCK_REALTIME minus CLOCK_MONOTONIC to the µs (realtimeMinusMonotonicNs): moves a response's
   * receive timestamp (kappa_dns_event.rx_tstamp_ns) to the hooks' clock. Without it, responses
   * are timed at the socket's hook.
   */
  realtimeMinusKtimeNs?: () => bigint;
}

/** A receive timestamp further than this before the hook is not this packet's arrival. */
const MAX_RECEIVE_PATH_NS = 1_000_000_000n;

export class DnsTracker {
  readonly names: AddressNames;
  readonly counts: DnsCounts = { messages: 0, queries: 0, responses: 0, unparsable: 0, cut: 0, unmatched: 0, untimed: 0, namesLearnt: 0, timedAtInterface: 0 };
  private readonly parser = new DnsMessageParser();
  private readonly message: DnsMessage = emptyMessage();
  private readonly exchanges = new Map<string, Exchanges>();
  /** conversation key + id + direction of the query → kernel ns of the query. */
  private readonly pending = new Map<string, bigint>();
  /** TCP: bytes of a message that continue in the next segments, per conversation and direction. */
  private readonly streams = new Map<string, number>();
  /** Unix ns minus kernel ns, sampled at start and at each drain. */
  private unixOffsetNs: bigint;
  /** Realtime minus kernel ns, to the µs (undefined: responses timed at the hook), sampled likewise. */
  private realtimeOffsetNs: bigint | undefined;

  constructor(private readonly options: DnsTrackerOptions) {
    this.names = new AddressNames(options.maxNames, encodePeerName);
    this.unixOffsetNs = options.ktimeToUnixNs();
    this.realtimeOffsetNs = options.realtimeMinusKtimeNs?.();
  }

  /** An empty tracker with the same options: capture's warm-up feeds it made-up messages (capture.ts). */
  scratch(): DnsTracker {
    return new DnsTracker(this.options);
  }

  /**
   * When a received message reached the interface, on the hooks' clock: its receive timestamp
   * (the time a packet capture there shows) where the kernel took one, else the hook's time.
   */
  private arrival(hookNs: bigint, receivedRealtimeNs: bigint): bigint {
    if (receivedRealtimeNs === 0n || this.realtimeOffsetNs === undefined) return hookNs;
    const at = receivedRealtimeNs - this.realtimeOffsetNs;
    // Not before the hook (the offset is good to a µs: allow that), nor long before it.
    if (at > hookNs + 1000n || hookNs - at > MAX_RECEIVE_PATH_NS) return hookNs;
    this.counts.timedAtInterface++;
    return at < hookNs ? at : hookNs;
  }

  /** Takes in one kappa_dns_event. */
  add(event: Uint8Array): void {
    if (event.length < DNS_EVENT.size - E.message.size) return;
    const bytes = Buffer.from(event.buffer, event.byteOffset, event.length);
    const key = bytes.toString('latin1', E.key.offset, E.key.offset + KEY_SIZE);
    const egress = bytes[E.egress.offset] === 1;
    const ktime = egress ? bytes.readBigUInt64LE(E.ktime_ns.offset) : this.arrival(bytes.readBigUInt64LE(E.ktime_ns.offset), bytes.readBigUInt64LE(E.rx_tstamp_ns.offset));
    const epoch = bytes.readUInt32LE(E.epoch.offset);
    const length = Math.min(bytes.readUInt16LE(E.length.offset), E.message.size, bytes.length - E.message.offset);
    const payload = bytes.readUInt16LE(E.payload_length.offset);
    const start = E.message.offset;
    const netns = bytes.readUInt32LE(E.key.offset + KEY_NETNS);
    if (bytes[E.key.offset + KEY_PROTOCOL] !== PROTOCOL_TCP) {
      this.message1(key, epoch, ktime, egress, netns, bytes, start, start + length, payload > length);
      return;
    }
    // TCP: each message has a 2-byte length before it; a segment may hold several, or a part.
    const stream = egress ? `${key}>` : `${key}<`;
    let at = this.streams.get(stream) ?? 0;
    this.streams.delete(stream);
    while (at + 2 <= payload) {
      if (at + 2 > length) return; // a message starts past what the kernel copied: resynchronise at the next segment
      const size = bytes.readUInt16BE(start + at);
      const from = at + 2;
      if (size < 12) {
        this.unparsable(key, epoch);
        return;
      }
      this.message1(key, epoch, ktime, egress, netns, bytes, start + from, start + Math.min(from + size, length), from + size > length);
      at = from + size;
    }
    if (at > payload) this.streams.set(stream, at - payload);
  }

  private message1(key: string, epoch: number, ktime: bigint, egress: boolean, netns: number, bytes: Buffer, from: number, to: number, cut: boolean): void {
    this.counts.messages++;
    const m = this.message;
    const outcome = this.parser.parse(bytes, from, to, m);
    if (outcome === 'invalid') {
      if (cut) this.counts.cut++;
      else this.unparsable(key, epoch);
      return;
    }
    if (cut || outcome === 'partial') this.counts.cut++;
    const x = this.exchangesOf(key, epoch);
    if (!x) return;
    if (x.queryName === '' && m.questionName !== '') {
      x.queryName = m.questionName;
      x.queryType = m.questionType;
    }
    // A query and its response cross the hooks in opposite directions.
    const id = `${key}${String.fromCharCode(m.id >> 8, m.id & 0xff)}${egress === m.response ? '<' : '>'}`;
    if (!m.response) {
      this.counts.queries++;
      x.queries++;
      if (!this.pending.has(id)) {
        if (this.pending.size < MAX_PENDING) this.pending.set(id, ktime);
        else this.counts.untimed++;
      }
      return;
    }
    this.counts.responses++;
    x.responses++;
    const sent = this.pending.get(id);
    if (sent !== undefined && ktime >= sent) {
      this.pending.delete(id);
      const us = Number((ktime - sent) / 1000n);
      x.latencyCount++;
      x.latencySumUs += us;
      if (us > x.latencyMaxUs) x.latencyMaxUs = us;
    }
    if (m.rcode !== 0) {
      x.failed++;
      if (x.rcode === 0) x.rcode = m.rcode;
      if (m.rcode === RCODE_NXDOMAIN) x.nxdomain++;
    }
    // Names: what this namespace resolved, from the answers it received.
    if (!egress && m.rcode === 0 && m.addresses.length > 0 && m.questionName !== '') {
      const unixMs = Number((ktime + this.unixOffsetNs) / 1_000_000n);
      const nowMs = Date.now();
      for (const { address, ttl } of m.addresses) {
        this.names.learn(netns, address, m.questionName, unixMs + ttl * 1000, nowMs);
        this.counts.namesLearnt++;
      }
    }
  }

  private unparsable(key: string, epoch: number): void {
    this.counts.unparsable++;
    const x = this.exchangesOf(key, epoch);
    if (x) x.unparsable++;
  }

  private exchangesOf(key: string, epoch: number): Exchanges | undefined {
    let x = this.exchanges.get(key);
    if (!x) {
      if (this.exchanges.size >= MAX_CONVERSATIONS) {
        this.counts.unmatched++;
        return undefined;
      }
      x = { epoch, queries: 0, responses: 0, latencyCount: 0, latencySumUs: 0, latencyMaxUs: 0, rcode: 0, nxdomain: 0, failed: 0, unparsable: 0, queryName: '', queryType: 0 };
      this.exchanges.set(key, x);
    } else if (epoch > x.epoch) {
      x.epoch = epoch;
    }
    return x;
  }

  /**
   * The FlowRecord.dns field (tag, length, message) for the conversation whose flow key is at
   * `keys[keyAt, +48)`, or undefined; what it returns is taken (the next record starts anew).
   */
  takeRecordField(keys: Buffer, keyAt: number): Buffer | undefined {
    if (this.exchanges.size === 0) return undefined;
    const key = keys.toString('latin1', keyAt, keyAt + KEY_SIZE);
    const x = this.exchanges.get(key);
    if (!x) return undefined;
    this.exchanges.delete(key);
    return encodeDns(x);
  }

  /** The Endpoint.peer_dns_name field for the local end of the flow key at `keys[keyAt]`, or undefined. */
  peerNameField(keys: Buffer, keyAt: number, nowMs: number): Buffer | undefined {
    return this.names.lookup(keys.readUInt32LE(keyAt + KEY_NETNS), keys, keyAt + KEY_REMOTE_IP, nowMs);
  }

  /**
   * After the records of drain epoch `epoch` were encoded: exchanges that should have met their
   * record by now (their newest message is from an epoch before this one) are dropped and
   * counted; forgotten queries and stale names go.
   */
  endDrain(epoch: number, nowKtimeNs: bigint, nowMs: number): void {
    for (const [key, x] of this.exchanges) {
      // Exchanges wait one drain more than their messages' epoch for their record: a message may
      // carry the next epoch's number while its packet counted in this one (the flip fell
      // between the two programs), and a counting socket destroyed between the flip and the
      // drain's socket report reports its packets into the next interval's map.
      if (x.epoch < epoch) {
        this.exchanges.delete(key);
        this.counts.unmatched++;
      }
    }
    for (const [id, sent] of this.pending) if (nowKtimeNs - sent > PENDING_TIMEOUT_NS) this.pending.delete(id);
    if (this.streams.size > MAX_CONVERSATIONS) this.streams.clear();
    if (this.names.size > this.names.maxEntries * 0.9) this.names.sweep(nowMs);
    this.unixOffsetNs = this.options.ktimeToUnixNs();
    this.realtimeOffsetNs = this.options.realtimeMinusKtimeNs?.();
  }
}

// Wire format: tag = field << 3 | wire type.
export function encodePeerName(name: string): Buffer {
  const text = Buffer.from(name, 'latin1');
  const field = Buffer.allocUnsafe(2 + varintSize(text.length) + text.length);
  field[0] = (8 << 3) | 2; // Endpoint.peer_dns_name = 8
  let at = writeVarint(field, 1, text.length);
  at += text.copy(field, at);
  return field.subarray(0, at);
}

/** FlowRecord.dns = 23: message Dns { query_name 1, query_type 2, rcode 3, queries 4, responses 5, latency_count 6, latency_sum_us 7, latency_max_us 8, nxdomain 9, failed 10, unparsable 11 }. */
export function encodeDns(x: Exchanges): Buffer {
  const name = Buffer.from(x.queryName, 'latin1');
  const body = Buffer.allocUnsafe(name.length + 3 + 10 * 11);
  let at = 0;
  if (name.length > 0) {
    body[at++] = (1 << 3) | 2;
    at = writeVarint(body, at, name.length);
    at += name.copy(body, at);
  }
  const numbers = [x.queryType, x.rcode, x.queries, x.responses, x.latencyCount, x.latencySumUs, x.latencyMaxUs, x.nxdomain, x.failed, x.unparsable];
  for (let i = 0; i < numbers.length; i++) {
    const value = numbers[i]!;
    if (value === 0) continue;
    body[at++] = (i + 2) << 3;
    at = writeVarint(body, at, value);
  }
  const field = Buffer.allocUnsafe(2 + varintSize(at) + at);
  field[0] = 0xba; // tag(23, 2) as a two-byte varint
  field[1] = 0x01;
  let p = writeVarint(field, 2, at);
  p += body.copy(field, p, 0, at);
  return field.subarray(0, p);
}

function writeVarint(b: Buffer, at: number, value: number): number {
  while (value >= 0x80) {
    b[at++] = (value % 128) | 0x80;
    value = Math.floor(value / 128);
  }
  b[at++] = value;
  return at;
}

function varintSize(value: number): number {
  let n = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    n++;
  }
  return n;
}
