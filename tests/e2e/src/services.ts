// The kappa services run as real processes from their built bundles, with logs kept per service
// so a failing test can show what a stage said.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/transport-node';
import { decodeStageStatus } from '@kappa/contracts';
import { NO_CONFIG_FILE, childEnv, dyingWithParent } from '@kappa/testing';

export const workspaceRoot = resolve(import.meta.dirname, '../../..');

export interface RunningService {
  name: string;
  app: string;
  args: string[];
  logFile: string;
  child: ChildProcess;
  restarts: number;
  /** Node flags before the bundle (e.g. --max-old-space-size). */
  nodeArgs: string[];
  /** Every exit of this service's processes, and whether the test caused it (stop, kill). */
  exits: ServiceExit[];
  /** Set while the test stops or kills the current process. */
  stopping: boolean;
  /** When the current process was spawned (ms since the epoch): its heartbeats' started_ns is later. */
  launchedMs: number;
}

export interface ServiceExit {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  byTest: boolean;
}

/** Exits the test did not cause: a crash, an exit on its own (no orchestrator restarts it here). */
export function unexpectedExits(service: RunningService): ServiceExit[] {
  return service.exits.filter((e) => !e.byTest);
}

export function startService(name: string, app: string, args: string[], logDir: string, nodeArgs: string[] = []): RunningService {
  const logFile = join(logDir, `${name}.log`);
  const service: RunningService = { name, app, args, logFile, child: undefined as unknown as ChildProcess, restarts: 0, nodeArgs, exits: [], stopping: false, launchedMs: 0 };
  launch(service);
  return service;
}

function launch(service: RunningService): void {
  service.launchedMs = Date.now();
  const log = createWriteStream(service.logFile, { flags: 'a' });
  const child = spawn(...dyingWithParent(process.execPath, [...service.nodeArgs, join(workspaceRoot, `apps/${service.app}/dist/main.js`), ...service.args]), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...childEnv(), KAPPA_LOG_LEVEL: 'info' },
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  service.stopping = false;
  child.once('exit', (code, signal) => service.exits.push({ pid: child.pid, code, signal, byTest: service.stopping }));
  service.child = child;
}

export function isRunning(service: RunningService): boolean {
  return service.child.exitCode === null && service.child.signalCode === null;
}

export async function stopService(service: RunningService, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (!isRunning(service)) return service.child.exitCode;
  const exited = new Promise<number | null>((r) => service.child.once('exit', (code) => r(code)));
  service.stopping = true;
  service.child.kill(signal);
  const timer = setTimeout(() => service.child.kill('SIGKILL'), 30_000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

/** SIGKILL, then start again with the same arguments (a crash and a restart by the orchestrator). */
export async function crashAndRestart(service: RunningService): Promise<void> {
  await stopService(service, 'SIGKILL');
  service.restarts++;
  launch(service);
}

/** One heartbeat as a stage sent it on kappa.status.<stage>.<instance>. */
export interface Beat {
  stage: string;
  instance: string;
  node: string;
  startedNs: bigint;
  ready: boolean;
}

/**
 * Every heartbeat the stages send while the test runs (their own account of each process), heard
 * through nats-server restarts.
 */
export class HeartbeatWatch {
  readonly beats: Beat[] = [];

  private constructor(private readonly nc: NatsConnection) {}

  static async start(natsUrl: string): Promise<HeartbeatWatch> {
    const watch = new HeartbeatWatch(await connect({ servers: natsUrl, maxReconnectAttempts: -1, reconnectTimeWait: 250 }));
    const sub = watch.nc.subscribe('kappa.status.>');
    void (async () => {
      for await (const m of sub) {
        try {
          const s = decodeStageStatus(m.data);
          watch.beats.push({ stage: s.stage, instance: s.instance, node: s.node, startedNs: s.startedNs, ready: s.ready });
        } catch {
          // not a heartbeat
        }
      }
    })();
    return watch;
  }

  /** The heartbeats of one service: its stage, and the --node and --instance it was started with. */
  of(service: Pick<RunningService, 'app' | 'args'>): Beat[] {
    const flag = (name: string) => service.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const [node, instance] = [flag('node'), flag('instance')];
    return this.beats.filter((b) => b.stage === service.app && (node === undefined || b.node === node) && (instance === undefined || b.instance === instance));
  }

  /** How many processes of this service its heartbeats tell apart (distinct start times). */
  startsHeard(service: Pick<RunningService, 'app' | 'args'>): number {
    return new Set(this.of(service).map((b) => b.startedNs)).size;
  }

  /** The services whose current process has not yet said ready in a heartbeat. */
  notReady(services: readonly RunningService[]): string[] {
    return services.filter((s) => this.of(s).findLast((b) => b.startedNs >= BigInt(s.launchedMs) * 1_000_000n)?.ready !== true).map((s) => s.name);
  }

  /**
   * Waits until the current process of EVERY service has said ready (`kappa status` exits 0 once
   * ONE instance per stage is ready): a capture says so once its programs are attached, so
   * traffic sent before that on its node goes uncounted.
   */
  async everyReady(services: readonly RunningService[], timeoutMs = 90_000): Promise<void> {
    for (const end = Date.now() + timeoutMs; ; ) {
      const waiting = this.notReady(services);
      if (waiting.length === 0) return;
      if (Date.now() > end) {
        const tails = services.filter((s) => waiting.includes(s.name)).map((s) => `--- ${s.name}\n${logTail(s, 15)}`);
        throw new Error(`timed out waiting for a ready heartbeat from the current process of ${waiting.join(', ')}\n${tails.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  close(): Promise<void> {
    return this.nc.close();
  }
}

export function logTail(service: RunningService, lines = 30): string {
  try {
    return readFileSync(service.logFile, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Runs the kappa CLI and returns its exit code and output. */
/**
 * Runs this checkout's built `kappa` CLI with no config file (not the checkout's .kappa/up.json,
 * which it would find while a developer's `npm run up` runs here); or, with `clone`, that
 * clone's CLI in the clone, finding its .kappa/up.json as a user's `npx kappa` would.
 */
export async function kappa(args: string[], clone?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { KAPPA_CONFIG: _config, ...inherited } = childEnv();
  const child = clone
    ? spawn(process.execPath, [join(clone, 'apps/cli/dist/main.js'), ...args], { cwd: clone, env: inherited, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, [join(workspaceRoot, 'apps/cli/dist/main.js'), ...args], { env: { ...inherited, KAPPA_CONFIG: NO_CONFIG_FILE }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  return { code, stdout, stderr };
}
