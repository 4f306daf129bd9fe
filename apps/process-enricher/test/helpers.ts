// Test fixtures: real cgroups under the cgroup v2 mount shaped like runtime cgroups (prefix
// ke-), real processes moved into them, and captured FlowRecords stamped as capture stamps them.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IpProtocol, Vantage, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowBatch, FlowRecord } from '@kappa/contracts';
import { sweepLeftovers, uniqueName } from '@kappa/testing';
import { detectCgroup2Mount } from '../src/cgroup-tree.js';

export const cgroupMount = (): string => {
  const mount = detectCgroup2Mount();
  if (!mount) throw new Error('no cgroup v2 mount on this machine');
  return mount;
};

export const hex64 = (): string => randomBytes(32).toString('hex');

export interface TestCgroup {
  /** Path relative to the mount, as /proc/<pid>/cgroup shows it. */
  path: string;
  dir: string;
  /** cgroup v2 id: the directory's inode. */
  id: bigint;
}

/**
 * Creates (and remembers, for cleanup) the cgroups of one test file under <mount>/<slice>, where
 * slice is `<name>-p<pid>-<n>.slice`: unique, so test runs at once never share one.
 */
export class CgroupFixture {
  readonly mount = cgroupMount();
  readonly slice: string;
  private readonly created: string[] = [];
  readonly children = new Set<ChildProcess>();

  constructor(name: string) {
    // What a killed run left (its process is gone) goes first.
    sweepLeftovers(this.mount);
    this.slice = `${uniqueName(name)}.slice`;
  }

  make(relative: string): TestCgroup {
    const path = `/${this.slice}/${relative}`;
    const dir = join(this.mount, path);
    let current = this.mount;
    for (const part of path.split('/').filter(Boolean)) {
      current = join(current, part);
      if (!existsSync(current)) {
        mkdirSync(current);
        this.created.push(current);
      }
    }
    return { path, dir, id: statSync(dir, { bigint: true }).ino };
  }

  /** Runtime-shaped cgroups: one of each kind the issue lists. */
  runtimeShapes(): { containerd: TestCgroup & { containerId: string; podUid: string }; docker: TestCgroup & { containerId: string }; crio: TestCgroup & { containerId: string }; podman: TestCgroup & { containerId: string } } {
    const podUid = randomUUID();
    const ids = { containerd: hex64(), docker: hex64(), crio: hex64(), podman: hex64() };
    return {
      containerd: { ...this.make(`kubepods-burstable-pod${podUid.replace(/-/g, '_')}.slice/cri-containerd-${ids.containerd}.scope`), containerId: ids.containerd, podUid },
      docker: { ...this.make(`docker-${ids.docker}.scope`), containerId: ids.docker },
      crio: { ...this.make(`crio-${ids.crio}.scope`), containerId: ids.crio },
      podman: { ...this.make(`libpod-${ids.podman}.scope`), containerId: ids.podman },
    };
  }

  /** Starts a real process, waits until it runs its own program, and moves it into `cgroup`. */
  async start(command: string, args: string[], cgroup?: TestCgroup, options: { argv0?: string } = {}): Promise<ChildProcess & { pid: number }> {
    const child = spawn(command, args, { stdio: 'ignore', ...(options.argv0 ? { argv0: options.argv0 } : {}) });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    const pid = child.pid;
    if (pid === undefined) throw new Error(`cannot start ${command}`);
    // Wait for the exec: until then /proc/<pid> still shows node's fork.
    const deadline = Date.now() + 5000;
    // Same program and argument count (curl blanks its -u value in place, so not the values).
    const execed = () => {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0$/, '').split('\0');
      return argv[0] === (options.argv0 ?? command) && argv.length === args.length + 1;
    };
    while (!execed()) {
      if (Date.now() > deadline) throw new Error(`${command} did not start`);
      await new Promise((r) => setTimeout(r, 10));
    }
    if (cgroup) moveInto(pid, cgroup);
    return child as ChildProcess & { pid: number };
  }

  /** Kills what this file started and anything left in its cgroups (orphans too), removes them. */
  async cleanup(): Promise<void> {
    for (const child of this.children) child.kill('SIGKILL');
    await Promise.all([...this.children].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(undefined) : c.once('exit', r)))));
    this.removeTree(join(this.mount, this.slice));
  }

  /** Everything in this file's cgroups was started by this test file: kill it, then rmdir. */
  private removeTree(dir: string): void {
    if (!existsSync(dir)) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) this.removeTree(join(dir, entry.name));
    const procs = () => readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
    try {
      writeFileSync(join(dir, 'cgroup.kill'), '1');
    } catch {
      for (const pid of procs()) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
    }
    const deadline = Date.now() + 5000;
    // Synchronous so the constructor can clean up too; the kill takes milliseconds.
    while (procs().length > 0 && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    rmdirSync(dir);
  }
}

export function moveInto(pid: number, cgroup: TestCgroup): void {
  writeFileSync(join(cgroup.dir, 'cgroup.procs'), String(pid));
}

export function commOf(pid: number): string {
  return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
}

/** /proc/<pid>/stat field 22, as capture stamps it (the kernel's start_boottime in ticks). */
export function startTicksOf(pid: number): bigint {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return BigInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '0');
}

/** A captured record as capture stamps it: local end = src (vantage SRC), pid + comm + cgroup id. */
export function capturedRecord(node: string, stamp: { pid: number; comm: string; cgroupId: bigint; startTimeTicks?: bigint }, port = 40000): FlowRecord {
  const nowNs = BigInt(Date.now()) * 1_000_000n;
  return newFlowRecord({
    node,
    vantage: Vantage.SRC,
    protocol: IpProtocol.TCP,
    startNs: nowNs - 1_000_000_000n,
    endNs: nowNs,
    src: { ip: '127.0.0.1', port, process: { pid: stamp.pid, name: stamp.comm, cgroupId: stamp.cgroupId, startTimeTicks: stamp.startTimeTicks ?? 0n } },
    dst: { ip: '127.0.0.1', port: 5432 },
    bytes: 100n,
    packets: 2n,
    observation: 'socket',
    id: `${node}:${stamp.pid}:${port}`,
  });
}

export function capturedBatch(node: string, records: FlowRecord[], batchId = `capture:${node}:${randomUUID()}`): FlowBatch {
  return newFlowBatch({ batchId, producer: node, createdNs: BigInt(Date.now()) * 1_000_000n, records });
}

export async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
