// Least privilege on the bus, checked against a real nats-server configured exactly as `npm run up`
// and as the Kustomize base configure it: with each identity's own nkey, the server refuses what
// that identity has no business doing (another node's subjects, another stage's heartbeat,
// subscribing to flows, deleting or purging a stream, a consumer outside its role, another
// identity's replies), and lets it do its own work: the whole pipeline's JetStream traffic, one hop
// after another, each with its own identity. A forged heartbeat never shows as healthy in the real
// `kappa status`.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { connect, nkeyAuthenticator } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { fromSeed } from '@nats-io/nkeys';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { TAGGER_STATE_STORE, busOptionsFromConfig, connectBus } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { StageStatusSchema, create, encodeStageStatus } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { ServerProcess, freePort } from '@kappa/testing';
import { render, workspaceRoot } from './manifests.js';
import { startBaseNats } from './nats-base.js';

const load = async <T>(path: string) => (await import(pathToFileURL(join(workspaceRoot, path)).href)) as T;
const permissionsModule = await load<{ inboxPrefix(publicKey: string): string }>('infra/nats/permissions.mjs');
const upPlanModule = await load<{
  ensureCredentials(state: string): Record<string, string>;
  ensureNatsKeys(state: string, ids: { name: string }[]): Record<string, { seedFile: string; publicKey: string }>;
  ensureTlsMaterial(root: string, state: string): Record<string, string>;
  upPlan(options: Record<string, unknown>): { natsConfig: string };
}>('tools/up-plan.mjs');
const { identities } = await load<{ identities(layout: { nodes: string[] }): { name: string }[] }>('infra/nats/permissions.mjs');

const PARTITIONS = 4;
const NODE = 'ksd-a';
const OTHER = 'ksd-b';

/** A NATS server as one of kappa's deployments configures it, and how to log in as an identity. */
interface Deployment {
  url: string;
  tls: { ca: string; cert: string; key: string };
  seedFile(identity: string): string;
  stop(): Promise<void>;
}

/** The server `npm run up` runs, from tools/up-plan.mjs, in a temporary state folder. */
async function upNats(): Promise<Deployment> {
  const state = mkdtempSync(join(tmpdir(), 'ksd-up-nats-'));
  const port = await freePort();
  const ids = identities({ nodes: [NODE] });
  const natsKeys = upPlanModule.ensureNatsKeys(state, ids);
  const tls = upPlanModule.ensureTlsMaterial(workspaceRoot, state);
  const { natsConfig } = upPlanModule.upPlan({
    root: workspaceRoot,
    state,
    natsPort: port,
    redisPort: await freePort(),
    plaintext: false,
    credentials: upPlanModule.ensureCredentials(state),
    natsKeys,
    tls,
    jsonl: join(state, 'flows.jsonl'),
    node: NODE,
    partitions: PARTITIONS,
  });
  writeFileSync(join(state, 'nats.conf'), natsConfig);
  const server = new ServerProcess({ command: 'nats-server', args: ['-c', join(state, 'nats.conf')], readyPattern: /Server is ready/ });
  await server.start();
  return {
    url: `tls://127.0.0.1:${port}`,
    tls: { ca: tls.ca ?? '', cert: tls.clientCert ?? '', key: tls.clientKey ?? '' },
    seedFile: (identity) => {
      const key = natsKeys[identity];
      if (!key) throw new Error(`npm run up has no identity ${identity}`);
      return key.seedFile;
    },
    stop: async () => {
      await server.stop();
      rmSync(state, { recursive: true, force: true });
    },
  };
}

interface Session {
  nc: NatsConnection;
  inbox: string;
  /** Permission errors the server sent on this connection: "publish <subject>" / "subscription <subject>". */
  refusals: Set<string>;
}

async function loginAs(deployment: Deployment, identity: string): Promise<Session> {
  const seed = new TextEncoder().encode(readFileSync(deployment.seedFile(identity), 'utf8').trim());
  const inbox = permissionsModule.inboxPrefix(fromSeed(seed).getPublicKey());
  const nc = await connect({
    servers: [deployment.url],
    authenticator: nkeyAuthenticator(seed),
    inboxPrefix: inbox,
    tls: { ca: readFileSync(deployment.tls.ca, 'utf8'), cert: readFileSync(deployment.tls.cert, 'utf8'), key: readFileSync(deployment.tls.key, 'utf8') },
    reconnect: false,
    timeout: 10_000,
  });
  const refusals = new Set<string>();
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type !== 'error') continue;
      const e = s.error as { name?: string; operation?: string; subject?: string };
      if (e.name === 'PermissionViolationError') refusals.add(`${e.operation} ${e.subject}`);
    }
  })();
  return { nc, inbox, refusals };
}

/** nats-server answers a refused PUB or SUB with -ERR before the PONG of the next flush. */
async function settled(session: Session): Promise<void> {
  await session.nc.flush();
  await new Promise((r) => setTimeout(r, 50));
}

async function mayPublish(session: Session, subject: string): Promise<boolean> {
  session.nc.publish(subject, new Uint8Array([1]));
  await settled(session);
  return !session.refusals.has(`publish ${subject}`);
}

async function maySubscribe(session: Session, subject: string): Promise<boolean> {
  const sub = session.nc.subscribe(subject);
  await settled(session);
  sub.unsubscribe();
  return !session.refusals.has(`subscription ${subject}`);
}

/** A JetStream API request: refused by the server, or answered (whatever the answer). */
async function mayCall(session: Session, subject: string, body: unknown = {}): Promise<boolean> {
  try {
    await session.nc.request(subject, JSON.stringify(body), { timeout: 5000 });
    return true;
  } catch (error) {
    const refused = (e: unknown): boolean => (e as Error | undefined)?.name === 'PermissionViolationError' || ((e as Error | undefined)?.cause !== undefined && refused((e as Error).cause));
    if (refused(error)) return false;
    throw error;
  }
}

const consumerConfig = (durable: string, filter: string) => ({
  stream_name: 'KAPPA_FLOWS',
  config: { durable_name: durable, name: durable, filter_subject: filter, ack_policy: AckPolicy.Explicit },
});

const deployments: [string, () => Promise<Deployment>][] = [
  ['npm run up', upNats],
  ['the Kustomize base', () => startBaseNats(render('base'), { nodes: [NODE, OTHER], partitions: PARTITIONS })],
];

describe.each(deployments)('NATS as %s configures it', (_name, start) => {
  let deployment: Deployment;
  const sessions = new Map<string, Session>();
  const as = async (identity: string): Promise<Session> => {
    let session = sessions.get(identity);
    if (!session) sessions.set(identity, (session = await loginAs(deployment, identity)));
    return session;
  };
  const everyone = ['cli', 'k8s-tagger', 'joiner', 'exporter', `capture-${NODE}`, `process-enricher-${NODE}`];

  beforeAll(async () => {
    deployment = await start();
    // The admin makes the streams, as `kappa streams` does (npm run up, the kappa-streams Job).
    const admin = await as('admin');
    const jsm = await jetstreamManager(admin.nc);
    await jsm.streams.add({ name: 'KAPPA_FLOWS', subjects: ['kappa.flow.>'], retention: 'workqueue' as never });
    await jsm.streams.add({ name: 'KAPPA_DLQ', subjects: ['kappa.dlq.>'] });
  }, 60_000);

  afterAll(async () => {
    for (const session of sessions.values()) await session.nc.close();
    await deployment?.stop();
  });

  test('no identity but the admin may delete, purge, create or update a stream, read a message directly, or delete one', async () => {
    for (const identity of everyone) {
      const session = await as(identity);
      for (const subject of [
        '$JS.API.STREAM.DELETE.KAPPA_FLOWS',
        '$JS.API.STREAM.PURGE.KAPPA_FLOWS',
        '$JS.API.STREAM.DELETE.KAPPA_DLQ',
        '$JS.API.STREAM.CREATE.KAPPA_OTHER',
        '$JS.API.STREAM.UPDATE.KAPPA_FLOWS',
        '$JS.API.STREAM.MSG.GET.KAPPA_FLOWS',
        '$JS.API.STREAM.MSG.DELETE.KAPPA_FLOWS',
        '$JS.API.STREAM.CREATE.KAPPA_TAGGER_STATE',
        '$JS.API.STREAM.UPDATE.KAPPA_TAGGER_STATE',
        '$JS.API.STREAM.DELETE.KAPPA_TAGGER_STATE',
        '$JS.API.STREAM.PURGE.KAPPA_TAGGER_STATE',
      ]) {
        expect(await mayCall(session, subject), `${identity} ${subject}`).toBe(false);
      }
    }
    const jsm = await jetstreamManager((await as('admin')).nc);
    expect((await jsm.streams.info('KAPPA_FLOWS')).config.name).toBe('KAPPA_FLOWS');
  });

  test("no identity may publish another node's captured flows, nor a flow subject outside its role", async () => {
    const forbidden: Record<string, string[]> = {
      [`capture-${NODE}`]: [`kappa.flow.captured.${OTHER}`, `kappa.flow.enriched.p0.${NODE}`, 'kappa.flow.tagged.p0', 'kappa.flow.joined.p0'],
      [`process-enricher-${NODE}`]: [`kappa.flow.captured.${NODE}`, `kappa.flow.enriched.p0.${OTHER}`, 'kappa.flow.tagged.p0', 'kappa.flow.joined.p0'],
      'k8s-tagger': [`kappa.flow.captured.${NODE}`, `kappa.flow.enriched.p0.${NODE}`, 'kappa.flow.joined.p0'],
      joiner: [`kappa.flow.captured.${NODE}`, `kappa.flow.enriched.p0.${NODE}`],
      exporter: [`kappa.flow.captured.${NODE}`, 'kappa.flow.tagged.p0', 'kappa.flow.joined.p0'],
      cli: [`kappa.flow.captured.${NODE}`, 'kappa.flow.joined.p0'],
    };
    for (const [identity, subjects] of Object.entries(forbidden)) {
      const session = await as(identity);
      for (const subject of subjects) expect(await mayPublish(session, subject), `${identity} → ${subject}`).toBe(false);
    }
  });

  test('each identity may publish only its own heartbeat subject', async () => {
    const forbidden: Record<string, string[]> = {
      [`capture-${NODE}`]: [`kappa.status.capture.${OTHER}`, 'kappa.status.joiner.x', `kappa.status.process-enricher.${NODE}`],
      [`process-enricher-${NODE}`]: [`kappa.status.process-enricher.${OTHER}`, `kappa.status.capture.${NODE}`],
      'k8s-tagger': ['kappa.status.joiner.x', `kappa.status.capture.${NODE}`],
      joiner: ['kappa.status.exporter.x', 'kappa.status.k8s-tagger.x'],
      exporter: ['kappa.status.joiner.x'],
      cli: ['kappa.status.exporter.x', `kappa.status.capture.${NODE}`],
    };
    for (const [identity, subjects] of Object.entries(forbidden)) {
      const session = await as(identity);
      for (const subject of subjects) expect(await mayPublish(session, subject), `${identity} → ${subject}`).toBe(false);
    }
    expect(await mayPublish(await as(`capture-${NODE}`), `kappa.status.capture.${NODE}`)).toBe(true);
    expect(await mayPublish(await as('joiner'), 'kappa.status.joiner.replica-1')).toBe(true);
  });

  test("no identity may subscribe to flows, to everyone's heartbeats (but the CLI and the exporter), or to another identity's replies", async () => {
    const exporterInbox = (await as('exporter')).inbox;
    for (const identity of everyone) {
      const session = await as(identity);
      for (const subject of ['kappa.flow.>', `kappa.flow.captured.${NODE}`, 'kappa.flow.joined.>', 'kappa.dlq.>', '_INBOX.>', '>', '$JS.API.>']) {
        expect(await maySubscribe(session, subject), `${identity} sub ${subject}`).toBe(false);
      }
      if (identity !== 'exporter') expect(await maySubscribe(session, `${exporterInbox}.>`), `${identity} sub the exporter's inbox`).toBe(false);
      // The CLI (kappa status) and the exporter (the Observer's GetStatus) read heartbeats.
      expect(await maySubscribe(session, 'kappa.status.>'), `${identity} sub kappa.status.>`).toBe(identity === 'cli' || identity === 'exporter');
    }
  });

  test('no identity may create, read, pull from or delete a consumer outside its role', async () => {
    const forbidden: Record<string, [string, unknown?][]> = {
      cli: [[`$JS.API.CONSUMER.CREATE.KAPPA_FLOWS.cli.kappa.flow.>`, consumerConfig('cli', 'kappa.flow.>')], ['$JS.API.CONSUMER.MSG.NEXT.KAPPA_FLOWS.exporter']],
      [`capture-${NODE}`]: [[`$JS.API.CONSUMER.CREATE.KAPPA_FLOWS.spy.kappa.flow.captured.${NODE}`, consumerConfig('spy', `kappa.flow.captured.${NODE}`)]],
      [`process-enricher-${NODE}`]: [
        [`$JS.API.CONSUMER.CREATE.KAPPA_FLOWS.process-enricher-${OTHER}.kappa.flow.captured.${OTHER}`, consumerConfig(`process-enricher-${OTHER}`, `kappa.flow.captured.${OTHER}`)],
        [`$JS.API.CONSUMER.CREATE.KAPPA_FLOWS.process-enricher-${NODE}.kappa.flow.>`, consumerConfig(`process-enricher-${NODE}`, 'kappa.flow.>')],
        [`$JS.API.CONSUMER.DURABLE.CREATE.KAPPA_FLOWS.process-enricher-${NODE}`, consumerConfig(`process-enricher-${NODE}`, 'kappa.flow.>')],
        [`$JS.API.CONSUMER.MSG.NEXT.KAPPA_FLOWS.process-enricher-${OTHER}`],
      ],
      'k8s-tagger': [['$JS.API.CONSUMER.CREATE.KAPPA_FLOWS.k8s-tagger.kappa.flow.joined.>', consumerConfig('k8s-tagger', 'kappa.flow.joined.>')], ['$JS.API.CONSUMER.DELETE.KAPPA_FLOWS.exporter']],
      joiner: [['$JS.API.CONSUMER.CREATE.KAPPA_FLOWS.exporter.kappa.flow.joined.>', consumerConfig('exporter', 'kappa.flow.joined.>')], ['$JS.API.CONSUMER.DELETE.KAPPA_FLOWS.exporter'], ['$JS.API.CONSUMER.MSG.NEXT.KAPPA_FLOWS.exporter']],
      exporter: [['$JS.API.CONSUMER.CREATE.KAPPA_FLOWS.exporter.kappa.flow.tagged.>', consumerConfig('exporter', 'kappa.flow.tagged.>')], ['$JS.API.CONSUMER.DELETE.KAPPA_FLOWS.k8s-tagger'], ['$JS.API.CONSUMER.LIST.KAPPA_FLOWS']],
    };
    for (const [identity, calls] of Object.entries(forbidden)) {
      const session = await as(identity);
      for (const [subject, body] of calls) expect(await mayCall(session, subject, body ?? {}), `${identity} ${subject}`).toBe(false);
    }
  });

  test('each identity does its own work: a batch goes capture → enricher → tagger → joiner → exporter, every hop with its own nkey', async () => {
    const hop = async (identity: string, durable: string, filter: string, output?: string) => {
      const session = await as(identity);
      const jsm = await jetstreamManager(session.nc, { checkAPI: false });
      await jsm.consumers.add('KAPPA_FLOWS', { durable_name: durable, filter_subject: filter, ack_policy: AckPolicy.Explicit });
      const consumer = await jetstream(session.nc).consumers.get('KAPPA_FLOWS', durable);
      const message = await consumer.next({ expires: 5000 });
      expect(message, `${identity} got nothing on ${filter}`).not.toBeNull();
      if (output) await jetstream(session.nc).publish(output, message!.data, { msgID: `${identity}:${message!.seq}` });
      await message!.ackAck();
      return new TextDecoder().decode(message!.data);
    };
    const capture = await as(`capture-${NODE}`);
    await jetstream(capture.nc).publish(`kappa.flow.captured.${NODE}`, new TextEncoder().encode('batch-1'), { msgID: 'capture:batch-1' });
    expect(await hop(`process-enricher-${NODE}`, `process-enricher-${NODE}`, `kappa.flow.captured.${NODE}`, `kappa.flow.enriched.p1.${NODE}`)).toBe('batch-1');
    expect(await hop('k8s-tagger', 'k8s-tagger', 'kappa.flow.enriched.>', 'kappa.flow.tagged.p1')).toBe('batch-1');
    expect(await hop('joiner', 'joiner-p1', 'kappa.flow.tagged.p1', 'kappa.flow.joined.p1')).toBe('batch-1');
    expect(await hop('exporter', 'exporter', 'kappa.flow.joined.>')).toBe('batch-1');
    // Each stage may dead-letter its own undecodable input, and read the streams' fill.
    for (const [identity, stage] of [[`process-enricher-${NODE}`, 'process-enricher'], ['k8s-tagger', 'k8s-tagger'], ['joiner', 'joiner'], ['exporter', 'exporter']] as const) {
      const session = await as(identity);
      await jetstream(session.nc).publish(`kappa.dlq.${stage}`, new Uint8Array([0xff]), { msgID: `dlq:${stage}` });
      expect((await (await jetstreamManager(session.nc, { checkAPI: false })).streams.info('KAPPA_FLOWS')).config.name).toBe('KAPPA_FLOWS');
    }
    // The joiner's owner of a partition recreates its durable at takeover.
    const joiner = await jetstreamManager((await as('joiner')).nc, { checkAPI: false });
    expect(await joiner.consumers.delete('KAPPA_FLOWS', 'joiner-p1')).toBe(true);
    // kappa status: the DLQ's counts per stage.
    const cli = await jetstreamManager((await as('cli')).nc);
    const dlq = await cli.streams.info('KAPPA_DLQ', { subjects_filter: 'kappa.dlq.>' });
    expect(Object.keys(dlq.state.subjects ?? {}).sort()).toEqual(['kappa.dlq.exporter', 'kappa.dlq.joiner', 'kappa.dlq.k8s-tagger', 'kappa.dlq.process-enricher']);
  });

  test('the tagger keeps its state on a stream only the admin creates: it waits for it, then writes and reads back its keys, which nobody else can', async () => {
    const buses: Bus[] = [];
    const busAs = async (identity: string) => {
      const options = busOptionsFromConfig({
        natsUrl: [deployment.url],
        natsNkeySeed: deployment.seedFile(identity),
        natsTlsCa: deployment.tls.ca,
        natsTlsCert: deployment.tls.cert,
        natsTlsKey: deployment.tls.key,
        streamMaxBytes: 1024 ** 3,
        streamMaxAge: 3_600_000,
      });
      const bus = await connectBus({ ...options, name: `ksd-${identity}`, logger: createLogger('ksd', 'silent'), registry: createRegistry('ksd') });
      buses.push(bus);
      return bus;
    };
    try {
      const tagger = await busAs('k8s-tagger');
      // The real tagger's call: the stream is missing and the tagger may not create it, so it waits.
      const opening = tagger.openStateStore({ ...TAGGER_STATE_STORE, maxAgeMs: 2 * TAGGER_STATE_STORE.maxAgeMs });
      const early = await Promise.race([opening.then(() => 'opened'), new Promise((r) => setTimeout(() => r('waiting'), 3000))]);
      expect(early).toBe('waiting');
      await (await busAs('admin')).ensureStateStream(TAGGER_STATE_STORE);
      const store = await opening;
      // A longer max age than the admin's is not applied: the tagger may not change the stream.
      const admin = await jetstreamManager((await as('admin')).nc);
      expect((await admin.streams.info(TAGGER_STATE_STORE.stream)).config.max_age).toBe(TAGGER_STATE_STORE.maxAgeMs * 1_000_000);
      await store.put('pod.u-1', new TextEncoder().encode('one'));
      await store.put('svc.u-2', new TextEncoder().encode('two'));
      await store.put('pod.u-1', new TextEncoder().encode('three'));
      const loaded = await store.load();
      expect(Object.fromEntries([...loaded].map(([k, v]) => [k, new TextDecoder().decode(v)]))).toEqual({ 'pod.u-1': 'three', 'svc.u-2': 'two' });
      for (const identity of everyone.filter((i) => i !== 'k8s-tagger')) {
        const session = await as(identity);
        expect(await mayPublish(session, `${TAGGER_STATE_STORE.subjectPrefix}.pod.u-1`), `${identity} writes the tagger's state`).toBe(false);
        expect(await mayCall(session, `$JS.API.CONSUMER.CREATE.${TAGGER_STATE_STORE.stream}.spy`, { stream_name: TAGGER_STATE_STORE.stream, config: { name: 'spy' } }), `${identity} reads the tagger's state`).toBe(false);
      }
    } finally {
      for (const bus of buses) await bus.close();
    }
  }, 60_000);

  test("node A's agent cannot make a forged heartbeat appear healthy in kappa status", async () => {
    const forger = await as(`capture-${NODE}`);
    const beat = (stage: string, instance: string, node: string) =>
      encodeStageStatus(create(StageStatusSchema, { stage, instance, node, ready: true, startedNs: 1n, sentNs: BigInt(Date.now()) * 1_000_000n }));
    const forge = setInterval(() => {
      forger.nc.publish(`kappa.status.capture.${OTHER}`, beat('capture', OTHER, OTHER));
      forger.nc.publish('kappa.status.joiner.forged', beat('joiner', 'forged', NODE));
      forger.nc.publish(`kappa.status.capture.${NODE}`, beat('joiner', 'forged', NODE));
      forger.nc.publish(`kappa.status.capture.${NODE}`, beat('capture', NODE, OTHER));
    }, 200);
    const dir = mkdtempSync(join(tmpdir(), 'ksd-cli-'));
    try {
      const config = join(dir, 'cli.json');
      writeFileSync(
        config,
        JSON.stringify({ natsUrl: deployment.url, natsNkeySeed: deployment.seedFile('cli'), natsTlsCa: deployment.tls.ca, natsTlsCert: deployment.tls.cert, natsTlsKey: deployment.tls.key }),
      );
      const child = spawn(process.execPath, [join(workspaceRoot, 'apps/cli/dist/main.js'), 'status', '--wait', '2s'], {
        env: { ...process.env, KAPPA_CONFIG: config },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      expect(code, out).toBe(1);
      const rows = out.split('\n').filter((line) => /^(capture|process-enricher|k8s-tagger|joiner|exporter)\s/.test(line));
      expect(rows.filter((line) => /\byes\b/.test(line)), out).toEqual([]);
      expect(out).not.toMatch(/forged|ksd-b/);
      expect(out).toMatch(/missing \(no heartbeat\): capture, process-enricher, k8s-tagger, joiner, exporter/);
      expect(out).toContain('heartbeats: authenticated by NATS permissions');
      expect(out).toMatch(/ignored \d+ heartbeat\(s\) whose body claims another stage, instance or node/);
      expect(forger.refusals.has(`publish kappa.status.capture.${OTHER}`)).toBe(true);
      expect(forger.refusals.has('publish kappa.status.joiner.forged')).toBe(true);
    } finally {
      clearInterval(forge);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
