// Socket mode against ground truth: every conversation's bytes and packets, both directions,
// at both vantage points, equal a tcpdump of the veth the traffic crossed. One traffic run, then
// one test per feature, so a kernel that lacks one feature (tools/kernels) fails that row only.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { PacketCapture, TestCgroup, VethPair, runIn, spawnIn, uniqueName, wireCounts } from '@kappa/testing';
import type { WireCount } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture, totals } from './harness.js';
import type { CaptureRun, Totals } from './harness.js';
import { describePrivileged } from './privileges.js';

interface Conversation {
  protocol: IpProtocol;
  client: string;
  server: string;
  serverPort: number;
  clientPort: number;
}

describePrivileged('socket mode, offloads off', () => {
  const cgroup = new TestCgroup(uniqueName('kc-socket'));
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kc-socket-'));
  let pair: VethPair;
  let capture: CaptureRun;
  let pcap: PacketCapture;
  const conversations: Conversation[] = [];
  let wire = new Map<string, WireCount>();
  let seen = new Map<string, Totals>();
  let exitCode: number | null = null;

  /** Starts a server in namespace b; resolves once it listens, with a promise of its exit. */
  async function serve(args: string[]): Promise<{ exited: Promise<unknown> }> {
    const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, ...args]);
    const exited = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve());
      void exited.then((code) => reject(new Error(`server exited ${String(code)} before listening`)));
    });
    return { exited };
  }

  // TCP, UDP and ping over IPv4 then IPv6, all under one capture and one tcpdump of the veth.
  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 31, cgroup: nodes });
    capture = await startCapture(['--cgroup', cgroup.path, '--interval', '1s', '--node', 'kc-node']);
    pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'veth.pcap'));
    for (const [client, server] of [[pair.a.ipv4, pair.b.ipv4], [pair.a.ipv6, pair.b.ipv6]] as const) {
      const tcpServer = await serve(['tcp-server', server, '7001', '1']);
      const tcp = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', server, '7001', '20', '3000']));
      await tcpServer.exited;
      conversations.push({ protocol: IpProtocol.TCP, client, server, serverPort: 7001, clientPort: tcp.localPort ?? 0 });

      const udpServer = await serve(['udp-server', server, '7002', '25']);
      const udp = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'udp-client', server, '7002', '25', '900']));
      await udpServer.exited;
      conversations.push({ protocol: IpProtocol.UDP, client, server, serverPort: 7002, clientPort: udp.localPort ?? 0 });

      await runIn(pair.a.netns, nodes, 'ping', ['-c', '3', '-i', '0.2', '-s', '200', server]);
    }
    await pcap.stop();
    const stopped = await capture.stop();
    exitCode = stopped.code;
    wire = wireCounts(pcap.file);
    seen = totals(stopped.records);
  });

  afterAll(async () => {
    await pcap?.stop();
    await capture?.stop();
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const name = (c: Conversation) => `${c.protocol} ${c.client} ${c.clientPort} ${c.server} ${c.serverPort}`;
  const find = (protocol: IpProtocol, v6: boolean) => {
    const found = conversations.find((c) => c.protocol === protocol && c.client.includes(':') === v6);
    if (!found) throw new Error(`no ${IpProtocol[protocol]} conversation over IPv${v6 ? 6 : 4} was made`);
    return found;
  };

  it.each([
    ['TCP over IPv4', IpProtocol.TCP, false],
    ['TCP over IPv6', IpProtocol.TCP, true],
    ['UDP over IPv4', IpProtocol.UDP, false],
    ['UDP over IPv6', IpProtocol.UDP, true],
  ] as const)('counts %s exactly as the wire carried it, both directions, at both vantages', (_label, protocol, v6) => {
    expect(exitCode).toBe(0);
    const e = find(protocol, v6);
    const forward = wire.get(name(e));
    const backward = wire.get(`${e.protocol} ${e.server} ${e.serverPort} ${e.client} ${e.clientPort}`);
    expect(forward, `wire has ${name(e)} in ${[...wire.keys()].join(', ')}`).toBeDefined();
    for (const vantage of [Vantage.SRC, Vantage.DST]) {
      const got = seen.get(`${vantage} socket ${name(e)}`);
      expect(got, `record ${Vantage[vantage]} ${name(e)}`).toBeDefined();
      expect({ bytes: got?.bytes, packets: got?.packets, reverseBytes: got?.reverseBytes, reversePackets: got?.reversePackets }).toEqual({
        bytes: forward?.bytes, packets: forward?.packets, reverseBytes: backward?.bytes, reversePackets: backward?.packets,
      });
    }
  });

  it.each([
    ['IPv4', false],
    ['IPv6', true],
  ] as const)('measures application latency over %s: 20 request -> response pairs on the TCP client socket, none at the server', (_family, v6) => {
    const e = find(IpProtocol.TCP, v6);
    const src: FlowRecord[] = seen.get(`${Vantage.SRC} socket ${name(e)}`)?.records ?? [];
    const dst: FlowRecord[] = seen.get(`${Vantage.DST} socket ${name(e)}`)?.records ?? [];
    const count = src.reduce((n, r) => n + Number(r.appLatency?.count ?? 0n), 0);
    const sumUs = src.reduce((n, r) => n + Number(r.appLatency?.sumUs ?? 0n), 0);
    expect(count, `${name(e)}: ${JSON.stringify(src.map((r) => [String(r.appLatency?.count), r.src?.process?.cgroupId?.toString()]))}`).toBe(20);
    expect(sumUs).toBeGreaterThan(0);
    expect(dst.some((r) => r.appLatency)).toBe(false);
  });

  it.each([
    ['IPv4', false],
    ['IPv6', true],
  ] as const)('ORs the TCP flags of every record of a conversation over %s: SYN, ACK, PSH, FIN', (_family, v6) => {
    const e = find(IpProtocol.TCP, v6);
    const src = seen.get(`${Vantage.SRC} socket ${name(e)}`)?.records ?? [];
    expect(src.reduce((flags, r) => flags | (r.tcp?.flags ?? 0), 0)).toBe(0x02 | 0x10 | 0x08 | 0x01);
  });

  it.each([
    ['ICMP echo over IPv4', false],
    ['ICMPv6 echo', true],
  ] as const)('counts %s at the pinging socket, both directions, exactly as the wire', (_label, v6) => {
    const [client, server, protocol] = v6 ? [pair.a.ipv6, pair.b.ipv6, IpProtocol.ICMPV6] : [pair.a.ipv4, pair.b.ipv4, IpProtocol.ICMP];
    const pings = [...seen.entries()].filter(([key]) => key.startsWith(`${Vantage.SRC} socket ${protocol} ${client} `) && key.includes(` ${server} `));
    expect(pings).toHaveLength(1);
    const [key, got] = pings[0]!;
    const id = key.split(' ')[4];
    const forward = wire.get(`${protocol} ${client} ${id} ${server} ${id}`);
    const backward = wire.get(`${protocol} ${server} ${id} ${client} ${id}`);
    expect(forward, `wire has ${key} in ${[...wire.keys()].join(', ')}`).toBeDefined();
    expect({ bytes: got.bytes, packets: got.packets, reverseBytes: got.reverseBytes, reversePackets: got.reversePackets }).toEqual({
      bytes: forward?.bytes, packets: 3, reverseBytes: backward?.bytes, reversePackets: 3,
    });
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], [pair.a.netns, pair.b.netns])).toEqual([]);
  });
});
