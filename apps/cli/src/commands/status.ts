// `kappa status`: listens to every stage's heartbeat (kappa.status.<stage>.<instance>) for a few
// seconds, reads the DLQ counts from KAPPA_DLQ, prints a table; exits 0 only when all five
// stages have a ready instance. A heartbeat counts only as the stage and instance of the subject it
// came on (Bus.subscribeStatus): with per-identity permissions (infra/nats/permissions.mjs) only
// that stage's identity — for a node agent, that node's — may publish there, so a body claiming
// another stage, instance or node is a forgery, ignored and counted; the last line says whether
// this NATS enforces it.
import { DLQ_STREAM, ForgedHeartbeat, JetStreamCodes, busOptionsFromConfig, connectBus, jetStreamCode, natsOptions, subjects } from '@kappa/bus';
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
  let forged = 0;
  // A message on kappa.status.> that is not a StageStatus is someone else's: ignored.
  const unsubscribe = bus.subscribeStatus(
    (status) => {
      const key = `${status.stage}\0${status.instance}`;
      const seen = beats.get(key);
      beats.set(key, { first: seen?.first ?? status, last: status });
    },
    (_subject, error) => {
      if (error instanceof ForgedHeartbeat) forged++;
    },
  );
  // An empty message on a heartbeat subject, which no listener takes for a heartbeat.
  const enforced = await bus.probePublishRefused(subjects.status('kappa-status-probe', String(process.pid)));
  await new Promise((r) => setTimeout(r, config.wait));
  unsubscribe();
  const dlqByStage = new Map<string, number>();
  let servers: string[] = [];
  try {
    const info = await bus.streamInfo(DLQ_STREAM, { subjectsFilter: subjects.allDlq });
    for (const [subject, count] of Object.entries(info.state.subjects ?? {})) {
      dlqByStage.set(subject.replace(/^kappa\.dlq\./, ''), count);
    }
    servers = natsServers(info.cluster);
  } catch (error) {
    // No KAPPA_DLQ yet means no stage ever started: nothing dead-lettered.
    if (jetStreamCode(error) !== JetStreamCodes.StreamNotFound) process.stderr.write(`kappa status: cannot read ${DLQ_STREAM}: ${String(error)}\n`);
  }
  await bus.close();
  const summary = summarize(beats, dlqByStage);
  process.stdout.write(`${renderStatus(summary)}\n`);
  if (servers.length > 0) process.stdout.write(`\nNATS servers (each holds a replica of ${DLQ_STREAM}):\n${servers.join('\n')}\n`);
  process.stdout.write(
    enforced
      ? 'heartbeats: authenticated by NATS permissions (only a stage\'s own identity may publish its kappa.status subject)\n'
      : 'heartbeats: NOT authenticated: this NATS lets any client publish on kappa.status.>, so a row may be forged (give each service its own identity: infra/README.md)\n',
  );
  if (forged > 0) process.stdout.write(`ignored ${forged} heartbeat(s) whose body claims another stage, instance or node than the subject it came on\n`);
  return summary.ok ? 0 : 1;
}

/**
 * The NATS servers of a clustered stream (its leader and replicas, which with R3 on a cluster of
 * three are every server), one line each: the only view of the servers the cli identity may read.
 */
function natsServers(cluster: { leader?: string; replicas?: { name: string; current: boolean; offline?: boolean; lag?: number }[] } | undefined): string[] {
  if (!cluster?.replicas?.length && !cluster?.leader) return [];
  const lines = cluster.leader ? [`  ${cluster.leader.padEnd(24)} leader`] : ['  (no leader: the stream has no quorum)'];
  for (const r of [...(cluster.replicas ?? [])].sort((a, b) => a.name.localeCompare(b.name))) {
    lines.push(`  ${r.name.padEnd(24)} ${r.offline ? 'OFFLINE' : r.current ? 'current' : `catching up (${r.lag ?? 0} behind)`}`);
  }
  return lines;
}
