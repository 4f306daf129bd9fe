// A/B of the joiner's transform (bytes in → bytes out) between two checkouts in ONE process:
// rounds alternate between them (order flipped every round), so the machine's load, which moves
// the figures of separate runs by more than most changes do, falls on both alike. It also checks
// that both write the same output bytes. The base checkout needs a node_modules whose @kappa/*
// links point into itself, e.g. for main at /work/wt/base:
//   git worktree add --detach /work/wt/base main
//   mkdir /work/wt/base/node_modules && for e in node_modules/* node_modules/.bin; do
//     [ "$(basename $e)" = @kappa ] || ln -s "$PWD/$e" /work/wt/base/node_modules/; done
//   cp -a node_modules/@kappa /work/wt/base/node_modules/   (relative links: they point into base)
// Run: node --import tsx tools/bench/joiner-ab.ts --base=/work/wt/base [--rounds=9 --conversations=50000]
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type * as Contracts from '@kappa/contracts';
import type * as Partition from '../../apps/joiner/src/partition.js';
import { JOIN_SETTINGS, workload } from './lib/joiner-workload.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
if (!args.base) throw new Error('joiner-ab: --base=DIR (a checkout to compare this one with) is required');
const ROUNDS = Number(args.rounds ?? 9);
const CONVERSATIONS = Number(args.conversations ?? 50_000);
const BATCH = 1000;

/** What the A/B drives of a checkout: its record view and its partition join. */
interface Stack {
  FlowBatchView: typeof Contracts.FlowBatchView;
  FlowBatchWriter: typeof Contracts.FlowBatchWriter;
  PartitionJoin: typeof Partition.PartitionJoin;
  Delta: typeof Partition.Delta;
  JoinStats: typeof Partition.JoinStats;
}

async function stack(root: string): Promise<Stack> {
  const contracts = (await import(join(root, 'libs/contracts/src/index.ts'))) as typeof Contracts;
  const partition = (await import(join(root, 'apps/joiner/src/partition.ts'))) as typeof Partition;
  return { FlowBatchView: contracts.FlowBatchView, FlowBatchWriter: contracts.FlowBatchWriter, PartitionJoin: partition.PartitionJoin, Delta: partition.Delta, JoinStats: partition.JoinStats };
}

const first = workload(CONVERSATIONS, BATCH);
const later = workload(CONVERSATIONS, BATCH, 1);
const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

type Case = 'cached' | 'new' | 'parse';
const CASES: Case[] = ['cached', 'new', 'parse'];

/** One checkout's cases, each returning CPU µs per record; the warm-up's output is hashed. */
function side(s: Stack) {
  const view = new s.FlowBatchView();
  const writer = new s.FlowBatchWriter(4 * 1024 * 1024);
  const delta = new s.Delta();
  const stats = new s.JoinStats();
  const hash = createHash('sha256');
  const pass = (partition: InstanceType<Stack['PartitionJoin']>, load: typeof first, t0: number, seq0: number, digest: boolean) => {
    for (const [b, bytes] of load.batches.entries()) {
      view.parse(bytes);
      writer.reset();
      writer.open({ batchId: 'joiner:x', producer: 'joiner', createdNs: view.createdNs }, 1 << 24);
      delta.clear();
      stats.clear();
      partition.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), t0 + load.times[b]!, seq0 + b + 1, writer, delta, stats);
      for (const part of writer.parts()) if (digest) hash.update(part.bytes);
      partition.release(delta);
    }
  };
  const warm = new s.PartitionJoin(JOIN_SETTINGS);
  pass(warm, first, 0, 0, true);
  let seq = 0;
  const run: Record<Case, (digest?: boolean) => number> = {
    // Later intervals of the same conversations: both ends cached, every record joins at once.
    cached: (digest = false) => {
      const t = cpuUs();
      pass(warm, later, 50_000, (seq += 1000), digest);
      return (cpuUs() - t) / later.records;
    },
    new: (digest = false) => {
      const partition = new s.PartitionJoin(JOIN_SETTINGS);
      const t = cpuUs();
      pass(partition, first, 0, 0, digest);
      return (cpuUs() - t) / first.records;
    },
    parse: () => {
      const t = cpuUs();
      for (const bytes of later.batches) view.parse(bytes);
      return (cpuUs() - t) / later.records;
    },
  };
  return { run, digest: () => hash.digest('hex') };
}

const a = side(await stack(args.base));
const b = side(await stack(join(import.meta.dirname, '../..')));
a.run.cached(true);
b.run.cached(true);
a.run.new(true);
b.run.new(true);
const [digestA, digestB] = [a.digest(), b.digest()];
if (digestA !== digestB) throw new Error(`joiner-ab: the two checkouts wrote different output (${digestA.slice(0, 12)} vs ${digestB.slice(0, 12)})`);
const figures = Object.fromEntries(CASES.map((c) => [c, [[], []] as number[][]])) as Record<Case, number[][]>;
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 === 0 ? ([[a, 0], [b, 1]] as const) : ([[b, 1], [a, 0]] as const);
  for (const c of CASES) for (const [s, i] of order) figures[c][i]!.push(s.run[c]());
}
const median = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)]!;
console.log(`joiner-ab: ${CONVERSATIONS} conversations, ${ROUNDS} rounds each, output identical; CPU µs per record, base → this checkout`);
for (const c of CASES) {
  const [base, mine] = figures[c] as [number[], number[]];
  const faster = base.filter((v, i) => mine[i]! < v).length;
  console.log(`${c.padEnd(6)} ${median(base).toFixed(2)} → ${median(mine).toFixed(2)}  ratio ${(median(mine) / median(base)).toFixed(3)}  (faster in ${faster} of ${ROUNDS} rounds)`);
}
