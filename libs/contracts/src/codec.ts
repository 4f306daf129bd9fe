// Binary and JSON codecs for the flow contracts, with one error type for anything undecodable.
import { create, fromBinary, toBinary, toJson, fromJson } from '@bufbuild/protobuf';
import type { JsonValue, MessageInitShape } from '@bufbuild/protobuf';
import {
  FlowBatchSchema,
  FlowRecordSchema,
  StageStatusSchema,
} from './gen/kappa/flow/v1/flow_pb.js';
import type { FlowBatch, FlowRecord, StageStatus } from './gen/kappa/flow/v1/flow_pb.js';

/** A payload that is not a valid message of the expected type. */
export class ContractDecodeError extends Error {
  override readonly name = 'ContractDecodeError';
  constructor(
    readonly messageType: string,
    readonly byteLength: number,
    options: { cause: unknown },
  ) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(`cannot decode ${byteLength} bytes as ${messageType}: ${why}`, options);
  }
}

export function encodeFlowBatch(batch: FlowBatch): Uint8Array {
  return toBinary(FlowBatchSchema, batch);
}

/** The first control character (U+0000–U+001F, U+007F) in s, or -1. */
function controlCharacterAt(s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return i;
  }
  return -1;
}

/**
 * Decodes a FlowBatch, throwing ContractDecodeError for garbage or truncated input, and for a
 * batch_id with a control character: every stage derives its output's Nats-Msg-Id header from the
 * batch_id, a header cannot hold CR or LF, and such a batch would fail to publish and come back
 * forever instead of going to the DLQ.
 */
export function decodeFlowBatch(bytes: Uint8Array): FlowBatch {
  let batch: FlowBatch;
  try {
    batch = fromBinary(FlowBatchSchema, bytes);
  } catch (cause) {
    throw new ContractDecodeError('kappa.flow.v1.FlowBatch', bytes.byteLength, { cause });
  }
  const at = controlCharacterAt(batch.batchId);
  if (at >= 0) {
    // JSON-quoted: the message goes into the DLQ entry's Kappa-Error header, so no raw CR/LF.
    const cause = new Error(`batch_id ${JSON.stringify(batch.batchId.slice(0, 64))} has a control character at ${at}`);
    throw new ContractDecodeError('kappa.flow.v1.FlowBatch', bytes.byteLength, { cause });
  }
  return batch;
}

export function newFlowBatch(init: MessageInitShape<typeof FlowBatchSchema>): FlowBatch {
  return create(FlowBatchSchema, init);
}

export function newFlowRecord(init: MessageInitShape<typeof FlowRecordSchema>): FlowRecord {
  return create(FlowRecordSchema, init);
}

/** The canonical protobuf JSON mapping of a FlowRecord (what `kappa observe --output json` prints). */
export function flowRecordToJson(record: FlowRecord): JsonValue {
  return toJson(FlowRecordSchema, record);
}

export function flowRecordFromJson(json: JsonValue): FlowRecord {
  try {
    return fromJson(FlowRecordSchema, json);
  } catch (cause) {
    throw new ContractDecodeError('kappa.flow.v1.FlowRecord (JSON)', JSON.stringify(json).length, { cause });
  }
}

export function encodeStageStatus(status: StageStatus): Uint8Array {
  return toBinary(StageStatusSchema, status);
}

export function decodeStageStatus(bytes: Uint8Array): StageStatus {
  try {
    return fromBinary(StageStatusSchema, bytes);
  } catch (cause) {
    throw new ContractDecodeError('kappa.flow.v1.StageStatus', bytes.byteLength, { cause });
  }
}
