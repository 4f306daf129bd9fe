// The test API server against the real @kubernetes/client-node informer: list, watch, resume,
// 410 Gone and relist, dropped watches, restarts; and the raw protocol for bookmarks.
import { CoreV1Api, KubeConfig, makeInformer } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKubeApiServer } from '../src/index.js';
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
