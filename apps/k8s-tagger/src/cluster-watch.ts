// client-node informers on every resource the tagger indexes, feeding the KubeIndex. An informer
// stops on error (dropped connection, API server down); this restarts it with backoff, so the
// tagger recovers from a dropped watch, 410 Gone (the informer relists) and an API server restart.
import { existsSync } from 'node:fs';
import {
  AppsV1Api,
  BatchV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  makeInformer,
} from '@kubernetes/client-node';
import type { Informer, KubernetesObject, ListPromise } from '@kubernetes/client-node';
import type { Logger } from '@kappa/observability';
import type { KubeIndex } from './kube-index.js';

/** No kubeconfig given and not running in a pod: the tagger tags node names only. */
export class NoClusterConfigured extends Error {
  constructor() {
    super('no Kubernetes cluster configured (no --kubeconfig, not running in a pod): tagging node names only');
    this.name = 'NoClusterConfigured';
  }
}

export class KubeConfigError extends Error {
  constructor(path: string, options: { cause: unknown }) {
    super(`cannot load the kubeconfig ${path}: check the path and its contents`, options);
    this.name = 'KubeConfigError';
  }
}

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/** A kubeconfig from --kubeconfig, else in-cluster config, else NoClusterConfigured. */
export function loadKubeConfig(kubeconfigPath: string | undefined, env: Readonly<Record<string, string | undefined>> = process.env): KubeConfig {
  const kubeConfig = new KubeConfig();
  if (kubeconfigPath) {
    try {
      kubeConfig.loadFromFile(kubeconfigPath);
    } catch (cause) {
      throw new KubeConfigError(kubeconfigPath, { cause });
    }
    return kubeConfig;
  }
  if (env.KUBERNETES_SERVICE_HOST && existsSync(SERVICE_ACCOUNT_TOKEN)) {
    kubeConfig.loadFromCluster();
    return kubeConfig;
  }
  throw new NoClusterConfigured();
}

/** The resources watched, with the RBAC each needs (get/list/watch). */
export const watchedResources = [
  'pods', 'services', 'endpointslices', 'nodes', 'namespaces',
  'replicasets', 'deployments', 'statefulsets', 'daemonsets', 'jobs', 'cronjobs',
] as const;
export type WatchedResource = (typeof watchedResources)[number];

interface ResourceWiring {
  resource: WatchedResource;
  path: string;
  list: ListPromise<KubernetesObject>;
  upsert: (object: KubernetesObject) => void;
  remove: (object: KubernetesObject) => void;
}

export interface ClusterWatchHooks {
  /** An informer failed and will be restarted after delayMs. */
  onRestart?(resource: WatchedResource, delayMs: number, error: unknown): void;
  /** Any object change was applied to the index. */
  onChange?(resource: WatchedResource): void;
}

interface WatchedInformer {
  wiring: ResourceWiring;
  informer: Informer<KubernetesObject>;
  synced: boolean;
  /** Set once a list has succeeded. */
  progress: { listed: boolean };
  attempts: number;
  timer: NodeJS.Timeout | undefined;
}

export interface ClusterWatchOptions {
  kubeConfig: KubeConfig;
  index: KubeIndex;
  logger: Logger;
  hooks?: ClusterWatchHooks;
  /** First restart delay after an informer error; doubles up to maxBackoffMs. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- the index's typed upserts take the client's model types */
function wiringFor(kubeConfig: KubeConfig, index: KubeIndex): ResourceWiring[] {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const apps = kubeConfig.makeApiClient(AppsV1Api);
  const batch = kubeConfig.makeApiClient(BatchV1Api);
  const discovery = kubeConfig.makeApiClient(DiscoveryV1Api);
  const owner = (kind: 'ReplicaSet' | 'Job' | 'Deployment' | 'StatefulSet' | 'DaemonSet' | 'CronJob') => ({
    upsert: (o: KubernetesObject) => index.upsertOwner(kind, o as any),
    remove: (o: KubernetesObject) => index.deleteOwner(kind, o),
  });
  return [
    { resource: 'namespaces', path: '/api/v1/namespaces', list: () => core.listNamespace(), upsert: (o) => index.upsertNamespace(o as any), remove: (o) => index.deleteNamespace(o as any) },
    { resource: 'nodes', path: '/api/v1/nodes', list: () => core.listNode(), upsert: (o) => index.upsertNode(o as any), remove: (o) => index.deleteNode(o as any) },
    { resource: 'replicasets', path: '/apis/apps/v1/replicasets', list: () => apps.listReplicaSetForAllNamespaces(), ...owner('ReplicaSet') },
    { resource: 'deployments', path: '/apis/apps/v1/deployments', list: () => apps.listDeploymentForAllNamespaces(), ...owner('Deployment') },
    { resource: 'statefulsets', path: '/apis/apps/v1/statefulsets', list: () => apps.listStatefulSetForAllNamespaces(), ...owner('StatefulSet') },
    { resource: 'daemonsets', path: '/apis/apps/v1/daemonsets', list: () => apps.listDaemonSetForAllNamespaces(), ...owner('DaemonSet') },
    { resource: 'jobs', path: '/apis/batch/v1/jobs', list: () => batch.listJobForAllNamespaces(), ...owner('Job') },
    { resource: 'cronjobs', path: '/apis/batch/v1/cronjobs', list: () => batch.listCronJobForAllNamespaces(), ...owner('CronJob') },
    { resource: 'services', path: '/api/v1/services', list: () => core.listServiceForAllNamespaces(), upsert: (o) => index.upsertService(o as any), remove: (o) => index.deleteService(o as any) },
    { resource: 'endpointslices', path: '/apis/discovery.k8s.io/v1/endpointslices', list: () => discovery.listEndpointSliceForAllNamespaces(), upsert: (o) => index.upsertEndpointSlice(o as any), remove: (o) => index.deleteEndpointSlice(o as any) },
    { resource: 'pods', path: '/api/v1/pods', list: () => core.listPodForAllNamespaces(), upsert: (o) => index.upsertPod(o as any), remove: (o) => index.deletePod(o as any) },
  ];
}
/* eslint-enable @typescript-eslint/no-explicit-any */

export class ClusterWatch {
  private readonly informers: WatchedInformer[] = [];
  private stopping = false;
  private readonly baseBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly options: ClusterWatchOptions) {
    this.baseBackoffMs = options.baseBackoffMs ?? 250;
    this.maxBackoffMs = options.maxBackoffMs ?? 30_000;
    for (const wiring of wiringFor(options.kubeConfig, options.index)) {
      const progress = { listed: false };
      const list: ListPromise<KubernetesObject> = async () => {
        const result = await wiring.list();
        progress.listed = true;
        return result;
      };
      const informer = makeInformer(options.kubeConfig, wiring.path, list);
      const current: WatchedInformer = { wiring, informer, synced: false, progress, attempts: 0, timer: undefined };
      const changed = (apply: (object: KubernetesObject) => void) => (object: KubernetesObject) => {
        current.attempts = 0;
        apply(object);
        options.hooks?.onChange?.(wiring.resource);
      };
      informer.on('add', changed(wiring.upsert));
      informer.on('update', changed(wiring.upsert));
      informer.on('delete', changed(wiring.remove));
      informer.on('error', (error: unknown) => this.restartLater(current, error));
      this.informers.push(current);
    }
  }

  /** True once every informer has listed its resource at least once. */
  get synced(): boolean {
    return this.informers.every((watched) => watched.synced);
  }

  /** Starts every informer; resolves when each has listed once or failed (and will retry). */
  async start(): Promise<void> {
    this.stopping = false;
    await Promise.all(this.informers.map((watched) => this.startOne(watched)));
  }

  private async startOne(watched: WatchedInformer): Promise<void> {
    watched.timer = undefined;
    if (this.stopping) return;
    await watched.informer.start();
    // start() resolves after the list (its items applied) and the watch request.
    if (watched.progress.listed) {
      if (!watched.synced) this.options.logger.info({ resource: watched.wiring.resource }, 'informer synced');
      watched.synced = true;
    }
  }

  private restartLater(watched: WatchedInformer, error: unknown): void {
    // client-node reports its own stop() as an AbortError; that is not a failure.
    if (this.stopping || watched.timer) return;
    const delayMs = Math.min(this.maxBackoffMs, this.baseBackoffMs * 2 ** watched.attempts);
    watched.attempts += 1;
    this.options.logger.warn({ resource: watched.wiring.resource, delayMs, err: error }, 'informer stopped on error; restarting');
    this.options.hooks?.onRestart?.(watched.wiring.resource, delayMs, error);
    watched.timer = setTimeout(() => {
      this.startOne(watched).catch((startError: unknown) => this.restartLater(watched, startError));
    }, delayMs);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const watched of this.informers) {
      if (watched.timer) clearTimeout(watched.timer);
      watched.timer = undefined;
    }
    await Promise.all(this.informers.map((watched) => watched.informer.stop()));
  }
}
