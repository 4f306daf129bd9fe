// The k8s-tagger assembled: cluster watch → index, the KubeTags gRPC service, and the bus
// consumer that tags kappa.flow.enriched.* into kappa.flow.tagged. main.ts only adds process
// concerns (config, signals, the health server); tests start it in-process.
import { hostname } from 'node:os';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus, BatchConsumer, NatsAuth, NatsTls, StreamLimits } from '@kappa/bus';
import { create, StageStatusSchema } from '@kappa/contracts';
import type { GrpcServerSecurity } from '@kappa/contracts';
import type { Logger, Registry } from '@kappa/observability';
import type { KubeConfig } from '@kubernetes/client-node';
import { ClusterWatch } from './cluster-watch.js';
import { clusterIdFromUid, KubeIndex } from './kube-index.js';
import { startKubeTagsServer } from './grpc-server.js';
import type { KubeTagsServer } from './grpc-server.js';
import { taggerMetrics } from './metrics.js';
import type { TaggerMetrics } from './metrics.js';
import { emptyStats, tagBatch } from './tagging.js';
import type { Tagger } from './tagging.js';

export const STAGE = 'k8s-tagger';

export interface TaggerServiceOptions {
  /** undefined: no cluster; node names only. */
  kubeConfig: KubeConfig | undefined;
  clusterId?: number | undefined;
  deletedGraceMs: number;
  grpc: { port: number; host?: string; security?: GrpcServerSecurity };
  bus?: { servers: string[]; auth?: NatsAuth; tls?: NatsTls; streams?: StreamLimits } | undefined;
  instance: string;
  maxInFlight?: number;
  logger: Logger;
  registry: Registry;
  /** Informer restart backoff (tests use short ones). */
  baseBackoffMs?: number;
}

export class TaggerService implements Tagger {
  readonly index: KubeIndex | undefined;
  private clusterWatch: ClusterWatch | undefined;
  private grpcServer: KubeTagsServer | undefined;
  private bus: Bus | undefined;
  private consumer: BatchConsumer | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private readonly startedNs = BigInt(Date.now()) * 1_000_000n;
  private recordsIn = 0n;
  readonly metrics: TaggerMetrics;

  constructor(private readonly options: TaggerServiceOptions) {
    this.index = options.kubeConfig ? new KubeIndex({ deletedGraceMs: options.deletedGraceMs }) : undefined;
    this.metrics = taggerMetrics(options.registry, () => this.index);
  }

  clusterId(): number {
    if (this.options.clusterId !== undefined) return this.options.clusterId;
    const uid = this.index?.clusterUid;
    return uid ? clusterIdFromUid(uid) : 0;
  }

  get grpcPort(): number {
    return this.grpcServer?.port ?? 0;
  }

  /** Informers synced (or no cluster) and, when a bus is configured, the consumer running. */
  ready(): boolean {
    const clusterReady = this.clusterWatch ? this.clusterWatch.synced : true;
    const busReady = this.options.bus ? this.consumer !== undefined && this.bus !== undefined && !this.bus.nc.isClosed() : true;
    return clusterReady && busReady;
  }

  get informersSynced(): boolean {
    return this.clusterWatch?.synced ?? true;
  }

  async start(): Promise<void> {
    const { logger } = this.options;
    if (this.options.kubeConfig && this.index) {
      this.clusterWatch = new ClusterWatch({
        kubeConfig: this.options.kubeConfig,
        index: this.index,
        logger,
        ...(this.options.baseBackoffMs !== undefined ? { baseBackoffMs: this.options.baseBackoffMs } : {}),
        hooks: { onRestart: (resource) => this.metrics.informerRestart(resource) },
      });
      await this.clusterWatch.start();
      const graceMs = this.options.deletedGraceMs;
      this.pruneTimer = setInterval(() => this.index?.prune(), Math.max(1000, Math.min(graceMs / 4, 30_000)));
      this.pruneTimer.unref();
      logger.info({ synced: this.clusterWatch.synced, clusterId: this.clusterId() }, 'watching the Kubernetes API');
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
    if (this.options.bus) {
      this.bus = await connectBus({ ...this.options.bus, name: `kappa-${STAGE}`, logger, registry: this.options.registry });
      await this.bus.ensureStreams();
      const bus = this.bus;
      this.consumer = await bus.consumeBatches({
        stage: STAGE,
        subject: subjects.allEnriched,
        maxInFlight: this.options.maxInFlight ?? 4,
        handler: async (batch) => {
          const stats = emptyStats();
          const tagged = tagBatch(this, batch, this.options.instance, stats);
          await bus.publishBatch(subjects.tagged, tagged);
          this.metrics.recordTagged(stats);
          this.recordsIn += BigInt(stats.records);
        },
      });
      this.startHeartbeat(bus, this.consumer);
      logger.info({ subject: subjects.allEnriched, durable: STAGE }, 'consuming enriched flows');
    }
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

  /** Graceful: in-flight batches finish and are acked, then the connections close. */
  async stop(): Promise<void> {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await this.consumer?.stop();
    await this.bus?.close();
    await this.grpcServer?.stop();
    await this.clusterWatch?.stop();
  }
}
