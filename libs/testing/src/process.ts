// A real server binary run as a child process for a test: started, waited on until it says it is
// ready, restartable on the same port and data folder, and always stopped.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { childEnv } from './netns.js';

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * The command line that runs `command` so that it gets SIGTERM when the test process dies, however
 * it dies: `setpriv --pdeathsig` (util-linux) sets the kernel's parent-death signal, then execs the
 * command (same pid). The 'exit' handlers do not run when vitest kills a fork that hung (SIGKILL),
 * and a capture left running keeps its programs attached and its pins on the machine. Spawn it
 * from the test's main thread: the kernel signals when the thread that forked it exits.
 */
export function dyingWithParent(command: string, args: readonly string[]): [string, string[]] {
  return ['setpriv', ['--pdeathsig', 'SIGTERM', '--', command, ...args]];
}

export interface ServerProcessSpec {
  command: string;
  args: readonly string[];
  /** Output (stdout or stderr) that means the server is ready. */
  readyPattern: RegExp;
  timeoutMs?: number;
}

export class ServerProcess {
  private child: ChildProcess | undefined;
  private output = '';

  constructor(private readonly spec: ServerProcessSpec) {}

  /** Everything the server printed, for failure messages. */
  get log(): string {
    return this.output;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    // 60 s: tshark took over 15 s to say it was capturing at load ~30 (two npm test runs at once).
    const { command, args, readyPattern, timeoutMs = 60_000 } = this.spec;
    const child = spawn(...dyingWithParent(command, args), { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
    this.child = child;
    running.add(child);
    child.once('exit', () => running.delete(child));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${command} did not become ready in ${timeoutMs} ms:\n${this.output.slice(-2000)}`));
      }, timeoutMs);
      const onData = (chunk: Buffer) => {
        this.output += chunk.toString();
        if (readyPattern.test(this.output.slice(-4096))) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${command} (is it installed? run tools/install-deps.sh): ${error.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${command} exited (${code ?? signal}) before it was ready:\n${this.output.slice(-2000)}`));
      });
    });
  }

  /** Stops the server: SIGTERM, or SIGKILL for a crash. Resolves when it has exited. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  async restart(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.stop(signal);
    this.output = '';
    await this.start();
  }
}
