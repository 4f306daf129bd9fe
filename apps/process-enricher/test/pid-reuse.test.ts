// Real pid reuse: inside a new PID namespace (unshare --pid), /proc/sys/kernel/ns_last_pid hands
// a dead process's pid to the next process for real. The resolver reads that namespace's /proc
// (through /proc/<its init>/root/proc) and must not lend the new process's data to the old record.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CgroupTree } from '../src/cgroup-tree.js';
import { checkPidNamespace } from '../src/host-pid.js';
import { ProcReader } from '../src/proc.js';
import { ProcessResolver } from '../src/resolver.js';
import { CgroupFixture, moveInto, waitFor } from './helpers.js';

const fixture = new CgroupFixture('ke-reuse');
const shapes = fixture.runtimeShapes();
let namespace: ChildProcess;
let replies: string[] = [];
let procRoot = '';

// A tiny command loop run as pid 1 of the new namespace.
const script = `
while read op a rest; do
  case $op in
    spawn) $a $rest & echo "pid $!" ;;
    kill) kill -9 $a; wait $a 2>/dev/null; echo "killed $a" ;;
    reuse) echo $((a - 1)) > /proc/sys/kernel/ns_last_pid; $rest & echo "pid $!" ;;
  esac
done`;

/** Waits until `pid` runs `program` (after fork, before exec, it still shows the shell). */
async function execed(pid: number, program: string): Promise<number> {
  await waitFor(`${pid} to exec ${program}`, () => (new ProcReader(procRoot).cmdline(pid)?.[0] === program ? true : undefined));
  return pid;
}

async function ask(line: string): Promise<string> {
  const before = replies.length;
  namespace.stdin?.write(`${line}\n`);
  return waitFor(`reply to ${line}`, () => replies[before]);
}

beforeAll(async () => {
  namespace = spawn('unshare', ['--pid', '--fork', '--mount-proc', 'sh', '-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  createInterface({ input: namespace.stdout! }).on('line', (l) => replies.push(l));
  const unsharePid = namespace.pid!;
  // pid 1 of the namespace is unshare's child; everything it starts inherits its cgroup.
  const initPid = await waitFor('the namespace init', () => {
    const children = readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').trim();
    return children === '' ? undefined : Number(children.split(' ')[0]);
  });
  moveInto(initPid, shapes.docker);
  procRoot = `/proc/${initPid}/root/proc`;
  await waitFor('the namespace /proc', () => (readFileSync(`${procRoot}/1/comm`, 'utf8').trim() === 'sh' ? true : undefined));
  replies = [];
});

afterAll(async () => {
  namespace?.kill('SIGKILL');
  await fixture.cleanup();
});

function resolver(): ProcessResolver {
  const tree = new CgroupTree({ mount: fixture.mount });
  tree.rescan();
  return new ProcessResolver({ proc: new ProcReader(procRoot), cgroupTree: tree, redaction: { enabled: true, extraPatterns: [] } });
}

describe('a pid reused for real in a PID namespace', () => {
  it('keeps the old process name and does not take the new command line (different program)', async () => {
    const old = await execed(Number((await ask('spawn sleep 1000')).split(' ')[1]), 'sleep');
    const proc = new ProcReader(procRoot);
    expect(proc.cmdline(old)).toEqual(['sleep', '1000']);
    const stamp = { pid: old, comm: 'sleep', cgroupId: shapes.docker.id, startTimeTicks: 0n };
    const flowEndNs = BigInt(Date.now()) * 1_000_000n;
    await ask(`kill ${old}`);
    const reused = await execed(Number((await ask(`reuse ${old} tail -f /dev/null`)).split(' ')[1]), 'tail');
    expect(reused).toBe(old); // the same pid, really held by another process now
    expect(proc.cmdline(reused)).toEqual(['tail', '-f', '/dev/null']);

    const r = resolver().resolve(stamp, flowEndNs);
    expect(r).toMatchObject({ pid: old, name: 'sleep', cmdline: '', exe: '', resolution: 'reused', container: { id: shapes.docker.containerId, runtime: 'docker' } });
    await ask(`kill ${reused}`);
  });

  it('tells a new process of the same program in the same container apart by its start time', async () => {
    const old = await execed(Number((await ask('spawn sleep 1001')).split(' ')[1]), 'sleep');
    const proc = new ProcReader(procRoot);
    const oldStart = proc.stat(old)!.startTimeTicks;
    const stamp = { pid: old, comm: 'sleep', cgroupId: shapes.docker.id, startTimeTicks: 0n };
    const flowEndNs = BigInt(Date.now()) * 1_000_000n;
    await ask(`kill ${old}`);
    // Start the successor well after the flow ended: nothing but its start time tells them apart.
    await new Promise((r) => setTimeout(r, 2600));
    const reused = await execed(Number((await ask(`reuse ${old} sleep 2002`)).split(' ')[1]), 'sleep');
    expect(reused).toBe(old);
    expect(proc.stat(reused)!.startTimeTicks).toBeGreaterThan(oldStart);

    const byTime = resolver().resolve(stamp, flowEndNs);
    expect(byTime).toMatchObject({ name: 'sleep', cmdline: '', resolution: 'reused', container: { id: shapes.docker.containerId } });

    // When capture stamps the start time, the check is exact.
    const byStamp = resolver().resolve({ ...stamp, startTimeTicks: oldStart }, 0n);
    expect(byStamp).toMatchObject({ cmdline: '', resolution: 'reused' });
    // And the live successor itself resolves normally.
    const live = resolver().resolve({ pid: reused, comm: 'sleep', cgroupId: shapes.docker.id, startTimeTicks: 0n }, BigInt(Date.now()) * 1_000_000n);
    expect(live).toMatchObject({ cmdline: 'sleep 2002', resolution: 'live' });
    await ask(`kill ${reused}`);
  });

  it('says the enricher is not in the host PID namespace when /proc shows only a container', () => {
    const view = checkPidNamespace(procRoot);
    expect(view.hostPid).toBe(false);
    expect(view.message).toMatch(/^not in the host PID namespace: \/proc shows \d+ processes and pid 1 is sh .*hostPID: true$/);
    expect(view.message.split('\n')).toHaveLength(1);
  });
});
