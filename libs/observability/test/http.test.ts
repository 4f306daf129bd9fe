import { afterEach, describe, expect, it } from 'vitest';
import { registerSecret } from '@kappa/config';
import { Counter, createRegistry, startObservabilityServer } from '../src/index.js';
import type { ObservabilityServer } from '../src/index.js';

let server: ObservabilityServer | undefined;
afterEach(async () => server?.close());

describe('observability server', () => {
  it('serves metrics with the service label and reports health and readiness separately', async () => {
    const registry = createRegistry('kappa-test');
    const counter = new Counter({ name: 'kappa_test_records_total', help: 'records', registers: [registry] });
    counter.inc(7);
    let ready = false;
    server = await startObservabilityServer(registry, { healthy: () => true, ready: () => ready }, { port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${server.port}`;
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('kappa_test_records_total{service="kappa-test"} 7');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(503);
    ready = true;
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect((await fetch(`${base}/nope`)).status).toBe(404);
  });
});

describe('observability server and secrets', () => {
  it('masks URL passwords and known secrets in label values on /metrics', async () => {
    registerSecret('metrics-known-secret-5');
    const registry = createRegistry('kappa-test');
    const errors = new Counter({ name: 'kappa_test_errors_total', help: 'errors', labelNames: ['target'], registers: [registry] });
    errors.inc({ target: 'redis://:redis-url-pw-6@redis:6379' });
    errors.inc({ target: 'x metrics-known-secret-5' });
    server = await startObservabilityServer(registry, { healthy: () => true, ready: () => true }, { port: 0, host: '127.0.0.1' });
    const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
    expect(metrics).not.toMatch(/redis-url-pw-6|metrics-known-secret-5/);
    expect(metrics).toContain('target="redis://:***@redis:6379"');
  });
});
