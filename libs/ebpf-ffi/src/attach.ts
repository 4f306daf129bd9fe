// Attaching programs. Cgroup and tracepoint attachments are BPF links owned by this process's
// file descriptors: the kernel detaches them when the process exits, even on SIGKILL, so a
// crash leaves nothing behind. tc filters (netlink, libbpf 1.1 has no tcx links) do outlive
// the process; `detachStaleTc` removes a previous instance's by their fixed handle.
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { BpfFilesystemError, bpfError } from './errors.js';
import { libbpf } from './libbpf.js';
import { libbpfLogSince, markLibbpfLog } from './log.js';
import type { BpfProgram } from './object.js';

export interface Attachment {
  /** What is attached where, for logs: `kappa_skb_ingress → cgroup /sys/fs/cgroup/unified`. */
  readonly description: string;
  detach(): void;
}

class LinkAttachment implements Attachment {
  private link: bigint | undefined;
  constructor(
    link: bigint,
    readonly description: string,
  ) {
    this.link = link;
  }

  detach(): void {
    if (this.link === undefined) return;
    libbpf().link_destroy(this.link);
    this.link = undefined;
  }
}

/** Attaches with a link (multi-attach: other tools' programs on the cgroup stay). */
export function attachCgroup(program: BpfProgram, cgroupPath: string): Attachment {
  let fd: number;
  try {
    fd = openSync(cgroupPath, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  } catch (cause) {
    throw new BpfFilesystemError(`cannot open cgroup ${cgroupPath}: is cgroup v2 mounted there? (${(cause as Error).message})`, 2, [], { cause });
  }
  try {
    const bpf = libbpf();
    const mark = markLibbpfLog();
    const link = bpf.attach_cgroup(program.handle, fd);
    if (!link) throw bpfError(`cannot attach ${program.name} to cgroup ${cgroupPath}`, bpf.errno(), libbpfLogSince(mark));
    return new LinkAttachment(link, `${program.name} → cgroup ${cgroupPath}`);
  } finally {
    closeSync(fd); // the link holds its own reference to the cgroup
  }
}

export function attachTracepoint(program: BpfProgram, category: string, name: string): Attachment {
  const bpf = libbpf();
  const mark = markLibbpfLog();
  const link = bpf.attach_tracepoint(program.handle, category, name);
  if (!link) throw bpfError(`cannot attach ${program.name} to tracepoint ${category}:${name}`, bpf.errno(), libbpfLogSince(mark));
  return new LinkAttachment(link, `${program.name} → tracepoint ${category}:${name}`);
}

export type TcDirection = 'ingress' | 'egress';

/** Fixed so that a restarted instance finds the filters a crashed one left ('ka'). */
export const TC_HANDLE = 0x6b61;
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
const EEXIST = 17;

function tcHook(ifindex: number, direction: TcDirection) {
  return { sz: 24, ifindex, attach_point: direction === 'ingress' ? BPF_TC_INGRESS : BPF_TC_EGRESS, parent: 0 };
}

/** Attaches a tc (clsact) filter; creates the clsact qdisc when the interface has none. */
export function attachTc(program: BpfProgram, ifindex: number, ifname: string, direction: TcDirection, priority: number): Attachment {
  const bpf = libbpf();
  const mark = markLibbpfLog();
  const created = bpf.tc_hook_create({ sz: 24, ifindex, attach_point: BPF_TC_INGRESS | BPF_TC_EGRESS, parent: 0 });
  if (created < 0 && -created !== EEXIST) {
    throw bpfError(`cannot add a clsact qdisc to ${ifname}`, -created, libbpfLogSince(mark));
  }
  const hook = tcHook(ifindex, direction);
  const options = { sz: 32, prog_fd: program.fd, flags: 1 /* BPF_TC_F_REPLACE */, prog_id: 0, handle: TC_HANDLE, priority };
  const rc = bpf.tc_attach(hook, options);
  if (rc < 0) throw bpfError(`cannot attach ${program.name} to ${ifname} ${direction}`, -rc, libbpfLogSince(mark));
  let attached = true;
  return {
    description: `${program.name} → tc ${ifname} ${direction}`,
    detach() {
      if (!attached) return;
      attached = false;
      // The interface may be gone already (a deleted veth takes its filters with it).
      bpf.tc_detach(hook, { sz: 32, prog_fd: 0, flags: 0, prog_id: 0, handle: TC_HANDLE, priority });
    },
  };
}

/** Removes kappa's tc filter left by a previous instance; true when there was one. */
export function detachStaleTc(ifindex: number, direction: TcDirection, priority: number): boolean {
  const rc = libbpf().tc_detach(tcHook(ifindex, direction), { sz: 32, prog_fd: 0, flags: 0, prog_id: 0, handle: TC_HANDLE, priority });
  return rc === 0;
}
