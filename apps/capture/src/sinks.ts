// Where drained batches go. stdout: one canonical-JSON FlowRecord per line, honouring
// backpressure so a slow reader slows the drain instead of growing memory. (JSON is for people
// and tests; the bus takes the encoded bytes as they are.)
import { decodeFlowBatch, flowRecordToJson } from '@kappa/contracts';
import type { BatchSink } from './capture.js';

export function stdoutSink(stream: NodeJS.WritableStream = process.stdout): BatchSink {
  return async (batch) => {
    let text = '';
    for (const record of decodeFlowBatch(batch.bytes).records) text += `${JSON.stringify(flowRecordToJson(record))}\n`;
    if (!text) return;
    if (!stream.write(text)) await new Promise<void>((resolve) => stream.once('drain', () => resolve()));
  };
}
