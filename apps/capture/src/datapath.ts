// The kernel side of capture: loads bpf/kappa.bpf.o, attaches socket mode (cgroup hooks,
// sock_ops, tracepoints) and optionally interface mode (tc), drains the flow table, reads the
// overflow counters, and detaches everything on stop. Maps and links are pinned under the
// instance's bpffs folder, so after a SIGKILL the kernel keeps counting into the same maps and a
// restarted instance takes both over: nothing lost, nothing counted twice.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  BpfObject,
  LinkAttachment,
  MapDrainer,
  attachCgroup,
  attachPinned,
  attachTc,
  attachTracepoint,
  cgroup2Root,
  cgroupIdentity,
  detachPinned,
  detachStaleTc,
  ensureBpffs,
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
  /** This instance's bpffs folder (see pinFolder): its maps and links outlive a crash there. */
  pinFolder: string;
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
    private readonly pinFolder: string,
    /** A crashed instance had left its pinned maps and links, and this one took them over. */
    readonly tookOver: boolean,
  ) {
    this.cgroupPath = cgroupPath;
    const flows = object.map('kappa_flows');
    if (flows.keySize !== FLOW_KEY.size || flows.valueSize !== FLOW_STATS.size) {
      throw new Error(`${object.path} does not match this build of kappa-capture (flow key/value sizes ${flows.keySize}/${flows.valueSize}); rebuild bpf/`);
    }
    this.drainer = new MapDrainer(flows);
    this.counters = object.map('kappa_counters');
  }

  /** Opens, configures, loads (reusing pinned maps) and attaches (taking over pinned links). */
  static start(options: DatapathOptions): Datapath {
    const root = cgroup2Root(options.cgroupPath);
    const cgroupPath = options.cgroupPath ?? root;
    const target = cgroupPath === root ? { id: 0n, level: 0 } : cgroupIdentity(cgroupPath);
    ensureBpffs();
    mkdirSync(options.pinFolder, { recursive: true, mode: 0o700 });
    const tookOver = readdirSync(options.pinFolder).length > 0;
    const cleanUp = () => {
      if (!tookOver) rmSync(options.pinFolder, { recursive: true, force: true });
    };
    let object: BpfObject;
    try {
      object = BpfObject.open(options.objectPath, { pinRoot: options.pinFolder, ...(options.btfPath === undefined ? {} : { btfPath: options.btfPath }) });
    } catch (error) {
      cleanUp();
      throw error;
    }
    try {
      object.setReadOnlyConfig(encodeConfig({ targetCgroupId: target.id, targetCgroupLevel: target.level }));
      object.setMaxEntries('kappa_flows', options.maxConversations);
      object.setMaxEntries('kappa_roles', options.maxConversations);
      // Reuses the maps a crashed instance pinned (libbpf checks type, sizes and flags: a
      // different --max-conversations fails here, naming the map).
      object.load();
    } catch (error) {
      object.close();
      cleanUp();
      throw error;
    }
    const datapath = new Datapath(object, cgroupPath, options.pinFolder, tookOver);
    try {
      if (options.socketMode) datapath.attachSocketMode();
      else datapath.detachPinnedSocketMode();
      if (options.interfaces) datapath.attachInterfaceMode(options.interfaces, options.tcPriority ?? 0x6b);
    } catch (error) {
      datapath.abandon();
      throw error;
    }
    return datapath;
  }

  private attachSocketMode(): void {
    for (const name of CGROUP_PROGRAMS) {
      const program = this.object.program(name);
      this.attachments.push(attachPinned(this.linkPin(name), program, () => attachCgroup(program, this.cgroupPath)));
    }
    ensureTracefs();
    for (const [name, category, event] of TRACEPOINT_PROGRAMS) {
      const program = this.object.program(name);
      this.attachments.push(attachPinned(this.linkPin(name), program, () => attachTracepoint(program, category, event)));
    }
  }

  /** Interface mode only: socket-mode links a crashed instance pinned would count on unseen. */
  private detachPinnedSocketMode(): void {
    for (const name of [...CGROUP_PROGRAMS, ...TRACEPOINT_PROGRAMS.map(([n]) => n)]) detachPinned(this.linkPin(name));
  }

  private linkPin(program: string): string {
    return join(this.pinFolder, `link_${program}`);
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

  /**
   * Detaches everything (last attached first) and unpins the links; the maps stay readable for
   * a last drain until `close`.
   */
  detach(): void {
    for (const attachment of this.attachments.splice(0).reverse()) attachment.detach();
  }

  /**
   * For a start that failed: leaves the pinned state as it was found. A crashed instance's links
   * keep counting into its maps for the next start; a fresh start leaves nothing.
   */
  abandon(): void {
    if (!this.tookOver) return this.stop();
    for (const attachment of this.attachments.splice(0).reverse()) {
      if (attachment instanceof LinkAttachment) attachment.release();
      else attachment.detach();
    }
    this.object.close();
  }

  /** Detaches, unpins the maps, removes the instance's bpffs folder and frees the object. */
  stop(): void {
    this.detach();
    this.object.unpinMaps();
    this.object.close();
    rmSync(this.pinFolder, { recursive: true, force: true });
  }
}
