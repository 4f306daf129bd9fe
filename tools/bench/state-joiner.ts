// Scenario 4, joiner half — the scale of the joiner's state, on a private nats-server and
// redis-server (AOF everysec), through the built joiner process:
//   pending    N records waiting for a peer that never reports (one end of N conversations, a
//              join wait of an hour): Redis used_memory after − before, per waiting record, and
//              the joiner's RSS.
//   --soak=N   N records (both ends of fresh conversations, a tenth of them one-sided) through the
//              joiner at the rate it takes them: its RSS sampled as it goes; after the first fifth
//              (caches filled: --metadata-ttl=60s for the soak) it must stay within ±10 %.
// Run: npm run bench:state-joiner [-- --pending=10000,100000] [-- --soak=10000000 [--rate=6000]]
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { DEFAULT_PARTITIONS, IpProtocol, Vantage, encodeFlowBatch, newFlowBatch, newFlowRecord, partitionOfRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer, startRedisServer } from '@kappa/testing';
import { machineLine, rssBytes, table, writeSection } from './lib/report.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string?]));
const SIZES = (args.pending ?? process.env.KAPPA_BENCH_PENDING ?? '10000,100000').split(',').map(Number);
const SOAK = Number(args.soak ?? 0);
/** The soak's input rate: steady, so the state (rate × TTL) and the RSS have a level to hold. */
const RATE = Number(args.rate ?? 6000);
const BATCH = 1000;
const root = join(import.meta.dirname, '../..');
const joinerMain = join(root, 'apps/joiner/dist/main.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = 1024 ** 2;
const f = (x: number, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** One end (or both) of conversation i, as the taggers send them. */
function ends(i: number): [FlowRecord, FlowRecord] {
  const client = { ip: `10.${1 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}`, port: 30000 + (i % 30000) };
  const server = { ip: `10.200.${(i >> 8) & 255}.${i & 255}`, port: 8080 };
  const kube = (pod: string, node: string) => ({ node, objectName: pod, objectNamespace: 'shop', objectType: 'pod', workloadName: 'web', workloadKind: 'Deployment', labels: { app: 'web' }, containerName: 'main' });
  const common = { startNs: 1_800_000_000_000_000_000n, endNs: 1_800_000_010_000_000_000n, protocol: IpProtocol.TCP, bytes: 1000n, packets: 10n, observation: 'socket' };
  return [
    newFlowRecord({ ...common, node: 'node-a', vantage: Vantage.SRC, src: { ...client, process: { pid: 1000 + (i % 1000), name: 'client' }, kube: kube(`client-${i % 500}`, 'node-a') }, dst: { ...server, kube: { objectName: `server-${i % 300}`, objectType: 'pod' } } }),
    newFlowRecord({ ...common, node: 'node-b', vantage: Vantage.DST, src: { ...client, kube: { objectName: `client-${i % 500}`, objectType: 'pod' } }, dst: { ...server, process: { pid: 5000 + (i % 1000), name: 'server' }, kube: kube(`server-${i % 300}`, 'node-b') } }),
  ];
}

/** Publishes records as the tagger would: one batch per partition per BATCH records. */
async function publish(bus: Bus, records: FlowRecord[], prefix: string): Promise<void> {
  const byPartition = new Map<number, FlowRecord[]>();
  for (const r of records) {
    const k = partitionOfRecord(r, DEFAULT_PARTITIONS);
    const list = byPartition.get(k) ?? [];
    list.push(r);
    byPartition.set(k, list);
  }
  await Promise.all([...byPartition].map(([k, list]) => bus.publishEncoded(subjects.tagged(k), encodeFlowBatch(newFlowBatch({ batchId: `${prefix}-p${k}`, producer: 'bench', createdNs: 1n, records: list })), `${prefix}-p${k}`)));
}

async function startJoiner(nats: string, redis: string, extra: string[]): Promise<{ child: ReturnType<typeof spawn>; port: number }> {
  const child = spawn(process.execPath, [joinerMain, `--nats-url=${nats}`, `--redis-url=${redis}`, '--metrics-port=0', '--log-level=warn', '--instance=bench', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-8000)));
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM') process.stderr.write(`\nstate-joiner: the joiner exited (${code ?? signal}):\n${log}\n`);
  });
  const port = await new Promise<number>((resolve, reject) => {
    let text = '';
    child.stdout!.on('data', (d: Buffer) => {
      text += d.toString();
      const m = /kappa-joiner ready metrics=(\d+)/.exec(text);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`joiner exited (${code}) before ready`)));
  });
  return { child, port };
}

async function metric(port: number, name: string): Promise<number> {
  // A reset connection (keep-alive closed by the server as the request went out) is retried once.
  const get = () => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
  const text = await get().catch(get);
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.split(' ').pop());
  return sum;
}

async function stop(child: ReturnType<typeof spawn>): Promise<void> {
  child.kill('SIGTERM');
  if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
}

const [nats, redis] = await Promise.all([startNatsServer(), startRedisServer()]);
const bus = await connectBus({ servers: [nats.url], name: 'bench-state-joiner', logger: createLogger('bench', 'warn'), registry: createRegistry('bench') });
await bus.ensureStreams({ maxBytes: 8 * 1024 ** 3, maxAgeMs: 3_600_000 });
const admin = new Redis(redis.port, '127.0.0.1');
const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
const sections: string[] = [];
let failure: unknown;
try {
  if (SOAK === 0) {
    const rows: string[][] = [];
    let recordBytes = 0;
    for (const [round, n] of SIZES.entries()) {
      await admin.flushall();
      const joiner = await startJoiner(nats.url, redis.url, ['--join-wait=1h']);
      try {
        await sleep(2000); // partitions taken
        const before = await usedMemory();
        const rssIdle = rssBytes(joiner.child.pid!);
        const started = Date.now();
        for (let i = 0; i < n; i += BATCH) {
          const records = Array.from({ length: Math.min(BATCH, n - i) }, (_, k) => ends(10_000_000 * round + i + k)[0]);
          if (i === 0) recordBytes = encodeFlowBatch(newFlowBatch({ records })).byteLength / records.length;
          await publish(bus, records, `pending-${n}-${i}`);
        }
        const deadline = Date.now() + 30 * 60_000;
        while ((await metric(joiner.port, 'kappa_joiner_pending_records')) < n) {
          if (Date.now() > deadline) throw new Error(`fewer than ${n} pending after 30 minutes`);
          await sleep(500);
        }
        const seconds = (Date.now() - started) / 1000;
        await sleep(1500); // the last commits
        const after = await usedMemory();
        rows.push([f(n), f((after - before) / n), f(after / MiB, 1), `${f(rssIdle / MiB)} → ${f(rssBytes(joiner.child.pid!) / MiB)}`, f(seconds)]);
        process.stderr.write(`state-joiner: ${n} pending: ${Math.round((after - before) / n)} bytes each in Redis\n`);
      } finally {
        await stop(joiner.child);
      }
    }
    sections.push(
      [
        `Encoded record ≈ ${f(recordBytes)} bytes (the client end of a conversation whose server end never reports; --join-wait=1h).`,
        '',
        table(['records pending', 'Redis used_memory per pending record, bytes', 'Redis used_memory, MiB', 'joiner RSS idle → with N pending, MiB', 'time to take N in, s'], rows),
      ].join('\n'),
    );
  } else {
    const joiner = await startJoiner(nats.url, redis.url, ['--join-wait=20s', '--metadata-ttl=60s', '--stream-max-bytes=8589934592']);
    // The exporter's part: take the joiner's output away (acked unread), so the stream stays small.
    const drain = await bus.consume({ subject: subjects.allJoined, durable: 'bench-drain', maxInFlight: 16, handler: async (m) => void (await m.ack()) });
    try {
      await sleep(2000);
      const samples: { records: number; rssMiB: number; heapMiB: number; externalMiB: number; stateMiB: number }[] = [];
      const sample = async (records: number) => ({
        records,
        rssMiB: rssBytes(joiner.child.pid!) / MiB,
        heapMiB: (await metric(joiner.port, 'kappa_nodejs_heap_size_total_bytes')) / MiB,
        externalMiB: (await metric(joiner.port, 'kappa_nodejs_external_memory_bytes')) / MiB,
        stateMiB: (await metric(joiner.port, 'kappa_joiner_state_bytes')) / MiB,
      });
      const started = Date.now();
      let sent = 0;
      let conversation = 0;
      const sampleEvery = Math.max(100_000, Math.floor(SOAK / 50));
      let nextSample = sampleEvery;
      while (sent < SOAK) {
        // A steady rate; and a bounded backlog should the joiner fall behind, so RSS shows the
        // joiner's own state, not its input.
        const due = ((Date.now() - started) / 1000) * RATE;
        const out = await metric(joiner.port, 'kappa_joiner_records_in_total');
        if (sent > due || sent - out > 20 * BATCH * DEFAULT_PARTITIONS) {
          await sleep(20);
          continue;
        }
        const records: FlowRecord[] = [];
        while (records.length < BATCH * DEFAULT_PARTITIONS) {
          const [client, server] = ends(conversation++);
          records.push(client);
          if (conversation % 10 !== 0) records.push(server);
        }
        await publish(bus, records, `soak-${sent}`);
        sent += records.length;
        if (sent >= nextSample) {
          nextSample += sampleEvery;
          samples.push(await sample(sent));
          process.stderr.write(`\rstate-joiner soak: ${f(sent)} records, RSS ${f(samples.at(-1)!.rssMiB)} MiB`);
        }
      }
      while ((await metric(joiner.port, 'kappa_joiner_records_in_total')) < sent) await sleep(500);
      const seconds = (Date.now() - started) / 1000;
      samples.push(await sample(sent));
      process.stderr.write('\n');
      const warm = samples.filter((s) => s.records >= SOAK / 5);
      const reference = warm[0]!.rssMiB;
      const lowest = Math.min(...warm.map((s) => s.rssMiB));
      const highest = Math.max(...warm.map((s) => s.rssMiB));
      const within = highest <= reference * 1.1 && lowest >= reference * 0.9;
      const shown = samples.filter((_, i) => i % Math.max(1, Math.floor(samples.length / 10)) === 0 || i === samples.length - 1);
      sections.push(
        [
          `Soak: ${f(sent)} records (both ends of fresh conversations, one in ten one-sided) at ${f(RATE)} records/s (${f(sent / seconds)} held), --join-wait=20s --metadata-ttl=60s. ` +
            `RSS after the first fifth ${f(reference)} MiB, then between ${f(lowest)} and ${f(highest)} MiB: ${within ? 'within' : 'NOT within'} ±10 %. Redis used_memory at the end ${f((await usedMemory()) / MiB)} MiB.`,
          '',
          table(['records in', 'joiner RSS, MiB', 'V8 heap (total), MiB', 'outside the heap (ArrayBuffers), MiB', 'join state (stored values), MiB'], shown.map((s) => [f(s.records), f(s.rssMiB), f(s.heapMiB), f(s.externalMiB), f(s.stateMiB)])),
        ].join('\n'),
      );
      if (!within) process.exitCode = 1;
    } finally {
      await drain.stop();
      await stop(joiner.child);
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

const markdown = [`Command: \`npm run bench:state-joiner${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\` (Redis 7.0, AOF everysec)`, '', ...sections, '', machineLine()].join('\n');
console.log(markdown);
writeSection(SOAK > 0 ? 'state-joiner-soak' : 'state-joiner', markdown);
