// What capture needs of the kernel, and which hook each of its features uses on this one. Asked of
// the kernel at start (libbpf probes, the kernel's BTF): a kernel without something capture cannot
// do without is refused in one line naming it; a kernel without an optional hook gets the feature
// through another hook, or runs without it, and the start log and the heartbeat say which.
import { BtfKind, Helper, MapType, ProgType } from '@kappa/ebpf-ffi';

/** The kernel's answers (KernelProbe and KernelBtf of @kappa/ebpf-ffi in production). */
export interface KernelFacts {
  /** uname -r, for messages. */
  release: string;
  programType(type: number): boolean;
  mapType(type: number): boolean;
  helper(progType: number, helper: number): boolean;
  atomics(): boolean;
  /** The kernel refuses this process BPF altogether (user namespace, seccomp, LSM): probes tell nothing. */
  probesRefused?(): boolean;
  /** Names in the kernel's BTF. */
  btf: { has(kind: number, name: string): boolean };
}

/** Something capture cannot run without. `since`: the kernel release that brought it. */
interface Requirement {
  what: string;
  since: string;
  /** What capture does with it. */
  for: string;
  /** Only in interface mode. */
  interfaceMode?: true;
  /** Only for kernels without bpf_cast_to_kern_ctx (they load kappa-compat.bpf.o). */
  compatOnly?: true;
  present(kernel: KernelFacts): boolean;
}

const REQUIREMENTS: readonly Requirement[] = [
  { what: 'cgroup skb programs', since: '4.10', for: 'counting every packet of every local socket', present: (k) => k.programType(ProgType.CGROUP_SKB) },
  {
    what: 'cgroup sock and sock_addr programs',
    since: '4.17',
    for: 'stamping the process on each socket',
    present: (k) => k.programType(ProgType.CGROUP_SOCK) && k.programType(ProgType.CGROUP_SOCK_ADDR),
  },
  { what: 'sock_ops programs', since: '4.13', for: 'roles, handshake time and retransmits of TCP connections', present: (k) => k.programType(ProgType.SOCK_OPS) },
  {
    what: 'socket storage (BPF_MAP_TYPE_SK_STORAGE) in cgroup programs',
    since: '5.2',
    for: "each socket's owner and conversation",
    present: (k) => k.mapType(MapType.SK_STORAGE) && k.helper(ProgType.CGROUP_SKB, Helper.sk_storage_get) && k.helper(ProgType.CGROUP_SOCK, Helper.sk_storage_get),
  },
  { what: 'bpf_tcp_sock() in cgroup skb programs', since: '5.1', for: 'RTT and retransmits', present: (k) => k.helper(ProgType.CGROUP_SKB, Helper.tcp_sock) },
  { what: 'bpf_ktime_get_coarse_ns()', since: '5.11', for: 'last-packet times', present: (k) => k.helper(ProgType.CGROUP_SKB, Helper.ktime_get_coarse_ns) },
  { what: 'BPF atomic instructions (BPF_ATOMIC OR and CMPXCHG)', since: '5.12', for: 'TCP flags and retransmits counted once from both directions', present: (k) => k.atomics() },
  {
    what: 'bpf_get_current_task_btf() in cgroup programs',
    since: '5.15',
    for: "the owner's start time, which tells a reused pid apart",
    present: (k) => k.helper(ProgType.CGROUP_SOCK, Helper.get_current_task_btf) && k.helper(ProgType.CGROUP_SOCK_ADDR, Helper.get_current_task_btf),
  },
  {
    what: 'bpf_probe_read_kernel() in cgroup and sock_ops programs (denied under kernel lockdown "confidentiality")',
    since: '5.8',
    for: 'namespaces, device MTU and fragment sizes on kernels without bpf_cast_to_kern_ctx (before 6.2)',
    compatOnly: true,
    present: (k) =>
      [ProgType.CGROUP_SKB, ProgType.CGROUP_SOCK, ProgType.CGROUP_SOCK_ADDR, ProgType.SOCK_OPS].every((type) => k.helper(type, Helper.probe_read_kernel)),
  },
  { what: 'tc (sched_cls) programs', since: '4.1', for: 'interface mode', interfaceMode: true, present: (k) => k.programType(ProgType.SCHED_CLS) },
];

/** The oldest kernel every requirement is in: what the README states as the minimum. */
export const MINIMUM_KERNEL = '5.15';

/** A way to provide a feature: programs to load and attach, and what the kernel must offer. */
export interface Hook {
  /** Short name for logs and --disable-hooks: tracepoint, fexit. */
  name: string;
  /** How the log describes it. */
  describe: string;
  programs: readonly string[];
  /**
   * Programs it lives inside (code the .rodata config turns on), not programs of its own: when
   * one of these fails to load while the hook is on, the hook goes off and the load is tried again.
   */
  inside?: readonly string[];
  /** Why the kernel cannot offer it, or undefined when it can (as far as probes tell). */
  missing(kernel: KernelFacts): string | undefined;
}

/** A capture feature with more than one way in. */
export interface OptionalFeature {
  name: string;
  hooks: readonly Hook[];
}

const TRACEPOINT_HOOK: Hook = {
  name: 'tracepoint',
  describe: 'tracepoints sock:sock_send_length and sock:sock_recv_length',
  programs: ['kappa_sock_send', 'kappa_sock_recv'],
  missing: (k) =>
    k.btf.has(BtfKind.TYPEDEF, 'btf_trace_sock_send_length') && k.btf.has(BtfKind.TYPEDEF, 'btf_trace_sock_recv_length')
      ? undefined
      : 'no sock_send_length tracepoint before 6.3',
};

const FEXIT_FUNCTIONS = ['inet_sendmsg', 'inet6_sendmsg', 'inet_recvmsg', 'inet6_recvmsg'];
const FEXIT_HOOK: Hook = {
  name: 'fexit',
  describe: `fexit ${FEXIT_FUNCTIONS.join(', ')}`,
  programs: ['kappa_inet_send_exit', 'kappa_inet6_send_exit', 'kappa_inet_recv_exit', 'kappa_inet6_recv_exit'],
  // Whether the kernel allows fexit at all (5.5+, BPF trampolines, no policy against it) only a
  // load tells (libbpf cannot probe tracing programs without a target): start.ts tries it.
  missing: (k) => {
    const absent = FEXIT_FUNCTIONS.filter((name) => !k.btf.has(BtfKind.FUNC, name));
    return absent.length > 0 ? `the kernel's BTF has no ${absent.join(', ')}` : undefined;
  },
};

/**
 * Request -> response time, and the owner of sockets older than capture (the first send or
 * receive runs in their process): both come from the same send/receive hooks.
 */
export const APP_LATENCY: OptionalFeature = { name: 'app latency', hooks: [TRACEPOINT_HOOK, FEXIT_HOOK] };

/**
 * Where connected TCP sockets count: in their socket storage, reported at each drain by an
 * iterator over every process's socket files and at destruction; or, without those hooks, in the
 * flow maps per packet (the same counts, a map update per packet).
 */
export const TCP_COUNTERS: OptionalFeature = {
  name: 'TCP counters',
  hooks: [
    {
      name: 'socket-iterator',
      describe: 'socket storage, reported by iter/task_file at each drain and at tcp_destroy_sock',
      programs: ['kappa_drain_sockets', 'kappa_tcp_destroy'],
      missing: (k) =>
        !k.btf.has(BtfKind.STRUCT, 'bpf_iter__task_file')
          ? 'no task_file iterator (5.8)'
          : !k.btf.has(BtfKind.TYPEDEF, 'btf_trace_tcp_destroy_sock')
            ? 'no tcp_destroy_sock tracepoint (4.16)'
            : undefined,
    },
    { name: 'per-packet', describe: 'the flow maps, per packet', programs: [], missing: () => undefined },
  ],
};

const compatKernel = (k: KernelFacts) => !k.btf.has(BtfKind.FUNC, 'bpf_cast_to_kern_ctx');

/**
 * The SYN-ACK an IPv6 listener sends, at the server end. Kernels before 6.2 (seen on 6.1) never run
 * the cgroup egress hook for it (it leaves from the request socket); there an fexit on tcp_make_synack
 * counts it (bpf/kappa_hooks_synack6.h). Newer kernels' hook counts it (seen on 6.18).
 */
export const SYNACK6: OptionalFeature = {
  name: 'IPv6 SYN-ACKs of listeners',
  hooks: [
    {
      name: 'cgroup-egress',
      describe: 'the cgroup egress hook',
      programs: [],
      missing: (k) => (compatKernel(k) ? 'the cgroup egress hook skips them before 6.2' : undefined),
    },
    {
      // Not fentry on ip6_xmit: it has 7 arguments, and x86 BPF trampolines take 6 before 6.6
      // (6.1 loads such a program, then refuses to attach it).
      name: 'synack-fexit',
      describe: 'fexit tcp_make_synack',
      programs: ['kappa_synack6'],
      missing: (k) => (!compatKernel(k) ? 'not needed' : !k.btf.has(BtfKind.FUNC, 'tcp_make_synack') ? "the kernel's BTF has no tcp_make_synack" : undefined),
    },
  ],
};

/** DNS names and exchanges: DNS messages copied to a ring buffer at the cgroup skb hooks (bpf/kappa_dns.h). */
export const DNS: OptionalFeature = {
  name: 'DNS',
  hooks: [
    {
      name: 'cgroup-skb',
      describe: 'cgroup skb hooks copying port-53 payloads to a ring buffer',
      // No programs of its own: the skb programs do it when kappa_config.dns is set (start.ts). A
      // verifier that rejects them with the copy in (Debian's 6.1 did before the copy's length was
      // bounded by arithmetic: "R3 min value is outside of the allowed memory range") turns DNS
      // off, and counting goes on without it.
      programs: [],
      inside: ['kappa_skb_ingress', 'kappa_skb_egress'],
      missing: (k) => (!k.mapType(MapType.RINGBUF) ? 'no BPF ring buffer (5.8)' : undefined),
    },
  ],
};

/** Dropped packets with the kernel's reason (bpf/kappa_drop.h); off where kfree_skb has no reason. */
export const DROPS: OptionalFeature = {
  name: 'drops',
  hooks: [
    {
      name: 'kfree_skb',
      describe: 'tp_btf skb:kfree_skb with its drop reason',
      programs: ['kappa_drop', 'kappa_drop_sock_create'],
      missing: (k) =>
        !k.btf.has(BtfKind.TYPEDEF, 'btf_trace_kfree_skb')
          ? 'no kfree_skb tracepoint in the BTF'
          : !k.btf.has(BtfKind.ENUM, 'skb_drop_reason')
            ? 'skb:kfree_skb has no drop reason before 5.17'
            : undefined,
    },
  ],
};

/**
 * Argument lists at exec (bpf/kappa_exec.h), handed to the process-enricher of the node: processes
 * that exit before enrichment keep their command line. Off: they keep only the kernel's comm.
 */
export const EXEC: OptionalFeature = {
  name: 'exec',
  hooks: [
    {
      name: 'sched_process_exec',
      describe: 'tp_btf sched:sched_process_exec copying argument lists to a ring buffer',
      programs: ['kappa_exec'],
      missing: (k) =>
        !k.mapType(MapType.RINGBUF)
          ? 'no BPF ring buffer (5.8)'
          : !k.btf.has(BtfKind.TYPEDEF, 'btf_trace_sched_process_exec')
            ? 'no sched_process_exec tracepoint in the BTF'
            : undefined,
    },
  ],
};

export const OPTIONAL_FEATURES: readonly OptionalFeature[] = [APP_LATENCY, TCP_COUNTERS, SYNACK6, DNS, DROPS, EXEC];

/** Every program some optional hook brings: those not chosen are left out of the load. */
export const OPTIONAL_PROGRAMS: readonly string[] = OPTIONAL_FEATURES.flatMap((f) => f.hooks.flatMap((h) => h.programs));

/** The kernel lacks something capture cannot do without; the message names it in one line. */
export class KernelTooOldError extends Error {
  override name = 'KernelTooOldError';
  constructor(
    message: string,
    readonly missing: readonly string[],
  ) {
    super(message);
  }
}

export interface FeatureChoice {
  feature: string;
  /** The hook in use; undefined when the feature is off. */
  hook: Hook | undefined;
  /** Why better hooks were passed over (or why it is off). */
  passedOver: string[];
}

export interface KernelPlan {
  /** kappa-compat.bpf.o: no bpf_cast_to_kern_ctx (before 6.2). */
  compat: boolean;
  features: FeatureChoice[];
  /** Programs to leave out of the load. */
  omit: string[];
}

/** Hooks that must not be used: turned off by the operator, or tried and refused by this kernel. */
export type Refusals = ReadonlyMap<string, string>;

/**
 * Checks every requirement (throws KernelTooOldError naming each one missing) and picks, for each
 * optional feature, the first hook the kernel offers and nobody refused.
 */
export function planKernel(kernel: KernelFacts, options: { interfaceMode: boolean; refused?: Refusals }): KernelPlan {
  const compat = compatKernel(kernel);
  const missing = REQUIREMENTS.filter((r) => (!r.interfaceMode || options.interfaceMode) && (!r.compatOnly || compat) && !r.present(kernel));
  // Refused probes say nothing about the kernel: the load then fails and says why (permission).
  if (missing.length > 0 && !kernel.probesRefused?.()) {
    const list = missing.map((r) => `${r.what} (kernel ${r.since}, for ${r.for})`).join('; ');
    throw new KernelTooOldError(
      `this kernel (${kernel.release}) lacks ${list}; capture needs Linux ${MINIMUM_KERNEL} or later with BTF (CONFIG_DEBUG_INFO_BTF)`,
      missing.map((r) => r.what),
    );
  }
  const refused = options.refused ?? new Map<string, string>();
  const features: FeatureChoice[] = [];
  const chosen = new Set<string>();
  for (const feature of OPTIONAL_FEATURES) {
    const passedOver: string[] = [];
    let hook: Hook | undefined;
    for (const candidate of feature.hooks) {
      const reason = refused.get(candidate.name) ?? candidate.missing(kernel);
      if (reason === undefined) {
        hook = candidate;
        break;
      }
      passedOver.push(reason);
    }
    if (hook) for (const program of hook.programs) chosen.add(program);
    features.push({ feature: feature.name, hook, passedOver });
  }
  return { compat, features, omit: OPTIONAL_PROGRAMS.filter((p) => !chosen.has(p)) };
}

/** Whether the plan turns `feature` on (a hook of it chosen). */
export function featureOn(plan: KernelPlan, feature: OptionalFeature): boolean {
  return plan.features.some((choice) => choice.feature === feature.name && choice.hook !== undefined);
}

/** "app latency: via fexit inet_sendmsg, … (no sock_send_length tracepoint before 6.3)". */
export function describeFeature(choice: FeatureChoice): string {
  const why = choice.passedOver.length > 0 ? ` (${choice.passedOver.join('; ')})` : '';
  return choice.hook ? `${choice.feature}: via ${choice.hook.describe}${why}` : `${choice.feature}: off${why}`;
}

/** The plan as the start log, `--check` and the heartbeat give it, one line each. */
export function describePlan(plan: KernelPlan): string[] {
  return [
    plan.compat
      ? 'kernel structures: read with bpf_probe_read_kernel (kappa-compat.bpf.o: no bpf_cast_to_kern_ctx before 6.2)'
      : 'kernel structures: read with bpf_cast_to_kern_ctx (kappa.bpf.o)',
    ...plan.features.map(describeFeature),
  ];
}

/**
 * Programs a load or attach error says failed: libbpf's `prog 'x': failed …` / `BPF program load
 * failed` lines and the attach error's own message (libbpf's debug lines name every program while
 * relocating, so only failure lines count).
 */
export function failedPrograms(error: Error & { libbpfLog?: readonly string[] }): Set<string> {
  const failed = new Set<string>();
  const attach = /cannot attach (\w+)/.exec(error.message);
  if (attach?.[1]) failed.add(attach[1]);
  for (const line of error.libbpfLog ?? []) {
    const m = /prog '(\w+)': (?:failed|BPF program load failed|-- BEGIN PROG LOAD LOG|missing|unsupported)/.exec(line);
    if (m?.[1]) failed.add(m[1]);
  }
  return failed;
}

/** The chosen hook whose program the kernel refused, if the error names one. */
export function hookOfFailure(plan: KernelPlan, error: Error & { libbpfLog?: readonly string[] }): Hook | undefined {
  const failed = failedPrograms(error);
  for (const choice of plan.features) {
    if (choice.hook?.programs.some((program) => failed.has(program))) return choice.hook;
  }
  for (const choice of plan.features) {
    if (choice.hook?.inside?.some((program) => failed.has(program))) return choice.hook;
  }
  return undefined;
}
