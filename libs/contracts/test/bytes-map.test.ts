// The byte-keyed map against a Map of the same keys as text: every get answers what the Map
// answers, whatever the keys (equal hashes included), through growth and clears.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BytesMap, hashBytes } from '../src/index.js';

/** Keys from a small alphabet, so that many share prefixes, lengths and hash slots. */
const key = fc.uint8Array({ minLength: 0, maxLength: 12, size: 'max' }).map((bytes) => bytes.map((b) => b % 4));
const operation = fc.oneof(
  { weight: 100, arbitrary: fc.record({ op: fc.constant('set' as const), key, value: fc.nat() }) },
  { weight: 100, arbitrary: fc.record({ op: fc.constant('get' as const), key }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('clear' as const) }) },
);

describe('BytesMap', () => {
  it('answers every lookup as a Map of the same keys does, through growth and clears', () => {
    fc.assert(
      fc.property(fc.array(operation, { minLength: 200, maxLength: 1000, size: 'max' }), fc.nat(16), (operations, pad) => {
        const map = new BytesMap<number>();
        const reference = new Map<string, number>();
        // Keys are read from inside a larger buffer, as from a record.
        const buffer = new Uint8Array(pad + 12 + 16).fill(7);
        for (const o of operations) {
          if (o.op === 'clear') {
            map.clear();
            reference.clear();
            continue;
          }
          buffer.set(o.key, pad);
          const text = o.key.join(',');
          const got = map.get(buffer, pad, pad + o.key.length);
          expect(got).toBe(reference.get(text));
          if (o.op === 'set' && got === undefined) {
            map.set(buffer, pad, pad + o.key.length, o.value);
            reference.set(text, o.value);
          }
          expect(map.size).toBe(reference.size);
        }
        for (const [text, value] of reference) {
          const bytes = Uint8Array.from(text === '' ? [] : text.split(',').map(Number));
          expect(map.get(bytes, 0, bytes.length)).toBe(value);
        }
      }),
      { numRuns: 100 },
    );
  });

  it('tells apart keys with the same hash by their bytes', () => {
    // Two keys whose 30-bit FNV-1a agree: the birthday bound finds some among 8-byte keys.
    const seen = new Map<number, Uint8Array>();
    let pair: [Uint8Array, Uint8Array] | undefined;
    for (let i = 0; !pair; i++) {
      const k = new Uint8Array(new Float64Array([i * 1.000001]).buffer);
      const h = hashBytes(k, 0, k.length);
      const other = seen.get(h);
      if (other) pair = [other, k];
      else seen.set(h, k);
    }
    const [a, b] = pair!;
    const map = new BytesMap<string>();
    map.set(a, 0, a.length, 'a');
    expect(map.get(b, 0, b.length)).toBeUndefined();
    map.set(b, 0, b.length, 'b');
    expect([map.get(a, 0, a.length), map.get(b, 0, b.length)]).toEqual(['a', 'b']);
  });
});
