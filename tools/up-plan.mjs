// What `npm run up` runs and with which settings — NATS, Redis, the services' environment and the
// CLI's .kappa/up.json — decided apart from starting anything, so tests can read the plan.
// Every link is mutual TLS with a login unless the user opts out (--plaintext / KAPPA_PLAINTEXT=1).
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createUser, fromSeed } from '@nats-io/nkeys';
import { identities, natsAuthorization } from '../infra/nats/permissions.mjs';

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
  if (!Object.values(paths).every((p) => existsSync(p)) || !serverCertIsAlsoClient(paths.serverCert)) {
    execFileSync('bash', [resolve(root, 'tools/make-ca.sh'), dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return paths;
}

/**
 * Whether the server certificate may also act as a client (NATS routes, the Redis Cluster bus and
 * replication present it to each other): made so by tools/make-ca.sh since clusters; an older one
 * is remade (same CA, so clients keep trusting it).
 */
function serverCertIsAlsoClient(file) {
  try {
    return execFileSync('openssl', ['x509', '-in', file, '-noout', '-ext', 'extendedKeyUsage'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).includes('Client Authentication');
  } catch {
    return false;
  }
}

/** Redis password and the gRPC bearer token: made once, kept in state (owner-only). */
export function ensureCredentials(state) {
  const file = resolve(state, 'credentials.json');
  let credentials;
  try {
    credentials = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    credentials = {};
  }
  const secret = () => randomBytes(24).toString('hex');
  if (!credentials.redisPassword || !credentials.grpcToken) {
    credentials = { redisUser: 'kappa', redisPassword: secret(), grpcToken: secret() };
  }
  // The Redis Cluster's own user (replication, creating the cluster): added to an older file.
  if (!credentials.redisAdminPassword) {
    credentials.redisAdminPassword = secret();
    writeFileSync(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
  }
  const tokenFile = resolve(state, 'grpc-token');
  writeFileSync(tokenFile, credentials.grpcToken, { mode: 0o600 });
  return { redisUser: credentials.redisUser, redisPassword: credentials.redisPassword, redisAdminPassword: credentials.redisAdminPassword, grpcToken: credentials.grpcToken, tokenFile };
}

/**
 * One NATS nkey per identity of this host (infra/nats/permissions.mjs): the seed in
 * state/nats-keys/<identity>.nk (owner-only), made once; the server gets only the public keys.
 * Rotating one: delete its file and run `npm run up` again (nats-server reloads its users).
 * @returns {Record<string, { seedFile: string, publicKey: string }>}
 */
export function ensureNatsKeys(state, ids) {
  const dir = resolve(state, 'nats-keys');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keys = {};
  for (const id of ids) {
    const seedFile = resolve(dir, `${id.name}.nk`);
    let seed;
    try {
      seed = readFileSync(seedFile, 'utf8').trim();
    } catch {
      seed = new TextDecoder().decode(createUser().getSeed());
      writeFileSync(seedFile, `${seed}\n`, { mode: 0o600 });
    }
    keys[id.name] = { seedFile, publicKey: fromSeed(new TextEncoder().encode(seed)).getPublicKey() };
  }
  return keys;
}

/** The NATS identity each service of `npm run up` connects as, on this host's node. */
export function serviceIdentity(service, node) {
  const nodeScoped = service === 'capture' || service === 'process-enricher';
  return nodeScoped ? identities({ nodes: [node] }).find((id) => id.role === service && id.node === node).name : service;
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

/** true for `npm run up -- --cluster` or a true KAPPA_UP_CLUSTER: clusters of NATS and Redis, replicas of the cluster stages. */
export function wantsCluster(argv, env) {
  const variable = env.KAPPA_UP_CLUSTER !== undefined && !['', '0', 'false', 'no'].includes(env.KAPPA_UP_CLUSTER.toLowerCase());
  return argv.includes('--cluster') || variable;
}

/** `--cluster`: replicas of each cluster stage (the node agents run once per node). */
export const clusterReplicas = { 'k8s-tagger': 2, joiner: 2, exporter: 2 };
/** `--cluster`: servers of NATS (R3 streams) and nodes of Redis Cluster (3 primaries, a replica each). */
export const clusterSizes = { nats: 3, redis: 6 };

/**
 * The ports `npm run up` listens on (all on loopback): the defaults, each overridden by its
 * variable, so two kappas (or a test beside a running one) can share a machine.
 *   KAPPA_UP_NATS_PORT (14222), KAPPA_UP_REDIS_PORT (16379), KAPPA_UP_TAGGER_PORT (KubeTags gRPC,
 *   9480), KAPPA_UP_OBSERVER_PORT (Observer gRPC, 9481), KAPPA_UP_METRICS_PORT (the first of the
 *   five services' /metrics ports: capture, process-enricher, k8s-tagger, joiner, exporter; 9401;
 *   0 lets each service take any free port), KAPPA_UP_CONSOLE_PORT (the web console, 9490),
 *   KAPPA_UP_NATS_CLUSTER_PORT (--cluster: the first NATS route port, 16222).
 *   With --cluster the second replica of k8s-tagger and exporter serves KubeTags and the Observer
 *   100 ports above the first, and the extra replicas' /metrics follow the five services'.
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
    // --cluster: NATS servers on nats, nats+1, nats+2 with routes on natsCluster..+2; Redis nodes
    // on redis..redis+5 (their cluster bus on each port + 10000).
    natsCluster: port('KAPPA_UP_NATS_CLUSTER_PORT', 16222),
  };
}

/** The services in start order; each one's /metrics port is the metrics base plus its index. */
export const upServices = ['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'];

/**
 * @param {{ root: string, state: string, natsPort: number, redisPort: number, plaintext: boolean,
 *   credentials: ReturnType<typeof ensureCredentials>, natsKeys: ReturnType<typeof ensureNatsKeys>,
 *   tls?: ReturnType<typeof ensureTlsMaterial>, jsonl: string, node: string, partitions: number,
 *   listenHost?: string, taggerPort?: number, observerPort?: number, metricsPort?: number,
 *   consolePort?: number }} options
 */
export function upPlan({ root, state, natsPort, redisPort, plaintext, credentials, natsKeys, tls, jsonl, node, partitions, listenHost = '127.0.0.1', taggerPort = 9480, observerPort = 9481, metricsPort = 9401, consolePort = 9490, cluster = false, natsClusterPort = 16222 }) {
  const secure = !plaintext;
  if (secure && !tls) throw new Error('upPlan: TLS material is needed unless plaintext');
  const quote = (s) => JSON.stringify(s);
  const ids = identities({ nodes: [node] });
  const publicKeys = Object.fromEntries(ids.map((id) => [id.name, natsKeys[id.name]?.publicKey]));

  // A config file, not flags. Users are nkeys, each with only the subjects its work needs
  // (infra/nats/permissions.mjs); the server holds public keys, no secret.
  const natsConfig = [
    `listen: "127.0.0.1:${natsPort}"`,
    `jetstream { store_dir: ${quote(resolve(state, 'nats'))} }`,
    natsAuthorization(ids, publicKeys, { partitions }),
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

  const natsUrl = cluster ? Array.from({ length: clusterSizes.nats }, (_, i) => `nats://127.0.0.1:${natsPort + i}`).join(',') : `nats://127.0.0.1:${natsPort}`;
  const natsLogin = (identity) => ({ KAPPA_NATS_NKEY_SEED: natsKeys[identity].seedFile });
  // What every service gets; a service reads only the variables of the options it has.
  const env = {
    KAPPA_NATS_URL: natsUrl,
    KAPPA_REDIS_URL: `${secure ? 'rediss' : 'redis'}://127.0.0.1:${redisPort}`,
    KAPPA_REDIS_USER: credentials.redisUser,
    KAPPA_REDIS_PASSWORD: credentials.redisPassword,
    KAPPA_GRPC_TOKEN_FILE: credentials.tokenFile,
    KAPPA_OBSERVER_TOKEN_FILE: credentials.tokenFile,
    // Loopback unless the user asks otherwise (KAPPA_UP_LISTEN): the servers of a laptop's kappa
    // are not the network's business.
    KAPPA_GRPC_HOST: listenHost,
    KAPPA_OBSERVER_HOST: listenHost,
    KAPPA_METRICS_HOST: listenHost,
    KAPPA_PARTITIONS: String(partitions),
    KAPPA_JSONL: jsonl,
    KAPPA_NODE: node,
    KAPPA_GRPC_PORT: String(taggerPort),
    KAPPA_OBSERVER_PORT: String(observerPort),
    // --cluster: every stream on all three NATS servers, the joiner on Redis Cluster.
    ...(cluster ? { KAPPA_STREAM_REPLICAS: String(clusterSizes.nats), KAPPA_REDIS_CLUSTER: 'true' } : {}),
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
  // Each service logs in as its own identity, and no other, and has its own /metrics port (one
  // KAPPA_METRICS_PORT for all would collide).
  const serviceEnv = Object.fromEntries(
    upServices.map((service, i) => [
      service,
      { ...env, ...natsLogin(serviceIdentity(service, node)), KAPPA_METRICS_PORT: String(metricsPort === 0 ? 0 : metricsPort + i) },
    ]),
  );
  // The one-off `kappa streams` that creates the streams: the only identity that may.
  const adminEnv = { ...env, ...natsLogin('admin') };

  // Every process of a kappa service, in pipeline order: one per service, and with --cluster
  // clusterReplicas of the cluster stages, each with its own instance name, /metrics port and
  // (tagger, exporter) gRPC port; an exporter replica writes its JSON Lines and store in a folder
  // of its own.
  const processes = upServices.map((service) => ({ name: service, service, env: serviceEnv[service] }));
  if (cluster) {
    let extra = 0;
    const shifted = (port) => (port === 0 ? 0 : port + 100);
    // The exporter replicas find each other's Observers (the relay) at the address they listen
    // on; listening on every address (KAPPA_UP_LISTEN=0.0.0.0), they advertise loopback instead.
    const wildcard = ['0.0.0.0', '::', '[::]'].includes(listenHost);
    const advertise = (port) => (wildcard && port !== 0 ? { KAPPA_OBSERVER_ADVERTISE: `127.0.0.1:${port}` } : {});
    for (const [service, count] of Object.entries(clusterReplicas)) {
      const first = processes.findIndex((p) => p.service === service);
      processes[first] = { name: `${service}-0`, service, env: { ...serviceEnv[service], KAPPA_INSTANCE: `${node}-0`, ...(service === 'exporter' ? advertise(observerPort) : {}) } };
      for (let i = 1; i < count; i++) {
        const folder = resolve(state, `${service}-${i}`);
        const own = {
          KAPPA_INSTANCE: `${node}-${i}`,
          KAPPA_METRICS_PORT: String(metricsPort === 0 ? 0 : metricsPort + upServices.length + extra++),
          ...(service === 'k8s-tagger' ? { KAPPA_GRPC_PORT: String(shifted(taggerPort)) } : {}),
          // Its own IPFIX observation domains: both exporters reach a collector from one address.
          ...(service === 'exporter'
            ? { KAPPA_OBSERVER_PORT: String(shifted(observerPort)), KAPPA_JSONL: resolve(folder, 'flows.jsonl'), KAPPA_IPFIX_DOMAIN_OFFSET: String(i), ...advertise(shifted(observerPort)) }
            : {}),
        };
        processes.splice(first + i, 0, { name: `${service}-${i}`, service, env: { ...serviceEnv[service], ...own }, ...(service === 'exporter' ? { folder } : {}) });
      }
    }
  }

  // --cluster: the NATS servers (routes between them over mutual TLS) and the Redis Cluster nodes
  // (TLS on clients, the cluster bus and replication; replicas log in to their primary as
  // kappa-admin, from a file: no password on a command line).
  const natsServers = cluster
    ? Array.from({ length: clusterSizes.nats }, (_, i) => {
        const routes = Array.from({ length: clusterSizes.nats }, (_, j) => `nats-route://127.0.0.1:${natsClusterPort + j}`);
        const config = [
          `server_name: up-nats-${i}`,
          `listen: "127.0.0.1:${natsPort + i}"`,
          `jetstream { store_dir: ${quote(resolve(state, `nats-${i}`))} }`,
          `cluster {\n  name: kappa-up\n  listen: "127.0.0.1:${natsClusterPort + i}"\n  routes: [${routes.map(quote).join(', ')}]${
            secure ? `\n  tls { cert_file: ${quote(tls.serverCert)}, key_file: ${quote(tls.serverKey)}, ca_file: ${quote(tls.ca)}, timeout: 10 }` : ''
          }\n}`,
          natsAuthorization(ids, publicKeys, { partitions }),
          ...(secure ? [`tls { cert_file: ${quote(tls.serverCert)}, key_file: ${quote(tls.serverKey)}, ca_file: ${quote(tls.ca)}, verify: true, timeout: 10 }`] : []),
          '',
        ].join('\n');
        return { name: `up-nats-${i}`, port: natsPort + i, config, configFile: resolve(state, `nats-${i}.conf`) };
      })
    : [];
  const adminHash = createHash('sha256').update(credentials.redisAdminPassword ?? '').digest('hex');
  const redisClusterFiles = {
    acl: `${redisAcl}user kappa-admin on #${adminHash} ~* &* +@all\n`,
    replication: `masteruser kappa-admin\nmasterauth ${credentials.redisAdminPassword ?? ''}\n`,
  };
  const redisTlsArgs = secure ? ['--tls', '--cacert', tls.ca, '--cert', tls.clientCert, '--key', tls.clientKey] : [];
  const redisNodes = cluster
    ? Array.from({ length: clusterSizes.redis }, (_, i) => {
        const port = redisPort + i;
        const dir = resolve(state, `redis-${i}`);
        return {
          name: `up-redis-${i}`,
          port,
          dir,
          args: [
            resolve(state, 'redis-cluster/replication.conf'),
            ...(secure
              ? ['--port', '0', '--tls-port', String(port), '--tls-auth-clients', 'yes', '--tls-cluster', 'yes', '--tls-replication', 'yes', '--tls-cert-file', tls.serverCert, '--tls-key-file', tls.serverKey, '--tls-ca-cert-file', tls.ca]
              : ['--port', String(port)]),
            '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no',
            '--aclfile', resolve(state, 'redis-cluster/users.acl'),
            '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000',
          ],
          // redis-cli as kappa-admin (REDISCLI_AUTH in redisCli.env) against this node.
          cli: [...redisTlsArgs, '--user', 'kappa-admin', '-h', '127.0.0.1', '-p', String(port)],
        };
      })
    : [];
  const redisCli = { env: { REDISCLI_AUTH: credentials.redisAdminPassword ?? '' }, create: [...redisTlsArgs, '--user', 'kappa-admin', '--cluster', 'create', ...redisNodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'] };

  // The CLI's config while up runs (.kappa/up.json): NATS for `kappa status` as the cli identity
  // (heartbeats and DLQ counts, nothing else), the gRPC servers for `kappa observe`, with the
  // client certificate and the token. Owner-only.
  const upJson = {
    natsUrl,
    natsNkeySeed: natsKeys.cli.seedFile,
    server: `${listenHost === '0.0.0.0' ? '127.0.0.1' : listenHost}:${observerPort}`,
    tagger: `${listenHost === '0.0.0.0' ? '127.0.0.1' : listenHost}:${taggerPort}`,
    tokenFile: credentials.tokenFile,
    ...(secure
      ? { natsTlsCa: tls.ca, natsTlsCert: tls.clientCert, natsTlsKey: tls.clientKey, tlsCa: tls.ca, tlsCert: tls.clientCert, tlsKey: tls.clientKey }
      : {}),
  };
  // The web console: HTTPS with the server certificate, the Observer reached like `kappa observe`,
  // and the Observer's token required from every browser. Flags, not variables: no secret on them.
  const consoleArgs = [
    `--host=${listenHost}`,
    `--port=${consolePort}`,
    `--server=127.0.0.1:${observerPort}`,
    `--token-file=${credentials.tokenFile}`,
    ...(secure
      ? [`--https-cert=${tls.serverCert}`, `--https-key=${tls.serverKey}`, `--tls-ca=${tls.ca}`, `--tls-cert=${tls.clientCert}`, `--tls-key=${tls.clientKey}`]
      : []),
  ];
  const consoleUrl = `${secure ? 'https' : 'http'}://127.0.0.1:${consolePort}/`;
  return { natsConfig, redisAcl, redisArgs, env, serviceEnv, adminEnv, processes, natsServers, redisNodes, redisClusterFiles, redisCli, upJson, consoleArgs, consoleUrl, warnings: secure ? [] : [plaintextWarning] };
}

/** Writes the files the plan names (NATS config, Redis ACL): owner-only, they hold secrets. */
export function writePlanFiles(state, plan) {
  mkdirSync(resolve(state, 'redis'), { recursive: true });
  writeFileSync(resolve(state, 'nats.conf'), plan.natsConfig, { mode: 0o600 });
  writeFileSync(resolve(state, 'redis/users.acl'), plan.redisAcl, { mode: 0o600 });
  for (const server of plan.natsServers) {
    mkdirSync(resolve(state, server.name.replace('up-', '')), { recursive: true });
    writeFileSync(server.configFile, server.config, { mode: 0o600 });
  }
  if (plan.redisNodes.length > 0) {
    mkdirSync(resolve(state, 'redis-cluster'), { recursive: true, mode: 0o700 });
    writeFileSync(resolve(state, 'redis-cluster/users.acl'), plan.redisClusterFiles.acl, { mode: 0o600 });
    writeFileSync(resolve(state, 'redis-cluster/replication.conf'), plan.redisClusterFiles.replication, { mode: 0o600 });
    for (const node of plan.redisNodes) mkdirSync(node.dir, { recursive: true });
  }
  for (const p of plan.processes) if (p.folder) mkdirSync(p.folder, { recursive: true });
  return { natsConfigFile: resolve(state, 'nats.conf') };
}
