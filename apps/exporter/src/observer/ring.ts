// The Observer's memory of recent flows: the records' bytes as received, in one arena that grows
// up to a byte limit and then wraps, with a fixed number of slots, trimmed by age. Holding bytes
// instead of decoded records keeps ~100 000 records as one buffer outside the JS heap (no objects
// for the garbage collector to copy); a record is decoded only when a client reads it.
import { FlowRecordSchema, fromBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';

export interface BufferedFlow {
  record: FlowRecord;
  /** When the exporter received it, unix ns. */
  receivedNs: bigint;
}

export type FlowListener = (flow: BufferedFlow) => void;

const INITIAL_ARENA_BYTES = 1024 * 1024;

export class FlowRing {
  private arena: Buffer;
  /** Per slot: where the record's bytes are in the arena, and when it arrived (unix ns). */
  private readonly starts: Int32Array;
  private readonly lengths: Int32Array;
  private readonly received: BigInt64Array;
  /** Index of the oldest slot. */
  private head = 0;
  private count = 0;
  /** Where the next record's bytes go. */
  private tail = 0;
  private readonly listeners = new Set<FlowListener>();
  /** Records larger than the whole buffer, not kept. */
  tooLarge = 0;

  constructor(
    readonly capacity: number,
    /** Entries older than this are dropped. */
    private readonly retentionNs: bigint,
    /** The arena grows up to this many bytes, then the oldest records make room. */
    readonly maxBytes = 128 * 1024 * 1024,
  ) {
    this.starts = new Int32Array(capacity);
    this.lengths = new Int32Array(capacity);
    this.received = new BigInt64Array(capacity);
    this.arena = Buffer.allocUnsafe(Math.min(maxBytes, INITIAL_ARENA_BYTES));
  }

  get size(): number {
    return this.count;
  }

  /** Bytes of record data held. */
  get bytes(): number {
    let n = 0;
    for (let i = 0; i < this.count; i++) n += this.lengths[(this.head + i) % this.capacity]!;
    return n;
  }

  /** Copies the record bytes[start, end) in; it arrived at receivedNs (one bigint per batch). */
  push(bytes: Uint8Array, start: number, end: number, receivedNs: bigint): void {
    const length = end - start;
    if (length > this.maxBytes) {
      this.tooLarge++;
      return;
    }
    if (this.tail + length > this.arena.length) {
      if (this.arena.length < this.maxBytes) this.grow(this.tail + length);
      // Full size: records never straddle the end, the next one starts over at 0.
      if (this.tail + length > this.arena.length) this.tail = 0;
    }
    // The oldest records make room: by slot count, and where their bytes are overwritten.
    if (this.count === this.capacity) this.dropOldest();
    while (this.count > 0) {
      const oldest = this.starts[this.head]!;
      if (oldest >= this.tail + length || oldest + this.lengths[this.head]! <= this.tail) break;
      this.dropOldest();
    }
    const at = this.tail;
    if (length < 64) for (let i = 0; i < length; i++) this.arena[at + i] = bytes[start + i]!;
    else this.arena.set(bytes.subarray(start, end), at);
    const slot = (this.head + this.count) % this.capacity;
    this.starts[slot] = at;
    this.lengths[slot] = length;
    this.received[slot] = receivedNs;
    this.count++;
    this.tail = at + length;
    if (this.listeners.size > 0) {
      const flow = this.flowAt(slot);
      for (const listener of this.listeners) listener(flow);
    }
  }

  private grow(need: number): void {
    // Not wrapped yet (the arena only wraps at full size): the records are arena[0, tail).
    let size = this.arena.length * 2;
    while (size < need) size *= 2;
    const grown = Buffer.allocUnsafe(Math.min(size, this.maxBytes));
    this.arena.copy(grown, 0, 0, this.tail);
    this.arena = grown;
  }

  private dropOldest(): void {
    this.head = (this.head + 1) % this.capacity;
    this.count--;
  }

  /** Drops entries older than the retention, relative to now. */
  trim(nowNs: bigint): void {
    const oldest = nowNs - this.retentionNs;
    while (this.count > 0 && this.received[this.head]! < oldest) this.dropOldest();
  }

  private flowAt(slot: number): BufferedFlow {
    const start = this.starts[slot]!;
    return {
      record: fromBinary(FlowRecordSchema, this.arena.subarray(start, start + this.lengths[slot]!)),
      receivedNs: this.received[slot]!,
    };
  }

  /** The buffered flows received at or after sinceNs, oldest first, decoded as they are read. */
  *since(sinceNs: bigint): Generator<BufferedFlow> {
    // A snapshot of the slots: records pushed while the caller iterates are not visited.
    const head = this.head;
    const count = this.count;
    for (let i = 0; i < count; i++) {
      const slot = (head + i) % this.capacity;
      if (this.received[slot]! >= sinceNs) yield this.flowAt(slot);
    }
  }

  subscribe(listener: FlowListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
