// Errors of the bus an operator can act on, and the one place that tells JetStream failures apart
// by their API error code (nats-server's errors.json), not by the text of their messages.
import { JetStreamApiError } from '@nats-io/jetstream';
import { jserrors } from '@nats-io/jetstream/internal';
import { PermissionViolationError, TimeoutError } from '@nats-io/transport-node';
import { redactSecrets } from '@kappa/config';
import { FLOW_STREAM } from './subjects.js';

/** nats-server JetStream API error codes kappa acts on (server/errors.json). */
export const JetStreamCodes = {
  ConsumerNameInUse: 10013,
  ConsumerNotFound: 10014,
  InsufficientResources: 10023,
  MemoryResourcesExceeded: 10028,
  StorageResourcesExceeded: 10047,
  MessageExceedsMaximum: 10054,
  StreamNameInUse: 10058,
  StreamNotFound: 10059,
  /** A store refused the message: "maximum bytes exceeded" / "maximum messages exceeded" with discard new. */
  StreamStoreFailed: 10077,
  ConsumerAlreadyExists: 10148,
} as const;

/** The JetStream API error code of an error, or undefined for other errors. */
export function jetStreamCode(error: unknown): number | undefined {
  return error instanceof JetStreamApiError ? error.code : undefined;
}

/** A connection to NATS could not be made or authenticated. */
export class BusConnectError extends Error {
  override readonly name = 'BusConnectError';
  constructor(servers: readonly string[], options: { cause: unknown }) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    // A server URL may carry user:password@: the message names the servers, never the password.
    super(redactSecrets(`cannot connect to NATS at ${servers.join(', ')}: ${why} (check --nats-url and the credentials)`), options);
  }
}

/** Why a publish failed, as counted in kappa_bus_publish_failures_total{reason}. */
export type PublishFailureReason = 'stream_full' | 'too_large' | 'no_stream' | 'timeout' | 'denied' | 'other';

/** A batch could not be stored in JetStream; the caller must keep (not ack) its input. */
export class BusPublishError extends Error {
  override readonly name = 'BusPublishError';
  constructor(
    readonly subject: string,
    readonly reason: PublishFailureReason,
    options: { cause: unknown },
  ) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    const hint: Record<PublishFailureReason, string> = {
      stream_full: 'the KAPPA_FLOWS stream is full (a consumer is behind or down); raise --stream-max-bytes or fix the slow stage',
      too_large: 'a single message is larger than the server max_payload',
      no_stream: 'the KAPPA_FLOWS stream does not exist; a stage creates it at start',
      timeout: 'JetStream did not answer in time',
      denied: 'the NATS user may not publish on this subject; check its permissions',
      other: 'see the cause',
    };
    super(`cannot publish to ${subject}: ${why} (${hint[reason]})`, options);
  }
}

/** Why JetStream refused or did not answer a publish, from the error's type and API code. */
export function classifyPublishError(error: unknown): PublishFailureReason {
  switch (jetStreamCode(error)) {
    case JetStreamCodes.StreamStoreFailed:
    case JetStreamCodes.StorageResourcesExceeded:
    case JetStreamCodes.MemoryResourcesExceeded:
    case JetStreamCodes.InsufficientResources:
      return 'stream_full';
    case JetStreamCodes.MessageExceedsMaximum:
      return 'too_large';
    case JetStreamCodes.StreamNotFound:
      return 'no_stream';
    case undefined:
      break;
    default:
      return 'other';
  }
  // No responders on the subject: no stream listens there (nats.js reports it this way).
  if (error instanceof jserrors.JetStreamNotEnabled) return 'no_stream';
  if (error instanceof TimeoutError) return 'timeout';
  if (error instanceof PermissionViolationError) return 'denied';
  return 'other';
}

/**
 * Thrown by a transform that cannot handle a batch yet (e.g. the tagger waiting for a pod the API
 * server has not shown it): the batch is asked back after delayMs, counted in
 * kappa_bus_held_batches_total{stage,reason}; not a failure, and nothing is published or acked.
 * The transform bounds how long it holds (RawMessage.storedNs is the first arrival).
 */
export class HoldBatch extends Error {
  override readonly name = 'HoldBatch';
  constructor(
    readonly delayMs: number,
    readonly reason: string,
  ) {
    super(`batch held for ${delayMs} ms: ${reason}`);
  }
}

/** The server refused this identity the subject (per-identity permissions), directly or as the cause. */
export function isPermissionError(error: unknown): boolean {
  if (error instanceof PermissionViolationError) return true;
  const cause = (error as { cause?: unknown } | undefined)?.cause;
  return cause !== undefined && cause !== error && isPermissionError(cause);
}

/**
 * nats-server has no room to reserve a stream's max_bytes (JetStream error 10047/10023: "insufficient
 * storage resources available"): its max_file_store, by default 75 % of the free disk under its
 * store_dir, is smaller than what the streams ask for. Says which stream, how much, and the two ways
 * out, instead of the server's bare words.
 */
export class StreamStorageError extends Error {
  override readonly name = 'StreamStorageError';
  constructor(
    readonly stream: string,
    readonly maxBytes: number,
    options: { cause: unknown },
  ) {
    const mib = (maxBytes / 1024 ** 2).toFixed(0);
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(
      `nats-server has no room for the JetStream stream ${stream} (max_bytes ${maxBytes} = ${mib} MiB; it said: ${why}): give nats-server more JetStream file storage (jetstream { max_file_store } in its config, or a larger disk under its store_dir)${stream === FLOW_STREAM ? ', or make the stream smaller with --stream-max-bytes (KAPPA_STREAM_MAX_BYTES)' : ''}`,
      options,
    );
  }
}

/** A stream this service needs does not exist, and its NATS identity may not create it. */
export class StreamSetupError extends Error {
  override readonly name = 'StreamSetupError';
  constructor(
    readonly stream: string,
    options: { cause: unknown },
  ) {
    super(
      `the JetStream stream ${stream} does not exist and this service's NATS identity may not create it: create the streams with the admin identity (\`kappa streams\`; npm run up and the Kustomize Job kappa-streams do it)`,
      options,
    );
  }
}
