// A SIGKILL of capture followed by a restart with the same --node and --cgroup loses and doubles
// nothing: the kernel keeps counting into the pinned maps while capture is down, the restart
// takes the pinned links over, and a drained batch that never reached NATS is sent from the spool.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import { FlowRecordSchema, IpProtocol, Vantage, decodeFlowBatch, toBinary } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { PacketCapture, TestCgroup, VethPair, runIn, spawnIn, startNatsServer, uniqueName, wireCounts } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { instanceToken, pinFolder } from '../src/instance.js';
import { TRAFFIC, kappaAttachments, parseReport, startCapture, totals } from './harness.js';
import { describePrivileged } from './privileges.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describePrivileged('SIGKILL of capture, then a restart', () => {
  const cgroup = new TestCgroup(uniqueName('kz-crash'));
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kz-crash-'));
  let pair: VethPair;
  let nats: TestServer;

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kz-', subnet: 93, cgroup: nodes });
    nats = await startNatsServer();
  });

  afterAll(async () => {
    await nats?.stop();
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

  // Two captures start per test (8–15 s each at load 30) around ≥ 6 s of paced traffic: a loaded
  // machine, or a second test run beside this one, takes longer than the default 60 s.
  const SLOW = { timeout: 180_000 };

  it('counts a TCP transfer and a UDP exchange that span the crash exactly as the wire carried them, and leaves nothing behind after a graceful stop', SLOW, async () => {
    const args = ['--cgroup', cgroup.path, '--interval', '1s', '--node', 'kz-crash', '--state-dir', join(dir, 'state-stdout')];
    const pcap = await PacketCapture.start(pair.b.netns, pair.b.ifname, join(dir, 'veth.pcap'));
    const first = await startCapture(args);
    const tcpServer = await serve(['tcp-server', pair.b.ipv4, '7093', '1']);
    const udpServer = await serve(['udp-server', pair.b.ipv4, '7094', '300']);
    // 300 exchanges 20 ms apart (≥ 6 s): the crash and the restart fall in the middle of both.
    process.env.KC_PACE_MS = '20';
    const tcpClient = runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, '7093', '300', '1200']);
    const udpClient = runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'udp-client', pair.b.ipv4, '7094', '300', '700']);
    delete process.env.KC_PACE_MS;
    // The crash comes right after the first drain that holds both conversations at both ends,
    // however long a loaded machine takes to start the clients.
    const drainedBoth = () => {
      const ours = first.printed().filter((r) => r.dst?.port === 7093 || r.dst?.port === 7094);
      const seen = new Set(ours.map((r) => `${r.vantage} ${r.protocol}`));
      return [Vantage.SRC, Vantage.DST].every((v) => [IpProtocol.TCP, IpProtocol.UDP].every((p) => seen.has(`${v} ${p}`)));
    };
    const deadline = Date.now() + 30_000;
    while (!drainedBoth() && Date.now() < deadline) await sleep(50);
    first.process.kill('SIGKILL');
    const before = await first.stop();
    expect(before.records.length).toBeGreaterThan(0);
    const folder = pinFolder(instanceToken('kz-crash', cgroup.path));
    expect(readdirSync(folder)).toContain('link_kappa_skb_ingress');
    await sleep(700); // counted by the kernel alone
    const second = await startCapture(args);
    const tcp = parseReport(await tcpClient);
    const udp = parseReport(await udpClient);
    await Promise.all([tcpServer.exited, udpServer.exited]);
    await sleep(300);
    await pcap.stop();
    const after = await second.stop();
    expect(after.code).toBe(0);

    const wire = wireCounts(pcap.file);
    // A batch printed before the SIGKILL whose spool file the kill left (it came between the write
    // and the removal) is printed again by the restart, with the same record ids: delivery is at
    // least once and a reader keeps one of each id. A repeated id must be the same record, not a
    // second count.
    const byId = new Map<string, FlowRecord>();
    for (const r of [...before.records, ...after.records]) {
      expect(r.id).not.toBe('');
      const first = byId.get(r.id);
      if (first) expect(toBinary(FlowRecordSchema, r), `record ${r.id} printed twice`).toEqual(toBinary(FlowRecordSchema, first));
      else byId.set(r.id, r);
    }
    const seen = totals([...byId.values()]);
    const client = pair.a.ipv4;
    const server = pair.b.ipv4;
    for (const [protocol, clientPort, serverPort] of [[IpProtocol.TCP, tcp.localPort, 7093], [IpProtocol.UDP, udp.localPort, 7094]] as const) {
      const forward = wire.get(`${protocol} ${client} ${clientPort} ${server} ${serverPort}`);
      const backward = wire.get(`${protocol} ${server} ${serverPort} ${client} ${clientPort}`);
      expect(forward, `wire has ${protocol} ${clientPort}`).toBeDefined();
      for (const vantage of [Vantage.SRC, Vantage.DST]) {
        const got = seen.get(`${vantage} socket ${protocol} ${client} ${clientPort} ${server} ${serverPort}`);
        // Records before the crash and after the restart: the conversation was cut in two.
        expect(got?.records.some((r) => before.records.includes(r))).toBe(true);
        expect(got?.records.some((r) => after.records.includes(r))).toBe(true);
        expect({ bytes: got?.bytes, packets: got?.packets, reverseBytes: got?.reverseBytes, reversePackets: got?.reversePackets }).toEqual({
          bytes: forward?.bytes, packets: forward?.packets, reverseBytes: backward?.bytes, reversePackets: backward?.packets,
        });
      }
    }
    expect(kappaAttachments([cgroup.path])).toEqual([]);
    expect(existsSync(folder)).toBe(false);
  });

  it('publishes after the restart a drained batch that NATS never got before the SIGKILL', SLOW, async () => {
    const stateDir = join(dir, 'state-nats');
    const spool = join(stateDir, 'spool');
    const args = ['--cgroup', cgroup.path, '--interval', '1s', '--node', 'kz-spool', '--state-dir', stateDir, '--nats-url', nats.url];
    const first = await startCapture(args, undefined, false);
    await nats.process.stop('SIGKILL');
    const tcpServer = await serve(['tcp-server', pair.b.ipv4, '7095', '1']);
    const tcp = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, '7095', '3', '500']));
    await tcpServer.exited;
    // Wait for the drain that took the conversation out of the kernel and could not publish it.
    const mine = (r: FlowRecord) => r.protocol === IpProtocol.TCP && (r.src?.port === tcp.localPort || r.dst?.port === tcp.localPort);
    const spooled = () => readdirSync(spool).filter((f) => f.endsWith('.pb')).flatMap((f) => decodeFlowBatch(readFileSync(join(spool, f))).records).filter(mine);
    const bothEnds = () => new Set(spooled().map((r) => r.vantage)).size === 2;
    const deadline = Date.now() + 20_000;
    while (!bothEnds() && Date.now() < deadline) await sleep(200);
    first.process.kill('SIGKILL');
    await first.stop();
    // What the crashed instance drained and never published: its spool at the moment it died.
    const drained = spooled();
    expect(new Set(drained.map((r) => r.vantage))).toEqual(new Set([Vantage.SRC, Vantage.DST]));
    const drainedIds = new Set(drained.map((r) => r.id));

    await nats.process.start();
    const second = await startCapture(args, undefined, false);
    const bus = await connectBus({ servers: [nats.url], name: 'kz-test', logger: createLogger('kz-test', 'silent'), registry: createRegistry('kz-test') });
    try {
      await bus.ensureStreams();
      const received: FlowRecord[] = [];
      const consumer = await bus.consumeBatches({
        stage: 'kz-test',
        subject: subjects.captured('kz-spool'),
        handler: (batch) => {
          // The restarted instance may add records of its own (what the kernel counted while
          // capture was down): this test is about the spooled ones.
          received.push(...batch.records.filter((r) => mine(r) && drainedIds.has(r.id)));
          return Promise.resolve();
        },
      });
      const until = Date.now() + 15_000;
      while (received.length < drained.length && Date.now() < until) await sleep(100);
      expect((await second.stop()).code).toBe(0);
      await sleep(500);
      await consumer.stop();
      // Once each: the very records the crashed instance drained.
      const counts = (records: FlowRecord[]) => records.map((r) => `${r.vantage} ${r.bytes} ${r.packets} ${r.reverseBytes} ${r.reversePackets}`).sort();
      expect(counts(received)).toEqual(counts(drained));
    } finally {
      await bus.close();
    }
    expect(existsSync(spool)).toBe(false); // sent, and the empty spool removed by the graceful stop
    expect(kappaAttachments([cgroup.path])).toEqual([]);
  });
});
