// Joiner throughput and Redis memory, measured on a private nats-server and redis-server.
//   node_modules/.bin/node --import tsx tools/bench/joiner.ts [--conversations=20000] [--batch=200]
// 1. baseline: a pass-through consumer (kappa.flow.tagged → kappa.flow.joined, no Redis) drains
//    the same pre-published backlog, so the figure below it is the cost of the join alone;
// 2. joiner: the built joiner (apps/joiner/bin/kappa-joiner.js, `npm run build` first) drains a
//    backlog of both ends of N conversations, shuffled; records/s = records out / drain time;
// 3. memory: N one-sided records left pending; (used_memory after - before) / N.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { FLOW_STREAM, connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { encodeFlowBatch, newFlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer, startRedisServer } from '@kappa/testing';
import { conversation, shuffle } from '../../apps/joiner/test/harness.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const root = join(import.meta.dirname, '../..');
const node = join(root, 'node_modules/.bin/node');

if (args.role === 'passthrough') {
  // The baseline consumer: same bus, same batches, no Redis.
  const bus = await connectBus({ servers: [args.nats ?? ''], name: 'bench-passthrough', logger: createLogger('bench', 'warn'), registry: createRegistry('bench') });
  let out = 0;
  await bus.consumeBatches({
    stage: 'joiner',
    subject: subjects.allTagged,
    maxInFlight: 4,
    handler: async (batch) => {
      await bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: `joiner:${batch.batchId}`, producer: 'bench', records: batch.records }));
      out += batch.records.length;
    },
  });
  setInterval(() => process.stdout.write(`out ${out}\n`), 50);
  process.stdout.write('ready\n');
} else {
  await main();
}

async function main(): Promise<void> {
  const conversations = Number(args.conversations ?? 20_000);
  const batchSize = Number(args.batch ?? 200);
  const [nats, redis] = await Promise.all([startNatsServer(), startRedisServer()]);
  const bus = await connectBus({ servers: [nats.url], name: 'bench', logger: createLogger('bench', 'warn'), registry: createRegistry('bench') });
  const admin = new Redis(redis.port, '127.0.0.1');
  const records = shuffle(Array.from({ length: conversations }, (_, i) => conversation(i)).flatMap((c) => [c.client, c.server]), 3);
  const recordBytes = encodeFlowBatch(newFlowBatch({ records })).byteLength / records.length;
  const results: string[] = [];

  async function backlog(prefix: string, list = records): Promise<void> {
    await bus.deleteStream(FLOW_STREAM);
    await bus.ensureStreams({ maxBytes: 4 * 1024 ** 3, maxAgeMs: 3_600_000 });
    for (let i = 0; i < list.length; i += batchSize) {
      await bus.publishBatch(subjects.tagged(0), newFlowBatch({ batchId: `${prefix}-${i}`, producer: 'bench', records: list.slice(i, i + batchSize) }));
    }
  }

  async function drain(label: string, argv: string[], progress: (line: string, child: { metricsPort?: number }) => number | undefined, total: number) {
    const child = spawn(node, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    const state: { metricsPort?: number; out: number; started?: number } = { out: 0 };
    child.stdout.on('data', (d: Buffer) => {
      for (const line of d.toString().split('\n')) {
        const port = /metrics=(\d+)/.exec(line);
        if (port) state.metricsPort = Number(port[1]);
        if (/ready/.test(line) && state.started === undefined) state.started = Date.now();
        const n = progress(line, state);
        if (n !== undefined) state.out = n;
      }
    });
    const deadline = Date.now() + 600_000;
    while (state.out < total) {
      if (Date.now() > deadline) throw new Error(`${label}: ${state.out} of ${total} after 10 minutes`);
      if (state.metricsPort) {
        const text = await (await fetch(`http://127.0.0.1:${state.metricsPort}/metrics`)).text().catch(() => '');
        const m = /^kappa_joiner_records_out_total\{[^}]*\} (\d+)/m.exec(text);
        if (m) state.out = Number(m[1]);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const seconds = (Date.now() - (state.started ?? Date.now())) / 1000;
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    return { seconds, rate: total / seconds };
  }

  // 1. baseline
  await backlog('base');
  const base = await drain('pass-through', ['--import', 'tsx', import.meta.filename, '--role=passthrough', `--nats=${nats.url}`], (line) => {
    const m = /^out (\d+)/.exec(line);
    return m ? Number(m[1]) : undefined;
  }, records.length);
  results.push(`pass-through (bus only, no Redis): ${records.length} records in ${base.seconds.toFixed(2)} s = ${Math.round(base.rate)} records/s`);

  // 2. joiner
  await backlog('join');
  await admin.flushall();
  const joinerArgs = [...(args.profile ? ['--cpu-prof', `--cpu-prof-dir=${args.profile}`] : []), join(root, 'apps/joiner/bin/kappa-joiner.js'), `--nats-url=${nats.url}`, `--redis-url=${redis.url}`, '--metrics-port=0', '--log-level=warn', '--join-wait=120s', '--instance=bench'];
  const joined = await drain('joiner', joinerArgs, () => undefined, records.length);
  if (args.commandstats) process.stderr.write(`${(await admin.info('commandstats')).split('\n').filter((l) => /calls=/.test(l)).join('\n')}\n`);
  results.push(`joiner (Redis ${(await admin.info('server')).match(/redis_version:(\S+)/)?.[1]}): ${records.length} records (${conversations} conversations, both ends, shuffled, ${batchSize}/batch) in ${joined.seconds.toFixed(2)} s = ${Math.round(joined.rate)} joined records/s`);

  const cached = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
  results.push(`Redis memory per joined conversation still cached (both ends' metadata, replay markers; until --metadata-ttl / --replay-window): ${Math.round(cached / conversations)} bytes (used_memory ${cached} for ${conversations})`);

  // 3. memory per pending record: one end of each conversation only, nothing to join with.
  await admin.flushall();
  await new Promise((r) => setTimeout(r, 500));
  const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
  const before = await usedMemory();
  const lonely = Array.from({ length: conversations }, (_, i) => conversation(100_000 + i).client);
  await backlog('lonely', lonely);
  const pendingChild = spawn(node, joinerArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
  const deadline = Date.now() + 300_000;
  const pendingNow = async () => {
    const pipeline = admin.pipeline();
    for (let shard = 0; shard < 16; shard++) pipeline.zcard(`kappa:{due:${shard}}`);
    return ((await pipeline.exec()) ?? []).reduce((n, [, v]) => n + Number(v), 0);
  };
  while ((await pendingNow()) < lonely.length) {
    if (Date.now() > deadline) throw new Error('pending records did not all arrive');
    await new Promise((r) => setTimeout(r, 200));
  }
  const after = await usedMemory();
  pendingChild.kill('SIGTERM');
  await new Promise((r) => pendingChild.once('exit', r));
  results.push(
    `Redis memory per pending record: ${Math.round((after - before) / lonely.length)} bytes (used_memory ${before} → ${after} for ${lonely.length} pending; encoded record ≈ ${Math.round(recordBytes)} bytes)`,
  );

  admin.disconnect();
  await bus.close();
  await Promise.all([nats.stop(), redis.stop()]);
  process.stdout.write(`${results.join('\n')}\n`);
}
