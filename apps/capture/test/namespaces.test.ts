// The same tuple in two network namespaces (two pods talking over loopback, sidecars on
// 127.0.0.6, probes) is two conversations: each gets its own records, with its own process and
// its namespace, counted as each namespace's loopback carried it.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { PacketCapture, TestCgroup, run, runIn, spawnIn, uniqueName, wireCounts } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture as startCaptureProcess, totals } from './harness.js';
import type { CaptureRun } from './harness.js';
import { describePrivileged } from './privileges.js';

describePrivileged('identical tuples in two network namespaces', () => {

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
  const cgroup = new TestCgroup(`kc-netns-${process.pid}`);
  const nodes = cgroup.child('nodes');
  const dir = mkdtempSync(join(tmpdir(), 'kc-netns-'));
  const name = uniqueName('kc-ns');
  const pods = [`${name}-1`, `${name}-2`];

  beforeAll(async () => {
    for (const pod of pods) {
      await runIn(undefined, nodes, 'ip', ['netns', 'add', pod]);
      run('ip', ['netns', 'exec', pod, 'ip', 'link', 'set', 'lo', 'up']);
    }
  });
  afterAll(() => {
    for (const pod of pods) {
      try {
        run('ip', ['netns', 'del', pod]);
      } catch {
        // not made
      }
    }
    nodes.destroy();
    cgroup.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives each namespace its own records, its own process and namespace, counted as its loopback carried them', { timeout: 120_000 }, async () => {
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s', '--node', name]);
    const pcaps = await Promise.all(pods.map((pod, i) => PacketCapture.start(pod, 'lo', join(dir, `lo-${i}.pcap`))));
    // In each namespace: 127.0.0.1:45000 → 127.0.0.1:7200, a different number of exchanges each.
    const clients = [];
    for (const [i, pod] of pods.entries()) {
      const server = spawnIn(pod, nodes, process.execPath, [TRAFFIC, 'tcp-server', '127.0.0.1', '7200', '1']);
      const serverDone = new Promise((resolve) => server.once('exit', resolve));
      let serverOut = '';
      server.stdout?.on('data', (c: Buffer) => (serverOut += c.toString()));
      await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
      process.env.KC_LOCAL_PORT = '45000';
      const client = parseReport(await runIn(pod, nodes, process.execPath, [TRAFFIC, 'tcp-client', '127.0.0.1', '7200', String(5 + 10 * i), '500']));
      delete process.env.KC_LOCAL_PORT;
      await serverDone;
      clients.push({ client, server: parseReport(serverOut), netns: statSync(`/run/netns/${pod}`).ino });
    }
    for (const pcap of pcaps) await pcap.stop();
    const { records, code } = await capture.stop();
    expect(code).toBe(0);

    const conversation = `${IpProtocol.TCP} 127.0.0.1 45000 127.0.0.1 7200`;
    // Whatever else a record says, the two clients and the two servers each have theirs.
    const ofConversation = records.filter((r) => r.src?.port === 45000 && r.dst?.port === 7200);
    const pids = (vantage: Vantage) => new Set(ofConversation.filter((r) => r.vantage === vantage).map((r) => (vantage === Vantage.SRC ? r.src : r.dst)?.process?.pid));
    expect(pids(Vantage.SRC)).toEqual(new Set(clients.map((c) => c.client.pid)));
    expect(pids(Vantage.DST)).toEqual(new Set(clients.map((c) => c.server.pid)));
    for (const [i, { client, server, netns }] of clients.entries()) {
      expect(client.localPort).toBe(45000);
      const wire = wireCounts(pcaps[i]!.file);
      const forward = wire.get(conversation);
      const backward = wire.get(`${IpProtocol.TCP} 127.0.0.1 7200 127.0.0.1 45000`);
      const atSrc = records.filter((r) => r.vantage === Vantage.SRC && r.src?.netns === netns);
      const atDst = records.filter((r) => r.vantage === Vantage.DST && r.dst?.netns === netns);
      expect(atSrc.map((r) => r.src?.process?.pid), `SRC records in namespace ${i + 1}`).toEqual(atSrc.map(() => client.pid));
      expect(atDst.map((r) => r.dst?.process?.pid), `DST records in namespace ${i + 1}`).toEqual(atDst.map(() => server.pid));
      for (const [end, mine] of [['SRC', atSrc], ['DST', atDst]] as const) {
        const got = totals(mine).get(`${end === 'SRC' ? Vantage.SRC : Vantage.DST} socket ${conversation}`);
        expect({ bytes: got?.bytes, packets: got?.packets, reverseBytes: got?.reverseBytes, reversePackets: got?.reversePackets }, `${end} in namespace ${i + 1}`).toEqual({
          bytes: forward?.bytes, packets: forward?.packets, reverseBytes: backward?.bytes, reversePackets: backward?.packets,
        });
      }
    }
    expect(clients[0]!.netns).not.toBe(clients[1]!.netns);
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], pods)).toEqual([]);
  });
});
