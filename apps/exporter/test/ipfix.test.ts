// IPFIX export against real collectors: nfcapd/nfdump 1.7 decodes addresses, ports, protocol,
// bytes and packets; tshark decodes our templates and enterprise strings without warnings.
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import type { Server, Socket } from 'node:net';
import type { FlowRecord } from '@kappa/contracts';
import { afterEach, describe, expect, it } from 'vitest';
import { newFlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort } from '@kappa/testing';
import { IpfixSink } from '../src/sinks/ipfix.js';
import { exportBatch, knownBatch, knownRecord } from './fixtures.js';
import { expectDecoded, nfdumpFlows, removeDir, startCapture, startNfcapd, tsharkJson, tsharkRecords, tsharkText, valuesOf } from './collectors.js';
import type { Capture, Nfcapd } from './collectors.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function hasDnsOrDrops(r: FlowRecord): boolean {
  return r.dns !== undefined || r.drops !== undefined || (r.src?.peerDnsName ?? '') !== '' || (r.dst?.peerDnsName ?? '') !== '';
}

function sink(collector: string, templateRefreshMs = 30_000, maxStringBytes = 1024, mtu = 1500): IpfixSink {
  const s = new IpfixSink({
    collector: new URL(collector),
    enterpriseNumber: 32473,
    templateRefreshMs,
    udpMaxMessageBytes: mtu - 48,
    maxStringBytes,
    logger: createLogger('test', 'silent'),
    registry: createRegistry('test'),
  });
  cleanups.push(() => s.close());
  return s;
}

/** A tshark capture whose folder goes when the test ends. */
async function capturing(filter: string): Promise<Capture> {
  const capture = await startCapture(filter);
  cleanups.push(() => removeDir(dirname(capture.file)));
  return capture;
}

async function nfcapd(port: number): Promise<Nfcapd> {
  const n = await startNfcapd(port);
  cleanups.push(async () => {
    await n.stop();
    removeDir(n.dir);
  });
  return n;
}

describe('IPFIX over UDP to nfcapd', () => {
  it('nfdump shows the right IPv4 and IPv6 addresses, ports, protocol, bytes and packets for 400 records split over MTU-sized datagrams', async () => {
    const port = await freePort();
    const collector = await nfcapd(port);
    const capture = await capturing(`udp port ${port}`);
    const ipfix = sink(`udp://127.0.0.1:${port}`);
    await ipfix.start();
    const batches = [knownBatch('b1', 0, 200), knownBatch('b2', 200, 200)];
    for (const b of batches) await ipfix.write(exportBatch(b));
    await capture.stop();
    await collector.stop();
    // Over a third of them also went out as DNS / drops options records: nfdump counts no flow more.
    expect(batches.flatMap((b) => b.records).filter(hasDnsOrDrops).length).toBeGreaterThan(150);
    expectDecoded(await nfdumpFlows(collector.dir), batches.flatMap((b) => b.records));
    // Every datagram fits a 1500-byte MTU (IPv6 + UDP headers included).
    const lengths = valuesOf(await tsharkJson(capture.file, `udp.port==${port}`), 'udp.length').map(Number);
    expect(lengths.length).toBeGreaterThan(10);
    for (const l of lengths) expect(l).toBeLessThanOrEqual(1500 - 40);
  });

  it('a collector restarted mid-stream decodes records again after the next template refresh', async () => {
    const port = await freePort();
    let collector = await nfcapd(port);
    const ipfix = sink(`udp://127.0.0.1:${port}`, 1500);
    await ipfix.start();
    const before = knownBatch('before', 0, 10);
    await ipfix.write(exportBatch(before));
    await collector.stop();
    expectDecoded(await nfdumpFlows(collector.dir), before.records);

    collector = await nfcapd(port);
    const templatesAtRestart = ipfix.templateSends();
    // Sent before any refresh reached the new collector: it has no template to decode them with.
    const blind = knownBatch('blind', 100, 10);
    await ipfix.write(exportBatch(blind));
    const blindWithoutRefresh = ipfix.templateSends() === templatesAtRestart;
    await new Promise((r) => setTimeout(r, 2000));
    expect(ipfix.templateSends()).toBeGreaterThan(templatesAtRestart);
    const after = knownBatch('after', 200, 10);
    await ipfix.write(exportBatch(after));
    await collector.stop();
    const flows = await nfdumpFlows(collector.dir);
    const decoded = flows.filter((f) => f.sp >= 30200);
    expectDecoded(decoded, after.records);
    if (blindWithoutRefresh) expect(flows.filter((f) => f.sp >= 30100 && f.sp < 30200)).toHaveLength(0);
  });
});

describe('IPFIX decoded by tshark', () => {
  it('decodes the templates and enterprise strings of 0, 254, 255, 256 and 1000 bytes without malformed-packet or expert warnings', async () => {
    const port = await freePort();
    const capture = await capturing(`udp port ${port}`);
    // A 9000-byte (jumbo) MTU: records with four 1000-byte strings fit a datagram uncut.
    const ipfix = sink(`udp://127.0.0.1:${port}`, 30_000, 1024, 9000);
    await ipfix.start();
    const sizes = [0, 254, 255, 256, 1000];
    const records = sizes.map((n, k) =>
      knownRecord(k, {
        src: { ip: k % 2 ? '2001:db8::a' : '10.1.1.1', port: 40000 + k, process: { pid: 7, name: 'n'.repeat(n), cmdline: 'c'.repeat(n) }, kube: { objectName: 'p'.repeat(n) } },
        dst: { ip: k % 2 ? '2001:db8::b' : '10.1.1.2', port: 443, process: { exe: 'é'.repeat(n / 2) } },
        node: `node-${n}`,
      }),
    );
    await ipfix.write(exportBatch(newFlowBatch({ batchId: 'strings', records })));
    await capture.stop();
    const text = await tsharkText(capture.file, `udp.port==${port}`);
    expect(text).toContain('Cisco NetFlow/IPFIX');
    expect(text).not.toMatch(/Malformed/i);
    expect(text).not.toMatch(/Expert Info/);
    expect(text).not.toMatch(/won't be used|Unknown|No template/i);
    const json = await tsharkJson(capture.file, `udp.port==${port}`);
    expect(valuesOf(json, 'cflow.template_id').map(Number).sort()).toEqual([256, 257, 258, 259]);
    expect(valuesOf(json, 'cflow.template_ipfix_field_pen').map(Number)).toContain(32473);
    expect(valuesOf(json, 'cflow.template_ipfix_field_pen').map(Number)).toContain(29305);
    // Every non-empty string comes back byte for byte (tshark shows enterprise values as hex).
    const strings = valuesOf(json, 'cflow.enterprise_private_entry').map((hex) => Buffer.from(String(hex).replace(/:/g, ''), 'hex').toString('utf8'));
    for (const n of sizes.filter((s) => s > 0)) {
      for (const ch of ['n', 'c', 'p']) expect(strings).toContain(ch.repeat(n));
      expect(strings).toContain('é'.repeat(n / 2));
      expect(strings).toContain(`node-${n}`);
    }
    expect(strings).toContain('node-0');
    const longLengths = valuesOf(json, 'cflow.string_len_long').map(Number);
    expect(longLengths.filter((l) => l === 1000).length).toBeGreaterThanOrEqual(4);
    expect(longLengths).toContain(255);
    expect(longLengths).toContain(256);
    // The 0-byte strings did not shift anything: each record's counters decode intact.
    expect(valuesOf(json, 'cflow.octets').map(Number)).toEqual(expect.arrayContaining(records.map((r) => Number(r.bytes))));
    // Each record once in the flow template, and again in the DNS / drops one when it has either.
    expect(valuesOf(json, 'cflow.srcport').map(Number).sort()).toEqual([...records, ...records.filter(hasDnsOrDrops)].map((r) => r.src!.port).sort());
  });
});

describe('IPFIX DNS and drops decoded by tshark', () => {
  it('decodes each known record\'s drops, drop reason, DNS exchanges and peer names, element by element, from the options record scoped to its flow', async () => {
    const pen = 32473;
    const port = await freePort();
    const capture = await capturing(`udp port ${port}`);
    const ipfix = sink(`udp://127.0.0.1:${port}`);
    await ipfix.start();
    // 60 known records: IPv4 and IPv6; drops with NETFILTER_DROP or NO_SOCKET; DNS with NOERROR or
    // NXDOMAIN; a peer DNS name on the client's end; some with none of these.
    const batch = knownBatch('dns-drops', 0, 60);
    await ipfix.write(exportBatch(batch));
    await capture.stop();
    const text = await tsharkText(capture.file, `udp.port==${port}`);
    expect(text).toContain('Options Template (Id = 258) (Scope Count = 9; Data Count = 17)');
    expect(text).not.toMatch(/Malformed/i);
    expect(text).not.toMatch(/Expert Info/);
    expect(text).not.toMatch(/won't be used|No template/i);
    const decoded = await tsharkRecords(capture.file, `udp.port==${port}`, pen);
    expect(decoded.filter((d) => d.setId === 256 || d.setId === 257)).toHaveLength(60);
    const options = decoded.filter((d) => d.setId === 258 || d.setId === 259);
    const expected = batch.records.filter(hasDnsOrDrops);
    expect(expected.length).toBeGreaterThan(25);
    expect(expected.length).toBeLessThan(60);
    // One options record per record with DNS, drops or a peer name, and none for the others.
    expect(options.map((o) => Number(o.fields.get('cflow.srcport'))).sort()).toEqual(expected.map((r) => r.src!.port).sort());

    const hex = (s: string) => Buffer.from(s, 'utf8').toString('hex');
    const uint = (n: number | bigint, bytes: number) => BigInt(n).toString(16).padStart(2 * bytes, '0');
    const ms = (ns: bigint) => new Date(Number(ns / 1_000_000n)).toISOString();
    const tsharkTime = (show: string | undefined) => new Date(Date.parse(String(show).replace(/\.(\d{3})\d*/, '.$1'))).toISOString();
    for (const r of expected) {
      const o = options.find((x) => Number(x.fields.get('cflow.srcport')) === r.src!.port)!;
      const v6 = r.src!.ip.includes(':');
      expect(o.setId).toBe(v6 ? 259 : 258);
      const want: [string, string][] = [
        [v6 ? 'cflow.srcaddrv6' : 'cflow.srcaddr', r.src!.ip],
        [v6 ? 'cflow.dstaddrv6' : 'cflow.dstaddr', r.dst!.ip],
        ['cflow.dstport', String(r.dst!.port)],
        ['cflow.protocol', String(r.protocol)],
        ['cflow.drop_octets', String(r.drops?.bytes ?? 0n)],
        ['cflow.drop_packets', String(r.drops?.packets ?? 0n)],
        [`${pen}/2`, uint(r.vantage, 1)],
        [`${pen}/14`, hex(r.id)],
        [`${pen}/15`, hex(r.drops?.reason ?? '')],
        [`${pen}/16`, uint(r.drops?.reasonPackets ?? 0n, 8)],
        [`${pen}/17`, hex(r.dns?.queryName ?? '')],
        [`${pen}/18`, uint(r.dns?.queryType ?? 0, 2)],
        [`${pen}/19`, uint(r.dns?.rcode ?? 0, 2)],
        [`${pen}/20`, uint(r.dns?.queries ?? 0n, 8)],
        [`${pen}/21`, uint(r.dns?.responses ?? 0n, 8)],
        [`${pen}/22`, uint(r.dns?.latencyCount ?? 0n, 8)],
        [`${pen}/23`, uint(r.dns?.latencySumUs ?? 0n, 8)],
        [`${pen}/24`, uint(r.dns?.latencyMaxUs ?? 0n, 8)],
        [`${pen}/25`, uint(r.dns?.nxdomain ?? 0n, 8)],
        [`${pen}/26`, uint(r.dns?.failed ?? 0n, 8)],
        [`${pen}/27`, uint(r.dns?.unparsable ?? 0n, 8)],
        [`${pen}/122`, hex(r.src!.peerDnsName)],
        [`${pen}/222`, hex(r.dst!.peerDnsName)],
      ];
      // tshark leaves zero-length strings out.
      const wanted = Object.fromEntries(want.filter(([, v]) => v !== ''));
      const got = Object.fromEntries([...o.fields].filter(([k]) => k in wanted || k.startsWith(`${pen}/`) || k.startsWith('cflow.drop')));
      expect(got, `record ${r.id}`).toEqual(wanted);
      expect(tsharkTime(o.fields.get('cflow.abstimestart'))).toBe(ms(r.startNs));
      expect(tsharkTime(o.fields.get('cflow.abstimeend'))).toBe(ms(r.endNs));
    }
    // The reasons and rcodes of the fixtures are all there: NETFILTER_DROP, NO_SOCKET, NXDOMAIN (3).
    const reasons = new Set(options.map((o) => Buffer.from(o.fields.get(`${pen}/15`) ?? '', 'hex').toString()));
    expect(reasons).toEqual(new Set(['', 'NETFILTER_DROP', 'NO_SOCKET']));
    expect(options.some((o) => o.fields.get(`${pen}/19`) === '0003')).toBe(true);
  });
});

describe('IPFIX over TCP', () => {
  it('sends templates first on every connection, so a collector that reconnects decodes the data that follows', async () => {
    const port = await freePort();
    const received: Buffer[] = [];
    const sockets = new Set<Socket>();
    const listen = () =>
      new Promise<Server>((resolve) => {
        const server = createServer((s) => {
          sockets.add(s);
          s.on('data', (d: Buffer) => received.push(d));
          s.on('close', () => sockets.delete(s));
        });
        server.listen(port, '127.0.0.1', () => resolve(server));
      });
    let server = await listen();
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const capture = await capturing(`tcp port ${port}`);
    const ipfix = sink(`tcp://127.0.0.1:${port}`);
    await ipfix.start();
    await ipfix.write(exportBatch(knownBatch('first', 0, 50)));
    // The collector restarts: it drops the session and listens again.
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    await new Promise((r) => setTimeout(r, 300));
    server = await listen();
    await ipfix.write(exportBatch(knownBatch('second', 100, 50)));
    await new Promise((r) => setTimeout(r, 300));
    await capture.stop();
    const json = await tsharkJson(capture.file, `tcp.port==${port}`);
    const text = await tsharkText(capture.file, `tcp.port==${port}`);
    expect(text).not.toMatch(/Malformed/i);
    // Two sessions, each starting with the templates (flow, then DNS / drops), then the data of its batch.
    expect(valuesOf(json, 'cflow.template_id').map(Number)).toEqual([256, 257, 258, 259, 256, 257, 258, 259]);
    const srcPorts = valuesOf(json, 'cflow.srcport').map(Number);
    // Every record in the flow template, those with DNS or drops in the DNS / drops one too.
    const sent = (from: number) => knownBatch('', from, 50).records;
    expect(srcPorts.filter((p) => p >= 30100)).toHaveLength(50 + sent(100).filter(hasDnsOrDrops).length);
    expect(srcPorts.filter((p) => p < 30100)).toHaveLength(50 + sent(0).filter(hasDnsOrDrops).length);
  });
});
