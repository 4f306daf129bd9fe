// A FlowBatch read by offset (its id, its created_ns bytes, where each record is) and the joiner's
// output batch written into one buffer: header first, then each record as the join writes it,
// cut into parts under the server's max_payload only when it must be, the same way every time.
import { ByteWriter, FieldCursor, readString, WIRE_LEN, WIRE_VARINT } from './wire.js';

const BATCH = { id: 1, producer: 2, createdNs: 3, records: 4 } as const;

export class BatchReader {
  buf: Uint8Array = new Uint8Array(0);
  batchId = '';
  /** The created_ns varint's bytes in `buf` (start = end when absent). */
  createdStart = 0;
  createdEnd = 0;
  /** [start, end) of each record, in order. */
  ranges = new Int32Array(2 * 1024);
  count = 0;
  private readonly cursor = new FieldCursor();

  read(buf: Uint8Array): this {
    this.buf = buf;
    this.batchId = '';
    this.createdStart = this.createdEnd = 0;
    this.count = 0;
    const c = this.cursor.reset(buf, 0, buf.length);
    while (c.next()) {
      if (c.field === BATCH.records && c.wireType === WIRE_LEN) {
        if (2 * this.count + 2 > this.ranges.length) {
          const grown = new Int32Array(this.ranges.length * 2);
          grown.set(this.ranges);
          this.ranges = grown;
        }
        this.ranges[2 * this.count] = c.valueStart;
        this.ranges[2 * this.count + 1] = c.valueEnd;
        this.count++;
      } else if (c.field === BATCH.id && c.wireType === WIRE_LEN) {
        this.batchId = readString(buf, c.valueStart, c.valueEnd);
      } else if (c.field === BATCH.createdNs && c.wireType === WIRE_VARINT) {
        this.createdStart = c.valueStart;
        this.createdEnd = c.valueEnd;
      }
    }
    return this;
  }
}

/** Room kept under max_payload for the message headers (Nats-Msg-Id and the rest). */
const HEADER_ROOM = 4096;

export interface OutputPart {
  id: string;
  bytes: Uint8Array;
}

/**
 * One output batch: `begin` writes the header, the join appends records to `writer` (each a
 * FlowBatch.records field), `finish` returns the message(s) to publish. A fresh buffer per
 * batch: a publish may still hold the previous one.
 */
export class OutputBatch {
  writer = new ByteWriter(16 * 1024);
  private headerEnd = 0;
  private id = '';
  private producer = '';
  private created: Uint8Array = new Uint8Array(0);

  begin(id: string, producer: string, input: BatchReader | undefined, sizeHint: number): ByteWriter {
    this.writer = new ByteWriter(Math.max(1024, sizeHint));
    this.id = id;
    this.producer = producer;
    this.created = input && input.createdEnd > input.createdStart ? input.buf.slice(input.createdStart, input.createdEnd) : new Uint8Array(0);
    this.writeHeader(this.writer, id);
    this.headerEnd = this.writer.pos;
    return this.writer;
  }

  private writeHeader(w: ByteWriter, id: string): void {
    w.stringField(BATCH.id, id).stringField(BATCH.producer, this.producer);
    if (this.created.length > 0) w.tag(BATCH.createdNs, WIRE_VARINT).copy(this.created, 0, this.created.length);
  }

  get recordBytes(): number {
    return this.writer.pos - this.headerEnd;
  }

  /**
   * The message(s) to publish: the whole batch under its id when it fits `maxPayload`, else
   * parts `<id>/<i>` of consecutive records, each as full as it may be.
   */
  finish(maxPayload: number): OutputPart[] {
    const w = this.writer;
    const limit = Math.max(1024, maxPayload - HEADER_ROOM);
    if (w.pos <= limit) return [{ id: this.id, bytes: w.buf.subarray(0, w.pos) }];
    const parts: OutputPart[] = [];
    const records = new FieldCursor().reset(w.buf, this.headerEnd, w.pos);
    let partStart = this.headerEnd;
    let partEnd = this.headerEnd;
    const flush = () => {
      const id = `${this.id}/${parts.length}`;
      const out = new ByteWriter(partEnd - partStart + 256);
      this.writeHeader(out, id);
      out.copy(w.buf, partStart, partEnd);
      parts.push({ id, bytes: out.buf.subarray(0, out.pos) });
    };
    while (records.next()) {
      const headerSize = this.headerEnd + 16;
      if (records.pos - records.tagStart + headerSize > limit) {
        throw new RangeError(`one flow record of ${records.pos - records.tagStart} bytes is larger than max_payload ${maxPayload}`);
      }
      if (partEnd > partStart && records.pos - partStart + headerSize > limit) {
        flush();
        partStart = records.tagStart;
      }
      partEnd = records.pos;
    }
    if (partEnd > partStart) flush();
    return parts;
  }
}
