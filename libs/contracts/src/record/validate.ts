// A check of protobuf bytes that accepts exactly what protobuf-es's fromBinary accepts, without
// building objects: the same readers for the same declared field kinds (protobuf-es reads a known
// field by its declared type whatever the tag's wire type says), the same bounds, varint, tag,
// group and UTF-8 rules. It also tells whether the bytes are *canonical*: every known field with
// the wire type an encoder writes, every nested message ending where its length says, no singular
// message field twice, map entries of exactly one key and one value, no key twice. Only canonical
// bytes are read and spliced by offset; anything else is first re-encoded by protobuf-es, so the
// record view always means what protobuf-es would have decoded.
import { isUtf8 } from 'node:buffer';
import { FastRead, ReadKind, WIRE_END_GROUP, WIRE_FIXED32, WIRE_FIXED64, WIRE_LENGTH_DELIMITED, WIRE_START_GROUP, WIRE_VARINT } from './wire-schema.js';
import type { FieldShape, MessageShape } from './wire-schema.js';

/** protobuf-es's default recursion limit (makeReadContext). */
const RECURSION_LIMIT = 100;
/** More map entries than this in one message: not checked for repeated keys here (non-canonical). */
const MAX_CHECKED_MAP_ENTRIES = 64;

let visits = 0;

/** The bytes are not a valid message (fromBinary would throw); the caller asks protobuf-es why. */
export class WireError extends Error {
  override readonly name = 'WireError';
}

/** Called for each field of the outermost message: its number and where its tag and value are. */
export type TopFieldVisitor = (fieldNo: number, tagStart: number, valueStart: number, end: number) => void;

export class WireValidator {
  buf: Uint8Array = new Uint8Array(0);
  len = 0;
  pos = 0;
  canonical = true;
  /** Map entries of the messages being visited: field number, key start, key end (a stack). */
  private mapEntries = new Int32Array(3 * 256);
  private mapCount = 0;

  /**
   * Checks `buf` as one message of `shape`. Throws WireError where fromBinary would throw;
   * `canonical` says afterwards whether the fast path may read it by offset.
   */
  check(shape: MessageShape, buf: Uint8Array, visitTop?: TopFieldVisitor): void {
    this.buf = buf;
    this.len = buf.length;
    this.pos = 0;
    this.canonical = true;
    this.mapCount = 0;
    this.message(shape, buf.length, 1, visitTop);
  }

  private fail(what: string): never {
    throw new WireError(what);
  }

  /** varint32read: at most 10 bytes, the last without its high bit, all inside the buffer. */
  private varint32(): number {
    const buf = this.buf;
    let pos = this.pos;
    if (pos >= this.len) this.fail('premature EOF');
    let b = buf[pos++]!;
    if ((b & 0x80) === 0) {
      this.pos = pos;
      return b;
    }
    let result = b & 0x7f;
    for (let shift = 7; shift <= 21; shift += 7) {
      if (pos >= this.len) this.fail('premature EOF');
      b = buf[pos++]!;
      result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) {
        this.pos = pos;
        return result;
      }
    }
    if (pos >= this.len) this.fail('premature EOF');
    b = buf[pos++]!;
    result |= (b & 0x0f) << 28;
    for (let read = 5; (b & 0x80) !== 0 && read < 10; read++) {
      if (pos >= this.len) this.fail('premature EOF');
      b = buf[pos++]!;
    }
    if ((b & 0x80) !== 0) this.fail('invalid varint');
    this.pos = pos;
    return result >>> 0;
  }

  /** varint64read and bool() accept the same bytes: up to 10, inside the buffer. */
  private varint64(): void {
    const buf = this.buf;
    let pos = this.pos;
    for (let read = 0; read < 10; read++) {
      if (pos >= this.len) this.fail('premature EOF');
      if ((buf[pos++]! & 0x80) === 0) {
        this.pos = pos;
        return;
      }
    }
    this.fail('invalid varint');
  }

  /** BinaryReader.tag(): a uint32 varint of at most 5 bytes, field number > 0, wire type ≤ 5. */
  private tag(): number {
    const start = this.pos;
    const tag = this.varint32();
    const read = this.pos - start;
    if (read > 5 || (read === 5 && this.buf[this.pos - 1]! > 0x0f)) this.fail('illegal tag: varint overflows uint32');
    const fieldNo = tag >>> 3;
    const wireType = tag & 7;
    if (fieldNo <= 0 || wireType > 5) this.fail(`illegal tag: field no ${fieldNo} wire type ${wireType}`);
    // Packed into one number: field numbers fit 29 bits.
    return tag >>> 0;
  }

  /** BinaryReader.skip() for unknown fields. */
  private skip(wireType: number, fieldNo: number, recursionLimit: number): void {
    switch (wireType) {
      case WIRE_VARINT: {
        // No length limit here, unlike the known-field readers.
        for (;;) {
          if (this.pos >= this.len) this.fail('premature EOF');
          if ((this.buf[this.pos++]! & 0x80) === 0) break;
        }
        return;
      }
      case WIRE_FIXED64:
        this.pos += 8;
        break;
      case WIRE_FIXED32:
        this.pos += 4;
        break;
      case WIRE_LENGTH_DELIMITED: {
        const length = this.varint32();
        this.pos += length;
        break;
      }
      case WIRE_START_GROUP: {
        if (recursionLimit <= 0) this.fail('maximum recursion depth reached');
        for (;;) {
          const tag = this.tag();
          const fn = tag >>> 3;
          const wt = tag & 7;
          if (wt === WIRE_END_GROUP) {
            if (fn !== fieldNo) this.fail('invalid end group tag');
            break;
          }
          this.skip(wt, fn, recursionLimit - 1);
        }
        break;
      }
      default:
        this.fail(`cant skip wire type ${wireType}`);
    }
    if (this.pos > this.len) this.fail('premature EOF');
  }

  /** A length-delimited payload: returns its start; the reader stands after it. */
  private lengthDelimited(): number {
    const pos = this.pos;
    if (pos < this.len) {
      const b = this.buf[pos]!;
      if (b < 0x80) {
        this.pos = pos + 1 + b;
        if (this.pos > this.len) this.fail('premature EOF');
        return pos + 1;
      }
    }
    const length = this.varint32();
    const start = this.pos;
    this.pos += length;
    if (this.pos > this.len) this.fail('premature EOF');
    return start;
  }

  private utf8(start: number, end: number): void {
    const buf = this.buf;
    // ASCII (all our names) needs no decoder: one OR over the bytes, four at a time.
    let any = 0;
    let i = start;
    for (; i + 4 <= end; i += 4) any |= buf[i]! | buf[i + 1]! | buf[i + 2]! | buf[i + 3]!;
    for (; i < end; i++) any |= buf[i]!;
    if ((any & 0x80) !== 0 && !isUtf8(buf.subarray(start, end))) this.fail('invalid UTF-8');
  }

  /** Reads one value the way protobuf-es reads a field of this shape. */
  private value(field: FieldShape, depth: number): void {
    switch (field.kind) {
      case ReadKind.Varint32:
        this.varint32();
        return;
      case ReadKind.Varint64:
      case ReadKind.Bool:
        this.varint64();
        return;
      case ReadKind.Fixed32:
        if (this.pos + 4 > this.len) this.fail('Offset is outside the bounds of the DataView');
        this.pos += 4;
        return;
      case ReadKind.Fixed64:
        if (this.pos + 8 > this.len) this.fail('Offset is outside the bounds of the DataView');
        this.pos += 8;
        return;
      case ReadKind.String: {
        const start = this.lengthDelimited();
        if (field.utf8) this.utf8(start, this.pos);
        return;
      }
      case ReadKind.Bytes:
        this.lengthDelimited();
        return;
      case ReadKind.Message: {
        const length = this.varint32();
        const end = this.pos + length;
        // protobuf-es reads until its position passes `end`, wherever that is; only an exact
        // end is canonical.
        this.message(field.message!, end, depth + 1, undefined);
        if (this.pos !== end) this.canonical = false;
        return;
      }
    }
  }

  /** compileMessageReader: fields until the position reaches `end`. */
  private message(shape: MessageShape, end: number, depth: number, visitTop: TopFieldVisitor | undefined): void {
    if (depth > RECURSION_LIMIT) this.fail(`cannot decode ${shape.typeName} from binary: maximum recursion depth of ${RECURSION_LIMIT} reached`);
    // Visits are numbered across all validators: a check runs to its end synchronously.
    const epoch = ++visits;
    const seen = shape.seen;
    const mapBase = this.mapCount;
    const buf = this.buf;
    const len = this.len;
    const fast = shape.fast;
    while (this.pos < end) {
      const tagStart = this.pos;
      // A one-byte tag (fields 1-15) of a valid field number and wire type is read inline.
      let tag = tagStart < len ? buf[tagStart]! : 0x80;
      // Almost every field of a record: a one-byte tag of a declared singular field with its
      // canonical wire type. Read here without the field's shape; anything unusual (a long
      // length, a value past the end) falls through to the general readers from the tag on.
      const read = tag < 0x80 ? fast[tag]! : 0;
      if (read !== 0) {
        let pos = tagStart + 1;
        switch (read) {
          case FastRead.Varint: {
            const limit = pos + 10 < len ? pos + 10 : len;
            while (pos < limit && buf[pos]! >= 0x80) pos++;
            pos = pos < limit ? pos + 1 : -1;
            break;
          }
          case FastRead.Fixed32:
            pos = pos + 4 <= len ? pos + 4 : -1;
            break;
          case FastRead.Fixed64:
            pos = pos + 8 <= len ? pos + 8 : -1;
            break;
          case FastRead.Bytes:
          case FastRead.Utf8: {
            const length = pos < len ? buf[pos]! : 0x80;
            if (length < 0x80 && pos + 1 + length <= len) {
              if (read === FastRead.Utf8) this.utf8(pos + 1, pos + 1 + length);
              pos += 1 + length;
            } else {
              pos = -1;
            }
            break;
          }
          default: {
            // A singular message with a one-byte length.
            const length = pos < len ? buf[pos]! : 0x80;
            if (length < 0x80) {
              const fieldNo = tag >>> 3;
              if (seen[fieldNo] === epoch) this.canonical = false;
              seen[fieldNo] = epoch;
              this.pos = pos + 1;
              const messageEnd = pos + 1 + length;
              this.message(shape.fields[fieldNo]!.message!, messageEnd, depth + 1, undefined);
              if (this.pos !== messageEnd) this.canonical = false;
              pos = this.pos;
            } else {
              pos = -1;
            }
          }
        }
        if (pos >= 0) {
          this.pos = pos;
          if (visitTop !== undefined) visitTop(tag >>> 3, tagStart, tagStart + 1, pos);
          continue;
        }
      }
      if (tag < 0x80 && tag >= 8 && (tag & 7) <= 5) this.pos = tagStart + 1;
      else tag = this.tag();
      const fieldNo = tag >>> 3;
      const wireType = tag & 7;
      const valueStart = this.pos;
      const field = fieldNo <= shape.maxField ? shape.fields[fieldNo] : undefined;
      if (field === undefined) {
        this.skip(wireType, fieldNo, RECURSION_LIMIT - depth);
      } else if (field.mapKey !== undefined) {
        if (wireType !== WIRE_LENGTH_DELIMITED) this.canonical = false;
        this.mapEntry(field, depth, mapBase);
      } else if (field.repeated && field.kind !== ReadKind.Message) {
        if (wireType === WIRE_LENGTH_DELIMITED && field.packable) {
          const length = this.varint32();
          const packedEnd = length + this.pos;
          while (this.pos < packedEnd) this.value(field, depth);
          if (this.pos !== packedEnd) this.canonical = false;
        } else {
          if (wireType !== field.wireType && !(field.packable && wireType === scalarWireType(field))) this.canonical = false;
          this.value(field, depth);
        }
      } else {
        if (wireType !== field.wireType) this.canonical = false;
        if (field.kind === ReadKind.Message && !field.repeated) {
          if (seen[fieldNo] === epoch) this.canonical = false;
          seen[fieldNo] = epoch;
        }
        this.value(field, depth);
      }
      if (visitTop !== undefined) visitTop(fieldNo, tagStart, valueStart, this.pos);
    }
    this.mapCount = mapBase;
  }

  /** compileMapFieldReader: key (1) and value (2) in any order and number, unknown fields skipped. */
  private mapEntry(field: FieldShape, depth: number, mapBase: number): void {
    const length = this.varint32();
    const end = this.pos + length;
    let keyStart = -1;
    let keyEnd = -1;
    let keys = 0;
    let values = 0;
    let order = 0;
    while (this.pos < end) {
      const tag = this.tag();
      const fieldNo = tag >>> 3;
      const wireType = tag & 7;
      if (fieldNo === 1) {
        const key = field.mapKey!;
        if (wireType !== key.wireType || order !== 0) this.canonical = false;
        keyStart = this.pos;
        this.value(key, depth);
        keyEnd = this.pos;
        keys++;
        order = 1;
      } else if (fieldNo === 2) {
        const value = field.mapValue!;
        if (wireType !== value.wireType || order !== 1) this.canonical = false;
        // A message value is read as a nested message of this depth + 1, as protobuf-es does.
        this.value(value, depth);
        values++;
        order = 2;
      } else {
        this.canonical = false;
        this.skip(wireType, fieldNo, RECURSION_LIMIT - depth);
      }
    }
    if (this.pos !== end || keys !== 1 || values !== 1) {
      this.canonical = false;
      return;
    }
    this.rememberKey(field.number, keyStart, keyEnd, mapBase);
  }

  /** A key seen twice in one map: protobuf-es keeps the last; only unique keys are canonical. */
  private rememberKey(fieldNo: number, keyStart: number, keyEnd: number, mapBase: number): void {
    if (!this.canonical) return;
    const entries = this.mapEntries;
    const buf = this.buf;
    const keyLength = keyEnd - keyStart;
    let base = 0;
    // Entries of the message being read only: the stack above its mapBase is all we compare.
    for (let i = this.mapCount - 1; i >= mapBase; i--) {
      const at = 3 * i;
      if (entries[at] !== fieldNo) continue;
      base++;
      const otherStart = entries[at + 1]!;
      if (entries[at + 2]! - otherStart !== keyLength) continue;
      let same = true;
      for (let j = 0; j < keyLength; j++) {
        if (buf[keyStart + j] !== buf[otherStart + j]) {
          same = false;
          break;
        }
      }
      if (same) {
        this.canonical = false;
        return;
      }
    }
    if (base >= MAX_CHECKED_MAP_ENTRIES) {
      this.canonical = false;
      return;
    }
    if (3 * (this.mapCount + 1) > entries.length) {
      const grown = new Int32Array(entries.length * 2);
      grown.set(entries);
      this.mapEntries = grown;
    }
    const at = 3 * this.mapCount++;
    this.mapEntries[at] = fieldNo;
    this.mapEntries[at + 1] = keyStart;
    this.mapEntries[at + 2] = keyEnd;
  }
}

/** The element wire type of a packable list (what an unpacked encoder writes). */
function scalarWireType(field: FieldShape): number {
  switch (field.kind) {
    case ReadKind.Fixed32:
      return WIRE_FIXED32;
    case ReadKind.Fixed64:
      return WIRE_FIXED64;
    default:
      return WIRE_VARINT;
  }
}
