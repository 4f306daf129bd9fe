// A/B of the stage runner (libs/bus: consume, view, output batches, publish, PubAck, ack, nats.js
// copies) between two checkouts, each in a process of its own (the nats.js changes are installed per
// process), on one real nats-server: each run publishes the same backlog of input batches shaped
// like the tagger's at 20 000 records/s (one node's partition batches, ~600 records), then a child
// process of one checkout drains it through startStage with a transform that copies every record.
// Runs alternate between the checkouts (order flipped each round), so the machine's load falls on
// both alike; every run's output is read back and must be byte for byte the same.
// Run: node_modules/.bin/node --import tsx tools/bench/stage-ab.ts --base=/work/wt/base [--rounds=7 --messages=480
//   --records=625 --in-flight=4 --warm-up=96 --profile=this|base [--profile-dir=DIR | --wrap='perf record -g -o F --']]   (without --base: this checkout against itself, an A/A run)
// The base checkout needs a node_modules whose @kappa/* links point into itself (see joiner-ab.ts).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connectBus } from '@kappa/bus';
import { FlowBatchWriter, FlowRecordSchema, toBinary } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer } from '@kappa/testing';
import { conversation } from './lib/joiner-workload.js';
import { median } from './lib/processes.js';
import { cpuSeconds } from './lib/report.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const here = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const base = args.base ? resolve(args.base) : here;
const ROUNDS = Number(args.rounds ?? 7);
const MESSAGES = Number(args.messages ?? 480);
const RECORDS = Number(args.records ?? 625);
const IN_FLIGHT = Number(args['in-flight'] ?? 4);
/** Batches each side handles before its measurement starts (the JIT warms up on them). */
const WARM_UP = Number(args['warm-up'] ?? 96);
const TOTAL = MESSAGES * RECORDS;

// The backlog: records like the pipeline's (both ends of pod conversations, with process and
// Kubernetes metadata), each encoded once, written into batches of RECORDS on the enricher's
// subjects (16 partitions of one node).
const pool = Array.from({ length: 500 }, (_, i) => conversation(i, 0).map((r) => toBinary(FlowRecordSchema, r))).flat();
const writer = new FlowBatchWriter(1 << 20);
const backlog: { subject: string; id: string; bytes: Uint8Array }[] = [];
for (let m = 0; m < MESSAGES; m++) {
  writer.reset();
  writer.open({ batchId: `process-enricher:capture:node-a:${m}:p${m % 16}`, producer: 'node-a', createdNs: 1_800_000_000_000_000_000n + BigInt(m) }, 1 << 30);
  for (let r = 0; r < RECORDS; r++) writer.recordBytes(pool[(m * RECORDS + r) % pool.length]!);
  const [part] = writer.parts();
  backlog.push({ subject: `kappa.flow.enriched.p${m % 16}.node-a`, id: part!.id, bytes: part!.bytes.slice() });
}
const backlogBytes = backlog.reduce((a, b) => a + b.bytes.byteLength, 0);

const nats = await startNatsServer();
const bus = await connectBus({ servers: [nats.url], name: 'bench-stage-ab', logger: createLogger('bench', 'warn'), registry: createRegistry('bench') });
const nc = await connect({ servers: nats.url });

/** Every output message (its Nats-Msg-Id and bytes), hashed in id order. */
async function outputDigest(): Promise<{ digest: string; messages: number; bytes: number }> {
  const jsm = await jetstreamManager(nc);
  const name = `verify-${Date.now()}`;
  await jsm.consumers.add('KAPPA_FLOWS', { name, filter_subject: 'kappa.flow.tagged.>', ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000, deliver_policy: DeliverPolicy.All, inactive_threshold: 60_000_000_000 });
  const consumer = await jetstream(nc).consumers.get('KAPPA_FLOWS', name);
  const pending = (await consumer.info()).num_pending;
  const entries: string[] = [];
  let bytes = 0;
  if (pending > 0) {
    const messages = await consumer.consume({ max_messages: 64 });
    for await (const m of messages) {
      entries.push(`${m.headers?.get('Nats-Msg-Id') ?? ''} ${createHash('sha256').update(m.data).digest('hex')}`);
      bytes += m.data.byteLength;
      m.ack();
      if (entries.length >= pending) break;
    }
  }
  await jsm.consumers.delete('KAPPA_FLOWS', name);
  return { digest: createHash('sha256').update(entries.sort().join('\n')).digest('hex').slice(0, 16), messages: entries.length, bytes };
}

interface Run {
  side: 'base' | 'this';
  round: number;
  usPerRecord: number;
  natsUsPerRecord: number;
  wallMs: number;
  gc: { minor: number; major: number; ms: number };
  digest: string;
}

async function run(side: 'base' | 'this', round: number): Promise<Run> {
  // A fresh stream each run: no dedupe memory of the last run's ids, no consumer left.
  await bus.deleteStream('KAPPA_FLOWS');
  await bus.ensureStreams();
  for (let i = 0; i < backlog.length; i += 16) await Promise.all(backlog.slice(i, i + 16).map((b) => bus.publishBytes(b.subject, b.bytes, b.id)));
  const root = side === 'base' ? base : here;
  const natsPid = nats.process.pid!;
  const natsBefore = cpuSeconds(natsPid);
  const profile = args.profile === side && !args.wrap ? [`--cpu-prof`, `--cpu-prof-dir=${args['profile-dir'] ?? '/tmp'}`] : [];
  // --wrap="perf record -g -o F --" runs the side under a tool (a profiled side pays for it).
  const wrap = args.profile === side && args.wrap ? args.wrap.split(' ') : [];
  const child = spawn(wrap[0] ?? process.execPath, [...wrap.slice(1), ...(wrap.length > 0 ? [process.execPath, '--perf-basic-prof'] : []), ...profile, '--import', 'tsx', join(here, 'tools/bench/lib/stage-ab-child.ts'), `--root=${root}`, `--nats=${nats.url}`, `--records=${TOTAL}`, `--in-flight=${IN_FLIGHT}`, `--warm-up=${WARM_UP}`], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  const natsCpu = cpuSeconds(natsPid) - natsBefore;
  if (code !== 0) throw new Error(`stage-ab: the ${side} side exited with ${code}: ${out}`);
  const result = JSON.parse(out.trim().split('\n').at(-1)!) as { cpuUs: number; wallMs: number; records: number; gc: Run['gc']; fromUs: number; toUs: number };
  if (profile.length > 0) process.stdout.write(`profile of the ${side} side: samples from ${result.fromUs} to ${result.toUs} µs are the measured window\n`);
  const { digest, messages } = await outputDigest();
  if (messages !== MESSAGES) throw new Error(`stage-ab: the ${side} side published ${messages} output messages, not ${MESSAGES}`);
  return { side, round, usPerRecord: result.cpuUs / result.records, natsUsPerRecord: (natsCpu * 1e6) / TOTAL, wallMs: result.wallMs, gc: result.gc, digest };
}

const f = (n: number, d = 2) => n.toFixed(d);
const loadStart = loadavg()[0]!;
process.stdout.write(`stage-ab: base ${base}, this ${here}; ${MESSAGES} messages of ${RECORDS} records (${f(backlogBytes / MESSAGES / 1024, 0)} KiB each), ${IN_FLIGHT} in flight, ${ROUNDS} rounds (round 0 is warm-up); load ${f(loadStart)}\n`);
const runs: Run[] = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    const order: ('base' | 'this')[] = round % 2 === 0 ? ['base', 'this'] : ['this', 'base'];
    for (const side of order) {
      const r = await run(side, round);
      runs.push(r);
      process.stdout.write(`round ${round} ${side.padEnd(4)}: ${f(r.usPerRecord)} µs CPU per record (nats-server ${f(r.natsUsPerRecord)}), ${f(r.wallMs, 0)} ms, GC ${r.gc.minor} minor + ${r.gc.major} major ${f(r.gc.ms, 0)} ms, output ${r.digest}\n`);
    }
  }
} finally {
  await nc.close();
  await bus.close();
  await nats.stop();
}
const digests = new Set(runs.map((r) => r.digest));
const measured = runs.filter((r) => r.round > 0);
const of = (side: 'base' | 'this', key: 'usPerRecord' | 'natsUsPerRecord') => measured.filter((r) => r.side === side).map((r) => r[key]);
const ratios = [...new Set(measured.map((r) => r.round))].map((round) => {
  const pick = (side: string) => measured.find((r) => r.round === round && r.side === side)!.usPerRecord;
  return pick('this') / pick('base');
});
process.stdout.write(
  `median µs CPU per record: base ${f(median(of('base', 'usPerRecord')))} / this ${f(median(of('this', 'usPerRecord')))} (this/base per round: ${ratios.map((x) => f(x)).join(' ')}, median ${f(median(ratios))}); ` +
    `nats-server base ${f(median(of('base', 'natsUsPerRecord')))} / this ${f(median(of('this', 'natsUsPerRecord')))}; load ${f(loadStart)} → ${f(loadavg()[0]!)}; ` +
    `output ${digests.size === 1 ? 'byte-identical in every run' : `DIFFERS: ${[...digests].join(' ')}`}\n`,
);
if (digests.size !== 1) process.exitCode = 1;
