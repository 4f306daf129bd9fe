// The k8s-tagger assembled: saved state and cluster watch → index, the KubeTags gRPC service, and
// the stage that tags kappa.flow.enriched.p<k>.* into kappa.flow.tagged.p<k> (taggerStage) —
// which consumes nothing until every resource has been listed in full. main.ts runs the stage;
// tests start the service in-process, with or without the bus.
import { startStage, subjects } from '@kappa/bus';
import type { Bus, RunningStage, StageBusSettings, StageOptions, StateStore } from '@kappa/bus';
import type { GrpcServerSecurity } from '@kappa/contracts';
import { Counter } from '@kappa/observability';
import type { Logger, Registry } from '@kappa/observability';
import type { KubeConfig } from '@kubernetes/client-node';
import { ClusterWatch } from './cluster-watch.js';
import { clusterIdFromUid, KubeIndex } from './kube-index.js';
import type { SavedObject } from './kube-index.js';
import { startKubeTagsServer } from './grpc-server.js';
import type { KubeTagsServer } from './grpc-server.js';
import { taggerMetrics } from './metrics.js';
import type { TaggerMetrics } from './metrics.js';
import { tagTransform } from './tagging.js';
import type { Tagger } from './tagging.js';

export const STAGE = 'k8s-tagger';
/** Where the tagger keeps what it knows of deleted pods and Services across restarts. */
export const STATE_STREAM = 'KAPPA_TAGGER_STATE';
export const STATE_SUBJECT_PREFIX = 'kappa.state.k8s-tagger';

export interface TaggerServiceOptions {
  /** undefined: no cluster; node names only. */
  kubeConfig: KubeConfig | undefined;
  clusterId?: number | undefined;
  /** How long (in flow time) a deleted pod or Service stays known after its end. */
  deletedGraceMs: number;
  /** Wall-clock bound on keeping deleted objects (default 1 h, the flow stream's age limit). */
  deletedRetentionMs?: number;
  /** How long a batch whose pod is not known yet is held, from its arrival (default 10 s). */
  holdMaxMs?: number;
  /** Pod networks besides the nodes' podCIDRs. */
  podCidrs?: readonly string[];
  grpc: { port: number; host?: string; security?: GrpcServerSecurity };
  /** Set: the service also runs the tagging stage on the bus (tests; main.ts runs taggerStage). */
  bus?: StageBusSettings | undefined;
  instance: string;
  maxInFlight?: number;
  /** The cluster-wide partition count (only for input without a partition token). */
  partitions?: number;
  logger: Logger;
  registry: Registry;
  /** List/watch retry backoff (tests use short ones). */
  baseBackoffMs?: number;
  /** Items per list page. */
  pageSize?: number;
}

/** Stopped before the first full list: nothing may be consumed. */
class StoppedBeforeSync extends Error {
  override readonly name = 'StoppedBeforeSync';
  constructor() {
    super('stopped before every resource was listed');
  }
}

export class TaggerService implements Tagger {
  readonly index: KubeIndex | undefined;
  private clusterWatch: ClusterWatch | undefined;
  private grpcServer: KubeTagsServer | undefined;
  private stage: RunningStage | undefined;
  private state: StateStore | undefined;
  private prepared: Promise<void> | undefined;
  private consuming: Promise<void> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private markStopped!: () => void;
  private readonly stoppedSignal = new Promise<void>((resolve) => (this.markStopped = resolve));
  private readonly stateWrites = new Set<Promise<void>>();
  private readonly stateFailures: Counter;
  readonly metrics: TaggerMetrics;

  constructor(private readonly options: TaggerServiceOptions) {
    this.index = options.kubeConfig
      ? new KubeIndex({
          deletedGraceMs: options.deletedGraceMs,
          ...(options.deletedRetentionMs !== undefined ? { deletedRetentionMs: options.deletedRetentionMs } : {}),
          ...(options.podCidrs ? { podCidrs: options.podCidrs } : {}),
        })
      : undefined;
    this.metrics = taggerMetrics(options.registry, () => this.index);
    this.stateFailures = new Counter({ name: 'kappa_tagger_state_write_failures_total', help: 'Saves of pod and Service state to NATS that failed (that object is forgotten if the tagger restarts)', registers: [options.registry] });
  }

  clusterId(): number {
    if (this.options.clusterId !== undefined) return this.options.clusterId;
    const uid = this.index?.clusterUid;
    return uid ? clusterIdFromUid(uid) : 0;
  }

  get grpcPort(): number {
    return this.grpcServer?.port ?? 0;
  }

  /** Every resource listed in full (or no cluster) and, when this service runs the stage, the stage ready. */
  ready(): boolean {
    return this.informersSynced && (this.stage?.ready() ?? this.options.bus === undefined);
  }

  get informersSynced(): boolean {
    return this.clusterWatch?.isSynced ?? true;
  }

  /** The options the service was made with (taggerStage reads them). */
  get settings(): TaggerServiceOptions {
    return this.options;
  }

  /**
   * In-process start (tests): the watch and gRPC now; with a bus, the stage too, which consumes
   * once every resource is listed (whenConsuming()).
   */
  async start(): Promise<void> {
    await this.prepare();
    if (this.options.bus) {
      this.consuming = startStage({ ...taggerStage(this, { bus: this.options.bus, metricsPort: 0 }), stop: undefined }).then((stage) => {
        this.stage = stage;
      });
      this.consuming.catch((error: unknown) => {
        if (!(error instanceof StoppedBeforeSync)) this.options.logger.error({ err: error }, 'the tagging stage did not start');
      });
    } else {
      this.consuming = this.whenSynced().catch(() => undefined);
    }
  }

  /** Resolves once the stage consumes (or, without a bus, once every resource is listed). */
  async whenConsuming(): Promise<void> {
    await this.consuming;
  }

  /** Starts watching the cluster and serving KubeTags (once). */
  prepare(): Promise<void> {
    this.prepared ??= this.startWatchAndGrpc();
    return this.prepared;
  }

  private async startWatchAndGrpc(): Promise<void> {
    const { logger } = this.options;
    if (this.options.kubeConfig && this.index) {
      const index = this.index;
      this.clusterWatch = new ClusterWatch({
        kubeConfig: this.options.kubeConfig,
        index,
        logger,
        ...(this.options.baseBackoffMs !== undefined ? { baseBackoffMs: this.options.baseBackoffMs } : {}),
        ...(this.options.pageSize !== undefined ? { pageSize: this.options.pageSize } : {}),
        hooks: { onRestart: (resource) => this.metrics.informerRestart(resource) },
      });
      this.clusterWatch.start();
      this.every(Math.max(1000, Math.min(this.options.deletedGraceMs / 4, 30_000)), () => index.prune());
      logger.info({ clusterId: this.clusterId() }, 'watching the Kubernetes API; consuming starts once every resource is listed');
    } else {
      logger.warn('no Kubernetes cluster configured (no --kubeconfig, not in a pod): tagging node names only');
    }
    this.grpcServer = await startKubeTagsServer(() => this.index, {
      port: this.options.grpc.port,
      ...(this.options.grpc.host !== undefined ? { host: this.options.grpc.host } : {}),
      onLookup: (found) => this.metrics.grpcLookup(found),
      ...(this.options.grpc.security !== undefined ? { security: this.options.grpc.security } : {}),
      logger,
    });
    logger.info({ port: this.grpcServer.port }, 'KubeTags gRPC service listening');
  }

  /** Before the stage consumes: the saved state read back, then every resource listed in full. */
  async beforeConsuming(bus: Bus): Promise<void> {
    await this.prepare();
    if (this.index) await this.loadState(bus, this.index);
    await this.whenSynced();
  }

  /** Every resource listed in full; what was saved as running but is gone ends now. */
  private async whenSynced(): Promise<void> {
    if (this.clusterWatch) await Promise.race([this.clusterWatch.synced, this.stoppedSignal]);
    if (this.stopped) throw new StoppedBeforeSync();
    const ended = this.index?.endUnconfirmed() ?? 0;
    this.options.logger.info({ clusterId: this.clusterId(), endedWhileAway: ended }, 'every resource listed');
  }

  /** Saved pods and Services into the index, and every later change saved (deleted ones matter:
   *  a restarted tagger would otherwise tag late flows of recently deleted pods `external`). */
  private async loadState(bus: Bus, index: KubeIndex): Promise<void> {
    if (this.state) return;
    const retentionMs = Math.max(this.options.deletedRetentionMs ?? 3_600_000, this.options.deletedGraceMs);
    // Running objects are written again well within the age limit (refresh below).
    const maxAgeMs = Math.max(6 * 3_600_000, 2 * retentionMs);
    const state = await bus.openStateStore({ stream: STATE_STREAM, subjectPrefix: STATE_SUBJECT_PREFIX, maxAgeMs });
    const saved: SavedObject[] = [];
    for (const value of (await state.load()).values()) {
      try {
        saved.push(JSON.parse(Buffer.from(value).toString('utf8')) as SavedObject);
      } catch {
        // An unreadable entry is skipped; it is rewritten when that object changes.
      }
    }
    const restored = index.restore(saved);
    this.options.logger.info({ restored }, 'saved pods and Services loaded');
    this.state = state;
    index.saver = (key, object) => this.saveState(key, object);
    // What changed before the state was open (the first list may have begun) is saved now.
    for (const [key, object] of index.savedObjects()) this.saveState(key, object);
    this.every(maxAgeMs / 4, () => {
      for (const [key, object] of index.savedObjects()) this.saveState(key, object);
    });
  }

  private saveState(key: string, object: SavedObject): void {
    const state = this.state;
    if (!state || this.stopped) return;
    const write: Promise<void> = state.put(key, Buffer.from(JSON.stringify(object))).then(
      () => undefined,
      (error: unknown) => {
        this.stateFailures.inc();
        this.options.logger.warn({ err: error, key }, 'cannot save tagger state to NATS');
      },
    );
    this.stateWrites.add(write);
    void write.finally(() => this.stateWrites.delete(write));
  }

  private every(ms: number, task: () => void): void {
    const timer = setInterval(task, ms);
    timer.unref();
    this.timers.push(timer);
  }

  /** Graceful: in-flight batches finish and are acked, state writes land, then connections close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.markStopped();
    for (const timer of this.timers) clearInterval(timer);
    await this.consuming?.catch(() => undefined);
    await this.stage?.stop();
    await Promise.allSettled([...this.stateWrites]);
    await this.grpcServer?.stop();
    await this.clusterWatch?.stop();
  }
}

/**
 * The tagging stage around a TaggerService: consumes every node's kappa.flow.enriched.p<k>.*,
 * writes each input batch tagged to kappa.flow.tagged.p<k> (same k, id `k8s-tagger:<input id>`).
 * The service (saved state, cluster watch, gRPC) starts before consuming, and consuming waits
 * for every resource to be listed in full; the service stops after.
 */
export function taggerStage(tagger: TaggerService, process: { bus: StageBusSettings; metricsPort: number; metricsHost?: string }): StageOptions {
  const settings = tagger.settings;
  return {
    stage: STAGE,
    instance: settings.instance,
    bus: process.bus,
    logger: settings.logger,
    registry: settings.registry,
    metricsPort: process.metricsPort,
    ...(process.metricsHost !== undefined ? { metricsHost: process.metricsHost } : {}),
    input: { subject: subjects.allEnriched, maxInFlight: settings.maxInFlight ?? 4 },
    transform: tagTransform(tagger, settings.partitions ?? 16, settings.holdMaxMs ?? 10_000),
    ready: () => tagger.informersSynced,
    start: (stage) => tagger.beforeConsuming(stage.bus),
    stop: () => tagger.stop(),
  };
}
