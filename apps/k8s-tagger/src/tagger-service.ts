// The k8s-tagger assembled: saved state and cluster watch → index, the KubeTags gRPC service, and
// the bus consumer that tags kappa.flow.enriched.* into kappa.flow.tagged — started only once
// every resource has been listed in full. main.ts only adds process concerns (config, signals,
// the health server); tests start it in-process.
import { hostname } from 'node:os';
import { connectBus, StateStore, subjects } from '@kappa/bus';
import type { Bus, BatchConsumer, NatsAuth, NatsTls, StreamLimits } from '@kappa/bus';
import { create, StageStatusSchema } from '@kappa/contracts';
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
import { emptyStats, tagBatch } from './tagging.js';
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
  bus?: { servers: string[]; auth?: NatsAuth; tls?: NatsTls; streams?: StreamLimits } | undefined;
  instance: string;
  maxInFlight?: number;
  logger: Logger;
  registry: Registry;
  /** Informer restart backoff (tests use short ones). */
  baseBackoffMs?: number;
  /** Items per list page. */
  pageSize?: number;
}

export class TaggerService implements Tagger {
  readonly index: KubeIndex | undefined;
  private clusterWatch: ClusterWatch | undefined;
  private grpcServer: KubeTagsServer | undefined;
  private bus: Bus | undefined;
  private consumer: BatchConsumer | undefined;
  private state: StateStore | undefined;
  private consuming: Promise<void> | undefined;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private readonly startedNs = BigInt(Date.now()) * 1_000_000n;
  private recordsIn = 0n;
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
    this.stateFailures = new Counter({ name: 'kappa_tagger_state_write_failures_total', help: 'Saves of deleted-object state to NATS that failed (that object is forgotten if the tagger restarts)', registers: [options.registry] });
  }

  clusterId(): number {
    if (this.options.clusterId !== undefined) return this.options.clusterId;
    const uid = this.index?.clusterUid;
    return uid ? clusterIdFromUid(uid) : 0;
  }

  get grpcPort(): number {
    return this.grpcServer?.port ?? 0;
  }

  /** Every resource listed in full (or no cluster) and, with a bus, the consumer running. */
  ready(): boolean {
    const clusterReady = this.clusterWatch ? this.clusterWatch.isSynced : true;
    const busReady = this.options.bus ? this.consumer !== undefined && this.bus !== undefined && !this.bus.nc.isClosed() : true;
    return clusterReady && busReady;
  }

  get informersSynced(): boolean {
    return this.clusterWatch?.isSynced ?? true;
  }

  /** Resolves once the consumer runs (after the first full sync), or at once without a bus. */
  async whenConsuming(): Promise<void> {
    await this.consuming;
  }

  /**
   * Connects to NATS (and loads the saved state), starts watching the cluster and the gRPC
   * service, and returns; the consumer starts by itself once every resource is listed.
   */
  async start(): Promise<void> {
    const { logger } = this.options;
    if (this.options.bus) {
      this.bus = await connectBus({ ...this.options.bus, name: `kappa-${STAGE}`, logger, registry: this.options.registry });
      await this.bus.ensureStreams();
      if (this.index) await this.loadState(this.bus, this.index);
    }
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
    const synced = this.clusterWatch?.synced ?? Promise.resolve();
    this.consuming = synced.then(async () => {
      if (this.stopped) return;
      const ended = this.index?.endUnconfirmed() ?? 0;
      logger.info({ clusterId: this.clusterId(), endedWhileAway: ended }, 'every resource listed');
      if (this.bus) await this.startConsumer(this.bus);
    });
    this.consuming.catch((error: unknown) => logger.fatal({ err: error }, 'cannot start consuming'));
  }

  private async startConsumer(bus: Bus): Promise<void> {
    const holdMaxNs = BigInt(this.options.holdMaxMs ?? 10_000) * 1_000_000n;
    this.consumer = await bus.consumeBatches({
      stage: STAGE,
      subject: subjects.allEnriched,
      maxInFlight: this.options.maxInFlight ?? 4,
      handler: async (batch, context) => {
        const stats = emptyStats();
        try {
          const hold = { nowNs: BigInt(Date.now()) * 1_000_000n, deadlineNs: context.storedNs + holdMaxNs, retryDelayMs: 500 };
          const tagged = tagBatch(this, batch, this.options.instance, stats, hold);
          await bus.publishBatch(subjects.tagged, tagged);
        } finally {
          this.metrics.recordTagged(stats);
        }
        this.recordsIn += BigInt(stats.records);
      },
    });
    if (this.stopped) {
      await this.consumer.stop();
      return;
    }
    this.startHeartbeat(bus, this.consumer);
    this.options.logger.info({ subject: subjects.allEnriched, durable: STAGE }, 'consuming enriched flows');
  }

  /** Saved pods and Services into the index, and every later change saved (deleted ones matter:
   *  a restarted tagger would otherwise tag late flows of recently deleted pods `external`). */
  private async loadState(bus: Bus, index: KubeIndex): Promise<void> {
    const retentionMs = Math.max(this.options.deletedRetentionMs ?? 3_600_000, this.options.deletedGraceMs);
    // Running objects are written again well within the age limit (refresh below).
    const maxAgeMs = Math.max(6 * 3_600_000, 2 * retentionMs);
    const state = new StateStore(bus, { stream: STATE_STREAM, subjectPrefix: STATE_SUBJECT_PREFIX, maxAgeMs });
    await state.open();
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

  /** kappa.status.k8s-tagger.<instance> for `kappa status`. */
  private startHeartbeat(bus: Bus, consumer: BatchConsumer): void {
    bus.startHeartbeat(() =>
      create(StageStatusSchema, {
        stage: STAGE,
        instance: this.options.instance,
        node: hostname(),
        startedNs: this.startedNs,
        sentNs: BigInt(Date.now()) * 1_000_000n,
        ready: this.ready(),
        recordsIn: this.recordsIn,
        recordsOut: this.recordsIn,
        lag: BigInt(consumer.latestLag),
        dlq: BigInt(bus.deadLettered()),
      }),
    );
  }

  /** Graceful: in-flight batches finish and are acked, state writes land, then connections close. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    await this.consumer?.stop();
    await Promise.allSettled([...this.stateWrites]);
    await this.bus?.close();
    await this.grpcServer?.stop();
    await this.clusterWatch?.stop();
  }
}
