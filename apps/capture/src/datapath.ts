// The kernel side of capture: loads bpf/kappa.bpf.o, attaches socket mode (cgroup hooks,
// sock_ops, BTF tracepoints) and optionally interface mode (tc), drains the flow maps exactly,
// reads the overflow counters, and detaches everything on stop. Maps and links are pinned under
// the instance's bpffs folder, so after a SIGKILL the kernel keeps counting into the same maps and
// a restarted instance takes both over: nothing lost, nothing counted twice.
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  BpfObject,
  LinkAttachment,
  MapDrainer,
  attachCgroup,
  attachIterator,
  attachPinned,
  attachProgram,
  attachTc,
  cgroup2Root,
  cgroupIdentity,
  detachPinned,
  detachStaleTc,
  ensureBpffs,
  ensureTracefs,
  listInterfaces,
  lookupElement,
  readPerCpuCounter,
  RingBufferReader,
  updateElement,
  waitForRunningPrograms,
} from '@kappa/ebpf-ffi';
import type { Attachment, BpfMap, DirectoryLock, DrainedChunk, IteratorAttachment } from '@kappa/ebpf-ffi';
import { checkPinnedLayout, lockInstanceFolder } from './instance.js';
import {
  COUNTER_COPIES_SKIPPED,
  COUNTER_OVERFLOW_BYTES,
  COUNTER_OVERFLOW_PACKETS,
  COUNTER_ROLE_OVERFLOW,
  DNS_COUNTER_LOST,
  DRAIN_MARKS,
  DRAIN_STATE,
  DROP_COUNTER_UNATTRIBUTED,
  FLOW_KEY,
  FLOW_STATS,
  decodeDrainState,
  encodeDrainState,
} from './layout.js';
import { CGROUP_PROGRAMS, FLOW_MAPS, TRACEPOINT_PROGRAMS, configureLoad } from './load-config.js';
import type { LoadConfig } from './load-config.js';

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
  /** Programs to leave out of the load (a kernel without their hook). */
  omitPrograms?: readonly string[];
  /** Entries per kernel read while draining. */
  chunkEntries?: number;
  /** The DNS feature: the skb hooks copy DNS messages to a ring buffer (socket mode only). */
  dns?: boolean;
  /** Size of the DNS messages' ring buffer (a power of two, at least a page). */
  dnsBufferBytes?: number;
  /** Size of the exec events' ring buffer (a power of two, at least a page). */
  execBufferBytes?: number;
}

export interface OverflowCounters {
  packets: bigint;
  bytes: bigint;
  roles: bigint;
  copiesSkipped: bigint;
  /** DNS messages the kernel could not copy (ring buffer full). */
  dnsLost: bigint;
  /** Drops in tracked namespaces whose headers could not be read. */
  dropsUnattributed: bigint;
}

/** One map's worth of conversations, and the interval the kernel counted them in. */
export interface DrainPass {
  /** Unix ns at which the drained map became the one programs counted into, and at which it stopped. */
  readonly startNs: bigint;
  readonly endNs: bigint;
  /** The drain epoch the entries were counted in (kappa_drain_state.epoch). */
  readonly epoch: number;
  /** The entries, chunk by chunk, deleted as they are read; each chunk is valid until the next. */
  readonly chunks: Iterable<DrainedChunk>;
}

/** The DNS programs of builds before they moved into the skb programs: a crashed one's links are detached. */
const FORMER_PROGRAMS = ['kappa_dns_ingress', 'kappa_dns_egress'] as const;

export class Datapath {
  private readonly attachments: Attachment[] = [];
  /** Reports what counting sockets counted, at every drain (undefined without socket counters). */
  private socketReporter: IteratorAttachment | undefined;
  private readonly drainers: [MapDrainer, MapDrainer];
  private readonly counters: BpfMap;
  private readonly dnsCounters: BpfMap;
  private readonly dropCounters: BpfMap;
  private readonly drainState: BpfMap;
  private readonly drainMarks: BpfMap;
  /**
   * The next drain reads everything whatever the marks say: the first one after a start (programs
   * of a crashed instance or an older build counted without marking until this one attached, and
   * a socket's first count in epoch 0 does not mark: its epoch fields start at 0).
   */
  private readEverything = true;
  private readonly marksKey = Buffer.alloc(4);
  private readonly marksValue = Buffer.alloc(DRAIN_MARKS.size);
  private readonly noMarks = Buffer.alloc(DRAIN_MARKS.size);
  /** The DNS messages the kernel copies (undefined when the DNS feature is off). */
  readonly dnsEvents: RingBufferReader | undefined;
  /** What the watched processes exec'd (undefined when the exec feature is off); see src/exec.ts. */
  readonly execEvents: { events: RingBufferReader; counters: BpfMap } | undefined;
  private readonly stateKey = Buffer.alloc(4);
  private readonly stateValue = Buffer.alloc(DRAIN_STATE.size);
  readonly cgroupPath: string;
  readonly interfaceNames = new Map<number, string>();

  private constructor(
    private readonly object: BpfObject,
    cgroupPath: string,
    private readonly pinFolder: string,
    private readonly lock: DirectoryLock,
    /** A crashed instance had left its pinned maps and links, and this one took them over. */
    readonly tookOver: boolean,
    private readonly omitted: ReadonlySet<string>,
    chunkEntries: number,
    dns: boolean,
  ) {
    this.cgroupPath = cgroupPath;
    const flows = FLOW_MAPS.map((name) => object.map(name));
    for (const map of flows) {
      if (map.keySize !== FLOW_KEY.size || map.valueSize !== FLOW_STATS.size) {
        throw new Error(`${object.path} does not match this build of kappa-capture (flow key/value sizes ${map.keySize}/${map.valueSize}); rebuild bpf/`);
      }
    }
    this.drainers = [new MapDrainer(flows[0]!, chunkEntries), new MapDrainer(flows[1]!, chunkEntries)];
    this.counters = object.map('kappa_counters');
    this.dnsCounters = object.map('kappa_dns_counters');
    this.dropCounters = object.map('kappa_drop_counters');
    this.drainState = object.map('kappa_drain');
    this.drainMarks = object.map('kappa_marks');
    this.dnsEvents = dns ? new RingBufferReader(object.map('kappa_dns_events')) : undefined;
    this.execEvents = omitted.has('kappa_exec') ? undefined : { events: new RingBufferReader(object.map('kappa_exec_events')), counters: object.map('kappa_exec_counters') };
    if (!tookOver) this.writeState({ epoch: 0, startedUnixNs: [unixNow(), 0n] });
  }

  /** Locks the folder, opens, configures, loads (reusing pinned maps) and attaches (taking over pinned links). */
  static start(options: DatapathOptions): Datapath {
    const root = cgroup2Root(options.cgroupPath);
    const cgroupPath = options.cgroupPath ?? root;
    const target = cgroupPath === root ? { id: 0n, level: 0 } : cgroupIdentity(cgroupPath);
    ensureBpffs();
    const lock = lockInstanceFolder(options.pinFolder);
    const tookOver = readdirSync(options.pinFolder).length > 0;
    const cleanUp = () => {
      if (!tookOver) rmSync(options.pinFolder, { recursive: true, force: true });
      lock.release();
    };
    let object: BpfObject;
    try {
      object = BpfObject.open(options.objectPath, { pinRoot: options.pinFolder, ...(options.btfPath === undefined ? {} : { btfPath: options.btfPath }) });
    } catch (error) {
      cleanUp();
      throw error;
    }
    let loaded: LoadConfig;
    try {
      loaded = configureLoad(object, {
        socketMode: options.socketMode,
        interfaceMode: options.interfaces !== undefined,
        omitPrograms: options.omitPrograms ?? [],
        dns: options.dns === true,
        target,
        sizes: { maxConversations: options.maxConversations, dnsBufferBytes: options.dnsBufferBytes, execBufferBytes: options.execBufferBytes },
      });
      // libbpf would refuse a pinned map of another layout with a bare EINVAL: name it first.
      if (tookOver) checkPinnedLayout(options.pinFolder, object.mapNames().filter((name) => !name.startsWith('.')).map((name) => object.map(name)));
      object.load();
    } catch (error) {
      object.close();
      cleanUp();
      throw error;
    }
    let datapath: Datapath;
    try {
      datapath = new Datapath(object, cgroupPath, options.pinFolder, lock, tookOver, loaded.omitted, options.chunkEntries ?? 8192, loaded.dns);
    } catch (error) {
      object.close();
      cleanUp();
      throw error;
    }
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
    for (const name of FORMER_PROGRAMS) detachPinned(this.linkPin(name));
    for (const name of CGROUP_PROGRAMS) {
      if (this.omitted.has(name)) {
        detachPinned(this.linkPin(name)); // a crashed instance's, with the feature on
        continue;
      }
      const program = this.object.program(name);
      this.attachments.push(attachPinned(this.linkPin(name), program, () => attachCgroup(program, this.cgroupPath)));
    }
    ensureTracefs();
    for (const [name, what] of TRACEPOINT_PROGRAMS) {
      if (this.omitted.has(name)) {
        detachPinned(this.linkPin(name));
        continue;
      }
      const program = this.object.program(name);
      this.attachments.push(attachPinned(this.linkPin(name), program, () => attachProgram(program, what)));
    }
    if (!this.omitted.has('kappa_drain_sockets')) this.socketReporter = attachIterator(this.object.program('kappa_drain_sockets'));
  }

  /** Whether connected TCP sockets count in socket storage (reported by an iterator at each drain). */
  get socketCounters(): boolean {
    return this.socketReporter !== undefined;
  }

  /** Interface mode only: socket-mode links a crashed instance pinned would count on unseen. */
  private detachPinnedSocketMode(): void {
    for (const name of [...CGROUP_PROGRAMS, ...TRACEPOINT_PROGRAMS.map(([n]) => n), ...FORMER_PROGRAMS]) detachPinned(this.linkPin(name));
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

  private readState(): { epoch: number; startedUnixNs: [bigint, bigint] } {
    if (!lookupElement(this.drainState, this.stateKey, this.stateValue)) return { epoch: 0, startedUnixNs: [0n, 0n] };
    return decodeDrainState(this.stateValue);
  }

  private writeState(state: { epoch: number; startedUnixNs: [bigint, bigint] }): void {
    updateElement(this.drainState, this.stateKey, encodeDrainState(state));
  }

  /**
   * The map programs are not counting into, if a crashed instance left entries there (it died
   * in the middle of a drain): to be drained before the first interval.
   */
  leftover(): DrainPass | undefined {
    const state = this.readState();
    const current = state.epoch & 1;
    const quiet = current ^ 1;
    const currentStart = state.startedUnixNs[current] ?? 0n;
    const endNs = currentStart || unixNow();
    return { startNs: state.startedUnixNs[quiet] || endNs, endNs, epoch: (state.epoch - 1) >>> 0, chunks: this.drainers[quiet]!.chunks() };
  }

  /**
   * Ends the interval: programs switch to the other map, and once every program that was still
   * counting into this one has returned (an RCU grace period), its entries are read and deleted
   * by the caller through `chunks`. Nothing writes the drained map meanwhile, so no update is lost.
   */
  drainInterval(): DrainPass {
    const state = this.readState();
    const current = state.epoch & 1;
    const next = current ^ 1;
    const endNs = unixNow();
    const startedUnixNs: [bigint, bigint] = next === 0 ? [endNs, state.startedUnixNs[1]] : [state.startedUnixNs[0], endNs];
    this.writeState({ epoch: (state.epoch + 1) >>> 0, startedUnixNs });
    waitForRunningPrograms();
    // Every program that counted in the ended epoch has returned, and set its marks: an idle
    // interval skips the iterator (it walks every open file of the machine) and the map walk
    // (every bucket of an empty map).
    const everything = this.readEverything;
    this.readEverything = false;
    this.marksKey.writeUInt32LE(current);
    const sockets = everything || this.marked('sockets');
    // Counting sockets report into the quiet map what they counted since their last report.
    if (sockets) this.socketReporter?.run();
    // Read after the iterator, which inserts into the quiet map (and marks it).
    const flows = everything || this.marked('flows');
    // Nothing sets this parity's marks again before the epoch after next (the next drain's flip).
    if (sockets || flows) updateElement(this.drainMarks, this.marksKey, this.noMarks);
    const chunks = flows ? this.drainers[current]!.chunks() : NO_CHUNKS;
    return { startNs: state.startedUnixNs[current] || endNs, endNs, epoch: state.epoch, chunks };
  }

  /** Whether a program set this mark of the ended epoch's parity (marksKey). */
  private marked(mark: keyof typeof DRAIN_MARKS.fields): boolean {
    if (!lookupElement(this.drainMarks, this.marksKey, this.marksValue)) return true;
    return this.marksValue.readUInt32LE(DRAIN_MARKS.fields[mark].offset) !== 0;
  }

  /** Totals since the maps were created (the kernel counters never reset). */
  overflow(): OverflowCounters {
    return {
      packets: readPerCpuCounter(this.counters, COUNTER_OVERFLOW_PACKETS),
      bytes: readPerCpuCounter(this.counters, COUNTER_OVERFLOW_BYTES),
      roles: readPerCpuCounter(this.counters, COUNTER_ROLE_OVERFLOW),
      copiesSkipped: readPerCpuCounter(this.counters, COUNTER_COPIES_SKIPPED),
      dnsLost: readPerCpuCounter(this.dnsCounters, DNS_COUNTER_LOST),
      dropsUnattributed: readPerCpuCounter(this.dropCounters, DROP_COUNTER_UNATTRIBUTED),
    };
  }

  /**
   * Detaches what counts (last attached first) and unpins the links; the maps stay readable for
   * a last drain until `stop`. Socket destruction keeps reporting, and the iterator stays, so the
   * last drain gets what counting sockets counted.
   */
  detach(): void {
    const keep = this.attachments.filter((a) => a.description.startsWith('kappa_tcp_destroy'));
    for (const attachment of this.attachments.splice(0).reverse()) if (!keep.includes(attachment)) attachment.detach();
    this.attachments.push(...keep);
  }

  /**
   * For a start that failed: leaves the pinned state as it was found. A crashed instance's links
   * keep counting into its maps for the next start; a fresh start leaves nothing.
   */
  abandon(): void {
    if (!this.tookOver) return this.stop();
    this.socketReporter?.detach();
    this.dnsEvents?.close();
    this.execEvents?.events.close();
    for (const attachment of this.attachments.splice(0).reverse()) {
      if (attachment instanceof LinkAttachment) attachment.release();
      else attachment.detach();
    }
    this.object.close();
    this.lock.release();
  }

  /** Detaches, unpins the maps, removes the instance's bpffs folder, frees the object and the lock. */
  stop(): void {
    this.detach();
    for (const attachment of this.attachments.splice(0).reverse()) attachment.detach();
    this.socketReporter?.detach();
    this.socketReporter = undefined;
    this.dnsEvents?.close();
    this.execEvents?.events.close();
    this.object.unpinMaps();
    this.object.close();
    rmSync(this.pinFolder, { recursive: true, force: true });
    this.lock.release();
  }
}

const NO_CHUNKS: readonly DrainedChunk[] = [];

function unixNow(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}
