import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { startNatsServer, startRedisServer } from '../src/index.js';

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
