// The flow store in a child process the crash tests kill: it appends the crash records in
// batches, printing each batch it acks, and SIGKILLs itself right after one step of a seal
// (FlowStore's sealStepHookForTests). Run: tsx store-seal-child.ts <dir> <step|none> <records> <batch> <segmentRecords> [<segment>]
// <segment>: only that segment's seal is killed (default: any, e.g. a seal open() runs).
import { FlowStore, sealSteps } from '../src/store/store.js';
import type { SealStep } from '../src/store/store.js';
import { storeCrashRecord, viewOf } from './fixtures.js';

const [dir, step, records, batch, segmentRecords, segment] = process.argv.slice(2);
if (!dir || !step || (step !== 'none' && !sealSteps.includes(step as SealStep))) throw new Error(`usage: store-seal-child.ts <dir> <${sealSteps.join('|')}|none> <records> <batch> <segmentRecords> [<segment>]`);
const store = new FlowStore({
  dir,
  retentionMs: 100 * 365 * 24 * 3_600_000,
  maxBytes: 1024 ** 3,
  segmentRecords: Number(segmentRecords),
  segmentAgeMs: 3_600_000,
  sealStepHookForTests: (at, seq) => {
    if (at === step && (segment === undefined || seq === Number(segment))) process.kill(process.pid, 'SIGKILL');
  },
});
await store.open();
process.stdout.write('opened\n');
const total = Number(records);
for (let from = 0; from < total; from += Number(batch)) {
  const to = Math.min(total, from + Number(batch));
  await store.append(viewOf(Array.from({ length: to - from }, (_, k) => storeCrashRecord(from + k))), 1n);
  process.stdout.write(`acked ${from} ${to}\n`);
}
await store.flush();
process.stdout.write('flushed\n');
// No close: the hot segment stays as a stop leaves it.
process.exit(0);
