// `npm run up` as a user meets it: kappa on this host, this host's conversations visible with
// their process and container through `kappa observe`, `kappa status` green, every link TLS with
// a login (plaintext and certificate-less clients refused), a second `up` refused, and Ctrl-C
// leaving nothing of kappa attached.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, uniqueName } from '@kappa/testing';
import { kappa, workspaceRoot } from '../src/services.js';
import { cgroup2Mount } from '../src/topology.js';

let up: ChildProcess;
let output = '';
let natsPort = 0;
let redisPort = 0;
const containerId = createHash('sha256').update('kappa-up-test').digest('hex');
const upSlice = join(cgroup2Mount(), `${uniqueName('kpe-up')}.slice`);
const containerCgroup = join(upSlice, `docker-${containerId}.scope`);

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
  redisPort = await freePort();
  const { KAPPA_PLAINTEXT: _plaintext, ...env } = process.env;
  up = spawn(process.execPath, [join(workspaceRoot, 'tools/up.mjs')], {
    cwd: workspaceRoot,
    env: { ...env, KAPPA_UP_NATS_PORT: String(natsPort), KAPPA_UP_REDIS_PORT: String(redisPort), KAPPA_INTERVAL: '2s' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  up.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  up.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const end = Date.now() + 90_000;
  while (!/stop: Ctrl-C/.test(output)) {
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
    rmdirSync(upSlice);
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

  it('runs every link over TLS with a login: NATS, Redis, the Observer and KubeTags refuse plaintext, certificate-less and token-less clients', async () => {
    expect(output).toMatch(/links: mutual TLS with the local CA in .*\.kappa\/tls/);
    const state = join(workspaceRoot, '.kappa');
    const upJson = JSON.parse(readFileSync(join(state, 'up.json'), 'utf8')) as Record<string, string>;
    const credentials = JSON.parse(readFileSync(join(state, 'credentials.json'), 'utf8')) as Record<string, string>;
    const [ca, cert, key] = [upJson.tlsCa!, upJson.tlsCert!, upJson.tlsKey!].map((file) => readFileSync(file, 'utf8')) as [string, string, string];

    const login = { user: credentials.natsUser!, pass: credentials.natsPassword! };
    const nats = async (options: Parameters<typeof connect>[0]) => {
      try {
        await (await connect({ servers: `127.0.0.1:${natsPort}`, reconnect: false, timeout: 5000, ...options })).close();
        return 'connected';
      } catch (error) {
        return `refused: ${(error as Error).message}`;
      }
    };
    expect(await nats(login)).toMatch(/^refused/);
    expect(await nats({ ...login, tls: { ca } })).toMatch(/^refused/);
    expect(await nats({ tls: { ca, cert, key } })).toMatch(/^refused/);
    expect(await nats({ ...login, tls: { ca, cert, key } })).toBe('connected');

    const redis = async (options: RedisOptions) => {
      const client = new Redis({ host: '127.0.0.1', port: redisPort, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 5000, ...options });
      client.on('error', () => undefined);
      try {
        await client.connect();
        return `PING ${await client.ping()}`;
      } catch (error) {
        return `refused: ${(error as Error).message}`;
      } finally {
        client.disconnect();
      }
    };
    const redisLogin = { username: credentials.redisUser!, password: credentials.redisPassword! };
    expect(await redis(redisLogin)).toMatch(/^refused/);
    expect(await redis({ ...redisLogin, tls: { ca, servername: 'localhost' } })).toMatch(/^refused/);
    expect(await redis({ tls: { ca, cert, key, servername: 'localhost' } })).toMatch(/^refused/);
    expect(await redis({ ...redisLogin, tls: { ca, cert, key, servername: 'localhost' } })).toBe('PING PONG');

    // kappa observe (Observer) and kappa tags (KubeTags) with up.json minus some of its keys:
    // each missing piece is refused.
    const dir = join(tmpdir(), `ksd-up-cli-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    try {
      const cliWithout = async (args: string[], keys: string[]) => {
        const config = join(dir, `without-${keys.join('-') || 'nothing'}.json`);
        writeFileSync(config, JSON.stringify(Object.fromEntries(Object.entries(upJson).filter(([k]) => !keys.includes(k)))));
        const child = spawn(process.execPath, [join(workspaceRoot, 'apps/cli/dist/main.js'), ...args], {
          env: { ...process.env, KAPPA_CONFIG: config },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
        child.stdout?.resume();
        const code = await new Promise<number | null>((r) => child.once('exit', r));
        return { code, stderr };
      };
      for (const command of [
        ['observe', '--since=1m', '--output=json', '--connect-timeout=3s'],
        ['tags', '127.0.0.1', '--output=json'],
      ]) {
        // With every key the server answers (kappa tags may still say 1: "not known to the tagger").
        const all = await cliWithout(command, []);
        expect(all.stderr, command[0]).not.toMatch(/did not answer|cannot reach|token|UNAUTHENTICATED/i);
        if (command[0] === 'observe') expect(all.code, all.stderr).toBe(0);
        expect((await cliWithout(command, ['tlsCa', 'tlsCert', 'tlsKey'])).code, command[0]).not.toBe(0);
        expect((await cliWithout(command, ['tlsCert', 'tlsKey'])).code, command[0]).not.toBe(0);
        const noToken = await cliWithout(command, ['tokenFile']);
        expect(noToken.code, command[0]).not.toBe(0);
        expect(noToken.stderr, command[0]).toMatch(/token|UNAUTHENTICATED/i);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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
