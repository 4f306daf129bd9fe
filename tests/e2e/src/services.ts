// The kappa services run as real processes from their built bundles, with logs kept per service
// so a failing test can show what a stage said.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { NO_CONFIG_FILE, childEnv } from '@kappa/testing';

export const workspaceRoot = resolve(import.meta.dirname, '../../..');

export interface RunningService {
  name: string;
  app: string;
  args: string[];
  logFile: string;
  child: ChildProcess;
  restarts: number;
  /** Node flags before the bundle (e.g. --max-old-space-size). */
  nodeArgs: string[];
  /** Every exit of this service's processes, and whether the test caused it (stop, kill). */
  exits: ServiceExit[];
  /** Set while the test stops or kills the current process. */
  stopping: boolean;
}

export interface ServiceExit {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  byTest: boolean;
}

/** Exits the test did not cause: a crash, an exit on its own (no orchestrator restarts it here). */
export function unexpectedExits(service: RunningService): ServiceExit[] {
  return service.exits.filter((e) => !e.byTest);
}

export function startService(name: string, app: string, args: string[], logDir: string, nodeArgs: string[] = []): RunningService {
  const logFile = join(logDir, `${name}.log`);
  const service: RunningService = { name, app, args, logFile, child: undefined as unknown as ChildProcess, restarts: 0, nodeArgs, exits: [], stopping: false };
  launch(service);
  return service;
}

function launch(service: RunningService): void {
  const log = createWriteStream(service.logFile, { flags: 'a' });
  const child = spawn(process.execPath, [...service.nodeArgs, join(workspaceRoot, `apps/${service.app}/dist/main.js`), ...service.args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...childEnv(), KAPPA_LOG_LEVEL: 'info' },
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  service.stopping = false;
  child.once('exit', (code, signal) => service.exits.push({ pid: child.pid, code, signal, byTest: service.stopping }));
  service.child = child;
}

export function isRunning(service: RunningService): boolean {
  return service.child.exitCode === null && service.child.signalCode === null;
}

export async function stopService(service: RunningService, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (!isRunning(service)) return service.child.exitCode;
  const exited = new Promise<number | null>((r) => service.child.once('exit', (code) => r(code)));
  service.stopping = true;
  service.child.kill(signal);
  const timer = setTimeout(() => service.child.kill('SIGKILL'), 30_000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

/** SIGKILL, then start again with the same arguments (a crash and a restart by the orchestrator). */
export async function crashAndRestart(service: RunningService): Promise<void> {
  await stopService(service, 'SIGKILL');
  service.restarts++;
  launch(service);
}

export function logTail(service: RunningService, lines = 30): string {
  try {
    return readFileSync(service.logFile, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Runs the kappa CLI and returns its exit code and output. */
/**
 * Runs this checkout's built `kappa` CLI with no config file (not the checkout's .kappa/up.json,
 * which it would find while a developer's `npm run up` runs here); or, with `clone`, that
 * clone's CLI in the clone, finding its .kappa/up.json as a user's `npx kappa` would.
 */
export async function kappa(args: string[], clone?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { KAPPA_CONFIG: _config, ...inherited } = childEnv();
  const child = clone
    ? spawn(process.execPath, [join(clone, 'apps/cli/dist/main.js'), ...args], { cwd: clone, env: inherited, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, [join(workspaceRoot, 'apps/cli/dist/main.js'), ...args], { env: { ...inherited, KAPPA_CONFIG: NO_CONFIG_FILE }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  return { code, stdout, stderr };
}
