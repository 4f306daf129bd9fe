// `npm run up` as a user meets it, from a clean clone of this commit: tools/up.sh installs what
// is missing (npm ci), builds (BPF included) and runs kappa on this host; this host's
// conversations are visible with their process and container through `kappa observe`, `kappa
// status` is green, every link is TLS with a login (plaintext and certificate-less clients
// refused), a second `up` is refused; and Ctrl-C, sent as a terminal sends it (SIGINT to the
// whole foreground process group), leaves nothing: no /sys/fs/bpf/kappa folder, none of its BPF
// programs or maps loaded, no tc qdisc or filter added, no process.
// The clone has its own .kappa/ (never the checkout's), and every port, the node name and the
// container cgroup are this run's own: two runs at once, or a developer's `npm run up`, do not meet.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from '@nats-io/transport-node';
import { createUser } from '@nats-io/nkeys';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePorts, uniqueName } from '@kappa/testing';
import { kappa, workspaceRoot } from '../src/services.js';
import { cgroup2Mount } from '../src/topology.js';

const git = (...args: string[]) => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

let up: ChildProcess;
let output = '';
let upExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
let clone = '';
const node = uniqueName('kpe-up');
const ports = { nats: 0, redis: 0, tagger: 0, observer: 0, console: 0 };
const containerId = createHash('sha256').update('kappa-up-test').digest('hex');
const upSlice = join(cgroup2Mount(), `${uniqueName('kpe-up')}.slice`);
const containerCgroup = join(upSlice, `docker-${containerId}.scope`);
/** The tc qdiscs of the root namespace before kappa started (device and kind). */
let qdiscsBefore: string[] = [];

/** clsact and ingress qdiscs of the root namespace (where BPF filters hang). */
function bpfQdiscs(): string[] {
  const qdiscs = JSON.parse(execFileSync('tc', ['-j', 'qdisc', 'show'], { encoding: 'utf8' }) || '[]') as { dev: string; kind: string }[];
  return qdiscs.filter((q) => q.kind === 'clsact' || q.kind === 'ingress').map((q) => `${q.dev} ${q.kind}`).sort();
}

/** Every process that runs in the clone or from it (up.mjs, nats-server, redis-server, the services). */
function cloneProcesses(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (cwd.startsWith(clone) || cmdline.includes(clone)) found.push(`${pid} ${cmdline}`);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/** BPF objects a process holds open, from /proc/<pid>/fdinfo: `prog 12`, `map 34`, `link 56`. */
function bpfObjectsOf(pid: number): string[] {
  const objects = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      for (const [, kind, id] of info.matchAll(/^(prog|map|link)_id:\s*(\d+)$/gm)) objects.add(`${kind} ${id}`);
    } catch {
      // closed meanwhile
    }
  }
  return [...objects].sort();
}

/** Which of these BPF objects are still loaded (bpftool finds them by id). */
function stillLoaded(objects: string[]): string[] {
  return objects.filter((object) => {
    const [kind, id] = object.split(' ') as [string, string];
    try {
      execFileSync('bpftool', [kind, 'show', 'id', id], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  });
}

/** This run's pin folders under /sys/fs/bpf/kappa (capture names them <node>-<hash>). */
function pinFolders(): string[] {
  return existsSync('/sys/fs/bpf/kappa') ? readdirSync('/sys/fs/bpf/kappa').filter((d) => d.startsWith(`${node}-`)) : [];
}

beforeAll(async () => {
  qdiscsBefore = bpfQdiscs();
  // This commit, with the working tree's changes to tracked files when there are any.
  // `stash create` writes a commit (it wants an identity, which a fresh machine may lack) and
  // refreshes the index (it fails while another git holds index.lock): with neither, HEAD.
  let stash = '';
  try {
    stash = git('-C', workspaceRoot, '-c', 'user.name=kappa-up-test', '-c', 'user.email=kappa-up-test@invalid', 'stash', 'create');
  } catch (error) {
    console.warn(`up test: git stash create failed (${(error as Error).message.split('\n')[0]}); cloning HEAD without the working tree's changes`);
  }
  const commit = stash || git('-C', workspaceRoot, 'rev-parse', 'HEAD');
  clone = mkdtempSync(join(tmpdir(), 'kpe-up-clone-'));
  git('clone', '--quiet', '--shared', workspaceRoot, clone);
  git('-C', clone, 'checkout', '--quiet', '--detach', commit);
  // Five distinct ports in one draw: drawn one at a time, two services could get the same one
  // (ci46: the console failed with EADDRINUSE on its port after every other service had started).
  const keys = Object.keys(ports) as (keyof typeof ports)[];
  const drawn = await freePorts(keys.length);
  keys.forEach((key, i) => (ports[key] = drawn[i]!));
  // A user's shell: no npm-run or Nx variables of this test run, and not this checkout's
  // node_modules/.bin on PATH (up.sh must find its own Node and tools).
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !/^(npm_|NX_|VITEST|KAPPA_)/i.test(key) && !['INIT_CWD', 'NODE_OPTIONS', 'NODE', 'FORCE_COLOR'].includes(key)),
  );
  env.PATH = (process.env.PATH ?? '').split(':').filter((dir) => !dir.includes('node_modules')).join(':');
  up = spawn('npm', ['run', 'up'], {
    cwd: clone,
    env: {
      ...env,
      KAPPA_UP_NATS_PORT: String(ports.nats),
      KAPPA_UP_REDIS_PORT: String(ports.redis),
      KAPPA_UP_TAGGER_PORT: String(ports.tagger),
      KAPPA_UP_OBSERVER_PORT: String(ports.observer),
      KAPPA_UP_CONSOLE_PORT: String(ports.console),
      KAPPA_UP_METRICS_PORT: '0',
      KAPPA_NODE: node,
      KAPPA_INTERVAL: '2s',
    },
    // A process group of its own, as a terminal's foreground job: Ctrl-C goes to all of it.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  upExit = new Promise((resolve) => up.once('exit', (code, signal) => resolve({ code, signal })));
  up.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  up.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  // npm ci and the build come first: minutes on a loaded machine.
  const end = Date.now() + 900_000;
  while (!/stop: Ctrl-C/.test(output)) {
    if (Date.now() > end || up.exitCode !== null) throw new Error(`npm run up did not come up:\n${output.slice(-6000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}, 960_000);

afterAll(async () => {
  if (up && up.exitCode === null && up.signalCode === null) {
    process.kill(-up.pid!, 'SIGINT');
    const timer = setTimeout(() => process.kill(-up.pid!, 'SIGKILL'), 60_000);
    await upExit;
    clearTimeout(timer);
  }
  for (const line of clone ? cloneProcesses() : []) process.kill(Number(line.split(' ')[0]), 'SIGKILL');
  for (const folder of pinFolders()) rmSync(join('/sys/fs/bpf/kappa', folder), { recursive: true, force: true });
  for (const dir of [containerCgroup, upSlice]) {
    try {
      rmdirSync(dir);
    } catch {
      // already gone
    }
  }
  if (clone) rmSync(clone, { recursive: true, force: true });
}, 120_000);

describe('npm run up', () => {
  it('installs the npm packages and builds a clean clone, then says where flows go and how to watch them', () => {
    expect(output).toMatch(/added \d+ packages/);
    expect(existsSync(join(clone, 'bpf/.output/kappa.bpf.o'))).toBe(true);
    expect(output).toMatch(/flows go to .*flows\.jsonl/);
    expect(output).toContain('npx kappa observe --follow');
  });

  it('reports every stage ready in kappa status', async () => {
    const end = Date.now() + 60_000;
    // Plain `kappa status` in the clone, as the user types it: it finds up's NATS through
    // the clone's .kappa/up.json.
    let status = await kappa(['status'], clone);
    while (status.code !== 0 && Date.now() < end) status = await kappa(['status'], clone);
    expect(status.stdout).toMatch(/^capture\s/m);
    expect(status.code, status.stdout + status.stderr).toBe(0);
  }, 180_000);

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
      const { stdout, stderr } = await kappa(['observe', '--since=1m', '--output=json', `--port=${port}`], clone);
      observed = stdout + stderr;
      mine = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((r) => r.vantage === 'VANTAGE_SRC');
    }
    server.close();
    expect(mine.length, `kappa observe printed:\n${observed}\nup printed:\n${output.slice(-3000)}`).toBeGreaterThan(0);
    expect(mine[0]!.src!.process).toMatchObject({ pid: clientPid, name: 'python3', containerId });
    expect(mine[0]!.dst).toMatchObject({ ip: '127.0.0.1', port });
  }, 180_000);

  it('runs every link over TLS with a login: NATS, Redis, the Observer and KubeTags refuse plaintext, certificate-less and token-less clients', async () => {
    expect(output).toMatch(/links: mutual TLS with the local CA in .*\.kappa\/tls/);
    const state = join(clone, '.kappa');
    const upJson = JSON.parse(readFileSync(join(state, 'up.json'), 'utf8')) as Record<string, string>;
    const credentials = JSON.parse(readFileSync(join(state, 'credentials.json'), 'utf8')) as Record<string, string>;
    const [ca, cert, key] = [upJson.tlsCa!, upJson.tlsCert!, upJson.tlsKey!].map((file) => readFileSync(file, 'utf8')) as [string, string, string];

    // The CLI's own nkey (up.json): a login that works; an unknown nkey or none is refused.
    const login = { authenticator: nkeyAuthenticator(new TextEncoder().encode(readFileSync(upJson.natsNkeySeed!, 'utf8').trim())) };
    const stranger = { authenticator: nkeyAuthenticator(createUser().getSeed()) };
    const nats = async (options: Parameters<typeof connect>[0]) => {
      try {
        await (await connect({ servers: `127.0.0.1:${ports.nats}`, reconnect: false, timeout: 5000, ...options })).close();
        return 'connected';
      } catch (error) {
        return `refused: ${(error as Error).message}`;
      }
    };
    expect(await nats(login)).toMatch(/^refused/);
    expect(await nats({ ...login, tls: { ca } })).toMatch(/^refused/);
    expect(await nats({ tls: { ca, cert, key } })).toMatch(/^refused/);
    expect(await nats({ ...stranger, tls: { ca, cert, key } })).toMatch(/^refused/);
    expect(await nats({ ...login, tls: { ca, cert, key } })).toBe('connected');

    const redis = async (options: RedisOptions) => {
      const client = new Redis({ host: '127.0.0.1', port: ports.redis, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 5000, ...options });
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
        const child = spawn(process.execPath, [join(clone, 'apps/cli/dist/main.js'), ...args], {
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
  }, 180_000);

  it('listens only on loopback: every TCP and UDP socket npm run up opens (ss) is bound to 127.0.0.1 or ::1', () => {
    // up, and every process under it (nats-server, redis-server, the five services).
    const tree = new Set<number>([up.pid!]);
    for (let grown = true; grown; ) {
      grown = false;
      for (const line of execFileSync('ps', ['-e', '-o', 'pid=,ppid='], { encoding: 'utf8' }).split('\n')) {
        const [pid, ppid] = line.trim().split(/\s+/).map(Number) as [number, number];
        if (tree.has(ppid) && !tree.has(pid)) {
          tree.add(pid);
          grown = true;
        }
      }
    }
    const sockets = execFileSync('ss', ['-H', '-l', '-n', '-p', '-t', '-u'], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => [...line.matchAll(/pid=(\d+)/g)].some((m) => tree.has(Number(m[1]))));
    // nats-server, redis-server, KubeTags, the Observer and each service's /metrics at least.
    expect(sockets.length, sockets.join('\n')).toBeGreaterThanOrEqual(9);
    for (const line of sockets) {
      const local = line.trim().split(/\s+/)[4] ?? '';
      expect(local, line).toMatch(/^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):\d+$/);
    }
  });

  it('refuses a second npm run up while one runs', () => {
    let code = 0;
    let stderr = '';
    try {
      execFileSync('bash', [join(clone, 'tools/up.sh')], { cwd: clone, stdio: 'pipe', encoding: 'utf8' });
    } catch (error) {
      code = (error as { status: number }).status;
      stderr = String((error as { stderr: string }).stderr);
    }
    expect(code).toBe(1);
    expect(stderr).toMatch(/kappa is already running here \(pid \d+\)/);
  });

  it('stops everything on Ctrl-C and leaves nothing behind: no bpffs folder, no BPF program or map, no tc qdisc, no process', async () => {
    // What this kappa holds while it runs: capture's BPF programs, maps and links, and its pin folder.
    const capture = cloneProcesses().find((line) => line.includes('apps/capture/dist/main.js'));
    expect(capture, cloneProcesses().join('\n')).toBeDefined();
    const objects = bpfObjectsOf(Number(capture!.split(' ')[0]));
    expect(objects.filter((o) => o.startsWith('prog ')).length).toBeGreaterThan(0);
    expect(stillLoaded(objects)).toEqual(objects);
    expect(pinFolders()).toHaveLength(1);
    expect(cloneProcesses().length).toBeGreaterThanOrEqual(9); // up.mjs, nats, redis, five services, console

    // Ctrl-C in the terminal: SIGINT to every process of the foreground group.
    process.kill(-up.pid!, 'SIGINT');
    // npm waits for up.mjs to stop everything, then ends by the signal it got (as it does in a
    // terminal); up.mjs says it stopped.
    const exit = await upExit;
    expect(output).toContain('kappa: stopped');
    expect(exit.code === 0 || exit.signal === 'SIGINT', `${JSON.stringify(exit)}\n${output.slice(-3000)}`).toBe(true);
    expect(output).not.toMatch(/exited unexpectedly|shutdown failed/);
    expect(pinFolders()).toEqual([]);
    expect(stillLoaded(objects)).toEqual([]);
    // Socket mode adds none; a qdisc another run adds meanwhile would show here too (none do:
    // the tests' interface-mode captures run in namespaces of their own).
    expect(bpfQdiscs().filter((q) => !qdiscsBefore.includes(q))).toEqual([]);
    expect(cloneProcesses()).toEqual([]);
    expect(existsSync(join(clone, '.kappa/up.pid'))).toBe(false);
    expect(existsSync(join(clone, '.kappa/up.json'))).toBe(false);
  }, 180_000);
});
