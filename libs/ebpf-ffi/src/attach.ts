// Attaching programs. Cgroup and tracepoint attachments are BPF links owned by this process's
// file descriptors: the kernel detaches them when the process exits, even on SIGKILL, unless
// they are pinned on bpffs (`attachPinned`), which keeps them counting across a crash. tc filters (netlink, libbpf 1.1 has no tcx links) do outlive
// the process; `detachStaleTc` removes a previous instance's by their fixed handle.
import { closeSync, existsSync, constants as fsConstants, openSync, readSync } from 'node:fs';
import { BpfFilesystemError, bpfError } from './errors.js';
import { libbpf } from './libbpf.js';
import { libbpfLogSince, markLibbpfLog } from './log.js';
import type { BpfProgram } from './object.js';

export interface Attachment {
  /** What is attached where, for logs: `kappa_skb_ingress → cgroup /sys/fs/cgroup/unified`. */
  readonly description: string;
  detach(): void;
}

/** A BPF link; pinned ones stay attached after this process is gone until `detach`. */
export class LinkAttachment implements Attachment {
  protected link: bigint | undefined;
  private pinned = false;
  constructor(
    link: bigint,
    readonly description: string,
    pinned = false,
  ) {
    this.link = link;
    this.pinned = pinned;
  }

  pin(path: string): void {
    if (this.link === undefined) throw new Error(`cannot pin ${this.description}: detached`);
    const rc = libbpf().link_pin(this.link, path);
    if (rc < 0) throw bpfError(`cannot pin ${this.description} at ${path}`, -rc);
    this.pinned = true;
  }

  /** Unpins and detaches. */
  detach(): void {
    if (this.link === undefined) return;
    if (this.pinned) libbpf().link_unpin(this.link);
    this.release();
  }

  /** Closes this process's handle only: a pinned link stays attached (as after a crash). */
  release(): void {
    if (this.link === undefined) return;
    libbpf().link_destroy(this.link);
    this.link = undefined;
  }

  /** The link's file descriptor. */
  fd(): number {
    if (this.link === undefined) throw new Error(`${this.description}: detached`);
    return libbpf().link_fd(this.link);
  }

  /** Swaps the program of the attached link atomically; false when the link type cannot. */
  updateProgram(program: BpfProgram): boolean {
    if (this.link === undefined) throw new Error(`cannot update ${this.description}: detached`);
    return libbpf().link_update_program(this.link, program.handle) === 0;
  }
}

/**
 * Attaches `program` through a link pinned at `pinPath`. When a crashed instance left a link
 * pinned there, its program is swapped for `program` in place (BPF_LINK_UPDATE): no moment with
 * neither attached (packets uncounted) nor both (packets counted twice). Links that cannot be
 * updated (perf-event links of tracepoints) are replaced: the new one is attached first, then
 * the old one detached, so only that microsecond overlap sees both programs.
 */
export function attachPinned(pinPath: string, program: BpfProgram, attachFresh: () => LinkAttachment): LinkAttachment {
  if (!existsSync(pinPath)) {
    const fresh = attachFresh();
    try {
      fresh.pin(pinPath);
    } catch (error) {
      fresh.detach();
      throw error;
    }
    return fresh;
  }
  const bpf = libbpf();
  const mark = markLibbpfLog();
  const handle = bpf.link_open(pinPath);
  if (!handle) throw bpfError(`cannot open the link pinned at ${pinPath}`, bpf.errno(), libbpfLogSince(mark));
  const old = new LinkAttachment(handle, `${program.name} (pinned at ${pinPath})`, true);
  if (old.updateProgram(program)) return old;
  const fresh = attachFresh();
  old.detach();
  fresh.pin(pinPath);
  return fresh;
}

/** Detaches a link a previous instance pinned (a program this instance does not attach). */
export function detachPinned(pinPath: string): void {
  if (!existsSync(pinPath)) return;
  const handle = libbpf().link_open(pinPath);
  if (handle) new LinkAttachment(handle, pinPath, true).detach();
}

/** Attaches with a link (multi-attach: other tools' programs on the cgroup stay). */
export function attachCgroup(program: BpfProgram, cgroupPath: string): LinkAttachment {
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

export function attachTracepoint(program: BpfProgram, category: string, name: string): LinkAttachment {
  const bpf = libbpf();
  const mark = markLibbpfLog();
  const link = bpf.attach_tracepoint(program.handle, category, name);
  if (!link) throw bpfError(`cannot attach ${program.name} to tracepoint ${category}:${name}`, bpf.errno(), libbpfLogSince(mark));
  return new LinkAttachment(link, `${program.name} → tracepoint ${category}:${name}`);
}

/** Attaches by the program's own section (tp_btf/<event>: a BTF tracepoint). */
export function attachProgram(program: BpfProgram, what: string): LinkAttachment {
  const bpf = libbpf();
  const mark = markLibbpfLog();
  const link = bpf.attach_program(program.handle);
  if (!link) throw bpfError(`cannot attach ${program.name} to ${what}`, bpf.errno(), libbpfLogSince(mark));
  return new LinkAttachment(link, `${program.name} → ${what}`);
}

/** A BPF iterator (iter/<target>): each `run` makes the kernel walk its target once. */
export class IteratorAttachment extends LinkAttachment {
  private readonly buffer = Buffer.alloc(64 * 1024);

  /** Walks the target (the program does its work as it goes); returns the bytes it printed. */
  run(): number {
    const bpf = libbpf();
    const fd = bpf.iter_create(this.fd());
    if (fd < 0) throw bpfError(`cannot start ${this.description}`, -fd);
    let total = 0;
    try {
      for (let n = readSync(fd, this.buffer); n > 0; n = readSync(fd, this.buffer)) total += n;
    } finally {
      closeSync(fd);
    }
    return total;
  }
}

/** Attaches an iterator program (iter/task_file and the like). */
export function attachIterator(program: BpfProgram): IteratorAttachment {
  const bpf = libbpf();
  const mark = markLibbpfLog();
  const link = bpf.attach_iter(program.handle, null);
  if (!link) throw bpfError(`cannot attach iterator ${program.name}`, bpf.errno(), libbpfLogSince(mark));
  return new IteratorAttachment(link, `${program.name} → iterator`);
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
