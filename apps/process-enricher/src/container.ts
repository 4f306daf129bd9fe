// Container id and runtime from a cgroup path, for the path shapes docker, containerd (CRI and
// nerdctl), CRI-O and podman create with the systemd and cgroupfs drivers, on cgroup v1 and v2.
import type { CgroupMembership } from './proc.js';

export type ContainerRuntime = 'docker' | 'containerd' | 'cri-o' | 'podman';

export interface ContainerRef {
  id: string;
  /** Empty when the path does not say (kubelet cgroupfs driver: `/kubepods/.../pod<uid>/<id>`). */
  runtime: ContainerRuntime | '';
  /** The Kubernetes pod UID (dashes restored) when the path is under kubepods. */
  podUid?: string;
  /** The runtime was inferred from a bare id (cgroupfs driver), not named by the path. */
  inferred?: true;
}

const HEX64 = '[0-9a-f]{64}';

/**
 * One path component that names a container, most specific prefixes first. Helper cgroups beside
 * a container (CRI-O's and podman's conmon monitors) are not containers: they come before their
 * container's pattern so they never match it.
 */
const componentPatterns: readonly { pattern: RegExp; runtime: ContainerRuntime | null }[] = [
  { pattern: new RegExp(`^(?:crio|libpod)-conmon-${HEX64}(?:\\.scope)?$`), runtime: null },
  { pattern: new RegExp(`^cri-containerd-(${HEX64})\\.scope$`), runtime: 'containerd' },
  { pattern: new RegExp(`^nerdctl-(${HEX64})\\.scope$`), runtime: 'containerd' },
  { pattern: new RegExp(`^crio-(${HEX64})(?:\\.scope)?$`), runtime: 'cri-o' },
  { pattern: new RegExp(`^docker-(${HEX64})\\.scope$`), runtime: 'docker' },
  { pattern: new RegExp(`^libpod-(${HEX64})(?:\\.scope)?$`), runtime: 'podman' },
];

const bareId = new RegExp(`^${HEX64}$`);
// kubepods-burstable-pod0a1b2c3d_....slice (systemd) or pod0a1b2c3d-... (cgroupfs)
const podComponent = /^(?:.*-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$/;

/**
 * The innermost container a cgroup path names: nested containers (docker in docker) resolve to
 * the inner one, and sub-cgroups a runtime adds inside a container (crun's `/container`,
 * systemd's `init.scope`) still resolve to it. Undefined for host cgroups.
 */
export function containerFromCgroupPath(path: string): ContainerRef | undefined {
  const components = path.split('/').filter((c) => c.length > 0 && c !== '..' && c !== '.');
  let found: ContainerRef | undefined;
  let podUid: string | undefined;
  for (let i = 0; i < components.length; i++) {
    const component = components[i] ?? '';
    const pod = podComponent.exec(component);
    if (pod?.[1] !== undefined) {
      podUid = pod[1].replace(/_/g, '-');
      continue;
    }
    let matched = false;
    for (const { pattern, runtime } of componentPatterns) {
      const m = pattern.exec(component);
      if (!m) continue;
      matched = true;
      // A conmon cgroup matches (so it is not taken for a bare id) but names no container.
      if (runtime !== null && m[1] !== undefined) found = { id: m[1], runtime, ...(podUid ? { podUid } : {}) };
      break;
    }
    if (matched || !bareId.test(component)) continue;
    // cgroupfs drivers: the bare id under its parent.
    const parent = components[i - 1] ?? '';
    const runtime: ContainerRuntime | '' =
      parent === 'docker'
        ? 'docker'
        : podUid !== undefined
          ? // Under kubepods/<qos>/pod<uid>/ the id is the CRI's; CRI-O names its cgroups crio-<id>
            // and dockershim is gone, so a bare id is containerd's (or cri-dockerd's, rarely).
            'containerd'
          : '';
    found = { id: component, runtime, ...(podUid ? { podUid, inferred: true as const } : {}) };
  }
  return found;
}

/**
 * The container of a process from all its cgroup memberships: the v2 path first, then the v1
 * hierarchies (a v1-only node has its containers there and only `/` in v2).
 */
export function containerFromMemberships(memberships: readonly CgroupMembership[]): ContainerRef | undefined {
  const unified = memberships.find((m) => m.hierarchyId === 0 && m.controllers.length === 0);
  const fromUnified = unified ? containerFromCgroupPath(unified.path) : undefined;
  if (fromUnified) return fromUnified;
  for (const m of memberships) {
    if (m === unified) continue;
    const ref = containerFromCgroupPath(m.path);
    if (ref) return ref;
  }
  return undefined;
}
