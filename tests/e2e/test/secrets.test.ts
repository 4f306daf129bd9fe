// No secret leaves a kappa service through its logs or /metrics: the NATS and Redis passwords
// given as flags, and secrets on a command line inside records (valid, malformed and undecodable
// ones, on every stage's input subject) appear in no line of any service's stdout or stderr and
// in no /metrics body, nor in start-up errors, --help or a failed Redis AUTH.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/transport-node';
import { IpProtocol, Vantage, encodeFlowBatch, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import { TestCgroup, freePort, startNatsServer, startRedisServer, uniqueName } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { workspaceRoot } from '../src/services.js';

const NODE = 'ksp-secret-node';
const NATS_USER = 'kappa';
const NATS_PASSWORD = 'nats-pw-H7x9q-SECRET';
const REDIS_PASSWORD = 'redis-pw-Q2z8w-SECRET';
/** On command lines inside records. */
const CMDLINE_SECRETS = ['hunter2-SECRET', 'wJalrXUtnFEMIK7MDENGbPxRfiCY-SECRET', 'eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.SECRET-sig'];
const CMDLINE = `mysql --password=${CMDLINE_SECRETS[0]} -h db AWS_SECRET_ACCESS_KEY=${CMDLINE_SECRETS[1]} curl -H "Authorization: Bearer ${CMDLINE_SECRETS[2]}" https://api`;
const ALL_SECRETS = [NATS_PASSWORD, REDIS_PASSWORD, ...CMDLINE_SECRETS];

const root = process.getuid?.() === 0;

interface Service {
  name: string;
  child: ChildProcess;
  output: string;
  metricsPort: number;
}

function bundle(app: string): string {
  return join(workspaceRoot, `apps/${app}/dist/main.js`);
}

function record(id: string, ip = '10.99.0.1') {
  return newFlowRecord({
    id,
    node: NODE,
    vantage: Vantage.SRC,
    protocol: IpProtocol.TCP,
    startNs: 1n,
    endNs: 2n,
    bytes: 100n,
    packets: 1n,
    src: { ip, port: 40000, process: { pid: 999_999_99, name: 'mysql', cmdline: CMDLINE } },
    dst: { ip: '10.99.0.2', port: 3306 },
  });
}

function leaks(text: string): string[] {
  return ALL_SECRETS.filter((secret) => text.includes(secret));
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: response.status, body: await response.text() };
  } catch {
    return { status: 0, body: '' };
  }
}

describe('secrets in logs and metrics', () => {
  let nats: TestServer;
  let redis: TestServer;
  let publisher: NatsConnection;
  const services: Service[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'ksp-secrets-'));
  const cgroup = root ? new TestCgroup(uniqueName('ksp-secrets')) : undefined;
  const metricsBodies: Record<string, string> = {};

  async function start(name: string, app: string, args: string[]): Promise<Service> {
    const metricsPort = await freePort();
    const natsFlags = ['--nats-url', `nats://127.0.0.1:${nats.port}`, '--nats-user', NATS_USER, '--nats-password', NATS_PASSWORD];
    const child = spawn(process.execPath, [bundle(app), ...natsFlags, '--metrics-port', String(metricsPort), '--log-level', 'debug', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Only what the flags give: no KAPPA_* of the caller.
      env: { PATH: process.env['PATH'] ?? '' },
    });
    const service: Service = { name, child, output: '', metricsPort };
    child.stdout?.on('data', (c: Buffer) => (service.output += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (service.output += c.toString()));
    services.push(service);
    await until(`${name} ready`, async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${service.output}`);
      return (await get(metricsPort, '/readyz')).status === 200;
    });
    return service;
  }

  beforeAll(async () => {
    nats = await startNatsServer({ args: ['--user', NATS_USER, '--pass', NATS_PASSWORD] });
    redis = await startRedisServer({ args: ['--requirepass', REDIS_PASSWORD] });
    if (cgroup) await start('capture', 'capture', ['--node', NODE, '--cgroup', cgroup.path, '--interval', '1s', '--state-dir', join(dir, 'capture-state')]);
    await start('process-enricher', 'process-enricher', ['--node', NODE, '--cri-socket', 'none', '--proc-root', '/proc']);
    await start('k8s-tagger', 'k8s-tagger', ['--grpc-port', '0']);
    await start('joiner', 'joiner', ['--redis-url', `redis://127.0.0.1:${redis.port}`, '--redis-password', REDIS_PASSWORD, '--interval', '1s']);
    await start('exporter', 'exporter', ['--jsonl', join(dir, 'flows.jsonl'), '--observer-port', '0']);
    publisher = await connect({ servers: `nats://127.0.0.1:${nats.port}`, user: NATS_USER, pass: NATS_PASSWORD });

    const garbage = new TextEncoder().encode(`\xff\xff not protobuf ${CMDLINE} ${CMDLINE_SECRETS.join(' ')}`);
    const subjects = [`kappa.flow.captured.${NODE}`, `kappa.flow.enriched.p0.${NODE}`, 'kappa.flow.tagged.p0', 'kappa.flow.joined.p0'];
    for (const [i, subject] of subjects.entries()) {
      const valid = newFlowBatch({ batchId: `ksp-valid-${i}`, producer: 'ksp-test', records: [record(`ksp-valid-${i}`)] });
      // An address no stage can parse, with the command line beside it: whatever error it causes must not quote the secrets.
      const malformed = newFlowBatch({ batchId: `ksp-bad-${i}`, producer: 'ksp-test', records: [record(`ksp-bad-${i}`, `not-an-ip --password=${CMDLINE_SECRETS[0]}`)] });
      publisher.publish(subject, encodeFlowBatch(valid));
      publisher.publish(subject, encodeFlowBatch(malformed));
      publisher.publish(subject, garbage);
    }
    await publisher.flush();
    // Every consuming stage moved the garbage to its DLQ, and the valid record reached the exporter's file.
    for (const name of ['process-enricher', 'k8s-tagger', 'joiner', 'exporter']) {
      const service = services.find((s) => s.name === name);
      await until(`${name} DLQ line`, () => service?.output.includes('undecodable message moved to the DLQ') ?? false);
    }
    await until('the record in the exporter file', () => {
      try {
        return readFileSync(join(dir, 'flows.jsonl'), 'utf8').includes('ksp-valid-3');
      } catch {
        return false;
      }
    });
    for (const service of services) metricsBodies[service.name] = (await get(service.metricsPort, '/metrics')).body;
    for (const service of services) {
      const exited = new Promise((r) => service.child.once('exit', r));
      service.child.kill('SIGTERM');
      await exited;
    }
  }, 120_000);

  afterAll(async () => {
    // SIGTERM first, even when a test failed: capture unpins and detaches its programs only when
    // it stops on its own (a SIGKILL would leave its bpffs folder behind).
    await Promise.all(
      services.map(async (service) => {
        if (service.child.exitCode !== null || service.child.signalCode !== null) return;
        const exited = new Promise((r) => service.child.once('exit', r));
        service.child.kill('SIGTERM');
        const timer = setTimeout(() => service.child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    await publisher?.close();
    await nats?.stop();
    await redis?.stop();
    cgroup?.destroy();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('the records did carry the secrets through the pipeline (the test is not vacuous)', () => {
    expect(leaks(readFileSync(join(dir, 'flows.jsonl'), 'utf8'))).toEqual(CMDLINE_SECRETS);
    expect(services.map((s) => s.name)).toEqual([...(root ? ['capture'] : []), 'process-enricher', 'k8s-tagger', 'joiner', 'exporter']);
  });

  it('no service prints a secret on stdout or stderr, at debug level, from start to shutdown', () => {
    for (const service of services) {
      expect(service.output.length, service.name).toBeGreaterThan(0);
      expect(leaks(service.output), `${service.name}:\n${service.output}`).toEqual([]);
    }
  });

  it('no /metrics body holds a secret', () => {
    for (const service of services) {
      expect(metricsBodies[service.name], service.name).toMatch(/^# HELP/m);
      expect(leaks(metricsBodies[service.name] ?? ''), service.name).toEqual([]);
    }
  });

  it('a wrong Redis password (AUTH fails, ioredis quotes the command) is not printed', async () => {
    const wrong = `${REDIS_PASSWORD}-wrong`;
    const result = spawnSync(
      process.execPath,
      [bundle('joiner'), '--nats-url', `nats://127.0.0.1:${nats.port}`, '--nats-user', NATS_USER, '--nats-password', NATS_PASSWORD, '--metrics-port', '0', '--redis-url', `redis://127.0.0.1:${redis.port}`, '--redis-password', wrong],
      { encoding: 'utf8', timeout: 30_000, env: { PATH: process.env['PATH'] ?? '' } },
    );
    expect(result.status).not.toBe(0);
    expect(result.stdout + result.stderr).toMatch(/Redis/);
    expect(leaks(result.stdout + result.stderr)).toEqual([]);
  });

  it.each(['process-enricher', 'k8s-tagger', 'joiner', 'exporter'])('%s refused by NATS with the password in --nats-url does not print it', (app) => {
    // Own flags: the joiner's Redis (with its password in the URL); free gRPC ports (the defaults may be taken).
    const ownFlags: Record<string, string[]> = {
      joiner: ['--redis-url', `redis://:${REDIS_PASSWORD}@127.0.0.1:${redis.port}`],
      'k8s-tagger': ['--grpc-port', '0'],
      exporter: ['--observer-port', '0'],
    };
    const natsUrl = `nats://${NATS_USER}:${NATS_PASSWORD}-x@127.0.0.1:${nats.port}`;
    const result = spawnSync(process.execPath, [bundle(app), '--nats-url', natsUrl, '--metrics-port', '0', ...(ownFlags[app] ?? [])], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { PATH: process.env['PATH'] ?? '' },
    });
    expect(result.status).not.toBe(0);
    expect(result.stdout + result.stderr).toMatch(/Authorization Violation/);
    expect(result.stdout + result.stderr).not.toContain(`${NATS_PASSWORD}-x`);
    expect(leaks(result.stdout + result.stderr)).toEqual([]);
  });

  it.each(['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'])('%s --help and a bad flag beside the secret flags print no secret', (app) => {
    const secretFlags = ['--nats-password', NATS_PASSWORD, '--nats-token', NATS_PASSWORD, ...(app === 'joiner' ? ['--redis-password', REDIS_PASSWORD] : [])];
    const help = spawnSync(process.execPath, [bundle(app), ...secretFlags, '--help'], { encoding: 'utf8', timeout: 30_000 });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--nats-password/);
    const bad = spawnSync(process.execPath, [bundle(app), ...secretFlags, '--metrics-port', 'eighty'], { encoding: 'utf8', timeout: 30_000 });
    expect(bad.status).toBe(2);
    expect(leaks(help.stdout + help.stderr + bad.stdout + bad.stderr)).toEqual([]);
  });
});
