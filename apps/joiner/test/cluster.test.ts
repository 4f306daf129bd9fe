// The joiner on a real three-node Redis Cluster: every script touches one hash-tagged slot, so
// joins, the sweeper and the schedule work when the keys spread over the nodes.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bus } from '@kappa/bus';
import { startNatsServer, startRedisServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { collectJoined, conversation, counts, newBus, publishRecords, shuffle, startJoiner, stopJoiner, until } from './harness.js';
import type { JoinerProcess } from './harness.js';

let nats: TestServer;
let nodes: TestServer[] = [];
let bus: Bus;
const joiners: JoinerProcess[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nodes = await Promise.all([0, 1, 2].map(() => startRedisServer({ args: ['--cluster-enabled', 'yes', '--cluster-node-timeout', '2000'] })));
  execFileSync('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { stdio: 'ignore' });
  await until(
    () => nodes.every((n) => execFileSync('redis-cli', ['-p', String(n.port), 'cluster', 'info']).toString().includes('cluster_state:ok')),
    60_000,
    'cluster ok',
  );
  bus = await newBus(nats.url, 'test');
});
afterAll(async () => {
  await Promise.all(joiners.map((j) => stopJoiner(j)));
  await bus?.close();
  await Promise.all([nats?.stop(), ...nodes.map((n) => n.stop())]);
});

describe('joiner on Redis Cluster', () => {
  it('joins both ends and releases lonely records with its keys spread over three cluster nodes', async () => {
    const args = ['--redis-cluster', '--join-wait=12s', '--sweep-interval=200ms'];
    for (const instance of ['a', 'b']) joiners.push(await startJoiner({ nats: nats.url, redis: `redis://127.0.0.1:${nodes[0]!.port}`, instance, args }));
    const collector = await collectJoined(bus);
    const pairs = Array.from({ length: 300 }, (_, i) => conversation(i));
    const lonely = Array.from({ length: 50 }, (_, i) => conversation(5000 + i).client);
    await publishRecords(bus, shuffle([...pairs.flatMap((c) => [c.client, c.server]), ...lonely], 11), 25, 'cluster');
    await collector.until(650, 50_000);
    await new Promise((r) => setTimeout(r, 2000));
    const seen = counts(collector.records);
    expect(collector.records).toHaveLength(650);
    expect(seen.size).toBe(650);
    expect(collector.records.filter((r) => r.joined)).toHaveLength(600);
    expect(collector.records.filter((r) => !r.joined && r.joinStatus === 'no-peer')).toHaveLength(50);
    // The state really was spread: every node holds joiner keys.
    const perNode = nodes.map((n) => Number(execFileSync('redis-cli', ['-p', String(n.port), 'dbsize']).toString()));
    for (const n of perNode) expect(n).toBeGreaterThan(0);
    await collector.consumer.stop();
  }, 120_000);
});
