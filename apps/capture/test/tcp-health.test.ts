// Wire segments with offloads on, process attribution after exit, and TCP health
// (retransmits, srtt) against the kernel's own counters for the same namespace and socket.
import { existsSync } from 'node:fs';
import { afterAll, afterEach, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { TestCgroup, VethPair, nstat, run, runIn, spawnIn, uniqueName } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture, totals } from './harness.js';
import type { TrafficReport } from './harness.js';
import { describePrivileged } from './privileges.js';

describePrivileged('TCP health and attribution', () => {
  const cgroup = new TestCgroup(uniqueName('kc-health'));
  const nodes = cgroup.child('nodes');
  let pair: VethPair | undefined;

  afterEach(() => {
    pair?.destroy();
    pair = undefined;
  });
  afterAll(() => {
    nodes.destroy();
    cgroup.destroy();
  });

  /** One client → echo server TCP conversation; returns the client's report. */
  async function converse(p: VethPair, port: number, clientArgs: string[]): Promise<TrafficReport> {
    const server = spawnIn(p.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', p.b.ipv4, String(port), '1']);
    const serverDone = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
    const report = parseReport(await runIn(p.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', p.b.ipv4, String(port), ...clientArgs]));
    await serverDone;
    return report;
  }

  it('counts wire segments of GSO/GRO super-packets with offloads on (nstat TcpOutSegs)', async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 41, cgroup: nodes, offloads: true });
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s']);
    const before = { a: nstat(pair.a.netns), b: nstat(pair.b.netns) };
    const report = await converse(pair, 7010, ['0', '0', '0', String(5_000_000)]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const after = { a: nstat(pair.a.netns), b: nstat(pair.b.netns) };
    const { records } = await capture.stop();
    // TcpOutSegs leaves out retransmitted segments (RFC 1213); the wire carries them too.
    const delta = (ns: 'a' | 'b', name: string) => (after[ns][name] ?? 0) - (before[ns][name] ?? 0);
    const aOut = delta('a', 'TcpOutSegs') + delta('a', 'TcpRetransSegs');
    const bOut = delta('b', 'TcpOutSegs') + delta('b', 'TcpRetransSegs');
    const sums = totals(records);
    const conversation = `${IpProtocol.TCP} ${pair.a.ipv4} ${report.localPort} ${pair.b.ipv4} 7010`;
    const src = sums.get(`${Vantage.SRC} socket ${conversation}`);
    const dst = sums.get(`${Vantage.DST} socket ${conversation}`);
    // Thousands of segments crossed as far fewer skbs; counting skbs would be off by far more.
    expect(aOut).toBeGreaterThan(3000);
    expect({ packets: src?.packets, reversePackets: src?.reversePackets }).toEqual({ packets: aOut, reversePackets: bOut });
    expect({ packets: dst?.packets, reversePackets: dst?.reversePackets }).toEqual({ packets: aOut, reversePackets: bOut });
  });

  it('keeps pid and comm on the SRC record of a process that exited 100 ms after closing', async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 42, cgroup: nodes });
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s']);
    const report = await converse(pair, 7011, ['3', '100', '100']);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(existsSync(`/proc/${report.pid}`)).toBe(false); // gone before the drain
    const { records } = await capture.stop();
    const src = totals(records).get(`${Vantage.SRC} socket ${IpProtocol.TCP} ${pair.a.ipv4} ${report.localPort} ${pair.b.ipv4} 7011`);
    const process = src?.records[0]?.src?.process;
    expect({ pid: process?.pid, name: process?.name }).toEqual({ pid: report.pid, name: report.comm });
    expect(process?.cgroupId).toBeGreaterThan(1n);
  });

  it('attributes the accepted end of a server that was listening before capture attached', async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 44, cgroup: nodes });
    // The listener exists first: sock_create never sees it, and what it accepts inherits nothing.
    const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', pair.b.ipv4, '7013', '1']);
    let serverOut = '';
    server.stdout?.on('data', (c: Buffer) => (serverOut += c.toString()));
    const serverDone = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s']);
    const client = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, '7013', '3', '100']));
    await serverDone;
    const serverReport = parseReport(serverOut);
    const { records } = await capture.stop();
    const dst = totals(records).get(`${Vantage.DST} socket ${IpProtocol.TCP} ${pair.a.ipv4} ${client.localPort} ${pair.b.ipv4} 7013`);
    const owner = dst?.records[0]?.dst?.process;
    expect({ pid: owner?.pid, name: owner?.name }).toEqual({ pid: serverReport.pid, name: serverReport.comm });
    expect(owner?.cgroupId).toBeGreaterThan(1n);
  });

  it('reports retransmits equal to RetransSegs and srtt within 10 % of ss when nftables drops 1 in 20 data segments', async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 43, cgroup: nodes });
    const p = pair;
    const nft = (...args: string[]) => run('ip', ['netns', 'exec', p.b.netns, 'nft', ...args]);
    nft('add', 'table', 'inet', 'kc_drop');
    nft('add', 'chain', 'inet', 'kc_drop', 'input', '{ type filter hook input priority 0; policy accept; }');
    // Every 20th data segment of the first 600 the server receives: a bounded number of losses
    // (~30). Never the client's closing RST (it is not resent, so the server would wait for it
    // forever) nor a SYN or FIN (each would cost a retransmission timeout).
    nft('add', 'rule', 'inet', 'kc_drop', 'input', 'tcp', 'dport', '7012', 'tcp', 'flags', '&', '(syn|fin|rst)', '==', '0',
      'ct', 'original', 'packets', '<', '600', 'numgen', 'inc', 'mod', '20', '0', 'drop');
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s']);
    const before = { a: nstat(p.a.netns), b: nstat(p.b.netns) };
    const report = await converse(p, 7012, ['0', '0', '0', String(2_000_000), 'rst']);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const after = { a: nstat(p.a.netns), b: nstat(p.b.netns) };
    const { records } = await capture.stop();
    const retrans = (ns: 'a' | 'b') => (after[ns]['TcpRetransSegs'] ?? 0) - (before[ns]['TcpRetransSegs'] ?? 0);
    const sums = totals(records);
    const conversation = `${IpProtocol.TCP} ${p.a.ipv4} ${report.localPort} ${p.b.ipv4} 7012`;
    const src = sums.get(`${Vantage.SRC} socket ${conversation}`)?.records ?? [];
    const dst = sums.get(`${Vantage.DST} socket ${conversation}`)?.records ?? [];
    const sum = (rs: typeof src) => rs.reduce((n, r) => n + (r.tcp?.retransmits ?? 0), 0);
    expect(retrans('a')).toBeGreaterThan(10);
    expect({ client: sum(src), server: sum(dst) }).toEqual({ client: retrans('a'), server: retrans('b') });

    // ss prints rtt:<srtt ms>/<rttvar ms> for the client socket, read while it was idle.
    const ssRttMs = Number(/\brtt:([\d.]+)\//.exec(report.ss ?? '')?.[1]);
    const srttUs = src.at(-1)?.tcp?.srttUs ?? 0;
    expect(ssRttMs).toBeGreaterThan(0);
    expect(Math.abs(srttUs - ssRttMs * 1000) / (ssRttMs * 1000), `srtt ${srttUs} µs, ss ${report.ss}`).toBeLessThanOrEqual(0.1);
    expect(src.at(-1)?.tcp?.handshakeUs).toBeGreaterThan(0);
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], [])).toEqual([]);
  });
});
