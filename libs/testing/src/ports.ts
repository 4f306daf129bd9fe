// Free TCP ports on loopback, so test servers never collide with each other or with 4222/6379.
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server } from 'node:net';

/** The lowest port handed out: below it sit the well-known and registered services' defaults. */
const FIRST_PORT = 10_000;

/**
 * The first port of the kernel's ephemeral range (ip_local_port_range): ports from `listen(0)`
 * and every outgoing connection's local port come from there.
 */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > FIRST_PORT + 1000 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/**
 * Ports that `fetch` refuses to connect to ("bad port", the Fetch standard's list, kept by undici)
 * at or above FIRST_PORT: a service given one answered its /readyz to curl but never to the test's
 * fetch (ci43: an enricher on 10080 "timed out waiting for enricher ready" while it logged ready).
 */
const FETCH_BAD_PORTS = new Set([10_080]);

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [port] = await freePorts(1, host);
  return port!;
}

function listenOn(port: number, host: string): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, host, () => resolve(server));
  });
}

/**
 * `count` distinct free ports, drawn at random below the kernel's ephemeral range. A port from
 * `listen(0)` is an ephemeral one: between this check and the server's own bind, any outgoing
 * connection of the machine (a client of another test, a service's NATS link) could take it as its
 * local port, and the server failed with EADDRINUSE. Below the range only another test's choice
 * can land on it, and every port is checked free by binding it. Every listener stays open until
 * all are bound, so the ports differ (a Redis Cluster node given the same port for itself and its
 * bus failed with "Address already in use").
 */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  return freePortsBetween(count, FIRST_PORT, ephemeralLow(), host);
}

/** freePorts drawn from [first, end) (exported for its test); never a port fetch refuses. */
export async function freePortsBetween(count: number, first: number, end: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: Server[] = [];
  const ports: number[] = [];
  try {
    for (let attempt = 0; ports.length < count; attempt++) {
      if (attempt > 1000 + 10 * count) throw new Error(`no ${count} free TCP ports on ${host} between ${first} and ${end - 1}`);
      const port = first + randomInt(end - first);
      if (ports.includes(port) || FETCH_BAD_PORTS.has(port)) continue;
      const server = await listenOn(port, host);
      if (!server) continue;
      servers.push(server);
      ports.push(port);
    }
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
  return ports;
}
