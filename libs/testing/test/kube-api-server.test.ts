// The test API server against the real @kubernetes/client-node informer: list, watch, resume,
// 410 Gone and relist, dropped watches, restarts; and the raw protocol for bookmarks.
import { CoreV1Api, KubeConfig, makeInformer } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realPod, startKubeApiServer, startPodLikeKubelet, stopPodLikeKubelet } from '../src/index.js';
import type { KubeApiServer } from '../src/index.js';

async function until(condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms: ${condition.toString()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function pod(name: string, ip: string) {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels: { app: name } }, status: { podIP: ip } };
}

describe('test Kubernetes API server', () => {
  let api: KubeApiServer;
  beforeAll(async () => {
    api = await startKubeApiServer();
  });
  afterAll(async () => {
    await api.close();
  });

  it('serves lists and watches that the real client-node informer follows, including 410 Gone, drops and restarts', async () => {
    api.apply(pod('a', '10.0.0.1'));
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromString(api.kubeconfig);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const informer = makeInformer(kubeConfig, '/api/v1/pods', () => core.listPodForAllNamespaces());
    const seen: string[] = [];
    let errors = 0;
    let stopped = false;
    informer.on('add', (p: V1Pod) => seen.push(`add ${p.metadata?.name} ${p.status?.podIP}`));
    informer.on('update', (p: V1Pod) => seen.push(`update ${p.metadata?.name} ${p.status?.podIP}`));
    informer.on('delete', (p: V1Pod) => seen.push(`delete ${p.metadata?.name}`));
    informer.on('error', () => {
      // client-node stops an informer on error (and reports its own stop() as an AbortError).
      if (stopped) return;
      errors += 1;
      setTimeout(() => void informer.start(), 100);
    });
    await informer.start();
    await until(() => seen.includes('add a 10.0.0.1') && api.openWatches === 1);

    api.apply(pod('a', '10.0.0.2'));
    api.apply(pod('b', '10.0.0.3'));
    api.remove('v1', 'Pod', 'default', 'a');
    await until(() => seen.includes('delete a'));
    expect(seen).toEqual(['add a 10.0.0.1', 'update a 10.0.0.2', 'add b 10.0.0.3', 'delete a']);
    expect(api.requests.filter((r) => !r.watch && r.path === '/api/v1/pods')).toHaveLength(1);

    // A dropped watch resumes from its resourceVersion: no relist, nothing missed.
    api.dropWatches();
    api.apply(pod('c', '10.0.0.4'));
    await until(() => seen.includes('add c 10.0.0.4'));
    expect(api.requests.filter((r) => !r.watch && r.path === '/api/v1/pods')).toHaveLength(1);

    // Compacted history: the resumed watch gets 410 Gone and the informer relists.
    await until(() => api.openWatches === 1);
    api.compact();
    api.dropWatches();
    await until(() => api.requests.filter((r) => !r.watch && r.path === '/api/v1/pods').length === 2);
    await until(() => api.openWatches === 1);
    api.apply(pod('d', '10.0.0.5'));
    await until(() => seen.includes('add d 10.0.0.5'));

    // Restart on the same port: the informer errors, is restarted, and resumes.
    await api.stop();
    api.apply(pod('e', '10.0.0.6'));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await api.start();
    await until(() => seen.includes('add e 10.0.0.6'));
    expect(errors).toBeGreaterThan(0);
    expect(informer.list().map((p) => p.metadata?.name).sort()).toEqual(['b', 'c', 'd', 'e']);
    stopped = true;
    await informer.stop();
  });

  it('stops at once even with a connection stuck before its TLS handshake, and restarts on the same port', async () => {
    const { connect } = await import('node:net');
    const stuck = connect(api.port, '127.0.0.1');
    await new Promise((resolve) => stuck.once('connect', resolve));
    const started = Date.now();
    await api.stop();
    expect(Date.now() - started).toBeLessThan(2000);
    await api.start();
    const response = await fetch(`${api.url.replace('https', 'http')}/`).catch((error: unknown) => error);
    expect(response).toBeInstanceOf(Error); // it speaks TLS on the same port again
    stuck.destroy();
  });

  it('answers a watch from a compacted resourceVersion with a 410 Status event and sends bookmarks when asked', async () => {
    const headers = { authorization: `Bearer ${api.token}` };
    const plain = await startKubeApiServer({ tls: false, token: api.token, bookmarkIntervalMs: 100 });
    try {
      plain.apply({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web', namespace: 'shop' } });
      const rv = plain.resourceVersion;
      plain.compact();
      const expired = await fetch(`${plain.url}/apis/apps/v1/deployments?watch=true&resourceVersion=${rv - 1}`, { headers });
      const lines = (await expired.text()).trim().split('\n').map((line) => JSON.parse(line) as { type: string; object: { code: number; reason: string } });
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ type: 'ERROR', object: { code: 410, reason: 'Expired' } });

      const current = plain.resourceVersion;
      const controller = new AbortController();
      const stream = await fetch(`${plain.url}/apis/apps/v1/namespaces/shop/deployments?watch=true&resourceVersion=${current}&allowWatchBookmarks=true`, { headers, signal: controller.signal });
      const reader = stream.body!.getReader();
      let text = '';
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        text += new TextDecoder().decode(chunk.value);
        if (text.includes('\n')) break;
      }
      controller.abort();
      expect(JSON.parse(text.split('\n')[0]!)).toMatchObject({ type: 'BOOKMARK', object: { kind: 'Deployment', metadata: { resourceVersion: String(current) } } });

      const unauthorized = await fetch(`${plain.url}/api/v1/pods`);
      expect(unauthorized.status).toBe(401);
    } finally {
      await plain.close();
    }
  });
});

describe('test Kubernetes API server, as kube-apiserver answers', () => {
  let api: KubeApiServer;
  let core: CoreV1Api;
  const headers = () => ({ authorization: `Bearer ${api.token}` });
  const get = async (path: string) => {
    const response = await fetch(`${api.url}${path}`, { headers: headers() });
    return { status: response.status, headers: response.headers, body: (await response.json()) as Record<string, unknown> & { metadata: Record<string, string | number> } };
  };
  const names = (body: Record<string, unknown>) => ((body.items ?? []) as { metadata: { name: string } }[]).map((i) => i.metadata.name);

  beforeAll(async () => {
    api = await startKubeApiServer({ tls: false, minRequestTimeoutMs: 300, tooLargeResourceVersionWaitMs: 300 });
    for (let i = 0; i < 25; i++) api.apply(pod(`p${String(i).padStart(2, '0')}`, `10.1.0.${i}`));
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromString(api.kubeconfig);
    core = kubeConfig.makeApiClient(CoreV1Api);
  });
  afterAll(async () => {
    await api.close();
  });

  it('pages a list with limit and continue over one consistent snapshot, in key order, through the real client', async () => {
    const first = await core.listPodForAllNamespaces({ limit: 10 });
    expect(first.items.map((p) => p.metadata?.name)).toEqual(Array.from({ length: 10 }, (_, i) => `p${String(i).padStart(2, '0')}`));
    expect(first.metadata?.remainingItemCount).toBe(15);
    const snapshotRv = first.metadata?.resourceVersion;
    // Changes between pages do not show in the rest of the list: it is the snapshot's.
    api.apply(pod('p00a', '10.1.1.1'));
    api.remove('v1', 'Pod', 'default', 'p15');
    const second = await core.listPodForAllNamespaces({ limit: 10, _continue: first.metadata!._continue! });
    const third = await core.listPodForAllNamespaces({ limit: 10, _continue: second.metadata!._continue! });
    expect(second.metadata?.resourceVersion).toBe(snapshotRv);
    expect(third.metadata?._continue).toBeUndefined();
    const all = [...first.items, ...second.items, ...third.items].map((p) => p.metadata?.name);
    expect(all).toHaveLength(25);
    expect(all).toContain('p15');
    expect(all).not.toContain('p00a');
    api.remove('v1', 'Pod', 'default', 'p00a');
    api.apply(pod('p15', '10.1.0.15'));
  });

  it('answers an expired continue token with 410 Expired, and continue with a resourceVersion with 400', async () => {
    const first = await get('/api/v1/pods?limit=5');
    api.compact();
    const expired = await get(`/api/v1/pods?limit=5&continue=${String(first.body.metadata.continue)}`);
    expect(expired.status).toBe(410);
    expect(expired.body).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });
    const both = await get(`/api/v1/pods?limit=5&resourceVersion=1&continue=${String(first.body.metadata.continue)}`);
    expect(both.status).toBe(400);
  });

  it('follows the resourceVersion rules of list: "0" any (unpaged), Exact an older state, NotOlderThan, too large → 504, compacted → 410', async () => {
    const any = await get('/api/v1/pods?resourceVersion=0&limit=5');
    expect(names(any.body)).toHaveLength(25);
    expect(any.body.metadata.continue).toBeUndefined();
    const before = api.resourceVersion;
    api.apply(pod('late', '10.1.2.1'));
    const exact = await get(`/api/v1/pods?resourceVersion=${before}&resourceVersionMatch=Exact`);
    expect(exact.status).toBe(200);
    expect(exact.body.metadata.resourceVersion).toBe(String(before));
    expect(names(exact.body)).not.toContain('late');
    const notOlder = await get(`/api/v1/pods?resourceVersion=${before}&resourceVersionMatch=NotOlderThan`);
    expect(names(notOlder.body)).toContain('late');
    const started = Date.now();
    const tooLarge = await get(`/api/v1/pods?resourceVersion=${api.resourceVersion + 100}`);
    expect(tooLarge.status).toBe(504);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(tooLarge.body).toMatchObject({ reason: 'Timeout', details: { causes: [{ reason: 'ResourceVersionTooLarge' }] } });
    // A resourceVersion that is reached while the list waits is served.
    const waiting = get(`/api/v1/pods?resourceVersion=${api.resourceVersion + 1}`);
    setTimeout(() => api.apply(pod('later', '10.1.2.2')), 50);
    expect(names((await waiting).body)).toContain('later');
    api.compact();
    expect((await get(`/api/v1/pods?resourceVersion=${before}&resourceVersionMatch=Exact`)).status).toBe(410);
    expect((await get('/api/v1/pods?resourceVersionMatch=Exact')).status).toBe(400);
    api.remove('v1', 'Pod', 'default', 'late');
    api.remove('v1', 'Pod', 'default', 'later');
  });

  it('ends a watch on the server-side timeout: timeoutSeconds, else between --min-request-timeout and twice that', async () => {
    const timed = async (query: string) => {
      const started = Date.now();
      const response = await fetch(`${api.url}/api/v1/pods?watch=true&resourceVersion=${api.resourceVersion}${query}`, { headers: headers() });
      await response.text();
      return Date.now() - started;
    };
    const byDefault = await timed('');
    expect(byDefault).toBeGreaterThanOrEqual(290);
    expect(byDefault).toBeLessThan(2000);
    expect(await timed('&timeoutSeconds=1')).toBeGreaterThanOrEqual(990);
    const tooLarge = await fetch(`${api.url}/api/v1/pods?watch=true&resourceVersion=${api.resourceVersion + 50}`, { headers: headers() });
    expect(tooLarge.status).toBe(504);
  });

  it('streams a list as watch events ending in an initial-events-end bookmark (sendInitialEvents)', async () => {
    const response = await fetch(`${api.url}/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1`, { headers: headers() });
    const events = (await response.text()).trim().split('\n').map((line) => JSON.parse(line) as { type: string; object: { metadata: { annotations?: Record<string, string> } } });
    const end = events.findIndex((e) => e.type === 'BOOKMARK' && e.object.metadata.annotations?.['k8s.io/initial-events-end'] === 'true');
    expect(end).toBe(25);
    expect(events.slice(0, 25).every((e) => e.type === 'ADDED')).toBe(true);
    expect((await fetch(`${api.url}/api/v1/pods?watch=true&sendInitialEvents=true`, { headers: headers() })).status).toBe(400);
  });

  it('answers 429 with Retry-After, 403 as an RBAC denial and 504 on demand, for the requests asked', async () => {
    const throttled = api.fail({ status: 429, verb: 'list', resource: 'pods', times: 2, retryAfterSeconds: 2 });
    const first = await get('/api/v1/pods');
    expect(first.status).toBe(429);
    expect(first.headers.get('retry-after')).toBe('2');
    expect(first.body).toMatchObject({ reason: 'TooManyRequests', details: { retryAfterSeconds: 2 } });
    expect((await get('/api/v1/services')).status).toBe(200);
    expect((await get('/api/v1/pods')).status).toBe(429);
    expect((await get('/api/v1/pods')).status).toBe(200);
    expect(throttled.hits).toBe(2);
    const forbidden = api.fail({ status: 403, resource: 'endpointslices' });
    const denied = await get('/apis/discovery.k8s.io/v1/endpointslices');
    expect(denied.status).toBe(403);
    expect(denied.body.message).toBe('endpointslices is forbidden: User "system:serviceaccount:kappa:kappa-k8s-tagger" cannot list resource "endpointslices" in API group "discovery.k8s.io" at the cluster scope');
    forbidden.clear();
    expect((await get('/apis/discovery.k8s.io/v1/endpointslices')).status).toBe(200);
    api.fail({ status: 504, verb: 'watch', times: 1 });
    expect((await fetch(`${api.url}/api/v1/pods?watch=true`, { headers: headers() })).status).toBe(504);
  });

  it('serves pods of real size and plays the kubelet\'s status sequence', async () => {
    const spec = { name: 'web-5d8f7c9b6-x2k4q', namespace: 'shop', node: 'node-a', hostIP: '10.0.0.1', ips: ['10.244.1.5'], owner: { kind: 'ReplicaSet', name: 'web-5d8f7c9b6' }, labels: { app: 'web' } };
    const ready = realPod(spec);
    expect(JSON.stringify(ready).length).toBeGreaterThan(25_000);
    expect(Object.keys(ready.metadata!.labels!)).toHaveLength(30);
    expect((ready.spec as { containers: unknown[] }).containers).toHaveLength(10);
    expect((ready.metadata!.managedFields as unknown[]).length).toBeGreaterThanOrEqual(2);
    const seen: string[] = [];
    const watch = await fetch(`${api.url}/api/v1/namespaces/shop/pods?watch=true&resourceVersion=${api.resourceVersion}&timeoutSeconds=2`, { headers: headers() });
    await startPodLikeKubelet(api, spec, { stepMs: 5 });
    await stopPodLikeKubelet(api, 'shop', spec.name, { stepMs: 5 });
    for (const line of (await watch.text()).trim().split('\n')) {
      const { type, object } = JSON.parse(line) as { type: string; object: { metadata: { deletionTimestamp?: string }; spec: { nodeName?: string }; status: { podIP?: string; containerStatuses?: { containerID?: string; state: Record<string, unknown> }[] } } };
      const cs = object.status.containerStatuses ?? [];
      seen.push(`${type} node=${object.spec.nodeName ?? '-'} ip=${object.status.podIP ?? '-'} ids=${cs.filter((c) => c.containerID).length} deleting=${object.metadata.deletionTimestamp !== undefined} terminated=${cs.filter((c) => 'terminated' in c.state).length}`);
    }
    expect(seen).toEqual([
      'ADDED node=- ip=- ids=0 deleting=false terminated=0',
      'MODIFIED node=node-a ip=- ids=0 deleting=false terminated=0',
      'MODIFIED node=node-a ip=- ids=0 deleting=false terminated=0',
      'MODIFIED node=node-a ip=10.244.1.5 ids=0 deleting=false terminated=0',
      'MODIFIED node=node-a ip=10.244.1.5 ids=10 deleting=false terminated=0',
      'MODIFIED node=node-a ip=10.244.1.5 ids=10 deleting=false terminated=0',
      'MODIFIED node=node-a ip=10.244.1.5 ids=10 deleting=true terminated=0',
      'MODIFIED node=node-a ip=10.244.1.5 ids=10 deleting=true terminated=10',
      'DELETED node=node-a ip=10.244.1.5 ids=10 deleting=true terminated=10',
    ]);
  });
});
