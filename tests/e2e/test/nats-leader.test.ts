// The bus on a cluster: three nats-servers with every stream R3 (--stream-replicas=3, as kappa
// streams makes them on Kubernetes and under npm run up -- --cluster), a node sending known
// one-datagram conversations, and the nats-server that leads KAPPA_FLOWS SIGKILLed mid-traffic.
// Every conversation is exported exactly once, its packets and bytes equal what tcpdump saw on the
// node's link, nothing is counted lost, the stream has a new leader within 15 s of the kill, and the
// pipeline exports conversations sent after the kill within 30 s of it (see the comment at the assertion).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { natsServerName } from '../src/cluster-checks.js';
import { readPackets, startCapture, stopCapture } from '../src/ground-truth.js';
import { CLUSTER_LOCK_WAIT_MS } from '@kappa/testing';
import { exportedRecords, isScenarioRecord, metric, settled, startScenario, until } from '../src/pipeline.js';
import type { Scenario } from '../src/pipeline.js';

const PER_ROUND = 100;
const PER_SOCKET = 10;
const root = process.getuid?.() === 0;
if (!root && process.env['CI'] === 'true') throw new Error('the e2e tests need root (BPF, namespaces); CI must run them privileged');

describe.skipIf(!root)('SIGKILL of the KAPPA_FLOWS leader on a three-server NATS cluster', () => {
  let scenario: Scenario | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'kpe-nats-leader-'));

  beforeAll(async () => {
    scenario = await startScenario('natsha', 57, {
      natsCluster: 3,
      common: ['--stream-replicas=3'],
      capture: ['--interval=1s'],
      joiner: ['--interval=1s', '--join-external'],
    });
  }, 180_000 + CLUSTER_LOCK_WAIT_MS);

  afterAll(async () => {
    await scenario?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('exports every conversation once, bytes and packets equal to tcpdump; a new leader within 15 s, exporting again within 30 s', { timeout: 300_000 }, async () => {
    const s = scenario!;
    const p = s.pipeline;
    const nc = await connect({ servers: s.natsServers.map((n) => n.url), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    const jsm = await jetstreamManager(nc);
    const wire = await startCapture(s.pair.a.netns, s.pair.a.ifname, join(dir, 'link.pcap'));
    try {
      const flows = await jsm.streams.info('KAPPA_FLOWS');
      expect(flows.config.num_replicas).toBe(3);
      const isFlood = isScenarioRecord(s);
      const before = s.datagramsSent();
      let sending = true;
      const traffic = (async () => {
        while (sending) {
          await s.sendRound(PER_ROUND, PER_SOCKET);
          await new Promise((r) => setTimeout(r, 500));
        }
      })();
      // Traffic through the whole pipeline first.
      await until('records exported before the kill', () => (exportedRecords(p).filter(isFlood).length >= 3 * PER_ROUND ? true : undefined), 60_000, p);

      const leader = (await jsm.streams.info('KAPPA_FLOWS')).cluster?.leader ?? '';
      const victim = s.natsServers.find((n) => natsServerName(n.process.log) === leader);
      expect(victim, `leader ${leader}`).toBeDefined();
      const sentAtKill = s.datagramsSent() - before;
      const killedAt = Date.now();
      await victim!.process.stop('SIGKILL');
      // Takeover: another server leads KAPPA_FLOWS (the stream takes publishes again) ...
      const newLeader = await until(
        'a new KAPPA_FLOWS leader',
        async () => {
          const now = await jsm.streams.info('KAPPA_FLOWS').catch(() => undefined);
          return now?.cluster?.leader && now.cluster.leader !== leader ? now.cluster.leader : undefined;
        },
        60_000,
        p,
      );
      const takeoverMs = Date.now() - killedAt;
      // ... and the pipeline exports conversations sent after the kill (its own latency included:
      // capture's interval, five stages, publishes that were in flight to the dead leader time out).
      await until('records of after the kill exported', () => (exportedRecords(p).filter(isFlood).length > sentAtKill ? true : undefined), 60_000, p);
      const resumedMs = Date.now() - killedAt;

      await new Promise((r) => setTimeout(r, 5000));
      sending = false;
      await traffic;
      const truth = s.datagramsSent() - before;
      // KAPPA_FLOWS is a work queue: empty once every stage acked every batch (a batch delivered
      // before the kill whose ack was lost comes again after the ack wait, 30 s).
      await until('KAPPA_FLOWS to drain', async () => ((await jsm.streams.info('KAPPA_FLOWS')).state.messages === 0 ? true : undefined), 120_000, p);
      const exported = await settled('the exporter to write every record', () => exportedRecords(p).filter(isFlood).length, 5000, 90_000, p);
      await stopCapture(wire);
      const records = exportedRecords(p).filter(isFlood);
      const packets = records.reduce((n, r) => n + Number(r.packets ?? 0), 0);
      const bytes = records.reduce((n, r) => n + Number((r as { bytes?: string }).bytes ?? 0), 0);
      const distinct = new Set(records.map((r) => `${r.src.port} ${r.dst.port} ${r.startNs}`)).size;
      const onWire = readPackets(join(dir, 'link.pcap')).filter((pk) => pk.dst === s.silentPeer);
      const wireBytes = onWire.reduce((n, pk) => n + pk.ipBytes, 0);
      const lost = (await metric(p, 'capture', 'kappa_capture_records_dropped_total')) + (await metric(p, 'capture', 'kappa_capture_map_overflow_packets_total'));
      console.log(
        `NATS leader ${leader} SIGKILLed: new leader ${newLeader} after ${takeoverMs} ms; exporting again after ${resumedMs} ms; truth ${truth} conversations (${sentAtKill} before the kill); exported ${exported} (${distinct} distinct), ${packets} packets / ${bytes} bytes vs tcpdump ${onWire.length} / ${wireBytes}`,
      );
      expect(newLeader).not.toBe(leader);
      expect(exported).toBe(truth);
      expect(distinct).toBe(truth);
      expect(packets).toBe(truth);
      expect(onWire.length).toBe(truth);
      expect(bytes).toBe(wireBytes);
      expect(lost).toBe(0);
      expect(takeoverMs).toBeLessThanOrEqual(15_000);
      // End to end: the election (4-9 s), then the stages' publishes in flight to the dead leader
      // time out (PUBLISH_TIMEOUT_MS, 2 s since 2026-12-06) and are retried, and their consumers' pulls, which died
      // with the leader, are noticed after two missed idle heartbeats (PULL_EXPIRES_MS 2 s / 2) and
      // pulled again; plus the pipeline's own latency (capture's 1 s interval, five hops). Measured
      // at load 22-30: 30 s pull expiry + 10 s publish timeout (the defaults before) 9.5-48 s; 5 s pull
      // expiry + 10 s publish timeout 11.0, 16.7, 16.7 s; both at 5 s 9.7, 13.6 s; 20.6 s with two
      // CI runs at once (load ~30). Pulls expire every 2 s since 2026-12-05 (docs/architecture.md). The takeover (the 15 s) is asserted above; exporting
      // again end to end is bounded at 30 s so that a loaded machine does not fail it (the figure
      // is printed above).
      expect(resumedMs).toBeLessThanOrEqual(30_000);
      for (const [name, service] of Object.entries(p.services)) expect(service.child.exitCode, name).toBeNull();
    } finally {
      if (wire.process.exitCode === null && wire.process.signalCode === null) await stopCapture(wire);
      await nc.close();
    }
  });
});
