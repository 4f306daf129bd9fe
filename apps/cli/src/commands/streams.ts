// `kappa streams`: creates the JetStream streams kappa uses (KAPPA_FLOWS, KAPPA_DLQ and the
// k8s-tagger's KAPPA_TAGGER_STATE) or brings their limits up to date. Run it with the admin NATS identity: with per-identity permissions no
// service may create, change or delete a stream (npm run up and the Kustomize Job kappa-streams
// run it before the services start).
import { TAGGER_STATE_STORE, busOptionsFromConfig, connectBus, natsOptions } from '@kappa/bus';
import { loadConfigOrExit } from '@kappa/config';
import { createLogger, createRegistry } from '@kappa/observability';

export async function runStreams(argv: string[]): Promise<number> {
  const config = loadConfigOrExit({ command: 'kappa streams', summary: 'Create or update the JetStream streams (admin identity).', options: natsOptions }, argv);
  const logger = createLogger('kappa-cli', 'warn');
  try {
    const bus = await connectBus({ ...busOptionsFromConfig(config), name: 'kappa-streams', logger, registry: createRegistry('kappa-cli') });
    try {
      await bus.ensureStreams(undefined, { waitForAdmin: false });
      await bus.ensureStateStream(TAGGER_STATE_STORE);
    } finally {
      await bus.close();
    }
  } catch (error) {
    process.stderr.write(`kappa streams: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  const replicas = config.streamReplicas !== undefined ? ` with ${config.streamReplicas} replicas each` : '';
  process.stdout.write(`kappa streams: KAPPA_FLOWS, KAPPA_DLQ and ${TAGGER_STATE_STORE.stream} are in place${replicas}\n`);
  return 0;
}
