// The joiner's cost per record, in three parts, each against a baseline of the same run:
//   transform  in process, bytes in → bytes out: FlowBatchView → the partition's join →
//              FlowBatchWriter, CPU µs per record and records/s per core; baseline: the same
//              batches copied record by record (the floor of any byte-path stage); and the
//              object-model work of before (protobuf-es decode + encode of every record once).
//              Then the client side of its Redis commits (folding deltas, writing the commands).
//   redis      the same commits against a real redis-server (AOF everysec): redis-server CPU µs
//              per record, and Redis memory per waiting record.
//   process    the built joiner (1..3 replicas sharing the partitions) draining a backlog from a
//              real nats-server: records/s and CPU µs per record of each process.
// Run: npm run bench:joiner [-- --conversations=50000 --batch=1000 --parts=transform,redis,process --replicas=1,3]
//      --profile=DIR: a CPU profile of each transform case (its measured rounds), and of the joiner processes.
//      --cluster: the process part on three nats-servers (R3) and a Redis Cluster of 3+3 (section joiner-cluster).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import {
  FlowBatchSchema,
  FlowBatchView,
  FlowBatchWriter,
  IpProtocol,
  Vantage,
  encodeFlowBatch,
  fromBinary,
  newFlowBatch,
  newFlowRecord,
  partitionOfRecord,
  toBinary,
} from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { startNatsCluster, startNatsServer, startRedisCluster, startRedisServer } from '@kappa/testing';
import { CommitSet } from '../../apps/joiner/src/commit.js';
import { Delta, JoinStats, PartitionJoin } from '../../apps/joiner/src/partition.js';
import { CommitCommands } from '../../apps/joiner/src/resp.js';
import { PartitionStore, partitionKeys } from '../../apps/joiner/src/store.js';
import { JOIN_SETTINGS as settings, conversation, shuffle, workload } from './lib/joiner-workload.js';
import { cpuSeconds, machineLine, table, writeSection } from './lib/report.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const CONVERSATIONS = Number(args.conversations ?? 50_000);
const BATCH = Number(args.batch ?? 1000);
const PARTS = (args.parts ?? 'transform,redis').split(',');
const ROUNDS = Number(args.rounds ?? 5);
const CLUSTER = 'cluster' in args;
const root = join(import.meta.dirname, '../..');

/** Profiles this process from now (the inspector's same-thread session answers synchronously). */
function startProfile(): Session {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 100 });
  session.post('Profiler.start');
  return session;
}

function stopProfile(session: Session, file: string): void {
  session.post('Profiler.stop', (error, result) => {
    if (error) throw error;
    mkdirSync(join(file, '..'), { recursive: true });
    writeFileSync(file, JSON.stringify(result.profile));
    process.stderr.write(`joiner bench: profile ${file}\n`);
  });
  session.disconnect();
}

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

const f = (x: number, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const sections: string[] = [];
const load = workload(CONVERSATIONS, BATCH);
const recordBytes = (load.bytes / load.records).toFixed(0);

if (PARTS.includes('transform')) {
  const view = new FlowBatchView();
  const writer = new FlowBatchWriter(4 * 1024 * 1024);
  const delta = new Delta();
  const stats = new JoinStats();
  const rows: string[][] = [];
  let profiled = 0;
  const measure = (label: string, run: () => number) => {
    run(); // warm up
    const figures: number[] = [];
    const profiler = args.profile ? startProfile() : undefined;
    for (let r = 0; r < ROUNDS; r++) {
      const before = cpuUs();
      const n = run();
      figures.push((cpuUs() - before) / n);
    }
    if (profiler) stopProfile(profiler, join(args.profile!, `transform-${++profiled}.cpuprofile`));
    figures.sort((a, b) => a - b);
    const median = figures[Math.floor(figures.length / 2)]!;
    rows.push([label, f(median, 2), f(1e6 / median)]);
    process.stderr.write(`joiner bench: ${label}: ${median.toFixed(2)} µs/record\n`);
  };
  measure('copy every record (byte-path floor)', () => {
    for (const bytes of load.batches) {
      view.parse(bytes);
      writer.reset();
      writer.open({ batchId: 'joiner:x', producer: 'joiner', createdNs: view.createdNs }, 1 << 24);
      for (let i = 0; i < view.length; i++) writer.copyRecord(view, i);
      writer.parts();
    }
    return load.records;
  });
  measure('protobuf-es decode + encode once (object model, before)', () => {
    for (const bytes of load.batches) toBinary(FlowBatchSchema, fromBinary(FlowBatchSchema, bytes));
    return load.records;
  });
  let joined = 0;
  // Later intervals of the same conversations: both ends cached, every record joins at once.
  const later = workload(CONVERSATIONS, BATCH, 1);
  const warm = new PartitionJoin(settings);
  let seq = 0;
  for (const [b, bytes] of load.batches.entries()) {
    view.parse(bytes);
    writer.reset();
    writer.open({ batchId: 'joiner:x', producer: 'joiner', createdNs: view.createdNs }, 1 << 24);
    warm.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), load.times[b]!, ++seq, writer, delta, stats);
    warm.release(delta);
    delta.clear();
  }
  measure('the join, later intervals (ends cached: every record joins at once)', () => {
    for (const [b, bytes] of later.batches.entries()) {
      view.parse(bytes);
      writer.reset();
      writer.open({ batchId: 'joiner:x', producer: 'joiner', createdNs: view.createdNs }, 1 << 24);
      delta.clear();
      stats.clear();
      warm.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 50_000 + later.times[b]!, ++seq, writer, delta, stats);
      writer.parts();
      warm.release(delta);
    }
    if (stats.immediate === 0) throw new Error('later intervals did not join at once');
    return later.records;
  });
  measure('the join, every conversation new (first records wait, ends stored)', () => {
    const join = new PartitionJoin(settings);
    joined = 0;
    for (const [b, bytes] of load.batches.entries()) {
      view.parse(bytes);
      writer.reset();
      writer.open({ batchId: 'joiner:x', producer: 'joiner', createdNs: view.createdNs }, 1 << 24);
      delta.clear();
      stats.clear();
      join.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), load.times[b]!, b + 1, writer, delta, stats);
      for (const p of writer.parts()) joined += p.records;
      join.release(delta);
    }
    return load.records;
  });
  if (joined !== load.records) throw new Error(`the join emitted ${joined} of ${load.records} records`);
  measure('the join, every conversation new, + its Redis commits written (fold, RESP bytes)', () => {
    const join = new PartitionJoin(settings);
    const set = new CommitSet();
    // The client side of a commit: the commands the store sends, without the socket.
    const commands = new CommitCommands();
    const keys = partitionKeys(0);
    for (const [b, bytes] of load.batches.entries()) {
      view.parse(bytes);
      writer.reset();
      writer.open({ batchId: 'joiner:x', producer: 'joiner', createdNs: view.createdNs }, 1 << 24);
      delta.clear();
      stats.clear();
      join.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), load.times[b]!, b + 1, writer, delta, stats);
      writer.parts();
      set.clear();
      set.add(delta);
      commands.build(keys.ends(1), keys.pending(1), set);
      join.release(delta);
    }
    return load.records;
  });
  // One UDP socket asking 1000 servers: the client's 1000 records wait in ONE group; then the
  // servers' 1000 answers come. Each answer finds its waiting record by name, no scan.
  {
    const socket = new PartitionJoin(settings);
    const client = { ip: '10.1.0.1', port: 5353 };
    const ask = (vantage: Vantage, i: number) =>
      newFlowRecord({ node: vantage === Vantage.SRC ? 'node-a' : 'node-b', vantage, protocol: IpProtocol.UDP, src: { ...client, ...(vantage === Vantage.SRC ? { process: { pid: 1, name: 'resolver' } } : {}) }, dst: { ip: `10.2.${i >> 8}.${i & 255}`, port: 53, ...(vantage === Vantage.DST ? { process: { pid: 100 + i, name: 'dns' } } : {}) }, observation: 'socket' });
    const asks = encodeFlowBatch(newFlowBatch({ batchId: 'asks', records: Array.from({ length: 1000 }, (_, i) => ask(Vantage.SRC, i)) }));
    const answers = encodeFlowBatch(newFlowBatch({ batchId: 'answers', records: Array.from({ length: 1000 }, (_, i) => ask(Vantage.DST, i)) }));
    const run = (bytes: Uint8Array, seq: number) => {
      view.parse(bytes);
      writer.reset();
      writer.open({ batchId: 'joiner:x', producer: 'joiner', createdNs: 0n }, 1 << 24);
      socket.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 1000 + seq, seq, writer, delta, stats);
      return writer.parts().reduce((n, p) => n + p.records, 0);
    };
    run(asks, 1);
    const started = process.hrtime.bigint();
    const out = run(answers, 2);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (out !== 2000) throw new Error(`one socket: ${out} records out, not 2000`);
    rows.push(['one UDP socket, 1000 servers: the 1000 answers (and the 1000 waiting asks) joined', `${f(ms, 1)} ms wall for the batch`, '']);
  }
  sections.push(
    [
      `Transform in process, bytes in → bytes out (${f(load.records)} records, ${recordBytes} B each, both ends of ${f(CONVERSATIONS)} conversations shuffled, ${BATCH} per batch; median of ${ROUNDS} rounds of CPU time):`,
      '',
      table(['', 'CPU µs per record', 'records/s per core'], rows),
    ].join('\n'),
  );
}

if (PARTS.includes('redis')) {
  const redis = await startRedisServer();
  const client = new Redis({ port: redis.port, host: '127.0.0.1', enableAutoPipelining: true, maxRetriesPerRequest: 0 });
  try {
    const store = new PartitionStore(client, 'bench');
    const got = await store.acquire(0, 600_000, true);
    if (got.status !== 'acquired') throw new Error('no lease');
    const info = async () => {
      const text = await client.info();
      return {
        cpu: Number(/used_cpu_user:([\d.]+)/.exec(text)?.[1]) + Number(/used_cpu_sys:([\d.]+)/.exec(text)?.[1]),
        memory: Number(/used_memory:(\d+)/.exec(text)?.[1]),
        // Every command Redis ran (MULTI, EXEC and each command inside count one each).
        commands: Number(/total_commands_processed:(\d+)/.exec(text)?.[1]),
      };
    };
    const view = new FlowBatchView();
    const writer = new FlowBatchWriter(4 * 1024 * 1024);
    const join = new PartitionJoin(settings);
    const before = await info();
    let commits = 0;
    let fields = 0;
    for (const [b, bytes] of load.batches.entries()) {
      view.parse(bytes);
      writer.reset();
      writer.open({ batchId: 'joiner:x', producer: 'joiner', createdNs: view.createdNs }, 1 << 24);
      const delta = new Delta();
      join.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), load.times[b]!, b + 1, writer, delta, new JoinStats());
      const set = new CommitSet();
      set.add(delta);
      fields += set.size;
      await store.commit(0, got.epoch, b + 1, join.clock, 'bench', set);
      commits++;
    }
    const after = await info();
    const redisUs = ((after.cpu - before.cpu) * 1e6) / load.records;
    const commandsPerRecord = (after.commands - before.commands - 1) / load.records;
    // Baseline of the same run: one plain HSET per record (a record-sized value, pipelined),
    // what a join that writes Redis once per record would cost at least.
    const value = Buffer.alloc(Math.round(load.bytes / load.records), 7);
    const baseBefore = await info();
    for (let i = 0; i < load.records; i += 1000) {
      await Promise.all(Array.from({ length: Math.min(1000, load.records - i) }, (_, k) => client.hset('kappa:{base}:h', `f${i + k}`, value)));
    }
    const baseUs = (((await info()).cpu - baseBefore.cpu) * 1e6) / load.records;
    // Memory per waiting record: one end of fresh conversations only (their peers never come).
    await client.flushall();
    const lonelyStore = new PartitionStore(client, 'bench-lonely');
    const lonelyLease = await lonelyStore.acquire(1, 600_000, true);
    if (lonelyLease.status !== 'acquired') throw new Error('no lease');
    const lonely = new PartitionJoin({ ...settings, joinWaitMs: 3_600_000 });
    const memBefore = (await info()).memory;
    let waiting = 0;
    let lonelyBytes = 0;
    for (let i = 0; i < CONVERSATIONS; i += BATCH) {
      const records = Array.from({ length: Math.min(BATCH, CONVERSATIONS - i) }, (_, k) => conversation(1_000_000 + i + k, 0)[0]);
      const bytes = encodeFlowBatch(newFlowBatch({ batchId: `lonely-${i}`, records }));
      view.parse(bytes);
      for (let r = 0; r < view.length; r++) lonelyBytes += view.recordEnd(r) - view.recordStart(r);
      writer.reset();
      writer.open({ batchId: 'x', producer: 'joiner', createdNs: 0n }, 1 << 24);
      const delta = new Delta();
      lonely.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), 1000, i / BATCH + 1, writer, delta, new JoinStats());
      const set = new CommitSet();
      set.add(delta);
      await lonelyStore.commit(1, lonelyLease.epoch, i / BATCH + 1, lonely.clock, 'bench', set);
    }
    waiting = lonely.pendingCount;
    const memAfter = (await info()).memory;
    sections.push(
      [
        `Redis (redis-server 7.0, AOF everysec, one client; the commits of the join above, ${f(commits)} MULTI/EXEC of ${f(fields)} field writes for ${f(load.records)} records):`,
        '',
        table(
          ['', 'figure'],
          [
            ['redis-server CPU per record, the joiner\'s commits', `${f(redisUs, 2)} µs (${f(fields / load.records, 2)} field writes per record)`],
            ['Redis commands per record, the joiner\'s commits (MULTI, EXEC and each command inside counted)', f(commandsPerRecord, 3)],
            ['redis-server CPU per record, baseline: one pipelined HSET per record', `${f(baseUs, 2)} µs`],
            ['Redis memory per waiting record (one end only, its end cached too)', `${f((memAfter - memBefore) / waiting)} B for a ${f(lonelyBytes / waiting)} B record (${f(waiting)} waiting)`],
          ],
        ),
      ].join('\n'),
    );
  } finally {
    client.disconnect();
    await redis.stop();
  }
}

/** One admin connection per redis-server (one, or each node of a Redis Cluster). */
class RedisNodes {
  private readonly clients: Redis[];
  /** Primaries counted by the last commands() (each INFO counts one command). */
  primaries = 0;
  constructor(ports: number[]) {
    this.clients = ports.map((port) => new Redis({ port, host: '127.0.0.1' }));
  }
  /** FLUSHALL on every primary (a replica refuses writes and follows its primary). */
  async flushall(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.flushall().catch(() => undefined)));
  }
  /** Commands the primaries have run since they started (INFO stats; the INFO itself counts one each). */
  async commands(): Promise<number> {
    let total = 0;
    this.primaries = 0;
    for (const client of this.clients) {
      const info = await client.info();
      if (!/^role:master/m.test(info)) continue;
      this.primaries++;
      total += Number(/total_commands_processed:(\d+)/.exec(info)?.[1]);
    }
    return total;
  }
  disconnect(): void {
    for (const client of this.clients) client.disconnect();
  }
}

if (PARTS.includes('process')) {
  sections.push(await processPart());
}

async function processPart(): Promise<string> {
  const replicaCounts = (args.replicas ?? '1,3').split(',').map(Number);
  const partitions = 16;
  // --cluster: the cluster topology of `npm run up -- --cluster` (three nats-servers, streams R3;
  // a Redis Cluster of 3 primaries and 3 replicas); server CPU is summed over every server.
  const workDir = mkdtempSync(join(tmpdir(), 'kappa-bench-joiner-'));
  const natsServers = CLUSTER ? await startNatsCluster(`bench-nats-${process.pid}`, 3, workDir) : [await startNatsServer()];
  const redisServers = CLUSTER ? await startRedisCluster() : [await startRedisServer()];
  const nats = { urls: natsServers.map((n) => n.url), cpu: () => natsServers.reduce((sum, n) => sum + cpuSeconds(n.process.pid!), 0) };
  const redis = { url: redisServers[0]!.url, cpu: () => redisServers.reduce((sum, n) => sum + cpuSeconds(n.process.pid!), 0) };
  const topology = CLUSTER ? ['--redis-cluster', '--stream-replicas=3'] : [];
  const rows: string[][] = [];
  try {
    const { connectBus, subjects } = await import('@kappa/bus');
    const { createLogger, createRegistry } = await import('@kappa/observability');
    const bus = await connectBus({ servers: nats.urls, name: 'bench-joiner', logger: createLogger('bench', 'warn'), registry: createRegistry('bench') });
    const admin = new RedisNodes(redisServers.map((n) => n.port));
    /** Interval n of every conversation, per partition as the tagger publishes it, encoded ahead. */
    const interval = (n: number) => {
      const records = shuffle(Array.from({ length: CONVERSATIONS }, (_, i) => conversation(i, n)).flat(), 11 + n);
      const byPartition = new Map<number, FlowRecord[]>();
      for (const r of records) {
        const k = partitionOfRecord(r, partitions);
        const list = byPartition.get(k) ?? [];
        list.push(r);
        byPartition.set(k, list);
      }
      const messages: { subject: string; id: string; bytes: Uint8Array }[] = [];
      for (const [k, list] of byPartition) {
        for (let i = 0; i < list.length; i += BATCH) {
          const id = `tagger:i${n}-p${k}-${i}`;
          messages.push({ subject: subjects.tagged(k), id, bytes: encodeFlowBatch(newFlowBatch({ batchId: id, producer: 'bench', createdNs: 1n, records: list.slice(i, i + BATCH) })) });
        }
      }
      return { messages, records: records.length };
    };
    const phases = [interval(0), interval(1)];
    try {
      for (const replicas of replicaCounts) {
        await bus.deleteStream('KAPPA_FLOWS');
        await bus.ensureStreams({ maxBytes: 8 * 1024 ** 3, maxAgeMs: 3_600_000, ...(CLUSTER ? { replicas: 3 } : {}) });
        await admin.flushall();
        // The joiners start and take their partitions first: their start-up is not counted.
        const children = await Promise.all(
          Array.from({ length: replicas }, (_, n) =>
            startJoinerProcess([`--nats-url=${nats.urls.join(',')}`, `--redis-url=${redis.url}`, ...topology, '--metrics-port=0', '--log-level=warn', `--instance=bench-${n}`, '--join-wait=120s', `--partitions=${partitions}`]),
          ),
        );
        try {
          const ownedDeadline = Date.now() + 60_000;
          for (;;) {
            let owned = 0;
            for (const c of children) owned += await metric(c.port, 'kappa_joiner_partitions_owned');
            if (owned === partitions) break;
            if (Date.now() > ownedDeadline) throw new Error(`the joiners own ${owned} of ${partitions} partitions after a minute`);
            await new Promise((r) => setTimeout(r, 200));
          }
          let expected = 0;
          for (const [n, phase] of phases.entries()) {
            const cpu = { nats: nats.cpu(), redis: redis.cpu(), joiners: children.reduce((sum, c) => sum + cpuSeconds(c.child.pid!), 0) };
            const commandsBefore = await admin.commands();
            const started = Date.now();
            for (let i = 0; i < phase.messages.length; i += 16) await Promise.all(phase.messages.slice(i, i + 16).map((m) => bus.publishBytes(m.subject, m.bytes, m.id)));
            expected += phase.records;
            const deadline = started + 600_000;
            for (let out = 0; out < expected; ) {
              if (Date.now() > deadline) throw new Error(`${out} of ${expected} records out after 10 minutes`);
              await new Promise((r) => setTimeout(r, 100));
              out = 0;
              for (const c of children) out += await metric(c.port, 'kappa_joiner_records_out_total');
            }
            const seconds = (Date.now() - started) / 1000;
            const us = (s: number) => f((s * 1e6) / phase.records, 1);
            const joinerCpu = children.reduce((sum, c) => sum + cpuSeconds(c.child.pid!), 0) - cpu.joiners;
            const label = n === 0 ? 'first interval: every conversation new' : 'next interval: ends cached';
            const commands = (await admin.commands()) - commandsBefore - admin.primaries;
            rows.push([String(replicas), label, f(phase.records / seconds), us(joinerCpu), us(nats.cpu() - cpu.nats), us(redis.cpu() - cpu.redis), f(commands / phase.records, 3)]);
            process.stderr.write(`joiner bench: ${replicas} replica(s), ${label}: ${f(phase.records / seconds)} records/s\n`);
          }
        } finally {
          for (const c of children) {
            c.child.kill('SIGTERM');
            await new Promise((r) => c.child.once('exit', r));
          }
        }
      }
    } finally {
      admin.disconnect();
      await bus.close();
    }
  } finally {
    await Promise.all([...natsServers, ...redisServers].map((server) => server.stop()));
    rmSync(workDir, { recursive: true, force: true });
  }
  return [
    ...(CLUSTER ? ['On the cluster topology (--cluster): three nats-servers routed together with KAPPA_FLOWS R3, a Redis Cluster of 3 primaries and 3 replicas (AOF everysec); nats-server and redis-server CPU summed over all of them, Redis commands over the primaries.', ''] : []),
    `The built joiner, its partitions taken, then sent ${f(CONVERSATIONS * 2)} records per interval (both ends of ${f(CONVERSATIONS)} conversations, shuffled, ${BATCH} per batch and partition, 16 partitions) as fast as the bench publishes; records/s from the first publish to the last record out; CPU µs per record of each process over that time (the joiners' summed):`,
    '',
    table(['replicas', 'interval', 'records/s', 'joiners CPU µs/record', 'nats-server CPU µs/record', 'redis-server CPU µs/record', 'Redis commands/record'], rows),
  ].join('\n');
}

async function startJoinerProcess(argv: string[]): Promise<{ child: ReturnType<typeof spawn>; port: number }> {
  const profile = args.profile ? ['--cpu-prof', `--cpu-prof-dir=${args.profile}`] : [];
  const child = spawn(join(root, 'node_modules/.bin/node'), [...profile, join(root, 'apps/joiner/bin/kappa-joiner.js'), ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
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
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text().catch(() => '');
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) sum += Number(line.split(' ').pop());
  return sum;
}

const markdown = [`Command: \`npm run bench:joiner${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\``, '', ...sections.flatMap((s) => [s, '']), machineLine()].join('\n');
console.log(markdown);
writeSection(CLUSTER ? 'joiner-cluster' : 'joiner', markdown);
