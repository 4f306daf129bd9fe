// Without --stdout, capture publishes FlowBatches on kappa.flow.captured.<node> through the bus
// (real nats-server with JetStream), with a heartbeat for `kappa status`.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { IpProtocol, Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { TestCgroup, VethPair, runIn, spawnIn, startNatsServer, uniqueName } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture } from './harness.js';
import { describePrivileged } from './privileges.js';

describePrivileged('publishing to NATS', () => {
  const cgroup = new TestCgroup(uniqueName('kc-publish'));
  const nodes = cgroup.child('nodes');
  let pair: VethPair;
  let nats: TestServer;
  let bus: Bus;

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 71, cgroup: nodes });
    nats = await startNatsServer();
    bus = await connectBus({ servers: [nats.url], name: 'kc-test', logger: createLogger('kc-test', 'silent'), registry: createRegistry('kc-test') });
    await bus.ensureStreams();
  });
  afterAll(async () => {
    await bus?.close();
    await nats?.stop();
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
  });

  it('publishes the records of a conversation on kappa.flow.captured.<node>', async () => {
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '1s', '--node', 'kc-node-1', '--nats-url', nats.url], undefined, false);
    const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', pair.b.ipv4, '7030', '1']);
    const serverDone = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
    const report = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, '7030', '3', '500']));
    await serverDone;
    const { code } = await capture.stop();
    expect(code).toBe(0);

    const received: FlowRecord[] = [];
    const consumer = await bus.consumeBatches({
      stage: 'kc-test',
      subject: subjects.captured('kc-node-1'),
      handler: (batch) => {
        received.push(...batch.records);
        return Promise.resolve();
      },
    });
    const deadline = Date.now() + 10_000;
    const mine = () => received.filter((r) => r.protocol === IpProtocol.TCP && r.src?.port === report.localPort);
    while (mine().length < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    await consumer.stop();
    const vantages = new Set(mine().map((r) => r.vantage));
    expect(vantages).toEqual(new Set([Vantage.SRC, Vantage.DST]));
    expect(mine().every((r) => r.node === 'kc-node-1' && r.observation === 'socket')).toBe(true);
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path], [pair.a.netns, pair.b.netns])).toEqual([]);
  });
});
