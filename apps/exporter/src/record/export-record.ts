// One exported record read in place: cursors over the record and its nested messages (each end's
// Endpoint, Process and Kube, the TCP and latency stats), pointed at a record of a FlowBatchView
// and re-pointed at the next one; nested cursors are only positioned when a sink asks for them.
// 64-bit fields are read as two 32-bit halves, so no bigint is made per value.
import { FlowBatchView, FlowFields, MessageCursor, skipVarint } from '@kappa/contracts';
import type { MessageShape } from '@kappa/contracts';

const F = FlowFields.FlowRecord;
const E = FlowFields.Endpoint;

/** The cursors of one end (src or dst) of the record. */
export class EndCursors {
  constructor(
    readonly endpoint: MessageCursor,
    readonly process: MessageCursor,
    readonly kube: MessageCursor,
  ) {}
}

function nestedShape(parent: MessageShape, field: number): MessageShape {
  const shape = parent.fields[field]?.message;
  if (!shape) throw new Error(`${parent.typeName} field ${field} is not a message`);
  return shape;
}

export class ExportRecord {
  readonly record = FlowBatchView.recordCursor();
  readonly src: EndCursors;
  readonly dst: EndCursors;
  private readonly tcpCursor: MessageCursor;
  private readonly latencyCursor: MessageCursor;
  private readonly dnsCursor: MessageCursor;
  private readonly dropsCursor: MessageCursor;
  /** Which nested cursors point into the current record (bit per cursor). */
  private loaded = 0;

  constructor() {
    const endpoint = nestedShape(this.record.shape, F.src);
    const process = nestedShape(endpoint, E.process);
    const kube = nestedShape(endpoint, E.kube);
    const end = () => new EndCursors(new MessageCursor(endpoint), new MessageCursor(process), new MessageCursor(kube));
    this.src = end();
    this.dst = end();
    this.tcpCursor = new MessageCursor(nestedShape(this.record.shape, F.tcp));
    this.latencyCursor = new MessageCursor(nestedShape(this.record.shape, F.appLatency));
    this.dnsCursor = new MessageCursor(nestedShape(this.record.shape, F.dns));
    this.dropsCursor = new MessageCursor(nestedShape(this.record.shape, F.drops));
  }

  /** Points at record i of the view. */
  load(view: FlowBatchView, i: number): this {
    view.record(i, this.record);
    this.loaded = 0;
    return this;
  }

  /** The src (initiator) or dst (responder) end; absent parts read as defaults. */
  end(side: 'src' | 'dst'): EndCursors {
    const bit = side === 'src' ? 1 : 2;
    const end = side === 'src' ? this.src : this.dst;
    if ((this.loaded & bit) === 0) {
      this.loaded |= bit;
      this.record.message(side === 'src' ? F.src : F.dst, end.endpoint);
      end.endpoint.message(E.process, end.process);
      end.endpoint.message(E.kube, end.kube);
    }
    return end;
  }

  get tcp(): MessageCursor {
    return this.nested(4, F.tcp, this.tcpCursor);
  }

  get appLatency(): MessageCursor {
    return this.nested(8, F.appLatency, this.latencyCursor);
  }

  /** The record's DNS exchanges (an empty cursor when it has none). */
  get dns(): MessageCursor {
    return this.nested(16, F.dns, this.dnsCursor);
  }

  /** What the kernel dropped of the conversation (an empty cursor when nothing). */
  get drops(): MessageCursor {
    return this.nested(32, F.drops, this.dropsCursor);
  }

  /** A nested message's cursor, positioned on first use in this record (`bit` marks it done). */
  private nested(bit: number, field: number, cursor: MessageCursor): MessageCursor {
    if ((this.loaded & bit) === 0) {
      this.loaded |= bit;
      this.record.message(field, cursor);
    }
    return cursor;
  }
}

/** The halves of the last uint64 read by readUint64 (module state: no allocation per value). */
export const u64 = { lo: 0, hi: 0 };

/** Reads a uint64 field into u64.lo / u64.hi (0 when absent). */
export function readUint64(cursor: MessageCursor, field: number): void {
  const at = cursor.valueStart(field);
  u64.lo = 0;
  u64.hi = 0;
  if (at < 0) return;
  const bytes = cursor.bytes;
  let lo = 0;
  let hi = 0;
  let pos = at;
  let b = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    b = bytes[pos++]!;
    lo |= (b & 0x7f) << shift;
    if (b < 0x80) {
      u64.lo = lo >>> 0;
      return;
    }
  }
  b = bytes[pos++]!;
  lo |= (b & 0x0f) << 28;
  hi = (b & 0x70) >> 4;
  if (b >= 0x80) {
    for (let shift = 3; shift <= 31; shift += 7) {
      b = bytes[pos++]!;
      hi |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
  }
  u64.lo = lo >>> 0;
  u64.hi = hi >>> 0;
}

/** A uint64 field as a number (rounded above 2^53, as Number(bigint) rounds). */
export function uint64Number(cursor: MessageCursor, field: number): number {
  readUint64(cursor, field);
  return u64.hi * 4294967296 + u64.lo;
}

/** u64 ← floor(u64 / divisor) for a divisor below 2^21 (ns → ms), exactly: long division in 16-bit limbs. */
export function divideUint64(divisor: number): void {
  let current = u64.hi >>> 16;
  const q3 = Math.floor(current / divisor);
  current = (current - q3 * divisor) * 65536 + (u64.hi & 0xffff);
  const q2 = Math.floor(current / divisor);
  current = (current - q2 * divisor) * 65536 + (u64.lo >>> 16);
  const q1 = Math.floor(current / divisor);
  current = (current - q1 * divisor) * 65536 + (u64.lo & 0xffff);
  const q0 = Math.floor(current / divisor);
  u64.hi = ((q3 << 16) | q2) >>> 0;
  u64.lo = ((q1 << 16) | q0) >>> 0;
}

/** Payload range of a string or bytes field: [stringStart, stringEnd); both 0 when absent. */
export function stringStart(cursor: MessageCursor, field: number): number {
  const at = cursor.valueStart(field);
  return at < 0 ? 0 : skipVarint(cursor.bytes, at);
}

export function stringEnd(cursor: MessageCursor, field: number): number {
  const end = cursor.fieldEnd(field);
  return end < 0 ? 0 : end;
}
