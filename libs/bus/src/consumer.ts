// A stage's durable pull consumer on KAPPA_FLOWS: replicas with the same durable name share the
// work; a batch is acked only after its handler resolved (its output is stored), nak'ed for
// redelivery when the handler failed, and dead-lettered when it cannot be decoded.
import { nanos } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy } from '@nats-io/jetstream';
import type { ConsumerConfig, ConsumerMessages, JsMsg } from '@nats-io/jetstream';
import { ContractDecodeError, decodeFlowBatch } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import type { Bus } from './bus.js';
import { FLOW_STREAM, subjectToken } from './subjects.js';

export interface BatchContext {
  /** The subject the batch arrived on. */
  subject: string;
  /** Stream sequence of the message. */
  streamSequence: number;
  /** How many times this batch has been delivered (1 the first time). */
  deliveryCount: number;
  /** When JetStream stored the batch (unix ns): its first arrival, the same on every redelivery. */
  storedNs: bigint;
  redelivered: boolean;
  /** Tells JetStream the handler is still working, resetting the ack deadline. */
  working(): void;
}

export type BatchHandler = (batch: FlowBatch, context: BatchContext) => Promise<void>;

/**
 * Thrown by a handler that must see the batch again later (the tagger, when a record's pod is not
 * known yet): the batch is nak'ed with this delay, counted in kappa_bus_held_batches_total, and
 * neither acked nor counted as a failure. The handler bounds how long it holds (BatchContext.storedNs).
 */
export class HoldBatch extends Error {
  override readonly name = 'HoldBatch';
  constructor(
    readonly delayMs: number,
    readonly reason: string,
  ) {
    super(`batch held for ${delayMs} ms: ${reason}`);
  }
}

export interface ConsumeOptions {
  /** The stage name, used for the DLQ subject, metrics and (by default) the durable name. */
  stage: string;
  /** Filter subject, e.g. kappa.flow.tagged or kappa.flow.enriched.> */
  subject: string;
  handler: BatchHandler;
  /** Durable consumer name shared by the stage's replicas; defaults to the stage. */
  durable?: string;
  /** Batches handled at once by this replica. */
  maxInFlight?: number;
  /** Redelivery after this long without an ack (or working()). */
  ackWaitMs?: number;
  /** Delay before a batch whose handler failed is redelivered. */
  retryDelayMs?: number;
}

export class BatchConsumer {
  private messages: ConsumerMessages | undefined;
  private loop: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;
  private lagTimer: NodeJS.Timeout | undefined;
  private lastLag = 0;
  readonly durable: string;

  constructor(
    private readonly bus: Bus,
    private readonly options: ConsumeOptions,
  ) {
    this.durable = subjectToken(options.durable ?? options.stage);
  }

  private get maxInFlight(): number {
    return Math.max(1, this.options.maxInFlight ?? 1);
  }

  async start(): Promise<void> {
    const config: Partial<ConsumerConfig> = {
      durable_name: this.durable,
      filter_subject: this.options.subject,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.options.ackWaitMs ?? 30_000),
      max_ack_pending: Math.max(this.maxInFlight * 4, 64),
    };
    try {
      await this.bus.jsm.consumers.add(FLOW_STREAM, config);
    } catch (error) {
      // Exists with another config (e.g. a new ack wait): update what may be updated.
      if (!/already|exists/i.test(String(error))) throw error;
      await this.bus.jsm.consumers.update(FLOW_STREAM, this.durable, {
        ack_wait: config.ack_wait,
        max_ack_pending: config.max_ack_pending,
      });
    }
    const consumer = await this.bus.js.consumers.get(FLOW_STREAM, this.durable);
    this.messages = await consumer.consume({ max_messages: this.maxInFlight });
    this.loop = this.run(this.messages);
    const refreshLag = () => {
      // A missed refresh keeps the last figure; the next one retries.
      this.lag().then((n) => (this.lastLag = n), () => undefined);
    };
    refreshLag();
    this.lagTimer = setInterval(refreshLag, 5000);
    this.lagTimer.unref();
  }

  /** The lag as last read in the background (every 5 s), for heartbeats that must not wait. */
  get latestLag(): number {
    return this.lastLag;
  }

  /** Messages waiting for this stage (not yet delivered), for heartbeats and `kappa status`. */
  async lag(): Promise<number> {
    const info = await this.bus.jsm.consumers.info(FLOW_STREAM, this.durable);
    return info.num_pending;
  }

  private async run(messages: ConsumerMessages): Promise<void> {
    for await (const message of messages) {
      const task = this.handle(message).finally(() => this.inFlight.delete(task));
      this.inFlight.add(task);
      if (this.inFlight.size >= this.maxInFlight) await Promise.race(this.inFlight);
      if (this.stopped) break;
    }
  }

  private async handle(message: JsMsg): Promise<void> {
    const { stage, handler } = this.options;
    const log = this.bus.logger;
    let batch: FlowBatch;
    try {
      batch = decodeFlowBatch(message.data);
    } catch (error) {
      if (!(error instanceof ContractDecodeError)) throw error;
      try {
        await this.bus.deadLetter(stage, message.data, {
          error: error.message,
          subject: message.subject,
          streamSequence: message.seq,
        });
        message.ack();
        log.warn({ subject: message.subject, seq: message.seq, error: error.message }, 'undecodable message moved to the DLQ');
      } catch (dlqError) {
        log.error({ err: dlqError }, 'cannot publish to the DLQ; the message stays for redelivery');
        message.nak(this.options.retryDelayMs ?? 1000);
      }
      return;
    }
    try {
      await handler(batch, {
        subject: message.subject,
        streamSequence: message.seq,
        deliveryCount: message.info.deliveryCount,
        storedNs: BigInt(message.info.timestampNanos),
        redelivered: message.info.redelivered,
        working: () => message.working(),
      });
    } catch (error) {
      if (error instanceof HoldBatch) {
        this.bus.metrics.held.inc({ stage, reason: error.reason });
        message.nak(error.delayMs);
        return;
      }
      this.bus.metrics.handlerFailures.inc({ stage });
      log.error({ err: error, batchId: batch.batchId, delivery: message.info.deliveryCount }, 'batch handler failed; the batch will be redelivered');
      message.nak(this.options.retryDelayMs ?? 1000);
      return;
    }
    try {
      // ackAck: the server confirmed the ack, so a redelivery after this point is impossible.
      await message.ackAck();
      this.bus.metrics.consumed.inc({ stage });
    } catch (error) {
      // The output is stored with a deterministic msg id: a redelivery republishes a duplicate,
      // which JetStream drops, so nothing is doubled.
      log.warn({ err: error, batchId: batch.batchId }, 'ack not confirmed; the batch may be redelivered');
    }
  }

  /** Stops fetching; resolves when every in-flight handler has finished and acked. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.lagTimer) clearInterval(this.lagTimer);
    this.messages?.stop();
    await Promise.allSettled([...this.inFlight]);
    await this.loop?.catch(() => undefined);
  }
}
