// The exporter as a process, end to end: a backlog of joined batches waits in JetStream (file
// storage); the exporter starts with the given sinks and drains it. Reports, per configuration,
// records/s (from the first batch acked to the last) and the exporter's CPU µs per record over
// the same span, against a baseline with every sink off (consume, check, ack), all in one run.
// The JSON Lines row is the JSONL scenario of issue #15: ≥ 100 000 records/s into a file.
//
// Run: npm run bench:exporter [-- --batches 100] [--only JSON] [--rounds 3]
//        [--compare path/to/other/apps/exporter/dist/main.js] (the same configurations against
//        another build, e.g. main's, alternating with this one: before/after in one run)
//        [--cpu-prof dir] (each exporter writes a V8 CPU profile there)
//        [--batch 1000] (records per batch: the pipeline's joiner sends batches of ~100-600)
//        [--store] (adds rows with the flow store on, as the pipeline runs it; its segments are
//        not sealed within a drain, so these rows are the appends: the seal is bench:store's)
//        [--store-seal N] (the store rows seal a segment every N records and count until each
//        full one is sealed: the seal's DuckDB and compression CPU included)
//        [--write] (puts the table into BENCHMARKS.md between its markers)
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FLOW_STREAM, connectBus, subjects } from '@kappa/bus';
import { IpProtocol, Vantage, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { ServerProcess, freePort, startNatsServer } from '@kappa/testing';
import { median } from './lib/processes.js';
import { cpuSeconds, machineLine, repoRoot, table, writeSection } from './lib/report.mjs';

const argument = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const BATCHES = Number(argument('batches') ?? 100);
const ROUNDS = Number(argument('rounds') ?? 3);
const BATCH = Number(argument('batch') ?? 1000);
const STORE = process.argv.includes('--store');
/** --store-seal N: the store rows seal a segment every N records, and the clock runs until each full one is sealed. */
const SEAL_EVERY = Number(argument('store-seal') ?? 0);
const builds: [string, string][] = [['this build', join(repoRoot, 'apps/exporter/dist/main.js')]];
const compare = argument('compare');
if (compare) builds.push(['compared build', resolve(compare)]);
for (const [, main] of builds) {
  if (!existsSync(main)) {
    console.error(`exporter-e2e: ${main} missing; run \`npm run build\` first`);
    process.exit(2);
  }
}
// The flow store (#19) has its own bench (bench:store); it is off here where the build has it, so
// builds with and without it compare alike.
const storeOff = new Map<string, string[]>(builds.map(([, main]) => [main, execFileSync(process.execPath, [main, '--help'], { encoding: 'utf8' }).includes('--store') ? ['--store=false'] : []]));
const profileDir = argument('cpu-prof');
if (profileDir) mkdirSync(profileDir, { recursive: true });

/** Joined records as a cluster makes them: both ends tagged, 20 workloads, 2 namespaces. */
function batch(n: number) {
  return newFlowBatch({
    batchId: `e2e-${n}`,
    producer: 'joiner-0',
    records: Array.from({ length: BATCH }, (_, k) =>
      newFlowRecord({
        id: `node-a/${n}/${k}`,
        node: `node-${k % 3}`,
        vantage: k % 2 ? Vantage.SRC : Vantage.DST,
        startNs: 1_764_000_000_000_000_000n + BigInt(k),
        endNs: 1_764_000_010_000_000_000n,
        firstSeenNs: 1_764_000_000_000_000_000n + BigInt(k),
        lastSeenNs: 1_764_000_009_000_000_000n,
        protocol: IpProtocol.TCP,
        src: {
          ip: `10.1.${k >> 8}.${k & 255}`,
          port: 30000 + k,
          process: { pid: 1000 + k, name: 'nginx', cmdline: 'nginx: worker process', containerId: 'c'.repeat(64), cgroupId: 4242n },
          kube: { node: 'node-a', objectName: `web-${k % 50}`, objectNamespace: 'shop', objectType: 'pod', workloadName: `web-${k % 20}`, workloadNamespace: 'shop', workloadKind: 'Deployment', labels: { app: 'web', tier: 'front' } },
        },
        dst: {
          ip: '10.2.0.7',
          port: 5432,
          process: { pid: 77, name: 'postgres' },
          kube: { node: 'node-b', objectName: 'db-0', objectNamespace: 'data', objectType: 'pod', workloadName: 'db', workloadNamespace: 'data', workloadKind: 'StatefulSet' },
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
  'JSON Lines': ['--prometheus=false', '--observer=false', `--jsonl=${join(dir, 'flows.jsonl')}`, `--jsonl-max-bytes=${2 ** 40}`],
  'IPFIX UDP → nfcapd': ['--jsonl=', '--prometheus=false', '--observer=false', `--ipfix=udp://127.0.0.1:${udpPort}`],
  Prometheus: ['--jsonl=', '--observer=false'],
  Observer: ['--jsonl=', '--prometheus=false', '--observer-port=0'],
  'all four': [`--jsonl=${join(dir, 'all.jsonl')}`, `--jsonl-max-bytes=${2 ** 40}`, `--ipfix=udp://127.0.0.1:${udpPort}`, '--observer-port=0'],
};
// The flow store as the pipeline runs it (on by default there), appends only unless --store-seal;
// its retention covers the records' fixed 2025 flow times (else a sealed segment is dropped at once).
const storeOn = (name: string) => ['--store=true', `--store-dir=${join(dir, `store-${name}`)}`, `--store-segment-records=${SEAL_EVERY || 100000000}`, '--store-segment-age=1h', '--store-retention=100000h'];
/** Sealed segments (Parquet index files) in a store folder the drain's exporter writes. */
const sealedSegments = (args: string[]): number => {
  const folder = args.find((a) => a.startsWith('--store-dir='))?.slice('--store-dir='.length);
  if (!folder || !existsSync(folder)) return 0;
  return readdirSync(folder).filter((f) => /^seg-\d+\.parquet$/.test(f)).length;
};
if (STORE) {
  configs['flow store'] = [...off, ...storeOn('store')];
  configs['JSON Lines + flow store'] = [...configs['JSON Lines']!, ...storeOn('jsonl-store')];
}

interface Drain {
  ms: number;
  cpuUsPerRecord: number;
  /** The main thread's share: the one every batch waits for. */
  mainUsPerRecord: number;
}

const ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
/** CPU seconds of a process's main thread (its first task), from /proc/<pid>/task/<pid>/stat. */
function mainThreadSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/** CPU seconds per thread name (libuv pool, V8 GC helpers, DuckDB...) for --threads. */
function threadSeconds(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = tid === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(name, (out.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / ticksPerSecond);
    } catch {
      // The thread ended.
    }
  }
  return out;
}
const THREADS = process.argv.includes('--threads');

let drains = 0;
async function drain(main: string, name: string, args: string[]): Promise<Drain> {
  await bus.purgeStream(FLOW_STREAM);
  rmSync(join(dir, 'flows.jsonl'), { force: true });
  rmSync(join(dir, 'all.jsonl'), { force: true });
  for (const name of ['store-store', 'store-jsonl-store']) rmSync(join(dir, name), { recursive: true, force: true });
  drains++;
  // Fresh ids: JetStream would drop a batch id it saw within its duplicate window.
  for (const b of batches) await bus.publishBatch(subjects.joined(0), { ...b, batchId: `${b.batchId}/${drains}` });
  if ((await bus.streamInfo(FLOW_STREAM)).state.messages !== BATCHES) throw new Error('backlog not stored');
  const metricsPort = await freePort();
  const profile = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${name.replace(/\W+/g, '-')}-${drains}.cpuprofile`] : [];
  const child = spawn(process.execPath, [...profile, main, `--nats-url=${nats.url}`, `--metrics-port=${metricsPort}`, '--log-level=warn', ...storeOff.get(main)!, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  // The clock and the CPU count from the first batch acked to the last, so start-up is left
  // out: (BATCHES - 1) batches are handled in between.
  const remaining = async () => (await bus.streamInfo(FLOW_STREAM)).state.messages;
  let first: bigint | undefined;
  let firstCpu = 0;
  let firstMain = 0;
  let firstThreads = new Map<string, number>();
  for (;;) {
    const left = await remaining();
    if (first === undefined && left < BATCHES) {
      first = process.hrtime.bigint();
      firstCpu = cpuSeconds(child.pid!);
      firstMain = mainThreadSeconds(child.pid!);
      if (THREADS) firstThreads = threadSeconds(child.pid!);
    }
    // With --store-seal, the drain ends once every full segment is sealed too.
    if (left === 0 && (!SEAL_EVERY || !args.includes('--store=true') || sealedSegments(args) >= Math.floor((BATCHES * BATCH) / SEAL_EVERY))) break;
    // Polling every 20 ms (±20 ms on drains of seconds): faster polling loads nats-server too.
    await new Promise((r) => setTimeout(r, 20));
  }
  const ms = Number(process.hrtime.bigint() - (first ?? 0n)) / 1e6;
  const cpu = cpuSeconds(child.pid!) - firstCpu;
  const mainCpu = mainThreadSeconds(child.pid!) - firstMain;
  if (THREADS) {
    const by = [...threadSeconds(child.pid!)].map(([k, v]) => `${k} ${(((v - (firstThreads.get(k) ?? 0)) * 1e6) / ((BATCHES - 1) * BATCH)).toFixed(2)}`);
    console.log(`${name}: µs per record by thread: ${by.join(', ')}`);
  }
  await new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
  return { ms, cpuUsPerRecord: (cpu * 1e6) / ((BATCHES - 1) * BATCH), mainUsPerRecord: (mainCpu * 1e6) / ((BATCHES - 1) * BATCH) };
}

// --only a,b: run only the configurations whose names contain one of these words.
const only = argument('only')?.split(',');
const chosen = Object.entries(configs).filter(([name]) => !only || name.startsWith('baseline') || only.some((w) => name.includes(w)));
const results = new Map<string, Drain[]>();
const loads: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, args] of chosen) {
    for (const [build, main] of builds) {
      const key = `${build}\0${name}`;
      if (!results.has(key)) results.set(key, []);
      results.get(key)!.push(await drain(main, name, args));
      loads.push(loadavg()[0]!);
    }
  }
}
await bus.close();
await nfcapd.stop();
await nats.stop();
rmSync(dir, { recursive: true, force: true });

const rows = [...results].map(([key, xs]) => {
  const [build, name] = key.split('\0') as [string, string];
  const ms = median(xs.map((x) => x.ms));
  const cpu = median(xs.map((x) => x.cpuUsPerRecord));
  const main = median(xs.map((x) => x.mainUsPerRecord));
  return [...(compare ? [build] : []), name, ms.toFixed(0), Math.round(((BATCHES - 1) * BATCH) / (ms / 1000)).toLocaleString('en-US'), cpu.toFixed(2), main.toFixed(2)];
});
const header = [...(compare ? ['build'] : []), 'sinks enabled', 'drain ms', 'records/s', 'exporter CPU µs per record', 'its main thread'];
const text = [
  `${BATCHES} batches × ${BATCH} records waiting in JetStream, drained by one exporter (timed from the first ack to the last${STORE ? (SEAL_EVERY ? `; the flow store seals a segment every ${SEAL_EVERY.toLocaleString('en-US')} records, and its rows run until every full one is sealed` : '; the flow store\'s rows append only, no seal') : ''}); median of ${ROUNDS} rounds; load average during the run ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}.`,
  '',
  table(header, rows),
  '',
  machineLine(),
].join('\n');
console.log(text);
if (process.argv.includes('--write')) writeSection('exporter-e2e', `Command: \`npm run bench:exporter -- ${process.argv.slice(2).filter((a) => a !== '--write').join(' ')}\`\n\n${text}`);
