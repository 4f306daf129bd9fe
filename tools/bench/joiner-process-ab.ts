// A/B of the BUILT joiner process between two checkouts, fed the way bench:pipeline feeds it:
// every second, each partition gets one batch per node (its SRC records from node-a, its DST
// records from node-b) of long-lived conversations, so after the first interval every record
// joins against a cached end. Only the joiner runs (with its own nats-server and redis-server):
// no enricher, tagger or exporter shares the cores, which keeps the figure steadier than the
// pipeline's. Rounds alternate the checkouts (order flipped every round); each round starts a
// fresh joiner on an emptied stream and Redis, lets it warm up, then reads its CPU over the
// measured seconds against the records it put out.
// Run: node --import tsx tools/bench/joiner-process-ab.ts --base=/work/wt/base
//        [--rate=20000 --seconds=15 --warmup=5 --rounds=3 --profile=DIR (this checkout's joiner, last round)
//         --profile-base (profile the base checkout's joiner instead)
//         --base-flags="…" --this-flags="…" (Node/V8 flags for each side's joiner, e.g. a GC setting
//         against none with --base=. ; --this-flags="--trace-gc" prints its lines)]
//      Every joiner runs with --trace-gc: the garbage collector's pauses in the measured seconds
//      are summed from its lines (steadier than the CPU figure on a loaded machine).
//      Both checkouts need their joiner built: (cd apps/joiner && npm run build).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { connectBus, subjects } from '@kappa/bus';
import { FlowBatchView, FlowBatchWriter, encodeFlowBatch, newFlowBatch, partitionOfRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { dyingWithParent, startNatsServer, startRedisServer } from '@kappa/testing';
import { conversation } from './lib/joiner-workload.js';
import { cpuSeconds } from './lib/report.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/s.exec(a)?.slice(1) ?? [a])) as Record<string, string | undefined>;
if (!args.base) throw new Error('joiner-process-ab: --base=DIR (a checkout with a built joiner to compare this one with) is required');
const RATE = Number(args.rate ?? 20_000);
const SECONDS = Number(args.seconds ?? 15);
const WARMUP = Number(args.warmup ?? 5);
const ROUNDS = Number(args.rounds ?? 3);
const PARTITIONS = 16;
const here = join(import.meta.dirname, '../..');
const checkouts = [args.base === '.' ? here : args.base, here];
for (const c of checkouts) if (!existsSync(join(c, 'apps/joiner/dist/main.js'))) throw new Error(`joiner-process-ab: ${c} has no built joiner: (cd ${c}/apps/joiner && npm run build)`);

/** One interval's records by partition and node, encoded once; re-stamped with a new batch id per tick. */
const conversations = Math.round(RATE / 2);
const byPartitionNode = new Map<string, FlowRecord[]>();
for (let i = 0; i < conversations; i++) {
  for (const r of conversation(i, 0)) {
    const key = `${partitionOfRecord(r, PARTITIONS)}/${r.node}`;
    const list = byPartitionNode.get(key) ?? [];
    list.push(r);
    byPartitionNode.set(key, list);
  }
}
const templates = [...byPartitionNode].map(([key, records]) => {
  const [k, node] = key.split('/') as [string, string];
  return { partition: Number(k), node, view: new FlowBatchView().parse(encodeFlowBatch(newFlowBatch({ batchId: 'template', producer: 'bench', createdNs: 1n, records }))) };
});
const writer = new FlowBatchWriter(4 * 1024 * 1024);

const nats = await startNatsServer();
const redisServer = await startRedisServer();
const bus = await connectBus({ servers: [nats.url], name: 'bench-joiner-process-ab', logger: createLogger('bench', 'warn'), registry: createRegistry('bench') });
const redis = new Redis(redisServer.url);
const children = new Set<ChildProcess>();

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text().catch(() => '');
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.split(' ').pop());
  return sum;
}

/** The garbage collector's pauses of the running joiner (ms), from its --trace-gc lines. */
const gc = { ms: 0, count: 0, full: 0 };

async function startJoiner(side: number, profile: boolean): Promise<{ child: ChildProcess; port: number }> {
  const checkout = checkouts[side]!;
  const own = (side === 0 ? args['base-flags'] : args['this-flags']) ?? '';
  const flags = ['--trace-gc', ...own.split(' ').filter(Boolean), ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${args.profile}`] : [])];
  const argv = [`--nats-url=${nats.url}`, `--redis-url=${redisServer.url}`, '--metrics-port=0', '--log-level=warn', '--instance=bench-0', `--partitions=${PARTITIONS}`, '--interval=1s'];
  // The Node the services run on (npm's, as bench:pipeline starts them), whatever runs this script.
  const child = spawn(...dyingWithParent(join(here, 'node_modules/.bin/node'), [...flags, join(checkout, 'apps/joiner/bin/kappa-joiner.js'), ...argv]), { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let ready = false;
  const port = await new Promise<number>((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (d: Buffer) => {
      const chunk = d.toString();
      if (own.includes('--trace')) process.stderr.write(d);
      // e.g. "[1:0x…]  11021 ms: Scavenge 58.0 (96.6) -> 34.0 (98.1) MB, pooled: 0 MB, 10.99 / 0.00 ms  …"
      // and "Mark-Compact … MB, pooled: 0 MB, 6.35 / 0.01 ms  (+ 6.1 ms in 33 steps since start of marking …": both counted.
      for (const m of chunk.matchAll(/ ms: (Scavenge|Mark-Compact|Minor Mark-Sweep|Mark-Sweep)[^\n]*?, ([\d.]+) \/ [\d.]+ ms(?:\s+\(\+ ([\d.]+) ms in)?/g)) {
        gc.ms += Number(m[2]) + Number(m[3] ?? 0);
        gc.count++;
        if (m[1] !== 'Scavenge') gc.full++;
      }
      if (ready) return;
      text += chunk;
      const m = /kappa-joiner ready metrics=(\d+)/.exec(text);
      if (m) {
        ready = true;
        resolve(Number(m[1]));
      }
    });
    child.once('exit', (code) => reject(new Error(`joiner exited (${code}) before ready`)));
  });
  return { child, port };
}

let tick = 0;
const recordsPerTick = conversations * 2;
/** One second's input: each partition's batch of each node, published together. */
async function publishTick(): Promise<void> {
  const t = tick++;
  await Promise.all(
    templates.map((tpl) => {
      const id = `tagger:t${t}-p${tpl.partition}-${tpl.node}`;
      writer.reset();
      writer.open({ batchId: id, producer: 'bench', createdNs: 1n }, bus.messageLimit);
      for (let i = 0; i < tpl.view.length; i++) writer.copyRecord(tpl.view, i);
      const parts = writer.parts().map((p) => ({ id: p.id, bytes: p.bytes.slice() }));
      return Promise.all(parts.map((p) => bus.publishBytes(subjects.tagged(tpl.partition), p.bytes, p.id)));
    }),
  );
}

interface Figure {
  us: number;
  /** Garbage collector pauses (incremental marking steps included), µs per record, how many, and how many of them full (mark-compact). */
  gcUs: number;
  gcs: number;
  full: number;
  records: number;
  natsUs: number;
  redisUs: number;
}

async function round(side: number, profile: boolean): Promise<Figure> {
  await bus.deleteStream('KAPPA_FLOWS').catch(() => undefined);
  await bus.ensureStreams({ maxBytes: 8 * 1024 ** 3, maxAgeMs: 3_600_000 });
  await redis.flushall();
  tick = 0;
  const { child, port } = await startJoiner(side, profile);
  try {
    const deadline = Date.now() + 60_000;
    while ((await metric(port, 'kappa_joiner_partitions_owned')) < PARTITIONS) {
      if (Date.now() > deadline) throw new Error('the joiner did not take every partition within a minute');
      await sleep(200);
    }
    let next = Date.now();
    const runFor = async (seconds: number) => {
      for (let s = 0; s < seconds; s++) {
        await publishTick();
        next += 1000;
        await sleep(Math.max(0, next - Date.now()));
      }
    };
    // Measured from a drained joiner to a drained joiner: every record published in the
    // measured seconds is out, and nothing from before is.
    const drained = async (expected: number) => {
      const until = Date.now() + 60_000;
      while ((await metric(port, 'kappa_joiner_records_out_total')) < expected) {
        if (Date.now() > until) throw new Error(`the joiner did not put out ${expected} records within a minute`);
        await sleep(50);
      }
    };
    await runFor(WARMUP);
    await drained(WARMUP * recordsPerTick);
    next = Date.now();
    const cpu0 = cpuSeconds(child.pid!);
    const nats0 = cpuSeconds(nats.process.pid!);
    const redis0 = cpuSeconds(redisServer.process.pid!);
    const gc0 = { ...gc };
    await runFor(SECONDS);
    await drained((WARMUP + SECONDS) * recordsPerTick);
    const cpu = cpuSeconds(child.pid!) - cpu0;
    const records = SECONDS * recordsPerTick;
    return { us: (cpu * 1e6) / records, gcUs: ((gc.ms - gc0.ms) * 1000) / records, gcs: gc.count - gc0.count, full: gc.full - gc0.full, records, natsUs: ((cpuSeconds(nats.process.pid!) - nats0) * 1e6) / records, redisUs: ((cpuSeconds(redisServer.process.pid!) - redis0) * 1e6) / records };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r(undefined)));
  }
}

const figures: Figure[][] = [[], []];
try {
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? [0, 1] : [1, 0];
    for (const i of order) {
      const f = await round(i, i === (args['profile-base'] !== undefined ? 0 : 1) && args.profile !== undefined && r === ROUNDS - 1);
      figures[i]!.push(f);
      process.stderr.write(`joiner-process-ab: round ${r + 1} ${i === 0 ? 'base' : 'this'}: ${f.us.toFixed(2)} µs/record, GC ${f.gcUs.toFixed(2)} in ${f.gcs} pauses, ${f.full} full (${f.records} records out; nats-server ${f.natsUs.toFixed(2)}, redis-server ${f.redisUs.toFixed(2)})\n`);
    }
  }
} finally {
  for (const c of children) c.kill('SIGKILL');
  redis.disconnect();
  await bus.close();
  await Promise.all([nats.stop(), redisServer.stop()]);
}
const median = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)]!;
const [base, mine] = figures as [Figure[], Figure[]];
const faster = base.filter((f, i) => mine[i]!.us < f.us).length;
console.log(
  `joiner-process-ab: ${RATE} records/s (${conversations} conversations, 16 partitions × 2 nodes per second), ${WARMUP} s warm-up + ${SECONDS} s measured, ${ROUNDS} rounds each; joiner CPU µs per record out, base → this checkout: ` +
    `${median(base.map((f) => f.us)).toFixed(2)} → ${median(mine.map((f) => f.us)).toFixed(2)}, ratio ${(median(mine.map((f) => f.us)) / median(base.map((f) => f.us))).toFixed(3)} (lower in ${faster} of ${ROUNDS}); ` +
    `GC pauses ${median(base.map((f) => f.gcUs)).toFixed(2)} → ${median(mine.map((f) => f.gcUs)).toFixed(2)} µs per record; ` +
    `all rounds base ${base.map((f) => f.us.toFixed(2)).join(' ')}, this ${mine.map((f) => f.us.toFixed(2)).join(' ')}`,
);
