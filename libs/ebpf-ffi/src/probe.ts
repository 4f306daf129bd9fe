// What the running kernel offers BPF, asked of the kernel itself: program and map types and the
// helpers each program type may call (libbpf loads a tiny program and reads the verifier's
// answer), the BPF atomic instructions (a three-instruction program), and what its BTF describes
// (functions fexit can attach to, tracepoints tp_btf can, kfuncs). Cheap: milliseconds, nothing
// attached, nothing left behind.
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import koffi from 'koffi';
import { libbpf } from './libbpf.js';
import { KERNEL_BTF } from './object.js';

/** enum bpf_prog_type values kappa asks about. */
export const ProgType = {
  SOCKET_FILTER: 1,
  SCHED_CLS: 3,
  CGROUP_SKB: 8,
  CGROUP_SOCK: 9,
  SOCK_OPS: 13,
  CGROUP_SOCK_ADDR: 18,
  TRACING: 26,
} as const;

/** enum bpf_map_type values kappa asks about. */
export const MapType = {
  HASH: 1,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  SK_STORAGE: 24,
  RINGBUF: 27,
} as const;

/** enum bpf_func_id values kappa asks about. */
export const Helper = {
  get_socket_cookie: 46,
  get_current_cgroup_id: 80,
  sk_fullsock: 95,
  tcp_sock: 96,
  sk_storage_get: 107,
  probe_read_kernel: 113,
  get_current_ancestor_cgroup_id: 123,
  get_current_task_btf: 158,
  ktime_get_coarse_ns: 160,
} as const;

/** BTF kinds (BTF_KIND_*) kappa looks names up by. */
export const BtfKind = { STRUCT: 4, ENUM: 6, TYPEDEF: 8, FUNC: 12, ENUM64: 19 } as const;

/** The kernel's answers; each question is asked once. */
export class KernelProbe {
  private readonly answers = new Map<string, boolean>();

  programType(type: number): boolean {
    return this.ask(`prog ${type}`, () => libbpf().probe_prog_type(type, null) === 1);
  }

  mapType(type: number): boolean {
    return this.ask(`map ${type}`, () => libbpf().probe_map_type(type, null) === 1);
  }

  /** Whether programs of `progType` may call `helper` (as this process: CAP_PERFMON-only helpers count). */
  helper(progType: number, helper: number): boolean {
    return this.ask(`helper ${progType} ${helper}`, () => libbpf().probe_helper(progType, helper, null) === 1);
  }

  /** BPF_ATOMIC with BPF_OR and BPF_CMPXCHG on 64-bit words (kernel 5.12). */
  atomics(): boolean {
    return this.ask('atomics', () => {
      const bpf = libbpf();
      const fd = bpf.prog_load(ProgType.SOCKET_FILTER, null, 'GPL', ATOMICS_PROGRAM, ATOMICS_PROGRAM.length / 8, null);
      if (fd < 0) return false;
      bpf.close(fd);
      return true;
    });
  }

  /**
   * Whether the kernel refuses this process BPF programs altogether (EPERM/EACCES for a two-instruction
   * cgroup skb program the verifier cannot reject: a user namespace, seccomp, an LSM). Then every
   * other probe answers "no" for that reason, not for want of the feature.
   */
  refused(): boolean {
    return this.ask('refused', () => {
      const bpf = libbpf();
      const fd = bpf.prog_load(ProgType.CGROUP_SKB, null, 'GPL', RETURN_1, RETURN_1.length / 8, null);
      if (fd >= 0) {
        bpf.close(fd);
        return false;
      }
      const errno = Math.abs(fd) === constants.errno.EPERM || Math.abs(fd) === constants.errno.EACCES ? Math.abs(fd) : bpf.errno();
      return errno === constants.errno.EPERM || errno === constants.errno.EACCES;
    });
  }

  private ask(key: string, question: () => boolean): boolean {
    let answer = this.answers.get(key);
    if (answer === undefined) {
      answer = question();
      this.answers.set(key, answer);
    }
    return answer;
  }
}

/** One BPF instruction: opcode, dst and src registers, offset, immediate. */
function insn(code: number, dst: number, src: number, off: number, imm: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(code, 0);
  b.writeUInt8((src << 4) | dst, 1);
  b.writeInt16LE(off, 2);
  b.writeInt32LE(imm, 4);
  return b;
}

/** r0 = 1; exit. */
const RETURN_1 = Buffer.concat([insn(0xb7, 0, 0, 0, 1), insn(0x95, 0, 0, 0, 0)]);

/**
 * *(u64 *)(r10 - 8) = 0; r1 = 1; lock *(u64 *)(r10 - 8) |= r1; r0 = 0;
 * r0 = cmpxchg(r10 - 8, r0, r1); r0 = 0; exit — what `__sync_fetch_and_or` and
 * `__sync_val_compare_and_swap` compile to with -mcpu=v3.
 */
const ATOMICS_PROGRAM = Buffer.concat([
  insn(0x7a, 10, 0, -8, 0), // BPF_ST | BPF_MEM | BPF_DW
  insn(0xb7, 1, 0, 0, 1), // BPF_ALU64 | BPF_MOV | BPF_K
  insn(0xdb, 10, 1, -8, 0x40), // BPF_STX | BPF_ATOMIC | BPF_DW, BPF_OR
  insn(0xb7, 0, 0, 0, 0),
  insn(0xdb, 10, 1, -8, 0xf1), // BPF_CMPXCHG (0xf0 | BPF_FETCH)
  insn(0xb7, 0, 0, 0, 0),
  insn(0x95, 0, 0, 0, 0), // BPF_JMP | BPF_EXIT
]);

/** Names in a kernel BTF (the running kernel's, or a --btf file for it). */
export class KernelBtf {
  private constructor(
    readonly path: string,
    private handle: bigint,
  ) {}

  /** Undefined when the file does not exist (a kernel without BTF). */
  static open(path: string = KERNEL_BTF): KernelBtf | undefined {
    if (!existsSync(path)) return undefined;
    const bpf = libbpf();
    const handle = bpf.btf_parse(path, null);
    if (!handle) return undefined;
    return new KernelBtf(path, handle);
  }

  has(kind: number, name: string): boolean {
    if (!this.handle) throw new Error(`BTF ${this.path} is closed`);
    return libbpf().btf_find_by_name_kind(this.handle, name, kind) > 0;
  }

  /**
   * The values and names of enum (or enum64) `name`, undefined when the BTF has none. Read from
   * the parsed BTF: the kernel's names for its numbers (skb_drop_reason) without a second read.
   */
  enumValues(name: string): Map<number, string> | undefined {
    if (!this.handle) throw new Error(`BTF ${this.path} is closed`);
    const bpf = libbpf();
    for (const [kind, itemWords] of [[BtfKind.ENUM, 2], [BtfKind.ENUM64, 3]] as const) {
      const id = bpf.btf_find_by_name_kind(this.handle, name, kind);
      if (id <= 0) continue;
      const type = bpf.btf_type_by_id(this.handle, id);
      // struct btf_type { name_off, info, size }, then vlen items { name_off, val[, val_hi32] }.
      const vlen = (koffi.decode(type, 'uint32_t', 2) as number[])[1]! & 0xffff;
      const words = koffi.decode(type, 'uint32_t', 3 + vlen * itemWords) as number[];
      const values = new Map<number, string>();
      for (let i = 0; i < vlen; i++) {
        const item = 3 + i * itemWords;
        values.set(words[item + 1]!, bpf.btf_name_by_offset(this.handle, words[item]!) ?? '');
      }
      return values;
    }
    return undefined;
  }

  /** A kernel function fentry/fexit can attach to. */
  hasFunction(name: string): boolean {
    return this.has(BtfKind.FUNC, name);
  }

  /** A tracepoint tp_btf can attach to (the kernel declares `btf_trace_<name>` for each). */
  hasTracepoint(name: string): boolean {
    return this.has(BtfKind.TYPEDEF, `btf_trace_${name}`);
  }

  close(): void {
    if (!this.handle) return;
    libbpf().btf_free(this.handle);
    this.handle = 0n;
  }
}
