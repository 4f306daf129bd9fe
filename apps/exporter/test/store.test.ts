// The flow store on a real DuckDB in a temporary folder: raw flows by flow time and filter, the
// aggregates the service map and `kappa top` read, retention by age and by size, and a restart
// that finds what a crash left in the hot segment.
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FlowBatchView, FlowRecordSchema, IpProtocol, Vantage, encodeFlowBatch, newFlowBatch, newFlowRecord, toBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { compilePredicate } from '@kappa/filter';
import { createRegistry } from '@kappa/observability';
import { pino } from 'pino';
import { FlowStore } from '../src/store/store.js';
import type { FlowStoreOptions } from '../src/store/store.js';
import { fillDiskPartWay } from './fixtures.js';

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function newStore(overrides: Partial<FlowStoreOptions> = {}): FlowStore {
  const dir = mkdtempSync(join(tmpdir(), `kx-store-${process.pid}-`));
  dirs.push(dir);
  return new FlowStore({ dir, retentionMs: 24 * 3_600_000, maxBytes: 1024 ** 3, segmentRecords: 50, segmentAgeMs: 3_600_000, ...overrides });
}

const baseNs = (BigInt(Date.now()) - 3_600_000n) * 1_000_000n;
const SECOND = 1_000_000_000n;

function record(i: number): FlowRecord {
  return newFlowRecord({
    id: `r${i}`,
    node: `node-${i % 3}`,
    vantage: i % 4 === 1 ? Vantage.DST : Vantage.SRC,
    protocol: i % 5 === 0 ? IpProtocol.UDP : IpProtocol.TCP,
    startNs: baseNs + BigInt(i) * SECOND - 5n * SECOND,
    endNs: baseNs + BigInt(i) * SECOND,
    src: {
      ip: i % 6 === 5 ? `2001:db8::${i.toString(16)}` : `10.0.${i % 4}.${i % 250}`,
      port: 40000 + i,
      process: { name: i % 2 ? 'curl' : 'python3' },
      kube: i % 9 === 8 ? {} : { objectNamespace: i % 2 ? 'shop' : 'billing', objectName: `client-${i % 4}-x`, objectType: 'pod', workloadName: `client-${i % 4}`, labels: { app: `client-${i % 4}` } },
    },
    dst: {
      ip: `10.1.0.${i % 6}`,
      port: [443, 80, 6379][i % 3]!,
      process: { name: i % 3 === 2 ? 'redis-server' : 'nginx' },
      kube: { objectNamespace: 'backend', objectName: `server-${i % 6}`, objectType: 'pod', workloadName: i % 3 === 2 ? 'redis' : 'web' },
    },
    bytes: BigInt(1000 + i),
    reverseBytes: BigInt(10 * i),
    packets: BigInt(1 + (i % 7)),
    reversePackets: BigInt(i % 5),
    tcp: { srttUs: i % 10 === 0 ? 0 : 100 + i, retransmits: i % 4 },
    joined: i % 8 !== 1,
    // Drops on some records of either vantage (a responder's record of a joined conversation too).
    ...(i % 11 === 3 ? { drops: { packets: BigInt(1 + (i % 4)), bytes: BigInt(60 * (1 + (i % 4))), reason: i % 2 ? 'NETFILTER_DROP' : 'NO_SOCKET', reasonPackets: 1n } } : {}),
  });
}

const records = Array.from({ length: 300 }, (_, i) => record(i));
/** A batch as the exporter receives it: the encoded FlowBatch, checked and indexed. */
const view = (batch: FlowRecord[]) => new FlowBatchView().parse(encodeFlowBatch(newFlowBatch({ batchId: 'b', records: batch })));
const ids = (flows: { record: FlowRecord }[]) => flows.map((f) => f.record.id);
/** kappa_exporter_store_rows_unreadable_total by cause. */
async function unreadable(registry: ReturnType<typeof createRegistry>): Promise<Record<string, number>> {
  const metric = await registry.getSingleMetric('kappa_exporter_store_rows_unreadable_total')?.get();
  return Object.fromEntries((metric?.values ?? []).map((v) => [String(v.labels.cause), v.value]));
}

describe('flow store', () => {
  const store = newStore();
  const ready = (async () => {
    await store.open();
    // Out of time order across batches, as records of many nodes arrive.
    for (let b = 0; b < 300; b += 40) await store.append(view(records.slice(b, b + 40).reverse()), BigInt(Date.now()) * 1_000_000n);
  })();
  afterAll(() => store.close());

  it('returns every record once, oldest first, across sealed segments and the hot one', async () => {
    await ready;
    expect(store.stats().segments).toBeGreaterThan(3);
    expect(ids(await store.flows({ sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 }))).toEqual(ids(records.map((record) => ({ record }))));
  });

  it.each([
    'src.namespace == "shop" and dst.port == 443 and not dst.workload == "redis"',
    'namespace == billing or ip == 10.1.0.3',
    'src.ip == 10.0.2.0/24 or src.ip == 2001:db8::/64',
    'src.namespace == ""',
    'protocol == udp and vantage == dst',
    'rtt >= 250us and retransmits > 1',
    'joined == false',
    'src.label == app=client-3 and dst.process in (nginx)',
    'src.pod == client-1-* and node != node-2',
  ])('selects exactly what the record predicate selects: %s', async (filter) => {
    await ready;
    const want = records.filter(compilePredicate(filter)).map((r) => r.id);
    expect(want.length).toBeGreaterThan(0);
    expect(want.length).toBeLessThan(records.length);
    expect(ids(await store.flows({ sinceNs: 0n, untilNs: 0n, filter, last: 0, limit: 0 }))).toEqual(want);
  });

  it('narrows by flow time: since, until, last and limit', async () => {
    await ready;
    const at = (i: number) => baseNs + BigInt(i) * SECOND;
    const range = await store.flows({ sinceNs: at(100), untilNs: at(150), filter: '', last: 0, limit: 0 });
    expect(ids(range)).toEqual(records.slice(100, 150).map((r) => r.id));
    const last = await store.flows({ sinceNs: 0n, untilNs: at(200), filter: 'protocol == tcp', last: 5, limit: 0 });
    expect(ids(last)).toEqual(records.slice(0, 200).filter((r) => r.protocol === IpProtocol.TCP).slice(-5).map((r) => r.id));
    const first = await store.flows({ sinceNs: at(10), untilNs: 0n, filter: '', last: 0, limit: 3 });
    expect(ids(first)).toEqual(['r10', 'r11', 'r12']);
  });

  it('--last N and a limit read segments newest (oldest) first and still return exactly the right flows', async () => {
    await ready;
    const byTime = [...records].sort((a, b) => (a.endNs < b.endNs ? -1 : 1));
    for (const n of [1, 7, 33, 120, 299, 400]) {
      const filter = n % 2 ? '' : 'dst.port != 80';
      const matching = byTime.filter(compilePredicate(filter)).map((r) => r.id);
      expect(ids(await store.flows({ sinceNs: 0n, untilNs: 0n, filter, last: n, limit: 0 })), `last ${n}`).toEqual(matching.slice(-n));
      expect(ids(await store.flows({ sinceNs: 0n, untilNs: 0n, filter, last: 0, limit: n })), `limit ${n}`).toEqual(matching.slice(0, n));
    }
  });

  it('--last N merges segments whose flow times interleave', async () => {
    const interleaved = newStore({ segmentRecords: 20 });
    await interleaved.open();
    // Two segments covering the same minute: even seconds, then odd seconds (two nodes' batches).
    await interleaved.append(view(records.slice(0, 40).filter((_, i) => i % 2 === 0)), 1n);
    await interleaved.append(view(records.slice(0, 40).filter((_, i) => i % 2 === 1)), 1n);
    expect(ids(await interleaved.flows({ sinceNs: 0n, untilNs: 0n, filter: '', last: 5, limit: 0 }))).toEqual(['r35', 'r36', 'r37', 'r38', 'r39']);
    expect(ids(await interleaved.flows({ sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 4 }))).toEqual(['r0', 'r1', 'r2', 'r3']);
    await interleaved.close();
  });

  it('aggregates workload pairs counting each conversation once, with both directions, and every drop of either vantage', async () => {
    await ready;
    const rows = await store.aggregate({ sinceNs: 0n, untilNs: 0n, filter: '', level: 'workload', side: 'pair', orderBy: 'bytes', limit: 0 });
    // The oracle: the records themselves, summed by hand. Drops are summed over both vantages
    // (each dropped packet is on the one record of the vantage that dropped it).
    const want = new Map<string, { bytes: bigint; reverse: bigint; records: number; retrans: bigint; dropped: bigint; droppedBytes: bigint }>();
    for (const r of records) {
      const counted = r.vantage === Vantage.SRC || !r.joined;
      if (!counted && !r.drops) continue;
      const src = r.src!.kube!.objectNamespace ? `${r.src!.kube!.objectNamespace}/${r.src!.kube!.workloadName}` : '(external)';
      const key = `${src} -> backend/${r.dst!.kube!.workloadName}`;
      const w = want.get(key) ?? { bytes: 0n, reverse: 0n, records: 0, retrans: 0n, dropped: 0n, droppedBytes: 0n };
      const c = counted ? 1n : 0n;
      want.set(key, {
        bytes: w.bytes + c * r.bytes,
        reverse: w.reverse + c * r.reverseBytes,
        records: w.records + Number(c),
        retrans: w.retrans + c * BigInt(r.tcp!.retransmits),
        dropped: w.dropped + (r.drops?.packets ?? 0n),
        droppedBytes: w.droppedBytes + (r.drops?.bytes ?? 0n),
      });
    }
    expect([...want.values()].some((w) => w.dropped > 0n)).toBe(true);
    expect(records.some((r) => r.drops && r.vantage === Vantage.DST && r.joined)).toBe(true);
    const got = new Map(
      rows.map((row) => [
        `${row.src.external ? '(external)' : `${row.src.namespace}/${row.src.name}`} -> ${row.dst.namespace}/${row.dst.name}`,
        { bytes: row.bytes, reverse: row.reverseBytes, records: Number(row.records), retrans: row.retransmits, dropped: row.droppedPackets, droppedBytes: row.droppedBytes },
      ]),
    );
    expect(got).toEqual(want);
    // Largest first.
    const totals = rows.map((r) => r.bytes + r.reverseBytes);
    expect([...totals].sort((a, b) => (a < b ? 1 : a > b ? -1 : 0))).toEqual(totals);
  });

  it('an unfiltered map read from the segments\' rollups equals the same map from raw rows', async () => {
    await ready;
    for (const level of ['workload', 'namespace'] as const) {
      for (const side of ['pair', 'src', 'dst'] as const) {
        const q = { sinceNs: 0n, untilNs: 0n, level, side, orderBy: 'bytes' as const, limit: 0 };
        // A filter every record passes forces the raw path.
        expect(await store.aggregate({ ...q, filter: '' }), `${level} ${side}`).toEqual(await store.aggregate({ ...q, filter: 'bytes >= 0' }));
      }
    }
    // A range that cuts through segments mixes rollups and raw rows, and still adds up.
    const at = (i: number) => baseNs + BigInt(i) * SECOND;
    const q = { sinceNs: at(37), untilNs: at(263), level: 'workload' as const, side: 'pair' as const, orderBy: 'packets' as const, limit: 0 };
    expect(await store.aggregate({ ...q, filter: '' })).toEqual(await store.aggregate({ ...q, filter: 'bytes >= 0' }));
  });

  it('a map filtered on namespaces, workloads, the destination port or the protocol read from the rollups equals the same map from raw rows', async () => {
    await ready;
    const at = (i: number) => baseNs + BigInt(i) * SECOND;
    const filters = ['dst.port == 443', 'namespace == shop and protocol == tcp', 'not dst.workload == redis', 'src.namespace == "" or dst.port in (80, 6379)', 'src.workload == client-* and not protocol == udp'];
    for (const filter of filters) {
      for (const range of [{ sinceNs: 0n, untilNs: 0n }, { sinceNs: at(37), untilNs: at(263) }]) {
        for (const [level, side] of [['workload', 'pair'], ['namespace', 'src'], ['workload', 'dst']] as const) {
          const q = { ...range, level, side, orderBy: 'bytes' as const, limit: 0 };
          const rolled = await store.aggregate({ ...q, filter });
          // "and bytes >= 0" reads a column the rollups do not keep: the raw path, the oracle.
          expect(rolled, `${filter} ${level} ${side}`).toEqual(await store.aggregate({ ...q, filter: `(${filter}) and bytes >= 0` }));
          expect(rolled.length, filter).toBeGreaterThan(0);
        }
      }
    }
  });

  it('aggregates one side at any level, ranked by the chosen metric', async () => {
    await ready;
    const byNs = await store.aggregate({ sinceNs: 0n, untilNs: 0n, filter: 'dst.workload == web', level: 'namespace', side: 'src', orderBy: 'packets', limit: 2 });
    expect(byNs).toHaveLength(2);
    const counted = records.filter((r) => (r.vantage === Vantage.SRC || !r.joined) && r.dst!.kube!.workloadName === 'web');
    const packets = (ns: string) => counted.filter((r) => (r.src!.kube!.objectNamespace ?? '') === ns).reduce((s, r) => s + r.packets, 0n);
    for (const row of byNs) expect(row.packets).toBe(packets(row.src.external ? '' : row.src.namespace));
    const ips = await store.aggregate({ sinceNs: 0n, untilNs: 0n, filter: '', level: 'ip', side: 'dst', orderBy: 'rtt', limit: 0 });
    expect(ips.map((r) => r.dst.name).sort()).toEqual(['10.1.0.0', '10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.4', '10.1.0.5']);
    expect(ips.map((r) => r.rttAvgUs)).toEqual([...ips.map((r) => r.rttAvgUs)].sort((a, b) => b - a));
  });
});

describe('flow store retention and recovery', () => {
  const folderBytes = (dir: string) => readdirSync(dir).reduce((s, f) => s + statSync(join(dir, f)).size, 0);

  it('drops segments older than the retention and keeps the folder under its size bound', async () => {
    const store = newStore({ segmentRecords: 20, maxBytes: 40_000, retentionMs: 30 * 60_000 });
    await store.open();
    const now = BigInt(Date.now()) * 1_000_000n;
    // 100 records an hour old (beyond the 30 min retention), then 400 fresh ones.
    const old = records.slice(0, 100).map((r) => ({ ...r, endNs: now - 3_600n * SECOND }) as FlowRecord);
    for (let b = 0; b < old.length; b += 20) await store.append(view(old.slice(b, b + 20)), now);
    // Retention drops sealed segments: once the seals running beside the appends are done.
    await store.flush();
    expect(store.stats().expiredRecords).toBe(100);
    const fresh = Array.from({ length: 400 }, (_, i) => ({ ...record(i), id: `f${i}`, endNs: now - BigInt(400 - i) * 1_000_000n }) as FlowRecord);
    for (let b = 0; b < fresh.length; b += 20) await store.append(view(fresh.slice(b, b + 20)), now);
    await store.flush();
    const dir = (store as unknown as { options: FlowStoreOptions }).options.dir;
    expect(folderBytes(dir)).toBeLessThanOrEqual(40_000);
    const kept = await store.flows({ sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 });
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.length).toBeLessThan(400);
    // What is kept is the newest, without holes.
    expect(ids(kept)).toEqual(fresh.slice(-kept.length).map((r) => r.id));
    expect(store.stats().expiredRecords).toBe(100 + 400 - kept.length);
    await store.close();
  });

  it('a reopened store seals the hot segment a stop left and serves it', async () => {
    const store = newStore({ segmentRecords: 1000 });
    await store.open();
    await store.append(view(records.slice(0, 30)), 1n);
    await store.close();
    const dir = (store as unknown as { options: FlowStoreOptions }).options.dir;
    expect(readdirSync(dir).some((f) => f.endsWith('.csv'))).toBe(true);
    const again = new FlowStore({ ...(store as unknown as { options: FlowStoreOptions }).options });
    await again.open();
    expect(readdirSync(dir).filter((f) => /^seg-\d+\.parquet$/.test(f))).toHaveLength(1);
    expect(readdirSync(dir).filter((f) => f.endsWith('.rollup.parquet'))).toHaveLength(1);
    expect(ids(await again.flows({ sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 }))).toEqual(records.slice(0, 30).map((r) => r.id));
    await again.append(view(records.slice(30, 40)), 1n);
    expect(await again.flows({ sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 })).toHaveLength(40);
    await again.close();
  });
});

describe('flow store: sealing beside the appends, and redelivered batches', () => {
  const dirOf = (store: FlowStore) => (store as unknown as { options: FlowStoreOptions }).options.dir;
  const parquets = (dir: string) => readdirSync(dir).filter((f) => /^seg-\d+\.parquet$/.test(f)).length;
  const all = { sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 };

  it('an append that fills a segment returns before the segment is sealed; queries see its records while and after it seals', async () => {
    const store = newStore({ segmentRecords: 50 });
    await store.open();
    await store.append(view(records.slice(0, 60)), 1n);
    // The append returned with the full segment still waiting for DuckDB (no Parquet file yet).
    expect(store.stats().pendingSeals).toBe(1);
    expect(parquets(dirOf(store))).toBe(0);
    // Ingest goes on meanwhile, and a query reads the sealing segment from its CSV.
    const during = store.flows(all);
    await store.append(view(records.slice(60, 80)), 1n);
    expect(ids(await during).slice(0, 60)).toEqual(records.slice(0, 60).map((r) => r.id));
    await store.flush();
    expect(store.stats().pendingSeals).toBe(0);
    expect(parquets(dirOf(store))).toBe(1);
    expect(readdirSync(dirOf(store)).filter((f) => f.endsWith('.csv'))).toHaveLength(1);
    expect(ids(await store.flows(all))).toEqual(records.slice(0, 80).map((r) => r.id));
    await store.close();
  });

  it('with pendingSeals 0 the append that fills a segment waits for its seal (the old behaviour); with 1, appends wait only behind a second full segment', async () => {
    const inline = newStore({ segmentRecords: 50, pendingSeals: 0 });
    await inline.open();
    await inline.append(view(records.slice(0, 60)), 1n);
    expect(inline.stats().pendingSeals).toBe(0);
    expect(parquets(dirOf(inline))).toBe(1);
    await inline.close();

    const bounded = newStore({ segmentRecords: 20, pendingSeals: 1 });
    await bounded.open();
    for (let b = 0; b < 200; b += 20) {
      await bounded.append(view(records.slice(b, b + 20)), 1n);
      expect(bounded.stats().pendingSeals).toBeLessThanOrEqual(1);
    }
    await bounded.flush();
    expect(ids(await bounded.flows(all))).toEqual(records.slice(0, 200).map((r) => r.id));
    await bounded.close();
  });

  it('a batch redelivered after a crash stores only the records it did not store before', async () => {
    const crashed = newStore({ segmentRecords: 1000 });
    await crashed.open();
    await crashed.append(view(records.slice(0, 30)), 1n);
    // The process dies here: the batch was stored, its ack never reached JetStream. Nothing is
    // closed; a new process opens the same folder.
    const restarted = new FlowStore({ ...(crashed as unknown as { options: FlowStoreOptions }).options });
    await restarted.open();
    // JetStream delivers the batch again, then one that overlaps it (records 20..39).
    await restarted.append(view(records.slice(0, 30)), 2n, true);
    await restarted.append(view(records.slice(20, 40)), 2n, true);
    const stored = ids(await restarted.flows(all));
    expect(stored).toHaveLength(40);
    expect([...stored].sort()).toEqual(records.slice(0, 40).map((r) => r.id).sort());
    expect(restarted.stats().duplicateRecords).toBe(40);
    // The service map counts them once too.
    const bytes = (await restarted.aggregate({ ...all, level: 'workload', side: 'pair', orderBy: 'bytes' })).reduce((sum, row) => sum + row.bytes, 0n);
    expect(bytes).toBe(records.slice(0, 40).filter((r) => r.vantage === Vantage.SRC || !r.joined).reduce((sum, r) => sum + r.bytes, 0n));
    await restarted.close();
    await crashed.close();
  });
});

describe('flow store: sealed record bytes compressed in blocks', () => {
  const dirOf = (store: FlowStore) => (store as unknown as { options: FlowStoreOptions }).options.dir;
  const all = { sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 };
  // Records of very different sizes (labels up to ~1.5 KiB) over several 64 KiB blocks, so many
  // records straddle two blocks.
  const big = Array.from({ length: 900 }, (_, i) => {
    const r = record(i % 300);
    return { ...r, id: `big-${i}`, endNs: baseNs + BigInt(i) * 1_000_000n, src: { ...r.src!, kube: { ...r.src!.kube!, labels: { note: 'x'.repeat((i * 37) % 1500), i: String(i) } } } } as FlowRecord;
  });
  const encoded = (r: FlowRecord) => Buffer.from(toBinary(FlowRecordSchema, r)).toString('hex');

  it('a sealed segment keeps its records in .recz, not .rec, and every record reads back byte for byte', async () => {
    const store = newStore({ segmentRecords: 400 });
    await store.open();
    for (let b = 0; b < big.length; b += 100) await store.append(view(big.slice(b, b + 100)), 1n);
    await store.flush();
    const files = readdirSync(dirOf(store));
    // Two sealed segments (compressed) and the hot one (plain).
    expect(files.filter((f) => f.endsWith('.recz')).sort()).toEqual(['seg-00000001.recz', 'seg-00000002.recz']);
    expect(files.filter((f) => f.endsWith('.rec'))).toEqual(['seg-00000003.rec']);
    const rawBytes = big.slice(0, 800).reduce((sum, r) => sum + toBinary(FlowRecordSchema, r).length, 0);
    const packed = statSync(join(dirOf(store), 'seg-00000001.recz')).size + statSync(join(dirOf(store), 'seg-00000002.recz')).size;
    expect(rawBytes).toBeGreaterThan(3 * 64 * 1024);
    expect(packed).toBeLessThan(rawBytes / 3);
    const flows = await store.flows(all);
    expect(flows.map((f) => encoded(f.record))).toEqual(big.map(encoded));
    // --last and a filter read single records out of the blocks too.
    const last = await store.flows({ ...all, filter: 'dst.port == 443', last: 7 });
    expect(last.map((f) => encoded(f.record))).toEqual(big.filter((r) => r.dst!.port === 443).slice(-7).map(encoded));
    await store.close();
  });

  it('a segment sealed by an older build (plain .rec) is compressed at open and still read exactly', async () => {
    const store = newStore({ segmentRecords: 400 });
    await store.open();
    for (let b = 0; b < 500; b += 100) await store.append(view(big.slice(b, b + 100)), 1n);
    await store.flush();
    await store.close();
    const dir = dirOf(store);
    // As an older build left it: the sealed segment's bytes uncompressed, no .recz.
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 'seg-00000001.rec'), Buffer.concat(big.slice(0, 400).map((r) => toBinary(FlowRecordSchema, r))));
    rmSync(join(dir, 'seg-00000001.recz'));
    const again = new FlowStore({ ...(store as unknown as { options: FlowStoreOptions }).options });
    await again.open();
    expect(readdirSync(dir).filter((f) => /^seg-0000000[12]\.recz?$/.test(f)).sort()).toEqual(['seg-00000001.recz', 'seg-00000002.recz']);
    expect((await again.flows(all)).map((f) => encoded(f.record))).toEqual(big.slice(0, 500).map(encoded));
    await again.close();
  });
});

describe('flow store: index lines DuckDB reads back as written', () => {
  const dirOf = (store: FlowStore) => (store as unknown as { options: FlowStoreOptions }).options.dir;
  const all = { sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 };
  // What CSV, DuckDB's read_csv options (nullstr \N, quotes, max_line_size) or its UTF-8 check
  // make special, each as a whole value and inside text.
  const awkward = [
    'a,b', 'say "hi"', '"', ',', 'line\nbreak', 'cr\rhere', '\r\n', 'back\\slash\\', '\\', '\\N', '\\N\\N', 'nul\u0000byte', '\u0000',
    ' padded ', 'b\ufeffom', '#hash', 'tab\there', 'ünïcödé-名前', '😀', '\u0001\u001f\u007f', '\u2028\u2029', '"'.repeat(1_100_000),
  ];
  // Byte sequences that are not UTF-8 (a lone continuation, a cut sequence, a surrogate, an
  // overlong form, beyond U+10FFFF), and what TextDecoder makes of each: U+FFFD per maximal subpart.
  const invalid = [[0xff], [0xc3], [0x80, 0x80], [0xed, 0xa0, 0x80], [0xc0, 0x80], [0xe0, 0x80, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0xf0, 0x9f, 0x98], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xc3, 0x28]];
  const end = (i: number, text: string) => ({ ip: `10.9.0.${i}`, port: 1000 + i, process: { name: text }, kube: { objectNamespace: i < awkward.length ? 'valid' : 'invalid', objectName: `pod-${i}`, objectType: 'pod', workloadName: text, node: text, labels: { k: text } } });
  const placeholder = (i: number, n: number) => `bad-${i}-${'Z'.repeat(n)}-end`;
  const texts = [...awkward, ...invalid.map((bytes, k) => `bad-${awkward.length + k}-${new TextDecoder().decode(Uint8Array.from(bytes))}-end`)];
  const flowsOf = () =>
    texts.map((text, i) =>
      newFlowRecord({
        id: `w${i}`,
        node: i < awkward.length ? text : placeholder(i, invalid[i - awkward.length]!.length),
        startNs: baseNs + BigInt(i) * SECOND - SECOND,
        endNs: baseNs + BigInt(i) * SECOND,
        src: end(i, i < awkward.length ? text : placeholder(i, invalid[i - awkward.length]!.length)),
        dst: { ip: '10.9.9.9', port: 443 },
        bytes: 100n,
        packets: 1n,
        protocol: IpProtocol.TCP,
        vantage: Vantage.SRC,
      }),
    );
  /**
   * The batch as the exporter holds it, with the placeholders' bytes then overwritten by the
   * invalid sequences (what a stage that does not validate its strings would send).
   */
  function awkwardView(): FlowBatchView {
    const v = view(flowsOf());
    const bytes = Buffer.from(v.bytes.buffer, v.bytes.byteOffset, v.bytes.byteLength);
    invalid.forEach((sequence, k) => {
      const i = awkward.length + k;
      const marker = Buffer.from(`bad-${i}-`);
      for (let at = bytes.indexOf(marker); at >= 0; at = bytes.indexOf(marker, at + 1)) bytes.set(sequence, at + marker.length);
    });
    return v;
  }
  /** What the service map and `kappa top` show per source process, node and workload. */
  async function shown(store: FlowStore): Promise<Record<string, string[]>> {
    const names = async (level: 'process' | 'node' | 'workload') =>
      (await store.aggregate({ ...all, level, side: 'src', orderBy: 'bytes', limit: 0 })).map((row) => row.src.name).sort();
    return { process: await names('process'), node: await names('node'), workload: await names('workload') };
  }
  const expected = {
    process: texts.map((text, i) => `pod-${i}/${text}`).sort(),
    node: [...texts].sort(),
    workload: [...texts].sort(),
  };

  it('stores values with quotes, commas, line breaks, backslashes, NUL, \\N, huge lines and invalid UTF-8, and reads each back (U+FFFD for bytes that are not UTF-8) from the hot CSV and after either seal', async () => {
    const registry = createRegistry('test');
    const store = newStore({ segmentRecords: 1000, registry });
    await store.open();
    await store.append(awkwardView(), 1n);
    const valid = flowsOf().slice(0, awkward.length).map((r) => r.id);
    const check = async (from: FlowStore, when: string) => {
      // Raw flows come from the index rows: a row DuckDB cannot read is a flow missing here.
      expect(ids(await from.flows({ ...all, filter: 'src.namespace == valid' })), when).toEqual(valid);
      const got = await shown(from);
      for (const level of ['process', 'node', 'workload'] as const) expect(got[level], `${when}: ${level}`).toEqual(expected[level]);
    };
    await check(store, 'hot CSV');
    await store.close();
    const again = new FlowStore({ ...(store as unknown as { options: FlowStoreOptions }).options });
    await again.open();
    expect(readdirSync(dirOf(again)).filter((f) => f.endsWith('.csv'))).toEqual(['seg-00000002.csv']);
    await check(again, 'sealed at open');
    await again.close();
    // The same records filling a segment: sealed beside the appends.
    const rotating = newStore({ segmentRecords: texts.length, registry });
    await rotating.open();
    await rotating.append(awkwardView(), 1n);
    await rotating.flush();
    expect(readdirSync(dirOf(rotating)).filter((f) => /^seg-\d+\.parquet$/.test(f))).toEqual(['seg-00000001.parquet']);
    await check(rotating, 'sealed at rotation');
    await rotating.close();
    expect(await unreadable(registry)).toEqual({});
  });

  it('counts and logs an index line DuckDB cannot read and a last line a stop cut short, and keeps every other row', async () => {
    const store = newStore({ segmentRecords: 1000 });
    await store.open();
    await store.append(view(records.slice(0, 30)), 1n);
    await store.close();
    const csv = join(dirOf(store), 'seg-00000001.csv');
    const lines = readFileSync(csv).toString('utf8').split('\n').slice(0, 30);
    // Copies of real lines (were one read, its record would come twice): one with bytes that are
    // not UTF-8 among the good lines, as a writer bug would leave it; half of one at the end, as
    // a stop in the middle of a batch's write leaves it.
    const notUtf8 = Buffer.concat([Buffer.from(lines[3]!.slice(0, -1)), Buffer.from([0xff, 0xfe]), Buffer.from(`${lines[3]!.slice(-1)}\n`)]);
    rmSync(csv);
    appendFileSync(csv, `${lines.slice(0, 15).join('\n')}\n`);
    appendFileSync(csv, notUtf8);
    appendFileSync(csv, `${lines.slice(15).join('\n')}\n`);
    appendFileSync(csv, lines[5]!.slice(0, lines[5]!.length >> 1));
    const registry = createRegistry('test');
    const logged: { level: number; msg: string; segment?: string; lines?: number }[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => logged.push(JSON.parse(line) as (typeof logged)[number]) });
    const again = new FlowStore({ ...(store as unknown as { options: FlowStoreOptions }).options, registry, logger });
    await again.open();
    expect(ids(await again.flows(all))).toEqual(records.slice(0, 30).map((r) => r.id));
    expect(await unreadable(registry)).toEqual({ unparsable: 1, cut_last_line: 1 });
    expect(logged).toHaveLength(2);
    expect(logged[0]).toMatchObject({ segment: 'seg-00000001', msg: expect.stringMatching(/removed the last index line of seg-00000001\.csv, cut short by a stop.*delivered again/) as unknown });
    expect(logged[1]).toMatchObject({ segment: 'seg-00000001', lines: 1, msg: expect.stringMatching(/^flow store: 1 index lines of seg-00000001\.csv could not be read by DuckDB.*report it/) as unknown });
    expect(logged[1]).toMatchObject({ reasons: [{ type: 'INVALID ENCODING', count: 1, firstLine: 16 }] });
    await again.close();
  });

  it('a batch whose write fails part way (a full disk) leaves no part of a record or line behind: delivered again, every record reads back once and exactly', async () => {
    const registry = createRegistry('test');
    const store = newStore({ segmentRecords: 1000, registry });
    await store.open();
    await store.append(view(records.slice(0, 20)), 1n);
    // The disk fills up in the middle of the next batch's index lines: part is written, then ENOSPC.
    const freeDisk = fillDiskPartWay((store as unknown as { csvFile: Parameters<typeof fillDiskPartWay>[0] }).csvFile);
    await expect(store.append(view(records.slice(20, 40)), 1n)).rejects.toThrow(/no space left on device/);
    freeDisk();
    await store.append(view(records.slice(20, 40)), 1n, true);
    await store.append(view(records.slice(40, 50)), 1n);
    const encoded = (r: FlowRecord) => Buffer.from(toBinary(FlowRecordSchema, r)).toString('hex');
    const want = records.slice(0, 50).map(encoded);
    expect((await store.flows(all)).map((f) => encoded(f.record))).toEqual(want);
    await store.close();
    const again = new FlowStore({ ...(store as unknown as { options: FlowStoreOptions }).options });
    await again.open();
    expect((await again.flows(all)).map((f) => encoded(f.record))).toEqual(want);
    await again.close();
    expect(await unreadable(registry)).toEqual({});
  });

  it('a write that takes no bytes fails its batch with a clear error instead of retrying for ever: delivered again, every record reads back once', async () => {
    const store = newStore({ segmentRecords: 1000 });
    await store.open();
    await store.append(view(records.slice(0, 20)), 1n);
    type Write = (bytes: Uint8Array, offset: number, length: number) => Promise<{ bytesWritten: number }>;
    const rec = (store as unknown as { recFile: { write: Write } }).recFile;
    const write = rec.write.bind(rec);
    // A write that takes nothing (each in its own turn of the event loop, so a loop over it still lets the timer below run).
    rec.write = () => new Promise((resolve) => setImmediate(() => resolve({ bytesWritten: 0 })));
    const stuck = store.append(view(records.slice(20, 40)), 1n);
    // The old loop never settled: a bound, so the test fails rather than hangs.
    const settled = await Promise.race([stuck.then(() => 'resolved', (e: unknown) => e), new Promise((r) => setTimeout(() => r('still looping'), 2_000))]);
    expect(String(settled)).toMatch(/^StoreWriteError: cannot write flows to the flow store in .*: a write took none of its \d+ bytes.*check --store-dir, free space/);
    rec.write = write;
    await store.append(view(records.slice(20, 40)), 1n, true);
    expect(ids(await store.flows(all))).toEqual(records.slice(0, 40).map((r) => r.id));
    await store.close();
  });
});
