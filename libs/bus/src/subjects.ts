// The NATS subjects of the pipeline (ARCHITECTURE.md §1, with partitions: docs/architecture.md),
// named in one place.

/** A subject token must not contain dots, spaces or wildcards. */
export function subjectToken(value: string): string {
  return value.replace(/[.\s*>]/g, '_');
}

/** The subject token of partition k: `p<k>`. */
export function partitionToken(partition: number): string {
  if (!Number.isInteger(partition) || partition < 0) throw new RangeError(`a partition is a non-negative integer, not ${partition}`);
  return `p${partition}`;
}

export const subjects = {
  /** capture → process-enricher on the same node (not partitioned: the enricher computes k). */
  captured: (node: string) => `kappa.flow.captured.${subjectToken(node)}`,
  /** process-enricher → k8s-tagger: partition k of one node's records. */
  enriched: (partition: number, node: string) => `kappa.flow.enriched.${partitionToken(partition)}.${subjectToken(node)}`,
  /** Every partition of one node's enriched records. */
  enrichedOfNode: (node: string) => `kappa.flow.enriched.*.${subjectToken(node)}`,
  allEnriched: 'kappa.flow.enriched.>',
  /** k8s-tagger → joiner: one input batch of partition k → one output batch of partition k. */
  tagged: (partition: number) => `kappa.flow.tagged.${partitionToken(partition)}`,
  allTagged: 'kappa.flow.tagged.>',
  /** joiner → exporter. */
  joined: (partition: number) => `kappa.flow.joined.${partitionToken(partition)}`,
  allJoined: 'kappa.flow.joined.>',
  /** Undecodable input of a stage, with the error in a header. */
  dlq: (stage: string) => `kappa.dlq.${subjectToken(stage)}`,
  allDlq: 'kappa.dlq.>',
  /** Heartbeats read by `kappa status`. */
  status: (stage: string, instance: string) => `kappa.status.${subjectToken(stage)}.${subjectToken(instance)}`,
  allStatus: 'kappa.status.>',
} as const;

/**
 * The partition a flow subject carries (`kappa.flow.<hop>.p<k>[.<node>]`), or undefined for a
 * subject without one (kappa.flow.captured.<node>, or a malformed token).
 */
export function partitionOfSubject(subject: string): number | undefined {
  if (!subject.startsWith('kappa.flow.')) return undefined;
  const afterHop = subject.indexOf('.', 11);
  if (afterHop < 0 || subject.charCodeAt(afterHop + 1) !== 0x70 /* p */) return undefined;
  let end = subject.indexOf('.', afterHop + 1);
  if (end < 0) end = subject.length;
  if (end - afterHop - 2 < 1 || end - afterHop - 2 > 9) return undefined;
  let k = 0;
  for (let i = afterHop + 2; i < end; i++) {
    const digit = subject.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) return undefined;
    k = k * 10 + digit;
  }
  return k;
}

/**
 * The subject as a metrics label: the hop only (kappa.flow.tagged), without partition or node
 * tokens, so label sets stay bounded.
 */
export function subjectLabel(subject: string): string {
  if (!subject.startsWith('kappa.flow.')) return subject;
  const afterHop = subject.indexOf('.', 11);
  return afterHop < 0 ? subject : subject.slice(0, afterHop);
}

export const FLOW_STREAM = 'KAPPA_FLOWS';

/**
 * The share of KAPPA_FLOWS's byte limit a publish on each hop may find filled. Later hops may
 * fill more, so when the stream is at one hop's limit the stages behind it can still publish
 * their output, ack their input, and let the exporter empty the stream. With one limit for all,
 * a backlog of a stage's own input fills the stream and refuses the very output that would drain
 * it: a deadlock that ends only when max_age silently deletes batches. capture, first in line,
 * is refused first; it keeps a bounded backlog and counts what it has to drop.
 */
export const STREAM_ADMISSION: readonly { readonly prefix: string; readonly share: number }[] = [
  { prefix: 'kappa.flow.captured.', share: 0.7 },
  { prefix: 'kappa.flow.enriched.', share: 0.78 },
  { prefix: 'kappa.flow.tagged', share: 0.86 },
  { prefix: 'kappa.flow.joined', share: 0.94 },
];

/** The share of the stream a publish on `subject` may find filled (1 for subjects off the pipeline). */
export function admissionShare(subject: string): number {
  return STREAM_ADMISSION.find((a) => subject.startsWith(a.prefix))?.share ?? 1;
}
export const DLQ_STREAM = 'KAPPA_DLQ';

/** Headers set on a dead-lettered message. */
export const dlqHeaders = {
  error: 'Kappa-Error',
  subject: 'Kappa-Subject',
  stage: 'Kappa-Stage',
  streamSequence: 'Kappa-Stream-Seq',
} as const;
