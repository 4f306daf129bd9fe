// The full path through real servers: a FlowBatch published on kappa.flow.enriched.<node> comes
// out tagged on kappa.flow.tagged; the KubeTags gRPC service answers Lookup and Watch; and the
// same through the built kappa-k8s-tagger process.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, credentials } from '@grpc/grpc-js';
import type { MethodDefinition } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { create, kubeTagsServiceDefinition, LookupRequestSchema, Vantage, WatchRequestSchema } from '@kappa/contracts';
import type { FlowBatch, StageStatus, LookupRequest, LookupResponse, WatchRequest, WatchResponse } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, startKubeApiServer, startNatsServer } from '@kappa/testing';
import type { KubeApiServer, TestServer } from '@kappa/testing';
import { clusterIdFromUid } from '../src/kube-index.js';
import type { TaggerService } from '../src/tagger-service.js';
import { batchOf, endpointSlice, flow, namespace, node, pod, service, startTagger, until, workload } from './fixtures.js';

const appRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

async function lookupOver(port: number, key: LookupRequest['key']): Promise<LookupResponse> {
  const method = kubeTagsServiceDefinition.Lookup as MethodDefinition<LookupRequest, LookupResponse>;
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    return await new Promise<LookupResponse>((resolve, reject) => {
      client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, create(LookupRequestSchema, { key }), (error, response) => {
        if (error || !response) reject(error ?? new Error('no response'));
        else resolve(response);
      });
    });
  } finally {
    client.close();
  }
}

describe('k8s-tagger on the bus and over gRPC', () => {
  let api: KubeApiServer;
  let nats: TestServer;
  let collector: Bus;
  const tagged: FlowBatch[] = [];
  const taggedSubjects = new Map<string, string>();

  beforeAll(async () => {
    api = await startKubeApiServer();
    api.apply(namespace('kube-system', 'uid-kube-system-42'));
    api.apply(node('node-a', '192.168.1.10'));
    api.apply(node('node-b', '192.168.1.11'));
    api.apply(workload('apps/v1', 'Deployment', 'web', 'shop'));
    api.apply(workload('apps/v1', 'ReplicaSet', 'web-7c9', 'shop', { kind: 'Deployment', name: 'web' }));
    api.apply(pod({ name: 'web-7c9-a', namespace: 'shop', ip: '10.244.1.5', node: 'node-a', owner: { kind: 'ReplicaSet', name: 'web-7c9' }, containers: { web: 'cid-web' } }));
    api.apply(pod({ name: 'db-0', namespace: 'shop', ip: '10.244.2.7', node: 'node-b', containers: { db: 'cid-db' } }));
    api.apply(service('db', '10.96.0.20', [{ name: 'pg', port: 5432, targetPort: 5432 }], 'shop'));
    api.apply(endpointSlice('db', [{ ip: '10.244.2.7' }], [{ name: 'pg', port: 5432 }], 'shop'));
    nats = await startNatsServer();
    collector = await connectBus({ servers: [nats.url], name: 'test-collector', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
    await collector.ensureStreams();
    await collector.consumeBatches({
      stage: 'test-joiner',
      subject: subjects.allTagged,
      handler: async (batch, context) => {
        tagged.push(batch);
        taggedSubjects.set(batch.batchId, context.subject);
      },
    });
  });

  afterAll(async () => {
    await collector.close();
    await nats.stop();
    await api.close();
  });

  describe('in-process', () => {
    let tagger: TaggerService;
    beforeAll(async () => {
      tagger = await startTagger(api, { bus: { servers: [nats.url] } });
      await until(() => tagger.ready());
    });
    afterAll(async () => {
      await tagger.stop();
    });

    it('tags a batch from kappa.flow.enriched.node-a onto kappa.flow.tagged with an id derived from the input', async () => {
      const records = [
        flow({ node: 'node-a', vantage: Vantage.SRC, src: { ip: '10.244.1.5', port: 40000, containerId: 'cid-web' }, dst: { ip: '10.96.0.20', port: 5432 } }),
        flow({ node: 'node-b', vantage: Vantage.DST, src: { ip: '10.244.1.5', port: 40000 }, dst: { ip: '10.244.2.7', port: 5432, containerId: 'cid-db' } }),
      ];
      await collector.publishBatch(subjects.enriched(3, 'node-a'), batchOf('enriched-1', records));
      await until(() => tagged.some((b) => b.batchId === 'k8s-tagger:enriched-1'));
      const out = tagged.find((b) => b.batchId === 'k8s-tagger:enriched-1')!;
      expect(taggedSubjects.get('k8s-tagger:enriched-1')).toBe(subjects.tagged(3));
      expect(out.records).toHaveLength(2);
      expect(out.records.every((r) => r.clusterId === clusterIdFromUid('uid-kube-system-42'))).toBe(true);
      expect(out.records[0]!.src!.kube).toMatchObject({ objectName: 'web-7c9-a', containerName: 'web', workloadKind: 'Deployment', workloadName: 'web', node: 'node-a' });
      expect(out.records[0]!.dst!.kube).toMatchObject({ objectType: 'service', objectName: 'db', serviceName: 'db' });
      expect(out.records[1]!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'db-0', serviceName: 'db', node: 'node-b' });
      expect(out.records[1]!.src!.kube).toMatchObject({ objectType: 'pod', objectName: 'web-7c9-a' });
    });

    it('answers KubeTags/Lookup for a pod IP, a Service IP with its backends, a container id and an unknown IP, and rejects a malformed IP', async () => {
      const port = tagger.grpcPort;
      expect(await lookupOver(port, { case: 'ip', value: '10.244.1.5' })).toMatchObject({ found: true, kube: { objectName: 'web-7c9-a', workloadKind: 'Deployment', workloadName: 'web', node: 'node-a' } });
      expect(await lookupOver(port, { case: 'ip', value: '10.96.0.20' })).toMatchObject({ found: true, kube: { objectType: 'service', objectName: 'db' }, backends: ['10.244.2.7:5432'] });
      expect(await lookupOver(port, { case: 'containerId', value: 'containerd://cid-db' })).toMatchObject({ found: true, kube: { objectName: 'db-0', containerName: 'db' } });
      expect(await lookupOver(port, { case: 'ip', value: '203.0.113.9' })).toMatchObject({ found: false });
      await expect(lookupOver(port, { case: 'ip', value: 'not-an-ip' })).rejects.toThrow(/INVALID_ARGUMENT|3 /);
    });

    it('sends its heartbeat on kappa.status.k8s-tagger.<instance> for `kappa status`', async () => {
      const beat = await new Promise<StageStatus>((resolve) => {
        const unsubscribe = collector.subscribeStatus((s, subject) => {
          if (subject !== subjects.status('k8s-tagger', 'test')) return;
          unsubscribe();
          resolve(s);
        });
      });
      expect(beat).toMatchObject({ stage: 'k8s-tagger', instance: 'test', ready: true });
      expect(beat.recordsIn).toBeGreaterThanOrEqual(2n);
    });

    it('streams index changes over KubeTags/Watch', async () => {
      const method = kubeTagsServiceDefinition.Watch as MethodDefinition<WatchRequest, WatchResponse>;
      const client = new Client(`127.0.0.1:${tagger.grpcPort}`, credentials.createInsecure());
      const changes: WatchResponse[] = [];
      const call = client.makeServerStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, create(WatchRequestSchema));
      call.on('data', (change: WatchResponse) => changes.push(change));
      call.on('error', () => undefined);
      await new Promise((resolve) => setTimeout(resolve, 200));
      api.apply(pod({ name: 'watched', ip: '10.244.1.77', node: 'node-a', containers: { app: 'cid-watched' } }));
      await until(() => changes.some((c) => c.key === 'ip:10.244.1.77'));
      api.remove('v1', 'Pod', 'default', 'watched');
      await until(() => changes.some((c) => c.key === 'container:cid-watched' && c.removed));
      expect(changes.find((c) => c.key === 'ip:10.244.1.77')!.kube).toMatchObject({ objectName: 'watched', objectType: 'pod' });
      call.cancel();
      client.close();
    });
  });

  describe('as a process', () => {
    let child: ChildProcess;
    let logs = '';
    let grpcPort: number;
    let metricsPort: number;

    beforeAll(async () => {
      execFileSync(process.execPath, [join(appRoot, '../../tools/build-app.mjs')], { cwd: appRoot, stdio: 'inherit' });
      grpcPort = await freePort();
      metricsPort = await freePort();
      child = spawn(process.execPath, [join(appRoot, 'bin/kappa-k8s-tagger.js'), '--kubeconfig', api.kubeconfigPath, '--nats-url', nats.url, '--grpc-port', String(grpcPort), '--grpc-host', '127.0.0.1', '--metrics-port', String(metricsPort), '--instance', 'tagger-proc'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout!.on('data', (d: Buffer) => (logs += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (logs += d.toString()));
      let ready = false;
      await until(() => {
        fetch(`http://127.0.0.1:${metricsPort}/readyz`).then((r) => (ready = r.status === 200), () => undefined);
        return ready;
      }, 30_000, 'tagger process ready');
    });

    afterAll(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });

    it('tags on the bus, answers Lookup, exports its metrics and drains on SIGTERM', async () => {
      const record = flow({ node: 'node-b', vantage: Vantage.SRC, src: { ip: '10.244.2.7', port: 5432, containerId: 'cid-db' }, dst: { ip: '192.168.1.10', port: 10250 } });
      await collector.publishBatch(subjects.enriched(5, 'node-b'), batchOf('enriched-proc-1', [record]));
      await until(() => tagged.some((b) => b.batchId === 'k8s-tagger:enriched-proc-1'), 20_000);
      const out = tagged.find((b) => b.batchId === 'k8s-tagger:enriched-proc-1')!;
      expect(out.producer).toBe('tagger-proc');
      expect(out.records[0]!.src!.kube).toMatchObject({ objectName: 'db-0', containerName: 'db', node: 'node-b' });
      expect(out.records[0]!.dst!.kube).toMatchObject({ objectType: 'node', objectName: 'node-a' });

      expect(await lookupOver(grpcPort, { case: 'ip', value: '10.244.1.5' })).toMatchObject({ found: true, kube: { objectName: 'web-7c9-a', workloadName: 'web' } });

      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(metrics).toMatch(/kappa_tagger_records_tagged_total\{[^}]*\} 1\b/);
      expect(metrics).toMatch(/kappa_tagger_lookups_total\{[^}]*end="local",result="hit"[^}]*\} 1\b/);
      // Two running pods, and the one the in-process tagger saw deleted (its saved state, still
      // within the grace for late flows).
      expect(metrics).toMatch(/kappa_tagger_index_entries\{[^}]*index="podIps"[^}]*\} 3\b/);

      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(logs).toContain('every resource listed');
    });

    it('without a cluster says so once, tags the local end’s node name only, and is ready', async () => {
      // Its own NATS, so no other tagger on the shared durable consumer can take the batch.
      const ownNats = await startNatsServer();
      const ownBus = await connectBus({ servers: [ownNats.url], name: 'test-node-only', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
      await ownBus.ensureStreams();
      const out: FlowBatch[] = [];
      await ownBus.consumeBatches({ stage: 'test-joiner', subject: subjects.allTagged, handler: async (batch) => void out.push(batch) });
      const metrics = await freePort();
      const env = { ...process.env };
      delete env.KUBERNETES_SERVICE_HOST;
      delete env.KAPPA_KUBECONFIG;
      const nodeOnly = spawn(process.execPath, [join(appRoot, 'bin/kappa-k8s-tagger.js'), '--nats-url', ownNats.url, '--grpc-port', String(await freePort()), '--metrics-port', String(metrics), '--instance', 'tagger-node-only'], { stdio: ['ignore', 'pipe', 'pipe'], env });
      let output = '';
      nodeOnly.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      nodeOnly.stderr!.on('data', (d: Buffer) => (output += d.toString()));
      try {
        let ready = false;
        await until(() => {
          fetch(`http://127.0.0.1:${metrics}/readyz`).then((r) => (ready = r.status === 200), () => undefined);
          return ready;
        }, 45_000, 'node-only tagger ready');
        const record = flow({ node: 'node-b', vantage: Vantage.DST, src: { ip: '10.244.1.5', port: 40000 }, dst: { ip: '10.244.2.7', port: 5432, containerId: 'cid-db' } });
        await ownBus.publishBatch(subjects.enriched(5, 'node-b'), batchOf('enriched-node-only', [record]));
        await until(() => out.length > 0, 20_000);
        expect(out[0]!.batchId).toBe('k8s-tagger:enriched-node-only');
        expect(out[0]!.records[0]!.dst!.kube).toMatchObject({ node: 'node-b', objectName: '', objectType: '' });
        expect(out[0]!.records[0]!.src!.kube).toBeUndefined();
        expect(out[0]!.records[0]!.clusterId).toBe(0);
        expect(output.match(/tagging node names only/g)).toHaveLength(1);
      } finally {
        const exited = new Promise((resolve) => nodeOnly.once('exit', resolve));
        nodeOnly.kill('SIGTERM');
        await exited;
        await ownBus.close();
        await ownNats.stop();
      }
    }, 90_000);
  });
});
