// Crash and outage safety: a joiner SIGKILLed at each step of the protocol, or at a random moment,
// and Redis stopped and restarted, with every record still emitted exactly once.
import { describe, expect, it } from 'vitest';
import type { FlowRecord } from '@kappa/contracts';
import { collectJoined, conversation, counts, joinerTestbed, publishRecords, shuffle, until } from './harness.js';

const bed = joinerTestbed('SIGKILL');
// Short waits so a test sees redelivery, sweeping and round takeover within seconds.
const fastArgs = ['--join-wait=1500ms', '--sweep-interval=200ms', '--ack-wait=3s', '--sweep-lease=2s'];
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

async function expectEachOnce(records: FlowRecord[], lonely: Set<string>, total: number): Promise<void> {
  await bed.collector!.until(total, 60_000);
  // Longer than redelivery (ack wait), a join wait and a sweep-round lease: nothing more may come.
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
    }
  }
  void records;
}

const steps = [
  { point: 'input-claimed', what: 'after its input claimed peer records in Redis, before publishing' },
  { point: 'input-published', what: 'after publishing its output, before deleting the claimed records' },
  { point: 'sweep-claimed', what: 'after a sweep round claimed records, before publishing' },
  { point: 'sweep-published', what: 'after a sweep round published, before finalizing' },
] as const;

describe('joiner crash safety', () => {
  for (const step of steps) {
    it(`emits every record exactly once when a joiner is SIGKILLed ${step.what}`, async () => {
      const doomed = await joiner('doomed', { KAPPA_JOINER_CRASH_AT: `${step.point}:2` });
      bed.collector = await collectJoined(bed.bus);
      const { records, lonely } = workload();
      await publishRecords(bed.bus, records, 20, `crash-${step.point}`);
      const code = await Promise.race([doomed.exited, new Promise((r) => setTimeout(() => r('alive'), 20_000))]);
      expect(code).not.toBe('alive');
      expect(doomed.child.signalCode).toBe('SIGKILL');
      expect(doomed.output.join('')).toContain(`crashing at ${step.point}`);
      // The other replica finishes the work: redelivered input, abandoned sweep round, sweeping.
      const survivor = await joiner('survivor');
      await expectEachOnce(records, lonely, records.length);
      // The window really was crossed: the survivor replayed the dead replica's work.
      if (step.point.startsWith('sweep')) expect(survivor.output.join('')).toContain('taking over an abandoned sweep round');
      if (step.point === 'input-published') {
        // The redelivery comes after the dead replica's ack wait, which may be after every record
        // was already seen: wait for the survivor's republish to meet JetStream's dedup.
        const end = Date.now() + 60_000;
        let duplicates = await survivor.metric('kappa_bus_duplicate_batches_total');
        while (duplicates === 0 && Date.now() < end) {
          await new Promise((r) => setTimeout(r, 500));
          duplicates = await survivor.metric('kappa_bus_duplicate_batches_total');
        }
        expect(duplicates).toBeGreaterThan(0);
        await expectEachOnce(records, lonely, records.length);
      }
    }, 180_000);
  }

  it('emits every record exactly once when one of two replicas is SIGKILLed mid-stream and restarted', async () => {
    const a = await joiner('a');
    await joiner('b');
    bed.collector = await collectJoined(bed.bus);
    const { records, lonely } = workload();
    const half = Math.floor(records.length / 2);
    await publishRecords(bed.bus, records.slice(0, half), 10, 'kill-first');
    await until(() => bed.collector!.records.length > 20, 20_000, 'first records out');
    a.child.kill('SIGKILL');
    await a.exited;
    await publishRecords(bed.bus, records.slice(half), 10, 'kill-second');
    await new Promise((r) => setTimeout(r, 1000));
    await joiner('a-restarted');
    await expectEachOnce(records, lonely, records.length);
  });

  it('loses nothing while Redis is down or restarted: input is retried, readiness and a metric say so', async () => {
    const j = await joiner('a', {}, ['--join-wait=60s', '--ack-wait=3s']);
    bed.collector = await collectJoined(bed.bus);
    const convs = Array.from({ length: 100 }, (_, i) => conversation(i));
    // Client ends wait in Redis; Redis restarts (its append-only file keeps them).
    await publishRecords(bed.bus, convs.map((c) => c.client).slice(0, 50), 10, 'before-restart');
    await until(async () => (await j.metric('kappa_joiner_records_in_total')) === 50, 10_000, 'first half consumed');
    await bed.redis.process.stop();
    await until(async () => !(await j.ready()), 10_000, 'readiness false');
    // While Redis is away: everything else arrives and must wait unacked in JetStream.
    await publishRecords(bed.bus, [...convs.map((c) => c.client).slice(50), ...convs.map((c) => c.server)], 10, 'while-down');
    await until(async () => (await j.metric('kappa_joiner_redis_errors_total')) > 0, 10_000, 'redis errors counted');
    expect(await j.metric('kappa_joiner_redis_up')).toBe(0);
    await new Promise((r) => setTimeout(r, 2000));
    expect(bed.collector.records).toHaveLength(0);
    await bed.redis.process.start();
    await bed.collector.until(200, 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    const seen = counts(bed.collector.records);
    expect(seen.size).toBe(200);
    expect(bed.collector.records).toHaveLength(200);
    for (const r of bed.collector.records) expect(r.joined).toBe(true);
    await until(() => j.ready(), 10_000, 'ready again');
  });
});
