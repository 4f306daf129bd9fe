// A durable pull consumer on KAPPA_FLOWS that hands each message over as bytes: replicas with the
// same durable name share the work, at most maxInFlight messages are in the handler at once, and
// the handler is called in stream order. Acking is the caller's (the stage runner acks after its
// output is stored; the joiner after its commit).
import { nanos } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy } from '@nats-io/jetstream';
import type { ConsumerConfig, ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import type { FlowBatch } from '@kappa/contracts';
import type { InputLog } from '@kappa/observability';
import { JetStreamCodes, jetStreamCode } from './errors.js';
import { FLOW_STREAM, subjectToken } from './subjects.js';

/** One message as delivered: its bytes and what JetStream says about it. */
export interface RawMessage {
  readonly bytes: Uint8Array;
  /** The subject the message was published on. */
  readonly subject: string;
  /** Stream sequence of the message. */
  readonly streamSequence: number;
  /** How many times it has been delivered (1 the first time). */
  readonly deliveryCount: number;
  /** The consumer's delivery sequence: a gap means a delivery was lost (e.g. across a reconnect). */
  readonly deliverySequence: number;
  readonly redelivered: boolean;
  /** When JetStream stored it (unix ns): the first arrival, the same on every redelivery. */
  readonly storedNs: bigint;
  /** Tells JetStream the handler is still working, resetting the ack deadline. */
  working(): void;
  /** Acks and waits for the server to confirm; false when the confirmation did not come. */
  ack(): Promise<boolean>;
  /** Asks for redelivery after delayMs. */
  nak(delayMs: number): void;
}

export interface RawConsumeOptions {
  /** Filter subject, e.g. kappa.flow.tagged.> or kappa.flow.tagged.p3. */
  subject: string;
  /** Durable consumer name shared by the replicas of a stage. */
  durable: string;
  /** Called for each message, in stream order; at most maxInFlight run at once. */
  handler: (message: RawMessage) => Promise<void>;
  maxInFlight?: number;
  /** Redelivery after this long without an ack (or working()). */
  ackWaitMs?: number;
  /** Messages delivered and not yet acked, across replicas (default: 4 × maxInFlight, ≥ 64). */
  maxAckPending?: number;
  /** Delete the durable first, so delivery starts again from the oldest message (a takeover). */
  fresh?: boolean;
  /**
   * Reset the durable to its ack floor first ($JS.API.CONSUMER.RESET, nats-server 2.14+), so
   * delivery starts again at the oldest unacked message, in order, without deleting it: after a
   * stream leader's loss the consumer's own Raft group elects a leader in a few seconds, while a
   * delete and a create waited on the JetStream API for 15-20 s. Older servers: as fresh.
   */
  reset?: boolean;
}

/** The consumer reset API's first nats-server version. */
const RESET_SINCE = [2, 14];

function versionAtLeast(version: string | undefined, [major, minor]: number[]): boolean {
  const m = /^v?(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return false;
  return Number(m[1]) > major! || (Number(m[1]) === major && Number(m[2]) >= minor!);
}

/** What the consumer needs from the bus (kept narrow so the two files do not import each other). */
export interface ConsumerHost {
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  /** Per-message lines: rate-limited (Bus.inputLog). */
  readonly logger: InputLog;
  /** The connected nats-server's version (what the consumer API offers). */
  serverVersion(): string | undefined;
}

class DeliveredMessage implements RawMessage {
  constructor(private readonly message: JsMsg) {}
  get bytes(): Uint8Array {
    return this.message.data;
  }
  get subject(): string {
    return this.message.subject;
  }
  get streamSequence(): number {
    return this.message.seq;
  }
  get deliveryCount(): number {
    return this.message.info.deliveryCount;
  }
  get redelivered(): boolean {
    return this.message.info.redelivered;
  }
  get deliverySequence(): number {
    return this.message.info.deliverySequence;
  }
  get storedNs(): bigint {
    return BigInt(this.message.info.timestampNanos);
  }
  working(): void {
    this.message.working();
  }
  async ack(): Promise<boolean> {
    try {
      // ackAck: once the server confirmed, a redelivery is impossible.
      return await this.message.ackAck();
    } catch {
      return false;
    }
  }
  nak(delayMs: number): void {
    this.message.nak(delayMs);
  }
}

/**
 * How long one pull request lives on the server (idle heartbeats every half of it), so a pull
 * lost with a server is noticed in ~2 s. 1 s, the client's minimum, was tried (2026-12-06): a
 * joiner partition then lost its first delivery after each reset ("delivery 1 never arrived"
 * every ~16 s, 2 of 11 cluster-fault runs stuck at 1 090 of 1 100), 0 of 9 with 2 s.
 */
export const PULL_EXPIRES_MS = 2000;

export class RawConsumer {
  private messages: ConsumerMessages | undefined;
  private loop: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;
  private lagTimer: NodeJS.Timeout | undefined;
  private lastLag = 0;
  readonly durable: string;

  constructor(
    private readonly host: ConsumerHost,
    private readonly options: RawConsumeOptions,
  ) {
    this.durable = subjectToken(options.durable);
  }

  private get maxInFlight(): number {
    return Math.max(1, this.options.maxInFlight ?? 1);
  }

  async start(): Promise<void> {
    const { jsm, js } = this.host;
    const config: Partial<ConsumerConfig> = {
      durable_name: this.durable,
      filter_subject: this.options.subject,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(this.options.ackWaitMs ?? 30_000),
      max_ack_pending: this.options.maxAckPending ?? Math.max(this.maxInFlight * 4, 64),
    };
    if (this.options.reset && versionAtLeast(this.host.serverVersion(), RESET_SINCE)) {
      await jsm.consumers.reset(FLOW_STREAM, this.durable).catch((error: unknown) => {
        if (jetStreamCode(error) !== JetStreamCodes.ConsumerNotFound) throw error;
      });
    } else if (this.options.fresh || this.options.reset) {
      await jsm.consumers.delete(FLOW_STREAM, this.durable).catch((error: unknown) => {
        if (jetStreamCode(error) !== JetStreamCodes.ConsumerNotFound) throw error;
      });
    }
    try {
      await jsm.consumers.add(FLOW_STREAM, config);
    } catch (error) {
      // Exists with another config (e.g. a new ack wait): update what may be updated.
      const code = jetStreamCode(error);
      if (code !== JetStreamCodes.ConsumerAlreadyExists && code !== JetStreamCodes.ConsumerNameInUse) throw error;
      await jsm.consumers.update(FLOW_STREAM, this.durable, { ack_wait: config.ack_wait, max_ack_pending: config.max_ack_pending });
    }
    const consumer = await js.consumers.get(FLOW_STREAM, this.durable);
    // Pulls that expire every PULL_EXPIRES_MS, with idle heartbeats at half that: a pull request
    // that died with a nats-server (the consumer's leader SIGKILLed, its Raft group elects another)
    // is noticed after two missed heartbeats and pulled again from the new leader, ~2 s, instead of
    // the client's default 30 s expiry (which made a takeover take up to 48 s end to end).
    // bind: after a reconnect or missed heartbeats the client pulls again at once. Without it, it
    // first asks for the consumer's info, which nobody answers until the consumer has a leader
    // again: the request's 5 s timeout, then 1-3 s of backoff, held every stage ~4.5 s past its
    // consumer's election (cluster faults, 2026-12-06). What bind gives up, the client telling a
    // deleted consumer apart, kappa never used: the client retried that forever too.
    this.messages = await consumer.consume({ max_messages: this.maxInFlight, expires: PULL_EXPIRES_MS, bind: true });
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

  /** Messages waiting for this consumer (not yet delivered). */
  async lag(): Promise<number> {
    const info = await this.host.jsm.consumers.info(FLOW_STREAM, this.durable);
    return info.num_pending;
  }

  get running(): boolean {
    return this.loop !== undefined && !this.stopped;
  }

  private async run(messages: ConsumerMessages): Promise<void> {
    for await (const message of messages) {
      const task = this.handle(new DeliveredMessage(message)).finally(() => this.inFlight.delete(task));
      this.inFlight.add(task);
      if (this.inFlight.size >= this.maxInFlight) await Promise.race(this.inFlight);
      if (this.stopped) break;
    }
  }

  private async handle(message: RawMessage): Promise<void> {
    try {
      await this.options.handler(message);
    } catch (error) {
      // Handlers settle their messages themselves; one that throws gets its message back later.
      this.host.logger.error({ err: error, subject: message.subject, seq: message.streamSequence }, 'message handler failed; the message will be redelivered');
      message.nak(1000);
    }
  }

  /** Stops fetching; resolves when every in-flight handler has finished. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.lagTimer) clearInterval(this.lagTimer);
    this.messages?.stop();
    await Promise.allSettled([...this.inFlight]);
    await this.loop?.catch(() => undefined);
  }
}

/** What a FlowBatch handler learns of its message (consumeBatches). */
export interface BatchContext {
  subject: string;
  streamSequence: number;
  deliveryCount: number;
  redelivered: boolean;
  /** When JetStream stored the message (unix ns). */
  storedNs: bigint;
  working(): void;
}

export type BatchHandler = (batch: FlowBatch, context: BatchContext) => Promise<void>;

/** consumeBatches: FlowBatch objects (tests, tools); stages use runStage and the record view. */
export interface ConsumeOptions {
  /** The stage name, used for the DLQ subject, metrics and (by default) the durable name. */
  stage: string;
  /** Filter subject, e.g. kappa.flow.tagged.> */
  subject: string;
  handler: BatchHandler;
  durable?: string;
  maxInFlight?: number;
  ackWaitMs?: number;
  /** Delay before a batch whose handler failed is redelivered. */
  retryDelayMs?: number;
}

/** A consumer started by consumeBatches or runStage. */
export type BatchConsumer = RawConsumer;

export function batchContext(message: RawMessage): BatchContext {
  return {
    subject: message.subject,
    streamSequence: message.streamSequence,
    deliveryCount: message.deliveryCount,
    redelivered: message.redelivered,
    storedNs: message.storedNs,
    working: () => message.working(),
  };
}
