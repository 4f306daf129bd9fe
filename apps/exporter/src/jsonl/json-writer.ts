// Protobuf bytes → canonical protobuf JSON, byte for byte what `JSON.stringify(toJson(schema,
// fromBinary(schema, bytes)))` of protobuf-es prints, without building a message or a JS string.
// The plan is compiled once from the schema's descriptor, so a field added to flow.proto is
// exported with no change here. Inputs the fast path does not take on (a message field twice on
// the wire, which protobuf merges; two members of one oneof; a wire type that does not match the
// schema; malformed bytes) go through protobuf-es itself, so the output is the same by
// construction; what protobuf-es cannot decode either (invalid UTF-8, truncation) is refused.
import { ScalarType, fromBinary, toJson } from '@bufbuild/protobuf';
import type { DescEnum, DescField, DescMessage } from '@bufbuild/protobuf';
import { hashBytes, sameRange } from '@kappa/contracts';
import { utf8SequenceLength } from '../record/utf8.js';

const enum Kind {
  String,
  Bytes,
  Bool,
  Uint32,
  Int32,
  Sint32,
  Fixed32,
  Sfixed32,
  Float,
  Uint64,
  Int64,
  Sint64,
  Fixed64,
  Sfixed64,
  Double,
  Enum,
  Message,
}

const enum Wire {
  Varint = 0,
  Fixed64 = 1,
  Len = 2,
  StartGroup = 3,
  EndGroup = 4,
  Fixed32 = 5,
}

const TABLE_SIZE = 256;

const enum Shape {
  Single,
  List,
  Map,
}

// Classes, not object literals: one hidden class per kind of plan keeps the hot loops monomorphic.
class ValuePlan {
  constructor(
    readonly kind: Kind,
    readonly wire: Wire,
    /** Enum: the JSON name of each known value, as `"NAME"` bytes. */
    readonly enumNames: Map<number, Uint8Array> | null = null,
    readonly message: MessagePlan | null = null,
  ) {}
}

class FieldPlan {
  constructor(
    readonly number: number,
    /** `"jsonName":` */
    readonly key: Uint8Array,
    /** `,"jsonName":` */
    readonly commaKey: Uint8Array,
    readonly shape: Shape,
    readonly value: ValuePlan,
    /** Map: the key's kind (string, integers or bool). */
    readonly mapKey: ValuePlan | null,
    /** Emitted when present on the wire even with a zero value (proto3 optional, oneof members, messages). */
    readonly explicit: boolean,
    readonly enumZero: number,
    /** Index of the field's oneof within the message, or -1. */
    readonly oneof: number,
  ) {}
}

let planIds = 0;

class MessagePlan {
  /** Index of this plan among all compiled plans (a writer's memo table is indexed by it). */
  readonly id = planIds++;
  /** In field-number order: the order protobuf-es writes JSON keys in. */
  readonly fields: FieldPlan[] = [];
  /** field number → index in fields, for numbers below the table size; others use byNumber. */
  readonly table = new Int16Array(TABLE_SIZE).fill(-1);
  readonly byNumber = new Map<number, number>();
  constructor(
    readonly typeName: string,
    readonly oneofs: number,
  ) {}
}

const utf8 = new TextEncoder();

function kindOf(scalar: ScalarType): ValuePlan {
  switch (scalar) {
    case ScalarType.STRING:
      return new ValuePlan(Kind.String, Wire.Len);
    case ScalarType.BYTES:
      return new ValuePlan(Kind.Bytes, Wire.Len);
    case ScalarType.BOOL:
      return new ValuePlan(Kind.Bool, Wire.Varint);
    case ScalarType.UINT32:
      return new ValuePlan(Kind.Uint32, Wire.Varint);
    case ScalarType.INT32:
      return new ValuePlan(Kind.Int32, Wire.Varint);
    case ScalarType.SINT32:
      return new ValuePlan(Kind.Sint32, Wire.Varint);
    case ScalarType.FIXED32:
      return new ValuePlan(Kind.Fixed32, Wire.Fixed32);
    case ScalarType.SFIXED32:
      return new ValuePlan(Kind.Sfixed32, Wire.Fixed32);
    case ScalarType.FLOAT:
      return new ValuePlan(Kind.Float, Wire.Fixed32);
    case ScalarType.UINT64:
      return new ValuePlan(Kind.Uint64, Wire.Varint);
    case ScalarType.INT64:
      return new ValuePlan(Kind.Int64, Wire.Varint);
    case ScalarType.SINT64:
      return new ValuePlan(Kind.Sint64, Wire.Varint);
    case ScalarType.FIXED64:
      return new ValuePlan(Kind.Fixed64, Wire.Fixed64);
    case ScalarType.SFIXED64:
      return new ValuePlan(Kind.Sfixed64, Wire.Fixed64);
    case ScalarType.DOUBLE:
      return new ValuePlan(Kind.Double, Wire.Fixed64);
  }
}

function enumPlan(desc: DescEnum): ValuePlan {
  const enumNames = new Map<number, Uint8Array>();
  for (const v of desc.values) if (!enumNames.has(v.number)) enumNames.set(v.number, utf8.encode(JSON.stringify(v.name)));
  return new ValuePlan(Kind.Enum, Wire.Varint, enumNames);
}

const plans = new WeakMap<DescMessage, MessagePlan>();

/** The JSON plan of a message type, compiled on first use (recursive types resolve to the same plan). */
export function jsonPlan(desc: DescMessage): MessagePlan {
  const known = plans.get(desc);
  if (known) return known;
  if (desc.typeName.startsWith('google.protobuf.')) {
    throw new Error(`json-writer: ${desc.typeName} has a custom JSON mapping that this writer does not implement`);
  }
  const plan = new MessagePlan(desc.typeName, desc.oneofs.length);
  plans.set(desc, plan);
  const sorted = [...desc.fields].sort((a, b) => a.number - b.number);
  for (const field of sorted) {
    const index = plan.fields.length;
    plan.fields.push(fieldPlan(field, desc));
    if (field.number < TABLE_SIZE) plan.table[field.number] = index;
    else plan.byNumber.set(field.number, index);
  }
  return plan;
}

function fieldPlan(field: DescField, parent: DescMessage): FieldPlan {
  const unsupported = (what: string) => new Error(`json-writer: ${parent.typeName}.${field.name}: ${what} is not supported`);
  if (field.jsonName === '__proto__') throw unsupported('the JSON name __proto__');
  const key = utf8.encode(`${JSON.stringify(field.jsonName)}:`);
  const commaKey = utf8.encode(`,${JSON.stringify(field.jsonName)}:`);
  const oneof = field.oneof ? parent.oneofs.indexOf(field.oneof) : -1;
  // IMPLICIT (2) presence: proto3 fields without `optional`.
  const explicit = !(field.presence === 2 && !field.oneof);
  const messageValue = (message: DescMessage): ValuePlan => {
    if ((field as { delimitedEncoding?: boolean }).delimitedEncoding) throw unsupported('group (delimited) encoding');
    return new ValuePlan(Kind.Message, Wire.Len, null, jsonPlan(message));
  };
  switch (field.fieldKind) {
    case 'scalar':
      return new FieldPlan(field.number, key, commaKey, Shape.Single, kindOf(field.scalar), null, explicit, 0, oneof);
    case 'enum':
      return new FieldPlan(field.number, key, commaKey, Shape.Single, enumPlan(field.enum), null, explicit, field.enum.values[0]?.number ?? 0, oneof);
    case 'message':
      return new FieldPlan(field.number, key, commaKey, Shape.Single, messageValue(field.message), null, true, 0, oneof);
    case 'list': {
      const value = field.listKind === 'scalar' ? kindOf(field.scalar) : field.listKind === 'enum' ? enumPlan(field.enum) : messageValue(field.message);
      return new FieldPlan(field.number, key, commaKey, Shape.List, value, null, false, 0, oneof);
    }
    case 'map': {
      const value = field.mapKind === 'scalar' ? kindOf(field.scalar) : field.mapKind === 'enum' ? enumPlan(field.enum) : messageValue(field.message);
      return new FieldPlan(field.number, key, commaKey, Shape.Map, value, kindOf(field.mapKey), false, 0, oneof);
    }
  }
}

/** Thrown inside the fast path when the input needs protobuf-es's own decoder. */
class SlowPath extends Error {}
const slowPath = new SlowPath("slow path");

// ---- wire reading into module state (no allocation per value) ----
let lo = 0;
let hi = 0;
let pos = 0;

function readVarint(buf: Uint8Array, at: number, end: number): void {
  let b = 0;
  lo = 0;
  hi = 0;
  let i = at;
  for (let shift = 0; shift < 28; shift += 7) {
    if (i >= end) throw slowPath;
    b = buf[i++]!;
    lo |= (b & 0x7f) << shift;
    if (b < 0x80) {
      lo >>>= 0;
      pos = i;
      return;
    }
  }
  if (i >= end) throw slowPath;
  b = buf[i++]!;
  lo |= (b & 0x0f) << 28;
  hi = (b & 0x70) >> 4;
  if (b < 0x80) {
    lo >>>= 0;
    pos = i;
    return;
  }
  for (let shift = 3; shift <= 31; shift += 7) {
    if (i >= end) throw slowPath;
    b = buf[i++]!;
    hi |= (b & 0x7f) << shift;
    if (b < 0x80) {
      lo >>>= 0;
      hi >>>= 0;
      pos = i;
      return;
    }
  }
  throw slowPath;
}

/** Skips one value of the given wire type at `at`; sets pos to its end. */
function skip(buf: Uint8Array, at: number, end: number, wire: number): void {
  switch (wire) {
    case Wire.Varint:
      readVarint(buf, at, end);
      return;
    case Wire.Fixed64:
      pos = at + 8;
      break;
    case Wire.Fixed32:
      pos = at + 4;
      break;
    case Wire.Len:
      readVarint(buf, at, end);
      if (hi !== 0) throw slowPath;
      pos += lo;
      break;
    default:
      // Groups: rare enough to leave to protobuf-es.
      throw slowPath;
  }
  if (pos > end) throw slowPath;
}

/**
 * Writes canonical protobuf JSON of messages given as bytes into one growing buffer. One writer
 * per consumer (not re-entrant); `bytes()` is valid until the next `reset()` or write.
 */
export class ProtoJsonWriter {
  private out: Uint8Array;
  length = 0;
  /** Records that took the protobuf-es path (see the file comment). */
  slowPaths = 0;
  /** Per-message scratch: visit stamp, value start, value end per field; a stack by depth. */
  private scratch = new Int32Array(1024);
  private sp = 0;
  private visits = 0;
  /** Map entries being ordered: key start, key end, value start, value end (a stack too). */
  private entries = new Int32Array(256);
  private ep = 0;
  private readonly plan: MessagePlan;
  /** Per memoized message type (by plan id): the JSON of each encoding seen, keyed by its bytes. */
  private readonly memos: (Memo | undefined)[] = [];
  /** Nested messages written from the memo / written and remembered. */
  memoHits = 0;
  memoMisses = 0;

  /**
   * `memoize`: nested message types whose JSON is remembered by their encoded bytes, for types
   * that repeat byte for byte across records (a pod's Kube, a process's Process): a repeat costs a
   * hash and a compare of its bytes instead of writing its JSON again. Up to `memoEntries`
   * encodings per type are kept; the table is emptied when full.
   */
  constructor(
    private readonly schema: DescMessage,
    initialBytes = 64 * 1024,
    options: { memoize?: readonly DescMessage[]; memoEntries?: number } = {},
  ) {
    this.plan = jsonPlan(schema);
    this.out = new Uint8Array(initialBytes);
    for (const desc of options.memoize ?? []) this.memos[jsonPlan(desc).id] = new Memo(options.memoEntries ?? 4096);
  }

  reset(): void {
    this.length = 0;
  }

  /** The JSON written since the last reset. */
  bytes(): Uint8Array {
    return this.out.subarray(0, this.length);
  }

  /** A view over the internal buffer from `start` to the current length. */
  slice(start: number, end = this.length): Uint8Array {
    return this.out.subarray(start, end);
  }

  byte(b: number): void {
    if (this.length >= this.out.length) this.grow(1);
    this.out[this.length++] = b;
  }

  /**
   * Appends the JSON of the message in buf[start, end). Returns false, with nothing written, when
   * the bytes are not a valid message (protobuf-es refuses them too).
   */
  message(buf: Uint8Array, start: number, end: number): boolean {
    const mark = this.length;
    const sp = this.sp;
    const ep = this.ep;
    try {
      this.writeMessage(this.plan, buf, start, end);
      return true;
    } catch (error) {
      this.length = mark;
      this.sp = sp;
      this.ep = ep;
      if (!(error instanceof SlowPath)) throw error;
    }
    this.slowPaths++;
    let text: string;
    try {
      text = JSON.stringify(toJson(this.schema, fromBinary(this.schema, buf.subarray(start, end))));
    } catch {
      return false;
    }
    this.text(text);
    return true;
  }

  /** Appends src[start, end) (the memo's copy of a message's JSON). */
  append(src: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (this.length + n > this.out.length) this.grow(n);
    this.out.set(src.subarray(start, end), this.length);
    this.length += n;
  }

  private grow(need: number): void {
    let size = this.out.length * 2;
    while (size < this.length + need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.out.subarray(0, this.length));
    this.out = next;
  }

  private raw(bytes: Uint8Array): void {
    const n = bytes.length;
    if (this.length + n > this.out.length) this.grow(n);
    this.out.set(bytes, this.length);
    this.length += n;
  }

  /** A JS string written as UTF-8 (JSON from the slow path, number text). */
  private text(text: string): void {
    const max = text.length * 3;
    if (this.length + max > this.out.length) this.grow(max);
    this.length += utf8.encodeInto(text, this.out.subarray(this.length)).written;
  }

  private frame(n: number): number {
    const at = this.sp;
    const need = at + n * 3;
    if (need > this.scratch.length) {
      const next = new Int32Array(Math.max(need, this.scratch.length * 2));
      next.set(this.scratch);
      this.scratch = next;
    }
    this.sp = need;
    return at;
  }

  private writeMessage(plan: MessagePlan, buf: Uint8Array, start: number, end: number): void {
    const fields = plan.fields;
    const n = fields.length;
    const frame = this.frame(n);
    // Slots are valid only when stamped with this visit: nothing to clear between messages.
    if (this.visits === 0x7fffffff) {
      this.scratch.fill(0);
      this.visits = 0;
    }
    const visit = ++this.visits;
    const s = this.scratch;
    // Pass 1: where each field's (last) value is, and how often it occurs.
    let p = start;
    while (p < end) {
      readVarint(buf, p, end);
      if (hi !== 0) throw slowPath;
      const tag = lo;
      const number = tag >>> 3;
      const wire = tag & 7;
      const valueAt = pos;
      const index = number < TABLE_SIZE ? plan.table[number]! : (plan.byNumber.get(number) ?? -1);
      if (index < 0) {
        if (number === 0) throw slowPath;
        skip(buf, valueAt, end, wire);
        p = pos;
        continue;
      }
      const field = fields[index]!;
      if (field.shape === Shape.Single) {
        if (wire !== field.value.wire) throw slowPath;
        skip(buf, valueAt, end, wire);
        const slot = frame + index * 3;
        // protobuf-es decodes (and validates) every occurrence, and keeps the last.
        if (s[slot] === visit) {
          if (field.value.kind === Kind.Message) throw slowPath;
          if (field.value.kind === Kind.String) validateUtf8(buf, s[slot + 1]!, s[slot + 2]!);
        }
        s[slot] = visit;
        s[slot + 1] = wire === Wire.Len ? valueAt + lengthPrefixBytes(buf, valueAt) : valueAt;
        s[slot + 2] = pos;
      } else {
        // Lists and maps: counted here, read again in pass 2 in wire order.
        if (field.shape === Shape.Map ? wire !== Wire.Len : wire !== field.value.wire && !(wire === Wire.Len && isPackable(field.value.kind))) throw slowPath;
        skip(buf, valueAt, end, wire);
        s[frame + index * 3] = visit;
      }
      p = pos;
    }
    if (p !== end) throw slowPath;
    if (plan.oneofs > 0) this.checkOneofs(plan, frame, visit);
    // Pass 2: the JSON, in field-number order.
    this.byte(0x7b); // {
    let first = true;
    for (let i = 0; i < n; i++) {
      const field = fields[i]!;
      const slot = frame + i * 3;
      if (s[slot] !== visit) continue;
      if (field.shape === Shape.Single) {
        const at = s[slot + 1]!;
        const to = s[slot + 2]!;
        const v = field.value;
        if (v.wire === Wire.Varint) {
          // Read once: the zero check and the value.
          readVarint(buf, at, to);
          if (!field.explicit && varintIsZero(field)) continue;
          this.raw(first ? field.key : field.commaKey);
          first = false;
          this.varintValue(v);
          continue;
        }
        if (!field.explicit && this.isZero(field, buf, at, to)) continue;
        this.raw(first ? field.key : field.commaKey);
        first = false;
        this.value(v, buf, at, to);
      } else {
        this.raw(first ? field.key : field.commaKey);
        first = false;
        if (field.shape === Shape.List) this.list(field, buf, start, end);
        else this.map(field, buf, start, end);
      }
    }
    this.byte(0x7d); // }
    this.sp = frame;
  }

  private checkOneofs(plan: MessagePlan, frame: number, visit: number): void {
    // Two members of one oneof on the wire: the last wins in protobuf-es; leave it to it.
    const seen = new Int8Array(plan.oneofs);
    plan.fields.forEach((f, i) => {
      if (f.oneof < 0 || this.scratch[frame + i * 3] !== visit) return;
      if (seen[f.oneof]) throw slowPath;
      seen[f.oneof] = 1;
    });
  }

  private isZero(field: FieldPlan, buf: Uint8Array, at: number, end: number): boolean {
    const kind = field.value.kind;
    switch (kind) {
      case Kind.String:
      case Kind.Bytes:
        return at === end;
      case Kind.Enum:
        readVarint(buf, at, end);
        return (lo | 0) === field.enumZero;
      case Kind.Bool:
      case Kind.Uint64:
      case Kind.Int64:
      case Kind.Sint64:
        readVarint(buf, at, end);
        return lo === 0 && hi === 0;
      case Kind.Uint32:
      case Kind.Int32:
      case Kind.Sint32:
        readVarint(buf, at, end);
        return lo === 0;
      case Kind.Fixed32:
      case Kind.Sfixed32:
        return buf[at] === 0 && buf[at + 1] === 0 && buf[at + 2] === 0 && buf[at + 3] === 0;
      case Kind.Fixed64:
      case Kind.Sfixed64:
        for (let i = 0; i < 8; i++) if (buf[at + i] !== 0) return false;
        return true;
      case Kind.Float:
        // -0 is not zero for protobuf-es (Object.is).
        return new DataView(buf.buffer, buf.byteOffset + at, 4).getFloat32(0, true) === 0 && (buf[at + 3]! & 0x80) === 0;
      case Kind.Double:
        return new DataView(buf.buffer, buf.byteOffset + at, 8).getFloat64(0, true) === 0 && (buf[at + 7]! & 0x80) === 0;
      case Kind.Message:
        return false;
    }
  }

  /** One value at [at, end): for Len kinds the content, else where the value starts. */
  private value(v: ValuePlan, buf: Uint8Array, at: number, end: number): void {
    switch (v.kind) {
      case Kind.String:
        this.string(buf, at, end);
        return;
      case Kind.Message: {
        const plan = v.message!;
        const memo = this.memos[plan.id];
        if (memo === undefined) {
          this.writeMessage(plan, buf, at, end);
          return;
        }
        const hash = hashBytes(buf, at, end);
        const known = memo.find(buf, at, end, hash);
        if (known >= 0) {
          this.memoHits++;
          memo.copyValue(known, this);
          return;
        }
        const from = this.length;
        this.writeMessage(plan, buf, at, end);
        this.memoMisses++;
        memo.add(buf, at, end, hash, this.out, from, this.length);
        return;
      }
      case Kind.Bytes:
        this.byte(0x22);
        this.text(Buffer.from(buf.buffer, buf.byteOffset + at, end - at).toString('base64'));
        this.byte(0x22);
        return;
      case Kind.Bool:
      case Kind.Uint32:
      case Kind.Int32:
      case Kind.Sint32:
      case Kind.Enum:
      case Kind.Uint64:
      case Kind.Int64:
      case Kind.Sint64:
        readVarint(buf, at, end);
        this.varintValue(v);
        return;
      case Kind.Fixed32:
        this.unsigned(readU32(buf, at));
        return;
      case Kind.Sfixed32:
        this.signed32(readU32(buf, at) | 0);
        return;
      case Kind.Fixed64:
        lo = readU32(buf, at);
        hi = readU32(buf, at + 4);
        this.quoted64(false);
        return;
      case Kind.Sfixed64:
        lo = readU32(buf, at);
        hi = readU32(buf, at + 4);
        this.quoted64(true);
        return;
      case Kind.Float:
        this.text(JSON.stringify(floatJson(new DataView(buf.buffer, buf.byteOffset + at, 4).getFloat32(0, true))));
        return;
      case Kind.Double:
        this.text(JSON.stringify(floatJson(new DataView(buf.buffer, buf.byteOffset + at, 8).getFloat64(0, true))));
        return;
    }
  }

  /** A varint-encoded value, already read into (lo, hi). */
  private varintValue(v: ValuePlan): void {
    switch (v.kind) {
      case Kind.Bool:
        this.raw(lo !== 0 || hi !== 0 ? TRUE : FALSE);
        return;
      case Kind.Uint32:
        this.unsigned(lo);
        return;
      case Kind.Int32:
        this.signed32(lo | 0);
        return;
      case Kind.Sint32:
        this.signed32((lo >>> 1) ^ -(lo & 1));
        return;
      case Kind.Enum: {
        const name = v.enumNames!.get(lo | 0);
        if (name) this.raw(name);
        else this.signed32(lo | 0);
        return;
      }
      case Kind.Uint64:
        this.quoted64(false);
        return;
      case Kind.Int64:
        this.quoted64(true);
        return;
      case Kind.Sint64: {
        const mask = -(lo & 1);
        lo = (((lo >>> 1) | (hi << 31)) ^ mask) >>> 0;
        hi = ((hi >>> 1) ^ mask) >>> 0;
        this.quoted64(true);
        return;
      }
      default:
        throw new Error(`json-writer: kind ${v.kind} is not a varint`);
    }
  }

  private list(field: FieldPlan, buf: Uint8Array, start: number, end: number): void {
    const v = field.value;
    this.byte(0x5b); // [
    let first = true;
    let p = start;
    while (p < end) {
      readVarint(buf, p, end);
      const number = lo >>> 3;
      const wire = lo & 7;
      const at = pos;
      skip(buf, at, end, wire);
      p = pos;
      if (number !== field.number) continue;
      if (wire === Wire.Len && v.kind !== Kind.String && v.kind !== Kind.Bytes && v.kind !== Kind.Message) {
        // Packed: consecutive values without tags.
        const content = at + lengthPrefixBytes(buf, at);
        let q = content;
        while (q < p) {
          const valueAt = q;
          skip(buf, valueAt, p, v.wire);
          q = pos;
          if (!first) this.byte(0x2c);
          first = false;
          this.value(v, buf, valueAt, q);
        }
        continue;
      }
      if (!first) this.byte(0x2c);
      first = false;
      if (wire === Wire.Len) this.value(v, buf, at + lengthPrefixBytes(buf, at), p);
      else this.value(v, buf, at, p);
    }
    this.byte(0x5d); // ]
  }

  /**
   * A map as protobuf-es prints it: a JS object's key order (array-index keys ascending, then the
   * others in first-insertion order), the last value of a repeated key.
   */
  private map(field: FieldPlan, buf: Uint8Array, start: number, end: number): void {
    const keyPlan = field.mapKey!;
    const v = field.value;
    const base = this.ep;
    let count = 0;
    let p = start;
    while (p < end) {
      readVarint(buf, p, end);
      const number = lo >>> 3;
      const at = pos;
      skip(buf, at, end, lo & 7);
      p = pos;
      if (number !== field.number) continue;
      // One entry: key = field 1, value = field 2, either may be missing (then its zero value).
      const entryStart = at + lengthPrefixBytes(buf, at);
      let ks = -1;
      let ke = -1;
      let vs = -1;
      let ve = -1;
      let q = entryStart;
      while (q < p) {
        readVarint(buf, q, p);
        const n = lo >>> 3;
        const wire = lo & 7;
        const valueAt = pos;
        skip(buf, valueAt, p, wire);
        if (n === 1) {
          if (wire !== keyPlan.wire) throw slowPath;
          ks = wire === Wire.Len ? valueAt + lengthPrefixBytes(buf, valueAt) : valueAt;
          ke = pos;
        } else if (n === 2) {
          if (wire !== v.wire) throw slowPath;
          // A message value twice in one entry merges in protobuf-es.
          if (v.kind === Kind.Message && vs >= 0) throw slowPath;
          vs = wire === Wire.Len ? valueAt + lengthPrefixBytes(buf, valueAt) : valueAt;
          ve = pos;
        }
        q = pos;
      }
      if (keyPlan.kind !== Kind.String && ks < 0) throw slowPath; // zero-valued non-string key: rare
      if (keyPlan.kind !== Kind.String) throw slowPath; // integer and bool keys: left to protobuf-es
      if (ks < 0) {
        ks = 0;
        ke = 0;
      }
      if (v.kind !== Kind.String && vs < 0) throw slowPath; // a defaulted non-string value: rare
      if (vs < 0) {
        vs = 0;
        ve = 0;
      }
      // A key seen before keeps its place and takes the new value (the old one is still decoded).
      let found = -1;
      for (let e = 0; e < count; e++) {
        const o = base + e * 4;
        if (sameRange(buf, this.entries[o]!, this.entries[o + 1]!, buf, ks, ke)) {
          found = o;
          break;
        }
      }
      if (found >= 0) {
        if (v.kind === Kind.String) validateUtf8(buf, this.entries[found + 2]!, this.entries[found + 3]!);
        this.entries[found + 2] = vs;
        this.entries[found + 3] = ve;
        continue;
      }
      const o = base + count * 4;
      if (o + 4 > this.entries.length) {
        const next = new Int32Array(this.entries.length * 2);
        next.set(this.entries);
        this.entries = next;
      }
      this.entries[o] = ks;
      this.entries[o + 1] = ke;
      this.entries[o + 2] = vs;
      this.entries[o + 3] = ve;
      count++;
    }
    this.ep = base + count * 4;
    // Array-index keys first, ascending (stable insertion sort over a few entries), then the rest as inserted.
    const e = this.entries;
    let indexed = 0;
    for (let i = 0; i < count; i++) {
      const o = base + i * 4;
      const value = arrayIndex(buf, e[o]!, e[o + 1]!);
      if (value < 0) continue;
      // Move entry i to position `indexed`, keeping the order of the entries in between.
      const k0 = e[o]!;
      const k1 = e[o + 1]!;
      const v0 = e[o + 2]!;
      const v1 = e[o + 3]!;
      let j = indexed;
      while (j > 0 && arrayIndex(buf, e[base + (j - 1) * 4]!, e[base + (j - 1) * 4 + 1]!) > value) j--;
      for (let m = i; m > j; m--) {
        const to = base + m * 4;
        const from = to - 4;
        e[to] = e[from]!;
        e[to + 1] = e[from + 1]!;
        e[to + 2] = e[from + 2]!;
        e[to + 3] = e[from + 3]!;
      }
      const at = base + j * 4;
      e[at] = k0;
      e[at + 1] = k1;
      e[at + 2] = v0;
      e[at + 3] = v1;
      indexed++;
    }
    this.byte(0x7b);
    for (let i = 0; i < count; i++) {
      const o = base + i * 4;
      if (i > 0) this.byte(0x2c);
      this.string(buf, this.entries[o]!, this.entries[o + 1]!);
      this.byte(0x3a);
      const vs = this.entries[o + 2]!;
      const ve = this.entries[o + 3]!;
      this.value(v, buf, vs, ve);
    }
    this.byte(0x7d);
    this.ep = base;
  }

  /**
   * A JSON string of the UTF-8 bytes buf[at, end) as JSON.stringify escapes it: `"` `\` and
   * control characters; everything else, valid UTF-8, is copied as it is. Invalid UTF-8 is what
   * protobuf-es refuses to decode (proto3 strings are validated), so the record is refused.
   */
  private string(buf: Uint8Array, at: number, end: number): void {
    const n = end - at;
    // Worst case: every byte a control character, 6 bytes each, plus the quotes.
    if (this.length + n * 6 + 2 > this.out.length) this.grow(n * 6 + 2);
    const out = this.out;
    let o = this.length;
    out[o++] = 0x22;
    let i = at;
    while (i < end) {
      const b = buf[i]!;
      if (b >= 0x20 && b !== 0x22 && b !== 0x5c) {
        if (b < 0x80) {
          out[o++] = b;
          i++;
          continue;
        }
        const next = utf8Sequence(buf, i, end);
        while (i < next) out[o++] = buf[i++]!;
        continue;
      }
      out[o++] = 0x5c;
      switch (b) {
        case 0x22:
          out[o++] = 0x22;
          break;
        case 0x5c:
          out[o++] = 0x5c;
          break;
        case 0x08:
          out[o++] = 0x62; // b
          break;
        case 0x0c:
          out[o++] = 0x66; // f
          break;
        case 0x0a:
          out[o++] = 0x6e; // n
          break;
        case 0x0d:
          out[o++] = 0x72; // r
          break;
        case 0x09:
          out[o++] = 0x74; // t
          break;
        default:
          out[o++] = 0x75; // u00XX, lower-case hex as JSON.stringify writes it
          out[o++] = 0x30;
          out[o++] = 0x30;
          out[o++] = HEX[b >> 4]!;
          out[o++] = HEX[b & 15]!;
      }
      i++;
    }
    out[o++] = 0x22;
    this.length = o;
  }

  /** A non-negative integer below 2^53 in decimal. */
  private unsigned(n: number): void {
    if (this.length + 16 > this.out.length) this.grow(16);
    const out = this.out;
    let o = this.length + decimalDigits(n);
    this.length = o;
    if (n <= 0x7fffffff) {
      let x = n | 0;
      do {
        const q = (x / 10) | 0;
        out[--o] = 0x30 + (x - q * 10);
        x = q;
      } while (x !== 0);
      return;
    }
    let x = n;
    do {
      const q = Math.floor(x / 10);
      out[--o] = 0x30 + (x - q * 10);
      x = q;
    } while (x !== 0);
  }

  private signed32(n: number): void {
    if (n < 0) {
      this.byte(0x2d);
      this.unsigned(-n);
    } else this.unsigned(n);
  }

  /** The 64-bit value in (lo, hi) as a quoted decimal, signed when asked. */
  private quoted64(signed: boolean): void {
    this.byte(0x22);
    if (signed && hi >= 0x80000000) {
      // Two's complement negation of (lo, hi).
      this.byte(0x2d);
      lo = ~lo >>> 0;
      hi = ~hi >>> 0;
      lo = (lo + 1) >>> 0;
      if (lo === 0) hi = (hi + 1) >>> 0;
    }
    if (hi <= 0x1fffff) {
      this.unsigned(hi * 4294967296 + lo);
    } else {
      // Three base-10^7 digits (Closure's algorithm, as protobuf-es's uInt64ToString).
      const low = lo & 0xffffff;
      const mid = ((lo >>> 24) | (hi << 8)) & 0xffffff;
      const high = (hi >> 16) & 0xffff;
      let a = low + mid * 6777216 + high * 6710656;
      let b = mid + high * 8147497;
      let c = high * 2;
      const base = 10000000;
      if (a >= base) {
        b += Math.floor(a / base);
        a %= base;
      }
      if (b >= base) {
        c += Math.floor(b / base);
        b %= base;
      }
      this.unsigned(c);
      this.padded7(b);
      this.padded7(a);
    }
    this.byte(0x22);
  }

  private padded7(n: number): void {
    if (this.length + 7 > this.out.length) this.grow(7);
    let o = this.length + 7;
    this.length = o;
    let x = n;
    const out = this.out;
    for (let i = 0; i < 7; i++) {
      const q = (x / 10) | 0;
      out[--o] = 0x30 + (x - q * 10);
      x = q;
    }
  }
}

/**
 * The JSON of message encodings seen, keyed by their bytes: keys and values back to back in one
 * arena, found through an open-addressing table of entry numbers, so a lookup or an insert
 * allocates nothing. Emptied whole when the entries or the arena are full.
 */
class Memo {
  private readonly slots: Int32Array;
  /** Per entry: hash, key start, key end (= value start), value end, in the arena. */
  private readonly entries: Int32Array;
  private readonly arena: Uint8Array;
  private used = 0;
  private size = 0;
  private slot = 0;

  constructor(private readonly maxEntries: number) {
    let n = 2;
    while (n < maxEntries * 2) n <<= 1;
    this.slots = new Int32Array(n);
    this.entries = new Int32Array(maxEntries * 4);
    this.arena = new Uint8Array(Math.max(64 * 1024, maxEntries * 1024));
  }

  /** The entry whose key is buf[at, end), or -1 (remembering the free slot it would take). */
  find(buf: Uint8Array, at: number, end: number, hash: number): number {
    const mask = this.slots.length - 1;
    const e = this.entries;
    for (let s = hash & mask; ; s = (s + 1) & mask) {
      const entry = this.slots[s]! - 1;
      if (entry < 0) {
        this.slot = s;
        return -1;
      }
      const o = entry * 4;
      if (e[o] === hash && sameRange(this.arena, e[o + 1]!, e[o + 2]!, buf, at, end)) return entry;
    }
  }

  copyValue(entry: number, into: ProtoJsonWriter): void {
    into.append(this.arena, this.entries[entry * 4 + 2]!, this.entries[entry * 4 + 3]!);
  }

  /** Remembers key buf[at, end) → value src[from, to), right after a find() that missed it. */
  add(buf: Uint8Array, at: number, end: number, hash: number, src: Uint8Array, from: number, to: number): void {
    const bytes = end - at + (to - from);
    if (bytes > this.arena.length >> 2) return; // too large to be worth keeping
    if (this.size === this.maxEntries || this.used + bytes > this.arena.length) {
      this.slots.fill(0);
      this.used = 0;
      this.size = 0;
      this.find(buf, at, end, hash); // its slot in the emptied table
    }
    const entry = this.size++;
    const o = entry * 4;
    this.entries[o] = hash;
    this.entries[o + 1] = this.used;
    this.arena.set(buf.subarray(at, end), this.used);
    this.used += end - at;
    this.entries[o + 2] = this.used;
    this.arena.set(src.subarray(from, to), this.used);
    this.used += to - from;
    this.entries[o + 3] = this.used;
    this.slots[this.slot] = entry + 1;
  }
}

const TRUE = utf8.encode('true');
const FALSE = utf8.encode('false');
const HEX = utf8.encode('0123456789abcdef');

const POW10 = Array.from({ length: 17 }, (_, i) => 10 ** i);

/** Digits of a non-negative integer below 2^53. */
function decimalDigits(n: number): number {
  let digits = 1;
  while (digits < 16 && n >= POW10[digits]!) digits++;
  return digits;
}

/** Whether the varint just read (lo, hi) is the field's zero value (not written for implicit presence). */
function varintIsZero(field: FieldPlan): boolean {
  switch (field.value.kind) {
    case Kind.Enum:
      return (lo | 0) === field.enumZero;
    case Kind.Uint32:
    case Kind.Int32:
    case Kind.Sint32:
      return lo === 0;
    default:
      return lo === 0 && hi === 0;
  }
}

function isPackable(kind: Kind): boolean {
  return kind !== Kind.String && kind !== Kind.Bytes && kind !== Kind.Message;
}

function floatJson(v: number): number | string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Infinity';
  if (v === -Infinity) return '-Infinity';
  return v;
}

function readU32(buf: Uint8Array, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;
}

/** Bytes taken by the length prefix of a length-delimited value at `at` (already validated by skip). */
function lengthPrefixBytes(buf: Uint8Array, at: number): number {
  let i = at;
  while (buf[i]! >= 0x80) i++;
  return i - at + 1;
}

/** Throws SlowPath unless buf[at, end) is valid UTF-8. */
function validateUtf8(buf: Uint8Array, at: number, end: number): void {
  let i = at;
  while (i < end) i = buf[i]! < 0x80 ? i + 1 : utf8Sequence(buf, i, end);
}

/** The numeric value of a canonical array-index key ("0" … "4294967294"), or -1. */
function arrayIndex(buf: Uint8Array, at: number, end: number): number {
  const n = end - at;
  if (n === 0 || n > 10) return -1;
  if (buf[at] === 0x30 && n > 1) return -1;
  let value = 0;
  for (let i = at; i < end; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d > 9) return -1;
    value = value * 10 + d;
  }
  return value <= 4294967294 ? value : -1;
}

/**
 * The end of the valid UTF-8 sequence starting at buf[i] (a byte ≥ 0x80), or SlowPath for invalid
 * UTF-8 (overlong forms, surrogates, above U+10FFFF, truncated), which protobuf-es refuses.
 */
function utf8Sequence(buf: Uint8Array, i: number, end: number): number {
  const n = utf8SequenceLength(buf, i, end);
  if (n < 0) throw slowPath;
  return i + n;
}
