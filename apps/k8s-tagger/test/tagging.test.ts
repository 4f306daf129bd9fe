// Tagging both ends of records with the real client-node informers against the test API server:
// pods, Services, nodes, hostNetwork pods, external IPs, deleted pods and reused IPs, workloads.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Vantage } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { startKubeApiServer } from '@kappa/testing';
import type { KubeApiServer } from '@kappa/testing';
import { clusterIdFromUid } from '../src/kube-index.js';
import { emptyStats, tagBatch } from '../src/tagging.js';
import type { TaggerService } from '../src/tagger-service.js';
import { batchOf, endpointSlice, flow, namespace, node, pod, service, startTagger, until, workload } from './fixtures.js';

function tag(tagger: TaggerService, ...records: FlowRecord[]): FlowRecord[] {
  return tagBatch(tagger, batchOf('b1', records), 'test', emptyStats()).records;
}

describe('k8s-tagger tagging', () => {
  let api: KubeApiServer;
  let tagger: TaggerService;

  beforeAll(async () => {
    api = await startKubeApiServer();
    api.apply(namespace('kube-system', 'kube-system-uid-1'));
    api.apply(namespace('shop'));
    api.apply(node('node-a', '192.168.1.10'));
    api.apply(node('node-b', '192.168.1.11'));
    api.apply(workload('apps/v1', 'Deployment', 'web', 'shop'));
    api.apply(workload('apps/v1', 'ReplicaSet', 'web-6d4f9', 'shop', { kind: 'Deployment', name: 'web' }));
    api.apply(pod({ name: 'web-6d4f9-x1', namespace: 'shop', ip: '10.244.1.5', node: 'node-a', labels: { app: 'web', 'pod-template-hash': '6d4f9' }, owner: { kind: 'ReplicaSet', name: 'web-6d4f9' }, containers: { web: 'cid-web', sidecar: 'cid-web-sidecar' } }));
    api.apply(workload('apps/v1', 'StatefulSet', 'db', 'shop'));
    api.apply(pod({ name: 'db-0', namespace: 'shop', ip: '10.244.2.7', node: 'node-b', owner: { kind: 'StatefulSet', name: 'db' }, containers: { db: 'cid-db' } }));
    api.apply(workload('apps/v1', 'DaemonSet', 'agent', 'kube-system'));
    api.apply(pod({ name: 'agent-abc', namespace: 'kube-system', ip: '192.168.1.11', node: 'node-b', hostNetwork: true, owner: { kind: 'DaemonSet', name: 'agent' }, containers: { agent: 'cid-agent' } }));
    api.apply(workload('batch/v1', 'CronJob', 'report', 'shop'));
    api.apply(workload('batch/v1', 'Job', 'report-2900', 'shop', { kind: 'CronJob', name: 'report', apiVersion: 'batch/v1' }));
    api.apply(pod({ name: 'report-2900-zz', namespace: 'shop', ip: '10.244.1.9', node: 'node-a', owner: { kind: 'Job', name: 'report-2900', apiVersion: 'batch/v1' } }));
    api.apply(pod({ name: 'debug', ip: '10.244.1.20', node: 'node-a' }));
    api.apply(service('db', '10.96.0.20', [{ name: 'pg', port: 5432, targetPort: 5432 }], 'shop'));
    api.apply(endpointSlice('db', [{ ip: '10.244.2.7' }, { ip: '10.244.2.99', ready: false }], [{ name: 'pg', port: 5432 }], 'shop'));
    tagger = await startTagger(api);
  });

  afterAll(async () => {
    await tagger.stop();
    await api.close();
  });

  it('is ready once every informer has listed, and derives the cluster id from the kube-system UID', () => {
    expect(tagger.ready()).toBe(true);
    expect(tagger.clusterId()).toBe(clusterIdFromUid('kube-system-uid-1'));
    expect(tagger.clusterId()).toBeGreaterThan(0);
  });

  it('tags pod → pod: local end by container id, remote end by IP, with workloads, labels, nodes and the backend Service', () => {
    const [record] = tag(tagger, flow({ node: 'node-a', vantage: Vantage.SRC, src: { ip: '10.244.1.5', port: 40000, containerId: 'cid-web-sidecar' }, dst: { ip: '10.244.2.7', port: 5432 } }));
    expect(record!.clusterId).toBe(clusterIdFromUid('kube-system-uid-1'));
    expect(record!.src!.kube).toMatchObject({
      node: 'node-a', objectType: 'pod', objectName: 'web-6d4f9-x1', objectNamespace: 'shop', containerName: 'sidecar',
      workloadName: 'web', workloadNamespace: 'shop', workloadKind: 'Deployment', labels: { app: 'web', 'pod-template-hash': '6d4f9' },
    });
    expect(record!.dst!.kube).toMatchObject({
      node: 'node-b', objectType: 'pod', objectName: 'db-0', objectNamespace: 'shop', workloadName: 'db', workloadKind: 'StatefulSet',
      serviceName: 'db', serviceNamespace: 'shop', containerName: '',
    });
  });

  it('tags pod → Service ClusterIP as the Service, and the backend pod’s own record with that Service', () => {
    const [client, backend] = tag(
      tagger,
      flow({ node: 'node-a', vantage: Vantage.SRC, src: { ip: '10.244.1.5', port: 40001, containerId: 'cid-web' }, dst: { ip: '10.96.0.20', port: 5432 } }),
      flow({ node: 'node-b', vantage: Vantage.DST, src: { ip: '10.244.1.5', port: 40001 }, dst: { ip: '10.244.2.7', port: 5432, containerId: 'cid-db' } }),
    );
    expect(client!.src!.kube).toMatchObject({ objectName: 'web-6d4f9-x1', containerName: 'web', node: 'node-a' });
    expect(client!.dst!.kube).toMatchObject({ objectType: 'service', objectName: 'db', objectNamespace: 'shop', serviceName: 'db', serviceNamespace: 'shop', node: '' });
    expect(backend!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'db-0', containerName: 'db', node: 'node-b', serviceName: 'db', serviceNamespace: 'shop' });
    expect(backend!.src!.kube).toMatchObject({ objectType: 'pod', objectName: 'web-6d4f9-x1', node: 'node-a', serviceName: '' });
  });

  it('tags pod → node IP as the node', () => {
    const [record] = tag(tagger, flow({ node: 'node-a', vantage: Vantage.SRC, src: { ip: '10.244.1.5', port: 40002, containerId: 'cid-web' }, dst: { ip: '192.168.1.11', port: 10250 } }));
    expect(record!.dst!.kube).toMatchObject({ objectType: 'node', objectName: 'node-b', node: 'node-b', labels: { 'kubernetes.io/hostname': 'node-b' } });
  });

  it('resolves a hostNetwork pod through its container id only; its shared node IP stays the node', () => {
    const [local, remote] = tag(
      tagger,
      flow({ node: 'node-b', vantage: Vantage.SRC, src: { ip: '192.168.1.11', port: 5000, containerId: 'cid-agent' }, dst: { ip: '10.244.1.5', port: 8080 } }),
      flow({ node: 'node-a', vantage: Vantage.DST, src: { ip: '192.168.1.11', port: 5000 }, dst: { ip: '10.244.1.5', port: 8080, containerId: 'cid-web' } }),
    );
    expect(local!.src!.kube).toMatchObject({ objectType: 'pod', objectName: 'agent-abc', objectNamespace: 'kube-system', containerName: 'agent', workloadName: 'agent', workloadKind: 'DaemonSet', node: 'node-b' });
    expect(remote!.src!.kube).toMatchObject({ objectType: 'node', objectName: 'node-b' });
    // A host process on node-b (no container id) with the node IP is the node, not the hostNetwork pod.
    const [host] = tag(tagger, flow({ node: 'node-b', vantage: Vantage.SRC, src: { ip: '192.168.1.11', port: 5001 }, dst: { ip: '10.244.1.5', port: 8080 } }));
    expect(host!.src!.kube).toMatchObject({ objectType: 'node', objectName: 'node-b', node: 'node-b' });
  });

  it('tags an IP outside the cluster as external', () => {
    const [record] = tag(tagger, flow({ node: 'node-a', vantage: Vantage.SRC, src: { ip: '10.244.1.5', port: 40003, containerId: 'cid-web' }, dst: { ip: '93.184.216.34', port: 443 } }));
    expect(record!.dst!.kube).toMatchObject({ objectType: 'external', objectName: '', node: '' });
    expect(record!.src!.kube?.objectName).toBe('web-6d4f9-x1');
  });

  it('resolves Deployment → ReplicaSet → Pod, CronJob → Job → Pod, StatefulSet, DaemonSet and a bare pod to their workloads', () => {
    const records = tag(
      tagger,
      ...['10.244.1.5', '10.244.1.9', '10.244.2.7', '10.244.1.20'].map((ip) => flow({ node: 'node-a', vantage: Vantage.SRC, src: { ip: '10.244.1.20', port: 1 }, dst: { ip, port: 9 } })),
      flow({ node: 'node-b', vantage: Vantage.SRC, src: { ip: '192.168.1.11', port: 1, containerId: 'cid-agent' }, dst: { ip: '10.244.1.9', port: 9 } }),
    );
    const workloads = records.map((r) => (r.vantage === Vantage.SRC && r.src!.process ? r.src!.kube : r.dst!.kube)).map((k) => `${k!.workloadKind}/${k!.workloadNamespace}/${k!.workloadName}`);
    expect(workloads).toEqual(['Deployment/shop/web', 'CronJob/shop/report', 'StatefulSet/shop/db', 'Pod/default/debug', 'DaemonSet/kube-system/agent']);
  });

  it('keeps a deleted pod for flows from before its end, and no longer answers with it for flows after', async () => {
    const before = Date.now() - 1000;
    api.remove('v1', 'Pod', 'default', 'debug');
    api.apply(pod({ name: 'marker-1', ip: '10.244.9.1', node: 'node-a' }));
    await until(() => tagger.index!.resolveIp('10.244.9.1', BigInt(Date.now()) * 1_000_000n).type === 'pod');
    const [record] = tag(tagger, flow({ node: 'node-a', vantage: Vantage.DST, startMs: before, src: { ip: '10.244.1.5', port: 40004 }, dst: { ip: '10.244.1.20', port: 80 } }));
    expect(record!.dst!.kube).toMatchObject({ objectType: 'pod', objectName: 'debug', node: 'node-a' });
    expect(record!.src!.kube).toMatchObject({ objectType: 'pod', objectName: 'web-6d4f9-x1' });
    // After its end (plus the clock skew allowed) nobody holds the address: a pod not known yet
    // in a pod network, so `unknown` (this call does not hold), never the deleted pod.
    const [later] = tag(tagger, flow({ node: 'node-a', vantage: Vantage.SRC, startMs: Date.now() + 5000, src: { ip: '10.244.1.5', port: 40005, containerId: 'cid-web' }, dst: { ip: '10.244.1.20', port: 80 } }));
    expect(later!.dst!.kube).toMatchObject({ objectType: 'unknown' });
  });

  it('maps a reused pod IP to the new pod only for flows after its creation, and to the old pod before', async () => {
    const now = Date.now();
    api.apply(pod({ name: 'worker-old', ip: '10.244.1.30', node: 'node-a', createdMs: now - 60_000, containers: { worker: 'cid-worker-old' } }));
    await until(() => tagger.index!.resolveIp('10.244.1.30', BigInt(now) * 1_000_000n).type === 'pod');
    api.remove('v1', 'Pod', 'default', 'worker-old');
    api.apply(pod({ name: 'worker-new', ip: '10.244.1.30', node: 'node-b', createdMs: now, containers: { worker: 'cid-worker-new' } }));
    await until(() => tagger.index!.resolveContainer('cid-worker-new').type === 'pod');
    const [early, late, oldByContainer] = tag(
      tagger,
      flow({ node: 'node-a', vantage: Vantage.SRC, startMs: now - 30_000, src: { ip: '10.244.1.5', port: 40006, containerId: 'cid-web' }, dst: { ip: '10.244.1.30', port: 80 } }),
      flow({ node: 'node-a', vantage: Vantage.SRC, startMs: now + 1_000, src: { ip: '10.244.1.5', port: 40007, containerId: 'cid-web' }, dst: { ip: '10.244.1.30', port: 80 } }),
      flow({ node: 'node-a', vantage: Vantage.DST, startMs: now - 30_000, src: { ip: '10.244.1.5', port: 40008 }, dst: { ip: '10.244.1.30', port: 80, containerId: 'cid-worker-old' } }),
    );
    expect(early!.dst!.kube).toMatchObject({ objectName: 'worker-old', node: 'node-a' });
    expect(late!.dst!.kube).toMatchObject({ objectName: 'worker-new', node: 'node-b' });
    expect(oldByContainer!.dst!.kube).toMatchObject({ objectName: 'worker-old', containerName: 'worker' });
  });

  it('resolves a restarted container’s previous id too, and forgets ids older than that', async () => {
    const restarted = (current: string, previousId: string | undefined) => {
      const object = pod({ name: 'crashy', ip: '10.244.1.60', node: 'node-a', containers: { app: current } });
      const status = (object.status as { containerStatuses: Record<string, unknown>[] }).containerStatuses[0]!;
      if (previousId) status.lastState = { terminated: { containerID: `containerd://${previousId}`, exitCode: 1 } };
      return object;
    };
    api.apply(restarted('cid-crashy-1', undefined));
    api.apply(restarted('cid-crashy-2', 'cid-crashy-1'));
    await until(() => tagger.index!.resolveContainer('cid-crashy-2').type === 'pod');
    expect(tagger.index!.resolveContainer('cid-crashy-1')).toMatchObject({ type: 'pod', kube: { objectName: 'crashy', containerName: 'app' } });
    api.apply(restarted('cid-crashy-3', 'cid-crashy-2'));
    await until(() => tagger.index!.resolveContainer('cid-crashy-3').type === 'pod');
    expect(tagger.index!.resolveContainer('cid-crashy-2').type).toBe('pod');
    expect(tagger.index!.resolveContainer('cid-crashy-1').type).toBe('none');
  });

  it('without a cluster tags only the local end’s node name', async () => {
    const nodeOnly = await startTagger(undefined);
    try {
      expect(nodeOnly.ready()).toBe(true);
      const [record] = tag(nodeOnly, flow({ node: 'node-a', vantage: Vantage.DST, src: { ip: '10.244.1.5', port: 1 }, dst: { ip: '10.244.2.7', port: 2, containerId: 'cid-db' } }));
      expect(record!.dst!.kube).toMatchObject({ node: 'node-a', objectType: '', objectName: '' });
      expect(record!.src!.kube).toBeUndefined();
      expect(record!.clusterId).toBe(0);
    } finally {
      await nodeOnly.stop();
    }
  });
});
