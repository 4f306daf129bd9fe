// `npm run bench`: builds once, then runs every benchmark scenario's npm script in turn and prints
// one line per scenario with its wall time. `npm run bench -- pipeline churn` runs only those.
// A failing scenario does not stop the others; the exit code is non-zero if any failed.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from './lib/report.mjs';

/** Scenario name → npm script, in the order they run. */
const scenarios = [
  ['idle', 'bench:idle'],
  ['datapath', 'bench:datapath'],
  ['churn', 'bench:churn'],
  ['state', 'bench:state'],
  ['state-joiner', 'bench:state-joiner'],
  ['pipeline', 'bench:pipeline'],
  ['exporter', 'bench:exporter'],
  ['exporter-sinks', 'bench:exporter-sinks'],
  ['console', 'bench:console'],
];

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !scenarios.some(([s]) => s === name));
if (unknown.length > 0) {
  console.error(`unknown scenario: ${unknown.join(', ')} (known: ${scenarios.map(([s]) => s).join(', ')})`);
  process.exit(2);
}
const chosen = scenarios.filter(([name]) => wanted.length === 0 || wanted.includes(name));
const scripts = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')).scripts ?? {};

const run = (command, args) => {
  const started = Date.now();
  const { status, signal } = spawnSync(command, args, { cwd: repoRoot, stdio: 'inherit' });
  return { ok: status === 0, code: status ?? signal, seconds: (Date.now() - started) / 1000 };
};

// Every scenario runs the built services (dist/main.js), so build them once here.
const build = run('npx', ['nx', 'run-many', '-t', 'build']);
if (!build.ok) {
  console.error(`bench: build failed (${build.code}); no scenario run`);
  process.exit(1);
}

const summary = [];
for (const [name, script] of chosen) {
  if (!scripts[script]) {
    summary.push(`${name.padEnd(13)} not present (no "${script}" script in package.json)`);
    continue;
  }
  console.log(`\n=== bench ${name}: npm run ${script}`);
  const result = run('npm', ['run', '--silent', script]);
  summary.push(`${name.padEnd(13)} ${result.ok ? 'ok    ' : `FAILED (${result.code})`} ${result.seconds.toFixed(0).padStart(5)} s  npm run ${script}`);
  if (!result.ok) process.exitCode = 1;
}
console.log(`\nbench summary (build ${build.seconds.toFixed(0)} s; tables are in BENCHMARKS.md):\n${summary.join('\n')}`);
