// Container id and runtime from the cgroup paths real nodes have: managed Kubernetes (GKE, AKS,
// EKS), plain docker, podman rootful and rootless, CRI-O (OpenShift); both drivers, v1 and v2.
import { describe, expect, it } from 'vitest';
import { containerFromCgroupPath, containerFromMemberships } from '../src/container.js';
import type { ContainerRef } from '../src/container.js';
import { parseCgroupFile } from '../src/proc.js';

const ID = '3f9b2c1e7d4a5b6c8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f';
const ID2 = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90';
const POD = '6d9f2c1a-8b3e-4f7d-9a2c-1e5b7d3f9a01';
const POD_ = POD.replace(/-/g, '_');

const table: { name: string; path: string; expected: ContainerRef | undefined }[] = [
  // GKE, Container-Optimized OS, containerd, cgroup v2, systemd driver (GKE ≥ 1.26).
  { name: 'GKE COS v2 systemd burstable', path: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice/cri-containerd-${ID}.scope`, expected: { id: ID, runtime: 'containerd', podUid: POD } },
  // GKE COS older node pools: cgroup v1, cgroupfs driver, bare container id.
  { name: 'GKE COS v1 cgroupfs besteffort', path: `/kubepods/besteffort/pod${POD}/${ID}`, expected: { id: ID, runtime: 'containerd', podUid: POD, inferred: true } },
  // AKS Ubuntu 22.04: containerd, cgroup v2, systemd driver.
  { name: 'AKS Ubuntu v2 systemd besteffort', path: `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`, expected: { id: ID, runtime: 'containerd', podUid: POD } },
  // AKS Ubuntu 18.04: containerd, cgroup v1, systemd driver (each v1 hierarchy has the same path).
  { name: 'AKS Ubuntu v1 systemd guaranteed', path: `/kubepods.slice/kubepods-pod${POD_}.slice/cri-containerd-${ID}.scope`, expected: { id: ID, runtime: 'containerd', podUid: POD } },
  // EKS Amazon Linux 2: containerd, cgroup v1, cgroupfs driver.
  { name: 'EKS AL2 v1 cgroupfs burstable', path: `/kubepods/burstable/pod${POD}/${ID}`, expected: { id: ID, runtime: 'containerd', podUid: POD, inferred: true } },
  { name: 'EKS AL2 v1 cgroupfs guaranteed', path: `/kubepods/pod${POD}/${ID}`, expected: { id: ID, runtime: 'containerd', podUid: POD, inferred: true } },
  // EKS AL2023: containerd, cgroup v2, systemd driver.
  { name: 'EKS AL2023 v2 systemd', path: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice/cri-containerd-${ID}.scope`, expected: { id: ID, runtime: 'containerd', podUid: POD } },
  // kind / k3d style nodes run kubelet with a cgroup root of their own.
  { name: 'kind kubelet.slice root', path: `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`, expected: { id: ID, runtime: 'containerd', podUid: POD } },
  // Kubernetes with dockershim / cri-dockerd, systemd driver.
  { name: 'k8s docker systemd', path: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice/docker-${ID}.scope`, expected: { id: ID, runtime: 'docker', podUid: POD } },
  // OpenShift / CRI-O, systemd driver, v1 and v2 (crun adds a `container` sub-cgroup on v2).
  { name: 'OpenShift CRI-O v1 systemd', path: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice/crio-${ID}.scope`, expected: { id: ID, runtime: 'cri-o', podUid: POD } },
  { name: 'OpenShift CRI-O v2 crun sub-cgroup', path: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice/crio-${ID}.scope/container`, expected: { id: ID, runtime: 'cri-o', podUid: POD } },
  { name: 'CRI-O cgroupfs driver', path: `/kubepods/burstable/pod${POD}/crio-${ID}`, expected: { id: ID, runtime: 'cri-o', podUid: POD } },
  { name: 'CRI-O conmon is not a container', path: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice/crio-conmon-${ID}.scope`, expected: undefined },
  // Plain docker.
  { name: 'docker systemd driver', path: `/system.slice/docker-${ID}.scope`, expected: { id: ID, runtime: 'docker' } },
  { name: 'docker cgroupfs driver', path: `/docker/${ID}`, expected: { id: ID, runtime: 'docker' } },
  { name: 'docker in docker (inner wins)', path: `/docker/${ID}/docker/${ID2}`, expected: { id: ID2, runtime: 'docker' } },
  { name: 'docker rootless', path: `/user.slice/user-1000.slice/user@1000.service/user.slice/docker-${ID}.scope`, expected: { id: ID, runtime: 'docker' } },
  // podman rootful (systemd and cgroupfs managers) and rootless.
  { name: 'podman rootful systemd', path: `/machine.slice/libpod-${ID}.scope`, expected: { id: ID, runtime: 'podman' } },
  { name: 'podman rootful crun sub-cgroup', path: `/machine.slice/libpod-${ID}.scope/container`, expected: { id: ID, runtime: 'podman' } },
  { name: 'podman rootful cgroupfs', path: `/libpod_parent/libpod-${ID}`, expected: { id: ID, runtime: 'podman' } },
  { name: 'podman rootless', path: `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container`, expected: { id: ID, runtime: 'podman' } },
  { name: 'podman conmon is not a container', path: `/machine.slice/libpod-conmon-${ID}.scope`, expected: undefined },
  // containerd without Kubernetes.
  { name: 'nerdctl systemd', path: `/system.slice/nerdctl-${ID}.scope`, expected: { id: ID, runtime: 'containerd' } },
  // A cgroup namespace shows paths relative to its root.
  { name: 'path seen from a cgroup namespace', path: `/../../kubepods-besteffort-pod${POD_}.slice/cri-containerd-${ID}.scope`, expected: { id: ID, runtime: 'containerd', podUid: POD } },
  // Host cgroups are not containers.
  { name: 'root', path: '/', expected: undefined },
  { name: 'systemd service', path: '/system.slice/sshd.service', expected: undefined },
  { name: 'user session', path: '/user.slice/user-0.slice/session-3.scope', expected: undefined },
  { name: 'pod slice without a container', path: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_}.slice`, expected: undefined },
  { name: 'short hex is not an id', path: '/docker/3f9b2c1e7d4a', expected: undefined },
];

describe('containerFromCgroupPath', () => {
  for (const { name, path, expected } of table) {
    it(`${name}: ${expected ? `${expected.runtime || '?'} ${expected.id.slice(0, 12)}` : 'no container'}`, () => {
      expect(containerFromCgroupPath(path)).toEqual(expected);
    });
  }
});

describe('containerFromMemberships', () => {
  it('finds the container in v1 hierarchies when v2 shows only the root (EKS AL2)', () => {
    const file = [
      `12:pids:/kubepods/burstable/pod${POD}/${ID}`,
      `11:memory:/kubepods/burstable/pod${POD}/${ID}`,
      `4:cpu,cpuacct:/kubepods/burstable/pod${POD}/${ID}`,
      `1:name=systemd:/kubepods/burstable/pod${POD}/${ID}`,
      '0::/',
    ].join('\n');
    expect(containerFromMemberships(parseCgroupFile(file))).toEqual({ id: ID, runtime: 'containerd', podUid: POD, inferred: true });
  });

  it('prefers the v2 path on a hybrid node', () => {
    const file = [`4:memory:/docker/${ID2}`, `0::/system.slice/docker-${ID}.scope`].join('\n');
    expect(containerFromMemberships(parseCgroupFile(file))?.id).toBe(ID);
  });

  it('finds nothing for a host process', () => {
    const file = ['9:name=systemd:/system.slice/cron.service', '0::/system.slice/cron.service'].join('\n');
    expect(containerFromMemberships(parseCgroupFile(file))).toBeUndefined();
  });
});
