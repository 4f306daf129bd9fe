// Socket mode against ground truth: every conversation's bytes and packets, both directions,
// at both vantage points, equal a tcpdump of the veth the traffic crossed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { PacketCapture, TestCgroup, VethPair, runIn, spawnIn, uniqueName, wireCounts } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture, totals } from './harness.js';
import type { CaptureRun } from './harness.js';
import { describePrivileged } from './privileges.js';

describePrivileged('socket mode, offloads off', () => {
  const cgroup = new TestCgroup(uniqueName('kc-socket'));
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kc-socket-'));
  let pair: VethPair;
  let capture: CaptureRun;
  let pcap: PacketCapture;

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 31, cgroup: nodes });
    capture = await startCapture(['--cgroup', cgroup.path, '--interval', '1s', '--node', 'kc-node']);
    pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'veth.pcap'));
  });

  afterAll(async () => {
    await pcap?.stop();
    await capture?.stop();
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

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

  it('counts TCP, UDP and ICMP over IPv4 and IPv6 exactly as the wire carried them', async () => {
    const expected: { protocol: IpProtocol; client: string; server: string; serverPort: number; clientPort: number }[] = [];
    for (const [client, server] of [[pair.a.ipv4, pair.b.ipv4], [pair.a.ipv6, pair.b.ipv6]] as const) {
      const tcpServer = await serve(['tcp-server', server, '7001', '1']);
      const tcp = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', server, '7001', '20', '3000']));
      await tcpServer.exited;
      expected.push({ protocol: IpProtocol.TCP, client, server, serverPort: 7001, clientPort: tcp.localPort ?? 0 });

      const udpServer = await serve(['udp-server', server, '7002', '25']);
      const udp = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'udp-client', server, '7002', '25', '900']));
      await udpServer.exited;
      expected.push({ protocol: IpProtocol.UDP, client, server, serverPort: 7002, clientPort: udp.localPort ?? 0 });

      await runIn(pair.a.netns, nodes, 'ping', ['-c', '3', '-i', '0.2', '-s', '200', server]);
    }
    await pcap.stop();
    const { records, code } = await capture.stop();
    expect(code).toBe(0);
    const wire = wireCounts(pcap.file);
    const seen = totals(records);

    for (const e of expected) {
      const forward = wire.get(`${e.protocol} ${e.client} ${e.clientPort} ${e.server} ${e.serverPort}`);
      const backward = wire.get(`${e.protocol} ${e.server} ${e.serverPort} ${e.client} ${e.clientPort}`);
      expect(forward, `wire has ${e.protocol} ${e.client}:${e.clientPort} → ${e.server}:${e.serverPort} in ${[...wire.keys()].join(', ')}`).toBeDefined();
      for (const vantage of [Vantage.SRC, Vantage.DST]) {
        const got = seen.get(`${vantage} socket ${e.protocol} ${e.client} ${e.clientPort} ${e.server} ${e.serverPort}`);
        expect(got, `record ${Vantage[vantage]} ${e.protocol} ${e.client}:${e.clientPort}`).toBeDefined();
        expect({ bytes: got?.bytes, packets: got?.packets, reverseBytes: got?.reverseBytes, reversePackets: got?.reversePackets }).toEqual({
          bytes: forward?.bytes, packets: forward?.packets, reverseBytes: backward?.bytes, reversePackets: backward?.packets,
        });
      }
    }

    // 20 request -> response exchanges on each TCP client socket: 20 latency pairs, at SRC only.
    for (const e of expected.filter((x) => x.protocol === IpProtocol.TCP)) {
      const conversation = `${e.protocol} ${e.client} ${e.clientPort} ${e.server} ${e.serverPort}`;
      const src = seen.get(`${Vantage.SRC} socket ${conversation}`)?.records ?? [];
      const dst = seen.get(`${Vantage.DST} socket ${conversation}`)?.records ?? [];
      const count = src.reduce((n, r) => n + Number(r.appLatency?.count ?? 0n), 0);
      const sumUs = src.reduce((n, r) => n + Number(r.appLatency?.sumUs ?? 0n), 0);
      expect(count, `${conversation}: ${JSON.stringify(src.map((r) => [String(r.appLatency?.count), r.src?.process?.cgroupId?.toString()]))}`).toBe(20);
      expect(sumUs).toBeGreaterThan(0);
      expect(dst.some((r) => r.appLatency)).toBe(false);
      expect(src.reduce((flags, r) => flags | (r.tcp?.flags ?? 0), 0)).toBe(0x02 | 0x10 | 0x08 | 0x01); // SYN ACK PSH FIN
    }

    // ICMP echo: the pinging socket sees both directions exactly.
    for (const [client, server, protocol] of [[pair.a.ipv4, pair.b.ipv4, IpProtocol.ICMP], [pair.a.ipv6, pair.b.ipv6, IpProtocol.ICMPV6]] as const) {
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
    }
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], [pair.a.netns, pair.b.netns])).toEqual([]);
  });
});
