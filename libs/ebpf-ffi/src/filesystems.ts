// The pseudo file systems BPF attachment depends on: cgroup v2 (where cgroup programs attach),
// tracefs (where libbpf finds tracepoint ids) and bpffs (where maps and links are pinned). Found from /proc/mounts, never assumed.
import { existsSync, readFileSync, statSync } from 'node:fs';
import koffi from 'koffi';
import { BpfFilesystemError, PERMISSION_HINT } from './errors.js';

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
