// kappa-k8s-tagger: tags both ends of every flow with Kubernetes pods, services, workloads and
// nodes (kappa.flow.enriched.p<k>.* → kappa.flow.tagged.p<k>) and serves its index over gRPC.
// Wiring only.
import { busOptionsFromConfig, exitOnStartFailure, runStage } from '@kappa/bus';
import { loadConfigOrExit } from '@kappa/config';
import { createLogger, createRegistry } from '@kappa/observability';
import type { KubeConfig } from '@kubernetes/client-node';
import { loadKubeConfig, NoClusterConfigured } from './cluster-watch.js';
import { taggerOptions } from './config.js';
import { STAGE, TaggerService, taggerStage } from './tagger-service.js';

const config = loadConfigOrExit({
  command: 'kappa-k8s-tagger',
  summary: 'Tags both ends of every flow with Kubernetes pods, services, workloads and nodes, and serves the index over gRPC (kappa.tagger.v1.KubeTags).',
  options: taggerOptions,
});
const logger = createLogger(STAGE, config.logLevel);

let kubeConfig: KubeConfig | undefined;
try {
  kubeConfig = loadKubeConfig(config.kubeconfig, process.env);
} catch (error) {
  if (!(error instanceof NoClusterConfigured)) exitOnStartFailure(STAGE, error);
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
  instance: config.instance,
  maxInFlight: config.maxInFlight,
  partitions: config.partitions,
  logger,
  registry: createRegistry(STAGE),
});
await runStage(taggerStage(tagger, { bus: busOptionsFromConfig(config), metricsPort: config.metricsPort }));
logger.info({ grpcPort: tagger.grpcPort, ready: tagger.ready() }, 'k8s-tagger started');
