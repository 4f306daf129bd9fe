// Where one capture instance (a --node and --cgroup pair) keeps what must outlive a crash — its
// pinned maps and links on bpffs, and its spool of unpublished batches on disk — and the rules
// around that folder: one live instance per folder (a lock on it), dead instances' folders swept
// at start (their programs would count into maps nobody drains), and a pinned map of another
// layout named as such instead of a bare EINVAL from libbpf.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { detachPinned, lockHolders, pinnedMapInfo, tryLockDirectory } from '@kappa/ebpf-ffi';
import type { BpfMap, DirectoryLock } from '@kappa/ebpf-ffi';

export const PIN_ROOT = '/sys/fs/bpf/kappa';

/** Safe as one path component; a restart with the same --node and --cgroup finds the same one. */
export function instanceToken(node: string, cgroupPath: string): string {
  const hash = createHash('sha256').update(cgroupPath).digest('hex').slice(0, 12);
  return `${node.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64)}-${hash}`;
}

export function pinFolder(token: string): string {
  return join(PIN_ROOT, token);
}

export function defaultStateDir(token: string): string {
  return join('/var/lib/kappa/capture', token);
}

/** Another live instance holds this instance's folder. */
export class InstanceBusyError extends Error {
  override name = 'InstanceBusyError';
}

/** The folder holds pinned maps this build cannot read (another version, another size). */
export class PinnedLayoutError extends Error {
  override name = 'PinnedLayoutError';
}

/**
 * Creates the instance's folder and locks it. A lock held by another process means a live
 * instance with the same --node and --cgroup: refused with one line naming it.
 */
export function lockInstanceFolder(folder: string): DirectoryLock {
  mkdirSync(folder, { recursive: true, mode: 0o700 });
  // A sweeper that just found this folder empty may hold the lock for a moment: retry briefly.
  for (let attempt = 0; attempt < 20; attempt++) {
    const lock = tryLockDirectory(folder);
    if (lock) return lock;
    const pids = lockHolders(folder).filter((pid) => pid !== process.pid);
    if (pids.length > 0) {
      throw new InstanceBusyError(
        `another kappa-capture (pid ${pids.join(', ')}) holds ${folder}: one instance per --node and --cgroup; stop it first or start this one with another --node`,
      );
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  throw new InstanceBusyError(`cannot lock ${folder}: another kappa-capture holds it; one instance per --node and --cgroup`);
}

export interface SweptInstance {
  readonly folder: string;
  readonly pins: readonly string[];
}

/** The part of an instance token that names its --cgroup (see instanceToken). */
export function cgroupOfToken(token: string): string {
  return token.slice(token.lastIndexOf('-') + 1);
}

/**
 * Removes the folders of dead instances that attached to the same cgroup as this one under
 * another --node (its programs would count on into maps nobody drains): links detached, maps
 * unpinned. Dead = nobody holds the folder's lock and no process has one of its maps open (an
 * instance of an older build, which took no lock, still holds its maps). Instances of other
 * cgroups are left alone: on a host that runs several (simulated nodes, tenants), a dead one may
 * be about to restart and take its maps over. Empty folders younger than a minute are left alone
 * too: an instance may just have made one and be about to lock it.
 */
export function sweepDeadInstances(ownFolder: string, root = PIN_ROOT): SweptInstance[] {
  const cgroup = cgroupOfToken(basename(ownFolder));
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const swept: SweptInstance[] = [];
  let openMaps: Set<number> | undefined;
  for (const name of names) {
    const folder = join(root, name);
    if (folder === ownFolder || cgroupOfToken(name) !== cgroup) continue;
    let pins: string[];
    try {
      if (!statSync(folder).isDirectory()) continue;
      pins = readdirSync(folder);
    } catch {
      continue; // removed meanwhile
    }
    if (pins.length === 0 && Date.now() - statSync(folder).mtimeMs < 60_000) continue;
    const lock = tryLockDirectory(folder);
    if (!lock) continue; // alive
    try {
      openMaps ??= mapIdsHeldByProcesses();
      const held = pins.filter((pin) => !pin.startsWith('link_')).some((pin) => {
        const id = pinnedMapId(join(folder, pin));
        return id !== undefined && openMaps!.has(id);
      });
      if (held) continue;
      for (const pin of pins.filter((p) => p.startsWith('link_'))) detachPinned(join(folder, pin));
      rmSync(folder, { recursive: true, force: true });
      swept.push({ folder, pins });
    } finally {
      lock.release();
    }
  }
  return swept;
}

function pinnedMapId(path: string): number | undefined {
  try {
    return pinnedMapInfo(path)?.id;
  } catch {
    return undefined; // a link, or gone
  }
}

/** Ids of the BPF maps any process has a file descriptor for (/proc/<pid>/fdinfo). */
function mapIdsHeldByProcesses(): Set<number> {
  const ids = new Set<number>();
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fdinfo`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const id = /^map_id:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
        if (id) ids.add(Number(id));
      } catch {
        // closed meanwhile
      }
    }
  }
  return ids;
}

/**
 * Compares every map pinned in the folder with the map of the same name this build would reuse.
 * libbpf refuses a mismatch with EINVAL; this says which map, how it differs, and what to do.
 */
export function checkPinnedLayout(folder: string, maps: readonly BpfMap[]): void {
  let pins: string[];
  try {
    pins = readdirSync(folder).filter((name) => !name.startsWith('link_'));
  } catch {
    return;
  }
  const byName = new Map(maps.map((m) => [m.name, m]));
  const problems: string[] = [];
  for (const pin of pins) {
    const mine = byName.get(pin);
    if (!mine) {
      problems.push(`${pin} (not a map of this build)`);
      continue;
    }
    const info = pinnedMapInfo(join(folder, pin));
    if (!info) continue;
    const differences = [
      info.type !== mine.type ? `type ${info.type}, this build ${mine.type}` : '',
      info.keySize !== mine.keySize ? `key ${info.keySize} bytes, this build ${mine.keySize}` : '',
      info.valueSize !== mine.valueSize ? `value ${info.valueSize} bytes, this build ${mine.valueSize}` : '',
      info.maxEntries !== mine.maxEntries ? `${info.maxEntries} entries, this start ${mine.maxEntries} (--max-conversations)` : '',
      info.flags !== mine.flags ? `flags ${info.flags}, this build ${mine.flags}` : '',
    ].filter(Boolean);
    if (differences.length > 0) problems.push(`${pin} (${differences.join(', ')})`);
  }
  if (problems.length === 0) return;
  throw new PinnedLayoutError(
    `${folder} holds pinned maps of another layout, left by another version of kappa-capture or a start with another --max-conversations: ${problems.join('; ')}. ` +
      `Their counts cannot be read by this build: start the version that made them (same --max-conversations) to drain them, or discard them with: rm -r ${folder}`,
  );
}
