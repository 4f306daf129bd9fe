// `npm run up` as a user meets it: kappa on this host, this host's conversations visible with
// their process and container through `kappa observe`, `kappa status` green, a second `up`
// refused, and Ctrl-C leaving nothing of kappa attached.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, rmdirSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '@kappa/testing';
import { kappa, workspaceRoot } from '../src/services.js';
import { cgroup2Mount } from '../src/topology.js';

let up: ChildProcess;
let output = '';
let natsPort = 0;
const containerId = createHash('sha256').update('kappa-up-test').digest('hex');
const containerCgroup = join(cgroup2Mount(), 'kpe-up.slice', `docker-${containerId}.scope`);

function kappaAttachments(): string {
  return execFileSync('bpftool', ['cgroup', 'tree'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => /kappa_/.test(l))
    .join('\n');
}

/** kappa programs attached before this test (e.g. another kappa running on the machine). */
let attachedBefore = '';

beforeAll(async () => {
  attachedBefore = kappaAttachments();
  natsPort = await freePort();
  up = spawn(process.execPath, [join(workspaceRoot, 'tools/up.mjs')], {
    cwd: workspaceRoot,
    env: { ...process.env, KAPPA_UP_NATS_PORT: String(natsPort), KAPPA_UP_REDIS_PORT: String(await freePort()), KAPPA_INTERVAL: '2s' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  up.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  up.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const end = Date.now() + 90_000;
  while (!/kappa is up/.test(output)) {
    if (Date.now() > end || up.exitCode !== null) throw new Error(`npm run up did not come up:\n${output}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}, 120_000);

afterAll(async () => {
  if (up.exitCode === null) {
    up.kill('SIGKILL');
    rmSync(join(workspaceRoot, '.kappa/up.json'), { force: true });
    rmSync(join(workspaceRoot, '.kappa/up.pid'), { force: true });
  }
  try {
    rmdirSync(containerCgroup);
    rmdirSync(join(cgroup2Mount(), 'kpe-up.slice'));
  } catch {
    // already gone
  }
});

describe('npm run up', () => {
  it('says where flows go and how to watch them', () => {
    expect(output).toMatch(/flows go to .*flows\.jsonl/);
    expect(output).toContain('npx kappa observe --follow');
  });

  it('reports every stage ready in kappa status', async () => {
    const end = Date.now() + 60_000;
    // Plain `kappa status`, as the user types it: it finds up's NATS through .kappa/up.json.
    let status = await kappa(['status']);
    while (status.code !== 0 && Date.now() < end) status = await kappa(['status']);
    expect(status.stdout).toMatch(/^capture\s/m);
    expect(status.code, status.stdout + status.stderr).toBe(0);
  }, 90_000);

  it('shows this host\'s conversations with process names and container ids in kappa observe --since 1m', async () => {
    // A server on loopback, and a client in a cgroup shaped like a Docker container's.
    const server = createServer((s) => s.on('data', () => s.end('pong')));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    mkdirSync(containerCgroup, { recursive: true });
    const client = spawn('sh', ['-c', `echo $$ > ${containerCgroup}/cgroup.procs && exec python3 -c "import socket; s=socket.create_connection(('127.0.0.1', ${port})); s.sendall(b'ping'*1000); s.shutdown(1); s.recv(100); s.close()"`]);
    const clientPid = client.pid;
    let clientOutput = '';
    client.stderr?.on('data', (d: Buffer) => (clientOutput += d.toString()));
    const clientExit = await new Promise((r) => client.once('exit', r));
    expect(clientExit, clientOutput).toBe(0);
    let mine: Record<string, { ip?: string; port?: number; process?: { pid?: number; name?: string; containerId?: string } }>[] = [];
    let observed = '';
    const end = Date.now() + 60_000;
    while (mine.length === 0 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 2000));
      const { stdout, stderr } = await kappa(['observe', '--since=1m', '--output=json', `--port=${port}`]);
      observed = stdout + stderr;
      mine = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((r) => r.vantage === 'VANTAGE_SRC');
    }
    server.close();
    expect(mine.length, `kappa observe printed:\n${observed}\nup printed:\n${output.slice(-3000)}`).toBeGreaterThan(0);
    expect(mine[0]!.src!.process).toMatchObject({ pid: clientPid, name: 'python3', containerId });
    expect(mine[0]!.dst).toMatchObject({ ip: '127.0.0.1', port });
  }, 90_000);

  it('refuses a second npm run up while one runs', () => {
    let code = 0;
    let stderr = '';
    try {
      execFileSync('bash', [join(workspaceRoot, 'tools/up.sh')], { cwd: workspaceRoot, stdio: 'pipe', encoding: 'utf8' });
    } catch (error) {
      code = (error as { status: number }).status;
      stderr = String((error as { stderr: string }).stderr);
    }
    expect(code).toBe(1);
    expect(stderr).toMatch(/kappa is already running here \(pid \d+\)/);
  });

  it('stops everything on Ctrl-C and leaves no BPF program of kappa attached', async () => {
    expect(kappaAttachments()).not.toBe(attachedBefore);
    const exited = new Promise<number | null>((r) => up.once('exit', (code) => r(code)));
    up.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(output).toContain('kappa: stopped');
    expect(kappaAttachments()).toBe(attachedBefore);
  }, 90_000);
});
