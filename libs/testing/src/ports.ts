// Free TCP ports on loopback, so test servers never collide with each other or with 4222/6379.
import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [port] = await freePorts(1, host);
  return port!;
}

/**
 * `count` distinct free ports: every listener stays open until all are bound. Free ports taken one
 * after another can repeat (a port just closed is free again): a Redis Cluster node given the same
 * port for itself and its bus failed with "Address already in use".
 */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise<Server>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, host, () => resolve(server));
    })),
  );
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}
