// A flood of new conversations far beyond --max-conversations, published to a real NATS: every
// conversation that left the namespace (the kernel's own UDP counter, not the generator's word)
// is either a record or counted as lost, in /metrics and in the heartbeat `kappa status` shows,
// and capture's memory stays under the bound its configuration sets.
//
// The loss counters are per map, not per conversation, so the test makes sure the flood is the
// only thing capture can see: capture watches a cgroup that holds the flood generator alone. The
// namespaces, and so the kernel's own sockets in them (the MLD reports each veth end sends for
// ~1.5 s after it comes up: 96 bytes each, which met the full map and added 4 x 52 bytes to the
// lost bytes), live in a sibling cgroup, where a TCP exchange also runs during the flood. Nothing
// but the flood may show up in the records or in the lost counters.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { connectBus, subjects } from '@kappa/bus';
import { IpProtocol, Vantage, decodeStageStatus } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import type { FlowRecord, StageStatus } from '@kappa/contracts';
import { TestCgroup, VethPair, freePort, nstat, run, runIn, spawnIn, startNatsServer, uniqueName } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { TRAFFIC, startCapture } from './harness.js';
import { describePrivileged } from './privileges.js';

const CONVERSATIONS = 30_000;
const MAX_CONVERSATIONS = 4096;
const NODE = 'ksb-flood';

/**
 * capture's peak RSS bound, from its configuration: a Node process with the bus, libbpf and
 * prom-client loaded (measured ~110 MiB here; 160 MiB allowed), plus what one drain holds at
 * once (each of --max-conversations records as a FlowRecord, its JSON-free protobuf encoding and
 * the decoded kernel entry: < 2 KiB each), plus the unsent backlog (--max-unsent-batches
 * batches of at most 2000 records, ~1 KiB each encoded and decoded).
 */
function captureRssBoundBytes(maxConversations: number, maxUnsentBatches: number): number {
  return 160 * 2 ** 20 + maxConversations * 2048 + maxUnsentBatches * 2000 * 1024;
}

function peakRssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmHWM:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) * 1024;
}

/** The value of a counter without labels of its own (every series carries service="..."). */
function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return Number(line?.slice(line.lastIndexOf(' ') + 1) ?? NaN);
}

async function scrape(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

/** Polls `probe` until it returns a value: the test waits for events, not for fixed times. */
async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describePrivileged('a flood of new conversations beyond the flow table', () => {
  const cgroup = new TestCgroup(uniqueName('ksb-flood'));
  // capture watches `watched` (the flood generator only); the namespaces and the other traffic
  // are in `others`.
  const watched = cgroup.child('watched');
  const others = cgroup.child('others');
  let pair: VethPair;
  let nats: TestServer;
  let stateDir: string;
  const silentPeer = '10.77.57.99';

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'ksb-', subnet: 57, cgroup: others });
    run('ip', ['netns', 'exec', pair.a.netns, 'ip', 'neigh', 'replace', silentPeer, 'lladdr', pair.b.mac, 'dev', pair.a.ifname, 'nud', 'permanent']);
    nats = await startNatsServer();
    stateDir = mkdtempSync(join(tmpdir(), 'ksb-flood-'));
  });
  afterAll(async () => {
    pair?.destroy();
    watched.destroy();
    others.destroy();
    cgroup.destroy();
    await nats?.stop();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('records or counts as lost every conversation that left, and stays within its memory bound', { timeout: 120_000 }, async () => {
    const metricsPort = await freePort();
    const capture = await startCapture(
      ['--cgroup', watched.path, '--interval', '1s', '--max-conversations', String(MAX_CONVERSATIONS), '--node', NODE,
        '--nats-url', nats.url, '--state-dir', stateDir, '--metrics-port', String(metricsPort)],
      undefined,
      false,
    );
    const nc = await connect({ servers: nats.url });
    const echo = spawnIn(pair.b.netns, others, process.execPath, [TRAFFIC, 'tcp-server', pair.b.ipv4, '7057', '1']);
    try {
      const beats: StageStatus[] = [];
      const sub = nc.subscribe(`kappa.status.capture.${NODE}`, { callback: (_e, m) => void beats.push(decodeStageStatus(m.data)) });
      await new Promise<void>((resolve, reject) => {
        echo.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve());
        echo.once('exit', (code) => reject(new Error(`tcp-server exited ${code}`)));
      });

      // Truth: datagrams the kernel sent out of namespace a (failed sends are not in it), each a
      // conversation of its own (one datagram, a distinct destination port per source socket).
      // The TCP exchange beside it, outside the watched cgroup, does not touch the UDP counters.
      const before = nstat(pair.a.netns);
      // Capture is paused while the flood runs: the kernel counts on, and no drain (whose
      // number would depend on how long a loaded machine takes to send) makes room mid-flood,
      // so the table's size, not timing, sets how much is lost.
      capture.process.kill('SIGSTOP');
      await Promise.all([
        runIn(pair.a.netns, watched, process.execPath, [TRAFFIC, 'udp-many', silentPeer, String(CONVERSATIONS)]),
        runIn(pair.a.netns, others, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, '7057', '200', '300']),
      ]);
      const after = nstat(pair.a.netns);
      capture.process.kill('SIGCONT');
      const truth = (after.UdpOutDatagrams ?? 0) - (before.UdpOutDatagrams ?? 0);
      const sendFailures = (after.UdpSndbufErrors ?? 0) - (before.UdpSndbufErrors ?? 0);
      expect(truth + sendFailures).toBe(CONVERSATIONS);

      // Two drains that started after the flood ended (the second one surely did), then a
      // heartbeat sent after them: the records, the counters and the heartbeat carry it all.
      const drains = (text: string) => metric(text, 'kappa_capture_drain_duration_seconds_count');
      const drainsAtEnd = drains(await scrape(metricsPort));
      const metrics = await until('two drains after the flood', 30_000, async () => {
        const text = await scrape(metricsPort);
        return drains(text) >= drainsAtEnd + 2 ? text : undefined;
      });
      const scrapedNs = BigInt(Date.now()) * 1_000_000n;
      await until('a heartbeat after the drains', 30_000, () => (beats.some((b) => b.sentNs > scrapedNs) ? true : undefined));
      const peakRss = peakRssBytes(capture.process.pid!);
      const stopped = await capture.stop();
      expect(stopped.code, stopped.stderr.slice(-2000)).toBe(0);
      await sub.drain();

      // Read back as the next stage would: everything capture published (its own count), until
      // none is left.
      const published = metric(metrics, 'kappa_capture_conversations_total');
      const records: FlowRecord[] = [];
      const bus = await connectBus({ servers: [nats.url], name: 'ksb-flood', logger: createLogger('ksb-flood', 'silent'), registry: createRegistry('ksb-flood') });
      const consumer = await bus.consumeBatches({
        stage: 'ksb-flood',
        subject: subjects.captured(NODE),
        maxInFlight: 16,
        handler: (batch) => {
          records.push(...batch.records);
          return Promise.resolve();
        },
      });
      await until(`the ${published} published records`, 30_000, async () => ((await consumer.lag()) === 0 && records.length >= published ? true : undefined));
      await consumer.stop();
      await bus.close();
      // Only the flood is in the watched cgroup: no record of anything else (the TCP exchange,
      // the namespaces' MLD reports) may appear.
      const flood = records.filter((r) => r.protocol === IpProtocol.UDP && r.dst?.ip === silentPeer && r.vantage === Vantage.SRC);
      expect(records.length - flood.length).toBe(0);
      const recorded = new Set(flood.map((r) => `${r.src?.port} ${r.dst?.port}`)).size;
      expect(recorded).toBe(flood.length);
      expect(flood.every((r) => r.packets === 1n && r.bytes === 44n)).toBe(true);

      const lostPackets = metric(metrics, 'kappa_capture_map_overflow_packets_total');
      const lostBytes = metric(metrics, 'kappa_capture_map_overflow_bytes_total');
      const heartbeatLost = beats.at(-1)?.lost['map_full'] ?? 0n;
      console.log(`flood: truth ${truth} conversations (send failures ${sendFailures}), recorded ${recorded}, lost (metrics) ${lostPackets} packets / ${lostBytes} bytes, heartbeat lost.map_full ${heartbeatLost}, peak RSS ${(peakRss / 2 ** 20).toFixed(1)} MiB`);

      // One datagram per conversation: a lost packet is a lost conversation. The 1 % allows for
      // a datagram counted into an entry the drain had already copied out (a kernel race, not
      // something other traffic can cause).
      expect(lostPackets).toBeGreaterThan(truth / 2);
      expect(Math.abs(recorded + lostPackets - truth)).toBeLessThanOrEqual(truth * 0.01);
      expect(lostBytes).toBe(lostPackets * 44);
      expect(Number(heartbeatLost)).toBe(lostPackets);
      expect(peakRss).toBeLessThan(captureRssBoundBytes(MAX_CONVERSATIONS, 100));
    } finally {
      echo.kill('SIGKILL');
      await nc.close();
      await capture.stop();
    }
  });
});
