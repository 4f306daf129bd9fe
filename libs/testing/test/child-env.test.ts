// Nx sets FORCE_COLOR for the test run; a child Node process then wraps console.log(number) in
// colour codes and a test that reads the number gets NaN. Every child a test reads starts with
// childEnv() (run, runIn, spawnIn, ServerProcess, the e2e services, the CLI helpers).
import { execFileSync } from 'node:child_process';
import { afterEach, expect, it } from 'vitest';
import { childEnv, run } from '../src/index.js';

const saved = process.env['FORCE_COLOR'];
afterEach(() => {
  if (saved === undefined) delete process.env['FORCE_COLOR'];
  else process.env['FORCE_COLOR'] = saved;
});

it("reads a child's console.log(number) as the number under FORCE_COLOR", () => {
  process.env['FORCE_COLOR'] = '1';
  // The trap is real: with the test run's environment the number comes back coloured.
  expect(execFileSync(process.execPath, ['-e', 'console.log(4242)'], { encoding: 'utf8', env: process.env })).not.toBe('4242\n');
  expect(childEnv()['FORCE_COLOR']).toBeUndefined();
  expect(Number(run(process.execPath, ['-e', 'console.log(4242)']).trim())).toBe(4242);
});
