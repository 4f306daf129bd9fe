// Deliveries the joiner never sees. A JetStream consumer serves its waiting pull requests in turn,
// and a subscriber still listening on a pull's reply subject takes a turn whether or not it will
// process what it gets: a consumer stopping on a reconnect, or a partition owner that has not yet
// learnt it lost the partition. The joiner must notice each such gap, fetch the partition again in
// order from its ack floor, and emit every record once: no batch may stay unacked for good
// (2026-12-05: after a stream leader's SIGKILL, a partition's batch stayed pending, redelivered
// every ack wait and dropped as "already held", and its records never came out).
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { PULL_EXPIRES_MS } from '@kappa/bus';
import { collectJoined, conversation, counts, expectOwnConversation, joinerTestbed, publishRecords, shuffle, until } from './harness.js';

const bed = joinerTestbed();
const PARTITIONS = 16;

/**
 * A pull request on every partition's consumer whose reply subject `swallow` listens on and drops
 * what comes: it lives PULL_EXPIRES_MS, as the joiner's own pulls do.
 */
function swallowingPulls(nc: NatsConnection, prefix: string, batch: number): void {
  for (let k = 0; k < PARTITIONS; k++) {
    const request = JSON.stringify({ batch, expires: PULL_EXPIRES_MS * 1_000_000 });
    nc.publish(`$JS.API.CONSUMER.MSG.NEXT.KAPPA_FLOWS.joiner-p${k}`, request, { reply: `${prefix}.${k}.${Date.now()}` });
  }
}

describe('joiner input with deliveries taken by another subscriber', () => {
  it('emits every record once, each joined with its own conversation, though other pulls took some of its batches', async () => {
    const solo = await bed.joiner('solo', ['--join-wait=20s', '--lease-ttl=4s', '--ack-wait=4s']);
    await until(async () => (await solo.owned()) === PARTITIONS, 60_000, 'one replica owning every partition');
    bed.collector = await collectJoined(bed.bus);
    const nc = await connect({ servers: bed.nats.url });
    try {
      const pairs = Array.from({ length: 200 }, (_, i) => conversation(i));
      const records = shuffle(pairs.flatMap((c) => [c.client, c.server]), 11);
      // Pulls that take deliveries and drop them, now and every 300 ms while the records go in:
      // each reset of the joiner's consumer meets some, as it would meet a stopping subscriber's.
      const prefix = `_INBOX.swallow${process.pid}`;
      let swallowed = 0;
      const swallow = nc.subscribe(`${prefix}.>`, {
        callback: (_error, m) => {
          if (m.data.length > 0) swallowed++;
        },
      });
      swallowingPulls(nc, prefix, 2);
      const more = setInterval(() => swallowingPulls(nc, prefix, 2), 300);
      try {
        await publishRecords(bed.bus, records.slice(0, records.length / 2), 5, 'stale-a');
        await new Promise((r) => setTimeout(r, 1500));
        await publishRecords(bed.bus, records.slice(records.length / 2), 5, 'stale-b');
        await new Promise((r) => setTimeout(r, 1500));
      } finally {
        clearInterval(more);
      }
      // The last swallowing pulls expire; what they took comes again after the ack wait.
      await new Promise((r) => setTimeout(r, PULL_EXPIRES_MS + 500));
      swallow.unsubscribe();
      await bed.collector.until(records.length, 60_000);
      const gaps = solo.output.join('').match(/never arrived|came after/g)?.length ?? 0;
      console.log(`swallowing pulls: ${swallowed} batches taken from the joiner, ${gaps} gaps seen and fetched again; ${bed.collector.records.length} records out of ${records.length}`);
      // The pulls did take batches (else this test proves nothing).
      expect(swallowed).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 3000));
      const seen = counts(bed.collector.records);
      expect([...seen].filter(([, n]) => n > 1)).toEqual([]);
      expect(seen.size).toBe(records.length);
      for (const r of bed.collector.records) expectOwnConversation(r);
    } finally {
      await nc.close();
    }
  }, 180_000);
});
