// Whether this process may read other processes' /proc/<pid>/exe: that link needs ptrace read
// access, which root without CAP_SYS_PTRACE lacks towards processes of other users or holding
// capabilities it does not have. cmdline, stat and cgroup are world-readable and need nothing.
import { readFileSync } from 'node:fs';

const CAP_SYS_PTRACE = 19n;

/** True when the effective set of a /proc/<pid>/status text holds CAP_SYS_PTRACE. */
export function hasSysPtrace(statusText: string): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)$/im.exec(statusText)?.[1];
  return hex !== undefined && (BigInt(`0x${hex}`) & (1n << CAP_SYS_PTRACE)) !== 0n;
}

/** The start-up warning when CAP_SYS_PTRACE is missing, naming it; undefined when present. */
export function ptraceWarning(statusText = readFileSync('/proc/self/status', 'utf8')): string | undefined {
  if (hasSysPtrace(statusText)) return undefined;
  return (
    'process-enricher needs CAP_SYS_PTRACE to read the executable (/proc/<pid>/exe) of processes of other users or with more capabilities: ' +
    'their records keep name, command line and cgroup but no exe; add SYS_PTRACE to the container capabilities'
  );
}
