// The default process metrics each service exports. The event-loop delay histogram samples at
// 100 ms (not prom-client's 10 ms, which woke every idle service 100 times a second): a stall of
// the loop must still show in it.
import { expect, it } from 'vitest';
import { createRegistry } from '../src/index.js';

const block = (ms: number) => {
  const until = performance.now() + ms;
  while (performance.now() < until);
};

it('shows a 400 ms stall of the event loop in the delay histogram', async () => {
  const registry = createRegistry('kappa-test');
  await new Promise((r) => setTimeout(r, 250));
  block(400);
  await new Promise((r) => setTimeout(r, 250));
  // A scrape, as Prometheus does it (the lag gauges are filled when the whole registry is read).
  const text = await registry.metrics();
  const max = Number(/^kappa_nodejs_eventloop_lag_max_seconds\{[^}]*\} ([\d.e+-]+)$/m.exec(text)?.[1]);
  // The sampling timer was due during the stall and ran only after it.
  expect(max).toBeGreaterThan(0.25);
  expect(max).toBeLessThan(2);
});
