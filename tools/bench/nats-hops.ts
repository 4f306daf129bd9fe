// nats-server's CPU per record for the pipeline's JetStream traffic alone, without the stages'
// work: pass-through stages (two "enrichers" fanning each input out to 16 partitions, a "tagger",
// one "joiner" consumer per partition, an "exporter") move payloads of the pipeline's sizes through
// KAPPA_FLOWS's configuration (file storage, work queue, dedupe ids, durable pull consumers,
// confirmed acks), so a stream or consumer setting can be compared in seconds. All stages share
// this one Node process: at high rates or load it may not keep up ("out" below the rate), and its
// figures then count fewer messages per record; compare runs whose "out" is close to the rate.
// Run: npm run bench:nats-hops -- [--variant=base|perhop|memstate|s2] [--rate=20000] [--seconds=15]
//   [--bytes=1] (scales every hop's bytes per record) [--fanout=16] (partitions per input)
//   [--max-payload=MB] (nats-server's max_payload, so capture's batches split into fewer parts)
//   variants: perhop = one stream per hop; memstate = consumers keep their state in memory
//   (mem_storage); s2 = the stream's blocks S2-compressed.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, headers, nanos } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, StoreCompression, jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { JetStreamClient, JsMsg } from '@nats-io/jetstream';
import { startNatsServer } from '@kappa/testing';
import { cpuSeconds, machineLine } from './lib/report.mjs';

const args = Object.fromEntries(process.argv.slice(2).map((a) => /^--([^=]+)(?:=(.*))?$/s.exec(a)?.slice(1) ?? [a]));
const VARIANT = args.variant ?? 'base';
if (!['base', 'perhop', 'memstate', 's2'].includes(VARIANT)) throw new Error(`--variant=${VARIANT}: base, perhop, memstate or s2`);
const RATE = Number(args.rate ?? 20_000);
const SECONDS = Number(args.seconds ?? 15);
const SCALE = Number(args.bytes ?? 1);
const FANOUT = Number(args.fanout ?? 16);
const MAX_PAYLOAD_MB = Number(args['max-payload'] ?? 1);
/**
 * Bytes per record each hop publishes, as a core subscription on kappa.flow.> saw them in
 * bench:pipeline (2026-12-06: tagged 745, joined 1 105; captured and enriched from its traffic table).
 */
const BYTES = { captured: 300 * SCALE, enriched: 600 * SCALE, tagged: 745 * SCALE, joined: 1105 * SCALE };
const HOPS = ['captured', 'enriched', 'tagged', 'joined'] as const;

const confDir = mkdtempSync(join(tmpdir(), 'kbp-nats-hops-'));
writeFileSync(join(confDir, 'nats.conf'), `max_payload: ${MAX_PAYLOAD_MB}MB\n`);
const nats = await startNatsServer({ args: ['-c', join(confDir, 'nats.conf')] });
const connections: NatsConnection[] = [];
const open = async () => {
  const c = await connect({ servers: nats.url, noAsyncTraces: true });
  connections.push(c);
  return c;
};
const admin = await open();
const jsm = await jetstreamManager(admin);
const streamOf = (hop: string) => (VARIANT === 'perhop' ? `KAPPA_FLOWS_${hop.toUpperCase()}` : 'KAPPA_FLOWS');
// KAPPA_FLOWS as Bus.ensureStreams makes it.
const streamConfig = { storage: StorageType.File, retention: RetentionPolicy.Workqueue, discard: DiscardPolicy.New, max_bytes: 1024 ** 3, max_age: nanos(3_600_000), duplicate_window: nanos(120_000), ...(VARIANT === 's2' ? { compression: StoreCompression.S2 } : {}) };
if (VARIANT === 'perhop') for (const hop of HOPS) await jsm.streams.add({ ...streamConfig, name: streamOf(hop), subjects: [`kappa.flow.${hop}.>`] });
else await jsm.streams.add({ ...streamConfig, name: 'KAPPA_FLOWS', subjects: ['kappa.flow.>'] });

// One payload, sliced: the bytes' content does not matter to an uncompressed store.
const payload = new Uint8Array(MAX_PAYLOAD_MB * 1024 * 1024).map((_, i) => (i * 31 + (i >> 7)) & 0xff);
let nextId = 0;
async function publish(js: JetStreamClient, subject: string, records: number, bytesPerRecord: number): Promise<void> {
  const h = headers();
  h.set('Records', String(records));
  await js.publish(subject, payload.subarray(0, Math.max(1, Math.round(records * bytesPerRecord))), { msgID: `m${nextId++}`, headers: h, timeout: 10_000 });
}
const recordsOf = (m: JsMsg) => Number(m.headers?.get('Records') ?? 0);

/** A durable pull consumer as RawConsumer makes it, handling up to maxInFlight messages at once. */
async function stage(durable: string, filter: string, maxInFlight: number, handle: (m: JsMsg, js: JetStreamClient) => Promise<void>): Promise<void> {
  const js = jetstream(await open());
  const stream = streamOf(filter.split('.')[2]!);
  await jsm.consumers.add(stream, { durable_name: durable, filter_subject: filter, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ack_wait: nanos(30_000), max_ack_pending: Math.max(maxInFlight * 4, 64), ...(VARIANT === 'memstate' ? { mem_storage: true } : {}) });
  const messages = await (await js.consumers.get(stream, durable)).consume({ max_messages: maxInFlight, expires: 2000, bind: true });
  consumers.push(messages);
  const inFlight = new Set<Promise<void>>();
  void (async () => {
    for await (const m of messages) {
      const task: Promise<void> = handle(m, js).then(() => m.ackAck().then(() => undefined), () => m.nak()).catch(() => undefined).finally(() => inFlight.delete(task));
      inFlight.add(task);
      if (inFlight.size >= maxInFlight) await Promise.race(inFlight);
    }
  })().catch(() => undefined);
}
const consumers: { stop(): void }[] = [];
let out = 0;
for (const node of ['a', 'b']) {
  await stage(`enricher-${node}`, `kappa.flow.captured.${node}`, 2, async (m, js) => {
    const per = Math.ceil(recordsOf(m) / FANOUT);
    await Promise.all(Array.from({ length: FANOUT }, (_, k) => publish(js, `kappa.flow.enriched.p${k}.${node}`, per, BYTES.enriched)));
  });
}
await stage('tagger', 'kappa.flow.enriched.>', 8, (m, js) => publish(js, `kappa.flow.tagged.${m.subject.split('.')[3]}`, recordsOf(m), BYTES.tagged));
for (let k = 0; k < FANOUT; k++) await stage(`joiner-p${k}`, `kappa.flow.tagged.p${k}`, 8, (m, js) => publish(js, `kappa.flow.joined.p${k}`, recordsOf(m), BYTES.joined));
await stage('exporter', 'kappa.flow.joined.>', 8, async (m) => void (out += recordsOf(m)));

// capture: one batch per node per second, split under the message limit as the bus splits.
const capture = jetstream(await open());
const perPart = Math.floor((MAX_PAYLOAD_MB * 1024 * 1024 - 4096) / BYTES.captured);
async function tick(): Promise<void> {
  await Promise.all(['a', 'b'].map(async (node) => {
    const parts: Promise<void>[] = [];
    for (let left = RATE / 2; left > 0; left -= perPart) parts.push(publish(capture, `kappa.flow.captured.${node}`, Math.min(perPart, left), BYTES.captured));
    await Promise.all(parts);
  }));
}
const sleepUntil = (t: number) => new Promise((r) => setTimeout(r, Math.max(0, t - Date.now())));
let failure: unknown;
try {
  for (let i = 0; i < 3; i++) await Promise.all([tick(), sleepUntil(Date.now() + 1000)]);
  const pid = nats.process.pid!;
  const cpuBefore = cpuSeconds(pid);
  const outBefore = out;
  const started = Date.now();
  for (let i = 0; i < SECONDS; i++) {
    await sleepUntil(started + i * 1000);
    await tick();
  }
  await sleepUntil(Date.now() + 1000);
  const cpu = cpuSeconds(pid) - cpuBefore;
  const elapsed = (Date.now() - started) / 1000;
  console.log(`${VARIANT} (bytes ×${SCALE}, fan-out ${FANOUT}, max_payload ${MAX_PAYLOAD_MB} MB) at ${RATE} records/s: nats-server ${((cpu * 1e6) / (RATE * SECONDS)).toFixed(2)} µs per record sent, ${((100 * cpu) / elapsed).toFixed(0)} % of a core; out ${((out - outBefore) / elapsed).toFixed(0)} records/s`);
  console.log(machineLine());
} catch (error) {
  failure = error;
} finally {
  for (const messages of consumers) messages.stop();
  for (const c of connections) await c.close().catch(() => undefined);
  await nats.stop();
  rmSync(confDir, { recursive: true, force: true });
}
if (failure) throw failure;
