// The exec program's cost (bpf/kappa_exec.h, tp_btf sched:sched_process_exec): it runs for every
// exec on the node. kappa-capture is attached to a cgroup of its own; a shell execs /bin/true
// `--execs` times (with ~200 bytes of arguments) inside that cgroup (the full path: argument list
// copied, event sent to the enricher's socket), then as many times outside it (the early return).
// bpf_stats (run_time_ns / run_cnt of capture's own kappa_exec) before and after each loop.
// Writes section `exec`.
//   npm run bench:exec -- [--execs 2000]      (root; after `npm run build`)
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TestCgroup, childEnv, run } from '@kappa/testing';
import { requireBuild, stopAll, waitFor } from './lib/processes.js';
import { machineLine, repoRoot, table, writeSection } from './lib/report.mjs';

const { values } = parseArgs({ options: { execs: { type: 'string', default: '2000' } } });
const execs = Number(values.execs);
const captureBin = join(repoRoot, 'apps/capture/bin/kappa-capture.js');
requireBuild('bench:exec', ['apps/capture/dist/main.js', 'bpf/.output/kappa.bpf.o']);

const work = mkdtempSync(join(tmpdir(), 'kbd-exec-'));
const cgroup = new TestCgroup(`kbd-exec-${process.pid}`);
const socketPath = join(work, 'exec.sock');
const statsBefore = readFileSync('/proc/sys/kernel/bpf_stats_enabled', 'utf8').trim();
const children: ChildProcess[] = [];
// What the enricher would get: one JSON line per exec of the watched cgroup.
let lines = 0;
const server = createServer((socket) => socket.on('data', (chunk: Buffer) => (lines += chunk.toString().split('\n').length - 1)));
await new Promise<void>((resolve) => server.listen(socketPath, resolve));

type Prog = { id: number; name: string; run_time_ns?: number; run_cnt?: number };
const ARGS = Array.from({ length: 10 }, (_, i) => `--option-${i}=value-of-option-number-${i}`).join(' ');

/** Runs `execs` times /bin/true from one shell, in the cgroup or outside it. */
async function loop(inCgroup: boolean): Promise<void> {
  const join = inCgroup ? `echo $$ > ${cgroup.path}/cgroup.procs; ` : '';
  const child = spawn('sh', ['-c', `${join}i=0; while [ $i -lt ${execs} ]; do /bin/true ${ARGS}; i=$((i+1)); done`], { stdio: 'ignore', env: childEnv() });
  await new Promise((resolve) => child.once('exit', resolve));
}

try {
  const capture = spawn(process.execPath, [captureBin, `--cgroup=${cgroup.path}`, '--interval=1s', `--node=kbd-exec-${process.pid}`, '--stdout', '--metrics-port=0', `--exec-socket=${socketPath}`], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: childEnv(),
  });
  children.push(capture);
  await Promise.all([waitFor(capture, /"msg":"capturing"/, 'capture to attach'), waitFor(capture, /sending exec events/, 'capture to connect to the exec socket')]);
  const progIds = readdirSync(`/proc/${capture.pid}/fdinfo`)
    .map((fd) => /^prog_id:\s+(\d+)/m.exec(readFileSync(`/proc/${capture.pid}/fdinfo/${fd}`, 'utf8'))?.[1])
    .filter((id): id is string => id !== undefined)
    .map(Number);
  const execProg = (): Prog => {
    const prog = (JSON.parse(run('bpftool', ['-j', 'prog', 'show'])) as Prog[]).find((p) => progIds.includes(p.id) && p.name === 'kappa_exec');
    if (!prog) throw new Error('capture loaded no kappa_exec program (exec feature off?)');
    return prog;
  };
  run('sysctl', ['-qw', 'kernel.bpf_stats_enabled=1']);
  const measure = async (inCgroup: boolean) => {
    const before = execProg();
    const linesBefore = lines;
    const started = performance.now();
    await loop(inCgroup);
    const wallUs = ((performance.now() - started) * 1000) / execs;
    await new Promise((resolve) => setTimeout(resolve, 1500)); // capture reads the ring every 200 ms
    const after = execProg();
    const runs = (after.run_cnt ?? 0) - (before.run_cnt ?? 0);
    return { runs, ns: (after.run_time_ns ?? 0) - (before.run_time_ns ?? 0), events: lines - linesBefore, wallUs };
  };
  const outside = await measure(false);
  const inside = await measure(true);
  run('sysctl', ['-qw', `kernel.bpf_stats_enabled=${statsBefore}`]);
  await stopAll(children);

  const outsideNs = outside.ns / outside.runs;
  // The loop inside the cgroup also saw the node's other execs (outside it): take them out at the
  // outside cost measured just before.
  const others = inside.runs - inside.events;
  const insideNs = (inside.ns - others * outsideNs) / Math.max(1, inside.events);
  const rows = [
    ['outside the watched cgroup (early return)', outside.runs, Math.round(outsideNs), outside.events, Math.round(outside.wallUs)],
    ['inside it: argument list copied, event sent', inside.events, Math.round(insideNs), inside.events, Math.round(inside.wallUs)],
  ];
  const markdown = [
    '## exec program: cost per exec (bpf/kappa_exec.h)',
    '',
    `Command: \`npm run bench:exec -- --execs ${execs}\` (root, after \`npm run build\`). ${machineLine()}`,
    '',
    table(['execs', 'runs', 'ns per run (bpf_stats)', 'events received', 'µs per fork+exec of the loop (wall, for scale)'], rows),
    '',
    `/bin/true with 10 arguments (${ARGS.length + 10} bytes of argument list). Inside: ${inside.runs} runs during the loop, of which ${others} were other execs of the machine, taken out at the outside cost. ` +
      `The program adds ${((insideNs / 1000 / inside.wallUs) * 100).toFixed(2)} % to a fork+exec of a watched process and ${((outsideNs / 1000 / outside.wallUs) * 100).toFixed(2)} % to any other exec of the node ` +
      '(bpf_stats, which has a cost of its own, on; a loaded machine inflates both).',
  ].join('\n');
  writeSection('exec', markdown);
  process.stdout.write(`${markdown}\n`);
} finally {
  run('sysctl', ['-qw', `kernel.bpf_stats_enabled=${statsBefore}`]);
  await stopAll(children);
  server.close();
  cgroup.destroy();
  rmSync(work, { recursive: true, force: true });
}
