// The k8s-tagger assembled: cluster watch → index, the KubeTags gRPC service, and the stage that
// tags kappa.flow.enriched.p<k>.* into kappa.flow.tagged.p<k> (taggerStage). main.ts runs the
// stage; tests start the service in-process, with or without the bus.
import { startStage, subjects } from '@kappa/bus';
import type { RunningStage, StageBusSettings, StageOptions } from '@kappa/bus';
import type { GrpcServerSecurity } from '@kappa/contracts';
import type { Logger, Registry } from '@kappa/observability';
import type { KubeConfig } from '@kubernetes/client-node';
import { ClusterWatch } from './cluster-watch.js';
import { clusterIdFromUid, KubeIndex } from './kube-index.js';
import { startKubeTagsServer } from './grpc-server.js';
import type { KubeTagsServer } from './grpc-server.js';
import { taggerMetrics } from './metrics.js';
import type { TaggerMetrics } from './metrics.js';
import { tagTransform } from './tagging.js';
import type { Tagger } from './tagging.js';

export const STAGE = 'k8s-tagger';

export interface TaggerServiceOptions {
  /** undefined: no cluster; node names only. */
  kubeConfig: KubeConfig | undefined;
  clusterId?: number | undefined;
  deletedGraceMs: number;
  grpc: { port: number; host?: string; security?: GrpcServerSecurity };
  /** Set: the service also runs the tagging stage on the bus (tests; main.ts runs taggerStage). */
  bus?: StageBusSettings | undefined;
  instance: string;
  maxInFlight?: number;
  /** The cluster-wide partition count (only for input without a partition token). */
  partitions?: number;
  logger: Logger;
  registry: Registry;
  /** Informer restart backoff (tests use short ones). */
  baseBackoffMs?: number;
}

export class TaggerService implements Tagger {
  readonly index: KubeIndex | undefined;
  private clusterWatch: ClusterWatch | undefined;
  private grpcServer: KubeTagsServer | undefined;
  private stage: RunningStage | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
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

  /** Informers synced (or no cluster) and, when this service runs the stage, the stage ready. */
  ready(): boolean {
    const clusterReady = this.clusterWatch ? this.clusterWatch.synced : true;
    return clusterReady && (this.stage?.ready() ?? this.options.bus === undefined);
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
      this.stage = await startStage({ ...taggerStage(this, { bus: this.options.bus, metricsPort: 0 }), start: undefined, stop: undefined });
    }
  }

  /** Graceful: in-flight batches finish and are acked, then the connections close. */
  async stop(): Promise<void> {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    await this.stage?.stop();
    await this.grpcServer?.stop();
    await this.clusterWatch?.stop();
  }

  /** The options the service was made with (taggerStage reads them). */
  get settings(): TaggerServiceOptions {
    return this.options;
  }
}

/**
 * The tagging stage around a TaggerService: consumes every node's kappa.flow.enriched.p<k>.*,
 * writes each input batch tagged to kappa.flow.tagged.p<k> (same k, id `k8s-tagger:<input id>`).
 * The service (cluster watch, gRPC) starts before consuming and stops after.
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
    transform: tagTransform(tagger, settings.partitions ?? 16),
    ready: () => tagger.informersSynced,
    start: () => tagger.start(),
    stop: () => tagger.stop(),
  };
}
