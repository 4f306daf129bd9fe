// The joiner on a real Redis Cluster secured as components/redis-cluster and the managed Redis of
// the clouds are: three primaries and three replicas speaking only TLS (clients, cluster bus,
// replication) with client certificates, nodes announcing host names (not addresses), the ACL of
// infra/redis/kappa.acl (user kappa; the default user off) plus an admin user for replication and
// cluster creation. Two joiner replicas join every conversation through it as user kappa, each
// partition's keys share one slot (hash tags), the state is spread over all three primaries, and
// a SIGKILLed primary is replaced by its replica while the joiners go on.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bus } from '@kappa/bus';
import { freePort, makeTlsMaterial, startNatsServer, startRedisServer } from '@kappa/testing';
import type { TestServer, TlsMaterial } from '@kappa/testing';
import { collectJoined, conversation, counts, newBus, publishRecords, shuffle, startJoiner, stopJoiner, until } from './harness.js';
import type { JoinerProcess } from './harness.js';

const root = join(import.meta.dirname, '../../..');
const PASSWORD = `ksc-kappa-${process.pid}`;
const ADMIN_PASSWORD = `ksc-admin-${process.pid}`;

let tls: TlsMaterial;
let dir: string;
let nats: TestServer;
let bus: Bus;
const nodes: { port: number; server: TestServer }[] = [];
const joiners: JoinerProcess[] = [];

/** redis-cli over TLS as kappa-admin. */
function cli(port: number, ...args: string[]): string {
  return execFileSync(
    'redis-cli',
    ['--tls', '--cacert', tls.caFile, '--cert', tls.clientCertFile, '--key', tls.clientKeyFile, '--user', 'kappa-admin', '-h', '127.0.0.1', '-p', String(port), ...args],
    { env: { ...process.env, REDISCLI_AUTH: ADMIN_PASSWORD }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
  );
}

beforeAll(async () => {
  tls = makeTlsMaterial();
  dir = mkdtempSync(join(tmpdir(), 'ksc-redis-cluster-'));
  // kappa.acl rendered by its own `render:` line, plus the admin user (as components/redis-cluster does).
  const render = readFileSync(join(root, 'infra/redis/kappa.acl'), 'utf8').split('\n').find((l) => l.startsWith('# render: '))!.slice('# render: '.length);
  execFileSync('bash', ['-c', render.replace('/data/users.acl', join(dir, 'users.acl'))], { cwd: root, env: { ...process.env, KAPPA_REDIS_PASSWORD: PASSWORD } });
  const hash = execFileSync('bash', ['-c', 'printf %s "$P" | sha256sum | cut -c1-64'], { env: { ...process.env, P: ADMIN_PASSWORD }, encoding: 'utf8' }).trim();
  writeFileSync(join(dir, 'users.acl'), `${readFileSync(join(dir, 'users.acl'), 'utf8')}user kappa-admin on #${hash} ~* &* +@all\n`);
  nats = await startNatsServer();
  for (let i = 0; i < 6; i++) {
    const port = await freePort();
    const server = await startRedisServer({
      args: [
        '--masteruser', 'kappa-admin', '--masterauth', ADMIN_PASSWORD,
        '--aclfile', join(dir, 'users.acl'),
        '--port', '0', '--tls-port', String(port), '--tls-auth-clients', 'yes', '--tls-cluster', 'yes', '--tls-replication', 'yes',
        '--tls-cert-file', tls.serverCertFile, '--tls-key-file', tls.serverKeyFile, '--tls-ca-cert-file', tls.caFile,
        '--cluster-enabled', 'yes', '--cluster-node-timeout', '2000',
        '--cluster-announce-hostname', 'localhost', '--cluster-preferred-endpoint-type', 'hostname',
        '--appendonly', 'no',
      ],
    });
    nodes.push({ port, server });
  }
  cli(nodes[0]!.port, '--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes');
  await until(() => nodes.every((n) => cli(n.port, 'cluster', 'info').includes('cluster_state:ok')), 30_000, 'cluster ok');
  bus = await newBus(nats.url, 'cluster-secure');
}, 120_000);

afterAll(async () => {
  await Promise.all(joiners.map((j) => stopJoiner(j)));
  await bus?.close();
  await Promise.all([nats?.stop(), ...nodes.map((n) => n.server.stop())]);
  if (dir) rmSync(dir, { recursive: true, force: true });
  tls?.remove();
});

/** The primaries now, by port: `cluster nodes` of a live node. */
function primaries(): number[] {
  const live = nodes.find((n) => n.server.process.pid !== undefined && cliOk(n.port));
  return cli(live!.port, 'cluster', 'nodes')
    .split('\n')
    .filter((line) => /\bmaster\b/.test(line) && !/\bfail\b/.test(line))
    .map((line) => Number(/:(\d+)@/.exec(line)?.[1]));
}
function cliOk(port: number): boolean {
  try {
    return cli(port, 'ping').trim() === 'PONG';
  } catch {
    return false;
  }
}

describe('joiner on a TLS Redis Cluster with ACL users', () => {
  it('joins every conversation once as user kappa, keeps each partition in one slot, spreads partitions over every primary, and goes on when a primary dies', async () => {
    const args = [
      '--redis-cluster',
      '--redis-user=kappa',
      `--redis-tls-ca=${tls.caFile}`,
      `--redis-tls-cert=${tls.clientCertFile}`,
      `--redis-tls-key=${tls.clientKeyFile}`,
      '--join-wait=12s',
      '--sweep-interval=200ms',
    ];
    // The seed by its name: the certificate holds DNS:localhost, and so does every node's announcement.
    for (const instance of ['a', 'b']) {
      joiners.push(await startJoiner({ nats: nats.url, redis: `rediss://localhost:${nodes[0]!.port}`, instance, args, env: { KAPPA_REDIS_PASSWORD: PASSWORD } }));
    }
    const collector = await collectJoined(bus);
    const pairs = Array.from({ length: 200 }, (_, i) => conversation(i));
    const lonely = Array.from({ length: 20 }, (_, i) => conversation(5000 + i).client);
    await publishRecords(bus, shuffle([...pairs.flatMap((c) => [c.client, c.server]), ...lonely], 7), 20, 'ksc-1');
    await collector.until(420, 60_000);

    // Each partition's keys (kappa:{p<k>}:…) hash to one slot, and the partitions are spread over the three primaries.
    const slotsByPartition = new Map<string, Set<number>>();
    const primariesWithKeys = new Set<number>();
    for (const port of primaries()) {
      const keys = cli(port, '--scan', '--pattern', 'kappa:*').split('\n').filter(Boolean);
      if (keys.length > 0) primariesWithKeys.add(port);
      for (const key of keys) {
        const tag = /^kappa:\{(p\d+)\}:/.exec(key)?.[1];
        // The one key outside the partitions: the set of live replicas.
        if (key === 'kappa:joiners') continue;
        expect(tag, key).toBeDefined();
        const slot = Number(cli(port, 'cluster', 'keyslot', key).trim());
        slotsByPartition.set(tag!, (slotsByPartition.get(tag!) ?? new Set()).add(slot));
      }
    }
    expect(slotsByPartition.size).toBe(16);
    for (const [partition, slots] of slotsByPartition) expect(slots.size, partition).toBe(1);
    expect(primariesWithKeys.size).toBe(3);

    // SIGKILL a primary that holds partitions: its replica takes over and both joiners go on.
    const victimPort = [...primariesWithKeys][0]!;
    const victim = nodes.find((n) => n.port === victimPort)!;
    await victim.server.process.stop('SIGKILL');
    const killedAt = Date.now();
    await until(() => primaries().length === 3 && !primaries().includes(victimPort), 30_000, 'a replica promoted');
    const promotedAfter = Date.now() - killedAt;
    const more = Array.from({ length: 100 }, (_, i) => conversation(1000 + i));
    await publishRecords(bus, shuffle(more.flatMap((c) => [c.client, c.server]), 9), 20, 'ksc-2');
    await collector.until(620, 60_000);
    await new Promise((r) => setTimeout(r, 2000)); // nothing more may come

    const seen = counts(collector.records);
    expect(collector.records).toHaveLength(620);
    expect(seen.size).toBe(620);
    expect(collector.records.filter((r) => r.joined)).toHaveLength(600);
    expect(collector.records.filter((r) => !r.joined && r.joinStatus === 'no-peer')).toHaveLength(20);
    expect(promotedAfter).toBeLessThanOrEqual(15_000);
    for (const joiner of joiners) expect(joiner.output.join('')).not.toMatch(/NOPERM|the Redis link is|certificate/i);
    await collector.consumer.stop();
  }, 240_000);
});
