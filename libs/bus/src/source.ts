// The source variant of the stage runner, for capture: no input consumer; the source publishes
// what it makes (ids of its own, split under max_payload by the same rule), and the runner owns
// connecting, the streams, the heartbeat, /healthz and /readyz, shutdown and the one-line fatal
// start error. Without bus settings (capture --stdout) only the server and the signals remain.
import { hostname } from 'node:os';
import { encodeFlowBatch } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import { onShutdown, startObservabilityServer } from '@kappa/observability';
import type { Logger, ObservabilityServer, Registry } from '@kappa/observability';
import { connectBus } from './bus.js';
import type { Bus } from './bus.js';
import type { StageBusSettings } from './stage.js';
import { exitOnStartFailure } from './stage.js';
import { stageStatus } from './status.js';
import { subjectToken } from './subjects.js';

export interface SourceOptions {
  stage: string;
  instance: string;
  node?: string;
  version?: string;
  /** undefined: no NATS (e.g. capture --stdout); publishing is then an error. */
  bus: StageBusSettings | undefined;
  logger: Logger;
  registry: Registry;
  metricsPort: number;
  metricsHost?: string;
  ready?: () => boolean;
  /** Loss the source counts itself, for the heartbeat (reason → count). */
  lost?: () => Readonly<Record<string, bigint | number>>;
  /** What each optional feature runs on here (capture: the kernel hook), in every heartbeat. */
  features?: Readonly<Record<string, string>>;
  /** Runs at shutdown before the bus closes (capture: detach, last drain, send). */
  stop?: () => Promise<void>;
  heartbeatMs?: number;
}

export interface RunningSource {
  readonly bus: Bus | undefined;
  readonly metricsPort: number;
  readonly recordsOut: number;
  /** Stores an encoded FlowBatch of `records` records under `id` (split into `<id>/<n>` if too large). */
  publish(subject: string, bytes: Uint8Array, id: string, records: number): Promise<void>;
  /** Stores a FlowBatch object under its batchId. */
  publishBatch(subject: string, batch: FlowBatch): Promise<void>;
  stop(): Promise<void>;
}

class Source implements RunningSource {
  recordsOut = 0;
  server: ObservabilityServer | undefined;
  private stopping: Promise<void> | undefined;
  private readonly startedNs = BigInt(Date.now()) * 1_000_000n;

  constructor(
    readonly bus: Bus | undefined,
    private readonly options: SourceOptions,
  ) {}

  get metricsPort(): number {
    return this.server?.port ?? 0;
  }

  ready(): boolean {
    return !this.stopping && (this.bus?.isOpen() ?? true) && (this.options.ready?.() ?? true);
  }

  async publish(subject: string, bytes: Uint8Array, id: string, records: number): Promise<void> {
    if (!this.bus) throw new Error(`${this.options.stage} has no NATS connection to publish on ${subject}`);
    await this.bus.publishEncoded(subject, bytes, id);
    this.recordsOut += records;
  }

  publishBatch(subject: string, batch: FlowBatch): Promise<void> {
    return this.publish(subject, encodeFlowBatch(batch), batch.batchId, batch.records.length);
  }

  status() {
    return stageStatus({
      stage: this.options.stage,
      instance: this.options.instance,
      node: this.options.node ?? hostname(),
      startedNs: this.startedNs,
      ready: this.ready(),
      recordsOut: this.recordsOut,
      lost: this.options.lost?.() ?? {},
      ...(this.options.features !== undefined ? { features: this.options.features } : {}),
      ...(this.options.version !== undefined ? { version: this.options.version } : {}),
    });
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.options.stop?.();
      } finally {
        await this.bus?.close();
        await this.server?.close();
      }
    })();
    return this.stopping;
  }
}

/** Starts a source in this process; throws what went wrong at start, after closing what it opened. */
export async function startSource(options: SourceOptions): Promise<RunningSource> {
  const bus = options.bus
    ? await connectBus({ ...options.bus, name: `kappa-${options.stage}-${subjectToken(options.instance)}`, logger: options.logger, registry: options.registry })
    : undefined;
  const source = new Source(bus, options);
  try {
    await bus?.ensureStreams();
    source.server = await startObservabilityServer(options.registry, { healthy: () => true, ready: () => source.ready() }, { port: options.metricsPort, ...(options.metricsHost !== undefined ? { host: options.metricsHost } : {}) });
    bus?.startHeartbeat(() => source.status(), options.heartbeatMs ?? 2000);
  } catch (error) {
    await bus?.close().catch(() => undefined);
    await source.server?.close();
    throw error;
  }
  return source;
}

/**
 * main.ts's call for a source: a failure to start is one line on stderr and exit 1 (after
 * `onStartFailure`, e.g. capture detaching what it attached); SIGTERM/SIGINT run `stop`, then close.
 */
export async function runSource(options: SourceOptions & { onStartFailure?: () => void }): Promise<RunningSource> {
  let source: RunningSource;
  try {
    source = await startSource(options);
  } catch (error) {
    options.onStartFailure?.();
    exitOnStartFailure(options.stage, error);
  }
  onShutdown(options.logger, () => source.stop());
  return source;
}
