import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const PROCESS_TS = fileURLToPath(new URL('../src/process.ts', import.meta.url));

/** The process's state letter from /proc (R, S, Z, …), or undefined once it is gone. */
function state(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
  } catch {
    return undefined;
  }
}

describe('ServerProcess', () => {
  it('a server it started ends when the test process is killed with SIGKILL (no exit handler runs)', async () => {
    // A test process of its own, as a vitest fork is: it starts a server and waits forever.
    const script = `
      import { ServerProcess } from ${JSON.stringify(PROCESS_TS)};
      const server = new ServerProcess({ command: 'sh', args: ['-c', 'echo ready; exec sleep 600'], readyPattern: /ready/ });
      await server.start();
      console.log('server ' + server.pid);
      setInterval(() => {}, 60_000);`;
    const testProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const serverPid = await new Promise<number>((resolve, reject) => {
      let out = '';
      testProcess.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const match = /server (\d+)/.exec(out);
        if (match) resolve(Number(match[1]));
      });
      testProcess.once('exit', (code) => reject(new Error(`the test process exited (${code}) before its server started: ${out}`)));
    });
    try {
      expect(state(serverPid)).toMatch(/[RS]/);
      testProcess.kill('SIGKILL');
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && state(serverPid) !== undefined && state(serverPid) !== 'Z') await new Promise((r) => setTimeout(r, 50));
      expect(state(serverPid) ?? 'gone').toMatch(/gone|Z/);
    } finally {
      if (state(serverPid) !== undefined) process.kill(serverPid, 'SIGKILL');
    }
  });
});
