// The flow store (apps/exporter/src/store) against SQLite (node:sqlite), in one run: ingest cost
// per record, the one-hour service-map aggregate and a filtered flow query over N stored
// records whose flow times span the last hour (so the hour's aggregate reads all of them),
// and the store's disk use with its size bound.
// Run: npm run bench:store -- [--records 10000000] [--sqlite-records 10000000] [--skip-sqlite]
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { IpProtocol, Vantage, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { compileSql, fields, ipHex } from '@kappa/filter';
import { FlowStore } from '../../apps/exporter/src/store/store.js';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const N = arg('records', 10_000_000);
const SQLITE_N = arg('sqlite-records', N);
const BATCH = 1000;
const HOUR_NS = 3_600_000_000_000n;
const FILTER = 'src.namespace == "ns-3" and dst.port == 443 and not dst.workload == "wl-7"';

/** A pool of distinct conversations: 20 namespaces, 500 workloads, 2000 pods, both vantages. */
function pool(size: number): FlowRecord[] {
  return Array.from({ length: size }, (_, i) => {
    const sw = i % 500;
    const dw = (i * 7 + 3) % 500;
    return newFlowRecord({
      id: `pool-${i}`,
      node: `node-${i % 7}`,
      vantage: i % 2 === 0 ? Vantage.SRC : Vantage.DST,
      protocol: i % 10 === 0 ? IpProtocol.UDP : IpProtocol.TCP,
      observation: 'socket',
      src: {
        ip: `10.${(sw >> 8) & 255}.${sw & 255}.${i % 4}`,
        port: 30000 + (i % 30000),
        process: { pid: 1000 + (i % 4000), name: `proc-${i % 30}` },
        kube: { objectName: `wl-${sw}-pod-${i % 4}`, objectNamespace: `ns-${sw % 20}`, objectType: 'pod', workloadName: `wl-${sw}`, workloadKind: 'Deployment', node: `node-${i % 7}`, labels: { app: `wl-${sw}` } },
      },
      dst: {
        ip: `10.${(dw >> 8) & 255}.${dw & 255}.${(i >> 2) % 4}`,
        port: [443, 80, 5432, 6379, 8080][Math.floor(i / 20) % 5]!,
        process: { name: `proc-${(i * 3) % 30}` },
        kube: { objectName: `wl-${dw}-pod-${(i >> 2) % 4}`, objectNamespace: `ns-${dw % 20}`, objectType: 'pod', workloadName: `wl-${dw}`, workloadKind: 'Deployment', node: `node-${(i + 3) % 7}` },
      },
      bytes: BigInt(1000 + (i % 100_000)),
      packets: BigInt(10 + (i % 100)),
      reverseBytes: BigInt(500 + (i % 5000)),
      reversePackets: BigInt(5 + (i % 50)),
      tcp: { srttUs: 100 + (i % 2000), retransmits: i % 13 === 0 ? 1 : 0 },
      joined: i % 17 !== 0,
      clusterId: 1,
    });
  });
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function time<T>(what: () => Promise<T> | T): Promise<[T, number]> {
  const t = performance.now();
  const result = await what();
  return [result, performance.now() - t];
}

const records = pool(20_000);
const nowNs = BigInt(Date.now()) * 1_000_000n;
/** The i-th stored record's flow time: N records spread evenly over the last hour. */
const flowTime = (i: number, n: number) => nowNs - HOUR_NS + (HOUR_NS * BigInt(i)) / BigInt(n);

console.log(`flow store benchmark: ${N.toLocaleString()} records (SQLite ${SQLITE_N.toLocaleString()}), load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);

// --- DuckDB flow store (the exporter's code) ---
const dir = mkdtempSync(join(tmpdir(), 'kappa-bench-store-'));
const maxBytes = arg('max-bytes', 64 * 1024 ** 3);
const store = new FlowStore({ dir, retentionMs: 2 * 3_600_000, maxBytes, segmentRecords: 1_000_000, segmentAgeMs: 3_600_000 });
await store.open();
{
  const cpu0 = cpuMs();
  const [, wall] = await time(async () => {
    for (let done = 0; done < N; done += BATCH) {
      const n = Math.min(BATCH, N - done);
      const batch = new Array<FlowRecord>(n);
      for (let k = 0; k < n; k++) {
        const r = records[(done + k) % records.length]!;
        r.endNs = flowTime(done + k, N);
        r.startNs = r.endNs - 10_000_000_000n;
        batch[k] = r;
      }
      await store.append(batch, nowNs);
    }
  });
  const cpu = cpuMs() - cpu0;
  const stats = store.stats();
  console.log(`duckdb ingest: ${((N / wall) * 1000).toFixed(0)} records/s wall, ${((cpu * 1000) / N).toFixed(2)} µs CPU per record (JS + DuckDB sealing), ${(stats.bytes / N).toFixed(0)} bytes/record on disk, ${stats.segments} segments`);
}
for (let round = 0; round < 3; round++) {
  const [map, mapMs] = await time(() => store.aggregate({ sinceNs: nowNs - HOUR_NS, untilNs: nowNs + 1n, filter: '', level: 'workload', side: 'pair', orderBy: 'bytes', limit: 0 }));
  const [flows, flowMs] = await time(() => store.flows({ sinceNs: nowNs - HOUR_NS, untilNs: nowNs + 1n, filter: FILTER, last: 100, limit: 0 }));
  const [first, firstMs] = await time(() => store.flows({ sinceNs: nowNs - HOUR_NS, untilNs: nowNs + 1n, filter: FILTER, last: 0, limit: 100 }));
  console.log(
    `duckdb round ${round + 1}: one-hour workload map ${mapMs.toFixed(0)} ms (${map.length} edges, ${map.reduce((s, r) => s + Number(r.records), 0)} records); ` +
      `filtered flows --last 100 ${flowMs.toFixed(0)} ms (${flows.length}), first 100 ${firstMs.toFixed(0)} ms (${first.length})`,
  );
}
await store.close();
rmSync(dir, { recursive: true, force: true });

// --- SQLite (node:sqlite), same columns, one table with an index on flow time ---
if (!process.argv.includes('--skip-sqlite')) {
  const sqliteDir = mkdtempSync(join(tmpdir(), 'kappa-bench-sqlite-'));
  const db = new DatabaseSync(join(sqliteDir, 'flows.db'));
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;');
  const columns = ['time_ns INTEGER', 'rec BLOB', ...fields.map((f) => `${f.column} ${f.columnType === 'VARCHAR' ? 'TEXT' : 'INTEGER'}`), 'src_ip_hex TEXT', 'dst_ip_hex TEXT'];
  db.exec(`CREATE TABLE flows (${columns.join(', ')}); CREATE INDEX flows_time ON flows (time_ns);`);
  const insert = db.prepare(`INSERT INTO flows VALUES (${columns.map(() => '?').join(', ')})`);
  const readers = fields.map((f) => f.read);
  const { toBinary, FlowRecordSchema } = await import('@kappa/contracts');
  const cpu0 = cpuMs();
  const [, wall] = await time(() => {
    for (let done = 0; done < SQLITE_N; done += BATCH) {
      db.exec('BEGIN');
      for (let k = 0; k < Math.min(BATCH, SQLITE_N - done); k++) {
        const r = records[(done + k) % records.length]!;
        r.endNs = flowTime(done + k, SQLITE_N);
        const values = readers.map((read) => {
          const v = read(r);
          return typeof v === 'boolean' ? (v ? 1 : 0) : v;
        });
        insert.run(r.endNs, toBinary(FlowRecordSchema, r), ...values, ipHex(r.src?.ip ?? ''), ipHex(r.dst?.ip ?? ''));
      }
      db.exec('COMMIT');
    }
  });
  console.log(`sqlite ingest: ${((SQLITE_N / wall) * 1000).toFixed(0)} records/s wall, ${(((cpuMs() - cpu0) * 1000) / SQLITE_N).toFixed(2)} µs CPU per record`);
  // The same filter through the same compiler; DuckDB's contains() is SQLite's instr().
  const where = compileSql(FILTER).replaceAll('contains(', 'instr(');
  const since = nowNs - HOUR_NS;
  for (let round = 0; round < 2; round++) {
    const [map, mapMs] = await time(() =>
      db
        .prepare(
          `SELECT src_namespace, src_workload, dst_namespace, dst_workload, sum(bytes), sum(reverse_bytes), sum(packets), sum(reverse_packets), sum(retransmits), avg(srtt_us), max(srtt_us), count(*)
           FROM flows WHERE time_ns >= ? AND (vantage = 1 OR NOT joined) GROUP BY 1, 2, 3, 4`,
        )
        .all(since),
    );
    const [flows, flowMs] = await time(() => db.prepare(`SELECT rec FROM flows WHERE time_ns >= ? AND ${where} ORDER BY time_ns DESC LIMIT 100`).all(since));
    console.log(`sqlite round ${round + 1}: one-hour workload map ${mapMs.toFixed(0)} ms (${map.length} edges); filtered flows --last 100 ${flowMs.toFixed(0)} ms (${flows.length})`);
  }
  db.close();
  rmSync(sqliteDir, { recursive: true, force: true });
}
console.log(`load average at the end ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
