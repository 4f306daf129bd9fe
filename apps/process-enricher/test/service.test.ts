// kappa-process-enricher as a real process (tsx): secrets on real command lines never leave it
// (records, logs, metrics), a malformed message goes to the DLQ while it keeps running, heartbeat,
// --help, a bad flag, and a clean SIGTERM.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DLQ_STREAM, connectBus, dlqHeaders, subjects } from '@kappa/bus';
import type { Bus, BatchConsumer } from '@kappa/bus';
import { flowRecordToJson } from '@kappa/contracts';
import type { FlowBatch, StageStatus } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CgroupFixture, capturedBatch, capturedRecord, commOf, waitFor } from './helpers.js';

const appRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const workspaceRoot = join(appRoot, '../..');
const main = join(appRoot, 'src/main.ts');
const node = `ke-svc-${process.pid}`;
const fixture = new CgroupFixture('ke-svc');
const shapes = fixture.runtimeShapes();

let nats: TestServer;
let service: ChildProcess;
let output = '';
let metricsPort = 0;
let publisher: Bus;
let reader: { bus: Bus; consumer: BatchConsumer; batches: FlowBatch[] };
let holdServer: Server;
const held = new Set<Socket>();

function runService(args: string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', main, ...args], { cwd: workspaceRoot, stdio: ['ignore', 'pipe', 'pipe'] });
}

async function enrich(batch: FlowBatch): Promise<FlowBatch> {
  await publisher.publishBatch(subjects.captured(node), batch);
  return waitFor(`enriched ${batch.batchId}`, () => reader.batches.find((b) => b.batchId === `process-enricher:${batch.batchId}:p0`), 20_000);
}

beforeAll(async () => {
  nats = await startNatsServer();
  // A server that accepts and never answers, so curl stays alive with its command line.
  holdServer = createServer((socket) => void held.add(socket));
  await new Promise<void>((r) => holdServer.listen(0, '127.0.0.1', r));
  service = runService([`--nats-url=${nats.url}`, `--node=${node}`, '--metrics-port=0', '--partitions=1', '--log-level=debug', '--cri-socket=/nonexistent/ke-cri.sock']);
  service.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  service.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const ready = await waitFor('the service to be ready', () => /"metricsPort":(\d+)[^\n]*"msg":"ready"/.exec(output)?.[1], 30_000);
  metricsPort = Number(ready);
  const silent = createLogger('ke-test', 'silent');
  publisher = await connectBus({ servers: [nats.url], name: 'ke-svc-publisher', logger: silent, registry: createRegistry('ke-pub') });
  const batches: FlowBatch[] = [];
  const bus = await connectBus({ servers: [nats.url], name: 'ke-svc-reader', logger: silent, registry: createRegistry('ke-reader') });
  const consumer = await bus.consumeBatches({ stage: 'ke-svc-reader', subject: subjects.enrichedOfNode(node), handler: async (b) => void batches.push(b) });
  reader = { bus, consumer, batches };
}, 60_000);

afterAll(async () => {
  if (service && service.exitCode === null) service.kill('SIGKILL');
  await reader?.bus.close();
  await publisher?.close();
  for (const s of held) s.destroy();
  holdServer?.close();
  await nats?.stop();
  await fixture.cleanup();
});

describe('kappa-process-enricher as a process', () => {
  it('never lets --password=hunter2, PGPASSWORD=hunter2 or curl -u bob:hunter2 into records, logs or metrics', async () => {
    const port = (holdServer.address() as AddressInfo).port;
    // Real curl blanks its -u argument in memory soon after start; a process whose argv stays
    // `curl ... -u bob:hunter2` (argv0 curl) checks our own rule.
    const realCurl = await fixture.start('curl', ['-s', '-u', 'bob:hunter2', `http://127.0.0.1:${port}/`], shapes.docker);
    const curlArgv = await fixture.start(process.execPath, ['-e', 'setInterval(() => {}, 1e9)', '--', '-u', 'bob:hunter2', 'http://x/'], shapes.docker, { argv0: 'curl' });
    const nodeApp = await fixture.start(process.execPath, ['-e', 'setInterval(() => {}, 1e9)', '--', '--password=hunter2'], shapes.containerd);
    const shell = await fixture.start('sh', ['-c', 'PGPASSWORD=hunter2 sleep 1000; :'], shapes.crio);
    const procs = [realCurl, curlArgv, nodeApp, shell];
    const cgroups = [shapes.docker, shapes.docker, shapes.containerd, shapes.crio];
    const stamps = procs.map((p, i) => capturedRecord(node, { pid: p.pid, comm: commOf(p.pid), cgroupId: cgroups[i]!.id }, 42000 + i));
    const batch = await enrich(capturedBatch(node, stamps));
    const cmdlines = batch.records.map((r) => r.src?.process?.cmdline ?? '');
    expect(cmdlines[0]).toMatch(new RegExp(`^curl -s -u (bob:\\*\\*\\*|\\s+) http://127.0.0.1:${port}/$`));
    expect(cmdlines.slice(1)).toEqual([
      'curl -e setInterval(() => {}, 1e9) -- -u bob:*** http://x/',
      `${process.execPath} -e setInterval(() => {}, 1e9) -- --password=***`,
      'sh -c PGPASSWORD=*** sleep 1000; :',
    ]);
    expect(batch.records.map((r) => r.src?.process?.containerId)).toEqual([shapes.docker.containerId, shapes.docker.containerId, shapes.containerd.containerId, shapes.crio.containerId]);

    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const everything = [JSON.stringify(reader.batches.flatMap((b) => b.records.map((r) => flowRecordToJson(r)))), output, metrics].join('\n');
    expect(everything).toContain('bob:***');
    expect(everything).not.toContain('hunter2');
  });

  it('moves a malformed message to kappa.dlq.process-enricher and keeps enriching', async () => {
    await publisher.publishUnchecked(subjects.captured(node), new TextEncoder().encode('\xff\xff this is not a FlowBatch'));
    const dlq = await waitFor('the DLQ message', async () => {
      try {
        return (await publisher.streamMessage(DLQ_STREAM, { lastBySubject: subjects.dlq('process-enricher') })) ?? undefined;
      } catch {
        return undefined;
      }
    });
    expect(dlq?.header(dlqHeaders.stage)).toBe('process-enricher');
    expect(dlq?.header(dlqHeaders.subject)).toBe(subjects.captured(node));

    const proc = await fixture.start('sleep', ['1010'], shapes.podman);
    const batch = await enrich(capturedBatch(node, [capturedRecord(node, { pid: proc.pid, comm: 'sleep', cgroupId: shapes.podman.id })]));
    expect(batch.records[0]?.src?.process).toMatchObject({ pid: proc.pid, cmdline: 'sleep 1010', containerRuntime: 'podman' });
    expect(service.exitCode).toBeNull();
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/kappa_bus_dead_lettered_total\{[^}]*stage="process-enricher"[^}]*\} 1\b/);
  });

  it('publishes a heartbeat kappa status can read, says once that no CRI socket answers, and reports readiness', async () => {
    const status = await new Promise<StageStatus>((resolve) => {
      const unsubscribe = publisher.subscribeStatus((s) => {
        if (s.stage !== 'process-enricher') return;
        unsubscribe();
        resolve(s);
      });
    });
    expect(status).toMatchObject({ stage: 'process-enricher', node, ready: true });
    expect(status.recordsIn).toBeGreaterThanOrEqual(4n);
    expect(output.match(/no CRI runtime socket reachable/g)).toHaveLength(1);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status).toBe(200);
  });

  it('stops cleanly on SIGTERM', async () => {
    service.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => (service.exitCode !== null ? r(service.exitCode) : service.once('exit', (c) => r(c))));
    expect(code).toBe(0);
    expect(output).toMatch(/"msg":"stopped"/);
  });

  it('prints --help and exits 0; a bad flag is one line and exit 2', () => {
    const help = spawnSync(process.execPath, ['--import', 'tsx', main, '--help'], { cwd: workspaceRoot, encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--redact-pattern');
    expect(help.stdout).toContain('--cri-socket');
    const bad = spawnSync(process.execPath, ['--import', 'tsx', main, '--process-cache-size=lots'], { cwd: workspaceRoot, encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toContain('--process-cache-size');
  });
});
