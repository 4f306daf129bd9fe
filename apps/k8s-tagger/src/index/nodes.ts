// Nodes by name and by address (InternalIP, ExternalIP), and the pod CIDRs they announce.
import type { V1Node } from '@kubernetes/client-node';
import type { PodNetworks } from './cidr.js';
import type { NodeGetter, NodeRef } from './getters.js';
import { normalizeIp } from './pods.js';

export interface NodeEntry extends NodeRef {
  name: string;
  uid: string;
  labels: Record<string, string>;
  ips: string[];
  kube?: unknown;
}

export class NodeStore implements NodeGetter {
  private readonly nodes = new Map<string, NodeEntry>();
  private readonly byIp = new Map<string, NodeEntry>();
  private changes = 0;

  constructor(
    private readonly networks: PodNetworks,
    private readonly changed: (node: NodeEntry, removed: boolean) => void,
  ) {}

  get size(): number {
    return this.byIp.size;
  }

  get version(): number {
    return this.changes;
  }

  upsert(node: V1Node): void {
    const name = node.metadata?.name;
    if (!name) return;
    const previous = this.nodes.get(name);
    const ips = new Set<string>();
    for (const address of node.status?.addresses ?? []) {
      if (address.type !== 'InternalIP' && address.type !== 'ExternalIP') continue;
      const ip = normalizeIp(address.address);
      if (ip) ips.add(ip);
    }
    const entry: NodeEntry = { name, uid: node.metadata?.uid ?? '', labels: node.metadata?.labels ?? {}, ips: [...ips] };
    this.nodes.set(name, entry);
    for (const ip of previous?.ips ?? []) {
      if (!ips.has(ip) && this.byIp.get(ip) === previous) this.byIp.delete(ip);
    }
    for (const ip of entry.ips) this.byIp.set(ip, entry);
    this.networks.setNodeCidrs(name, node.spec?.podCIDRs ?? (node.spec?.podCIDR ? [node.spec.podCIDR] : []));
    this.changes += 1;
    this.changed(entry, false);
  }

  remove(node: V1Node): void {
    const entry = this.nodes.get(node.metadata?.name ?? '');
    if (!entry) return;
    this.nodes.delete(entry.name);
    for (const ip of entry.ips) if (this.byIp.get(ip) === entry) this.byIp.delete(ip);
    this.networks.setNodeCidrs(entry.name, []);
    this.changes += 1;
    this.changed(entry, true);
  }

  removeByName(name: string): void {
    const entry = this.nodes.get(name);
    if (entry) this.remove({ metadata: { name } });
  }

  names(): IterableIterator<string> {
    return this.nodes.keys();
  }

  nodeByIp(ip: string): NodeEntry | undefined {
    return this.byIp.get(ip);
  }

  nodeByName(name: string): NodeEntry | undefined {
    return this.nodes.get(name);
  }
}
