// What `npm run up` decides before starting anything (tools/up-plan.mjs): TLS and logins on every
// link by default, from a local CA made once and reused; plaintext only when asked, with a warning.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { workspaceRoot } from '../src/services.js';

interface Plan {
  natsConfig: string;
  redisAcl: string;
  redisArgs: string[];
  env: Record<string, string>;
  serviceEnv: Record<string, Record<string, string>>;
  adminEnv: Record<string, string>;
  consoleArgs: string[];
  upJson: Record<string, string>;
  warnings: string[];
  processes: { name: string; service: string; env: Record<string, string> }[];
}
// A plain .mjs script of tools/ (no types, not a workspace package): loaded by its path.
const upPlanModule: unknown = await import(pathToFileURL(join(workspaceRoot, 'tools/up-plan.mjs')).href);
const { ensureCredentials, ensureNatsKeys, ensureTlsMaterial, renderRedisAcl, upPlan, upPorts, wantsPlaintext } = upPlanModule as {
  ensureCredentials(state: string): Record<string, string>;
  ensureNatsKeys(state: string, ids: { name: string }[]): Record<string, { seedFile: string; publicKey: string }>;
  ensureTlsMaterial(root: string, state: string): Record<string, string>;
  renderRedisAcl(template: string, password: string): string;
  upPlan(options: Record<string, unknown>): Plan;
  upPorts(env: Record<string, string | undefined>): Record<string, number>;
  wantsPlaintext(argv: string[], env: Record<string, string | undefined>): boolean;
};

const state = mkdtempSync(join(tmpdir(), 'ksd-up-plan-'));
afterAll(() => rmSync(state, { recursive: true, force: true }));

const permissionsModule: unknown = await import(pathToFileURL(join(workspaceRoot, 'infra/nats/permissions.mjs')).href);
const { identities } = permissionsModule as { identities(layout: { nodes: string[] }): { name: string; role: string; node?: string }[] };
const natsKeys = () => ensureNatsKeys(state, identities({ nodes: ['ksd-node'] }));

const plan = (plaintext: boolean): Plan =>
  upPlan({
    root: workspaceRoot,
    state,
    natsPort: 14222,
    redisPort: 16379,
    plaintext,
    credentials: ensureCredentials(state),
    natsKeys: natsKeys(),
    partitions: 4,
    tls: plaintext ? undefined : ensureTlsMaterial(workspaceRoot, state),
    jsonl: join(state, 'flows.jsonl'),
    node: 'ksd-node',
  });

describe('npm run up plans', () => {
  it('plaintext only with --plaintext or a true KAPPA_PLAINTEXT', () => {
    expect(wantsPlaintext([], {})).toBe(false);
    expect(wantsPlaintext(['--plaintext'], {})).toBe(true);
    expect(wantsPlaintext([], { KAPPA_PLAINTEXT: '1' })).toBe(true);
    expect(wantsPlaintext([], { KAPPA_PLAINTEXT: 'true' })).toBe(true);
    expect(wantsPlaintext([], { KAPPA_PLAINTEXT: '0' })).toBe(false);
    expect(wantsPlaintext([], { KAPPA_PLAINTEXT: '' })).toBe(false);
  });

  it('by default: NATS verifies client certificates and wants a login, Redis only TLS, every service and the CLI get the files', () => {
    const { natsConfig, redisArgs, env, upJson, warnings } = plan(false);
    const tls = join(state, 'tls');
    expect(natsConfig).toContain(`tls { cert_file: "${tls}/server.pem", key_file: "${tls}/server.key", ca_file: "${tls}/ca.pem", verify: true, timeout: 10 }`);
    // nkey users only: public keys in the file, no password.
    expect(natsConfig).toMatch(/authorization \{\n  users = \[/);
    expect(natsConfig).not.toMatch(/password/);
    for (const key of Object.values(natsKeys())) expect(natsConfig).toContain(`nkey: "${key.publicKey}"`);
    expect(redisArgs.join(' ')).toContain('--port 0 --tls-port 16379 --tls-auth-clients yes');
    expect(redisArgs.join(' ')).toContain(`--aclfile ${state}/redis/users.acl`);
    expect(env).toMatchObject({
      KAPPA_NATS_URL: 'nats://127.0.0.1:14222',
      KAPPA_NATS_TLS_CA: `${tls}/ca.pem`,
      KAPPA_NATS_TLS_CERT: `${tls}/client.pem`,
      KAPPA_NATS_TLS_KEY: `${tls}/client.key`,
      KAPPA_REDIS_URL: 'rediss://127.0.0.1:16379',
      KAPPA_REDIS_USER: 'kappa',
      KAPPA_REDIS_TLS_CERT: `${tls}/client.pem`,
      KAPPA_GRPC_TLS_CERT: `${tls}/server.pem`,
      KAPPA_GRPC_TLS_CLIENT_CA: `${tls}/ca.pem`,
      KAPPA_GRPC_TOKEN_FILE: `${state}/grpc-token`,
      KAPPA_OBSERVER_TLS_CERT: `${tls}/server.pem`,
      KAPPA_OBSERVER_TLS_CLIENT_CA: `${tls}/ca.pem`,
      KAPPA_OBSERVER_TOKEN_FILE: `${state}/grpc-token`,
    });
    expect(upJson).toMatchObject({
      natsTlsCa: `${tls}/ca.pem`,
      natsTlsCert: `${tls}/client.pem`,
      tlsCa: `${tls}/ca.pem`,
      tlsCert: `${tls}/client.pem`,
      tlsKey: `${tls}/client.key`,
      tokenFile: `${state}/grpc-token`,
      natsNkeySeed: natsKeys().cli!.seedFile,
    });
    expect(Object.keys(upJson).filter((k) => /password|natsUser/i.test(k))).toEqual([]);
    for (const file of Object.values(env).filter((v) => v.startsWith(tls))) expect(existsSync(file), file).toBe(true);
    expect(warnings).toEqual([]);
  });

  it('gives every service its own NATS identity, the admin only to the stream setup, and binds its servers to loopback', () => {
    const { serviceEnv, adminEnv, env } = plan(false);
    const keys = natsKeys();
    const identity = (variables: Record<string, string>) => Object.entries(keys).find(([, k]) => k.seedFile === variables.KAPPA_NATS_NKEY_SEED)?.[0];
    expect(Object.fromEntries(Object.entries(serviceEnv).map(([service, variables]) => [service, identity(variables)]))).toEqual({
      capture: 'capture-ksd-node',
      'process-enricher': 'process-enricher-ksd-node',
      'k8s-tagger': 'k8s-tagger',
      joiner: 'joiner',
      exporter: 'exporter',
    });
    expect(identity(adminEnv)).toBe('admin');
    expect(env.KAPPA_NATS_NKEY_SEED).toBeUndefined();
    for (const variables of Object.values(serviceEnv)) {
      expect(variables).toMatchObject({ KAPPA_GRPC_HOST: '127.0.0.1', KAPPA_OBSERVER_HOST: '127.0.0.1', KAPPA_METRICS_HOST: '127.0.0.1' });
      expect(Object.keys(variables).filter((k) => /NATS_(USER|PASSWORD|TOKEN)/.test(k))).toEqual([]);
    }
    for (const key of Object.values(keys)) expect(statSync(key.seedFile).mode & 0o077).toBe(0);
  });

  it('keeps the CA and certificates of the first run, and the secrets (owner-only)', () => {
    const before = ensureTlsMaterial(workspaceRoot, state);
    const ca = readFileSync(before.ca!, 'utf8');
    const server = readFileSync(before.serverCert!, 'utf8');
    const credentials = ensureCredentials(state);
    const again = ensureTlsMaterial(workspaceRoot, state);
    expect(readFileSync(again.ca!, 'utf8')).toBe(ca);
    expect(readFileSync(again.serverCert!, 'utf8')).toBe(server);
    expect(ensureCredentials(state)).toEqual(credentials);
    expect(statSync(join(state, 'credentials.json')).mode & 0o077).toBe(0);
    expect(statSync(join(state, 'grpc-token')).mode & 0o077).toBe(0);
  });

  it('with --plaintext: no TLS anywhere, the logins stay, and a warning says so', () => {
    const { natsConfig, redisArgs, env, upJson, warnings } = plan(true);
    expect(natsConfig).not.toContain('tls');
    expect(natsConfig).toMatch(/authorization \{\n  users = \[/);
    expect(redisArgs.join(' ')).not.toContain('tls');
    expect(redisArgs.join(' ')).toContain('--port 16379');
    expect(Object.keys(env).filter((k) => k.includes('TLS'))).toEqual([]);
    expect(env.KAPPA_REDIS_URL).toBe('redis://127.0.0.1:16379');
    expect(Object.keys(upJson).filter((k) => /tls/i.test(k))).toEqual([]);
    expect(upJson.tokenFile).toBe(`${state}/grpc-token`);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/WITHOUT TLS/);
  });

  it('listens on the default ports, or on the ones KAPPA_UP_*_PORT name: the gRPC servers on loopback, each service its own /metrics port, the CLI told where', () => {
    expect(upPorts({})).toEqual({ nats: 14222, redis: 16379, tagger: 9480, observer: 9481, metrics: 9401, console: 9490, natsCluster: 16222 });
    const { env, serviceEnv, upJson } = plan(false);
    expect(env).toMatchObject({ KAPPA_GRPC_PORT: '9480', KAPPA_GRPC_HOST: '127.0.0.1', KAPPA_OBSERVER_PORT: '9481', KAPPA_OBSERVER_HOST: '127.0.0.1' });
    expect(upJson).toMatchObject({ tagger: '127.0.0.1:9480', server: '127.0.0.1:9481' });
    expect(Object.fromEntries(Object.entries(serviceEnv).map(([s, e]) => [s, e.KAPPA_METRICS_PORT]))).toEqual({ capture: '9401', 'process-enricher': '9402', 'k8s-tagger': '9403', joiner: '9404', exporter: '9405' });

    const ports = upPorts({ KAPPA_UP_NATS_PORT: '4100', KAPPA_UP_REDIS_PORT: '4101', KAPPA_UP_TAGGER_PORT: '4102', KAPPA_UP_OBSERVER_PORT: '4103', KAPPA_UP_METRICS_PORT: '0', KAPPA_UP_CONSOLE_PORT: '4104' });
    expect(ports).toEqual({ nats: 4100, redis: 4101, tagger: 4102, observer: 4103, metrics: 0, console: 4104, natsCluster: 16222 });
    const moved = upPlan({
      root: workspaceRoot, state, natsPort: ports.nats, redisPort: ports.redis, taggerPort: ports.tagger, observerPort: ports.observer, metricsPort: ports.metrics, consolePort: ports.console,
      plaintext: true, credentials: ensureCredentials(state), natsKeys: natsKeys(), partitions: 16, jsonl: join(state, 'flows.jsonl'), node: 'ksd-node',
    });
    expect(moved.natsConfig).toContain('listen: "127.0.0.1:4100"');
    expect(moved.redisArgs.join(' ')).toContain('--port 4101');
    expect(moved.env).toMatchObject({ KAPPA_NATS_URL: 'nats://127.0.0.1:4100', KAPPA_GRPC_PORT: '4102', KAPPA_OBSERVER_PORT: '4103' });
    expect(moved.upJson).toMatchObject({ natsUrl: 'nats://127.0.0.1:4100', tagger: '127.0.0.1:4102', server: '127.0.0.1:4103' });
    expect(new Set(Object.values(moved.serviceEnv).map((e) => e.KAPPA_METRICS_PORT))).toEqual(new Set(['0']));
    expect(moved.consoleArgs).toEqual(expect.arrayContaining(['--port=4104', '--server=127.0.0.1:4103']));
    expect(() => upPorts({ KAPPA_UP_TAGGER_PORT: 'ninety' })).toThrow(/KAPPA_UP_TAGGER_PORT=ninety: not a port/);
  });

  it('with --cluster the two exporters find each other\'s Observer (the relay) at loopback, also when every address is listened on', () => {
    const exporters = (listenHost: string) =>
      upPlan({
        root: workspaceRoot, state, natsPort: 14222, redisPort: 16379, plaintext: true, credentials: ensureCredentials(state), natsKeys: natsKeys(), partitions: 4,
        jsonl: join(state, 'flows.jsonl'), node: 'ksd-node', cluster: true, listenHost,
      }).processes.filter((p) => p.service === 'exporter');
    // On loopback each advertises where it listens (the exporter's default): nothing to set.
    expect(exporters('127.0.0.1').map((p) => [p.env['KAPPA_OBSERVER_PORT'], p.env['KAPPA_OBSERVER_ADVERTISE']])).toEqual([['9481', undefined], ['9581', undefined]]);
    expect(exporters('0.0.0.0').map((p) => [p.env['KAPPA_OBSERVER_PORT'], p.env['KAPPA_OBSERVER_ADVERTISE']])).toEqual([['9481', '127.0.0.1:9481'], ['9581', '127.0.0.1:9581']]);
  });

  it('renders the Redis ACL exactly as the render line of infra/redis/kappa.acl does', () => {
    const aclFile = join(workspaceRoot, 'infra/redis/kappa.acl');
    const template = readFileSync(aclFile, 'utf8');
    const render = /^# render: (.*)$/m.exec(template)?.[1] ?? '';
    expect(render).not.toBe('');
    const out = join(state, 'rendered.acl');
    execFileSync('bash', ['-c', render.replace('infra/redis/kappa.acl', aclFile).replace('/data/users.acl', out)], {
      env: { ...process.env, KAPPA_REDIS_PASSWORD: 'ksd secret with $pecial "chars"' },
    });
    expect(renderRedisAcl(template, 'ksd secret with $pecial "chars"')).toBe(readFileSync(out, 'utf8'));
  });
});
