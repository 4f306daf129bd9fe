// DNS at the sockets, against a real resolver (Debian's dnsmasq) and a packet capture: clients
// that resolve a name through glibc and connect get the name on their end of the records (over
// UDP and TCP DNS, IPv4 and IPv6, through a CNAME chain); each DNS conversation's record carries
// its queries, responses, response codes and latency, which equal what tshark reads off the wire.
// One traffic run in beforeAll, then one test per property.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { DnsServer, PacketCapture, TestCgroup, VethPair, resolvConf, run, runIn, spawnIn, uniqueName } from '@kappa/testing';
import { TRAFFIC, startCapture } from './harness.js';
import type { CaptureRun } from './harness.js';
import { describePrivileged } from './privileges.js';

const RESOLVE = new URL('./fixtures/resolve-connect.mjs', import.meta.url).pathname;
const SUBNET = 61;
const PORT = 7101;

/** One DNS response on the wire (tshark), at the client's veth. */
interface WireResponse {
  protocol: 'udp' | 'tcp';
  clientPort: number;
  id: number;
  rcode: number;
  name: string;
  /** Seconds from its query: the two frames' capture times (same conversation and id). */
  time: number;
}

/** The DNS responses of the capture, each timed from its query's frame. */
function wireResponses(file: string): WireResponse[] {
  const fields = ['frame.time_epoch', 'udp.srcport', 'tcp.srcport', 'udp.dstport', 'tcp.dstport', 'dns.id', 'dns.flags.response', 'dns.flags.rcode', 'dns.qry.name'];
  const out = run('tshark', ['-r', file, '-Y', 'dns', '-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=f', ...fields.flatMap((f) => ['-e', f])]);
  const queries = new Map<string, number>();
  const responses: WireResponse[] = [];
  for (const line of out.split('\n').filter(Boolean)) {
    const [epoch, usp, tsp, udp, tdp, id, response, rcode, name] = line.split('|');
    const protocol = usp ? 'udp' : 'tcp';
    if (response === '1') {
      const clientPort = Number(udp || tdp);
      const sent = queries.get(`${protocol} ${clientPort} ${id}`);
      responses.push({ protocol, clientPort, id: Number(id), rcode: Number(rcode), name: name ?? '', time: sent === undefined ? Number.NaN : Number(epoch) - sent });
    } else if (response === '0') {
      queries.set(`${protocol} ${Number(usp || tsp)} ${id}`, Number(epoch));
    }
  }
  return responses;
}

/** The client-side record(s) of a conversation, summed over intervals. */
function recordsOf(records: FlowRecord[], predicate: (r: FlowRecord) => boolean): FlowRecord[] {
  return records.filter(predicate);
}

describePrivileged('DNS names and exchanges', () => {
  const cgroup = new TestCgroup(uniqueName('kc-dns'));
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kc-dns-'));
  let pair: VethPair;
  let dns: DnsServer;
  let capture: CaptureRun;
  let pcap: PacketCapture;
  let records: FlowRecord[] = [];
  let wire: WireResponse[] = [];
  const cleanups: (() => void)[] = [];
  const clients: Record<string, { localPort: number; remoteAddress: string }> = {};
  let captureExit: number | null = null;
  let garbagePort = 0;

  const v4 = (host: number) => `10.77.${SUBNET}.${host}`;
  const v6 = (host: number) => `fd77:${SUBNET}::${host}`;

  async function connectAs(label: string, nameserver: string[], name: string, family: 4 | 6): Promise<void> {
    const undo = resolvConf(pair.a.netns, nameserver);
    try {
      clients[label] = JSON.parse(await runIn(pair.a.netns, nodes, process.execPath, [RESOLVE, 'resolve-connect', name, String(PORT), String(family), '3'])) as {
        localPort: number;
        remoteAddress: string;
      };
    } finally {
      undo();
    }
  }

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kd-', subnet: SUBNET, cgroup: nodes });
    // Second addresses of the server, one name each, so each case's address has its own name.
    run('ip', ['netns', 'exec', pair.b.netns, 'ip', 'addr', 'add', `${v4(3)}/24`, 'dev', pair.b.ifname]);
    run('ip', ['netns', 'exec', pair.b.netns, 'ip', 'addr', 'add', `${v6(3)}/64`, 'dev', pair.b.ifname, 'nodad']);
    run('ip', ['netns', 'exec', pair.a.netns, 'ip', 'neigh', 'replace', v4(3), 'lladdr', pair.b.mac, 'dev', pair.a.ifname, 'nud', 'permanent']);
    run('ip', ['netns', 'exec', pair.a.netns, 'ip', '-6', 'neigh', 'replace', v6(3), 'lladdr', pair.b.mac, 'dev', pair.a.ifname, 'nud', 'permanent']);
    dns = await DnsServer.start({
      netns: pair.b.netns,
      cgroup: nodes,
      listen: [v4(2), v6(2)],
      zone: 'kappa.test',
      hosts: [
        { name: 'web.kappa.test', addresses: [v4(2), v6(2)] },
        { name: 'tcp.kappa.test', addresses: [v4(3), v6(3)] },
      ],
      aliases: [
        { name: 'edge.kappa.test', target: 'web.kappa.test' },
        { name: 'www.kappa.test', target: 'edge.kappa.test' },
      ],
      ttl: 120,
    });
    capture = await startCapture(['--cgroup', cgroup.path, '--interval', '1s', '--node', 'kd-node']);
    pcap = await PacketCapture.start(pair.a.netns, pair.a.ifname, join(dir, 'client.pcap'));
    const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', '::', String(PORT), '4']);
    const serverExited = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));

    // UDP DNS over IPv4, a two-CNAME chain to an A record; then the same name's AAAA over IPv6.
    await connectAs('udp4', [`nameserver ${v4(2)}`], 'www.kappa.test', 4);
    await connectAs('udp6', [`nameserver ${v6(2)}`], 'www.kappa.test', 6);
    // TCP DNS (glibc's use-vc), both families.
    await connectAs('tcp4', [`nameserver ${v4(2)}`, 'options use-vc'], 'tcp.kappa.test', 4);
    await connectAs('tcp6', [`nameserver ${v6(2)}`, 'options use-vc'], 'tcp.kappa.test', 6);
    // A name the zone does not have.
    const undo = resolvConf(pair.a.netns, [`nameserver ${v4(2)}`]);
    try {
      const missing = JSON.parse(await runIn(pair.a.netns, nodes, process.execPath, [RESOLVE, 'resolve', 'missing.kappa.test', '4'])) as { error?: string };
      expect(missing.error).toBe('ENOTFOUND');
    } finally {
      undo();
    }
    // Not DNS at all, sent to port 53.
    const garbage = await runIn(pair.a.netns, nodes, process.execPath, [
      '-e',
      `const s = require('node:dgram').createSocket('udp4'); s.bind(0, () => s.send(Buffer.from('this is not a DNS message'), 53, '${v4(2)}', () => { console.log(s.address().port); s.close(); }));`,
    ]);
    garbagePort = Number(garbage.trim());
    await serverExited;
    await pcap.stop();
    const stopped = await capture.stop();
    captureExit = stopped.code;
    records = stopped.records;
    wire = wireResponses(pcap.file);
  });

  afterAll(async () => {
    await pcap?.stop();
    await capture?.stop();
    await dns?.stop();
    for (const cleanup of cleanups) cleanup();
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The client's records of its connection to the server (vantage src). */
  const connection = (label: string) => {
    const client = clients[label]!;
    return recordsOf(records, (r) => r.protocol === IpProtocol.TCP && r.vantage === Vantage.SRC && r.src?.port === client.localPort && r.dst?.port === PORT);
  };

  it('names the client end of a connection with the name it resolved through a CNAME chain (UDP DNS, IPv4)', () => {
    expect(clients['udp4']?.remoteAddress).toBe(v4(2));
    const found = connection('udp4');
    expect(found.length).toBeGreaterThan(0);
    for (const r of found) {
      expect(r.dst?.ip).toBe(v4(2));
      expect(r.src?.peerDnsName).toBe('www.kappa.test');
      expect(r.dst?.peerDnsName).toBe('');
    }
  });

  it('names it over IPv6 (AAAA through the chain, DNS over IPv6)', () => {
    expect(clients['udp6']?.remoteAddress).toBe(v6(2));
    const found = connection('udp6');
    expect(found.length).toBeGreaterThan(0);
    for (const r of found) expect(r.src?.peerDnsName).toBe('www.kappa.test');
  });

  it('names it when the answer came over TCP DNS, both families', () => {
    for (const [label, address] of [['tcp4', v4(3)], ['tcp6', v6(3)]] as const) {
      expect(clients[label]?.remoteAddress).toBe(address);
      const found = connection(label);
      expect(found.length).toBeGreaterThan(0);
      for (const r of found) expect(r.src?.peerDnsName).toBe('tcp.kappa.test');
    }
  });

  it('counts every query and response of each DNS conversation as the wire shows them', () => {
    const clientRecords = records.filter((r) => r.vantage === Vantage.SRC && r.dst?.port === 53 && r.dns && r.src?.port !== garbagePort);
    const byPort = new Map<string, { queries: number; responses: number; name: string; protocol: string }>();
    for (const r of clientRecords) {
      const key = `${r.protocol === IpProtocol.TCP ? 'tcp' : 'udp'} ${r.src?.port}`;
      const sum = byPort.get(key) ?? { queries: 0, responses: 0, name: r.dns!.queryName, protocol: key.split(' ')[0]! };
      sum.queries += Number(r.dns!.queries);
      sum.responses += Number(r.dns!.responses);
      byPort.set(key, sum);
    }
    const onWire = new Map<string, number>();
    for (const response of wire) onWire.set(`${response.protocol} ${response.clientPort}`, (onWire.get(`${response.protocol} ${response.clientPort}`) ?? 0) + 1);
    expect(new Map([...byPort].map(([key, sum]) => [key, sum.responses]))).toEqual(onWire);
    for (const sum of byPort.values()) expect(sum.queries).toBe(sum.responses);
    expect([...byPort.values()].map((s) => s.protocol).sort()).toEqual(expect.arrayContaining(['tcp', 'udp']));
  });

  it('counts a missing name with its NXDOMAIN response code', () => {
    const nx = wire.filter((w) => w.name === 'missing.kappa.test');
    expect(nx.length).toBeGreaterThan(0);
    expect(nx.every((w) => w.rcode === 3)).toBe(true);
    const found = records.filter((r) => r.vantage === Vantage.SRC && r.dns?.queryName === 'missing.kappa.test');
    expect(found.length).toBeGreaterThan(0);
    expect(found.every((r) => r.dns?.rcode === 3)).toBe(true);
    expect(found.reduce((n, r) => n + Number(r.dns?.nxdomain ?? 0n), 0)).toBe(nx.length);
    expect(found.reduce((n, r) => n + Number(r.dns?.failed ?? 0n), 0)).toBe(nx.length);
  });

  // kappa times an exchange from the query at the client socket's egress hook to the response's
  // arrival at the interface (the kernel's receive timestamp, which capture turns on), tshark from
  // the query's frame to the response's at the client's veth. The query's hook runs a few µs
  // before the veth takes it, so kappa is never below the wire and, sub-millisecond exchanges
  // included, within 10 % of it over the test's exchanges. One exchange may exceed 10 % by the
  // softirqs that ran between the hook and the veth: the transmit path keeps bottom halves on
  // until the device, and on a loaded machine (a CI run) that once added 21 µs to a 122 µs
  // exchange; each exchange is allowed 25 µs for it. (At the ingress hook instead, the receive
  // path from the veth to the socket added 10-50 µs per exchange on a loaded machine: more than
  // 10 % of a 200 µs one.)
  it('measures each conversation\'s DNS latency within 10 % of the packet capture, sub-millisecond exchanges included', () => {
    const clientRecords = records.filter((r) => r.vantage === Vantage.SRC && r.dst?.port === 53 && r.dns && r.dns.latencyCount > 0n);
    expect(clientRecords.length).toBeGreaterThanOrEqual(5);
    const measured = new Map<string, { count: number; sumUs: number }>();
    for (const r of clientRecords) {
      const key = `${r.protocol === IpProtocol.TCP ? 'tcp' : 'udp'} ${r.src?.port}`;
      const m = measured.get(key) ?? { count: 0, sumUs: 0 };
      m.count += Number(r.dns!.latencyCount);
      m.sumUs += Number(r.dns!.latencySumUs);
      measured.set(key, m);
    }
    const perConversation: { kappaUs: number; wireUs: number; count: number }[] = [];
    for (const [key, m] of measured) {
      const responses = wire.filter((w) => `${w.protocol} ${w.clientPort}` === key);
      expect(m.count, key).toBe(responses.length);
      const wireUs = responses.reduce((sum, w) => sum + w.time * 1e6, 0);
      const label = `${key}: kappa ${m.sumUs} µs, tshark ${wireUs.toFixed(0)} µs over ${m.count} exchange(s)`;
      console.log(`DNS latency ${label}`);
      // Each exchange's microseconds are truncated, tshark's to the µs: at most 2 µs each below.
      expect(m.sumUs, label).toBeGreaterThanOrEqual(wireUs - 2 * m.count);
      expect(m.sumUs - wireUs, label).toBeLessThanOrEqual(Math.max(0.1 * wireUs, 25 * m.count));
      perConversation.push({ kappaUs: m.sumUs, wireUs, count: m.count });
    }
    // The short exchanges together (the long ones would drown them in a sum): the conversations
    // whose exchanges took under 1 ms on average; where none did (a kernel under qemu's emulation,
    // where dnsmasq's answers take milliseconds), the faster half of the conversations.
    const fast = perConversation.filter((c) => c.wireUs < 1000 * c.count);
    const short = fast.length > 0 ? fast : [...perConversation].sort((a, b) => a.wireUs / a.count - b.wireUs / b.count).slice(0, Math.ceil(perConversation.length / 2));
    const allKappaUs = short.reduce((sum, c) => sum + c.kappaUs, 0);
    const allWireUs = short.reduce((sum, c) => sum + c.wireUs, 0);
    const which = fast.length > 0 ? 'sub-millisecond exchanges' : `no exchange under 1 ms here; the faster ${short.length} of ${perConversation.length} conversations`;
    console.log(`DNS latency, ${which}: kappa ${allKappaUs} µs, tshark ${allWireUs.toFixed(0)} µs`);
    expect(allWireUs).toBeGreaterThan(0);
    expect(Math.abs(allKappaUs - allWireUs), `${which}: kappa ${allKappaUs} µs, tshark ${allWireUs.toFixed(0)} µs`).toBeLessThanOrEqual(0.1 * allWireUs);
  });

  it('counts a message on port 53 that is not DNS as unparsable, and carries on', () => {
    const found = records.filter((r) => r.vantage === Vantage.SRC && r.src?.port === garbagePort && r.dst?.port === 53);
    expect(found.length).toBeGreaterThan(0);
    expect(found.reduce((n, r) => n + Number(r.dns?.unparsable ?? 0n), 0)).toBe(1);
    expect(captureExit).toBe(0);
  });

  it('sees the same exchanges at the resolver, which answers faster than the client waits', () => {
    const atResolver = records.filter((r) => r.vantage === Vantage.DST && r.dst?.port === 53 && r.dns && r.dns.responses > 0n);
    expect(atResolver.length).toBeGreaterThan(0);
    for (const r of atResolver) {
      const client = records.find((c) => c.vantage === Vantage.SRC && c.protocol === r.protocol && c.src?.port === r.src?.port && c.dns && c.dns.latencyCount > 0n);
      if (!client?.dns || r.dns!.latencyCount === 0n) continue;
      expect(Number(r.dns!.latencyMaxUs)).toBeLessThanOrEqual(Number(client.dns.latencyMaxUs));
    }
    expect(dns.log).toContain('www.kappa.test');
  });

  // The DNS code runs inside the counting programs, gated by kappa_config.dns: turned off, it must
  // copy nothing while the same conversations are still counted.
  it('with the DNS feature off (--disable-hooks cgroup-skb), counts the DNS conversations and carries no DNS', async () => {
    const off = await startCapture(['--cgroup', cgroup.path, '--interval', '1s', '--node', 'kd-node-off', '--disable-hooks', 'cgroup-skb']);
    const undo = resolvConf(pair.a.netns, [`nameserver ${v4(2)}`]);
    try {
      const resolved = JSON.parse(await runIn(pair.a.netns, nodes, process.execPath, [RESOLVE, 'resolve', 'web.kappa.test', '4'])) as { error?: string };
      expect(resolved.error).toBeUndefined();
    } finally {
      undo();
    }
    const stopped = await off.stop();
    expect(stopped.code).toBe(0);
    expect(stopped.stderr).toMatch(/DNS: off/);
    const conversations = stopped.records.filter((r) => r.protocol === IpProtocol.UDP && r.vantage === Vantage.SRC && r.dst?.port === 53);
    expect(conversations.length).toBeGreaterThan(0);
    // Queries out and their responses back, counted as ever.
    expect(conversations.reduce((n, r) => n + Number(r.packets), 0)).toBeGreaterThan(0);
    expect(conversations.reduce((n, r) => n + Number(r.reversePackets), 0)).toBeGreaterThan(0);
    expect(stopped.records.filter((r) => r.dns !== undefined)).toEqual([]);
    expect(stopped.records.filter((r) => r.src?.peerDnsName || r.dst?.peerDnsName)).toEqual([]);
  });
});
