// kappa-console: the web console (service map, top talkers, flow table with live tail, health),
// served over HTTPS with the Observer's token, reading everything from the exporter's Observer.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { boolean, integer, loadConfigOrExit, oneOf, string } from '@kappa/config';
import { GrpcSecurityError, bearerTokenCheck } from '@kappa/contracts';
import { createLogger, logLevels, onShutdown } from '@kappa/observability';
import { ConsoleServer } from './server/http.js';
import { ObserverClient } from '@kappa/contracts';

const options = {
  host: string({ description: 'address the console listens on', default: '127.0.0.1' }),
  port: integer({ description: 'console port (0 = any free port)', default: 9490, min: 0, max: 65535 }),
  httpsCert: string({ description: 'server certificate file: the console speaks HTTPS (with --https-key)' }),
  httpsKey: string({ description: 'server key file for --https-cert' }),
  server: string({ description: 'the exporter\'s Observer, host:port', default: '127.0.0.1:9481' }),
  tlsCa: string({ description: 'CA file that signed the Observer\'s certificate: speak TLS to it' }),
  tlsCert: string({ description: 'client certificate file, for an Observer that requires mutual TLS (with --tls-key)' }),
  tlsKey: string({ description: 'client key file for --tls-cert' }),
  tokenFile: string({ description: 'the Observer\'s bearer token file: sent to the Observer, and every browser must present the same token' }),
  insecureNoToken: boolean({ description: 'serve the API without a token (tests, a console only on loopback): a warning at start' }),
  logLevel: oneOf(logLevels, { description: 'log level', default: 'info' }),
};

const config = loadConfigOrExit({ command: 'kappa-console', summary: 'The kappa web console: service map, top talkers, flows, health.', options });
const logger = createLogger('console', config.logLevel);

function fail(what: string, error: unknown): never {
  logger.fatal({ err: error }, `${what}: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}

if (!config.tokenFile && !config.insecureNoToken) fail('no token', new Error('set --token-file (the Observer\'s token), or --insecure-no-token for an open console'));
if ((config.httpsCert === undefined) !== (config.httpsKey === undefined)) fail('bad TLS settings', new Error('--https-cert and --https-key go together'));

let observer: ObserverClient;
let authorize: ((header: string | undefined) => boolean) | undefined;
try {
  observer = new ObserverClient(config.server, { caFile: config.tlsCa, certFile: config.tlsCert, keyFile: config.tlsKey, tokenFile: config.tokenFile });
  authorize = config.tokenFile ? bearerTokenCheck(config.tokenFile, '--token-file') : undefined;
} catch (error) {
  if (error instanceof GrpcSecurityError) fail('bad TLS or token settings', error);
  throw error;
}
if (!authorize) logger.warn('the console API is open to anyone who reaches its port (--insecure-no-token)');
if (!config.httpsCert) logger.warn('the console speaks plain HTTP: the token and every flow cross the network readable (set --https-cert and --https-key)');

const webRoot = join(dirname(fileURLToPath(import.meta.url)), 'web');
const server = new ConsoleServer({ observer, webRoot, host: config.host, port: config.port, certFile: config.httpsCert, keyFile: config.httpsKey, authorize, logger });
await server.start().catch((error: unknown) => fail(`cannot listen on ${config.host}:${config.port}`, error));
logger.info({ url: server.url, observer: config.server }, 'console started');

onShutdown(logger, async () => {
  await server.close();
  observer.close();
});
