// Capture's drain cost: N one-datagram UDP conversations in one interval, then the SIGINT drain
// (batch lookup-and-delete, decode, FlowRecord, JSON to /dev/null). Prints the drain's wall
// time and CPU time from capture's debug log (| conversations | wall ms | CPU ms | CPU µs each |). Usage (root, after `npm run build`):
//   npx tsx tools/bench/capture-drain.ts [CONVERSATIONS=100000]
import { spawn } from 'node:child_process';
import { openSync } from 'node:fs';
import { TestCgroup, VethPair, run, runIn } from '@kappa/testing';

const conversations = Number(process.argv[2] ?? 100_000);
const cgroup = new TestCgroup('kc-bench-drain');
const nodes = cgroup.child('nodes');
const pair = await VethPair.create({ prefix: 'kc-', subnet: 91, cgroup: nodes });
try {
  run('ip', ['netns', 'exec', pair.a.netns, 'ip', 'neigh', 'replace', '10.77.91.99', 'lladdr', pair.b.mac, 'dev', pair.a.ifname, 'nud', 'permanent']);
  const capture = spawn(process.execPath, ['apps/capture/bin/kappa-capture.js', '--stdout', '--metrics-port', '0', '--log-level', 'debug', '--interval', '10m', '--cgroup', cgroup.path], {
    stdio: ['ignore', openSync('/dev/null', 'w'), 'pipe'],
  });
  let log = '';
  await new Promise<void>((resolve) => capture.stderr!.on('data', (c: Buffer) => (log += c.toString()).includes('"msg":"capturing"') && resolve()));
  await runIn(pair.a.netns, nodes, process.execPath, ['apps/capture/test/fixtures/traffic.mjs', 'udp-many', '10.77.91.99', String(conversations)]);
  const exited = new Promise((resolve) => capture.once('exit', resolve));
  capture.kill('SIGINT');
  await exited;
  const drained = log.split('\n').filter((l) => l.includes('"msg":"drained"')).map((l) => JSON.parse(l) as { conversations: number; durationMs: number; cpuMs: number });
  for (const d of drained) console.log(`| ${d.conversations} | ${d.durationMs.toFixed(0)} | ${d.cpuMs.toFixed(0)} | ${((d.cpuMs * 1000) / Math.max(1, d.conversations)).toFixed(1)} |`);
} finally {
  pair.destroy();
  nodes.destroy();
  cgroup.destroy();
}
