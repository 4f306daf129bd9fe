// A reusable cursor over one message inside a buffer of canonical protobuf bytes (see
// validate.ts): it finds where each field is, and reads only the fields asked for, with no
// object per message. Point it at a record, or at a nested message through message().
import type { DescMessage } from '@bufbuild/protobuf';
import { messageShape, WIRE_FIXED32, WIRE_FIXED64, WIRE_LENGTH_DELIMITED, WIRE_VARINT } from './wire-schema.js';
import type { MessageShape } from './wire-schema.js';

const EMPTY = new Uint8Array(0);

/** A Buffer over the same memory, for native UTF-8 decoding of string fields. */
export function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Reads a varint at `pos` and returns the position after it (canonical input: in bounds). */
export function skipVarint(bytes: Uint8Array, pos: number): number {
  while ((bytes[pos++]! & 0x80) !== 0) {
    // continuation bytes
  }
  return pos;
}

/** The uint32 value of the varint at `pos`, as protobuf-es's varint32read returns it. */
export function readVarint32(bytes: Uint8Array, pos: number): number {
  let b = bytes[pos++]!;
  if ((b & 0x80) === 0) return b;
  let result = b & 0x7f;
  b = bytes[pos++]!;
  result |= (b & 0x7f) << 7;
  if ((b & 0x80) === 0) return result;
  b = bytes[pos++]!;
  result |= (b & 0x7f) << 14;
  if ((b & 0x80) === 0) return result;
  b = bytes[pos++]!;
  result |= (b & 0x7f) << 21;
  if ((b & 0x80) === 0) return result;
  b = bytes[pos++]!;
  result |= (b & 0x0f) << 28;
  return result >>> 0;
}

/** The uint64 value of the varint at `pos`. */
export function readVarint64(bytes: Uint8Array, pos: number): bigint {
  let lo = 0;
  let hi = 0;
  let b = 0;
  let shift = 0;
  for (; shift < 28; shift += 7) {
    b = bytes[pos++]!;
    lo |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) return BigInt(lo >>> 0);
  }
  b = bytes[pos++]!;
  lo |= (b & 0x0f) << 28;
  hi = (b & 0x70) >> 4;
  if ((b & 0x80) !== 0) {
    for (shift = 3; shift <= 31; shift += 7) {
      b = bytes[pos++]!;
      hi |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) break;
    }
  }
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/**
 * Where each field of one message is. Field numbers the message declares are indexed (the last
 * occurrence wins, as protobuf-es does for singular fields); every occurrence, unknown and
 * repeated ones included, is also listed in wire order, so eachField() and
 * ProtoWriter.copyReplacing() go through a message without reading its bytes again.
 */
export class MessageCursor {
  readonly shape: MessageShape;
  bytes: Uint8Array = EMPTY;
  private text: Buffer = bufferOf(EMPTY);
  /** Start and end of the message's payload in `bytes`. */
  start = 0;
  end = 0;
  /** Per field number: tag start, value start, value end (tag start -1 when absent). */
  private readonly at: Int32Array;
  /**
   * Every field occurrence in wire order: field number, tag start, value start, value end. The
   * next reset() clears only the index entries these name, so a reset costs the fields met, not
   * the fields the message declares.
   */
  fieldList: Int32Array = new Int32Array(4 * 32);
  /** Occurrences in fieldList. */
  fieldCount = 0;
  /** The range fieldList and the index describe (a caller may move bytes/start/end by hand). */
  private indexedBytes: Uint8Array = EMPTY;
  private indexedStart = 0;
  private indexedEnd = 0;

  constructor(schema: DescMessage | MessageShape) {
    this.shape = 'fields' in schema && 'maxField' in schema ? schema : messageShape(schema as DescMessage);
    this.at = new Int32Array(3 * (this.shape.maxField + 1)).fill(-1);
  }

  /** Points the cursor at the message payload bytes[start, end). */
  reset(bytes: Uint8Array, start = 0, end = bytes.length, text?: Buffer): this {
    if (bytes !== this.bytes) {
      this.bytes = bytes;
      this.text = text ?? bufferOf(bytes);
    }
    this.start = this.indexedStart = start;
    this.end = this.indexedEnd = end;
    this.indexedBytes = bytes;
    const at = this.at;
    const maxField = this.shape.maxField;
    let list = this.fieldList;
    for (let k = 4 * this.fieldCount - 4; k >= 0; k -= 4) {
      const f = list[k]!;
      if (f <= maxField) at[3 * f] = -1;
    }
    let n = 0;
    let pos = start;
    // Per record and nested message: one-byte tags and lengths (fields 1-15, values under 128
    // bytes) are read inline; anything longer goes through the general readers.
    while (pos < end) {
      const tagStart = pos;
      let tag = bytes[pos++]!;
      if (tag >= 0x80) {
        tag = readVarint32(bytes, tagStart);
        pos = skipVarint(bytes, tagStart);
      }
      const valueStart = pos;
      const wireType = tag & 7;
      if (wireType === WIRE_LENGTH_DELIMITED) {
        const length = bytes[pos]!;
        pos = length < 0x80 ? pos + 1 + length : skipVarint(bytes, pos) + readVarint32(bytes, pos);
      } else if (wireType === WIRE_VARINT) {
        while (bytes[pos++]! >= 0x80) {
          // continuation bytes
        }
      } else {
        pos = skipValue(bytes, pos, wireType);
      }
      const fieldNo = tag >>> 3;
      if (n === list.length) list = this.growList();
      list[n] = fieldNo;
      list[n + 1] = tagStart;
      list[n + 2] = valueStart;
      list[n + 3] = pos;
      n += 4;
      if (fieldNo <= maxField) {
        const i = 3 * fieldNo;
        at[i] = tagStart;
        at[i + 1] = valueStart;
        at[i + 2] = pos;
      }
    }
    this.fieldCount = n >>> 2;
    return this;
  }

  private growList(): Int32Array {
    const grown = new Int32Array(this.fieldList.length * 2);
    grown.set(this.fieldList);
    this.fieldList = grown;
    return grown;
  }

  /** Empties the cursor (a message that is absent reads as all defaults). */
  clear(): this {
    const list = this.fieldList;
    const maxField = this.shape.maxField;
    for (let k = 4 * this.fieldCount - 4; k >= 0; k -= 4) {
      const f = list[k]!;
      if (f <= maxField) this.at[3 * f] = -1;
    }
    this.fieldCount = 0;
    this.start = this.end = this.indexedStart = this.indexedEnd = 0;
    this.indexedBytes = this.bytes;
    return this;
  }

  /** Whether fieldList describes bytes[start, end) (false after a caller moved them by hand). */
  isIndexed(): boolean {
    return this.bytes === this.indexedBytes && this.start === this.indexedStart && this.end === this.indexedEnd;
  }

  /**
   * Makes sure fieldList describes bytes[start, end): a caller that set `bytes`, `start` or `end`
   * itself (to copy a range without reading its fields) gets it indexed here, once.
   */
  indexed(): this {
    if (!this.isIndexed()) {
      const bytes = this.bytes;
      // reset() keeps `text` when the bytes look unchanged: make it rebuild it for these bytes.
      this.bytes = EMPTY;
      this.reset(bytes, this.start, this.end);
    }
    return this;
  }

  has(field: number): boolean {
    return field <= this.shape.maxField && this.at[3 * field]! >= 0;
  }

  /** Start of the field's tag (the field's bytes as received run from here to fieldEnd), or -1. */
  fieldStart(field: number): number {
    return this.has(field) ? this.at[3 * field]! : -1;
  }

  /** Start of the field's value: for length-delimited fields, of its length prefix. */
  valueStart(field: number): number {
    return this.has(field) ? this.at[3 * field + 1]! : -1;
  }

  fieldEnd(field: number): number {
    return this.has(field) ? this.at[3 * field + 2]! : -1;
  }

  /** Payload start of a length-delimited field (after its length), or -1. */
  payloadStart(field: number): number {
    return this.has(field) ? skipVarint(this.bytes, this.at[3 * field + 1]!) : -1;
  }

  uint32(field: number): number {
    return this.has(field) ? readVarint32(this.bytes, this.at[3 * field + 1]!) : 0;
  }

  /** int32 and enum fields. */
  int32(field: number): number {
    return this.uint32(field) | 0;
  }

  /** uint64 fields, as protobuf-es gives them (bigint). */
  uint64(field: number): bigint {
    return this.has(field) ? readVarint64(this.bytes, this.at[3 * field + 1]!) : 0n;
  }

  bool(field: number): boolean {
    if (!this.has(field)) return false;
    const bytes = this.bytes;
    const start = this.at[3 * field + 1]!;
    const end = this.at[3 * field + 2]!;
    // As protobuf-es: any of the 64 value bits set (the 10th byte contributes one bit).
    for (let pos = start; pos < end; pos++) {
      const bits = pos - start === 9 ? bytes[pos]! & 0x01 : bytes[pos]! & 0x7f;
      if (bits !== 0) return true;
    }
    return false;
  }

  /** A string field decoded (one string allocated); '' when absent. */
  string(field: number): string {
    if (!this.has(field)) return '';
    const start = this.payloadStart(field);
    return this.text.toString('utf8', start, this.at[3 * field + 2]!);
  }

  /** A string field through an interner: equal bytes give the same string, allocated once. */
  interned(field: number, interner: { intern(bytes: Uint8Array, start: number, end: number): string }): string {
    if (!this.has(field)) return '';
    return interner.intern(this.bytes, this.payloadStart(field), this.at[3 * field + 2]!);
  }

  /** Whether a varint field is absent or zero (no bigint made). */
  isZero(field: number): boolean {
    if (!this.has(field)) return true;
    const bytes = this.bytes;
    const end = this.at[3 * field + 2]!;
    const start = this.at[3 * field + 1]!;
    for (let pos = start; pos < end; pos++) {
      const bits = pos - start === 9 ? bytes[pos]! & 0x01 : bytes[pos]! & 0x7f;
      if (bits !== 0) return false;
    }
    return true;
  }

  /** Byte length of a string or bytes field's payload (0 when absent). */
  byteLength(field: number): number {
    return this.has(field) ? this.at[3 * field + 2]! - this.payloadStart(field) : 0;
  }

  /** Whether a string or bytes field holds exactly `expected` (compared as bytes). */
  equalsBytes(field: number, expected: Uint8Array): boolean {
    if (!this.has(field)) return expected.length === 0;
    const start = this.payloadStart(field);
    const end = this.at[3 * field + 2]!;
    if (end - start !== expected.length) return false;
    const bytes = this.bytes;
    for (let i = 0; i < expected.length; i++) if (bytes[start + i] !== expected[i]) return false;
    return true;
  }

  /** Whether a string field starts with the ASCII text `prefix`. */
  startsWithAscii(field: number, prefix: string): boolean {
    if (!this.has(field)) return prefix.length === 0;
    const start = this.payloadStart(field);
    if (this.at[3 * field + 2]! - start < prefix.length) return false;
    for (let i = 0; i < prefix.length; i++) if (this.bytes[start + i] !== prefix.charCodeAt(i)) return false;
    return true;
  }

  /** Whether a string field is exactly the ASCII text `text`. */
  equalsAscii(field: number, text: string): boolean {
    return this.byteLength(field) === text.length && this.startsWithAscii(field, text);
  }

  /**
   * Points `into` at the nested message of a message field; an absent field leaves `into` empty
   * (reading defaults). Returns whether the field is present.
   */
  message(field: number, into: MessageCursor): boolean {
    if (!this.has(field)) {
      into.clear();
      return false;
    }
    into.reset(this.bytes, this.payloadStart(field), this.at[3 * field + 2]!, this.text);
    return true;
  }

  /**
   * Calls `visit` for every field in wire order, unknown and repeated ones included. Hoist the
   * callback out of the record loop: then nothing is allocated.
   */
  eachField(visit: (fieldNo: number, tagStart: number, valueStart: number, end: number) => void): void {
    this.indexed();
    const list = this.fieldList;
    const n = 4 * this.fieldCount;
    for (let k = 0; k < n; k += 4) visit(list[k]!, list[k + 1]!, list[k + 2]!, list[k + 3]!);
  }
}

/** Skips one value of a canonical field (groups only in unknown fields, skipped by their tags). */
export function skipValue(bytes: Uint8Array, pos: number, wireType: number): number {
  switch (wireType) {
    case WIRE_VARINT:
      return skipVarint(bytes, pos);
    case WIRE_FIXED64:
      return pos + 8;
    case WIRE_FIXED32:
      return pos + 4;
    case WIRE_LENGTH_DELIMITED: {
      const length = readVarint32(bytes, pos);
      return skipVarint(bytes, pos) + length;
    }
    default: {
      // A group (wire type 3) in an unknown field: skip nested tags up to the matching end tag.
      let depth = 1;
      while (depth > 0) {
        const tag = readVarint32(bytes, pos);
        pos = skipVarint(bytes, pos);
        const wt = tag & 7;
        if (wt === 3) depth++;
        else if (wt === 4) depth--;
        else pos = skipValue(bytes, pos, wt);
      }
      return pos;
    }
  }
}
