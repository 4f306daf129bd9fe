// A rolling restart of every server under the cluster topology (three nats-servers with every
// stream R3, a Redis Cluster of 3 primaries and 3 replicas, two replicas each of k8s-tagger,
// joiner and exporter) while a node sends known conversations: each nats-server in turn, then
// each redis-server in turn, is stopped with SIGTERM and started again on its port and data, the
// next one only once the restarted server is back in its cluster (a current KAPPA_FLOWS replica;
// cluster_state:ok with every node connected). Truth: tcpdump on the node's link. Every
// conversation is exported exactly once over both exporters' files, packets and bytes equal
// tcpdump, and after each restart every conversation sent up to one round after it is exported
// within 15 s (a redis-server) or 20 s (a nats-server: its clients reconnect, pulls that lived on it
// are noticed after two missed heartbeats and publishes in flight time out, 5 s each, as in
// nats-leader.test.ts; 10.0-14.8 s measured at load ~14).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { run } from '@kappa/testing';
import { readPackets, startCapture, stopCapture } from '../src/ground-truth.js';
import { isScenarioRecord, metric, settled, startScenario, until } from '../src/pipeline.js';
import type { ExportedRecord, Scenario } from '../src/pipeline.js';
import { unexpectedExits } from '../src/services.js';

const PER_ROUND = 50;
const PER_SOCKET = 10;
const TAKEOVER_MS = 15_000;
const NATS_TAKEOVER_MS = 20_000;
const root = process.getuid?.() === 0;
if (!root && process.env['CI'] === 'true') throw new Error('the e2e tests need root (BPF, namespaces); CI must run them privileged');

type Exported = ExportedRecord & { id: string; bytes?: string };

describe.skipIf(!root)('a rolling restart of every server under the cluster topology', () => {
  let scenario: Scenario | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'kpe-cluster-rolling-'));

  beforeAll(async () => {
    scenario = await startScenario('clroll', 61, {
      natsCluster: 3,
      redisCluster: true,
      replicas: true,
      common: ['--stream-replicas=3'],
      capture: ['--interval=1s'],
      joiner: ['--interval=1s', '--join-external', '--lease-ttl=5s'],
    });
  }, 240_000);

  afterAll(async () => {
    await scenario?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  function exported(s: Scenario): Exported[] {
    const isFlood = isScenarioRecord(s);
    return s.jsonlFiles.flatMap((file) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Exported) : [])).filter(isFlood);
  }
  const conversations = (records: Exported[]) => new Set(records.map((r) => `${r.src.port} ${r.dst.port} ${r.startNs}`)).size;

  it('exports every conversation once with the bytes of tcpdump, each restart taken over within 15 s (20 s for a nats-server)', { timeout: 480_000 }, async () => {
    const s = scenario!;
    const p = s.pipeline;
    const nc = await connect({ servers: s.natsServers.map((n) => n.url), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    const jsm = await jetstreamManager(nc);
    const wire = await startCapture(s.pair.a.netns, s.pair.a.ifname, join(dir, 'link.pcap'));
    const takeovers: Record<string, number> = {};
    try {
      const before = s.datagramsSent();
      await s.sendRound(PER_ROUND, PER_SOCKET);
      await until('the first round exported', () => (conversations(exported(s)) >= PER_ROUND ? true : undefined), 90_000, p);

      const restartOne = async (label: string, act: () => Promise<void>, back: () => Promise<boolean>) => {
        await s.sendRound(PER_ROUND, PER_SOCKET);
        const at = Date.now();
        await act();
        await s.sendRound(PER_ROUND, PER_SOCKET);
        const sent = s.datagramsSent() - before;
        await until(`${label}: the ${sent} conversations sent so far exported`, () => (conversations(exported(s)) >= sent ? true : undefined), 90_000, p);
        takeovers[label] = Date.now() - at;
        await until(`${label}: back in its cluster`, async () => ((await back()) ? true : undefined), 60_000, p);
      };

      for (const [i, server] of s.natsServers.entries()) {
        await restartOne(`nats-server ${i}`, () => server.restart('SIGTERM'), async () => {
          const info = await jsm.streams.info('KAPPA_FLOWS').catch(() => undefined);
          const replicas = info?.cluster?.replicas ?? [];
          return info?.cluster?.leader !== undefined && replicas.length === 2 && replicas.every((r) => r.current && !r.offline);
        });
      }
      const clusterOk = (port: number) => {
        try {
          const info = run('redis-cli', ['-p', String(port), 'cluster', 'info']);
          const nodes = run('redis-cli', ['-p', String(port), 'cluster', 'nodes']);
          return info.includes('cluster_state:ok') && nodes.split('\n').filter((l) => / connected/.test(l) || /myself/.test(l)).length === 6 && !/fail/.test(nodes);
        } catch {
          return false;
        }
      };
      for (const [i, node] of s.redisNodes.entries()) {
        await restartOne(`redis-server ${i}`, () => node.restart('SIGTERM'), async () => clusterOk(node.port));
      }

      await new Promise((r) => setTimeout(r, 3000));
      const truth = s.datagramsSent() - before;
      await settled('the exporters to write every record', () => exported(s).length, 5000, 90_000, p);
      await stopCapture(wire);
      const records = exported(s);
      const ids = new Map<string, number>();
      for (const r of records) ids.set(r.id, (ids.get(r.id) ?? 0) + 1);
      const twice = [...ids].filter(([, n]) => n > 1);
      const packets = records.reduce((n, r) => n + Number(r.packets ?? 0), 0);
      const bytes = records.reduce((n, r) => n + Number(r.bytes ?? 0), 0);
      const onWire = readPackets(join(dir, 'link.pcap')).filter((pk) => pk.dst === s.silentPeer);
      const wireBytes = onWire.reduce((n, pk) => n + pk.ipBytes, 0);
      const lost = (await metric(p, 'capture', 'kappa_capture_records_dropped_total')) + (await metric(p, 'capture', 'kappa_capture_map_overflow_packets_total'));
      console.log(
        `rolling restart: takeover ${Object.entries(takeovers).map(([k, v]) => `${k} ${v} ms`).join(', ')}; truth ${truth} conversations; exported ${records.length} records (${conversations(records)} conversations, ${twice.length} ids twice), ${packets} packets / ${bytes} bytes vs tcpdump ${onWire.length} / ${wireBytes}`,
      );
      expect(twice).toEqual([]);
      expect(records.length).toBe(truth);
      expect(conversations(records)).toBe(truth);
      expect(packets).toBe(truth);
      expect(onWire.length).toBe(truth);
      expect(bytes).toBe(wireBytes);
      expect(lost).toBe(0);
      for (const [label, ms] of Object.entries(takeovers)) expect(ms, label).toBeLessThanOrEqual(label.startsWith('nats') ? NATS_TAKEOVER_MS : TAKEOVER_MS);
      for (const service of [...Object.values(p.services), ...Object.values(s.replicas)]) expect(unexpectedExits(service), service.name).toEqual([]);
    } finally {
      if (wire.process.exitCode === null && wire.process.signalCode === null) await stopCapture(wire);
      await nc.close();
    }
  });
});
