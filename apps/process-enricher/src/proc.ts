// Reads what process-enricher needs from /proc/<pid>: start time and comm (stat), command line,
// executable, cgroup membership (v1 and v2 forms) and owner. A process that is gone reads as
// undefined, never as an error: it may exit between any two reads.
import { closeSync, openSync, readFileSync, readSync, readlinkSync, readdirSync, statSync } from 'node:fs';

/** /proc/<pid>/stat, the fields we use. */
export interface ProcStat {
  /** comm as the kernel reports it (the main thread's name, at most 15 bytes). */
  comm: string;
  /** Field 22: start time in clock ticks since boot. Stable for the life of the process. */
  startTimeTicks: bigint;
}

/** One line of /proc/<pid>/cgroup: `hierarchy-id:controllers:path`; v2 is `0::/path`. */
export interface CgroupMembership {
  hierarchyId: number;
  /** Controllers of a v1 hierarchy (e.g. ['cpu', 'cpuacct'] or ['name=systemd']); [] for v2. */
  controllers: string[];
  path: string;
}

/**
 * Parses /proc/<pid>/stat. comm sits between the first '(' and the LAST ')' and may itself hold
 * spaces and parentheses, so the fields after it are counted from that last ')'.
 */
export function parseStat(text: string): ProcStat | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const comm = text.slice(open + 1, close);
  // After ") " come fields 3 (state), 4, ...; field 22 is index 19 of that list.
  const rest = text.slice(close + 2).split(' ');
  const start = rest[19];
  if (start === undefined || !/^\d+$/.test(start)) return undefined;
  return { comm, startTimeTicks: BigInt(start) };
}

/** Parses /proc/<pid>/cgroup (cgroup v1, v2 and hybrid forms). */
export function parseCgroupFile(text: string): CgroupMembership[] {
  const memberships: CgroupMembership[] = [];
  for (const line of text.split('\n')) {
    if (line.length === 0) continue;
    const first = line.indexOf(':');
    const second = line.indexOf(':', first + 1);
    if (first < 0 || second < 0) continue;
    const hierarchyId = Number(line.slice(0, first));
    const controllers = line.slice(first + 1, second);
    memberships.push({
      hierarchyId,
      controllers: controllers.length === 0 ? [] : controllers.split(','),
      path: line.slice(second + 1),
    });
  }
  return memberships;
}

/** The cgroup v2 path of a process (the `0::` line), if it has one. */
export function unifiedCgroupPath(memberships: readonly CgroupMembership[]): string | undefined {
  return memberships.find((m) => m.hierarchyId === 0 && m.controllers.length === 0)?.path;
}

/** /proc/<pid>/cmdline: arguments separated (and usually ended) by NUL. */
export function parseCmdline(raw: Buffer): string[] {
  if (raw.length === 0) return [];
  const text = raw.toString('utf8');
  const args = text.split('\0');
  if (args.at(-1) === '') args.pop();
  // A process that rewrote its argv (setproctitle) may leave one long space-joined argument;
  // that is what it wants to be seen as, so it stays one argument.
  return args;
}

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH' || code === 'ENOTDIR';
}

/** Reads /proc (or another procfs mount, for tests and for a host /proc mounted elsewhere). */
export class ProcReader {
  constructor(readonly root = '/proc') {}

  // One buffer for every read: procfs files are generated on each read() call, and
  // readFileSync's extra read at EOF (plus its fstat) made a stat read ~5x slower here.
  private buffer = Buffer.allocUnsafe(8192);

  private read(pid: number, file: string): Buffer | undefined {
    try {
      const fd = openSync(`${this.root}/${pid}/${file}`, 'r');
      try {
        let length = 0;
        for (;;) {
          const n = readSync(fd, this.buffer, length, this.buffer.length - length, null);
          length += n;
          if (n === 0 || length < this.buffer.length) break;
          // Long command lines: grow and keep reading.
          const bigger = Buffer.allocUnsafe(this.buffer.length * 2);
          this.buffer.copy(bigger, 0, 0, length);
          this.buffer = bigger;
        }
        return Buffer.from(this.buffer.subarray(0, length));
      } finally {
        closeSync(fd);
      }
    } catch (error) {
      if (isGone(error) || (error as NodeJS.ErrnoException).code === 'EACCES' || (error as NodeJS.ErrnoException).code === 'EPERM') return undefined;
      throw error;
    }
  }

  stat(pid: number): ProcStat | undefined {
    const raw = this.read(pid, 'stat');
    return raw === undefined ? undefined : parseStat(raw.toString('utf8'));
  }

  comm(pid: number): string | undefined {
    return this.read(pid, 'comm')?.toString('utf8').replace(/\n$/, '');
  }

  /** The comm of every thread: the kernel stamps the comm of the thread that made the socket. */
  threadComms(pid: number): string[] {
    let tids: string[];
    try {
      tids = readdirSync(`${this.root}/${pid}/task`);
    } catch {
      return [];
    }
    const comms: string[] = [];
    for (const tid of tids.slice(0, 4096)) {
      try {
        comms.push(readFileSync(`${this.root}/${pid}/task/${tid}/comm`, 'utf8').replace(/\n$/, ''));
      } catch {
        // The thread exited meanwhile.
      }
    }
    return comms;
  }

  cmdline(pid: number): string[] | undefined {
    const raw = this.read(pid, 'cmdline');
    return raw === undefined ? undefined : parseCmdline(raw);
  }

  /** Target of /proc/<pid>/exe; empty for kernel threads or when not permitted. */
  exe(pid: number): string | undefined {
    try {
      return readlinkSync(`${this.root}/${pid}/exe`).replace(/ \(deleted\)$/, '');
    } catch {
      return undefined;
    }
  }

  cgroups(pid: number): CgroupMembership[] | undefined {
    const raw = this.read(pid, 'cgroup');
    return raw === undefined ? undefined : parseCgroupFile(raw.toString('utf8'));
  }

  /** Effective uid: the owner of /proc/<pid>. */
  uid(pid: number): number | undefined {
    try {
      return statSync(`${this.root}/${pid}`).uid;
    } catch {
      return undefined;
    }
  }

  /** Count of processes visible, for the host-PID-namespace check. */
  processCount(): number {
    try {
      return readdirSync(this.root).filter((name) => /^\d+$/.test(name)).length;
    } catch {
      return 0;
    }
  }

  /** Seconds since boot (CLOCK_BOOTTIME), from /proc/uptime. */
  uptimeSeconds(): number | undefined {
    try {
      const first = readFileSync(`${this.root}/uptime`, 'utf8').split(' ')[0];
      return first === undefined ? undefined : Number(first);
    } catch {
      return undefined;
    }
  }
}
