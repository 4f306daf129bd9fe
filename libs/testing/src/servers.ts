// Private nats-server (JetStream) and redis-server instances for integration tests, each on a
// free loopback port with its data in a temporary folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, freePorts } from './ports.js';
import { ServerProcess } from './process.js';

export interface TestServer {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** The monitoring endpoint (/varz, /jsz …) where the server has one (startNatsCluster's). */
  readonly monitorUrl?: string;
  readonly process: ServerProcess;
  /** Stop and start again on the same port with the same data. */
  restart(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

export interface NatsServerOptions {
  /** Extra nats-server arguments (e.g. --user/--pass, --tls...). */
  args?: readonly string[];
}

/** Starts `command` on a free port with its data in a fresh temporary folder. */
async function startTestServer(
  scheme: string,
  command: string,
  readyPattern: RegExp,
  args: (port: number, dataDir: string) => string[],
  chosenPort?: number,
): Promise<TestServer> {
  const port = chosenPort ?? (await freePort());
  const dataDir = mkdtempSync(join(tmpdir(), `kappa-${scheme}-`));
  const server = new ServerProcess({ command, args: args(port, dataDir), readyPattern });
  await server.start();
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    dataDir,
    process: server,
    restart: (signal) => server.restart(signal),
    stop: async () => {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<TestServer> {
  return startTestServer('nats', 'nats-server', /Server is ready/, (port, dataDir) => [
    '-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dataDir, ...(options.args ?? []),
  ]);
}

export interface RedisServerOptions {
  args?: readonly string[];
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<TestServer> {
  const args = options.args ?? [];
  // A Redis Cluster node also listens on its cluster bus, by default its port + 10 000, which
  // nobody checked was free: Linux gives bind(0) ports of 32768-46883, so the bus lands in
  // 42768-56883, among the local ports of outgoing connections (the other tests' clients), and
  // redis-server exits if one holds it (and above 55535 it refuses to start at all). The bus gets a
  // free port of its own, taken together with the node's (one after the other, they can repeat).
  const [port, busPort] = args.includes('--cluster-enabled') && !args.includes('--cluster-port') ? await freePorts(2) : [undefined, undefined];
  const bus = busPort === undefined ? [] : ['--cluster-port', String(busPort)];
  return startTestServer(
    'redis',
    'redis-server',
    /Ready to accept connections/,
    (port, dataDir) => [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dataDir,
      '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--protected-mode', 'no',
      ...bus,
      ...args,
    ],
    port,
  );
}
