// One partition this replica owns: its messages in stream order through the join, each batch's
// output published (several in flight), then ONE Redis commit for one or more published batches,
// then their acks. The commit holds the stream sequence applied, so a new owner starts from it:
// batches published but not committed are processed again from the same state and come out as
// the same bytes under the same ids, which JetStream's duplicate window drops.
import { setTimeout as sleep } from 'node:timers/promises';
import { PULL_EXPIRES_MS } from '@kappa/bus';
import { ContractDecodeError, FlowBatchView, FlowBatchWriter, encodeFlowBatch, newFlowBatch } from '@kappa/contracts';
import type { EncodedBatch } from '@kappa/contracts';
import type { InputLog, Logger } from '@kappa/observability';
import { CommitSet } from './commit.js';
import { Delta, JoinStats, PartitionJoin } from './partition.js';
import type { JoinSettings } from './partition.js';
import { JoinStoreError, PartitionFencedError } from './store.js';
import type { PartitionStore } from './store.js';

/** A message of the partition's input, as the bus hands it over. */
export interface PartitionMessage {
  readonly bytes: Uint8Array;
  readonly subject: string;
  readonly streamSequence: number;
  /** The consumer's delivery counter: a gap means a delivery was lost on the way. */
  readonly deliverySequence?: number;
  /** When JetStream stored it (unix ns): the join's event time. */
  readonly storedNs: bigint;
  ack(): Promise<boolean>;
}

export interface PartitionConsumer {
  stop(): Promise<void>;
  /** Messages not yet delivered, as last read in the background. */
  readonly latestLag: number;
}

/** What the joiner needs of the bus (the stage runner's Bus has it). */
export interface JoinerBus {
  consume(options: {
    subject: string;
    durable: string;
    handler: (message: PartitionMessage) => Promise<void>;
    maxInFlight?: number;
    ackWaitMs?: number;
    maxAckPending?: number;
    fresh?: boolean;
  }): Promise<PartitionConsumer>;
  publishBytes(subject: string, bytes: Uint8Array, msgId: string): Promise<{ duplicate: boolean }>;
  deadLetter(stage: string, data: Uint8Array, details: { error: string; subject: string; streamSequence: number }): Promise<void>;
  streamInfo(stream: string): Promise<{ created: string }>;
  readonly messageLimit: number;
  /** Per-input lines, rate-limited with counts (the Bus's); the partition's logger without it. */
  readonly inputLog?: InputLog;
}

/** Points of the protocol where crash tests kill the process (KAPPA_JOINER_CRASH_AT). */
export type CrashPoint = 'published' | 'swept' | 'committed';

export interface OwnerSettings {
  stage: string;
  /** This replica's name (ids of its clock ticks). */
  instance: string;
  join: JoinSettings;
  inputSubject: (partition: number) => string;
  outputSubject: (partition: number) => string;
  stream: string;
  /** Input batches a partition holds at once (delivered, not yet committed). */
  window: number;
  /** An idle partition whose next deadline passed gets a clock tick this often at most. */
  tickMs: number;
  /** Redelivery of an unacked input to this same owner (it never naks). */
  ackWaitMs: number;
  crash?: ((point: CrashPoint) => void) | undefined;
}

/** What the owner reports to the joiner (metrics, Redis health, loss of the partition). */
export interface OwnerEvents {
  /** `input`: a batch of the stage's input (not a dead-lettered one, not this joiner's own clock tick). */
  committed(partition: number, stats: JoinStats, recordsIn: number, input: boolean): void;
  redis(ok: boolean, error?: unknown): void;
  lost(partition: number, why: string): void;
}

interface Entry {
  seq: number;
  message: PartitionMessage;
  delta: Delta;
  stats: JoinStats;
  /** The join's clock after this batch. */
  clock: number;
  recordsIn: number;
  writer: FlowBatchWriter | undefined;
  parts: EncodedBatch[];
  /** A dead-lettered input: nothing to publish but the DLQ copy. */
  deadLetter: { error: string; undecodable?: boolean } | undefined;
  published: boolean;
  publishing: boolean;
  /** A records-less batch whose output held timed-out records (crash point "swept"). */
  swept: boolean;
  /** A clock tick of a joiner (an empty batch with a tick: id), not input of the stage. */
  tick: boolean;
}

const RETRY_MS = 1000;

export class PartitionOwner {
  /** Stream sequence committed in Redis, and applied in memory. */
  committed = 0;
  /** When the lease was last renewed (this host's clock). */
  leaseRenewedMs = Date.now();
  processed = 0;
  private received = 0;
  /** The last delivery counter seen since the consumer was opened (it starts at 1 then). */
  private lastDelivery = 0;
  /** When the last stopped consumer had stopped: its pull requests live on the server until they expire. */
  private inputStoppedMs = 0;
  private stream = '';
  private join: PartitionJoin;
  /** A batch the join failed on (e.g. a record too large once joined): dead-lettered after a reload. */
  private poisoned: { seq: number; error: string } | undefined;
  private recovering = false;
  private consumer: PartitionConsumer | undefined;
  /** The input consumer is stopped until the lease is sure again (or a lost delivery is fetched again). */
  private inputSuspended = false;
  private readonly queue: Entry[] = [];
  private readonly held: PartitionMessage[] = [];
  private committing = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private state: 'starting' | 'running' | 'stopping' | 'stopped' = 'starting';
  /** No new batch is processed (Redis or a publish is failing); held input waits. */
  private paused = false;
  private readonly view = new FlowBatchView();
  private readonly writers: FlowBatchWriter[] = [];
  private lastActivity = Date.now();
  private lastTick = 0;
  private ticks = 0;
  private reopening: Promise<void> | undefined;
  /** A resumeInput is under way (waiting out old pulls, or reopening). */
  private resuming = false;

  constructor(
    readonly partition: number,
    readonly epoch: number,
    private readonly store: PartitionStore,
    private readonly bus: JoinerBus,
    private readonly settings: OwnerSettings,
    private readonly events: OwnerEvents,
    private readonly logger: Logger,
  ) {
    this.join = new PartitionJoin(settings.join);
  }

  /** Input of this partition not yet delivered to it. */
  get lag(): number {
    return this.consumer?.latestLag ?? 0;
  }

  get pendingCount(): number {
    return this.join.pendingCount;
  }

  get endCount(): number {
    return this.join.endCount;
  }

  get stateBytes(): number {
    return this.join.storedBytes;
  }

  get running(): boolean {
    return this.state === 'running';
  }

  /** Loads the partition's state from Redis and starts consuming its input from the oldest unacked message. */
  async start(): Promise<{ pending: number; ends: number; applied: number }> {
    const loaded = await this.store.load(this.partition, this.epoch, this.join);
    const info = await this.bus.streamInfo(this.settings.stream);
    this.stream = info.created;
    this.committed = this.processed = this.received = loaded.applied;
    if (loaded.stream !== '' && loaded.stream !== this.stream) {
      // The stream was recreated: its sequences start again, so the one applied is meaningless.
      this.logger.warn({ partition: this.partition, was: loaded.stream, now: this.stream }, 'the JetStream stream was recreated; reading this partition from its start');
      this.committed = this.processed = this.received = 0;
    }
    // No batch seen yet: the loaded clock may be far behind (the owner before died a while ago),
    // so the first round ticks at once if anything waits, and JetStream's time catches the clock up.
    this.lastActivity = 0;
    await this.open('fresh');
    this.state = 'running';
    this.pump();
    return { pending: loaded.pending, ends: loaded.ends, applied: loaded.applied };
  }

  /**
   * Consumes the partition's input from its oldest unacked message, in order. 'fresh' (a
   * takeover): the durable is deleted and made again, so a replica that held the partition
   * before can no longer fetch from it. 'reset' (this owner lost a delivery): reset to its ack
   * floor, which after a NATS server's loss waits only for the consumer's own leader election.
   */
  private async open(restart: 'fresh' | 'reset'): Promise<void> {
    // A made or reset consumer counts its deliveries from 1: a first delivery above that went to
    // another pull request (see resumeInput).
    this.lastDelivery = 0;
    // Never two consumers of one owner at once: a second would take deliveries from the first.
    const old = this.consumer;
    this.consumer = undefined;
    await old?.stop().catch(() => undefined);
    this.consumer = await this.bus.consume({
      subject: this.settings.inputSubject(this.partition),
      durable: `${this.settings.stage}-p${this.partition}`,
      ...(restart === 'fresh' ? { fresh: true } : { reset: true }),
      maxInFlight: this.settings.window,
      maxAckPending: this.settings.window,
      ackWaitMs: this.settings.ackWaitMs,
      handler: async (message) => this.onMessage(message),
    });
    if (this.state === 'stopped') {
      // Stopped or abandoned while the consumer was being made: it must not fetch.
      const made = this.consumer;
      this.consumer = undefined;
      await made.stop().catch(() => undefined);
    }
  }

  /**
   * Stops fetching input (the lease is not sure, or a delivery was lost): what was fetched and
   * not processed is dropped (it is redelivered), what was processed goes on to its commit.
   */
  suspendInput(why: string): void {
    if (this.inputSuspended || this.state === 'stopped') return;
    this.inputSuspended = true;
    this.logger.warn({ partition: this.partition, why }, 'partition input suspended');
    const old = this.consumer;
    this.consumer = undefined;
    this.held.length = 0;
    this.received = this.processed;
    this.reopening = (async () => {
      await old?.stop().catch(() => undefined);
      this.inputStoppedMs = Date.now();
    })().finally(() => (this.reopening = undefined));
  }

  /** Fetches input again, from the oldest unacked message (already processed ones are recognised). */
  resumeInput(): void {
    // Once per suspension: the joiner asks at every round, and each ask used to open one more
    // consumer on the partition's durable, whose deliveries the others then missed as gaps.
    if (!this.inputSuspended || this.state !== 'running' || this.resuming) return;
    this.resuming = true;
    const previous = this.reopening ?? Promise.resolve();
    this.reopening = (async () => {
      await previous;
      // A reset consumer serves its waiting pull requests in turn, the oldest first. One whose
      // subscriber still listens (this owner's last, until its unsubscribe reaches the consumer's
      // server; a replica that held the partition before) takes the first deliveries again, and
      // the gap resets again: wait such pulls out (they live PULL_EXPIRES_MS) before the reset.
      const wait = this.inputStoppedMs + PULL_EXPIRES_MS + 250 - Date.now();
      if (wait > 0) await sleep(wait);
      if (this.state !== 'running') return;
      try {
        await this.open('reset');
        this.inputSuspended = false;
        this.logger.info({ partition: this.partition }, 'partition input resumed');
      } catch (error) {
        this.logger.error({ err: error, partition: this.partition }, 'cannot reopen the partition consumer; retrying');
      }
    })().finally(() => {
      this.reopening = undefined;
      this.resuming = false;
    });
  }

  private onMessage(message: PartitionMessage): void {
    if (this.state === 'stopped' || this.inputSuspended) return;
    const delivery = message.deliverySequence;
    if (delivery !== undefined) {
      if (delivery > this.lastDelivery + 1) {
        // A delivery went elsewhere (lost on a reconnect, or fetched by a replica that held the
        // partition before and did not know yet): fetch again, in order.
        this.suspendInput(`delivery ${this.lastDelivery + 1} never arrived`);
        this.resumeInput();
        return;
      }
      this.lastDelivery = delivery;
    }
    const seq = message.streamSequence;
    if (seq <= this.committed) {
      // Applied and committed before (by this owner or the one before): only the ack is missing.
      void message.ack();
      return;
    }
    if (seq <= this.received) {
      // A redelivery of a batch this owner holds: keep the newest handle for the ack.
      let held = false;
      for (const e of this.queue) {
        if (e.seq !== seq) continue;
        e.message = message;
        held = true;
      }
      for (let i = 0; i < this.held.length; i++) {
        if (this.held[i]!.streamSequence !== seq) continue;
        this.held[i] = message;
        held = true;
      }
      if (!held) {
        // Never taken in, yet older than what was: it came out of order (its first delivery went
        // elsewhere unseen). Dropping it would leave it unacked for good: fetch again, in order.
        this.suspendInput(`batch ${seq} came after ${this.received}`);
        this.resumeInput();
      }
      return;
    }
    this.received = seq;
    this.held.push(message);
    this.pump();
  }

  /** Processes held input while nothing is failing. */
  private pump(): void {
    while (!this.paused && !this.recovering && this.state === 'running' && this.held.length > 0) {
      this.process(this.held.shift()!);
    }
  }

  private takeWriter(): FlowBatchWriter {
    const w = this.writers.pop() ?? new FlowBatchWriter(256 * 1024);
    w.reset();
    return w;
  }

  private process(message: PartitionMessage): void {
    const seq = message.streamSequence;
    const timeMs = Number(message.storedNs / 1_000_000n);
    const entry: Entry = {
      seq,
      message,
      delta: new Delta(),
      stats: new JoinStats(),
      clock: 0,
      recordsIn: 0,
      writer: undefined,
      parts: [],
      deadLetter: undefined,
      published: false,
      publishing: false,
      swept: false,
      tick: false,
    };
    let view: FlowBatchView;
    try {
      view = this.view.parse(message.bytes);
    } catch (error) {
      if (!(error instanceof ContractDecodeError)) throw error;
      // Undecodable: it goes to the dead-letter queue (in place of an output) and changes nothing.
      entry.deadLetter = { error: error.message, undecodable: true };
      entry.clock = this.join.clock;
      this.queue.push(entry);
      this.processed = seq;
      this.publish(entry);
      return;
    }
    if (this.poisoned?.seq === seq) {
      // The join failed on this batch before; the state was reloaded: it goes to the DLQ.
      entry.deadLetter = { error: this.poisoned.error };
      this.poisoned = undefined;
      entry.clock = this.join.clock;
      this.queue.push(entry);
      this.processed = seq;
      this.publish(entry);
      return;
    }
    const writer = this.takeWriter();
    writer.open({ batchId: `${this.settings.stage}:${view.batchId}`, producer: this.settings.stage, createdNs: view.createdNs }, this.bus.messageLimit);
    const bytes = view.bytes;
    try {
      this.join.apply(view, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), timeMs, seq, writer, entry.delta, entry.stats);
    } catch (error) {
      // The state may hold part of this batch: let what came before be committed, reload the
      // state from Redis, and send this batch to the DLQ (the same state and batch would fail
      // the same way again).
      this.logger.error({ err: error, partition: this.partition, seq, batchId: view.batchId }, 'the join failed on a batch; reloading the partition and dead-lettering the batch');
      this.poisoned = { seq, error: error instanceof Error ? error.message : String(error) };
      this.recovering = true;
      this.held.unshift(message);
      this.writers.push(writer);
      void this.recover();
      return;
    }
    entry.clock = this.join.clock;
    entry.recordsIn = view.length;
    entry.writer = writer;
    entry.parts = writer.parts().filter((p) => p.records > 0);
    entry.swept = view.length === 0 && entry.stats.recordsOut > 0;
    entry.tick = view.length === 0 && view.batchId.startsWith('tick:');
    this.queue.push(entry);
    this.processed = seq;
    this.lastActivity = Date.now();
    this.publish(entry);
  }

  private publish(entry: Entry): void {
    if (entry.published || entry.publishing) return;
    entry.publishing = true;
    const subject = this.settings.outputSubject(this.partition);
    const done = entry.deadLetter
      ? this.bus.deadLetter(this.settings.stage, entry.message.bytes, { error: entry.deadLetter.error, subject: entry.message.subject, streamSequence: entry.seq })
      : Promise.all(entry.parts.map((p) => this.bus.publishBytes(subject, p.bytes, p.id)));
    done.then(
      () => {
        entry.publishing = false;
        entry.published = true;
        if (entry.deadLetter?.undecodable) {
          (this.bus.inputLog ?? this.logger).warn({ subject: entry.message.subject, seq: entry.seq, error: entry.deadLetter.error }, 'undecodable message moved to the DLQ');
        }
        if (entry.parts.length > 0) this.settings.crash?.(entry.swept ? 'swept' : 'published');
        this.commit();
      },
      (error: unknown) => {
        entry.publishing = false;
        this.fail('publish', error);
      },
    );
  }

  /** Commits every published batch at the head of the queue in one transaction, then acks them. */
  private commit(): void {
    if (this.committing || this.state === 'stopped') return;
    let n = 0;
    while (n < this.queue.length && this.queue[n]!.published) n++;
    if (n === 0) return;
    const batch = this.queue.slice(0, n);
    const last = batch[n - 1]!;
    const set = new CommitSet();
    for (const e of batch) set.add(e.delta);
    this.committing = true;
    this.store
      .commit(this.partition, this.epoch, last.seq, last.clock, this.stream, set)
      .then(
        () => {
          this.committing = false;
          if (this.state === 'stopped') {
            this.events.redis(true);
            return;
          }
          this.queue.splice(0, n);
          this.committed = last.seq;
          this.settings.crash?.('committed');
          for (const e of batch) {
            this.join.release(e.delta);
            void e.message.ack();
            if (e.writer) this.writers.push(e.writer);
            this.events.committed(this.partition, e.stats, e.recordsIn, !e.deadLetter && !e.tick);
          }
          // Only now: Redis being back resumes every owner, this one too, and a resume commits what
          // is published. Said before the batch left the queue, it committed the same entries a
          // second time and then took entries it had not committed off the queue: slab values
          // released twice, writers handed out twice (output bytes overwritten before their
          // publish), batches never acked (2026-12-05, the Redis primary's SIGKILL).
          this.events.redis(true);
          if (this.paused && !this.failing()) this.resume();
          this.commit();
          this.pump();
        },
        (error: unknown) => {
          this.committing = false;
          if (error instanceof PartitionFencedError) {
            this.events.lost(this.partition, error.message);
            return;
          }
          this.fail('commit', error);
        },
      );
  }

  /** After a failed apply: once everything before it is committed, the state is loaded again. */
  private async recover(): Promise<void> {
    while (this.state === 'running' && (this.queue.length > 0 || this.committing)) {
      this.retry();
      await new Promise((r) => setTimeout(r, 50));
    }
    if (this.state !== 'running') return;
    for (;;) {
      try {
        const join = new PartitionJoin(this.settings.join);
        const loaded = await this.store.load(this.partition, this.epoch, join);
        this.join = join;
        this.processed = this.committed;
        this.logger.warn({ partition: this.partition, applied: loaded.applied, pending: loaded.pending }, 'partition state reloaded');
        this.recovering = false;
        break;
      } catch (error) {
        if (this.state !== 'running') return;
        this.events.redis(false, error);
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    }
    this.pump();
  }

  private failing(): boolean {
    return this.queue.some((e) => !e.published && !e.publishing);
  }

  /** A publish or commit failed: hold new input, retry in a moment (nothing is acked meanwhile). */
  private fail(what: 'publish' | 'commit', error: unknown): void {
    if (this.state === 'stopped') return;
    if (error instanceof JoinStoreError) this.events.redis(false, error);
    else this.logger.error({ err: error, partition: this.partition }, `${what} failed; the batch is held and retried`);
    this.paused = true;
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = undefined;
      this.retry();
    }, RETRY_MS);
  }

  private retry(): void {
    if (this.state === 'stopped') return;
    for (const e of this.queue) if (!e.published && !e.publishing) this.publish(e);
    this.commit();
    if (!this.failing() && !this.committing && this.queue.length === 0) this.resume();
  }

  /** Redis is reachable again (the joiner says so) or everything went through: carry on. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.retry();
    this.pump();
  }

  /** Redis is failing elsewhere (a lease renewal): hold new input until it is back. */
  pause(): void {
    this.paused = true;
  }

  /**
   * If the partition is idle and its next deadline (in event time) has passed by now, publishes
   * a clock tick: an empty batch on its own input, which comes back in stream order with
   * JetStream's time and lets the records whose wait is over leave.
   */
  async tick(nowMs: number): Promise<void> {
    if (this.state !== 'running' || this.paused || this.queue.length > 0 || this.held.length > 0) return;
    if (nowMs - Math.max(this.lastActivity, this.lastTick) < this.settings.tickMs) return;
    // Event time now, estimated: the clock of the last batch plus the time since (JetStream's
    // clock and this host's only need to agree roughly: a tick too early releases nothing).
    const eventNow = this.join.clock + (nowMs - this.lastActivity);
    if (!this.join.dueBy(eventNow)) return;
    this.lastTick = nowMs;
    const id = `tick:p${this.partition}:${this.settings.instance}:${this.epoch}:${this.ticks++}`;
    await this.bus.publishBytes(this.settings.inputSubject(this.partition), encodeFlowBatch(newFlowBatch({ batchId: id, producer: this.settings.instance })), id);
  }

  /** Whether every batch taken in was committed and acked. */
  get drained(): boolean {
    return this.queue.length === 0 && this.held.length === 0;
  }

  /**
   * Stops taking input and waits (at most `timeoutMs`) for what is in flight to be committed;
   * true when it all was (the lease can be released for an immediate takeover).
   */
  async stop(timeoutMs: number): Promise<boolean> {
    if (this.state === 'stopped') return this.drained;
    this.state = 'stopping';
    await this.consumer?.stop().catch(() => undefined);
    this.consumer = undefined;
    this.held.length = 0;
    const end = Date.now() + timeoutMs;
    while (this.queue.length > 0 && Date.now() < end) {
      this.retry();
      await new Promise((r) => setTimeout(r, 50));
    }
    const drained = this.queue.length === 0;
    this.halt();
    return drained;
  }

  /** Stops at once (the partition was lost): nothing more is published, committed or acked. */
  async abandon(): Promise<void> {
    this.halt();
    await this.consumer?.stop().catch(() => undefined);
    this.consumer = undefined;
  }

  private halt(): void {
    this.state = 'stopped';
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.queue.length = 0;
    this.held.length = 0;
  }
}
