// The decisions of kernel.ts over kernels described by their probe answers: which object, which
// hook per feature, and the one line that refuses a kernel without something capture needs.
// (The same decisions against real kernels: test/kernel-features.test.ts, here and under qemu.)
import { describe, expect, it } from 'vitest';
import { BtfKind, Helper, ProgType } from '@kappa/ebpf-ffi';
import { DNS, KernelTooOldError, describePlan, failedPrograms, featureOn, hookOfFailure, planKernel } from './kernel.js';
import type { KernelFacts } from './kernel.js';

interface Kernel {
  release: string;
  btf?: string[];
  noHelpers?: [number, number][];
  atomics?: boolean;
  noProgramTypes?: number[];
}

/** Answers of a kernel with everything except what `kernel` takes away. */
function facts(kernel: Kernel): KernelFacts {
  const btf = new Set(kernel.btf ?? []);
  return {
    release: kernel.release,
    programType: (type) => !(kernel.noProgramTypes ?? []).includes(type),
    mapType: () => true,
    helper: (type, helper) => !(kernel.noHelpers ?? []).some(([t, h]) => t === type && h === helper),
    atomics: () => kernel.atomics ?? true,
    btf: { has: (kind, name) => btf.has(`${kind}:${name}`) },
  };
}

const FEXIT_FUNCTIONS = ['inet_sendmsg', 'inet6_sendmsg', 'inet_recvmsg', 'inet6_recvmsg'].map((f) => `${BtfKind.FUNC}:${f}`);
const ITERATOR = [`${BtfKind.STRUCT}:bpf_iter__task_file`, `${BtfKind.TYPEDEF}:btf_trace_tcp_destroy_sock`];
const DROP_REASONS = [`${BtfKind.TYPEDEF}:btf_trace_kfree_skb`, `${BtfKind.ENUM}:skb_drop_reason`];
const EXEC_TRACEPOINT = `${BtfKind.TYPEDEF}:btf_trace_sched_process_exec`;
const LINUX_6_18 = [...DROP_REASONS, EXEC_TRACEPOINT, `${BtfKind.FUNC}:bpf_cast_to_kern_ctx`, `${BtfKind.TYPEDEF}:btf_trace_sock_send_length`, `${BtfKind.TYPEDEF}:btf_trace_sock_recv_length`, ...FEXIT_FUNCTIONS, ...ITERATOR, `${BtfKind.FUNC}:tcp_make_synack`];
const LINUX_6_1 = [...DROP_REASONS, EXEC_TRACEPOINT, ...FEXIT_FUNCTIONS, ...ITERATOR, `${BtfKind.FUNC}:tcp_make_synack`];

describe('planKernel', () => {
  it('on 6.18 loads kappa.bpf.o and takes the send/receive tracepoints', () => {
    const plan = planKernel(facts({ release: '6.18.0', btf: LINUX_6_18 }), { interfaceMode: false });
    expect(describePlan(plan)).toEqual([
      'kernel structures: read with bpf_cast_to_kern_ctx (kappa.bpf.o)',
      'app latency: via tracepoints sock:sock_send_length and sock:sock_recv_length',
      'TCP counters: via socket storage, reported by iter/task_file at each drain and at tcp_destroy_sock',
      'IPv6 SYN-ACKs of listeners: via the cgroup egress hook',
      'DNS: via cgroup skb hooks copying port-53 payloads to a ring buffer',
      'drops: via tp_btf skb:kfree_skb with its drop reason',
      'exec: via tp_btf sched:sched_process_exec copying argument lists to a ring buffer',
    ]);
    expect(plan.omit).toEqual(['kappa_inet_send_exit', 'kappa_inet6_send_exit', 'kappa_inet_recv_exit', 'kappa_inet6_recv_exit', 'kappa_synack6']);
  });

  it('on 6.1 loads kappa-compat.bpf.o and measures app latency at fexit, saying why', () => {
    const plan = planKernel(facts({ release: '6.1.0', btf: LINUX_6_1 }), { interfaceMode: false });
    expect(plan.compat).toBe(true);
    expect(describePlan(plan)[1]).toBe('app latency: via fexit inet_sendmsg, inet6_sendmsg, inet_recvmsg, inet6_recvmsg (no sock_send_length tracepoint before 6.3)');
    expect(describePlan(plan)[3]).toBe('IPv6 SYN-ACKs of listeners: via fexit tcp_make_synack (the cgroup egress hook skips them before 6.2)');
    expect(plan.omit).toEqual(['kappa_sock_send', 'kappa_sock_recv']);
  });

  it('turns drops off, saying why, on a kernel whose kfree_skb has no drop reason (before 5.17); DNS stays', () => {
    const plan = planKernel(facts({ release: '5.15.0', btf: LINUX_6_1.filter((n) => !n.endsWith(':skb_drop_reason')) }), { interfaceMode: false });
    expect(describePlan(plan).find((line) => line.startsWith('drops'))).toMatch(/^drops: off.*no drop reason before 5\.17/);
    expect(plan.omit).toEqual(expect.arrayContaining(['kappa_drop', 'kappa_drop_sock_create']));
    expect(featureOn(plan, DNS)).toBe(true);
  });

  it('turns exec (argument lists at exec) off, saying why, on a kernel whose BTF has no sched_process_exec; the rest stays', () => {
    const plan = planKernel(facts({ release: '6.1.0', btf: LINUX_6_1.filter((n) => n !== EXEC_TRACEPOINT) }), { interfaceMode: false });
    expect(describePlan(plan).at(-1)).toBe('exec: off (no sched_process_exec tracepoint in the BTF)');
    expect(plan.omit).toContain('kappa_exec');
    expect(plan.omit).not.toContain('kappa_drop');
  });

  it('turns app latency off, with every reason, when neither hook is there; the rest still runs', () => {
    const plan = planKernel(facts({ release: '6.1.0', btf: ITERATOR }), { interfaceMode: false, refused: new Map() });
    expect(describePlan(plan)[1]).toBe("app latency: off (no sock_send_length tracepoint before 6.3; the kernel's BTF has no inet_sendmsg, inet6_sendmsg, inet_recvmsg, inet6_recvmsg)");
    expect(plan.omit).toContain('kappa_sock_send');
    expect(plan.omit).toContain('kappa_inet_send_exit');
    expect(describePlan(plan)[2]).toMatch(/^TCP counters: via socket storage/);
  });

  it('skips a hook the kernel refused at load and takes the next', () => {
    const refused = new Map([['tracepoint', 'tracepoint: turned off by --disable-hooks']]);
    const plan = planKernel(facts({ release: '6.18.0', btf: LINUX_6_18 }), { interfaceMode: false, refused });
    expect(describePlan(plan)[1]).toMatch(/^app latency: via fexit .* \(tracepoint: turned off by --disable-hooks\)$/);
  });

  it('refuses a kernel without BPF atomics in one line naming what is missing and the minimum', () => {
    const kernel = facts({ release: '5.10.0-28-cloud-amd64', btf: LINUX_6_1, atomics: false, noHelpers: [[ProgType.CGROUP_SOCK, Helper.get_current_task_btf], [ProgType.CGROUP_SKB, Helper.ktime_get_coarse_ns]] });
    const refuse = () => planKernel(kernel, { interfaceMode: false });
    expect(refuse).toThrow(KernelTooOldError);
    expect(refuse).toThrow(
      'this kernel (5.10.0-28-cloud-amd64) lacks bpf_ktime_get_coarse_ns() (kernel 5.11, for last-packet times); BPF atomic instructions (BPF_ATOMIC OR and CMPXCHG) (kernel 5.12, for TCP flags and retransmits counted once from both directions); bpf_get_current_task_btf() in cgroup programs (kernel 5.15, for the owner\'s start time, which tells a reused pid apart); capture needs Linux 5.15 or later with BTF (CONFIG_DEBUG_INFO_BTF)',
    );
    try {
      refuse();
    } catch (error) {
      expect((error as Error).message.split('\n')).toHaveLength(1);
    }
  });

  it('refuses a kernel before 6.2 that forbids bpf_probe_read_kernel (lockdown), but not one after', () => {
    const noReads: [number, number][] = [[ProgType.CGROUP_SKB, Helper.probe_read_kernel]];
    expect(() => planKernel(facts({ release: '6.1.0', btf: LINUX_6_1, noHelpers: noReads }), { interfaceMode: false })).toThrow(/lacks bpf_probe_read_kernel\(\) in cgroup and sock_ops programs/);
    expect(planKernel(facts({ release: '6.18.0', btf: LINUX_6_18, noHelpers: noReads }), { interfaceMode: false }).compat).toBe(false);
  });

  it('judges nothing by probes the kernel refused for permission (a user namespace): the load says why', () => {
    const refusedEverything = { ...facts({ release: '6.18.0', btf: LINUX_6_18, noProgramTypes: [ProgType.CGROUP_SKB, ProgType.SOCK_OPS], atomics: false }), probesRefused: () => true };
    expect(() => planKernel(refusedEverything, { interfaceMode: false })).not.toThrow();
    expect(() => planKernel({ ...refusedEverything, probesRefused: () => false }, { interfaceMode: false })).toThrow(KernelTooOldError);
  });

  it('asks for tc programs only in interface mode', () => {
    const kernel = facts({ release: '6.1.0', btf: LINUX_6_1, noProgramTypes: [ProgType.SCHED_CLS] });
    expect(() => planKernel(kernel, { interfaceMode: false })).not.toThrow();
    expect(() => planKernel(kernel, { interfaceMode: true })).toThrow(/tc \(sched_cls\) programs \(kernel 4\.1, for interface mode\)/);
  });
});

describe('hookOfFailure', () => {
  const plan = planKernel(facts({ release: '6.18.0', btf: LINUX_6_18 }), { interfaceMode: false });

  it("finds the hook of a program libbpf says failed, not of one it only relocated", () => {
    const error = Object.assign(new Error('cannot load kappa.bpf.o into the kernel: EINVAL'), {
      libbpfLog: [
        "libbpf: prog 'kappa_sock_send': relo #0: matching candidate",
        "libbpf: prog 'kappa_drain_sockets': BPF program load failed: Permission denied",
      ],
    });
    expect([...failedPrograms(error)]).toEqual(['kappa_drain_sockets']);
    expect(hookOfFailure(plan, error)?.name).toBe('socket-iterator');
  });

  it('finds the hook of a program that failed to attach, and none for a required program', () => {
    expect(hookOfFailure(plan, new Error('cannot attach kappa_sock_recv to tracepoint sock:sock_recv_length: ENOENT'))?.name).toBe('tracepoint');
    const skbFailed = Object.assign(new Error('x'), { libbpfLog: ["libbpf: prog 'kappa_skb_ingress': failed to load: -13"] });
    // With DNS on, the DNS copy inside the skb programs is what goes off first...
    expect(hookOfFailure(plan, skbFailed)?.name).toBe('cgroup-skb');
    // ...and without it, a failed skb program is capture's own: no hook to turn off.
    const noDns = planKernel(facts({ release: '6.18.0', btf: LINUX_6_18 }), { interfaceMode: false, refused: new Map([['cgroup-skb', 'x']]) });
    expect(featureOn(noDns, DNS)).toBe(false);
    expect(hookOfFailure(noDns, skbFailed)).toBeUndefined();
  });
});
