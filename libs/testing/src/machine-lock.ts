// A lock over the whole machine, for tests too heavy to run beside another of their kind: two
// `npm test` runs at once must both pass, and on 2 cores two cluster topologies at once (three
// nats-servers, six redis-servers, eleven services each) starve each other's elections and
// takeovers. The lock is flock(1) on a file under /run/lock, held by a child (`cat` reading a pipe
// from this process): it is released when the test releases it or when the test process dies
// however it dies, since the pipe then closes.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dyingWithParent } from './process.js';

export interface MachineLock {
  /** How long this process waited for the lock, ms. */
  waitedMs: number;
  release(): Promise<void>;
}

const HELD = 'kappa-lock-held';

function lockDir(): string {
  return existsSync('/run/lock') ? '/run/lock' : '/tmp';
}

/**
 * Waits until this process holds the machine-wide lock `name` (at most `timeoutMs`), then returns
 * it. Prints one line when it has to wait, so a slow test says why.
 */
export async function machineLock(name: string, timeoutMs = 1_200_000): Promise<MachineLock> {
  const path = `${lockDir()}/${name}.lock`;
  const started = Date.now();
  const [command, args] = dyingWithParent('flock', ['--exclusive', path, 'sh', '-c', `echo ${HELD}; exec cat >/dev/null`]);
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  const waiting = setTimeout(() => process.stderr.write(`waiting for the machine-wide lock ${name}: another test run holds ${path}\n`), 1000);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the machine-wide lock ${path} was not free within ${timeoutMs} ms`)), timeoutMs);
      const done = (error?: Error) => {
        clearTimeout(timer);
        if (error) reject(error);
        else resolve();
      };
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes(HELD)) done();
      });
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.once('error', (error) => done(new Error(`cannot run flock(1) (util-linux) for the lock ${path}: ${error.message}`)));
      child.once('exit', (code, signal) => done(new Error(`flock(1) on ${path} ended (${code ?? signal}) before it held the lock: ${output.trim()}`)));
    });
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    clearTimeout(waiting);
  }
  child.removeAllListeners('exit');
  const waitedMs = Date.now() - started;
  if (waitedMs > 1000) process.stderr.write(`machine-wide lock ${name} held after ${waitedMs} ms\n`);
  return {
    waitedMs,
    release: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.stdin.end();
      await exited;
    },
  };
}

/**
 * The machine-wide lock a cluster topology holds from its start to its stop (three nats-servers, a
 * Redis Cluster): one at a time on the machine. Two at once on 2 cores (two `npm test` runs at
 * once) starve each other's elections and takeovers.
 */
export const CLUSTER_TOPOLOGY_LOCK = 'kappa-e2e-cluster-topology';
/** The longest a cluster topology waits for that lock: the other run's cluster files, one after another. */
export const CLUSTER_LOCK_WAIT_MS = 900_000;
