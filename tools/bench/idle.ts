// What kappa costs when nothing happens: every service as built, connected to real nats-server,
// redis-server and the test Kubernetes API (an empty cluster), with no traffic in capture's cgroup.
// Per process over `--seconds`: CPU as % of one core (utime + stime from /proc) and how often its
// threads woke up (voluntary context switches, /proc/<pid>/task/*/status).
// A node runs capture and process-enricher all the time, so their idle cost is paid on every node.
//   npm run bench:idle -- [--seconds 60]      (root; after `npm run build`)
// Writes section `idle`.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TestCgroup, startKubeApiServer, startNatsServer, startRedisServer } from '@kappa/testing';
import { startService, stopService } from '../../tests/e2e/src/services.js';
import type { RunningService } from '../../tests/e2e/src/services.js';
import { requireBuild, waitFor } from './lib/processes.js';
import { cpuSeconds, machineLine, table, writeSection } from './lib/report.mjs';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '60' }, warmup: { type: 'string', default: '15' } } });
const seconds = Number(values.seconds);
const warmup = Number(values.warmup);
if (!(seconds > 0) || !(warmup >= 0)) throw new Error('--seconds and --warmup take a number of seconds (--seconds above 0)');
const apps = ['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'] as const;
requireBuild('bench:idle', [...apps.map((app) => `apps/${app}/dist/main.js`), 'bpf/.output/kappa.bpf.o']);

const work = mkdtempSync(join(tmpdir(), 'kbi-idle-'));
const node = `kbi-idle-${process.pid}`;
const cgroup = new TestCgroup(node);
const [nats, redis, api] = await Promise.all([startNatsServer(), startRedisServer(), startKubeApiServer()]);
const services: RunningService[] = [];

/** Voluntary context switches of all of a process's threads: each one is a sleep, so a wakeup follows. */
function wakeups(pid: number): number {
  let sum = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    sum += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8'))?.[1] ?? 0);
  }
  return sum;
}

try {
  const bus = [`--nats-url=${nats.url}`, '--metrics-port=0'];
  const start = (app: string, args: string[]) => {
    const service = startService(app, app, [...bus, ...args], work);
    services.push(service);
    return service;
  };
  const capture = start('capture', [`--cgroup=${cgroup.path}`, `--node=${node}`, '--interval=1s', `--state-dir=${join(work, 'capture-state')}`]);
  start('process-enricher', [`--node=${node}`, '--cri-socket=none']);
  start('k8s-tagger', [`--kubeconfig=${api.kubeconfigPath}`, '--grpc-port=0']);
  start('joiner', [`--redis-url=${redis.url}`, '--interval=1s']);
  start('exporter', [`--jsonl=${join(work, 'flows.jsonl')}`, `--store-dir=${join(work, 'store')}`]);
  await waitFor(capture.child, /"msg":"capturing"/, 'capture to attach');
  await new Promise((r) => setTimeout(r, warmup * 1000));

  const processes = [...services.map((s) => ({ name: s.app, pid: s.child.pid! })), { name: 'nats-server', pid: nats.process.pid! }, { name: 'redis-server', pid: redis.process.pid! }];
  const before = processes.map((p) => ({ cpu: cpuSeconds(p.pid), wakeups: wakeups(p.pid) }));
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const rows = processes.map((p, i) => {
    const cpu = ((cpuSeconds(p.pid) - before[i]!.cpu) / seconds) * 100;
    const perSecond = (wakeups(p.pid) - before[i]!.wakeups) / seconds;
    return [p.name, cpu.toFixed(2), perSecond.toFixed(0)];
  });
  const perNode = processes.slice(0, 2).reduce((sum, p, i) => sum + (cpuSeconds(p.pid) - before[i]!.cpu), 0);
  const markdown = [
    `Command: \`npm run bench:idle -- --seconds ${seconds}\`. Every service as built, idle for ${seconds} s after ${warmup} s of warm-up: no traffic in capture's cgroup (1 s interval), an empty cluster, real nats-server and redis-server.`,
    '',
    table(['process', 'CPU, % of one core', 'wakeups per second (all its threads)'], rows),
    '',
    `On every node (capture + process-enricher): ${((perNode / seconds) * 100).toFixed(2)} % of one core, idle.`,
    '',
    machineLine(),
  ].join('\n');
  console.log(markdown);
  writeSection('idle', markdown);
} finally {
  await Promise.all(services.map((s) => stopService(s)));
  await Promise.all([nats.stop(), redis.stop(), api.close()]);
  cgroup.destroy();
  rmSync(work, { recursive: true, force: true });
}
