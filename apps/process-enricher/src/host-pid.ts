// Whether /proc shows the node's processes (host PID namespace) or only those of our own
// container: without hostPID the enricher cannot see the processes capture stamps.
import { readdirSync, readlinkSync, readFileSync } from 'node:fs';

/** The initial PID namespace's inode (PROC_PID_INIT_INO, fixed since Linux 3.8). */
export const INITIAL_PID_NAMESPACE = 'pid:[4026531836]';

export interface PidNamespaceView {
  hostPid: boolean;
  /** One line for the log. */
  message: string;
}

const initNames = new Set(['systemd', 'init', 'process_api', 'launchd', 'runit', 'openrc-init', 'tini-host']);

/**
 * Decides from what /proc shows. In the initial PID namespace: host. Otherwise (a container, or
 * a kind/VM node whose "host" is itself namespaced) pid 1 being an init with many processes
 * around it still means a node-wide view; a pid 1 that is an application with a handful of
 * processes is a container's own view.
 */
export function checkPidNamespace(procRoot = '/proc', minNodeProcesses = 30): PidNamespaceView {
  let ns = '';
  try {
    ns = readlinkSync(`${procRoot}/self/ns/pid`);
  } catch {
    ns = '';
  }
  if (ns === INITIAL_PID_NAMESPACE) return { hostPid: true, message: `in the host PID namespace (${ns})` };
  let pid1 = '';
  try {
    pid1 = readFileSync(`${procRoot}/1/comm`, 'utf8').trim();
  } catch {
    pid1 = '';
  }
  let count = 0;
  try {
    count = readdirCount(procRoot);
  } catch {
    count = 0;
  }
  if (initNames.has(pid1) && count >= minNodeProcesses) {
    return { hostPid: true, message: `PID namespace ${ns || 'unknown'} with init ${pid1} and ${count} processes: treated as the node's` };
  }
  return {
    hostPid: false,
    message: `not in the host PID namespace: /proc shows ${count} processes and pid 1 is ${pid1 || 'unreadable'} (${ns || 'unknown namespace'}); processes of other containers cannot be resolved, so records keep only the kernel's comm and cgroup: run with hostPID: true`,
  };
}

function readdirCount(procRoot: string): number {
  return readdirSync(procRoot).filter((n) => /^\d+$/.test(n)).length;
}
