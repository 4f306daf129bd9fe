// How long kappa-capture takes to start, A/B between two checkouts in one run: a DaemonSet pod's
// start and every capture test pay it. Each round starts both builds (order flipped every round):
// `--stdout --metrics-port 0` timed to its "capturing" log line (wall, and the process's CPU read
// from /proc at that moment), then stopped with SIGINT; and `--check` timed to its exit.
// Run: node --import tsx tools/bench/capture-start.ts --base=/work/wt/base [--rounds=5]
//      Both checkouts need capture built (apps/capture/dist) and bpf/.output; as root.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { median, stopAll, waitFor } from './lib/processes.js';
import { cpuSeconds } from './lib/report.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/s.exec(a)?.slice(1) ?? [a])) as Record<string, string | undefined>;
if (!args.base) throw new Error('capture-start: --base=DIR (a checkout with capture built, to compare this one with) is required');
const ROUNDS = Number(args.rounds ?? 5);
const here = join(import.meta.dirname, '../..');
const checkouts = [args.base, here];
for (const c of checkouts) if (!existsSync(join(c, 'apps/capture/dist/main.js'))) throw new Error(`capture-start: ${c} has no built capture: (cd ${c}/apps/capture && npm run build)`);

interface Start {
  wallMs: number;
  cpuMs: number;
}

async function startToCapturing(checkout: string, round: number): Promise<Start> {
  const started = performance.now();
  const child = spawn(process.execPath, [join(checkout, 'apps/capture/dist/main.js'), '--stdout', '--metrics-port', '0', '--node', `capstart-${process.pid}-${round}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    await waitFor(child, /"msg":"capturing"/, 'kappa-capture');
    const wallMs = performance.now() - started;
    return { wallMs, cpuMs: cpuSeconds(child.pid!) * 1000 };
  } finally {
    await stopAll([child]);
  }
}

/** `--check` to its exit, its CPU as /usr/bin/time reports it. */
function check(checkout: string): Start {
  const started = performance.now();
  const run = spawnSync('/usr/bin/time', ['-f', 'cpu %U %S', process.execPath, join(checkout, 'apps/capture/dist/main.js'), '--check'], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  const wallMs = performance.now() - started;
  const cpu = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(run.stderr);
  if (run.status !== 0 || !cpu) throw new Error(`capture-start: --check of ${checkout} failed: ${run.stderr}`);
  return { wallMs, cpuMs: (Number(cpu[1]) + Number(cpu[2])) * 1000 };
}

const results = checkouts.map(() => ({ starts: [] as Start[], checks: [] as Start[] }));
const loads: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const order = round % 2 === 0 ? [0, 1] : [1, 0];
  for (const side of order) {
    results[side]!.starts.push(await startToCapturing(checkouts[side]!, round));
    results[side]!.checks.push(check(checkouts[side]!));
  }
  loads.push(loadavg()[0]!);
  console.log(
    `round ${round + 1}: ` +
      checkouts.map((c, side) => `${side === 0 ? 'base' : 'this'} start ${results[side]!.starts.at(-1)!.wallMs.toFixed(0)} ms (cpu ${results[side]!.starts.at(-1)!.cpuMs.toFixed(0)}), check ${results[side]!.checks.at(-1)!.wallMs.toFixed(0)} ms (cpu ${results[side]!.checks.at(-1)!.cpuMs.toFixed(0)})`).join(' | ') +
      ` load ${loadavg()[0]!.toFixed(1)}`,
  );
}
for (const [side, r] of results.entries()) {
  const m = (xs: Start[], k: keyof Start) => median(xs.map((x) => x[k])).toFixed(0);
  console.log(`${side === 0 ? 'base' : 'this'} (${checkouts[side]}): start to "capturing" median ${m(r.starts, 'wallMs')} ms wall, ${m(r.starts, 'cpuMs')} ms CPU; --check ${m(r.checks, 'wallMs')} ms wall, ${m(r.checks, 'cpuMs')} ms CPU (${ROUNDS} rounds)`);
}
const [base, mine] = results as [typeof results[0], typeof results[0]];
const lower = (k: 'starts' | 'checks', f: keyof Start) => mine[k].filter((x, i) => x[f] < base[k][i]![f]).length;
console.log(`this checkout lower than base in: start wall ${lower('starts', 'wallMs')}, start CPU ${lower('starts', 'cpuMs')}, --check wall ${lower('checks', 'wallMs')}, --check CPU ${lower('checks', 'cpuMs')} of ${ROUNDS} rounds`);
console.log(`load average over the rounds ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}`);
