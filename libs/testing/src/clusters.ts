// Clusters of real servers on loopback for tests and benchmarks: nats-servers routed into one
// JetStream cluster, and redis-servers made one Redis Cluster. Free ports, data in temporary folders.
import { join } from 'node:path';
import { run } from './netns.js';
import { ServerProcess } from './process.js';
import { startRedisServer } from './servers.js';
import type { TestServer } from './servers.js';
import { freePorts } from './ports.js';

/**
 * `size` nats-servers with JetStream routed into one cluster on loopback (free ports, names
 * <prefix>-<i>), resolved once the JetStream cluster has a meta leader.
 */
export async function startNatsCluster(prefix: string, size: number, workDir: string): Promise<TestServer[]> {
  const nodes: { name: string; port: number; cluster: number; monitor: number; dir: string }[] = [];
  // Every port at once: taken one after another, two could be the same port.
  const ports = await freePorts(3 * size);
  for (let i = 0; i < size; i++) nodes.push({ name: `${prefix}-${i}`, port: ports[3 * i]!, cluster: ports[3 * i + 1]!, monitor: ports[3 * i + 2]!, dir: join(workDir, `${prefix}-${i}`) });
  const routes = nodes.map((n) => `nats://127.0.0.1:${n.cluster}`).join(',');
  const servers = nodes.map((n) => {
    const process = new ServerProcess({
      command: 'nats-server',
      args: ['-a', '127.0.0.1', '-p', String(n.port), '-m', String(n.monitor), '-js', '-sd', n.dir, '--server_name', n.name, '--cluster_name', prefix, '--cluster', `nats://127.0.0.1:${n.cluster}`, '--routes', routes],
      readyPattern: /Server is ready/,
    });
    return {
      url: `nats://127.0.0.1:${n.port}`,
      port: n.port,
      dataDir: n.dir,
      monitorUrl: `http://127.0.0.1:${n.monitor}`,
      process,
      restart: (signal?: NodeJS.Signals) => process.restart(signal),
      stop: () => process.stop(),
    } satisfies TestServer;
  });
  try {
    await Promise.all(servers.map((s) => s.process.start()));
    const end = Date.now() + 30_000;
    while (!servers.some((s) => /new metadata leader|Self is new JetStream cluster metadata leader/.test(s.process.log))) {
      if (Date.now() > end) throw new Error(`no JetStream meta leader in 30 s:\n${servers.map((s) => s.process.log.slice(-1000)).join('\n---\n')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (error) {
    await Promise.all(servers.map((s) => s.stop()));
    throw error;
  }
  return servers;
}

/**
 * Six redis-servers made one Redis Cluster of 3 primaries with a replica each (plaintext, no ACL:
 * apps/joiner/test/cluster-secure.test.ts covers TLS and users). Each server is pushed to `servers`
 * as it starts, so the caller stops what started even when the cluster fails to form.
 */
export async function startRedisCluster(servers: TestServer[] = []): Promise<TestServer[]> {
  const nodes: TestServer[] = [];
  for (let i = 0; i < 6; i++) {
    const node = await startRedisServer({ args: ['--cluster-enabled', 'yes', '--cluster-node-timeout', '2000', '--cluster-replica-validity-factor', '0'] });
    servers.push(node);
    nodes.push(node);
  }
  run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes']);
  const end = Date.now() + 30_000;
  while (!nodes.every((n) => run('redis-cli', ['-p', String(n.port), 'cluster', 'info']).includes('cluster_state:ok'))) {
    if (Date.now() > end) throw new Error('the Redis Cluster did not reach cluster_state:ok in 30 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  return nodes;
}
