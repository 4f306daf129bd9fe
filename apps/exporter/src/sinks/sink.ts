// What every export sink offers the exporter: take a batch (resolve only once it is stored or
// sent), and close cleanly at shutdown.
import type { FlowBatch } from '@kappa/contracts';

export interface FlowSink {
  /** Short name used in logs, metrics and the dedupe table: jsonl, ipfix, prometheus, observer. */
  readonly name: string;
  /** Takes every record of the batch; rejects when it could not, so the batch is redelivered. */
  write(batch: FlowBatch): Promise<void>;
  close(): Promise<void>;
}
