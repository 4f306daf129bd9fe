// Splits a FlowBatch into messages under the server's max_payload, deterministically, so the same
// input always yields the same parts and the same Nats-Msg-Ids.
import { encodeFlowBatch, newFlowBatch } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';

export interface BatchPart {
  id: string;
  bytes: Uint8Array;
}

export function splitBatch(batch: FlowBatch, maxPayload: number): BatchPart[] {
  const limit = Math.max(1024, maxPayload - 4096); // room for headers
  const whole = encodeFlowBatch(batch);
  if (whole.byteLength <= limit) return [{ id: batch.batchId, bytes: whole }];
  if (batch.records.length <= 1) {
    throw new RangeError(`one flow record of ${whole.byteLength} bytes is larger than max_payload ${maxPayload}`);
  }
  // Halve until each part fits; record order is kept.
  const parts: FlowBatch[] = [];
  const pending: FlowBatch['records'][] = [batch.records];
  while (pending.length > 0) {
    const records = pending.shift() ?? [];
    const candidate = newFlowBatch({ batchId: batch.batchId, producer: batch.producer, createdNs: batch.createdNs, records });
    if (records.length > 1 && encodeFlowBatch(candidate).byteLength > limit) {
      const middle = Math.ceil(records.length / 2);
      pending.unshift(records.slice(0, middle), records.slice(middle));
    } else {
      parts.push(candidate);
    }
  }
  return parts.map((part, i) => {
    part.batchId = `${batch.batchId}/${i}`;
    return { id: part.batchId, bytes: encodeFlowBatch(part) };
  });
}
