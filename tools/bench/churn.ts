// Scenario 2 — connection churn: short TCP connections (connect, send 64 bytes, close) between two
// network namespaces at rising rates, with kappa-capture and kappa-process-enricher on a real
// nats-server. Rate achieved, both services' CPU and RSS per phase, and the conversations that
// reach kappa.flow.enriched.p<k>.<node> against the connections made. Writes section `churn`.
//   npm run bench:churn -- [--rates 1000,2000,5000,10000] [--seconds 3] [--interval 1s]
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { decodeFlowBatch } from '@kappa/contracts';
import { TestCgroup, VethPair, run, runIn, spawnIn, startNatsServer } from '@kappa/testing';
import { buildHelper, countBatchRecords, requireBuild, sleep, stopAll, waitFor } from './lib/processes.js';
import { cpuSeconds, machineLine, repoRoot, rssBytes, table, writeSection } from './lib/report.mjs';

const { values } = parseArgs({
  options: {
    rates: { type: 'string', default: '1000,2000,5000,10000' },
    seconds: { type: 'string', default: '3' },
    interval: { type: 'string', default: '1s' },
  },
});
const rates = values.rates.split(',').map(Number);
const seconds = Number(values.seconds);
const intervalMs = Number(/^(\d+(?:\.\d+)?)s$/.exec(values.interval)?.[1] ?? NaN) * 1000;
if (!(intervalMs > 0)) {
  console.error('bench:churn: --interval takes seconds, e.g. 1s');
  process.exit(2);
}
requireBuild('bench:churn', ['apps/capture/dist/main.js', 'apps/process-enricher/dist/main.js', 'bpf/.output/kappa.bpf.o']);

const node = 'kbd-churn';
const serverPort = 7000;
const work = mkdtempSync(join(tmpdir(), 'kbd-churn-'));
const churn = buildHelper('churn', work);
const cgroup = new TestCgroup('kbd-churn');
const pair = await VethPair.create({ prefix: 'kbd-', subnet: 42, cgroup });
const nats = await startNatsServer();
const children: ChildProcess[] = [];
const hostsPerPhase = rates.map((rate) => Math.ceil((rate * seconds * 1.2) / 64_512));

/** Conversations to the churn server seen on the enriched subject, per vantage (client port as key). */
const seen = { src: new Map<string, string[]>(), dst: new Map<string, string[]>(), records: 0, unspecified: 0, withProcess: { src: 0, dst: 0 } };

function service(bin: string, args: string[]): ChildProcess {
  const child = spawn(process.execPath, [join(repoRoot, bin), '--node', node, '--nats-url', nats.url, '--metrics-port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  return child;
}

try {
  // Each phase connects from its own source addresses, so no 4-tuple is ever used twice.
  let host = 11;
  for (const hosts of hostsPerPhase) {
    for (let h = 0; h < hosts; h++, host++) {
      run('ip', ['-n', pair.a.netns, 'addr', 'add', `10.77.42.${host}/24`, 'dev', pair.a.ifname]);
      run('ip', ['-n', pair.b.netns, 'neigh', 'replace', `10.77.42.${host}`, 'lladdr', pair.a.mac, 'dev', pair.b.ifname, 'nud', 'permanent']);
    }
  }

  const bus = await connect({ servers: nats.url });
  const subscription = bus.subscribe(`kappa.flow.enriched.*.${node}`);
  // Kept raw and only counted while a phase runs; decoded between phases (see countBatchRecords).
  const arrived: Uint8Array[] = [];
  let arrivedRecords = 0;
  const counting = (async () => {
    for await (const message of subscription) {
      arrived.push(message.data);
      arrivedRecords += countBatchRecords(message.data);
    }
  })().catch((error: unknown) => console.error('reading the enriched subject failed:', error));
  const decodeArrived = () => {
    for (const batch of arrived.splice(0)) {
      for (const r of decodeFlowBatch(batch).records) {
        if (r.dst?.port !== serverPort) continue;
        seen.records++;
        if (r.vantage !== 1 && r.vantage !== 2) {
          // What such a record said, for the report (a few).
          if (seen.unspecified++ < 5) console.error(`no vantage: ${r.src?.ip}:${r.src?.port}→${r.dst?.ip}:${r.dst?.port} ${r.packets}/${r.reversePackets} pkts ${r.bytes}/${r.reverseBytes} B flags ${r.tcp?.flags} handshake ${r.tcp?.handshakeUs} µs srtt ${r.tcp?.srttUs} drops ${r.drops?.packets ?? 0} ${r.drops?.reason ?? ""} pid ${r.src?.process?.pid ?? r.dst?.process?.pid} netns ${r.src?.netns}/${r.dst?.netns} first ${r.firstSeenNs} interval ${r.startNs}-${r.endNs}`);
          continue;
        }
        const end = r.vantage === 1 ? 'src' : 'dst';
        if ((end === 'src' ? r.src : r.dst)?.process?.name) seen.withProcess[end]++;
        const key = `${r.src?.ip}:${r.src?.port}`;
        // What each record said, for the report when the two ends do not pair up.
        const said = `${r.src?.ip}:${r.src?.port}→${r.dst?.ip}:${r.dst?.port} ${r.packets}/${r.reversePackets} pkts flags ${r.tcp?.flags} pid ${(end === 'src' ? r.src : r.dst)?.process?.pid}`;
        seen[end].set(key, [...(seen[end].get(key) ?? []), said]);
      }
    }
  };
  void (async () => {
    // A reconnect means messages to the counting subscription may be lost: say so.
    for await (const status of bus.status()) if (status.type !== 'ping') console.error(`bench NATS connection: ${JSON.stringify(status)}`);
  })();

  const capture = service('apps/capture/bin/kappa-capture.js', ['--cgroup', cgroup.path, '--interval', values.interval, '--state-dir', join(work, 'capture')]);
  await waitFor(capture, /"msg":"capturing"/, 'kappa-capture');
  // After capture: a listener opened before capture attached has no owner in socket storage,
  // so its accepted connections would carry no process (see the paragraph in BENCHMARKS.md).
  const server = spawnIn(pair.b.netns, cgroup, churn, ['server', pair.b.ipv4, String(serverPort)]);
  children.push(server);
  await waitFor(server, /listening/, 'churn server');
  const enricher = service('apps/process-enricher/bin/kappa-process-enricher.js', ['--cri-socket', 'none']);
  await waitFor(enricher, /"msg":"ready"/, 'kappa-process-enricher');

  const rows: (string | number)[][] = [];
  let made = 0;
  host = 11;
  for (const [i, rate] of rates.entries()) {
    const t0 = performance.now();
    const cpu0 = [cpuSeconds(capture.pid!), cpuSeconds(enricher.pid!)];
    const out = await runIn(pair.a.netns, cgroup, churn, ['client', '10.77.42.', String(host), String(hostsPerPhase[i]), pair.b.ipv4, String(serverPort), `${rate}:${seconds}`]);
    host += hostsPerPhase[i]!;
    const phase = JSON.parse(out) as { connections: number; failed: number; seconds: number };
    made += phase.connections + phase.failed;
    // The phase ends when at least two records (client end, server end) per connection made so
    // far have arrived and nothing more came for two intervals, or nothing at all for 15 s.
    // CPU and time are taken at the last arrival, so the quiet wait is not in the window.
    let last = -1;
    let lastAt = performance.now();
    let cpu = [0, 0];
    for (;;) {
      if (arrivedRecords !== last) {
        [last, lastAt] = [arrivedRecords, performance.now()];
        cpu = [cpuSeconds(capture.pid!) - cpu0[0]!, cpuSeconds(enricher.pid!) - cpu0[1]!];
      }
      const quiet = performance.now() - lastAt;
      if ((arrivedRecords >= 2 * made && quiet > 2 * intervalMs) || quiet > 15_000) break;
      await sleep(100);
    }
    const wall = (lastAt - t0) / 1000;
    decodeArrived();
    const percent = (s: number) => ((s / wall) * 100).toFixed(0);
    const mib = (pid: number) => (rssBytes(pid) / 2 ** 20).toFixed(0);
    rows.push([
      rate.toLocaleString('en-US'),
      Math.round(phase.connections / phase.seconds).toLocaleString('en-US'),
      phase.failed ? `${made.toLocaleString('en-US')} (${phase.failed} failed)` : made.toLocaleString('en-US'),
      seen.src.size.toLocaleString('en-US'),
      seen.dst.size.toLocaleString('en-US'),
      wall.toFixed(1),
      percent(cpu[0]!),
      mib(capture.pid!),
      percent(cpu[1]!),
      mib(enricher.pid!),
    ]);
    console.error(`phase ${rate}/s: ${JSON.stringify(phase)}; enriched conversations src ${seen.src.size} dst ${seen.dst.size} of ${made}`);
  }

  const unpaired = [...[...seen.src].filter(([k]) => !seen.dst.has(k)), ...[...seen.dst].filter(([k]) => !seen.src.has(k))];
  for (const [key, said] of unpaired.slice(0, 10)) console.error(`only one end of ${key}: ${said.join(' | ')}`);
  const markdown = [
    `Phases of ${seconds} s; capture drains every ${values.interval}. "Conversations" are the distinct client (address, port) pairs among the records to the server port that reached \`kappa.flow.enriched.${node}\`, counted per vantage: client end (SRC) and server end (DST). Totals are cumulative; a phase's window runs from its first connection to the last record of its connections arriving on that subject; CPU is over that window.`,
    '',
    table(
      ['rate asked, conn/s', 'rate achieved, conn/s', 'connections made (total)', 'enriched conversations, client end', 'enriched conversations, server end', 'phase window, s', 'capture CPU, % of a core', 'capture RSS, MiB', 'enricher CPU, % of a core', 'enricher RSS, MiB'],
      rows,
    ),
    '',
    `${seen.records.toLocaleString('en-US')} records in all (a connection that spans a drain gives one record per interval per end); ${seen.unspecified} with no vantage; ${unpaired.length} conversations seen at one end only; the enricher filled in the local process name on ${seen.withProcess.src.toLocaleString('en-US')} client-end and ${seen.withProcess.dst.toLocaleString('en-US')} server-end records.`,
    '',
    machineLine(),
  ].join('\n');
  console.log(markdown);
  writeSection('churn', markdown);
  await subscription.drain();
  await counting;
  await bus.close();
} finally {
  await stopAll(children);
  await nats.stop();
  pair.destroy();
  cgroup.destroy();
  rmSync(work, { recursive: true, force: true });
}
