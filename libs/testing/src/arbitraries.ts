// fast-check generators of any protobuf message, built from its descriptor: every field (new ones
// included) gets values across its whole range, so byte-level code (the record view, the stages'
// byte transforms) is tested on fields it has never heard of by name.
import fc from 'fast-check';
import { ScalarType, create } from '@bufbuild/protobuf';
import type { DescField, DescMessage, Message } from '@bufbuild/protobuf';

const u64 = fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 1000n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
const i64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
/** Any Unicode scalar value of 1–4 UTF-8 bytes, ASCII most often (as in real records). */
const anyChar = fc
  .oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x7f }) },
    { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0x7ff }) },
    { weight: 1, arbitrary: fc.oneof(fc.integer({ min: 0x800, max: 0xd7ff }), fc.integer({ min: 0xe000, max: 0xffff })) },
    { weight: 1, arbitrary: fc.integer({ min: 0x10000, max: 0x10ffff }) },
  )
  .map((cp) => String.fromCodePoint(cp));
export const text = fc.oneof(fc.constant(''), fc.string({ unit: anyChar, maxLength: 40 }), fc.string({ unit: anyChar, maxLength: 300 }));

function scalar(type: ScalarType): fc.Arbitrary<unknown> {
  switch (type) {
    case ScalarType.STRING:
      return text;
    case ScalarType.BYTES:
      return fc.uint8Array({ maxLength: 40 });
    case ScalarType.BOOL:
      return fc.boolean();
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0, max: 0xffff_ffff }));
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff });
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return u64;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return i64;
    case ScalarType.FLOAT:
      return fc.float({ noNaN: true });
    case ScalarType.DOUBLE:
      return fc.double({ noNaN: true });
  }
}

function fieldValue(field: DescField, depth: number): fc.Arbitrary<unknown> {
  switch (field.fieldKind) {
    case 'scalar':
      return scalar(field.scalar);
    case 'enum':
      return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...field.enum.values.map((v) => v.number)) }, { weight: 1, arbitrary: fc.integer({ min: -5, max: 300 }) });
    case 'message':
      return messageInit(field.message, depth + 1);
    case 'list':
      if (field.listKind === 'message') return fc.array(messageInit(field.message, depth + 1), { maxLength: 3 });
      if (field.listKind === 'enum') return fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 4 });
      return fc.array(scalar(field.scalar), { maxLength: 4 });
    case 'map': {
      const key = field.mapKey === ScalarType.STRING ? text : scalar(field.mapKey).map(String);
      const value = field.mapKind === 'message' ? messageInit(field.message, depth + 1) : field.mapKind === 'enum' ? fc.integer({ min: 0, max: 3 }) : scalar(field.scalar);
      return fc.dictionary(key as fc.Arbitrary<string>, value, { maxKeys: 6 });
    }
  }
}

/** An init object for `create(desc, init)`; every field present or absent at random. */
export function messageInit(desc: DescMessage, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const model: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    if (depth > 4 && field.fieldKind === 'message') continue;
    model[field.localName] = fieldValue(field, depth);
  }
  return fc.record(model, { requiredKeys: [] });
}

/** Any message of the type, as protobuf-es objects. */
export function anyMessage<T extends Message>(desc: DescMessage): fc.Arbitrary<T> {
  return messageInit(desc).map((init) => create(desc, init as never) as unknown as T);
}
