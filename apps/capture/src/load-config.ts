// How bpf/kappa.bpf.o is configured before load: the programs left out, the read-only
// kappa_config and the map sizes. A start (datapath.ts) and `kappa-capture --check` (start.ts) both
// configure through here, so --check loads what a start loads and tells what a start will find.
import type { BpfObject } from '@kappa/ebpf-ffi';
import { kernelFunction } from './kallsyms.js';
import { encodeConfig } from './layout.js';

/** The flow maps programs count into, one per drain interval in turn. */
export const FLOW_MAPS = ['kappa_flows_0', 'kappa_flows_1'] as const;
// Attached in this order: drops (programs of their own, bpf/kappa_drop.h) after the counting
// programs, so a socket's storage exists when they look for it. DNS is not a program of its own:
// the skb programs copy DNS messages when kappa_config.dns is set (bpf/kappa_dns.h).
export const CGROUP_PROGRAMS = [
  'kappa_skb_ingress',
  'kappa_skb_egress',
  'kappa_sock_create',
  'kappa_connect4',
  'kappa_connect6',
  'kappa_sockops',
  'kappa_sock_release',
  'kappa_drop_sock_create',
] as const;
export const TRACEPOINT_PROGRAMS = [
  ['kappa_sock_send', 'tracepoint sock:sock_send_length'],
  ['kappa_sock_recv', 'tracepoint sock:sock_recv_length'],
  ['kappa_tcp_destroy', 'tracepoint tcp:tcp_destroy_sock'],
  // Kernels before 6.3 (no sock_send_length / sock_recv_length): see src/kernel.ts.
  ['kappa_inet_send_exit', 'fexit inet_sendmsg'],
  ['kappa_inet6_send_exit', 'fexit inet6_sendmsg'],
  ['kappa_inet_recv_exit', 'fexit inet_recvmsg'],
  ['kappa_inet6_recv_exit', 'fexit inet6_recvmsg'],
  // Kernels before 6.2: IPv6 SYN-ACKs the cgroup egress hook skips.
  ['kappa_synack6', 'fexit tcp_make_synack'],
  // Drops (bpf/kappa_drop.h).
  ['kappa_drop', 'tracepoint skb:kfree_skb'],
  // Argument lists at exec (bpf/kappa_exec.h).
  ['kappa_exec', 'tracepoint sched:sched_process_exec'],
] as const;
/** Interface mode's programs (tc); socket mode's are the ones above and the socket iterator. */
const TC_PROGRAMS = ['kappa_tc_ingress', 'kappa_tc_egress'] as const;
const SOCKET_MODE_PROGRAMS = [...CGROUP_PROGRAMS, ...TRACEPOINT_PROGRAMS.map(([name]) => name), 'kappa_drain_sockets'];
/** The drops feature's programs (bpf/kappa_drop.h). */
const DROP_PROGRAMS = ['kappa_drop', 'kappa_drop_sock_create'] as const;
/** Counts connected TCP sockets in socket storage; left out, they count in the flow maps. */
const SOCKET_COUNTER_PROGRAMS = ['kappa_drain_sockets', 'kappa_tcp_destroy', 'kappa_sock_release'] as const;

export interface LoadOptions {
  /** Socket mode's hooks get attached; without them (interface mode alone) their features stay out. */
  socketMode: boolean;
  /** Interface mode's tc programs get attached. */
  interfaceMode: boolean;
  /** Programs to leave out: the optional hooks the kernel plan did not choose (KernelPlan.omit). */
  omitPrograms: readonly string[];
  /** The DNS feature as planned (socket mode only). */
  dns: boolean;
  /** The cgroup whose sockets count (id 0, level 0: the root, every socket). */
  target: { id: bigint; level: number };
  /** Map sizes; the object's own where absent. */
  sizes?: { maxConversations: number; dnsBufferBytes?: number | undefined; execBufferBytes?: number | undefined };
}

/** What the loaded programs do, as configured. */
export interface LoadConfig {
  /** Programs not loaded. */
  omitted: ReadonlySet<string>;
  /** Connected TCP sockets count in socket storage (reported by kappa_drain_sockets). */
  socketCounters: boolean;
  dns: boolean;
}

/** Configures the opened, not yet loaded object; the object's other methods are not needed. */
export function configureLoad(object: Pick<BpfObject, 'setAutoload' | 'setReadOnlyConfig' | 'setMaxEntries'>, options: LoadOptions): LoadConfig {
  const omitted = new Set(options.omitPrograms);
  // A mode not in use costs its programs' verification (the tc pair ~45 ms each on 6.18, the
  // socket mode's far more): left out, they are never verified. DNS, drops, exec and socket
  // counters look at the watched sockets: socket mode only.
  if (!options.interfaceMode) for (const name of TC_PROGRAMS) omitted.add(name);
  if (!options.socketMode) for (const name of SOCKET_MODE_PROGRAMS) omitted.add(name);
  // Socket counters need both the iterator that reports them and the destruction hook.
  if (SOCKET_COUNTER_PROGRAMS.some((name) => omitted.has(name))) for (const name of SOCKET_COUNTER_PROGRAMS) omitted.add(name);
  // Drops whole or not at all.
  if (DROP_PROGRAMS.some((name) => omitted.has(name))) for (const name of DROP_PROGRAMS) omitted.add(name);
  const dns = options.socketMode && options.dns;
  const socketCounters = !omitted.has('kappa_drain_sockets');
  // The drops program skips icmpv6_rcv's NOT_SPECIFIED frees (bpf/kappa_drop.h): it needs where that code is.
  const icmpv6Rcv = omitted.has('kappa_drop') ? undefined : kernelFunction('icmpv6_rcv');
  object.setReadOnlyConfig(encodeConfig({ targetCgroupId: options.target.id, targetCgroupLevel: options.target.level, socketCounters, dns, icmpv6Rcv }));
  if (options.sizes) {
    for (const name of [...FLOW_MAPS, 'kappa_roles', 'kappa_reported']) object.setMaxEntries(name, options.sizes.maxConversations);
    if (options.sizes.dnsBufferBytes !== undefined) object.setMaxEntries('kappa_dns_events', options.sizes.dnsBufferBytes);
    if (options.sizes.execBufferBytes !== undefined) object.setMaxEntries('kappa_exec_events', options.sizes.execBufferBytes);
  }
  for (const name of omitted) object.setAutoload(name, false);
  return { omitted, socketCounters, dns };
}
