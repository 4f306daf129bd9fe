// Every kappa command refuses a bad flag at start with one line naming it, and prints --help.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { workspaceRoot } from '../src/services.js';

const commands: [string, string[]][] = [
  ['capture', []],
  ['process-enricher', []],
  ['k8s-tagger', []],
  ['joiner', []],
  ['exporter', []],
  ['cli', ['status']],
];

function run(app: string, args: string[]) {
  return spawnSync(process.execPath, [join(workspaceRoot, `apps/${app}/dist/main.js`), ...args], { encoding: 'utf8', timeout: 30_000 });
}

describe.each(commands)('kappa %s', (app, prefix) => {
  it('exits 2 with one line naming an invalid value', () => {
    const result = run(app, [...prefix, '--metrics-port=eighty', '--nats-url=nats://127.0.0.1:1']);
    const flag = app === 'cli' ? '--wait' : '--metrics-port';
    const again = app === 'cli' ? run(app, [...prefix, '--wait=soon']) : result;
    expect(again.status).toBe(2);
    const lines = again.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(flag);
  });

  it('exits 2 with one line naming an unknown flag', () => {
    const result = run(app, [...prefix, '--no-such-flag=1']);
    expect(result.status).toBe(2);
    expect(result.stderr.trim().split('\n')).toEqual([expect.stringMatching(/unknown flag --no-such-flag: see --help/)]);
  });

  it('prints --help and exits 0', () => {
    const result = run(app, [...prefix, '--help']);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/Usage: kappa/);
  });
});
