// infra/compose/docker-compose.yml as an operator gets it: the agents see the host (pid and
// network) with only the capabilities they need, every service has a healthcheck on /healthz,
// NATS keeps its JetStream store on a volume. (tools/compose-up.sh runs the stack for real.)
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse } from 'yaml';
import { expect, test } from 'vitest';
import { workspaceRoot } from './manifests.js';

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string; target?: string; args?: Record<string, string> };
  pid?: string;
  network_mode?: string;
  cgroup?: string;
  networks?: string[];
  cap_add?: string[];
  cap_drop?: string[];
  read_only?: boolean;
  volumes?: string[];
  ports?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  security_opt?: string[];
}

const read = (file: string) =>
  parse(readFileSync(resolve(workspaceRoot, 'infra/compose', file), 'utf8'), { merge: true }) as {
    services: Record<string, ComposeService>;
    volumes: Record<string, unknown>;
  };
const compose = read('docker-compose.yml');
const services = compose.services;
const kappaServices = ['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'];

test('runs NATS, Redis and the five services, each kappa image built from the shared Dockerfile', () => {
  expect(Object.keys(services).sort()).toEqual(['capture', 'exporter', 'joiner', 'k8s-tagger', 'nats', 'process-enricher', 'redis']);
  for (const name of kappaServices) {
    const service = services[name]!;
    expect(service.image).toMatch(new RegExp(`-${name}:`));
    expect(service.build?.dockerfile).toBe('infra/docker/Dockerfile');
    expect(service.build?.args?.SERVICE).toBe(name);
    expect(service.build?.target).toBe(name === 'capture' ? 'capture' : 'service');
  }
  expect(services.nats?.volumes).toContain('nats-data:/data');
  expect(services.nats?.environment ?? {}).toEqual({});
  expect(Object.keys(compose.volumes)).toContain('nats-data');
});

test('capture and process-enricher share the host pid, network and cgroup namespaces with only their capabilities', () => {
  const expected: Record<string, string[]> = { capture: ['BPF', 'NET_ADMIN', 'PERFMON'], 'process-enricher': ['SYS_PTRACE'] };
  for (const [name, capabilities] of Object.entries(expected)) {
    const service = services[name]!;
    expect(service.pid, name).toBe('host');
    expect(service.network_mode, name).toBe('host');
    expect(service.cgroup, name).toBe('host');
    expect(service.cap_drop, name).toEqual(['ALL']);
    expect([...(service.cap_add ?? [])].sort(), name).toEqual(capabilities);
    expect(service.read_only, name).toBe(true);
    expect(service.environment?.KAPPA_NATS_URL, name).toMatch(/^nats:\/\/127\.0\.0\.1:/);
  }
  expect(services.capture?.volumes).toEqual(
    // /var/lib/kappa/capture: the spool (--state-dir default) is written under a read-only root.
    expect.arrayContaining(['/sys/fs/bpf:/sys/fs/bpf', '/sys/kernel/btf:/sys/kernel/btf:ro', '/sys/fs/cgroup:/host/sys/fs/cgroup:ro', '/var/lib/kappa/capture:/var/lib/kappa/capture']),
  );
  expect(services['process-enricher']?.volumes).toEqual(expect.arrayContaining(['/proc:/host/proc:ro', '/sys/fs/cgroup:/host/sys/fs/cgroup:ro']));
  // NATS is reachable from the host network only on loopback.
  expect(services.nats?.ports?.[0] ?? '').toMatch(/^127\.0\.0\.1:/);
});

test('every kappa service has a /healthz healthcheck and the cluster services drop every capability', () => {
  for (const name of kappaServices) {
    expect(services[name]?.healthcheck?.test, name).toEqual(['CMD-SHELL', 'node /app/healthcheck.mjs /healthz']);
    expect(services[name]?.environment?.KAPPA_METRICS_PORT, name).toBeDefined();
  }
  for (const name of ['k8s-tagger', 'joiner', 'exporter']) {
    expect(services[name]?.cap_drop, name).toEqual(['ALL']);
    expect(services[name]?.cap_add, name).toBeUndefined();
    expect(services[name]?.networks, name).toEqual(['kappa']);
  }
});

test('the podman file only adds the seccomp profile that lets capture call bpf() with CAP_BPF', () => {
  const podman = read('docker-compose.podman.yml');
  expect(podman.services).toEqual({ capture: { security_opt: ['seccomp=${KAPPA_AGENT_SECCOMP:-/etc/containers/seccomp.json}'] } });
});
