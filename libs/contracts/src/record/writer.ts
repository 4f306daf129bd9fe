// Writes protobuf bytes into one growing buffer: scalar fields, byte ranges copied from a
// received message, pre-encoded fragments, and nested messages whose length prefix is patched
// when they end. FlowBatchWriter builds FlowBatches from records this way and splits them under a
// size limit as it goes, so nothing is encoded twice.
import { FlowBatchSchema } from '../gen/kappa/flow/v1/flow_pb.js';
import type { FlowBatch } from '../gen/kappa/flow/v1/flow_pb.js';
import { bufferOf } from './cursor.js';
import type { MessageCursor } from './cursor.js';
import type { FlowBatchView } from './batch-view.js';
import { fieldNumbers, WIRE_LENGTH_DELIMITED, WIRE_VARINT } from './wire-schema.js';

const copyBytes = Buffer.prototype.copy;

/** Bytes a varint of this non-negative integer takes (exact up to 2^53). */
export function varintSize(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  let size = 5;
  for (let v = Math.floor(value / 0x800000000); v > 0; v = Math.floor(v / 0x80)) size++;
  return size;
}

/** A field as a standalone fragment (tag, length and payload), ready to be spliced in. */
export function encodeField(field: number, message: Uint8Array): Uint8Array {
  const w = new ProtoWriter(message.length + 8);
  w.bytesField(field, message, true);
  return w.finish();
}

export class ProtoWriter {
  buf: Uint8Array;
  pos = 0;
  private text: Buffer;

  constructor(initialBytes = 64 * 1024) {
    this.buf = new Uint8Array(Math.max(64, initialBytes));
    this.text = bufferOf(this.buf);
  }

  /** Makes room for n more bytes. */
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
    this.text = bufferOf(grown);
  }

  /** Forgets what was written; the buffer is kept for the next use. */
  reset(): void {
    this.pos = 0;
  }

  /** A copy of what was written. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  varint32(value: number): void {
    this.ensure(5);
    const buf = this.buf;
    let v = value >>> 0;
    while (v >= 0x80) {
      buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[this.pos++] = v;
  }

  varint64(value: bigint): void {
    this.ensure(10);
    const buf = this.buf;
    let v = BigInt.asUintN(64, value);
    if (v < 0x80000000n) {
      this.varint32(Number(v));
      return;
    }
    while (v >= 0x80n) {
      buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    buf[this.pos++] = Number(v);
  }

  tag(field: number, wireType: number): void {
    this.varint32(((field << 3) | wireType) >>> 0);
  }

  /** A uint32 / int32 / enum field; zero is not written (proto3 implicit presence). */
  uint32Field(field: number, value: number): void {
    if (value === 0) return;
    this.tag(field, WIRE_VARINT);
    if (value < 0) this.varint64(BigInt(value));
    else this.varint32(value);
  }

  uint64Field(field: number, value: bigint): void {
    if (value === 0n) return;
    this.tag(field, WIRE_VARINT);
    this.varint64(value);
  }

  boolField(field: number, value: boolean): void {
    if (!value) return;
    this.tag(field, WIRE_VARINT);
    this.buf[this.pos++] = 1;
  }

  stringField(field: number, value: string): void {
    if (value.length === 0) return;
    const mark = this.begin(field, value.length < 0x80 ? 1 : 2);
    this.ensure(3 * value.length);
    this.pos += this.text.write(value, this.pos, 'utf8');
    this.end(mark);
  }

  /** A bytes, string or message field from its payload bytes; empty ones only when `always`. */
  bytesField(field: number, payload: Uint8Array, always = false): void {
    if (payload.length === 0 && !always) return;
    this.tag(field, WIRE_LENGTH_DELIMITED);
    this.varint32(payload.length);
    this.raw(payload);
  }

  /** Copies bytes[start, end) as they are: a received field, a pre-encoded fragment. */
  raw(bytes: Uint8Array, start = 0, end = bytes.length): void {
    const n = end - start;
    if (n <= 0) return;
    this.ensure(n);
    if (n < 32) {
      const buf = this.buf;
      const pos = this.pos;
      for (let i = 0; i < n; i++) buf[pos + i] = bytes[start + i]!;
    } else if (start === 0 && end === bytes.length) {
      this.buf.set(bytes, this.pos);
    } else {
      // Buffer's copy takes any Uint8Array and makes no object: a view per copy was 62 % of the
      // bytes the joiner allocated (2026-12-06), and a Buffer's subarray also runs its species
      // constructor, which costs more than the copy.
      copyBytes.call(bytes, this.buf, this.pos, start, end);
    }
    this.pos += n;
  }

  /**
   * Starts a length-delimited field (a nested message, a string written in pieces); returns the
   * mark end() needs. `reserve` is the length prefix's expected size: a wrong guess costs a move.
   */
  begin(field: number, reserve = 2): number {
    this.tag(field, WIRE_LENGTH_DELIMITED);
    this.ensure(reserve);
    const mark = this.pos * 8 + reserve;
    this.pos += reserve;
    return mark;
  }

  /** Ends the field begin() started: writes its length, moving the payload if the prefix size differs. */
  end(mark: number): void {
    const reserve = mark & 7;
    const lengthAt = (mark - reserve) / 8;
    const payloadStart = lengthAt + reserve;
    const length = this.pos - payloadStart;
    const size = varintSize(length);
    if (size !== reserve) {
      this.ensure(size - reserve);
      this.buf.copyWithin(lengthAt + size, payloadStart, this.pos);
      this.pos += size - reserve;
    }
    const buf = this.buf;
    let at = lengthAt;
    let v = length;
    while (v >= 0x80) {
      buf[at++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[at] = v;
  }

  /**
   * Copies the message under `cursor` field by field in wire order, leaving out every occurrence
   * of the fields in `replaced` (ascending field numbers), and calls `emit(field)` where each of
   * them belongs: at its first occurrence, or before the first field with a higher number, or at
   * the end. Runs of kept fields are copied in one piece. Hoist `emit`: then nothing is allocated.
   */
  copyReplacing(cursor: MessageCursor, replaced: readonly number[], emit: (field: number) => void): void {
    // A cursor reset() over these bytes lists every field occurrence in wire order: no second
    // walk. One whose bytes or range a caller moved by hand is indexed here first.
    cursor.indexed();
    const bytes = cursor.bytes;
    const list = cursor.fieldList;
    const count = 4 * cursor.fieldCount;
    const replacedCount = replaced.length;
    let next = 0;
    let runStart = -1;
    let runEnd = -1;
    for (let k = 0; k < count; k += 4) {
      const fieldNo = list[k]!;
      const tagStart = list[k + 1]!;
      const end = list[k + 3]!;
      let isReplaced = false;
      for (let i = 0; i < replacedCount; i++) {
        if (replaced[i] === fieldNo) {
          isReplaced = true;
          break;
        }
      }
      if (!isReplaced && (next >= replacedCount || replaced[next]! > fieldNo)) {
        if (runEnd !== tagStart) {
          if (runStart >= 0) this.raw(bytes, runStart, runEnd);
          runStart = tagStart;
        }
        runEnd = end;
        continue;
      }
      if (runStart >= 0) this.raw(bytes, runStart, runEnd);
      runStart = runEnd = -1;
      while (next < replacedCount && replaced[next]! <= fieldNo) {
        const field = replaced[next++]!;
        // A replaced field met again later (out of order) is dropped, not emitted twice.
        emit(field);
      }
      if (!isReplaced) {
        runStart = tagStart;
        runEnd = end;
      }
    }
    if (runStart >= 0) this.raw(bytes, runStart, runEnd);
    while (next < replacedCount) emit(replaced[next++]!);
  }
}

/** An output batch part: its Nats-Msg-Id and bytes (a view into the writer's buffer). */
export interface EncodedBatch {
  /** Index of the batch this part belongs to, in the order open() was called. */
  readonly batch: number;
  readonly id: string;
  readonly bytes: Uint8Array;
  readonly records: number;
}

/** A record that does not fit a message on its own, however the batch is split. */
export class RecordTooLargeError extends Error {
  override readonly name = 'RecordTooLargeError';
  constructor(
    readonly recordBytes: number,
    readonly maxBytes: number,
  ) {
    super(`a flow record of ${recordBytes} bytes does not fit a message of at most ${maxBytes} bytes (NATS max_payload minus room for headers)`);
  }
}

const BATCH = fieldNumbers<FlowBatch>(FlowBatchSchema);

interface OpenBatch {
  index: number;
  id: string;
  idBytes: number;
  producer: string;
  createdNs: bigint;
  maxBytes: number;
  /** The largest trailer (batch_id `<id>/<n>`, producer, created_ns) the current part can get. */
  trailerRoom: number;
  /** Offsets of the parts closed so far: [start, end, records] each. */
  parts: number[];
  partStart: number;
  partRecords: number;
}

/**
 * Writes FlowBatches into one buffer. Records are written (copied or built field by field) one
 * after the other; when a record makes the part larger than maxBytes, the part is closed before
 * that record and the record moves into the next part: parts carry the ids `<id>/<n>`, a batch
 * that fits carries `<id>`, so the same input always yields the same parts. The batch's own
 * fields (batch_id, producer, created_ns) are written after its records, where each part's id is
 * known; protobuf does not care about field order.
 */
export class FlowBatchWriter extends ProtoWriter {
  private current: OpenBatch | undefined;
  private readonly closed: { batch: number; id: string; start: number; end: number; records: number }[] = [];
  private batches = 0;
  private recordMark = -1;
  private recordStart = -1;

  /** Starts a batch (closing the one before). `maxBytes` bounds each message's size. */
  open(header: { batchId: string; producer: string; createdNs: bigint }, maxBytes: number): number {
    this.close();
    const index = this.batches++;
    this.current = {
      index,
      id: header.batchId,
      idBytes: Buffer.byteLength(header.batchId),
      producer: header.producer,
      createdNs: header.createdNs,
      maxBytes,
      trailerRoom: 0,
      parts: [],
      partStart: this.pos,
      partRecords: 0,
    };
    this.current.trailerRoom = this.trailerRoom(this.current);
    return index;
  }

  /** Whether a batch is open (records may be written). */
  get isOpen(): boolean {
    return this.current !== undefined;
  }

  /** Copies record i of a batch view as it is (tag, length and payload). */
  copyRecord(view: FlowBatchView, i: number): void {
    this.startRecord();
    this.raw(view.bytes, view.recordFieldStart(i), view.recordEnd(i));
    this.finishRecord();
  }

  /** Writes one record from its encoded payload (e.g. toBinary(FlowRecordSchema, record)). */
  recordBytes(payload: Uint8Array): void {
    this.startRecord();
    this.bytesField(BATCH.records, payload, true);
    this.finishRecord();
  }

  /** Starts a record built field by field (e.g. with copyReplacing); endRecord() ends it. */
  beginRecord(): void {
    this.startRecord();
    // Two length bytes: records of 128 B – 16 KiB (all of ours) need no move when they end.
    this.recordMark = this.begin(BATCH.records, 2);
  }

  endRecord(): void {
    this.end(this.recordMark);
    this.recordMark = -1;
    this.finishRecord();
  }

  private startRecord(): void {
    if (!this.current) throw new Error('FlowBatchWriter: open() a batch before writing records');
    this.recordStart = this.pos;
  }

  /** Bytes of the trailer of the batch's current part at most: its id may become `<id>/<n>`. */
  private trailerRoom(batch: OpenBatch): number {
    const idBytes = batch.idBytes + 1 + String(batch.parts.length / 3 + 1).length;
    const producer = Buffer.byteLength(batch.producer);
    return (
      1 + varintSize(idBytes) + idBytes +
      (producer > 0 ? 1 + varintSize(producer) + producer : 0) +
      (batch.createdNs > 0n ? 11 : 0)
    );
  }

  private finishRecord(): void {
    const batch = this.current!;
    const recordStart = this.recordStart;
    const recordBytes = this.pos - recordStart;
    const size = this.pos - batch.partStart + batch.trailerRoom;
    if (size <= batch.maxBytes) {
      batch.partRecords++;
      return;
    }
    if (batch.partRecords === 0) {
      this.pos = recordStart;
      throw new RecordTooLargeError(recordBytes, batch.maxBytes);
    }
    // Close the part before this record, then move the record behind the part's trailer.
    const record = this.buf.slice(recordStart, this.pos);
    this.pos = recordStart;
    this.closePart(batch, `${batch.id}/${batch.parts.length / 3}`);
    batch.trailerRoom = this.trailerRoom(batch);
    batch.partStart = this.pos;
    this.raw(record);
    batch.partRecords = 1;
    if (this.pos - batch.partStart + batch.trailerRoom > batch.maxBytes) {
      throw new RecordTooLargeError(recordBytes, batch.maxBytes);
    }
  }

  private closePart(batch: OpenBatch, id: string): void {
    this.stringField(BATCH.batchId, id);
    this.stringField(BATCH.producer, batch.producer);
    this.uint64Field(BATCH.createdNs, batch.createdNs);
    batch.parts.push(batch.partStart, this.pos, batch.partRecords);
  }

  /** Closes the open batch (if any): its last part gets its trailer. */
  close(): void {
    const batch = this.current;
    if (!batch) return;
    this.current = undefined;
    const single = batch.parts.length === 0;
    this.closePart(batch, single ? batch.id : `${batch.id}/${batch.parts.length / 3}`);
    for (let p = 0; p < batch.parts.length; p += 3) {
      this.closed.push({
        batch: batch.index,
        id: single ? batch.id : `${batch.id}/${p / 3}`,
        start: batch.parts[p]!,
        end: batch.parts[p + 1]!,
        records: batch.parts[p + 2]!,
      });
    }
  }

  /** Every part written since the last reset, in order; views into this writer's buffer. */
  parts(): EncodedBatch[] {
    this.close();
    return this.closed.map((p) => ({ batch: p.batch, id: p.id, bytes: this.buf.subarray(p.start, p.end), records: p.records }));
  }

  override reset(): void {
    super.reset();
    this.current = undefined;
    this.closed.length = 0;
    this.batches = 0;
  }
}
