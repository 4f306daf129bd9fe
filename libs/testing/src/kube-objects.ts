// Kubernetes objects of real size and shape, as a production API server stores them: managedFields
// (server-side apply bookkeeping, usually the largest part of an object), ~30 labels, annotations,
// 10 containers with env, probes, resources and mounts; and the sequence of states the scheduler
// and the kubelet write while a pod starts and stops (no node, no IP, an IP, container ids, ready;
// deletionTimestamp, terminated containers, gone).
import { createHash } from 'node:crypto';
import type { KubeApiServer, KubeObject } from './kube-api-server.js';

/** RFC 3339 with seconds, as the API server writes every timestamp. */
export function kubeTime(ms: number = Date.now()): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

function hex(seed: string, length: number): string {
  let out = '';
  for (let i = 0; out.length < length; i++) out += createHash('sha256').update(`${seed}:${i}`).digest('hex');
  return out.slice(0, length);
}

/** A stable UUID from a seed (tests name objects, the UID follows). */
export function uidOf(seed: string): string {
  const h = hex(`uid:${seed}`, 32);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** A 64-hex container id, as containerd and cri-o make them. */
export function containerIdOf(seed: string): string {
  return hex(`container:${seed}`, 64);
}

/** managedFields' FieldsV1 for a value: f:<field>, k:{"name":…} for keyed list items, v:<value>. */
function fieldsV1(value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [field, v] of Object.entries(value)) {
    if (Array.isArray(v)) {
      const list: Record<string, unknown> = { '.': {} };
      for (const item of v) {
        if (item !== null && typeof item === 'object') {
          const record = item as Record<string, unknown>;
          const key =
            'name' in record ? { name: record.name }
            : 'containerPort' in record ? { containerPort: record.containerPort, protocol: record.protocol ?? 'TCP' }
            : 'type' in record ? { type: record.type }
            : 'ip' in record ? { ip: record.ip }
            : undefined;
          list[key ? `k:${JSON.stringify(key)}` : `v:${JSON.stringify(item)}`] = { '.': {}, ...fieldsV1(record) };
        } else {
          list[`v:${JSON.stringify(item)}`] = {};
        }
      }
      out[`f:${field}`] = list;
    } else if (v !== null && typeof v === 'object') {
      out[`f:${field}`] = { '.': {}, ...fieldsV1(v as Record<string, unknown>) };
    } else {
      out[`f:${field}`] = {};
    }
  }
  return out;
}

function managedField(manager: string, timeMs: number, fields: Record<string, unknown>, subresource?: string): Record<string, unknown> {
  return { manager, operation: 'Update', apiVersion: 'v1', time: kubeTime(timeMs), fieldsType: 'FieldsV1', fieldsV1: fieldsV1(fields), ...(subresource ? { subresource } : {}) };
}

/** ~30 labels: the caller's first, then the recommended and organisational ones real clusters carry. */
export function realLabels(app: string, extra: Record<string, string> = {}, count = 30): Record<string, string> {
  const labels: Record<string, string> = {
    app,
    'app.kubernetes.io/name': app,
    'app.kubernetes.io/instance': `${app}-prod`,
    'app.kubernetes.io/version': '3.14.2',
    'app.kubernetes.io/component': 'backend',
    'app.kubernetes.io/part-of': 'shop-platform',
    'app.kubernetes.io/managed-by': 'Helm',
    'helm.sh/chart': `${app}-3.14.2`,
    'team.example.com/owner': 'payments-platform',
    'team.example.com/oncall': 'payments-oncall-primary',
    'cost.example.com/center': 'cc-4711-payments',
    'cost.example.com/project': 'checkout-modernisation-2026',
    'security.example.com/data-classification': 'confidential',
    'security.example.com/pci-scope': 'in-scope',
    'topology.example.com/tier': 'application',
    'topology.example.com/region-affinity': 'eu-west-1',
    'deploy.example.com/release-train': '2026-48',
    'deploy.example.com/git-sha': hex(`sha:${app}`, 40),
    'sidecar.istio.io/inject': 'true',
    'service.istio.io/canonical-name': app,
    'service.istio.io/canonical-revision': 'v3',
    'version': 'v3',
    ...extra,
  };
  for (let i = Object.keys(labels).length; i < count; i++) labels[`feature.example.com/flag-${i}`] = i % 2 ? 'enabled' : 'disabled';
  return labels;
}

const annotations = (app: string): Record<string, string> => ({
  'kubectl.kubernetes.io/restartedAt': '2026-11-30T08:15:00Z',
  'prometheus.io/scrape': 'true',
  'prometheus.io/port': '9090',
  'prometheus.io/path': '/metrics',
  'checksum/config': hex(`config:${app}`, 64),
  'checksum/secret': hex(`secret:${app}`, 64),
  'cluster-autoscaler.kubernetes.io/safe-to-evict': 'true',
});

interface ContainerShape {
  name: string;
  id: string;
  ports: { name: string; containerPort: number; protocol: string; hostPort?: number }[];
}

function containerSpec(app: string, c: ContainerShape, index: number): Record<string, unknown> {
  if (index > 0) {
    // Sidecars (proxy, log shipper, agents): smaller than the application container.
    return {
      name: c.name,
      image: `registry.example.com/platform/${c.name}:1.${index}.0`,
      imagePullPolicy: 'IfNotPresent',
      args: [`--port=${9090 + index}`, '--log-level=info'],
      ports: c.ports,
      env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } }],
      resources: { limits: { memory: '128Mi' }, requests: { cpu: '10m', memory: '64Mi' } },
      volumeMounts: [{ name: 'kube-api-access-x7k2p', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true }],
      terminationMessagePath: '/dev/termination-log',
      terminationMessagePolicy: 'File',
    };
  }
  return {
    name: c.name,
    image: `registry.example.com/${app}/${c.name}:3.14.2@sha256:${hex(`image:${app}:${c.name}`, 64)}`,
    imagePullPolicy: 'IfNotPresent',
    command: ['/usr/local/bin/entrypoint'],
    args: ['--config=/etc/app/config.yaml', `--listen=:${8080 + index}`, '--log-format=json', '--shutdown-grace=25s'],
    ports: c.ports,
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } } },
      { name: 'POD_IP', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'status.podIP' } } },
      { name: 'NODE_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } } },
      { name: 'GOMAXPROCS', valueFrom: { resourceFieldRef: { containerName: c.name, divisor: '1', resource: 'limits.cpu' } } },
      { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: 'http://otel-collector.observability.svc.cluster.local:4317' },
      { name: 'DATABASE_URL', valueFrom: { secretKeyRef: { key: 'url', name: `${app}-db` } } },
      { name: 'FEATURE_FLAGS', value: 'checkout-v2,async-refunds,fraud-scoring-shadow' },
    ],
    resources: { limits: { cpu: '1', memory: '512Mi' }, requests: { cpu: '100m', memory: '256Mi' } },
    livenessProbe: { httpGet: { path: '/healthz', port: 8080 + index, scheme: 'HTTP' }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
    readinessProbe: { httpGet: { path: '/readyz', port: 8080 + index, scheme: 'HTTP' }, periodSeconds: 5, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3 },
    volumeMounts: [
      { name: 'config', mountPath: '/etc/app', readOnly: true },
      { name: 'tls', mountPath: '/etc/tls', readOnly: true },
      { name: 'tmp', mountPath: '/tmp' },
      { name: 'kube-api-access-x7k2p', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true },
    ],
    securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, readOnlyRootFilesystem: true, runAsNonRoot: true, runAsUser: 10001 },
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
  };
}

export interface RealPodSpec {
  name: string;
  namespace?: string;
  uid?: string;
  /** Unset: not scheduled yet. */
  node?: string;
  hostIP?: string;
  /** The pod's IPs (first is podIP); unset: no IP yet. hostNetwork pods get the host IP. */
  ips?: string[];
  hostNetwork?: boolean;
  /** Labels that matter to the test; the rest up to `labelCount` are filled in. */
  labels?: Record<string, string>;
  labelCount?: number;
  owner?: { apiVersion?: string; kind: string; name: string; uid?: string };
  /** name → container id; or a count of containers (default 10, ids derived from the pod name). */
  containers?: Record<string, string> | number;
  /** Ports of the first container (hostPort for hostNetwork / hostPort pods). */
  ports?: { name: string; containerPort: number; protocol?: string; hostPort?: number }[];
  createdMs?: number;
  startedMs?: number;
}

type PodStage = 'created' | 'scheduled' | 'accepted' | 'networked' | 'running' | 'ready';

function podContainers(spec: RealPodSpec): ContainerShape[] {
  const given = spec.containers ?? 10;
  const entries: [string, string][] =
    typeof given === 'number'
      ? Array.from({ length: given }, (_, i) => [i === 0 ? (spec.labels?.app ?? spec.name) : `sidecar-${i}`, containerIdOf(`${spec.namespace ?? 'default'}/${spec.name}/${i}`)])
      : Object.entries(given);
  return entries.map(([name, id], i) => ({
    name,
    id,
    ports: i === 0 ? (spec.ports ?? [{ name: 'http', containerPort: 8080 }]).map((p) => ({ protocol: 'TCP', ...p })) : [{ name: `metrics-${i}`, containerPort: 9090 + i, protocol: 'TCP' }],
  }));
}

/** A pod at one stage of its start, as the API server returns it at that moment. */
export function realPod(spec: RealPodSpec, stage: PodStage = 'ready'): KubeObject {
  const namespace = spec.namespace ?? 'default';
  const app = spec.labels?.app ?? spec.name;
  const createdMs = spec.createdMs ?? Date.now();
  const startedMs = spec.startedMs ?? createdMs;
  const containers = podContainers(spec);
  const order: PodStage[] = ['created', 'scheduled', 'accepted', 'networked', 'running', 'ready'];
  const reached = (s: PodStage) => order.indexOf(stage) >= order.indexOf(s);
  const labels = realLabels(app, spec.labels ?? {}, spec.labelCount ?? 30);
  const owner = spec.owner;
  const metadata = {
    name: spec.name,
    ...(owner?.kind === 'ReplicaSet' ? { generateName: `${owner.name}-` } : {}),
    namespace,
    uid: spec.uid ?? uidOf(`${namespace}/${spec.name}`),
    creationTimestamp: kubeTime(createdMs),
    labels,
    annotations: annotations(app),
    ...(owner
      ? { ownerReferences: [{ apiVersion: owner.apiVersion ?? 'apps/v1', kind: owner.kind, name: owner.name, uid: owner.uid ?? uidOf(`${namespace}/${owner.kind}/${owner.name}`), controller: true, blockOwnerDeletion: true }] }
      : {}),
  };
  const podSpec: Record<string, unknown> = {
    ...(reached('scheduled') && spec.node ? { nodeName: spec.node } : {}),
    ...(spec.hostNetwork ? { hostNetwork: true, dnsPolicy: 'ClusterFirstWithHostNet' } : { dnsPolicy: 'ClusterFirst' }),
    containers: containers.map((c, i) => containerSpec(app, c, i)),
    volumes: [
      { name: 'config', configMap: { name: `${app}-config`, defaultMode: 420 } },
      { name: 'tls', secret: { secretName: `${app}-tls`, defaultMode: 420 } },
      { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
      { name: 'kube-api-access-x7k2p', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }, { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } }] } },
    ],
    restartPolicy: 'Always',
    terminationGracePeriodSeconds: 30,
    serviceAccountName: app,
    serviceAccount: app,
    securityContext: { fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } },
    affinity: { podAntiAffinity: { preferredDuringSchedulingIgnoredDuringExecution: [{ weight: 100, podAffinityTerm: { labelSelector: { matchLabels: { app } }, topologyKey: 'kubernetes.io/hostname' } }] } },
    tolerations: [
      { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
    ],
    schedulerName: 'default-scheduler',
    priority: 0,
    enableServiceLinks: true,
    preemptionPolicy: 'PreemptLowerPriority',
  };
  const at = kubeTime(startedMs);
  const condition = (type: string, ok: boolean) => ({ type, status: ok ? 'True' : 'False', lastProbeTime: null, lastTransitionTime: at });
  const ips = spec.ips ?? [];
  const status: Record<string, unknown> = { phase: reached('running') ? 'Running' : 'Pending', qosClass: 'Burstable' };
  if (reached('scheduled')) status.conditions = [condition('PodScheduled', true)];
  if (reached('accepted')) {
    status.conditions = [
      condition('PodReadyToStartContainers', reached('networked')),
      condition('Initialized', true),
      condition('Ready', reached('ready')),
      condition('ContainersReady', reached('ready')),
      condition('PodScheduled', true),
    ];
    if (spec.hostIP) Object.assign(status, { hostIP: spec.hostIP, hostIPs: [{ ip: spec.hostIP }] });
    status.startTime = at;
    status.containerStatuses = containers.map((c, i) => ({
      name: c.name,
      image: (podSpec.containers as { image: string }[])[i]!.image,
      imageID: `registry.example.com/${app}/${c.name}@sha256:${hex(`image:${app}:${c.name}`, 64)}`,
      ready: reached('ready'),
      restartCount: 0,
      started: reached('running'),
      ...(reached('running')
        ? { containerID: `containerd://${c.id}`, state: { running: { startedAt: at } } }
        : { state: { waiting: { reason: 'ContainerCreating' } } }),
      lastState: {},
    }));
  }
  if (reached('networked')) {
    const podIps = spec.hostNetwork && spec.hostIP ? [spec.hostIP] : ips;
    if (podIps[0] !== undefined) Object.assign(status, { podIP: podIps[0], podIPs: podIps.map((ip) => ({ ip })) });
  }
  const managedFields = [
    managedField('kube-controller-manager', createdMs, { metadata: { generateName: '', labels: metadata.labels, ownerReferences: metadata.ownerReferences ?? [] }, spec: podSpec }),
    ...(reached('accepted') ? [managedField('kubelet', startedMs, { status }, 'status')] : []),
  ];
  return { apiVersion: 'v1', kind: 'Pod', metadata: { ...metadata, managedFields }, spec: podSpec, status };
}

/** The states the scheduler and the kubelet write while a pod starts, oldest first. */
export function kubeletStartSequence(spec: RealPodSpec): KubeObject[] {
  return (['created', 'scheduled', 'accepted', 'networked', 'running', 'ready'] as const).map((stage) => realPod(spec, stage));
}

/** The states a pod goes through when it is deleted: deletionTimestamp (now + grace), then
 *  every container terminated with its finishedAt, then (by the caller) DELETED. */
export function kubeletStopSequence(pod: KubeObject, options: { graceSeconds?: number; atMs?: number } = {}): KubeObject[] {
  const atMs = options.atMs ?? Date.now();
  const grace = options.graceSeconds ?? 30;
  const deleting = structuredClone(pod);
  deleting.metadata = { ...deleting.metadata, deletionTimestamp: kubeTime(atMs + grace * 1000), deletionGracePeriodSeconds: grace };
  const stopped = structuredClone(deleting);
  const status = (stopped.status ?? {}) as Record<string, unknown>;
  status.phase = 'Failed';
  status.containerStatuses = ((status.containerStatuses ?? []) as Record<string, unknown>[]).map((c) => ({
    ...c,
    ready: false,
    started: false,
    state: { terminated: { exitCode: 137, reason: 'Error', startedAt: ((c.state as { running?: { startedAt: string } } | undefined)?.running?.startedAt ?? kubeTime(atMs)), finishedAt: kubeTime(atMs), containerID: c.containerID } },
  }));
  stopped.status = status;
  return [deleting, stopped];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Writes a pod's start as the scheduler and kubelet do, one state per `stepMs`. */
export async function startPodLikeKubelet(api: KubeApiServer, spec: RealPodSpec, options: { stepMs?: number; until?: PodStage } = {}): Promise<KubeObject> {
  let last: KubeObject | undefined;
  const order: PodStage[] = ['created', 'scheduled', 'accepted', 'networked', 'running', 'ready'];
  for (const stage of order.slice(0, order.indexOf(options.until ?? 'ready') + 1)) {
    if (last) await sleep(options.stepMs ?? 20);
    last = api.apply(realPod(spec, stage));
  }
  return last!;
}

/** Deletes a pod as the kubelet does: deletionTimestamp, terminated containers, then gone. */
export async function stopPodLikeKubelet(api: KubeApiServer, namespace: string, name: string, options: { stepMs?: number; graceSeconds?: number } = {}): Promise<void> {
  const current = api.get('v1', 'Pod', namespace, name);
  if (!current) throw new Error(`no pod ${namespace}/${name}`);
  for (const state of kubeletStopSequence(current, options)) {
    api.apply(state);
    await sleep(options.stepMs ?? 20);
  }
  api.remove('v1', 'Pod', namespace, name);
}

export interface RealServiceSpec {
  name: string;
  namespace?: string;
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  /** 'None' for a headless Service. */
  clusterIP: string;
  ports: { name: string; port: number; targetPort: number; protocol?: string; nodePort?: number }[];
  selector?: Record<string, string>;
  externalIPs?: string[];
  loadBalancerIPs?: string[];
  labelCount?: number;
}

export function realService(spec: RealServiceSpec): KubeObject {
  const namespace = spec.namespace ?? 'default';
  const selector = spec.selector ?? { app: spec.name };
  const headless = spec.clusterIP === 'None';
  const family = spec.clusterIP.includes(':') ? 'IPv6' : 'IPv4';
  const serviceSpec: Record<string, unknown> = {
    type: spec.type ?? 'ClusterIP',
    clusterIP: spec.clusterIP,
    clusterIPs: [spec.clusterIP],
    ipFamilies: [family],
    ipFamilyPolicy: 'SingleStack',
    ports: spec.ports.map((p) => ({ name: p.name, protocol: p.protocol ?? 'TCP', port: p.port, targetPort: p.targetPort, ...(p.nodePort ? { nodePort: p.nodePort } : {}) })),
    selector,
    sessionAffinity: 'None',
    internalTrafficPolicy: 'Cluster',
    ...(spec.type === 'NodePort' || spec.type === 'LoadBalancer' ? { externalTrafficPolicy: 'Cluster' } : {}),
    ...(spec.externalIPs ? { externalIPs: spec.externalIPs } : {}),
    ...(headless ? { publishNotReadyAddresses: false } : {}),
  };
  const status = spec.loadBalancerIPs ? { loadBalancer: { ingress: spec.loadBalancerIPs.map((ip) => ({ ip, ipMode: 'VIP' })) } } : { loadBalancer: {} };
  const labels = realLabels(spec.name, {}, spec.labelCount ?? 30);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: spec.name,
      namespace,
      uid: uidOf(`${namespace}/Service/${spec.name}`),
      labels,
      annotations: { 'meta.helm.sh/release-name': `${spec.name}-prod`, 'meta.helm.sh/release-namespace': namespace },
      managedFields: [managedField('helm', Date.now(), { metadata: { labels, annotations: {} }, spec: serviceSpec })],
    },
    spec: serviceSpec,
    status,
  };
}

export interface RealEndpointSliceSpec {
  service: string;
  namespace?: string;
  /** Suffix of the slice name (a Service may have several slices). */
  suffix?: string;
  endpoints: { ip: string; ready?: boolean; node?: string; pod?: string }[];
  ports: { name: string; port: number; protocol?: string }[];
}

export function realEndpointSlice(spec: RealEndpointSliceSpec): KubeObject {
  const namespace = spec.namespace ?? 'default';
  const name = `${spec.service}-${spec.suffix ?? 'x7k2p'}`;
  const endpoints = spec.endpoints.map((e) => ({
    addresses: [e.ip],
    conditions: { ready: e.ready ?? true, serving: e.ready ?? true, terminating: false },
    ...(e.pod ? { targetRef: { kind: 'Pod', namespace, name: e.pod, uid: uidOf(`${namespace}/${e.pod}`) } } : {}),
    ...(e.node ? { nodeName: e.node, zone: 'eu-west-1a' } : {}),
  }));
  const ports = spec.ports.map((p) => ({ name: p.name, port: p.port, protocol: p.protocol ?? 'TCP' }));
  const labels = { 'kubernetes.io/service-name': spec.service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io', ...realLabels(spec.service, {}, 12) };
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      generateName: `${spec.service}-`,
      namespace,
      uid: uidOf(`${namespace}/EndpointSlice/${name}`),
      labels,
      annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': kubeTime() },
      ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name: spec.service, uid: uidOf(`${namespace}/Service/${spec.service}`), controller: true, blockOwnerDeletion: true }],
      managedFields: [managedField('endpointslice-controller.k8s.io', Date.now(), { metadata: { labels }, addressType: 'IPv4', endpoints, ports })],
    },
    addressType: spec.endpoints[0]?.ip.includes(':') ? 'IPv6' : 'IPv4',
    endpoints,
    ports,
  };
}

export interface RealNodeSpec {
  name: string;
  internalIP: string;
  externalIP?: string;
  podCIDRs?: string[];
  labelCount?: number;
}

export function realNode(spec: RealNodeSpec): KubeObject {
  const labels = realLabels(spec.name, {
    'kubernetes.io/hostname': spec.name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': 'amd64',
    'node.kubernetes.io/instance-type': 'm6i.2xlarge',
    'topology.kubernetes.io/region': 'eu-west-1',
    'topology.kubernetes.io/zone': 'eu-west-1a',
  }, spec.labelCount ?? 30);
  delete labels.app;
  const status = {
    addresses: [
      { type: 'InternalIP', address: spec.internalIP },
      ...(spec.externalIP ? [{ type: 'ExternalIP', address: spec.externalIP }] : []),
      { type: 'Hostname', address: spec.name },
    ],
    allocatable: { cpu: '7910m', 'ephemeral-storage': '95491281146', memory: '31792376Ki', pods: '110' },
    capacity: { cpu: '8', 'ephemeral-storage': '104203244Ki', memory: '32482552Ki', pods: '110' },
    conditions: ['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready'].map((type) => ({
      type, status: type === 'Ready' ? 'True' : 'False', lastHeartbeatTime: kubeTime(), lastTransitionTime: '2026-11-01T00:00:00Z', reason: `Kubelet${type}`, message: `kubelet reports ${type}`,
    })),
    daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
    images: Array.from({ length: 25 }, (_, i) => ({ names: [`registry.example.com/team-${i}/app@sha256:${hex(`img:${i}`, 64)}`, `registry.example.com/team-${i}/app:1.${i}.0`], sizeBytes: 50_000_000 + i * 1_000_000 })),
    nodeInfo: { architecture: 'amd64', bootID: uidOf(`boot:${spec.name}`), containerRuntimeVersion: 'containerd://1.7.24', kernelVersion: '6.1.0-28-cloud-amd64', kubeProxyVersion: 'v1.31.4', kubeletVersion: 'v1.31.4', machineID: hex(`machine:${spec.name}`, 32), operatingSystem: 'linux', osImage: 'Debian GNU/Linux 12 (bookworm)', systemUUID: uidOf(`sys:${spec.name}`) },
  };
  const nodeSpec = { ...(spec.podCIDRs ? { podCIDR: spec.podCIDRs[0], podCIDRs: spec.podCIDRs } : {}), providerID: `aws:///eu-west-1a/i-${hex(spec.name, 17)}` };
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: spec.name,
      uid: uidOf(`node:${spec.name}`),
      labels,
      annotations: { 'node.alpha.kubernetes.io/ttl': '0', 'volumes.kubernetes.io/controller-managed-attach-detach': 'true' },
      managedFields: [managedField('kubelet', Date.now(), { metadata: { labels }, spec: nodeSpec }), managedField('kubelet', Date.now(), { status }, 'status')],
    },
    spec: nodeSpec,
    status,
  };
}

/** A Deployment or ReplicaSet (or another owner kind) carrying a pod template of real size. */
export function realWorkload(kind: string, name: string, namespace = 'default', owner?: { kind: string; name: string; apiVersion?: string }): KubeObject {
  const apiVersion = kind === 'Job' || kind === 'CronJob' ? 'batch/v1' : 'apps/v1';
  const app = name.replace(/-[0-9a-f]{5,10}$/, '');
  const template = realPod({ name: `${app}-template`, namespace, labels: { app }, containers: 3 }, 'created');
  const labels = realLabels(app);
  const spec = { replicas: 3, selector: { matchLabels: { app } }, template: { metadata: { labels: (template.metadata as { labels: unknown }).labels }, spec: template.spec } };
  return {
    apiVersion,
    kind,
    metadata: {
      name,
      namespace,
      uid: uidOf(`${namespace}/${kind}/${name}`),
      labels,
      ...(owner ? { ownerReferences: [{ apiVersion: owner.apiVersion ?? apiVersion, kind: owner.kind, name: owner.name, uid: uidOf(`${namespace}/${owner.kind}/${owner.name}`), controller: true, blockOwnerDeletion: true }] } : {}),
      managedFields: [managedField('kube-controller-manager', Date.now(), { metadata: { labels }, spec })],
    },
    spec,
    status: { replicas: 3, readyReplicas: 3, availableReplicas: 3, observedGeneration: 4 },
  };
}
