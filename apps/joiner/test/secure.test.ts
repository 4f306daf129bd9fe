// The joiner's Redis link with the project's TLS material (tools/make-ca.sh) and the ACL of
// infra/redis/kappa.acl, rendered by the file's own `render:` line: a redis-server that speaks
// only TLS and requires client certificates refuses plaintext, certificate-less, password-less
// and wrong-password clients and lets user kappa run nothing beyond the joiner's commands on
// kappa: keys, and a real joiner joins (and sweeps) records through it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Bus } from '@kappa/bus';
import { freePort, makeTlsMaterial, startNatsServer, startRedisServer } from '@kappa/testing';
import type { TestServer, TlsMaterial } from '@kappa/testing';
import { collectJoined, conversation, newBus, publishRecords, startJoiner, stopJoiner } from './harness.js';
import type { Collector, JoinerProcess } from './harness.js';

const root = join(import.meta.dirname, '../../..');
const aclTemplate = join(root, 'infra/redis/kappa.acl');
const PASSWORD = 'ksl-redis-pass-7f3e9a';

let tls: TlsMaterial;
let dir: string;
let redis: TestServer;
let tlsPort: number;
let nats: TestServer;
let bus: Bus;
const joiners: JoinerProcess[] = [];
const clients: Redis[] = [];
let collector: Collector | undefined;

/** Runs the template's documented `render:` line, writing the ACL file into `target`. */
function renderAcl(target: string): void {
  const line = readFileSync(aclTemplate, 'utf8').split('\n').find((l) => l.startsWith('# render: '));
  if (!line) throw new Error(`${aclTemplate} has no "# render:" line`);
  const command = line.slice('# render: '.length).replace('/data/users.acl', target);
  execFileSync('bash', ['-c', command], { cwd: root, env: { ...process.env, KAPPA_REDIS_PASSWORD: PASSWORD } });
}

beforeAll(async () => {
  tls = makeTlsMaterial();
  dir = mkdtempSync(join(tmpdir(), 'ksl-redis-acl-'));
  const aclFile = join(dir, 'users.acl');
  renderAcl(aclFile);
  tlsPort = await freePort();
  // Only the TLS port (--port 0), client certificates required (tls-auth-clients defaults to yes).
  [redis, nats] = await Promise.all([
    startRedisServer({
      args: ['--port', '0', '--tls-port', String(tlsPort), '--tls-cert-file', tls.serverCertFile, '--tls-key-file', tls.serverKeyFile, '--tls-ca-cert-file', tls.caFile, '--aclfile', aclFile],
    }),
    startNatsServer(),
  ]);
  bus = await newBus(nats.url, 'secure-test');
});

afterEach(async () => {
  await Promise.all(joiners.splice(0).map((j) => stopJoiner(j)));
  await collector?.consumer.stop();
  collector = undefined;
  for (const c of clients.splice(0)) c.disconnect();
});

afterAll(async () => {
  await bus?.close();
  await Promise.all([redis?.stop(), nats?.stop()]);
  rmSync(dir, { recursive: true, force: true });
  tls?.remove();
});

const tlsOptions = (withCert = true): RedisOptions['tls'] => ({
  ca: readFileSync(tls.caFile),
  ...(withCert ? { cert: readFileSync(tls.clientCertFile), key: readFileSync(tls.clientKeyFile) } : {}),
});

/** An ioredis client that does not retry, so a refusal surfaces as a rejected connect(); errors collects why. */
async function client(options: RedisOptions, errors: string[] = []): Promise<Redis> {
  const c = new Redis({ host: '127.0.0.1', port: tlsPort, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null, connectTimeout: 5000, ...options });
  c.on('error', (error: Error) => errors.push(error.message));
  clients.push(c);
  await c.connect();
  return c;
}

describe('Redis with TLS and the kappa ACL', () => {
  it('refuses a plaintext client on the TLS port', async () => {
    await expect(client({ username: 'kappa', password: PASSWORD })).rejects.toThrow();
  });

  it('refuses a TLS client without a client certificate', async () => {
    await expect(client({ tls: tlsOptions(false), username: 'kappa', password: PASSWORD })).rejects.toThrow();
  });

  it('refuses a wrong password, and lets a client without credentials run nothing (default user off)', async () => {
    const errors: string[] = [];
    await expect(client({ tls: tlsOptions(), username: 'kappa', password: 'wrong-pass' }, errors)).rejects.toThrow();
    expect(errors.join('\n')).toMatch(/WRONGPASS/);
    // Without credentials ioredis's HELLO itself is refused; over RESP2 (no HELLO) every command is.
    const anonymousErrors: string[] = [];
    await expect(client({ tls: tlsOptions() }, anonymousErrors)).rejects.toThrow();
    expect(anonymousErrors.join('\n')).toMatch(/NOAUTH/);
    const resp2 = await client({ tls: tlsOptions(), protocol: 2 });
    await expect(resp2.ping()).rejects.toThrow(/NOAUTH/);
    await expect(resp2.hset('kappa:{t}:rec', 'k', 'v')).rejects.toThrow(/NOAUTH/);
  });

  it('lets user kappa run the joiner commands on kappa: keys only, and nothing else', async () => {
    const kappa = await client({ tls: tlsOptions(), username: 'kappa', password: PASSWORD });
    expect(await kappa.ping()).toBe('PONG');
    expect(await kappa.hset('kappa:{t}:rec', 'k', 'v')).toBe(1);
    await expect(kappa.hset('other:{t}:rec', 'k', 'v')).rejects.toThrow(/NOPERM/);
    await expect(kappa.get('other:x')).rejects.toThrow(/NOPERM/);
    await expect(kappa.incr('kappa:x')).rejects.toThrow(/NOPERM/);
    await expect(kappa.lpush('kappa:{t}:list', 'v')).rejects.toThrow(/NOPERM/);
    await expect(kappa.keys('kappa:*')).rejects.toThrow(/NOPERM/);
    await expect(kappa.info()).rejects.toThrow(/NOPERM/);
    await expect(kappa.flushall()).rejects.toThrow(/NOPERM/);
    await expect(kappa.config('GET', 'requirepass')).rejects.toThrow(/NOPERM/);
    await expect(kappa.publish('kappa:chan', 'x')).rejects.toThrow(/NOPERM/);
    // A script may not reach outside the prefix either, declared or not.
    await expect(kappa.eval("return redis.call('HSET', KEYS[1], 'k', 'v')", 1, 'other:key')).rejects.toThrow(/NOPERM|can't access/);
    await expect(kappa.eval("return redis.call('HSET', 'other:key', 'k', 'v')", 0)).rejects.toThrow(/NOPERM|can't access/);
  });

  it('a joiner joins both ends of a conversation and sweeps a lonely record, as user kappa over mutual TLS, with no Redis warning', async () => {
    const joiner = await startJoiner({
      nats: nats.url,
      redis: `rediss://127.0.0.1:${tlsPort}`,
      instance: 'ksl-secure',
      args: ['--redis-user=kappa', `--redis-tls-ca=${tls.caFile}`, `--redis-tls-cert=${tls.clientCertFile}`, `--redis-tls-key=${tls.clientKeyFile}`, '--join-wait=1500ms', '--sweep-interval=100ms'],
      env: { KAPPA_REDIS_PASSWORD: PASSWORD },
    });
    joiners.push(joiner);
    collector = await collectJoined(bus);
    const pair = conversation(1);
    const lonely = conversation(2).client;
    await publishRecords(bus, [pair.client, pair.server, lonely], 3, 'ksl-secure');
    await collector.until(3, 30_000);
    await new Promise((r) => setTimeout(r, 500)); // nothing more may come
    expect(collector.records).toHaveLength(3);
    const joined = collector.records.filter((r) => r.joined);
    expect(joined).toHaveLength(2);
    for (const r of joined) {
      expect(r.src?.kube?.objectName).toBe('client-1');
      expect(r.src?.process?.pid).toBe(1001);
      expect(r.dst?.kube?.objectName).toBe('server-1');
      expect(r.dst?.process?.pid).toBe(5001);
    }
    const unjoined = collector.records.find((r) => !r.joined);
    expect(unjoined?.src?.kube?.objectName).toBe('client-2');
    expect(await joiner.metric('kappa_joiner_redis_errors_total')).toBe(0);
    expect(await joiner.ready()).toBe(true);
    const log = joiner.output.join('');
    expect(log).not.toMatch(/NOPERM|Redis unavailable|the Redis link is/);
    expect(log).not.toContain(PASSWORD);
    await stopJoiner(joiner);
    expect(joiner.child.exitCode).toBe(0);
  });
});

describe('joiner with a plaintext, password-less Redis', () => {
  it('still works and logs exactly one warning naming the Redis TLS and ACL flags', async () => {
    const plain = await startRedisServer();
    try {
      const joiner = await startJoiner({ nats: nats.url, redis: plain.url, instance: 'ksl-plain' });
      joiners.push(joiner);
      const warnings = joiner.output.join('').split('\n').filter((l) => l.includes('the Redis link is'));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/plaintext .*--redis-tls-ca.*unauthenticated .*--redis-user and --redis-password/);
      await stopJoiner(joiner);
    } finally {
      await plain.stop();
    }
  });
});
