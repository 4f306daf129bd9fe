// Joiner replicas in one process (no runner): partitions leased and balanced, each partition's
// batches joined, published, committed and acked, idle partitions ticked, a replica stopped
// handing its partitions over — on a real nats-server and redis-server.
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLOW_STREAM, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { DEFAULT_PARTITIONS, newFlowBatch, partitionOfRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer, startRedisServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { Joiner } from '../src/joiner.js';
import { joinerMetrics } from '../src/metrics.js';
import { PartitionStore } from '../src/store.js';
import { conversation, counts, expectOwnConversation, newBus, shuffle, until } from './harness.js';


let nats: TestServer;
let redis: TestServer;
let bus: Bus;
const clients: Redis[] = [];

beforeAll(async () => {
  [nats, redis] = await Promise.all([startNatsServer(), startRedisServer()]);
  bus = await newBus(nats.url, 'replicas-test');
  await bus.ensureStreams();
});
afterAll(async () => {
  for (const c of clients) c.disconnect();
  await bus?.close();
  await Promise.all([nats?.stop(), redis?.stop()]);
});

async function replica(instance: string, overrides: { joinWaitMs?: number } = {}): Promise<Joiner> {
  const client = new Redis({ port: redis.port, host: '127.0.0.1', enableAutoPipelining: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, lazyConnect: true });
  client.on('error', () => undefined);
  await client.connect();
  clients.push(client);
  const registry = createRegistry(`joiner-${instance}`);
  return new Joiner(
    new PartitionStore(client, instance),
    bus,
    {
      stage: 'joiner',
      instance,
      partitions: DEFAULT_PARTITIONS,
      join: { joinWaitMs: overrides.joinWaitMs ?? 60_000, metadataTtlMs: 300_000, endRefreshMs: 75_000, joinExternal: false },
      inputSubject: subjects.tagged,
      outputSubject: subjects.joined,
      stream: FLOW_STREAM,
      window: 8,
      tickMs: 100,
      ackWaitMs: 15_000,
      leaseMs: 3000,
      loopMs: 200,
    },
    joinerMetrics(registry),
    createLogger(`joiner-${instance}`, 'warn'),
  );
}

async function publish(records: FlowRecord[], prefix: string): Promise<void> {
  const byPartition = new Map<number, FlowRecord[]>();
  for (const r of records) byPartition.set(partitionOfRecord(r, DEFAULT_PARTITIONS), [...(byPartition.get(partitionOfRecord(r, DEFAULT_PARTITIONS)) ?? []), r]);
  for (const [k, list] of byPartition) {
    for (let i = 0; i < list.length; i += 20) await bus.publishBatch(subjects.tagged(k), newFlowBatch({ batchId: `${prefix}-p${k}-${i}`, producer: 'test', records: list.slice(i, i + 20) }));
  }
}

/** An exporter stand-in: every record published on kappa.flow.joined.p<k>, from a fresh stream. */
async function collect(): Promise<{ records: FlowRecord[]; stop: () => Promise<void> }> {
  const records: FlowRecord[] = [];
  const consumer = await bus.consumeBatches({
    stage: 'test-exporter',
    subject: subjects.allJoined,
    handler: async (batch) => {
      records.push(...batch.records);
    },
  });
  return { records, stop: () => consumer.stop() };
}

/** Each test from an empty stream and an empty Redis. */
async function reset(): Promise<void> {
  await bus.deleteStream(FLOW_STREAM);
  await bus.ensureStreams();
  const admin = new Redis({ port: redis.port, host: '127.0.0.1' });
  await admin.flushall();
  admin.disconnect();
}

describe('joiner replicas in one process', () => {
  it('share the partitions, join every conversation once with its own ends, and hand partitions over when one stops', async () => {
    await reset();
    const a = await replica('a');
    const b = await replica('b');
    a.start();
    b.start();
    await until(() => a.owned.length + b.owned.length === DEFAULT_PARTITIONS && a.owned.length >= 6 && b.owned.length >= 6, 20_000, 'two replicas sharing the partitions');
    const out = await collect();
    try {
      const pairs = Array.from({ length: 400 }, (_, i) => conversation(i));
      await publish(shuffle(pairs.flatMap((c) => [c.client, c.server])), 'pairs');
      await until(() => out.records.length >= 800, 30_000, `800 records out (${out.records.length})`);
      expect(a.recordsIn).toBeGreaterThan(0);
      expect(b.recordsIn).toBeGreaterThan(0);
      // b stops: its partitions are handed over (committed, released) and a takes them at once.
      const stopping = Date.now();
      await b.stop();
      await until(() => a.owned.length === DEFAULT_PARTITIONS, 10_000, 'a owning every partition');
      expect(Date.now() - stopping).toBeLessThan(5000);
      const more = Array.from({ length: 100 }, (_, i) => conversation(400 + i));
      await publish(shuffle(more.flatMap((c) => [c.client, c.server])), 'after-handover');
      await until(() => out.records.length >= 1000, 30_000, `1000 records out (${out.records.length})`);
      await new Promise((r) => setTimeout(r, 1000));
      expect([...counts(out.records).values()].every((n) => n === 1)).toBe(true);
      expect(out.records).toHaveLength(1000);
      for (const r of out.records) expectOwnConversation(r);
    } finally {
      await out.stop();
      await a.stop();
      await b.stop();
    }
  }, 120_000);

  it('releases a record whose peer never comes when its wait is over, by a clock tick on an idle partition', async () => {
    await reset();
    const a = await replica('lonely', { joinWaitMs: 1500 });
    a.start();
    await until(() => a.owned.length === DEFAULT_PARTITIONS, 20_000, 'partitions owned');
    const out = await collect();
    try {
      const sent = Date.now();
      await publish([conversation(7).client], 'lonely');
      await until(() => out.records.length === 1, 10_000, 'the lonely record out');
      const waited = Date.now() - sent;
      expect(waited).toBeGreaterThanOrEqual(1400);
      expect(waited).toBeLessThan(5000);
      expect(out.records[0]!.joined).toBe(false);
      expect(out.records[0]!.joinStatus).toBe('no-peer');
    } finally {
      await out.stop();
      await a.stop();
    }
  }, 60_000);

  it('sends a batch the join cannot write (a record too large once joined) to the DLQ and goes on from the state before it', async () => {
    await reset();
    const a = await replica('poison', { joinWaitMs: 1500 });
    a.start();
    await until(() => a.owned.length === DEFAULT_PARTITIONS, 20_000, 'partitions owned');
    const out = await collect();
    try {
      const deadBefore = bus.deadLettered('joiner');
      // Each end fits a message alone; joined, each carries the other's 600 KB of labels too.
      const big = conversation(1);
      big.server.dst!.kube!.labels = { huge: 'x'.repeat(600_000) };
      big.client.src!.kube!.labels = { huge: 'y'.repeat(500_000) };
      await publish([big.server], 'poison-server');
      await until(() => a.pendingCount === 1, 10_000, 'the server end waiting');
      await publish([big.client], 'poison-client');
      await until(() => bus.deadLettered('joiner') > deadBefore, 20_000, 'the client batch dead-lettered');
      // The server end waited on (the state before the bad batch came back from Redis), and
      // leaves unjoined when its wait is over; a normal conversation after it joins.
      const normal = conversation(2);
      await publish([normal.client, normal.server], 'after-poison');
      await until(() => out.records.length === 3, 20_000, `3 records out (${out.records.length})`);
      const server = out.records.find((r) => r.dst?.kube?.objectName === 'server-1');
      expect(server?.joined).toBe(false);
      expect(server?.joinStatus).toBe('no-peer');
      expect(out.records.filter((r) => r.joined)).toHaveLength(2);
    } finally {
      await out.stop();
      await a.stop();
    }
  }, 60_000);
});
