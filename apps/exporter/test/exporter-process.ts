// kappa-exporter as a real process (dist/main.js) for the integration tests: started on a given
// nats-server, waited for until it logs that it started, stopped with SIGTERM.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { connectBus } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';

const appRoot = join(import.meta.dirname, '..');

export interface ExporterProcess {
  child: ChildProcess;
  metricsPort: number;
  stderr: () => string;
  metrics(): Promise<string>;
  stop(): Promise<number | null>;
}

/** Builds dist/main.js, then starts a nats-server with kappa's streams and a bus (the tests' publisher) on it. */
export async function buildAndStartBus(): Promise<{ nats: TestServer; bus: Bus }> {
  execFileSync(process.execPath, [join(appRoot, '../../tools/build-app.mjs')], { cwd: appRoot, stdio: 'inherit' });
  const nats = await startNatsServer();
  const bus = await connectBus({ servers: [nats.url], name: 'test', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
  await bus.ensureStreams();
  return { nats, bus };
}

/** Polls condition every 100 ms until it holds; throws after timeoutMs naming `what`. */
export async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`${what} not met in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts the exporter on natsUrl with its own /metrics port and no Observer, plus `args` (which
 * come last, so `--observer=true` turns it on); the child goes into `children` so that the
 * test's afterEach can kill what a failed test left.
 */
export async function startExporterProcess(natsUrl: string, args: string[], children: ChildProcess[]): Promise<ExporterProcess> {
  const metricsPort = await freePort();
  const child = spawn(process.execPath, [join(appRoot, 'dist/main.js'), `--nats-url=${natsUrl}`, `--metrics-port=${metricsPort}`, '--observer=false', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  await until(() => err.includes('exporter started') || child.exitCode !== null, 60_000);
  if (child.exitCode !== null) throw new Error(`exporter exited: ${err}`);
  return {
    child,
    metricsPort,
    stderr: () => err,
    metrics: async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(),
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve(child.exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill('SIGTERM');
      }),
  };
}

/** Sum of a counter's samples in Prometheus text, optionally only those whose labels match. */
export function metricSum(text: string, name: string, labels = ''): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .filter((l) => l.includes(labels))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}
