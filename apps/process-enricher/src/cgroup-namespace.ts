// Where this process's cgroup namespace sits in the cgroup v2 tree it walks. containerd gives a
// non-privileged container a private cgroup namespace rooted at the container's own cgroup, so
// /proc/<pid>/cgroup reads `0::/../../kubepods-…/cri-containerd-….scope` there, while the node's
// cgroup2 mounted from the host (the DaemonSet's hostPath) shows `/kubepods.slice/…`. Paths from
// /proc are turned into paths of the mounted tree before anything compares them.
import { readFileSync, readdirSync } from 'node:fs';
import { posix } from 'node:path';

/** Turns a /proc/<pid>/cgroup v2 path into a path below the cgroup v2 mount the tree walks. */
export interface CgroupPathMapper {
  toMountPath(procPath: string): string;
  /** One line for the start-up log. */
  readonly description: string;
}

/** /proc in the cgroup namespace of the mount: paths agree. */
export const SAME_NAMESPACE: CgroupPathMapper = {
  toMountPath: (path) => path,
  description: 'cgroup paths in /proc and the cgroup v2 mount agree (same cgroup namespace)',
};

/** Field 4 (the mount's root, as this cgroup namespace sees it) of `mountPoint` in a mountinfo text. */
export function mountRootOf(mountinfoText: string, mountPoint: string): string | undefined {
  let found: string | undefined;
  for (const line of mountinfoText.split('\n')) {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    if (separator < 0 || fields[separator + 1] !== 'cgroup2') continue;
    // Spaces in paths are escaped as \040; the last mount at a point is the one in effect.
    if ((fields[4] ?? '').replace(/\\040/g, ' ') === mountPoint) found = (fields[3] ?? '').replace(/\\040/g, ' ');
  }
  return found;
}

/** The `0::` path of a /proc/<pid>/cgroup text. */
function unifiedPath(cgroupText: string): string | undefined {
  return cgroupText.split('\n').find((line) => line.startsWith('0::'))?.slice(3);
}

function components(path: string): string[] {
  return path.split('/').filter((c) => c.length > 0);
}

/**
 * The cgroup directories `depth` levels below `mount` whose cgroup.procs lists `pid`. cgroup.procs
 * shows pids as the reader's PID namespace sees them, so `pid` is this process's own.
 */
function cgroupsHolding(mount: string, depth: number, pid: number): string[] {
  const found: string[] = [];
  const walk = (relative: string, level: number) => {
    if (level === depth) {
      try {
        if (readFileSync(`${mount}${relative}/cgroup.procs`, 'utf8').split('\n').includes(String(pid))) found.push(relative);
      } catch {
        // removed meanwhile
      }
      return;
    }
    let children: string[];
    try {
      children = readdirSync(`${mount}${relative}`, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    } catch {
      return;
    }
    for (const child of children) walk(`${relative}/${child}`, level + 1);
  };
  walk('', 0);
  return found;
}

export class CgroupNamespaceError extends Error {
  override name = 'CgroupNamespaceError';
}

export interface DetectOptions {
  /** The cgroup v2 mount the tree walks (e.g. /host/sys/fs/cgroup). */
  mount: string;
  mountinfoText?: string;
  selfCgroupText?: string;
  pid?: number;
}

/**
 * Reads how the namespace relates to the mount. The mount's root as this namespace sees it says
 * how far up it is (`/../../..`: three levels above our namespace's root); the cgroup of that
 * depth (plus our own path below the namespace root) that holds this very process says which
 * cgroup the namespace's root is.
 */
export function detectCgroupNamespace(options: DetectOptions): CgroupPathMapper {
  const mountinfo = options.mountinfoText ?? readFileSync('/proc/self/mountinfo', 'utf8');
  const root = mountRootOf(mountinfo, options.mount);
  if (root === undefined || root === '/') return SAME_NAMESPACE;
  const parts = components(root);
  const up = parts.findIndex((c) => c !== '..');
  if (up !== -1) {
    throw new CgroupNamespaceError(
      `the cgroup v2 mount ${options.mount} is ${root} as this cgroup namespace sees it, not the root of the node's hierarchy nor an ancestor of this namespace; mount the node's whole cgroup2 (hostPath /sys/fs/cgroup) there`,
    );
  }
  const own = unifiedPath(options.selfCgroupText ?? readFileSync('/proc/self/cgroup', 'utf8')) ?? '/';
  const ownParts = components(own).filter((c) => c !== '..');
  const pid = options.pid ?? process.pid;
  const holders = cgroupsHolding(options.mount, parts.length + ownParts.length, pid).filter((path) => path.endsWith(own === '/' ? '' : own));
  if (holders.length !== 1) {
    throw new CgroupNamespaceError(
      `this process is in a private cgroup namespace ${parts.length} level(s) below the root of ${options.mount}, and ${holders.length === 0 ? 'no' : holders.length} cgroup there lists its pid ${pid}; run it in the node's PID namespace (hostPID) or with cgroupns host`,
    );
  }
  const holder = holders[0]!;
  const namespaceRoot = ownParts.length === 0 ? holder : holder.slice(0, holder.length - own.length);
  return {
    toMountPath: (path) => (path.startsWith('/') ? posix.normalize(`${namespaceRoot}${path === '/' ? '' : path}`) : path),
    description: `private cgroup namespace rooted at ${namespaceRoot} of ${options.mount}: /proc cgroup paths are read relative to it`,
  };
}
