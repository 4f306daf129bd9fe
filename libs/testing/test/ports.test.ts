import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePorts } from '../src/ports.js';

describe('freePorts', () => {
  it('hands out distinct ports below the ephemeral range that outgoing connections take theirs from, each free to bind', async () => {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    const ports = await freePorts(20);
    expect(new Set(ports).size).toBe(20);
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(10_000);
      expect(port).toBeLessThan(low!);
    }
    // Bound while this test's own outgoing connections take ephemeral ports: every bind succeeds.
    const servers = await Promise.all(ports.map((port) => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const server = createServer((socket) => socket.end());
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve(server));
    })));
    const clients = await Promise.all(ports.map((port) => new Promise<number>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => {
        const local = socket.localPort!;
        socket.destroy();
        resolve(local);
      });
      socket.once('error', reject);
    })));
    for (const local of clients) expect(local).toBeGreaterThanOrEqual(low!);
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  });
});
