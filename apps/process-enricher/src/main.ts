// kappa-process-enricher: consumes kappa.flow.captured.<node>, fills the local end's process
// (name, command line, exe, container), publishes kappa.flow.enriched.p<k>.<node>. Wiring only.
import { runStage } from '@kappa/bus';
import { loadConfigOrExit } from '@kappa/config';
import { createLogger, createRegistry } from '@kappa/observability';
import { enricherOptions } from './config.js';
import { STAGE } from './enricher.js';
import { enricherStage } from './service.js';

const config = loadConfigOrExit({
  command: 'kappa-process-enricher',
  summary: 'Fills process name, command line (secrets redacted), exe and container of each captured flow record of this node.',
  options: enricherOptions,
});
const logger = createLogger(STAGE, config.logLevel);
await runStage(enricherStage(config, logger, createRegistry(STAGE)));
