// The tagger's answers kept by the bytes of what they answer (a local end's container id, a
// remote end's address), so that the next record of the same end costs a hash and a byte
// compare instead of strings, index lookups and an encoding. An answer is kept only when the
// resolver says it holds beyond its record (endpoint-resolver.ts, EndTag.reusable), and is used
// only while the index's version is the one it was made at and the flow's time is in its span.
//
// Laid out for a tagger whose records' ends are spread over thousands of pods (every record
// another node's), where a kept end costs its cache misses, not its instructions: per answer
// one 64-byte row of typed arrays and one run of bytes in an arena — its key, the node it was
// made for and its encoded kube fields, one after the other — which the record's output copies
// from. Answers as objects (an object, two bigints, a Uint8Array per field and its own memory)
// cost about a dozen misses per end; this layout costs the slot, the row and the run.

import { sameRange } from '@kappa/contracts';

const EMPTY = new Uint8Array(0);

/** An answer as it is made (the record's own, or the one about to be kept). */
export class Answer {
  /** The index's version it was made at (-1: not to be kept). */
  version = -1;
  /** The span of event time it holds for: [fromNs, untilNs). */
  fromNs = 0n;
  untilNs = 0n;
  /** The kube field on every port but `ports`. */
  field: Uint8Array = EMPTY;
  /** The ports on which a Service lists the end as a backend, and the kube field on each. */
  readonly ports: number[] = [];
  readonly portFields: Uint8Array[] = [];
  hit = false;
  pending = false;

  fieldOn(port: number): Uint8Array {
    const ports = this.ports;
    for (let i = 0; i < ports.length; i++) if (ports[i] === port) return this.portFields[i]!;
    return this.field;
  }
}

/** Int32s per answer's row (64 bytes), and what each holds. */
const ROW = 16;
const HASH = 0;
const KEY_START = 1;
/** Also where the node starts. */
const KEY_END = 2;
/** Also where the field on every other port starts. */
const NODE_END = 3;
/** Also where the first port's field starts. */
const FIELD_END = 4;
const VERSION = 5;
/** hit (1), pending (2), the number of ports << 2. */
const FLAGS = 6;
const FIRST_PORT = 7;
const FIRST_PORT_END = 8;
/** The span of event time as int64 halves: high (signed), low (unsigned, through `lows`). */
const FROM_HI = 9;
const FROM_LO = 10;
const UNTIL_HI = 11;
const UNTIL_LO = 12;

const HIT = 1;
const PENDING = 2;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

/**
 * A time as int64 halves for the rows: high (signed 32 bits) and low (unsigned 32 bits). Times
 * beyond int64 are clamped, which only narrows the spans answers are kept for (a record outside
 * resolves again); `highOf` of a record time beyond it (a uint64 over 2^63) is the highest, and
 * such a time is in no span.
 */
export function highOf(ns: bigint): number {
  return Number((ns < INT64_MIN ? INT64_MIN : ns > INT64_MAX ? INT64_MAX : ns) >> 32n);
}

export function lowOf(ns: bigint): number {
  return Number((ns < INT64_MIN ? INT64_MIN : ns > INT64_MAX ? INT64_MAX : ns) & 0xffffffffn);
}

/**
 * Answers of one kind by key bytes: open addressing over rows in typed arrays and one arena of
 * bytes. Bounded: when a batch starts with more than `maxEntries` answers or `maxBytes` of arena,
 * they start over (a node's pods and the addresses they talk to fit; a flood of distinct outside
 * addresses costs what no keeping does). Never cleared during a batch: the ranges a batch's
 * first pass noted stay valid until its second pass has copied them (the arena only grows;
 * an answer made again goes to its end).
 */
export class KeptAnswers {
  /** Keys, nodes and kube fields; read it after the batch's first pass (it may grow). */
  bytes = new Uint8Array(64 * 1024);
  private used = 0;
  /** Entry number + 1 per slot (0: empty); at most half full. */
  private slots = new Int32Array(1024);
  private mask = 1023;
  private rows = new Int32Array(ROW * 512);
  private lows = new Uint32Array(this.rows.buffer);
  /** Per answer with more than one port: [port, start, end] of each port after the first. */
  private readonly morePorts: (number[] | undefined)[] = [];
  /** Per answer: the field objects its bytes were copied from (an answer made again alike keeps its bytes). */
  private readonly fieldOf: Uint8Array[] = [];
  private readonly firstPortFieldOf: Uint8Array[] = [];
  size = 0;
  /** The end of the last range fieldOn() gave. */
  fieldEnd = 0;

  constructor(
    private readonly maxEntries = 65_536,
    private readonly maxBytes = 64 * 1024 * 1024,
  ) {}

  /** To call before each batch's first pass: starts over when over bounds. */
  startBatch(): void {
    if (this.size < this.maxEntries && this.used < this.maxBytes) return;
    this.slots.fill(0);
    this.morePorts.length = 0;
    this.fieldOf.length = 0;
    this.firstPortFieldOf.length = 0;
    this.used = 0;
    this.size = 0;
  }

  /** The answer kept under bytes[start, end), or -1. */
  find(bytes: Uint8Array, start: number, end: number): number {
    const hash = hashKey(bytes, start, end);
    const slots = this.slots;
    const mask = this.mask;
    const rows = this.rows;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const entry = slots[slot]! - 1;
      if (entry < 0) return -1;
      const row = ROW * entry;
      if (rows[row + HASH] === hash && sameRange(this.bytes, rows[row + KEY_START]!, rows[row + KEY_END]!, bytes, start, end)) return entry;
    }
  }

  /** Whether the answer holds at the index's `version` for a flow at (atHi, atLo) (highOf, lowOf). */
  holds(entry: number, version: number, atHi: number, atLo: number): boolean {
    const rows = this.rows;
    const row = ROW * entry;
    if (rows[row + VERSION] !== version) return false;
    const lows = this.lows;
    const fromHi = rows[row + FROM_HI]!;
    const untilHi = rows[row + UNTIL_HI]!;
    return (fromHi < atHi || (fromHi === atHi && lows[row + FROM_LO]! <= atLo)) && (atHi < untilHi || (atHi === untilHi && atLo < lows[row + UNTIL_LO]!));
  }

  /** Whether the answer was made for the node bytes[start, end) (a local end's). */
  madeFor(entry: number, bytes: Uint8Array, start: number, end: number): boolean {
    const row = ROW * entry;
    return sameRange(this.bytes, this.rows[row + KEY_END]!, this.rows[row + NODE_END]!, bytes, start, end);
  }

  hit(entry: number): boolean {
    return (this.rows[ROW * entry + FLAGS]! & HIT) !== 0;
  }

  pending(entry: number): boolean {
    return (this.rows[ROW * entry + FLAGS]! & PENDING) !== 0;
  }

  /** Where the answer's kube field on `port` starts in `bytes`; it ends at `fieldEnd`. */
  fieldOn(entry: number, port: number): number {
    const rows = this.rows;
    const row = ROW * entry;
    const ports = rows[row + FLAGS]! >>> 2;
    if (ports > 0) {
      if (port === rows[row + FIRST_PORT]) {
        this.fieldEnd = rows[row + FIRST_PORT_END]!;
        return rows[row + FIELD_END]!;
      }
      const more = this.morePorts[entry];
      if (more !== undefined) {
        for (let i = 0; i < more.length; i += 3) {
          if (more[i] === port) {
            this.fieldEnd = more[i + 2]!;
            return more[i + 1]!;
          }
        }
      }
    }
    this.fieldEnd = rows[row + FIELD_END]!;
    return rows[row + NODE_END]!;
  }

  /** The answer under `entry` is no longer to be used (made again and not kept). */
  forget(entry: number): void {
    this.rows[ROW * entry + VERSION] = -1;
  }

  /**
   * Keeps `answer` under key[keyStart, keyEnd) (entry: where find() found the key, or -1), made
   * for node[nodeStart, nodeEnd); returns its entry.
   */
  keep(entry: number, key: Uint8Array, keyStart: number, keyEnd: number, node: Uint8Array, nodeStart: number, nodeEnd: number, answer: Answer): number {
    const ports = answer.ports.length;
    const hash = entry < 0 ? hashKey(key, keyStart, keyEnd) : this.rows[ROW * entry + HASH]!;
    if (entry < 0) entry = this.add(hash);
    const rows = this.rows;
    const row = ROW * entry;
    // Made again alike (the index changed elsewhere): the bytes it has are still the answer's.
    const alike = this.fieldOf[entry] === answer.field && ports <= 1 && rows[row + FLAGS]! >>> 2 === ports && (ports === 0 || (rows[row + FIRST_PORT] === answer.ports[0] && this.firstPortFieldOf[entry] === answer.portFields[0])) && this.madeFor(entry, node, nodeStart, nodeEnd);
    if (!alike) {
      let length = keyEnd - keyStart + nodeEnd - nodeStart + answer.field.length;
      for (const field of answer.portFields) length += field.length;
      let at = this.reserve(length);
      const bytes = this.bytes;
      rows[row + KEY_START] = at;
      bytes.set(key.subarray(keyStart, keyEnd), at);
      rows[row + KEY_END] = at += keyEnd - keyStart;
      bytes.set(node.subarray(nodeStart, nodeEnd), at);
      rows[row + NODE_END] = at += nodeEnd - nodeStart;
      bytes.set(answer.field, at);
      rows[row + FIELD_END] = at += answer.field.length;
      this.fieldOf[entry] = answer.field;
      this.morePorts[entry] = undefined;
      if (ports > 0) {
        rows[row + FIRST_PORT] = answer.ports[0]!;
        bytes.set(answer.portFields[0]!, at);
        rows[row + FIRST_PORT_END] = at += answer.portFields[0]!.length;
        this.firstPortFieldOf[entry] = answer.portFields[0]!;
        if (ports > 1) {
          const more: number[] = [];
          for (let i = 1; i < ports; i++) {
            const field = answer.portFields[i]!;
            bytes.set(field, at);
            more.push(answer.ports[i]!, at, (at += field.length));
          }
          this.morePorts[entry] = more;
        }
      }
    }
    rows[row + HASH] = hash;
    rows[row + VERSION] = answer.version;
    rows[row + FLAGS] = (answer.hit ? HIT : 0) | (answer.pending ? PENDING : 0) | (ports << 2);
    rows[row + FROM_HI] = highOf(answer.fromNs);
    this.lows[row + FROM_LO] = lowOf(answer.fromNs);
    rows[row + UNTIL_HI] = highOf(answer.untilNs);
    this.lows[row + UNTIL_LO] = lowOf(answer.untilNs);
    return entry;
  }

  /** A new entry with this hash, placed in a slot. */
  private add(hash: number): number {
    const entry = this.size;
    if (2 * (entry + 1) > this.slots.length) this.growSlots();
    if (ROW * (entry + 1) > this.rows.length) {
      const rows = new Int32Array(2 * this.rows.length);
      rows.set(this.rows);
      this.rows = rows;
      this.lows = new Uint32Array(rows.buffer);
    }
    this.rows[ROW * entry + HASH] = hash;
    this.rows[ROW * entry + VERSION] = -1;
    this.rows[ROW * entry + FLAGS] = 0;
    this.fieldOf[entry] = EMPTY;
    this.firstPortFieldOf[entry] = EMPTY;
    this.morePorts[entry] = undefined;
    this.size = entry + 1;
    this.place(hash, entry);
    return entry;
  }

  /** Where n more bytes go in the arena (grown as needed). */
  private reserve(n: number): number {
    const at = this.used;
    if (at + n > this.bytes.length) {
      const bytes = new Uint8Array(Math.max(2 * this.bytes.length, at + n));
      bytes.set(this.bytes.subarray(0, at));
      this.bytes = bytes;
    }
    this.used = at + n;
    return at;
  }

  private place(hash: number, entry: number): void {
    let slot = hash & this.mask;
    while (this.slots[slot] !== 0) slot = (slot + 1) & this.mask;
    this.slots[slot] = entry + 1;
  }

  private growSlots(): void {
    this.slots = new Int32Array(2 * this.slots.length);
    this.mask = this.slots.length - 1;
    for (let entry = 0; entry < this.size; entry++) this.place(this.rows[ROW * entry + HASH]!, entry);
  }
}

/**
 * A hash of key bytes four at a time (FxHash's rotate-xor-multiply, then a murmur3 finish): a
 * container id is 64 bytes, and FNV's multiply per byte was most of a kept end's instructions.
 */
export function hashKey(bytes: Uint8Array, start: number, end: number): number {
  let h = end - start;
  let i = start;
  for (; i + 4 <= end; i += 4) {
    const word = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    h = Math.imul(((h << 5) | (h >>> 27)) ^ word, 0x9e3779b9);
  }
  for (; i < end; i++) h = Math.imul(((h << 5) | (h >>> 27)) ^ bytes[i]!, 0x9e3779b9);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h & 0x3fffffff;
}
