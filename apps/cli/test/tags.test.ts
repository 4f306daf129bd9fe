// `kappa tags` against a running kappa-k8s-tagger process (built bin, test Kubernetes API
// server, real nats-server): table and JSON output, container ids, unknown keys, bad usage.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startKubeApiServer, startNatsServer } from '@kappa/testing';
import type { KubeApiServer, TestServer } from '@kappa/testing';
import { runTags } from '../src/commands/tags.js';
import { cliMain, runKappa } from './run.js';

const taggerRoot = join(dirname(fileURLToPath(import.meta.url)), '../../k8s-tagger');

function capture(env: Record<string, string> = {}) {
  const out = { stdout: '', stderr: '' };
  return {
    out,
    io: { stdout: { write: (t: string) => (out.stdout += t) }, stderr: { write: (t: string) => (out.stderr += t) }, env },
  };
}

async function until(condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`not ready in ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('kappa tags', () => {
  let api: KubeApiServer;
  let nats: TestServer;
  let tagger: ChildProcess;
  let address: string;

  beforeAll(async () => {
    api = await startKubeApiServer();
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'kube-system' } });
    api.apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a' }, status: { addresses: [{ type: 'InternalIP', address: '192.168.1.10' }] } });
    api.apply({ apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'db', namespace: 'shop' } });
    api.apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'db-0', namespace: 'shop', labels: { app: 'db', tier: 'data' }, ownerReferences: [{ apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db', uid: 'u1', controller: true }] },
      spec: { nodeName: 'node-a', containers: [{ name: 'postgres' }] },
      status: { podIP: '10.244.2.7', podIPs: [{ ip: '10.244.2.7' }], containerStatuses: [{ name: 'postgres', containerID: 'containerd://0123abcd', ready: true, restartCount: 0, image: 'pg', imageID: '' }] },
    });
    api.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'db', namespace: 'shop' }, spec: { clusterIP: '10.96.0.20', ports: [{ port: 5432 }] } });
    api.apply({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'db-x', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'db' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.244.2.7'], conditions: { ready: true } }],
      ports: [{ port: 5432, protocol: 'TCP' }],
    });
    nats = await startNatsServer();
    execFileSync(process.execPath, [join(taggerRoot, '../../tools/build-app.mjs')], { cwd: taggerRoot, stdio: 'inherit' });
    const grpcPort = await freePort();
    const metricsPort = await freePort();
    address = `127.0.0.1:${grpcPort}`;
    tagger = spawn(process.execPath, [join(taggerRoot, 'bin/kappa-k8s-tagger.js'), '--kubeconfig', api.kubeconfigPath, '--nats-url', nats.url, '--grpc-port', String(grpcPort), '--grpc-host', '127.0.0.1', '--metrics-port', String(metricsPort), '--log-level', 'warn'], { stdio: 'ignore' });
    await until(async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined))?.status === 200, 30_000);
  });

  afterAll(async () => {
    if (tagger.exitCode === null) {
      const exited = new Promise((resolve) => tagger.once('exit', resolve));
      tagger.kill('SIGTERM');
      await exited;
    }
    await nats.stop();
    await api.close();
  });

  it('`kappa tags <ip>` as a process answers from the running tagger over gRPC', async () => {
    execFileSync(process.execPath, [join(taggerRoot, '../../tools/build-app.mjs')], { cwd: join(taggerRoot, '../cli'), stdio: 'inherit' });
    expect(cliMain).toMatch(/apps\/cli\/dist\/main\.js$/);
    const run = await runKappa(['tags', '10.244.2.7', '--tagger', address]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('object    pod shop/db-0\n');
    expect(run.stdout).toContain('workload  StatefulSet shop/db\n');
    const json = await runKappa(['tags', '10.96.0.20', '-o', 'json'], { KAPPA_TAGGER: address });
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ found: true, kube: { objectType: 'service', objectName: 'db' }, backends: ['10.244.2.7:5432'] });
  });

  it('prints a pod IP as a short table: object, workload, node, labels', async () => {
    const run = capture();
    expect(await runTags(['10.244.2.7', '--tagger', address], run.io)).toBe(0);
    expect(run.out.stdout).toContain('object    pod shop/db-0\n');
    expect(run.out.stdout).toContain('workload  StatefulSet shop/db\n');
    expect(run.out.stdout).toContain('node      node-a\n');
    expect(run.out.stdout).toContain('labels    app=db,tier=data\n');
  });

  it('prints a Service IP as JSON with its ready backends, finding the tagger through KAPPA_TAGGER', async () => {
    const run = capture({ KAPPA_TAGGER: address });
    expect(await runTags(['10.96.0.20', '--output', 'json'], run.io)).toBe(0);
    expect(JSON.parse(run.out.stdout)).toMatchObject({ found: true, kube: { objectType: 'service', objectName: 'db', objectNamespace: 'shop' }, backends: ['10.244.2.7:5432'] });
  });

  it('looks up a container id to its pod and container', async () => {
    const run = capture();
    expect(await runTags(['0123abcd', '--tagger', address, '-o', 'json'], run.io)).toBe(0);
    expect(JSON.parse(run.out.stdout)).toMatchObject({ found: true, kube: { objectName: 'db-0', containerName: 'postgres', node: 'node-a' } });
  });

  it('exits 1 for an IP the tagger does not know, and when no tagger answers', async () => {
    const unknown = capture();
    expect(await runTags(['203.0.113.9', '--tagger', address, '-o', 'json'], unknown.io)).toBe(1);
    expect(JSON.parse(unknown.out.stdout)).toEqual({ found: false });
    const down = capture();
    expect(await runTags(['10.244.2.7', '--tagger', `127.0.0.1:${await freePort()}`], down.io)).toBe(1);
    expect(down.out.stderr).toMatch(/did not answer.*is kappa-k8s-tagger running/);
  });

  it('rejects bad usage with one line and exit 2', async () => {
    for (const argv of [['--bogus', '1.2.3.4'], [], ['1.2.3.4', '--output', 'yaml'], ['1.2.3.4', '--tagger', 'nohost'], ['1.2.3.4', '--at', 'yesterday']]) {
      const run = capture();
      expect(await runTags(argv, run.io)).toBe(2);
      expect(run.out.stderr.trim().split('\n')).toHaveLength(1);
    }
  });
});
