// Redis gone for a minute (`npm run test:outage`: 150 s) while a node keeps
// sending: the joiner naks its input, which waits in JetStream rather than in the joiner's memory;
// once redis-server is back every conversation is exported exactly once and nothing is counted lost.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import type { JetStreamManager } from '@nats-io/jetstream';
import { DEFAULT_PARTITIONS } from '@kappa/contracts';
import { connect } from '@nats-io/transport-node';
import { SERVICE_MEMORY_LIMIT_BYTES, exportedRecords, heapAfterFullGcs, isScenarioRecord, logLineCount, metric, peakRssBytes, settled, startScenario, until } from '../src/pipeline.js';
import type { Scenario } from '../src/pipeline.js';
import { kappa } from '../src/services.js';

/** 60 s by default: beyond the bus's 30 s ack wait and the joiner's 1 s retry and reconnect backoff. */
const OUTAGE_MS = parseOutage(process.env['KAPPA_TEST_REDIS_OUTAGE'] ?? '60s');
const PER_ROUND = 200;
const PER_SOCKET = 10;
/**
 * The joiner's V8 heap cap here: input held in its memory for the whole outage (instead of
 * waiting in JetStream) ends it with an out-of-memory crash. Its RSS, garbage not yet collected
 * included, stays under the container limit; its live heap after full GCs stays under
 * JOINER_LIVE_HEAP_MB (~25 MB when idle).
 */
const JOINER_HEAP_MIB = 128;
const JOINER_LIVE_HEAP_MB = 64;
const root = process.getuid?.() === 0;
if (!root && process.env['CI'] === 'true') throw new Error('the e2e tests need root (BPF, namespaces); CI must run them privileged');

function parseOutage(text: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  if (!m) throw new Error(`KAPPA_TEST_REDIS_OUTAGE: expected e.g. 60s or 3m, got ${text}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
}

/**
 * Batches waiting for the joiner or held by it: summed over its partitions' consumers
 * (joiner-p<k>, one per partition of kappa.flow.tagged.p<k>).
 */
async function joinerBacklog(jsm: JetStreamManager): Promise<number> {
  let backlog = 0;
  for (let k = 0; k < DEFAULT_PARTITIONS; k++) {
    const info = await jsm.consumers.info('KAPPA_FLOWS', `joiner-p${k}`).catch(() => undefined);
    if (info) backlog += info.num_pending + info.num_ack_pending;
  }
  return backlog;
}

function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) * 1024;
}

describe.skipIf(!root)(`Redis down for ${OUTAGE_MS / 1000} s`, () => {
  let scenario: Scenario | undefined;

  beforeAll(async () => {
    scenario = await startScenario('redis', 59, {
      capture: ['--interval=1s'],
      // Every record waits in Redis for a peer (none comes: the sweeper releases it), so each one
      // goes through the store the outage takes away.
      joiner: ['--interval=1s', '--join-external'],
      heapMiB: { joiner: JOINER_HEAP_MIB },
      nodeArgs: { joiner: ['--trace-gc'] },
    });
  }, 120_000);

  afterAll(async () => {
    await scenario?.destroy();
  });

  it('exports every conversation once after Redis is back, with nothing lost and the backlog in JetStream', { timeout: OUTAGE_MS + 150_000 }, async () => {
    const { pipeline: p, nats, redis } = scenario!;
    const nc = await connect({ servers: nats.url });
    const jsm = await jetstreamManager(nc);
    try {
      // Truth: datagrams that left namespace a, one conversation each, a round every second.
      const before = scenario!.datagramsSent();
      let sending = true;
      let rounds = 0;
      const traffic = (async () => {
        while (sending) {
          await scenario!.sendRound(PER_ROUND, PER_SOCKET);
          rounds++;
          await new Promise((r) => setTimeout(r, 1000));
        }
      })();

      await new Promise((r) => setTimeout(r, 5000));
      const joinerPid = p.services.joiner.child.pid!;
      const rssBefore = rssBytes(joinerPid);
      await redis.process.stop('SIGTERM');
      const roundsBefore = rounds;
      const gcLogFrom = logLineCount(p.services.joiner);
      let peakBacklog = 0;
      let peakRss = rssBefore;
      const outageEnd = Date.now() + OUTAGE_MS;
      while (Date.now() < outageEnd) {
        peakBacklog = Math.max(peakBacklog, await joinerBacklog(jsm));
        peakRss = Math.max(peakRss, rssBytes(joinerPid));
        await new Promise((r) => setTimeout(r, 1000));
      }
      const roundsDuringOutage = rounds - roundsBefore;
      const liveHeaps = heapAfterFullGcs(p.services.joiner, gcLogFrom);
      const redisErrors = await metric(p, 'joiner', 'kappa_joiner_redis_errors_total');
      await redis.process.start();
      await until('the joiner to reach Redis again', async () => ((await metric(p, 'joiner', 'kappa_joiner_redis_up')) === 1 ? true : undefined), 30_000, p);
      await new Promise((r) => setTimeout(r, 5000));
      sending = false;
      await traffic;
      const truth = scenario!.datagramsSent() - before;

      const isFlood = isScenarioRecord(scenario!);
      await until('the joiner to catch up', async () => ((await joinerBacklog(jsm)) === 0 ? true : undefined), 60_000, p);
      // On a loaded machine the last records may still wait in the joiner (for a peer that never
      // comes, until its sweep) longer than the 5 s quiet of `settled`: wait for the truth first
      // (a real loss still fails below, with the count), then for the count to stay put.
      await until('every conversation to be exported', () => (exportedRecords(p).filter(isFlood).length >= truth ? true : undefined), 120_000, p).catch(() => undefined);
      const exported = await settled('the exporter to write every record', () => exportedRecords(p).filter(isFlood).length, 5000, 90_000, p);
      const records = exportedRecords(p).filter(isFlood);
      const packets = records.reduce((n, r) => n + Number(r.packets ?? 0), 0);
      const distinct = new Set(records.map((r) => `${r.src.port} ${r.dst.port} ${r.startNs}`)).size;
      const lost = await metric(p, 'capture', 'kappa_capture_records_dropped_total') + await metric(p, 'capture', 'kappa_capture_map_overflow_packets_total');
      const status = await kappa(['status', `--nats-url=${nats.url}`, '--wait=2500ms']);
      const statusLost = status.stdout.split('\n').filter((l) => /^(capture|process-enricher|k8s-tagger|joiner|exporter) /.test(l)).map((l) => Number(l.trim().split(/\s+/).at(-2)));
      console.log(
        `redis outage ${OUTAGE_MS / 1000} s: truth ${truth} conversations; exported ${exported} records (${distinct} distinct, ${packets} packets); lost ${lost}; ` +
          `joiner: ${redisErrors} Redis errors, JetStream backlog peak ${peakBacklog} batches (${roundsDuringOutage} rounds sent during the outage), live heap after ${liveHeaps.length} full GCs during the outage max ${Math.max(0, ...liveHeaps)} MB, RSS ${Math.round(rssBefore / 2 ** 20)} → peak ${Math.round(peakRss / 2 ** 20)} MiB during the outage, VmHWM ${Math.round(peakRssBytes(p.services.joiner) / 2 ** 20)} MiB`,
      );

      expect(redisErrors).toBeGreaterThan(0);
      expect(exported).toBe(truth);
      expect(distinct).toBe(truth);
      expect(packets).toBe(truth);
      expect(lost).toBe(0);
      expect(statusLost).toHaveLength(5);
      expect(statusLost.every((n) => n === 0)).toBe(true);
      // Never crashed (an OOM would have), so the backlog waited in JetStream; see JOINER_HEAP_MIB.
      expect(p.services.joiner.child.exitCode).toBeNull();
      expect(p.services.joiner.child.signalCode).toBeNull();
      // Each round is one or two batches; the last ones may still be on their way to the joiner.
      expect(peakBacklog).toBeGreaterThanOrEqual(roundsDuringOutage - 3);
      expect(Math.max(0, ...liveHeaps)).toBeLessThan(JOINER_LIVE_HEAP_MB);
      for (const [name, s] of Object.entries(p.services)) expect(peakRssBytes(s), name).toBeLessThan(SERVICE_MEMORY_LIMIT_BYTES);
    } finally {
      await nc.close();
    }
  });
});
