// What every export sink offers the exporter: take a batch (resolve only once it is stored or
// sent), and close cleanly at shutdown. Sinks read records in place through the batch's view.
import type { FlowBatchView } from '@kappa/contracts';

export interface ExportBatch {
  /** The batch's records, by offset. Valid until the sink's write() settles; copy what you keep. */
  readonly view: FlowBatchView;
  /** JetStream delivered this batch before (a crash or a failure before its ack). */
  readonly redelivered: boolean;
}

export interface FlowSink {
  /** Short name used in logs, metrics and the dedupe table: jsonl, ipfix, prometheus, observer. */
  readonly name: string;
  /** Takes every record of the batch; rejects when it could not, so the batch is redelivered. */
  write(batch: ExportBatch): Promise<void>;
  close(): Promise<void>;
}
