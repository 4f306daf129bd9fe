// cgroup v2 id → path, by walking the cgroup v2 mount: a cgroup's id (what the kernel stamps on
// a socket) is the inode number of its directory. Lets a record whose process is gone still be
// attributed to its container, and keeps paths of cgroups removed since for a while.
import { readFileSync, readdirSync, statSync } from 'node:fs';

/** The first cgroup2 mount point in a /proc/mounts text (hybrid: /sys/fs/cgroup/unified). */
export function findCgroup2Mount(mountsText: string): string | undefined {
  for (const line of mountsText.split('\n')) {
    const [, mountPoint, fsType] = line.split(' ');
    // Mount points escape spaces as \040.
    if (fsType === 'cgroup2' && mountPoint) return mountPoint.replace(/\\040/g, ' ');
  }
  return undefined;
}

export function detectCgroup2Mount(mountsFile = '/proc/mounts'): string | undefined {
  try {
    return findCgroup2Mount(readFileSync(mountsFile, 'utf8'));
  } catch {
    return undefined;
  }
}

export interface CgroupTreeOptions {
  /** The cgroup v2 mount point. */
  mount: string;
  /** Most cgroups remembered (present and recently removed together). */
  maxEntries?: number;
  /** How long a removed cgroup's path is still answered. */
  retainRemovedMs?: number;
  /** Least time between two walks caused by ids older than the last walk. */
  minRescanIntervalMs?: number;
  now?: () => number;
}

interface Entry {
  path: string;
  seenAt: number;
}

export interface CgroupLookupStats {
  hits: number;
  misses: number;
  rescans: number;
  /** The walk stopped at maxEntries. */
  truncated: boolean;
}

export class CgroupTree {
  private readonly entries = new Map<bigint, Entry>();
  private readonly unknown = new Map<bigint, number>();
  private lastRescanAt = -Infinity;
  /** Largest id found by the last walk: a larger id is a cgroup created since (ids only grow). */
  private highestId = 0n;
  readonly stats: CgroupLookupStats = { hits: 0, misses: 0, rescans: 0, truncated: false };
  private readonly maxEntries: number;
  private readonly retainRemovedMs: number;
  private readonly minRescanIntervalMs: number;
  private readonly now: () => number;

  constructor(readonly options: CgroupTreeOptions) {
    this.maxEntries = options.maxEntries ?? 200_000;
    this.retainRemovedMs = options.retainRemovedMs ?? 600_000;
    this.minRescanIntervalMs = options.minRescanIntervalMs ?? 1000;
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Path of cgroup `id` relative to the mount (`/` for the root), walking again on a miss. */
  lookup(id: bigint): string | undefined {
    const cached = this.entries.get(id);
    if (cached) {
      this.stats.hits++;
      return cached.path;
    }
    this.stats.misses++;
    const now = this.now();
    // An id above the highest one seen was created after the last walk: walk now. An older id
    // is a cgroup removed before we saw it; walk for it at most once per interval.
    const isNew = id > this.highestId;
    const knownUnknownAt = this.unknown.get(id);
    if (!isNew && (now - this.lastRescanAt < this.minRescanIntervalMs || (knownUnknownAt !== undefined && knownUnknownAt >= this.lastRescanAt))) {
      return undefined;
    }
    this.rescan();
    const found = this.entries.get(id);
    if (found) return found.path;
    if (this.unknown.size >= 10_000) this.unknown.clear();
    this.unknown.set(id, this.now());
    return undefined;
  }

  /** Records a cgroup learnt elsewhere (a live process's /proc/<pid>/cgroup), so it resolves after removal. */
  remember(id: bigint, path: string): void {
    if (this.entries.get(id)?.path === path) return;
    this.entries.delete(id);
    this.entries.set(id, { path, seenAt: this.now() });
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
  }

  /** Walks the whole mount, records every cgroup's id, forgets removed ones after retainRemovedMs. */
  rescan(): void {
    const now = this.now();
    this.lastRescanAt = now;
    this.stats.rescans++;
    let count = 0;
    const stack: string[] = [''];
    while (stack.length > 0) {
      const relative = stack.pop() ?? '';
      const absolute = `${this.options.mount}${relative}`;
      let ino: bigint;
      try {
        ino = statSync(absolute, { bigint: true }).ino;
      } catch {
        continue; // removed during the walk
      }
      this.entries.delete(ino); // re-insert: Map order is then oldest-seen first
      this.entries.set(ino, { path: relative === '' ? '/' : relative, seenAt: now });
      if (ino > this.highestId) this.highestId = ino;
      if (++count >= this.maxEntries) {
        this.stats.truncated = true;
        break;
      }
      let children: string[];
      try {
        children = readdirSync(absolute, { withFileTypes: true })
          .filter((d) => d.isDirectory())
          .map((d) => d.name);
      } catch {
        continue;
      }
      for (const child of children) stack.push(`${relative}/${child}`);
    }
    for (const [id, entry] of this.entries) {
      if (this.entries.size <= this.maxEntries && now - entry.seenAt < this.retainRemovedMs) break;
      this.entries.delete(id);
    }
  }
}
