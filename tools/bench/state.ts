// Scenario 4, capture + enricher half — scale of state: N concurrent UDP conversations (one
// datagram to each of N distinct destinations) in one drain interval; the kernel map's memory
// while it holds them, what the drain took, and capture's and process-enricher's RSS once every
// record has reached kappa.flow.enriched.<node>. Writes section `state`.
//   npm run bench:state -- [--conversations 10000,100000,1000000] (e.g. 1000000@1048576)
//   capture runs with the DaemonSet's Node flags (infra/k8s/base/agent.yaml: the young
//   generation's size sets much of its RSS).
//   (N@M: capture runs with --max-conversations M for that row; without @, capture's default)
//   --intervals K (default 3; 2 for rows of a million or more): K intervals of N conversations
//   per row; the table shows the first drain (a fresh process) and the last (the steady state).
//   --cpu-profile DIR: a CPU profile of capture from before the send until every record is
//   enriched, one .cpuprofile per row in DIR, and its top functions by self time on stderr.
//   --capture-node-args "--perf-basic-prof": node flags for capture (e.g. for `perf record -g -k
//   realtime -p <capture's pid>`; V8's own profiler is wall-clock sampled), and each drain's log
//   line on stderr. `--trace-gc`, `--trace-opt --trace-deopt` print to capture's stdout, which the
//   bench drops unless `--capture-stdout FILE` (one file per row: FILE.<conversations>).
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { TestCgroup, VethPair, freePort, run, runIn, startNatsServer } from '@kappa/testing';
import { PROFILABLE, RemoteProfiler, topFunctions } from './lib/profile.js';
import { buildHelper, countBatchRecords, median, requireBuild, sleep, stopAll, waitFor } from './lib/processes.js';
import { machineLine, repoRoot, rssBytes, table, writeSection } from './lib/report.mjs';

const { values } = parseArgs({
  options: {
    conversations: { type: 'string', default: '10000,100000,1000000' },
    'cpu-profile': { type: 'string' },
    'capture-node-args': { type: 'string' },
    'capture-stdout': { type: 'string' },
    intervals: { type: 'string', default: '3' },
  },
});
const rowsAsked = values.conversations.split(',').map((row) => {
  const [n, map] = row.split('@');
  return { conversations: Number(n), mapSize: map ?? '' };
});
const intervals = Math.max(2, Number(values.intervals));
/**
 * capture's V8 flags as the DaemonSet runs it (its NODE_OPTIONS in infra/k8s/base/agent.yaml, less
 * --enable-source-maps): its RSS depends on them (the young generation's size).
 */
function daemonSetNodeFlags(): string[] {
  const manifest = readFileSync(join(repoRoot, 'infra/k8s/base/agent.yaml'), 'utf8');
  const container = manifest.slice(manifest.indexOf('- name: capture\n'));
  const options = /- name: NODE_OPTIONS\s+value: (.+)/.exec(container)?.[1];
  if (!options) throw new Error("bench:state: no NODE_OPTIONS for the capture container in infra/k8s/base/agent.yaml");
  return options.trim().split(/\s+/).filter((flag) => flag !== '--enable-source-maps');
}
const captureFlags = daemonSetNodeFlags();
requireBuild('bench:state', ['apps/capture/dist/main.js', 'apps/process-enricher/dist/main.js', 'bpf/.output/kappa.bpf.o']);

const work = mkdtempSync(join(tmpdir(), 'kbd-state-'));
const sender = buildHelper('udp-conversations', work);
const cgroup = new TestCgroup('kbd-state');
const pair = await VethPair.create({ prefix: 'kbd-', subnet: 43, cgroup });
const nats = await startNatsServer();
const bus = await connect({ servers: nats.url });
void (async () => {
  // A reconnect means messages to the counting subscription may be lost: say so.
  for await (const status of bus.status()) if (status.type !== 'ping') console.error(`bench NATS connection: ${JSON.stringify(status)}`);
})();
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const count = (n: number) => n.toLocaleString('en-US');

interface DrainLog {
  cpuSplitMs?: Record<string, number>;
  msg: string;
  conversations: number;
  durationMs: number;
  cpuMs: number;
  mainThreadCpuMs?: number;
  overflowPackets?: string;
}

/** kB of a /proc/<pid>/status field (VmHWM: the peak RSS). */
function statusBytes(pid: number, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}

/** bytes_memlock per map of the BPF maps a process holds open (found by map ids in its fdinfo). */
function mapMemory(pid: number): Map<string, number> {
  const ids = readdirSync(`/proc/${pid}/fdinfo`).flatMap((fd) => {
    try {
      const id = /^map_id:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
      return id ? [Number(id)] : [];
    } catch {
      return [];
    }
  });
  const maps = JSON.parse(run('bpftool', ['-j', 'map', 'show'])) as { id: number; name: string; bytes_memlock?: number }[];
  return new Map(maps.filter((m) => ids.includes(m.id)).map((m) => [m.name, m.bytes_memlock ?? 0]));
}

async function measure(conversations: number, mapSize: string): Promise<(string | number)[]> {
  const node = `kbd-state-${conversations}-${mapSize || 'default'}`;
  const children: ChildProcess[] = [];
  let enriched = 0;
  const subscription = bus.subscribe(`kappa.flow.enriched.*.${node}`);
  const counting = (async () => {
    for await (const message of subscription) enriched += countBatchRecords(message.data);
  })().catch((error: unknown) => console.error('reading the enriched subject failed:', error));
  try {
    const problems: string[] = [];
    const metricsPorts = new Map<string, number>();
    const service = async (bin: string, args: string[], nodeArgs: string[] = [], stdout: number | 'ignore' = 'ignore') => {
      const port = await freePort();
      metricsPorts.set(bin.split('/').at(-1)!, port);
      const child = spawn(process.execPath, [...nodeArgs, join(repoRoot, bin), '--node', node, '--nats-url', nats.url, '--metrics-port', String(port), ...args], { stdio: ['ignore', stdout, 'pipe'] });
      children.push(child);
      // Warnings and errors of both services, printed when records go missing.
      child.stderr?.on('data', (chunk: Buffer) => {
        for (const line of chunk.toString().split('\n')) if (/"level":(40|50|60)/.test(line)) problems.push(line.slice(0, 600));
      });
      return child;
    };
    const enricher = await service('apps/process-enricher/bin/kappa-process-enricher.js', ['--cri-socket', 'none']);
    await waitFor(enricher, /"msg":"ready"/, 'kappa-process-enricher');
    // V8's traces (--trace-gc and the like) go to capture's stdout: kept in a file when asked.
    const stdoutFile = values['capture-stdout'] ? openSync(`${values['capture-stdout']}.${conversations}`, 'w') : undefined;
    const capture = await service('apps/capture/bin/kappa-capture.js', [
      '--cgroup', cgroup.path, '--interval', '5s', '--log-level', 'debug', '--state-dir', join(work, node),
      ...(mapSize ? ['--max-conversations', mapSize] : []),
    ], [...captureFlags, ...(values['cpu-profile'] ? [PROFILABLE] : []), ...(values['capture-node-args']?.split(' ').filter(Boolean) ?? [])], stdoutFile ?? 'ignore');
    if (stdoutFile !== undefined) closeSync(stdoutFile); // the child has its own descriptor
    const drains: DrainLog[] = [];
    let partial = '';
    capture.stderr?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (/"msg":"(drained|flow map full)/.test(line)) drains.push(JSON.parse(line) as DrainLog);
    });
    await waitFor(capture, /"msg":"capturing"/, 'kappa-capture');
    const profiler = values['cpu-profile'] ? await RemoteProfiler.attach(capture) : undefined;
    // One interval of N conversations: sent while capture is paused (the BPF programs count on,
    // but no drain can split the N conversations however long sending takes on a loaded
    // machine; the overdue drain runs on SIGCONT), then every record through the enricher.
    const interval = async (profile: boolean) => {
      const before = drains.length;
      if (profile) await profiler?.start();
      capture.kill('SIGSTOP');
      const sent = JSON.parse(await runIn(pair.a.netns, cgroup, sender, ['10.200', String(conversations)])) as { sent: number; seconds: number };
      const maps = mapMemory(capture.pid!);
      capture.kill('SIGCONT');
      while (!drains.slice(before).some((d) => d.conversations > 0)) {
        if (capture.exitCode !== null) throw new Error(`kappa-capture exited ${capture.exitCode} before its drain`);
        await sleep(200);
      }
      const drain = drains.slice(before).find((d) => d.conversations > 0)!;
      const wanted = enriched + drain.conversations;
      // Every drained record through the enricher (or nothing new for 30 s: the table shows it).
      let last = -1;
      let quietSince = performance.now();
      while (enriched < wanted) {
        if (enriched !== last) [last, quietSince] = [enriched, performance.now()];
        else if (performance.now() - quietSince > 30_000) break;
        await sleep(250);
      }
      if (enriched < wanted) {
        console.error(`${count(wanted - enriched)} records did not reach the enriched subject; services said:\n${problems.join('\n')}`);
        for (const [name, port] of metricsPorts) {
          const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
          console.error(`${name} metrics:\n${text.split('\n').filter((l) => /^kappa_(bus|capture|process_enricher|stage)\w*(records|published|publish|batches|consumed|acked|nak|dlq|redeliver|lag|conversations)/.test(l)).join('\n')}`);
        }
      }
      if (profile && profiler) {
        const file = join(values['cpu-profile']!, `capture-${conversations}.cpuprofile`);
        await profiler.stop(file);
        console.error(`capture's CPU profile of the last interval: ${file}\n${topFunctions(file, 25)}`);
      }
      // The drain's log line (its time and durationMs place it in a `perf record -k realtime` profile).
      if (values['capture-node-args']) console.error(`drain log: ${JSON.stringify(drain)}`);
      console.error(`${count(conversations)}: sent ${sent.sent} in ${sent.seconds} s, drained ${drain.conversations}, CPU ms ${drain.cpuMs.toFixed(1)} (main thread ${drain.mainThreadCpuMs?.toFixed(1)}) by part ${JSON.stringify(drain.cpuSplitMs)}, enriched ${enriched} in all`);
      return { drain, maps, enrichedNow: enriched };
    };
    // The first drain of a fresh process (code not yet optimised), then the same again: a
    // running capture's steady state, which the per-record goal is about.
    const cold = await interval(false);
    // Three million records at once outgrow capture's share of the bench's 1 GiB KAPPA_FLOWS while
    // the enricher catches up (publishes refused): a million-row takes two intervals at most.
    const rowIntervals = conversations >= 1_000_000 ? Math.min(2, intervals) : intervals;
    const steady: DrainLog[] = [];
    for (let i = 2; i < rowIntervals; i++) steady.push((await interval(false)).drain);
    const { drain, maps } = await interval(true);
    steady.push(drain);
    const steadyUs = steady.map((d) => (d.cpuMs * 1000) / Math.max(1, d.conversations));
    const enrichedBoth = enriched;
    const perRecord = (d: DrainLog) => ((d.cpuMs * 1000) / Math.max(1, d.conversations)).toFixed(2);
    const split = (d: DrainLog) =>
      d.cpuSplitMs ? ['interval', 'kernel', 'encode', 'spool', 'sink'].map((part) => ((d.cpuSplitMs![part]! * 1000) / Math.max(1, d.conversations)).toFixed(2)).join(' / ') : '';
    const mapBytes = [...maps.values()].reduce((a, b) => a + b, 0);
    const lost = Number(cold.drain.overflowPackets ?? 0) + Number(drain.overflowPackets ?? 0);
    return [
      count(conversations),
      mapSize ? count(Number(mapSize)) : 'default (262,144)',
      `${count(cold.drain.conversations)} + ${count(drain.conversations)}`,
      lost ? `${count(lost)} (warned in capture's log, \`kappa_capture_map_overflow_packets_total\`)` : '0',
      count(enrichedBoth),
      mib((maps.get('kappa_flows_0') ?? 0) + (maps.get('kappa_flows_1') ?? 0)),
      mib(mapBytes),
      `${(drain.durationMs / 1000).toFixed(1)} / ${(drain.cpuMs / 1000).toFixed(2)}`,
      `${perRecord(cold.drain)} / **${perRecord(drain)}**`,
      `**${median(steadyUs).toFixed(2)}** (${Math.min(...steadyUs).toFixed(2)}–${Math.max(...steadyUs).toFixed(2)}, ${steady.length} drains)`,
      split(drain),
      `${mib(rssBytes(capture.pid!))} / ${mib(statusBytes(capture.pid!, 'VmHWM'))}`,
      `${mib(rssBytes(enricher.pid!))} / ${mib(statusBytes(enricher.pid!, 'VmHWM'))}`,
    ];
  } finally {
    await stopAll(children);
    await subscription.drain();
    await counting;
  }
}

try {
  // Destinations in 10.200.0.0/16 leave through namespace b's address, which drops them.
  run('ip', ['-n', pair.a.netns, 'route', 'add', '10.200.0.0/16', 'via', pair.b.ipv4]);
  const rows = [];
  for (const row of rowsAsked) rows.push(await measure(row.conversations, row.mapSize));
  const markdown = [
    `One UDP datagram to each of N distinct destinations from one socket, all inside one drain interval (capture is paused with SIGSTOP while sending, so no drain splits them; its BPF programs count on), ${intervals} times (at most 2 for a row of a million or more: three million records outgrow capture's share of the bench's 1 GiB stream while the enricher catches up): the table shows the first drain of a fresh capture, the last one, and the median of every drain after the first (a running capture's steady state). capture (NATS sink, spool on; Node flags as the DaemonSet's: \`${captureFlags.join(' ')}\`) and process-enricher restarted for each row. Drain CPU is capture's whole process (\`process.cpuUsage\`: user + system, all threads) from the epoch flip until the last batch is acknowledged by NATS; its parts are: ending the interval (flip, membarrier, socket iterator), reading the kernel chunks (batch lookup-and-delete), encoding, spooling (write, rename, remove; fsync only for a batch the sink refused), handing to NATS (publish + ack). Map memory is \`bytes_memlock\` from \`bpftool map show\` while the last interval's entries are in the map; RSS is read once every record of every drain has reached \`kappa.flow.enriched.<node>\`.`,
    '',
    table(
      ['conversations per interval', 'flow map size (--max-conversations)', 'records drained (1st + last)', 'packets not counted (map full)', 'records enriched', 'kappa_flows_0+1 maps, MiB', 'all capture maps, MiB', 'last drain wall / CPU, s', 'drain CPU per record, µs: 1st / last (goal ≤ 3)', 'every drain after the 1st, µs per record: median (min–max)', 'last drain by part, µs per record: interval / kernel / encode / spool / sink', 'capture RSS now / peak, MiB (goal at 1M: ≤ 150)', 'enricher RSS now / peak, MiB'],
      rows,
    ),
    '',
    machineLine(),
  ].join('\n');
  console.log(markdown);
  writeSection('state', markdown);
} finally {
  await bus.close();
  await nats.stop();
  pair.destroy();
  cgroup.destroy();
  rmSync(work, { recursive: true, force: true });
}
