// Hostile buffers on every subject the services consume, against the real services (built bundles,
// real NATS, Redis and Kubernetes API): each undecodable buffer becomes exactly one DLQ entry of
// the consuming stage, each decodable one is handled and acked, no service dies or restarts, and
// Object.prototype is unchanged in every process (checked at exit by prototype-guard.mjs).
// `npm test`: 2 000 buffers per subject; `npm run fuzz`: 100 000 (KAPPA_FUZZ_SUBJECT_BUFFERS).
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  ContractDecodeError,
  DEFAULT_PARTITIONS,
  IpProtocol,
  Vantage,
  create,
  decodeFlowBatch,
  decodeStageStatus,
  encodeFlowBatch,
  encodeStageStatus,
  newFlowBatch,
  newFlowRecord,
  StageStatusSchema,
} from '@kappa/contracts';
import type { FlowRecordSchema } from '@kappa/contracts';
import { freePort, startKubeApiServer, startNatsServer, startRedisServer } from '@kappa/testing';
import type { KubeApiServer, TestServer } from '@kappa/testing';
import { Random, hostilePayload } from '../src/fuzz-inputs.js';
import type { MutationKind } from '../src/fuzz-inputs.js';
import { isRunning, kappa, logTail, startService, stopService } from '../src/services.js';
import type { RunningService } from '../src/services.js';

const perSubject = Number(process.env.KAPPA_FUZZ_SUBJECT_BUFFERS ?? 2000);
const seed = Number(process.env.KAPPA_FUZZ_SEED ?? 20261126);
/** Time to drain one subject: generous for a loaded CI machine, scaled with the buffer count. */
const drainMs = 60_000 + perSubject * 15;
/** Hostile messages spread over the consuming stages, to check the log stays bounded. */
const floodTotal = Number(process.env.KAPPA_FUZZ_FLOOD_MESSAGES ?? 100_000);
const floodDrainMs = 120_000 + floodTotal * 3;
const NODE = 'ksf-node';
const FLOW_STREAM = 'KAPPA_FLOWS';
const DLQ_STREAM = 'KAPPA_DLQ';

interface Service extends RunningService {
  stage: string;
  /** The stage's durable consumers on KAPPA_FLOWS (the enricher's is per node, the joiner's per partition). */
  durables: string[];
  metricsPort: number;
  pid: number;
}

let nats: TestServer;
let redis: TestServer;
let api: KubeApiServer;
let workDir: string;
let reportDir: string;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;
const services: Service[] = [];
const nodeOptionsBefore = process.env.NODE_OPTIONS;

/** Valid encoded FlowBatches the mutations start from: empty, small, odd and awkward ones. */
function flowSeeds(): Uint8Array[] {
  const record = (i: number, extra: Record<string, unknown> = {}) =>
    newFlowRecord(<MessageInitShape<typeof FlowRecordSchema>>{
      id: `seed-${i}`,
      node: NODE,
      vantage: i % 2 ? Vantage.DST : Vantage.SRC,
      startNs: 1_764_000_000_000_000_000n + BigInt(i),
      endNs: 1_764_000_001_000_000_000n + BigInt(i),
      protocol: i % 3 ? IpProtocol.TCP : IpProtocol.UDP,
      src: { ip: i % 2 ? '2001:db8::1' : '10.0.0.1', port: 40000 + i, process: { pid: process.pid, name: 'client', cmdline: 'client --x' } },
      dst: { ip: i % 2 ? '2001:db8::2' : '10.0.0.2', port: 443, kube: { objectName: 'pod', objectNamespace: 'ns', labels: { app: 'web' } } },
      bytes: BigInt(100 * i),
      packets: BigInt(i),
      tcp: { srttUs: 100, flags: 0x1b },
      joined: i % 2 === 0,
      observation: 'socket',
      ...extra,
    });
  const batch = (id: string, records: ReturnType<typeof record>[]) => encodeFlowBatch(newFlowBatch({ batchId: id, producer: 'ksf-fuzz', createdNs: 1n, records }));
  return [
    batch('empty', []),
    batch('one', [record(1)]),
    batch('three', [record(2), record(3), record(4)]),
    batch('max', [record(5, { bytes: (1n << 64n) - 1n, packets: (1n << 64n) - 1n, clusterId: 0xffff_ffff, icmpType: 0xffff_ffff })]),
    // Keys that pollute a prototype when a decoder or a handler assigns them carelessly.
    batch('proto', [record(6, { src: { ip: '10.0.0.9', kube: { labels: { __proto__: 'x', constructor: 'y', prototype: 'z', toString: 'w' } } } })]),
    batch('unicode', [record(7, { node: '😀'.repeat(50), id: 'é\u0000\uffff', dst: { ip: 'not an ip', port: 70000 } })]),
    batch('no-ends', [newFlowRecord({ id: 'bare' })]),
    // Regression: a CR in the batch id made the joiner's publish fail and the batch come back
    // forever; now it is undecodable and goes to the DLQ.
    batch('no\rends', [record(8)]),
  ];
}

function statusSeeds(): Uint8Array[] {
  const status = (stage: string, extra: MessageInitShape<typeof StageStatusSchema> = {}) =>
    encodeStageStatus(create(StageStatusSchema, { stage, instance: `ksf-${stage}`, node: NODE, startedNs: 1n, sentNs: 2n, ready: true, recordsIn: 5n, ...extra }));
  return [
    status('capture'),
    status('joiner', { lost: { ring: 3n, __proto__: 1n, constructor: 2n } }),
    status('exporter', { sentNs: 0n, startedNs: (1n << 64n) - 1n, recordsIn: (1n << 64n) - 1n }),
    status('', { instance: '😀'.repeat(40), lost: { '': 0n } }),
  ];
}

async function metric(service: Service, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${service.metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`stage="${service.stage}"`));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

async function dlqCounts(): Promise<Map<string, number>> {
  const info = await jsm.streams.info(DLQ_STREAM, { subjects_filter: 'kappa.dlq.>' });
  return new Map(Object.entries(info.state.subjects ?? {}).map(([subject, n]) => [subject.replace(/^kappa\.dlq\./, ''), n]));
}

async function idle(service: Service): Promise<boolean> {
  for (const durable of service.durables) {
    const info = await jsm.consumers.info(FLOW_STREAM, durable);
    if (info.num_pending !== 0 || info.num_ack_pending !== 0) return false;
  }
  return true;
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs: number, detail: () => Promise<string>): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${await detail()}\n${services.map((s) => `--- ${s.name}\n${logTail(s, 10)}`).join('\n')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

beforeAll(async () => {
  workDir = mkdtempSync(join(tmpdir(), 'ksf-fuzz-'));
  reportDir = mkdtempSync(join(workDir, 'prototype-'));
  // Every service (and the CLI) spawned from here on reports its prototypes at exit.
  process.env.NODE_OPTIONS = `${nodeOptionsBefore ?? ''} --import ${join(import.meta.dirname, '../src/prototype-guard.mjs')}`.trim();
  process.env.KAPPA_PROTOTYPE_REPORT_DIR = reportDir;
  [nats, redis, api] = await Promise.all([startNatsServer(), startRedisServer(), startKubeApiServer()]);
  const natsUrl = `--nats-url=${nats.url}`;
  const launch = async (stage: string, args: string[], durables = [stage]) => {
    const metricsPort = await freePort();
    // One enricher per node: its instance is its node (its NATS identity may heartbeat only there).
    const instance = stage === 'process-enricher' ? [] : [`--instance=ksf-real-${stage}`];
    const s = startService(stage, stage, [natsUrl, `--metrics-port=${metricsPort}`, ...instance, ...args], workDir);
    services.push(Object.assign(s, { stage, durables, metricsPort, pid: s.child.pid ?? -1 }));
  };
  await launch('exporter', [`--jsonl=${join(workDir, 'flows.jsonl')}`, `--observer-port=${await freePort()}`, '--observer-host=127.0.0.1']);
  // One durable per partition (joiner-p<k>): the enricher's and tagger's output may go to any.
  await launch('joiner', [`--redis-url=${redis.url}`, '--interval=1s'], Array.from({ length: DEFAULT_PARTITIONS }, (_, k) => `joiner-p${k}`));
  await launch('k8s-tagger', [`--kubeconfig=${api.kubeconfigPath}`, '--grpc-port=0']);
  await launch('process-enricher', [`--node=${NODE}`, '--cri-socket=none'], [`process-enricher-${NODE}`]);
  nc = await connect({ servers: nats.url, name: 'ksf-fuzz' });
  js = jetstream(nc);
  jsm = await jetstreamManager(nc);
  for (const s of services) {
    await until(
      `${s.name} ready and consuming`,
      async () => {
        const ready = await fetch(`http://127.0.0.1:${s.metricsPort}/readyz`).then((r) => r.ok, () => false);
        return ready && (await Promise.all(s.durables.map((d) => jsm.consumers.info(FLOW_STREAM, d).then(() => true, () => false)))).every(Boolean);
      },
      90_000,
      async () => (isRunning(s) ? 'running' : `exited ${s.child.exitCode}`),
    );
  }
}, 180_000);

afterAll(async () => {
  await nc?.close();
  await Promise.all(services.map((s) => stopService(s, 'SIGKILL')));
  await Promise.all([nats?.stop(), redis?.stop(), api?.close()]);
  if (nodeOptionsBefore === undefined) delete process.env.NODE_OPTIONS;
  else process.env.NODE_OPTIONS = nodeOptionsBefore;
  delete process.env.KAPPA_PROTOTYPE_REPORT_DIR;
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

// Downstream first: a stage's consumed count then only grows by what the test sends it, since
// the stages upstream of it have had nothing to pass on yet.
const targets = [
  { subject: 'kappa.flow.joined.p1', stage: 'exporter' },
  { subject: 'kappa.flow.tagged.p1', stage: 'joiner' },
  { subject: `kappa.flow.enriched.p1.${NODE}`, stage: 'k8s-tagger' },
  { subject: `kappa.flow.captured.${NODE}`, stage: 'process-enricher' },
];

describe(`${perSubject} hostile buffers on every subject the services consume`, () => {
  targets.forEach(({ subject, stage }, index) => {
    it(`${subject}: each undecodable buffer is one kappa.dlq.${stage} entry, each decodable one is handled, and no service restarts`, async () => {
      const target = services.find((s) => s.stage === stage)!;
      const random = new Random(seed + index);
      const seeds = flowSeeds();
      // KAPPA_DLQ drops its oldest entries beyond 256 MiB: start each subject from an empty one.
      await jsm.streams.purge(DLQ_STREAM);
      const dlqBefore = await dlqCounts();
      const consumedBefore = await metric(target, 'kappa_bus_consumed_batches_total');
      const failuresBefore = await Promise.all(services.map((s) => metric(s, 'kappa_bus_handler_failures_total')));

      let undecodable = 0;
      const kinds = new Map<MutationKind, { sent: number; undecodable: number }>();
      const pending: Promise<unknown>[] = [];
      for (let i = 0; i < perSubject; i++) {
        const { kind, bytes } = hostilePayload(random, seeds);
        let bad = false;
        try {
          decodeFlowBatch(bytes);
        } catch (error) {
          // The test's own decode is the same code as the services': anything else is a decoder bug.
          expect(error, `${kind} payload ${Buffer.from(bytes.subarray(0, 64)).toString('hex')}`).toBeInstanceOf(ContractDecodeError);
          bad = true;
        }
        if (bad) undecodable++;
        const k = kinds.get(kind) ?? { sent: 0, undecodable: 0 };
        kinds.set(kind, { sent: k.sent + 1, undecodable: k.undecodable + (bad ? 1 : 0) });
        pending.push(js.publish(subject, bytes));
        if (pending.length >= 256) await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
      const decodable = perSubject - undecodable;

      const dlqOf = async (s: string) => ((await dlqCounts()).get(s) ?? 0) - (dlqBefore.get(s) ?? 0);
      // A decodable batch whose handler fails comes back forever: stop at the first one.
      const noHandlerFailures = async () => {
        const now = await Promise.all(services.map((s) => metric(s, 'kappa_bus_handler_failures_total')));
        if (now.some((n, i) => n !== failuresBefore[i])) throw new Error(`handler failures ${JSON.stringify(failuresBefore)} → ${JSON.stringify(now)}: a decodable batch cannot be handled\n${services.map((s) => `--- ${s.name}\n${logTail(s, 5)}`).join('\n')}`);
      };
      await until(
        `${stage} to take all ${perSubject} buffers`,
        async () => {
          await noHandlerFailures();
          const taken = (await metric(target, 'kappa_bus_consumed_batches_total')) - consumedBefore + (await dlqOf(stage));
          return taken >= perSubject && (await idle(target));
        },
        drainMs,
        async () => `consumed ${(await metric(target, 'kappa_bus_consumed_batches_total')) - consumedBefore}, DLQ ${await dlqOf(stage)}, expected ${decodable} + ${undecodable}`,
      );
      // Let what the target passed on reach the stages after it, so a bad output would show in their DLQ.
      for (const s of services) await until(`${s.stage} idle`, () => idle(s), drainMs, async () => JSON.stringify(await Promise.all(s.durables.map((d) => jsm.consumers.info(FLOW_STREAM, d)))));

      const summary = [...kinds].map(([k, v]) => `${k} ${v.undecodable}/${v.sent}`).join(', ');
      expect(await dlqOf(stage), `undecodable per kind: ${summary}`).toBe(undecodable);
      expect((await metric(target, 'kappa_bus_consumed_batches_total')) - consumedBefore).toBe(decodable);
      expect(undecodable).toBeGreaterThan(perSubject / 4);
      expect(decodable).toBeGreaterThan(perSubject / 20);
      // The stages after the target got only decodable batches from it.
      for (const s of services.filter((s) => s.stage !== stage)) expect(await dlqOf(s.stage), s.stage).toBe(0);
      const failuresAfter = await Promise.all(services.map((s) => metric(s, 'kappa_bus_handler_failures_total')));
      expect(failuresAfter, 'handler failures per service').toEqual(failuresBefore);
      for (const s of services) {
        expect(isRunning(s), `${s.name}\n${logTail(s)}`).toBe(true);
        expect(s.child.pid).toBe(s.pid);
        // No process of it ended (this test stops none): every exit, with its code or signal, is recorded.
        expect(s.exits, s.name).toEqual([]);
      }
    }, drainMs * 3);
  });

  it('kappa.status.>: kappa status shows the real stages and ignores hostile heartbeats without failing', async () => {
    const random = new Random(seed + 100);
    const seeds = statusSeeds();
    // Capture is not running. A hostile heartbeat that decodes as a ready capture would make the
    // pipeline look healthy: such payloads are left out, so the exit code is known exactly.
    const claimsReadyCapture = (p: Uint8Array) => {
      try {
        const status = decodeStageStatus(p);
        return status.stage === 'capture' && status.ready;
      } catch {
        return false;
      }
    };
    const payloads = Array.from({ length: perSubject }, () => hostilePayload(random, seeds).bytes).filter((p) => !claimsReadyCapture(p));
    for (const p of payloads) {
      try {
        decodeStageStatus(p);
      } catch (error) {
        expect(error).toBeInstanceOf(ContractDecodeError);
      }
    }
    // Heartbeats are plain NATS messages: the CLI sees those published while it listens. At most
    // ~5 000 a second, so the CLI is not cut off as a slow consumer (that is not what is tested);
    // it listens long enough for all of them at 2 000 a second (a loaded machine).
    const waitMs = 3000 + perSubject / 2;
    const cli = kappa(['status', `--nats-url=${nats.url}`, `--wait=${waitMs}ms`]);
    let done = false;
    void cli.finally(() => (done = true));
    let sent = 0;
    while (!done) {
      for (let i = 0; i < 50; i++) nc.publish(`kappa.status.${random.pick(['capture', 'joiner', 'x'])}.ksf-${random.below(1000)}`, payloads[sent++ % payloads.length]!);
      await nc.flush();
      await new Promise((r) => setTimeout(r, 10));
    }
    const { code, stdout, stderr } = await cli;
    expect(sent).toBeGreaterThanOrEqual(payloads.length);
    expect(stderr).toBe('');
    // No ready capture: kappa status says so and exits 1, whatever else the heartbeats claimed.
    expect(code, stdout).toBe(1);
    expect(stdout).toMatch(/^(missing \(no heartbeat\)|not ready): (.*, )?capture(,|$)/m);
    expect(stdout).toMatch(/^STAGE/);
    // Each real service's own row: its stage, its instance and ready.
    for (const s of services) expect(stdout, s.stage).toMatch(new RegExp(`^${s.stage} +${s.stage === 'process-enricher' ? NODE : `ksf-real-${s.stage}`} .* yes `, 'm'));
  }, 120_000 + perSubject);

  it(`${floodTotal} hostile messages leave less than 1 MB of log per service, and the DLQ and the metrics count every one`, async () => {
    await jsm.streams.purge(DLQ_STREAM);
    const logBefore = new Map(services.map((s) => [s.stage, statSync(s.logFile).size]));
    const dlqMetricBefore = new Map(await Promise.all(services.map(async (s) => [s.stage, await metric(s, 'kappa_bus_dead_lettered_total')] as const)));
    const perTarget = floodTotal / targets.length;
    // 0xff: field 31 with wire type 7, which no protobuf decoder accepts; the rest varies.
    const random = new Random(seed + 200);
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < perTarget; i++) {
      for (const { subject } of targets) {
        const bytes = new Uint8Array(8 + random.below(56));
        for (let j = 0; j < bytes.length; j++) bytes[j] = random.below(256);
        bytes[0] = 0xff;
        pending.push(js.publish(subject, bytes));
      }
      if (pending.length >= 512) await Promise.all(pending.splice(0));
    }
    await Promise.all(pending);
    await until(
      `every stage to dead-letter ${perTarget} messages`,
      async () => [...(await dlqCounts()).values()].reduce((a, b) => a + b, 0) >= floodTotal && (await Promise.all(services.map(idle))).every(Boolean),
      floodDrainMs,
      async () => JSON.stringify(Object.fromEntries(await dlqCounts())),
    );
    const dlq = await dlqCounts();
    for (const { stage } of targets) {
      const service = services.find((s) => s.stage === stage)!;
      expect(dlq.get(stage), stage).toBe(perTarget);
      expect((await metric(service, 'kappa_bus_dead_lettered_total')) - (dlqMetricBefore.get(stage) ?? 0), stage).toBe(perTarget);
      const logged = statSync(service.logFile).size - (logBefore.get(stage) ?? 0);
      expect(logged, `${stage} wrote ${logged} bytes of log for ${perTarget} hostile messages`).toBeLessThan(1024 * 1024);
      expect(isRunning(service), `${service.name}\n${logTail(service)}`).toBe(true);
    }
  }, floodDrainMs + 60_000);

  it('leaves Object.prototype unchanged in every service and in the CLI', async () => {
    for (const s of services) {
      expect(isRunning(s), `${s.name}\n${logTail(s)}`).toBe(true);
      expect(s.child.pid).toBe(s.pid);
    }
    // A graceful stop runs each process's exit handlers, where the guard writes its report.
    await Promise.all(services.map((s) => stopService(s, 'SIGTERM')));
    const reports = readdirSync(reportDir).map((f) => JSON.parse(readFileSync(join(reportDir, f), 'utf8')) as { pid: number; changes: string[] });
    for (const s of services) expect(reports.find((r) => r.pid === s.pid), `${s.name} wrote no prototype report\n${logTail(s)}`).toBeDefined();
    // The services and the CLI run (kappa status above).
    expect(reports.length).toBeGreaterThanOrEqual(services.length + 1);
    for (const r of reports) expect(r.changes, `pid ${r.pid}`).toEqual([]);
  }, 60_000);
});
