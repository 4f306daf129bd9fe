// DNS names and drops end to end, on the two simulated nodes with the whole pipeline as real
// processes: a client pod resolves a name through a real resolver (dnsmasq, through a CNAME) and
// connects to the pod on the other node, and both vantages' records carry the name it asked for
// after the join; datagrams that nftables drops, and datagrams to a port nobody listens on, reach
// the exporter's JSON Lines as drops with the kernel's reason, exactly as the nft rule's counter
// and the kernel's UdpNoPorts counted them; kappa observe (the Observer over gRPC) returns the
// same names and drops.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsServer, TestCgroup, freePort, nstat, resolvConf, runIn, startKubeApiServer, startNatsServer, startRedisServer, uniqueName } from '@kappa/testing';
import type { KubeApiServer, TestServer } from '@kappa/testing';
import { describeCluster } from '../src/cluster.js';
import { settled, until } from '../src/pipeline.js';
import { HeartbeatWatch, kappa, logTail, startService, stopService, workspaceRoot } from '../src/services.js';
import type { RunningService } from '../src/services.js';
import { cgroup2Mount, createTopology, destroyTopology, run } from '../src/topology.js';
import type { Pod, Topology } from '../src/topology.js';

const trafficScript = join(import.meta.dirname, '../src/traffic.mjs');
const resolveScript = join(workspaceRoot, 'apps/capture/test/fixtures/resolve-connect.mjs');
const ZONE = 'shop.kappa.test';
/** The name the client asks for: a CNAME to the api pod's name. */
const ASKED = `www.${ZONE}`;
const TCP_PORT = 8080;
const UDP_PORT = 9090;
const CLOSED_PORT = 9191;
const DATAGRAMS = 30;

/** Sends DATAGRAMS datagrams of 100 bytes from one socket; prints its port. */
const SEND = `const [host, port, count] = process.argv.slice(1);
const s = require('node:dgram').createSocket('udp4');
let left = Number(count);
s.bind(0, () => {
  const next = () => s.send(Buffer.alloc(100, 7), Number(port), host, () => (--left > 0 ? setTimeout(next, 2) : setTimeout(() => { console.log(s.address().port); s.close(); }, 300)));
  next();
});`;

interface JsonEndpoint {
  ip: string;
  port?: number;
  peerDnsName?: string;
}
interface JsonRecord {
  id: string;
  vantage: 'VANTAGE_SRC' | 'VANTAGE_DST';
  protocol: string;
  src: JsonEndpoint;
  dst: JsonEndpoint;
  joined?: boolean;
  drops?: { packets?: string; bytes?: string; reason?: string; reasonPackets?: string };
  dns?: { queryName?: string; queries?: string; responses?: string; rcode?: number };
}

const podSpecs = [
  { name: 'web-1', namespace: 'shop', node: 'node-a' as const, host: 21, workload: 'web', workloadKind: 'Deployment' as const, labels: { app: 'web' } },
  { name: 'api-1', namespace: 'shop', node: 'node-b' as const, host: 21, workload: 'api', workloadKind: 'Deployment' as const, labels: { app: 'api' } },
];

let topology: Topology;
let nats: TestServer;
let heartbeats: HeartbeatWatch | undefined;
let redis: TestServer;
let api: KubeApiServer;
let dns: DnsServer | undefined;
let resolverCgroup: TestCgroup | undefined;
let undoResolv: (() => void) | undefined;
let workDir: string;
let jsonl: string;
let observer: string;
const services: RunningService[] = [];
let server: ReturnType<typeof spawn> | undefined;
let records: JsonRecord[] = [];
let client = { localPort: 0, remoteAddress: '' };
let droppedPort = 0;
let closedPort = 0;
let nftCounter = { packets: 0, bytes: 0 };
let noPorts = 0;

/** A pod's container cgroup as a TestCgroup (the topology made it; destroyTopology removes it). */
const cgroupOf = (pod: Pod) => new TestCgroup(pod.cgroup.slice(cgroup2Mount().length + 1));
const inPod = (pod: Pod, command: string, args: string[]) => runIn(pod.netns, cgroupOf(pod), command, args);

function readRecords(): JsonRecord[] {
  if (!existsSync(jsonl)) return [];
  return readFileSync(jsonl, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as JsonRecord);
}

/** The records of the UDP conversation from the client's port to the api pod's `port`, both vantages. */
const udpRecords = (clientPort: number, port: number) => records.filter((r) => r.protocol === 'IP_PROTOCOL_UDP' && r.src.port === clientPort && r.dst.port === port);

function droppedOf(rs: JsonRecord[]): { packets: number; bytes: number; reasons: Record<string, number> } {
  const sum = { packets: 0, bytes: 0, reasons: {} as Record<string, number> };
  for (const r of rs) {
    if (!r.drops) continue;
    sum.packets += Number(r.drops.packets ?? 0);
    sum.bytes += Number(r.drops.bytes ?? 0);
    const reason = r.drops.reason ?? '';
    sum.reasons[reason] = (sum.reasons[reason] ?? 0) + Number(r.drops.reasonPackets ?? 0);
  }
  return sum;
}

async function observe(...args: string[]): Promise<JsonRecord[]> {
  const result = await kappa(['observe', `--server=${observer}`, '--output=json', ...args]);
  expect(result.code, result.stderr).toBe(0);
  return result.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as JsonRecord);
}

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'kappa-e2e-dns-'));
  jsonl = join(workDir, 'flows.jsonl');
  topology = createTopology(podSpecs);
  [nats, redis, api] = await Promise.all([startNatsServer(), startRedisServer(), startKubeApiServer()]);
  heartbeats = await HeartbeatWatch.start(nats.url);
  describeCluster(api, topology);
  const pod = (name: string) => topology.pods.find((p) => p.name === name)!;
  const [web1, api1] = [pod('web-1'), pod('api-1')];

  // The resolver: dnsmasq on node-a's gateway, in a cgroup no capture watches.
  resolverCgroup = new TestCgroup(uniqueName('kpe-dns'));
  const resolver = topology.nodes['node-a'].gateway4;
  dns = await DnsServer.start({
    netns: topology.hostNetns,
    cgroup: resolverCgroup,
    listen: [resolver],
    zone: ZONE,
    hosts: [{ name: `api.${ZONE}`, addresses: [api1.ipv4, api1.ipv6] }],
    aliases: [{ name: ASKED, target: `api.${ZONE}` }],
  });
  undoResolv = resolvConf(web1.netns, [`nameserver ${resolver}`]);

  // nftables in the api pod drops every third datagram to its UDP port, counted by a named counter.
  const nft = (...args: string[]) => run('ip', ['netns', 'exec', api1.netns, 'nft', ...args]);
  nft('add', 'table', 'inet', 'kpe_drop');
  nft('add', 'counter', 'inet', 'kpe_drop', 'udp_dropped');
  nft('add', 'chain', 'inet', 'kpe_drop', 'input', '{ type filter hook input priority 0; policy accept; }');
  nft('add', 'rule', 'inet', 'kpe_drop', 'input', 'udp', 'dport', String(UDP_PORT), 'numgen', 'inc', 'mod', '3', '0', 'counter', 'name', 'udp_dropped', 'drop');

  const observerPort = await freePort();
  observer = `127.0.0.1:${observerPort}`;
  const natsUrl = `--nats-url=${nats.url}`;
  const common = [natsUrl, '--metrics-port=0'];
  services.push(startService('exporter', 'exporter', [...common, `--jsonl=${jsonl}`, `--observer-port=${observerPort}`, '--observer-host=127.0.0.1', '--prometheus=false'], workDir));
  services.push(startService('joiner', 'joiner', [...common, `--redis-url=${redis.url}`, '--interval=2s', '--instance=joiner-dns'], workDir));
  services.push(startService('k8s-tagger', 'k8s-tagger', [...common, `--kubeconfig=${api.kubeconfigPath}`, '--grpc-port=0'], workDir));
  for (const node of Object.values(topology.nodes)) {
    // This run's own exec socket (the default /run/kappa/<node>/exec.sock is shared by every run on the machine).
    const execSocket = `--exec-socket=${join(workDir, `exec-${node.name}.sock`)}`;
    services.push(startService(`process-enricher-${node.name}`, 'process-enricher', [...common, `--node=${node.name}`, '--cri-socket=none', execSocket], workDir));
    services.push(startService(`capture-${node.name}`, 'capture', [...common, `--node=${node.name}`, `--cgroup=${node.cgroup}`, '--interval=2s', execSocket], workDir));
  }
  await until('every stage ready in kappa status', async () => ((await kappa(['status', natsUrl])).code === 0 ? true : undefined), 90_000).catch((error: Error) => {
    throw new Error(`${error.message}\n${services.map((s) => `--- ${s.name}\n${logTail(s, 15)}`).join('\n')}`);
  });
  // Both captures attached (kappa status is content with one ready instance per stage).
  await heartbeats.everyReady(services);

  // The api pod's server, started after capture so its namespace is one whose socketless drops count.
  server = spawn('sh', ['-c', `echo $$ > ${api1.cgroup}/cgroup.procs && exec ip netns exec ${api1.netns} "$0" "$@"`, process.execPath, trafficScript, 'serve', String(TCP_PORT), String(UDP_PORT), '100'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    server!.stdout?.on('data', (d: Buffer) => d.toString().includes('serving') && resolve());
    server!.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });

  // Resolve through glibc (CNAME → A) as an application does, then connect to the address.
  const resolved = JSON.parse(await inPod(web1, process.execPath, [resolveScript, 'resolve', ASKED, '4'])) as { address?: string; error?: string };
  const output = await inPod(web1, process.execPath, [trafficScript, 'tcp', resolved.address ?? `unresolved-${resolved.error}`, String(TCP_PORT), '4000']);
  client = { localPort: Number(/local (\d+)/.exec(output)?.[1]), remoteAddress: resolved.address ?? '' };
  const before = nstat(api1.netns);
  droppedPort = Number((await inPod(web1, process.execPath, ['-e', SEND, api1.ipv4, String(UDP_PORT), String(DATAGRAMS)])).trim());
  closedPort = Number((await inPod(web1, process.execPath, ['-e', SEND, api1.ipv4, String(CLOSED_PORT), String(DATAGRAMS)])).trim());
  noPorts = (nstat(api1.netns).UdpNoPorts ?? 0) - (before.UdpNoPorts ?? 0);
  const listed = JSON.parse(nft('-j', 'list', 'counter', 'inet', 'kpe_drop', 'udp_dropped')) as { nftables: { counter?: { packets: number; bytes: number } }[] };
  nftCounter = listed.nftables.find((item) => item.counter)!.counter!;

  // A few intervals, then the captures stop (a last drain), the exporter's file settles and the join wait passes.
  await new Promise((r) => setTimeout(r, 5000));
  for (const s of services.filter((s) => s.app === 'capture')) expect(await stopService(s)).toBe(0);
  await settled('the exporter to write every record', () => readRecords().length, 1000, 60_000);
  await new Promise((r) => setTimeout(r, 6000)); // the join wait (2 × 2 s) plus a sweep
  records = readRecords();
}, 300_000);

afterAll(async () => {
  server?.kill('SIGKILL');
  await Promise.all(services.map((s) => stopService(s, s.app === 'capture' ? 'SIGTERM' : 'SIGKILL')));
  await dns?.stop();
  resolverCgroup?.destroy();
  undoResolv?.();
  await heartbeats?.close();
  await Promise.all([nats?.stop(), redis?.stop(), api?.close()]);
  if (topology) destroyTopology(topology);
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

describe('DNS names and drops end to end', () => {
  it('gives the name the client asked for (through a CNAME) to its connection at both vantages after the join', () => {
    const api1 = topology.pods.find((p) => p.name === 'api-1')!;
    expect(client.remoteAddress).toBe(api1.ipv4);
    const tcp = records.filter((r) => r.protocol === 'IP_PROTOCOL_TCP' && r.src.port === client.localPort && r.dst.ip === api1.ipv4 && r.dst.port === TCP_PORT);
    for (const vantage of ['VANTAGE_SRC', 'VANTAGE_DST'] as const) {
      const rs = tcp.filter((r) => r.vantage === vantage);
      expect(rs.length, vantage).toBeGreaterThan(0);
      for (const r of rs) {
        expect(r.joined, `${vantage} joined`).toBe(true);
        // The client's end names the server it resolved; the server's end resolved nothing.
        expect(r.src.peerDnsName, vantage).toBe(ASKED);
        expect(r.dst.peerDnsName ?? '', vantage).toBe('');
      }
    }
    // The exchange itself: the client's DNS conversation with the resolver, answered NOERROR.
    const exchanges = records.filter((r) => r.vantage === 'VANTAGE_SRC' && r.dst.port === 53 && r.dns?.queryName === ASKED);
    expect(exchanges.length).toBeGreaterThan(0);
    expect(exchanges.reduce((n, r) => n + Number(r.dns!.responses ?? 0), 0)).toBeGreaterThan(0);
    expect(exchanges.every((r) => (r.dns!.rcode ?? 0) === 0)).toBe(true);
  });

  it('carries the datagrams nftables dropped to JSON Lines as the rule counted them, reason NETFILTER_DROP', () => {
    expect(nftCounter.packets).toBe(DATAGRAMS / 3);
    expect(droppedOf(udpRecords(droppedPort, UDP_PORT))).toEqual({ packets: nftCounter.packets, bytes: nftCounter.bytes, reasons: { NETFILTER_DROP: nftCounter.packets } });
  });

  it('carries the datagrams a closed port refused as the kernel counted them (UdpNoPorts), reason NO_SOCKET', () => {
    expect(noPorts).toBe(DATAGRAMS);
    // 100 bytes of payload + 8 UDP + 20 IPv4.
    expect(droppedOf(udpRecords(closedPort, CLOSED_PORT))).toEqual({ packets: noPorts, bytes: noPorts * 128, reasons: { NO_SOCKET: noPorts } });
  });

  it('returns the same names and drops from kappa observe (the Observer over gRPC)', async () => {
    const named = await observe(`--to-fqdn=${ASKED}`, '--protocol=tcp');
    const wanted = records.filter((r) => r.protocol === 'IP_PROTOCOL_TCP' && r.src.peerDnsName === ASKED);
    expect(named.map((r) => r.id).sort()).toEqual(wanted.map((r) => r.id).sort());
    expect(new Set(named.map((r) => r.vantage))).toEqual(new Set(['VANTAGE_SRC', 'VANTAGE_DST']));
    for (const r of named) expect(r.src.peerDnsName).toBe(ASKED);
    const dropped = await observe('--verdict=dropped');
    const withDrops = records.filter((r) => Number(r.drops?.packets ?? 0) > 0);
    expect(withDrops.length).toBeGreaterThan(1);
    const dropsById = (rs: JsonRecord[]) => Object.fromEntries(rs.map((r) => [r.id, r.drops]));
    expect(dropsById(dropped)).toEqual(dropsById(withDrops));
  });
});
