// Redis coming back, announced by a commit. A replica that saw Redis fail holds every partition's
// input; the first Redis call that works again resumes them all, and a resume commits what is
// published. When that first call was one partition's commit, the resume ran inside that commit's
// own completion, before its batches left the queue: they were committed twice, and the second
// completion took batches off the queue that were never committed (never acked, their slab values
// released twice, their output buffers handed to the next batch before their publish: undecodable
// output in the exporter's DLQ; 2026-12-05, the Redis primary's SIGKILL on the cluster topology).
// Here Redis refuses the replica's membership key (an ACL) while the partitions' own keys work, so
// every round fails and every commit says Redis is back: that path, again and again.
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { collectJoined, conversation, counts, expectOwnConversation, joinerTestbed, publishRecords, shuffle, until } from './harness.js';

const bed = joinerTestbed();

describe('joiner commits while Redis flaps', () => {
  it('emits every record once, joined with its own conversation, when commits announce Redis is back', async () => {
    const admin = new Redis(bed.redis.port, '127.0.0.1');
    const user = `kjoiner${process.pid}`;
    const password = `pw${process.pid}`;
    await admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '&*', '+@all');
    try {
      const solo = await bed.joiner('solo', [`--redis-url=redis://${user}:${password}@127.0.0.1:${bed.redis.port}`, '--join-wait=20s', '--lease-ttl=60s', '--ack-wait=4s']);
      await until(async () => (await solo.owned()) === 16, 60_000, 'one replica owning every partition');
      bed.collector = await collectJoined(bed.bus);
      const pairs = Array.from({ length: 300 }, (_, i) => conversation(i));
      const records = shuffle(pairs.flatMap((c) => [c.client, c.server]), 5);
      const chunk = 60;
      // The membership key refused, the partitions' keys allowed (`{` is literal in an ACL glob).
      await admin.call('ACL', 'SETUSER', user, 'resetkeys', '~kappa:{p*');
      for (let i = 0; i < records.length / 2; i += chunk) {
        await publishRecords(bed.bus, records.slice(i, Math.min(i + chunk, records.length / 2)), 5, `flap-${i}`);
        await new Promise((r) => setTimeout(r, 700));
      }
      await until(async () => (await solo.metric('kappa_joiner_redis_errors_total')) > 2, 20_000, 'rounds failing on the refused key');
      await admin.call('ACL', 'SETUSER', user, 'resetkeys', '~*');
      await publishRecords(bed.bus, records.slice(records.length / 2), 5, 'flap-after');
      await bed.collector.until(records.length, 60_000);
      // Longer than an ack wait: nothing more may come.
      await new Promise((r) => setTimeout(r, 5000));
      const seen = counts(bed.collector.records);
      expect([...seen].filter(([, n]) => n > 1)).toEqual([]);
      expect(seen.size).toBe(records.length);
      expect(bed.collector.records).toHaveLength(records.length);
      for (const r of bed.collector.records) expectOwnConversation(r);
    } finally {
      await admin.call('ACL', 'DELUSER', user).catch(() => undefined);
      admin.disconnect();
    }
  }, 180_000);
});
