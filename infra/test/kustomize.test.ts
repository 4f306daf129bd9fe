// Every Kustomize overlay renders with the real kubectl, and what it renders is deployable and
// least-privilege: images pinned, selectors that select, read-only RBAC, the agent's exact
// capabilities, probes and limits everywhere, and the capture pattern of the overlay's CNI.
import { describe, expect, test } from 'vitest';
import type { KubeObject, Workload } from './manifests.js';
import { allContainers, one, overlayNames, render, renderWith, selects, workloads } from './manifests.js';

/** overlay → KAPPA_CAPTURE it must set (the CNI's interfaces, or the cloud CNI's) */
const capturePattern: Record<string, string> = {
  gke: 'eth.*|gke.*|lxc.*',
  aks: 'eth.*|azv.*|veth.*',
  eks: 'eth.*|eni.*',
  calico: 'cali.*|tun.*',
  flannel: 'flannel.*|cni.*|veth.*',
  weave: 'weave.*|vethwe.*',
  'eks-calico': 'cali.*|tun.*',
  'eks-weave': 'weave.*|vethwe.*',
  'aks-calico': 'cali.*|tun.*',
};

/** the only capabilities kappa adds, per agent container */
const agentCapabilities: Record<string, string[]> = {
  capture: ['BPF', 'NET_ADMIN', 'PERFMON'],
  'process-enricher': ['SYS_PTRACE'],
};

const taggerReads = {
  '': ['namespaces', 'nodes', 'pods', 'services'],
  'discovery.k8s.io': ['endpointslices'],
  apps: ['daemonsets', 'deployments', 'replicasets', 'statefulsets'],
  batch: ['cronjobs', 'jobs'],
};

test('every overlay directory has its expected capture pattern listed here', () => {
  expect(overlayNames()).toEqual(Object.keys(capturePattern).sort());
});

describe.each(overlayNames())('overlay %s', (overlay) => {
  const objects: KubeObject[] = render(`overlays/${overlay}`);
  const pods: Workload[] = workloads(objects);

  test('renders the whole system: agent, tagger, joiner, exporter, NATS, Redis, RBAC, PDBs', () => {
    const names = objects.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(names).toEqual(
      expect.arrayContaining([
        'Namespace/kappa',
        'DaemonSet/kappa-agent',
        'Deployment/kappa-k8s-tagger',
        'Deployment/kappa-joiner',
        'Deployment/kappa-exporter',
        'Deployment/kappa-console',
        'StatefulSet/kappa-nats',
        'Deployment/kappa-redis',
        'ConfigMap/kappa-config',
        'Secret/kappa-credentials',
        'ServiceAccount/kappa-k8s-tagger',
        'ClusterRole/kappa-k8s-tagger',
        'ClusterRoleBinding/kappa-k8s-tagger',
        'PodDisruptionBudget/kappa-k8s-tagger',
        'PodDisruptionBudget/kappa-joiner',
      ]),
    );
    for (const object of objects) {
      if (!['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'StorageClass'].includes(object.kind)) {
        expect(object.metadata.namespace, `${object.kind}/${object.metadata.name}`).toBe('kappa');
      }
    }
  });

  test('every container image is set to a pinned name:tag', () => {
    const images = pods.flatMap((w) => allContainers(w.spec.template.spec).map((c) => [`${w.metadata.name}/${c.name}`, c.image]));
    expect(images.length).toBeGreaterThanOrEqual(7);
    for (const [where, image] of images) {
      expect(image, where).toMatch(/^[a-z0-9][a-z0-9./_-]*:[A-Za-z0-9._-]+$/);
      expect(image, where).not.toMatch(/:latest$/);
    }
    const kappaImages = [...new Set(images.map(([, image]) => image).filter((image) => image?.startsWith('kappa/')))];
    expect(kappaImages.map((image) => image?.split(':')[0]).sort()).toEqual([
      'kappa/capture',
      'kappa/console',
      'kappa/exporter',
      'kappa/joiner',
      'kappa/k8s-tagger',
      'kappa/process-enricher',
    ]);
  });

  test('workload selectors match their pod labels; Services and PDBs select pods', () => {
    for (const w of pods) {
      expect(selects(w.spec.selector.matchLabels, w.spec.template.metadata.labels), `${w.kind}/${w.metadata.name}`).toBe(true);
    }
    const podLabels = pods.map((w) => w.spec.template.metadata.labels);
    for (const service of objects.filter((o) => o.kind === 'Service')) {
      const selector = (service.spec as { selector: Record<string, string> }).selector;
      expect(podLabels.filter((labels) => selects(selector, labels)), `Service/${service.metadata.name}`).toHaveLength(1);
    }
    for (const pdb of objects.filter((o) => o.kind === 'PodDisruptionBudget')) {
      const selector = (pdb.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
      expect(podLabels.filter((labels) => selects(selector, labels)), `PodDisruptionBudget/${pdb.metadata.name}`).toHaveLength(1);
    }
    const nats = one<Workload>(objects, 'StatefulSet', 'kappa-nats');
    const headless = one(objects, 'Service', nats.spec.serviceName ?? '');
    expect((headless.spec as { clusterIP?: string }).clusterIP).toBe('None');
  });

  test('the tagger RBAC only reads (get, list, watch) exactly what the tagger watches', () => {
    const roles = objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role');
    expect(roles.map((r) => r.metadata.name)).toEqual(['kappa-k8s-tagger']);
    const rules = (roles[0] as KubeObject & { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }).rules;
    const granted: Record<string, string[]> = {};
    for (const rule of rules) {
      expect([...rule.verbs].sort()).toEqual(['get', 'list', 'watch']);
      // No wildcard, no escalation through names or non-resource URLs.
      expect(Object.keys(rule).sort()).toEqual(['apiGroups', 'resources', 'verbs']);
      expect([...rule.apiGroups, ...rule.resources]).not.toContain('*');
      for (const group of rule.apiGroups) granted[group] = [...(granted[group] ?? []), ...rule.resources].sort();
    }
    expect(granted).toEqual(taggerReads);
    const binding = one<KubeObject & { roleRef: { name: string }; subjects: { kind: string; name: string; namespace: string }[] }>(
      objects,
      'ClusterRoleBinding',
      'kappa-k8s-tagger',
    );
    expect(binding.roleRef.name).toBe('kappa-k8s-tagger');
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'kappa-k8s-tagger', namespace: 'kappa' }]);
    expect(one<Workload>(objects, 'Deployment', 'kappa-k8s-tagger').spec.template.spec.serviceAccountName).toBe('kappa-k8s-tagger');
    expect(objects.filter((o) => o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding')).toHaveLength(1);
  });

  test('the agent DaemonSet has hostPID and hostNetwork, drops ALL and adds only the listed capabilities', () => {
    const agent = one<Workload>(objects, 'DaemonSet', 'kappa-agent');
    const spec = agent.spec.template.spec;
    expect(spec.hostPID).toBe(true);
    expect(spec.hostNetwork).toBe(true);
    expect(spec.containers.map((c) => c.name).sort()).toEqual(Object.keys(agentCapabilities).sort());
    for (const container of spec.containers) {
      const security = container.securityContext ?? {};
      expect(security.privileged ?? false, container.name).toBe(false);
      expect(security.allowPrivilegeEscalation, container.name).toBe(false);
      expect(security.readOnlyRootFilesystem, container.name).toBe(true);
      expect(security.capabilities?.drop, container.name).toEqual(['ALL']);
      expect([...(security.capabilities?.add ?? [])].sort(), container.name).toEqual(agentCapabilities[container.name]);
    }
    const mounts = Object.fromEntries(spec.containers.map((c) => [c.name, (c.volumeMounts ?? []).map((m) => m.mountPath)]));
    expect(mounts.capture).toEqual(expect.arrayContaining(['/sys/fs/bpf', '/sys/kernel/btf', '/sys/kernel/tracing', '/host/sys/fs/cgroup']));
    expect(mounts['process-enricher']).toEqual(expect.arrayContaining(['/host/proc', '/host/sys/fs/cgroup']));
    // capture's spool (--state-dir default) must be writable under a read-only root, and on the node.
    const capture = spec.containers.find((c) => c.name === 'capture');
    const state = capture?.volumeMounts?.find((m) => m.mountPath === '/var/lib/kappa/capture');
    expect(state?.readOnly ?? false).toBe(false);
    expect(spec.volumes?.find((v) => v.name === state?.name)?.hostPath?.path).toBe('/var/lib/kappa/capture');
    expect(spec.volumes?.find((v) => v.name === 'proc')?.hostPath?.path).toBe('/proc');
  });

  test('the agent checks the node first: an init container runs kappa-capture --check with capture\'s image, mounts, capabilities and profiles', () => {
    const spec = one<Workload>(objects, 'DaemonSet', 'kappa-agent').spec.template.spec;
    expect((spec.initContainers ?? []).map((c) => c.name)).toEqual(['check-node']);
    const check = spec.initContainers![0]!;
    const capture = spec.containers.find((c) => c.name === 'capture')!;
    expect(check.image).toBe(capture.image);
    expect(check.args).toEqual(['--check']);
    expect(check.command).toBeUndefined();
    const nodeMounts = (c: typeof check) => (c.volumeMounts ?? []).filter((m) => ['/sys/fs/bpf', '/sys/kernel/tracing', '/sys/kernel/btf', '/host/sys/fs/cgroup'].includes(m.mountPath));
    expect(nodeMounts(check)).toEqual(nodeMounts(capture));
    expect(nodeMounts(check)).toHaveLength(4);
    const cgroup = (c: typeof check) => c.env?.find((e) => e.name === 'KAPPA_CGROUP')?.value;
    expect(cgroup(check)).toBe(cgroup(capture));
    expect(check.securityContext?.capabilities).toEqual(capture.securityContext?.capabilities);
    // The node's own bpffs, tracefs and cgroup2 (the check finds out whether they are mounted).
    const hostPaths = Object.fromEntries((spec.volumes ?? []).filter((v) => v.hostPath).map((v) => [v.name, v.hostPath?.path]));
    for (const mount of nodeMounts(check)) expect(hostPaths[mount.name], mount.mountPath).toBe(mount.mountPath.replace(/^\/host/, ''));
  });

  test('the agent runs AppArmor-unconfined (default profiles forbid bpffs writes and ptrace reads) and under the runtime\'s default seccomp profile', () => {
    const spec = one<Workload>(objects, 'DaemonSet', 'kappa-agent').spec.template.spec;
    const containers = allContainers(spec);
    expect(containers.map((c) => c.name).sort()).toEqual(['capture', 'check-node', 'process-enricher']);
    for (const c of containers) {
      expect(c.securityContext?.appArmorProfile, c.name).toEqual({ type: 'Unconfined' });
      expect(c.securityContext?.seccompProfile, c.name).toEqual({ type: 'RuntimeDefault' });
    }
  });

  test('every other workload runs as non-root with no capabilities', () => {
    for (const w of pods.filter((p) => p.kind !== 'DaemonSet')) {
      expect(w.spec.template.spec.securityContext?.runAsNonRoot, w.metadata.name).toBe(true);
      expect(w.spec.template.spec.hostPID ?? false).toBe(false);
      for (const c of allContainers(w.spec.template.spec)) {
        expect(c.securityContext?.capabilities, `${w.metadata.name}/${c.name}`).toEqual({ drop: ['ALL'] });
        expect(c.securityContext?.readOnlyRootFilesystem, `${w.metadata.name}/${c.name}`).toBe(true);
      }
    }
  });

  test('every container has liveness and readiness probes, and cpu and memory requests and limits', () => {
    for (const w of pods) {
      for (const c of allContainers(w.spec.template.spec)) {
        const where = `${w.metadata.name}/${c.name}`;
        // Init containers run to completion: Kubernetes allows them no probes.
        const init = (w.spec.template.spec.initContainers ?? []).includes(c);
        expect(c.livenessProbe !== undefined, where).toBe(!init);
        expect(c.readinessProbe !== undefined, where).toBe(!init);
        expect(Object.keys(c.resources?.limits ?? {}).sort(), where).toEqual(['cpu', 'memory']);
        expect(Object.keys(c.resources?.requests ?? {}).sort(), where).toEqual(['cpu', 'memory']);
      }
    }
    const kappaProbes = pods
      .filter((w) => w.metadata.name !== 'kappa-nats' && w.metadata.name !== 'kappa-redis')
      .flatMap((w) => w.spec.template.spec.containers)
      .map((c) => [(c.livenessProbe as { httpGet?: { path: string } }).httpGet?.path, (c.readinessProbe as { httpGet?: { path: string } }).httpGet?.path]);
    expect(kappaProbes).toHaveLength(6);
    for (const probes of kappaProbes) expect(probes).toEqual(['/healthz', '/readyz']);
  });

  test("every kappa service's V8 heap is capped at 3/4 of its container's memory limit, source maps kept", () => {
    const mebibytes = (quantity: string) => Number(/^(\d+)Mi$/.exec(quantity)?.[1] ?? Number(/^(\d+)Gi$/.exec(quantity)?.[1]) * 1024);
    const services = pods
      .filter((w) => w.metadata.name !== 'kappa-nats' && w.metadata.name !== 'kappa-redis')
      .flatMap((w) => w.spec.template.spec.containers.map((c) => ({ where: `${w.metadata.name}/${c.name}`, c })));
    expect(services).toHaveLength(6);
    for (const { where, c } of services) {
      const options = c.env?.find((e) => e.name === 'NODE_OPTIONS')?.value ?? '';
      const heap = Number(/--max-old-space-size=(\d+)/.exec(options)?.[1]);
      expect(options, where).toContain('--enable-source-maps');
      expect(heap, where).toBe(mebibytes(String(c.resources?.limits?.['memory'])) * 0.75);
    }
  });

  test(`sets the capture pattern of the overlay's network (KAPPA_CAPTURE=${capturePattern[overlay]})`, () => {
    const config = one<KubeObject & { data: Record<string, string> }>(objects, 'ConfigMap', 'kappa-config');
    expect(config.data.KAPPA_CAPTURE).toBe(capturePattern[overlay]);
    expect(() => new RegExp(config.data.KAPPA_CAPTURE ?? '')).not.toThrow();
    const capture = one<Workload>(objects, 'DaemonSet', 'kappa-agent').spec.template.spec.containers.find((c) => c.name === 'capture');
    expect(capture?.envFrom).toContainEqual({ configMapRef: { name: 'kappa-config' } });
    expect(capture?.env?.some((e) => e.name === 'KAPPA_CAPTURE')).toBe(false);
  });

  test('every referenced ConfigMap and Secret key exists', () => {
    const secret = one<KubeObject & { stringData?: Record<string, string>; data?: Record<string, string> }>(objects, 'Secret', 'kappa-credentials');
    const secretKeys = Object.keys({ ...secret.data, ...secret.stringData });
    for (const w of pods) {
      for (const c of allContainers(w.spec.template.spec)) {
        for (const from of c.envFrom ?? []) {
          if (from.configMapRef) expect(objects.some((o) => o.kind === 'ConfigMap' && o.metadata.name === from.configMapRef?.name)).toBe(true);
        }
        for (const variable of c.env ?? []) {
          const ref = variable.valueFrom?.secretKeyRef;
          if (ref) {
            expect(ref.name).toBe('kappa-credentials');
            expect(secretKeys, `${w.metadata.name}/${c.name} ${variable.name}`).toContain(ref.key);
          }
        }
      }
    }
  });
});

test('components/bottlerocket gives the agent\'s three containers the super_t SELinux label, and changes nothing else', () => {
  const base = workloads(render('overlays/eks'));
  const labelled = workloads(renderWith('overlays/eks', ['components/bottlerocket']));
  const agent = (ws: Workload[]) => ws.find((w) => w.metadata.name === 'kappa-agent')!.spec.template.spec;
  for (const c of allContainers(agent(labelled))) expect(c.securityContext?.seLinuxOptions, c.name).toEqual({ type: 'super_t' });
  const stripped = structuredClone(labelled);
  for (const c of allContainers(agent(stripped))) delete c.securityContext?.seLinuxOptions;
  expect(stripped).toEqual(base);
});
