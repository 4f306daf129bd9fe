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
export const DLQ_STREAM = 'KAPPA_DLQ';

/** Headers set on a dead-lettered message. */
export const dlqHeaders = {
  error: 'Kappa-Error',
  subject: 'Kappa-Subject',
  stage: 'Kappa-Stage',
  streamSequence: 'Kappa-Stream-Seq',
} as const;
