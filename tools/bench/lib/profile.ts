// A CPU profile of a running child, taken over the inspector protocol. `node --cpu-prof` cannot
// profile kappa-capture: its sampling signal interrupts the BPF verifier, which then refuses the
// load with EAGAIN. The child is started with `--inspect-port=0` (no inspector yet); `attach`
// opens it with SIGUSR1 once the child is up, and `start` / `stop` bracket what is profiled.
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

/** The node flag a child needs so that `RemoteProfiler.attach` can profile it later. */
export const PROFILABLE = '--inspect-port=0';

export class RemoteProfiler {
  private nextId = 1;
  private readonly pending = new Map<number, (result: unknown) => void>();

  private constructor(private readonly socket: WebSocket) {
    socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown; error?: { message: string } };
      if (message.id === undefined) return;
      const done = this.pending.get(message.id);
      this.pending.delete(message.id);
      done?.(message.error ? new Error(message.error.message) : message.result);
    });
  }

  /** Opens the child's inspector (SIGUSR1) and connects to it. */
  static async attach(child: ChildProcess): Promise<RemoteProfiler> {
    const url = await new Promise<string>((resolve, reject) => {
      let seen = '';
      const look = (chunk: Buffer) => {
        seen += chunk.toString();
        const found = /Debugger listening on (ws:\/\/\S+)/.exec(seen);
        if (found) {
          child.stderr?.off('data', look);
          resolve(found[1]!);
        }
      };
      child.stderr?.on('data', look);
      setTimeout(() => reject(new Error(`no inspector URL from pid ${child.pid} (was it started with ${PROFILABLE}?)`)), 10_000).unref();
      child.kill('SIGUSR1');
    });
    const socket = new WebSocket(url);
    await new Promise((resolve, reject) => {
      socket.addEventListener('open', resolve, { once: true });
      socket.addEventListener('error', reject, { once: true });
    });
    return new RemoteProfiler(socket);
  }

  private call(method: string, params: object = {}): Promise<unknown> {
    const id = this.nextId++;
    this.socket.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => this.pending.set(id, (result) => (result instanceof Error ? reject(result) : resolve(result))));
  }

  async start(intervalUs = 200): Promise<void> {
    await this.call('Profiler.enable');
    await this.call('Profiler.setSamplingInterval', { interval: intervalUs });
    await this.call('Profiler.start');
  }

  /** Stops, writes the .cpuprofile (open it in Chrome DevTools or speedscope), and disconnects. */
  async stop(file: string): Promise<void> {
    const { profile } = (await this.call('Profiler.stop')) as { profile: unknown };
    writeFileSync(file, JSON.stringify(profile));
    this.socket.close();
  }
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** The `count` functions with the most self time in a .cpuprofile, one line each (ms, %, name, file:line). */
export function topFunctions(file: string, count: number): string {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const frame = byNode.get(profile.samples[i]!)!.callFrame;
    if (frame.functionName === '(idle)') continue;
    const us = profile.timeDeltas[i + 1] ?? 0;
    const name = `${frame.functionName || '(anonymous)'} ${frame.url.split('/').slice(-2).join('/')}:${frame.lineNumber + 1}`;
    self.set(name, (self.get(name) ?? 0) + us);
    total += us;
  }
  return [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, us]) => `${(us / 1000).toFixed(1).padStart(9)} ms ${((100 * us) / total).toFixed(1).padStart(5)} %  ${name}`)
    .concat(`${(total / 1000).toFixed(1).padStart(9)} ms total (not idle)`)
    .join('\n');
}
