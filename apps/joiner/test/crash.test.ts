// Crash and outage safety with three joiner replicas sharing the partitions: an owner SIGKILLed
// at each step of the protocol (between publish and commit, while releasing timed-out records,
// between commit and ack) or at a random moment, and Redis stopped and restarted. Every record
// comes out exactly once, with its own conversation's metadata, and the partitions of a dead
// owner are taken over within 15 s.
import { describe, expect, it } from 'vitest';
import type { FlowRecord } from '@kappa/contracts';
import { collectJoined, conversation, conversationOf, counts, expectOwnConversation, joinerTestbed, publishRecords, shuffle, until } from './harness.js';
import type { JoinerProcess } from './harness.js';

const bed = joinerTestbed('SIGKILL');
// Short waits so a test sees timeouts and takeovers within seconds.
const fastArgs = ['--join-wait=1500ms', '--sweep-interval=200ms', '--lease-ttl=4s'];
const joiner = (instance: string, env: Record<string, string> = {}, args = fastArgs) => bed.joiner(instance, args, env);

/** 150 conversations seen from both ends and 100 seen from one end only (peer without kappa). */
function workload(): { records: FlowRecord[]; lonely: Set<string> } {
  const pairs = Array.from({ length: 150 }, (_, i) => conversation(i));
  const lonely = Array.from({ length: 100 }, (_, i) => conversation(1000 + i).client);
  return {
    records: shuffle([...pairs.flatMap((c) => [c.client, c.server]), ...lonely], 7),
    lonely: new Set(lonely.map((r) => `${r.src?.ip}:${r.src?.port}`)),
  };
}

/** Three replicas, started together, once they share the 16 partitions. */
async function threeReplicas(doomedEnv: Record<string, string> = {}, args = fastArgs): Promise<JoinerProcess[]> {
  const replicas = await Promise.all([joiner('doomed', doomedEnv, args), joiner('survivor-1', {}, args), joiner('survivor-2', {}, args)]);
  await until(async () => {
    const owned = await Promise.all(replicas.map((r) => r.owned()));
    return owned.every((n) => n >= 4) && owned.reduce((a, b) => a + b, 0) === 16;
  }, 60_000, 'three replicas sharing 16 partitions');
  return replicas;
}

/** Time from `from` until the survivors own all 16 partitions. */
async function takeover(survivors: JoinerProcess[], from: number): Promise<number> {
  await until(async () => (await Promise.all(survivors.map((s) => s.owned()))).reduce((a, b) => a + b, 0) === 16, 60_000, 'survivors owning every partition');
  return Date.now() - from;
}

async function expectEachOnce(lonely: Set<string>, total: number): Promise<void> {
  await bed.collector!.until(total, 60_000);
  // Longer than a join wait and a lease: nothing more may come.
  await new Promise((r) => setTimeout(r, 6000));
  const seen = counts(bed.collector!.records);
  const doubled = [...seen].filter(([, n]) => n > 1);
  expect(doubled).toEqual([]);
  expect(seen.size).toBe(total);
  expect(bed.collector!.records).toHaveLength(total);
  for (const r of bed.collector!.records) {
    if (lonely.has(`${r.src?.ip}:${r.src?.port}`)) {
      expect(r.joined).toBe(false);
      expect(r.joinStatus).toBe('no-peer');
    } else {
      expectOwnConversation(r);
    }
  }
}

const steps = [
  { point: 'published', what: 'after publishing a batch\'s output, before committing it' },
  { point: 'swept', what: 'after publishing the records a clock tick timed out, before committing them' },
  { point: 'committed', what: 'after a commit, before acking its batches' },
] as const;

describe('joiner crash safety, three replicas', () => {
  for (const step of steps) {
    it(`emits every record exactly once when a partition owner is SIGKILLed ${step.what}, and its partitions are taken over within 15 s`, async () => {
      const [doomed, ...survivors] = await threeReplicas({ KAPPA_JOINER_CRASH_AT: `${step.point}:2` });
      bed.collector = await collectJoined(bed.bus);
      const { records, lonely } = workload();
      await publishRecords(bed.bus, records, 10, `crash-${step.point}`);
      const code = await Promise.race([doomed!.exited, new Promise((r) => setTimeout(() => r('alive'), 30_000))]);
      const died = Date.now();
      expect(code).not.toBe('alive');
      expect(doomed!.child.signalCode).toBe('SIGKILL');
      expect(doomed!.output.join('')).toContain(`crashing at ${step.point}`);
      const took = await takeover(survivors, died);
      console.log(`crash at ${step.point}: partitions taken over ${took} ms after the owner died`);
      expect(took).toBeLessThanOrEqual(15_000);
      await expectEachOnce(lonely, records.length);
      if (step.point !== 'committed') {
        // The window really was crossed: a survivor replayed what the dead owner had published,
        // and JetStream dropped the replay as a duplicate.
        let duplicates = 0;
        for (const s of survivors) duplicates += await s.metric('kappa_bus_duplicate_batches_total');
        expect(duplicates).toBeGreaterThan(0);
      }
    }, 180_000);
  }

  it('emits every record exactly once when one of three replicas is SIGKILLed mid-stream and restarted', async () => {
    const [a] = await threeReplicas();
    bed.collector = await collectJoined(bed.bus);
    const { records, lonely } = workload();
    // Split by conversation: the time from the first half to the second (the kill) is longer than
    // the join wait in JetStream time, so a conversation split across the halves would rightly
    // leave unjoined.
    const first = (r: FlowRecord) => conversationOf(r) % 2 === 0;
    await publishRecords(bed.bus, records.filter(first), 10, 'kill-first');
    await until(() => bed.collector!.records.length > 20, 20_000, 'first records out');
    a!.child.kill('SIGKILL');
    await a!.exited;
    await publishRecords(bed.bus, records.filter((r) => !first(r)), 10, 'kill-second');
    await new Promise((r) => setTimeout(r, 1000));
    await joiner('doomed-restarted');
    await expectEachOnce(lonely, records.length);
  }, 180_000);

  it('loses nothing while Redis is down or restarted: input is held, readiness and a metric say so, and the replicas carry on', async () => {
    const replicas = await threeReplicas({}, ['--join-wait=60s', '--lease-ttl=4s']);
    bed.collector = await collectJoined(bed.bus);
    const convs = Array.from({ length: 100 }, (_, i) => conversation(i));
    // Client ends wait (in memory, committed to Redis); Redis restarts (its append-only file keeps them).
    await publishRecords(bed.bus, convs.map((c) => c.client).slice(0, 50), 10, 'before-restart');
    await until(async () => (await Promise.all(replicas.map((r) => r.metric('kappa_joiner_records_in_total')))).reduce((a, b) => a + b, 0) === 50, 20_000, 'first half committed');
    await bed.redis.process.stop();
    await until(async () => (await Promise.all(replicas.map((r) => r.ready()))).every((ready) => !ready), 10_000, 'readiness false');
    // While Redis is away: everything else arrives and must wait unacked in JetStream.
    await publishRecords(bed.bus, [...convs.map((c) => c.client).slice(50), ...convs.map((c) => c.server)], 10, 'while-down');
    await until(async () => (await Promise.all(replicas.map((r) => r.metric('kappa_joiner_redis_errors_total')))).every((n) => n > 0), 10_000, 'redis errors counted');
    for (const r of replicas) expect(await r.metric('kappa_joiner_redis_up')).toBe(0);
    await new Promise((r) => setTimeout(r, 2000));
    expect(bed.collector.records).toHaveLength(0);
    await bed.redis.process.start();
    const back = Date.now();
    await bed.collector.until(200, 30_000);
    const took = Date.now() - back;
    console.log(`Redis restart: every record out ${took} ms after Redis was back`);
    expect(took).toBeLessThanOrEqual(15_000);
    await new Promise((r) => setTimeout(r, 3000));
    const seen = counts(bed.collector.records);
    expect(seen.size).toBe(200);
    expect(bed.collector.records).toHaveLength(200);
    for (const r of bed.collector.records) expectOwnConversation(r);
    await until(async () => (await Promise.all(replicas.map((r) => r.ready()))).every(Boolean), 10_000, 'ready again');
    // They kept their partitions (nothing to take over: the same owners went on).
    expect((await Promise.all(replicas.map((r) => r.owned()))).reduce((a, b) => a + b, 0)).toBe(16);
  }, 180_000);
});
