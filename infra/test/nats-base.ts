// The NATS server of the Kustomize base, started for real from the rendered manifests: its
// nats.conf (ConfigMap) with the users file of kappa-nats-users as tools/k8s-nats-credentials.mjs
// makes it, the pod's paths pointed at a local folder and a local CA.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
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
  /** The first server's client URL. */
  url: string;
  /** Every server's client URL, in pod order (kappa-nats-0, -1, -2). */
  urls: string[];
  /** The servers by pod name (kappa-nats-<i>), to stop or kill one. */
  servers: Map<string, ServerProcess>;
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

/** The in-cluster DNS name of NATS pod `pod` (what its routes and advertisements name). */
const podHost = (pod: string) => `${pod}.kappa-nats-headless.kappa.svc`;

/**
 * Starts the base's NATS as the StatefulSet runs it: one nats-server per replica, each with the
 * ConfigMap's nats.conf and the container's own arguments ($(POD_NAME) filled in), the pod's
 * paths pointed at a local folder, and every in-cluster name (routes, advertised URLs) pointed at
 * localhost on free ports. Resolves once the JetStream cluster has a meta leader.
 */
export async function startBaseNats(objects: KubeObject[], options: { nodes: string[]; partitions: number }): Promise<BaseNats> {
  const statefulSet = one<Workload & { spec: { replicas?: number } }>(objects, 'StatefulSet', 'kappa-nats');
  const container = statefulSet.spec.template.spec.containers[0]!;
  const replicas = statefulSet.spec.replicas ?? 1;
  const root = mkdtempSync(join(tmpdir(), 'ksd-nats-pod-'));
  const material = makeTlsMaterial();
  const credentials = join(root, 'credentials');
  const { usersConf } = credentialsModule.makeCredentials({ out: credentials, nodes: options.nodes, partitions: options.partitions, namespace: 'kappa' });
  mkdirSync(join(root, 'etc/nats/users'), { recursive: true });
  mkdirSync(join(root, 'etc/tls/server'), { recursive: true });
  writeFileSync(join(root, 'etc/nats/users/users.conf'), usersConf);
  writeFileSync(join(root, 'etc/tls/server/ca.crt'), readFileSync(material.caFile));
  writeFileSync(join(root, 'etc/tls/server/tls.crt'), readFileSync(material.serverCertFile));
  writeFileSync(join(root, 'etc/tls/server/tls.key'), readFileSync(material.serverKeyFile));
  const pods = Array.from({ length: replicas }, (_, i) => ({ name: `kappa-nats-${i}`, client: 0, cluster: 0 }));
  for (const pod of pods) {
    pod.client = await freePort();
    pod.cluster = await freePort();
  }
  /** The pod's view: its DNS names and the others' → localhost and this run's ports. */
  const localise = (text: string) =>
    pods.reduce(
      (t, pod) => t.replaceAll(`${podHost(pod.name)}:4222`, `localhost:${pod.client}`).replaceAll(`${podHost(pod.name)}:6222`, `localhost:${pod.cluster}`),
      text.replaceAll('/etc/kappa/', `${root}/etc/`),
    );
  const servers = new Map<string, ServerProcess>();
  const stopAll = async () => {
    await Promise.all([...servers.values()].map((server) => server.stop()));
    material.remove();
    rmSync(root, { recursive: true, force: true });
  };
  try {
    for (const pod of pods) {
      const dir = join(root, pod.name);
      mkdirSync(join(dir, 'data'), { recursive: true });
      // nats.conf includes ./users/users.conf relative to itself: each pod's copy beside a link.
      symlinkSync(join(root, 'etc/nats/users'), join(dir, 'users'));
      writeFileSync(
        join(dir, 'nats.conf'),
        localise(baseNatsConfig(objects))
          .replace('port: 4222', `host: 127.0.0.1\nport: ${pod.client}`)
          .replace('http_port: 8222', 'http_port: 0')
          .replace(/^(\s*)port: 6222$/m, `$1host: 127.0.0.1\n$1port: ${pod.cluster}`)
          .replace('store_dir: "/data"', `store_dir: "${dir}/data"`),
      );
      const args = (container.args ?? []).map((arg) => localise(arg.replaceAll('$(POD_NAME)', pod.name)).replace('/etc/nats/nats.conf', join(dir, 'nats.conf')));
      servers.set(pod.name, new ServerProcess({ command: 'nats-server', args, readyPattern: /Server is ready/ }));
    }
    await Promise.all([...servers.values()].map((server) => server.start()));
    if (replicas > 1) await waitForMetaLeader([...servers.values()]);
  } catch (error) {
    await stopAll();
    throw error;
  }
  const seedFile = (identity: string) => {
    const node = options.nodes.find((n) => identity.endsWith(`-${n}`) && (identity.startsWith('capture-') || identity.startsWith('process-enricher-')));
    return node === undefined ? join(credentials, 'seeds', `${identity}.nk`) : join(credentials, 'nodes', node, `${identity.slice(0, -node.length - 1)}.nk`);
  };
  const urls = pods.map((pod) => `tls://localhost:${pod.client}`);
  return {
    url: urls[0]!,
    urls,
    servers,
    tls: { ca: material.caFile, cert: material.clientCertFile, key: material.clientKeyFile },
    seedFile,
    stop: stopAll,
  };
}

/** Waits until a server of the cluster logs that the JetStream cluster has a meta leader. */
async function waitForMetaLeader(servers: ServerProcess[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!servers.some((server) => /JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/.test(server.log))) {
    if (Date.now() > deadline) throw new Error(`the NATS cluster elected no JetStream meta leader in ${timeoutMs} ms:\n${servers.map((s) => s.log.slice(-1500)).join('\n---\n')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
