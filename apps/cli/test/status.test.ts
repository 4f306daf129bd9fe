// `kappa status` against real heartbeats published through the bus on a real nats-server.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { StageStatusSchema, create } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { buildApps, runKappa } from './run.js';

const STAGES = ['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'];
let nats: TestServer;
const buses: Bus[] = [];

/** One stage instance: its own connection, heartbeating like a service does. */
async function heartbeat(stage: string, instance: string, ready = true, recordsPerBeat = 100, features: Record<string, string> = {}): Promise<Bus> {
  const bus = await connectBus({ servers: [nats.url], name: `test-${stage}`, logger: createLogger(stage, 'silent'), registry: createRegistry(stage) });
  buses.push(bus);
  const startedNs = BigInt(Date.now()) * 1_000_000n;
  let beats = 0n;
  bus.startHeartbeat(
    () => {
      beats++;
      return create(StageStatusSchema, {
        stage,
        instance,
        // A node agent's instance is its node (kappa status ignores a body that says otherwise).
        node: stage === 'capture' || stage === 'process-enricher' ? instance : 'node-a',
        startedNs,
        sentNs: BigInt(Date.now()) * 1_000_000n,
        ready,
        recordsIn: beats * BigInt(recordsPerBeat),
        recordsOut: beats * BigInt(recordsPerBeat),
        lag: 3n,
        features,
      });
    },
    500,
  );
  return bus;
}

beforeAll(async () => {
  buildApps();
  nats = await startNatsServer();
});
afterEach(async () => {
  await Promise.all(buses.splice(0).map((b) => b.close()));
});
afterAll(async () => {
  await nats.stop();
});

describe('kappa status', () => {
  it('exits 0 and lists every stage when all five heartbeat as ready, with the DLQ count of each stage', async () => {
    for (const stage of STAGES) await heartbeat(stage, `${stage}-1`);
    await heartbeat('joiner', 'joiner-2');
    // Two dead letters for the joiner, in the real DLQ stream.
    const admin = buses[0]!;
    await admin.ensureStreams();
    await admin.publishUnchecked(subjects.dlq('joiner'), new Uint8Array([1, 2, 3]));
    await admin.publishUnchecked(subjects.dlq('joiner'), new Uint8Array([4]));
    const result = await runKappa(['status', `--nats-url=${nats.url}`, '--wait=2s']);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.split('\n');
    for (const stage of STAGES) expect(lines.some((l) => l.startsWith(stage))).toBe(true);
    expect(lines.filter((l) => l.startsWith('joiner '))).toHaveLength(2);
    const joinerRow = lines.find((l) => l.startsWith('joiner '))!.split(/\s+/);
    // STAGE INSTANCE NODE READY IN/s OUT/s LAG DLQ LOST UP
    expect(joinerRow[3]).toBe('yes');
    expect(Number(joinerRow[4])).toBeGreaterThan(50);
    expect(joinerRow[6]).toBe('3');
    expect(joinerRow[7]).toBe('2');
    expect(result.stdout).toContain('all 5 stages ready');
  });

  it('exits 1 and names the stage without a heartbeat', async () => {
    for (const stage of STAGES.filter((s) => s !== 'joiner')) await heartbeat(stage, `${stage}-1`);
    const result = await runKappa(['status', `--nats-url=${nats.url}`, '--wait=1500ms']);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('missing (no heartbeat): joiner');
    expect(result.stdout).not.toContain('all 5 stages ready');
  });

  it('exits 1 and names the stage whose only instance is not ready', async () => {
    for (const stage of STAGES.filter((s) => s !== 'exporter')) await heartbeat(stage, `${stage}-1`);
    await heartbeat('exporter', 'exporter-1', false);
    const result = await runKappa(['status', `--nats-url=${nats.url}`, '--wait=1500ms']);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('not ready: exporter');
    expect(result.stdout).not.toContain('missing');
  });

  it('a stage counts as up when one of its instances is ready', async () => {
    for (const stage of STAGES) await heartbeat(stage, `${stage}-1`);
    await heartbeat('k8s-tagger', 'k8s-tagger-2', false);
    const result = await runKappa(['status', `--nats-url=${nats.url}`, '--wait=1500ms']);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/k8s-tagger\s+k8s-tagger-2\s+node-a\s+NO/);
  });

  it("prints how each instance runs on its node: capture's kernel hook per feature", async () => {
    for (const stage of STAGES.filter((s) => s !== 'capture')) await heartbeat(stage, `${stage}-1`);
    await heartbeat('capture', 'node-61', true, 100, { 'app latency': 'via fexit inet_sendmsg, inet6_sendmsg, inet_recvmsg, inet6_recvmsg (no sock_send_length tracepoint before 6.3)' });
    const result = await runKappa(['status', `--nats-url=${nats.url}`, '--wait=1500ms']);
    expect(result.code).toBe(0);
    // Under the table, indented: the table's rows stay the only lines that start with a stage.
    expect(result.stdout.split('\n').filter((l) => /^capture /.test(l))).toHaveLength(1);
    expect(result.stdout).toContain('\n  capture node-61: app latency: via fexit inet_sendmsg, inet6_sendmsg, inet_recvmsg, inet6_recvmsg (no sock_send_length tracepoint before 6.3)');
  });

  it('exits 1 with the reason when NATS cannot be reached', async () => {
    const result = await runKappa(['status', '--nats-url=nats://127.0.0.1:1', '--wait=500ms']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('cannot connect to NATS');
  });
});
