// What `npm run up` runs and with which settings — NATS, Redis, the services' environment and the
// CLI's .kappa/up.json — decided apart from starting anything, so tests can read the plan.
// Every link is mutual TLS with a login unless the user opts out (--plaintext / KAPPA_PLAINTEXT=1).
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

export const plaintextWarning =
  'WARNING: --plaintext: NATS, Redis and the gRPC servers run WITHOUT TLS; passwords, the gRPC token and every flow cross loopback readable by any local user. Drop --plaintext (and KAPPA_PLAINTEXT) to have TLS again.';

/** true when the user asked for plaintext links: `npm run up -- --plaintext` or KAPPA_PLAINTEXT=1. */
export function wantsPlaintext(argv, env) {
  const flag = argv.includes('--plaintext');
  const variable = env.KAPPA_PLAINTEXT !== undefined && !['', '0', 'false', 'no'].includes(env.KAPPA_PLAINTEXT.toLowerCase());
  return flag || variable;
}

/**
 * The local CA and certificates in state/tls, made by tools/make-ca.sh on the first run and
 * reused afterwards (a CLI or client holding ca.pem keeps trusting this kappa).
 */
export function ensureTlsMaterial(root, state) {
  const dir = resolve(state, 'tls');
  const files = { ca: 'ca.pem', serverCert: 'server.pem', serverKey: 'server.key', clientCert: 'client.pem', clientKey: 'client.key' };
  const paths = Object.fromEntries(Object.entries(files).map(([name, file]) => [name, resolve(dir, file)]));
  if (!Object.values(paths).every((p) => existsSync(p))) {
    execFileSync('bash', [resolve(root, 'tools/make-ca.sh'), dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return paths;
}

/** NATS and Redis passwords and the gRPC bearer token: made once, kept in state (owner-only). */
export function ensureCredentials(state) {
  const file = resolve(state, 'credentials.json');
  let credentials;
  try {
    credentials = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    const secret = () => randomBytes(24).toString('hex');
    credentials = { natsUser: 'kappa', natsPassword: secret(), redisUser: 'kappa', redisPassword: secret(), grpcToken: secret() };
    writeFileSync(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
  }
  const tokenFile = resolve(state, 'grpc-token');
  writeFileSync(tokenFile, credentials.grpcToken, { mode: 0o600 });
  return { ...credentials, tokenFile };
}

/** infra/redis/kappa.acl rendered as its `render:` line says: user lines, kappa's password as SHA-256. */
export function renderRedisAcl(template, password) {
  const hash = createHash('sha256').update(password).digest('hex');
  return `${template
    .split('\n')
    .filter((line) => line.startsWith('user '))
    .map((line) => line.replace(/^user kappa on /, `user kappa on #${hash} `))
    .join('\n')}\n`;
}

/**
 * The ports `npm run up` listens on (all on loopback): the defaults, each overridden by its
 * variable, so two kappas (or a test beside a running one) can share a machine.
 *   KAPPA_UP_NATS_PORT (14222), KAPPA_UP_REDIS_PORT (16379), KAPPA_UP_TAGGER_PORT (KubeTags gRPC,
 *   9480), KAPPA_UP_OBSERVER_PORT (Observer gRPC, 9481), KAPPA_UP_METRICS_PORT (the first of the
 *   five services' /metrics ports: capture, process-enricher, k8s-tagger, joiner, exporter; 9401;
 *   0 lets each service take any free port), KAPPA_UP_CONSOLE_PORT (the web console, 9490).
 */
export function upPorts(env) {
  const port = (name, fallback) => {
    const text = env[name];
    if (text === undefined || text === '') return fallback;
    const value = Number(text);
    if (!Number.isInteger(value) || value < 0 || value > 65535) throw new Error(`${name}=${text}: not a port (0-65535)`);
    return value;
  };
  return {
    nats: port('KAPPA_UP_NATS_PORT', 14222),
    redis: port('KAPPA_UP_REDIS_PORT', 16379),
    tagger: port('KAPPA_UP_TAGGER_PORT', 9480),
    observer: port('KAPPA_UP_OBSERVER_PORT', 9481),
    metrics: port('KAPPA_UP_METRICS_PORT', 9401),
    console: port('KAPPA_UP_CONSOLE_PORT', 9490),
  };
}

/** The services in start order; each one's /metrics port is the metrics base plus its index. */
export const upServices = ['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'];

/**
 * @param {{ root: string, state: string, natsPort: number, redisPort: number, plaintext: boolean,
 *   credentials: ReturnType<typeof ensureCredentials>, tls?: ReturnType<typeof ensureTlsMaterial>,
 *   jsonl: string, node: string, taggerPort?: number, observerPort?: number, metricsPort?: number,
 *   consolePort?: number }} options
 */
export function upPlan({ root, state, natsPort, redisPort, plaintext, credentials, tls, jsonl, node, taggerPort = 9480, observerPort = 9481, metricsPort = 9401, consolePort = 9490 }) {
  const secure = !plaintext;
  if (secure && !tls) throw new Error('upPlan: TLS material is needed unless plaintext');
  const quote = (s) => JSON.stringify(s);

  // A config file, not flags, so the password is not on nats-server's command line.
  const natsConfig = [
    `listen: "127.0.0.1:${natsPort}"`,
    `jetstream { store_dir: ${quote(resolve(state, 'nats'))} }`,
    `authorization { user: ${quote(credentials.natsUser)}, password: ${quote(credentials.natsPassword)} }`,
    // timeout: the TLS handshake may take longer than nats-server's 2 s default on a busy machine.
    ...(secure ? [`tls { cert_file: ${quote(tls.serverCert)}, key_file: ${quote(tls.serverKey)}, ca_file: ${quote(tls.ca)}, verify: true, timeout: 10 }`] : []),
    '',
  ].join('\n');

  const redisAcl = renderRedisAcl(readFileSync(resolve(root, 'infra/redis/kappa.acl'), 'utf8'), credentials.redisPassword);
  const redisArgs = [
    ...(secure
      ? ['--port', '0', '--tls-port', String(redisPort), '--tls-auth-clients', 'yes', '--tls-cert-file', tls.serverCert, '--tls-key-file', tls.serverKey, '--tls-ca-cert-file', tls.ca]
      : ['--port', String(redisPort)]),
    '--bind', '127.0.0.1', '--dir', resolve(state, 'redis'), '--save', '60 1', '--protected-mode', 'no',
    '--aclfile', resolve(state, 'redis/users.acl'),
  ];

  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  // Every service gets every variable; a service reads only those of the options it has.
  const env = {
    KAPPA_NATS_URL: natsUrl,
    KAPPA_NATS_USER: credentials.natsUser,
    KAPPA_NATS_PASSWORD: credentials.natsPassword,
    KAPPA_REDIS_URL: `${secure ? 'rediss' : 'redis'}://127.0.0.1:${redisPort}`,
    KAPPA_REDIS_USER: credentials.redisUser,
    KAPPA_REDIS_PASSWORD: credentials.redisPassword,
    KAPPA_GRPC_TOKEN_FILE: credentials.tokenFile,
    KAPPA_OBSERVER_TOKEN_FILE: credentials.tokenFile,
    KAPPA_JSONL: jsonl,
    KAPPA_NODE: node,
    // The gRPC servers on loopback, like NATS and Redis: `npm run up` is one host's kappa.
    KAPPA_GRPC_PORT: String(taggerPort),
    KAPPA_GRPC_HOST: '127.0.0.1',
    KAPPA_OBSERVER_PORT: String(observerPort),
    KAPPA_OBSERVER_HOST: '127.0.0.1',
    ...(secure
      ? {
          KAPPA_NATS_TLS_CA: tls.ca,
          KAPPA_NATS_TLS_CERT: tls.clientCert,
          KAPPA_NATS_TLS_KEY: tls.clientKey,
          KAPPA_REDIS_TLS_CA: tls.ca,
          KAPPA_REDIS_TLS_CERT: tls.clientCert,
          KAPPA_REDIS_TLS_KEY: tls.clientKey,
          KAPPA_GRPC_TLS_CERT: tls.serverCert,
          KAPPA_GRPC_TLS_KEY: tls.serverKey,
          KAPPA_GRPC_TLS_CLIENT_CA: tls.ca,
          KAPPA_OBSERVER_TLS_CERT: tls.serverCert,
          KAPPA_OBSERVER_TLS_KEY: tls.serverKey,
          KAPPA_OBSERVER_TLS_CLIENT_CA: tls.ca,
        }
      : {}),
  };

  // The CLI's config while up runs (.kappa/up.json): NATS for `kappa status`, the gRPC servers
  // for `kappa observe`, with the client certificate and the token. Owner-only: it holds a password.
  const upJson = {
    natsUrl,
    natsUser: credentials.natsUser,
    natsPassword: credentials.natsPassword,
    server: `127.0.0.1:${observerPort}`,
    tagger: `127.0.0.1:${taggerPort}`,
    tokenFile: credentials.tokenFile,
    ...(secure
      ? { natsTlsCa: tls.ca, natsTlsCert: tls.clientCert, natsTlsKey: tls.clientKey, tlsCa: tls.ca, tlsCert: tls.clientCert, tlsKey: tls.clientKey }
      : {}),
  };
  // Each service its own /metrics port (one KAPPA_METRICS_PORT for all would collide).
  const serviceEnv = Object.fromEntries(upServices.map((service, i) => [service, { KAPPA_METRICS_PORT: String(metricsPort === 0 ? 0 : metricsPort + i) }]));
  // The web console: HTTPS with the server certificate, the Observer reached like `kappa observe`,
  // and the Observer's token required from every browser. Flags, not variables: no secret on them.
  const consoleArgs = [
    '--host=127.0.0.1',
    `--port=${consolePort}`,
    `--server=127.0.0.1:${observerPort}`,
    `--token-file=${credentials.tokenFile}`,
    ...(secure
      ? [`--https-cert=${tls.serverCert}`, `--https-key=${tls.serverKey}`, `--tls-ca=${tls.ca}`, `--tls-cert=${tls.clientCert}`, `--tls-key=${tls.clientKey}`]
      : []),
  ];
  const consoleUrl = `${secure ? 'https' : 'http'}://127.0.0.1:${consolePort}/`;
  return { natsConfig, redisAcl, redisArgs, env, serviceEnv, upJson, consoleArgs, consoleUrl, warnings: secure ? [] : [plaintextWarning] };
}

/** Writes the files the plan names (NATS config, Redis ACL): owner-only, they hold secrets. */
export function writePlanFiles(state, plan) {
  mkdirSync(resolve(state, 'redis'), { recursive: true });
  writeFileSync(resolve(state, 'nats.conf'), plan.natsConfig, { mode: 0o600 });
  writeFileSync(resolve(state, 'redis/users.acl'), plan.redisAcl, { mode: 0o600 });
  return { natsConfigFile: resolve(state, 'nats.conf') };
}
