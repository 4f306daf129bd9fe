// What goes to Redis in one commit: the deltas of one or more consecutive batches folded into
// the net writes (a record that began and ended its wait between two commits never reaches
// Redis; an end stored twice is written once), visited in an order whose effect in Redis is the
// state after the last batch.
import type { Delta, End } from './partition.js';

export interface CommitVisitor {
  endDel(end: End): void;
  endPut(end: End, buf: Buffer, start: number, stop: number): void;
  pendingDel(id: number): void;
  pendingPut(id: number, buf: Buffer, start: number, stop: number): void;
}

export class CommitSet {
  /** Each End changed, with the index of its last change in `endOps` (End, buf|undefined, start, end). */
  private readonly ends = new Map<End, number>();
  private readonly endOps: (End | Buffer | number | undefined)[] = [];
  /** Each waiting record id changed: index of its value in `pendingOps` (buf, start, end), or -1 to delete. */
  private readonly pending = new Map<number, number>();
  private readonly pendingOps: (Buffer | number)[] = [];

  clear(): void {
    this.ends.clear();
    this.endOps.length = 0;
    this.pending.clear();
    this.pendingOps.length = 0;
  }

  /** Fields to write or delete. */
  get size(): number {
    return this.ends.size + this.pending.size;
  }

  add(delta: Delta): void {
    const ends = delta.ends;
    for (let i = 0; i < ends.length; i += 4) {
      this.ends.set(ends[i] as End, this.endOps.length);
      this.endOps.push(ends[i], ends[i + 1], ends[i + 2], ends[i + 3]);
    }
    const put = delta.pendingPut;
    for (let i = 0; i < put.length; i += 4) {
      this.pending.set(put[i] as number, this.pendingOps.length);
      this.pendingOps.push(put[i + 1]!, put[i + 2]!, put[i + 3]!);
    }
    for (const id of delta.pendingDel) {
      // Began to wait since the last commit: it never needs to reach Redis.
      if ((this.pending.get(id) ?? -1) >= 0) this.pending.delete(id);
      else this.pending.set(id, -1);
    }
  }

  /**
   * Visits the net writes: end removals before end stores (an end removed and stored again is
   * a new End, so its store must come last), then waiting records.
   */
  visit(v: CommitVisitor): void {
    const ops = this.endOps;
    for (const [end, i] of this.ends) if (ops[i + 1] === undefined) v.endDel(end);
    for (const [end, i] of this.ends) {
      const buf = ops[i + 1];
      if (buf !== undefined) v.endPut(end, buf as Buffer, ops[i + 2] as number, ops[i + 3] as number);
    }
    const p = this.pendingOps;
    for (const [id, i] of this.pending) if (i < 0) v.pendingDel(id);
    for (const [id, i] of this.pending) if (i >= 0) v.pendingPut(id, p[i] as Buffer, p[i + 1] as number, p[i + 2] as number);
  }
}

/** A waiting record's Redis field: its id as 8 bytes, big-endian. */
export function writePendingField(buf: Uint8Array, at: number, id: number): number {
  const high = Math.floor(id / 2 ** 32);
  const low = id >>> 0;
  buf[at] = high >>> 24;
  buf[at + 1] = (high >>> 16) & 255;
  buf[at + 2] = (high >>> 8) & 255;
  buf[at + 3] = high & 255;
  buf[at + 4] = low >>> 24;
  buf[at + 5] = (low >>> 16) & 255;
  buf[at + 6] = (low >>> 8) & 255;
  buf[at + 7] = low & 255;
  return at + 8;
}

export function readPendingField(field: Uint8Array): number {
  if (field.length !== 8) throw new RangeError(`a waiting record's field in Redis is ${field.length} bytes, not 8`);
  const high = ((field[0]! << 24) | (field[1]! << 16) | (field[2]! << 8) | field[3]!) >>> 0;
  const low = ((field[4]! << 24) | (field[5]! << 16) | (field[6]! << 8) | field[7]!) >>> 0;
  return high * 2 ** 32 + low;
}
