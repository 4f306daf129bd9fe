// The kernel side of capture: loads bpf/kappa.bpf.o, attaches socket mode (cgroup hooks,
// sock_ops, tracepoints) and optionally interface mode (tc), drains the flow table, reads the
// overflow counters, and detaches everything on stop.
import {
  BpfObject,
  MapDrainer,
  attachCgroup,
  attachTc,
  attachTracepoint,
  cgroup2Root,
  cgroupIdentity,
  detachStaleTc,
  ensureTracefs,
  listInterfaces,
  readPerCpuCounter,
} from '@kappa/ebpf-ffi';
import type { Attachment, BpfMap } from '@kappa/ebpf-ffi';
import {
  COUNTER_OVERFLOW_BYTES,
  COUNTER_OVERFLOW_PACKETS,
  COUNTER_ROLE_OVERFLOW,
  FLOW_KEY,
  FLOW_STATS,
  decodeConversation,
  encodeConfig,
} from './layout.js';
import type { Conversation } from './layout.js';

export interface DatapathOptions {
  objectPath: string;
  /** BTF file for kernels without /sys/kernel/btf/vmlinux. */
  btfPath?: string | undefined;
  /** cgroup v2 directory to attach to; the cgroup v2 root when absent. */
  cgroupPath?: string | undefined;
  maxConversations: number;
  socketMode: boolean;
  /** Interface mode: tc on every interface whose name matches. */
  interfaces?: RegExp | undefined;
  /** tc filter priority (kappa's filters are found again by handle + priority after a crash). */
  tcPriority?: number;
}

export interface OverflowCounters {
  packets: bigint;
  bytes: bigint;
  roles: bigint;
}

const CGROUP_PROGRAMS = [
  'kappa_skb_ingress',
  'kappa_skb_egress',
  'kappa_sock_create',
  'kappa_connect4',
  'kappa_connect6',
  'kappa_sockops',
] as const;
const TRACEPOINT_PROGRAMS = [
  ['kappa_sock_send', 'sock', 'sock_send_length'],
  ['kappa_sock_recv', 'sock', 'sock_recv_length'],
] as const;

export class Datapath {
  private readonly attachments: Attachment[] = [];
  private readonly drainer: MapDrainer;
  private readonly counters: BpfMap;
  readonly cgroupPath: string;
  readonly interfaceNames = new Map<number, string>();

  private constructor(
    private readonly object: BpfObject,
    cgroupPath: string,
  ) {
    this.cgroupPath = cgroupPath;
    const flows = object.map('kappa_flows');
    if (flows.keySize !== FLOW_KEY.size || flows.valueSize !== FLOW_STATS.size) {
      throw new Error(`${object.path} does not match this build of kappa-capture (flow key/value sizes ${flows.keySize}/${flows.valueSize}); rebuild bpf/`);
    }
    this.drainer = new MapDrainer(flows);
    this.counters = object.map('kappa_counters');
  }

  /** Opens, configures, loads and attaches. On any failure, whatever got attached is detached. */
  static start(options: DatapathOptions): Datapath {
    const root = cgroup2Root();
    const cgroupPath = options.cgroupPath ?? root;
    const target = cgroupPath === root ? { id: 0n, level: 0 } : cgroupIdentity(cgroupPath);
    const object = BpfObject.open(options.objectPath, options.btfPath === undefined ? {} : { btfPath: options.btfPath });
    try {
      object.setReadOnlyConfig(encodeConfig({ targetCgroupId: target.id, targetCgroupLevel: target.level }));
      object.setMaxEntries('kappa_flows', options.maxConversations);
      object.setMaxEntries('kappa_roles', options.maxConversations);
      object.load();
    } catch (error) {
      object.close();
      throw error;
    }
    const datapath = new Datapath(object, cgroupPath);
    try {
      if (options.socketMode) datapath.attachSocketMode();
      if (options.interfaces) datapath.attachInterfaceMode(options.interfaces, options.tcPriority ?? 0x6b);
    } catch (error) {
      datapath.stop();
      throw error;
    }
    return datapath;
  }

  private attachSocketMode(): void {
    for (const name of CGROUP_PROGRAMS) this.attachments.push(attachCgroup(this.object.program(name), this.cgroupPath));
    ensureTracefs();
    for (const [name, category, event] of TRACEPOINT_PROGRAMS) {
      this.attachments.push(attachTracepoint(this.object.program(name), category, event));
    }
  }

  private attachInterfaceMode(pattern: RegExp, priority: number): void {
    const whole = new RegExp(`^(?:${pattern.source})$`, pattern.flags);
    for (const { name, ifindex } of listInterfaces()) {
      if (!whole.test(name)) continue;
      this.interfaceNames.set(ifindex, name);
      for (const direction of ['ingress', 'egress'] as const) {
        detachStaleTc(ifindex, direction, priority); // a crashed instance's filter, if any
        const program = this.object.program(direction === 'ingress' ? 'kappa_tc_ingress' : 'kappa_tc_egress');
        this.attachments.push(attachTc(program, ifindex, name, direction, priority));
      }
    }
  }

  /** What is attached, for the start-up log. */
  get attached(): string[] {
    return this.attachments.map((a) => a.description);
  }

  /** Empties the flow table; returns the number of conversations. */
  drain(onConversation: (conversation: Conversation) => void): number {
    return this.drainer.drain(({ keys, values, count }) => {
      for (let i = 0; i < count; i++) onConversation(decodeConversation(keys, values, i));
    });
  }

  /** Totals since load (the kernel counters never reset). */
  overflow(): OverflowCounters {
    return {
      packets: readPerCpuCounter(this.counters, COUNTER_OVERFLOW_PACKETS),
      bytes: readPerCpuCounter(this.counters, COUNTER_OVERFLOW_BYTES),
      roles: readPerCpuCounter(this.counters, COUNTER_ROLE_OVERFLOW),
    };
  }

  /** Detaches everything (last attached first) and frees the programs and maps. */
  stop(): void {
    for (const attachment of this.attachments.splice(0).reverse()) attachment.detach();
    this.object.close();
  }
}
