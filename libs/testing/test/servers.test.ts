import { connect, createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startNatsServer, startRedisServer } from '../src/index.js';

/** A free loopback port above 55535, where a Redis Cluster node's default bus port (+10 000) cannot exist. */
async function freeHighPort(): Promise<number> {
  for (let port = 55_536 + Math.floor(Math.random() * 5000); port < 65_535; port++) {
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer().once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port above 55535');
}

async function redisPing(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
    socket.once('data', (d) => {
      resolve(d.toString().trim());
      socket.end();
    });
    socket.once('error', reject);
  });
}

describe('test servers', () => {
  it('starts a private redis-server off the default port, restarts it on the same port, and stops it', async () => {
    const redis = await startRedisServer();
    try {
      expect(redis.port).not.toBe(6379);
      expect(await redisPing(redis.port)).toBe('+PONG');
      await redis.restart('SIGKILL');
      expect(await redisPing(redis.port)).toBe('+PONG');
    } finally {
      await redis.stop();
    }
    await expect(redisPing(redis.port)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('starts a Redis Cluster node on any free port, its cluster bus on a free port of its own', async () => {
    // A port the caller picked above 55535: the default bus port (port + 10 000) cannot exist.
    const redis = await startRedisServer({ args: ['--port', String(await freeHighPort()), '--cluster-enabled', 'yes'] });
    try {
      expect(redis.process.log).toMatch(/Running mode=cluster/);
    } finally {
      await redis.stop();
    }
  });

  it('starts a private nats-server with JetStream off the default port', async () => {
    const nats = await startNatsServer();
    try {
      expect(nats.port).not.toBe(4222);
      expect(nats.process.log).toMatch(/Starting JetStream/);
    } finally {
      await nats.stop();
    }
  });
});
