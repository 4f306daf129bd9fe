// Runs real kappa processes for the tests (the CLI, the exporter) from their esbuild bundles.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { NO_CONFIG_FILE, childEnv } from '@kappa/testing';

const root = join(import.meta.dirname, '../../..');
export const cliMain = join(root, 'apps/cli/dist/main.js');
export const exporterMain = join(root, 'apps/exporter/dist/main.js');

/**
 * Bundles the CLI and the exporter (npm run build: esbuild, ~1 s) so each test process starts as
 * fast as the installed command does, instead of compiling TypeScript on every start.
 */
export function buildApps(): void {
  for (const app of ['cli', 'exporter']) {
    execFileSync(process.execPath, [join(root, 'tools/build-app.mjs')], { cwd: join(root, 'apps', app), stdio: 'inherit' });
  }
}

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The CLI's environment: no config file unless the test names one (KAPPA_CONFIG '' too: the CLI
 * would otherwise find the checkout's .kappa/up.json while a developer's `npm run up` runs).
 */
function cliEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const merged = { ...childEnv(), KAPPA_CONFIG: NO_CONFIG_FILE, ...env };
  if (!merged.KAPPA_CONFIG) merged.KAPPA_CONFIG = NO_CONFIG_FILE;
  return merged;
}

/** Runs `kappa <args>` to completion. */
export function runKappa(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliMain, ...args], { env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kappa ${args.join(' ')} did not finish in ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Starts a long-running process (kappa observe --follow, the exporter) and collects its output. */
export function startProcess(script: string, args: string[]): { child: ChildProcess; stdout: () => string; stderr: () => string } {
  const child = spawn(process.execPath, [script, ...args], { env: cliEnv({}), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return { child, stdout: () => out, stderr: () => err };
}

export async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error(`${what} not met in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
