// Public API of @kappa/testing: real servers and fixtures for integration tests.
export { anyMessage, messageInit, text as anyText } from './arbitraries.js';
export { DnsServer, resolvConf } from './dns.js';
export type { DnsServerOptions, ZoneAlias, ZoneHost } from './dns.js';
export { freePort, freePorts } from './ports.js';
export { NO_CONFIG_FILE, isLeftover, ownerPid, removeCgroupTree, sweepLeftovers, uniqueName } from './names.js';
export { ServerProcess, dyingWithParent } from './process.js';
export { CLUSTER_LOCK_WAIT_MS, CLUSTER_TOPOLOGY_LOCK, machineLock } from './machine-lock.js';
export type { MachineLock } from './machine-lock.js';
export type { ServerProcessSpec } from './process.js';
export { startNatsServer, startRedisServer } from './servers.js';
export { startNatsCluster, startRedisCluster } from './clusters.js';
export type { NatsServerOptions, RedisServerOptions, TestServer } from './servers.js';
export { PacketCapture, TestCgroup, VethPair, cgroup2Mount, childEnv, nstat, run, runIn, spawnIn, wireCounts } from './netns.js';
export type { NetnsEnd, VethPairOptions, WireCount } from './netns.js';
export { kubeResourceTypes, startKubeApiServer } from './kube-api-server.js';
export type {
  KubeApiRequest,
  KubeApiServer,
  KubeApiServerOptions,
  KubeFault,
  KubeFaultHandle,
  KubeObject,
  KubeObjectMeta,
  KubeResourceType,
  KubeVerb,
  KubeWatchEventType,
} from './kube-api-server.js';
export {
  containerIdOf,
  kubeTime,
  kubeletStartSequence,
  kubeletStopSequence,
  realEndpointSlice,
  realLabels,
  realNode,
  realPod,
  realService,
  realWorkload,
  startPodLikeKubelet,
  stopPodLikeKubelet,
  uidOf,
} from './kube-objects.js';
export type { RealEndpointSliceSpec, RealNodeSpec, RealPodSpec, RealServiceSpec } from './kube-objects.js';
export { makeTlsMaterial } from './tls.js';
export type { TlsMaterial } from './tls.js';
