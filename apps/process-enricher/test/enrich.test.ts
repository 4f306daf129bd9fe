// process-enricher in-process against a real nats-server: real processes in real cgroups shaped
// like containerd, docker, CRI-O and podman containers; records stamped as capture stamps them.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus, BatchConsumer } from '@kappa/bus';
import { parseConfig } from '@kappa/config';
import { formatExecLine } from '@kappa/contracts';
import type { FlowBatch, Process } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enricherOptions } from '../src/config.js';
import { startEnricher } from '../src/service.js';
import type { RunningEnricher } from '../src/service.js';
import { startCriServer } from './cri-server.js';
import type { FakeCri } from './cri-server.js';
import { CgroupFixture, capturedBatch, capturedRecord, commOf, startTicksOf, waitFor } from './helpers.js';

const node = `ke-node-${process.pid}`;
const fixture = new CgroupFixture('ke-test');
const shapes = fixture.runtimeShapes();
let nats: TestServer;
let cri: FakeCri;
let enricher: RunningEnricher;
let reader: { bus: Bus; consumer: BatchConsumer; batches: FlowBatch[] };
let publisher: Bus;
let registry: ReturnType<typeof createRegistry>;
const execDir = mkdtempSync(join(tmpdir(), 'ke-exec-'));
const execSocket = join(execDir, 'exec.sock');

async function enrich(records: Parameters<typeof capturedBatch>[1]): Promise<FlowBatch> {
  const batch = capturedBatch(node, records);
  await publisher.publishBatch(subjects.captured(node), batch);
  return waitFor(`enriched ${batch.batchId}`, () => reader.batches.find((b) => b.batchId === `process-enricher:${batch.batchId}:p0`));
}

function processOf(batch: FlowBatch, index = 0): Process {
  const p = batch.records[index]?.src?.process;
  if (!p) throw new Error('record has no local process');
  return p;
}

beforeAll(async () => {
  nats = await startNatsServer();
  cri = await startCriServer('containerd');
  cri.containers.set(shapes.containerd.containerId, 'api-server');
  cri.containers.set(shapes.crio.containerId, 'db-sidecar');
  const config = parseConfig(enricherOptions, {
    argv: [`--nats-url=${nats.url}`, `--node=${node}`, '--metrics-port=0', '--partitions=1', `--cri-socket=${cri.socket}`, `--exec-socket=${execSocket}`],
    env: {},
  });
  const logger = createLogger('process-enricher', 'warn');
  registry = createRegistry('process-enricher');
  enricher = await startEnricher(config, logger, registry);
  const silent = createLogger('ke-test', 'silent');
  publisher = await connectBus({ servers: [nats.url], name: 'ke-test-publisher', logger: silent, registry: createRegistry('ke-test-pub') });
  const batches: FlowBatch[] = [];
  const bus = await connectBus({ servers: [nats.url], name: 'ke-test-reader', logger: silent, registry: createRegistry('ke-test-reader') });
  const consumer = await bus.consumeBatches({ stage: 'ke-test-reader', subject: subjects.enrichedOfNode(node), handler: async (b) => void batches.push(b) });
  reader = { bus, consumer, batches };
});

afterAll(async () => {
  await reader?.bus.close();
  await publisher?.close();
  await enricher?.stop();
  await cri?.stop();
  await nats?.stop();
  await fixture.cleanup();
  rmSync(execDir, { recursive: true, force: true });
});

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const values = (await registry.getSingleMetric(name)?.get())?.values ?? [];
  return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
}

/** Sends exec events as capture does: JSON lines over the enricher's unix socket. */
async function sendExecs(lines: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = connect(execSocket, () => socket.end(lines.join(''), () => resolve()));
    socket.on('error', reject);
  });
}

function readThreadNames(pid: number): string[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim());
}

describe('process-enricher with real processes in runtime-shaped cgroups', () => {
  it('fills pid, name, cmdline, exe, container id, runtime and CRI name for containerd, docker, CRI-O and podman', async () => {
    const procs = {
      containerd: await fixture.start('sleep', ['1001'], shapes.containerd),
      docker: await fixture.start(process.execPath, ['-e', 'setInterval(() => {}, 1e9)', '--', 'serve', '--port=8080'], shapes.docker),
      crio: await fixture.start('sleep', ['1003'], shapes.crio),
      podman: await fixture.start('sleep', ['1004'], shapes.podman),
    };
    const order = ['containerd', 'docker', 'crio', 'podman'] as const;
    const comms = order.map((k) => commOf(procs[k].pid));
    const batch = await enrich(order.map((k, i) => capturedRecord(node, { pid: procs[k].pid, comm: comms[i]!, cgroupId: shapes[k].id }, 41000 + i)));
    expect(batch.records).toHaveLength(4);
    expect(batch.producer).toBe(node);

    const containerd = processOf(batch, 0);
    expect(containerd).toMatchObject({
      pid: procs.containerd.pid,
      name: 'sleep',
      cmdline: 'sleep 1001',
      exe: '/usr/bin/sleep',
      containerId: shapes.containerd.containerId,
      containerRuntime: 'containerd',
      containerName: 'api-server',
      cgroupId: shapes.containerd.id,
      cgroupPath: shapes.containerd.path,
    });
    expect(containerd.startTimeTicks).toBeGreaterThan(0n);

    const docker = processOf(batch, 1);
    expect(['node', 'MainThread']).toContain(comms[1]);
    expect(docker).toMatchObject({
      pid: procs.docker.pid,
      // The process's name, not its main thread's: Node 24 renames that thread "MainThread".
      name: 'node',
      cmdline: `${process.execPath} -e setInterval(() => {}, 1e9) -- serve --port=8080`,
      exe: process.execPath,
      containerId: shapes.docker.containerId,
      containerRuntime: 'docker',
      // Not listed by the CRI runtime (plain docker): left to the tagger.
      containerName: '',
    });

    expect(processOf(batch, 2)).toMatchObject({ pid: procs.crio.pid, name: 'sleep', cmdline: 'sleep 1003', containerId: shapes.crio.containerId, containerRuntime: 'cri-o', containerName: 'db-sidecar' });
    expect(processOf(batch, 3)).toMatchObject({ pid: procs.podman.pid, name: 'sleep', cmdline: 'sleep 1004', containerId: shapes.podman.containerId, containerRuntime: 'podman' });
  });

  it('keeps the kernel comm and the container id of a process that exited before enrichment', async () => {
    const proc = await fixture.start('sleep', ['1005'], shapes.docker);
    const stamp = { pid: proc.pid, comm: commOf(proc.pid), cgroupId: shapes.docker.id };
    proc.kill('SIGKILL');
    await new Promise((r) => proc.once('exit', r));
    const batch = await enrich([capturedRecord(node, stamp)]);
    expect(processOf(batch)).toMatchObject({
      pid: stamp.pid,
      name: 'sleep',
      cmdline: '',
      exe: '',
      containerId: shapes.docker.containerId,
      containerRuntime: 'docker',
      cgroupId: shapes.docker.id,
      cgroupPath: shapes.docker.path,
    });
  });

  it('names a process by its own name, not its socket thread\'s (Java style) or its renamed main thread\'s (Node 24), without reading its threads per batch', async () => {
    // A program called java whose socket thread is named as a Tomcat pool thread is.
    const java = join(execDir, 'java');
    execFileSync('cc', ['-x', 'c', '-O1', '-pthread', '-o', java, '-'], {
      input: '#define _GNU_SOURCE\n#include <pthread.h>\n#include <unistd.h>\nstatic void *pool(void *a) { pthread_setname_np(pthread_self(), "http-nio-8080-e"); for (;;) pause(); return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, pool, 0); for (;;) pause(); }\n',
    });
    const javaStyle = await fixture.start(java, ['-Xmx64m', '-jar', 'app.jar'], shapes.containerd);
    const nodeMain = await fixture.start(process.execPath, ['-e', 'setInterval(() => {}, 1e9)', '--', 'app.js'], shapes.containerd);
    await waitFor('the pool thread named', () => (readThreadNames(javaStyle.pid).includes('http-nio-8080-e') ? true : undefined));
    const scansBefore = await metric('kappa_process_enricher_thread_scans_total');
    for (let round = 0; round < 3; round++) {
      const batch = await enrich([
        // No start time stamped (an older capture): the thread's comm is checked against the
        // process's threads, read once.
        capturedRecord(node, { pid: javaStyle.pid, comm: 'http-nio-8080-e', cgroupId: shapes.containerd.id }, 41100 + round),
        capturedRecord(node, { pid: nodeMain.pid, comm: commOf(nodeMain.pid), cgroupId: shapes.containerd.id, startTimeTicks: startTicksOf(nodeMain.pid) }, 41200 + round),
      ]);
      expect(processOf(batch, 0)).toMatchObject({ pid: javaStyle.pid, name: 'java', cmdline: `${java} -Xmx64m -jar app.jar`, containerId: shapes.containerd.containerId });
      expect(processOf(batch, 1)).toMatchObject({ pid: nodeMain.pid, name: 'node', cmdline: `${process.execPath} -e setInterval(() => {}, 1e9) -- app.js` });
    }
    expect((await metric('kappa_process_enricher_thread_scans_total')) - scansBefore).toBe(1);
  });

  it('gives a process that exited before enrichment the command line, exe and name capture saw at its exec (redacted), never another pid holder\'s', async () => {
    const proc = await fixture.start(process.execPath, ['-e', 'setInterval(() => {}, 1e9)', '--', '--password=hunter2', 'worker.js'], shapes.docker);
    const stamp = { pid: proc.pid, comm: commOf(proc.pid), cgroupId: shapes.docker.id, startTimeTicks: startTicksOf(proc.pid) };
    const args = [process.execPath, '-e', 'setInterval(() => {}, 1e9)', '--', '--password=hunter2', 'worker.js'];
    await sendExecs([
      formatExecLine({ pid: proc.pid, startTimeTicks: stamp.startTimeTicks, comm: 'node', exe: process.execPath, args, cgroupId: shapes.docker.id }),
      // The same pid once held by an earlier process: its exec must not be lent.
      formatExecLine({ pid: proc.pid, startTimeTicks: stamp.startTimeTicks - 5000n, comm: 'oldworker', exe: '/usr/bin/oldworker', args: ['oldworker', '--token=zzz'], cgroupId: shapes.docker.id }),
    ]);
    await waitFor('exec events taken in', () => (enricher.execs.size >= 2 ? true : undefined));
    proc.kill('SIGKILL');
    await new Promise((r) => proc.once('exit', r));
    const batch = await enrich([capturedRecord(node, stamp, 41300), capturedRecord(node, { ...stamp, startTimeTicks: stamp.startTimeTicks + 1n }, 41301)]);
    expect(processOf(batch, 0)).toMatchObject({
      pid: proc.pid,
      name: 'node',
      cmdline: `${process.execPath} -e setInterval(() => {}, 1e9) -- --password=*** worker.js`,
      exe: process.execPath,
      containerId: shapes.docker.containerId,
      containerRuntime: 'docker',
    });
    // Another process start time: not this exec, and not the old one either.
    expect(processOf(batch, 1)).toMatchObject({ pid: proc.pid, cmdline: '', exe: '' });
    expect(JSON.stringify(batch.records.map((r) => r.src?.process?.cmdline))).not.toContain('hunter2');
  });

  it('still names the container of an exited process whose cgroup was removed since', async () => {
    const gone = fixture.make(`docker-${'d'.repeat(64)}.scope`);
    const proc = await fixture.start('sleep', ['1006'], gone);
    // The enricher learns the cgroup while the container runs.
    await enrich([capturedRecord(node, { pid: proc.pid, comm: 'sleep', cgroupId: gone.id })]);
    const stamp = { pid: proc.pid, comm: 'sleep', cgroupId: gone.id };
    proc.kill('SIGKILL');
    await new Promise((r) => proc.once('exit', r));
    rmdirSync(gone.dir);
    const batch = await enrich([capturedRecord(node, stamp)]);
    expect(processOf(batch)).toMatchObject({ pid: stamp.pid, name: 'sleep', cmdline: '', containerId: 'd'.repeat(64), containerRuntime: 'docker' });
  });

  it('does not give a reused pid the new process name, command line or container', async () => {
    // The record is of an old process (comm "oldworker", in the podman container) whose pid is
    // now held by a live sleep in the CRI-O container.
    const now = await fixture.start('sleep', ['1007'], shapes.crio);
    const batch = await enrich([capturedRecord(node, { pid: now.pid, comm: 'oldworker', cgroupId: shapes.podman.id })]);
    expect(processOf(batch)).toMatchObject({
      pid: now.pid,
      name: 'oldworker',
      cmdline: '',
      exe: '',
      containerId: shapes.podman.containerId,
      containerRuntime: 'podman',
      cgroupId: shapes.podman.id,
    });
  });

  it('detects reuse from the cgroup alone when the new process has the same name', async () => {
    const now = await fixture.start('sleep', ['1008'], shapes.crio);
    const batch = await enrich([capturedRecord(node, { pid: now.pid, comm: 'sleep', cgroupId: shapes.podman.id })]);
    expect(processOf(batch)).toMatchObject({ name: 'sleep', cmdline: '', containerId: shapes.podman.containerId });
  });

  it('counts enriched records, cache hits and misses, gone processes and reused pids in /metrics', async () => {
    const proc = await fixture.start('sleep', ['1009'], shapes.containerd);
    const stamp = { pid: proc.pid, comm: 'sleep', cgroupId: shapes.containerd.id };
    await enrich([capturedRecord(node, stamp, 1), capturedRecord(node, stamp, 2)]);
    await enrich([capturedRecord(node, stamp, 3)]);
    const body = await (await fetch(`http://127.0.0.1:${enricher.metricsPort}/metrics`)).text();
    const value = (name: string, labels: Record<string, string> = {}) => {
      const lines = body.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
      const line = lines.find((l) => Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
      return Number(line?.split(' ').at(-1) ?? NaN);
    };
    expect(value('kappa_process_enricher_records_enriched_total', { resolution: 'live' })).toBeGreaterThanOrEqual(7);
    // Gone: one in "keeps the kernel comm…", one in "still names the container…", two in "gives a
    // process that exited…" (its own start time and another).
    expect(value('kappa_process_enricher_records_enriched_total', { resolution: 'gone' })).toBe(4);
    expect(value('kappa_process_enricher_pid_reuse_detected_total')).toBe(2);
    expect(value('kappa_process_enricher_processes_gone_total')).toBe(4);
    expect(value('kappa_process_enricher_exec_events_total', { result: 'ok' })).toBe(2);
    // Without process info (no command line, no exe): the gone records but the one an exec event
    // named, and both reused pids.
    expect(value('kappa_process_enricher_records_without_process_total', { resolution: 'gone' })).toBe(3);
    expect(value('kappa_process_enricher_records_without_process_total', { resolution: 'reused' })).toBe(2);
    expect(value('kappa_process_enricher_process_cache_hits_total')).toBeGreaterThanOrEqual(1);
    expect(value('kappa_process_enricher_process_cache_misses_total')).toBeGreaterThanOrEqual(6);
    expect(body).toMatch(/kappa_bus_dead_lettered_total|kappa_bus_consumed_batches_total/);
  });
});
