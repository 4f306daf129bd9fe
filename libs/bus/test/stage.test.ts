// The stage runner against a real nats-server: what a stage's operator and the next stage see —
// output ids derived from the input's (a replayed input is stored once), outputs split under
// max_payload, undecodable input and oversized records in the DLQ, held batches asked back,
// heartbeats and /readyz, and the one-line fatal start error.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FlowBatchView, FlowFields, encodeFlowBatch, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowBatch, StageStatus } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { DLQ_STREAM, FLOW_STREAM, HoldBatch, connectBus, dlqHeaders, startStage, subjects } from '../src/index.js';
import type { Bus, RunningStage, StageOptions } from '../src/index.js';

let nats: TestServer;
const cursor = FlowBatchView.recordCursor();
const closers: (() => Promise<void>)[] = [];

async function newBus(name: string): Promise<Bus> {
  const bus = await connectBus({ servers: [nats.url], name, logger: createLogger(name, 'silent'), registry: createRegistry(name) });
  await bus.ensureStreams();
  closers.push(() => bus.close());
  return bus;
}

async function stage(options: Partial<StageOptions> & Pick<StageOptions, 'transform'>): Promise<RunningStage> {
  const running = await startStage({
    stage: 'tester',
    instance: 'tester-1',
    bus: { servers: [nats.url] },
    logger: createLogger('tester', 'silent'),
    registry: createRegistry('tester'),
    metricsPort: 0,
    input: { subject: subjects.allEnriched, retryDelayMs: 200 },
    ...options,
  });
  closers.push(() => running.stop());
  return running;
}

function records(n: number, cmdline = 'x'): FlowBatch['records'] {
  return Array.from({ length: n }, (_, i) => newFlowRecord({ id: `r${i}`, node: 'node-a', src: { ip: '10.0.0.1', port: 1000 + i, process: { cmdline } } }));
}

/** Collects every batch arriving on `subject` (as decoded objects). */
async function collector(subject: string, durable: string): Promise<FlowBatch[]> {
  const bus = await newBus(`collector-${durable}`);
  const seen: FlowBatch[] = [];
  await bus.consumeBatches({ stage: durable, subject, handler: async (b) => void seen.push(b) });
  return seen;
}

async function until<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  nats = await startNatsServer();
});
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined);
  const admin = await connectBus({ servers: [nats.url], name: 'admin', logger: createLogger('admin', 'silent'), registry: createRegistry('admin') });
  for (const stream of [FLOW_STREAM, DLQ_STREAM]) await admin.deleteStream(stream);
  await admin.close();
});
afterAll(async () => nats.stop());

describe('runStage', () => {
  it('writes each input to outputs whose ids derive from the input id, so a replayed input is stored once', async () => {
    const out = await collector(subjects.allTagged, 'reader');
    const running = await stage({
      transform: ({ view }, output) => {
        // Even records to partition 2, odd ones to 5: two outputs of one input.
        for (const k of [2, 5]) {
          const writer = output.batch(subjects.tagged(k), `p${k}`);
          for (let i = 0; i < view.length; i++) if (i % 2 === (k === 2 ? 0 : 1)) writer.copyRecord(view, i);
        }
      },
    });
    const producer = await newBus('producer');
    const input = encodeFlowBatch(newFlowBatch({ batchId: 'in-1', producer: 'node-a', createdNs: 5n, records: records(10) }));
    await producer.publishBytes(subjects.enriched(0, 'node-a'), input, 'in-1');
    await until('both outputs', () => out.length >= 2);
    // The same input again (a redelivery after a crash, here under another input msg id).
    await producer.publishBytes(subjects.enriched(0, 'node-a'), input, 'in-1-again');
    await until('the replay handled', () => running.recordsIn === 20);
    await new Promise((r) => setTimeout(r, 500));
    expect(out.map((b) => b.batchId).sort()).toEqual(['tester:in-1:p2', 'tester:in-1:p5']);
    expect(out.find((b) => b.batchId.endsWith('p2'))!.records.map((r) => r.id)).toEqual(['r0', 'r2', 'r4', 'r6', 'r8']);
    expect(out.every((b) => b.producer === 'tester-1' && b.createdNs === 5n)).toBe(true);
    expect(running.recordsOut).toBe(20);
    const consumer = await producer.consumerInfo('tester');
    expect([consumer.num_pending, consumer.num_ack_pending]).toEqual([0, 0]);
  });

  it('splits an output larger than max_payload into <id>/<n> parts and loses no record', async () => {
    const out = await collector(subjects.allTagged, 'reader');
    await stage({
      transform: ({ view }, output) => {
        const writer = output.batch(subjects.tagged(0));
        // Each record grows by a 2 KB command line: 1000 records no longer fit one message.
        for (let i = 0; i < view.length; i++) {
          view.record(i, cursor);
          writer.beginRecord();
          writer.copyReplacing(cursor, [FlowFields.FlowRecord.observation], () => writer.stringField(FlowFields.FlowRecord.observation, 'o'.repeat(2048)));
          writer.endRecord();
        }
      },
    });
    const producer = await newBus('producer');
    await producer.publishBatch(subjects.enriched(0, 'node-a'), newFlowBatch({ batchId: 'big', records: records(1000) }));
    await until('every record', () => out.reduce((n, b) => n + b.records.length, 0) >= 1000);
    expect(out.length).toBeGreaterThan(1);
    expect(out.map((b) => b.batchId).sort()).toEqual(out.map((_, i) => `tester:big/${i}`).sort());
    expect(out.flatMap((b) => b.records.map((r) => r.id)).sort()).toEqual(records(1000).map((r) => r.id).sort());
    expect(out.every((b) => b.records.every((r) => r.observation.length === 2048))).toBe(true);
  });

  it('passes every record of batches in flight at once on byte for byte while it receives into the buffers of settled batches', async () => {
    const out = await collector(subjects.allTagged, 'reader');
    const inputBuffers = new Set<ArrayBufferLike>();
    await stage({
      input: { subject: subjects.allEnriched, maxInFlight: 4 },
      transform: async ({ view, partition }, output) => {
        inputBuffers.add(view.bytes.buffer);
        const writer = output.batch(subjects.tagged(partition ?? 0));
        // Reads the input across awaits: other batches arrive meanwhile, and a buffer handed
        // back too early would have been received into under this batch's records.
        for (let i = 0; i < view.length; i++) {
          if (i % 50 === 0) await new Promise((r) => setImmediate(r));
          writer.copyRecord(view, i);
        }
      },
    });
    const producer = await newBus('producer');
    // 24 batches of ~150 KB: each spans several socket reads, so it is received into a pooled buffer.
    const batches = Array.from({ length: 24 }, (_, b) =>
      newFlowBatch({ batchId: `b${b}`, records: Array.from({ length: 300 }, (_, i) => newFlowRecord({ id: `b${b}-r${i}`, node: 'node-a', src: { ip: '10.0.0.1', port: 1000 + i, process: { cmdline: `${b}:${i}:`.padEnd(480, String.fromCharCode(97 + ((b + i) % 26))) } } })) }),
    );
    await Promise.all(batches.map((batch, b) => producer.publishBatch(subjects.enriched(b % 16, 'node-a'), batch)));
    await until('every record', () => out.reduce((n, b) => n + b.records.length, 0) >= 24 * 300);
    const sent = new Map(batches.flatMap((b) => b.records.map((r) => [r.id, r.src?.process?.cmdline])));
    const received = out.flatMap((b) => b.records.map((r) => [r.id, r.src?.process?.cmdline] as const));
    expect(received.length).toBe(sent.size);
    for (const [id, cmdline] of received) expect(cmdline, id).toBe(sent.get(id));
    // Received into fewer buffers than batches: settled batches' buffers were used again.
    expect(inputBuffers.size).toBeLessThan(24);
  });

  it('moves undecodable input and an input whose record outgrows any message to kappa.dlq.<stage>, and goes on', async () => {
    const out = await collector(subjects.allTagged, 'reader');
    const running = await stage({
      transform: ({ view }, output) => {
        const writer = output.batch(subjects.tagged(1));
        for (let i = 0; i < view.length; i++) {
          view.record(i, cursor);
          writer.beginRecord();
          const huge = cursor.string(FlowFields.FlowRecord.id) === 'huge';
          writer.copyReplacing(cursor, [FlowFields.FlowRecord.observation], () => writer.stringField(FlowFields.FlowRecord.observation, huge ? 'h'.repeat(2 * 1024 * 1024) : 'ok'));
          writer.endRecord();
        }
      },
    });
    const producer = await newBus('producer');
    await producer.publishUnchecked(subjects.enriched(1, 'node-a'), Uint8Array.from([0xff, 0xff, 0xff]));
    await producer.publishBatch(subjects.enriched(1, 'node-a'), newFlowBatch({ batchId: 'grows', records: [newFlowRecord({ id: 'huge' })] }));
    await producer.publishBatch(subjects.enriched(1, 'node-a'), newFlowBatch({ batchId: 'fine', records: [newFlowRecord({ id: 'small' })] }));
    await until('the good batch', () => out.some((b) => b.batchId === 'tester:fine'));
    await until('both dead letters', async () => (await producer.streamInfo(DLQ_STREAM)).state.messages === 2);
    const first = await producer.streamMessage(DLQ_STREAM, { seq: 1 });
    const second = await producer.streamMessage(DLQ_STREAM, { seq: 2 });
    expect(first?.subject).toBe('kappa.dlq.tester');
    expect(first?.header(dlqHeaders.error)).toMatch(/cannot decode 3 bytes as kappa.flow.v1.FlowBatch/);
    expect(second?.header(dlqHeaders.error)).toMatch(/a flow record of \d+ bytes does not fit a message/);
    expect(second?.header(dlqHeaders.subject)).toBe(subjects.enriched(1, 'node-a'));
    expect(running.bus.deadLettered('tester')).toBe(2);
    expect(out.map((b) => b.batchId)).toEqual(['tester:fine']);
  });

  it('asks a held batch back later, counted as held and not as a failure', async () => {
    const out = await collector(subjects.allTagged, 'reader');
    let attempts = 0;
    const running = await stage({
      transform: ({ view, storedNs }, output) => {
        attempts++;
        expect(storedNs).toBeGreaterThan(0n);
        if (attempts < 3) throw new HoldBatch(100, 'pod-not-known');
        const writer = output.batch(subjects.tagged(0));
        for (let i = 0; i < view.length; i++) writer.copyRecord(view, i);
      },
    });
    const producer = await newBus('producer');
    await producer.publishBatch(subjects.enriched(0, 'node-a'), newFlowBatch({ batchId: 'wait', records: records(2) }));
    await until('the output', () => out.length === 1);
    expect(attempts).toBe(3);
    const held = (await running.bus.metrics.held.get()).values;
    expect(held).toEqual([expect.objectContaining({ value: 2, labels: { stage: 'tester', reason: 'pod-not-known' } })]);
    expect((await running.bus.metrics.handlerFailures.get()).values.reduce((n, v) => n + v.value, 0)).toBe(0);
  });

  it('publishes a heartbeat with records in and out, and answers /readyz once consuming', async () => {
    const running = await stage({ transform: (_input, output) => void output.batch(subjects.tagged(0)) });
    expect((await fetch(`http://127.0.0.1:${running.metricsPort}/readyz`)).status).toBe(200);
    const watcher = await newBus('watcher');
    const beats: StageStatus[] = [];
    const unsubscribe = watcher.subscribeStatus((s) => void (s.stage === 'tester' && beats.push(s)));
    closers.push(async () => unsubscribe());
    await watcher.publishBatch(subjects.enriched(0, 'node-a'), newFlowBatch({ batchId: 'counted', records: records(7) }));
    const beat = await until('a heartbeat counting 7 records', () => beats.find((b) => b.recordsIn === 7n), 15_000);
    expect([beat.instance, beat.ready, beat.recordsOut, beat.dlq]).toEqual(['tester-1', true, 0n, 0n]);
    await running.stop();
    expect(await fetch(`http://127.0.0.1:${running.metricsPort}/readyz`).then((r) => r.status, () => 'closed')).toBe('closed');
  });

  it('ends with one line naming the problem and exit 1 when NATS is not there at start', async () => {
    const port = await freePort();
    const result = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures/replica.ts'), `--nats=nats://127.0.0.1:${port}`, '--stage=lonely', '--subject=kappa.flow.tagged.>', '--out=kappa.flow.joined.p0'], { encoding: 'utf8', timeout: 60_000 });
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^kappa-lonely: cannot connect to NATS at nats://127.0.0.1:${port}: .* \\(check --nats-url and the credentials\\)$`));
  });
});
