// Errors of the bus an operator can act on.
import { redactSecrets } from '@kappa/config';

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
export type PublishFailureReason = 'stream_full' | 'too_large' | 'no_stream' | 'timeout' | 'other';

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
      too_large: 'a single record is larger than the server max_payload',
      no_stream: 'the KAPPA_FLOWS stream does not exist; a stage creates it at start',
      timeout: 'JetStream did not answer in time',
      other: 'see the cause',
    };
    super(`cannot publish to ${subject}: ${why} (${hint[reason]})`, options);
  }
}

export function classifyPublishError(error: unknown): PublishFailureReason {
  const text = error instanceof Error ? `${error.message} ${String((error as { code?: unknown }).code ?? '')}` : String(error);
  if (/maximum (bytes|messages)|resource limits exceeded|insufficient resources|10047|10077|10028/i.test(text)) return 'stream_full';
  if (/max.?payload/i.test(text)) return 'too_large';
  if (/no responders|503|stream not found/i.test(text)) return 'no_stream';
  if (/timeout/i.test(text)) return 'timeout';
  return 'other';
}

/** The server refused this identity the subject (per-identity permissions). */
export function isPermissionError(error: unknown): boolean {
  const e = error as { name?: unknown; message?: unknown; cause?: unknown } | undefined;
  if (e?.name === 'PermissionViolationError') return true;
  if (e?.cause !== undefined && e.cause !== error && isPermissionError(e.cause)) return true;
  return /permissions violation/i.test(String(e?.message ?? error));
}

/** A stream this service needs does not exist, and its NATS identity may not create it. */
export class StreamSetupError extends Error {
  override readonly name = 'StreamSetupError';
  constructor(readonly stream: string, options: { cause: unknown }) {
    super(
      `the JetStream stream ${stream} does not exist and this service's NATS identity may not create it: create the streams with the admin identity (\`kappa streams\`; npm run up and the Kustomize Job kappa-streams do it)`,
      options,
    );
  }
}
