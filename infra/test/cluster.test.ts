// Beyond one machine, as the manifests render it: NATS a StatefulSet of three with R3 streams on
// different nodes, the cluster stages in replicas spread over nodes, a PodDisruptionBudget for
// every stateful or replicated workload that lets a drain proceed one pod at a time, and the Redis
// components: each cloud's managed Redis (GKE Memorystore, EKS ElastiCache, AKS Azure Cache) and a
// self-run Redis Cluster.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, test } from 'vitest';
import type { Container, KubeObject, Workload } from './manifests.js';
import { one, overlayNames, render, renderWith, selects, workloads, workspaceRoot } from './manifests.js';
import { baseNatsConfig } from './nats-base.js';

type Replicated = Workload & {
  spec: Workload['spec'] & {
    replicas?: number;
    podManagementPolicy?: string;
    template: { spec: { affinity?: Affinity } };
  };
};
interface AffinityTerm {
  topologyKey: string;
  labelSelector: { matchLabels: Record<string, string> };
}
interface Affinity {
  podAntiAffinity?: {
    requiredDuringSchedulingIgnoredDuringExecution?: AffinityTerm[];
    preferredDuringSchedulingIgnoredDuringExecution?: { weight: number; podAffinityTerm: AffinityTerm }[];
  };
}
type Pdb = KubeObject & { spec: { minAvailable?: number; maxUnavailable?: number; selector: { matchLabels: Record<string, string> } } };
type ConfigMap = KubeObject & { data: Record<string, string> };

const config = (objects: KubeObject[]) => one<ConfigMap>(objects, 'ConfigMap', 'kappa-config').data;
const podLabels = (w: Workload) => w.spec.template.metadata.labels;

/** The one PDB selecting this workload's pods, and how many of its pods a drain may take at once. */
function disruptionsAllowed(objects: KubeObject[], w: Replicated): number {
  const pdbs = objects.filter((o): o is Pdb => o.kind === 'PodDisruptionBudget' && selects((o as Pdb).spec.selector.matchLabels, podLabels(w)));
  expect(pdbs.map((p) => p.metadata.name), `${w.kind}/${w.metadata.name}`).toHaveLength(1);
  const { minAvailable, maxUnavailable } = pdbs[0]!.spec;
  const replicas = w.spec.replicas ?? 1;
  return minAvailable !== undefined ? replicas - minAvailable : Math.min(maxUnavailable ?? 0, replicas);
}

/** Anti-affinity terms that keep this workload's own pods apart by node. */
function spreadByNode(w: Replicated, kind: 'required' | 'preferred'): AffinityTerm[] {
  const anti = w.spec.template.spec.affinity?.podAntiAffinity;
  const terms =
    kind === 'required'
      ? (anti?.requiredDuringSchedulingIgnoredDuringExecution ?? [])
      : (anti?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((p) => p.podAffinityTerm);
  return terms.filter((t) => t.topologyKey === 'kubernetes.io/hostname' && selects(t.labelSelector.matchLabels, podLabels(w)));
}

describe.each(overlayNames())('overlay %s', (overlay) => {
  const objects = render(`overlays/${overlay}`);
  const nats = one<Replicated>(objects, 'StatefulSet', 'kappa-nats');

  test('NATS is a StatefulSet of three, started together, each routed to the other two by its stable name', () => {
    expect(nats.spec.replicas).toBe(3);
    expect(nats.spec.podManagementPolicy).toBe('Parallel');
    const container = nats.spec.template.spec.containers[0]!;
    const service = one<KubeObject & { spec: { clusterIP?: string; ports: { name: string; port: number }[] } }>(objects, 'Service', nats.spec.serviceName ?? '');
    expect(service.spec.clusterIP).toBe('None');
    expect(service.spec.ports.find((p) => p.name === 'cluster')?.port).toBe(6222);
    expect((container as Container & { ports?: { name: string; containerPort: number }[] }).ports).toContainEqual({ name: 'cluster', containerPort: 6222 });
    const routes = [...baseNatsConfig(objects).matchAll(/nats-route:\/\/(\S+)/g)].map((m) => m[1]);
    expect(routes).toEqual([0, 1, 2].map((i) => `kappa-nats-${i}.${nats.spec.serviceName}.kappa.svc:6222`));
    // Each server is named after its pod and advertises its stable name (which the certificate holds), not its IP.
    const args = container.args ?? [];
    expect(args[args.indexOf('--server_name') + 1]).toBe('$(POD_NAME)');
    expect(args[args.indexOf('--cluster_advertise') + 1]).toBe(`$(POD_NAME).${nats.spec.serviceName}.kappa.svc:6222`);
    expect(args[args.indexOf('--client_advertise') + 1]).toBe(`$(POD_NAME).${nats.spec.serviceName}.kappa.svc:4222`);
    expect(container.env).toContainEqual({ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
  });

  test('every stream is R3 (one copy per NATS server): kappa-config says so and the Job kappa-streams reads it', () => {
    expect(config(objects)['KAPPA_STREAM_REPLICAS']).toBe(String(nats.spec.replicas));
    const job = one<KubeObject & { spec: { template: Workload['spec']['template'] } }>(objects, 'Job', 'kappa-streams');
    const container = job.spec.template.spec.containers[0]!;
    expect(container.args).toEqual(['streams']);
    expect(container.envFrom).toContainEqual({ configMapRef: { name: 'kappa-config' } });
  });

  test('the NATS servers must run on three different nodes (required anti-affinity); tagger, joiner and exporter replicas prefer to', () => {
    expect(spreadByNode(nats, 'required')).toHaveLength(1);
    for (const name of ['kappa-k8s-tagger', 'kappa-joiner', 'kappa-exporter']) {
      const w = one<Replicated>(objects, 'Deployment', name);
      expect(spreadByNode(w, 'preferred'), name).toHaveLength(1);
    }
    // The anti-affinity of one workload does not hold another's pods off.
    for (const w of workloads(objects) as Replicated[]) {
      if (w.metadata.name === 'kappa-nats') continue;
      for (const term of nats.spec.template.spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? []) {
        expect(selects(term.labelSelector.matchLabels, podLabels(w)), w.metadata.name).toBe(false);
      }
    }
  });

  test('each exporter replica advertises its Observer at its pod IP, and the others check its certificate by a name make-k8s-tls.sh puts in it', () => {
    const exporter = one<Replicated>(objects, 'Deployment', 'kappa-exporter');
    const container = exporter.spec.template.spec.containers.find((c) => c.name === 'exporter')!;
    const env = new Map((container.env ?? []).map((e) => [e.name, e]));
    expect(env.get('POD_IP')?.valueFrom?.fieldRef?.fieldPath).toBe('status.podIP');
    expect(env.get('KAPPA_OBSERVER_ADVERTISE')?.value).toBe(`$(POD_IP):${env.get('KAPPA_OBSERVER_PORT')?.value}`);
    // $(POD_IP) is expanded only when POD_IP comes earlier in the list.
    const names = (container.env ?? []).map((e) => e.name);
    expect(names.indexOf('POD_IP')).toBeLessThan(names.indexOf('KAPPA_OBSERVER_ADVERTISE'));
    const peerName = env.get('KAPPA_OBSERVER_PEER_NAME')?.value;
    expect(readFileSync(resolve(workspaceRoot, 'tools/make-k8s-tls.sh'), 'utf8')).toMatch(new RegExp(`for service in [^;]*\\b${peerName}\\b`));
  });

  test('the cluster stages run in replicas where they can, and every stateful or replicated workload has a PodDisruptionBudget that lets a drain take one pod at a time', () => {
    expect(one<Replicated>(objects, 'Deployment', 'kappa-k8s-tagger').spec.replicas).toBeGreaterThanOrEqual(2);
    expect(one<Replicated>(objects, 'Deployment', 'kappa-joiner').spec.replicas).toBeGreaterThanOrEqual(2);
    expect(one<Replicated>(objects, 'Deployment', 'kappa-exporter').spec.replicas).toBeGreaterThanOrEqual(2);
    for (const [kind, name] of [
      ['StatefulSet', 'kappa-nats'],
      ['Deployment', 'kappa-k8s-tagger'],
      ['Deployment', 'kappa-joiner'],
      ['Deployment', 'kappa-exporter'],
      ['Deployment', 'kappa-redis'],
    ] as const) {
      const w = one<Replicated>(objects, kind, name);
      const allowed = disruptionsAllowed(objects, w);
      expect(allowed, `${name}: a drain must be able to proceed`).toBeGreaterThanOrEqual(1);
      // Replicated: one at a time, so at least one replica serves (NATS: two of three keep the quorum).
      if ((w.spec.replicas ?? 1) > 1) expect(allowed, name).toBe(1);
    }
  });
});

/** An overlay with extra components, minus what a managed or self-run Redis replaces. */
function withoutRedis(objects: KubeObject[], keys: string[]): KubeObject[] {
  const copy = structuredClone(objects).filter((o) => !(o.metadata.name === 'kappa-redis' || o.metadata.labels?.['app.kubernetes.io/component'] === 'redis-cluster'));
  for (const o of copy) {
    if (o.kind === 'ConfigMap' && o.metadata.name === 'kappa-config') for (const key of keys) delete (o as ConfigMap).data[key];
  }
  return copy;
}

const managed = [
  { component: 'redis-memorystore', overlay: 'gke', scheme: 'rediss:', port: '6378', cluster: 'false', caSecret: 'kappa-redis-ca' },
  { component: 'redis-elasticache', overlay: 'eks', scheme: 'rediss:', port: '6379', cluster: 'true', caSecret: undefined },
  { component: 'redis-azure', overlay: 'aks', scheme: 'rediss:', port: '6380', cluster: 'false', caSecret: undefined },
];
const redisKeys = ['KAPPA_REDIS_URL', 'KAPPA_REDIS_CLUSTER', 'KAPPA_REDIS_TLS_CA', 'KAPPA_REDIS_TLS_CERT', 'KAPPA_REDIS_TLS_KEY'];

describe.each(managed)('components/$component on $overlay', ({ component, overlay, scheme, port, cluster, caSecret }) => {
  const base = render(`overlays/${overlay}`);
  const objects = renderWith(`overlays/${overlay}`, [`components/${component}`]);
  const joiner = one<Workload>(objects, 'Deployment', 'kappa-joiner');
  const container = joiner.spec.template.spec.containers[0]!;

  test("points the joiner at the managed Redis over TLS, and runs no Redis of its own", () => {
    const data = config(objects);
    const url = new URL(data['KAPPA_REDIS_URL'] ?? '');
    expect(url.protocol).toBe(scheme);
    expect(url.port).toBe(port);
    expect(url.username + url.password).toBe('');
    expect(data['KAPPA_REDIS_CLUSTER']).toBe(cluster);
    expect(objects.filter((o) => o.metadata.name === 'kappa-redis')).toEqual([]);
    expect(container.envFrom).toContainEqual({ configMapRef: { name: 'kappa-config' } });
  });

  test('logs in as the ACL user of kappa-credentials, checks the server with the cloud\'s CA, and presents no client certificate', () => {
    const data = config(objects);
    expect(data['KAPPA_REDIS_TLS_CERT']).toBeUndefined();
    expect(data['KAPPA_REDIS_TLS_KEY']).toBeUndefined();
    for (const [variable, key] of [['KAPPA_REDIS_USER', 'redis-user'], ['KAPPA_REDIS_PASSWORD', 'redis-password']]) {
      expect(container.env?.find((e) => e.name === variable)?.valueFrom?.secretKeyRef).toEqual({ name: 'kappa-credentials', key });
    }
    if (caSecret === undefined) {
      // A public CA: Node.js's own trust store.
      expect(data['KAPPA_REDIS_TLS_CA']).toBeUndefined();
    } else {
      const ca = data['KAPPA_REDIS_TLS_CA'] ?? '';
      const mount = container.volumeMounts?.find((m) => ca.startsWith(`${m.mountPath}/`));
      const volume = joiner.spec.template.spec.volumes?.find((v) => v.name === mount?.name);
      expect(volume?.secret?.secretName).toBe(caSecret);
      expect(ca.slice((mount?.mountPath.length ?? 0) + 1)).toBe('ca.crt');
    }
  });

  test('changes nothing but the Redis settings and the joiner\'s CA mount', () => {
    const stripped = withoutRedis(objects, redisKeys);
    const strippedJoiner = one<Workload>(stripped, 'Deployment', 'kappa-joiner').spec.template.spec;
    strippedJoiner.volumes = strippedJoiner.volumes?.filter((v) => caSecret === undefined || v.secret?.secretName !== caSecret);
    strippedJoiner.containers[0]!.volumeMounts = strippedJoiner.containers[0]!.volumeMounts?.filter((m) => m.mountPath !== '/etc/kappa/tls/redis');
    expect(stripped).toEqual(withoutRedis(base, redisKeys));
  });
});

describe('components/redis-cluster', () => {
  const base = render('overlays/eks');
  const objects = renderWith('overlays/eks', ['components/redis-cluster']);
  const nodes = one<Replicated>(objects, 'StatefulSet', 'kappa-redis-cluster');
  const script = nodes.spec.template.spec.containers[0]!.args?.[0] ?? '';

  test('six Redis Cluster nodes over TLS (clients, bus, replication), spread over nodes, one down at a time', () => {
    expect(nodes.spec.replicas).toBe(6);
    expect(script).toMatch(/--port 0 --tls-port 6379 --tls-auth-clients yes --tls-cluster yes --tls-replication yes/);
    expect(script).toContain('--cluster-enabled yes');
    expect(script).toContain(`--cluster-announce-hostname "$POD_NAME.${nodes.spec.serviceName}.kappa.svc"`);
    expect(script).toContain('--cluster-preferred-endpoint-type hostname');
    expect(spreadByNode(nodes, 'preferred')).toHaveLength(1);
    expect(disruptionsAllowed(objects, nodes)).toBe(1);
    const service = one<KubeObject & { spec: { clusterIP?: string; ports: { port: number }[] } }>(objects, 'Service', nodes.spec.serviceName ?? '');
    expect(service.spec.clusterIP).toBe('None');
    expect(service.spec.ports.map((p) => p.port).sort()).toEqual([16379, 6379]);
  });

  test('the joiner\'s user kappa is limited by kappa.acl (the same as infra/redis/kappa.acl); replicas log in as kappa-admin from a file, not the command line', () => {
    const volume = nodes.spec.template.spec.volumes?.find((v) => v.name === 'acl-rules');
    const acl = one<ConfigMap>(objects, 'ConfigMap', volume?.configMap?.name ?? '');
    expect(acl.data['kappa.acl']).toBe(readFileSync(resolve(workspaceRoot, 'infra/redis/kappa.acl'), 'utf8'));
    expect(script).toContain('--aclfile /run/kappa-redis/users.acl');
    const exec = script.slice(script.indexOf('exec redis-server'));
    expect(exec).not.toMatch(/PASSWORD|masterauth|requirepass/);
    expect(script).toMatch(/masterauth %s\\n' "\$REDIS_ADMIN_PASSWORD" > \/run\/kappa-redis\/replication\.conf/);
    const secret = one<KubeObject & { stringData: Record<string, string> }>(objects, 'Secret', 'kappa-credentials');
    expect(Object.keys(secret.stringData)).toContain('redis-admin-password');
  });

  test('a Job makes the six one cluster of three primaries with a replica each, and the joiner uses it as a Redis Cluster', () => {
    const job = one<KubeObject & { spec: { template: Workload['spec']['template'] } }>(objects, 'Job', 'kappa-redis-cluster-create');
    const create = job.spec.template.spec.containers[0]!.args?.[0] ?? '';
    expect(create).toContain('for i in 0 1 2 3 4 5');
    expect(create).toMatch(/--cluster create \$nodes --cluster-replicas 1 --cluster-yes/);
    expect(create).toContain(`host=kappa-redis-cluster-$i.${nodes.spec.serviceName}.kappa.svc`);
    const data = config(objects);
    expect(data['KAPPA_REDIS_CLUSTER']).toBe('true');
    expect(new URL(data['KAPPA_REDIS_URL'] ?? '').hostname).toBe(`kappa-redis-cluster-0.${nodes.spec.serviceName}.kappa.svc`);
    expect(new URL(data['KAPPA_REDIS_URL'] ?? '').protocol).toBe('rediss:');
    // The joiner still presents the kappa client certificate.
    expect(data['KAPPA_REDIS_TLS_CERT']).toBe(config(base)['KAPPA_REDIS_TLS_CERT']);
    expect(objects.filter((o) => o.metadata.name === 'kappa-redis')).toEqual([]);
  });
});
