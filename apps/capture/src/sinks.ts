// Where drained batches go. stdout: one canonical-JSON FlowRecord per line, honouring
// backpressure so a slow reader slows the drain instead of growing memory.
import { flowRecordToJson } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import type { BatchSink } from './capture.js';

export function stdoutSink(stream: NodeJS.WritableStream = process.stdout): BatchSink {
  return async (batch: FlowBatch) => {
    let text = '';
    for (const record of batch.records) text += `${JSON.stringify(flowRecordToJson(record))}\n`;
    if (!text) return;
    if (!stream.write(text)) await new Promise<void>((resolve) => stream.once('drain', () => resolve()));
  };
}
