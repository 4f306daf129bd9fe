// Errors of the exporter an operator can act on.

/** The IPFIX collector cannot be reached or refused our messages; the batch is redelivered. */
export class IpfixCollectorError extends Error {
  override readonly name = 'IpfixCollectorError';
  constructor(collector: string, what: string, options?: { cause: unknown }) {
    const why = options?.cause instanceof Error ? `: ${options.cause.message}` : '';
    super(`IPFIX collector ${collector}: ${what}${why} (check --ipfix and that the collector listens)`, options);
  }
}

/** The JSON Lines file cannot be written or rotated; the batch is redelivered. */
export class JsonlWriteError extends Error {
  override readonly name = 'JsonlWriteError';
  constructor(path: string, options: { cause: unknown }) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(`cannot write flows to ${path}: ${why} (check --jsonl, free space and permissions)`, options);
  }
}

/** The flow store cannot write a batch (a full disk, permissions); the batch is redelivered. */
export class StoreWriteError extends Error {
  override readonly name = 'StoreWriteError';
  constructor(dir: string, options: { cause: unknown }) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(`cannot write flows to the flow store in ${dir}: ${why} (check --store-dir, free space and permissions)`, options);
  }
}

/** One or more sinks did not take a batch; it is nak'ed and redelivered. */
export class SinkFailedError extends Error {
  override readonly name = 'SinkFailedError';
  constructor(
    readonly batchId: string,
    readonly failures: { sink: string; error: unknown }[],
  ) {
    super(
      `batch ${batchId} not taken by ${failures.map((f) => `${f.sink} (${f.error instanceof Error ? f.error.message : String(f.error)})`).join(', ')}`,
      { cause: failures[0]?.error },
    );
  }
}
