// The joiner's Redis state on a real redis-server: leases and fencing epochs (a replica that lost
// a partition can neither commit into the new owner's state nor keep its lease), the keep-going
// rule after Redis was away, one MULTI per commit, and a partition loaded back exactly.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { startRedisServer } from '@kappa/testing';
import { FlowBatchView, FlowBatchWriter, encodeFlowBatch, newFlowBatch } from '@kappa/contracts';
import { CommitSet } from '../src/commit.js';
import { Delta, JoinStats, PartitionJoin } from '../src/partition.js';
import type { JoinSettings } from '../src/partition.js';
import { connectRedis } from '../src/redis.js';
import { PartitionFencedError, PartitionStore, partitionKeys } from '../src/store.js';
import { generate } from './generate.js';
import { redisTestbed } from './harness.js';

const bed = redisTestbed();
const client = bed.client;

const settings: JoinSettings = { joinWaitMs: 20_000, metadataTtlMs: 60_000, endRefreshMs: 15_000, joinExternal: false };

/** Applies generated batches to a join, returning the commit set of all of them. */
function applyBatches(join: PartitionJoin, count: number): { set: CommitSet; applied: number } {
  const batches = generate(99, { conversations: 300, intervals: 3, intervalMs: 10_000, maxDelayMs: 30_000, oddShare: 0, maxBatch: 50 }).slice(0, count);
  const view = new FlowBatchView();
  const writer = new FlowBatchWriter();
  const set = new CommitSet();
  for (const [i, b] of batches.entries()) {
    const bytes = encodeFlowBatch(newFlowBatch({ batchId: `b${i}`, records: b.records }));
    view.parse(bytes);
    writer.reset();
    writer.open({ batchId: 'x', producer: 'joiner', createdNs: 0n }, 1 << 20);
    const delta = new Delta();
    join.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), b.timeMs, i + 1, writer, delta, new JoinStats());
    set.add(delta);
  }
  return { set, applied: batches.length };
}

describe('joiner state in Redis', () => {
  it('gives a free partition to one replica at a time, with a new epoch each time', async () => {
    const a = new PartitionStore(client(), 'a');
    const b = new PartitionStore(client(), 'b');
    const first = await a.acquire(1, 2000, true);
    expect(first).toEqual({ status: 'acquired', epoch: 1 });
    expect(await b.acquire(1, 2000, true)).toMatchObject({ status: 'held' });
    expect(await a.renew(1, 1, 2000)).toBe(true);
    await a.release(1);
    expect(await b.acquire(1, 2000, true)).toEqual({ status: 'acquired', epoch: 2 });
    // a's epoch is over: it cannot renew, even though the lease key is b's now.
    expect(await a.renew(1, 1, 2000)).toBe(false);
  });

  it('leaves a partition to its last owner until the taker may take foreign ones', async () => {
    const a = new PartitionStore(client(), 'a2');
    const b = new PartitionStore(client(), 'b2');
    expect(await a.acquire(2, 200, true)).toMatchObject({ status: 'acquired' });
    await new Promise((r) => setTimeout(r, 400)); // a's lease runs out
    expect(await b.acquire(2, 2000, false)).toEqual({ status: 'deferred', lastInstance: 'a2' });
    expect(await b.acquire(2, 2000, true)).toMatchObject({ status: 'acquired', epoch: 2 });
  });

  it('lets an owner whose lease ran out keep its partition when nobody took it (Redis was away)', async () => {
    const a = new PartitionStore(client(), 'a3');
    const got = await a.acquire(3, 200, true);
    expect(got.status).toBe('acquired');
    await new Promise((r) => setTimeout(r, 400));
    expect(await client().exists(partitionKeys(3).lease)).toBe(0);
    expect(await a.renew(3, got.status === 'acquired' ? got.epoch : 0, 2000)).toBe(true);
  });

  it('commits in one transaction and loads the partition back exactly; a fenced owner cannot write the new epoch', async () => {
    const redisClient = client();
    const a = new PartitionStore(redisClient, 'a4');
    const acquired = await a.acquire(4, 5000, true);
    if (acquired.status !== 'acquired') throw new Error(acquired.status);
    const join = new PartitionJoin(settings);
    const { set, applied } = applyBatches(join, 40);
    expect(join.pendingCount).toBeGreaterThan(0);
    expect(join.endCount).toBeGreaterThan(0);
    await a.commit(4, acquired.epoch, applied, join.clock, 'stream-1', set);

    // b takes over (a's lease released): the state moves to epoch 2 and loads identically.
    await a.release(4);
    const b = new PartitionStore(client(), 'b4');
    const taken = await b.acquire(4, 5000, true);
    if (taken.status !== 'acquired') throw new Error(taken.status);
    const loaded = new PartitionJoin(settings);
    const state = await b.load(4, taken.epoch, loaded);
    expect(state).toMatchObject({ applied, clock: join.clock, stream: 'stream-1', pending: join.pendingCount });
    expect(loaded.pendingCount).toBe(join.pendingCount);
    // Ends come back both from their own values and from the waiting records that carry them.
    expect(state.ends).toBeLessThan(join.endCount);
    expect(loaded.endCount).toBe(join.endCount);

    // a, not knowing, commits again: refused, and nothing reaches b's state.
    const before = await redisClient.hlen(partitionKeys(4).pending(taken.epoch));
    await expect(a.commit(4, acquired.epoch, applied + 1, join.clock, 'stream-1', set)).rejects.toBeInstanceOf(PartitionFencedError);
    expect(await redisClient.hlen(partitionKeys(4).pending(taken.epoch))).toBe(before);
    expect(await redisClient.hget(partitionKeys(4).state(taken.epoch), 'applied')).toBe(String(applied));
    // Its stray writes under its old epoch are removed when it drops the partition.
    expect(await redisClient.exists(partitionKeys(4).pending(acquired.epoch))).toBe(1);
    await a.drop(4, acquired.epoch);
    expect(await redisClient.exists(partitionKeys(4).pending(acquired.epoch), partitionKeys(4).state(acquired.epoch))).toBe(0);
  });

  it('keeps at most the record size + 100 bytes of Redis per waiting record', async () => {
    const redisClient = client();
    await redisClient.flushall();
    const store = new PartitionStore(redisClient, 'mem');
    const acquired = await store.acquire(5, 60_000, true);
    if (acquired.status !== 'acquired') throw new Error(acquired.status);
    const join = new PartitionJoin({ ...settings, joinWaitMs: 3_600_000 });
    // One end of each conversation only: every record waits.
    const records = generate(1000, { conversations: 8000, intervals: 1, intervalMs: 10_000, maxDelayMs: 0, oddShare: 0, maxBatch: 100 })
      .flatMap((b) => b.records)
      .filter((r) => r.vantage === 1 && r.dst !== undefined && r.dst.kube?.objectType !== 'external');
    const bytes = encodeFlowBatch(newFlowBatch({ batchId: 'lonely', records }));
    const view = new FlowBatchView().parse(bytes);
    const writer = new FlowBatchWriter();
    writer.open({ batchId: 'x', producer: 'joiner', createdNs: 0n }, 1 << 30);
    const delta = new Delta();
    const info = async () => Number(/used_memory:(\d+)/.exec(await redisClient.info('memory'))?.[1]);
    const before = await info();
    join.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 1000, 1, writer, delta, new JoinStats());
    const set = new CommitSet();
    set.add(delta);
    await store.commit(5, acquired.epoch, 1, join.clock, 's', set);
    const after = await info();
    let recordBytes = 0;
    for (let i = 0; i < view.length; i++) recordBytes += view.recordEnd(i) - view.recordStart(i);
    const pending = join.pendingCount;
    expect(pending).toBe(view.length);
    // Everything counts: the waiting records and the ends cached for later joins (one per record
    // here, carried inside the record while it waits).
    const perRecord = (after - before) / pending;
    const recordSize = recordBytes / pending;
    console.log(`Redis per waiting record: ${perRecord.toFixed(0)} bytes for a record of ${recordSize.toFixed(0)} bytes`);
    expect(perRecord).toBeLessThanOrEqual(recordSize + 100);
  });

  it('works the same on a Redis Cluster: every partition in its own slot, its commit one transaction on its node', async () => {
    const nodes = await Promise.all([0, 1, 2].map(() => startRedisServer({ args: ['--cluster-enabled', 'yes', '--cluster-node-timeout', '2000'] })));
    try {
      execFileSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { stdio: 'ignore' });
      const deadline = Date.now() + 20_000;
      while (!nodes.every((n) => execFileSync('redis-cli', ['-p', String(n.port), 'cluster', 'info']).toString().includes('cluster_state:ok'))) {
        if (Date.now() > deadline) throw new Error('cluster not ok');
        await new Promise((r) => setTimeout(r, 200));
      }
      // Leases that outlast the loop: at load 20 the 16 partitions took 20 s (ci45), and a 5 s
      // lease of the first had run out before holders() read them.
      const LEASE_MS = 120_000;
      const cluster = await connectRedis({ url: new URL(`redis://127.0.0.1:${nodes[0]!.port}`), cluster: true });
      try {
        const store = new PartitionStore(cluster, 'c');
        expect((await store.members(LEASE_MS)).length).toBe(1);
        for (let k = 0; k < 16; k++) {
          const got = await store.acquire(k, LEASE_MS, true);
          if (got.status !== 'acquired') throw new Error(`partition ${k}: ${got.status}`);
          const join = new PartitionJoin(settings);
          const { set, applied } = applyBatches(join, 3);
          await store.commit(k, got.epoch, applied, join.clock, 's', set);
          const loaded = new PartitionJoin(settings);
          const state = await store.load(k, got.epoch, loaded);
          expect(state.applied).toBe(applied);
          expect(loaded.pendingCount).toBe(join.pendingCount);
          expect(loaded.endCount).toBe(join.endCount);
          expect(await store.renew(k, got.epoch, LEASE_MS)).toBe(true);
        }
        expect((await store.holders(16)).every((h) => h === store.me)).toBe(true);
        // The partitions' keys really are spread over the three nodes.
        for (const n of nodes) expect(Number(execFileSync('redis-cli', ['-p', String(n.port), 'dbsize']).toString())).toBeGreaterThan(0);
      } finally {
        cluster.disconnect();
      }
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
    }
  }, 60_000);
});
