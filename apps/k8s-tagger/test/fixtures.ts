// Kubernetes objects as a real API server stores them, and helpers to run the tagger in-process
// against the test API server.
import { KubeConfig } from '@kubernetes/client-node';
import { create, EndpointSchema, newFlowBatch, newFlowRecord, ProcessSchema, IpProtocol } from '@kappa/contracts';
import type { FlowBatch, FlowRecord, Vantage } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import type { KubeApiServer, KubeObject } from '@kappa/testing';
import { TaggerService } from '../src/tagger-service.js';
import type { TaggerServiceOptions } from '../src/tagger-service.js';

export async function until(condition: () => boolean, timeoutMs = 15_000, what = condition.toString()): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not met in ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Like until, for a condition that must await something (a metric, a server). */
export async function eventually(condition: () => Promise<boolean>, timeoutMs = 15_000, what = condition.toString()): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not met in ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

type Owner = { kind: string; name: string; apiVersion?: string };

export function namespace(name: string, uid?: string): KubeObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, ...(uid ? { uid } : {}) } };
}

export function node(name: string, ip: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name } },
    status: { addresses: [{ type: 'InternalIP', address: ip }, { type: 'Hostname', address: name }] },
  };
}

export interface PodSpec {
  name: string;
  namespace?: string;
  ip: string;
  node: string;
  labels?: Record<string, string>;
  owner?: Owner;
  containers?: Record<string, string>;
  hostNetwork?: boolean;
  createdMs?: number;
}

export function pod(spec: PodSpec): KubeObject {
  const containers = Object.entries(spec.containers ?? { app: `cid-${spec.name}` });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: spec.name,
      namespace: spec.namespace ?? 'default',
      labels: spec.labels ?? { app: spec.name },
      ...(spec.createdMs !== undefined ? { creationTimestamp: iso(spec.createdMs) } : {}),
      ...(spec.owner
        ? { ownerReferences: [{ apiVersion: spec.owner.apiVersion ?? 'apps/v1', kind: spec.owner.kind, name: spec.owner.name, uid: `uid-${spec.owner.name}`, controller: true }] }
        : {}),
    },
    spec: { nodeName: spec.node, hostNetwork: spec.hostNetwork ?? false, containers: containers.map(([name]) => ({ name, image: `${name}:1` })) },
    status: {
      phase: 'Running',
      podIP: spec.ip,
      podIPs: [{ ip: spec.ip }],
      hostIP: spec.ip,
      containerStatuses: containers.map(([name, id]) => ({ name, containerID: `containerd://${id}`, ready: true, restartCount: 0, image: `${name}:1`, imageID: '' })),
    },
  };
}

export function workload(apiVersion: string, kind: string, name: string, namespaceName = 'default', owner?: Owner): KubeObject {
  return {
    apiVersion,
    kind,
    metadata: {
      name,
      namespace: namespaceName,
      ...(owner ? { ownerReferences: [{ apiVersion: owner.apiVersion ?? 'apps/v1', kind: owner.kind, name: owner.name, uid: `uid-${owner.name}`, controller: true }] } : {}),
    },
    spec: {},
  };
}

export function service(name: string, clusterIP: string, ports: { name: string; port: number; targetPort: number }[], namespaceName = 'default'): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: namespaceName, labels: { svc: name } },
    spec: { clusterIP, clusterIPs: [clusterIP], ports: ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort, protocol: 'TCP' })) },
  };
}

export function endpointSlice(serviceName: string, endpoints: { ip: string; ready?: boolean }[], ports: { name: string; port: number }[], namespaceName = 'default'): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${serviceName}-abcde`, namespace: namespaceName, labels: { 'kubernetes.io/service-name': serviceName } },
    addressType: 'IPv4',
    endpoints: endpoints.map((e) => ({ addresses: [e.ip], conditions: { ready: e.ready ?? true } })),
    ports: ports.map((p) => ({ name: p.name, port: p.port, protocol: 'TCP' })),
  };
}

export interface FlowSpec {
  node: string;
  vantage: Vantage;
  src: { ip: string; port: number; containerId?: string };
  dst: { ip: string; port: number; containerId?: string };
  startMs?: number;
}

export function flow(spec: FlowSpec): FlowRecord {
  const startNs = BigInt(spec.startMs ?? Date.now()) * 1_000_000n;
  const end = (e: FlowSpec['src']) =>
    create(EndpointSchema, { ip: e.ip, port: e.port, ...(e.containerId ? { process: create(ProcessSchema, { pid: 42, containerId: e.containerId }) } : {}) });
  return newFlowRecord({
    node: spec.node,
    vantage: spec.vantage,
    startNs,
    endNs: startNs + 5_000_000_000n,
    protocol: IpProtocol.TCP,
    src: end(spec.src),
    dst: end(spec.dst),
    bytes: 1000n,
    packets: 10n,
  });
}

export function batchOf(id: string, records: FlowRecord[]): FlowBatch {
  return newFlowBatch({ batchId: id, producer: 'node-a', createdNs: BigInt(Date.now()) * 1_000_000n, records });
}

export function kubeConfigOf(api: KubeApiServer): KubeConfig {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(api.kubeconfig);
  return kubeConfig;
}

/** Starts a tagger in-process and (unless `wait: false`) waits until every resource is listed. */
export async function startTagger(api: KubeApiServer | undefined, overrides: Partial<TaggerServiceOptions> & { wait?: boolean } = {}): Promise<TaggerService> {
  const { wait = true, ...options } = overrides;
  const tagger = new TaggerService({
    kubeConfig: api ? kubeConfigOf(api) : undefined,
    deletedGraceMs: 120_000,
    grpc: { port: 0, host: '127.0.0.1' },
    instance: 'test',
    logger: createLogger('k8s-tagger', (process.env.KAPPA_TEST_LOG_LEVEL as 'warn' | undefined) ?? 'silent'),
    registry: createRegistry('k8s-tagger'),
    baseBackoffMs: 50,
    ...options,
  });
  await tagger.start();
  if (wait) await tagger.whenConsuming();
  return tagger;
}
