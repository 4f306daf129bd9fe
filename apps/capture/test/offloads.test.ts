// Bytes and packets with TSO and GRO on: the client's and the server's sockets see super-packets
// (GSO on the way out, GRO on the way in), while a router namespace between them, with its own
// offloads off, puts the real segments on its links, where tcpdump reads them.
//   client ns ──veth (offloads on | router end: off)── router ns ──veth (off | on)── server ns
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { PacketCapture, TestCgroup, run, runIn, spawnIn, uniqueName, wireCounts } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture as startCaptureProcess, totals } from './harness.js';
import type { CaptureRun } from './harness.js';
import { describePrivileged } from './privileges.js';

describePrivileged('TSO and GRO on', () => {

  // Every capture a test starts is stopped after it, also when an assertion failed half-way.
  const started: CaptureRun[] = [];
  const startCapture = async (...args: Parameters<typeof startCaptureProcess>) => {
    const run = await startCaptureProcess(...args);
    started.push(run);
    return run;
  };
  afterEach(async () => {
    for (const run of started.splice(0)) await run.stop();
  });
  const cgroup = new TestCgroup(`kc-offloads-${process.pid}`);
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kc-offloads-'));
  const name = uniqueName('kc-off');
  const ns = { client: `${name}-c`, router: `${name}-r`, server: `${name}-s` };
  const ip = { client: '10.78.1.1', routerClient: '10.78.1.254', server: '10.78.2.1', routerServer: '10.78.2.254' };
  const inNs = (netns: string, ...args: string[]) => run('ip', ['netns', 'exec', netns, ...args]);

  beforeAll(async () => {
    // Namespaces made from inside the cgroup: their kernel sockets belong to it, like the pods'.
    for (const n of Object.values(ns)) await runIn(undefined, nodes, 'ip', ['netns', 'add', n]);
    run('ip', ['link', 'add', 'kc-c', 'netns', ns.client, 'type', 'veth', 'peer', 'name', 'kc-rc', 'netns', ns.router]);
    run('ip', ['link', 'add', 'kc-s', 'netns', ns.server, 'type', 'veth', 'peer', 'name', 'kc-rs', 'netns', ns.router]);
    const links: [string, string, string, boolean][] = [
      [ns.client, 'kc-c', `${ip.client}/24`, true],
      [ns.router, 'kc-rc', `${ip.routerClient}/24`, false],
      [ns.router, 'kc-rs', `${ip.routerServer}/24`, false],
      [ns.server, 'kc-s', `${ip.server}/24`, true],
    ];
    for (const [netns, ifname, address, offloads] of links) {
      // The ends of the sockets: TSO, GSO and GRO on. The router: segmentation off, so what
      // it forwards leaves as real segments; GRO on, so it also receives super-packets.
      inNs(netns, 'ethtool', '-K', ifname, 'tso', offloads ? 'on' : 'off', 'gso', offloads ? 'on' : 'off', 'gro', 'on');
      inNs(netns, 'ip', 'link', 'set', 'lo', 'up');
      inNs(netns, 'ip', 'addr', 'add', address, 'dev', ifname);
      inNs(netns, 'ip', 'link', 'set', ifname, 'up');
    }
    inNs(ns.router, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    inNs(ns.client, 'ip', 'route', 'add', 'default', 'via', ip.routerClient);
    inNs(ns.server, 'ip', 'route', 'add', 'default', 'via', ip.routerServer);
  });
  afterAll(() => {
    for (const n of Object.values(ns)) {
      try {
        run('ip', ['netns', 'del', n]);
      } catch {
        // not made
      }
    }
    nodes.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('counts the segments the wire carried, both directions, at both ends', { timeout: 180_000 }, async () => {
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s', '--node', name]);
    // The router's egress toward each end carries the real segments of one direction.
    const toServer = await PacketCapture.start(ns.router, 'kc-rs', join(dir, 'to-server.pcap'));
    const toClient = await PacketCapture.start(ns.router, 'kc-rc', join(dir, 'to-client.pcap'));
    const server = spawnIn(ns.server, nodes, process.execPath, [TRAFFIC, 'tcp-server', ip.server, '7090', '1']);
    const serverDone = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
    // 8 MB up and echoed back down.
    const report = parseReport(await runIn(ns.client, nodes, process.execPath, [TRAFFIC, 'tcp-client', ip.server, '7090', '0', '0', '0', String(8_000_000)]));
    await serverDone;
    await toServer.stop();
    await toClient.stop();
    const { records, code } = await capture.stop();
    expect(code).toBe(0);

    const forward = wireCounts(toServer.file).get(`${IpProtocol.TCP} ${ip.client} ${report.localPort} ${ip.server} 7090`);
    const backward = wireCounts(toClient.file).get(`${IpProtocol.TCP} ${ip.server} 7090 ${ip.client} ${report.localPort}`);
    // Thousands of segments: far more than the super-packets the sockets handled.
    expect(forward?.packets).toBeGreaterThan(5000);
    const seen = totals(records);
    for (const vantage of [Vantage.SRC, Vantage.DST]) {
      const got = seen.get(`${vantage} socket ${IpProtocol.TCP} ${ip.client} ${report.localPort} ${ip.server} 7090`);
      expect({ bytes: got?.bytes, packets: got?.packets, reverseBytes: got?.reverseBytes, reversePackets: got?.reversePackets }, Vantage[vantage]).toEqual({
        bytes: forward?.bytes, packets: forward?.packets, reverseBytes: backward?.bytes, reversePackets: backward?.packets,
      });
    }
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], Object.values(ns))).toEqual([]);
  });
});
