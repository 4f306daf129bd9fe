// Runs kappa on this host: a private nats-server (JetStream) and redis-server on loopback on
// non-default ports, then the five services as separate processes with prefixed, coloured logs.
// Every link is mutual TLS with a login (a local CA in .kappa/tls, made on the first run; secrets
// in .kappa/credentials.json) unless `npm run up -- --plaintext` or KAPPA_PLAINTEXT=1. Ports:
// upPorts in up-plan.mjs (KAPPA_UP_*_PORT).
// Ctrl-C stops everything in order: capture first (it drains once more while NATS still runs,
// detaches its BPF programs and unpins its maps), the rest of the pipeline, then Redis and NATS.
// The children run in process groups of their own, so the terminal's Ctrl-C (sent to the whole
// foreground group) reaches only this script, which then stops them in that order.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { ensureCredentials, ensureNatsKeys, ensureTlsMaterial, upPlan, upPorts, wantsCluster, wantsPlaintext, writePlanFiles } from './up-plan.mjs';
import { identities } from '../infra/nats/permissions.mjs';

const root = resolve(import.meta.dirname, '..');
// KAPPA_UP_STATE: another state folder (a test beside a developer's running kappa).
const state = resolve(process.env.KAPPA_UP_STATE ?? resolve(root, '.kappa'));
let ports;
try {
  ports = upPorts(process.env);
} catch (error) {
  console.error(`kappa: ${error.message}`);
  process.exit(1);
}
const { nats: natsPort, redis: redisPort } = ports;
const jsonl = process.env.KAPPA_JSONL ?? resolve(state, 'flows.jsonl');
const node = process.env.KAPPA_NODE ?? hostname();
mkdirSync(resolve(state, 'nats'), { recursive: true });
mkdirSync(resolve(state, 'redis'), { recursive: true });
writeFileSync(resolve(state, 'up.pid'), String(process.pid));
const plaintext = wantsPlaintext(process.argv.slice(2), process.env);
// --cluster: 3 NATS servers (R3 streams), a Redis Cluster of 6 (3 primaries, 3 replicas), and 2
// replicas of k8s-tagger, joiner and exporter.
const cluster = wantsCluster(process.argv.slice(2), process.env);
const partitions = Number(process.env.KAPPA_PARTITIONS ?? 16);
const credentials = ensureCredentials(state);
const plan = upPlan({
  root,
  state,
  natsPort,
  redisPort,
  taggerPort: ports.tagger,
  observerPort: ports.observer,
  metricsPort: ports.metrics,
  consolePort: ports.console,
  cluster,
  natsClusterPort: ports.natsCluster,
  plaintext,
  credentials,
  natsKeys: ensureNatsKeys(state, identities({ nodes: [node] })),
  partitions,
  // KAPPA_UP_LISTEN=0.0.0.0 exposes the console, the Observer, KubeTags and /metrics beyond this host.
  listenHost: process.env.KAPPA_UP_LISTEN ?? '127.0.0.1',
  tls: plaintext ? undefined : ensureTlsMaterial(root, state),
  jsonl,
  node,
});
const { natsConfigFile } = writePlanFiles(state, plan);
for (const warning of plan.warnings) console.log(`\x1b[31mkappa: ${warning}\x1b[0m`);

const colours = [36, 33, 35, 32, 34, 31, 90];
const children = [];

let stopping = false;
async function stopAll() {
  if (stopping) return;
  stopping = true;
  console.log('\nkappa: stopping (capture first, so it drains and detaches its BPF programs)…');
  // Reverse start order: console, capture, process-enricher, k8s-tagger, joiner, exporter, redis, nats.
  for (const entry of [...children].reverse()) {
    entry.stopping = true;
    if (entry.child.exitCode !== null || entry.child.signalCode !== null) continue;
    const exited = new Promise((r) => entry.child.once('exit', r));
    entry.child.kill('SIGTERM');
    const timer = setTimeout(() => entry.child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  }
  rmSync(resolve(state, 'up.pid'), { force: true });
  rmSync(resolve(state, 'up.json'), { force: true });
  console.log('kappa: stopped');
  process.exit(0);
}
// From the first child on, a stop stops them all (SIGHUP: the terminal closed; the children, in
// their own groups, would not hear it).
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => void stopAll());

// nats-server and redis-server announce a lot at start; show only their warnings and errors.
const serverNoise = /\[INF\]|^\d+:[CM] .* [*.-] |oO0OoO0OoO0Oo|^\s*$/;

function prefixLines(name, colour, stream) {
  const label = `\x1b[${colour}m${name.padEnd(16)}\x1b[0m│ `;
  const quiet = name.endsWith('-server') || name.startsWith('up-');
  createInterface({ input: stream }).on('line', (line) => {
    if (quiet && serverNoise.test(line)) return;
    let text = line;
    try {
      // pino JSON → "level message {fields}"
      const { level, time, msg, service, pid, hostname: _h, name: _n, ...rest } = JSON.parse(line);
      const levelName = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }[level] ?? level;
      const fields = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : '';
      text = `${levelName} ${msg ?? ''}${fields}`;
    } catch {
      // not JSON: print as is
    }
    process.stdout.write(`${label}${text}\n`);
  });
}

function start(name, command, args, env = {}) {
  const colour = colours[children.length % colours.length];
  // detached: a process group of its own, out of reach of the terminal's Ctrl-C (see the top).
  const child = spawn(command, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const entry = { name, child, stopping: false };
  prefixLines(name, colour, child.stdout);
  prefixLines(name, colour, child.stderr);
  child.on('exit', (code, signal) => {
    if (!entry.stopping) {
      process.stdout.write(`\x1b[31m${name} exited unexpectedly (${code ?? signal}); the rest keeps running. Fix the cause shown above and run npm run up again.\x1b[0m\n`);
    }
  });
  child.on('error', (error) => process.stdout.write(`\x1b[31mcannot start ${name}: ${error.message}\x1b[0m\n`));
  children.push(entry);
  return entry;
}

async function waitForOutput(entry, pattern, timeoutMs = 15_000) {
  await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${entry.name} did not start in ${timeoutMs} ms`)), timeoutMs);
    const check = (d) => {
      if (pattern.test(d.toString())) {
        clearTimeout(timer);
        resolvePromise();
      }
    };
    entry.child.stdout.on('data', check);
    entry.child.stderr.on('data', check);
    entry.child.once('exit', () => reject(new Error(`${entry.name} exited during start`)));
  });
}

const servers = cluster
  ? [
      ...plan.natsServers.map((server) => [start(server.name, 'nats-server', ['-c', server.configFile]), /Server is ready/]),
      ...plan.redisNodes.map((node) => [start(node.name, 'redis-server', node.args), /Ready to accept connections/]),
    ]
  : [
      [start('nats-server', 'nats-server', ['-c', natsConfigFile]), /Server is ready/],
      [start('redis-server', 'redis-server', plan.redisArgs), /Ready to accept connections/],
    ];
try {
  await Promise.all(servers.map(([entry, ready]) => waitForOutput(entry, ready)));
} catch (error) {
  console.error(`kappa: ${error.message} (is port ${natsPort} or ${redisPort} taken? set KAPPA_UP_NATS_PORT / KAPPA_UP_REDIS_PORT)`);
  for (const c of children) c.child.kill('SIGTERM');
  process.exit(1);
}

if (cluster) {
  // The six Redis nodes become one cluster once (their nodes.conf keeps it across restarts).
  const cli = (node, ...args) => execFileSync('redis-cli', [...node.cli, ...args], { env: { ...process.env, ...plan.redisCli.env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    if (/^cluster_known_nodes:1\r?$/m.test(cli(plan.redisNodes[0], 'cluster', 'info'))) {
      execFileSync('redis-cli', plan.redisCli.create, { env: { ...process.env, ...plan.redisCli.env }, stdio: ['ignore', 'ignore', 'inherit'] });
    }
    const deadline = Date.now() + 30_000;
    while (!plan.redisNodes.every((node) => cli(node, 'cluster', 'info').includes('cluster_state:ok'))) {
      if (Date.now() > deadline) throw new Error('the Redis Cluster is not ok after 30 s');
      await new Promise((r) => setTimeout(r, 500));
    }
  } catch (error) {
    console.error(`kappa: cannot make the Redis Cluster: ${error.message}`);
    for (const c of children) c.child.kill('SIGTERM');
    process.exit(1);
  }
}

// The streams are made by the admin identity, once; no service may create or delete them.
try {
  execFileSync(process.execPath, [resolve(root, 'apps/cli/dist/main.js'), 'streams'], { cwd: root, env: { ...process.env, ...plan.adminEnv, KAPPA_CONFIG: '' }, stdio: ['ignore', 'inherit', 'inherit'] });
} catch {
  console.error('kappa: cannot create the JetStream streams (see above)');
  for (const c of children) c.child.kill('SIGTERM');
  process.exit(1);
}
// Started from the end of the pipeline, so capture (last) publishes into a pipeline that runs,
// and stops first.
for (const p of [...plan.processes].reverse()) start(p.name, process.execPath, [resolve(root, `apps/${p.service}/dist/main.js`)], p.env);
start('console', process.execPath, [resolve(root, 'apps/console/dist/main.js'), ...plan.consoleArgs]);

// The CLI reads this while up runs, so `npx kappa status` finds this NATS (and its certificates
// and login) without flags.
writeFileSync(resolve(state, 'up.json'), `${JSON.stringify(plan.upJson, null, 2)}\n`, { mode: 0o600 });
console.log(`\nkappa is up on ${node}: flows go to ${jsonl}${cluster ? ` and ${plan.processes.filter((p) => p.folder).map((p) => `${p.folder}/flows.jsonl`).join(', ')}` : ''}`);
if (cluster) {
  console.log(`cluster: NATS ${plan.natsServers.map((n) => `${n.name} 127.0.0.1:${n.port}`).join(', ')} (streams R${plan.natsServers.length}); Redis Cluster on 127.0.0.1:${redisPort}-${redisPort + plan.redisNodes.length - 1} (3 primaries, 3 replicas); ${plan.processes.map((p) => p.name).join(', ')}`);
  console.log('the console and kappa observe read exporter-0 (each exporter replica holds the flows it exported)');
}
console.log(plaintext ? 'links: PLAINTEXT (--plaintext)' : `links: mutual TLS with the local CA in ${resolve(state, 'tls')}, logins in ${resolve(state, 'credentials.json')}`);
console.log(`console: ${plan.consoleUrl}#token=${credentials.grpcToken}${plaintext ? '' : `   (the certificate is from the local CA ${resolve(state, 'tls/ca.pem')}: trust it, or accept the warning)`}`);
console.log('watch them with: npx kappa observe --follow   ·   top talkers: npx kappa top   ·   health: npx kappa status   ·   stop: Ctrl-C\n');
