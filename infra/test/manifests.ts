// Renders Kustomize overlays with the real kubectl and gives typed access to what the tests check.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

export const workspaceRoot = resolve(import.meta.dirname, '../..');
export const k8sDir = resolve(workspaceRoot, 'infra/k8s');

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: {
    name: string;
    value?: string;
    valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string }; fieldRef?: { fieldPath: string } };
  }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  livenessProbe?: Record<string, unknown>;
  readinessProbe?: Record<string, unknown>;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    privileged?: boolean;
    runAsUser?: number;
    runAsNonRoot?: boolean;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { add?: string[]; drop?: string[] };
    appArmorProfile?: { type: string; localhostProfile?: string };
    seccompProfile?: { type: string; localhostProfile?: string };
    seLinuxOptions?: { type?: string; level?: string };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}

export interface PodSpec {
  hostPID?: boolean;
  hostNetwork?: boolean;
  serviceAccountName?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  containers: Container[];
  initContainers?: Container[];
  volumes?: {
    name: string;
    hostPath?: { path: string; type?: string };
    secret?: { secretName: string; items?: { key: string; path: string }[] };
    configMap?: { name: string };
    emptyDir?: { medium?: string };
  }[];
}

export interface Workload extends KubeObject {
  spec: {
    selector: { matchLabels: Record<string, string> };
    serviceName?: string;
    template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  };
}

export const workloadKinds = new Set(['Deployment', 'StatefulSet', 'DaemonSet']);

export function overlayNames(): string[] {
  return readdirSync(resolve(k8sDir, 'overlays')).sort();
}

/** `kubectl kustomize` of infra/k8s/<path>, parsed. */
export function render(path: string): KubeObject[] {
  return parse(execFileSync('kubectl', ['kustomize', resolve(k8sDir, path)], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }));
}

/**
 * Renders infra/k8s/<path> with extra components, as an operator's overlay listing them would
 * (kustomize wants relative paths, so the throwaway overlay points back into infra/k8s).
 */
export function renderWith(path: string, components: string[]): KubeObject[] {
  const dir = mkdtempSync(join(tmpdir(), 'ksd-overlay-'));
  try {
    const from = (p: string) => relative(dir, resolve(k8sDir, p));
    writeFileSync(
      join(dir, 'kustomization.yaml'),
      `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [${from(path)}]\ncomponents: [${components.map(from).join(', ')}]\n`,
    );
    return parse(execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function parse(text: string): KubeObject[] {
  return parseAllDocuments(text)
    .map((doc) => doc.toJS() as KubeObject | null)
    .filter((object): object is KubeObject => object !== null);
}

export function workloads(objects: KubeObject[]): Workload[] {
  return objects.filter((o): o is Workload => workloadKinds.has(o.kind));
}

export function allContainers(spec: PodSpec): Container[] {
  return [...(spec.initContainers ?? []), ...spec.containers];
}

export function one<T extends KubeObject>(objects: KubeObject[], kind: string, name: string): T {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind}/${name}, found ${found.length}`);
  return found[0] as T;
}

/** true when every label of `selector` is on `labels` */
export function selects(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([key, value]) => labels?.[key] === value);
}
