// Scenario 4, joiner half — the scale of the joiner's state: N records waiting in Redis for a peer
// that never reports (one end of N conversations, a join wait of an hour). Per N: Redis used_memory
// after − before, divided by N, and the joiner process's RSS, on a private nats-server + redis-server.
// Run: npm run bench:state-joiner [-- --pending=10000,100000]   (or env KAPPA_BENCH_PENDING)
//   1 000 000 pending takes ~20 min here (the joiner takes ~1 000 records/s) and ~2 GB of Redis.
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { connectBus, subjects } from '@kappa/bus';
import { encodeFlowBatch, newFlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer, startRedisServer } from '@kappa/testing';
import { conversation } from '../../apps/joiner/test/harness.js';
import { machineLine, rssBytes, table, writeSection } from './lib/report.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string?]));
const SIZES = (args.pending ?? process.env.KAPPA_BENCH_PENDING ?? '10000,100000').split(',').map(Number);
const BATCH = 1000;
const joinerMain = join(import.meta.dirname, '../../apps/joiner/dist/main.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const [nats, redis] = await Promise.all([startNatsServer(), startRedisServer()]);
const bus = await connectBus({ servers: [nats.url], name: 'bench-state-joiner', logger: createLogger('bench', 'warn'), registry: createRegistry('bench') });
await bus.ensureStreams({ maxBytes: 4 * 1024 ** 3, maxAgeMs: 3_600_000 });
const admin = new Redis(redis.port, '127.0.0.1');
const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
/** Records waiting in the joiner's due-time index (16 shards). */
async function pending(): Promise<number> {
  const pipeline = admin.pipeline();
  for (let shard = 0; shard < 16; shard++) pipeline.zcard(`kappa:{due:${shard}}`);
  return ((await pipeline.exec()) ?? []).reduce((n, [, v]) => n + Number(v), 0);
}

interface Row {
  n: number;
  perRecord: number;
  usedMiB: number;
  rssIdleMiB: number;
  rssMiB: number;
  seconds: number;
}
const rows: Row[] = [];
const MiB = 1024 ** 2;
let recordBytes = 0;
let failure: unknown;
try {
  for (const n of SIZES) {
    await admin.flushall();
    const joiner = spawn(process.execPath, [joinerMain, `--nats-url=${nats.url}`, `--redis-url=${redis.url}`, '--metrics-port=0', '--log-level=warn', '--join-wait=1h', '--instance=bench'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        joiner.stdout.on('data', (d: Buffer) => /ready/.test(d.toString()) && resolve());
        joiner.once('exit', (code) => reject(new Error(`joiner exited (${code}) before ready`)));
      });
      await sleep(1000);
      const before = await usedMemory();
      const rssIdle = rssBytes(joiner.pid);
      const started = Date.now();
      // One end of each conversation only (the client's, on node-a; its server on node-b never reports).
      for (let i = 0; i < n; i += BATCH) {
        const records = Array.from({ length: Math.min(BATCH, n - i) }, (_, k) => conversation(10_000_000 * rows.length + i + k).client);
        if (i === 0) recordBytes = encodeFlowBatch(newFlowBatch({ records })).byteLength / records.length;
        await bus.publishBatch(subjects.tagged(0), newFlowBatch({ batchId: `pending-${n}-${i}`, producer: 'bench', records }));
      }
      const deadline = Date.now() + 30 * 60_000;
      for (let last = -1, now = 0; (now = await pending()) < n; last = now) {
        if (Date.now() > deadline) throw new Error(`${now} of ${n} pending after 30 minutes`);
        if (now !== last) process.stderr.write(`\rstate-joiner: ${now} of ${n} pending`);
        await sleep(1000);
      }
      const seconds = (Date.now() - started) / 1000;
      await sleep(1000);
      const after = await usedMemory();
      rows.push({ n, perRecord: (after - before) / n, usedMiB: after / MiB, rssIdleMiB: rssIdle / MiB, rssMiB: rssBytes(joiner.pid) / MiB, seconds });
      process.stderr.write(`\rstate-joiner: ${n} pending: ${Math.round((after - before) / n)} bytes each in Redis\n`);
    } finally {
      joiner.kill('SIGTERM');
      if (joiner.exitCode === null) await new Promise((r) => joiner.once('exit', r));
    }
  }
} catch (error) {
  failure = error;
} finally {
  admin.disconnect();
  await bus.close();
  await Promise.all([nats.stop(), redis.stop()]);
}
if (failure) throw failure;

const f = (x: number, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const markdown = [
  `Command: \`npm run bench:state-joiner${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\` (encoded record ≈ ${f(recordBytes)} bytes; Redis ${/v=(\S+)/.exec(execFileSync('redis-server', ['--version'], { encoding: 'utf8' }))?.[1] ?? ''})`,
  '',
  table(
    ['records pending', 'Redis used_memory per pending record, bytes', 'Redis used_memory, MiB', 'joiner RSS idle → with N pending, MiB', 'time to take N in, s'],
    rows.map((r) => [f(r.n), f(r.perRecord), f(r.usedMiB, 1), `${f(r.rssIdleMiB)} → ${f(r.rssMiB)}`, f(r.seconds)]),
  ),
  '',
  machineLine(),
].join('\n');
console.log(markdown);
writeSection('state-joiner', markdown);
