// Process plumbing shared by the datapath, churn and state scenarios: wait for a line, wait for
// an exit, compile a C helper, refuse to run without a build, and a median.
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './report.mjs';

export function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Resolves when `pattern` shows up on the child's stderr or stdout; rejects if it exits first. */
export function waitFor(child: ChildProcess, pattern: RegExp, what: string): Promise<void> {
  let seen = '';
  return new Promise((resolve, reject) => {
    const look = (chunk: Buffer) => {
      seen += chunk.toString();
      if (pattern.test(seen)) resolve();
      if (seen.length > 100_000) seen = seen.slice(-10_000);
    };
    child.stderr?.on('data', look);
    child.stdout?.on('data', look);
    child.once('exit', (code) => reject(new Error(`${what} exited ${code} before it was ready: ${seen.slice(-2000)}`)));
  });
}

/** Exits 2 with one line when the build a scenario runs is missing (`npm run build` makes it). */
export function requireBuild(scenario: string, paths: string[]): void {
  const missing = paths.filter((p) => !existsSync(join(repoRoot, p)));
  if (missing.length > 0) {
    console.error(`${scenario}: ${missing.join(', ')} missing; run \`npm run build\` first`);
    process.exit(2);
  }
}

/** Compiles tools/bench/<name>.c into `dir` (the scenario's temporary folder); returns its path. */
export function buildHelper(name: string, dir: string): string {
  const out = join(dir, name);
  execFileSync('cc', ['-O2', '-Wall', '-o', out, join(repoRoot, 'tools/bench', `${name}.c`)], { stdio: 'inherit' });
  return out;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * SIGINT, then SIGKILL after `graceMs`: kappa-capture detaches and unpins its BPF maps and links
 * on SIGINT, which a SIGKILL would leave behind on bpffs.
 */
export async function stopAll(children: readonly ChildProcess[], graceMs = 15_000): Promise<void> {
  for (const child of children) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    child.kill('SIGINT');
    child.kill('SIGCONT'); // a stopped process (bench:state pauses capture) handles SIGINT only then
  }
  const timer = setTimeout(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }, graceMs);
  await Promise.all(children.map(exited));
  clearTimeout(timer);
}

/**
 * Records in an encoded FlowBatch (field 4, `repeated FlowRecord records`) without decoding
 * them: decoding costs ~60 µs per record, taken from the same 2 cores as the services being
 * measured, and a subscriber that falls behind risks being cut off as a slow consumer.
 */
export function countBatchRecords(bytes: Uint8Array): number {
  let records = 0;
  let at = 0;
  const varint = () => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[at++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
    }
  };
  while (at < bytes.length) {
    const tag = varint();
    const wireType = tag & 7;
    if (tag >>> 3 === 4) records++;
    if (wireType === 0) varint();
    else if (wireType === 1) at += 8;
    else if (wireType === 2) {
      const length = varint(); // not `at += varint()`: that reads `at` before varint() moves it
      at += length;
    }
    else if (wireType === 5) at += 4;
    else throw new Error(`not a FlowBatch: wire type ${wireType}`);
  }
  return records;
}
