// kappa-k8s-tagger: tags both ends of every flow with Kubernetes pods, services, workloads and
// nodes (kappa.flow.enriched.* → kappa.flow.tagged) and serves its index over gRPC.
import { loadConfigOrExit } from '@kappa/config';
import { busOptionsFromConfig } from '@kappa/bus';
import { createLogger, createRegistry, onShutdown, startObservabilityServer } from '@kappa/observability';
import type { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig, NoClusterConfigured } from './cluster-watch.js';
import { taggerOptions } from './config.js';
import { STAGE, TaggerService } from './tagger-service.js';

const config = loadConfigOrExit({
  command: 'kappa-k8s-tagger',
  summary: 'Tags both ends of every flow with Kubernetes pods, services, workloads and nodes, and serves the index over gRPC (kappa.tagger.v1.KubeTags).',
  options: taggerOptions,
});
const logger = createLogger(STAGE, config.logLevel);
const registry = createRegistry(STAGE);

let kubeConfig: KubeConfig | undefined;
try {
  kubeConfig = loadKubeConfig(config.kubeconfig, process.env);
} catch (error) {
  if (!(error instanceof NoClusterConfigured)) {
    logger.fatal({ err: error }, error instanceof Error ? error.message : String(error));
    process.exit(1);
  }
  kubeConfig = undefined;
}

const tagger = new TaggerService({
  kubeConfig,
  clusterId: config.clusterId,
  deletedGraceMs: config.deletedGrace,
  deletedRetentionMs: config.deletedRetention,
  holdMaxMs: config.holdMax,
  podCidrs: config.podCidr,
  grpc: {
    port: config.grpcPort,
    host: config.grpcHost,
    security: { certFile: config.grpcTlsCert, keyFile: config.grpcTlsKey, clientCaFile: config.grpcTlsClientCa, tokenFile: config.grpcTokenFile },
  },
  bus: busOptionsFromConfig(config),
  instance: config.instance,
  maxInFlight: config.maxInFlight,
  logger,
  registry,
});

const health = await startObservabilityServer(registry, { healthy: () => true, ready: () => tagger.ready() }, { port: config.metricsPort });
onShutdown(logger, async () => {
  await tagger.stop();
  await health.close();
});
try {
  await tagger.start();
} catch (error) {
  logger.fatal({ err: error }, error instanceof Error ? error.message : String(error));
  process.exit(1);
}
logger.info({ grpcPort: tagger.grpcPort, metricsPort: health.port, ready: tagger.ready() }, 'k8s-tagger started');
