// A FlowBatch as received: checked once (exactly what decodeFlowBatch accepts, see validate.ts),
// its records indexed by offset, and read through reusable cursors. No record object is built.
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ContractDecodeError, decodeFlowBatch } from '../codec.js';
import { FlowBatchSchema } from '../gen/kappa/flow/v1/flow_pb.js';
import type { FlowBatch } from '../gen/kappa/flow/v1/flow_pb.js';
import { bufferOf, MessageCursor, readVarint64, skipVarint } from './cursor.js';
import { WireError, WireValidator } from './validate.js';
import { fieldNumbers, messageShape } from './wire-schema.js';

const BATCH = fieldNumbers<FlowBatch>(FlowBatchSchema);
const BATCH_SHAPE = messageShape(FlowBatchSchema);
const RECORD_SHAPE = BATCH_SHAPE.fields[BATCH.records]!.message!;
const EMPTY = new Uint8Array(0);

/**
 * One FlowBatch, by offset. parse() throws ContractDecodeError for exactly the inputs
 * decodeFlowBatch refuses (garbage, truncation, invalid UTF-8, a batch_id with a control
 * character), with the same message. Valid input that is not canonical (fields with unexpected
 * wire types, a message field twice, ...) is re-encoded once by protobuf-es, so offsets always
 * mean what protobuf-es would decode; `normalized` says when that happened.
 */
export class FlowBatchView {
  /** The canonical bytes the offsets point into: the input, or its re-encoding. */
  bytes: Uint8Array = EMPTY;
  /** The bytes as received (what goes to a dead-letter queue). */
  received: Uint8Array = EMPTY;
  /** The input was valid but re-encoded by protobuf-es before indexing. */
  normalized = false;
  length = 0;
  private text: Buffer = bufferOf(EMPTY);
  /** Per record: field start (tag), payload start, payload end. */
  private index = new Int32Array(3 * 1024);
  private batchIdAt = -1;
  private producerAt = -1;
  private createdAt = -1;
  private batchIdCache: string | undefined;
  private readonly validator = new WireValidator();
  private readonly visitTop = (fieldNo: number, tagStart: number, valueStart: number, end: number): void => {
    switch (fieldNo) {
      case BATCH.batchId:
        this.batchIdAt = valueStart;
        break;
      case BATCH.producer:
        this.producerAt = valueStart;
        break;
      case BATCH.createdNs:
        this.createdAt = valueStart;
        break;
      case BATCH.records: {
        if (3 * (this.length + 1) > this.index.length) {
          const grown = new Int32Array(this.index.length * 2);
          grown.set(this.index);
          this.index = grown;
        }
        const at = 3 * this.length++;
        this.index[at] = tagStart;
        this.index[at + 1] = skipVarint(this.bytes, valueStart);
        this.index[at + 2] = end;
        break;
      }
    }
  };

  /** Checks and indexes one received message; the view is reused batch after batch. */
  parse(received: Uint8Array): this {
    this.received = received;
    this.normalized = false;
    if (this.scan(received)) return this;
    // Valid but not canonical (rare: another encoder, or crafted input): protobuf-es decides
    // what it means, and its encoding is what the offsets point into.
    const canonical = toBinary(FlowBatchSchema, fromBinary(FlowBatchSchema, received));
    this.normalized = true;
    if (!this.scan(canonical)) {
      const cause = new Error('the batch is valid but its re-encoding is not canonical');
      throw new ContractDecodeError('kappa.flow.v1.FlowBatch', received.byteLength, { cause });
    }
    return this;
  }

  /** Validates and indexes `bytes`; true when they are canonical. Throws ContractDecodeError. */
  private scan(bytes: Uint8Array): boolean {
    this.bytes = bytes;
    this.text = bufferOf(bytes);
    this.length = 0;
    this.batchIdAt = this.producerAt = this.createdAt = -1;
    this.batchIdCache = undefined;
    try {
      this.validator.check(BATCH_SHAPE, bytes, this.visitTop);
    } catch (error) {
      if (!(error instanceof WireError)) throw error;
      // protobuf-es says why, in the words decodeFlowBatch has always used.
      decodeFlowBatch(bytes);
      // It decoded after all: trust protobuf-es, not this check.
      return false;
    }
    if (this.batchIdHasControlCharacter()) {
      decodeFlowBatch(bytes);
      return false;
    }
    return this.validator.canonical;
  }

  private batchIdHasControlCharacter(): boolean {
    if (this.batchIdAt < 0) return false;
    const start = skipVarint(this.bytes, this.batchIdAt);
    const end = start + lengthAt(this.bytes, this.batchIdAt);
    for (let i = start; i < end; i++) {
      const c = this.bytes[i]!;
      if (c < 0x20 || c === 0x7f) return true;
    }
    return false;
  }

  private stringAt(valueStart: number): string {
    if (valueStart < 0) return '';
    const start = skipVarint(this.bytes, valueStart);
    return this.text.toString('utf8', start, start + lengthAt(this.bytes, valueStart));
  }

  /** batch_id (decoded once per batch). */
  get batchId(): string {
    return (this.batchIdCache ??= this.stringAt(this.batchIdAt));
  }

  get producer(): string {
    return this.stringAt(this.producerAt);
  }

  get createdNs(): bigint {
    return this.createdAt < 0 ? 0n : readVarint64(this.bytes, this.createdAt);
  }

  /** Start of record i's field (its tag): bytes[recordFieldStart(i), recordEnd(i)) is the record as sent. */
  recordFieldStart(i: number): number {
    return this.index[3 * i]!;
  }

  recordStart(i: number): number {
    return this.index[3 * i + 1]!;
  }

  recordEnd(i: number): number {
    return this.index[3 * i + 2]!;
  }

  /** Points `cursor` (a FlowRecord cursor) at record i. */
  record(i: number, cursor: MessageCursor): MessageCursor {
    return cursor.reset(this.bytes, this.index[3 * i + 1]!, this.index[3 * i + 2]!, this.text);
  }

  /** A cursor over FlowRecords (make one per stage and reuse it). */
  static recordCursor(): MessageCursor {
    return new MessageCursor(RECORD_SHAPE);
  }
}

function lengthAt(bytes: Uint8Array, pos: number): number {
  let result = 0;
  let shift = 0;
  for (;;) {
    const b = bytes[pos++]!;
    if (shift < 28) result |= (b & 0x7f) << shift;
    else if (shift === 28) result |= (b & 0x0f) << 28;
    if ((b & 0x80) === 0) return result >>> 0;
    shift += 7;
  }
}
