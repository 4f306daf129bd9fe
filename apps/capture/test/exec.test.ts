// The exec feature against what the test ran: each process of the watched cgroup that execs is
// handed to the node's process-enricher (one JSON line on --exec-socket) with its pid, start time,
// cgroup, the name exec gave it, the file run and its argument list, exactly, and a process that
// exited at once is there too (the point of the feature: the enricher cannot read its /proc).
// Runs on every kernel npm run test:kernels boots (the hook: tp_btf sched:sched_process_exec).
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseExecLine } from '@kappa/contracts';
import type { ExecEvent } from '@kappa/contracts';
import { TestCgroup, spawnIn, uniqueName } from '@kappa/testing';
import { kappaAttachments, startCapture } from './harness.js';
import type { CaptureRun } from './harness.js';
import { describePrivileged } from './privileges.js';

/** The start time /proc/<pid>/stat gives (field 22, clock ticks since boot): the enricher's key. */
function startTicks(pid: number): bigint {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return BigInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '0');
}

async function until<T>(what: string, probe: () => T | undefined, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describePrivileged('exec events', () => {
  const cgroup = new TestCgroup(uniqueName('kc-exec'));
  const outside = new TestCgroup(uniqueName('kc-exec-out'));
  const dir = mkdtempSync(join(tmpdir(), 'kc-exec-'));
  const socketPath = join(dir, 'exec.sock');
  const events: ExecEvent[] = [];
  let server: Server;
  let capture: CaptureRun;

  beforeAll(async () => {
    // The enricher's end of the socket: capture connects to it and writes one line per exec.
    server = createServer((socket) => {
      let text = '';
      socket.on('data', (c: Buffer) => {
        text += c.toString();
        const end = text.lastIndexOf('\n');
        for (const line of text.slice(0, end + 1).split('\n').filter(Boolean)) {
          const event = parseExecLine(line);
          if (event) events.push(event);
        }
        text = text.slice(end + 1);
      });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s', '--exec-socket', socketPath]);
  });

  afterAll(async () => {
    await capture?.stop();
    await new Promise((resolve) => server?.close(resolve));
    cgroup.destroy();
    outside.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('hands over the pid, start time, cgroup, name, file and exact argument list of a process that execs in the cgroup, and of one that exited at once', async () => {
    const marker = uniqueName('kc-exec-arg');
    // Alive while its start time is read from /proc; then one that is gone before capture's next read.
    const sleeper = spawnIn(undefined, cgroup, '/bin/sleep', ['30']);
    const quick = spawnIn(undefined, cgroup, '/bin/sh', ['-c', 'exit 0', marker, '--token=hunter2', 'two words']);
    const quickExited = new Promise((resolve) => quick.once('exit', resolve));
    // Another cgroup's exec is not the watched tree's business.
    const other = spawnIn(undefined, outside, '/bin/sh', ['-c', 'exit 0', marker]);
    await Promise.all([quickExited, new Promise((resolve) => other.once('exit', resolve))]);
    const sleeperEvent = await until('the sleeper', () => events.find((e) => e.pid === sleeper.pid), 30_000);
    const quickEvent = await until('the process that exited', () => events.find((e) => e.pid === quick.pid), 30_000);
    const ticks = startTicks(sleeper.pid!);
    sleeper.kill('SIGKILL');
    const cgroupId = BigInt(statSync(cgroup.path).ino);
    // exe: the path given to execve, as bpf/kappa_exec.h copies it (bprm->interp), not /proc's resolved link.

    expect(sleeperEvent).toEqual({ pid: sleeper.pid, startTimeTicks: ticks, comm: 'sleep', exe: '/bin/sleep', args: ['/bin/sleep', '30'], cgroupId });
    expect(quickEvent).toMatchObject({ pid: quick.pid, comm: 'sh', exe: '/bin/sh', args: ['/bin/sh', '-c', 'exit 0', marker, '--token=hunter2', 'two words'], cgroupId });
    // One event per exec (the wrappers' own execs happened before they joined a cgroup), none of
    // the other cgroup's.
    expect(events.filter((e) => e.pid === sleeper.pid || e.pid === quick.pid)).toHaveLength(2);
    expect(events.filter((e) => e.args.includes(marker)).map((e) => e.pid)).toEqual([quick.pid]);
  });

  it('leaves nothing of kappa attached once capture stopped', async () => {
    const { code } = await capture.stop();
    expect(code).toBe(0);
    expect(kappaAttachments([cgroup.path])).toEqual([]);
  });
});
