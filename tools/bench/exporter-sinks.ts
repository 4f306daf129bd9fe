// Exporter cost per sink, in process: CPU µs per record and records/s that each sink (JSON Lines,
// IPFIX over UDP to a real nfcapd, IPFIX over TCP, Prometheus, Observer) and all of them together
// take, against a baseline (checking and indexing the received FlowBatch: what every delivery
// costs before any sink) and against what the JSON Lines sink did before it wrote from bytes
// (protobuf-es decode + toJson + JSON.stringify). Rounds alternate between cases, so machine
// noise hits all alike; CPU time (process.cpuUsage) is what load inflates least.
// Run: npm run bench:exporter-sinks [-- --batches-per-round 5] [--rounds 7] [--only JSON,IPFIX] [--write]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { FlowBatchView, IpProtocol, Vantage, decodeFlowBatch, encodeFlowBatch, flowRecordToJson, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, ServerProcess } from '@kappa/testing';
import { SinkDispatcher } from '../../apps/exporter/src/dispatch.js';
import { FlowRing } from '../../apps/exporter/src/observer/ring.js';
import { IpfixSink } from '../../apps/exporter/src/sinks/ipfix.js';
import { JsonlSink } from '../../apps/exporter/src/sinks/jsonl.js';
import { ObserverSink } from '../../apps/exporter/src/sinks/observer.js';
import { PrometheusSink } from '../../apps/exporter/src/sinks/prometheus.js';
import type { ExportBatch, FlowSink } from '../../apps/exporter/src/sinks/sink.js';
import { median } from './lib/processes.js';
import { machineLine, table, writeSection } from './lib/report.mjs';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const BATCH = 1000;
const batchesPerRound = arg('batches-per-round', 5);
const rounds = arg('rounds', 7);

/** Joined records as the exporter sees them: both ends tagged, 40 workloads, 2 namespaces. */
function batch(n: number): FlowBatch {
  return newFlowBatch({
    batchId: `bench-${n}`,
    producer: 'joiner-0',
    records: Array.from({ length: BATCH }, (_, i) =>
      newFlowRecord({
        id: `node-a/${n}/${i}`,
        node: `node-${i % 3}`,
        vantage: i % 2 ? Vantage.SRC : Vantage.DST,
        startNs: 1_764_000_000_000_000_000n + BigInt(i),
        endNs: 1_764_000_010_000_000_000n,
        protocol: i % 10 ? IpProtocol.TCP : IpProtocol.UDP,
        src: {
          ip: `10.1.${i >> 8}.${i & 255}`,
          port: 30000 + i,
          process: { pid: 1000 + i, name: 'nginx', cmdline: 'nginx: worker process', containerId: 'c'.repeat(64), containerName: 'web' },
          kube: { node: 'node-a', objectName: `web-${i % 50}`, objectNamespace: 'shop', objectType: 'pod', workloadName: `web-${i % 20}`, workloadNamespace: 'shop', workloadKind: 'Deployment', labels: { app: 'web' } },
        },
        dst: {
          ip: '10.2.0.7',
          port: 5432,
          process: { pid: 77, name: 'postgres', cmdline: 'postgres: shop shop 10.1.0.1(30000) idle' },
          kube: { objectName: 'db-0', objectNamespace: 'data', objectType: 'pod', workloadName: `db-${i % 2}`, workloadNamespace: 'data', workloadKind: 'StatefulSet' },
        },
        bytes: 123456n,
        packets: 321n,
        reverseBytes: 654321n,
        reversePackets: 123n,
        tcp: { srttUs: 250, minRttUs: 100, retransmits: 1, flags: 0x1b },
        appLatency: { count: 3n, sumUs: 4500n, maxUs: 2000n },
        joined: true,
        clusterId: 1,
        observation: 'socket',
      }),
    ),
  });
}

const encoded = Array.from({ length: batchesPerRound }, (_, n) => encodeFlowBatch(batch(n)));
const views = encoded.map((bytes) => new FlowBatchView().parse(bytes));
const exportBatches: ExportBatch[] = views.map((view) => ({ view, redelivered: false }));
const logger = createLogger('bench', 'silent');
const dir = mkdtempSync(join(tmpdir(), 'kx-bench-'));

// Real receivers: nfcapd for UDP, a discarding TCP server in its own process for TCP.
const udpPort = await freePort();
const nfcapd = new ServerProcess({ command: 'nfcapd', args: ['-p', String(udpPort), '-b', '127.0.0.1', '-w', dir, '-t', '3600', '-B', String(8 * 1024 * 1024)], readyPattern: /Startup/ });
await nfcapd.start();
const tcpPort = await freePort();
const discard = spawn(process.execPath, ['-e', `require('net').createServer((s) => s.resume()).listen(${tcpPort}, '127.0.0.1', () => console.log('ready'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise<void>((resolve) => discard.stdout.once('data', () => resolve()));

const ipfix = (url: string) =>
  new IpfixSink({ collector: new URL(url), enterpriseNumber: 32473, templateRefreshMs: 30_000, udpMaxMessageBytes: 1452, maxStringBytes: 1024, logger, registry: createRegistry('bench') });
const ipfixUdp = ipfix(`udp://127.0.0.1:${udpPort}`);
const ipfixTcp = ipfix(`tcp://127.0.0.1:${tcpPort}`);
await ipfixUdp.start();
await ipfixTcp.start();
const jsonl = new JsonlSink({ path: join(dir, 'flows.jsonl'), maxBytes: 2 ** 40, keep: 1 });
await jsonl.start();
// What the JSON Lines sink did before: decode the batch, toJson + JSON.stringify each record.
const before = await open(join(dir, 'before.jsonl'), 'a');
const prometheus = new PrometheusSink({ registry: createRegistry('bench'), maxSeries: 10_000 });
const observer = new ObserverSink(new FlowRing(100_000, 600_000_000_000n));
const allRegistry = createRegistry('bench-all');
const all = new SinkDispatcher({
  sinks: [
    new JsonlSink({ path: join(dir, 'all.jsonl'), maxBytes: 2 ** 40, keep: 1 }),
    ipfix(`udp://127.0.0.1:${udpPort}`),
    new PrometheusSink({ registry: allRegistry, maxSeries: 10_000 }),
    new ObserverSink(new FlowRing(100_000, 600_000_000_000n)),
  ],
  registry: allRegistry,
  // The same batches every round: nothing to skip as a redelivery.
  rememberBatches: 0,
});
for (const s of all.sinks) await (s as FlowSink & { start?: () => Promise<void> }).start?.();

const cases: Record<string, () => Promise<void>> = {
  'baseline: check and index the FlowBatch (FlowBatchView.parse)': async () => {
    for (const bytes of encoded) new FlowBatchView().parse(bytes);
  },
  'JSON Lines (file)': async () => {
    for (const b of exportBatches) await jsonl.write(b);
  },
  'JSON Lines before: decode + toJson + JSON.stringify (file)': async () => {
    for (const bytes of encoded) {
      let text = '';
      for (const record of decodeFlowBatch(bytes).records) text += `${JSON.stringify(flowRecordToJson(record))}\n`;
      await before.write(Buffer.from(text, 'utf8'));
    }
  },
  'IPFIX UDP → nfcapd': async () => {
    for (const b of exportBatches) await ipfixUdp.write(b);
  },
  'IPFIX TCP': async () => {
    for (const b of exportBatches) await ipfixTcp.write(b);
  },
  Prometheus: async () => {
    for (const b of exportBatches) await prometheus.write(b);
  },
  'Observer (ring of bytes)': async () => {
    for (const b of exportBatches) await observer.write(b);
  },
  'all four (dispatcher)': async () => {
    for (const b of exportBatches) await all.dispatch(b);
  },
};

interface Sample {
  ms: number;
  cpuUs: number;
}
// --only a,b: only the cases whose names contain one of these words (and the baseline).
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt > 0 ? (process.argv[onlyAt + 1] ?? '').split(',') : undefined;
for (const name of Object.keys(cases)) if (only && !name.startsWith('baseline') && !only.some((w) => name.includes(w))) delete cases[name];
const samples = new Map<string, Sample[]>(Object.keys(cases).map((k) => [k, []]));
for (const run of Object.values(cases)) await run(); // warm-up
let udpRecords = batchesPerRound * BATCH * 2; // warm-up: UDP sink + the dispatcher's UDP sink
const loads: number[] = [];
for (let r = 0; r < rounds; r++) {
  for (const [name, run] of Object.entries(cases)) {
    const start = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    await run();
    const used = process.cpuUsage(cpu);
    samples.get(name)!.push({ ms: Number(process.hrtime.bigint() - start) / 1e6, cpuUs: used.user + used.system });
    if (name.startsWith('IPFIX UDP') || name.startsWith('all')) udpRecords += batchesPerRound * BATCH;
  }
  loads.push(loadavg()[0]!);
}

await ipfixUdp.close();
await ipfixTcp.close();
await jsonl.close();
await before.close();
await all.close();
await new Promise((r) => setTimeout(r, 1000));
await nfcapd.stop();
const flows = /Flows: (\d+)/.exec(nfcapd.log)?.[1];
discard.kill();
rmSync(dir, { recursive: true, force: true });

const records = batchesPerRound * BATCH;
const rows = [...samples].map(([name, xs]) => {
  const ms = median(xs.map((x) => x.ms));
  return [name, (median(xs.map((x) => x.cpuUs)) / records).toFixed(2), Math.round(records / (ms / 1000)).toLocaleString('en-US')];
});
const text = [
  `${rounds} rounds × ${batchesPerRound} batches × ${BATCH} records per case; median round; load average ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} during the run.`,
  '',
  table(['case', 'CPU µs per record', 'records/s (wall)'], rows),
  '',
  `nfcapd counted ${flows ?? '?'} flows of ${udpRecords} sent over UDP.`,
  machineLine(),
].join('\n');
console.log(text);
if (process.argv.includes('--write')) writeSection('exporter-sinks', `Command: \`npm run bench:exporter-sinks -- ${process.argv.slice(2).filter((a) => a !== '--write').join(' ')}\`\n\n${text}`);
