// Private nats-server (JetStream) and redis-server instances for integration tests, each on a
// free loopback port with its data in a temporary folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { ServerProcess } from './process.js';

export interface TestServer {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly process: ServerProcess;
  /** Stop and start again on the same port with the same data. */
  restart(signal?: NodeJS.Signals): Promise<void>;
  stop(): Promise<void>;
}

export interface NatsServerOptions {
  /** Extra nats-server arguments (e.g. --user/--pass, --tls...). */
  args?: readonly string[];
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<TestServer> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'kappa-nats-'));
  const args = ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dataDir, ...(options.args ?? [])];
  const server = new ServerProcess({ command: 'nats-server', args, readyPattern: /Server is ready/ });
  await server.start();
  return {
    url: `nats://127.0.0.1:${port}`,
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

export interface RedisServerOptions {
  args?: readonly string[];
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<TestServer> {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'kappa-redis-'));
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dataDir,
    '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--protected-mode', 'no',
    ...(options.args ?? []),
  ];
  const server = new ServerProcess({ command: 'redis-server', args, readyPattern: /Ready to accept connections/ });
  await server.start();
  return {
    url: `redis://127.0.0.1:${port}`,
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
