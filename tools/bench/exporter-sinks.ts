// Exporter throughput per sink: records/s that each sink (JSON Lines, IPFIX over UDP to a real
// nfcapd, IPFIX over TCP, Prometheus, Observer) and all of them together take, in one run,
// against a baseline (decoding the FlowBatch, which every delivery costs before any sink).
// Rounds alternate between sinks so machine noise hits all alike.
// Run: npx tsx tools/bench/exporter-sinks.ts [--batches-per-round 5] [--rounds 7]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpProtocol, Vantage, decodeFlowBatch, encodeFlowBatch, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, ServerProcess } from '@kappa/testing';
import { SinkDispatcher } from '../../apps/exporter/src/dispatch.js';
import { FlowRing } from '../../apps/exporter/src/observer/ring.js';
import { IpfixSink } from '../../apps/exporter/src/sinks/ipfix.js';
import { JsonlSink } from '../../apps/exporter/src/sinks/jsonl.js';
import { ObserverSink } from '../../apps/exporter/src/sinks/observer.js';
import { PrometheusSink } from '../../apps/exporter/src/sinks/prometheus.js';
import type { FlowSink } from '../../apps/exporter/src/sinks/sink.js';

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

const batches = Array.from({ length: batchesPerRound }, (_, n) => batch(n));
const encoded = batches.map(encodeFlowBatch);
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
const jsonl = new JsonlSink({ path: join(dir, 'flows.jsonl'), maxBytes: 256 * 1024 ** 2, keep: 1 });
await jsonl.start();
const prometheus = new PrometheusSink({ registry: createRegistry('bench'), maxSeries: 10_000 });
const observer = new ObserverSink(new FlowRing(100_000, 600_000_000_000n));
const allRegistry = createRegistry('bench-all');
const all = new SinkDispatcher({
  sinks: [
    new JsonlSink({ path: join(dir, 'all.jsonl'), maxBytes: 256 * 1024 ** 2, keep: 1 }),
    ipfix(`udp://127.0.0.1:${udpPort}`),
    new PrometheusSink({ registry: allRegistry, maxSeries: 10_000 }),
    new ObserverSink(new FlowRing(100_000, 600_000_000_000n)),
  ],
  registry: allRegistry,
});
for (const s of all.sinks) await (s as FlowSink & { start?: () => Promise<void> }).start?.();

let allRound = 0;
const cases: Record<string, () => Promise<void>> = {
  'baseline: decode FlowBatch': async () => {
    for (const bytes of encoded) decodeFlowBatch(bytes);
  },
  'JSON Lines (file)': async () => {
    for (const b of batches) await jsonl.write(b);
  },
  'IPFIX UDP → nfcapd': async () => {
    for (const b of batches) await ipfixUdp.write(b);
  },
  'IPFIX TCP': async () => {
    for (const b of batches) await ipfixTcp.write(b);
  },
  Prometheus: async () => {
    for (const b of batches) await prometheus.write(b);
  },
  'Observer (ring)': async () => {
    for (const b of batches) await observer.write(b);
  },
  'all four (dispatcher)': async () => {
    allRound++;
    // Fresh batch ids, so the dispatcher's redelivery dedupe does not skip them.
    for (const b of batches) await all.dispatch({ ...b, batchId: `${b.batchId}/${allRound}` });
  },
};

const samples = new Map<string, number[]>(Object.keys(cases).map((k) => [k, []]));
for (const run of Object.values(cases)) await run(); // warm-up
let udpRecords = batchesPerRound * BATCH * 2; // warm-up: UDP sink + the dispatcher's UDP sink
for (let r = 0; r < rounds; r++) {
  for (const [name, run] of Object.entries(cases)) {
    const start = process.hrtime.bigint();
    await run();
    samples.get(name)!.push(Number(process.hrtime.bigint() - start) / 1e6);
    if (name.startsWith('IPFIX UDP') || name.startsWith('all')) udpRecords += batchesPerRound * BATCH;
  }
}

await ipfixUdp.close();
await ipfixTcp.close();
await jsonl.close();
await all.close();
await new Promise((r) => setTimeout(r, 1000));
await nfcapd.stop();
const flows = /Flows: (\d+)/.exec(nfcapd.log)?.[1];
discard.kill();
rmSync(dir, { recursive: true, force: true });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const records = batchesPerRound * BATCH;
console.log(`machine: ${cpus().length} cores, ${cpus()[0]?.model}, kernel ${release()}, node ${process.version}`);
console.log(`${rounds} rounds × ${batchesPerRound} batches × ${BATCH} records per case; median round`);
console.log('| sink | ms per 1000 records | records/s |');
console.log('| --- | --- | --- |');
for (const [name, xs] of samples) {
  const ms = median(xs);
  console.log(`| ${name} | ${((ms / records) * 1000).toFixed(2)} | ${Math.round(records / (ms / 1000)).toLocaleString('en-US')} |`);
}
console.log(`nfcapd counted ${flows ?? '?'} flows of ${udpRecords} sent over UDP`);
