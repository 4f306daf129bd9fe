// The wire shape of a protobuf message, read from its protobuf-es descriptor: for each field
// number, how protobuf-es reads it and which wire type a canonical encoder writes. The record
// view, its validator and its cursors work from these tables, so adding a field to flow.proto
// changes nothing here.
import { ScalarType } from '@bufbuild/protobuf';
import type { DescField, DescMessage } from '@bufbuild/protobuf';

/** How protobuf-es reads a value: the reader it calls, whatever the wire type of the tag. */
export const enum ReadKind {
  /** varint32read: uint32, int32, sint32, open enums. */
  Varint32 = 1,
  /** varint64read: uint64, int64, sint64. */
  Varint64 = 2,
  /** bool(): one byte below 0x80, else varint64read. */
  Bool = 3,
  /** 4 bytes through a DataView: fixed32, sfixed32, float. */
  Fixed32 = 4,
  /** 8 bytes through a DataView: fixed64, sfixed64, double. */
  Fixed64 = 5,
  /** uint32 length, then that many bytes, UTF-8 checked when `utf8` is set. */
  String = 6,
  Bytes = 7,
  /** uint32 length, then a nested message (no check that it ends where its length says). */
  Message = 8,
}

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LENGTH_DELIMITED = 2;
export const WIRE_START_GROUP = 3;
export const WIRE_END_GROUP = 4;
export const WIRE_FIXED32 = 5;

export interface FieldShape {
  readonly number: number;
  readonly name: string;
  readonly kind: ReadKind;
  /** Wire type of the tag a canonical encoder writes (protobuf-es toBinary). */
  readonly wireType: number;
  readonly utf8: boolean;
  readonly repeated: boolean;
  /** Repeated scalars that protobuf-es also reads packed (wire type 2). */
  readonly packable: boolean;
  /** Nested message shape (kind Message, or a message list). */
  readonly message: MessageShape | undefined;
  /** Map fields: the entry's key (field 1) and value (field 2) shapes. */
  readonly mapKey: FieldShape | undefined;
  readonly mapValue: FieldShape | undefined;
}

export interface MessageShape {
  readonly typeName: string;
  /** Index by field number; undefined for numbers the message does not declare. */
  readonly fields: readonly (FieldShape | undefined)[];
  /** Highest declared field number. */
  readonly maxField: number;
  /** Field number by the TypeScript property name protobuf-es gives it (camelCase). */
  readonly numbers: Readonly<Record<string, number>>;
  /** Scratch for the validator: the visit in which each singular message field was last seen. */
  readonly seen: Float64Array;
  /**
   * The validator's fast path, by one-byte tag (fields 1-15): a FastRead for a declared singular
   * field whose tag has the wire type a canonical encoder writes, 0 for everything else.
   */
  readonly fast: Uint8Array;
}

/** What the validator does for a one-byte tag without looking at the field (see `fast`). */
export const enum FastRead {
  /** varint32read, varint64read and bool() accept the same bytes: up to 10, the last below 0x80. */
  Varint = 1,
  Fixed32 = 2,
  Fixed64 = 3,
  /** Length-delimited, payload not checked (bytes, or a string without UTF-8 validation). */
  Bytes = 4,
  Utf8 = 5,
  Message = 6,
}

function fastRead(field: FieldShape): number {
  if (field.repeated || field.mapKey !== undefined) return 0;
  switch (field.kind) {
    case ReadKind.Varint32:
    case ReadKind.Varint64:
    case ReadKind.Bool:
      return FastRead.Varint;
    case ReadKind.Fixed32:
      return FastRead.Fixed32;
    case ReadKind.Fixed64:
      return FastRead.Fixed64;
    case ReadKind.String:
      return field.utf8 ? FastRead.Utf8 : FastRead.Bytes;
    case ReadKind.Bytes:
      return FastRead.Bytes;
    case ReadKind.Message:
      return FastRead.Message;
  }
}

function scalarKind(scalar: ScalarType): { kind: ReadKind; wireType: number } {
  switch (scalar) {
    case ScalarType.UINT32:
    case ScalarType.INT32:
    case ScalarType.SINT32:
      return { kind: ReadKind.Varint32, wireType: WIRE_VARINT };
    case ScalarType.UINT64:
    case ScalarType.INT64:
    case ScalarType.SINT64:
      return { kind: ReadKind.Varint64, wireType: WIRE_VARINT };
    case ScalarType.BOOL:
      return { kind: ReadKind.Bool, wireType: WIRE_VARINT };
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
    case ScalarType.FLOAT:
      return { kind: ReadKind.Fixed32, wireType: WIRE_FIXED32 };
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
    case ScalarType.DOUBLE:
      return { kind: ReadKind.Fixed64, wireType: WIRE_FIXED64 };
    case ScalarType.STRING:
      return { kind: ReadKind.String, wireType: WIRE_LENGTH_DELIMITED };
    case ScalarType.BYTES:
      return { kind: ReadKind.Bytes, wireType: WIRE_LENGTH_DELIMITED };
  }
}

const shapes = new WeakMap<DescMessage, MessageShape>();

function fieldShape(field: DescField): FieldShape {
  const base = { number: field.number, name: field.localName, utf8: field.utf8Validation, mapKey: undefined, mapValue: undefined };
  switch (field.fieldKind) {
    case 'scalar': {
      const { kind, wireType } = scalarKind(field.scalar);
      return { ...base, kind, wireType, repeated: false, packable: false, message: undefined };
    }
    case 'enum':
      // proto2 closed enums keep unknown values as unknown fields; the view does not mirror that.
      if (!field.enum.open) throw new Error(`${field.toString()}: closed enums are not supported by the record view`);
      return { ...base, kind: ReadKind.Varint32, wireType: WIRE_VARINT, repeated: false, packable: false, message: undefined };
    case 'message':
      if (field.delimitedEncoding) throw new Error(`${field.toString()}: group encoding is not supported by the record view`);
      return { ...base, kind: ReadKind.Message, wireType: WIRE_LENGTH_DELIMITED, repeated: false, packable: false, message: messageShape(field.message) };
    case 'list': {
      if (field.listKind === 'message') {
        if (field.delimitedEncoding) throw new Error(`${field.toString()}: group encoding is not supported by the record view`);
        return { ...base, kind: ReadKind.Message, wireType: WIRE_LENGTH_DELIMITED, repeated: true, packable: false, message: messageShape(field.message) };
      }
      const { kind, wireType } = field.listKind === 'enum' ? { kind: ReadKind.Varint32, wireType: WIRE_VARINT } : scalarKind(field.scalar);
      const packable = kind !== ReadKind.String && kind !== ReadKind.Bytes;
      // protobuf-es writes packable lists packed unless the field says otherwise.
      return { ...base, kind, wireType: packable && field.packed ? WIRE_LENGTH_DELIMITED : wireType, repeated: true, packable, message: undefined };
    }
    case 'map': {
      const key = scalarKind(field.mapKey);
      const keyShape: FieldShape = { number: 1, name: 'key', kind: key.kind, wireType: key.wireType, utf8: field.utf8Validation, repeated: false, packable: false, message: undefined, mapKey: undefined, mapValue: undefined };
      let valueShape: FieldShape;
      if (field.mapKind === 'message') {
        valueShape = { number: 2, name: 'value', kind: ReadKind.Message, wireType: WIRE_LENGTH_DELIMITED, utf8: false, repeated: false, packable: false, message: messageShape(field.message), mapKey: undefined, mapValue: undefined };
      } else {
        const value = field.mapKind === 'enum' ? { kind: ReadKind.Varint32, wireType: WIRE_VARINT } : scalarKind(field.scalar);
        valueShape = { number: 2, name: 'value', kind: value.kind, wireType: value.wireType, utf8: field.utf8Validation, repeated: false, packable: false, message: undefined, mapKey: undefined, mapValue: undefined };
      }
      return { ...base, kind: ReadKind.Message, wireType: WIRE_LENGTH_DELIMITED, repeated: true, packable: false, message: undefined, mapKey: keyShape, mapValue: valueShape };
    }
  }
}

/** The wire shape of a message, built once per descriptor. */
export function messageShape(desc: DescMessage): MessageShape {
  const known = shapes.get(desc);
  if (known) return known;
  const fields: (FieldShape | undefined)[] = [];
  const numbers: Record<string, number> = {};
  const shape = { typeName: desc.typeName, fields, maxField: 0, numbers, seen: new Float64Array(0), fast: new Uint8Array(128) };
  // Registered before the fields, so a message that contains itself resolves to this shape.
  shapes.set(desc, shape);
  let maxField = 0;
  for (const field of desc.fields) {
    if (field.number > 100_000) throw new Error(`${field.toString()}: field numbers above 100000 are not supported by the record view`);
    fields[field.number] = fieldShape(field);
    numbers[field.localName] = field.number;
    maxField = Math.max(maxField, field.number);
  }
  shape.maxField = maxField;
  shape.seen = new Float64Array(maxField + 1);
  for (let fieldNo = 1; fieldNo <= Math.min(maxField, 15); fieldNo++) {
    const field = fields[fieldNo];
    if (field !== undefined) shape.fast[(fieldNo << 3) | field.wireType] = fastRead(field);
  }
  return shape;
}

/** Field numbers of a message by property name, typed from the protobuf-es message type. */
export type FieldNumbers<T> = { readonly [K in Exclude<keyof T, '$typeName' | '$unknown'>]: number };

/**
 * The field numbers of a message, by the names its generated TypeScript type uses:
 * `fieldNumbers<FlowRecord>(FlowRecordSchema).src === 6`. Taken from the descriptor, so a new
 * field appears here by itself.
 */
export function fieldNumbers<T>(desc: DescMessage): FieldNumbers<T> {
  return messageShape(desc).numbers as FieldNumbers<T>;
}
