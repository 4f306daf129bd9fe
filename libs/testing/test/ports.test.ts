import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePorts, freePortsBetween } from '../src/ports.js';

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

  it('never hands out a port fetch refuses (10080): a service there answers curl but not the tests\' fetch', async () => {
    // fetch itself is the judge: it refuses 10080 whoever listens there.
    await expect(fetch('http://127.0.0.1:10080/')).rejects.toThrow();
    await expect(freePortsBetween(1, 10_080, 10_081)).rejects.toThrow(/no 1 free TCP ports/);
    // Every port of a draw around it is reachable by fetch.
    const ports = await freePortsBetween(4, 10_078, 10_084);
    expect(ports).not.toContain(10_080);
    const servers = await Promise.all(ports.map((port) => new Promise<ReturnType<typeof createHttpServer>>((resolve, reject) => {
      const server = createHttpServer((_request, response) => response.writeHead(204).end());
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve(server));
    })));
    try {
      for (const port of ports) expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(204);
    } finally {
      for (const server of servers) server.closeAllConnections();
      await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    }
  });
});
