// Cases where what the kernel's hooks see is not what the wire carries, each against a packet
// capture (tshark, without reassembly) or the kernel's own counters: datagrams larger than the
// MTU (sent before fragmentation, received after reassembly), several raw sockets each getting a
// copy of every ICMP packet, IPv6 extension headers, Ethernet padding at tc, and retransmissions
// in both directions.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { PacketCapture, TestCgroup, VethPair, nstat, run, runIn, spawnIn } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture as startCaptureProcess, totals } from './harness.js';
import type { CaptureRun } from './harness.js';
import { describePrivileged } from './privileges.js';

interface Wire {
  packets: number;
  bytes: number;
}

/**
 * IP packets and bytes from `src` to `dst` of one protocol, fragments included (tshark is told
 * not to reassemble, so every fragment is a packet of its own, with its own IP header).
 */
function wireBetween(file: string, src: string, dst: string, protocol: number, filter = ''): Wire {
  const v6 = src.includes(':');
  const match = v6
    ? `ipv6.src==${src} && ipv6.dst==${dst} && (ipv6.nxt==${protocol} || ipv6.fraghdr.nxt==${protocol} || ipv6.dstopts.nxt==${protocol})`
    : `ip.src==${src} && ip.dst==${dst} && ip.proto==${protocol}`;
  const out = run('tshark', ['-r', file, '-o', 'ip.defragment:FALSE', '-o', 'ipv6.defragment:FALSE', '-Y', filter ? `(${match}) && (${filter})` : match,
    '-T', 'fields', '-e', v6 ? 'ipv6.plen' : 'ip.len']);
  const lengths = out.split('\n').filter(Boolean).map(Number);
  return { packets: lengths.length, bytes: lengths.reduce((sum, n) => sum + n + (v6 ? 40 : 0), 0) };
}

function counted(records: readonly FlowRecord[], key: string): { forward: Wire; reverse: Wire } | undefined {
  const t = totals(records).get(key);
  return t && { forward: { packets: t.packets, bytes: t.bytes }, reverse: { packets: t.reversePackets, bytes: t.reverseBytes } };
}

describePrivileged('what the wire carries', () => {

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
  const cgroup = new TestCgroup(`kc-wire-${process.pid}`);
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kc-wire-'));
  const craft = join(dir, 'craft');
  const pairs: VethPair[] = [];

  beforeAll(() => {
    execFileSync('cc', ['-O2', '-Wall', '-o', craft, fileURLToPath(new URL('./fixtures/craft.c', import.meta.url))]);
  });
  afterAll(() => {
    for (const pair of pairs) pair.destroy();
    nodes.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  async function newPair(subnet: number, offloads = false): Promise<VethPair> {
    const pair = await VethPair.create({ prefix: 'kw-', subnet, cgroup: nodes, offloads });
    pairs.push(pair);
    return pair;
  }

  /** Starts a server of traffic.mjs in namespace b; resolves once it listens, with its exit. */
  async function serve(pair: VethPair, args: string[]): Promise<{ exited: Promise<unknown> }> {
    const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, ...args]);
    const exited = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve, reject) => {
      server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve());
      void exited.then((code) => reject(new Error(`server exited ${String(code)} before listening`)));
    });
    return { exited }; // not the promise itself: an async function would wait for it
  }

  it('counts UDP datagrams and pings larger than the MTU as the fragments the wire carried, IPv4 and IPv6', { timeout: 120_000 }, async () => {
    const pair = await newPair(81);
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s']);
    const pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'fragments.pcap'));
    const udp: { client: string; server: string; clientPort: number }[] = [];
    for (const [client, server] of [[pair.a.ipv4, pair.b.ipv4], [pair.a.ipv6, pair.b.ipv6]] as const) {
      // 4000-byte datagrams over a 1500-byte MTU: three fragments each way, every time.
      const { exited } = await serve(pair, ['udp-server', server, '7081', '5']);
      const report = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'udp-client', server, '7081', '5', '4000']));
      await exited;
      udp.push({ client, server, clientPort: report.localPort ?? 0 });
      await runIn(pair.a.netns, nodes, 'ping', ['-c', '3', '-i', '0.2', '-s', '3000', server]);
    }
    await pcap.stop();
    const { records, code } = await capture.stop();
    expect(code).toBe(0);

    for (const { client, server, clientPort } of udp) {
      const forward = wireBetween(pcap.file, client, server, IpProtocol.UDP);
      const reverse = wireBetween(pcap.file, server, client, IpProtocol.UDP);
      expect(forward.packets).toBe(15); // the wire did fragment
      for (const vantage of [Vantage.SRC, Vantage.DST]) {
        expect(counted(records, `${vantage} socket ${IpProtocol.UDP} ${client} ${clientPort} ${server} 7081`), `UDP ${Vantage[vantage]} ${client}`).toEqual({ forward, reverse });
      }
    }
    for (const [client, server, protocol] of [[pair.a.ipv4, pair.b.ipv4, IpProtocol.ICMP], [pair.a.ipv6, pair.b.ipv6, IpProtocol.ICMPV6]] as const) {
      const forward = wireBetween(pcap.file, client, server, protocol);
      const reverse = wireBetween(pcap.file, server, client, protocol);
      expect(forward.packets).toBe(9);
      const pings = records.filter((r) => r.protocol === protocol && r.src?.ip === client && r.vantage === Vantage.SRC);
      expect(new Set(pings.map((r) => r.src?.port)).size).toBe(1);
      expect(counted(pings, `${Vantage.SRC} socket ${protocol} ${client} ${pings[0]?.src?.port} ${server} ${pings[0]?.dst?.port}`), `ping ${client}`).toEqual({ forward, reverse });
    }
  });

  it('counts each reply of three concurrent pings once', { timeout: 120_000 }, async () => {
    const pair = await newPair(82);
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s']);
    const pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'pings.pcap'));
    // Every raw ICMP socket gets a copy of every ICMP packet: each ping sees all three's replies.
    await Promise.all([1, 2, 3].map(() => runIn(pair.a.netns, nodes, 'ping', ['-c', '5', '-i', '0.2', '-s', '100', pair.b.ipv4])));
    await pcap.stop();
    const { records, code } = await capture.stop();
    expect(code).toBe(0);
    const pings = [...totals(records.filter((r) => r.protocol === IpProtocol.ICMP && r.src?.ip === pair.a.ipv4)).entries()];
    expect(pings.map(([key]) => key.split(' ')[0])).toEqual([String(Vantage.SRC), String(Vantage.SRC), String(Vantage.SRC)]);
    for (const [key, got] of pings) {
      const id = key.split(' ')[4];
      const forward = wireBetween(pcap.file, pair.a.ipv4, pair.b.ipv4, IpProtocol.ICMP, `icmp.ident==${id}`);
      const reverse = wireBetween(pcap.file, pair.b.ipv4, pair.a.ipv4, IpProtocol.ICMP, `icmp.ident==${id}`);
      expect(reverse.packets).toBe(5);
      expect({ forward: { packets: got.packets, bytes: got.bytes }, reverse: { packets: got.reversePackets, bytes: got.reverseBytes } }, `ping id ${id}`).toEqual({ forward, reverse });
    }
  });

  it('counts IPv6 datagrams behind hop-by-hop and destination-options headers', { timeout: 120_000 }, async () => {
    const pair = await newPair(83);
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s']);
    const pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'ipv6-options.pcap'));
    const { exited } = await serve(pair, ['udp-server', pair.b.ipv6, '7083', '1000000']);
    const report = JSON.parse(await runIn(pair.a.netns, nodes, craft, ['ipv6-options', pair.b.ipv6, '7083', '10', '200'])) as { localPort: number };
    await new Promise((resolve) => setTimeout(resolve, 300));
    await pcap.stop();
    const { records, code } = await capture.stop();
    expect(code).toBe(0);
    void exited;
    const forward = wireBetween(pcap.file, pair.a.ipv6, pair.b.ipv6, IpProtocol.UDP);
    expect(forward.packets).toBe(10);
    expect(run('tshark', ['-r', join(dir, 'ipv6-options.pcap'), '-Y', 'ipv6.hopopts && ipv6.dstopts', '-T', 'fields', '-e', 'frame.number']).split('\n').filter(Boolean).length).toBeGreaterThanOrEqual(10);
    const got = counted(records, `${Vantage.SRC} socket ${IpProtocol.UDP} ${pair.a.ipv6} ${report.localPort} ${pair.b.ipv6} 7083`);
    expect(got?.forward).toEqual(forward);
  });

  it('counts a padded 60-byte Ethernet frame at tc ingress at its IP length', { timeout: 120_000 }, async () => {
    const pair = await newPair(84);
    // Interface mode on namespace b's end: the frames reach no socket there.
    const capture = await startCapture(['--mode', 'interface', '--capture', pair.b.ifname, '--cgroup', cgroup.path, '--interval', '60s'], pair.b.netns);
    const pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'padded.pcap'));
    await runIn(pair.a.netns, nodes, craft, ['padded-frame', pair.a.ifname, pair.b.mac, pair.a.ipv4, pair.b.ipv4, '7084', '8']);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await pcap.stop();
    const { records, code } = await capture.stop();
    expect(code).toBe(0);
    const frames = run('tshark', ['-r', pcap.file, '-Y', `ip.src==${pair.a.ipv4} && udp.dstport==7084 && !icmp`, '-T', 'fields', '-e', 'frame.len', '-e', 'ip.len']).split('\n').filter(Boolean);
    expect(frames).toEqual(Array(8).fill('60\t30'));
    const got = counted(records, `${Vantage.DST} ${pair.b.ifname} ${IpProtocol.UDP} ${pair.a.ipv4} 40000 ${pair.b.ipv4} 7084`);
    expect(got?.forward).toEqual({ packets: 8, bytes: 8 * 30 });
  });

  it('reports retransmits equal to each end’s RetransSegs with losses in both directions, on a connection older than the attach', { timeout: 120_000 }, async () => {
    const pair = await newPair(85);
    // Every 20th data segment of the first 600 each end receives is dropped (never SYN, FIN or
    // RST: the client's closing RST is not resent and a lost SYN or FIN costs a timeout).
    for (const [end, port] of [[pair.b, 'dport'], [pair.a, 'sport']] as const) {
      const nft = (...args: string[]) => run('ip', ['netns', 'exec', end.netns, 'nft', ...args]);
      nft('add', 'table', 'inet', 'kw_drop');
      nft('add', 'chain', 'inet', 'kw_drop', 'input', '{ type filter hook input priority 0; policy accept; }');
      nft('add', 'rule', 'inet', 'kw_drop', 'input', 'tcp', port, '7085', 'tcp', 'flags', '&', '(syn|fin|rst)', '==', '0',
        'ct', 'original', 'packets', '<', '600', 'numgen', 'inc', 'mod', '20', '0', 'drop');
    }
    // The connection exists before capture attaches: neither end's socket was seen at creation.
    const { exited } = await serve(pair, ['tcp-server', pair.b.ipv4, '7085', '1']);
    process.env.KC_WAIT_SIGNAL = '1';
    const client = spawnIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, '7085', '0', '0', '0', String(2_000_000), 'rst']);
    delete process.env.KC_WAIT_SIGNAL;
    let output = '';
    client.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    const clientDone = new Promise((resolve) => client.once('exit', resolve));
    await new Promise<void>((resolve) => client.stderr?.on('data', (c: Buffer) => c.toString().includes('"connected"') && resolve()));
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s']);
    const before = { a: nstat(pair.a.netns), b: nstat(pair.b.netns) };
    // 2 MB up, echoed back: data segments, and losses, in both directions.
    client.kill('SIGUSR1');
    await clientDone;
    await exited;
    await new Promise((resolve) => setTimeout(resolve, 200));
    const after = { a: nstat(pair.a.netns), b: nstat(pair.b.netns) };
    const { records, code } = await capture.stop();
    expect(code).toBe(0);
    const report = parseReport(output);
    const retrans = (end: 'a' | 'b') => (after[end]['TcpRetransSegs'] ?? 0) - (before[end]['TcpRetransSegs'] ?? 0);
    const conversation = `${IpProtocol.TCP} ${pair.a.ipv4} ${report.localPort} ${pair.b.ipv4} 7085`;
    // Mid-stream, neither end shows a SYN: the vantage is unknown, the tuple is local → remote.
    const ends = [...totals(records).entries()].filter(([key]) => {
      const [, , protocol, , srcPort, , dstPort] = key.split(' ');
      return protocol === String(IpProtocol.TCP) && (srcPort === String(report.localPort) || dstPort === String(report.localPort));
    });
    const sum = (local: string) => ends.filter(([key]) => key.split(' ')[3] === local).flatMap(([, t]) => t.records).reduce((n, r) => n + (r.tcp?.retransmits ?? 0), 0);
    expect(ends.length, `records of ${conversation}: ${ends.map(([key]) => key).join(', ')}`).toBe(2);
    expect(retrans('a')).toBeGreaterThan(5);
    expect(retrans('b')).toBeGreaterThan(5);
    expect({ client: sum(pair.a.ipv4), server: sum(pair.b.ipv4) }).toEqual({ client: retrans('a'), server: retrans('b') });
  });

  it('loses no datagram to the drains: 300 000 datagrams of one conversation, a drain every 100 ms', { timeout: 180_000 }, async () => {
    const pair = await newPair(86);
    // Nobody answers at this address: b drops what a sends it, so the stream is the only traffic.
    const silentPeer = '10.77.86.99';
    run('ip', ['netns', 'exec', pair.a.netns, 'ip', 'neigh', 'replace', silentPeer, 'lladdr', pair.b.mac, 'dev', pair.a.ifname, 'nud', 'permanent']);
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '100ms']);
    const before = nstat(pair.a.netns);
    await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'udp-stream', silentPeer, '7086', '300000']);
    const after = nstat(pair.a.netns);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const { records, code } = await capture.stop();
    expect(code).toBe(0);
    const truth = (after['UdpOutDatagrams'] ?? 0) - (before['UdpOutDatagrams'] ?? 0);
    const stream = records.filter((r) => r.protocol === IpProtocol.UDP && r.dst?.ip === silentPeer);
    expect(stream.length).toBeGreaterThan(3); // the stream spanned several drains
    expect(truth).toBeGreaterThan(250_000);
    const packets = stream.reduce((n, r) => n + Number(r.packets), 0);
    const bytes = stream.reduce((n, r) => n + Number(r.bytes), 0);
    expect({ packets, bytes }).toEqual({ packets: truth, bytes: truth * 44 });
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], pairs.flatMap((p) => [p.a.netns, p.b.netns]))).toEqual([]);
  });
});
