// The kept answers' table on its own: what a batch's first pass noted stays readable through its
// second pass (the arena grows, nothing starts over mid-batch), and spans of event time hold to
// the nanosecond, clamped times included. The tagger's differential test covers the rest.
import { describe, expect, it } from 'vitest';
import { Answer, hashKey, highOf, KeptAnswers, lowOf } from '../src/kept-answers.js';

const text = (s: string) => new TextEncoder().encode(s);

function answer(field: Uint8Array, fromNs: bigint, untilNs: bigint, ports: [number, Uint8Array][] = []): Answer {
  const made = new Answer();
  made.version = 7;
  made.fromNs = fromNs;
  made.untilNs = untilNs;
  made.field = field;
  made.hit = true;
  for (const [port, portField] of ports) {
    made.ports.push(port);
    made.portFields.push(portField);
  }
  return made;
}

function fieldOf(kept: KeptAnswers, entry: number, port: number): Uint8Array {
  const start = kept.fieldOn(entry, port);
  return kept.bytes.slice(start, kept.fieldEnd);
}

const at = (ns: bigint): [number, number] => [highOf(ns), lowOf(ns)];

describe('kept answers', () => {
  it('keeps the ranges a batch noted readable while the arena grows, and starts over only when the next batch starts', () => {
    const kept = new KeptAnswers(4, 1 << 20);
    kept.startBatch();
    const noted: [number, number, Uint8Array][] = [];
    // 40 answers of 40 KiB: past the entry bound and the byte bound within one batch.
    for (let i = 0; i < 40; i++) {
      const field = new Uint8Array(40 * 1024).fill(i + 1);
      const key = text(`10.0.0.${i}`);
      const entry = kept.keep(kept.find(key, 0, key.length), key, 0, key.length, new Uint8Array(0), 0, 0, answer(field, 0n, 1n << 64n));
      noted.push([kept.fieldOn(entry, 80), kept.fieldEnd, field]);
    }
    for (const [start, end, field] of noted) expect(Buffer.compare(kept.bytes.subarray(start, end), field)).toBe(0);
    expect(kept.find(text('10.0.0.3'), 0, 8)).toBeGreaterThanOrEqual(0);
    kept.startBatch();
    expect(kept.size).toBe(0);
    expect(kept.find(text('10.0.0.3'), 0, 8)).toBe(-1);
  });

  it('answers per backend port and on every other port, with the node it was made for', () => {
    const kept = new KeptAnswers();
    kept.startBatch();
    const key = text('c'.repeat(64));
    const node = text('node-7');
    const entry = kept.keep(-1, key, 0, key.length, node, 0, node.length, answer(text('any-port'), 0n, 10n, [[8080, text('on-8080')], [9090, text('on-9090')]]));
    expect(kept.find(key, 0, key.length)).toBe(entry);
    expect(kept.madeFor(entry, node, 0, node.length)).toBe(true);
    expect(kept.madeFor(entry, text('node-8'), 0, 6)).toBe(false);
    expect(new TextDecoder().decode(fieldOf(kept, entry, 8080))).toBe('on-8080');
    expect(new TextDecoder().decode(fieldOf(kept, entry, 9090))).toBe('on-9090');
    expect(new TextDecoder().decode(fieldOf(kept, entry, 443))).toBe('any-port');
    expect(kept.hit(entry)).toBe(true);
    expect(kept.pending(entry)).toBe(false);
  });

  it('holds in [from, until) to the nanosecond at its version only, and never for a time past int64', () => {
    const kept = new KeptAnswers();
    kept.startBatch();
    const key = text('10.1.2.3');
    const from = 1_764_000_000_000_000_000n;
    const until = from + (1n << 32n) + 5n;
    const entry = kept.keep(-1, key, 0, key.length, new Uint8Array(0), 0, 0, answer(text('x'), from, until));
    expect(kept.holds(entry, 7, ...at(from - 1n))).toBe(false);
    expect(kept.holds(entry, 7, ...at(from))).toBe(true);
    expect(kept.holds(entry, 8, ...at(from))).toBe(false);
    expect(kept.holds(entry, 7, ...at(until - 1n))).toBe(true);
    expect(kept.holds(entry, 7, ...at(until))).toBe(false);
    // All time (the resolver's ±2^64) is clamped to int64: a uint64 time past it resolves again.
    const always = kept.keep(entry, key, 0, key.length, new Uint8Array(0), 0, 0, answer(text('x'), -(1n << 64n), 1n << 64n));
    expect(kept.holds(always, 7, ...at(0n))).toBe(true);
    expect(kept.holds(always, 7, ...at((1n << 63n) - 2n))).toBe(true);
    expect(kept.holds(always, 7, ...at((1n << 64n) - 1n))).toBe(false);
    kept.forget(always);
    expect(kept.holds(always, 7, ...at(0n))).toBe(false);
  });

  it('tells keys apart that differ in one byte anywhere, container ids of one prefix included', () => {
    const kept = new KeptAnswers();
    kept.startBatch();
    const ids = Array.from({ length: 2000 }, (_, i) => text('0' + i.toString(16).padStart(63, '0')));
    for (const [i, id] of ids.entries()) kept.keep(kept.find(id, 0, 64), id, 0, 64, new Uint8Array(0), 0, 0, answer(text(`pod-${i}`), 0n, 1n));
    for (const [i, id] of ids.entries()) expect(new TextDecoder().decode(fieldOf(kept, kept.find(id, 0, 64), 0))).toBe(`pod-${i}`);
    expect(new Set(ids.map((id) => hashKey(id, 0, 64))).size).toBeGreaterThan(1990);
  });
});
