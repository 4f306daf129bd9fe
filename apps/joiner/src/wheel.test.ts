// The timing wheel's answers against a plain list of the same entries: what falls due, and
// whether anything is due by a time (the clock tick's question), across turns, entries added
// behind the clock, and entries that stopped being live.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TimingWheel } from './wheel.js';

interface Item {
  deadline: number;
  order: number;
  live: boolean;
}

type Step =
  | { kind: 'add'; ahead: number }
  | { kind: 'kill'; pick: number }
  | { kind: 'advance'; by: number }
  | { kind: 'ask'; ahead: number };

const SLOT_MS = 50;
const SLOTS = 16; // one turn is 800 ms: the steps cross many turns

const step: fc.Arbitrary<Step> = fc.oneof(
  // Deadlines from behind the clock to several turns ahead.
  fc.record({ kind: fc.constant('add' as const), ahead: fc.integer({ min: -300, max: 3000 }) }),
  fc.record({ kind: fc.constant('kill' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('advance' as const), by: fc.oneof(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 0, max: 2500 })) }),
  fc.record({ kind: fc.constant('ask' as const), ahead: fc.oneof(fc.integer({ min: -100, max: 200 }), fc.integer({ min: -100, max: 4000 })) }),
);

describe('TimingWheel', () => {
  it('says an entry is due by a time exactly when a live entry of the list has a deadline up to it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000 }), fc.boolean(), fc.array(step, { maxLength: 200 }), (start, advancedFirst, steps) => {
        const wheel = new TimingWheel<Item>(SLOT_MS, SLOTS, (e) => e.live);
        const list: Item[] = [];
        let now = start;
        let order = 0;
        // Loaded state is added before the first advance (the clock then is unknown).
        if (advancedFirst) wheel.advance(now, []);
        for (const s of steps) {
          if (s.kind === 'add') {
            const item = { deadline: now + s.ahead, order: order++, live: true };
            wheel.add(item);
            list.push(item);
          } else if (s.kind === 'kill') {
            const live = list.filter((e) => e.live);
            if (live.length > 0) live[s.pick % live.length]!.live = false;
          } else if (s.kind === 'advance') {
            now += s.by;
            const due = wheel.advance(now, []);
            const expected = list.filter((e) => e.live && e.deadline <= now).sort((a, b) => a.deadline - b.deadline || a.order - b.order);
            expect(due).toEqual(expected);
            for (const e of due) e.live = false; // fired: the caller's entries are done
          } else {
            const time = now + s.ahead;
            const truth = list.some((e) => e.live && e.deadline <= time);
            expect(wheel.dueBy(time)).toBe(truth);
            expect(wheel.earliest() <= time).toBe(truth);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('answers dueBy without walking a turn of far deadlines: 100 000 entries five minutes ahead', () => {
    // The joiner's cached ends: deadlines a TTL ahead. The question is for the next seconds.
    const wheel = new TimingWheel<Item>(293, 1024, (e) => e.live);
    wheel.advance(1_000_000, []);
    for (let i = 0; i < 100_000; i++) wheel.add({ deadline: 1_000_000 + 300_000 + (i % 1000), order: i, live: true });
    expect(wheel.dueBy(1_003_000)).toBe(false);
    expect(wheel.dueBy(1_300_000)).toBe(true);
    expect(wheel.earliest()).toBe(1_300_000);
  });
});
