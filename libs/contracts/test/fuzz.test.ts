// Property and fuzz tests of the FlowBatch codec: any record survives a round trip, and random or
// mutated bytes produce a batch or a ContractDecodeError — never another exception, never a
// change to Object.prototype. `npm run fuzz` runs many more cases (KAPPA_FUZZ_RUNS).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  ContractDecodeError,
  FlowRecordSchema,
  IpProtocol,
  StageStatusSchema,
  Vantage,
  create,
  decodeFlowBatch,
  decodeStageStatus,
  encodeFlowBatch,
  encodeStageStatus,
  equals,
  newFlowBatch,
  newFlowRecord,
} from '../src/index.js';

const runs = Number(process.env.KAPPA_FUZZ_RUNS ?? 200);
/** `npm run fuzz` (20 000 runs) takes minutes on a loaded machine; the default 60 s is for npm test. */
const timeoutMs = 60_000 + runs * 100;
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
/**
 * Any Unicode scalar value, of 1, 2, 3 or 4 UTF-8 bytes equally often. fast-check's 'binary' unit
 * rebuilds a map of all 1.1 million code points per run, which made 200 runs take seconds. No lone
 * surrogates: protobuf strings are UTF-8, so one comes back as U+FFFD (tested below).
 */
const anyChar = fc
  .oneof(
    fc.integer({ min: 0, max: 0x7f }),
    fc.integer({ min: 0x80, max: 0x7ff }),
    fc.oneof(fc.integer({ min: 0x800, max: 0xd7ff }), fc.integer({ min: 0xe000, max: 0xffff })),
    fc.integer({ min: 0x10000, max: 0x10ffff }),
  )
  .map((cp) => String.fromCodePoint(cp));
const text = fc.string({ unit: anyChar, maxLength: 300 });

const endpoint = fc.record({
  ip: fc.oneof(fc.ipV4(), fc.ipV6()),
  port: fc.integer({ min: 0, max: 65535 }),
  process: fc.record({ pid: u32, name: text, cmdline: text, containerId: text, cgroupId: u64, startTimeTicks: u64 }),
  kube: fc.record({ objectName: text, objectNamespace: text, objectType: text, labels: fc.dictionary(text, text, { maxKeys: 5 }) }),
  backendIp: fc.oneof(fc.constant(''), fc.ipV4()),
  backendPort: fc.integer({ min: 0, max: 65535 }),
});

const record = fc.record({
  node: text,
  vantage: fc.constantFrom(Vantage.UNSPECIFIED, Vantage.SRC, Vantage.DST),
  startNs: u64,
  endNs: u64,
  protocol: fc.oneof(fc.constantFrom(IpProtocol.TCP, IpProtocol.UDP, IpProtocol.ICMP, IpProtocol.ICMPV6), fc.integer({ min: 0, max: 255 })),
  src: endpoint,
  dst: endpoint,
  bytes: u64,
  packets: u64,
  reverseBytes: u64,
  reversePackets: u64,
  tcp: fc.record({ srttUs: u32, minRttUs: u32, retransmits: u32, handshakeUs: u32, flags: fc.integer({ min: 0, max: 255 }) }),
  appLatency: fc.record({ count: u64, sumUs: u64, maxUs: u64 }),
  joined: fc.boolean(),
  clusterId: u32,
  observation: text,
  id: text,
  joinStatus: text,
});

describe('FlowBatch codec under random input', () => {
  it('decodes every encoded batch to an equal batch', () => {
    fc.assert(
      fc.property(fc.array(record, { maxLength: 8 }), text, (records, batchId) => {
        const batch = newFlowBatch({ batchId, records: records.map((r) => newFlowRecord(r as Parameters<typeof newFlowRecord>[0])) });
        // A batch_id with a control character cannot become a Nats-Msg-Id: refused (see below).
        if (/[\u0000-\u001f\u007f]/.test(batchId)) {
          expect(() => decodeFlowBatch(encodeFlowBatch(batch))).toThrow(ContractDecodeError);
          return;
        }
        const decoded = decodeFlowBatch(encodeFlowBatch(batch));
        expect(decoded.batchId).toBe(batchId);
        expect(decoded.records.length).toBe(records.length);
        decoded.records.forEach((r, i) => expect(equals(FlowRecordSchema, r, batch.records[i]!)).toBe(true));
      }),
      { numRuns: runs },
    );
  }, timeoutMs);

  it('answers random and mutated bytes with a batch or a ContractDecodeError, and leaves Object.prototype alone', () => {
    const prototypeBefore = Object.getOwnPropertyNames(Object.prototype).sort();
    const seed = encodeFlowBatch(newFlowBatch({ batchId: 'seed', records: [newFlowRecord({ node: 'n', src: { ip: '10.0.0.1', port: 1 }, bytes: 5n })] }));
    const mutated = fc.tuple(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat()).map(([edits, cut]) => {
      const bytes = Uint8Array.from(seed);
      for (const [at, value] of edits) bytes[at % bytes.length] = value;
      return bytes.subarray(0, cut % (bytes.length + 1));
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 512 }), mutated), (bytes) => {
        try {
          decodeFlowBatch(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(ContractDecodeError);
        }
      }),
      { numRuns: runs * 50 },
    );
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(prototypeBefore);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  }, timeoutMs);
});

/** Bytes of a protobuf varint. */
function varint(value: bigint): number[] {
  const out: number[] = [];
  let v = value;
  do {
    out.push(Number(v & 0x7fn) | (v > 0x7fn ? 0x80 : 0));
    v >>= 7n;
  } while (v > 0n);
  return out;
}

describe('hostile protobuf shapes', () => {
  const seed = encodeFlowBatch(newFlowBatch({ batchId: 'seed', records: [newFlowRecord({ node: 'n', src: { ip: '10.0.0.1', port: 1 } })] }));
  const withPrefix = (piece: number[]) => Uint8Array.from([...piece, ...seed]);
  const undecodable = (bytes: Uint8Array) => {
    expect(() => decodeFlowBatch(bytes)).toThrow(ContractDecodeError);
    expect(() => decodeStageStatus(bytes)).toThrow(ContractDecodeError);
  };

  it('carries a lone surrogate (a JS string cut inside a pair) as U+FFFD, and a leading U+FEFF as itself', () => {
    const batch = newFlowBatch({ batchId: '\ufeffid', records: [newFlowRecord({ node: 'a\ud83d', id: '\ude00b' })] });
    const decoded = decodeFlowBatch(encodeFlowBatch(batch));
    expect(decoded.batchId).toBe('\ufeffid');
    expect(decoded.records[0]!.node).toBe('a\ufffd');
    expect(decoded.records[0]!.id).toBe('\ufffdb');
  });

  it('refuses a batch_id with CR, LF or another control character, which no Nats-Msg-Id header can carry', () => {
    // Found by the subject fuzz test: mutated seeds whose batch_id the joiner could never publish
    // under (BusPublishError "'header' values cannot contain \\r or \\n"), redelivered forever.
    for (const batchId of ['no\rends', 'no-\n\u0007no', 'jo\rends', 'tab\there', 'nul\u0000', 'del\u007f']) {
      const bytes = encodeFlowBatch(newFlowBatch({ batchId, records: [newFlowRecord({ id: 'r' })] }));
      expect(() => decodeFlowBatch(bytes), JSON.stringify(batchId)).toThrow(ContractDecodeError);
      try {
        decodeFlowBatch(bytes);
      } catch (error) {
        // The reason goes into a DLQ header: quoted, never a raw CR or LF.
        expect((error as Error).message).not.toMatch(/[\r\n]/);
        expect((error as Error).message).toContain('control character');
      }
    }
    for (const batchId of ['', 'capture:node-a:42', 'é😀\u0080\u2028']) {
      expect(decodeFlowBatch(encodeFlowBatch(newFlowBatch({ batchId }))).batchId).toBe(batchId);
    }
  });

  it('refuses 100 000 nested groups (a stack bomb) with a ContractDecodeError', () => {
    // Field 15: the highest whose tag is one byte; unknown to both messages.
    undecodable(withPrefix(Array<number>(100_000).fill((15 << 3) | 3)));
  });

  it('keeps 64 nested closed groups of an unknown field as unknown data, and refuses 101', () => {
    const nested = (depth: number) => [...Array<number>(depth).fill((15 << 3) | 3), ...Array<number>(depth).fill((15 << 3) | 4)];
    expect(decodeFlowBatch(withPrefix(nested(64))).batchId).toBe('seed');
    undecodable(withPrefix(nested(101)));
  });

  it('refuses overlong varints and length prefixes beyond the buffer', () => {
    undecodable(withPrefix([3 << 3, ...Array<number>(11).fill(0xff), 0x01]));
    // (protobuf-es reads a length as 32 bits: 2^40 wraps to 0 and decodes; not asserted here.)
    for (const length of [0x7fff_ffffn, 0xffff_ffffn, (1n << 64n) - 1n, BigInt(seed.length + 1)]) undecodable(withPrefix([(4 << 3) | 2, ...varint(length)]));
  });

  it('answers random and mutated StageStatus bytes with a status or a ContractDecodeError', () => {
    const valid = encodeStageStatus(create(StageStatusSchema, { stage: 'joiner', instance: 'j-1', ready: true, lost: { ring: 3n } }));
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 256 }), fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat()).map(([at, value, cut]) => {
        const bytes = Uint8Array.from(valid);
        bytes[at % bytes.length] = value;
        return bytes.subarray(0, cut % (bytes.length + 1));
      })), (bytes) => {
        try {
          decodeStageStatus(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(ContractDecodeError);
        }
      }),
      { numRuns: runs * 10 },
    );
  }, timeoutMs);
});
