// Names for what a test creates machine-wide: network namespaces, cgroups, node names that end up
// in BPF pin folders. Several test runs share one machine (two clones, seven engineers), so every
// such name is unique per test process and call, never a fixed one, and recognisable, so that
// what a killed run left behind can be swept without touching a run that is still going.
//
//   uniqueName('kc-socket')  → 'kc-socket-p12345-0'   (then -1, -2 … in the same process)
//
// Only the test's own namespaces hold addresses, so subnets (10.77.n.0/24, 10.244.n.0/24) may
// repeat between runs: nothing of a test is routed in the root namespace.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * An empty config file for KAPPA_CONFIG: a kappa command a test runs must not read the
 * checkout's .kappa/up.json (the CLI finds it while a developer's `npm run up` runs there).
 */
export const NO_CONFIG_FILE = fileURLToPath(new URL('../fixtures/no-config.json', import.meta.url));

let sequence = 0;

/** `<prefix>-p<pid>-<n>`: unique on this machine while this process lives. */
export function uniqueName(prefix: string): string {
  return `${prefix}-p${process.pid}-${sequence++}`;
}

/** The pid a uniqueName carries, or undefined for any other name. */
export function ownerPid(name: string): number | undefined {
  const match = /^k[a-z0-9]*-(?:[A-Za-z0-9_.-]*-)?p(\d+)-\d+(?:[-.][A-Za-z0-9_.-]*)?$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Named by a test process that no longer runs: safe to remove. */
export function isLeftover(name: string): boolean {
  const pid = ownerPid(name);
  return pid !== undefined && pid !== process.pid && !alive(pid);
}

/** Kills what runs in a cgroup tree and removes it, deepest first. */
export function removeCgroupTree(path: string): void {
  if (!existsSync(path)) return;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroupTree(join(path, entry.name));
  }
  const procs = join(path, 'cgroup.procs');
  if (existsSync(procs)) {
    for (const pid of readFileSync(procs, 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(path);
      return;
    } catch {
      execFileSync('sleep', ['0.02']);
    }
  }
}

let swept = false;

/**
 * Removes the network namespaces and top-level cgroups that killed test runs left (names from
 * uniqueName whose process is gone). Runs once per process unless `again`; never touches a live
 * run's names.
 */
export function sweepLeftovers(cgroupMount: string, options: { again?: boolean } = {}): void {
  if (swept && !options.again) return;
  swept = true;
  let namespaces: string[] = [];
  try {
    namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0] ?? '');
  } catch {
    // no ip netns: nothing to sweep
  }
  for (const netns of namespaces.filter(isLeftover)) {
    try {
      execFileSync('ip', ['netns', 'del', netns], { stdio: 'ignore' });
    } catch {
      // raced with another sweeper
    }
  }
  for (const entry of readdirSync(cgroupMount, { withFileTypes: true })) {
    if (!entry.isDirectory() || !isLeftover(entry.name)) continue;
    try {
      removeCgroupTree(join(cgroupMount, entry.name));
    } catch {
      // raced with another sweeper
    }
  }
}
