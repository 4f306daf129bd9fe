// The flow store's index lines are written straight from the record bytes. The oracle here is the
// other path: protobuf-es decodes each record and @kappa/filter's field table reads it (the
// readers the filter language and the store's columns are defined by), formatted as CSV.
import { describe, expect, it } from 'vitest';
import { FlowBatchView, FlowRecordSchema, IpProtocol, Vantage, encodeFlowBatch, fromBinary, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { fields, ipHex } from '@kappa/filter';
import { CsvIndexWriter } from '../src/store/columns.js';

function csvText(text: string): string {
  // `\N` is DuckDB's null string here: quoted, it is text.
  return /[",\n\r]/.test(text) || text === '\\N' ? `"${text.replaceAll('"', '""')}"` : text;
}

function expectedLine(record: FlowRecord, receivedNs: bigint, seg: number, off: number, len: number): string {
  let line = `${record.endNs},${record.startNs},${receivedNs},${seg},${off},${len}`;
  for (const f of fields) {
    const value = f.read(record);
    line += typeof value === 'string' ? `,${csvText(value)}` : `,${value}`;
  }
  return `${line},${ipHex(record.src?.ip ?? '')},${ipHex(record.dst?.ip ?? '')}\n`;
}

/** A small deterministic generator (mulberry32). */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Texts near a dotted quad that Node's isIPv4 refuses (ipHex gives ''). */
const notQuads = ['010.0.0.1', '1.2.3.04', '256.1.1.1', '1.2.3', '1.2.3.4.5', '1..2.3', '.1.2.3', '1.2.3.4.', '1.2.3.4 ', '1.2.3.a', '00.1.2.3', '1000.1.2.3'];

const awkward = ['', 'web', 'a,b', 'say "hi"', 'line\nbreak', 'cr\rhere', 'ünïcödé-名前', '"', ',', 'x'.repeat(300), '\\N', 'a\\N', 'nul\u0000', 'back\\'];

function generated(count: number): FlowRecord[] {
  const rnd = random(15);
  const pick = <T>(values: readonly T[]): T => values[Math.floor(rnd() * values.length)]!;
  const text = () => (rnd() < 0.5 ? `name-${Math.floor(rnd() * 50)}` : pick(awkward));
  const u64 = () => BigInt(Math.floor(rnd() * 2 ** 20)) * BigInt(Math.floor(rnd() * 2 ** 32));
  const end = () => {
    if (rnd() < 0.1) return undefined;
    const labels: Record<string, string> = {};
    for (let k = Math.floor(rnd() * 4); k > 0; k--) labels[pick(['app', 'tier', 'z', 'a.b/c', 'ünï', 'k,1'])] = text();
    return {
      // Dotted quads the writer turns into hex itself, and texts it must leave to ipHex.
      ip: pick(['10.0.0.1', '192.168.7.200', '0.0.0.0', '255.255.255.255', '2001:db8::1', '::ffff:10.1.2.3', 'fe80::1:2', '', ...notQuads]),
      port: Math.floor(rnd() * 65536),
      netns: rnd() < 0.5 ? Math.floor(rnd() * 2 ** 32) : 0,
      process: rnd() < 0.2 ? undefined : { pid: Math.floor(rnd() * 4_000_000), name: text(), containerName: rnd() < 0.5 ? text() : '' },
      kube:
        rnd() < 0.2
          ? undefined
          : {
              node: text(),
              objectName: text(),
              objectNamespace: text(),
              objectType: pick(['pod', 'service', 'node', 'external', '', 'podx']),
              workloadName: text(),
              workloadKind: pick(['Deployment', 'StatefulSet', '']),
              containerName: text(),
              serviceName: text(),
              labels,
            },
    };
  };
  return Array.from({ length: count }, (_, i) => {
    const endNs = BigInt(Date.now()) * 1_000_000n + BigInt(Math.floor(rnd() * 1e12)) - 500_000_000_000n;
    return newFlowRecord({
      id: `g${i}`,
      node: text(),
      vantage: pick([Vantage.SRC, Vantage.DST, Vantage.UNSPECIFIED]),
      protocol: pick([IpProtocol.TCP, IpProtocol.UDP, IpProtocol.ICMP, 132]),
      startNs: rnd() < 0.05 ? 0n : endNs - BigInt(Math.floor(rnd() * 1e10)),
      endNs: rnd() < 0.02 ? 0n : endNs,
      src: end(),
      dst: end(),
      bytes: u64(),
      packets: BigInt(Math.floor(rnd() * 1e6)),
      reverseBytes: rnd() < 0.3 ? 0n : u64(),
      reversePackets: BigInt(Math.floor(rnd() * 1e6)),
      tcp: rnd() < 0.3 ? undefined : { srttUs: Math.floor(rnd() * 1e6), retransmits: Math.floor(rnd() * 100) },
      joined: rnd() < 0.5,
      joinStatus: pick(['', 'no-peer', 'external']),
      clusterId: Math.floor(rnd() * 5),
      observation: pick(['socket', 'eth0', 'a,b']),
      dns: rnd() < 0.3 ? { queryName: text(), queryType: Math.floor(rnd() * 300), rcode: Math.floor(rnd() * 6), latencyMaxUs: u64() } : undefined,
      drops: rnd() < 0.3 ? { packets: BigInt(Math.floor(rnd() * 1e6)), bytes: u64(), reason: text() } : undefined,
    });
  });
}

describe('flow store index lines from the record bytes', () => {
  it('equal, line for line, what protobuf-es and the filter field table read from 5 000 generated records', () => {
    const records = generated(5000);
    const view = new FlowBatchView().parse(encodeFlowBatch(newFlowBatch({ batchId: 'b', records })));
    const writer = new CsvIndexWriter();
    const receivedNs = 1_733_300_000_123_456_789n;
    writer.reset(receivedNs);
    let expected = '';
    let off = 12_345;
    for (let i = 0; i < view.length; i++) {
      const len = view.recordEnd(i) - view.recordStart(i);
      writer.line(view, i, 7, off, len);
      // The oracle decodes the record's own bytes.
      const decoded = fromBinary(FlowRecordSchema, view.bytes.subarray(view.recordStart(i), view.recordEnd(i)));
      expected += expectedLine(decoded, receivedNs, 7, off, len);
      off += len;
    }
    const written = writer.buffer.toString('utf8', 0, writer.length);
    if (written !== expected) {
      // Show the first line that differs.
      const a = written.split('\n');
      const b = expected.split('\n');
      const i = b.findIndex((line, k) => a[k] !== line);
      expect(a[i], `line ${i}`).toBe(b[i]);
    }
    expect(written).toBe(expected);
    expect(writer.lines).toBe(5000);
    const times = records.map((r) => r.endNs);
    expect(writer.minNs).toBe(times.reduce((a, b) => (b < a ? b : a)));
    expect(writer.maxNs).toBe(times.reduce((a, b) => (b > a ? b : a)));
  });

  it('writes 64-bit counters exactly, also above 2^53', () => {
    const max = (1n << 64n) - 1n;
    const record = newFlowRecord({ endNs: max, startNs: (1n << 53n) + 1n, bytes: max - 1n, packets: 10n ** 19n, reverseBytes: 1n << 53n });
    const view = new FlowBatchView().parse(encodeFlowBatch(newFlowBatch({ batchId: 'b', records: [record] })));
    const writer = new CsvIndexWriter();
    writer.reset(0n);
    writer.line(view, 0, 1, 0, 1);
    const line = writer.buffer.toString('utf8', 0, writer.length).split(',');
    const column = (name: string) => line[6 + fields.findIndex((f) => f.column === name)];
    expect(line[0]).toBe(String(max));
    expect(line[1]).toBe(String((1n << 53n) + 1n));
    expect(column('bytes')).toBe(String(max - 1n));
    expect(column('packets')).toBe(String(10n ** 19n));
    expect(column('reverse_bytes')).toBe(String(1n << 53n));
    expect(writer.maxNs).toBe(max);
  });

  it('writes bytes that are not UTF-8 as TextDecoder reads them (U+FFFD per maximal invalid subpart), and valid text as it is', () => {
    const rnd = random(21);
    // Bytes around UTF-8's edges: lead bytes, continuation bytes, the ends of each range.
    const edges = [0x00, 0x22, 0x2c, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff];
    const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    const writer = new CsvIndexWriter();
    for (let n = 0; n < 20_000; n++) {
      const bytes = Uint8Array.from({ length: 1 + Math.floor(rnd() * 8) }, () => edges[Math.floor(rnd() * edges.length)]!);
      writer.length = 0;
      writer.csvText(bytes, 0, bytes.length);
      const want = Buffer.from(csvText(decoder.decode(bytes)));
      const got = writer.buffer.subarray(0, writer.length);
      if (!got.equals(want)) expect(got.toString('hex'), `bytes ${Buffer.from(bytes).toString('hex')}`).toBe(want.toString('hex'));
    }
    const valid = Buffer.from('ünïcödé-名前 😀 \u{10ffff}');
    writer.length = 0;
    writer.csvText(valid, 0, valid.length);
    expect(writer.buffer.subarray(0, writer.length).equals(valid)).toBe(true);
  });
});
