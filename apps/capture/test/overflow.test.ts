// 100 000 concurrent UDP conversations: all counted when the table is big enough, and when it
// is not, the overflow counter accounts for every packet that found no slot.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { TestCgroup, VethPair, run, runIn, uniqueName } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture } from './harness.js';
import { describePrivileged } from './privileges.js';

const CONVERSATIONS = 100_000;

describePrivileged('100 000 concurrent UDP conversations', () => {
  const cgroup = new TestCgroup(uniqueName('kc-overflow'));
  const nodes = cgroup.child('nodes');
  let pair: VethPair;
  // Nobody answers at this address: b drops the datagrams (not its address, no forwarding), so
  // the only traffic is the 100 000 one-datagram conversations a sends.
  let silentPeer: string;

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 51, cgroup: nodes });
    silentPeer = '10.77.51.99';
    run('ip', ['netns', 'exec', pair.a.netns, 'ip', 'neigh', 'replace', silentPeer, 'lladdr', pair.b.mac, 'dev', pair.a.ifname, 'nud', 'permanent']);
  });
  afterAll(() => {
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
  });

  async function sendAll(maxConversations: number) {
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '10m', '--max-conversations', String(maxConversations)]);
    const report = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'udp-many', silentPeer, String(CONVERSATIONS)]));
    expect(report.sent).toBe(CONVERSATIONS);
    const { records, code, stderr } = await capture.stop();
    expect(code, stderr.split('\n').slice(-5).join('\n')).toBe(0);
    const udp = records.filter((r) => r.protocol === IpProtocol.UDP && r.dst?.ip === silentPeer);
    const overflow = stderr
      .split('\n')
      .filter((line) => line.includes('flow map full'))
      .reduce((n, line) => n + Number((JSON.parse(line) as { overflowPackets: string }).overflowPackets), 0);
    return { records, udp, overflow };
  }

  it('counts every one of them with a table of 262 144', { timeout: 180_000 }, async () => {
    const { udp, overflow } = await sendAll(262_144);
    expect(overflow).toBe(0);
    expect(udp).toHaveLength(CONVERSATIONS);
    expect(udp.every((r) => r.packets === 1n && r.vantage === Vantage.SRC && r.bytes === 44n)).toBe(true);
    expect(new Set(udp.map((r) => `${r.src?.port} ${r.dst?.port}`)).size).toBe(CONVERSATIONS);
  });

  it('says exactly how many packets were not counted with a table of 65 536', { timeout: 180_000 }, async () => {
    const { records, udp, overflow } = await sendAll(65_536);
    expect(records).toHaveLength(65_536);
    const counted = udp.reduce((n, r) => n + Number(r.packets), 0);
    expect(counted + overflow).toBe(CONVERSATIONS);
    expect(overflow).toBe(CONVERSATIONS - 65_536);
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], [pair.a.netns, pair.b.netns])).toEqual([]);
  });
});
