// Interface mode: tc on the veth sees what no socket sees — the kernel answering a ping — and
// counts it exactly like the wire. A SIGKILLed instance leaves its tc filters behind (netlink
// attachments outlive the process); the next start replaces them and a clean stop removes them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { PacketCapture, TestCgroup, VethPair, run, runIn, spawnIn, uniqueName, wireCounts } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture, totals } from './harness.js';
import { describePrivileged } from './privileges.js';

describePrivileged('interface mode', () => {
  const cgroup = new TestCgroup(uniqueName('kc-iface'));
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kc-iface-'));
  let pair: VethPair;

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 61, cgroup: nodes });
  });
  afterAll(() => {
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const tcFilters = () =>
    ['ingress', 'egress'].map((d) => run('ip', ['netns', 'exec', pair.b.netns, 'tc', 'filter', 'show', 'dev', pair.b.ifname, d])).join('');
  // Capture runs inside namespace b, where the veth end it watches lives.
  const captureArgs = () => ['--mode', 'both', '--capture', pair.b.ifname, '--cgroup', cgroup.path, '--interval', '60s'];

  it('counts pings the kernel answers and TCP, per interface, exactly as the wire', async () => {
    const capture = await startCapture(captureArgs(), pair.b.netns);
    const pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'veth.pcap'));
    await runIn(pair.a.netns, nodes, 'ping', ['-c', '4', '-i', '0.2', '-s', '300', pair.b.ipv4]);
    await runIn(pair.a.netns, nodes, 'ping', ['-c', '4', '-i', '0.2', '-s', '300', pair.b.ipv6]);
    const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', pair.b.ipv6, '7020', '1']);
    const serverDone = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
    const tcp = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv6, '7020', '5', '2000']));
    await serverDone;
    await pcap.stop();
    expect(tcFilters()).toContain('kappa_tc_');
    const { records, code } = await capture.stop();
    expect(code).toBe(0);
    expect(tcFilters()).toBe('');

    const wire = wireCounts(pcap.file);
    const seen = totals(records);
    const expectations = [
      ...[[IpProtocol.ICMP, pair.a.ipv4, pair.b.ipv4], [IpProtocol.ICMPV6, pair.a.ipv6, pair.b.ipv6]].map(([protocol, a, b]) => {
        const [key] = [...wire.keys()].filter((k) => k.startsWith(`${protocol} ${a} `));
        const id = key?.split(' ')[2];
        return { protocol: Number(protocol), a: String(a), b: String(b), aPort: id, bPort: id };
      }),
      { protocol: IpProtocol.TCP, a: pair.a.ipv6, b: pair.b.ipv6, aPort: String(tcp.localPort), bPort: '7020' },
    ];
    for (const e of expectations) {
      const forward = wire.get(`${e.protocol} ${e.a} ${e.aPort} ${e.b} ${e.bPort}`);
      const backward = wire.get(`${e.protocol} ${e.b} ${e.bPort} ${e.a} ${e.aPort}`);
      expect(forward, `wire has ${e.protocol} ${e.a} ${e.aPort}`).toBeDefined();
      // Namespace b accepted every one of these: DST at its interface.
      const got = seen.get(`${Vantage.DST} ${pair.b.ifname} ${e.protocol} ${e.a} ${e.aPort} ${e.b} ${e.bPort}`);
      expect({ bytes: got?.bytes, packets: got?.packets, reverseBytes: got?.reverseBytes, reversePackets: got?.reversePackets }, `interface record ${e.protocol}`).toEqual({
        bytes: forward?.bytes, packets: forward?.packets, reverseBytes: backward?.bytes, reversePackets: backward?.packets,
      });
    }
  });

  it('replaces the tc filters a SIGKILLed instance left, and removes them on a clean stop', async () => {
    const crashed = await startCapture(captureArgs(), pair.b.netns);
    crashed.process.kill('SIGKILL');
    await crashed.stop();
    expect(tcFilters()).toContain('kappa_tc_'); // netlink filters outlive their process
    const next = await startCapture(captureArgs(), pair.b.netns);
    // One filter per direction, not two: the stale one was replaced.
    // (The kernel truncates program names to 15 characters: kappa_tc_ingres.)
    expect(tcFilters().match(/handle 0x6b61 kappa_tc_ingres:/g)).toHaveLength(1);
    expect(tcFilters().match(/handle 0x6b61 kappa_tc_egress:/g)).toHaveLength(1);
    const { code } = await next.stop();
    expect(code).toBe(0);
    expect(tcFilters()).toBe('');
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], [pair.a.netns, pair.b.netns])).toEqual([]);
  });
});
