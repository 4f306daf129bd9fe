// What capture saw at one exec (bpf/kappa_exec.h), as it sends it to the process-enricher of its
// node: one JSON line per exec over a node-local unix socket (raw argv never leaves the node; the
// enricher redacts it). Numbers that may exceed 2^53 travel as strings.

export interface ExecEvent {
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat field 22). */
  startTimeTicks: bigint;
  /** The name exec gave the process (comm after exec). */
  comm: string;
  /** The file exec ran, as passed to execve (a #! script's interpreter). */
  exe: string;
  args: string[];
  cgroupId: bigint;
}

interface WireExec {
  pid: number;
  start: string;
  comm: string;
  exe: string;
  args: string[];
  cgroup: string;
}

export function formatExecLine(e: ExecEvent): string {
  return `${JSON.stringify({ pid: e.pid, start: String(e.startTimeTicks), comm: e.comm, exe: e.exe, args: e.args, cgroup: String(e.cgroupId) } satisfies WireExec)}\n`;
}

/** One line as formatExecLine writes it; undefined when it is not one. */
export function parseExecLine(line: string): ExecEvent | undefined {
  try {
    const w = JSON.parse(line) as WireExec;
    if (!Number.isInteger(w.pid) || typeof w.comm !== 'string' || typeof w.exe !== 'string' || !Array.isArray(w.args)) return undefined;
    return { pid: w.pid, startTimeTicks: BigInt(w.start), comm: w.comm, exe: w.exe, args: w.args.map(String), cgroupId: BigInt(w.cgroup) };
  } catch {
    return undefined;
  }
}
