// What both guest tests check first: capture, started as a node runs it and under --check (the
// DaemonSet's check-node init container), exits 1 with one line on stderr and nothing on stdout.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

const CAPTURE_BIN = fileURLToPath(new URL('../../../apps/capture/bin/kappa-capture.js', import.meta.url));

/** The one line capture refused this kernel with, per way of starting it. */
export function refusalLines(): string[] {
  return [['--stdout', '--metrics-port=0'], ['--check']].map((args) => {
    const run = spawnSync(process.execPath, [CAPTURE_BIN, ...args], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(1);
    expect(run.stdout).toBe('');
    const lines = run.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    return lines[0]!;
  });
}
