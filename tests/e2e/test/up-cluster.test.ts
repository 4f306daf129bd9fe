// `npm run up -- --cluster` (tools/up.mjs from this checkout, already built: the slow clean-clone
// path is up.test.ts's): three nats-servers with R3 streams, a Redis Cluster of three primaries
// and three replicas, two replicas of k8s-tagger, joiner and exporter; `kappa status` (through the
// up.json it writes) shows every replica ready and every server; the servers' own answers
// (JetStream stream info, redis-cli cluster nodes) agree; Ctrl-C stops every process it started.
// Its own state folder (KAPPA_UP_STATE), ports, node name: it runs beside a developer's kappa.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_LOCK_WAIT_MS, CLUSTER_TOPOLOGY_LOCK, childEnv, machineLock, uniqueName } from '@kappa/testing';
import type { MachineLock } from '@kappa/testing';
import { workspaceRoot } from '../src/services.js';

const state = mkdtempSync(join(tmpdir(), 'kpe-upc-'));
const node = uniqueName('kpe-upc');
let up: ChildProcess;
let output = '';
let base = 0;
let lock: MachineLock | undefined;

/** true when nothing listens on 127.0.0.1:port now. */
async function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A base port whose ranges up --cluster needs are all free: NATS base..+2, routes +100..+102, Redis
 * +200..+205 and their bus ports (+10000), KubeTags/Observer/console +300..302 and their +100 twins.
 */
async function freeBase(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    // The highest port is the Redis bus of the sixth node, candidate + 10_205: at most 65 105.
    const candidate = 20_000 + Math.floor(Math.random() * 350) * 100;
    const ports = [0, 1, 2, 100, 101, 102, ...[0, 1, 2, 3, 4, 5].flatMap((i) => [200 + i, 10_200 + i]), 300, 301, 302, 400, 401].map((p) => candidate + p);
    if ((await Promise.all(ports.map(free))).every(Boolean)) return candidate;
  }
  throw new Error('no free port range for up --cluster');
}

/**
 * Processes of this run: their environment names its state folder (up.mjs hands it down), or, for
 * redis-server (which overwrites its command line and environment with its title), the title
 * names one of this run's Redis ports.
 */
function ourProcesses(): string[] {
  const found: string[] = [];
  const redisTitles = [0, 1, 2, 3, 4, 5].map((i) => `redis-server 127.0.0.1:${base + 200 + i} `);
  for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
      const redis = base > 0 && redisTitles.some((title) => `${cmdline} `.startsWith(title));
      if (redis || cmdline.includes(state) || environ.includes(`KAPPA_UP_STATE=${state}`)) found.push(`${pid} ${cmdline.trim()}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function kappa(...args: string[]): { code: number; out: string } {
  try {
    const out = execFileSync(process.execPath, [join(workspaceRoot, 'apps/cli/dist/main.js'), ...args], {
      env: { ...childEnv(), KAPPA_CONFIG: join(state, 'up.json') },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { code: 0, out };
  } catch (error) {
    const e = error as { status: number; stdout: string; stderr: string };
    return { code: e.status, out: `${e.stdout}${e.stderr}` };
  }
}

beforeAll(async () => {
  // One cluster topology on the machine at a time (CLUSTER_TOPOLOGY_LOCK).
  lock = await machineLock(CLUSTER_TOPOLOGY_LOCK, CLUSTER_LOCK_WAIT_MS);
  base = await freeBase();
  up = spawn(process.execPath, [join(workspaceRoot, 'tools/up.mjs'), '--cluster'], {
    cwd: workspaceRoot,
    env: {
      ...Object.fromEntries(Object.entries(childEnv()).filter(([key]) => !key.startsWith('KAPPA_'))),
      KAPPA_UP_STATE: state,
      KAPPA_UP_NATS_PORT: String(base),
      KAPPA_UP_NATS_CLUSTER_PORT: String(base + 100),
      KAPPA_UP_REDIS_PORT: String(base + 200),
      KAPPA_UP_TAGGER_PORT: String(base + 300),
      KAPPA_UP_OBSERVER_PORT: String(base + 301),
      KAPPA_UP_CONSOLE_PORT: String(base + 302),
      KAPPA_UP_METRICS_PORT: '0',
      KAPPA_NODE: node,
      KAPPA_INTERVAL: '2s',
      KAPPA_JSONL: join(state, 'flows.jsonl'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  up.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  up.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const deadline = Date.now() + 120_000;
  while (!output.includes('kappa is up')) {
    if (up.exitCode !== null || Date.now() > deadline) throw new Error(`npm run up -- --cluster did not come up:\n${output.slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}, 150_000 + CLUSTER_LOCK_WAIT_MS);

afterAll(async () => {
  if (up?.pid && up.exitCode === null) {
    process.kill(-up.pid, 'SIGKILL');
  }
  for (const line of ourProcesses()) process.kill(Number(line.split(' ')[0]), 'SIGKILL');
  rmSync(state, { recursive: true, force: true });
  await lock?.release();
}, 30_000);

describe('npm run up -- --cluster', () => {
  it('kappa status shows two ready replicas of each cluster stage, the three NATS servers and the six Redis nodes', async () => {
    // `kappa status` exits 0 once each stage has one ready instance; the second replica of a stage
    // may say ready a few seconds later (its tagger index syncs, its joiner leases partitions), so
    // the test waits for every replica, then asserts on that output.
    const readyOf = (out: string, stage: string) =>
      out
        .split('\n')
        .filter((r) => r.startsWith(`${stage} `) && /\byes\b/.test(r))
        .map((r) => r.split(/\s+/)[1])
        .sort();
    const servers = (out: string) => (out.includes('NATS servers') ? out.slice(out.indexOf('NATS servers')).split('\n').slice(1, 4) : []);
    const complete = (out: string) =>
      ['k8s-tagger', 'joiner', 'exporter'].every((stage) => readyOf(out, stage).length === 2) &&
      servers(out).filter((l) => /(leader|current)$/.test(l)).length === 3 &&
      out.split('\n').filter((l) => /^\s+joiner \S+: redis: .*cluster of 3 primaries and 3 replicas/.test(l)).length === 2;
    let status = kappa('status', '--wait', '3s');
    const deadline = Date.now() + 120_000;
    while ((status.code !== 0 || !complete(status.out)) && Date.now() < deadline) status = kappa('status', '--wait', '3s');
    expect(status.code, `${status.out}\n--- up:\n${output.slice(-3000)}`).toBe(0);
    const ready = (stage: string) => readyOf(status.out, stage);
    expect(ready('capture')).toEqual([node]);
    expect(ready('process-enricher')).toEqual([node]);
    for (const stage of ['k8s-tagger', 'joiner', 'exporter']) expect(ready(stage), stage).toEqual([`${node}-0`, `${node}-1`]);
    // Every NATS server, from the stream's own replica set: one leader, two current.
    const serverLines = servers(status.out);
    expect(serverLines.map((l) => l.trim().split(/\s+/)[0]).sort()).toEqual(['up-nats-0', 'up-nats-1', 'up-nats-2']);
    expect(serverLines.filter((l) => l.endsWith('leader'))).toHaveLength(1);
    expect(serverLines.filter((l) => l.endsWith('current'))).toHaveLength(2);
    // Every Redis node, as each joiner replica sees the cluster.
    const redisLines = status.out.split('\n').filter((l) => /^\s+joiner \S+: redis: /.test(l));
    expect(redisLines).toHaveLength(2);
    // Each joiner's view names the three primaries and the three replicas (which join the cluster
    // after the primaries: the joiner re-reads the cluster's slots every 5 s); the servers' own
    // view is checked in the next test.
    const ports = (from: number) => [0, 1, 2].map((i) => `127.0.0.1:${base + 200 + from + i}`).sort();
    for (const line of redisLines) {
      expect(line).toContain('cluster of 3 primaries and 3 replicas');
      const listed = (label: string) => (new RegExp(`[:;] ${label} ([^;]*)`).exec(line)?.[1] ?? '').trim().split(' ').sort();
      expect([...listed('primaries'), ...listed('replicas')].sort()).toEqual([...ports(0), ...ports(3)].sort());
    }
  }, 180_000);

  it('the servers agree: every stream R3 over the three NATS servers, a Redis Cluster of 3 primaries with a replica each', () => {
    const credentials = JSON.parse(readFileSync(join(state, 'credentials.json'), 'utf8')) as { redisAdminPassword: string };
    const tls = ['--tls', '--cacert', join(state, 'tls/ca.pem'), '--cert', join(state, 'tls/client.pem'), '--key', join(state, 'tls/client.key')];
    const nodes = execFileSync('redis-cli', [...tls, '--user', 'kappa-admin', '-p', String(base + 200), 'cluster', 'nodes'], {
      env: { ...process.env, REDISCLI_AUTH: credentials.redisAdminPassword },
      encoding: 'utf8',
    });
    const lines = nodes.trim().split('\n');
    expect(lines).toHaveLength(6);
    expect(lines.filter((l) => /\bmaster\b/.test(l))).toHaveLength(3);
    expect(lines.filter((l) => /\bslave\b/.test(l))).toHaveLength(3);
    // The streams' own replica counts, from each server's JetStream state on disk (what `kappa streams` made).
    for (const i of [0, 1, 2]) {
      const streams = readdirSync(join(state, `nats-${i}`), { recursive: true }).map(String);
      for (const stream of ['KAPPA_FLOWS', 'KAPPA_DLQ', 'KAPPA_TAGGER_STATE']) expect(streams.some((p) => p.endsWith(`streams/${stream}`)), `nats-${i} ${stream}`).toBe(true);
    }
  });

  it('kappa observe, which asks the first exporter, lists the flows of both exporter replicas (the relay)', async () => {
    const exported = (file: string): string[] => {
      try {
        return readFileSync(file, 'utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => (JSON.parse(l) as { id: string }).id);
      } catch {
        return [];
      }
    };
    const files = [join(state, 'flows.jsonl'), join(state, 'exporter-1', 'flows.jsonl')];
    // This machine's own traffic (the servers and stages talking) is what capture counts.
    const deadline = Date.now() + 90_000;
    while (files.some((f) => exported(f).length === 0)) {
      if (Date.now() > deadline) throw new Error(`an exporter replica exported nothing in 90 s: ${files.map((f) => `${f}: ${exported(f).length}`).join(', ')}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    const shares = files.map(exported);
    let missing: string[] = [];
    let said = '';
    for (let attempt = 0; attempt < 10; attempt++) {
      // A batch is in the JSON Lines file a moment before the store has it: ask again.
      const result = kappa('observe', '-o', 'json');
      expect(result.code, result.out).toBe(0);
      const lines = result.out.split('\n');
      const observed = new Set(lines.filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { id: string }).id));
      said = lines.filter((l) => l !== '' && !l.startsWith('{')).join('\n');
      missing = shares.flat().filter((id) => !observed.has(id));
      if (missing.length === 0) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    // On a failure, which replica exported what is missing, and what observe said besides flows.
    const from = shares.map((share, i) => `${share.filter((id) => missing.includes(id)).length} from replica ${i}`).join(', ');
    expect(missing, `of ${shares[0]!.length} + ${shares[1]!.length} exported records (${from}); observe said: ${said || 'nothing else'}`).toEqual([]);
  }, 150_000);

  it('Ctrl-C stops every process it started', async () => {
    // up.mjs, 3 nats-servers, 6 redis-servers, capture, process-enricher, 2 × 3 cluster stages, the console.
    expect(ourProcesses().length).toBe(1 + 3 + 6 + 2 + 6 + 1);
    const exited = new Promise<number | null>((r) => up.once('exit', r));
    process.kill(-up.pid!, 'SIGINT');
    expect(await exited).toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    expect(ourProcesses()).toEqual([]);
  }, 120_000);
});
