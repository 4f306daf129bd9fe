// The stage runner: the one shape of a kappa stage. A stage is a transform from an input batch
// (bytes, read through the record view) to output batches (written into one buffer); the runner
// owns everything around it: connecting, the streams, the durable consumer, raw consume, the
// dead-letter queue, output ids derived from the input's, the split rule, publishes in flight,
// acks, counters, the heartbeat, /healthz and /readyz, shutdown and the one-line fatal start error.
import { hostname } from 'node:os';
import { FlowBatchView, FlowBatchWriter, FlowRecordSchema, toBinary } from '@kappa/contracts';
import type { EncodedBatch, FlowBatch } from '@kappa/contracts';
import { Counter, onShutdown, startObservabilityServer } from '@kappa/observability';
import type { Logger, ObservabilityServer, Registry } from '@kappa/observability';
import { connectBus } from './bus.js';
import type { Bus } from './bus.js';
import type { RawConsumer, RawMessage } from './consumer.js';
import type { NatsAuth, NatsTls, StreamLimits } from './options.js';
import { releasePayload } from './nats-copies.js';
import { settle } from './settle.js';
import type { Settlement } from './settle.js';
import { stageStatus } from './status.js';
import { partitionOfSubject, subjectToken } from './subjects.js';

/** The NATS settings of a stage (busOptionsFromConfig(config) gives them). */
export interface StageBusSettings {
  servers: string[];
  auth?: NatsAuth;
  tls?: NatsTls;
  streams?: StreamLimits;
}

export interface StageInput {
  /** Filter subject, e.g. subjects.allEnriched. */
  subject: string;
  /** Durable consumer shared by the stage's replicas (default: the stage name). */
  durable?: string;
  /** Input batches in the transform at once. */
  maxInFlight?: number;
  /** Redelivery after this long without an ack. */
  ackWaitMs?: number;
  /** Redelivery delay after a failed transform or publish. */
  retryDelayMs?: number;
}

/** One input batch, as the transform sees it. */
export interface StageBatch {
  /** The batch, checked and indexed (see FlowBatchView); valid until the transform returns (the runner then receives another batch into its bytes). */
  readonly view: FlowBatchView;
  readonly subject: string;
  /** The partition the input subject carries (kappa.flow.<hop>.p<k>…), if any. */
  readonly partition: number | undefined;
  /** `<stage>:<input batch id>`: the Nats-Msg-Id of this input's output. */
  readonly outputId: string;
  readonly streamSequence: number;
  readonly deliveryCount: number;
  readonly redelivered: boolean;
  /** When JetStream first stored the input (unix ns). */
  readonly storedNs: bigint;
  /** Resets the input's ack deadline (a long transform). */
  working(): void;
}

/** Where a transform writes: output batches in one buffer, published when it returns. */
export interface StageOutput {
  /**
   * Starts an output batch on `subject` (closing the one before) and returns the writer for its
   * records. Its id is the input's outputId, or `<outputId>:<key>` when one input has several
   * outputs; the runner splits it under max_payload into `<id>/<n>` parts.
   */
  batch(subject: string, key?: string): FlowBatchWriter;
}

export type StageTransform = (input: StageBatch, output: StageOutput) => Promise<void> | void;

export interface StageOptions {
  /** Stage name: heartbeats, metrics, the DLQ subject, the durable name, output ids. */
  stage: string;
  instance: string;
  /** The node in heartbeats (node-local stages); default the host name. */
  node?: string;
  version?: string;
  /** `producer` of the output batches (default: the instance). */
  producer?: string;
  bus: StageBusSettings;
  logger: Logger;
  registry: Registry;
  metricsPort: number;
  metricsHost?: string;
  /** What to consume; a stage without it consumes nothing itself (it uses RunningStage.bus). */
  input?: StageInput;
  transform?: StageTransform;
  /** Readiness beyond the runner's own (connected and consuming): informers synced, Redis up. */
  ready?: () => boolean;
  /** Loss the stage counts itself, for the heartbeat (reason → count). */
  lost?: () => Readonly<Record<string, bigint | number>>;
  /** Input waiting for a stage that consumes through consumers of its own (the joiner's partitions). */
  lag?: () => number;
  /** How this instance runs where that can change (the joiner: its Redis servers), read at every heartbeat for kappa status. */
  features?: () => Readonly<Record<string, string>>;
  /** Records out for a stage whose output is not the bus (a sink stage: what its sinks took). */
  recordsOut?: () => number;
  /** Runs once connected, before consuming: start what the transform needs (a failure is fatal). */
  start?: (stage: RunningStage) => Promise<void>;
  /** Runs at shutdown, after the consumer stopped (in-flight batches done) and before the bus closes. */
  stop?: () => Promise<void>;
  heartbeatMs?: number;
}

export interface RunningStage {
  readonly stage: string;
  readonly bus: Bus;
  readonly metricsPort: number;
  readonly recordsIn: number;
  readonly recordsOut: number;
  /** The input consumer (undefined for a stage without input). */
  readonly consumer: RawConsumer | undefined;
  ready(): boolean;
  /**
   * Publishes batches a stage makes outside an input (the joiner's sweeper), with the same rules;
   * their records count as records out.
   */
  publish(subject: string, parts: readonly EncodedBatch[]): Promise<void>;
  /** publish() for a FlowBatch object (object-model code): encoded once, split by the same rule. */
  publishBatch(subject: string, batch: FlowBatch): Promise<void>;
  /** Counts records a stage handled or published outside the runner's own input (its heartbeat's in/out). */
  countRecords(recordsIn: number, recordsOut: number): void;
  /** Decodes and settles a message of a consumer the stage opened itself, as the runner does its own. */
  settle(message: RawMessage, handle: (view: FlowBatchView) => Promise<void> | void): Promise<Settlement>;
  /** Stops consuming (in-flight batches finish, publish and ack), then the stage's stop, the bus, the server. */
  stop(): Promise<void>;
}

/** A view and a writer for one batch in flight; reused batch after batch. */
interface Slot {
  view: FlowBatchView;
  writer: FlowBatchWriter;
  subjects: string[];
}

class Output implements StageOutput {
  constructor(
    private readonly slot: Slot,
    private readonly outputId: string,
    private readonly header: { producer: string; createdNs: bigint },
    private readonly maxBytes: number,
  ) {}

  batch(subject: string, key?: string): FlowBatchWriter {
    const writer = this.slot.writer;
    writer.open({ batchId: key === undefined ? this.outputId : `${this.outputId}:${key}`, producer: this.header.producer, createdNs: this.header.createdNs }, this.maxBytes);
    this.slot.subjects.push(subject);
    return writer;
  }
}

class Stage implements RunningStage {
  recordsIn = 0;
  recordsOut = 0;
  consumer: RawConsumer | undefined;
  server: ObservabilityServer | undefined;
  private readonly slots: Slot[] = [];
  private stopping: Promise<void> | undefined;
  private readonly startedNs = BigInt(Date.now()) * 1_000_000n;
  private readonly recordsInTotal: Counter<'stage'>;
  private readonly recordsOutTotal: Counter<'stage'>;

  constructor(
    readonly bus: Bus,
    private readonly options: StageOptions,
  ) {
    const make = (name: string, help: string) =>
      (options.registry.getSingleMetric(name) as Counter<'stage'> | undefined) ?? new Counter({ name, help, labelNames: ['stage'], registers: [options.registry] });
    this.recordsInTotal = make('kappa_stage_records_in_total', 'Records in input batches the stage handled');
    this.recordsOutTotal = make('kappa_stage_records_out_total', 'Records the stage published');
  }

  get stage(): string {
    return this.options.stage;
  }

  get metricsPort(): number {
    return this.server?.port ?? 0;
  }

  ready(): boolean {
    if (this.stopping || !this.bus.isOpen()) return false;
    if (this.options.input && !this.consumer?.running) return false;
    return this.options.ready?.() ?? true;
  }

  private takeSlot(): Slot {
    return this.slots.pop() ?? { view: new FlowBatchView(), writer: new FlowBatchWriter(256 * 1024), subjects: [] };
  }

  private returnSlot(slot: Slot): void {
    slot.writer.reset();
    slot.subjects.length = 0;
    this.slots.push(slot);
  }

  async publish(subject: string, parts: readonly EncodedBatch[]): Promise<void> {
    await this.bus.publishParts(subject, parts);
    let records = 0;
    for (const part of parts) records += part.records;
    this.count(0, records);
  }

  async publishBatch(subject: string, batch: FlowBatch): Promise<void> {
    const writer = new FlowBatchWriter();
    writer.open({ batchId: batch.batchId, producer: batch.producer, createdNs: batch.createdNs }, this.bus.messageLimit);
    for (const record of batch.records) writer.recordBytes(toBinary(FlowRecordSchema, record));
    await this.publish(subject, writer.parts());
  }

  countRecords(recordsIn: number, recordsOut: number): void {
    this.count(recordsIn, recordsOut);
  }

  private count(recordsIn: number, recordsOut: number): void {
    this.recordsIn += recordsIn;
    this.recordsOut += recordsOut;
    if (recordsIn > 0) this.recordsInTotal.inc({ stage: this.options.stage }, recordsIn);
    if (recordsOut > 0) this.recordsOutTotal.inc({ stage: this.options.stage }, recordsOut);
  }

  async settle(message: RawMessage, handle: (view: FlowBatchView) => Promise<void> | void): Promise<Settlement> {
    const slot = this.takeSlot();
    try {
      const context = this.bus.settleContext(this.options.stage, this.options.input?.retryDelayMs ?? 1000);
      return await settle(message, context, (bytes) => slot.view.parse(bytes), handle, (view) => view.batchId);
    } finally {
      this.returnSlot(slot);
    }
  }

  /** The runner's own handling of an input message: transform, publish every part, then ack. */
  async handle(message: RawMessage): Promise<void> {
    const slot = this.takeSlot();
    const { stage, transform } = this.options;
    const context = this.bus.settleContext(stage, this.options.input?.retryDelayMs ?? 1000);
    let settlement: Settlement = 'failed';
    try {
      settlement = await settle(
        message,
        context,
        (bytes) => slot.view.parse(bytes),
        async (view) => {
          const outputId = `${stage}:${view.batchId}`;
          const output = new Output(slot, outputId, { producer: this.options.producer ?? this.options.instance, createdNs: view.createdNs }, this.bus.messageLimit);
          await transform?.(
            {
              view,
              subject: message.subject,
              partition: partitionOfSubject(message.subject),
              outputId,
              streamSequence: message.streamSequence,
              deliveryCount: message.deliveryCount,
              redelivered: message.redelivered,
              storedNs: message.storedNs,
              working: () => message.working(),
            },
            output,
          );
          const parts = slot.writer.parts();
          // Every output of the input in flight at once; the input is acked after all are stored.
          await Promise.all(parts.map((part) => this.bus.publishBytes(slot.subjects[part.batch]!, part.bytes, part.id)));
          let records = 0;
          for (const part of parts) records += part.records;
          this.count(view.length, records);
        },
        (view) => view.batchId,
      );
    } finally {
      // Settled: every publish of the input's output and of the input itself (to the DLQ) was
      // confirmed, and the transform has returned (the view is valid only until then), so
      // nothing reads the input's bytes or the output buffer any more. After a failure a publish
      // may still be queued in nats.js (a connection that is down keeps it for the reconnect) and
      // written later: then neither is reused, lest it go out with another batch's bytes.
      if (settlement !== 'failed') {
        this.returnSlot(slot);
        releasePayload(message.bytes);
      }
    }
  }

  status() {
    return stageStatus({
      stage: this.options.stage,
      instance: this.options.instance,
      node: this.options.node ?? hostname(),
      startedNs: this.startedNs,
      ready: this.ready(),
      recordsIn: this.recordsIn,
      recordsOut: this.options.recordsOut?.() ?? this.recordsOut,
      dlq: this.bus.deadLettered(this.options.stage),
      lag: this.options.lag?.() ?? this.consumer?.latestLag ?? 0,
      lost: this.options.lost?.() ?? {},
      ...(this.options.features !== undefined ? { features: this.options.features() } : {}),
      ...(this.options.version !== undefined ? { version: this.options.version } : {}),
    });
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.consumer) await this.bus.stopConsumer(this.consumer);
      try {
        await this.options.stop?.();
      } finally {
        await this.bus.close();
        await this.server?.close();
      }
    })();
    return this.stopping;
  }
}

/**
 * Starts a stage in this process (tests call it; main.ts calls runStage). Throws what went wrong
 * at start (BusConnectError, a port in use, the stage's own start), after closing what it opened.
 */
export async function startStage(options: StageOptions): Promise<RunningStage> {
  const { logger } = options;
  const bus = await connectBus({ ...options.bus, name: `kappa-${options.stage}-${subjectToken(options.instance)}`, logger, registry: options.registry });
  const stage = new Stage(bus, options);
  try {
    await bus.ensureStreams();
    stage.server = await startObservabilityServer(options.registry, { healthy: () => true, ready: () => stage.ready() }, { port: options.metricsPort, ...(options.metricsHost !== undefined ? { host: options.metricsHost } : {}) });
    await options.start?.(stage);
    const input = options.input;
    if (input) {
      stage.consumer = await bus.consume({
        subject: input.subject,
        durable: input.durable ?? options.stage,
        ...(input.maxInFlight !== undefined ? { maxInFlight: input.maxInFlight } : {}),
        ...(input.ackWaitMs !== undefined ? { ackWaitMs: input.ackWaitMs } : {}),
        handler: (message) => stage.handle(message),
      });
    }
    bus.startHeartbeat(() => stage.status(), options.heartbeatMs ?? 2000);
  } catch (error) {
    await stage.stop().catch(() => undefined);
    throw error;
  }
  logger.info({ stage: options.stage, input: options.input?.subject, durable: stage.consumer?.durable, metricsPort: stage.metricsPort, instance: options.instance }, 'ready');
  return stage;
}

/**
 * main.ts's one call: starts the stage; a failure to start is one line on stderr
 * (`kappa-<stage>: <what to do>`) and exit 1, never a stack trace; SIGTERM/SIGINT stop it
 * gracefully (in-flight batches finish and are acked).
 */
export async function runStage(options: StageOptions): Promise<RunningStage> {
  let stage: RunningStage;
  try {
    stage = await startStage(options);
  } catch (error) {
    exitOnStartFailure(options.stage, error);
  }
  onShutdown(options.logger, () => stage.stop());
  return stage;
}

/** The one-line fatal start error every kappa service prints. */
export function exitOnStartFailure(stage: string, error: unknown): never {
  process.stderr.write(`kappa-${stage}: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
