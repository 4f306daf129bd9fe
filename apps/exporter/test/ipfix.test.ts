// IPFIX export against real collectors: nfcapd/nfdump 1.7 decodes addresses, ports, protocol,
// bytes and packets; tshark decodes our templates and enterprise strings without warnings.
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { newFlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort } from '@kappa/testing';
import { IpfixSink } from '../src/sinks/ipfix.js';
import { exportBatch, knownBatch, knownRecord } from './fixtures.js';
import { expectDecoded, nfdumpFlows, removeDir, startCapture, startNfcapd, tsharkJson, tsharkText, valuesOf } from './collectors.js';
import type { Nfcapd } from './collectors.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

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
    const capture = await startCapture(`udp port ${port}`);
    const ipfix = sink(`udp://127.0.0.1:${port}`);
    await ipfix.start();
    const batches = [knownBatch('b1', 0, 200), knownBatch('b2', 200, 200)];
    for (const b of batches) await ipfix.write(exportBatch(b));
    await capture.stop();
    await collector.stop();
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
    const capture = await startCapture(`udp port ${port}`);
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
    expect(valuesOf(json, 'cflow.template_id').map(Number).sort()).toEqual([256, 257]);
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
    expect(valuesOf(json, 'cflow.srcport').map(Number).sort()).toEqual(records.map((r) => r.src!.port).sort());
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
    const capture = await startCapture(`tcp port ${port}`);
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
    // Two sessions, each starting with the two templates, then the data of its batch.
    expect(valuesOf(json, 'cflow.template_id').map(Number)).toEqual([256, 257, 256, 257]);
    const srcPorts = valuesOf(json, 'cflow.srcport').map(Number);
    expect(srcPorts.filter((p) => p >= 30100)).toHaveLength(50);
    expect(srcPorts.filter((p) => p < 30100)).toHaveLength(50);
  });
});
