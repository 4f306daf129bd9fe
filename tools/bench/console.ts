// The console's first render of a large service map, in Debian's Chromium against the real stack
// (nats-server, the exporter's flow store, the console over HTTPS; apps/console/test/stack.ts):
// a generated map of 500 workloads in 25 namespaces and 5 000 edges, and in the same run a
// baseline of 10 workloads and 20 edges, each opened --rounds times in a fresh browser context.
// Per round: wall time from navigation start to the map's first drawn frame (window.kappaMap
// .renderedAt), and the renderer main thread's CPU time until then (CDP Performance ThreadTime,
// what a loaded machine inflates least). The budget (#19) is 2 s for the large map.
// Run: npm run bench:console -- [--rounds 3] [--no-build]
import { loadavg } from 'node:os';
import { newFlowBatch } from '@kappa/contracts';
import { subjects } from '@kappa/bus';
import { MINUTE, generatedMap, mapRenderTimes, startConsoleStack, waitUntil } from '../../apps/console/test/stack.js';
import { machineLine, table } from './lib/report.mjs';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const ROUNDS = arg('rounds', 3);

const stack = await startConsoleStack({ build: !process.argv.includes('--no-build'), exporterInstance: 'bench-console-exporter' });
try {
  const now = BigInt(Date.now()) * 1_000_000n;
  const maps = [
    { name: 'baseline: 10 workloads, 20 edges', workloads: 10, edges: 20, at: now - 30n * MINUTE, prefix: 'base' },
    { name: '500 workloads, 5 000 edges', workloads: 500, edges: 5000, at: now - 180n * MINUTE, prefix: 'gen' },
  ];
  const rows: string[][] = [];
  for (const m of maps) {
    const { records } = generatedMap(m.at, m.workloads, m.edges, m.prefix);
    for (let b = 0; b < records.length; b += 1000) {
      await stack.bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: `${m.prefix}-${b}`, producer: 'bench', records: records.slice(b, b + 1000) }));
    }
    const range = `since=${m.at - MINUTE}&until=${m.at + MINUTE}`;
    await waitUntil(async () => (await stack.api<{ aggregates?: unknown[] }>(`api/map?${range}`)).aggregates?.length === m.edges, 120_000, `${m.name}: records stored`);
    for (let round = 1; round <= ROUNDS; round++) {
      const context = await stack.newContext();
      const page = await context.newPage();
      const cdp = await context.newCDPSession(page);
      await cdp.send('Performance.enable');
      await page.goto(`${stack.url}?${range}#token=${stack.token}`);
      await page.waitForSelector(`[data-testid=map][data-rendered="${m.edges}"]`, { timeout: 180_000 });
      const metrics = (await cdp.send('Performance.getMetrics')) as { metrics: { name: string; value: number }[] };
      const metric = (name: string) => 1000 * (metrics.metrics.find((x) => x.name === name)?.value ?? Number.NaN);
      const shown = await mapRenderTimes(page);
      const t = shown.timings;
      const load = loadavg()[0]!;
      rows.push([
        m.name,
        String(round),
        load.toFixed(1),
        `${shown.renderedAt.toFixed(0)} ms`,
        `${metric('ThreadTime').toFixed(0)} ms`,
        `${((t.fetched ?? 0) - (t.start ?? 0)).toFixed(0)} ms`,
        `${((t.created ?? 0) - (t.effect ?? 0)).toFixed(0)} ms`,
        `${(shown.renderedAt - (t.created ?? 0)).toFixed(0)} ms`,
      ]);
      process.stderr.write(`${m.name} round ${round}: first render ${shown.renderedAt.toFixed(0)} ms, renderer CPU ${metric('ThreadTime').toFixed(0)} ms, load ${load.toFixed(1)}\n`);
      await context.close();
    }
  }
  console.log(table(['map', 'round', 'load (1 min)', 'first render (wall)', 'renderer main thread CPU', 'fetch /api/map', 'Cytoscape construction', 'construction → drawn'], rows));
  console.log(`\n${machineLine()}`);
} finally {
  await stack.stop();
}
