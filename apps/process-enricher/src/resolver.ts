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
import type { ExecTable } from './exec-table.js';
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
  /** Names exec gives a process (comm is the first 15 bytes of the file name run): the
   *  executable's, argv[0]'s and (a script run through its interpreter) argv[1]'s basenames. */
  execNames: string[];
  /** Every thread's comm, read only when a stamp names none of the above (see commMatches). */
  threadComms: { names: string[]; readAt: number } | undefined;
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
  /** What capture saw at exec (processes gone before enrichment keep their command line). */
  execs?: ExecTable;
  now?: () => number;
}

/** A thread list read for one process is trusted this long before it is read again. */
const THREAD_NAMES_TTL_MS = 10_000;

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
  private readonly execs: ExecTable | undefined;
  private bootWallNs: bigint | undefined;
  /** Thread lists read (each one a walk of /proc/<pid>/task), for the metrics. */
  threadScans = 0;

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
    this.execs = options.execs;
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
      name: this.processName(stamp, startTimeTicks, facts),
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
   * The process's name: the one exec gave it, not a thread's. The kernel stamps the comm of the
   * thread that made the socket (a Java pool thread: "http-nio-8080-e"), and a process may rename
   * its main thread (Node 24 calls it "MainThread"): both are thread names. The name is what
   * capture saw at exec, else the current comm when exec could have given it, else the basename
   * of the executable.
   */
  private processName(stamp: KernelStamp, startTimeTicks: bigint, facts: ProcessFacts): string {
    const exec = this.execs?.get(stamp.pid, startTimeTicks, stamp.cgroupId);
    if (exec && exec.comm !== '') return exec.comm;
    if (facts.comm !== '' && facts.execNames.includes(facts.comm)) return facts.comm;
    return facts.execNames.find((name) => name !== '') ?? (facts.comm || stamp.comm);
  }

  /**
   * Whether a stamp without a start time can be this process: the stamped comm is its comm, one
   * exec could have given it, or one of its threads' (a socket made by a named thread). The
   * thread list is read at most once per 10 s per process, never per batch.
   */
  private commMatches(stamp: KernelStamp, facts: ProcessFacts): boolean {
    if (stamp.comm === '' || stamp.comm === facts.comm || facts.execNames.includes(stamp.comm)) return true;
    const now = this.now();
    if (facts.threadComms === undefined || (!facts.threadComms.names.includes(stamp.comm) && now - facts.threadComms.readAt >= THREAD_NAMES_TTL_MS)) {
      facts.threadComms = { names: this.proc.threadComms(stamp.pid), readAt: now };
      this.threadScans += 1;
    }
    return facts.threadComms.names.includes(stamp.comm);
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
    const execNames = [exe, args[0] ?? '', args[1] ?? ''].map((file) => Buffer.from(file.slice(file.lastIndexOf('/') + 1)).subarray(0, 15).toString());
    return {
      comm,
      execNames,
      // Redacted first, then cut: a cut never exposes the part of a secret the rules would hide.
      cmdline: redactCmdline(args, this.redaction).slice(0, this.cmdlineMaxLength),
      exe,
      uid: this.proc.uid(pid),
      threadComms: undefined,
      cgroupId: undefined,
      cgroupPath: path,
      container: (path !== '' ? containerFromCgroupPath(path) : undefined) ?? containerFromMemberships(memberships),
      readAt: this.now(),
    };
  }

  /** A process /proc cannot tell about (gone, or its pid reused): what the kernel stamped, and
   *  what capture saw at its exec when it saw it. */
  private fromKernelStamp(stamp: KernelStamp, resolution: Resolution): ResolvedProcess {
    const path = stamp.cgroupId !== 0n ? this.tree?.lookup(stamp.cgroupId) : undefined;
    const exec = stamp.pid !== 0 ? this.execs?.get(stamp.pid, stamp.startTimeTicks, stamp.cgroupId) : undefined;
    return {
      pid: stamp.pid,
      name: exec?.comm || stamp.comm,
      // Redacted first, then cut, as for live processes.
      cmdline: exec ? redactCmdline(exec.args, this.redaction).slice(0, this.cmdlineMaxLength) : '',
      exe: exec?.exe ?? '',
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
