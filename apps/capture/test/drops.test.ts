// Drops with the kernel's reason (bpf/kappa_drop.h, tracepoint skb:kfree_skb), against the
// kernel's own counters: nftables drops chosen packets of a TCP connection and of UDP
// conversations (the rule's named counters), and a port nobody listens on refuses datagrams
// (nstat UdpNoPorts / Udp6NoPorts, and their bytes on the wire). One traffic run in beforeAll,
// then one test per property.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { PacketCapture, TestCgroup, VethPair, nstat, run, runIn, spawnIn, uniqueName, wireCounts } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture } from './harness.js';
import { describePrivileged } from './privileges.js';

const SUBNET = 62;
const TCP_PORT = 7211;
const UDP_PORT = 7212;
const CLOSED_PORT = 7213;
const DATAGRAMS = 30;
const SIZE = 100;

/** Sends DATAGRAMS datagrams of SIZE bytes from one socket, then keeps it open a moment (ICMP errors land on it). */
const SEND = `const [host, port, count, size] = process.argv.slice(1);
const s = require('node:dgram').createSocket(host.includes(':') ? 'udp6' : 'udp4');
let left = Number(count);
s.bind(0, () => {
  const next = () => s.send(Buffer.alloc(Number(size), 7), Number(port), host, () => (--left > 0 ? setTimeout(next, 2) : setTimeout(() => { console.log(s.address().port); s.close(); }, 300)));
  next();
});`;

interface Dropped {
  packets: number;
  bytes: number;
  /** Packets per reason name, over the conversation's records. */
  reasons: Record<string, number>;
}

describePrivileged('drops with the kernel reason', () => {
  const cgroup = new TestCgroup(uniqueName('kc-drop'));
  const nodes = cgroup.child('nodes');
  // The namespaces' own kernel sockets (MLD, ND) belong to a cgroup capture does not watch.
  const outside = cgroup.child('outside');
  const dir = mkdtempSync(join(tmpdir(), 'kc-drop-'));
  let pair: VethPair;
  let records: FlowRecord[] = [];
  let pcap: PacketCapture;
  const counters: Record<string, { packets: number; bytes: number }> = {};
  let noPorts = { v4: 0, v6: 0 };
  let tcpPort = 0;
  const udpPorts = { v4: 0, v6: 0 };
  const closedPorts = { v4: 0, v6: 0 };

  const nft = (...args: string[]) => run('ip', ['netns', 'exec', pair.b.netns, 'nft', ...args]);
  const send = async (host: string, port: number) => Number((await runIn(pair.a.netns, nodes, process.execPath, ['-e', SEND, host, String(port), String(DATAGRAMS), String(SIZE)])).trim());

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kx-', subnet: SUBNET, cgroup: outside });
    nft('add', 'table', 'inet', 'kc_drop');
    nft('add', 'counter', 'inet', 'kc_drop', 'tcp_dropped');
    nft('add', 'counter', 'inet', 'kc_drop', 'udp_dropped');
    nft('add', 'chain', 'inet', 'kc_drop', 'input', '{ type filter hook input priority 0; policy accept; }');
    // Every 10th data segment of the first 300 the server receives (never a SYN, FIN or RST: each
    // would cost a retransmission timeout), and every 3rd datagram to the UDP port.
    nft('add', 'rule', 'inet', 'kc_drop', 'input', 'tcp', 'dport', String(TCP_PORT), 'tcp', 'flags', '&', '(syn|fin|rst)', '==', '0',
      'ct', 'original', 'packets', '<', '300', 'numgen', 'inc', 'mod', '10', '0', 'counter', 'name', 'tcp_dropped', 'drop');
    nft('add', 'rule', 'inet', 'kc_drop', 'input', 'udp', 'dport', String(UDP_PORT), 'numgen', 'inc', 'mod', '3', '0', 'counter', 'name', 'udp_dropped', 'drop');

    const capture = await startCapture(['--cgroup', nodes.path, '--interval', '1s', '--node', 'kx-node']);
    pcap = await PacketCapture.start(pair.a.netns, pair.a.ifname, join(dir, 'client.pcap'));
    const before = nstat(pair.b.netns);
    // A bound UDP socket in the server's namespace (made after capture started: its namespace is
    // then one whose socketless drops count).
    const udpServer = spawnIn(pair.b.netns, nodes, process.execPath, ['-e', `const s = require('node:dgram').createSocket({ type: 'udp6', ipv6Only: false }); s.bind(${UDP_PORT}, '::', () => console.error('listening')); setTimeout(() => s.close(), 60000);`]);
    await new Promise<void>((resolve) => udpServer.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
    const tcpServer = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', pair.b.ipv4, String(TCP_PORT), '1']);
    const tcpServerDone = new Promise((resolve) => tcpServer.once('exit', resolve));
    await new Promise<void>((resolve) => tcpServer.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));

    tcpPort = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, String(TCP_PORT), '0', '0', '0', String(500_000)])).localPort ?? 0;
    await tcpServerDone;
    udpPorts.v4 = await send(pair.b.ipv4, UDP_PORT);
    udpPorts.v6 = await send(pair.b.ipv6, UDP_PORT);
    closedPorts.v4 = await send(pair.b.ipv4, CLOSED_PORT);
    closedPorts.v6 = await send(pair.b.ipv6, CLOSED_PORT);
    udpServer.kill();

    const after = nstat(pair.b.netns);
    noPorts = { v4: (after['UdpNoPorts'] ?? 0) - (before['UdpNoPorts'] ?? 0), v6: (after['Udp6NoPorts'] ?? 0) - (before['Udp6NoPorts'] ?? 0) };
    for (const name of ['tcp_dropped', 'udp_dropped']) {
      const listed = JSON.parse(nft('-j', 'list', 'counter', 'inet', 'kc_drop', name)) as { nftables: { counter?: { packets: number; bytes: number } }[] };
      counters[name] = listed.nftables.find((item) => item.counter)!.counter!;
    }
    await pcap.stop();
    records = (await capture.stop()).records;
  });

  afterAll(async () => {
    await pcap?.stop();
    pair?.destroy();
    nodes.destroy();
    outside.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /** What the records of one conversation (either vantage, every interval) say was dropped. */
  function dropped(protocol: IpProtocol, clientPort: number, serverPort: number): Dropped {
    const sum: Dropped = { packets: 0, bytes: 0, reasons: {} };
    for (const r of records) {
      if (r.protocol !== protocol || !r.drops) continue;
      const ports = [r.src?.port, r.dst?.port];
      if (!(ports.includes(clientPort) && ports.includes(serverPort))) continue;
      sum.packets += Number(r.drops.packets);
      sum.bytes += Number(r.drops.bytes);
      sum.reasons[r.drops.reason] = (sum.reasons[r.drops.reason] ?? 0) + Number(r.drops.reasonPackets);
    }
    return sum;
  }

  it('counts the data segments nftables dropped of a TCP connection, packets and bytes as the rule counted them, reason NETFILTER_DROP', () => {
    const counted = counters['tcp_dropped']!;
    expect(counted.packets).toBeGreaterThan(5);
    expect(dropped(IpProtocol.TCP, tcpPort, TCP_PORT)).toEqual({ packets: counted.packets, bytes: counted.bytes, reasons: { NETFILTER_DROP: counted.packets } });
  });

  it('counts the datagrams nftables dropped of two UDP conversations (IPv4 and IPv6) as the rule counted them', () => {
    const counted = counters['udp_dropped']!;
    const v4 = dropped(IpProtocol.UDP, udpPorts.v4, UDP_PORT);
    const v6 = dropped(IpProtocol.UDP, udpPorts.v6, UDP_PORT);
    expect(v4.packets).toBeGreaterThan(0);
    expect(v6.packets).toBeGreaterThan(0);
    expect({ packets: v4.packets + v6.packets, bytes: v4.bytes + v6.bytes }).toEqual({ packets: counted.packets, bytes: counted.bytes });
    expect(counted.packets).toBe(Math.ceil((2 * DATAGRAMS) / 3));
    expect({ ...v4.reasons, ...v6.reasons }).toEqual({ NETFILTER_DROP: expect.any(Number) });
    expect((v4.reasons['NETFILTER_DROP'] ?? 0) + (v6.reasons['NETFILTER_DROP'] ?? 0)).toBe(counted.packets);
  });

  it('counts the datagrams a port nobody listens on refused as UdpNoPorts does, with their wire bytes, reason NO_SOCKET', () => {
    const v4 = dropped(IpProtocol.UDP, closedPorts.v4, CLOSED_PORT);
    const v6 = dropped(IpProtocol.UDP, closedPorts.v6, CLOSED_PORT);
    expect(noPorts).toEqual({ v4: DATAGRAMS, v6: DATAGRAMS });
    const wire = wireCounts(pcap.file);
    expect({ packets: v4.packets, bytes: v4.bytes, reasons: v4.reasons }).toEqual({
      packets: noPorts.v4,
      bytes: wire.get(`${IpProtocol.UDP} ${pair.a.ipv4} ${closedPorts.v4} ${pair.b.ipv4} ${CLOSED_PORT}`)?.bytes,
      reasons: { NO_SOCKET: noPorts.v4 },
    });
    expect({ packets: v6.packets, bytes: v6.bytes, reasons: v6.reasons }).toEqual({
      packets: noPorts.v6,
      bytes: wire.get(`${IpProtocol.UDP} ${pair.a.ipv6} ${closedPorts.v6} ${pair.b.ipv6} ${CLOSED_PORT}`)?.bytes,
      reasons: { NO_SOCKET: noPorts.v6 },
    });
  });

  it('puts the drops on the record of the vantage that dropped them, and on no other conversation', () => {
    const withDrops = records.filter((r) => r.drops && r.drops.packets > 0n);
    const ours = new Set([`${IpProtocol.TCP} ${tcpPort}`, ...[udpPorts.v4, udpPorts.v6, closedPorts.v4, closedPorts.v6].map((port) => `${IpProtocol.UDP} ${port}`)]);
    expect(withDrops.filter((r) => !ours.has(`${r.protocol} ${r.src?.port}`)).map((r) => `${r.protocol} ${r.src?.ip}:${r.src?.port} ${r.dst?.ip}:${r.dst?.port} ${r.drops?.reason} ${r.drops?.packets}`)).toEqual([]);
    // The TCP segments were dropped on their way into the server's namespace: its record has them, the client's none.
    const tcp = withDrops.filter((r) => r.protocol === IpProtocol.TCP);
    expect(tcp.length).toBeGreaterThan(0);
    expect(tcp.every((r) => r.vantage === Vantage.DST)).toBe(true);
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], [])).toEqual([]);
  });
});
