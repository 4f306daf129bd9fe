// The record view against protobuf-es, the decoder it stands in for: the same inputs accepted and
// refused (with the same message), the same values read, whatever the bytes; the writer's output
// decodes to what was meant; partitions agree between bytes and objects.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ScalarType, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { DescMessage } from '@bufbuild/protobuf';
import {
  ContractDecodeError,
  EndpointSchema,
  FlowBatchSchema,
  FlowBatchView,
  FlowBatchWriter,
  FlowFields,
  FlowRecordSchema,
  KubeSchema,
  MessageCursor,
  Partitioner,
  ProtoWriter,
  ProcessSchema,
  RecordTooLargeError,
  conversationGroup,
  create,
  decodeFlowBatch,
  encodeFlowBatch,
  equals,
  newFlowBatch,
  newFlowRecord,
  partitionOfGroup,
  partitionOfRecord,
} from '../src/index.js';
import type { FlowBatch, FlowRecord } from '../src/index.js';
import { anyMessage } from '@kappa/testing';

const runs = Number(process.env.KAPPA_FUZZ_RUNS ?? 200);
const timeoutMs = 60_000 + runs * 200;
const anyBatch = anyMessage<FlowBatch>(FlowBatchSchema);
const anyRecord = anyMessage<FlowRecord>(FlowRecordSchema);
const R = FlowFields.FlowRecord;

/** Every field of the message read through the cursor equals what protobuf-es decoded. */
function expectCursorReads(desc: DescMessage, cursor: MessageCursor, message: Record<string, unknown>, path: string): void {
  for (const field of desc.fields) {
    const value = message[field.localName];
    const where = `${path}.${field.localName}`;
    if (field.fieldKind === 'scalar') {
      switch (field.scalar) {
        case ScalarType.STRING:
          expect(cursor.string(field.number), where).toBe(value);
          break;
        case ScalarType.UINT32:
          expect(cursor.uint32(field.number), where).toBe(value);
          break;
        case ScalarType.INT32:
          expect(cursor.int32(field.number), where).toBe(value);
          break;
        case ScalarType.UINT64:
          expect(cursor.uint64(field.number), where).toBe(value);
          break;
        case ScalarType.BOOL:
          expect(cursor.bool(field.number), where).toBe(value);
          break;
        default:
          throw new Error(`${where}: a scalar type the cursor test does not read yet`);
      }
    } else if (field.fieldKind === 'enum') {
      expect(cursor.int32(field.number), where).toBe(value);
    } else if (field.fieldKind === 'message') {
      const nested = new MessageCursor(field.message);
      expect(cursor.message(field.number, nested), where).toBe(value !== undefined);
      if (value !== undefined) expectCursorReads(field.message, nested, value as Record<string, unknown>, where);
    }
  }
}

/** Parses with the view and checks it against decodeFlowBatch, error or batch. */
function expectSameAsProtobufEs(input: Uint8Array): FlowBatchView | undefined {
  let expected: FlowBatch | undefined;
  let refusal: unknown;
  try {
    expected = decodeFlowBatch(input);
  } catch (error) {
    refusal = error;
  }
  const view = new FlowBatchView();
  if (refusal !== undefined) {
    expect(refusal).toBeInstanceOf(ContractDecodeError);
    let viewRefusal: unknown;
    try {
      view.parse(input);
    } catch (error) {
      viewRefusal = error;
    }
    expect(viewRefusal, 'the view accepted what decodeFlowBatch refuses').toBeInstanceOf(ContractDecodeError);
    expect((viewRefusal as Error).message).toBe((refusal as Error).message);
    return undefined;
  }
  view.parse(input);
  expect(view.batchId).toBe(expected!.batchId);
  expect(view.producer).toBe(expected!.producer);
  expect(view.createdNs).toBe(expected!.createdNs);
  expect(view.length).toBe(expected!.records.length);
  const cursor = FlowBatchView.recordCursor();
  for (let i = 0; i < view.length; i++) {
    const record = fromBinary(FlowRecordSchema, view.bytes.subarray(view.recordStart(i), view.recordEnd(i)));
    expect(equals(FlowRecordSchema, record, expected!.records[i]!), `record ${i}`).toBe(true);
    expectCursorReads(FlowRecordSchema, view.record(i, cursor), expected!.records[i]! as unknown as Record<string, unknown>, `records[${i}]`);
  }
  return view;
}

function varint(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return out;
}

function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A records field whose payload is the given bytes. */
function recordsField(payload: Uint8Array): Uint8Array {
  return concat([(FlowFields.FlowBatch.records << 3) | 2, ...varint(payload.length)], payload);
}

describe('FlowBatchView', () => {
  it('reads every generated batch as protobuf-es decodes it, without re-encoding it', () => {
    fc.assert(
      fc.property(anyBatch, (batch) => {
        const bytes = toBinary(FlowBatchSchema, batch);
        const view = expectSameAsProtobufEs(bytes);
        if (view) expect(view.normalized).toBe(false);
      }),
      { numRuns: runs },
    );
  }, timeoutMs);

  it('accepts and refuses exactly what decodeFlowBatch does, with its message, for random and mutated bytes', () => {
    const mutation = fc.tuple(anyBatch, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'insert', 'delete', 'wiretype')), { minLength: 1, maxLength: 6 }), fc.nat()).map(([batch, edits, cut]) => {
      let bytes = Array.from(toBinary(FlowBatchSchema, batch));
      for (const [at, value, kind] of edits) {
        if (bytes.length === 0) bytes = [value];
        const i = at % bytes.length;
        if (kind === 'set') bytes[i] = value;
        else if (kind === 'insert') bytes.splice(i, 0, value);
        else if (kind === 'delete') bytes.splice(i, 1);
        else bytes[i] = (bytes[i]! & ~7) | (value % 8);
      }
      return Uint8Array.from(bytes.slice(0, cut % (bytes.length + 2)));
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), mutation), (bytes) => {
        expectSameAsProtobufEs(bytes);
      }),
      { numRuns: runs * 25 },
    );
  }, timeoutMs);

  it('re-encodes valid input that is not canonical, then reads what protobuf-es merged', () => {
    fc.assert(
      fc.property(anyRecord, anyRecord, anyBatch, (first, second, batch) => {
        // One record sent as two concatenated encodings: protobuf merges them (src twice, ...).
        const merged = concat(recordsField(concat(toBinary(FlowRecordSchema, first), toBinary(FlowRecordSchema, second))));
        const view = expectSameAsProtobufEs(concat(toBinary(FlowBatchSchema, batch), merged));
        if (view && (first.src !== undefined && second.src !== undefined)) expect(view.normalized).toBe(true);
      }),
      { numRuns: runs },
    );
    // A known field with another wire type than its own: protobuf-es reads it by its declared type.
    const node = Array.from(new TextEncoder().encode('node-a'));
    const record = Uint8Array.from([(R.node << 3) | 0, node.length, ...node, (R.vantage << 3) | 2, 1]);
    const view = expectSameAsProtobufEs(recordsField(record));
    expect(view?.normalized).toBe(true);
    // A nested length that ends inside a field: protobuf-es reads the field to its end and goes
    // on from there; offsets by the declared length would read the rest of the string as tags.
    const ip = Array.from(new TextEncoder().encode('10.0.0.1'));
    const overrun = Uint8Array.from([(R.src << 3) | 2, 3, (FlowFields.Endpoint.ip << 3) | 2, ip.length, ...ip, (R.node << 3) | 2, 1, 0x6e]);
    const read = expectSameAsProtobufEs(recordsField(overrun));
    expect(read?.normalized).toBe(true);
    expect(decodeFlowBatch(recordsField(overrun)).records[0]?.src?.ip).toBe('10.0.0.1');
  });

  it('refuses a batch_id with a control character as decodeFlowBatch does', () => {
    for (const batchId of ['a\rb', 'x\n', '\u0000', 'del\u007f']) {
      const bytes = encodeFlowBatch(newFlowBatch({ batchId, records: [newFlowRecord({ id: 'r' })] }));
      expect(() => new FlowBatchView().parse(bytes)).toThrow(/control character/);
      expectSameAsProtobufEs(bytes);
    }
  });

  it('is reused batch after batch without keeping anything of the one before', () => {
    const view = new FlowBatchView();
    const big = encodeFlowBatch(newFlowBatch({ batchId: 'big', producer: 'p', createdNs: 7n, records: Array.from({ length: 2000 }, (_, i) => newFlowRecord({ id: `r${i}` })) }));
    expect(view.parse(big).length).toBe(2000);
    const small = encodeFlowBatch(newFlowBatch({ batchId: 'small', records: [newFlowRecord({ id: 'only' })] }));
    view.parse(small);
    expect([view.batchId, view.producer, view.createdNs, view.length]).toEqual(['small', '', 0n, 1]);
    expect(view.record(0, FlowBatchView.recordCursor()).string(R.id)).toBe('only');
  });
});

describe('FlowBatchWriter', () => {
  const header = { batchId: 'stage:in-1', producer: 'test', createdNs: 42n };

  it('copies records and splices fields into batches that decode to the intended records', () => {
    fc.assert(
      fc.property(anyBatch, anyRecord, fc.constantFrom(...Object.values(FlowFields.FlowRecord)), (batch, donor, replacedField) => {
        batch.batchId = 'in';
        const view = new FlowBatchView().parse(toBinary(FlowBatchSchema, batch));
        const donorView = new FlowBatchView().parse(encodeFlowBatch(newFlowBatch({ records: [donor] })));
        const donorCursor = donorView.record(0, FlowBatchView.recordCursor());
        const writer = new FlowBatchWriter(16);
        writer.open(header, 1 << 30);
        const cursor = FlowBatchView.recordCursor();
        // Odd records: field `replacedField` replaced by the donor's, spliced as received.
        const emit = (field: number) => {
          if (donorCursor.has(field)) writer.raw(donorCursor.bytes, donorCursor.fieldStart(field), donorCursor.fieldEnd(field));
        };
        for (let i = 0; i < view.length; i++) {
          if (i % 2 === 0) {
            writer.copyRecord(view, i);
            continue;
          }
          writer.beginRecord();
          writer.copyReplacing(view.record(i, cursor), [replacedField], emit);
          writer.endRecord();
        }
        const parts = writer.parts();
        expect(parts.map((p) => p.id)).toEqual(['stage:in-1']);
        const out = decodeFlowBatch(parts[0]!.bytes);
        expect([out.batchId, out.producer, out.createdNs]).toEqual(['stage:in-1', 'test', 42n]);
        expect(out.records.length).toBe(batch.records.length);
        const name = FlowRecordSchema.fields.find((f) => f.number === replacedField)!.localName;
        out.records.forEach((record, i) => {
          const expected = create(FlowRecordSchema, batch.records[i]!);
          if (i % 2 === 1) (expected as unknown as Record<string, unknown>)[name] = (donor as unknown as Record<string, unknown>)[name];
          expect(equals(FlowRecordSchema, record, expected), `record ${i}`).toBe(true);
        });
      }),
      { numRuns: runs },
    );
  }, timeoutMs);

  it('splits a batch under the size limit into parts <id>/<n>, in order, the same way every time', () => {
    const records = Array.from({ length: 500 }, (_, i) => newFlowRecord({ id: `record-${i}`, node: 'n'.repeat(i % 200), src: { ip: '10.0.0.1', port: i } }));
    const view = new FlowBatchView().parse(encodeFlowBatch(newFlowBatch({ batchId: 'in', records })));
    const write = () => {
      const writer = new FlowBatchWriter(1024);
      writer.open(header, 8 * 1024);
      for (let i = 0; i < view.length; i++) writer.copyRecord(view, i);
      return writer.parts().map((p) => ({ id: p.id, bytes: p.bytes.slice(), records: p.records }));
    };
    const parts = write();
    expect(parts.length).toBeGreaterThan(5);
    expect(parts.map((p) => p.id)).toEqual(parts.map((_, i) => `stage:in-1/${i}`));
    const decoded = parts.map((p) => decodeFlowBatch(p.bytes));
    for (const p of parts) expect(p.bytes.length).toBeLessThanOrEqual(8 * 1024);
    expect(decoded.flatMap((b) => b.records).map((r) => r.id)).toEqual(records.map((r) => r.id));
    expect(decoded.map((b) => b.records.length)).toEqual(parts.map((p) => p.records));
    expect(decoded.every((b, i) => b.batchId === `stage:in-1/${i}` && b.producer === 'test' && b.createdNs === 42n)).toBe(true);
    expect(write()).toEqual(parts);
  });

  it('refuses a record that cannot fit any part', () => {
    const writer = new FlowBatchWriter();
    writer.open(header, 2048);
    writer.beginRecord();
    writer.stringField(R.node, 'x'.repeat(4096));
    expect(() => writer.endRecord()).toThrow(RecordTooLargeError);
  });

  it('writes several batches into one buffer, each with its own id', () => {
    const writer = new FlowBatchWriter(64);
    for (const k of [3, 7]) {
      writer.open({ ...header, batchId: `out:p${k}` }, 1 << 20);
      writer.beginRecord();
      writer.uint32Field(R.clusterId, k);
      writer.endRecord();
    }
    const parts = writer.parts();
    expect(parts.map((p) => [p.batch, p.id])).toEqual([[0, 'out:p3'], [1, 'out:p7']]);
    expect(parts.map((p) => decodeFlowBatch(p.bytes).records[0]!.clusterId)).toEqual([3, 7]);
    expect(parts[0]!.bytes.buffer).toBe(parts[1]!.bytes.buffer);
  });

  it('patches nested length prefixes of any size', () => {
    for (const size of [0, 1, 127, 128, 16383, 16384, 70000]) {
      const writer = new FlowBatchWriter(16);
      writer.open(header, 1 << 22);
      writer.beginRecord();
      const src = writer.begin(R.src, 1);
      const process = writer.begin(FlowFields.Endpoint.process, 2);
      writer.stringField(FlowFields.Process.cmdline, 'c'.repeat(size));
      writer.end(process);
      writer.stringField(FlowFields.Endpoint.ip, '10.1.2.3');
      writer.end(src);
      writer.uint64Field(R.bytes, 12345678901234n);
      writer.endRecord();
      const record = decodeFlowBatch(writer.parts()[0]!.bytes).records[0]!;
      expect(record.src?.process?.cmdline.length).toBe(size);
      expect(record.src?.ip).toBe('10.1.2.3');
      expect(record.bytes).toBe(12345678901234n);
    }
  });

  it('copies the message a cursor was moved to by hand, not the one it read last', () => {
    const record = toBinary(FlowRecordSchema, newFlowRecord({ src: { ip: '10.0.0.1', port: 1, process: { pid: 7, name: 'client' } }, dst: { ip: '10.0.0.2', port: 2, process: { pid: 9, name: 'server' } } }));
    const outer = new MessageCursor(FlowRecordSchema).reset(record);
    const endpoint = new MessageCursor(EndpointSchema);
    outer.message(R.dst, endpoint);
    // Moved onto src without reset(), as a caller copying a range it never reads would.
    endpoint.start = outer.payloadStart(R.src);
    endpoint.end = outer.fieldEnd(R.src);
    const writer = new ProtoWriter();
    writer.copyReplacing(endpoint, [FlowFields.Endpoint.port], (field) => writer.uint32Field(field, 99));
    const copied = fromBinary(EndpointSchema, writer.finish());
    expect([copied.ip, copied.port, copied.process?.name]).toEqual(['10.0.0.1', 99, 'client']);
  });
});

describe('partitions', () => {
  it('are the same from bytes, from objects and from the conversation group text', () => {
    const partitioner = new Partitioner(16);
    const cursor = FlowBatchView.recordCursor();
    fc.assert(
      fc.property(anyRecord, fc.constantFrom('10.0.0.1', '127.0.0.1', '::1', '::ffff:127.0.0.9', 'fd00::1', '1.2.3.4'), fc.integer({ min: 1, max: 64 }), (record, ip, partitions) => {
        if (record.src && record.node.length % 3 === 0) record.src.ip = ip;
        const view = new FlowBatchView().parse(encodeFlowBatch(newFlowBatch({ records: [record] })));
        const fromBytes = new Partitioner(partitions).of(view.record(0, cursor));
        expect(fromBytes).toBe(partitionOfRecord(record, partitions));
        expect(fromBytes).toBe(partitionOfGroup(record.protocol, record.src?.ip ?? '', record.src?.port ?? 0, record.node, partitions, record.src?.netns || record.dst?.netns || 0));
        expect(partitioner.of(view.record(0, cursor))).toBeLessThan(16);
      }),
      { numRuns: runs * 5 },
    );
  }, timeoutMs);

  it('put both vantages of a conversation and a DNAT client/backend pair in one partition, loopback per node', () => {
    const client = { ip: '10.244.1.10', port: 40000 };
    const asClient = newFlowRecord({ node: 'a', protocol: 6, src: client, dst: { ip: '10.96.0.10', port: 80 } });
    const asBackend = newFlowRecord({ node: 'b', protocol: 6, src: client, dst: { ip: '10.244.2.11', port: 8080 } });
    expect(partitionOfRecord(asClient, 16)).toBe(partitionOfRecord(asBackend, 16));
    expect(conversationGroup(6, '127.0.0.1', 5, 'a')).toBe('6/127.0.0.1/5@a');
    expect(conversationGroup(17, '10.0.0.1', 53, 'a')).toBe('17/10.0.0.1/53');
    // Loopback conversations of different nodes spread; of one node they stay together.
    const loopback = (node: string) => partitionOfGroup(6, '127.0.0.1', 5000, node, 1024);
    expect(new Set(Array.from({ length: 20 }, (_, i) => loopback(`node-${i}`))).size).toBeGreaterThan(10);
    // ... and of one node's network namespaces too: the same tuple in two pods is two groups,
    // while both vantages of one (each observed in that namespace) share one.
    expect(conversationGroup(6, '127.0.0.1', 5, 'a', 4026532201)).toBe('6/127.0.0.1/5@a/4026532201');
    expect(conversationGroup(6, '10.0.0.1', 5, 'a', 4026532201)).toBe('6/10.0.0.1/5');
    const inPod = (netns: number) => partitionOfGroup(6, '127.0.0.1', 5000, 'a', 1024, netns);
    expect(new Set(Array.from({ length: 20 }, (_, i) => inPod(4026532200 + i))).size).toBeGreaterThan(10);
    const atSrc = newFlowRecord({ node: 'a', protocol: 6, vantage: 1, src: { ip: '127.0.0.1', port: 5000, netns: 7 }, dst: { ip: '127.0.0.1', port: 80 } });
    const atDst = newFlowRecord({ node: 'a', protocol: 6, vantage: 2, src: { ip: '127.0.0.1', port: 5000 }, dst: { ip: '127.0.0.1', port: 80, netns: 7 } });
    expect(partitionOfRecord(atSrc, 1024)).toBe(partitionOfRecord(atDst, 1024));
  });

  it('spread conversations evenly over the partitions', () => {
    const counts = new Array<number>(16).fill(0);
    for (let i = 0; i < 16000; i++) counts[partitionOfGroup(6, `10.244.${i % 7}.${i % 250}`, 30000 + (i % 5000), 'n', 16)]!++;
    for (const n of counts) expect(n).toBeGreaterThan(800);
  });
});

describe('cursors over nested messages', () => {
  it('read an endpoint, its process and its kube without decoding the record', () => {
    const record = newFlowRecord({
      node: 'n1',
      src: { ip: '10.0.0.1', port: 1234, process: { pid: 42, name: 'curl', cgroupId: 99n, startTimeTicks: 7n }, kube: { objectName: 'pod-a', labels: { app: 'a' } } },
    });
    const view = new FlowBatchView().parse(encodeFlowBatch(newFlowBatch({ records: [record] })));
    const r = view.record(0, FlowBatchView.recordCursor());
    const src = new MessageCursor(EndpointSchema);
    const process = new MessageCursor(ProcessSchema);
    const kube = new MessageCursor(KubeSchema);
    expect(r.message(R.src, src)).toBe(true);
    expect(src.message(FlowFields.Endpoint.process, process)).toBe(true);
    expect([process.uint32(FlowFields.Process.pid), process.string(FlowFields.Process.name), process.uint64(FlowFields.Process.cgroupId)]).toEqual([42, 'curl', 99n]);
    expect(src.message(FlowFields.Endpoint.kube, kube)).toBe(true);
    expect(kube.string(FlowFields.Kube.objectName)).toBe('pod-a');
    expect(r.message(R.dst, src)).toBe(false);
    expect(src.string(FlowFields.Endpoint.ip)).toBe('');
  });
});
