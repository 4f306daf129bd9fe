// The exporter as a real process on a real nats-server: every joined batch reaches every enabled
// sink (JSON Lines with rotation, IPFIX to nfcapd, Prometheus with its series cap, heartbeats),
// and a sink that fails gets the batch again without the others writing it twice.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { flowRecordToJson } from '@kappa/contracts';
import type { FlowRecord, StageStatus } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { expectDecoded, nfdumpFlows, removeDir, startNfcapd } from './collectors.js';
import { knownBatch } from './fixtures.js';

const appRoot = join(import.meta.dirname, '..');
let nats: TestServer;
let bus: Bus;
let dir: string;
const children: ChildProcess[] = [];

interface Exporter {
  child: ChildProcess;
  metricsPort: number;
  stderr: () => string;
  metrics(): Promise<string>;
  stop(): Promise<number | null>;
}

async function startExporter(args: string[]): Promise<Exporter> {
  const metricsPort = await freePort();
  const child = spawn(process.execPath, [join(appRoot, 'dist/main.js'), `--nats-url=${nats.url}`, `--metrics-port=${metricsPort}`, '--observer=false', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  await until(() => err.includes('exporter started') || child.exitCode !== null, 60_000);
  if (child.exitCode !== null) throw new Error(`exporter exited: ${err}`);
  return {
    child,
    metricsPort,
    stderr: () => err,
    metrics: async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(),
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve(child.exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill('SIGTERM');
      }),
  };
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`${what} not met in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Sum of a counter's samples in Prometheus text, optionally only those whose labels match. */
function metricSum(text: string, name: string, labels = ''): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .filter((l) => l.includes(labels))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

function jsonlLines(path: string): string[] {
  const files = readdirSync(dir).filter((f) => f.startsWith(path.split('/').pop()!));
  return files.flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter((l) => l !== ''));
}

beforeAll(async () => {
  execFileSync(process.execPath, [join(appRoot, '../../tools/build-app.mjs')], { cwd: appRoot, stdio: 'inherit' });
  nats = await startNatsServer();
  bus = await connectBus({ servers: [nats.url], name: 'test', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
  await bus.ensureStreams();
});
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});
afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

describe('kappa-exporter', () => {
  it('hands every batch to JSON Lines (rotated), IPFIX (nfcapd) and Prometheus (capped), and heartbeats as ready', async () => {
    dir = mkdtempSync(join(tmpdir(), 'kx-exporter-'));
    const port = await freePort();
    const collector = await startNfcapd(port);
    const jsonl = join(dir, 'flows.jsonl');
    const exporter = await startExporter([
      `--jsonl=${jsonl}`,
      '--jsonl-max-bytes=100000',
      '--jsonl-keep=10',
      `--ipfix=udp://127.0.0.1:${port}`,
      '--prometheus-max-series=5',
      '--instance=exporter-test',
    ]);
    const beats: StageStatus[] = [];
    const unsubscribe = bus.subscribeStatus((status, subject) => void (subject === subjects.status('exporter', 'exporter-test') && beats.push(status)));
    const batches = [knownBatch('j1', 0, 100), knownBatch('j2', 100, 100), knownBatch('j3', 200, 100)];
    for (const b of batches) await bus.publishBatch(subjects.joined(0), b);
    const records: FlowRecord[] = batches.flatMap((b) => b.records);
    await until(() => existsSync(jsonl) && jsonlLines(jsonl).length === records.length, 30_000, 'JSONL lines');

    // JSON Lines: every record once, as canonical protobuf JSON, over rotated files within the size limit.
    const lines = jsonlLines(jsonl);
    expect(lines.map((l) => JSON.parse(l) as unknown).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual(
      records.map((r) => flowRecordToJson(r)).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    );
    const files = readdirSync(dir).filter((f) => f.startsWith('flows.jsonl'));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const f of files) expect(statSync(join(dir, f)).size).toBeLessThanOrEqual(100_000);

    // Prometheus: the first 5 label sets are kept; records of the others are counted as dropped.
    const seriesOf = (r: FlowRecord) => `${r.src?.kube?.workloadNamespace}/${r.src?.kube?.workloadName}>${r.dst?.kube?.workloadNamespace}/${r.dst?.kube?.workloadName}/${r.protocol}/${r.vantage}`;
    const kept = new Set<string>();
    let dropped = 0;
    let keptBytes = 0;
    for (const r of records) {
      const key = seriesOf(r);
      if (!kept.has(key) && kept.size >= 5) {
        dropped++;
        continue;
      }
      kept.add(key);
      keptBytes += Number(r.bytes);
    }
    await until(async () => metricSum(await exporter.metrics(), 'kappa_exporter_records_total', 'sink="prometheus"') === records.length);
    const metrics = await exporter.metrics();
    expect(metrics.split('\n').filter((l) => l.startsWith('kappa_flow_bytes_total{'))).toHaveLength(5);
    expect(metricSum(metrics, 'kappa_flow_bytes_total')).toBe(keptBytes);
    expect(metricSum(metrics, 'kappa_exporter_series_dropped_total')).toBe(dropped);
    expect(metrics).toMatch(/kappa_flow_bytes_total\{src_namespace="ns-0",src_workload="client-0",dst_namespace="backend",dst_workload="server-0",protocol="udp",vantage="src",service="exporter"\} \d+/);

    // Heartbeat: ready, with the records it took.
    await until(() => beats.some((b) => b.recordsOut === BigInt(records.length)), 10_000, 'heartbeat with 300 records out');
    const beat = beats.at(-1)!;
    expect(beat).toMatchObject({ stage: 'exporter', instance: 'exporter-test', ready: true, recordsIn: 300n, recordsOut: 300n });
    unsubscribe();

    // IPFIX: nfcapd decoded all 300 (graceful stop first, so nothing is in flight).
    expect(await exporter.stop()).toBe(0);
    await collector.stop();
    expectDecoded(await nfdumpFlows(collector.dir), records);
    removeDir(collector.dir);
  });

  it('a batch the IPFIX collector could not take is redelivered, and the JSON Lines sink does not write it twice', async () => {
    dir = mkdtempSync(join(tmpdir(), 'kx-exporter-'));
    const port = await freePort();
    const jsonl = join(dir, 'flows.jsonl');
    // A TCP collector that is down at first.
    const exporter = await startExporter([`--jsonl=${jsonl}`, `--ipfix=tcp://127.0.0.1:${port}`, '--prometheus=false']);
    const batch = knownBatch('redelivered', 0, 40);
    await bus.publishBatch(subjects.joined(0), batch);
    await until(async () => metricSum(await exporter.metrics(), 'kappa_exporter_sink_failures_total', 'sink="ipfix"') >= 2, 30_000, 'two failed deliveries');
    expect(jsonlLines(jsonl)).toHaveLength(40);

    let received = 0;
    const server: Server = createServer((s) => s.on('data', (d: Buffer) => (received += d.length)));
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
    try {
      await until(async () => metricSum(await exporter.metrics(), 'kappa_exporter_records_total', 'sink="ipfix"') === 40, 30_000, 'IPFIX delivery after the collector came up');
      expect(received).toBeGreaterThan(40 * 100);
      const metrics = await exporter.metrics();
      expect(metricSum(metrics, 'kappa_exporter_redelivered_skips_total', 'sink="jsonl"')).toBeGreaterThanOrEqual(2);
      expect(jsonlLines(jsonl)).toHaveLength(40);
      // Acked once, after every sink took it (the ack lands just after the sinks' counters).
      await until(async () => metricSum(await exporter.metrics(), 'kappa_bus_consumed_batches_total') === 1, 10_000, 'one ack');
    } finally {
      expect(await exporter.stop()).toBe(0);
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('refuses a bad --ipfix with one line naming the flag and exit code 2', async () => {
    const out = spawn(process.execPath, [join(appRoot, 'dist/main.js'), '--ipfix=http://x:1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    out.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => out.on('exit', r));
    expect(code).toBe(2);
    expect(err).toContain('--ipfix');
  });
});
