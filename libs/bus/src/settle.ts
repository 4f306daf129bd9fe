// What happens to one delivered message, in one place for every consumer: undecodable → the
// dead-letter queue, then acked; handled → acked (confirmed by the server); held → asked back
// later; failed → asked back after a delay and counted. Nothing is dropped without a count.
import { ContractDecodeError, RecordTooLargeError } from '@kappa/contracts';
import type { Logger } from '@kappa/observability';
import type { RawMessage } from './consumer.js';
import { HoldBatch } from './errors.js';
import type { BusMetrics } from './metrics.js';

export interface SettleContext {
  stage: string;
  metrics: BusMetrics;
  logger: Logger;
  retryDelayMs: number;
  deadLetter(stage: string, data: Uint8Array, details: { error: string; subject: string; streamSequence: number }): Promise<void>;
}

export type Settlement = 'handled' | 'dead-lettered' | 'held' | 'failed';

/**
 * Decodes the message with `decode` and handles it with `handle`, then acks, naks or
 * dead-letters it. `describe` names the input in logs (its batch id) once decoded.
 */
export async function settle<T>(message: RawMessage, context: SettleContext, decode: (bytes: Uint8Array) => T, handle: (input: T) => Promise<void> | void, describe: (input: T) => string): Promise<Settlement> {
  const { stage, metrics, logger } = context;
  let input: T;
  try {
    input = decode(message.bytes);
  } catch (error) {
    if (!(error instanceof ContractDecodeError)) throw error;
    return deadLetter(message, context, error.message, 'undecodable message moved to the DLQ');
  }
  try {
    await handle(input);
  } catch (error) {
    if (error instanceof HoldBatch) {
      metrics.held.inc({ stage, reason: error.reason });
      message.nak(error.delayMs);
      return 'held';
    }
    if (error instanceof RecordTooLargeError) {
      // Redelivery would fail the same way forever: the input goes where an operator looks.
      return deadLetter(message, context, error.message, 'a record outgrew the message limit; the input batch moved to the DLQ');
    }
    metrics.handlerFailures.inc({ stage });
    logger.error({ err: error, batchId: describe(input), delivery: message.deliveryCount }, 'batch handler failed; the batch will be redelivered');
    message.nak(context.retryDelayMs);
    return 'failed';
  }
  if (await message.ack()) {
    metrics.consumed.inc({ stage });
  } else {
    // The output is stored with a deterministic msg id: a redelivery republishes a duplicate,
    // which JetStream drops, so nothing is doubled.
    logger.warn({ batchId: describe(input) }, 'ack not confirmed; the batch may be redelivered');
  }
  return 'handled';
}

async function deadLetter(message: RawMessage, context: SettleContext, error: string, what: string): Promise<Settlement> {
  try {
    await context.deadLetter(context.stage, message.bytes, { error, subject: message.subject, streamSequence: message.streamSequence });
    await message.ack();
    context.logger.warn({ subject: message.subject, seq: message.streamSequence, error }, what);
    return 'dead-lettered';
  } catch (dlqError) {
    context.logger.error({ err: dlqError }, 'cannot publish to the DLQ; the message stays for redelivery');
    message.nak(context.retryDelayMs);
    return 'failed';
  }
}
