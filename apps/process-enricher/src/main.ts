// kappa-process-enricher: consumes kappa.flow.captured.<node>, fills the local end's process
// (name, command line, exe, container), publishes kappa.flow.enriched.<node>. Wiring only.
import { loadConfigOrExit } from '@kappa/config';
import { createLogger, createRegistry, onShutdown } from '@kappa/observability';
import { enricherOptions } from './config.js';
import { STAGE } from './enricher.js';
import { runEnricher } from './service.js';

const config = loadConfigOrExit({
  command: 'kappa-process-enricher',
  summary: 'Fills process name, command line (secrets redacted), exe and container of each captured flow record of this node.',
  options: enricherOptions,
});
const logger = createLogger(STAGE, config.logLevel);
const registry = createRegistry(STAGE);

try {
  const running = await runEnricher(config, logger, registry);
  onShutdown(logger, () => running.stop());
} catch (error) {
  logger.fatal({ err: error }, 'cannot start');
  process.exit(1);
}
