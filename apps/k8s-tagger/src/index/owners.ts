// Owner chains: ReplicaSet → Deployment and Job → CronJob, so a pod's tags name its workload.
import type { V1ObjectMeta } from '@kubernetes/client-node';
import type { PodRef, WorkloadGetter } from './getters.js';
import { controllerOf } from './pods.js';

export type OwnerKind = 'ReplicaSet' | 'Job' | 'Deployment' | 'StatefulSet' | 'DaemonSet' | 'CronJob';

export class OwnerStore implements WorkloadGetter {
  /** "Kind/namespace/name" of ReplicaSets and Jobs → their controller; other workloads → null. */
  private readonly owners = new Map<string, { kind: string; name: string } | null>();
  private changes = 0;

  get version(): number {
    return this.changes;
  }

  get size(): number {
    return this.owners.size;
  }

  upsert(kind: OwnerKind, object: { metadata?: V1ObjectMeta }): void {
    const metadata = object.metadata;
    if (!metadata?.name) return;
    const controller = kind === 'ReplicaSet' || kind === 'Job' ? controllerOf(metadata) : undefined;
    const key = `${kind}/${metadata.namespace ?? 'default'}/${metadata.name}`;
    const value = controller ? { kind: controller.kind, name: controller.name } : null;
    const previous = this.owners.get(key);
    // Status updates of a ReplicaSet (every scale) must not invalidate every pod's tags.
    if (previous !== undefined && previous?.kind === value?.kind && previous?.name === value?.name) return;
    this.changes += 1;
    this.owners.set(key, value);
  }

  remove(kind: string, object: { metadata?: V1ObjectMeta }): void {
    if (this.owners.delete(`${kind}/${object.metadata?.namespace ?? 'default'}/${object.metadata?.name ?? ''}`)) this.changes += 1;
  }

  keys(): IterableIterator<string> {
    return this.owners.keys();
  }

  workloadOf(pod: PodRef): { kind: string; name: string } {
    const owner = pod.owner;
    if (!owner) return { kind: 'Pod', name: pod.name };
    if (owner.kind === 'ReplicaSet' || owner.kind === 'Job') {
      const parent = this.owners.get(`${owner.kind}/${pod.namespace}/${owner.name}`);
      if (parent) return parent;
      if (parent === undefined && owner.kind === 'ReplicaSet' && pod.templateHash && owner.name.endsWith(`-${pod.templateHash}`)) {
        // The ReplicaSet is not (yet) known: its name is <deployment>-<pod-template-hash>.
        return { kind: 'Deployment', name: owner.name.slice(0, -pod.templateHash.length - 1) };
      }
    }
    return owner;
  }
}
