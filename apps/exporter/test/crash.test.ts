// A crash between writing the JSON Lines file and acking the batch, with real processes: the
// exporter reaches nats-server through a TCP proxy that stops forwarding the exporter's traffic
// (its acks) once the batches are delivered; the exporter writes them, is SIGKILLed, and a new
// exporter on the same file gets them again from JetStream. Every record id is in the file once,
// and in the flow store once.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { FlowStore } from '../src/store/store.js';
import { knownBatch } from './fixtures.js';

const appRoot = join(import.meta.dirname, '..');
let nats: TestServer;
let bus: Bus;
let dir: string | undefined;
const children: ChildProcess[] = [];
const proxies: HoldingProxy[] = [];

/**
 * Forwards TCP to a target; hold() keeps the clients' bytes from reaching it (the server's still
 * reach the clients), and a client that dies while held loses them: its acks never arrive.
 */
class HoldingProxy {
  private server: Server | undefined;
  private readonly pairs = new Set<{ client: Socket; upstream: Socket }>();
  private holding = false;
  port = 0;

  constructor(private readonly targetPort: number) {}

  async start(): Promise<void> {
    this.port = await freePort();
    this.server = createServer((client) => {
      const upstream = connect(this.targetPort, '127.0.0.1');
      const pair = { client, upstream };
      this.pairs.add(pair);
      client.on('data', (data: Buffer) => {
        if (!this.holding) upstream.write(data);
      });
      upstream.on('data', (data: Buffer) => client.write(data));
      const close = () => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      client.on('close', close);
      upstream.on('close', close);
      client.on('error', close);
      upstream.on('error', close);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
  }

  hold(): void {
    this.holding = true;
  }

  async close(): Promise<void> {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`${what} not met in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function metricSum(text: string, name: string): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

async function startExporter(natsUrl: string, args: string[]): Promise<{ child: ChildProcess; metrics: () => Promise<string>; stderr: () => string }> {
  const metricsPort = await freePort();
  const child = spawn(process.execPath, [join(appRoot, 'dist/main.js'), `--nats-url=${natsUrl}`, `--metrics-port=${metricsPort}`, '--observer=false', '--prometheus=false', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  await until(() => err.includes('exporter started') || child.exitCode !== null, 60_000, 'exporter start');
  if (child.exitCode !== null) throw new Error(`exporter exited: ${err}`);
  return { child, metrics: async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(), stderr: () => err };
}

const idsIn = (path: string) =>
  existsSync(path)
    ? readFileSync(path, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => (JSON.parse(l) as { id: string }).id)
    : [];

function counted(ids: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  return counts;
}

beforeAll(async () => {
  execFileSync(process.execPath, [join(appRoot, '../../tools/build-app.mjs')], { cwd: appRoot, stdio: 'inherit' });
  nats = await startNatsServer();
  bus = await connectBus({ servers: [nats.url], name: 'test', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
  await bus.ensureStreams();
});
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  for (const proxy of proxies.splice(0)) await proxy.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});
afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

describe('JSON Lines across a crash', () => {
  it('writes every record once when the exporter is SIGKILLed after writing batches and before JetStream got their acks', async () => {
    dir = mkdtempSync(join(tmpdir(), 'kx-crash-'));
    const jsonl = join(dir, 'flows.jsonl');
    const proxy = new HoldingProxy(nats.port);
    proxies.push(proxy);
    await proxy.start();
    const first = await startExporter(`nats://127.0.0.1:${proxy.port}`, [`--jsonl=${jsonl}`, '--max-in-flight=4']);

    // The exporter has asked for batches; from now on nothing it sends reaches nats-server.
    proxy.hold();
    const batches = Array.from({ length: 7 }, (_, b) => knownBatch(`crash-${b}`, b * 100, 100));
    for (const b of batches) await bus.publishBatch(subjects.joined(0), b);
    // It writes what it was delivered (its pull asked for 4), acks into the void, and dies.
    await until(() => idsIn(jsonl).length >= 400, 30_000, 'four batches written');
    await new Promise((r) => setTimeout(r, 500));
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    const before = idsIn(jsonl);
    expect(before.length).toBeGreaterThanOrEqual(400);
    expect(before.length).toBeLessThan(700);

    // A cut-short last line, as if the process had died in the middle of a write.
    appendFileSync(jsonl, '{"node":"node-1","vantage":"VANTAGE_SRC","startNs":"17');

    // Restarted on the same file, straight to nats-server: the unacked batches come back (after
    // the ack wait) with the rest, and only records not in the file are written.
    const second = await startExporter(nats.url, [`--jsonl=${jsonl}`, '--max-in-flight=4']);
    expect(second.stderr()).toMatch(/removed a line cut short by a crash/);
    await until(async () => metricSum(await second.metrics(), 'kappa_bus_consumed_batches_total') >= batches.length, 90_000, 'every batch acked');
    const ids = idsIn(jsonl);
    const counts = counted(ids);
    const expected = batches.flatMap((b) => b.records.map((r) => r.id));
    expect([...counts.keys()].sort()).toEqual([...expected].sort());
    expect([...counts.entries()].filter(([, n]) => n !== 1)).toEqual([]);
    const metrics = await second.metrics();
    expect(metricSum(metrics, 'kappa_exporter_jsonl_duplicates_skipped_total')).toBe(before.length);
  }, 180_000);
});

describe('the flow store across a crash', () => {
  // The fixtures' flow times are in 2025: a retention that keeps them.
  const RETENTION_HOURS = 20 * 365 * 24;
  /** The ids the store in `storeDir` holds, as a query of every flow shows them (the exporter stopped). */
  async function storedIds(storeDir: string): Promise<string[]> {
    const store = new FlowStore({ dir: storeDir, retentionMs: RETENTION_HOURS * 3_600_000, maxBytes: 1024 ** 3, segmentRecords: 1_000_000, segmentAgeMs: 3_600_000 });
    await store.open();
    try {
      return (await store.flows({ sinceNs: 0n, untilNs: 0n, filter: '', last: 0, limit: 0 })).map((f) => f.record.id);
    } finally {
      await store.close();
    }
  }

  it('stores every record once when JetStream redelivers batches the killed exporter had stored but not acked', async () => {
    dir = mkdtempSync(join(tmpdir(), 'kx-crash-store-'));
    const storeDir = join(dir, 'store');
    const args = [`--jsonl=${join(dir, 'flows.jsonl')}`, `--store-dir=${storeDir}`, `--store-retention=${RETENTION_HOURS}h`, '--max-in-flight=4'];
    const proxy = new HoldingProxy(nats.port);
    proxies.push(proxy);
    await proxy.start();
    const first = await startExporter(`nats://127.0.0.1:${proxy.port}`, args);
    proxy.hold();
    const batches = Array.from({ length: 7 }, (_, b) => knownBatch(`store-crash-${b}`, 10_000 + b * 100, 100));
    for (const b of batches) await bus.publishBatch(subjects.joined(0), b);
    await until(() => idsIn(join(dir!, 'flows.jsonl')).length >= 400, 30_000, 'four batches written');
    await new Promise((r) => setTimeout(r, 500));
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    // What the store holds after the crash (reading it seals the hot segment the crash left).
    const before = await storedIds(storeDir);
    expect(before.length).toBeGreaterThanOrEqual(400);
    expect(before.length).toBeLessThan(700);

    // Restarted on the same store: the unacked batches come back, redelivered, with the rest.
    const second = await startExporter(nats.url, args);
    await until(async () => metricSum(await second.metrics(), 'kappa_bus_consumed_batches_total') >= batches.length, 90_000, 'every batch acked');
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
    const counts = counted(await storedIds(storeDir));
    const expected = batches.flatMap((b) => b.records.map((r) => r.id));
    expect([...counts.keys()].sort()).toEqual([...expected].sort());
    expect([...counts.entries()].filter(([, n]) => n !== 1)).toEqual([]);
  }, 180_000);
});
