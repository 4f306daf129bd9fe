// The flow store killed (SIGKILL) right after each step of a seal, in a real child process on a
// real DuckDB, then opened again here: every record the test appended is stored exactly once. And
// what a power loss can leave (a sealed output cut short beside its intact sources, or a source
// cut short beside its whole output) is found and settled without losing or doubling a record.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FlowRecordSchema, Vantage, toBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createRegistry } from '@kappa/observability';
import type { Registry } from '@kappa/observability';
import { dyingWithParent } from '@kappa/testing';
import { pino } from 'pino';
import { FlowStore, sealSteps } from '../src/store/store.js';
import type { SealStep } from '../src/store/store.js';
import { storeCrashRecord, viewOf } from './fixtures.js';

/** 120 records in batches of 10, 50 a segment: segments 1 and 2 sealed, 3 hot. */
const RECORDS = 120;
const BATCH = 10;
const SEGMENT = 50;
const truth: FlowRecord[] = Array.from({ length: RECORDS }, (_, i) => storeCrashRecord(i));
const encoded = (r: FlowRecord) => Buffer.from(toBinary(FlowRecordSchema, r)).toString('hex');
const all = { sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 };

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), `kx-store-crash-${process.pid}-`));
  dirs.push(dir);
  return dir;
}

interface ChildRun {
  signal: NodeJS.Signals | null;
  code: number | null;
  /** The batches the child acked, by their first record. */
  acked: Set<number>;
  output: string;
}

/** store-seal-child.ts in its own process: appends `records`, SIGKILLs itself after `step` of `segment`'s seal. */
function runChild(dir: string, step: SealStep | 'none', records: number, segment?: number): Promise<ChildRun> {
  const script = join(import.meta.dirname, 'store-seal-child.ts');
  const [command, args] = dyingWithParent(process.execPath, ['--import', 'tsx', script, dir, step, String(records), String(BATCH), String(SEGMENT), ...(segment === undefined ? [] : [String(segment)])]);
  const child = spawn(command, args, { cwd: join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      const acked = new Set([...output.matchAll(/^acked (\d+) \d+$/gm)].map((m) => Number(m[1])));
      resolve({ signal, code, acked, output });
    });
  });
}

interface Reopened {
  store: FlowStore;
  registry: Registry;
  logged: { level: number; msg: string }[];
}

/**
 * The folder opened in this process, then every batch the child did not ack delivered again
 * (JetStream redelivers what was not acked, flagged as redelivered).
 */
async function reopen(dir: string, acked: Set<number>): Promise<Reopened> {
  const registry = createRegistry('test');
  const logged: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => logged.push(JSON.parse(line) as (typeof logged)[number]) });
  const store = new FlowStore({ dir, retentionMs: 100 * 365 * 24 * 3_600_000, maxBytes: 1024 ** 3, segmentRecords: SEGMENT, segmentAgeMs: 3_600_000, registry, logger });
  await store.open();
  for (let from = 0; from < RECORDS; from += BATCH) if (!acked.has(from)) await store.append(viewOf(truth.slice(from, from + BATCH)), 2n, true);
  await store.flush();
  return { store, registry, logged };
}

/** Every record of `expected` exactly once, byte for byte, in the raw flows and in the service map. */
async function expectExactlyOnce(store: FlowStore, expected: FlowRecord[]): Promise<void> {
  const flows = await store.flows(all);
  const byId = (a: FlowRecord, b: FlowRecord) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  expect(flows.map((f) => f.record.id).sort()).toEqual(expected.map((r) => r.id).sort());
  expect(
    flows
      .map((f) => f.record)
      .sort(byId)
      .map(encoded),
  ).toEqual([...expected].sort(byId).map(encoded));
  // The map reads sealed segments from their rollups: a rollup counted twice or missing shows here.
  const rows = await store.aggregate({ ...all, level: 'workload', side: 'pair', orderBy: 'bytes', limit: 0 });
  const counted = expected.filter((r) => r.vantage === Vantage.SRC || !r.joined);
  expect(rows.reduce((n, r) => n + r.records, 0n)).toBe(BigInt(counted.length));
  expect(rows.reduce((n, r) => n + r.bytes, 0n)).toBe(counted.reduce((n, r) => n + r.bytes, 0n));
}

async function damaged(registry: Registry): Promise<Record<string, number>> {
  const metric = await registry.getSingleMetric('kappa_exporter_store_segments_damaged_total')?.get();
  return Object.fromEntries((metric?.values ?? []).map((v) => [String(v.labels.cause), v.value]));
}

/**
 * Every segment but the hot one (the last) is sealed: exactly its Parquet index, rollup and
 * compressed records, no source or temporary file left over; segment 1 among them. (How many
 * segments there are depends on how far the child got before the kill.)
 */
function expectSettledFiles(dir: string): void {
  const files = readdirSync(dir).filter((f) => f.startsWith('seg-'));
  const names = [...new Set(files.map((f) => f.slice(0, 'seg-00000000'.length)))].sort();
  expect(names[0]).toBe('seg-00000001');
  for (const name of names) {
    const own = files.filter((f) => f.startsWith(`${name}.`)).sort();
    expect(own).toEqual(name === names.at(-1) ? [`${name}.csv`, `${name}.rec`] : [`${name}.parquet`, `${name}.recz`, `${name}.rollup.parquet`]);
  }
}

describe('flow store: a seal killed at any step', () => {
  it.each(sealSteps)(
    'drops nothing and doubles nothing when killed right after the seal step %s, and again while open() recovers',
    async (step) => {
      const dir = tempDir();
      const first = await runChild(dir, step, RECORDS, 1);
      expect(first.signal, first.output).toBe('SIGKILL');
      // A second process opens the folder and is killed after the same step of any seal open()
      // runs to recover (it seals the hot segment the first left, at least): a stop during recovery.
      const second = await runChild(dir, step, 0);
      expect(second.signal, second.output).toBe('SIGKILL');
      const { store, registry, logged } = await reopen(dir, first.acked);
      await expectExactlyOnce(store, truth);
      expect(await damaged(registry)).toEqual({});
      expect(logged.filter((l) => l.level >= 50)).toEqual([]);
      expectSettledFiles(dir);
      await store.close();
    },
    60_000,
  );
});

describe('flow store: what a power loss leaves during a seal', () => {
  /** A folder whose segment 1 was killed after its outputs were renamed and synced, sources still there. */
  async function killedBeforeRemoval(): Promise<{ dir: string; acked: Set<number> }> {
    const dir = tempDir();
    const run = await runChild(dir, 'folder-synced', RECORDS, 1);
    expect(run.signal, run.output).toBe('SIGKILL');
    for (const ext of ['csv', 'rec', 'parquet', 'rollup.parquet', 'recz']) expect(existsSync(join(dir, `seg-00000001.${ext}`))).toBe(true);
    return { dir, acked: run.acked };
  }
  const cut = (dir: string, file: string, fraction: number) => truncateSync(join(dir, file), Math.floor(statSync(join(dir, file)).size * fraction));

  it.each([
    ['an empty index', 'seg-00000001.parquet', 0, /seg-00000001\.parquet is unreadable beside its CSV/],
    ['an index cut in half', 'seg-00000001.parquet', 0.5, /seg-00000001\.parquet is unreadable beside its CSV/],
    ['a rollup cut in half', 'seg-00000001.rollup.parquet', 0.5, /seg-00000001\.rollup\.parquet is unreadable beside its CSV/],
    ['compressed record bytes cut in half', 'seg-00000001.recz', 0.5, undefined],
    // The sources were never synced: a power loss may cut them while the synced outputs are whole.
    ['the CSV cut in half beside a whole index', 'seg-00000001.csv', 0.5, /removed the last index line/],
    ['the .rec cut in half beside a whole .recz', 'seg-00000001.rec', 0.5, undefined],
  ])('%s: found at open and settled from the whole copy, every record once', async (_what, file, fraction, warning) => {
    const { dir, acked } = await killedBeforeRemoval();
    cut(dir, file, fraction);
    const { store, registry, logged } = await reopen(dir, acked);
    await expectExactlyOnce(store, truth);
    expect(await damaged(registry)).toEqual({});
    if (warning) expect(logged.map((l) => l.msg)).toContainEqual(expect.stringMatching(warning) as unknown);
    expectSettledFiles(dir);
    await store.close();
  });

  it('an index cut short after its CSV was removed is counted, logged and set aside; every other record is still there once', async () => {
    const dir = tempDir();
    const run = await runChild(dir, 'rec-removed', RECORDS, 1);
    expect(run.signal, run.output).toBe('SIGKILL');
    // What an older build's unsynced seal could leave after a power loss: the CSV gone, the index cut.
    cut(dir, 'seg-00000001.parquet', 0.5);
    const { store, registry, logged } = await reopen(dir, run.acked);
    // Segment 1's records were acked and are not delivered again: lost, and said so.
    await expectExactlyOnce(store, truth.slice(SEGMENT));
    expect(await damaged(registry)).toEqual({ index_unreadable: 1 });
    expect(logged.filter((l) => l.level >= 50).map((l) => l.msg)).toEqual([expect.stringMatching(/^flow store: seg-00000001\.parquet cannot be read and its CSV is gone.*its files are in .*damaged: check the disk/) as unknown]);
    expect(readdirSync(join(dir, 'damaged')).sort()).toEqual(['seg-00000001.parquet', 'seg-00000001.recz', 'seg-00000001.rollup.parquet']);
    await store.close();
  });
});
