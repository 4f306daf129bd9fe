// One partition owner, its Redis state on a real redis-server, its input handed over by the test
// in an exact order (the JoinerBus seam: NATS cannot be made to deliver at a chosen instant). The
// order that broke on 2026-12-05 at the Redis primary's SIGKILL: the replica holds input because
// a round failed on Redis; more input arrives; then a commit of this partition is the first Redis
// call to work again, which tells the joiner Redis is back and so resumes every partition, this
// one included, from inside that commit's completion. Every batch must be committed and acked
// once, after its commit, and every output must decode as its own batch.
import { describe, expect, it } from 'vitest';
import { decodeFlowBatch, encodeFlowBatch, newFlowBatch } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger } from '@kappa/observability';
import { PartitionOwner } from '../src/owner.js';
import type { JoinerBus, OwnerEvents, PartitionMessage } from '../src/owner.js';
import { PartitionStore } from '../src/store.js';
import { conversation, redisTestbed } from './harness.js';

const bed = redisTestbed();

interface Sent {
  message: PartitionMessage;
  acks: number;
  /** The partition's applied sequence in Redis when the batch was acked (it must be committed by then). */
  appliedAtAck: number[];
}

describe('a partition owner resumed from inside its own commit', () => {
  it('commits and acks every batch once, after its commit, and publishes each output intact', async () => {
    const client = bed.client();
    const store = new PartitionStore(client, 'solo');
    const k = 3;
    const lease = await store.acquire(k, 60_000, true);
    expect(lease.status).toBe('acquired');
    const epoch = lease.status === 'acquired' ? lease.epoch : 0;
    const applied = async () => Number((await client.hget(`kappa:{p${k}}:e${epoch}:state`, 'applied')) ?? 0);

    let handler: ((m: PartitionMessage) => Promise<void>) | undefined;
    const published: { id: string; bytes: Uint8Array }[] = [];
    const bus: JoinerBus = {
      consume: async (options) => {
        handler = options.handler;
        return { stop: async () => undefined, latestLag: 0 };
      },
      // Copied when called, as NATS copies a payload into its outbound buffer.
      publishBytes: async (_subject, bytes, msgId) => {
        published.push({ id: msgId, bytes: Uint8Array.from(bytes) });
        return { duplicate: false };
      },
      deadLetter: async () => undefined,
      streamInfo: async () => ({ created: 'test' }),
      messageLimit: 1024 * 1024,
    };
    // As the Joiner does: Redis failing pauses every owner; working again resumes them all.
    let redisOk = true;
    const owners: PartitionOwner[] = [];
    const events: OwnerEvents = {
      committed: () => undefined,
      redis: (ok) => {
        if (ok && !redisOk) for (const o of owners) o.resume();
        redisOk = ok;
      },
      lost: () => undefined,
    };
    const owner = new PartitionOwner(
      k,
      epoch,
      store,
      bus,
      {
        stage: 'joiner',
        instance: 'solo',
        join: { joinWaitMs: 20_000, metadataTtlMs: 60_000, endRefreshMs: 15_000, joinExternal: false },
        inputSubject: (p) => `kappa.flow.tagged.p${p}`,
        outputSubject: (p) => `kappa.flow.joined.p${p}`,
        stream: 'KAPPA_FLOWS',
        window: 64,
        tickMs: 60_000,
        ackWaitMs: 15_000,
      },
      events,
      createLogger('owner-resume-test', 'warn'),
    );
    owners.push(owner);
    await owner.start();

    const sent: Sent[] = [];
    const deliver = (records: FlowRecord[]) => {
      const seq = sent.length + 1;
      const entry: Sent = { message: undefined as unknown as PartitionMessage, acks: 0, appliedAtAck: [] };
      entry.message = {
        bytes: encodeFlowBatch(newFlowBatch({ batchId: `in-${seq}`, producer: 'test-tagger', records })),
        subject: `kappa.flow.tagged.p${k}`,
        streamSequence: seq,
        deliverySequence: seq,
        storedNs: BigInt(Date.now()) * 1_000_000n,
        ack: async () => {
          entry.acks++;
          entry.appliedAtAck.push(await applied());
          return true;
        },
      };
      sent.push(entry);
      void handler!(entry.message);
    };
    const ends = (i: number) => [conversation(i).client, conversation(i).server];

    // Batch 1 goes in and its commit starts; before it completes, a round fails on Redis (the
    // owner is paused, the joiner thinks Redis is down) and batches 2 and 3 arrive (held).
    deliver(ends(1));
    await new Promise((r) => setImmediate(r));
    events.redis(false);
    owner.pause();
    deliver(ends(2));
    deliver(ends(3));
    // Batch 1's commit completes: Redis is back, every owner resumes, this one from inside it.
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !(sent.every((s) => s.acks > 0) && (await applied()) === 3)) await new Promise((r) => setTimeout(r, 20));
    // Later input goes through as usual.
    deliver(ends(4));
    while (Date.now() < deadline + 5_000 && !(sent.every((s) => s.acks > 0) && (await applied()) === 4)) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300));
    await owner.stop(5_000);

    expect(await applied()).toBe(4);
    for (const s of sent) {
      expect(s.acks, `batch ${s.message.streamSequence} acks`).toBe(1);
      expect(s.appliedAtAck[0], `batch ${s.message.streamSequence} committed before its ack`).toBeGreaterThanOrEqual(s.message.streamSequence);
    }
    // Each input's output once, intact: its own id, both ends of its own conversation.
    const byId = new Map(published.map((p) => [p.id, p.bytes]));
    expect([...byId.keys()].sort()).toEqual(['joiner:in-1', 'joiner:in-2', 'joiner:in-3', 'joiner:in-4']);
    for (const [id, bytes] of byId) {
      const batch = decodeFlowBatch(bytes);
      expect(batch.batchId).toBe(id);
      const i = Number(id.slice('joiner:in-'.length));
      expect(batch.records.map((r) => `${r.vantage} ${r.src?.ip}:${r.src?.port}`).sort()).toEqual(ends(i).map((r) => `${r.vantage} ${r.src?.ip}:${r.src?.port}`).sort());
    }
  }, 60_000);
});
