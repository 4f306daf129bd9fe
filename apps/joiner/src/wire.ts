// The few protobuf wire operations the join needs on bytes that were already checked (a FlowBatch
// the bus decoded once): walk a message's fields, read a varint, and write into one growing
// buffer with length-delimited fields patched in place. Nothing here allocates per field.

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LEN = 2;
export const WIRE_FIXED32 = 5;

/**
 * A cursor over the fields of one message: `next()` steps to the next field and leaves its
 * number, wire type and value range in the public fields (for varints, `value`).
 */
export class FieldCursor {
  buf: Uint8Array = EMPTY;
  pos = 0;
  end = 0;
  field = 0;
  wireType = 0;
  /** Where the current field's tag starts, and where its value starts and ends. */
  tagStart = 0;
  valueStart = 0;
  valueEnd = 0;
  /** The current field's value when it is a varint (exact up to 2^53). */
  value = 0;

  reset(buf: Uint8Array, start: number, end: number): this {
    this.buf = buf;
    this.pos = start;
    this.end = end;
    return this;
  }

  next(): boolean {
    if (this.pos >= this.end) return false;
    const buf = this.buf;
    this.tagStart = this.pos;
    const tag = this.varint();
    this.field = tag >>> 3;
    this.wireType = tag & 7;
    switch (this.wireType) {
      case WIRE_VARINT:
        this.valueStart = this.pos;
        this.value = this.varint();
        this.valueEnd = this.pos;
        break;
      case WIRE_LEN: {
        const length = this.varint();
        this.valueStart = this.pos;
        this.pos += length;
        this.valueEnd = this.pos;
        break;
      }
      case WIRE_FIXED64:
        this.valueStart = this.pos;
        this.pos += 8;
        this.valueEnd = this.pos;
        break;
      case WIRE_FIXED32:
        this.valueStart = this.pos;
        this.pos += 4;
        this.valueEnd = this.pos;
        break;
      default:
        throw new RangeError(`unexpected wire type ${this.wireType} at ${this.tagStart}`);
    }
    if (this.pos > this.end || this.pos > buf.length) throw new RangeError('field runs past the end of its message');
    return true;
  }

  private varint(): number {
    const buf = this.buf;
    let result = 0;
    let factor = 1;
    for (;;) {
      if (this.pos >= this.end) throw new RangeError('varint runs past the end of its message');
      const b = buf[this.pos++]!;
      result += (b & 0x7f) * factor;
      if (b < 0x80) return result;
      factor *= 128;
    }
  }
}

const EMPTY = new Uint8Array(0);

/** Bytes of a string field as text; ASCII (IPs, names) takes the fast path. */
export function readString(buf: Uint8Array, start: number, end: number): string {
  if (end - start < 48) {
    let ascii = true;
    for (let i = start; i < end; i++) {
      if (buf[i]! >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, buf.subarray(start, end) as unknown as number[]);
  }
  return decoder.decode(buf.subarray(start, end));
}
const decoder = new TextDecoder();

export function bytesEqual(a: Uint8Array, aStart: number, aEnd: number, b: Uint8Array, bStart: number, bEnd: number): boolean {
  const n = aEnd - aStart;
  if (n !== bEnd - bStart) return false;
  for (let i = 0; i < n; i++) if (a[aStart + i] !== b[bStart + i]) return false;
  return true;
}

export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

const encoder = new TextEncoder();

/**
 * One growing output buffer. Length-delimited fields are opened with `begin` (the length is
 * written when `end` closes them; the body moves if its length needs more or fewer bytes than
 * reserved), so a record, its endpoints and their Kube are written once, in place.
 */
export class ByteWriter {
  buf: Uint8Array;
  pos = 0;
  private readonly marks: number[] = [];

  constructor(initial = 64 * 1024) {
    this.buf = new Uint8Array(initial);
  }

  reset(): this {
    this.pos = 0;
    this.marks.length = 0;
    return this;
  }

  private ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + extra) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
  }

  varint(n: number): this {
    this.ensure(10);
    const buf = this.buf;
    while (n >= 128) {
      buf[this.pos++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    buf[this.pos++] = n;
    return this;
  }

  tag(field: number, wireType: number): this {
    return this.varint(field * 8 + wireType);
  }

  copy(src: Uint8Array, start: number, end: number): this {
    this.ensure(end - start);
    this.buf.set(src.subarray(start, end), this.pos);
    this.pos += end - start;
    return this;
  }

  /** A length-delimited field whose value is `src[start, end)`. */
  lenField(field: number, src: Uint8Array, start: number, end: number): this {
    return this.tag(field, WIRE_LEN).varint(end - start).copy(src, start, end);
  }

  stringField(field: number, value: string): this {
    if (value.length === 0) return this;
    // At most 3 bytes per UTF-16 unit.
    this.tag(field, WIRE_LEN);
    this.ensure(5 + 3 * value.length);
    const at = this.pos;
    this.pos += 1;
    const { written } = encoder.encodeInto(value, this.buf.subarray(this.pos));
    this.pos += written;
    this.patchLength(at, written);
    return this;
  }

  /** Opens a length-delimited field; close it with `end()`. */
  begin(field: number): this {
    this.tag(field, WIRE_LEN);
    this.ensure(1);
    this.marks.push(this.pos);
    this.pos += 1; // one length byte reserved; `end` moves the body when it needs more
    return this;
  }

  end(): this {
    const at = this.marks.pop();
    if (at === undefined) throw new Error('ByteWriter.end without begin');
    this.patchLength(at, this.pos - at - 1);
    return this;
  }

  /** Writes `length` at `at`, where one byte was reserved, moving the body behind it if needed. */
  private patchLength(at: number, length: number): void {
    const size = varintSize(length);
    if (size > 1) {
      this.ensure(size - 1);
      this.buf.copyWithin(at + size, at + 1, this.pos);
      this.pos += size - 1;
    }
    const buf = this.buf;
    let n = length;
    let i = at;
    while (n >= 128) {
      buf[i++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    buf[i] = n;
  }

  /** A copy of what was written (the buffer itself is reused). */
  take(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }
}
