// The connection every kappa service shares: JetStream streams, publishing with dedup ids (bytes
// or FlowBatches, split under max_payload by one rule), durable pull consumers that hand over
// bytes, the dead-letter queue and heartbeats. The NATS clients stay inside: callers get what
// they need (is it open, stream and consumer info, status subscriptions) as methods.
import { TimeoutError, connect, headers, nanos, nkeyAuthenticator } from '@nats-io/transport-node';
import type { ConnectionOptions, NatsConnection } from '@nats-io/transport-node';
import { DiscardPolicy, RetentionPolicy, StorageType, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { ConsumerInfo, JetStreamClient, JetStreamManager, StreamConfig, StreamInfo } from '@nats-io/jetstream';
import { FlowBatchView, FlowBatchWriter, decodeFlowBatch, decodeStageStatus, encodeFlowBatch, encodeStageStatus } from '@kappa/contracts';
import type { EncodedBatch, FlowBatch, StageStatus } from '@kappa/contracts';
import { LogLimiter } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import { StateStore, stateStreamConfig } from './state-store.js';
import type { StateStoreOptions } from './state-store.js';
import { RawConsumer, batchContext } from './consumer.js';
import { busMetrics } from './metrics.js';
import type { BusMetrics } from './metrics.js';
import type { ConsumeOptions, ConsumerHost, RawConsumeOptions } from './consumer.js';
import { settle } from './settle.js';
import { ForgedHeartbeat, heartbeatMatchesSubject } from './status.js';
import type { SettleContext } from './settle.js';
import { BusConnectError, BusPublishError, JetStreamCodes, StreamSetupError, StreamStorageError, classifyPublishError, isPermissionError, jetStreamCode } from './errors.js';
import type { NatsAuth, NatsTls, StreamLimits } from './options.js';
import { DLQ_STREAM, FLOW_STREAM, admissionShare, subjectLabel, subjects } from './subjects.js';
import { installNatsCopies } from './nats-copies.js';

export interface BusOptions {
  servers: string[];
  /** Connection name shown by the server, e.g. kappa-joiner. */
  name: string;
  logger: Logger;
  registry: Registry;
  auth?: NatsAuth;
  tls?: NatsTls;
  streams?: StreamLimits;
  /** Reply subjects' prefix; with per-identity permissions only this identity may read it. */
  inboxPrefix?: string;
}

/** A message read back from a stream (tests and tools: the DLQ). */
export interface StoredMessage {
  readonly subject: string;
  readonly seq: number;
  readonly data: Uint8Array;
  header(name: string): string | undefined;
}

/** The largest FlowBatch message a stage writes: max_payload minus room for headers. */
export function messageLimit(maxPayload: number): number {
  return Math.max(1024, maxPayload - 4096);
}

/**
 * How long a publish waits for JetStream's answer. A publish in flight to a stream leader that
 * died, or sent while the stream has none, gets no answer; the caller retries it (same
 * Nats-Msg-Id, so a publish that did land is dropped as a duplicate). The wait is what a retry can
 * add after the new leader is elected (4-9 s after a SIGKILL on this machine), so it is short:
 * 2 s (5 s until 2026-12-06, 10 s before). A slower answer on a loaded machine only makes a
 * duplicate that JetStream drops.
 */
export const PUBLISH_TIMEOUT_MS = 2000;

/**
 * How long admission waits for KAPPA_FLOWS's fill before it lets the publish go unchecked. While
 * the stream has no leader nobody answers: with the API's 5 s, every publish of capture (one
 * drain after another) waited 5 s more after the new leader was elected (cluster faults,
 * 2026-12-06: elected 6.3 s after the kill, capture published again at 10.1 s).
 */
export const FILL_READ_TIMEOUT_MS = 1000;

export class Bus {
  readonly metrics: BusMetrics;
  private readonly consumers = new Set<RawConsumer>();
  private heartbeat: NodeJS.Timeout | undefined;
  private readonly deadLetteredByStage = new Map<string, number>();
  /** KAPPA_FLOWS's bytes and limit as last read, for admission (see STREAM_ADMISSION). */
  private streamFill: { bytes: number; maxBytes: number; readAtMs: number } | undefined;
  /** Reads that fill with FILL_READ_TIMEOUT_MS instead of the API's 5 s. */
  private fillReader: Promise<JetStreamManager> | undefined;
  private readonly consumerHost: ConsumerHost;
  /**
   * Lines each input can cause (dead letters, handler failures): at most a few per kind per
   * interval, then a count, so a flood of bad input cannot flood the log; metrics count them all.
   */
  readonly inputLog: LogLimiter;

  /** @internal connectBus() makes buses; the clients are not part of the API. */
  constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly options: BusOptions,
  ) {
    this.metrics = busMetrics(options.registry);
    this.inputLog = new LogLimiter(options.logger);
    this.consumerHost = { js, jsm, logger: this.inputLog, serverVersion: () => nc.info?.version };
  }

  get logger(): Logger {
    return this.options.logger;
  }

  /** The largest message the server accepts. */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  /** The size limit a FlowBatch message is split under. */
  get messageLimit(): number {
    return messageLimit(this.maxPayload);
  }

  /** The connection is up or reconnecting (not closed or draining for good). */
  isOpen(): boolean {
    return !this.nc.isClosed();
  }

  /**
   * Creates or updates KAPPA_FLOWS and KAPPA_DLQ. Safe to call from every replica at once.
   * KAPPA_FLOWS is a work queue: a batch is removed once its stage acks it, so the byte limit
   * bounds the backlog, and `discard: new` makes a full backlog a publish error, never silent loss.
   * A service whose NATS identity may not create streams (per-identity permissions: only the
   * admin may) waits for the admin to (`kappa streams`; the Kustomize Job kappa-streams), with one
   * line, rather than exiting into a crash loop; `waitForAdmin: false` throws StreamSetupError.
   */
  async ensureStreams(limits: StreamLimits | undefined = this.options.streams, options: { waitForAdmin?: boolean } = {}): Promise<void> {
    await this.ensureStreamsWaiting(() => this.ensureKappaStreams(limits), options);
  }

  private async ensureStreamsWaiting(ensure: () => Promise<void>, options: { waitForAdmin?: boolean }): Promise<void> {
    for (let waited = false; ; waited = true) {
      try {
        await untilJetStreamAnswers(ensure, this.nc, this.logger);
        if (waited) this.logger.info('the JetStream streams exist now');
        return;
      } catch (error) {
        if (!(error instanceof StreamSetupError) || options.waitForAdmin === false || this.nc.isClosed()) throw error;
        if (!waited) this.logger.warn({ stream: error.stream }, `${error.message}; waiting for them`);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  private async ensureKappaStreams(limits: StreamLimits | undefined): Promise<void> {
    const maxBytes = limits?.maxBytes ?? 1024 ** 3;
    const maxAgeMs = limits?.maxAgeMs ?? 3_600_000;
    const replicas = streamReplicas(limits);
    await this.ensureStream({
      ...replicas,
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
      ...replicas,
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

  /**
   * Creates a stream, or brings its limits up to date. Without the right to (per-identity
   * permissions), an existing stream is used as it is (with a warning if its limits differ) and a
   * missing one is a StreamSetupError.
   */
  private async ensureStream(config: Partial<StreamConfig> & { name: string }): Promise<void> {
    let existing: StreamConfig | undefined;
    try {
      existing = (await this.jsm.streams.info(config.name)).config;
    } catch (error) {
      if (jetStreamCode(error) !== JetStreamCodes.StreamNotFound) throw error;
    }
    if (existing) {
      if (sameStreamLimits(existing, config)) return;
      try {
        await this.jsm.streams.update(config.name, config);
      } catch (error) {
        if (isStorageRefusal(error)) throw new StreamStorageError(config.name, config.max_bytes ?? -1, { cause: error });
        if (!isPermissionError(error)) throw error;
        this.logger.warn({ stream: config.name }, `${config.name} differs from this service's settings and this NATS identity may not change it: the admin updates it (kappa streams)`);
      }
      return;
    }
    try {
      await this.jsm.streams.add(config);
    } catch (error) {
      if (isPermissionError(error)) throw new StreamSetupError(config.name, { cause: error });
      if (isStorageRefusal(error)) throw new StreamStorageError(config.name, config.max_bytes ?? -1, { cause: error });
      // Another replica created it between our info and add.
      if (jetStreamCode(error) !== JetStreamCodes.StreamNameInUse) throw error;
      await this.jsm.streams.update(config.name, config);
    }
  }

  /**
   * Stores one message with Nats-Msg-Id = msgId (a republish after a crash is dropped as a
   * duplicate). Throws BusPublishError (and counts it) when the stream does not take it.
   */
  async publishBytes(subject: string, bytes: Uint8Array, msgId: string): Promise<{ duplicate: boolean }> {
    const label = subjectLabel(subject);
    if (bytes.byteLength + msgId.length + 64 > this.maxPayload) {
      this.metrics.publishFailures.inc({ subject: label, reason: 'too_large' });
      throw new BusPublishError(subject, 'too_large', { cause: new Error(`a message of ${bytes.byteLength} bytes exceeds max_payload ${this.maxPayload}`) });
    }
    await this.admit(subject, label, bytes.byteLength);
    try {
      const ack = await this.js.publish(subject, bytes, { msgID: msgId, timeout: PUBLISH_TIMEOUT_MS });
      if (ack.duplicate) this.metrics.duplicates.inc({ subject: label });
      else this.metrics.published.inc({ subject: label });
      // Consumers only remove: between reads, the fill is at most what we last read plus this.
      if (this.streamFill && !ack.duplicate) this.streamFill.bytes += bytes.byteLength;
      return { duplicate: ack.duplicate };
    } catch (cause) {
      const reason = classifyPublishError(cause);
      this.metrics.publishFailures.inc({ subject: label, reason });
      throw new BusPublishError(subject, reason, { cause });
    }
  }

  /** Stores batch parts (a FlowBatchWriter's), all in flight at once. */
  async publishParts(subject: string, parts: readonly EncodedBatch[]): Promise<void> {
    await Promise.all(parts.map((part) => this.publishBytes(subject, part.bytes, part.id)));
  }

  /**
   * Stores an encoded FlowBatch under `id`; one larger than the message limit is split into parts
   * `<id>/<n>` by the writer's rule (records copied as they are, nothing re-encoded).
   */
  async publishEncoded(subject: string, bytes: Uint8Array, id: string): Promise<void> {
    const limit = this.messageLimit;
    if (bytes.byteLength <= limit) {
      await this.publishBytes(subject, bytes, id);
      return;
    }
    const view = new FlowBatchView().parse(bytes);
    const writer = new FlowBatchWriter(bytes.byteLength + 1024);
    writer.open({ batchId: id, producer: view.producer, createdNs: view.createdNs }, limit);
    for (let i = 0; i < view.length; i++) writer.copyRecord(view, i);
    await this.publishParts(subject, writer.parts());
  }

  /** Stores a FlowBatch object under its batchId (tests, tools, capture's object path). */
  async publishBatch(subject: string, batch: FlowBatch): Promise<void> {
    await this.publishEncoded(subject, encodeFlowBatch(batch), batch.batchId);
  }

  /**
   * Refuses (BusPublishError stream_full, counted) a publish on a pipeline hop when KAPPA_FLOWS is
   * filled beyond that hop's share (STREAM_ADMISSION). The fill is read at most once a second and
   * grown by what this connection published since (consumers only take away, so it errs high), and read
   * before every publish once that estimate is within 10 % of the share; JetStream's own limit
   * (discard: new) stays the backstop. A fill that cannot be read lets the publish go to JetStream.
   */
  private async admit(subject: string, label: string, bytes: number): Promise<void> {
    const share = admissionShare(subject);
    if (share >= 1) return;
    const now = Date.now();
    let fill = this.streamFill;
    if (!fill || now - fill.readAtMs > 1000 || fill.bytes + bytes >= (share - 0.1) * fill.maxBytes) {
      try {
        this.fillReader ??= jetstream(this.nc, { timeout: FILL_READ_TIMEOUT_MS }).jetstreamManager(false);
        const info = await (await this.fillReader).streams.info(FLOW_STREAM);
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

  /** Starts a durable pull consumer on the flow stream that hands over bytes (see RawConsumer). */
  async consume(options: RawConsumeOptions): Promise<RawConsumer> {
    const consumer = new RawConsumer(this.consumerHost, options);
    await consumer.start();
    this.consumers.add(consumer);
    return consumer;
  }

  /**
   * A durable consumer that hands each batch over decoded (FlowBatch objects: tests and tools).
   * Undecodable messages go to the DLQ; a batch is acked once the handler resolved.
   */
  async consumeBatches(options: ConsumeOptions): Promise<RawConsumer> {
    const context = this.settleContext(options.stage, options.retryDelayMs ?? 1000);
    return this.consume({
      subject: options.subject,
      durable: options.durable ?? options.stage,
      ...(options.maxInFlight !== undefined ? { maxInFlight: options.maxInFlight } : {}),
      ...(options.ackWaitMs !== undefined ? { ackWaitMs: options.ackWaitMs } : {}),
      handler: async (message) => {
        await settle(message, context, decodeFlowBatch, (batch) => options.handler(batch, batchContext(message)), (batch) => batch.batchId);
      },
    });
  }

  /** How messages of `stage` are settled (see settle.ts). */
  settleContext(stage: string, retryDelayMs: number): SettleContext {
    return { stage, metrics: this.metrics, logger: this.inputLog, retryDelayMs, deadLetter: (s, data, details) => this.deadLetter(s, data, details) };
  }

  /** Stops one consumer (in-flight handlers finish) and forgets it. */
  async stopConsumer(consumer: RawConsumer): Promise<void> {
    await consumer.stop();
    this.consumers.delete(consumer);
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

  /**
   * Calls `onStatus` with every heartbeat on kappa.status.> whose body is the stage and instance of
   * its subject; undecodable ones and forgeries (ForgedHeartbeat, see heartbeatMatchesSubject) are
   * passed to `onBadStatus`, or ignored. Returns the unsubscribe function.
   */
  subscribeStatus(onStatus: (status: StageStatus, subject: string) => void, onBadStatus?: (subject: string, error: unknown) => void): () => void {
    const subscription = this.nc.subscribe(subjects.allStatus, {
      callback: (error, message) => {
        if (error) return;
        let status: StageStatus;
        try {
          status = decodeStageStatus(message.data);
        } catch (decodeError) {
          onBadStatus?.(message.subject, decodeError);
          return;
        }
        if (heartbeatMatchesSubject(message.subject, status)) onStatus(status, message.subject);
        else onBadStatus?.(message.subject, new ForgedHeartbeat(message.subject, status));
      },
    });
    return () => subscription.unsubscribe();
  }

  /**
   * Whether the server refuses this identity a publish on `subject` (per-identity permissions).
   * Sends one empty core-NATS message; nats-server answers a refused publish with an error before
   * the PONG of the flush that follows it.
   */
  async probePublishRefused(subject: string): Promise<boolean> {
    let refused = false;
    const statuses = this.nc.status()[Symbol.asyncIterator]();
    let watching = true;
    void (async () => {
      while (watching) {
        const next = await statuses.next();
        if (next.done === true) return;
        const s = next.value;
        if (s.type === 'error' && isPermissionError(s.error) && (s.error as { subject?: string }).subject === subject) refused = true;
      }
    })();
    this.nc.publish(subject, new Uint8Array());
    await this.nc.flush();
    // The error was read before the PONG; let the status iterator hand it over.
    await new Promise((r) => setTimeout(r, 50));
    watching = false;
    void statuses.return?.();
    return refused;
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

  /** A stream's state and config (e.g. the DLQ's message count per subject with subjectsFilter). */
  async streamInfo(stream: string, options: { subjectsFilter?: string } = {}): Promise<StreamInfo> {
    return this.jsm.streams.info(stream, options.subjectsFilter !== undefined ? { subjects_filter: options.subjectsFilter } : undefined);
  }

  /** A durable consumer's state on KAPPA_FLOWS (pending, ack pending, ...). */
  async consumerInfo(durable: string): Promise<ConsumerInfo> {
    return this.jsm.consumers.info(FLOW_STREAM, durable);
  }

  /** One stored message: by sequence, or the last on a subject; undefined when there is none. */
  async streamMessage(stream: string, query: { seq: number } | { lastBySubject: string }): Promise<StoredMessage | undefined> {
    const request = 'seq' in query ? { seq: query.seq } : { last_by_subj: query.lastBySubject };
    const message = await this.jsm.streams.getMessage(stream, request);
    if (!message) return undefined;
    return { subject: message.subject, seq: message.seq, data: message.data, header: (name) => message.header.get(name) || undefined };
  }

  /**
   * A keyed store on its own stream (last value per key). Its stream is created or brought up to
   * date here where this identity may; with per-identity permissions the admin creates it
   * (`kappa streams`) and this waits for it as ensureStreams does.
   */
  async openStateStore(options: StateStoreOptions): Promise<StateStore> {
    await this.ensureStreamsWaiting(() => this.ensureStream({ ...stateStreamConfig(options), ...streamReplicas(this.options.streams) }), { waitForAdmin: true });
    return new StateStore({ js: this.js, jsm: this.jsm }, options);
  }

  /** Creates or updates the stream of a state store (`kappa streams`, with the admin identity). */
  async ensureStateStream(options: StateStoreOptions): Promise<void> {
    await this.ensureStream({ ...stateStreamConfig(options), ...streamReplicas(this.options.streams) });
  }

  /** Deletes a stream and everything in it (tests and benchmarks start clean with it). */
  async deleteStream(stream: string): Promise<void> {
    await this.jsm.streams.delete(stream).catch((error: unknown) => {
      if (jetStreamCode(error) !== JetStreamCodes.StreamNotFound) throw error;
    });
  }

  /** Empties a stream, keeping it and its consumers (benchmarks). */
  async purgeStream(stream: string): Promise<void> {
    await this.jsm.streams.purge(stream);
  }

  /** Publishes bytes as they are, without a dedup id or any check (tests that inject garbage). */
  async publishUnchecked(subject: string, bytes: Uint8Array): Promise<void> {
    await this.js.publish(subject, bytes);
  }

  /** Stops consumers (in-flight handlers finish and ack), then drains the connection. */
  async close(): Promise<void> {
    this.stopHeartbeat();
    this.inputLog.flush();
    await Promise.all([...this.consumers].map((c) => c.stop()));
    this.consumers.clear();
    if (!this.nc.isClosed()) await this.nc.drain();
  }
}

/**
 * num_replicas when the settings name it (a NATS cluster: R3 from `kappa streams`); otherwise
 * nothing, so the server's default (1) applies to a new stream and an existing one is left as it is.
 */
function streamReplicas(limits: StreamLimits | undefined): { num_replicas?: number } {
  return limits?.replicas !== undefined ? { num_replicas: limits.replicas } : {};
}

/** The settings ensureStreams manages are what the stream has (nothing to update). */
function sameStreamLimits(existing: StreamConfig, wanted: Partial<StreamConfig>): boolean {
  return (Object.keys(wanted) as (keyof StreamConfig)[]).every((key) => JSON.stringify(existing[key]) === JSON.stringify(wanted[key]));
}

export async function connectBus(options: BusOptions): Promise<Bus> {
  installNatsCopies();
  const connectOptions: ConnectionOptions = {
    servers: options.servers,
    name: options.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    waitOnFirstConnect: false,
    // nats.js otherwise builds an Error (a stack capture) for every request in advance, in case it
    // fails: every publish awaiting its PubAck and every confirmed ack, ~7 % of the tagger's CPU
    // in the pipeline bench. A failed request still rejects with its own error and message.
    noAsyncTraces: true,
    ...(options.inboxPrefix !== undefined ? { inboxPrefix: options.inboxPrefix } : {}),
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
  try {
    // jetstreamManager asks the server's JetStream API once.
    return new Bus(nc, jetstream(nc), await untilJetStreamAnswers(() => jetstreamManager(nc), nc, logger), options);
  } catch (error) {
    await nc.close().catch(() => undefined);
    throw error;
  }
}

/**
 * `ask`, asked again while JetStream times out, for up to JETSTREAM_START_WAIT_MS: a NATS cluster
 * that has just started answers no JetStream request until its servers elect a meta leader (ci17:
 * a joiner started beside a fresh three-server cluster exited with a bare 'timeout' while the
 * other stages, a second later, came up).
 */
async function untilJetStreamAnswers<T>(ask: () => Promise<T>, nc: NatsConnection, logger: Logger): Promise<T> {
  for (const answerBy = Date.now() + JETSTREAM_START_WAIT_MS; ; ) {
    try {
      return await ask();
    } catch (error) {
      if (!(error instanceof TimeoutError) || nc.isClosed() || Date.now() >= answerBy) throw error;
      logger.warn('JetStream did not answer (a NATS cluster still electing its leader?); asking again');
    }
  }
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

/** How long a service starting beside a fresh NATS cluster waits for JetStream to answer at all. */
export const JETSTREAM_START_WAIT_MS = 60_000;

/** nats-server cannot reserve a stream's max_bytes: "insufficient storage resources available". */
function isStorageRefusal(error: unknown): boolean {
  const code = jetStreamCode(error);
  return code === JetStreamCodes.StorageResourcesExceeded || code === JetStreamCodes.InsufficientResources;
}
