// The NATS server of the Kustomize base, started for real from the rendered manifests: its
// nats.conf (ConfigMap) with the users file of kappa-nats-users as tools/k8s-nats-credentials.mjs
// makes it, the pod's paths pointed at a local folder and a local CA.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ServerProcess, freePort, makeTlsMaterial } from '@kappa/testing';
import type { KubeObject, Workload } from './manifests.js';
import { one, workspaceRoot } from './manifests.js';

/** tools/k8s-nats-credentials.mjs, loaded by its path (a plain script, not a package). */
const credentialsModule = (await import(pathToFileURL(join(workspaceRoot, 'tools/k8s-nats-credentials.mjs')).href)) as {
  makeCredentials(options: { out: string; nodes: string[]; partitions: number; namespace: string }): { usersConf: string; nodeFiles: Record<string, string[]> };
};

export interface BaseNats {
  url: string;
  /** TLS options of a client holding kappa-client-tls. */
  tls: { ca: string; cert: string; key: string };
  /** The nkey seed file of an identity (admin, cli, k8s-tagger, joiner, exporter, capture-<node>, process-enricher-<node>). */
  seedFile(identity: string): string;
  stop(): Promise<void>;
}

/** nats.conf of the base as the StatefulSet mounts it. */
export function baseNatsConfig(objects: KubeObject[]): string {
  const pod = one<Workload>(objects, 'StatefulSet', 'kappa-nats');
  const volume = pod.spec.template.spec.volumes?.find((v) => v.name === 'config');
  const config = one<KubeObject & { data: Record<string, string> }>(objects, 'ConfigMap', volume?.configMap?.name ?? '');
  return config.data['nats.conf'] ?? '';
}

export async function startBaseNats(objects: KubeObject[], options: { nodes: string[]; partitions: number }): Promise<BaseNats> {
  const root = mkdtempSync(join(tmpdir(), 'ksd-nats-pod-'));
  const material = makeTlsMaterial();
  const credentials = join(root, 'credentials');
  const { usersConf } = credentialsModule.makeCredentials({ out: credentials, nodes: options.nodes, partitions: options.partitions, namespace: 'kappa' });
  mkdirSync(join(root, 'etc/nats/users'), { recursive: true });
  mkdirSync(join(root, 'etc/tls/server'), { recursive: true });
  mkdirSync(join(root, 'data'), { recursive: true });
  writeFileSync(join(root, 'etc/nats/users/users.conf'), usersConf);
  writeFileSync(join(root, 'etc/tls/server/ca.crt'), readFileSync(material.caFile));
  writeFileSync(join(root, 'etc/tls/server/tls.crt'), readFileSync(material.serverCertFile));
  writeFileSync(join(root, 'etc/tls/server/tls.key'), readFileSync(material.serverKeyFile));
  const port = await freePort();
  writeFileSync(
    join(root, 'etc/nats/nats.conf'),
    baseNatsConfig(objects)
      .replaceAll('/etc/kappa/', `${root}/etc/`)
      .replace('port: 4222', `host: 127.0.0.1\nport: ${port}`)
      .replace('http_port: 8222', 'http_port: 0')
      .replace('store_dir: "/data"', `store_dir: "${root}/data"`),
  );
  const server = new ServerProcess({ command: 'nats-server', args: ['-c', join(root, 'etc/nats/nats.conf')], readyPattern: /Server is ready/ });
  try {
    await server.start();
  } catch (error) {
    material.remove();
    rmSync(root, { recursive: true, force: true });
    throw error;
  }
  const seedFile = (identity: string) => {
    const node = options.nodes.find((n) => identity.endsWith(`-${n}`) && (identity.startsWith('capture-') || identity.startsWith('process-enricher-')));
    return node === undefined ? join(credentials, 'seeds', `${identity}.nk`) : join(credentials, 'nodes', node, `${identity.slice(0, -node.length - 1)}.nk`);
  };
  return {
    url: `tls://127.0.0.1:${port}`,
    tls: { ca: material.caFile, cert: material.clientCertFile, key: material.clientKeyFile },
    seedFile,
    stop: async () => {
      await server.stop();
      material.remove();
      rmSync(root, { recursive: true, force: true });
    },
  };
}
