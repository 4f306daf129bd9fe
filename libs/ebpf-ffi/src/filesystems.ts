// The pseudo file systems BPF attachment depends on: cgroup v2 (where cgroup programs attach),
// tracefs (where libbpf finds tracepoint ids) and bpffs (where maps and links are pinned). Found from /proc/mounts, never assumed.
import { existsSync, readFileSync, statSync } from 'node:fs';
import koffi from 'koffi';
import { BpfFilesystemError, PERMISSION_HINT } from './errors.js';
import { libbpf } from './libbpf.js';

interface Mount {
  readonly type: string;
  readonly path: string;
}

function mounts(): Mount[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' '))
    .filter((fields) => fields.length >= 3)
    .map(([, path = '', type = '']) => ({ type, path: path.replace(/\\040/g, ' ') }));
}

/**
 * The file system in effect at `path`: the last mount there, unless a later mount over a parent
 * hides it (/proc/mounts still lists a covered mount: Debian 6.1's tracefs automounted at
 * /sys/kernel/debug/tracing stays listed under a tmpfs mounted over /sys/kernel/debug).
 */
function mountAt(path: string, all: Mount[] = mounts()): Mount | undefined {
  const last = all.filter((m) => m.path === path || path.startsWith(m.path.endsWith('/') ? m.path : `${m.path}/`)).at(-1);
  return last?.path === path ? last : undefined;
}

/**
 * What is missing of the file systems capture uses, without mounting anything (`kappa-capture
 * --check`, the DaemonSet's init container): bpffs at /sys/fs/bpf for its pins, tracefs for the
 * tracepoints' ids, and cgroup v2 at the cgroup it attaches to. One sentence per problem.
 */
export function mountProblems(cgroupPath: string | undefined): string[] {
  const all = mounts();
  const problems: string[] = [];
  if (mountAt('/sys/fs/bpf', all)?.type !== 'bpf') {
    problems.push('bpffs is not mounted at /sys/fs/bpf (on the node: mount -t bpf bpf /sys/fs/bpf; in a container, mount the node\'s /sys/fs/bpf there)');
  }
  if (mountAt('/sys/kernel/tracing', all)?.type !== 'tracefs' && mountAt('/sys/kernel/debug/tracing', all)?.type !== 'tracefs' && !(mountAt('/sys/kernel/debug', all)?.type === 'debugfs' && existsSync('/sys/kernel/debug/tracing/events'))) {
    problems.push('tracefs is not mounted at /sys/kernel/tracing (on the node: mount -t tracefs tracefs /sys/kernel/tracing; in a container, mount the node\'s /sys/kernel/tracing there)');
  }
  const cgroups = all.filter((m) => m.type === 'cgroup2');
  if (cgroups.length === 0) {
    problems.push('cgroup v2 is not mounted (no cgroup2 in /proc/mounts)');
  } else if (cgroupPath !== undefined) {
    const inside = cgroups.some((m) => cgroupPath === m.path || cgroupPath.startsWith(`${m.path.replace(/\/$/, '')}/`));
    if (!inside || !existsSync(cgroupPath)) problems.push(`${cgroupPath} is not a cgroup v2 directory (mount the node's cgroup v2 there, or point --cgroup at one)`);
  }
  return problems;
}

/**
 * Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts). With
 * `path`: the mount that path is in. A container can have two: its own view at /sys/fs/cgroup
 * (in a private cgroup namespace, only its own cgroup) and the node's at /host/sys/fs/cgroup.
 */
export function cgroup2Root(path?: string): string {
  const all = mounts().filter((m) => m.type === 'cgroup2');
  if (all.length === 0) throw new BpfFilesystemError('cgroup v2 is not mounted (no cgroup2 in /proc/mounts); mount it: mount -t cgroup2 none /sys/fs/cgroup/unified', 2);
  const containing = path === undefined ? [] : all.filter((m) => path === m.path || path.startsWith(m.path.endsWith('/') ? m.path : `${m.path}/`));
  return containing.sort((a, b) => b.path.length - a.path.length)[0]?.path ?? all[0]!.path;
}

/** The cgroup v2 id (what bpf_get_current_cgroup_id returns) and depth of a cgroup directory. */
export function cgroupIdentity(path: string): { id: bigint; level: number } {
  const root = cgroup2Root(path);
  if (!path.startsWith(root)) throw new BpfFilesystemError(`${path} is not below the cgroup v2 mount ${root}`, 2);
  if (!existsSync(path)) throw new BpfFilesystemError(`cgroup ${path} does not exist`, 2);
  const id = statSync(path, { bigint: true }).ino;
  const level = path.slice(root.length).split('/').filter(Boolean).length;
  return { id, level };
}

let mountCall: ((source: string, target: string, type: string, flags: number, data: null) => number) | undefined;

/** Mounts tracefs at /sys/kernel/tracing when no tracefs or debugfs tracing is mounted. */
export function ensureTracefs(): void {
  const all = mounts();
  if (all.some((m) => m.type === 'tracefs') || existsSync('/sys/kernel/debug/tracing/events')) return;
  mountCall ??= koffi.load('libc.so.6').func('int mount(const char *source, const char *target, const char *type, unsigned long flags, void *data)');
  if (mountCall('tracefs', '/sys/kernel/tracing', 'tracefs', 0, null) !== 0) {
    throw new BpfFilesystemError(
      `tracefs is not mounted and mounting it failed (errno ${koffi.errno()}); mount it: mount -t tracefs tracefs /sys/kernel/tracing (${PERMISSION_HINT})`,
      koffi.errno(),
    );
  }
}

/** Mounts bpffs at /sys/fs/bpf when it is not mounted there (pins need it). */
export function ensureBpffs(): void {
  if (mounts().some((m) => m.type === 'bpf' && m.path === '/sys/fs/bpf')) return;
  mountCall ??= koffi.load('libc.so.6').func('int mount(const char *source, const char *target, const char *type, unsigned long flags, void *data)');
  if (mountCall('bpf', '/sys/fs/bpf', 'bpf', 0, null) !== 0) {
    throw new BpfFilesystemError(
      `bpffs is not mounted and mounting it failed (errno ${koffi.errno()}); mount it: mount -t bpf bpf /sys/fs/bpf (${PERMISSION_HINT})`,
      koffi.errno(),
    );
  }
}

const O_RDONLY = 0;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/** An exclusive lock on a directory, held until `release` or the process ends (even by SIGKILL). */
export interface DirectoryLock {
  release(): void;
}

/**
 * Takes flock(LOCK_EX) on a directory (a bpffs folder works: the lock is on its inode), without
 * waiting. Undefined when another process holds it. Locks die with their process, so a lock that
 * can be taken means no live instance holds the folder.
 */
export function tryLockDirectory(path: string): DirectoryLock | undefined {
  const bpf = libbpf();
  const fd = bpf.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw new BpfFilesystemError(`cannot open ${path} to lock it (errno ${koffi.errno()})`, koffi.errno());
  if (bpf.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    const errno = koffi.errno();
    bpf.close(fd);
    if (errno === EWOULDBLOCK) return undefined;
    throw new BpfFilesystemError(`cannot lock ${path} (errno ${errno})`, errno);
  }
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      bpf.close(fd);
    },
  };
}

/** Pids holding a flock on the inode of `path` (from /proc/locks), for messages. */
export function lockHolders(path: string): number[] {
  const { ino, dev } = statSync(path);
  const major = ((dev >> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
  const minor = (dev & 0xff) | ((dev >> 12) & ~0xff & 0xfffff);
  const pids: number[] = [];
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"; waiters are marked "1: -> FLOCK ...".
    const fields = line.trim().split(/\s+/);
    if (fields[1] !== 'FLOCK') continue;
    const [maj = '', min = '', inode = ''] = (fields[5] ?? '').split(':');
    if (Number(inode) === ino && parseInt(maj, 16) === major && parseInt(min, 16) === minor) pids.push(Number(fields[4]));
  }
  return pids;
}
