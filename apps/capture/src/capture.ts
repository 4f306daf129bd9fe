// The capture loop: every interval, end the kernel's interval, stream its conversations chunk by
// chunk from the kernel's buffers into encoded FlowBatches, spool each batch once and hand its
// bytes to a sink (the bus or stdout). Memory is bounded by a chunk and a batch, not by the number
// of conversations. Metrics count what left the kernel and what the kernel could not store.
import { Counter, Gauge, Histogram } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import { ktimeToUnixOffsetNs } from './clock.js';
import type { DrainPass, OverflowCounters } from './datapath.js';
import type { DnsCounts, DnsTracker } from './dns/tracker.js';
import { DropReasons } from './drop-reasons.js';
import { FlowBatchEncoder } from './encode.js';
import type { EncodedBatch, RecordAnnotations } from './encode.js';
import { DNS_EVENT, FLOW_KEY, FLOW_STATS, ROLE_DST, ROLE_SRC, writeFlowEntry } from './layout.js';
import type { Conversation } from './layout.js';
import type { Spool, SpooledBatch } from './spool.js';

/** The kernel side as the loop needs it (Datapath in production). */
export interface FlowSource {
  /** Entries a crashed instance left in the map programs no longer count into. */
  leftover(): DrainPass | undefined;
  /** Ends the interval and hands over its conversations. */
  drainInterval(): DrainPass;
  overflow(): OverflowCounters;
  readonly interfaceNames: ReadonlyMap<number, string>;
}

/**
 * Where batches go: stdout or the bus. Rejects when the batch could not be delivered. The bytes
 * are the sink's until its promise resolves: after that capture writes a later batch into the
 * same memory (a sink that keeps a batch copies it).
 */
export type BatchSink = (batch: EncodedBatch) => Promise<void>;

export interface CaptureOptions {
  node: string;
  /** Largest encoded batch: the bus's message limit (default 1 MiB, NATS's default max_payload). */
  maxBatchBytes?: number;
  /** Batches kept for a retry at the next drain while the sink fails; older ones are dropped (and counted). */
  maxUnsentBatches?: number;
  /** Keeps each batch on disk from the drain until the sink has it (see spool.ts). */
  spool?: Spool;
  /**
   * DNS: the kernel's copies of DNS messages (read every `pollMs`, and at each drain) and what is
   * made of them. `pollMs` 0: no timer of its own, the caller calls readDns (one timer for every ring).
   */
  dns?: { events: { consume(): Buffer[] }; tracker: DnsTracker; pollMs?: number };
  /** The kernel's drop reason names (without: REASON_<n>). */
  dropReasons?: DropReasons;
}

export interface DrainResult {
  conversations: number;
  overflowPackets: bigint;
  overflowBytes: bigint;
  durationMs: number;
  /** CPU time of this process for the drain (wall time on a busy machine says little). */
  cpuMs: number;
  /** Of cpuMs, the main thread's (the rest is V8's compiler and GC threads, libuv's, the loader's). */
  mainThreadCpuMs: number;
  /**
   * Where that CPU time went: ending the interval (the epoch flip, the wait for running programs,
   * the socket iterator), reading the chunks from the kernel (lookup-and-delete), spooling,
   * handing batches to the sink; the rest is encoding.
   */
  cpuSplitMs: { interval: number; kernel: number; spool: number; sink: number; encode: number };
}

/** A batch the sink has not taken yet: on disk (spooled) or, without a spool, in memory. */
interface UnsentBatch {
  readonly batchId: string;
  readonly records: number;
  readonly spooled?: SpooledBatch;
  readonly bytes?: Uint8Array;
}

const KEY = FLOW_KEY.size;
const VALUE = FLOW_STATS.size;
const S = FLOW_STATS.fields;
const VANTAGE_LABELS = ['0', '1', '2'];
const IP_ICMP = 1;
const IP_TCP = 6;
const IP_UDP = 17;
const IP_ICMPV6 = 58;

export class CaptureLoop {
  private lastOverflow: OverflowCounters;
  private readonly encoder: FlowBatchEncoder;
  private readonly annotations: DrainAnnotations;
  /** One function for every drain (and the warm-up): a new closure per drain is a new call target for V8. */
  private readonly interfaceName = (ifindex: number) => this.source.interfaceNames.get(ifindex) ?? `if${ifindex}`;
  private readonly totals = new DrainTotals();
  private readonly conversations: Counter;
  private readonly bytes: Counter;
  private readonly packets: Counter;
  private readonly overflowPackets: Counter;
  private readonly overflowBytes: Counter;
  private readonly copiesSkipped: Counter;
  private readonly drainSeconds: Histogram;
  private readonly drainCpuSeconds: Counter;
  private readonly droppedRecords: Counter;
  private readonly unsentBatches: Gauge;
  private readonly dnsMessages: Counter;
  private readonly dnsUnparsable: Counter;
  private readonly dnsCut: Counter;
  private readonly dnsLost: Counter;
  private readonly dnsUnmatched: Counter;
  private readonly dnsNames: Gauge;
  private readonly droppedPackets: Counter;
  private readonly dropsUnattributed: Counter;
  private readonly dnsPoller: NodeJS.Timeout | undefined;
  private dnsSeen = { queries: 0, responses: 0, unparsable: 0, cut: 0, unmatched: 0 };
  private readonly unsent: UnsentBatch[] = [];
  /** The current drain's CPU by part (see DrainResult.cpuSplitMs), in ms. */
  private readonly split = { interval: 0, kernel: 0, spool: 0, sink: 0 };
  /** Set when a send failed during the current drain: its later batches wait for the next one. */
  private sinkDown = false;
  /** Totals for the heartbeat. */
  recordsOut = 0;
  overflowPacketsTotal = 0n;
  /** Records dropped from the unsent backlog (the sink kept refusing), for the heartbeat's lost. */
  droppedRecordsTotal = 0;

  constructor(
    private readonly source: FlowSource,
    private readonly sink: BatchSink,
    private readonly options: CaptureOptions,
    registry: Registry,
    private readonly logger: Logger,
  ) {
    const registers = [registry];
    this.annotations = new DrainAnnotations(options.dns?.tracker, options.dropReasons ?? unnamedReasons);
    this.encoder = new FlowBatchEncoder(options.node, options.maxBatchBytes ?? 1024 * 1024, this.annotations);
    this.conversations = new Counter({ name: 'kappa_capture_conversations_total', help: 'Conversation records drained from the kernel', registers });
    this.bytes = new Counter({ name: 'kappa_capture_bytes_total', help: 'IP bytes counted, both directions', labelNames: ['vantage'], registers });
    this.packets = new Counter({ name: 'kappa_capture_packets_total', help: 'Wire packets counted, both directions', labelNames: ['vantage'], registers });
    this.overflowPackets = new Counter({ name: 'kappa_capture_map_overflow_packets_total', help: 'Packets not counted because the flow map was full', registers });
    this.overflowBytes = new Counter({ name: 'kappa_capture_map_overflow_bytes_total', help: 'Bytes not counted because the flow map was full', registers });
    this.copiesSkipped = new Counter({
      name: 'kappa_capture_copies_skipped_total',
      help: 'Copies of one wire packet delivered to several sockets (multicast, broadcast, raw sockets) and counted once',
      registers,
    });
    this.droppedRecords = new Counter({ name: 'kappa_capture_records_dropped_total', help: 'Records dropped because the sink kept failing (unsent backlog full)', registers });
    this.unsentBatches = new Gauge({ name: 'kappa_capture_unsent_batches', help: 'Drained batches waiting for the sink (bounded by --max-unsent-batches)', registers });
    this.drainSeconds = new Histogram({
      name: 'kappa_capture_drain_duration_seconds',
      help: 'Time to drain the flow map, encode, spool and send its records',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers,
    });
    this.drainCpuSeconds = new Counter({ name: 'kappa_capture_drain_cpu_seconds_total', help: 'CPU time of capture spent in drains', registers });
    this.dnsMessages = new Counter({ name: 'kappa_capture_dns_messages_total', help: 'DNS messages seen at the watched sockets, by kind (query, response)', labelNames: ['kind'], registers });
    this.dnsUnparsable = new Counter({ name: 'kappa_capture_dns_unparsable_total', help: 'Messages on port 53 that are not DNS messages kappa can read (counted on their record too)', registers });
    this.dnsCut = new Counter({ name: 'kappa_capture_dns_cut_total', help: 'DNS messages longer than the 512 bytes the kernel copies: records after that are not read', registers });
    this.dnsLost = new Counter({ name: 'kappa_capture_dns_lost_total', help: 'DNS messages the kernel could not hand over (ring buffer full: raise --dns-buffer)', registers });
    this.dnsUnmatched = new Counter({ name: 'kappa_capture_dns_unmatched_total', help: 'DNS exchanges whose conversation had no record to carry them (flow map full)', registers });
    this.dnsNames = new Gauge({ name: 'kappa_capture_dns_names', help: '(namespace, address) → name entries kept (bounded by --dns-names)', registers });
    this.droppedPackets = new Counter({ name: 'kappa_capture_dropped_packets_total', help: 'Packets of watched conversations the kernel dropped (skb:kfree_skb)', registers });
    this.dropsUnattributed = new Counter({
      name: 'kappa_capture_drops_unattributed_total',
      help: 'Drops in watched namespaces that no conversation could be named for (unreadable headers, later IP fragments)',
      registers,
    });
    // The kernel counters are totals since the maps were created, which may be before a crash
    // of the previous instance: only what grows from now on is this instance's loss.
    this.lastOverflow = source.overflow();
    this.overflowPacketsTotal = this.lastOverflow.packets;
    // A previous instance's batches that may not have arrived go first.
    for (const spooled of options.spool?.load() ?? []) this.unsent.push({ batchId: spooled.batchId, records: spooled.records, spooled });
    // The ring buffer is read between drains too, so a burst of DNS fits in it.
    const dns = options.dns;
    const pollMs = dns?.pollMs ?? 200;
    this.dnsPoller = dns && pollMs > 0 ? setInterval(() => this.readDns(), pollMs).unref() : undefined;
  }

  /** Takes what the kernel copied of DNS messages into the tracker. */
  readDns(): void {
    const dns = this.options.dns;
    if (!dns) return;
    for (const event of dns.events.consume()) dns.tracker.add(event);
  }

  /**
   * Runs the drain's encoding over made-up entries (through the drain's own encoder and
   * annotations, with a scratch DNS tracker; the batches are thrown away: nothing is sent, no
   * metric moves), so V8 has optimised that code before the first drain instead of during the
   * first few: at 10 000 conversations per interval, compiling it (on V8's threads, counted in
   * the process's CPU) and the deoptimisations of feedback not yet seen (u64 halves beyond a small
   * integer, IPv6, TCP stats, a record with DNS exchanges or a peer name, another encoder's
   * object layout) cost more than the records themselves. See BENCHMARKS.md.
   */
  warmUp(entries = WARM_UP_ENTRIES): { records: number; dns?: DnsCounts } {
    const annotations = this.annotations;
    const realTracker = annotations.tracker;
    // Same class as the real one: the drain's call sites see nothing new, and the real one's
    // exchanges, names and counts stay as they are.
    const tracker = realTracker?.scratch();
    annotations.tracker = tracker;
    const encoder = this.encoder;
    const totals = this.totals.reset();
    try {
      encoder.begin({ node: this.options.node, startNs: 1n, endNs: 2n, ktimeToUnixNs: ktimeToUnixOffsetNs(), interfaceName: this.interfaceName });
      const { keys, values, dnsEvents } = warmUpChunk();
      const count = WARM_UP_CHUNK;
      for (let done = 0; done < entries; done += count) {
        // A record takes its conversation's exchanges: every pass finds them anew.
        if (tracker) for (const event of dnsEvents) tracker.add(event);
        for (let i = 0; i < count; ) {
          i = encodeEntries(encoder, keys, values, i, count, totals);
          if (totals.full) encoder.recycle(totals.full.bytes);
          totals.full = undefined;
        }
      }
      const last = encoder.finish();
      if (last) encoder.recycle(last.bytes);
      // An exchange no record took would count as unmatched: none does (test/backlog.test.ts).
      tracker?.endDrain(1, 0n, Date.now());
    } finally {
      annotations.tracker = realTracker;
      totals.reset();
    }
    return { records: Math.ceil(entries / WARM_UP_CHUNK) * WARM_UP_CHUNK, ...(tracker ? { dns: tracker.counts } : {}) };
  }

  /** Stops reading DNS messages between drains. */
  close(): void {
    clearInterval(this.dnsPoller);
  }

  /** Drains what a crashed instance left in the quiet map (its interval), if anything. */
  async drainLeftover(): Promise<DrainResult | undefined> {
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    const threadBefore = process.threadCpuUsage();
    const pass = this.source.leftover();
    return pass ? this.drainPass(pass, true, started, cpuBefore, threadBefore) : undefined;
  }

  /** Ends one interval and sends its records. */
  async drainOnce(): Promise<DrainResult> {
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    const threadBefore = process.threadCpuUsage();
    return this.drainPass(this.source.drainInterval(), false, started, cpuBefore, threadBefore);
  }

  private async drainPass(pass: DrainPass, leftover: boolean, started: number, cpuBefore: NodeJS.CpuUsage, threadBefore: NodeJS.CpuUsage): Promise<DrainResult> {
    const split = this.split;
    split.interval = cpuSince(cpuBefore);
    split.kernel = split.spool = split.sink = 0;
    this.sinkDown = false;
    let failure: unknown;
    // Batches a failed sink left behind go before this interval's, in order.
    const resending = process.cpuUsage();
    await this.sendUnsent().catch((error: unknown) => {
      this.sinkDown = true;
      failure = error;
    });
    split.sink += cpuSince(resending);
    // Every message of the drained interval is in the ring now (the drain waited for the programs).
    this.readDns();
    this.annotations.drainMs = Date.now();
    this.encoder.begin({
      node: this.options.node,
      startNs: pass.startNs,
      endNs: pass.endNs,
      ktimeToUnixNs: ktimeToUnixOffsetNs(),
      interfaceName: this.interfaceName,
    });
    const totals = this.totals.reset();
    let conversations = 0;
    const chunks = pass.chunks[Symbol.iterator]();
    for (;;) {
      const reading = process.cpuUsage();
      const next = chunks.next();
      split.kernel += cpuSince(reading);
      if (next.done) break;
      const { keys, values, count } = next.value;
      for (let i = 0; i < count; ) {
        i = encodeEntries(this.encoder, keys, values, i, count, totals);
        const full = totals.full;
        // The chunk's buffers stay valid while this awaits: the next kernel read waits for it.
        if (full) {
          totals.full = undefined;
          const error = await this.deliver(full); // never skipped: every batch is spooled or sent
          failure ??= error;
        }
      }
      conversations += count;
    }
    const last = this.encoder.finish();
    if (last) {
      const error = await this.deliver(last);
      failure ??= error;
    }
    for (let vantage = 0; vantage < 3; vantage++) {
      if (totals.bytes[vantage]) this.bytes.inc({ vantage: VANTAGE_LABELS[vantage]! }, totals.bytes[vantage]!);
      if (totals.packets[vantage]) this.packets.inc({ vantage: VANTAGE_LABELS[vantage]! }, totals.packets[vantage]!);
    }
    this.conversations.inc(conversations);
    if (totals.dropped) this.droppedPackets.inc(totals.dropped);
    this.countDns(pass.epoch);
    const overflow = this.source.overflow();
    const lostPackets = overflow.packets - this.lastOverflow.packets;
    const lostBytes = overflow.bytes - this.lastOverflow.bytes;
    this.overflowPackets.inc(Number(lostPackets));
    this.overflowBytes.inc(Number(lostBytes));
    this.copiesSkipped.inc(Number(overflow.copiesSkipped - this.lastOverflow.copiesSkipped));
    this.dnsLost.inc(Number(overflow.dnsLost - this.lastOverflow.dnsLost));
    this.dropsUnattributed.inc(Number(overflow.dropsUnattributed - this.lastOverflow.dropsUnattributed));
    this.lastOverflow = overflow;
    this.overflowPacketsTotal = overflow.packets;
    this.unsentBatches.set(this.unsent.length);
    const durationMs = performance.now() - started;
    const cpuMs = cpuSince(cpuBefore);
    const thread = process.threadCpuUsage(threadBefore);
    const mainThreadCpuMs = (thread.user + thread.system) / 1000;
    this.drainSeconds.observe(durationMs / 1000);
    this.drainCpuSeconds.inc(cpuMs / 1000);
    const cpuSplitMs = { ...split, encode: Math.max(0, cpuMs - split.interval - split.kernel - split.spool - split.sink) };
    const summary = { conversations, overflowPackets: lostPackets, overflowBytes: lostBytes, durationMs, cpuMs, mainThreadCpuMs, cpuSplitMs };
    if (lostPackets > 0n) {
      this.logger.warn({ ...summary, overflowPackets: String(lostPackets), overflowBytes: String(lostBytes) }, 'flow map full: packets were not counted; raise --max-conversations');
    } else {
      // startedMs: ms since the process started, the clock of V8's --trace-gc lines.
      this.logger.debug({ conversations, startedMs: Math.round(started), durationMs, cpuMs, mainThreadCpuMs, cpuSplitMs, ...(leftover ? { leftover } : {}) }, 'drained');
    }
    if (failure !== undefined) throw failure;
    return summary;
  }

  /** Ends the tracker's drain and moves its counts into the metrics. */
  private countDns(epoch: number): void {
    const tracker = this.options.dns?.tracker;
    if (!tracker) return;
    tracker.endDrain(epoch, process.hrtime.bigint(), this.annotations.drainMs);
    const c = tracker.counts;
    const seen = this.dnsSeen;
    this.dnsMessages.inc({ kind: 'query' }, c.queries - seen.queries);
    this.dnsMessages.inc({ kind: 'response' }, c.responses - seen.responses);
    this.dnsUnparsable.inc(c.unparsable - seen.unparsable);
    this.dnsCut.inc(c.cut - seen.cut);
    this.dnsUnmatched.inc(c.unmatched - seen.unmatched);
    this.dnsSeen = { queries: c.queries, responses: c.responses, unparsable: c.unparsable, cut: c.cut, unmatched: c.unmatched };
    this.dnsNames.set(tracker.names.size);
  }

  /**
   * Spools the batch, then hands it to the sink unless the sink already failed in this drain or
   * older batches wait. Returns the sink's error, if it failed; the batch then waits (ids are
   * stable, so a retry that did arrive is deduplicated downstream) up to --max-unsent-batches.
   */
  private async deliver(batch: EncodedBatch): Promise<unknown> {
    // The kernel already forgot these counts. A crash between the kernel read of a chunk and
    // this fsync (encoding one batch: a few ms) is the one window that loses.
    let cpu = process.cpuUsage();
    const spooled = this.options.spool?.save(batch.batchId, batch.bytes, batch.records);
    this.split.spool += cpuSince(cpu);
    if (this.sinkDown || this.unsent.length > 0) {
      this.queue({ batchId: batch.batchId, records: batch.records, ...(spooled ? { spooled } : { bytes: batch.bytes }) });
      return undefined;
    }
    cpu = process.cpuUsage();
    try {
      await this.sink(batch);
    } catch (error) {
      this.sinkDown = true;
      this.queue({ batchId: batch.batchId, records: batch.records, ...(spooled ? { spooled } : { bytes: batch.bytes }) });
      return error;
    } finally {
      this.split.sink += cpuSince(cpu);
    }
    cpu = process.cpuUsage();
    if (spooled) this.options.spool?.remove(spooled);
    this.split.spool += cpuSince(cpu);
    // Delivered and forgotten by the spool: nothing holds these bytes any more.
    this.encoder.recycle(batch.bytes);
    this.recordsOut += batch.records;
    return undefined;
  }

  /** The bound is on what failed sends leave behind; beyond it the oldest are dropped, counted. */
  private queue(batch: UnsentBatch): void {
    // It may wait long (the sink is down): on disk for good now, not only in the page cache.
    if (batch.spooled) this.options.spool?.persist(batch.spooled);
    this.unsent.push(batch);
    const limit = this.options.maxUnsentBatches ?? 100;
    while (this.unsent.length > limit) {
      const dropped = this.unsent.shift()!;
      if (dropped.spooled) this.options.spool?.remove(dropped.spooled);
      this.droppedRecords.inc(dropped.records);
      this.droppedRecordsTotal += dropped.records;
      this.logger.warn({ batchId: dropped.batchId, records: dropped.records, droppedTotal: this.droppedRecordsTotal }, 'unsent backlog full: oldest batch dropped; raise --max-unsent-batches or fix the stage NATS refuses for');
    }
    this.unsentBatches.set(this.unsent.length);
  }

  /** Sends what is waiting, oldest first; throws at the first failure (the rest waits). */
  async sendUnsent(): Promise<void> {
    try {
      while (this.unsent.length > 0) {
        const waiting = this.unsent[0]!;
        const bytes = waiting.bytes ?? this.options.spool!.read(waiting.spooled!);
        await this.sink({ batchId: waiting.batchId, bytes, records: waiting.records }); // throws: the batch stays
        this.unsent.shift();
        if (waiting.spooled) this.options.spool?.remove(waiting.spooled);
        this.recordsOut += waiting.records;
      }
    } finally {
      this.unsentBatches.set(this.unsent.length);
    }
  }
}

/**
 * A record's DNS field, its local end's peer name and drop reason names, from the DNS tracker and
 * the kernel's reasons. Methods, not closures: the warm-up's instance and the drain's call the
 * same functions, so V8's code built on the one stays right for the other (a closure per
 * instance is another call target: a deoptimisation at the first real drain).
 */
class DrainAnnotations implements RecordAnnotations {
  /** Drain time (unix ms) for the names' last use. */
  drainMs = 0;

  constructor(
    /** The capture's tracker; the warm-up's scratch one while it runs. */
    public tracker: DnsTracker | undefined,
    private readonly reasons: DropReasons,
  ) {}

  dnsField(keys: Buffer, keyAt: number): Buffer | undefined {
    return this.tracker?.takeRecordField(keys, keyAt);
  }

  peerNameField(keys: Buffer, keyAt: number): Buffer | undefined {
    return this.tracker?.peerNameField(keys, keyAt, this.drainMs);
  }

  dropReasonField(reason: number): Buffer {
    return this.reasons.field(reason);
  }
}

/** What a drain sums as Numbers and adds to the metrics once, not per record; and the batch an entry completed. */
class DrainTotals {
  // Typed: a plain array would change its elements kind at the first non-integer sum, which
  // V8's optimised loop would then meet as a new map (a deoptimisation) in every fresh drain.
  readonly bytes = new Float64Array(3);
  readonly packets = new Float64Array(3);
  dropped = 0;
  full: EncodedBatch | undefined = undefined;

  reset(): this {
    this.bytes.fill(0);
    this.packets.fill(0);
    this.dropped = 0;
    this.full = undefined;
    return this;
  }
}

/**
 * Encodes entries from `from` until the chunk ends or a batch is complete (then left in
 * `totals.full` for the caller to deliver); returns the index of the next entry. The drain's
 * whole per-record loop: one small function that V8 optimises on its own (see warmUp).
 */
function encodeEntries(encoder: FlowBatchEncoder, keys: Buffer, values: Buffer, from: number, count: number, totals: DrainTotals): number {
  const bytes = totals.bytes;
  const packets = totals.packets;
  for (let i = from; i < count; i++) {
    const v = i * VALUE;
    const role = values[v + S.role.offset]!;
    const vantage = role === ROLE_SRC ? 1 : role === ROLE_DST ? 2 : 0;
    bytes[vantage]! += u64(values, v + S.tx_bytes.offset) + u64(values, v + S.rx_bytes.offset);
    packets[vantage]! += u64(values, v + S.tx_packets.offset) + u64(values, v + S.rx_packets.offset);
    totals.dropped += values.readUInt32LE(v + S.drop_packets.offset);
    const full = encoder.add(keys, i * KEY, values, v);
    if (full) {
      totals.full = full;
      return i + 1;
    }
  }
  return count;
}

const WARM_UP_CHUNK = 1024;
/** Enough calls for V8 to optimise the encoder with every kind of entry (measured: 5 drains of 10 000 did). */
const WARM_UP_ENTRIES = 50 * 1024;

/**
 * Made-up entries of every kind a drain meets: IPv4 and IPv6, TCP (with its stats), UDP and ICMP,
 * each role, socket and interface observations, drops, application latency, and 64-bit counts
 * and times whose halves are beyond V8's small integers; DNS conversations, with the DNS events
 * the kernel would have copied of them (fed to the warm-up's own tracker).
 */
function warmUpChunk(): { keys: Buffer; values: Buffer; dnsEvents: Uint8Array[] } {
  const keys = Buffer.alloc(WARM_UP_CHUNK * KEY);
  const values = Buffer.alloc(WARM_UP_CHUNK * VALUE);
  const dnsEvents: Uint8Array[] = [];
  let dnsConversations = 0;
  const v4 = (i: number) => Uint8Array.of(192, 0, 2, i & 255);
  const v6 = (i: number) => Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i >> 8, i & 255);
  for (let i = 0; i < WARM_UP_CHUNK; i++) {
    const protocol = [IP_TCP, IP_UDP, IP_TCP, IP_ICMP, IP_UDP, IP_ICMPV6][i % 6]!;
    const ipv6 = protocol === IP_ICMPV6 || i % 5 === 0;
    const tcp = protocol === IP_TCP;
    const big = BigInt(i) * 0x1_2345_6789n;
    const conversation: Conversation = {
      localIp: ipv6 ? v6(i) : v4(i),
      remoteIp: ipv6 ? v6(i + 1) : v4(i + 1),
      localPort: protocol === IP_ICMP || protocol === IP_ICMPV6 ? 0 : 1024 + i,
      remotePort: protocol === IP_ICMP || protocol === IP_ICMPV6 ? i : i % 16 === 1 ? 53 : 443 + (i % 7),
      protocol,
      ifindex: i % 4 === 3 ? 1 + (i % 3) : 0,
      netns: 0xf0000000 + i,
      firstKtimeNs: 0x7fff_0000_0000n + big,
      lastKtimeNs: 0x7fff_8000_0000n + big,
      txBytes: big + 60n,
      txPackets: BigInt(i),
      rxBytes: i % 3 === 0 ? 0n : big * 3n,
      rxPackets: BigInt(i * 3),
      cgroupId: 0x1_0000_0000n + BigInt(i),
      ownerStartNs: i % 2 ? 0n : 0x5_0000_0000n + big,
      pid: i % 2 ? 0 : 0x40000 + i,
      comm: i % 7 === 0 ? '' : `warm-up-${i % 10}\u00e9`,
      srttUs: tcp ? 0x4000_0000 + i : 0,
      minRttUs: tcp ? i : 0,
      retransmits: tcp && i % 4 === 0 ? i : 0,
      handshakeUs: tcp && i % 3 === 0 ? 0x8000_0000 + i : 0,
      tcpFlags: tcp ? 0x1b : 0,
      appCount: tcp && i % 2 === 0 ? i : 0,
      appSumUs: tcp && i % 2 === 0 ? big : 0n,
      appMaxUs: tcp && i % 4 === 0 ? 0x8000_0000 + i : 0,
      role: [ROLE_SRC, ROLE_DST, 0][i % 3]!,
      icmpType: protocol === IP_ICMP || protocol === IP_ICMPV6 ? 8 : 0,
      icmpCode: protocol === IP_ICMP ? i % 2 : 0,
      ...(i % 8 === 0 ? { drops: { packets: 1 + i, bytes: big, reasons: [[2, 1 + i] as const] } } : {}),
    };
    // Some records under 128 bytes (one length byte): no process, no times, one direction.
    if (i % 8 === 5) Object.assign(conversation, { protocol: IP_UDP, localIp: v4(i), remoteIp: v4(i + 1), pid: 0, comm: '', cgroupId: 0n, ownerStartNs: 0n, firstKtimeNs: 0n, lastKtimeNs: 0n, rxBytes: 0n, rxPackets: 0n, netns: 0 });
    writeFlowEntry(conversation, keys, i * KEY, values, i * VALUE);
    // The DNS conversations' messages: a query and its answer (the name of the resolver's
    // address: the record's peer name too), or a message that is not DNS.
    if (conversation.remotePort === 53 && conversation.protocol === IP_UDP) {
      const key = keys.subarray(i * KEY, (i + 1) * KEY);
      const ktime = conversation.firstKtimeNs;
      if (dnsConversations++ % 3 === 0) {
        dnsEvents.push(warmUpDnsEvent(key, ktime, true, Buffer.from('not a DNS message')));
      } else {
        dnsEvents.push(warmUpDnsEvent(key, ktime, true, warmUpDnsMessage(i, conversation.remoteIp, false)));
        dnsEvents.push(warmUpDnsEvent(key, ktime + 250_000n, false, warmUpDnsMessage(i, conversation.remoteIp, true)));
      }
    }
  }
  return { keys, values, dnsEvents };
}

/** A query for warm-up-<i>.kappa.test (A or AAAA), or its answer with `address`. */
function warmUpDnsMessage(i: number, address: Uint8Array, response: boolean): Buffer {
  const labels = [`warm-up-${i}`, 'kappa', 'test'].flatMap((label) => [label.length, ...Buffer.from(label, 'latin1')]);
  const type = address.length === 16 ? 28 : 1;
  const header = [i >> 8, i & 255, response ? 0x81 : 0x01, response ? 0x80 : 0x00, 0, 1, 0, response ? 1 : 0, 0, 0, 0, 0];
  const question = [...labels, 0, 0, type, 0, 1];
  const answer = response ? [0xc0, 12, 0, type, 0, 1, 0, 0, 1, 44, 0, address.length, ...address] : [];
  return Buffer.from([...header, ...question, ...answer]);
}

/** A kappa_dns_event as the kernel writes it into the DNS ring. */
function warmUpDnsEvent(key: Buffer, ktimeNs: bigint, egress: boolean, message: Buffer): Uint8Array {
  const E = DNS_EVENT.fields;
  const event = Buffer.alloc(DNS_EVENT.size);
  key.copy(event, E.key.offset);
  event.writeBigUInt64LE(ktimeNs, E.ktime_ns.offset);
  event.writeUInt16LE(message.length, E.length.offset);
  event.writeUInt16LE(message.length, E.payload_length.offset);
  event[E.egress.offset] = egress ? 1 : 0;
  message.copy(event, E.message.offset);
  return event;
}

/** Without the kernel's BTF names, reasons are named by number. */
const unnamedReasons = new DropReasons(new Map());

/** CPU ms of this process since `before`. */
function cpuSince(before: NodeJS.CpuUsage): number {
  const cpu = process.cpuUsage(before);
  return (cpu.user + cpu.system) / 1000;
}

/** A little-endian u64 as a Number (exact below 2^53: far above any one interval's count). */
function u64(buffer: Buffer, at: number): number {
  return buffer.readUInt32LE(at) + buffer.readUInt32LE(at + 4) * 4294967296;
}
