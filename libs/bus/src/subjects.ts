// The NATS subjects of the pipeline (ARCHITECTURE.md §1), named in one place.

/** A subject token must not contain dots, spaces or wildcards. */
export function subjectToken(value: string): string {
  return value.replace(/[.\s*>]/g, '_');
}

export const subjects = {
  /** capture → process-enricher on the same node. */
  captured: (node: string) => `kappa.flow.captured.${subjectToken(node)}`,
  /** process-enricher → k8s-tagger. */
  enriched: (node: string) => `kappa.flow.enriched.${subjectToken(node)}`,
  allEnriched: 'kappa.flow.enriched.>',
  /** k8s-tagger → joiner. */
  tagged: 'kappa.flow.tagged',
  /** joiner → exporter. */
  joined: 'kappa.flow.joined',
  /** Undecodable input of a stage, with the error in a header. */
  dlq: (stage: string) => `kappa.dlq.${subjectToken(stage)}`,
  allDlq: 'kappa.dlq.>',
  /** Heartbeats read by `kappa status`. */
  status: (stage: string, instance: string) => `kappa.status.${subjectToken(stage)}.${subjectToken(instance)}`,
  allStatus: 'kappa.status.>',
} as const;

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
