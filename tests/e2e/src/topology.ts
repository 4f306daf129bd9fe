// A two-node cluster simulated on one kernel: each "node" is a cgroup sub-tree plus a bridge,
// each "pod" a network namespace with a veth on its node's bridge and a cgroup shaped like
// kubelet's (kubepods.slice/.../cri-containerd-<id>.scope). Traffic between the nodes' subnets
// is routed by a "host" namespace of the test's own (not the machine's root namespace), where
// nftables also plays kube-proxy for one Service. Every machine-wide name (namespaces, the
// cgroup root) is unique to the test run, so two runs at once never meet; the bridges, host-side
// veths, routes and nft table live inside the host namespace and go with it.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeCgroupTree, sweepLeftovers, uniqueName } from '@kappa/testing';

export const PREFIX = 'kpe';

export function run(command: string, args: readonly string[], options: { allowFail?: boolean; input?: string } = {}): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input: options.input });
  } catch (error) {
    if (options.allowFail) return '';
    const e = error as { stderr?: string; message: string };
    throw new Error(`${command} ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
  }
}

/** The cgroup v2 mount, from /proc/mounts (/sys/fs/cgroup/unified on hybrid hosts). */
export function cgroup2Mount(): string {
  const line = readFileSync('/proc/mounts', 'utf8').split('\n').find((l) => l.split(' ')[2] === 'cgroup2');
  const mount = line?.split(' ')[1];
  if (!mount) throw new Error('no cgroup2 mount in /proc/mounts');
  return mount;
}

export interface PodSpec {
  name: string;
  namespace: string;
  node: 'node-a' | 'node-b';
  /** Last octet / hextet of the pod's addresses on its node's subnet. */
  host: number;
  workload: string;
  workloadKind: 'Deployment' | 'StatefulSet' | 'DaemonSet';
  labels: Record<string, string>;
}

export interface Pod extends PodSpec {
  netns: string;
  hostVeth: string;
  ipv4: string;
  ipv6: string;
  uid: string;
  containerId: string;
  containerName: string;
  /** Absolute path of the pod's container cgroup. */
  cgroup: string;
}

export interface NodeInfo {
  name: 'node-a' | 'node-b';
  bridge: string;
  subnet4: string;
  gateway4: string;
  gateway6: string;
  /** The node's cgroup sub-tree that its capture attaches to. */
  cgroup: string;
}

export interface Topology {
  /** The namespace that routes between the nodes and to the external host (hostVeths, bridges). */
  hostNetns: string;
  nodes: Record<'node-a' | 'node-b', NodeInfo>;
  pods: Pod[];
  external: { netns: string; hostVeth: string; ipv4: string; ipv6: string };
  service: { name: string; namespace: string; ipv4: string; port: number; backend: Pod; targetPort: number };
  /** One Service of every other kind kube-proxy serves, and a hostNetwork pod (see serviceKinds). */
  kinds: ServiceKinds;
  /** The cgroup sub-tree of the whole cluster. */
  root: string;
}

/**
 * A LoadBalancer Service (so also a NodePort, with a LoadBalancer ingress IP and an external IP)
 * in front of the api pod's port 3000, a headless Service over the web pods' port 3000, and a
 * hostNetwork DaemonSet pod on node-b serving on node-b's own address.
 */
export interface ServiceKinds {
  loadBalancer: { name: string; namespace: string; clusterIP: string; port: number; nodePort: number; ingressIP: string; externalIP: string; backend: Pod; targetPort: number };
  headless: { name: string; namespace: string; port: number; app: string };
  hostNetwork: { name: string; namespace: string; workload: string; node: 'node-a' | 'node-b'; ip: string; port: number; uid: string; containerId: string; containerName: string; cgroup: string };
}

const id = (text: string, length: number) => createHash('sha256').update(text).digest('hex').slice(0, length);
const podUid = (name: string) => {
  const h = id(`uid:${name}`, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
};

function nodeInfo(name: 'node-a' | 'node-b', root: string): NodeInfo {
  const n = name === 'node-a' ? 1 : 2;
  return {
    name,
    bridge: `${PREFIX}-br${n}`,
    subnet4: `10.244.${n}.0/24`,
    gateway4: `10.244.${n}.1`,
    gateway6: `fd00:244:${n}::1`,
    cgroup: join(root, name),
  };
}

function quietLink(netns: string, device: string): void {
  const exec = ['ip', 'netns', 'exec', netns];
  // Offloads off: the wire then carries what the stack sends, so captures are exact.
  run('ip', [...exec.slice(1), 'ethtool', '-K', device, 'tso', 'off', 'gso', 'off', 'gro', 'off', 'tx', 'off', 'rx', 'off'], { allowFail: true });
  const sysctl = (key: string) => run('ip', [...exec.slice(1), 'sysctl', '-qw', key], { allowFail: true });
  sysctl(`net.ipv6.conf.${device}.accept_dad=0`);
  sysctl(`net.ipv6.conf.${device}.router_solicitations=0`);
}

/** Builds the cluster; on a failure half-way, removes what it made and throws. */
export function createTopology(podSpecs: PodSpec[]): Topology {
  const mount = cgroup2Mount();
  sweepLeftovers(mount);
  const name = uniqueName(`${PREFIX}-e2e`);
  const made: Partial<Topology> & { hostNetns: string; root: string; pods: Pod[] } = { hostNetns: `${name}-host`, root: join(mount, name), pods: [] };
  try {
    return buildTopology(podSpecs, name, made);
  } catch (error) {
    destroyTopology(made);
    throw error;
  }
}

function buildTopology(podSpecs: PodSpec[], name: string, made: Partial<Topology> & { hostNetns: string; root: string; pods: Pod[] }): Topology {
  const { hostNetns, root } = made;
  const host = (...args: string[]) => run('ip', ['netns', 'exec', hostNetns, ...args]);
  const nodes = { 'node-a': nodeInfo('node-a', root), 'node-b': nodeInfo('node-b', root) };
  run('ip', ['netns', 'add', hostNetns]);
  host('ip', 'link', 'set', 'lo', 'up');
  for (const key of ['all', 'default']) host('sysctl', '-qw', `net.ipv6.conf.${key}.accept_dad=0`, `net.ipv6.conf.${key}.router_solicitations=0`);
  host('sysctl', '-qw', 'net.ipv4.ip_forward=1');
  host('sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
  for (const node of Object.values(nodes)) {
    host('ip', 'link', 'add', node.bridge, 'type', 'bridge');
    run('ip', ['netns', 'exec', hostNetns, 'sysctl', '-qw', `net.ipv6.conf.${node.bridge}.accept_dad=0`], { allowFail: true });
    host('ip', 'addr', 'add', `${node.gateway4}/24`, 'dev', node.bridge);
    host('ip', 'addr', 'add', `${node.gateway6}/64`, 'dev', node.bridge, 'nodad');
    host('ip', 'link', 'set', node.bridge, 'up');
    mkdirSync(join(node.cgroup, 'kubepods.slice'), { recursive: true });
  }

  const pods: Pod[] = made.pods;
  for (const spec of podSpecs) {
    const node = nodes[spec.node];
    const n = spec.node === 'node-a' ? 1 : 2;
    const netns = `${name}-${spec.name}`;
    const hostVeth = `${PREFIX}${n}h${spec.host}`;
    const uid = podUid(spec.name);
    const containerId = id(`container:${spec.name}`, 64);
    const podSlice = `kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice`;
    const cgroup = join(node.cgroup, 'kubepods.slice', 'kubepods-besteffort.slice', podSlice, `cri-containerd-${containerId}.scope`);
    mkdirSync(cgroup, { recursive: true });
    run('ip', ['netns', 'add', netns]);
    const pod: Pod = { ...spec, netns, hostVeth, ipv4: `10.244.${n}.${spec.host}`, ipv6: `fd00:244:${n}::${spec.host.toString(16)}`, uid, containerId, containerName: spec.workload, cgroup };
    pods.push(pod);
    host('ip', 'link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
    host('ip', 'link', 'set', hostVeth, 'master', node.bridge);
    quietLink(hostNetns, hostVeth);
    host('ip', 'link', 'set', hostVeth, 'up');
    const inNs = (...args: string[]) => run('ip', ['netns', 'exec', netns, ...args]);
    quietLink(netns, 'eth0');
    inNs('ip', 'addr', 'add', `${pod.ipv4}/24`, 'dev', 'eth0');
    inNs('ip', 'addr', 'add', `${pod.ipv6}/64`, 'dev', 'eth0', 'nodad');
    inNs('ip', 'link', 'set', 'eth0', 'up');
    inNs('ip', 'link', 'set', 'lo', 'up');
    inNs('ip', 'route', 'add', 'default', 'via', node.gateway4);
    inNs('ip', '-6', 'route', 'add', 'default', 'via', node.gateway6);
  }

  // Permanent neighbour entries everywhere: no ARP or ND packets in the captures.
  const macOf = (netns: string, dev: string) => run('ip', ['netns', 'exec', netns, 'cat', `/sys/class/net/${dev}/address`]).trim();
  for (const pod of pods) {
    const node = nodes[pod.node];
    const podMac = macOf(pod.netns, 'eth0');
    const bridgeMac = macOf(hostNetns, node.bridge);
    host('ip', 'neigh', 'replace', pod.ipv4, 'lladdr', podMac, 'dev', node.bridge, 'nud', 'permanent');
    host('ip', '-6', 'neigh', 'replace', pod.ipv6, 'lladdr', podMac, 'dev', node.bridge, 'nud', 'permanent');
    run('ip', ['netns', 'exec', pod.netns, 'ip', 'neigh', 'replace', node.gateway4, 'lladdr', bridgeMac, 'dev', 'eth0', 'nud', 'permanent']);
    run('ip', ['netns', 'exec', pod.netns, 'ip', '-6', 'neigh', 'replace', node.gateway6, 'lladdr', bridgeMac, 'dev', 'eth0', 'nud', 'permanent']);
    for (const other of pods.filter((p) => p !== pod && p.node === pod.node)) {
      const otherMac = macOf(other.netns, 'eth0');
      run('ip', ['netns', 'exec', pod.netns, 'ip', 'neigh', 'replace', other.ipv4, 'lladdr', otherMac, 'dev', 'eth0', 'nud', 'permanent']);
      run('ip', ['netns', 'exec', pod.netns, 'ip', '-6', 'neigh', 'replace', other.ipv6, 'lladdr', otherMac, 'dev', 'eth0', 'nud', 'permanent']);
    }
  }

  // An "external" host: a namespace of our own behind its own veth, routed by the host namespace.
  const external = { netns: `${name}-ext`, hostVeth: `${PREFIX}-exth`, ipv4: '198.51.100.10', ipv6: 'fd00:5100::10' };
  run('ip', ['netns', 'add', external.netns]);
  made.external = external;
  host('ip', 'link', 'add', external.hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', external.netns);
  quietLink(hostNetns, external.hostVeth);
  host('ip', 'addr', 'add', '198.51.100.1/24', 'dev', external.hostVeth);
  host('ip', 'addr', 'add', 'fd00:5100::1/64', 'dev', external.hostVeth, 'nodad');
  host('ip', 'link', 'set', external.hostVeth, 'up');
  quietLink(external.netns, 'eth0');
  for (const args of [
    ['ip', 'addr', 'add', `${external.ipv4}/24`, 'dev', 'eth0'],
    ['ip', 'addr', 'add', `${external.ipv6}/64`, 'dev', 'eth0', 'nodad'],
    ['ip', 'link', 'set', 'eth0', 'up'],
    ['ip', 'link', 'set', 'lo', 'up'],
    ['ip', 'route', 'add', 'default', 'via', '198.51.100.1'],
    ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:5100::1'],
  ]) run('ip', ['netns', 'exec', external.netns, ...args]);
  const extMac = macOf(external.netns, 'eth0');
  const extHostMac = macOf(hostNetns, external.hostVeth);
  host('ip', 'neigh', 'replace', external.ipv4, 'lladdr', extMac, 'dev', external.hostVeth, 'nud', 'permanent');
  host('ip', '-6', 'neigh', 'replace', external.ipv6, 'lladdr', extMac, 'dev', external.hostVeth, 'nud', 'permanent');
  run('ip', ['netns', 'exec', external.netns, 'ip', 'neigh', 'replace', '198.51.100.1', 'lladdr', extHostMac, 'dev', 'eth0', 'nud', 'permanent']);
  run('ip', ['netns', 'exec', external.netns, 'ip', '-6', 'neigh', 'replace', 'fd00:5100::1', 'lladdr', extHostMac, 'dev', 'eth0', 'nud', 'permanent']);

  const backend = pods.find((p) => p.labels.app === 'api');
  if (!backend) throw new Error('the topology needs a pod labelled app=api as the Service backend');
  const service = { name: 'api', namespace: backend.namespace, ipv4: '10.96.0.10', port: 80, backend, targetPort: 8080 };
  const agentUid = podUid('node-agent-b');
  const agentContainer = id('container:node-agent-b', 64);
  const kinds: ServiceKinds = {
    loadBalancer: { name: 'api-lb', namespace: backend.namespace, clusterIP: '10.96.0.20', port: 80, nodePort: 30080, ingressIP: '203.0.113.10', externalIP: '192.0.2.10', backend, targetPort: 3000 },
    headless: { name: 'web-headless', namespace: backend.namespace, port: 3000, app: 'web' },
    hostNetwork: {
      name: 'node-agent-b',
      namespace: 'kube-system',
      workload: 'node-agent',
      node: 'node-b',
      ip: nodes['node-b'].gateway4,
      port: 9100,
      uid: agentUid,
      containerId: agentContainer,
      containerName: 'agent',
      cgroup: join(nodes['node-b'].cgroup, 'kubepods.slice', 'kubepods-besteffort.slice', `kubepods-besteffort-pod${agentUid.replace(/-/g, '_')}.slice`, `cri-containerd-${agentContainer}.scope`),
    },
  };
  mkdirSync(kinds.hostNetwork.cgroup, { recursive: true });
  // kube-proxy's part, in the shape of its nftables mode: one verdict map from Service address,
  // protocol and port (ClusterIPs, the LoadBalancer ingress IP, external IPs) to a chain per
  // Service that DNATs to the backend, and a NodePort map applied to the node's own addresses
  // (fib daddr type local). No masquerade: externalTrafficPolicy Local keeps the client address.
  const lb = kinds.loadBalancer;
  run('ip', ['netns', 'exec', hostNetns, 'nft', '-f', '-'], {
    input: `table ip ${PREFIX}_nat {
  map service-ips {
    type ipv4_addr . inet_proto . inet_service : verdict
    elements = {
      ${service.ipv4} . tcp . ${service.port} : goto service-api,
      ${lb.clusterIP} . tcp . ${lb.port} : goto service-api-lb,
      ${lb.ingressIP} . tcp . ${lb.port} : goto service-api-lb,
      ${lb.externalIP} . tcp . ${lb.port} : goto service-api-lb
    }
  }
  map service-nodeports {
    type inet_proto . inet_service : verdict
    elements = { tcp . ${lb.nodePort} : goto service-api-lb }
  }
  chain service-api { meta l4proto tcp dnat to ${backend.ipv4}:${service.targetPort}; }
  chain service-api-lb { meta l4proto tcp dnat to ${backend.ipv4}:${lb.targetPort}; }
  chain services {
    ip daddr . meta l4proto . th dport vmap @service-ips
    fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
  }
  chain prerouting { type nat hook prerouting priority dstnat; jump services; }
  chain output { type nat hook output priority -100; jump services; }
}
`,
  });
  return { hostNetns, nodes, pods, external, service, kinds, root };
}

/**
 * Removes what createTopology made: the namespaces (the host one takes the bridges, veths, routes
 * and the nft table with it) and the cgroup tree. What a killed run left is swept by the next
 * createTopology (names carry the run's pid).
 */
export function destroyTopology(topology: Pick<Topology, 'hostNetns' | 'root'> & { pods?: Pod[]; external?: Topology['external'] }): void {
  for (const netns of [...(topology.pods ?? []).map((p) => p.netns), topology.external?.netns, topology.hostNetns]) {
    if (netns) run('ip', ['netns', 'del', netns], { allowFail: true });
  }
  removeCgroupTree(topology.root);
}

/** Writes a pid into a cgroup. */
export function joinCgroup(cgroup: string, pid: number): void {
  writeFileSync(join(cgroup, 'cgroup.procs'), String(pid));
}
