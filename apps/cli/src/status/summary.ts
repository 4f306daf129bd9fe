// What `kappa status` concludes from the heartbeats it heard: one row per instance, and which of
// the five stages have no ready instance.
import type { StageStatus } from '@kappa/contracts';

export const STAGES = ['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'] as const;

/** The first and the latest heartbeat of one instance, for its rate. */
export interface InstanceBeats {
  first: StageStatus;
  last: StageStatus;
}

export interface StatusRow {
  stage: string;
  instance: string;
  node: string;
  ready: boolean;
  inPerSecond: number;
  outPerSecond: number;
  lag: bigint;
  dlq: bigint;
  lost: bigint;
  uptimeSeconds: number;
  /** How the instance runs where it depends on its node (capture: the kernel hook of each feature). */
  features: Record<string, string>;
}

export interface StatusSummary {
  rows: StatusRow[];
  /** Stages with no heartbeat at all. */
  missing: string[];
  /** Stages whose instances all say not ready. */
  notReady: string[];
  /** DLQ message counts per stage from KAPPA_DLQ. */
  dlqByStage: Map<string, number>;
  ok: boolean;
}

function rate(a: bigint, b: bigint, fromNs: bigint, toNs: bigint): number {
  const seconds = Number(toNs - fromNs) / 1e9;
  return seconds > 0 ? Number(b - a) / seconds : 0;
}

export function summarize(beats: Map<string, InstanceBeats>, dlqByStage: Map<string, number>): StatusSummary {
  const rows: StatusRow[] = [];
  for (const { first, last } of beats.values()) {
    // Two beats: the rate between them; one beat: the average since the instance started.
    const from = first === last ? { recordsIn: 0n, recordsOut: 0n, sentNs: last.startedNs } : first;
    rows.push({
      stage: last.stage,
      instance: last.instance,
      node: last.node,
      ready: last.ready,
      inPerSecond: rate(from.recordsIn, last.recordsIn, from.sentNs, last.sentNs),
      outPerSecond: rate(from.recordsOut, last.recordsOut, from.sentNs, last.sentNs),
      lag: last.lag,
      dlq: last.dlq,
      lost: Object.values(last.lost).reduce((n, v) => n + v, 0n),
      uptimeSeconds: Number(last.sentNs - last.startedNs) / 1e9,
      features: { ...last.features },
    });
  }
  const order = (s: string) => {
    const i = (STAGES as readonly string[]).indexOf(s);
    return i < 0 ? STAGES.length : i;
  };
  rows.sort((a, b) => order(a.stage) - order(b.stage) || a.instance.localeCompare(b.instance));
  const missing = STAGES.filter((s) => !rows.some((r) => r.stage === s));
  const notReady = STAGES.filter((s) => !missing.includes(s) && !rows.some((r) => r.stage === s && r.ready));
  return { rows, missing, notReady, dlqByStage, ok: missing.length === 0 && notReady.length === 0 };
}

function seconds(s: number): string {
  if (s < 120) return `${Math.round(s)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

export function renderStatus(summary: StatusSummary): string {
  const header = ['STAGE'.padEnd(17), 'INSTANCE'.padEnd(28), 'NODE'.padEnd(16), 'READY'.padEnd(6), 'IN/s'.padStart(9), 'OUT/s'.padStart(9), 'LAG'.padStart(8), 'DLQ'.padStart(6), 'LOST'.padStart(8), 'UP'.padStart(6)];
  const lines = [header.join(' ')];
  for (const r of summary.rows) {
    lines.push(
      [
        r.stage.padEnd(17),
        r.instance.slice(0, 28).padEnd(28),
        r.node.slice(0, 16).padEnd(16),
        (r.ready ? 'yes' : 'NO').padEnd(6),
        r.inPerSecond.toFixed(1).padStart(9),
        r.outPerSecond.toFixed(1).padStart(9),
        String(r.lag).padStart(8),
        String(summary.dlqByStage.get(r.stage) ?? 0).padStart(6),
        String(r.lost).padStart(8),
        seconds(r.uptimeSeconds).padStart(6),
      ].join(' '),
    );
  }
  for (const stage of summary.missing) {
    lines.push([stage.padEnd(17), '-'.padEnd(28), '-'.padEnd(16), 'NO'.padEnd(6), '-'.padStart(9), '-'.padStart(9), '-'.padStart(8), String(summary.dlqByStage.get(stage) ?? 0).padStart(6), '-'.padStart(8), '-'.padStart(6)].join(' '));
  }
  const withFeatures = summary.rows.filter((r) => Object.keys(r.features).length > 0);
  if (withFeatures.length > 0) {
    // Indented under a heading: only the table's rows start with a stage's name (scripts read them).
    lines.push('', 'how each instance runs on its node:');
    for (const r of withFeatures) {
      for (const [feature, how] of Object.entries(r.features)) lines.push(`  ${r.stage} ${r.instance}: ${feature}: ${how}`);
    }
  }
  if (summary.missing.length > 0) lines.push('', `missing (no heartbeat): ${summary.missing.join(', ')}`);
  if (summary.notReady.length > 0) lines.push(`${summary.missing.length > 0 ? '' : '\n'}not ready: ${summary.notReady.join(', ')}`);
  if (summary.ok) lines.push('', `all ${STAGES.length} stages ready`);
  return lines.join('\n');
}
