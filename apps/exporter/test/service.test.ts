// The exporter as a real process on a real nats-server: every joined batch reaches every enabled
// sink (JSON Lines with rotation, IPFIX to nfcapd, Prometheus with its series cap, heartbeats),
// and a sink that fails gets the batch again without the others writing it twice.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import type { FlowRecord, StageStatus } from '@kappa/contracts';
import { freePort } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { expectDecoded, nfdumpFlows, removeDir, startNfcapd } from './collectors.js';
import { buildAndStartBus, metricSum, startExporterProcess, until } from './exporter-process.js';
import type { ExporterProcess } from './exporter-process.js';
import { T0, knownBatch, knownRecord } from './fixtures.js';
import { newFlowBatch } from '@kappa/contracts';

const appRoot = join(import.meta.dirname, '..');
let nats: TestServer;
let bus: Bus;
let dir: string;
const children: ChildProcess[] = [];

async function startExporter(args: string[]): Promise<ExporterProcess> {
  return startExporterProcess(nats.url, args, children);
}

/** The samples of a Prometheus text exposition: name, labels, value. */
function parseMetrics(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  return text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((line) => {
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) throw new Error(`not a Prometheus sample: ${line}`);
      const labels: Record<string, string> = {};
      for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
      return { name: m[1]!, labels, value: Number(m[3]) };
    });
}

function jsonlLines(path: string): string[] {
  const files = readdirSync(dir).filter((f) => f.startsWith(path.split('/').pop()!));
  return files.flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter((l) => l !== ''));
}

beforeAll(async () => {
  ({ nats, bus } = await buildAndStartBus());
});
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});
afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

/** knownRecord(i) (fixtures.ts) as canonical protobuf JSON, spelled out field by field. */
function knownRecordJson(i: number): Record<string, unknown> {
  const v6 = i % 2 === 1;
  const start = T0 + BigInt(i) * 1_000_000_000n;
  const retransmits = i % 3;
  return {
    id: `rec-${i}`,
    node: `node-${i % 3}`,
    vantage: i % 4 < 2 ? 'VANTAGE_SRC' : 'VANTAGE_DST',
    startNs: String(start),
    endNs: String(start + 10_000_000_000n),
    protocol: i % 5 === 0 ? 'IP_PROTOCOL_UDP' : 'IP_PROTOCOL_TCP',
    src: {
      ip: v6 ? `2001:db8::${(i + 1).toString(16)}` : `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}`,
      port: 30000 + i,
      process: { pid: 1000 + i, name: `client-${i}`, cmdline: `/usr/bin/client --id ${i}` },
      ...(i % 3 === 1 ? { peerDnsName: `server-1.backend.svc.cluster.local` } : {}),
      kube: { objectName: `client-pod-${i % 7}`, objectNamespace: `ns-${i % 2}`, objectType: 'pod', workloadName: `client-${i % 7}`, workloadNamespace: `ns-${i % 2}`, workloadKind: 'Deployment' },
    },
    dst: {
      ip: v6 ? `fd00::${(i + 1).toString(16)}` : `192.168.${Math.floor(i / 250)}.${(i % 250) + 1}`,
      port: 8000 + (i % 100),
      process: { pid: 2000 + i, name: `server-${i % 3}` },
      kube: { objectName: `server-pod-${i % 3}`, objectNamespace: 'backend', objectType: 'pod', workloadName: `server-${i % 3}`, workloadNamespace: 'backend', workloadKind: 'StatefulSet' },
    },
    bytes: String(1000 + i * 37),
    packets: String(3 + i),
    reverseBytes: String(500 + i * 11),
    reversePackets: String(2 + i),
    tcp: { srttUs: 100 + i, ...(retransmits ? { retransmits } : {}), flags: 0x1b },
    appLatency: { count: '2', sumUs: '3000', maxUs: '2000' },
    ...(i % 3 !== 0 ? { joined: true } : {}),
    clusterId: 7,
    observation: 'socket',
    ...(i % 4 === 3 ? { drops: { packets: String(1 + (i % 5)), bytes: String(60 * (1 + (i % 5))), reason: i % 8 === 3 ? 'NETFILTER_DROP' : 'NO_SOCKET', reasonPackets: String(1 + (i % 5)) } } : {}),
    ...(i % 5 === 0
      ? {
          dns: {
            queryName: `server-${i % 3}.backend.svc.cluster.local`,
            queryType: 1,
            ...(i % 10 === 0 ? { rcode: 3 } : {}),
            queries: '2',
            responses: '2',
            latencyCount: '2',
            latencySumUs: '900',
            latencyMaxUs: '600',
            ...(i % 10 === 0 ? { nxdomain: '1', failed: '1' } : {}),
          },
        }
      : {}),
  };
}

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
    // The oracle is written out by hand from proto3's JSON mapping (lowerCamelCase names, 64-bit
    // integers as strings, enum names, default values left out), not by the sink's own converter.
    const byId = (a: unknown, b: unknown) => String((a as { id: string }).id).localeCompare(String((b as { id: string }).id));
    expect(lines.map((l) => JSON.parse(l) as unknown).sort(byId)).toEqual(Array.from({ length: 300 }, (_, i) => knownRecordJson(i)).sort(byId));
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
    // No DNS name becomes a label.
    expect(metrics).not.toMatch(/backend\.svc\.cluster\.local/);

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

  it('scrapes dropped packets and bytes by series and by kernel reason, and DNS queries, responses by rcode and latency, without a name label', async () => {
    dir = mkdtempSync(join(tmpdir(), 'kx-exporter-'));
    const exporter = await startExporter(['--prometheus-max-series=1000', '--instance=exporter-prom']);
    // 100 known records (drops with NETFILTER_DROP / NO_SOCKET, DNS with NXDOMAIN) and three whose
    // reason covers only part of their drops and whose failures have several rcodes.
    const crafted = [
      knownRecord(1000, { drops: { packets: 10n, bytes: 640n, reason: 'NETFILTER_DROP', reasonPackets: 7n } }),
      knownRecord(1001, { dns: { queryName: 'a.example', queryType: 28, rcode: 2, queries: 6n, responses: 5n, latencyCount: 4n, latencySumUs: 40_000n, latencyMaxUs: 20_000n, nxdomain: 1n, failed: 3n } }),
      knownRecord(1002, { drops: { packets: 2n, bytes: 120n } }),
    ];
    const records = [...knownBatch('p1', 0, 100).records, ...crafted];
    await bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: 'prom-dns-drops', producer: 'test', records }));
    await until(async () => metricSum(await exporter.metrics(), 'kappa_exporter_records_total', 'sink="prometheus"') === records.length, 30_000, 'records counted');
    const samples = parseMetrics(await exporter.metrics());
    expect(await exporter.stop()).toBe(0);

    // The expected values, from the records as objects, per series (src/dst workload, protocol, vantage).
    const seriesOf = (r: FlowRecord) => `${r.src!.kube!.workloadNamespace}/${r.src!.kube!.workloadName}>${r.dst!.kube!.workloadNamespace}/${r.dst!.kube!.workloadName}/${r.protocol === 6 ? 'tcp' : 'udp'}/${r.vantage === 1 ? 'src' : 'dst'}`;
    const seriesOfSample = (l: Record<string, string>) => `${l.src_namespace}/${l.src_workload}>${l.dst_namespace}/${l.dst_workload}/${l.protocol}/${l.vantage}`;
    const want = new Map<string, number>();
    const add = (key: string, v: bigint | number) => want.set(key, (want.get(key) ?? 0) + Number(v));
    const rcodes = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN'];
    for (const r of records) {
      const series = seriesOf(r);
      add(`dropped_packets ${series}`, r.drops?.packets ?? 0n);
      add(`dropped_bytes ${series}`, r.drops?.bytes ?? 0n);
      if (r.drops) {
        const named = r.drops.reason ? r.drops.reasonPackets : 0n;
        if (named > 0n) add(`reason ${series} ${r.drops.reason}`, named);
        if (r.drops.packets > named) add(`reason ${series} other`, r.drops.packets - named);
      }
      add(`dns_queries ${series}`, r.dns?.queries ?? 0n);
      if (r.dns) {
        const d = r.dns;
        if (d.responses > d.failed) add(`rcode ${series} NOERROR`, d.responses - d.failed);
        if (d.nxdomain > 0n) add(`rcode ${series} NXDOMAIN`, d.nxdomain);
        if (d.failed > d.nxdomain) add(`rcode ${series} ${d.rcode === 3 ? 'other' : rcodes[d.rcode]}`, d.failed - d.nxdomain);
        add(`latency_sum ${series}`, Number(d.latencySumUs) / 1e6);
        add(`latency_count ${series}`, d.latencyCount);
        // One bucket per record: the exchanges' mean (each record's exchanges are alike here).
        const mean = Number(d.latencySumUs) / 1e6 / Number(d.latencyCount);
        for (const le of [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]) if (mean <= le) add(`latency_le ${series} ${le}`, d.latencyCount);
      }
    }
    const got = new Map<string, number>();
    const put = (key: string, v: number) => got.set(key, (got.get(key) ?? 0) + v);
    for (const { name, labels, value } of samples) {
      const series = seriesOfSample(labels);
      if (name === 'kappa_flow_dropped_packets_total') put(`dropped_packets ${series}`, value);
      if (name === 'kappa_flow_dropped_bytes_total') put(`dropped_bytes ${series}`, value);
      if (name === 'kappa_flow_drop_reason_packets_total') put(`reason ${series} ${labels.reason}`, value);
      if (name === 'kappa_flow_dns_queries_total') put(`dns_queries ${series}`, value);
      if (name === 'kappa_flow_dns_responses_total') put(`rcode ${series} ${labels.rcode}`, value);
      if (name === 'kappa_flow_dns_latency_seconds_sum') put(`latency_sum ${series}`, value);
      if (name === 'kappa_flow_dns_latency_seconds_count') put(`latency_count ${series}`, value);
      if (name === 'kappa_flow_dns_latency_seconds_bucket' && labels.le !== '+Inf') put(`latency_le ${series} ${labels.le}`, value);
    }
    // Zero-valued counters are fine on the scrape (a series without drops shows 0); compare the rest.
    const nonZero = (m: Map<string, number>) => Object.fromEntries([...m].filter(([, v]) => v !== 0).map(([k, v]) => [k, Math.round(v * 1e9) / 1e9]));
    expect(nonZero(got)).toEqual(nonZero(want));
    expect(Object.keys(nonZero(want)).filter((k) => k.startsWith('reason')).length).toBeGreaterThan(3);
    // The partial reason, the rcode beyond NXDOMAIN and a reason-less drop are all there.
    const sum = (name: string, label: string, value: string) => samples.filter((x) => x.name === name && x.labels[label] === value).reduce((n, x) => n + x.value, 0);
    expect(sum('kappa_flow_drop_reason_packets_total', 'reason', 'other')).toBe(3 + 2);
    expect(sum('kappa_flow_dns_responses_total', 'rcode', 'SERVFAIL')).toBe(2);
    // Bounded labels only: no DNS name, no label beyond the series', reason, rcode and le.
    const labelNames = new Set(samples.flatMap((x) => (x.name.startsWith('kappa_flow_') ? Object.keys(x.labels) : [])));
    expect([...labelNames].sort()).toEqual(['dst_namespace', 'dst_workload', 'le', 'protocol', 'rcode', 'reason', 'service', 'src_namespace', 'src_workload', 'vantage']);
    expect(samples.some((x) => Object.values(x.labels).some((v) => v.includes('example') || v.includes('svc.cluster.local')))).toBe(false);
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
