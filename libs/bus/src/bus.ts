// The connection every kappa service shares: JetStream streams, FlowBatch publishing with
// dedup ids, durable pull consumption with explicit acks, the dead-letter queue and heartbeats.
import { connect, headers, nanos, nkeyAuthenticator } from '@nats-io/transport-node';
import type { NatsConnection, ConnectionOptions } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import type { JetStreamClient, JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import { encodeStageStatus } from '@kappa/contracts';
import type { FlowBatch, StageStatus } from '@kappa/contracts';
import { Counter } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import { BatchConsumer } from './consumer.js';
import type { ConsumeOptions } from './consumer.js';
import { BusConnectError, BusPublishError, classifyPublishError } from './errors.js';
import type { NatsAuth, NatsTls, StreamLimits } from './options.js';
import { DLQ_STREAM, FLOW_STREAM, admissionShare, subjects } from './subjects.js';
import { splitBatch } from './split.js';

export interface BusOptions {
  servers: string[];
  /** Connection name shown by the server, e.g. kappa-joiner. */
  name: string;
  logger: Logger;
  registry: Registry;
  auth?: NatsAuth;
  tls?: NatsTls;
  streams?: StreamLimits;
}

export interface BusMetrics {
  published: Counter<'subject'>;
  duplicates: Counter<'subject'>;
  publishFailures: Counter<'subject' | 'reason'>;
  consumed: Counter<'stage'>;
  handlerFailures: Counter<'stage'>;
  deadLettered: Counter<'stage'>;
}

function busMetrics(registry: Registry): BusMetrics {
  const make = <L extends string>(name: string, help: string, labelNames: L[]) => {
    const existing = registry.getSingleMetric(name);
    return (existing as Counter<L> | undefined) ?? new Counter<L>({ name, help, labelNames, registers: [registry] });
  };
  return {
    published: make('kappa_bus_published_batches_total', 'FlowBatches stored in JetStream', ['subject']),
    duplicates: make('kappa_bus_duplicate_batches_total', 'Publishes JetStream dropped as duplicates (same Nats-Msg-Id)', ['subject']),
    publishFailures: make('kappa_bus_publish_failures_total', 'Publishes that failed; the input stays unacked', ['subject', 'reason']),
    consumed: make('kappa_bus_consumed_batches_total', 'FlowBatches handled and acked', ['stage']),
    handlerFailures: make('kappa_bus_handler_failures_total', 'Batches whose handler failed; redelivered later', ['stage']),
    deadLettered: make('kappa_bus_dead_lettered_total', 'Undecodable messages moved to kappa.dlq.<stage>', ['stage']),
  };
}

/** Label for a subject in metrics: the subject without its per-node token. */
function subjectLabel(subject: string): string {
  return subject.replace(/^(kappa\.flow\.(captured|enriched))\..*$/, '$1');
}

export class Bus {
  readonly metrics: BusMetrics;
  private readonly consumers = new Set<BatchConsumer>();
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly deadLetteredByStage = new Map<string, number>();
  /** KAPPA_FLOWS's bytes and limit as last read, for admission (see STREAM_ADMISSION). */
  private streamFill: { bytes: number; maxBytes: number; readAtMs: number } | undefined;

  constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    private readonly options: BusOptions,
  ) {
    this.metrics = busMetrics(options.registry);
  }

  get logger(): Logger {
    return this.options.logger;
  }

  /** The largest message the server accepts. */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  /**
   * Creates or updates KAPPA_FLOWS and KAPPA_DLQ. Safe to call from every replica at once.
   * KAPPA_FLOWS is a work queue: a batch is removed once its stage acks it, so the byte limit
   * bounds the backlog, and `discard: new` makes a full backlog a publish error, never silent loss.
   */
  async ensureStreams(limits: StreamLimits | undefined = this.options.streams): Promise<void> {
    const maxBytes = limits?.maxBytes ?? 1024 ** 3;
    const maxAgeMs = limits?.maxAgeMs ?? 3_600_000;
    await this.ensureStream({
      name: FLOW_STREAM,
      subjects: ['kappa.flow.>'],
      storage: StorageType.File,
      retention: RetentionPolicy.Workqueue,
      discard: DiscardPolicy.New,
      max_bytes: maxBytes,
      max_age: nanos(maxAgeMs),
      duplicate_window: nanos(Math.min(120_000, maxAgeMs)),
    });
    await this.ensureStream({
      name: DLQ_STREAM,
      subjects: ['kappa.dlq.>'],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      max_bytes: 256 * 1024 ** 2,
      max_age: nanos(7 * 24 * 3_600_000),
      duplicate_window: nanos(120_000),
    });
  }

  private async ensureStream(config: Partial<StreamConfig> & { name: string }): Promise<void> {
    try {
      await this.jsm.streams.info(config.name);
      await this.jsm.streams.update(config.name, config);
      return;
    } catch (error) {
      if (!/not found/i.test(String(error))) throw error;
    }
    try {
      await this.jsm.streams.add(config);
    } catch (error) {
      // Another replica created it between our info and add.
      if (!/already in use/i.test(String(error))) throw error;
      await this.jsm.streams.update(config.name, config);
    }
  }

  /**
   * Stores a batch in JetStream with Nats-Msg-Id = batch.batchId, so a republish after a crash is
   * dropped as a duplicate. A batch larger than the server's max_payload is split into parts with
   * ids `<batchId>/<i>`, deterministically, so redelivery yields the same parts.
   * Throws BusPublishError (and counts it) when the stream does not take it.
   */
  async publishBatch(subject: string, batch: FlowBatch): Promise<void> {
    for (const part of splitBatch(batch, this.maxPayload)) await this.publishEncodedBatch(subject, part.id, part.bytes);
  }

  /**
   * Stores one already-encoded FlowBatch (at most maxPayload − 4096 bytes: the producer sizes its
   * batches) with Nats-Msg-Id = batchId, the same way as publishBatch: admission, dedup, metrics.
   */
  async publishEncodedBatch(subject: string, batchId: string, bytes: Uint8Array): Promise<void> {
    const label = subjectLabel(subject);
    await this.admit(subject, label);
    try {
      const ack = await this.js.publish(subject, bytes, { msgID: batchId, timeout: 10_000 });
      if (ack.duplicate) this.metrics.duplicates.inc({ subject: label });
      else this.metrics.published.inc({ subject: label });
      // Consumers only remove: between reads, the fill is at most what we last read plus this.
      if (this.streamFill && !ack.duplicate) this.streamFill.bytes += bytes.byteLength;
    } catch (cause) {
      const reason = classifyPublishError(cause);
      this.metrics.publishFailures.inc({ subject: label, reason });
      throw new BusPublishError(subject, reason, { cause });
    }
  }

  /**
   * Refuses (BusPublishError stream_full, counted) a publish on a pipeline hop when KAPPA_FLOWS is
   * filled beyond that hop's share (STREAM_ADMISSION). The fill is read at most once a second and
   * grown by what this connection published since (consumers only take away, so it errs high), and read
   * before every publish once that estimate is within 10 % of the share; JetStream's own limit
   * (discard: new) stays the backstop. A fill that cannot be read lets the publish go to JetStream.
   */
  private async admit(subject: string, label: string): Promise<void> {
    const share = admissionShare(subject);
    if (share >= 1) return;
    const now = Date.now();
    let fill = this.streamFill;
    if (!fill || now - fill.readAtMs > 1000 || fill.bytes >= (share - 0.1) * fill.maxBytes) {
      try {
        const info = await this.jsm.streams.info(FLOW_STREAM);
        fill = this.streamFill = { bytes: info.state.bytes, maxBytes: info.config.max_bytes, readAtMs: now };
      } catch {
        return;
      }
    }
    if (fill.maxBytes > 0 && fill.bytes >= share * fill.maxBytes) {
      this.metrics.publishFailures.inc({ subject: label, reason: 'stream_full' });
      const cause = new Error(`KAPPA_FLOWS holds ${fill.bytes} of ${fill.maxBytes} bytes; ${label} may publish up to ${Math.round(share * 100)} % of it`);
      throw new BusPublishError(subject, 'stream_full', { cause });
    }
  }

  /** Starts a durable pull consumer on the flow stream; see BatchConsumer. */
  async consumeBatches(options: ConsumeOptions): Promise<BatchConsumer> {
    const consumer = new BatchConsumer(this, options);
    await consumer.start();
    this.consumers.add(consumer);
    return consumer;
  }

  /** Publishes the stage's status every intervalMs on kappa.status.<stage>.<instance>. */
  startHeartbeat(status: () => StageStatus, intervalMs = 2000): void {
    this.stopHeartbeat();
    const beat = () => {
      if (this.nc.isClosed()) return;
      const s = status();
      this.nc.publish(subjects.status(s.stage, s.instance), encodeStageStatus(s));
    };
    beat();
    this.heartbeat = setInterval(beat, intervalMs);
    this.heartbeat.unref();
  }

  private stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /** Publishes the raw bytes of an undecodable message on kappa.dlq.<stage>, then counts it. */
  async deadLetter(stage: string, data: Uint8Array, details: { error: string; subject: string; streamSequence: number }): Promise<void> {
    const h = headers();
    h.set('Kappa-Error', details.error.slice(0, 1024).replace(/[\r\n]+/g, ' '));
    h.set('Kappa-Subject', details.subject);
    h.set('Kappa-Stage', stage);
    h.set('Kappa-Stream-Seq', String(details.streamSequence));
    const body = data.byteLength > this.maxPayload - 4096 ? data.subarray(0, this.maxPayload - 4096) : data;
    if (body !== data) h.set('Kappa-Truncated-From', String(data.byteLength));
    await this.js.publish(subjects.dlq(stage), body, { headers: h, msgID: `dlq:${stage}:${details.streamSequence}` });
    this.metrics.deadLettered.inc({ stage });
    this.deadLetteredByStage.set(stage, (this.deadLetteredByStage.get(stage) ?? 0) + 1);
  }

  /** Messages this connection moved to the DLQ, for one stage or all (synchronous, for heartbeats). */
  deadLettered(stage?: string): number {
    if (stage !== undefined) return this.deadLetteredByStage.get(stage) ?? 0;
    let total = 0;
    for (const n of this.deadLetteredByStage.values()) total += n;
    return total;
  }

  /** Stops consumers (in-flight handlers finish and ack), then drains the connection. */
  async close(): Promise<void> {
    this.stopHeartbeat();
    await Promise.all([...this.consumers].map((c) => c.stop()));
    this.consumers.clear();
    if (!this.nc.isClosed()) await this.nc.drain();
  }
}

export async function connectBus(options: BusOptions): Promise<Bus> {
  const connectOptions: ConnectionOptions = {
    servers: options.servers,
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    waitOnFirstConnect: false,
  };
  const auth = options.auth ?? {};
  if (auth.user !== undefined) connectOptions.user = auth.user;
  if (auth.pass !== undefined) connectOptions.pass = auth.pass;
  if (auth.token !== undefined) connectOptions.token = auth.token;
  if (auth.nkeySeed !== undefined) connectOptions.authenticator = nkeyAuthenticator(auth.nkeySeed);
  if (options.tls) connectOptions.tls = { ...options.tls };
  let nc: NatsConnection;
  try {
    nc = await connect(connectOptions);
  } catch (cause) {
    throw new BusConnectError(options.servers, { cause });
  }
  const logger = options.logger;
  const warning = natsLinkWarning(options, nc.info);
  if (warning) logger.warn(warning);
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') {
        logger.warn({ nats: s.type, server: 'server' in s ? s.server : undefined }, `NATS ${s.type}`);
      }
    }
  })();
  return new Bus(nc, jetstream(nc), await jetstreamManager(nc), options);
}

/**
 * The one start warning for a NATS link that is plaintext or that the server lets anyone use,
 * naming the flags that fix it; undefined for a TLS link the server authenticates.
 */
export function natsLinkWarning(options: Pick<BusOptions, 'servers' | 'tls'>, info: { tls_required?: boolean; auth_required?: boolean } | undefined): string | undefined {
  const tls = options.tls !== undefined || options.servers.some((s) => s.startsWith('tls://')) || info?.tls_required === true;
  const lacks: string[] = [];
  if (!tls) lacks.push('plaintext (use tls:// --nats-url and --nats-tls-ca; --nats-tls-cert and --nats-tls-key for mutual TLS)');
  if (info?.auth_required !== true) lacks.push('unauthenticated: the server lets anyone in (give it users and set --nats-nkey-seed, or --nats-user and --nats-password, or --nats-token)');
  return lacks.length > 0 ? `the NATS link is ${lacks.join(' and ')}` : undefined;
}

export { AckPolicy, DeliverPolicy };
