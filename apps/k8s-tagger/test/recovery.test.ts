// The tagger keeps correct tags through the Kubernetes API's failure modes without a restart of
// its own: a dropped watch (resume), 410 Gone (relist), and an API server restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Vantage } from '@kappa/contracts';
import type { Kube } from '@kappa/contracts';
import { createRegistry } from '@kappa/observability';
import { startKubeApiServer } from '@kappa/testing';
import type { KubeApiServer } from '@kappa/testing';
import { emptyStats, tagBatch } from '../src/tagging.js';
import type { TaggerService } from '../src/tagger-service.js';
import { batchOf, flow, namespace, node, pod, service, endpointSlice, startTagger, until } from './fixtures.js';

function remoteTag(tagger: TaggerService, ip: string, port = 80, startMs?: number): Kube | undefined {
  const batch = batchOf('r', [flow({ node: 'node-a', vantage: Vantage.SRC, ...(startMs !== undefined ? { startMs } : {}), src: { ip: '10.244.1.5', port: 40000, containerId: 'cid-client' }, dst: { ip, port } })]);
  return tagBatch(tagger, batch, 'test', emptyStats()).records[0]!.dst!.kube;
}

const registry = createRegistry('k8s-tagger');

async function metricValue(name: string): Promise<number> {
  const metric = await registry.getSingleMetric(name)?.get();
  return (metric?.values ?? []).reduce((sum, v) => sum + v.value, 0);
}

const podLists = (api: KubeApiServer) => api.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch && r.status === 200).length;

describe('k8s-tagger recovery from API failures', () => {
  let api: KubeApiServer;
  let tagger: TaggerService;

  beforeAll(async () => {
    api = await startKubeApiServer();
    api.apply(namespace('kube-system', 'uid-ks'));
    api.apply(node('node-a', '192.168.1.10'));
    api.apply(pod({ name: 'client', ip: '10.244.1.5', node: 'node-a', containers: { app: 'cid-client' } }));
    api.apply(pod({ name: 'server-1', ip: '10.244.1.6', node: 'node-a' }));
    tagger = await startTagger(api, { registry });
    await until(() => api.openWatches === 11, 15_000, 'all 11 informers watching');
  });

  afterAll(async () => {
    await tagger.stop();
    await api.close();
  });

  it('resumes after a dropped watch without a relist, and tags objects created afterwards', async () => {
    const listsBefore = podLists(api);
    const restartsBefore = await metricValue('kappa_tagger_informer_restarts_total');
    api.dropWatches();
    api.apply(pod({ name: 'after-drop', ip: '10.244.1.40', node: 'node-a' }));
    await until(() => remoteTag(tagger, '10.244.1.40')?.objectName === 'after-drop');
    await until(() => api.openWatches === 11);
    expect(podLists(api)).toBe(listsBefore);
    expect(await metricValue('kappa_tagger_informer_restarts_total')).toBeGreaterThanOrEqual(restartsBefore + 11);
    expect(remoteTag(tagger, '10.244.1.6')).toMatchObject({ objectType: 'pod', objectName: 'server-1' });
    expect(tagger.ready()).toBe(true);
  });

  it('follows a watch the server ends cleanly (watch timeout) without an informer restart', async () => {
    await until(() => api.openWatches === 11);
    const restartsBefore = await metricValue('kappa_tagger_informer_restarts_total');
    const listsBefore = podLists(api);
    api.dropWatches({ graceful: true });
    api.apply(pod({ name: 'after-timeout', ip: '10.244.1.44', node: 'node-a' }));
    await until(() => remoteTag(tagger, '10.244.1.44')?.objectName === 'after-timeout');
    expect(await metricValue('kappa_tagger_informer_restarts_total')).toBe(restartsBefore);
    expect(podLists(api)).toBe(listsBefore);
  });

  it('relists after 410 Gone and applies what changed while the history was lost', async () => {
    const listsBefore = podLists(api);
    await api.stop();
    // Changes the watch will never replay: history compacted past the tagger's resourceVersion.
    const deletedAtMs = Date.now();
    api.remove('v1', 'Pod', 'default', 'server-1');
    api.apply(pod({ name: 'server-2', ip: '10.244.1.7', node: 'node-a' }));
    api.apply(service('web', '10.96.0.10', [{ name: 'http', port: 80, targetPort: 8080 }]));
    api.apply(endpointSlice('web', [{ ip: '10.244.1.7' }], [{ name: 'http', port: 8080 }]));
    api.compact();
    await api.start();
    await until(() => podLists(api) > listsBefore, 15_000, `pods relisted; requests: ${JSON.stringify(api.requests.filter((r) => r.path === '/api/v1/pods').slice(-6))}`);
    // Each informer relists on its own; wait for the pods, services and slices ones.
    await until(() => remoteTag(tagger, '10.244.1.7', 8080)?.serviceName === 'web');
    await until(() => remoteTag(tagger, '10.96.0.10')?.objectType === 'service');
    expect(remoteTag(tagger, '10.244.1.7', 8080)).toMatchObject({ objectType: 'pod', objectName: 'server-2', serviceName: 'web' });
    expect(remoteTag(tagger, '10.96.0.10')).toMatchObject({ objectType: 'service', objectName: 'web' });
    // The relist reported server-1 deleted: still known to flows from before, within the grace period.
    expect(remoteTag(tagger, '10.244.1.6', 80, deletedAtMs - 1000)).toMatchObject({ objectName: 'server-1' });
  });

  it('ends a pod recreated under the same name while the watch was down (new uid), instead of keeping it for good', async () => {
    api.apply(pod({ name: 'stateful-0', ip: '10.244.1.50', node: 'node-a', containers: { app: 'cid-stateful-old' } }));
    await until(() => remoteTag(tagger, '10.244.1.50')?.objectName === 'stateful-0');
    const oldUid = api.get('v1', 'Pod', 'default', 'stateful-0')!.metadata!.uid;
    await api.stop();
    api.remove('v1', 'Pod', 'default', 'stateful-0');
    api.apply(pod({ name: 'stateful-0', ip: '10.244.1.51', node: 'node-a', containers: { app: 'cid-stateful-new' } }));
    api.compact();
    await api.start();
    await until(() => remoteTag(tagger, '10.244.1.51')?.objectName === 'stateful-0', 20_000);
    expect(remoteTag(tagger, '10.244.1.51')?.objectUid).not.toBe(oldUid);
    // The old pod ended at the relist: its address is no longer its for later flows.
    expect(tagger.index!.pods.podAt('10.244.1.50', BigInt(Date.now() + 10_000) * 1_000_000n)).toBeUndefined();
    await until(() => api.openWatches === 11, 20_000);
  });

  it('answers 410 Gone on a live watch with a relist, then follows changes again', async () => {
    await until(() => api.openWatches === 11);
    const listsBefore = podLists(api);
    api.compact();
    api.dropWatches();
    await until(() => podLists(api) > listsBefore, 15_000, `pods relisted; requests: ${JSON.stringify(api.requests.filter((r) => r.path === '/api/v1/pods').slice(-6))}`);
    await until(() => api.openWatches === 11);
    api.apply(pod({ name: 'after-410', ip: '10.244.1.41', node: 'node-a' }));
    await until(() => remoteTag(tagger, '10.244.1.41')?.objectName === 'after-410');
  });

  it('rides out an API server restart and tags objects created while it was down and after', async () => {
    await api.stop();
    api.apply(pod({ name: 'while-down', ip: '10.244.1.42', node: 'node-a' }));
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(tagger.ready()).toBe(true); // synced once; keeps tagging from what it knows
    expect(remoteTag(tagger, '10.244.1.5')).toMatchObject({ objectName: 'client' });
    await api.start();
    await until(() => remoteTag(tagger, '10.244.1.42')?.objectName === 'while-down', 20_000);
    await until(() => api.openWatches === 11, 20_000);
    api.apply(pod({ name: 'after-restart', ip: '10.244.1.43', node: 'node-a' }));
    await until(() => remoteTag(tagger, '10.244.1.43')?.objectName === 'after-restart');
    expect(remoteTag(tagger, '10.244.1.7', 8080)).toMatchObject({ objectName: 'server-2', serviceName: 'web' });
  });

  it('starts while the API server is down, is not ready, and becomes ready with correct tags once it is up', async () => {
    const late = await startKubeApiServer();
    late.apply(namespace('kube-system', 'uid-late'));
    late.apply(pod({ name: 'late-pod', ip: '10.244.7.7', node: 'node-a' }));
    await late.stop();
    const waiting = await startTagger(late, { wait: false });
    try {
      expect(waiting.ready()).toBe(false);
      expect(remoteTag(waiting, '10.244.7.7')).toMatchObject({ objectType: 'external' });
      await late.start();
      await until(() => waiting.ready(), 20_000, 'ready after the API server came up');
      expect(remoteTag(waiting, '10.244.7.7')).toMatchObject({ objectType: 'pod', objectName: 'late-pod' });
    } finally {
      await waiting.stop();
      await late.close();
    }
  });

  it('lists in pages (limit/continue) and knows every pod of a list longer than a page', async () => {
    const paged = await startKubeApiServer();
    paged.apply(namespace('kube-system', 'uid-paged'));
    for (let i = 0; i < 7; i++) paged.apply(pod({ name: `paged-${i}`, ip: `10.244.8.${i + 1}`, node: 'node-a' }));
    const t = await startTagger(paged, { pageSize: 2 });
    try {
      for (let i = 0; i < 7; i++) expect(remoteTag(t, `10.244.8.${i + 1}`)).toMatchObject({ objectType: 'pod', objectName: `paged-${i}` });
      const pages = paged.requests.filter((r) => r.path === '/api/v1/pods' && !r.watch && r.status === 200);
      expect(pages.map((r) => r.query.limit)).toEqual(['2', '2', '2', '2']);
      expect(pages.filter((r) => r.query.continue).length).toBe(3);
    } finally {
      await t.stop();
      await paged.close();
    }
  });
});
