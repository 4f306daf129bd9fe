import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodeFlowBatch, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { BusPublishError, DLQ_STREAM, FLOW_STREAM, StreamStorageError, connectBus, dlqHeaders } from '../src/index.js';
import { POOLED_PER_CLASS, installNatsCopies, pooledPayloadBuffers, releasePayload } from '../src/nats-copies.js';
import type { Bus, RawMessage } from '../src/index.js';

let nats: TestServer;
const buses: Bus[] = [];
const children: ChildProcess[] = [];

async function newBus(name = 'test'): Promise<Bus> {
  const bus = await connectBus({ servers: [nats.url], name, logger: createLogger(name, 'silent'), registry: createRegistry(name) });
  buses.push(bus);
  return bus;
}

function batch(id: string, records = 3, cmdlineBytes = 10): FlowBatch {
  return newFlowBatch({
    batchId: id,
    producer: 'node-a',
    records: Array.from({ length: records }, (_, i) =>
      newFlowRecord({ node: 'node-a', bytes: BigInt(i + 1), src: { ip: '10.0.0.1', port: 1000 + i, process: { cmdline: 'x'.repeat(cmdlineBytes) } } }),
    ),
  });
}

/** Starts test/fixtures/replica.ts as its own process and resolves once it consumes. */
async function startReplica(args: Record<string, string>): Promise<{ child: ChildProcess; lines: string[]; waitFor(line: string): Promise<void> }> {
  // One process (node with tsx's loader), so SIGKILL really kills the consumer.
  const argv = ['--import', 'tsx', join(import.meta.dirname, 'fixtures/replica.ts'), `--nats=${nats.url}`, ...Object.entries(args).map(([k, v]) => `--${k}=${v}`)];
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const lines: string[] = [];
  const waiters: { line: string; resolve: () => void }[] = [];
  child.stdout?.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n').filter(Boolean)) {
      lines.push(line);
      for (const w of waiters.filter((w) => w.line === line)) w.resolve();
    }
  });
  const waitFor = (line: string) =>
    lines.includes(line) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ line, resolve }));
  await waitFor('ready');
  return { child, lines, waitFor };
}

async function collect(bus: Bus, stage: string, subject: string, into: string[], extra: Partial<{ ackWaitMs: number }> = {}) {
  return bus.consumeBatches({
    stage,
    subject,
    ...extra,
    handler: async (b) => {
      into.push(b.batchId);
    },
  });
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  nats = await startNatsServer();
});
afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(buses.splice(0).map((b) => b.close().catch(() => undefined)));
  // Each test starts from empty streams.
  const admin = await newBus('admin');
  for (const stream of [FLOW_STREAM, DLQ_STREAM]) await admin.deleteStream(stream);
  await admin.close();
  buses.splice(0);
});
afterAll(async () => nats.stop());

describe('bus', () => {
  it('delivers each published batch exactly once across two replicas of a stage', async () => {
    const producer = await newBus('producer');
    await producer.ensureStreams();
    const seen: string[] = [];
    await collect(await newBus('replica-1'), 'joiner', 'kappa.flow.tagged', seen);
    await collect(await newBus('replica-2'), 'joiner', 'kappa.flow.tagged', seen);
    const ids = Array.from({ length: 60 }, (_, i) => `b${i}`);
    for (const id of ids) await producer.publishBatch('kappa.flow.tagged', batch(id));
    await until(() => seen.length >= ids.length);
    await new Promise((r) => setTimeout(r, 500)); // a duplicate delivery would show up here
    expect([...seen].sort()).toEqual([...ids].sort());
    const info = await producer.consumerInfo('joiner');
    expect(info.num_ack_pending).toBe(0);
    expect(info.num_pending).toBe(0);
    // Work queue: acked batches leave the stream.
    expect((await producer.streamInfo(FLOW_STREAM)).state.messages).toBe(0);
  });

  it('stores a batch published twice with the same id once', async () => {
    const bus = await newBus();
    await bus.ensureStreams();
    await bus.publishBatch('kappa.flow.joined', batch('same'));
    await bus.publishBatch('kappa.flow.joined', batch('same'));
    expect((await bus.streamInfo(FLOW_STREAM)).state.messages).toBe(1);
    expect((await bus.metrics.duplicates.get()).values[0]?.value).toBe(1);
  });

  it('a consumer started again with reset delivers from its oldest unacked message, in order, at once, without being made again', async () => {
    const bus = await newBus();
    await bus.ensureStreams();
    const subject = 'kappa.flow.tagged.p9';
    for (let i = 0; i < 5; i++) await bus.publishBatch(subject, batch(`r${i}`));
    const first: RawMessage[] = [];
    const a = await bus.consume({ subject, durable: 'reset-test', maxInFlight: 5, handler: async (m) => void first.push(m) });
    await until(() => first.length === 5);
    expect(await first[0]!.ack()).toBe(true);
    expect(await first[1]!.ack()).toBe(true);
    await a.stop();
    const created = (await bus.consumerInfo('reset-test')).created;
    // Started again as it is, the three unacked wait for the ack wait (30 s).
    const plain: number[] = [];
    const b = await bus.consume({ subject, durable: 'reset-test', maxInFlight: 5, handler: async (m) => void plain.push(m.streamSequence) });
    await new Promise((r) => setTimeout(r, 1500));
    expect(plain).toEqual([]);
    await b.stop();
    // With reset: at once, from the ack floor, in order; the same consumer (not deleted).
    const again: number[] = [];
    const c = await bus.consume({
      subject,
      durable: 'reset-test',
      maxInFlight: 5,
      reset: true,
      handler: async (m) => {
        again.push(m.streamSequence);
        await m.ack();
      },
    });
    await until(() => again.length >= 3, 5000);
    expect(again).toEqual(first.slice(2).map((m) => m.streamSequence));
    expect((await bus.consumerInfo('reset-test')).created).toBe(created);
    await c.stop();
  });

  it('redelivers the batch of a replica killed before its ack to another replica', async () => {
    const bus = await newBus();
    await bus.ensureStreams();
    const doomed = await startReplica({ stage: 'tagger', subject: 'kappa.flow.enriched.>', out: 'kappa.flow.tagged', 'hold-ms': 'forever', 'ack-wait-ms': '1500' });
    await bus.publishBatch('kappa.flow.enriched.node-a', batch('held'));
    await doomed.waitFor('received held');
    doomed.child.kill('SIGKILL');
    const deliveries: number[] = [];
    await bus.consumeBatches({
      stage: 'tagger',
      subject: 'kappa.flow.enriched.>',
      ackWaitMs: 1500,
      handler: async (b, ctx) => {
        if (b.batchId === 'held') deliveries.push(ctx.deliveryCount);
      },
    });
    await until(() => deliveries.length > 0);
    expect(deliveries).toEqual([2]);
  });

  it('moves a malformed payload to kappa.dlq.<stage> with the error in a header and goes on', async () => {
    const bus = await newBus();
    await bus.ensureStreams();
    await bus.publishUnchecked('kappa.flow.joined', Uint8Array.from([0xff, 0xff, 0xff, 0xff]));
    const truncated = encodeFlowBatch(batch('t', 5));
    await bus.publishUnchecked('kappa.flow.joined', truncated.subarray(0, truncated.length - 3));
    await bus.publishBatch('kappa.flow.joined', batch('good'));
    const seen: string[] = [];
    await collect(bus, 'exporter', 'kappa.flow.joined', seen);
    await until(() => seen.includes('good'));
    await until(async () => (await bus.streamInfo(DLQ_STREAM)).state.messages === 2);
    const first = await bus.streamMessage(DLQ_STREAM, { seq: 1 });
    expect(first?.subject).toBe('kappa.dlq.exporter');
    expect(first?.header(dlqHeaders.error)).toMatch(/cannot decode 4 bytes as kappa.flow.v1.FlowBatch/);
    expect(first?.header(dlqHeaders.subject)).toBe('kappa.flow.joined');
    expect([...(first?.data ?? [])]).toEqual([0xff, 0xff, 0xff, 0xff]);
    expect((await bus.metrics.deadLettered.get()).values[0]?.value).toBe(2);
    expect(bus.deadLettered('exporter')).toBe(2);
    expect(seen).toEqual(['good']);
  });

  it('finishes and acks in-flight work on SIGTERM before exiting', async () => {
    const bus = await newBus();
    await bus.ensureStreams();
    const replica = await startReplica({ stage: 'joiner', subject: 'kappa.flow.tagged', out: 'kappa.flow.joined', 'hold-ms': '1500' });
    await bus.publishBatch('kappa.flow.tagged', batch('slow'));
    await replica.waitFor('received slow');
    const exit = new Promise<number | null>((resolve) => replica.child.once('exit', (code) => resolve(code)));
    replica.child.kill('SIGTERM');
    expect(await exit).toBe(0);
    expect(replica.lines).toContain('done slow');
    const info = await bus.consumerInfo('joiner');
    expect(info.num_ack_pending).toBe(0);
    expect(info.num_redelivered).toBe(0);
    const out: string[] = [];
    await collect(bus, 'exporter', 'kappa.flow.joined', out);
    await until(() => out.length === 1);
    expect(out).toEqual(['joiner:slow']);
  });

  it('fails loudly and counts it when the stream is full, instead of dropping', async () => {
    const bus = await newBus();
    await bus.ensureStreams({ maxBytes: 16 * 1024, maxAgeMs: 60_000 });
    let error: unknown;
    let stored = 0;
    for (let i = 0; i < 100 && !error; i++) {
      try {
        await bus.publishBatch('kappa.flow.tagged', batch(`fill${i}`, 2, 1000));
        stored++;
      } catch (e) {
        error = e;
      }
    }
    expect(error).toBeInstanceOf(BusPublishError);
    expect((error as BusPublishError).reason).toBe('stream_full');
    expect((error as Error).message).toMatch(/KAPPA_FLOWS stream is full/);
    expect(stored).toBeGreaterThan(0);
    expect((await bus.streamInfo(FLOW_STREAM)).state.messages).toBe(stored);
    const failures = (await bus.metrics.publishFailures.get()).values;
    expect(failures).toEqual([expect.objectContaining({ value: 1, labels: { subject: 'kappa.flow.tagged', reason: 'stream_full' } })]);
  });

  it('refuses capture once its share of the stream is full, and still lets the joiner publish', async () => {
    const bus = await newBus();
    await bus.ensureStreams({ maxBytes: 64 * 1024, maxAgeMs: 60_000 });
    let refused: unknown;
    for (let i = 0; i < 100 && !refused; i++) {
      await bus.publishBatch('kappa.flow.captured.n1', batch(`cap${i}`, 2, 1000)).catch((e: unknown) => (refused = e));
    }
    expect(refused).toBeInstanceOf(BusPublishError);
    expect((refused as BusPublishError).reason).toBe('stream_full');
    const filled = (await bus.streamInfo(FLOW_STREAM)).state.bytes;
    expect(filled).toBeLessThan(0.8 * 64 * 1024);
    // The stages behind capture still have room: their output is what drains the stream.
    await bus.publishBatch('kappa.flow.joined', batch('joined-after-full', 2, 1000));
  });

  it('splits a batch larger than max_payload into parts and loses no record', async () => {
    const bus = await newBus();
    await bus.ensureStreams();
    const big = batch('big', 3000, 1000); // ~3 MB, the server takes 1 MB per message
    await bus.publishBatch('kappa.flow.joined', big);
    const records: number[] = [];
    const parts: string[] = [];
    await bus.consumeBatches({
      stage: 'exporter',
      subject: 'kappa.flow.joined',
      handler: async (b) => {
        parts.push(b.batchId);
        records.push(...b.records.map((r) => r.src?.port ?? -1));
      },
    });
    await until(() => records.length >= 3000);
    expect(parts.length).toBeGreaterThan(2);
    expect(parts.every((p) => p.startsWith('big/'))).toBe(true);
    expect(records.sort((a, b) => a - b)).toEqual(Array.from({ length: 3000 }, (_, i) => 1000 + i));
  });
});

describe('messages through nats.js without its copies (nats-copies.ts)', () => {
  /** Payloads whose every byte depends on (message, offset): a shifted or stale byte shows. */
  function payload(n: number, size: number): Uint8Array {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = (n * 131 + i * 7 + (i >> 9)) & 0xff;
    if (size >= 4) new DataView(bytes.buffer).setUint32(0, n);
    return bytes;
  }

  it('are in effect in every process that connects a bus', async () => {
    await newBus();
    expect(installNatsCopies()).toEqual({ gather: true, wholePayload: true, quietAnswers: true });
  });

  it('delivers large and small messages byte for byte, published at once on one connection, with and without headers', async () => {
    const producer = await newBus('producer');
    await producer.ensureStreams();
    // Sizes from 1 byte to the largest message: most span several socket reads at both ends,
    // and the small ones share flushes with the large ones.
    const sizes = [1, 7, 100, 4_000, 65_535, 65_536, 65_537, 200_000, producer.messageLimit, 300_000, 12, 1_000_000 - 8192, 90_000, 3];
    const sent = sizes.map((size, n) => payload(n, size));
    // Nats-Msg-Id (HMSG on delivery) and none (MSG): the parser's two ways to a payload.
    await Promise.all(sent.map((bytes, n) => (n % 3 === 2 ? producer.publishUnchecked('kappa.flow.joined.p0', bytes) : producer.publishBytes('kappa.flow.joined.p0', bytes, `m${n}`))));
    const consumer = await newBus('consumer');
    const received = new Map<number, Uint8Array>();
    await consumer.consume({
      subject: 'kappa.flow.joined.>',
      durable: 'exporter',
      maxInFlight: 8,
      handler: async (message: RawMessage) => {
        const { buffer, byteOffset, byteLength } = message.bytes;
        // A payload shorter than its index is the one of that size.
        received.set(byteLength < 4 ? sizes.indexOf(byteLength) : new DataView(buffer, byteOffset, byteLength).getUint32(0), message.bytes.slice());
        await message.ack();
      },
    });
    await until(() => received.size >= sent.length);
    for (const [n, bytes] of sent.entries()) expect(Buffer.from(received.get(n) ?? []).equals(Buffer.from(bytes)), `message ${n} (${bytes.byteLength} bytes)`).toBe(true);
  });

  it('receives into a payload buffer handed back (releasePayload) and ignores bytes it did not lend', async () => {
    const producer = await newBus('producer');
    await producer.ensureStreams();
    const consumer = await newBus('consumer');
    const seen: { n: number; buffer: ArrayBufferLike; intact: boolean }[] = [];
    await consumer.consume({
      subject: 'kappa.flow.joined.>',
      durable: 'exporter',
      maxInFlight: 1,
      handler: async (message: RawMessage) => {
        const { buffer, byteOffset, byteLength } = message.bytes;
        const n = new DataView(buffer, byteOffset, byteLength).getUint32(0);
        seen.push({ n, buffer, intact: Buffer.from(message.bytes).equals(Buffer.from(payload(n, byteLength))) });
        await message.ack();
        releasePayload(message.bytes);
        // Twice, and bytes never lent: no effect.
        releasePayload(message.bytes);
        releasePayload(new Uint8Array(300_000));
      },
    });
    for (let n = 0; n < 6; n++) await producer.publishBytes('kappa.flow.joined.p0', payload(n, 300_000), `r${n}`);
    await until(() => seen.length >= 6);
    expect(seen.map((s) => [s.n, s.intact])).toEqual(Array.from({ length: 6 }, (_, n) => [n, true]));
    // One in the handler at a time (and at most one more received meanwhile): the buffers come back.
    expect(new Set(seen.map((s) => s.buffer)).size).toBeLessThanOrEqual(2);
    expect(pooledPayloadBuffers()).toBeLessThanOrEqual(POOLED_PER_CLASS);
  });

  it('still rejects a request nobody answers, with the error of the cause', async () => {
    const bus = await newBus();
    await bus.ensureStreams();
    // No stream takes kappa.nowhere: the publish's request has no responders.
    await expect(bus.publishBytes('kappa.nowhere', payload(0, 100_000), 'x')).rejects.toBeInstanceOf(BusPublishError);
  });
});

describe('a nats-server without room for the streams', () => {
  it('refuses with the stream, its size and what to change, not the server\'s bare words; a smaller stream fits', async () => {
    // max_file_store 64 MiB: KAPPA_FLOWS's default 1 GiB cannot be reserved (as in a small VM, where
    // nats-server's default, 75 % of the free disk, was smaller than the streams).
    const dir = mkdtempSync(join(tmpdir(), 'kappa-bus-small-'));
    const config = join(dir, 'nats.conf');
    writeFileSync(config, 'jetstream { max_file_store: 64MB }\n');
    const small = await startNatsServer({ args: ['-c', config] });
    try {
      const bus = await connectBus({ servers: [small.url], name: 'small', logger: createLogger('small', 'silent'), registry: createRegistry('small') });
      try {
        const refused = await bus.ensureStreams().catch((error: unknown) => error);
        expect(refused).toBeInstanceOf(StreamStorageError);
        expect((refused as Error).message).toMatch(/^nats-server has no room for the JetStream stream KAPPA_FLOWS \(max_bytes 1073741824 = 1024 MiB; it said: .*insufficient storage/);
        expect((refused as Error).message).toContain('--stream-max-bytes (KAPPA_STREAM_MAX_BYTES)');
        // What it says to do works for KAPPA_FLOWS; KAPPA_DLQ's fixed 256 MiB is then named.
        const next = await bus.ensureStreams({ maxBytes: 16 * 1024 ** 2, maxAgeMs: 3_600_000 }).catch((error: unknown) => error);
        expect(next).toBeInstanceOf(StreamStorageError);
        expect((next as Error).message).toMatch(/^nats-server has no room for the JetStream stream KAPPA_DLQ \(max_bytes 268435456 = 256 MiB/);
        expect((await bus.streamInfo(FLOW_STREAM)).config.max_bytes).toBe(16 * 1024 ** 2);
      } finally {
        await bus.close();
      }
    } finally {
      await small.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
