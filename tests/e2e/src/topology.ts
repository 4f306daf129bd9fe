// A two-node cluster simulated on one kernel: each "node" is a cgroup sub-tree plus a bridge,
// each "pod" a network namespace with a veth on its node's bridge and a cgroup shaped like
// kubelet's (kubepods.slice/.../cri-containerd-<id>.scope). Traffic between the nodes' subnets
// is routed by the root namespace, where nftables also plays kube-proxy for one Service.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

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
  nodes: Record<'node-a' | 'node-b', NodeInfo>;
  pods: Pod[];
  external: { netns: string; hostVeth: string; ipv4: string; ipv6: string };
  service: { name: string; namespace: string; ipv4: string; port: number; backend: Pod; targetPort: number };
  root: string;
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

function quietLink(netns: string | undefined, device: string): void {
  const exec = netns ? ['ip', 'netns', 'exec', netns] : [];
  // Offloads off: the wire then carries what the stack sends, so captures are exact.
  run(exec[0] ?? 'ethtool', [...exec.slice(1), ...(exec.length ? ['ethtool'] : []), '-K', device, 'tso', 'off', 'gso', 'off', 'gro', 'off', 'tx', 'off', 'rx', 'off'], { allowFail: true });
  const sysctl = (key: string) => run(exec[0] ?? 'sysctl', [...exec.slice(1), ...(exec.length ? ['sysctl'] : []), '-qw', key], { allowFail: true });
  sysctl(`net.ipv6.conf.${device}.accept_dad=0`);
  sysctl(`net.ipv6.conf.${device}.router_solicitations=0`);
}

export function createTopology(podSpecs: PodSpec[]): Topology {
  destroyTopology();
  const root = join(cgroup2Mount(), `${PREFIX}-e2e`);
  const nodes = { 'node-a': nodeInfo('node-a', root), 'node-b': nodeInfo('node-b', root) };
  run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  run('sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
  for (const node of Object.values(nodes)) {
    const n = node.name === 'node-a' ? 1 : 2;
    run('ip', ['link', 'add', node.bridge, 'type', 'bridge']);
    run('sysctl', ['-qw', `net.ipv6.conf.${node.bridge}.accept_dad=0`], { allowFail: true });
    run('ip', ['addr', 'add', `${node.gateway4}/24`, 'dev', node.bridge]);
    run('ip', ['addr', 'add', `${node.gateway6}/64`, 'dev', node.bridge, 'nodad']);
    run('ip', ['link', 'set', node.bridge, 'up']);
    mkdirSync(join(node.cgroup, 'kubepods.slice'), { recursive: true });
    void n;
  }

  const pods: Pod[] = podSpecs.map((spec) => {
    const node = nodes[spec.node];
    const n = spec.node === 'node-a' ? 1 : 2;
    const netns = `${PREFIX}-${spec.name}`.slice(0, 15);
    const hostVeth = `${PREFIX}${n}h${spec.host}`;
    const uid = podUid(spec.name);
    const containerId = id(`container:${spec.name}`, 64);
    const podSlice = `kubepods-besteffort-pod${uid.replace(/-/g, '_')}.slice`;
    const cgroup = join(node.cgroup, 'kubepods.slice', 'kubepods-besteffort.slice', podSlice, `cri-containerd-${containerId}.scope`);
    mkdirSync(cgroup, { recursive: true });
    run('ip', ['netns', 'add', netns]);
    run('ip', ['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
    run('ip', ['link', 'set', hostVeth, 'master', node.bridge]);
    quietLink(undefined, hostVeth);
    run('ip', ['link', 'set', hostVeth, 'up']);
    const ipv4 = `10.244.${n}.${spec.host}`;
    const ipv6 = `fd00:244:${n}::${spec.host.toString(16)}`;
    const inNs = (...args: string[]) => run('ip', ['netns', 'exec', netns, ...args]);
    quietLink(netns, 'eth0');
    inNs('ip', 'addr', 'add', `${ipv4}/24`, 'dev', 'eth0');
    inNs('ip', 'addr', 'add', `${ipv6}/64`, 'dev', 'eth0', 'nodad');
    inNs('ip', 'link', 'set', 'eth0', 'up');
    inNs('ip', 'link', 'set', 'lo', 'up');
    inNs('ip', 'route', 'add', 'default', 'via', node.gateway4);
    inNs('ip', '-6', 'route', 'add', 'default', 'via', node.gateway6);
    return { ...spec, netns, hostVeth, ipv4, ipv6, uid, containerId, containerName: spec.workload, cgroup };
  });

  // Permanent neighbour entries everywhere: no ARP or ND packets in the captures.
  const macOf = (netns: string | undefined, dev: string) => {
    const out = netns ? run('ip', ['netns', 'exec', netns, 'cat', `/sys/class/net/${dev}/address`]) : readFileSync(`/sys/class/net/${dev}/address`, 'utf8');
    return out.trim();
  };
  for (const pod of pods) {
    const node = nodes[pod.node];
    const podMac = macOf(pod.netns, 'eth0');
    const bridgeMac = macOf(undefined, node.bridge);
    run('ip', ['neigh', 'replace', pod.ipv4, 'lladdr', podMac, 'dev', node.bridge, 'nud', 'permanent']);
    run('ip', ['-6', 'neigh', 'replace', pod.ipv6, 'lladdr', podMac, 'dev', node.bridge, 'nud', 'permanent']);
    run('ip', ['netns', 'exec', pod.netns, 'ip', 'neigh', 'replace', node.gateway4, 'lladdr', bridgeMac, 'dev', 'eth0', 'nud', 'permanent']);
    run('ip', ['netns', 'exec', pod.netns, 'ip', '-6', 'neigh', 'replace', node.gateway6, 'lladdr', bridgeMac, 'dev', 'eth0', 'nud', 'permanent']);
    for (const other of pods.filter((p) => p !== pod && p.node === pod.node)) {
      const otherMac = macOf(other.netns, 'eth0');
      run('ip', ['netns', 'exec', pod.netns, 'ip', 'neigh', 'replace', other.ipv4, 'lladdr', otherMac, 'dev', 'eth0', 'nud', 'permanent']);
      run('ip', ['netns', 'exec', pod.netns, 'ip', '-6', 'neigh', 'replace', other.ipv6, 'lladdr', otherMac, 'dev', 'eth0', 'nud', 'permanent']);
    }
  }

  // An "external" host: a namespace of our own behind its own veth, routed by the root namespace.
  const external = { netns: `${PREFIX}-ext`, hostVeth: `${PREFIX}-exth`, ipv4: '198.51.100.10', ipv6: 'fd00:5100::10' };
  run('ip', ['netns', 'add', external.netns]);
  run('ip', ['link', 'add', external.hostVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', external.netns]);
  quietLink(undefined, external.hostVeth);
  run('ip', ['addr', 'add', '198.51.100.1/24', 'dev', external.hostVeth]);
  run('ip', ['addr', 'add', 'fd00:5100::1/64', 'dev', external.hostVeth, 'nodad']);
  run('ip', ['link', 'set', external.hostVeth, 'up']);
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
  const extHostMac = macOf(undefined, external.hostVeth);
  run('ip', ['neigh', 'replace', external.ipv4, 'lladdr', extMac, 'dev', external.hostVeth, 'nud', 'permanent']);
  run('ip', ['-6', 'neigh', 'replace', external.ipv6, 'lladdr', extMac, 'dev', external.hostVeth, 'nud', 'permanent']);
  run('ip', ['netns', 'exec', external.netns, 'ip', 'neigh', 'replace', '198.51.100.1', 'lladdr', extHostMac, 'dev', 'eth0', 'nud', 'permanent']);
  run('ip', ['netns', 'exec', external.netns, 'ip', '-6', 'neigh', 'replace', 'fd00:5100::1', 'lladdr', extHostMac, 'dev', 'eth0', 'nud', 'permanent']);

  // kube-proxy's part: Service 10.96.0.10:80 → the backend pod's :8080, DNAT in the root namespace.
  const backend = pods.find((p) => p.labels.app === 'api');
  if (!backend) throw new Error('the topology needs a pod labelled app=api as the Service backend');
  const service = { name: 'api', namespace: backend.namespace, ipv4: '10.96.0.10', port: 80, backend, targetPort: 8080 };
  run('nft', ['-f', '-'], {
    input: `table ip ${PREFIX}_nat {
  chain prerouting { type nat hook prerouting priority dstnat; ip daddr ${service.ipv4} tcp dport ${service.port} dnat to ${backend.ipv4}:${service.targetPort}; }
}
`,
  });
  return { nodes, pods, external, service, root };
}

function removeCgroupTree(path: string): void {
  if (!existsSync(path)) return;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroupTree(join(path, entry.name));
  }
  // Move any straggler to the root cgroup so the directory can go.
  const procs = join(path, 'cgroup.procs');
  if (existsSync(procs)) {
    for (const pid of readFileSync(procs, 'utf8').split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (let i = 0; i < 50; i++) {
    try {
      rmdirSync(path);
      return;
    } catch {
      execFileSync('sleep', ['0.1']);
    }
  }
}

/** Removes everything createTopology made (also what a crashed earlier run left). */
export function destroyTopology(): void {
  for (const ns of run('ip', ['netns', 'list'], { allowFail: true }).split('\n')) {
    const name = ns.split(' ')[0];
    if (name?.startsWith(`${PREFIX}-`)) run('ip', ['netns', 'del', name], { allowFail: true });
  }
  for (const line of run('ip', ['-o', 'link', 'show'], { allowFail: true }).split('\n')) {
    const dev = /^\d+: ([^:@]+)/.exec(line)?.[1];
    if (dev?.startsWith(PREFIX)) run('ip', ['link', 'del', dev], { allowFail: true });
  }
  run('nft', ['delete', 'table', 'ip', `${PREFIX}_nat`], { allowFail: true });
  removeCgroupTree(join(cgroup2Mount(), `${PREFIX}-e2e`));
}

/** Writes a pid into a cgroup. */
export function joinCgroup(cgroup: string, pid: number): void {
  writeFileSync(join(cgroup, 'cgroup.procs'), String(pid));
}
