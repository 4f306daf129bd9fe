// In-process behaviour of the exporter's parts: IPFIX message bounds and sequence numbers, the
// JSON Lines rotation and its dedupe seeded from the file, the Observer's ring (capacity, bytes,
// retention) and its gRPC stream.
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, credentials } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { FlowRecordSchema, GetFlowsRequestSchema, create, equals, observerServiceDefinition, toBinary, toJson } from '@kappa/contracts';
import type { GetFlowsRequest, GetFlowsResponse } from '@kappa/contracts';
import { createLogger } from '@kappa/observability';
import { IpfixEncoder, MESSAGE_HEADER_BYTES, utf8Truncated } from '../src/ipfix/encoder.js';
import { FlowRing } from '../src/observer/ring.js';
import { ObserverServer } from '../src/observer/server.js';
import { JsonlSink } from '../src/sinks/jsonl.js';
import { exportBatch, fillDiskPartWay, knownBatch, knownRecord, pushRecord, viewOf } from './fixtures.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('IPFIX encoder', () => {
  it('splits records into messages within the budget, with sequence numbers counting data records per domain', () => {
    const encoder = new IpfixEncoder({ enterpriseNumber: 32473, maxMessageBytes: 1452, maxStringBytes: 1024 });
    const records = Array.from({ length: 300 }, (_, i) => knownRecord(i, { clusterId: i % 2 === 0 ? 1 : 2 }));
    const messages = encoder.encode(viewOf(records), 1_800_000_000);
    // Data records: every flow record, and a DNS / drops options record for those that have either.
    const withDnsOrDrops = (domain: number) => records.filter((r) => r.clusterId === domain && (r.dns || r.drops || r.src?.peerDnsName || r.dst?.peerDnsName)).length;
    expect(withDnsOrDrops(1) + withDnsOrDrops(2)).toBeGreaterThan(100);
    expect(messages.reduce((n, m) => n + m.records, 0)).toBe(300 + withDnsOrDrops(1) + withDnsOrDrops(2));
    const expectedSequence = new Map<number, number>();
    for (const m of messages) {
      expect(m.bytes.length).toBeLessThanOrEqual(1452);
      expect(m.bytes.readUInt16BE(0)).toBe(10);
      expect(m.bytes.readUInt16BE(2)).toBe(m.bytes.length);
      expect(m.bytes.readUInt32BE(4)).toBe(1_800_000_000);
      expect(m.bytes.readUInt32BE(8)).toBe(expectedSequence.get(m.domain) ?? 0);
      expect(m.bytes.readUInt32BE(12)).toBe(m.domain);
      expectedSequence.set(m.domain, (expectedSequence.get(m.domain) ?? 0) + m.records);
      // Sets tile the message exactly.
      let o = MESSAGE_HEADER_BYTES;
      while (o < m.bytes.length) o += m.bytes.readUInt16BE(o + 2);
      expect(o).toBe(m.bytes.length);
    }
    expect([...expectedSequence.entries()].sort()).toEqual([
      [1, 150 + withDnsOrDrops(1)],
      [2, 150 + withDnsOrDrops(2)],
    ]);
  });

  it('numbers cluster c as observation domain c + --ipfix-domain-offset, modulo 2^32', () => {
    const encoder = new IpfixEncoder({ enterpriseNumber: 32473, maxMessageBytes: 1452, maxStringBytes: 1024, domainOffset: 1 });
    const records = [knownRecord(0, { clusterId: 7 }), knownRecord(2, { clusterId: 0xffff_ffff })];
    const messages = encoder.encode(viewOf(records), 1_800_000_000);
    expect(messages.map((m) => [m.domain, m.bytes.readUInt32BE(12)])).toEqual([
      [8, 8],
      [0, 0],
    ]);
  });

  it('sends the four templates in one message when they fit, and one per message under a small MTU', () => {
    const wide = new IpfixEncoder({ enterpriseNumber: 1, maxMessageBytes: 1452, maxStringBytes: 100 }).templateMessages(3);
    expect(wide).toHaveLength(1);
    // A template set (2) with the flow templates, then an options template set (3) with DNS / drops.
    const first = wide[0]!.bytes;
    const secondSet = MESSAGE_HEADER_BYTES + first.readUInt16BE(MESSAGE_HEADER_BYTES + 2);
    expect([first.readUInt16BE(MESSAGE_HEADER_BYTES), first.readUInt16BE(secondSet)]).toEqual([2, 3]);
    expect(secondSet + first.readUInt16BE(secondSet + 2)).toBe(first.length);
    const narrow = new IpfixEncoder({ enterpriseNumber: 1, maxMessageBytes: 576 - 48, maxStringBytes: 100 }).templateMessages(3);
    expect(narrow).toHaveLength(4);
    for (const m of narrow) expect(m.bytes.length).toBeLessThanOrEqual(576 - 48);
    expect(narrow.map((m) => m.bytes.readUInt16BE(MESSAGE_HEADER_BYTES))).toEqual([2, 2, 3, 3]);
    expect(narrow.map((m) => m.bytes.readUInt16BE(MESSAGE_HEADER_BYTES + 4))).toEqual([256, 257, 258, 259]);
  });

  it('cuts strings longer than the limit at a UTF-8 character boundary and counts them', () => {
    expect(utf8Truncated('ééé', 5).toString()).toBe('éé');
    expect(utf8Truncated('abc', 5).toString()).toBe('abc');
    const encoder = new IpfixEncoder({ enterpriseNumber: 1, maxMessageBytes: 65535, maxStringBytes: 100 });
    const [message] = encoder.encode(viewOf([knownRecord(0, { src: { ip: '10.0.0.1', process: { cmdline: '€'.repeat(200) } } })]));
    expect(message!.bytes.includes(Buffer.from('€'.repeat(33)))).toBe(true);
    expect(message!.bytes.includes(Buffer.from('€'.repeat(34)))).toBe(false);
    expect(encoder.truncatedStrings).toBe(1);
  });

  it('rejects a string limit that could make one record exceed an IPFIX message', () => {
    expect(() => new IpfixEncoder({ enterpriseNumber: 1, maxMessageBytes: 1452, maxStringBytes: 5000 })).toThrow(/too large/);
  });
});

describe('JSON Lines sink', () => {
  it('rotates before the size limit and keeps only --jsonl-keep old files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kx-jsonl-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'flows.jsonl');
    const sink = new JsonlSink({ path, maxBytes: 20_000, keep: 2 });
    await sink.start();
    for (let b = 0; b < 10; b++) await sink.write(exportBatch(knownBatch(`b${b}`, b * 10, 10)));
    await sink.close();
    expect(readdirSync(dir).sort()).toEqual(['flows.jsonl', 'flows.jsonl.1', 'flows.jsonl.2']);
    const ids = ['flows.jsonl.2', 'flows.jsonl.1', 'flows.jsonl']
      .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean))
      .map((l) => (JSON.parse(l) as { id: string }).id);
    // The newest records survive, in order, ending with the last batch.
    expect(ids.at(-1)).toBe('rec-99');
    expect(ids).toEqual(ids.slice().sort((a, b) => Number(a.slice(4)) - Number(b.slice(4))));
    expect(ids.length).toBeLessThan(100);
  });

  it('writes each record as protobuf-es writes its canonical JSON, one per line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kx-jsonl-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'flows.jsonl');
    const sink = new JsonlSink({ path, maxBytes: 1e9, keep: 1 });
    await sink.start();
    const batch = knownBatch('exact', 0, 40);
    batch.records[3]!.node = 'a "quoted"\nline\u0000 with é and 😀';
    await sink.write(exportBatch(batch));
    await sink.close();
    expect(readFileSync(path, 'utf8')).toBe(batch.records.map((r) => `${JSON.stringify(toJson(FlowRecordSchema, r))}\n`).join(''));
  });

  it('remembers the record ids at the end of the file at start and skips them in redelivered batches only', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kx-jsonl-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'flows.jsonl');
    const lines = () => readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { id: string }).id);
    const first = new JsonlSink({ path, maxBytes: 1e9, keep: 1 });
    cleanups.push(() => first.close());
    await first.start();
    await first.write(exportBatch(knownBatch('a', 0, 10)));
    await first.write(exportBatch(knownBatch('b', 10, 10)));
    // The process dies here (no close), then a line of batch c is cut short.
    appendFileSync(path, JSON.stringify(toJson(FlowRecordSchema, knownRecord(20))).slice(0, 50));
    // A window of the last 12 whole lines (and part of one more): batch a's first records are outside it.
    const whole = readFileSync(path, 'utf8').split('\n').slice(0, 20);
    const window = whole.slice(-12).reduce((n, l) => n + Buffer.byteLength(l) + 1, 0) + 50 + 20;
    const second = new JsonlSink({ path, maxBytes: 1e9, keep: 1, dedupeWindowBytes: window });
    await second.start();
    expect(readFileSync(path, 'utf8').endsWith('\n')).toBe(true);
    expect(second.rememberedIds).toBe(12);
    // b and c come back: b's records are skipped, c's (cut short) are written whole.
    await second.write(exportBatch(knownBatch('b', 10, 10), true));
    await second.write(exportBatch(knownBatch('c', 20, 10), true));
    // A batch that is not a redelivery is written as it is.
    await second.write(exportBatch(knownBatch('d', 19, 2), false));
    await second.close();
    expect(second.skippedRecords).toBe(10);
    expect(lines()).toEqual([...Array.from({ length: 30 }, (_, i) => `rec-${i}`), 'rec-19', 'rec-20']);
  });

  it('a batch whose write fails part way (a full disk) leaves no part of a line behind: delivered again, every record is one whole line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kx-jsonl-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'flows.jsonl');
    const sink = new JsonlSink({ path, maxBytes: 1e9, keep: 1 });
    cleanups.push(() => sink.close());
    await sink.start();
    await sink.write(exportBatch(knownBatch('a', 0, 10)));
    // The disk fills up in the middle of batch b: half of it is written, then ENOSPC.
    fillDiskPartWay((sink as unknown as { file: Parameters<typeof fillDiskPartWay>[0] }).file);
    await expect(sink.write(exportBatch(knownBatch('b', 10, 10)))).rejects.toThrow(/no space left on device/);
    // The bus delivers b again (the sink reopens the file), then c.
    await sink.write(exportBatch(knownBatch('b', 10, 10), true));
    await sink.write(exportBatch(knownBatch('c', 20, 5)));
    await sink.close();
    expect(readFileSync(path, 'utf8')).toBe(Array.from({ length: 25 }, (_, i) => `${JSON.stringify(toJson(FlowRecordSchema, knownRecord(i)))}\n`).join(''));
  });

  it('remembers ids in the last rotated file when the live one is shorter than the window', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kx-jsonl-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'flows.jsonl');
    const line = (i: number) => `${JSON.stringify(toJson(FlowRecordSchema, knownRecord(i)))}\n`;
    writeFileSync(`${path}.1`, Array.from({ length: 5 }, (_, i) => line(i)).join(''));
    writeFileSync(path, line(5));
    const sink = new JsonlSink({ path, maxBytes: 1e9, keep: 1 });
    await sink.start();
    await sink.write(exportBatch(knownBatch('again', 3, 4), true));
    await sink.close();
    expect(sink.skippedRecords).toBe(3);
    expect(readFileSync(path, 'utf8')).toBe(line(5) + line(6));
  });
});

describe('Observer', () => {
  it('keeps at most its capacity and drops records older than the retention', () => {
    const ring = new FlowRing(5, 1000n);
    for (let i = 0; i < 8; i++) pushRecord(ring, knownRecord(i), BigInt(i * 100));
    expect([...ring.since(0n)].map((f) => f.record.id)).toEqual(['rec-3', 'rec-4', 'rec-5', 'rec-6', 'rec-7']);
    ring.trim(1550n);
    expect([...ring.since(0n)].map((f) => f.record.id)).toEqual(['rec-6', 'rec-7']);
    expect([...ring.since(700n)].map((f) => f.record.id)).toEqual(['rec-7']);
  });

  it('holds the newest records that fit its byte limit, wrapping around, each read back as pushed', () => {
    const records = Array.from({ length: 200 }, (_, i) => knownRecord(i, { node: 'n'.repeat(i % 37) }));
    const sizes = records.map((r) => toBinary(FlowRecordSchema, r).length);
    const ring = new FlowRing(1000, 600_000_000_000n, 16 * 1024);
    records.forEach((r, i) => pushRecord(ring, r, BigInt(i)));
    const kept = [...ring.since(0n)];
    // A contiguous run of the newest records, within the byte limit, with their arrival times.
    const first = 200 - kept.length;
    expect(kept.map((f) => f.receivedNs)).toEqual(Array.from({ length: kept.length }, (_, k) => BigInt(first + k)));
    kept.forEach((f, k) => expect(equals(FlowRecordSchema, f.record, records[first + k]!)).toBe(true));
    expect(ring.bytes).toBe(sizes.slice(first).reduce((n, s) => n + s, 0));
    expect(ring.bytes).toBeLessThanOrEqual(16 * 1024);
    // Wrapping wastes at most the tail end of the buffer: nearly all of it stays in use.
    expect(ring.bytes + Math.max(...sizes) * 2).toBeGreaterThan(16 * 1024);
  });

  it('does not keep a record larger than the whole buffer, and counts it', () => {
    const ring = new FlowRing(10, 600_000_000_000n, 64 * 1024);
    pushRecord(ring, knownRecord(0), 1n);
    pushRecord(ring, knownRecord(1, { node: 'x'.repeat(70 * 1024) }), 2n);
    expect(ring.tooLarge).toBe(1);
    expect([...ring.since(0n)].map((f) => f.record.id)).toEqual(['rec-0']);
  });

  it('streams buffered matches, then followed ones, and ends open streams at shutdown', async () => {
    const ring = new FlowRing(1000, 600_000_000_000n);
    const server = new ObserverServer({ ring, host: '127.0.0.1', port: 0, logger: createLogger('test', 'silent') });
    await server.start();
    cleanups.push(() => server.close());
    const now = BigInt(Date.now()) * 1_000_000n;
    for (let i = 0; i < 20; i++) pushRecord(ring, knownRecord(i), now);
    const client = new Client(`127.0.0.1:${server.port}`, credentials.createInsecure());
    cleanups.push(() => client.close());
    const method = observerServiceDefinition.GetFlows!;
    const request = create(GetFlowsRequestSchema, { follow: true, query: 'node == node-1' });
    const stream = client.makeServerStreamRequest<GetFlowsRequest, GetFlowsResponse>(
      method.path,
      method.requestSerialize as (v: GetFlowsRequest) => Buffer,
      method.responseDeserialize as (b: Buffer) => GetFlowsResponse,
      request,
    );
    const got: string[] = [];
    const ended = new Promise<void>((resolve) => stream.on('end', () => resolve()));
    stream.on('data', (r: GetFlowsResponse) => got.push(r.flow!.id));
    stream.on('error', () => undefined);
    const until = async (n: number) => {
      for (let t = 0; t < 100 && got.length < n; t++) await new Promise((r) => setTimeout(r, 50));
    };
    const buffered = Array.from({ length: 20 }, (_, i) => i).filter((i) => i % 3 === 1).map((i) => `rec-${i}`);
    await until(buffered.length);
    expect(got).toEqual(buffered);
    for (let i = 20; i < 30; i++) pushRecord(ring, knownRecord(i), now);
    const live = Array.from({ length: 10 }, (_, k) => 20 + k).filter((i) => i % 3 === 1).map((i) => `rec-${i}`);
    await until(buffered.length + live.length);
    expect(got).toEqual([...buffered, ...live]);
    await server.close();
    await ended;
  });
});
