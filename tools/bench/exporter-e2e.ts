// The exporter as a process, end to end: a backlog of joined batches waits in JetStream; the
// exporter starts with one sink enabled and drains it. Reports records/s per sink against a
// baseline with every sink off (consume + decode + ack only), all in one run.
// Run: (cd apps/exporter && npm run build) && npx tsx tools/bench/exporter-e2e.ts [--batches 40] [--only Observer,JSON]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { FLOW_STREAM, connectBus, subjects } from '@kappa/bus';
import { IpProtocol, Vantage, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { ServerProcess, freePort, startNatsServer } from '@kappa/testing';

const i = process.argv.indexOf('--batches');
const BATCHES = i > 0 ? Number(process.argv[i + 1]) : 40;
const BATCH = 1000;
const exporterMain = join(import.meta.dirname, '../../apps/exporter/dist/main.js');

function batch(n: number) {
  return newFlowBatch({
    batchId: `e2e-${n}`,
    producer: 'joiner-0',
    records: Array.from({ length: BATCH }, (_, k) =>
      newFlowRecord({
        id: `node-a/${n}/${k}`,
        node: `node-${k % 3}`,
        vantage: k % 2 ? Vantage.SRC : Vantage.DST,
        startNs: 1_764_000_000_000_000_000n,
        endNs: 1_764_000_010_000_000_000n,
        protocol: IpProtocol.TCP,
        src: { ip: `10.1.${k >> 8}.${k & 255}`, port: 30000 + k, process: { pid: 1000 + k, name: 'nginx', cmdline: 'nginx: worker process', containerId: 'c'.repeat(64) }, kube: { objectName: `web-${k % 50}`, objectNamespace: 'shop', objectType: 'pod', workloadName: `web-${k % 20}`, workloadNamespace: 'shop' } },
        dst: { ip: '10.2.0.7', port: 5432, process: { name: 'postgres' }, kube: { objectName: 'db-0', objectNamespace: 'data', objectType: 'pod', workloadName: 'db', workloadNamespace: 'data' } },
        bytes: 123456n,
        packets: 321n,
        reverseBytes: 654321n,
        reversePackets: 123n,
        tcp: { srttUs: 250, retransmits: 1, flags: 0x1b },
        joined: true,
        clusterId: 1,
      }),
    ),
  });
}

const nats = await startNatsServer();
const bus = await connectBus({ servers: [nats.url], name: 'bench', logger: createLogger('bench', 'silent'), registry: createRegistry('bench') });
await bus.ensureStreams();
const dir = mkdtempSync(join(tmpdir(), 'kx-e2e-'));
const udpPort = await freePort();
const nfcapd = new ServerProcess({ command: 'nfcapd', args: ['-p', String(udpPort), '-b', '127.0.0.1', '-w', dir, '-t', '3600', '-B', String(8 * 1024 * 1024)], readyPattern: /Startup/ });
await nfcapd.start();
const batches = Array.from({ length: BATCHES }, (_, n) => batch(n));

const off = ['--jsonl=', '--prometheus=false', '--observer=false'];
const configs: Record<string, string[]> = {
  'baseline: every sink off': off,
  'JSON Lines': ['--prometheus=false', '--observer=false', `--jsonl=${join(dir, 'flows.jsonl')}`],
  'IPFIX UDP → nfcapd': ['--jsonl=', '--prometheus=false', '--observer=false', `--ipfix=udp://127.0.0.1:${udpPort}`],
  Prometheus: ['--jsonl=', '--observer=false'],
  Observer: ['--jsonl=', '--prometheus=false', '--observer-port=0'],
  // Same sink, keeping 1000 records instead of 100 000: what holding the records costs (GC).
  'Observer, --observer-buffer=1000': ['--jsonl=', '--prometheus=false', '--observer-port=0', '--observer-buffer=1000'],
  'all four': [`--jsonl=${join(dir, 'all.jsonl')}`, `--ipfix=udp://127.0.0.1:${udpPort}`, '--observer-port=0'],
  'all four, --max-in-flight=4': [`--jsonl=${join(dir, 'all4.jsonl')}`, `--ipfix=udp://127.0.0.1:${udpPort}`, '--observer-port=0', '--max-in-flight=4'],
};

let drains = 0;
async function drain(args: string[]): Promise<number> {
  await bus.purgeStream(FLOW_STREAM);
  drains++;
  // Fresh ids: JetStream would drop a batch id it saw within its duplicate window.
  for (const b of batches) await bus.publishBatch(subjects.joined(0), { ...b, batchId: `${b.batchId}/${drains}` });
  if ((await bus.streamInfo(FLOW_STREAM)).state.messages !== BATCHES) throw new Error('backlog not stored');
  const metricsPort = await freePort();
  const child = spawn(process.execPath, [exporterMain, `--nats-url=${nats.url}`, `--metrics-port=${metricsPort}`, '--log-level=warn', ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  // The clock runs from the first batch acked to the last, so process start-up is not counted:
  // (BATCHES - 1) batches are handled in between.
  const remaining = async () => (await bus.streamInfo(FLOW_STREAM)).state.messages;
  let first: bigint | undefined;
  for (;;) {
    const left = await remaining();
    if (first === undefined && left < BATCHES) first = process.hrtime.bigint();
    if (left === 0) break;
    // Polling every 50 ms (±50 ms on drains of seconds): faster polling loads nats-server too.
    await new Promise((r) => setTimeout(r, 50));
  }
  const ms = Number(process.hrtime.bigint() - (first ?? 0n)) / 1e6;
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
  return ms;
}

// --only a,b: run only the configurations whose names contain one of these words.
const o = process.argv.indexOf('--only');
const only = o > 0 ? (process.argv[o + 1] ?? '').split(',') : undefined;
const chosen = Object.entries(configs).filter(([name]) => !only || name.startsWith('baseline') || only.some((w) => name.includes(w)));
const results = new Map<string, number[]>(chosen.map(([k]) => [k, []]));
for (let round = 0; round < 3; round++) {
  for (const [name, args] of chosen) results.get(name)!.push(await drain(args));
}
await bus.close();
await nfcapd.stop();
await nats.stop();
rmSync(dir, { recursive: true, force: true });

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
console.log(`machine: ${cpus().length} cores, ${cpus()[0]?.model}, kernel ${release()}, node ${process.version}`);
console.log(`${BATCHES} batches × ${BATCH} records waiting in JetStream, drained by one exporter (timed from the first ack to the last); median of 3 rounds`);
console.log('| sinks enabled | drain ms | records/s |');
console.log('| --- | --- | --- |');
for (const [name, xs] of results) {
  const ms = median(xs);
  console.log(`| ${name} | ${ms.toFixed(0)} | ${Math.round(((BATCHES - 1) * BATCH) / (ms / 1000)).toLocaleString('en-US')} |`);
}
