// machineLock against flock(1) itself: `flock --nonblock FILE true` fails while anyone holds FILE.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { machineLock } from '../src/machine-lock.js';
import { uniqueName } from '../src/names.js';

const LOCK_TS = fileURLToPath(new URL('../src/machine-lock.ts', import.meta.url));
const names: string[] = [];

function lockName(): string {
  const name = uniqueName('ktest-lock');
  names.push(name);
  return name;
}

function pathOf(name: string): string {
  return `${existsSync('/run/lock') ? '/run/lock' : '/tmp'}/${name}.lock`;
}

/** What flock(1) says: is the file free right now? */
function free(name: string): boolean {
  return spawnSync('flock', ['--nonblock', pathOf(name), 'true']).status === 0;
}

afterAll(() => {
  for (const name of names) rmSync(pathOf(name), { force: true });
});

describe('machineLock', () => {
  it('one holder at a time: a second waits until the first releases', async () => {
    const name = lockName();
    const first = await machineLock(name);
    expect(free(name)).toBe(false);
    let second: Awaited<ReturnType<typeof machineLock>> | undefined;
    const waiting = machineLock(name).then((lock) => (second = lock));
    await new Promise((r) => setTimeout(r, 1500));
    expect(second).toBeUndefined();
    await first.release();
    await waiting;
    expect(second!.waitedMs).toBeGreaterThanOrEqual(1400);
    expect(free(name)).toBe(false);
    await second!.release();
    expect(free(name)).toBe(true);
  });

  it('a lock is freed when its test process is killed with SIGKILL', async () => {
    const name = lockName();
    const script = `
      import { machineLock } from ${JSON.stringify(LOCK_TS)};
      await machineLock(${JSON.stringify(name)});
      console.log('held');
      setInterval(() => {}, 60_000);`;
    const holder = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      holder.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('held') && resolve());
      holder.once('exit', (code) => reject(new Error(`the holder exited (${code}) before it held the lock`)));
    });
    expect(free(name)).toBe(false);
    holder.kill('SIGKILL');
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !free(name)) await new Promise((r) => setTimeout(r, 100));
    expect(free(name)).toBe(true);
  });

  it('gives up with a clear error after its timeout', async () => {
    const name = lockName();
    const held = await machineLock(name);
    try {
      await expect(machineLock(name, 500)).rejects.toThrow(/was not free within 500 ms/);
    } finally {
      await held.release();
    }
    expect(free(name)).toBe(true);
  });
});
