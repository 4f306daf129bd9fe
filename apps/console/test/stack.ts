// The console's real stack, shared by its browser test and `npm run bench:console`: nats-server,
// the exporter with its flow store and a TLS + token Observer, the console over HTTPS with the
// same token, and Debian's Chromium (playwright-core, no browser download). Everything on free
// ports, in a temp folder of this process; stop() removes it all.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { connectBus } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { IpProtocol, Vantage, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { childEnv, freePort, makeTlsMaterial, startNatsServer } from '@kappa/testing';
import type { TestServer, TlsMaterial } from '@kappa/testing';

export const repoRoot = join(import.meta.dirname, '../../..');
export const SECOND = 1_000_000_000n;
export const MINUTE = 60n * SECOND;

export interface ConsoleStack {
  bus: Bus;
  /** The nats-server the exporter uses. */
  natsUrl: string;
  browser: Browser;
  /** https://127.0.0.1:<port>/ */
  url: string;
  token: string;
  /** What the exporter and the console printed so far. */
  logs(): string;
  /** A new browser context (1280×800, the test CA accepted). */
  newContext(): Promise<BrowserContext>;
  /** GET an API path with the token, parsed as JSON. */
  api<T>(path: string): Promise<T>;
  stop(): Promise<void>;
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`${what} not met in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
export { until as waitUntil };

/** Builds the exporter and the console (unless build is false) and starts the stack. */
export async function startConsoleStack(options: { build?: boolean; exporterInstance?: string } = {}): Promise<ConsoleStack> {
  if (options.build !== false) {
    execFileSync(process.execPath, [join(repoRoot, 'tools/build-app.mjs')], { cwd: join(repoRoot, 'apps/exporter'), stdio: 'inherit' });
    execFileSync(process.execPath, [join(repoRoot, 'apps/console/build.mjs')], { cwd: join(repoRoot, 'apps/console'), stdio: 'inherit' });
  }
  // Node's fetch (the API checks) trusts the console's test certificate no more than the browser
  // does (ignoreHTTPSErrors there): the link is TLS, its CA is the test's own.
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  const token = `console-token-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const children: ChildProcess[] = [];
  const output = new Map<ChildProcess, string>();
  let nats: TestServer | undefined;
  let bus: Bus | undefined;
  let tls: TlsMaterial | undefined;
  let browser: Browser | undefined;
  let consolePort = 0;
  const dir = mkdtempSync(join(tmpdir(), `kx-console-${process.pid}-`));
  const logs = () => [...output.entries()].map(([child, text]) => `${child.spawnargs[1]}:\n${text}`).join('\n');
  const stop = async () => {
    await browser?.close();
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((child) => (child.exitCode === null && child.signalCode === null ? new Promise((r) => child.once('exit', r)) : undefined)));
    await bus?.close();
    await nats?.stop();
    rmSync(dir, { recursive: true, force: true });
    tls?.remove();
  };
  const start = (script: string, args: string[]): ChildProcess => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
    output.set(child, '');
    const keep = (d: Buffer) => output.set(child, (output.get(child) ?? '') + d.toString());
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    children.push(child);
    return child;
  };
  try {
    tls = makeTlsMaterial();
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    nats = await startNatsServer();
    bus = await connectBus({ servers: [nats.url], name: 'test', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
    await bus.ensureStreams();
    const [observerPort, webPort] = await Promise.all([freePort(), freePort()]);
    consolePort = webPort;
    const exporter = start(join(repoRoot, 'apps/exporter/dist/main.js'), [
      `--nats-url=${nats.url}`,
      '--observer-host=127.0.0.1',
      `--observer-port=${observerPort}`,
      `--observer-tls-cert=${tls.serverCertFile}`,
      `--observer-tls-key=${tls.serverKeyFile}`,
      `--observer-tls-client-ca=${tls.caFile}`,
      `--observer-token-file=${tokenFile}`,
      '--metrics-port=0',
      `--jsonl=${join(dir, 'flows.jsonl')}`,
      `--instance=${options.exporterInstance ?? 'console-test-exporter'}`,
    ]);
    const web = start(join(repoRoot, 'apps/console/dist/main.js'), [
      '--host=127.0.0.1',
      `--port=${consolePort}`,
      `--https-cert=${tls.serverCertFile}`,
      `--https-key=${tls.serverKeyFile}`,
      `--server=127.0.0.1:${observerPort}`,
      `--tls-ca=${tls.caFile}`,
      `--tls-cert=${tls.clientCertFile}`,
      `--tls-key=${tls.clientKeyFile}`,
      `--token-file=${tokenFile}`,
    ]);
    await until(() => (output.get(exporter) ?? '').includes('exporter started'), 60_000, `exporter start: ${output.get(exporter)}`);
    await until(() => (output.get(web) ?? '').includes('console started'), 60_000, `console start: ${output.get(web)}`);
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  } catch (error) {
    const text = logs();
    await stop();
    throw new Error(`${String(error)}\n${text}`);
  }
  const url = `https://127.0.0.1:${consolePort}/`;
  const ready = { bus: bus!, browser: browser!, natsUrl: nats!.url };
  return {
    ...ready,
    url,
    token,
    logs,
    newContext: () => ready.browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: true }),
    api: async <T>(path: string) => {
      const response = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
      if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
      return (await response.json()) as T;
    },
    stop,
  };
}

/** A generated workload of the large map: 25 namespaces gen-<i % 25>, workload w-<i>. */
export interface GeneratedWorkload {
  ns: string;
  workload: string;
  pod: string;
  ip: string;
}

export const generatedWorkload = (i: number, prefix = 'gen'): GeneratedWorkload => ({
  ns: `${prefix}-${i % 25}`,
  workload: `w-${i}`,
  pod: `w-${i}-0`,
  ip: `10.${100 + (i >> 8)}.${i & 255}.1`,
});

/**
 * `edges` distinct workload pairs among `workloads` workloads (each talks to edges/workloads
 * others, never to itself; edges / workloads ≤ 13 keeps the pairs distinct), one initiator
 * record per pair, all ending within `edges` ns after `at`. Record i has bytes 100 + i.
 */
export function generatedMap(at: bigint, workloads: number, edges: number, prefix = 'gen'): { records: FlowRecord[]; pairs: [GeneratedWorkload, GeneratedWorkload][] } {
  const records: FlowRecord[] = [];
  const pairs: [GeneratedWorkload, GeneratedWorkload][] = [];
  const endpoint = (p: GeneratedWorkload, port: number) => ({
    ip: p.ip,
    port,
    process: { name: 'gen' },
    kube: { objectName: p.pod, objectNamespace: p.ns, objectType: 'pod', workloadName: p.workload, workloadKind: 'Deployment' },
  });
  for (let e = 0; e < edges; e++) {
    const from = generatedWorkload(e % workloads, prefix);
    const to = generatedWorkload(((e % workloads) + 1 + Math.floor(e / workloads) * 37) % workloads, prefix);
    pairs.push([from, to]);
    records.push(
      newFlowRecord({
        id: `${prefix}${e}`,
        node: 'node-g',
        vantage: Vantage.SRC,
        protocol: IpProtocol.TCP,
        startNs: at - SECOND,
        endNs: at + BigInt(e),
        src: endpoint(from, 30000),
        dst: endpoint(to, 80),
        bytes: BigInt(100 + e),
        reverseBytes: 10n,
        packets: 1n,
        joined: true,
      }),
    );
  }
  return { records, pairs };
}

/** When the page's map was first drawn and when each step of its load ended (ms since navigation). */
export function mapRenderTimes(page: Page): Promise<{ renderedAt: number; timings: Record<string, number> }> {
  return page.evaluate(() => ({ renderedAt: window.kappaMap!.renderedAt, timings: window.kappaMapTimings ?? {} }));
}
