// The capture loop: every interval, drain the kernel's flow table, turn each conversation into
// a FlowRecord and hand the batch to a sink (stdout JSON lines or the bus). Metrics count what
// left the kernel and what the kernel could not store.
import { newFlowBatch } from '@kappa/contracts';
import type { FlowBatch, FlowRecord } from '@kappa/contracts';
import { Counter, Gauge, Histogram } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import { ktimeToUnixOffsetNs, unixNowNs } from './clock.js';
import type { Conversation } from './layout.js';
import type { OverflowCounters } from './datapath.js';
import { toFlowRecord } from './records.js';
import type { Spool } from './spool.js';

/** The kernel side as the loop needs it (Datapath in production). */
export interface FlowSource {
  drain(onConversation: (conversation: Conversation) => void): number;
  overflow(): OverflowCounters;
  readonly interfaceNames: ReadonlyMap<number, string>;
}

/** Where batches go: stdout or the bus. Rejects when the batch could not be delivered. */
export type BatchSink = (batch: FlowBatch) => Promise<void>;

export interface CaptureOptions {
  node: string;
  /** Records per FlowBatch (many per message, bounded by the message size). */
  batchSize?: number;
  /** Batches kept for a retry at the next drain while the sink fails; older ones are dropped (and counted). */
  maxUnsentBatches?: number;
  /** Keeps each batch on disk from the drain until the sink has it (see spool.ts). */
  spool?: Spool;
}

export interface DrainResult {
  conversations: number;
  overflowPackets: bigint;
  overflowBytes: bigint;
  durationMs: number;
  /** CPU time of this process for the drain (wall time on a busy machine says little). */
  cpuMs: number;
}

export class CaptureLoop {
  private intervalStartNs = unixNowNs();
  private lastOverflow: OverflowCounters = { packets: 0n, bytes: 0n, roles: 0n };
  private readonly conversations: Counter;
  private readonly bytes: Counter;
  private readonly packets: Counter;
  private readonly overflowPackets: Counter;
  private readonly overflowBytes: Counter;
  private readonly drainSeconds: Histogram;
  private readonly droppedRecords: Counter;
  private readonly unsentBatches: Gauge;
  private readonly unsent: FlowBatch[] = [];
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
    this.conversations = new Counter({ name: 'kappa_capture_conversations_total', help: 'Conversation records drained from the kernel', registers });
    this.bytes = new Counter({ name: 'kappa_capture_bytes_total', help: 'IP bytes counted, both directions', labelNames: ['vantage'], registers });
    this.packets = new Counter({ name: 'kappa_capture_packets_total', help: 'Wire packets counted, both directions', labelNames: ['vantage'], registers });
    this.overflowPackets = new Counter({ name: 'kappa_capture_map_overflow_packets_total', help: 'Packets not counted because the flow map was full', registers });
    this.overflowBytes = new Counter({ name: 'kappa_capture_map_overflow_bytes_total', help: 'Bytes not counted because the flow map was full', registers });
    this.droppedRecords = new Counter({ name: 'kappa_capture_records_dropped_total', help: 'Records dropped because the sink kept failing (unsent backlog full)', registers });
    this.unsentBatches = new Gauge({ name: 'kappa_capture_unsent_batches', help: 'Drained batches waiting for the sink (bounded by --max-unsent-batches)', registers });
    // The kernel counters are totals since the maps were created, which may be before a crash
    // of the previous instance: only what grows from now on is this instance's loss.
    this.lastOverflow = source.overflow();
    this.overflowPacketsTotal = this.lastOverflow.packets;
    // A previous instance's batches that may not have arrived go first.
    this.unsent.push(...(options.spool?.load() ?? []));
    this.drainSeconds = new Histogram({
      name: 'kappa_capture_drain_duration_seconds',
      help: 'Time to drain the flow map and build the records',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
  }

  /** Drains one interval and sends its records; the interval ends now. */
  async drainOnce(): Promise<DrainResult> {
    const started = performance.now();
    const cpuBefore = process.cpuUsage();
    const endNs = unixNowNs();
    const interval = { startNs: this.intervalStartNs, endNs };
    this.intervalStartNs = endNs;
    const context = {
      node: this.options.node,
      ktimeToUnixNs: ktimeToUnixOffsetNs(),
      interfaceName: (ifindex: number) => this.source.interfaceNames.get(ifindex) ?? `if${ifindex}`,
    };
    const records: FlowRecord[] = [];
    // Summed per vantage and added to the metrics once per drain, not once per record.
    const volume = new Map<number, { bytes: bigint; packets: bigint }>();
    const conversations = this.source.drain((c) => {
      const record = toFlowRecord(c, interval, context);
      records.push(record);
      const sum = volume.get(record.vantage) ?? { bytes: 0n, packets: 0n };
      sum.bytes += record.bytes + record.reverseBytes;
      sum.packets += record.packets + record.reversePackets;
      volume.set(record.vantage, sum);
    });
    for (const [vantage, sum] of volume) {
      this.bytes.inc({ vantage: String(vantage) }, Number(sum.bytes));
      this.packets.inc({ vantage: String(vantage) }, Number(sum.packets));
    }
    this.conversations.inc(conversations);
    const overflow = this.source.overflow();
    const lostPackets = overflow.packets - this.lastOverflow.packets;
    const lostBytes = overflow.bytes - this.lastOverflow.bytes;
    this.lastOverflow = overflow;
    this.overflowPackets.inc(Number(lostPackets));
    this.overflowPacketsTotal = overflow.packets;
    this.overflowBytes.inc(Number(lostBytes));
    await this.send(records, interval.endNs);
    const durationMs = performance.now() - started;
    const cpu = process.cpuUsage(cpuBefore);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    this.drainSeconds.observe(durationMs / 1000);
    const summary = { conversations, overflowPackets: lostPackets, overflowBytes: lostBytes, durationMs, cpuMs };
    if (lostPackets > 0n) {
      this.logger.warn({ ...summary, overflowPackets: String(lostPackets), overflowBytes: String(lostBytes) }, 'flow map full: packets were not counted; raise --max-conversations');
    } else {
      this.logger.debug({ conversations, durationMs, cpuMs }, 'drained');
    }
    return summary;
  }

  /**
   * Sends this interval's batches after any left over from failed sends. A failing sink keeps
   * them (ids are stable, so a retry that did arrive is deduplicated downstream) up to a bound;
   * beyond it the oldest are dropped and counted, never silently.
   */
  private async send(records: FlowRecord[], endNs: bigint): Promise<void> {
    const size = this.options.batchSize ?? 2000;
    const fresh: FlowBatch[] = [];
    for (let i = 0, part = 0; i < records.length; i += size, part++) {
      // Stable across retries of the same interval: the bus uses it as Nats-Msg-Id.
      const batchId = `${this.options.node}/${endNs}/${part}`;
      const batch = newFlowBatch({ batchId, producer: this.options.node, createdNs: unixNowNs(), records: records.slice(i, i + size) });
      // The kernel already forgot these counts. A crash between the drain above and this fsync
      // (the time to build the records: microseconds to a few ms) is the one window that loses.
      this.options.spool?.save(batch);
      fresh.push(batch);
    }
    // The bound is on what failed sends left behind, never on this drain: a full flow map
    // (262 144 conversations) is 132 batches, and every one of them gets its try.
    const limit = this.options.maxUnsentBatches ?? 100;
    while (this.unsent.length > 0 && this.unsent.length + fresh.length > limit) {
      const dropped = this.unsent.shift()!;
      this.options.spool?.remove(dropped);
      this.droppedRecords.inc(dropped.records.length);
      this.droppedRecordsTotal += dropped.records.length;
      this.logger.warn({ batchId: dropped.batchId, records: dropped.records.length, droppedTotal: this.droppedRecordsTotal }, 'unsent backlog full: oldest batch dropped; raise --max-unsent-batches or fix the stage NATS refuses for');
    }
    this.unsent.push(...fresh);
    await this.sendUnsent();
  }

  /** Sends what is waiting, oldest first; throws at the first failure (the rest waits). */
  async sendUnsent(): Promise<void> {
    try {
      while (this.unsent.length > 0) {
        const batch = this.unsent[0]!;
        await this.sink(batch); // throws: the batch stays for the next drain
        this.unsent.shift();
        this.options.spool?.remove(batch);
        this.recordsOut += batch.records.length;
      }
    } finally {
      this.unsentBatches.set(this.unsent.length);
    }
  }
}
