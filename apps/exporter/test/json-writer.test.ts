// The bytes → JSON writer against its oracle, protobuf-es: for generated FlowRecords (every field,
// empty and default values, 64-bit extremes, unknown enum values, any Unicode with control
// characters, labels with keys a JS object orders specially) and for wire forms other producers
// write (fields out of order, repeated scalars, unknown fields, explicit zeros, repeated map keys),
// the writer's bytes equal JSON.stringify(toJson(fromBinary(bytes))) and take the fast path. A
// test-only message with every protobuf field kind keeps the writer honest for fields flow.proto
// may gain. `npm run fuzz` runs more cases (KAPPA_FUZZ_RUNS).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createFileRegistry, create, fromBinary, toBinary, toJson } from '@bufbuild/protobuf';
import type { DescMessage, MessageShape } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { FlowRecordSchema, IpProtocol, KubeSchema, ProcessSchema, StageStatusSchema, Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { ProtoJsonWriter } from '../src/jsonl/json-writer.js';

// A run writes one record with up to 90 fields: ~10x a FlowBatch codec run.
const runs = process.env.KAPPA_FUZZ_RUNS ? Math.ceil(Number(process.env.KAPPA_FUZZ_RUNS) / 10) : 300;

/** The oracle: protobuf-es's canonical JSON of the decoded bytes, or undefined when it refuses them. */
function oracle(schema: DescMessage, bytes: Uint8Array): string | undefined {
  try {
    return JSON.stringify(toJson(schema, fromBinary(schema, bytes)));
  } catch {
    return undefined;
  }
}

function written(writer: ProtoJsonWriter, bytes: Uint8Array): string | undefined {
  writer.reset();
  // Inside a larger buffer, as records sit inside a batch.
  const framed = new Uint8Array(bytes.length + 7);
  framed.set(bytes, 3);
  return writer.message(framed, 3, 3 + bytes.length) ? Buffer.from(writer.bytes()).toString('utf8') : undefined;
}

// ---- generated FlowRecords ----

/** One character of 1–4 UTF-8 bytes, control characters, quotes, backslashes and lone surrogates included. */
const anyChar = fc
  .oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 0x7f }) },
    fc.constantFrom(0x00, 0x08, 0x09, 0x0a, 0x0c, 0x0d, 0x1f, 0x22, 0x2f, 0x5c, 0x7f, 0x2028, 0x2029, 0xfeff, 0xfffd, 0xd800, 0xdc00, 0xdbff),
    fc.integer({ min: 0x80, max: 0x7ff }),
    fc.integer({ min: 0x800, max: 0xffff }),
    fc.integer({ min: 0x10000, max: 0x10ffff }),
  )
  .map((cp) => String.fromCodePoint(cp));
const text = fc.oneof({ weight: 2, arbitrary: fc.constant('') }, { weight: 6, arbitrary: fc.string({ unit: anyChar, maxLength: 30 }) }, fc.string({ unit: anyChar, maxLength: 600 }));
const u64 = fc.oneof(fc.constantFrom(0n, 1n, (1n << 53n) - 1n, 1n << 53n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 1n, 1_764_000_000_123_456_789n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
const u32 = fc.oneof(fc.constantFrom(0, 1, 9, 10, 0x7fffffff, 0x80000000, 0xffffffff), fc.integer({ min: 0, max: 0xffffffff }));
/** Known values, unknown ones, and negative ones (10-byte varints on the wire). */
const enumValue = (known: number[]) => fc.oneof(fc.constantFrom(...known), fc.constantFrom(3, 99, 255, -1, -2147483648, 2147483647), fc.integer({ min: -5, max: 300 }));
/** Keys a JS object orders or treats specially: array indexes come first, ascending; __proto__ is an ordinary key. */
const labelKey = fc.oneof(
  fc.constantFrom('', '0', '1', '01', '2', '10', '4294967294', '4294967295', '-1', '1.5', '__proto__', 'constructor', 'toString', 'app.kubernetes.io/name', 'é', '😀'),
  fc.string({ unit: anyChar, maxLength: 12 }),
  fc.integer({ min: 0, max: 5000 }).map(String),
);
const labels = fc.array(fc.tuple(labelKey, text), { maxLength: 8 });

const processArb = fc.record(
  { pid: u32, name: text, cmdline: text, exe: text, containerId: text, containerName: text, containerRuntime: text, cgroupId: u64, cgroupPath: text, uid: u32, startTimeTicks: u64 },
  { requiredKeys: [] },
);
const kubeArb = fc.record(
  {
    node: text,
    objectName: text,
    objectNamespace: text,
    objectType: text,
    workloadName: text,
    workloadNamespace: text,
    workloadKind: text,
    labels,
    containerName: text,
    serviceName: text,
    serviceNamespace: text,
    objectUid: text,
  },
  { requiredKeys: [] },
);
const endpointArb = fc.record({ ip: text, port: u32, process: processArb, kube: kubeArb, backendIp: text, backendPort: u32 }, { requiredKeys: [] });

const recordArb = fc
  .record(
    {
      node: text,
      vantage: enumValue([Vantage.UNSPECIFIED, Vantage.SRC, Vantage.DST]),
      startNs: u64,
      endNs: u64,
      protocol: enumValue([IpProtocol.UNSPECIFIED, IpProtocol.TCP, IpProtocol.UDP, IpProtocol.ICMP, IpProtocol.ICMPV6, IpProtocol.SCTP]),
      src: endpointArb,
      dst: endpointArb,
      bytes: u64,
      packets: u64,
      reverseBytes: u64,
      reversePackets: u64,
      tcp: fc.record({ srttUs: u32, minRttUs: u32, retransmits: u32, handshakeUs: u32, flags: u32 }, { requiredKeys: [] }),
      appLatency: fc.record({ count: u64, sumUs: u64, maxUs: u64 }, { requiredKeys: [] }),
      joined: fc.boolean(),
      clusterId: u32,
      observation: text,
      id: text,
      icmpType: u32,
      icmpCode: u32,
      firstSeenNs: u64,
      lastSeenNs: u64,
      joinStatus: text,
    },
    { requiredKeys: [] },
  )
  .map((init) => {
    const { src, dst, ...rest } = init;
    const record = create(FlowRecordSchema, rest);
    // Labels are set key by key: an object literal would turn "__proto__" into a prototype.
    for (const [side, end] of [
      ['src', src],
      ['dst', dst],
    ] as const) {
      if (!end) continue;
      const { kube, ...endRest } = end;
      record[side] = create(FlowRecordSchema.field.src!.message!, endRest) as FlowRecord['src'];
      if (kube) {
        const { labels: pairs, ...kubeRest } = kube;
        const k = create(FlowRecordSchema.field.src!.message!.field.kube!.message!, kubeRest) as NonNullable<FlowRecord['src']>['kube'];
        for (const [key, value] of pairs ?? []) Object.defineProperty(k!.labels, key, { value, enumerable: true, writable: true, configurable: true });
        record[side]!.kube = k;
      }
    }
    return record;
  });

// ---- wire forms: a small independent encoder ----

function varint(n: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  do {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? b | 0x80 : b);
  } while (v > 0n);
  return out;
}
const tag = (field: number, wire: number) => varint(BigInt(field) * 8n + BigInt(wire));
const lenField = (field: number, payload: Uint8Array | number[]) => Uint8Array.from([...tag(field, 2), ...varint(BigInt(payload.length)), ...payload]);
const varintField = (field: number, n: bigint) => Uint8Array.from([...tag(field, 0), ...varint(n)]);
const concat = (parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));

/** The top-level fields of an encoded message, each with its tag. */
function segments(bytes: Uint8Array): { field: number; wire: number; bytes: Uint8Array }[] {
  const out: { field: number; wire: number; bytes: Uint8Array }[] = [];
  let i = 0;
  const readVarint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = bytes[i++]!;
      v |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if (b < 0x80) return v;
    }
  };
  while (i < bytes.length) {
    const start = i;
    const t = Number(readVarint());
    const wire = t & 7;
    if (wire === 0) readVarint();
    else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else if (wire === 2) {
      const length = Number(readVarint());
      i += length;
    }
    else throw new Error(`wire type ${wire}`);
    out.push({ field: t >>> 3, wire, bytes: bytes.subarray(start, i) });
  }
  return out;
}

/** The first field number FlowRecord does not define (from the schema: a new field must not read as unknown). */
const FIRST_UNKNOWN = Math.max(...FlowRecordSchema.fields.map((f) => f.number)) + 1;
const unknownField = fc.oneof(
  fc.tuple(fc.integer({ min: FIRST_UNKNOWN, max: 536870911 }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })).map(([f, v]) => varintField(f, v)),
  fc.tuple(fc.integer({ min: FIRST_UNKNOWN, max: 5000 }), fc.uint8Array({ maxLength: 20 })).map(([f, p]) => lenField(f, p)),
  fc.tuple(fc.integer({ min: FIRST_UNKNOWN, max: 5000 }), fc.uint8Array({ minLength: 8, maxLength: 8 })).map(([f, p]) => Uint8Array.from([...tag(f, 1), ...p])),
  fc.tuple(fc.integer({ min: FIRST_UNKNOWN, max: 5000 }), fc.uint8Array({ minLength: 4, maxLength: 4 })).map(([f, p]) => Uint8Array.from([...tag(f, 5), ...p])),
);

/** Explicitly encoded zero values, which protobuf-es never writes but other encoders may. */
const explicitZeros = fc.subarray([
  lenField(1, []), // node ""
  varintField(2, 0n), // vantage UNSPECIFIED
  varintField(3, 0n), // start_ns 0
  varintField(14, 0n), // joined false
  varintField(15, 0n), // cluster_id 0
  lenField(17, []), // id ""
]);

/**
 * A record as another producer might write it: its fields shuffled, some scalars written twice
 * with an earlier different value (the last one counts), unknown fields and explicit zeros mixed
 * in, and Kube labels with repeated keys and entries missing their key or value.
 */
const wireFormArb = fc
  .record({
    record: recordArb,
    other: recordArb,
    order: fc.array(fc.nat(), { maxLength: 40 }),
    unknown: fc.array(unknownField, { maxLength: 4 }),
    zeros: explicitZeros,
    entries: fc.array(
      fc.record({ key: fc.option(labelKey, { nil: undefined }), value: fc.option(text, { nil: undefined }), junk: fc.option(unknownField, { nil: undefined }) }),
      { maxLength: 6 },
    ),
    repeatKey: fc.boolean(),
  })
  .map(({ record, other, order, unknown, zeros, entries, repeatKey }) => {
    const mine = segments(toBinary(FlowRecordSchema, record));
    // Earlier values of this record's scalar fields, taken from another record: overridden later.
    const earlier = segments(toBinary(FlowRecordSchema, other)).filter((s) => ![6, 7, 12, 13].includes(s.field));
    const parts = [...zeros, ...earlier.map((s) => s.bytes), ...unknown];
    const tail = mine.map((s) => s.bytes);
    // Shuffle this record's own fields, keeping each after its earlier value.
    for (let i = tail.length - 1; i > 0; i--) {
      const j = (order[i] ?? 0) % (i + 1);
      [tail[i], tail[j]] = [tail[j]!, tail[i]!];
    }
    const te = new TextEncoder();
    const entryBytes = entries.map(({ key, value, junk }) =>
      lenField(8, concat([...(key === undefined ? [] : [lenField(1, te.encode(key))]), ...(junk ? [junk] : []), ...(value === undefined ? [] : [lenField(2, te.encode(value))])])),
    );
    if (repeatKey && entries.length > 0) entryBytes.push(entryBytes[0]!);
    // A src with Kube labels written entry by entry (the record's own src, if any, comes before: merged by protobuf-es).
    const kube = lenField(4, concat(entryBytes));
    const src = lenField(6, kube);
    const hasSrc = mine.some((s) => s.field === 6);
    return { bytes: concat([...parts, ...tail, ...(entryBytes.length > 0 && !hasSrc ? [src] : [])]), mergesMessages: false };
  });

describe('bytes → JSON writer (FlowRecord)', () => {
  const writer = new ProtoJsonWriter(FlowRecordSchema, 64);

  it('writes exactly protobuf-es toJson + JSON.stringify for generated records, on the fast path', () => {
    fc.assert(
      fc.property(recordArb, (record) => {
        const bytes = toBinary(FlowRecordSchema, record);
        const before = writer.slowPaths;
        expect(written(writer, bytes)).toBe(oracle(FlowRecordSchema, bytes));
        expect(writer.slowPaths).toBe(before);
      }),
      { numRuns: runs },
    );
  });

  it('writes the same for other wire forms: shuffled, repeated scalars, unknown fields, explicit zeros, repeated and partial map entries', () => {
    fc.assert(
      fc.property(wireFormArb, ({ bytes }) => {
        const before = writer.slowPaths;
        const want = oracle(FlowRecordSchema, bytes);
        expect(want).toBeDefined();
        expect(written(writer, bytes)).toBe(want);
        expect(writer.slowPaths).toBe(before);
      }),
      { numRuns: runs },
    );
  });

  it('writes the merged message when a message field comes twice (protobuf merges them), through protobuf-es', () => {
    fc.assert(
      fc.property(recordArb, recordArb, (a, b) => {
        fc.pre(a.src !== undefined && b.src !== undefined);
        const bytes = concat([toBinary(FlowRecordSchema, a), toBinary(FlowRecordSchema, create(FlowRecordSchema, { src: b.src }))]);
        expect(written(writer, bytes)).toBe(oracle(FlowRecordSchema, bytes));
      }),
      { numRuns: Math.ceil(runs / 4) },
    );
  });

  it('refuses exactly what protobuf-es refuses (truncated bytes, invalid UTF-8, bad tags), writing nothing', () => {
    fc.assert(
      fc.property(recordArb, fc.nat(), fc.constantFrom('truncate', 'utf8', 'tag', 'overlong'), (record, at, damage) => {
        const good = toBinary(FlowRecordSchema, record);
        let bytes: Uint8Array;
        if (damage === 'truncate') bytes = good.subarray(0, good.length === 0 ? 0 : at % good.length);
        else if (damage === 'utf8') {
          // A string field whose bytes are not UTF-8: a lone continuation byte, an overlong '/', a surrogate, > U+10FFFF.
          const invalid = [[0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]][at % 5]!;
          const field = [1, 16, 17, 22][at % 4]!;
          bytes = at % 2 ? concat([good, lenField(field, [0x61, ...invalid])]) : concat([lenField(field, invalid), good]);
        } else if (damage === 'tag') bytes = concat([good, Uint8Array.from([0x00, 0x01])]);
        else bytes = concat([good, Uint8Array.from([0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])]);
        const mark = writer.length;
        const want = oracle(FlowRecordSchema, bytes);
        writer.reset();
        const ok = writer.message(bytes, 0, bytes.length);
        expect(ok).toBe(want !== undefined);
        if (ok) expect(Buffer.from(writer.bytes()).toString('utf8')).toBe(want);
        else expect(writer.length).toBe(0);
        void mark;
      }),
      { numRuns: runs },
    );
  });

  it('appends records one after another into one buffer, growing it', () => {
    const records = fc.sample(recordArb, { numRuns: 50, seed: 15 });
    const w = new ProtoJsonWriter(FlowRecordSchema, 16);
    for (const r of records) {
      const bytes = toBinary(FlowRecordSchema, r);
      expect(w.message(bytes, 0, bytes.length)).toBe(true);
      w.byte(0x0a);
    }
    // Lone surrogates become U+FFFD on the wire, so the expectation starts from the bytes too.
    expect(Buffer.from(w.bytes()).toString('utf8')).toBe(records.map((r) => `${oracle(FlowRecordSchema, toBinary(FlowRecordSchema, r))}\n`).join(''));
  });

  it('with Kube and Process memoized by their bytes, writes the same as protobuf-es for records that share and do not share them', () => {
    // A small memo table, so it also fills and empties during the run.
    const memo = new ProtoJsonWriter(FlowRecordSchema, 64, { memoize: [KubeSchema, ProcessSchema], memoEntries: 8 });
    const pool = fc.sample(recordArb, { numRuns: 40, seed: 21 });
    fc.assert(
      fc.property(recordArb, fc.nat(39), fc.nat(39), fc.boolean(), (record, a, b, damage) => {
        // Both ends taken from records of the pool: their Kube and Process repeat across runs.
        const shared = create(FlowRecordSchema, { ...record, src: pool[a]!.src, dst: pool[b]!.dst });
        const good = toBinary(FlowRecordSchema, shared);
        // A repeat of known ends next to invalid UTF-8 elsewhere in the record is still refused.
        const bytes = damage ? concat([good, lenField(1, [0x61, 0xc0, 0xaf])]) : good;
        const want = oracle(FlowRecordSchema, bytes);
        expect(written(memo, bytes)).toBe(want);
        if (want === undefined) expect(memo.length).toBe(0);
      }),
      { numRuns: runs },
    );
    expect(memo.memoHits).toBeGreaterThan(0);
    expect(memo.memoMisses).toBeGreaterThan(0);
  });

  it('with memoized Kube, two encodings of the same hash each get their own JSON', () => {
    // Two pod names whose Kube encodings (field 2, length, the name) collide under 32-bit FNV-1a,
    // found by brute force (a birthday search over ~2^16 names).
    const fnv = (bytes: Uint8Array) => {
      let h = 0x811c9dc5;
      for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
      return h | 0;
    };
    const seen = new Map<number, string>();
    let pair: [string, string] | undefined;
    for (let i = 0; !pair; i++) {
      const name = `pod-${i.toString(36)}`;
      // The Kube's encoding: field 2 (object_name), its length, its bytes.
      const h = fnv(Uint8Array.from([0x12, name.length, ...Buffer.from(name)]));
      const other = seen.get(h);
      if (other !== undefined) pair = [other, name];
      else seen.set(h, name);
    }
    for (const name of pair) expect(toBinary(KubeSchema, create(KubeSchema, { objectName: name }))).toEqual(Uint8Array.from([0x12, name.length, ...Buffer.from(name)]));
    const memo = new ProtoJsonWriter(FlowRecordSchema, 64, { memoize: [KubeSchema] });
    for (const name of [...pair, ...pair]) {
      const bytes = toBinary(FlowRecordSchema, create(FlowRecordSchema, { id: name, src: { kube: { objectName: name } } }));
      expect(written(memo, bytes)).toBe(oracle(FlowRecordSchema, bytes));
    }
    expect(memo.memoHits).toBe(2);
  });

  it('a map<string, uint64> (StageStatus.lost) comes out as protobuf-es writes it', () => {
    const w = new ProtoJsonWriter(StageStatusSchema);
    fc.assert(
      fc.property(fc.array(fc.tuple(labelKey, u64), { maxLength: 6 }), text, u64, (pairs, stage, recordsIn) => {
        const status = create(StageStatusSchema, { stage, recordsIn });
        for (const [k, v] of pairs) Object.defineProperty(status.lost, k, { value: v, enumerable: true, writable: true, configurable: true });
        const bytes = toBinary(StageStatusSchema, status);
        const before = w.slowPaths;
        expect(written(w, bytes)).toBe(oracle(StageStatusSchema, bytes));
        expect(w.slowPaths).toBe(before);
      }),
      { numRuns: runs },
    );
  });
});

// ---- every field kind protobuf has, in a test-only schema ----

const T = {
  double: 1,
  float: 2,
  int64: 3,
  uint64: 4,
  int32: 5,
  fixed64: 6,
  fixed32: 7,
  bool: 8,
  string: 9,
  message: 11,
  bytes: 12,
  uint32: 13,
  enum: 14,
  sfixed32: 15,
  sfixed64: 16,
  sint32: 17,
  sint64: 18,
} as const;
const OPTIONAL = 1;
const REPEATED = 3;
const scalarKinds = ['double', 'float', 'int64', 'uint64', 'int32', 'fixed64', 'fixed32', 'bool', 'string', 'bytes', 'uint32', 'sfixed32', 'sfixed64', 'sint32', 'sint64'] as const;
type ScalarKind = (typeof scalarKinds)[number];

const camel = (name: string) => name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
function field(name: string, number: number, type: number, extra: Record<string, unknown> = {}) {
  return { name, number, type, label: OPTIONAL, jsonName: camel(name), ...extra };
}
const mapEntry = (name: string, key: number, value: number, valueType?: string) => ({
  name,
  field: [field('key', 1, key), field('value', 2, value, valueType ? { typeName: valueType } : {})],
  options: { mapEntry: true },
});

const allKinds = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: 'kappa/test/all_kinds.proto',
    package: 'kappa.test',
    syntax: 'proto3',
    enumType: [{ name: 'Color', value: [{ name: 'COLOR_UNSPECIFIED', number: 0 }, { name: 'COLOR_RED', number: 1 }, { name: 'COLOR_BLUE', number: 2 }] }],
    messageType: [
      { name: 'Nested', field: [field('s', 1, T.string), field('n', 2, T.uint64)] },
      {
        name: 'AllKinds',
        field: [
          ...scalarKinds.map((k, i) => field(`f_${k}`, i + 1, T[k])),
          field('color', 20, T.enum, { typeName: '.kappa.test.Color' }),
          field('nested', 21, T.message, { typeName: '.kappa.test.Nested' }),
          field('opt_int32', 22, T.int32, { proto3Optional: true, oneofIndex: 0 }),
          field('opt_string', 23, T.string, { proto3Optional: true, oneofIndex: 1 }),
          ...scalarKinds.map((k, i) => field(`r_${k}`, 30 + i, T[k], { label: REPEATED })),
          field('r_color', 50, T.enum, { label: REPEATED, typeName: '.kappa.test.Color' }),
          field('r_nested', 51, T.message, { label: REPEATED, typeName: '.kappa.test.Nested' }),
          field('c_text', 60, T.string, { oneofIndex: 2 }),
          field('c_nested', 61, T.message, { oneofIndex: 2, typeName: '.kappa.test.Nested' }),
          field('c_num', 62, T.sint64, { oneofIndex: 2 }),
          field('m_text', 70, T.message, { label: REPEATED, typeName: '.kappa.test.AllKinds.MTextEntry' }),
          field('m_nested', 71, T.message, { label: REPEATED, typeName: '.kappa.test.AllKinds.MNestedEntry' }),
          field('m_color', 72, T.message, { label: REPEATED, typeName: '.kappa.test.AllKinds.MColorEntry' }),
          field('m_int', 73, T.message, { label: REPEATED, typeName: '.kappa.test.AllKinds.MIntEntry' }),
          field('m_bool', 74, T.message, { label: REPEATED, typeName: '.kappa.test.AllKinds.MBoolEntry' }),
          field('far_away', 536870911, T.string),
        ],
        oneofDecl: [{ name: '_opt_int32' }, { name: '_opt_string' }, { name: 'choice' }],
        nestedType: [
          mapEntry('MTextEntry', T.string, T.string),
          mapEntry('MNestedEntry', T.string, T.message, '.kappa.test.Nested'),
          mapEntry('MColorEntry', T.string, T.enum, '.kappa.test.Color'),
          mapEntry('MIntEntry', T.int32, T.string),
          mapEntry('MBoolEntry', T.bool, T.int64),
        ],
      },
    ],
  }),
  () => undefined,
);
const AllKinds = allKinds.getMessage('kappa.test.AllKinds')!;
const Nested = allKinds.getMessage('kappa.test.Nested')!;

const i64 = fc.oneof(fc.constantFrom(0n, -1n, 1n, -(1n << 63n), (1n << 63n) - 1n), fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }));
const i32 = fc.oneof(fc.constantFrom(0, -1, 1, -2147483648, 2147483647), fc.integer({ min: -2147483648, max: 2147483647 }));
const f64 = fc.oneof(fc.constantFrom(0, -0, 1.5, -2.25e-308, 5e-324, Number.MAX_VALUE, Infinity, -Infinity, NaN, 1e21, 123456789.125), fc.double());
const f32 = f64.map((v) => Math.fround(v));
const scalarArb: Record<ScalarKind, fc.Arbitrary<unknown>> = {
  double: f64,
  float: f32,
  int64: i64,
  uint64: u64,
  int32: i32,
  fixed64: u64,
  fixed32: u32,
  bool: fc.boolean(),
  string: text,
  bytes: fc.uint8Array({ maxLength: 20 }),
  uint32: u32,
  sfixed32: i32,
  sfixed64: i64,
  sint32: i32,
  sint64: i64,
};
const nestedArb = fc.record({ s: text, n: u64 }, { requiredKeys: [] }).map((init) => create(Nested, init));
const colorArb = enumValue([0, 1, 2]);

const allKindsArb = fc
  .record(
    {
      ...Object.fromEntries(scalarKinds.map((k) => [camel(`f_${k}`), scalarArb[k]])),
      ...Object.fromEntries(scalarKinds.map((k) => [camel(`r_${k}`), fc.array(scalarArb[k], { maxLength: 4 })])),
      color: colorArb,
      nested: nestedArb,
      optInt32: i32,
      optString: text,
      rColor: fc.array(colorArb, { maxLength: 4 }),
      rNested: fc.array(nestedArb, { maxLength: 3 }),
      choice: fc.oneof(
        fc.constant({ case: undefined }),
        text.map((value) => ({ case: 'cText' as const, value })),
        nestedArb.map((value) => ({ case: 'cNested' as const, value })),
        i64.map((value) => ({ case: 'cNum' as const, value })),
      ),
      mText: fc.array(fc.tuple(labelKey, text), { maxLength: 4 }),
      mNested: fc.array(fc.tuple(labelKey, nestedArb), { maxLength: 3 }),
      mColor: fc.array(fc.tuple(labelKey, colorArb), { maxLength: 3 }),
      mInt: fc.array(fc.tuple(i32, text), { maxLength: 3 }),
      mBool: fc.array(fc.tuple(fc.boolean(), i64), { maxLength: 2 }),
      farAway: text,
    },
    { requiredKeys: [] },
  )
  .map((init) => {
    const { mText, mNested, mColor, mInt, mBool, ...rest } = init as Record<string, unknown> & Record<'mText' | 'mNested' | 'mColor' | 'mInt' | 'mBool', [unknown, unknown][] | undefined>;
    const message = create(AllKinds, rest as never) as MessageShape<typeof AllKinds> & Record<string, Record<string, unknown>>;
    for (const [name, pairs] of Object.entries({ mText, mNested, mColor, mInt, mBool })) {
      for (const [k, v] of pairs ?? []) Object.defineProperty(message[name], String(k), { value: v, enumerable: true, writable: true, configurable: true });
    }
    return message;
  });

describe('bytes → JSON writer (every protobuf field kind)', () => {
  const writer = new ProtoJsonWriter(AllKinds, 64);

  it('writes exactly what protobuf-es writes for scalars of every type, enums, optionals, lists (packed and not), oneofs and maps', () => {
    let fast = 0;
    fc.assert(
      fc.property(allKindsArb, fc.boolean(), (message, unpack) => {
        let bytes = toBinary(AllKinds, message);
        if (unpack) {
          // The same lists written unpacked (one tag per value), as proto2 encoders do: decoders take both.
          bytes = concat(
            segments(bytes).flatMap((s) => {
              const kind = s.field >= 30 && s.field < 45 ? scalarKinds[s.field - 30]! : s.field === 50 ? 'int32' : undefined;
              if (kind === undefined || s.wire !== 2 || kind === 'string' || kind === 'bytes') return [s.bytes];
              const wire = ['double', 'fixed64', 'sfixed64'].includes(kind) ? 1 : ['float', 'fixed32', 'sfixed32'].includes(kind) ? 5 : 0;
              // The values: after the tag and the length prefix.
              let i = tag(s.field, 2).length;
              while (s.bytes[i]! >= 0x80) i++;
              const body = s.bytes.subarray(i + 1);
              const out: Uint8Array[] = [];
              let j = 0;
              while (j < body.length) {
                const start = j;
                if (wire === 1) j += 8;
                else if (wire === 5) j += 4;
                else while (body[j++]! >= 0x80);
                out.push(Uint8Array.from([...tag(s.field, wire), ...body.subarray(start, j)]));
              }
              return out;
            }),
          );
        }
        const before = writer.slowPaths;
        expect(written(writer, bytes)).toBe(oracle(AllKinds, bytes));
        // Integer and bool map keys go through protobuf-es; everything else is on the fast path.
        const record = message as unknown as Record<'mInt' | 'mBool', object>;
        if (Object.keys(record.mInt).length + Object.keys(record.mBool).length === 0) {
          expect(writer.slowPaths).toBe(before);
          fast++;
        }
      }),
      { numRuns: runs },
    );
    expect(fast).toBeGreaterThan(runs / 20);
  });

  it('takes the last member of a oneof written twice, as protobuf-es does', () => {
    const a = toBinary(AllKinds, create(AllKinds, { choice: { case: 'cText', value: 'first' } }));
    const b = toBinary(AllKinds, create(AllKinds, { choice: { case: 'cNum', value: -5n } }));
    for (const bytes of [concat([a, b]), concat([b, a])]) expect(written(writer, bytes)).toBe(oracle(AllKinds, bytes));
  });
});
