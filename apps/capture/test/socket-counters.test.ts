// Connected TCP sockets count in their own socket storage, and each drain reports what they
// counted through an iterator over every process's socket files: a connection that goes idle is
// reported in the interval its packets crossed, not when it next sends or closes, and what the
// drains and the socket's destruction report adds up to the wire exactly.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { PacketCapture, TestCgroup, VethPair, runIn, spawnIn, wireCounts } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture, totals } from './harness.js';
import { describePrivileged } from './privileges.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describePrivileged('per-socket counters', () => {
  const cgroup = new TestCgroup(`kc-counters-${process.pid}`);
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kc-counters-'));
  let pair: VethPair;

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 47, cgroup: nodes });
  });
  afterAll(() => {
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports an idle connection’s exchange in the interval it happened, and its totals equal the wire', { timeout: 120_000 }, async () => {
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '1s', '--node', `kc-counters-${process.pid}`]);
    const pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'veth.pcap'));
    try {
      const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', pair.b.ipv4, '7047', '1']);
      const serverDone = new Promise((resolve) => server.once('exit', resolve));
      await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
      // 20 exchanges, then the connection stays open and idle for 8 s before it closes.
      process.env.KC_HOLD_MS = '8000';
      const client = spawnIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, '7047', '20', '1000']);
      delete process.env.KC_HOLD_MS;
      const clientDone = new Promise((resolve) => client.once('exit', resolve));
      const localPort = await new Promise<number>((resolve) => client.stderr?.on('data', (c: Buffer) => {
        const line = c.toString().split('\n').find((l) => l.includes('"idle"'));
        if (line) resolve((JSON.parse(line) as { localPort: number }).localPort);
      }));
      let clientExited = false;
      void clientDone.then(() => (clientExited = true));

      // While the socket idles, the drains report its exchange at both ends: 20 requests and 20
      // responses of 1000 bytes, so at least 40 data packets each way in all.
      const conversation = `${IpProtocol.TCP} ${pair.a.ipv4} ${localPort} ${pair.b.ipv4} 7047`;
      const reported = () => {
        const seen = totals(capture.printed());
        const end = (v: Vantage) => seen.get(`${v} socket ${conversation}`);
        return { src: end(Vantage.SRC), dst: end(Vantage.DST) };
      };
      const deadline = Date.now() + 7000;
      while (Date.now() < deadline && !((reported().src?.packets ?? 0) >= 20 && (reported().dst?.packets ?? 0) >= 20)) await sleep(100);
      expect(clientExited).toBe(false);
      expect(reported().src?.packets).toBeGreaterThanOrEqual(20);
      expect(reported().src?.reversePackets).toBeGreaterThanOrEqual(20);
      expect(reported().dst?.packets).toBeGreaterThanOrEqual(20);

      await clientDone;
      await serverDone;
      await sleep(300);
      await pcap.stop();
      const { records, code } = await capture.stop();
      expect(code).toBe(0);
      const wire = wireCounts(pcap.file);
      const forward = wire.get(conversation);
      const backward = wire.get(`${IpProtocol.TCP} ${pair.b.ipv4} 7047 ${pair.a.ipv4} ${localPort}`);
      const seen = totals(records);
      for (const vantage of [Vantage.SRC, Vantage.DST]) {
        const got = seen.get(`${vantage} socket ${conversation}`);
        // More than one interval's record: reported while idle, and the close later.
        expect(got?.records.length).toBeGreaterThan(1);
        expect({ bytes: got?.bytes, packets: got?.packets, reverseBytes: got?.reverseBytes, reversePackets: got?.reversePackets }).toEqual({
          bytes: forward?.bytes, packets: forward?.packets, reverseBytes: backward?.bytes, reversePackets: backward?.packets,
        });
      }
    } finally {
      await pcap.stop();
      await capture.stop();
    }
  });

  it('reports a connection that only received a greeting, then idles, in the interval its packets crossed', { timeout: 120_000 }, async () => {
    // No request/response pair: neither end measures app latency, so only the packets tell the
    // drain that these sockets counted something (an idle drain skips the socket iterator).
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '500ms', '--node', `kc-counters-${process.pid}`]);
    const pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'greet.pcap'));
    try {
      const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'greet-server', pair.b.ipv4, '7049']);
      await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
      await sleep(1500); // past capture's first drain, which reads everything whatever the marks say
      const client = spawnIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'greet-hold-client', pair.b.ipv4, '7049', '6000']);
      const clientDone = new Promise((resolve) => client.once('exit', resolve));
      const localPort = await new Promise<number>((resolve) => client.stderr?.on('data', (c: Buffer) => {
        const line = c.toString().split('\n').find((l) => l.includes('"idle"'));
        if (line) resolve((JSON.parse(line) as { localPort: number }).localPort);
      }));
      await sleep(300);
      await pcap.stop(); // the wire up to the idle time: nothing crosses while the client holds
      const wire = wireCounts(pcap.file);
      const forward = wire.get(`${IpProtocol.TCP} ${pair.a.ipv4} ${localPort} ${pair.b.ipv4} 7049`);
      const backward = wire.get(`${IpProtocol.TCP} ${pair.b.ipv4} 7049 ${pair.a.ipv4} ${localPort}`);
      const expected = { bytes: forward?.bytes, packets: forward?.packets, reverseBytes: backward?.bytes, reversePackets: backward?.packets };
      const conversation = `${IpProtocol.TCP} ${pair.a.ipv4} ${localPort} ${pair.b.ipv4} 7049`;
      const reported = (vantage: Vantage) => {
        const got = totals(capture.printed()).get(`${vantage} socket ${conversation}`);
        return { bytes: got?.bytes, packets: got?.packets, reverseBytes: got?.reverseBytes, reversePackets: got?.reversePackets };
      };
      const deadline = Date.now() + 3000;
      while (Date.now() < deadline && !(isDeepStrictEqual(reported(Vantage.SRC), expected) && isDeepStrictEqual(reported(Vantage.DST), expected))) await sleep(100);
      expect({ src: reported(Vantage.SRC), dst: reported(Vantage.DST) }).toEqual({ src: expected, dst: expected });
      await clientDone;
      server.kill();
      expect((await capture.stop()).code).toBe(0);
    } finally {
      await pcap.stop();
      await capture.stop();
    }
  });

  it('measures no app latency on a connection that only received, however many sockets that sent and closed unanswered came before it', { timeout: 120_000 }, async () => {
    // Each sender's request stays unanswered; a receiver's socket may well be allocated at the
    // address a sender's was. A receive is a response only to this socket's own send.
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s', '--node', `kc-counters-${process.pid}`]);
    try {
      const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'greet-server', pair.b.ipv4, '7048']);
      await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
      const report = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'send-close-client', pair.b.ipv4, '7048', '150']));
      server.kill();
      const { records, code } = await capture.stop();
      expect(code).toBe(0);
      const receivers = new Set(report.receivers);
      const mine = records.filter((r) => r.protocol === IpProtocol.TCP && r.dst?.port === 7048 && receivers.has(r.src?.port ?? 0) && r.vantage === Vantage.SRC);
      expect(new Set(mine.map((r) => r.src?.port)).size).toBe(150);
      expect(mine.filter((r) => r.appLatency).map((r) => `${r.src?.port}: ${r.appLatency?.count} pairs, ${r.appLatency?.sumUs} µs`)).toEqual([]);
    } finally {
      await capture.stop();
    }
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], [pair.a.netns, pair.b.netns])).toEqual([]);
  });
});
