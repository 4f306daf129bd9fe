// One side of stage-ab.ts: a stage runner of the checkout at --root (its libs/bus, its nats.js
// changes) with a transform that copies every record, draining the backlog the parent published.
// Prints one JSON line: CPU of this process from the first batch to the last record counted, and
// its garbage collections. Only dynamic imports of the checkout's own sources: nothing of the
// checkout that runs the A/B is loaded here.
import { join } from 'node:path';
import { PerformanceObserver, constants } from 'node:perf_hooks';
import type * as BusApi from '@kappa/bus';
import type * as Observability from '@kappa/observability';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const root = args.root!;
const expected = Number(args.records);
const bus = (await import(join(root, 'libs/bus/src/index.ts'))) as typeof BusApi;
const observability = (await import(join(root, 'libs/observability/src/index.ts'))) as typeof Observability;

const gc = { minor: 0, major: 0, ms: 0 };
/** The measured window on performance.now()'s clock; GC entries arrive later and are sorted by it. */
const window = { from: Infinity, to: Infinity };
let measuring = false;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    if (entry.startTime < window.from || entry.startTime > window.to) continue;
    const kind = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
    if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) gc.major++;
    else gc.minor++;
    gc.ms += entry.duration;
  }
}).observe({ entryTypes: ['gc'] });

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};
/** Batches before the measurement starts (the JIT warms up on them, as in a running stage). */
const warmUp = Number(args['warm-up'] ?? 32);
let seen = 0;
let cpuAtFirst = 0;
let wallAtFirst = 0;
let recordsAtFirst = 0;
/** The measured window on the monotonic clock that CPU profiles stamp their samples with. */
let fromUs = 0;
const stage = await bus.startStage({
  stage: 'bench-stage',
  instance: 'bench',
  bus: { servers: [args.nats!] },
  logger: observability.createLogger('bench-stage', 'warn'),
  registry: observability.createRegistry('bench-stage'),
  metricsPort: 0,
  metricsHost: '127.0.0.1',
  input: { subject: 'kappa.flow.enriched.>', maxInFlight: Number(args['in-flight'] ?? 4) },
  transform: ({ view, partition }, output) => {
    if (!measuring && ++seen > warmUp) {
      measuring = true;
      recordsAtFirst = stage.recordsIn;
      cpuAtFirst = cpuUs();
      wallAtFirst = window.from = performance.now();
      fromUs = Number(process.hrtime.bigint() / 1000n);
    }
    const writer = output.batch(`kappa.flow.tagged.p${partition ?? 0}`);
    for (let i = 0; i < view.length; i++) writer.copyRecord(view, i);
  },
});
while (stage.recordsIn < expected) await new Promise((r) => setTimeout(r, 5));
const cpu = cpuUs() - cpuAtFirst;
window.to = performance.now();
const wall = window.to - wallAtFirst;
const toUs = Number(process.hrtime.bigint() / 1000n);
await stage.stop();
// The last GC entries are delivered on a later turn of the loop.
await new Promise((r) => setTimeout(r, 50));
process.stdout.write(`${JSON.stringify({ cpuUs: cpu, wallMs: wall, records: stage.recordsIn - recordsAtFirst, out: stage.recordsOut, gc, fromUs, toUs })}\n`);
