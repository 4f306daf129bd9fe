// pid + what the kernel stamped → the process: name, command line (redacted), exe and container.
// A pid now held by another process (reuse) or no longer held at all (exit) never lends its
// /proc data to the record: the kernel's comm and cgroup id are kept and the container comes
// from the cgroup id through the cgroup tree.
import { statSync } from 'node:fs';
import { SAME_NAMESPACE } from './cgroup-namespace.js';
import type { CgroupPathMapper } from './cgroup-namespace.js';
import type { CgroupTree } from './cgroup-tree.js';
import { containerFromCgroupPath, containerFromMemberships } from './container.js';
import type { ContainerRef } from './container.js';
import { ProcessCache } from './process-cache.js';
import type { ProcReader } from './proc.js';
import { unifiedCgroupPath } from './proc.js';
import { redactCmdline } from './redact.js';
import type { RedactionRules } from './redact.js';

/** What capture's BPF programs stamped on the socket (Endpoint.process of the local end). */
export interface KernelStamp {
  pid: number;
  comm: string;
  cgroupId: bigint;
  /** 0 when capture did not stamp it. */
  startTimeTicks: bigint;
}

/** Where the answer came from. */
export type Resolution =
  /** /proc/<pid> is the stamped process: everything from /proc. */
  | 'live'
  /** /proc/<pid> no longer exists: what was read while it lived (same start time), else kernel stamp + cgroup tree. */
  | 'gone'
  /** /proc/<pid> belongs to another process: kernel stamp + cgroup tree. */
  | 'reused'
  /** No pid stamped (kernel context): cgroup tree only. */
  | 'no-pid';

export interface ResolvedProcess {
  pid: number;
  name: string;
  cmdline: string;
  exe: string;
  uid: number | undefined;
  cgroupId: bigint;
  cgroupPath: string;
  container: ContainerRef | undefined;
  startTimeTicks: bigint;
  resolution: Resolution;
  /** The cache answered (live only). */
  cached: boolean;
}

/** One read of /proc/<pid>, cached by (pid, start time). */
interface ProcessFacts {
  comm: string;
  /** Names exec gives a process (comm is the first 15 bytes of the file name run). */
  execNames: string[];
  cmdline: string;
  exe: string;
  uid: number | undefined;
  /** cgroup v2 id (directory inode); filled when first needed, undefined without a v2 mount. */
  cgroupId: bigint | undefined;
  cgroupPath: string;
  container: ContainerRef | undefined;
  readAt: number;
}

export interface ResolverOptions {
  proc: ProcReader;
  /** Absent on nodes without a cgroup v2 mount. */
  cgroupTree: CgroupTree | undefined;
  /** /proc cgroup paths → paths of the tree's mount (they differ inside a private cgroup namespace). */
  cgroupPaths?: CgroupPathMapper;
  redaction: RedactionRules;
  /** Longest command line kept, after redaction. */
  cmdlineMaxLength?: number;
  cache?: ProcessCache<ProcessFacts>;
  /** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on every Linux architecture kappa runs on). */
  ticksPerSecond?: number;
  /** How far a process start may follow a flow's end before it cannot be the flow's process. */
  startSlackNs?: bigint;
  now?: () => number;
}

export class ProcessResolver {
  readonly cache: ProcessCache<ProcessFacts>;
  private readonly proc: ProcReader;
  private readonly tree: CgroupTree | undefined;
  private readonly cgroupPaths: CgroupPathMapper;
  private readonly redaction: RedactionRules;
  private readonly cmdlineMaxLength: number;
  private readonly nsPerTick: bigint;
  private readonly startSlackNs: bigint;
  private readonly now: () => number;
  private bootWallNs: bigint | undefined;

  constructor(options: ResolverOptions) {
    this.proc = options.proc;
    this.tree = options.cgroupTree;
    this.cgroupPaths = options.cgroupPaths ?? SAME_NAMESPACE;
    this.redaction = options.redaction;
    this.cmdlineMaxLength = options.cmdlineMaxLength ?? 4096;
    this.cache = options.cache ?? new ProcessCache<ProcessFacts>();
    this.nsPerTick = BigInt(Math.round(1e9 / (options.ticksPerSecond ?? 100)));
    this.startSlackNs = options.startSlackNs ?? 2_000_000_000n;
    this.now = options.now ?? Date.now;
    const uptime = this.proc.uptimeSeconds();
    if (uptime !== undefined) this.bootWallNs = BigInt(Date.now()) * 1_000_000n - BigInt(Math.round(uptime * 1e9));
  }

  /**
   * Resolves one stamped process. `flowEndNs` (unix ns, 0 if unknown) is the end of the
   * interval the record covers: a process that started after it cannot be the one that talked.
   */
  resolve(stamp: KernelStamp, flowEndNs = 0n): ResolvedProcess {
    if (stamp.pid === 0) return this.fromKernelStamp(stamp, 'no-pid');
    const stat = this.proc.stat(stamp.pid);
    if (stat === undefined) {
      // Exited: what was read while it lived still describes it when capture stamped its start.
      const seen = stamp.startTimeTicks !== 0n ? this.cache.get(stamp.pid, stamp.startTimeTicks) : undefined;
      return seen ? this.fromFacts(stamp, seen, stamp.startTimeTicks, 'gone', true) : this.fromKernelStamp(stamp, 'gone');
    }
    if (stamp.startTimeTicks !== 0n && stamp.startTimeTicks !== stat.startTimeTicks) return this.fromKernelStamp(stamp, 'reused');

    let facts = this.cache.get(stamp.pid, stat.startTimeTicks);
    const cached = facts !== undefined;
    if (facts === undefined) {
      facts = this.readFacts(stamp.pid, stat.comm);
      if (facts === undefined) return this.fromKernelStamp(stamp, 'gone');
      this.cache.set(stamp.pid, stat.startTimeTicks, facts);
    }

    if (stamp.startTimeTicks === 0n) {
      if (this.startedAfter(stat.startTimeTicks, flowEndNs)) return this.fromKernelStamp(stamp, 'reused');
      if (!this.commMatches(stamp, facts)) return this.fromKernelStamp(stamp, 'reused');
      if (!this.inStampedCgroup(stamp.cgroupId, facts)) {
        // A cached answer may predate a move to another cgroup: look again before deciding.
        const fresh = cached ? this.readFacts(stamp.pid, stat.comm) : undefined;
        if (fresh) this.cache.set(stamp.pid, stat.startTimeTicks, fresh);
        if (!fresh || !this.inStampedCgroup(stamp.cgroupId, fresh)) return this.fromKernelStamp(stamp, 'reused');
        facts = fresh;
      }
    }

    return this.fromFacts(stamp, facts, stat.startTimeTicks, 'live', cached);
  }

  private fromFacts(stamp: KernelStamp, facts: ProcessFacts, startTimeTicks: bigint, resolution: Resolution, cached: boolean): ResolvedProcess {
    return {
      pid: stamp.pid,
      // The kernel's comm is the name at the time of the conversation; a later rename
      // (Node's "MainThread") is not the process's name.
      name: stamp.comm !== '' ? stamp.comm : facts.comm,
      cmdline: facts.cmdline,
      exe: facts.exe,
      uid: facts.uid,
      cgroupId: stamp.cgroupId !== 0n ? stamp.cgroupId : (this.cgroupIdOf(facts) ?? 0n),
      cgroupPath: facts.cgroupPath,
      container: facts.container,
      startTimeTicks,
      resolution,
      cached,
    };
  }

  private startedAfter(startTimeTicks: bigint, flowEndNs: bigint): boolean {
    if (flowEndNs === 0n || this.bootWallNs === undefined) return false;
    return this.bootWallNs + startTimeTicks * this.nsPerTick > flowEndNs + this.startSlackNs;
  }

  /**
   * The kernel stamps the comm of the thread that made the socket, and a process may rename its
   * threads later (Node names its main thread "MainThread" after start): the stamp matches the
   * current comm, any thread's comm, or the name exec gave it (executable or argv[0] basename).
   */
  private commMatches(stamp: KernelStamp, facts: ProcessFacts): boolean {
    if (stamp.comm === '' || stamp.comm === facts.comm || facts.execNames.includes(stamp.comm)) return true;
    return this.proc.threadComms(stamp.pid).includes(stamp.comm);
  }

  /**
   * Whether the process lives in the cgroup the kernel stamped. Compared by path through the
   * cgroup tree (no syscall when the tree knows the id); by the directory's inode otherwise.
   */
  private inStampedCgroup(stampedId: bigint, facts: ProcessFacts): boolean {
    if (stampedId === 0n || this.tree === undefined || facts.cgroupPath === '') return true;
    if (facts.cgroupId !== undefined) return facts.cgroupId === stampedId;
    const stampedPath = this.tree.lookup(stampedId);
    if (stampedPath !== undefined) {
      if (stampedPath !== facts.cgroupPath) return false;
      facts.cgroupId = stampedId;
      return true;
    }
    return this.cgroupIdOf(facts) === stampedId;
  }

  /** The cgroup v2 id of the process's cgroup (its directory's inode), read once per facts. */
  private cgroupIdOf(facts: ProcessFacts): bigint | undefined {
    if (facts.cgroupId !== undefined || this.tree === undefined || facts.cgroupPath === '') return facts.cgroupId;
    try {
      facts.cgroupId = statSync(`${this.tree.options.mount}${facts.cgroupPath === '/' ? '' : facts.cgroupPath}`, { bigint: true }).ino;
      this.tree.remember(facts.cgroupId, facts.cgroupPath);
    } catch {
      // Removed meanwhile, or outside what our cgroup namespace shows.
    }
    return facts.cgroupId;
  }

  private readFacts(pid: number, comm: string): ProcessFacts | undefined {
    const args = this.proc.cmdline(pid);
    const memberships = this.proc.cgroups(pid);
    if (args === undefined || memberships === undefined) return undefined;
    const unified = unifiedCgroupPath(memberships);
    const path = unified === undefined ? '' : this.cgroupPaths.toMountPath(unified);
    const exe = this.proc.exe(pid) ?? '';
    const execNames = [exe, args[0] ?? ''].map((file) => Buffer.from(file.slice(file.lastIndexOf('/') + 1)).subarray(0, 15).toString());
    return {
      comm,
      execNames,
      // Redacted first, then cut: a cut never exposes the part of a secret the rules would hide.
      cmdline: redactCmdline(args, this.redaction).slice(0, this.cmdlineMaxLength),
      exe,
      uid: this.proc.uid(pid),
      cgroupId: undefined,
      cgroupPath: path,
      container: (path !== '' ? containerFromCgroupPath(path) : undefined) ?? containerFromMemberships(memberships),
      readAt: this.now(),
    };
  }

  private fromKernelStamp(stamp: KernelStamp, resolution: Resolution): ResolvedProcess {
    const path = stamp.cgroupId !== 0n ? this.tree?.lookup(stamp.cgroupId) : undefined;
    return {
      pid: stamp.pid,
      name: stamp.comm,
      cmdline: '',
      exe: '',
      uid: undefined,
      cgroupId: stamp.cgroupId,
      cgroupPath: path ?? '',
      container: path === undefined ? undefined : containerFromCgroupPath(path),
      startTimeTicks: stamp.startTimeTicks,
      resolution,
      cached: false,
    };
  }
}
