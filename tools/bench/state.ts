// Scenario 4, capture + enricher half — scale of state: N concurrent UDP conversations (one
// datagram to each of N distinct destinations) in one drain interval; the kernel map's memory
// while it holds them, what the drain took, and capture's and process-enricher's RSS once every
// record has reached kappa.flow.enriched.<node>. Writes section `state`.
//   npm run bench:state -- [--conversations 10000,100000,1000000] (e.g. 1000000@1048576)
//   (N@M: capture runs with --max-conversations M for that row; without @, capture's default)
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { TestCgroup, VethPair, freePort, run, runIn, startNatsServer } from '@kappa/testing';
import { buildHelper, countBatchRecords, requireBuild, sleep, stopAll, waitFor } from './lib/processes.js';
import { machineLine, repoRoot, rssBytes, table, writeSection } from './lib/report.mjs';

const { values } = parseArgs({
  options: {
    conversations: { type: 'string', default: '10000,100000,1000000' },
  },
});
const rowsAsked = values.conversations.split(',').map((row) => {
  const [n, map] = row.split('@');
  return { conversations: Number(n), mapSize: map ?? '' };
});
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
  msg: string;
  conversations: number;
  durationMs: number;
  cpuMs: number;
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
    const service = async (bin: string, args: string[]) => {
      const port = await freePort();
      metricsPorts.set(bin.split('/').at(-1)!, port);
      const child = spawn(process.execPath, [join(repoRoot, bin), '--node', node, '--nats-url', nats.url, '--metrics-port', String(port), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(child);
      // Warnings and errors of both services, printed when records go missing.
      child.stderr?.on('data', (chunk: Buffer) => {
        for (const line of chunk.toString().split('\n')) if (/"level":(40|50|60)/.test(line)) problems.push(line.slice(0, 600));
      });
      return child;
    };
    const enricher = await service('apps/process-enricher/bin/kappa-process-enricher.js', ['--cri-socket', 'none']);
    await waitFor(enricher, /"msg":"ready"/, 'kappa-process-enricher');
    const capture = await service('apps/capture/bin/kappa-capture.js', [
      '--cgroup', cgroup.path, '--interval', '5s', '--log-level', 'debug', '--state-dir', join(work, node),
      ...(mapSize ? ['--max-conversations', mapSize] : []),
    ]);
    const drains: DrainLog[] = [];
    let partial = '';
    capture.stderr?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (/"msg":"(drained|flow map full)/.test(line)) drains.push(JSON.parse(line) as DrainLog);
    });
    await waitFor(capture, /"msg":"capturing"/, 'kappa-capture');
    // Paused while sending: the BPF programs count on, but no drain can split the N
    // conversations however long sending takes on a loaded machine; the overdue drain runs on
    // SIGCONT.
    capture.kill('SIGSTOP');
    const sent = JSON.parse(await runIn(pair.a.netns, cgroup, sender, ['10.200', String(conversations)])) as { sent: number; seconds: number };
    const maps = mapMemory(capture.pid!);
    capture.kill('SIGCONT');
    while (!drains.some((d) => d.conversations > 0)) {
      if (capture.exitCode !== null) throw new Error(`kappa-capture exited ${capture.exitCode} before its drain`);
      await sleep(200);
    }
    const drain = drains.find((d) => d.conversations > 0)!;
    // Every drained record through the enricher (or nothing new for 30 s: the table shows it).
    let last = -1;
    let quietSince = performance.now();
    while (enriched < drain.conversations) {
      if (enriched !== last) [last, quietSince] = [enriched, performance.now()];
      else if (performance.now() - quietSince > 30_000) break;
      await sleep(250);
    }
    if (enriched < drain.conversations) {
      console.error(`${count(drain.conversations - enriched)} records did not reach the enriched subject; services said:\n${problems.join('\n')}`);
      for (const [name, port] of metricsPorts) {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        console.error(`${name} metrics:\n${text.split('\n').filter((l) => /^kappa_(bus|capture|process_enricher|stage)\w*(records|published|publish|batches|consumed|acked|nak|dlq|redeliver|lag|conversations)/.test(l)).join('\n')}`);
      }
    }
    const mapBytes = [...maps.values()].reduce((a, b) => a + b, 0);
    const lost = Number(drain.overflowPackets ?? 0);
    console.error(`${count(conversations)}: sent ${sent.sent} in ${sent.seconds} s, drained ${drain.conversations}, enriched ${enriched}, maps ${JSON.stringify(Object.fromEntries(maps))}`);
    return [
      count(conversations),
      mapSize ? count(Number(mapSize)) : 'default (262,144)',
      count(drain.conversations),
      lost ? `${count(lost)} (warned in capture's log, \`kappa_capture_map_overflow_packets_total\`)` : '0',
      count(enriched),
      mib((maps.get('kappa_flows_0') ?? 0) + (maps.get('kappa_flows_1') ?? 0)),
      mib(mapBytes),
      `${(drain.durationMs / 1000).toFixed(1)} / ${(drain.cpuMs / 1000).toFixed(1)}`,
      ((drain.cpuMs * 1000) / Math.max(1, drain.conversations)).toFixed(2),
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
    `One UDP datagram to each of N distinct destinations from one socket, all inside one drain interval (capture is paused with SIGSTOP while sending, so no drain splits them; its BPF programs count on); capture (NATS sink) and process-enricher restarted for each row. Map memory is \`bytes_memlock\` from \`bpftool map show\` just before the drain; RSS is read once every record of that drain has reached \`kappa.flow.enriched.<node>\`.`,
    '',
    table(
      ['conversations sent', 'flow map size (--max-conversations)', 'records drained', 'packets not counted (map full)', 'records enriched', 'kappa_flows_0+1 maps, MiB', 'all capture maps, MiB', 'drain wall / CPU, s', 'drain CPU per record, µs (goal ≤ 3)', 'capture RSS now / peak, MiB (goal at 1M: ≤ 150)', 'enricher RSS now / peak, MiB'],
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
