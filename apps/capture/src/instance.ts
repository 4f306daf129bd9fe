// Where one capture instance (a --node and --cgroup pair) keeps what must outlive a crash: its
// pinned maps and links on bpffs, and its spool of unpublished batches on disk.
import { createHash } from 'node:crypto';
import { join } from 'node:path';

/** Safe as one path component; a restart with the same --node and --cgroup finds the same one. */
export function instanceToken(node: string, cgroupPath: string): string {
  const hash = createHash('sha256').update(cgroupPath).digest('hex').slice(0, 12);
  return `${node.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64)}-${hash}`;
}

export function pinFolder(token: string): string {
  return join('/sys/fs/bpf/kappa', token);
}

export function defaultStateDir(token: string): string {
  return join('/var/lib/kappa/capture', token);
}
