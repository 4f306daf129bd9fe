// Graceful stop on SIGTERM / SIGINT: run the service's shutdown once (finish in-flight work,
// drain, detach), then exit 0; a second signal, or a shutdown that hangs, exits at once.
import type { Logger } from './logger.js';

export function onShutdown(logger: Logger, shutdown: () => Promise<void>, options: { timeoutMs?: number } = {}): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    const timer = setTimeout(() => {
      logger.error('shutdown did not finish in time; exiting');
      process.exit(1);
    }, options.timeoutMs ?? 30_000);
    timer.unref();
    shutdown().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
