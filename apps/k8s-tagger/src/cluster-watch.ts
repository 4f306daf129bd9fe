// One reflector (list, then watch; relist on 410; back off or wait as the server asks) per
// resource the tagger indexes, feeding the KubeIndex. `synced` resolves once every resource has
// been listed in full: the tagger consumes nothing before that.
import { existsSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from '@kappa/observability';
import type { KubeIndex } from './kube-index.js';
import { Reflector } from './reflector.js';
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
  upsert: (object: KubernetesObject) => void;
  remove: (object: KubernetesObject) => void;
}

export interface ClusterWatchHooks {
  /** A list or watch failed and is retried after delayMs. */
  onRestart?(resource: WatchedResource, delayMs: number, error: unknown): void;
  /** Any object change was applied to the index. */
  onChange?(resource: WatchedResource): void;
}

export interface ClusterWatchOptions {
  kubeConfig: KubeConfig;
  index: KubeIndex;
  logger: Logger;
  hooks?: ClusterWatchHooks;
  /** First retry delay after a failure; doubles up to maxBackoffMs. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** Items per list page (default 500). */
  pageSize?: number;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- the index's typed upserts take the client's model types; the objects are their JSON */
function wiringFor(index: KubeIndex): ResourceWiring[] {
  const owner = (kind: 'ReplicaSet' | 'Job' | 'Deployment' | 'StatefulSet' | 'DaemonSet' | 'CronJob') => ({
    upsert: (o: KubernetesObject) => index.upsertOwner(kind, o as any),
    remove: (o: KubernetesObject) => index.deleteOwner(kind, o),
  });
  return [
    { resource: 'namespaces', path: '/api/v1/namespaces', upsert: (o) => index.upsertNamespace(o as any), remove: (o) => index.deleteNamespace(o as any) },
    { resource: 'nodes', path: '/api/v1/nodes', upsert: (o) => index.upsertNode(o as any), remove: (o) => index.deleteNode(o as any) },
    { resource: 'replicasets', path: '/apis/apps/v1/replicasets', ...owner('ReplicaSet') },
    { resource: 'deployments', path: '/apis/apps/v1/deployments', ...owner('Deployment') },
    { resource: 'statefulsets', path: '/apis/apps/v1/statefulsets', ...owner('StatefulSet') },
    { resource: 'daemonsets', path: '/apis/apps/v1/daemonsets', ...owner('DaemonSet') },
    { resource: 'jobs', path: '/apis/batch/v1/jobs', ...owner('Job') },
    { resource: 'cronjobs', path: '/apis/batch/v1/cronjobs', ...owner('CronJob') },
    { resource: 'services', path: '/api/v1/services', upsert: (o) => index.upsertService(o as any), remove: (o) => index.deleteService(o as any) },
    { resource: 'endpointslices', path: '/apis/discovery.k8s.io/v1/endpointslices', upsert: (o) => index.upsertEndpointSlice(o as any), remove: (o) => index.deleteEndpointSlice(o as any) },
    { resource: 'pods', path: '/api/v1/pods', upsert: (o) => index.upsertPod(o as any), remove: (o) => index.deletePod(o as any) },
  ];
}
/* eslint-enable @typescript-eslint/no-explicit-any */

export class ClusterWatch {
  private readonly reflectors: Reflector[] = [];
  /** Resolves once every resource has been listed in full. */
  readonly synced: Promise<void>;

  constructor(options: ClusterWatchOptions) {
    for (const wiring of wiringFor(options.index)) {
      const changed = (apply: (object: KubernetesObject) => void) => (object: KubernetesObject) => {
        apply(object);
        options.hooks?.onChange?.(wiring.resource);
      };
      this.reflectors.push(new Reflector({
        kubeConfig: options.kubeConfig,
        resource: wiring.resource,
        path: wiring.path,
        upsert: changed(wiring.upsert),
        remove: changed(wiring.remove),
        logger: options.logger,
        hooks: { onRestart: (resource, delayMs, error) => options.hooks?.onRestart?.(resource as WatchedResource, delayMs, error) },
        ...(options.baseBackoffMs !== undefined ? { baseBackoffMs: options.baseBackoffMs } : {}),
        ...(options.maxBackoffMs !== undefined ? { maxBackoffMs: options.maxBackoffMs } : {}),
        ...(options.pageSize !== undefined ? { pageSize: options.pageSize } : {}),
      }));
    }
    this.synced = Promise.all(this.reflectors.map((r) => r.synced)).then(() => undefined);
  }

  /** True once every resource has been listed in full at least once. */
  get isSynced(): boolean {
    return this.reflectors.every((r) => r.hasSynced);
  }

  /** Starts every reflector; returns at once (see `synced`). */
  start(): void {
    for (const reflector of this.reflectors) reflector.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.reflectors.map((r) => r.stop()));
  }
}
