// In-process behaviour of the exporter's parts: IPFIX message bounds and sequence numbers, the
// JSON Lines rotation, the Observer's ring (capacity, retention) and its gRPC stream.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, credentials } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { FlowFilterSchema, GetFlowsRequestSchema, create, observerServiceDefinition } from '@kappa/contracts';
import type { GetFlowsRequest, GetFlowsResponse } from '@kappa/contracts';
import { createLogger } from '@kappa/observability';
import { IpfixEncoder, MESSAGE_HEADER_BYTES, utf8Truncated } from '../src/ipfix/encoder.js';
import { FlowRing } from '../src/observer/ring.js';
import { ObserverServer } from '../src/observer/server.js';
import { JsonlSink } from '../src/sinks/jsonl.js';
import { exportBatch, knownBatch, knownRecord, pushRecord, viewOf } from './fixtures.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('IPFIX encoder', () => {
  it('splits records into messages within the budget, with sequence numbers counting data records per domain', () => {
    const encoder = new IpfixEncoder({ enterpriseNumber: 32473, maxMessageBytes: 1452, maxStringBytes: 1024 });
    const records = Array.from({ length: 300 }, (_, i) => knownRecord(i, { clusterId: i % 2 === 0 ? 1 : 2 }));
    const messages = encoder.encode(viewOf(records), 1_800_000_000);
    expect(messages.reduce((n, m) => n + m.records, 0)).toBe(300);
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
      [1, 150],
      [2, 150],
    ]);
  });

  it('sends the two templates in one message when they fit, and one per message under a small MTU', () => {
    const wide = new IpfixEncoder({ enterpriseNumber: 1, maxMessageBytes: 1452, maxStringBytes: 100 }).templateMessages(3);
    expect(wide).toHaveLength(1);
    const narrow = new IpfixEncoder({ enterpriseNumber: 1, maxMessageBytes: 576 - 48, maxStringBytes: 100 }).templateMessages(3);
    expect(narrow).toHaveLength(2);
    for (const m of narrow) {
      expect(m.bytes.length).toBeLessThanOrEqual(576 - 48);
      expect(m.bytes.readUInt16BE(MESSAGE_HEADER_BYTES)).toBe(2);
    }
    expect(narrow.map((m) => m.bytes.readUInt16BE(MESSAGE_HEADER_BYTES + 4))).toEqual([256, 257]);
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
    const request = create(GetFlowsRequestSchema, { follow: true, filter: create(FlowFilterSchema, { node: ['node-1'] }) });
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
