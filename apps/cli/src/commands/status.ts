// `kappa status`: listens to every stage's heartbeat (kappa.status.<stage>.<instance>) for a few
// seconds, reads the DLQ counts from KAPPA_DLQ, prints a table; exits 0 only when all five
// stages have a ready instance.
import { DLQ_STREAM, JetStreamCodes, busOptionsFromConfig, connectBus, jetStreamCode, natsOptions, subjects } from '@kappa/bus';
import { duration, loadConfigOrExit } from '@kappa/config';
import { createLogger, createRegistry } from '@kappa/observability';
import { renderStatus, summarize } from '../status/summary.js';
import type { InstanceBeats } from '../status/summary.js';

const options = {
  wait: duration({ description: 'how long to listen for heartbeats (they come every 2 s)', default: '3s', minMs: 100 }),
  ...natsOptions,
};

export async function runStatus(argv: string[]): Promise<number> {
  const config = loadConfigOrExit({ command: 'kappa status', summary: 'Health, rate, lag and DLQ count of every kappa stage.', options }, argv);
  const logger = createLogger('kappa-cli', 'silent');
  let bus;
  try {
    bus = await connectBus({ ...busOptionsFromConfig(config), name: 'kappa-status', logger, registry: createRegistry('kappa-cli') });
  } catch (error) {
    process.stderr.write(`kappa status: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  const beats = new Map<string, InstanceBeats>();
  // A message on kappa.status.> that is not a StageStatus is someone else's: ignored.
  const unsubscribe = bus.subscribeStatus((status) => {
    const key = `${status.stage}\0${status.instance}`;
    const seen = beats.get(key);
    beats.set(key, { first: seen?.first ?? status, last: status });
  });
  await new Promise((r) => setTimeout(r, config.wait));
  unsubscribe();
  const dlqByStage = new Map<string, number>();
  try {
    const info = await bus.streamInfo(DLQ_STREAM, { subjectsFilter: subjects.allDlq });
    for (const [subject, count] of Object.entries(info.state.subjects ?? {})) {
      dlqByStage.set(subject.replace(/^kappa\.dlq\./, ''), count);
    }
  } catch (error) {
    // No KAPPA_DLQ yet means no stage ever started: nothing dead-lettered.
    if (jetStreamCode(error) !== JetStreamCodes.StreamNotFound) process.stderr.write(`kappa status: cannot read ${DLQ_STREAM}: ${String(error)}\n`);
  }
  await bus.close();
  const summary = summarize(beats, dlqByStage);
  process.stdout.write(`${renderStatus(summary)}\n`);
  return summary.ok ? 0 : 1;
}
