// Two simulated nodes, the whole pipeline as real processes (capture and process-enricher per
// node, one tagger, two joiners, one exporter, real NATS and Redis, the test Kubernetes API), and
// real traffic: every exported record is checked against a packet capture of the pods' links.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Vantage, IpProtocol, encodeFlowBatch, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import { childEnv, freePort, startKubeApiServer, startNatsServer, startRedisServer } from '@kappa/testing';
import type { KubeApiServer, TestServer } from '@kappa/testing';
import { describeCluster } from '../src/cluster.js';
import { conversationTotals, readPackets, startCapture, stopCapture } from '../src/ground-truth.js';
import type { Capture } from '../src/ground-truth.js';
import { HeartbeatWatch, crashAndRestart, isRunning, kappa, logTail, startService, stopService, unexpectedExits } from '../src/services.js';
import type { RunningService } from '../src/services.js';
import { createTopology, destroyTopology } from '../src/topology.js';
import type { Pod, Topology } from '../src/topology.js';

const TCP = 6;
const UDP = 17;
const MiB = 1024 * 1024;
/**
 * After the faults, the test's nats-server is restarted to take messages up to 12 MiB (operators
 * raise max_payload; NATS's default is 1 MiB), so the 10 MiB messages really reach the stages.
 */
const MAX_PAYLOAD = 12 * MiB;
let natsConfig = '';
const trafficScript = join(import.meta.dirname, '../src/traffic.mjs');

interface JsonEndpoint {
  ip: string;
  port?: number;
  backendIp?: string;
  backendPort?: number;
  process?: { pid?: number; name?: string; cmdline?: string; containerId?: string };
  kube?: { node?: string; objectName?: string; objectNamespace?: string; objectType?: string; workloadName?: string; workloadKind?: string; serviceName?: string };
}
interface JsonRecord {
  id?: string;
  node: string;
  vantage: 'VANTAGE_SRC' | 'VANTAGE_DST';
  protocol: string;
  src: JsonEndpoint;
  dst: JsonEndpoint;
  bytes?: string;
  packets?: string;
  reverseBytes?: string;
  reversePackets?: string;
  joined?: boolean;
}

interface Conversation {
  label: string;
  protocol: number;
  client: Pod;
  clientPid: number;
  clientPort: number;
  /** Address the client dialed. */
  dst: { ip: string; port: number };
  /** Where it really ended (differs for the Service). */
  server: { pod: Pod | undefined; ip: string; port: number; pid: number | undefined };
  /** One of the Service kinds (and the hostNetwork pod) the tagger must tag right. */
  serviceKind?: 'node-port' | 'load-balancer-ip' | 'external-ip' | 'headless' | 'host-network';
}

let topology: Topology;
let nats: TestServer;
let redis: TestServer;
let api: KubeApiServer;
let workDir: string;
let jsonl: string;
const services: RunningService[] = [];
const captures = new Map<string, Capture>();
const servers = new Map<string, { pid: number; kill(): void }>();
const conversations: Conversation[] = [];
let records: JsonRecord[] = [];
/** Every heartbeat the stages sent during the test (their own account of when each process started). */
let heartbeats: HeartbeatWatch | undefined;
/** The kernel's name (comm) of the test's traffic processes, as /proc shows it. */
let trafficComm = '';
/** Every capture file of each pod link (one per part of the test), and their packets once read. */
const pcapFiles = new Map<string, string[]>();
const packetsOf = new Map<string, ReturnType<typeof readPackets>>();
function wire(podName: string) {
  if (!packetsOf.has(podName)) packetsOf.set(podName, (pcapFiles.get(podName) ?? []).flatMap((file) => readPackets(file)));
  return packetsOf.get(podName)!;
}

async function startLinkCaptures(part: string): Promise<void> {
  const links: [string, string][] = [...topology.pods.map((p): [string, string] => [p.name, p.hostVeth]), ['external', topology.external.hostVeth]];
  for (const [name, device] of links) {
    const file = join(workDir, `${name}-${part}.pcap`);
    captures.set(name, await startCapture(topology.hostNetns, device, file));
    pcapFiles.set(name, [...(pcapFiles.get(name) ?? []), file]);
  }
}

const podSpecs = [
  { name: 'web-1', namespace: 'shop', node: 'node-a' as const, host: 11, workload: 'web', workloadKind: 'Deployment' as const, labels: { app: 'web' } },
  { name: 'web-2', namespace: 'shop', node: 'node-a' as const, host: 12, workload: 'web', workloadKind: 'Deployment' as const, labels: { app: 'web' } },
  { name: 'api-1', namespace: 'shop', node: 'node-b' as const, host: 11, workload: 'api', workloadKind: 'Deployment' as const, labels: { app: 'api' } },
];

/** Runs traffic.mjs in a pod: moved into the pod's cgroup before it execs, then into its netns. */
function runInPod(where: { netns: string; cgroup?: string }, args: string[]): { pid: number; output: Promise<string>; started: Promise<void>; kill(): void } {
  const enterCgroup = where.cgroup ? `echo $$ > ${where.cgroup}/cgroup.procs && ` : '';
  const child = spawn('sh', ['-c', `${enterCgroup}exec ip netns exec ${where.netns} "$0" "$@"`, process.execPath, trafficScript, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv(),
  });
  let out = '';
  let markStarted = () => undefined as void;
  const started = new Promise<void>((resolve) => (markStarted = resolve));
  const onData = (d: Buffer) => {
    out += d.toString();
    if (/serving/.test(out)) markStarted();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const output = new Promise<string>((resolve) => child.once('exit', () => resolve(out)));
  return { pid: child.pid ?? -1, output, started, kill: () => child.kill('SIGKILL') };
}

/** `serve <tcp port> <udp port> <reply bytes>` in a pod (or, for a hostNetwork pod, the host namespace). */
async function startServer(name: string, where: { netns: string; cgroup?: string }, serve: string[] = ['8080', '9090', '3000']): Promise<void> {
  const server = runInPod(where, ['serve', ...serve]);
  servers.set(name, server);
  await Promise.race([server.started, server.output.then((out) => Promise.reject(new Error(`server in ${name} exited: ${out}`)))]);
}

async function converse(label: string, protocol: number, client: Pod, dst: { ip: string; port: number }, server: Conversation['server']) {
  const args = protocol === TCP ? ['tcp', dst.ip, String(dst.port), '40000'] : ['udp', dst.ip, String(dst.port), '20', '300'];
  await converseWith(label, protocol, client, dst, server, args);
}

async function converseWith(label: string, protocol: number, client: Pod, dst: { ip: string; port: number }, server: Conversation['server'], args: string[]) {
  const run = runInPod(client, args);
  const output = await run.output;
  const port = Number(/local (\d+)/.exec(output)?.[1]);
  if (!port || !/done/.test(output)) throw new Error(`${label}: traffic failed: ${output}`);
  conversations.push({ label, protocol, client, clientPid: run.pid, clientPort: port, dst, server });
}

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${services.map((s) => `--- ${s.name}\n${logTail(s, 15)}`).join('\n')}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

function readRecords(): JsonRecord[] {
  if (!existsSync(jsonl)) return [];
  return readFileSync(jsonl, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as JsonRecord);
}

function recordsOf(c: Conversation, vantage: 'VANTAGE_SRC' | 'VANTAGE_DST'): JsonRecord[] {
  const proto = c.protocol === TCP ? 'IP_PROTOCOL_TCP' : 'IP_PROTOCOL_UDP';
  const dst = vantage === 'VANTAGE_SRC' ? c.dst : { ip: c.server.ip, port: c.server.port };
  return records.filter(
    (r) =>
      r.vantage === vantage && r.protocol === proto &&
      r.src.ip === (c.dst.ip.includes(':') ? c.client.ipv6 : c.client.ipv4) && (r.src.port ?? 0) === c.clientPort &&
      r.dst.ip === dst.ip && (r.dst.port ?? 0) === dst.port,
  );
}

function sum(rs: JsonRecord[]) {
  const n = (v: string | undefined) => Number(v ?? 0);
  return rs.reduce(
    (t, r) => ({ bytes: t.bytes + n(r.bytes), packets: t.packets + n(r.packets), reverseBytes: t.reverseBytes + n(r.reverseBytes), reversePackets: t.reversePackets + n(r.reversePackets) }),
    { bytes: 0, packets: 0, reverseBytes: 0, reversePackets: 0 },
  );
}

/**
 * Ends a part of the test: a few intervals pass, the captures stop (each drains one last time on
 * SIGTERM), the exporter's file stops growing and the joiner's wait has passed; then the records
 * and the link captures are read.
 */
async function finishPart(): Promise<void> {
  await new Promise((r) => setTimeout(r, 5000));
  for (const s of services.filter((s) => s.app === 'capture')) expect(await stopService(s)).toBe(0);
  let last = -1;
  await until('the exporter to write every record', () => {
    const size = existsSync(jsonl) ? statSync(jsonl).size : 0;
    const stable = size > 0 && size === last;
    last = size;
    return stable ? true : undefined;
  }, 120_000).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 6000)); // join wait (2 × 2 s) plus a sweep
  records = readRecords();
  packetsOf.clear();
  for (const c of captures.values()) await stopCapture(c);
}

/** Each conversation and vantage whose exported totals differ from its pod link's capture. */
function conservationProblems(list: Conversation[]): string[] {
  const problems: string[] = [];
  for (const c of list) {
    const clientIp = c.dst.ip.includes(':') ? c.client.ipv6 : c.client.ipv4;
    const vantages: ['VANTAGE_SRC' | 'VANTAGE_DST', string, { ip: string; port: number }][] = [['VANTAGE_SRC', c.client.name, c.dst]];
    if (c.server.pod) vantages.push(['VANTAGE_DST', c.server.pod.name, { ip: c.server.ip, port: c.server.port }]);
    for (const [vantage, podName, dst] of vantages) {
      const truth = conversationTotals(wire(podName), c.protocol, { ip: clientIp, port: c.clientPort }, dst);
      const got = sum(recordsOf(c, vantage));
      if (JSON.stringify(got) !== JSON.stringify(truth)) problems.push(`${c.label} at ${vantage}: exported ${JSON.stringify(got)}, wire ${JSON.stringify(truth)}`);
    }
  }
  return problems;
}

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'kappa-e2e-'));
  jsonl = join(workDir, 'flows.jsonl');
  topology = createTopology(podSpecs);
  natsConfig = join(workDir, 'nats.conf');
  writeFileSync(natsConfig, '# NATS defaults until the 10 MiB part of the test\n');
  [nats, redis, api] = await Promise.all([startNatsServer({ args: ['-c', natsConfig] }), startRedisServer(), startKubeApiServer()]);
  describeCluster(api, topology);
  // Heard from the first beat on, through the nats-server restart.
  heartbeats = await HeartbeatWatch.start(nats.url);

  await startLinkCaptures('part1');

  const natsUrl = `--nats-url=${nats.url}`;
  const observerPort = await freePort();
  const common = [natsUrl, '--metrics-port=0'];
  // One JSON Lines file for the whole test (the 10 MiB batch alone writes ~80 MB; no rotation).
  services.push(startService('exporter', 'exporter', [...common, `--jsonl=${jsonl}`, `--jsonl-max-bytes=${2 ** 30}`, `--observer-port=${observerPort}`, '--observer-host=127.0.0.1'], workDir));
  for (const i of [1, 2]) services.push(startService(`joiner-${i}`, 'joiner', [...common, `--redis-url=${redis.url}`, '--interval=2s', `--instance=joiner-${i}`], workDir));
  services.push(startService('k8s-tagger', 'k8s-tagger', [...common, `--kubeconfig=${api.kubeconfigPath}`, '--grpc-port=0'], workDir));
  for (const node of Object.values(topology.nodes)) {
    // This run's own exec socket (the default /run/kappa/<node>/exec.sock is shared by every run on the machine).
    const execSocket = `--exec-socket=${join(workDir, `exec-${node.name}.sock`)}`;
    services.push(startService(`process-enricher-${node.name}`, 'process-enricher', [...common, `--node=${node.name}`, '--cri-socket=none', execSocket], workDir));
    services.push(startService(`capture-${node.name}`, 'capture', [...common, `--node=${node.name}`, `--cgroup=${node.cgroup}`, '--interval=2s', execSocket], workDir));
  }
  let status = '';
  await until('every stage ready in kappa status', async () => {
    const result = await kappa(['status', natsUrl]);
    status = result.stdout + result.stderr;
    return result.code === 0 ? true : undefined;
  }, 90_000).catch((error: Error) => {
    throw new Error(`${error.message}\nlast kappa status:\n${status}`);
  });
  await heartbeats.everyReady(services);
  process.env.KAPPA_E2E_OBSERVER = `127.0.0.1:${observerPort}`;

  const pod = (name: string) => topology.pods.find((p) => p.name === name)!;
  const [web1, web2, api1] = [pod('web-1'), pod('web-2'), pod('api-1')];
  await startServer('api-1', api1);
  await startServer('web-2', web2);
  await startServer('external', { netns: topology.external.netns });
  const at = (p: Pod | undefined, ip: string, port: number, pid: number | undefined) => ({ pod: p, ip, port, pid });
  const apiPid = servers.get('api-1')!.pid;
  // Node 24 names its main thread "MainThread": that is the comm the kernel reports.
  trafficComm = readFileSync(`/proc/${apiPid}/comm`, 'utf8').trim();
  const web2Pid = servers.get('web-2')!.pid;
  await converse('pod→pod across nodes, TCP/IPv4', TCP, web1, { ip: api1.ipv4, port: 8080 }, at(api1, api1.ipv4, 8080, apiPid));
  await converse('pod→pod across nodes, TCP/IPv6', TCP, web1, { ip: api1.ipv6, port: 8080 }, at(api1, api1.ipv6, 8080, apiPid));
  await converse('pod→pod across nodes, UDP/IPv4', UDP, web1, { ip: api1.ipv4, port: 9090 }, at(api1, api1.ipv4, 9090, apiPid));
  await converse('pod→pod across nodes, UDP/IPv6', UDP, web1, { ip: api1.ipv6, port: 9090 }, at(api1, api1.ipv6, 9090, apiPid));
  await converse('pod→pod on one node, TCP/IPv4', TCP, web1, { ip: web2.ipv4, port: 8080 }, at(web2, web2.ipv4, 8080, web2Pid));
  await converse('pod→pod on one node, UDP/IPv6', UDP, web1, { ip: web2.ipv6, port: 9090 }, at(web2, web2.ipv6, 9090, web2Pid));
  await converse('pod→Service', TCP, web1, { ip: topology.service.ipv4, port: 80 }, at(api1, api1.ipv4, 8080, apiPid));
  await converse('pod→external, TCP/IPv4', TCP, web1, { ip: topology.external.ipv4, port: 8080 }, at(undefined, topology.external.ipv4, 8080, undefined));
  await converse('pod→external, UDP/IPv6', UDP, web1, { ip: topology.external.ipv6, port: 9090 }, at(undefined, topology.external.ipv6, 9090, undefined));

  // Every other Service kind, DNAT'd by the nftables maps kube-proxy uses, and a hostNetwork pod.
  const { loadBalancer: lb, hostNetwork: agent } = topology.kinds;
  await startServer('node-agent-b', { netns: topology.hostNetns, cgroup: agent.cgroup }, [String(agent.port), '9101', '3000']);
  const agentPid = servers.get('node-agent-b')!.pid;
  // Second servers in the api and web-2 pods, on the Services' target port.
  await startServer('api-1-lb', api1, [String(lb.targetPort), '3001', '3000']);
  await startServer('web-2-peer', web2, [String(topology.kinds.headless.port), '3001', '3000']);
  const [apiLbPid, web2PeerPid] = [servers.get('api-1-lb')!.pid, servers.get('web-2-peer')!.pid];
  const kind = async (serviceKind: NonNullable<Conversation['serviceKind']>, label: string, dst: { ip: string; port: number }, server: Conversation['server']) => {
    const before = conversations.length;
    await converse(label, TCP, web1, dst, server);
    conversations[before]!.serviceKind = serviceKind;
  };
  const toLb = at(api1, api1.ipv4, lb.targetPort, apiLbPid);
  await kind('node-port', 'pod→NodePort on the other node', { ip: topology.nodes['node-b'].gateway4, port: lb.nodePort }, toLb);
  await kind('load-balancer-ip', 'pod→LoadBalancer ingress IP', { ip: lb.ingressIP, port: lb.port }, toLb);
  await kind('external-ip', 'pod→Service external IP', { ip: lb.externalIP, port: lb.port }, toLb);
  await kind('headless', 'pod→headless Service pod', { ip: web2.ipv4, port: topology.kinds.headless.port }, at(web2, web2.ipv4, topology.kinds.headless.port, web2PeerPid));
  await kind('host-network', 'pod→hostNetwork pod on node-b', { ip: agent.ip, port: agent.port }, at(undefined, agent.ip, agent.port, agentPid));

  await finishPart();
}, 300_000);

/** A failed test keeps the work folder (services' logs, flows.jsonl, link captures) and says where. */
let keepWorkDir = false;
afterEach((context) => {
  if (context.task.result?.state === 'fail') keepWorkDir = true;
});

afterAll(async () => {
  for (const s of servers.values()) s.kill();
  // Capture with SIGTERM (detach, unpin): a SIGKILLed capture leaves its pinned maps and links in
  // /sys/fs/bpf/kappa when a failed test ends here with captures still running.
  await Promise.all(services.map((s) => stopService(s, s.app === 'capture' ? 'SIGTERM' : 'SIGKILL')));
  await heartbeats?.close();
  await Promise.all([nats?.stop(), redis?.stop(), api?.close()]);
  if (topology) destroyTopology(topology);
  if (workDir && keepWorkDir) console.error(`two-nodes: a test failed; logs, flows.jsonl and captures kept in ${workDir}`);
  else if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('two nodes end to end', () => {
  it('keeps every stage running through the test', () => {
    for (const s of services.filter((s) => s.app !== 'capture')) expect(isRunning(s), `${s.name}\n${logTail(s)}`).toBe(true);
  });

  it('exports, for every conversation and vantage, exactly the bytes and packets on the wire', () => {
    expect(conservationProblems(conversations)).toEqual([]);
  });

  it('joins every cross-node and same-node conversation: two records, each with both ends\' pod, workload, namespace, node, process and container', () => {
    for (const c of conversations.filter((c) => c.server.pod && !c.serviceKind)) {
      const server = c.server.pod!;
      for (const vantage of ['VANTAGE_SRC', 'VANTAGE_DST'] as const) {
        const rs = recordsOf(c, vantage);
        expect(rs.length, `${c.label} ${vantage}`).toBeGreaterThan(0);
        for (const r of rs) {
          expect(r.node).toBe(vantage === 'VANTAGE_SRC' ? c.client.node : server.node);
          expect(r.joined, `${c.label} ${vantage} joined`).toBe(true);
          expect(r.src.kube).toMatchObject({ objectName: c.client.name, objectNamespace: 'shop', workloadName: c.client.workload, node: c.client.node, objectType: 'pod' });
          expect(r.src.process).toMatchObject({ pid: c.clientPid, containerId: c.client.containerId });
          // Enriched while it ran: node; after it exited: what the kernel stamped (its main thread).
          expect(['node', trafficComm]).toContain(r.src.process?.name);
          // The clients exit right after their conversation, before enrichment, so only what the
          // kernel stamped (pid, comm, cgroup → container) is theirs; the servers' command lines are known.
          expect(r.dst.process?.cmdline).toContain('traffic.mjs serve 8080 9090');
          expect(r.dst.kube).toMatchObject({ objectName: server.name, objectNamespace: 'shop', workloadName: server.workload, node: server.node });
          // A running Node process is named node, not after its renamed main thread.
          expect(r.dst.process).toMatchObject({ pid: c.server.pid, name: 'node', containerId: server.containerId });
        }
      }
    }
  });

  it('attributes the Service conversation to the backend pod that answered', () => {
    const c = conversations.find((c) => c.label === 'pod→Service')!;
    const [client] = recordsOf(c, 'VANTAGE_SRC');
    expect(client?.dst).toMatchObject({ ip: topology.service.ipv4, port: 80, backendIp: c.server.ip, backendPort: 8080 });
    expect(client?.dst.kube).toMatchObject({ objectName: 'api-1', serviceName: 'api' });
    expect(client?.joined).toBe(true);
    const [backend] = recordsOf(c, 'VANTAGE_DST');
    expect(backend?.src.kube?.objectName).toBe('web-1');
  });

  it('tags both ends of every Service kind (NodePort, LoadBalancer IP, external IP, headless) and of a hostNetwork pod, and joins them', () => {
    const { loadBalancer: lb, headless, hostNetwork: agent } = topology.kinds;
    const lbBackend = { objectType: 'pod', objectName: 'api-1', node: 'node-b', serviceName: lb.name, serviceNamespace: lb.namespace };
    // The client's record names the Service address it dialed; once joined it carries the pod that
    // answered (backend_ip/port, as for the ClusterIP above): a join that only happens when the
    // tagger tagged that address as the Service.
    const lbService = lbBackend;
    const agentPod = { objectType: 'pod', objectName: agent.name, objectNamespace: agent.namespace, workloadKind: 'DaemonSet', workloadName: agent.workload, node: agent.node };
    const expected: Record<NonNullable<Conversation['serviceKind']>, { remote: object; server: object }> = {
      'node-port': { remote: lbService, server: lbBackend },
      'load-balancer-ip': { remote: lbService, server: lbBackend },
      'external-ip': { remote: lbService, server: lbBackend },
      headless: {
        remote: { objectType: 'pod', objectName: 'web-2', node: 'node-a', serviceName: headless.name },
        server: { objectType: 'pod', objectName: 'web-2', node: 'node-a', serviceName: headless.name, containerName: 'web' },
      },
      'host-network': { remote: agentPod, server: { ...agentPod, containerName: agent.containerName } },
    };
    const kinds = conversations.filter((c) => c.serviceKind);
    expect(kinds.map((c) => c.serviceKind).sort()).toEqual(Object.keys(expected).sort());
    for (const c of kinds) {
      const want = expected[c.serviceKind!];
      const client = recordsOf(c, 'VANTAGE_SRC');
      const server = recordsOf(c, 'VANTAGE_DST');
      expect(client.length, `${c.label}: client records`).toBeGreaterThan(0);
      expect(server.length, `${c.label}: server records`).toBeGreaterThan(0);
      for (const r of client) {
        expect(r.src.kube, `${c.label} SRC src`).toMatchObject({ objectType: 'pod', objectName: 'web-1', node: 'node-a' });
        expect(r.dst.kube, `${c.label} SRC dst`).toMatchObject(want.remote);
        expect(r.joined, `${c.label} SRC joined`).toBe(true);
        if (c.dst.ip !== c.server.ip) expect(r.dst, `${c.label} backend`).toMatchObject({ backendIp: c.server.ip, backendPort: c.server.port });
      }
      for (const r of server) {
        expect(r.node).toBe(c.serviceKind === 'headless' ? 'node-a' : 'node-b');
        expect(r.src.kube, `${c.label} DST src`).toMatchObject({ objectType: 'pod', objectName: 'web-1' });
        expect(r.dst.kube, `${c.label} DST dst`).toMatchObject(want.server);
        expect(r.dst.process, `${c.label} DST process`).toMatchObject({ pid: c.server.pid });
        expect(r.joined, `${c.label} DST joined`).toBe(true);
      }
    }
  });

  it('exports external traffic unjoined, with the external address', () => {
    for (const c of conversations.filter((c) => !c.server.pod && !c.serviceKind)) {
      const rs = recordsOf(c, 'VANTAGE_SRC');
      expect(rs.length, c.label).toBeGreaterThan(0);
      for (const r of rs) {
        expect(r.joined ?? false).toBe(false);
        expect(r.dst.ip).toBe(c.dst.ip);
        expect(r.src.kube?.objectName).toBe('web-1');
      }
      expect(recordsOf(c, 'VANTAGE_DST')).toEqual([]);
    }
  });

  it('answers kappa observe with exactly the records matching its filters', async () => {
    const observer = process.env.KAPPA_E2E_OBSERVER ?? '';
    const { code, stdout } = await kappa(['observe', `--server=${observer}`, '--output=json', '--pod=api-1', '--vantage=dst']);
    expect(code).toBe(0);
    const got = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as JsonRecord);
    const expected = records.filter((r) => r.vantage === 'VANTAGE_DST' && (r.src.kube?.objectName === 'api-1' || r.dst.kube?.objectName === 'api-1'));
    expect(got.length).toBe(expected.length);
    expect(got.length).toBeGreaterThan(0);
  });
});

describe('two nodes end to end, through faults', () => {
  const faultConversations: Conversation[] = [];
  const killed = new Set<string>();
  let dlqStatus = '';
  /** What the test put on each stage's input subject that no stage can read. */
  const badInput = new Map<string, { stage: string; payloads: Uint8Array[] }>();
  /** kappa.dlq.<stage> as the server holds it: message count and each message's Kappa-Subject and size. */
  const dlqStored = new Map<string, { count: number; messages: { subject: string; size: number; truncatedFrom: string | undefined }[] }>();
  /** The 10 MiB batch of valid records: id → the bytes field it carries. */
  const bigBatch = { size: 0, ids: new Map<string, bigint>(), serverPid: 0 };

  beforeAll(async () => {
    const pod = (name: string) => topology.pods.find((p) => p.name === name)!;
    const [web1, web2, api1] = [pod('web-1'), pod('web-2'), pod('api-1')];
    const apiPid = servers.get('api-1')!.pid;
    const natsUrl = `--nats-url=${nats.url}`;
    const allReady = async () => {
      await until('every stage ready again', async () => ((await kappa(['status', natsUrl, '--wait=2500ms'])).code === 0 ? true : undefined), 90_000);
      await heartbeats!.everyReady(services);
    };
    // The captures (kappa's and tcpdump's) were stopped at the end of the first part: start them
    // again, node-b's 20 s late, as on a loaded node. No traffic may start before BOTH are attached
    // (a capture counts nothing sent before): kappa status alone said ready once node-a's was.
    await startLinkCaptures('part2');
    for (const s of services.filter((s) => s.app === 'capture')) {
      if (s.name === 'capture-node-b') s.nodeArgs = ['--import', 'data:text/javascript,await new Promise((r) => setTimeout(r, 20000))'];
      await crashAndRestart(s);
      s.nodeArgs = [];
    }
    await allReady();

    const service = (name: string) => services.find((s) => s.name === name)!;
    const kill = (name: string) => async () => {
      killed.add(name);
      await crashAndRestart(service(name));
    };
    const faults: [string, () => Promise<void>][] = [
      ['SIGKILL of process-enricher on node-a', kill('process-enricher-node-a')],
      ['SIGKILL of k8s-tagger', kill('k8s-tagger')],
      ['SIGKILL of joiner-1', kill('joiner-1')],
      ['SIGKILL of exporter', kill('exporter')],
      ['SIGKILL of capture on node-b', kill('capture-node-b')],
      ['nats-server restart', () => nats.restart()],
      ['redis-server restart', () => redis.restart()],
    ];
    for (const [label, fault] of faults) {
      const before = conversations.length;
      const traffic = Promise.all([
        converseWith(`${label}: TCP/IPv4`, TCP, web1, { ip: api1.ipv4, port: 8080 }, { pod: api1, ip: api1.ipv4, port: 8080, pid: apiPid }, ['tcp-slow', api1.ipv4, '8080', '20', '2000', '150']),
        converseWith(`${label}: UDP/IPv6`, UDP, web1, { ip: api1.ipv6, port: 9090 }, { pod: api1, ip: api1.ipv6, port: 9090, pid: apiPid }, ['udp', api1.ipv6, '9090', '100', '200', '30']),
      ]);
      await new Promise((r) => setTimeout(r, 1200));
      await fault();
      await traffic;
      faultConversations.push(...conversations.slice(before));
      await allReady();
    }

    // Bad input on every stage's input: garbage, a truncated FlowBatch, and 10 MiB of zeros, on a
    // nats-server that takes 10 MiB messages.
    writeFileSync(natsConfig, `max_payload: ${MAX_PAYLOAD}\n`);
    await nats.restart();
    await allReady();
    const nc = await connect({ servers: nats.url });
    expect(nc.info?.max_payload).toBe(MAX_PAYLOAD);
    const js = jetstream(nc);
    const good = encodeFlowBatch(newFlowBatch({ batchId: 'bad-input', records: [newFlowRecord({ node: 'node-a', bytes: 1n })] }));
    const inputs: [string, string][] = [
      ['kappa.flow.captured.node-a', 'process-enricher'],
      ['kappa.flow.enriched.p3.node-b', 'k8s-tagger'],
      ['kappa.flow.tagged.p3', 'joiner'],
      ['kappa.flow.joined.p3', 'exporter'],
    ];
    for (const [subject, stage] of inputs) {
      const payloads = [Uint8Array.from([0xff, 0xfe, 0xfd, 0x01]), good.subarray(0, good.length - 2), new Uint8Array(10 * MiB)];
      for (const payload of payloads) await js.publish(subject, payload, { timeout: 60_000 });
      badInput.set(subject, { stage, payloads });
    }

    // A 10 MiB batch of valid records, as a capture would send under this max_payload: web-2 (node-a,
    // a server only in this test, so no real conversation shares its groups) to api-1's ports 7 and
    // 8, each record its own conversation and id. Nothing answers from node-b: exported unjoined.
    bigBatch.serverPid = servers.get('web-2')!.pid;
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    const bigRecords = [];
    for (let i = 0; bigRecords.length === 0 || encodeFlowBatch(newFlowBatch({ batchId: 'kc-big', records: bigRecords })).length < 10 * MiB; ) {
      for (const end = i + 5000; i < end; i++) {
        const id = `kc-big-${i}`;
        bigBatch.ids.set(id, BigInt(1000 + i));
        bigRecords.push(
          newFlowRecord({
            id,
            node: 'node-a',
            vantage: Vantage.SRC,
            protocol: IpProtocol.TCP,
            observation: 'socket',
            startNs: nowNs,
            endNs: nowNs + 1_000_000n,
            firstSeenNs: nowNs,
            lastSeenNs: nowNs + 1_000_000n,
            src: { ip: web2.ipv4, port: 1 + (i % 50_000), process: { pid: bigBatch.serverPid, name: trafficComm } },
            dst: { ip: api1.ipv4, port: 7 + Math.floor(i / 50_000) },
            bytes: BigInt(1000 + i),
            packets: 3n,
          }),
        );
      }
    }
    const big = encodeFlowBatch(newFlowBatch({ batchId: 'kc-big', records: bigRecords }));
    bigBatch.size = big.length;
    await js.publish('kappa.flow.captured.node-a', big, { timeout: 60_000 });
    // Its records take a while through every stage and the join wait on a loaded machine: wait for
    // as many as were sent (or give up after 3 minutes; the test below says what is missing).
    const exportedBig = () => (existsSync(jsonl) ? readFileSync(jsonl, 'utf8').split('"id":"kc-big-').length - 1 : 0);
    for (const end = Date.now() + 180_000; Date.now() < end && exportedBig() < bigBatch.ids.size; ) await new Promise((r) => setTimeout(r, 2000));

    await finishPart();
    dlqStatus = (await kappa(['status', natsUrl])).stdout;
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info('KAPPA_DLQ', { subjects_filter: 'kappa.dlq.>' });
    for (const stage of new Set([...badInput.values()].map((b) => b.stage))) dlqStored.set(stage, { count: info.state.subjects?.[`kappa.dlq.${stage}`] ?? 0, messages: [] });
    // Read through an ordered consumer: a 10 MiB message does not fit in a JetStream API reply
    // (base64 in JSON, over max_payload), so jsm.streams.getMessage cannot fetch it.
    if (info.state.messages > 0) {
      const dlqMessages = await (await js.consumers.get('KAPPA_DLQ')).consume();
      for await (const m of dlqMessages) {
        dlqStored.get(m.subject.slice('kappa.dlq.'.length))?.messages.push({ subject: m.headers?.get('Kappa-Subject') ?? '', size: m.data.length, truncatedFrom: m.headers?.get('Kappa-Truncated-From') || undefined });
        if (m.seq >= info.state.last_seq) break;
      }
    }
    await nc.drain();
  }, 600_000);

  it('loses and doubles nothing: every conversation, before and during the faults, equals the wire', () => {
    expect(faultConversations.length).toBeGreaterThan(0);
    expect(conservationProblems(conversations)).toEqual([]);
  });

  it('restarts no service that the test did not kill: no exit of its own, and its heartbeats name one process start per launch', () => {
    for (const s of services) {
      const why = `${s.name}\n${logTail(s)}`;
      // The test's harness restarts nothing by itself: a service that died is seen here.
      expect(unexpectedExits(s), why).toEqual([]);
      if (s.app !== 'capture') {
        expect(isRunning(s), why).toBe(true);
        expect(s.exits.map((e) => e.signal), why).toEqual(killed.has(s.name) ? ['SIGKILL'] : []);
      }
      // The stage's own account: each process start is a new started_ns in its heartbeats.
      expect(heartbeats!.startsHeard(s), `${s.name}: process starts in its heartbeats`).toBe(1 + s.restarts);
    }
  });

  it('puts each undecodable message, 10 MiB ones too, exactly once in the DLQ of the stage that read it, whole, and kappa status counts them', () => {
    for (const [subject, { stage, payloads }] of badInput) {
      const stored = dlqStored.get(stage)!;
      // The server's own count of kappa.dlq.<stage>: exactly what the test sent that stage.
      expect(stored.count, `${stage} in KAPPA_DLQ`).toBe(payloads.length);
      expect(stored.messages.map((m) => m.subject), stage).toEqual(payloads.map(() => subject));
      expect(stored.messages.map((m) => m.size).sort((a, b) => a - b), stage).toEqual(payloads.map((p) => p.length).sort((a, b) => a - b));
      expect(stored.messages.filter((m) => m.truncatedFrom !== undefined), stage).toEqual([]);
      const rows = dlqStatus.split('\n').filter((l) => l.startsWith(stage));
      expect(rows.length, dlqStatus).toBeGreaterThan(0);
      for (const line of rows) {
        // Columns: STAGE INSTANCE NODE READY IN/s OUT/s LAG DLQ LOST UP (NODE may be empty): DLQ is third from the end.
        const columns = line.trim().split(/\s+/);
        expect(Number(columns[columns.length - 3]), `${stage}: ${line}`).toBe(payloads.length);
      }
    }
  });

  it('exports every record of a 10 MiB batch exactly once, tagged and enriched', () => {
    expect(bigBatch.size).toBeGreaterThanOrEqual(10 * MiB);
    const exported = records.filter((r) => r.id?.startsWith('kc-big-'));
    const ids = new Set(exported.map((r) => r.id));
    const missing = [...bigBatch.ids.keys()].filter((id) => !ids.has(id));
    expect({ missing: missing.length, firstMissing: missing.slice(0, 3), duplicated: exported.length - ids.size }).toEqual({ missing: 0, firstMissing: [], duplicated: 0 });
    const wrongBytes = exported.filter((r) => BigInt(r.bytes ?? 0) !== bigBatch.ids.get(r.id!));
    expect(wrongBytes.slice(0, 3)).toEqual([]);
    for (const r of [exported[0]!, exported[exported.length - 1]!]) {
      expect(r.src.kube, r.id).toMatchObject({ objectName: 'web-2', node: 'node-a' });
      expect(r.dst.kube, r.id).toMatchObject({ objectName: 'api-1', node: 'node-b' });
      expect(r.src.process, r.id).toMatchObject({ pid: bigBatch.serverPid, name: 'node' });
      expect(r.joined ?? false, r.id).toBe(false);
    }
  });
});
