// One error class per failure an operator can act on. Messages say what to do; `cause` keeps
// the errno and libbpf's own last lines for whoever debugs further.
import { constants } from 'node:os';

const { EPERM, EACCES, ENOENT, ENOTSUP, EOPNOTSUPP, EINVAL } = constants.errno;

/** Anything libbpf refused; `errno` is positive. */
export class BpfError extends Error {
  override name = 'BpfError';
  constructor(
    message: string,
    readonly errno: number,
    readonly libbpfLog: readonly string[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The process lacks the capabilities BPF needs. */
export class BpfPermissionError extends BpfError {
  override name = 'BpfPermissionError';
}

/** Neither the kernel nor --btf provides the BTF that CO-RE relocations need. */
export class BtfMissingError extends BpfError {
  override name = 'BtfMissingError';
}

/** A file system the programs need (cgroup2, bpffs, tracefs) is not mounted. */
export class BpfFilesystemError extends BpfError {
  override name = 'BpfFilesystemError';
}

/** The kernel's verifier or loader rejected a program or map. */
export class BpfLoadError extends BpfError {
  override name = 'BpfLoadError';
}

export const PERMISSION_HINT =
  'needs CAP_BPF and CAP_PERFMON (and CAP_NET_ADMIN for tc, CAP_SYS_ADMIN for cgroup attach on older kernels) or root';

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(constants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** Turns a failed libbpf call into the typed error an operator can act on. */
export function bpfError(what: string, errno: number, log: readonly string[] = []): BpfError {
  const code = Math.abs(errno);
  const detail = lastMeaningfulLine(log);
  if (code === EPERM || code === EACCES) {
    // The verifier also answers EACCES/EPERM for a rejected program: tell those apart by its log.
    if (log.some((line) => /processed \d+ insns|R\d+ |invalid|unknown func/.test(line))) {
      return new BpfLoadError(`${what}: the kernel's verifier rejected it: ${detail}`, code, log);
    }
    return new BpfPermissionError(`${what}: permission denied; kappa-capture ${PERMISSION_HINT}`, code, log);
  }
  if (code === ENOTSUP || code === EOPNOTSUPP || code === EINVAL) {
    return new BpfLoadError(`${what}: the kernel does not support it (${errnoName(code)})${detail ? `: ${detail}` : ''}`, code, log);
  }
  if (code === ENOENT) return new BpfError(`${what}: not found (ENOENT)${detail ? `: ${detail}` : ''}`, code, log);
  return new BpfError(`${what}: ${errnoName(code)}${detail ? `: ${detail}` : ''}`, code, log);
}

function lastMeaningfulLine(log: readonly string[]): string {
  // A verifier log ends "<reason>\nprocessed N insns …\n-- END PROG LOAD LOG --": the reason is
  // the line before the count (libbpf's clean-up lines, "unpinned map …", come after it).
  const processed = log.findLastIndex((line) => /^processed \d+ insns/.test(line.trim()));
  if (processed > 0) return log[processed - 1]!.trim();
  for (let i = log.length - 1; i >= 0; i--) {
    const line = log[i]?.trim();
    if (line && !line.startsWith('--') && !/^libbpf: (failed to load object|unpinned map)/.test(line)) return line;
  }
  return '';
}
