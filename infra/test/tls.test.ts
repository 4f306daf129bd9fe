// Every link of the Kustomize base is encrypted and authenticated unless the operator includes
// components/plaintext: NATS and Redis demand TLS with a client certificate and a login, the gRPC
// servers TLS, a client certificate and the bearer token, and every service is given the matching
// files from the two TLS Secrets. The NATS and Redis of the manifests are started for real.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { connect } from '@nats-io/transport-node';
import { ServerProcess, freePort, makeTlsMaterial } from '@kappa/testing';
import type { TlsMaterial } from '@kappa/testing';
import type { Container, KubeObject, Workload } from './manifests.js';
import { allContainers, one, overlayNames, render, renderWith, workloads, workspaceRoot } from './manifests.js';

const serverSecret = 'kappa-server-tls';
const clientSecret = 'kappa-client-tls';
const tlsKeys = { ca: 'ca.crt', cert: 'tls.crt', key: 'tls.key' }; // cert-manager's key names
const kappaContainers = ['capture', 'process-enricher', 'k8s-tagger', 'joiner', 'exporter'];
/** The Services whose pods serve TLS: the server certificate must name them. */
const tlsServices = ['kappa-nats', 'kappa-redis', 'kappa-k8s-tagger', 'kappa-exporter'];
const plaintext = 'components/plaintext';

type Source = { value: string } | { secret: string; key: string } | undefined;

/** What a container sees as KAPPA_* variables: its envFrom ConfigMaps, then its own env. */
function environment(objects: KubeObject[], container: Container): Map<string, Source> {
  const env = new Map<string, Source>();
  for (const from of container.envFrom ?? []) {
    if (!from.configMapRef) continue;
    const data = one<KubeObject & { data: Record<string, string> }>(objects, 'ConfigMap', from.configMapRef.name).data;
    for (const [name, value] of Object.entries(data)) env.set(name, { value });
  }
  for (const variable of container.env ?? []) {
    const ref = variable.valueFrom?.secretKeyRef;
    env.set(variable.name, ref ? { secret: ref.name, key: ref.key } : variable.value !== undefined ? { value: variable.value } : undefined);
  }
  return env;
}

/** The Secret (and key in it) a file path of a container comes from, through its mounts. */
function fileSource(pod: Workload, container: Container, path: string): { secret: string; key: string } | undefined {
  const mount = (container.volumeMounts ?? []).find((m) => path.startsWith(`${m.mountPath}/`));
  const volume = pod.spec.template.spec.volumes?.find((v) => v.name === mount?.name);
  if (!mount || !volume?.secret) return undefined;
  const file = posix.relative(mount.mountPath, path);
  const items = volume.secret.items;
  const key = items ? items.find((i) => i.path === file)?.key : file;
  return key === undefined ? undefined : { secret: volume.secret.secretName, key };
}

/** The Secret a KAPPA_* variable naming a file points to. */
function fileOf(objects: KubeObject[], pod: Workload, container: Container, variable: string) {
  const source = environment(objects, container).get(variable);
  if (!source || !('value' in source)) return undefined;
  return fileSource(pod, container, source.value);
}

function kappaPods(objects: KubeObject[]): [Workload, Container][] {
  return workloads(objects).flatMap((w) =>
    allContainers(w.spec.template.spec)
      .filter((c) => kappaContainers.includes(c.name))
      .map((c): [Workload, Container] => [w, c]),
  );
}

/** Every Secret a rendered system mounts, by workload. */
function mountedSecrets(objects: KubeObject[]): Record<string, string[]> {
  const result: Record<string, string[]> = {};
  for (const w of workloads(objects)) {
    result[w.metadata.name] = (w.spec.template.spec.volumes ?? []).flatMap((v) => (v.secret ? [v.secret.secretName] : [])).sort();
  }
  return result;
}

const redisScript = (objects: KubeObject[]) => {
  const redis = one<Workload>(objects, 'Deployment', 'kappa-redis').spec.template.spec.containers[0]!;
  expect(redis.command).toEqual(['sh', '-c']);
  return redis.args?.[0] ?? '';
};
/** nats-server's configuration file as the StatefulSet mounts it (args -c FILE from a ConfigMap). */
function natsConfig(objects: KubeObject[]): { text: string; pod: Workload; container: Container } {
  const pod = one<Workload>(objects, 'StatefulSet', 'kappa-nats');
  const container = pod.spec.template.spec.containers[0]!;
  expect(container.args?.[0]).toBe('-c');
  const file = container.args?.[1] ?? '';
  const mount = (container.volumeMounts ?? []).find((m) => file.startsWith(`${m.mountPath}/`));
  const configMap = pod.spec.template.spec.volumes?.find((v) => v.name === mount?.name)?.configMap?.name ?? '';
  const data = one<KubeObject & { data: Record<string, string> }>(objects, 'ConfigMap', configMap).data;
  return { text: data[posix.relative(mount?.mountPath ?? '', file)] ?? '', pod, container };
}
/** `key: "value"` or `key: value` of a nats-server configuration. */
const natsSetting = (text: string, key: string) => new RegExp(`^\\s*${key}:\\s*"?([^"\\s}]+)"?`, 'm').exec(text)?.[1];

describe.each(overlayNames())('overlay %s, as shipped', (overlay) => {
  const objects = render(`overlays/${overlay}`);

  test('NATS demands TLS with a client certificate of the kappa CA, and a user and password', () => {
    const { text, pod, container } = natsConfig(objects);
    expect(natsSetting(text, 'verify')).toBe('true');
    expect(text).toContain('authorization { user: $NATS_USER, password: $NATS_PASSWORD }');
    const env = environment(objects, container);
    expect(env.get('NATS_USER')).toEqual({ secret: 'kappa-credentials', key: 'nats-user' });
    expect(env.get('NATS_PASSWORD')).toEqual({ secret: 'kappa-credentials', key: 'nats-password' });
    const file = (key: string) => fileSource(pod, container, natsSetting(text, key) ?? '');
    expect(file('cert_file')).toEqual({ secret: serverSecret, key: tlsKeys.cert });
    expect(file('key_file')).toEqual({ secret: serverSecret, key: tlsKeys.key });
    expect(file('ca_file')).toEqual({ secret: serverSecret, key: tlsKeys.ca });
  });

  test('no password or token is on a command line (the node\'s process list, which kappa itself reads)', () => {
    for (const w of workloads(objects)) {
      for (const c of allContainers(w.spec.template.spec)) {
        const commandLine = [...(c.command ?? []), ...(c.args ?? [])].join(' ');
        expect(commandLine, `${w.metadata.name}/${c.name}`).not.toMatch(/\$\((\w*(PASSWORD|TOKEN)\w*)\)|--pass|requirepass/i);
      }
    }
  });

  test('Redis listens only on TLS, demands client certificates, and knows only the ACL user of infra/redis/kappa.acl', () => {
    const script = redisScript(objects);
    expect(script).toMatch(/--port 0 --tls-port 6379 --tls-auth-clients yes/);
    expect(script).toContain('--aclfile /run/kappa-redis/users.acl');
    expect(script).not.toMatch(/requirepass/);
    const acl = one<KubeObject & { data: Record<string, string> }>(
      objects,
      'ConfigMap',
      one<Workload>(objects, 'Deployment', 'kappa-redis').spec.template.spec.volumes?.find((v) => v.name === 'acl-rules')?.configMap?.name ?? '',
    );
    expect(acl.data['kappa.acl']).toBe(readFileSync(resolve(workspaceRoot, 'infra/redis/kappa.acl'), 'utf8'));
    const redis = one<Workload>(objects, 'Deployment', 'kappa-redis');
    const container = redis.spec.template.spec.containers[0]!;
    for (const [flag, key] of [['--tls-cert-file', tlsKeys.cert], ['--tls-key-file', tlsKeys.key], ['--tls-ca-cert-file', tlsKeys.ca]] as const) {
      const path = new RegExp(`${flag} (\\S+)`).exec(script)?.[1] ?? '';
      expect(fileSource(redis, container, path), flag).toEqual({ secret: serverSecret, key });
    }
    expect(JSON.stringify(container.readinessProbe)).toContain('--tls');
  });

  test('every kappa service reaches NATS with the client certificate of kappa-client-tls and the NATS login', () => {
    const pods = kappaPods(objects);
    expect(pods.map(([, c]) => c.name).sort()).toEqual([...kappaContainers].sort());
    for (const [pod, container] of pods) {
      const env = environment(objects, container);
      expect(fileOf(objects, pod, container, 'KAPPA_NATS_TLS_CA'), container.name).toEqual({ secret: clientSecret, key: tlsKeys.ca });
      expect(fileOf(objects, pod, container, 'KAPPA_NATS_TLS_CERT'), container.name).toEqual({ secret: clientSecret, key: tlsKeys.cert });
      expect(fileOf(objects, pod, container, 'KAPPA_NATS_TLS_KEY'), container.name).toEqual({ secret: clientSecret, key: tlsKeys.key });
      expect(env.get('KAPPA_NATS_USER'), container.name).toEqual({ secret: 'kappa-credentials', key: 'nats-user' });
      expect(env.get('KAPPA_NATS_PASSWORD'), container.name).toEqual({ secret: 'kappa-credentials', key: 'nats-password' });
    }
  });

  test('the joiner reaches Redis over rediss:// as the ACL user, with the client certificate', () => {
    const joiner = one<Workload>(objects, 'Deployment', 'kappa-joiner');
    const container = joiner.spec.template.spec.containers[0]!;
    const env = environment(objects, container);
    expect(env.get('KAPPA_REDIS_URL')).toEqual({ value: 'rediss://kappa-redis.kappa.svc:6379' });
    expect(env.get('KAPPA_REDIS_USER')).toEqual({ secret: 'kappa-credentials', key: 'redis-user' });
    expect(env.get('KAPPA_REDIS_PASSWORD')).toEqual({ secret: 'kappa-credentials', key: 'redis-password' });
    expect(fileOf(objects, joiner, container, 'KAPPA_REDIS_TLS_CA')).toEqual({ secret: clientSecret, key: tlsKeys.ca });
    expect(fileOf(objects, joiner, container, 'KAPPA_REDIS_TLS_CERT')).toEqual({ secret: clientSecret, key: tlsKeys.cert });
    expect(fileOf(objects, joiner, container, 'KAPPA_REDIS_TLS_KEY')).toEqual({ secret: clientSecret, key: tlsKeys.key });
  });

  test.each([
    ['kappa-k8s-tagger', 'GRPC'],
    ['kappa-exporter', 'OBSERVER'],
  ])('%s serves gRPC over TLS, demanding a client certificate and the bearer token', (name, prefix) => {
    const pod = one<Workload>(objects, 'Deployment', name);
    const container = pod.spec.template.spec.containers[0]!;
    expect(fileOf(objects, pod, container, `KAPPA_${prefix}_TLS_CERT`)).toEqual({ secret: serverSecret, key: tlsKeys.cert });
    expect(fileOf(objects, pod, container, `KAPPA_${prefix}_TLS_KEY`)).toEqual({ secret: serverSecret, key: tlsKeys.key });
    expect(fileOf(objects, pod, container, `KAPPA_${prefix}_TLS_CLIENT_CA`)).toEqual({ secret: serverSecret, key: tlsKeys.ca });
    expect(fileOf(objects, pod, container, `KAPPA_${prefix}_TOKEN_FILE`)).toEqual({ secret: 'kappa-credentials', key: 'grpc-token' });
  });

  test('the server key is only in the servers\' pods; the agent and the joiner hold only the client certificate', () => {
    expect(mountedSecrets(objects)).toEqual({
      'kappa-agent': [clientSecret],
      'kappa-joiner': [clientSecret],
      'kappa-k8s-tagger': [clientSecret, 'kappa-credentials', serverSecret],
      'kappa-exporter': [clientSecret, 'kappa-credentials', serverSecret],
      'kappa-console': [clientSecret, 'kappa-credentials', serverSecret],
      'kappa-nats': [serverSecret],
      'kappa-redis': [clientSecret, serverSecret],
    });
  });
});

describe.each(overlayNames())('overlay %s with components/plaintext', (overlay) => {
  const objects = renderWith(`overlays/${overlay}`, [plaintext]);

  test('no link uses TLS: no tls block or --tls argument, no TLS variable, no certificate Secret mounted', () => {
    expect(natsConfig(objects).text).not.toMatch(/^\s*(tls|verify)\b/m);
    expect(redisScript(objects)).not.toMatch(/tls/);
    for (const [, container] of kappaPods(objects)) {
      const env = environment(objects, container);
      expect([...env.keys()].filter((name) => name.includes('TLS')), container.name).toEqual([]);
      expect(env.get('KAPPA_NATS_URL'), container.name).toEqual({ value: 'nats://kappa-nats.kappa.svc:4222' });
      expect(env.get('KAPPA_REDIS_URL'), container.name).toEqual({ value: 'redis://kappa-redis.kappa.svc:6379' });
    }
    const secrets = Object.values(mountedSecrets(objects)).flat();
    expect(secrets).not.toContain(serverSecret);
    expect(secrets).not.toContain(clientSecret);
  });

  test('the logins stay on: NATS user and password, the Redis ACL user only, the gRPC bearer token', () => {
    expect(natsConfig(objects).text).toContain('authorization { user: $NATS_USER, password: $NATS_PASSWORD }');
    expect(redisScript(objects)).toContain('--aclfile /run/kappa-redis/users.acl');
    const tagger = one<Workload>(objects, 'Deployment', 'kappa-k8s-tagger');
    expect(fileOf(objects, tagger, tagger.spec.template.spec.containers[0]!, 'KAPPA_GRPC_TOKEN_FILE')).toEqual({ secret: 'kappa-credentials', key: 'grpc-token' });
    const exporter = one<Workload>(objects, 'Deployment', 'kappa-exporter');
    expect(fileOf(objects, exporter, exporter.spec.template.spec.containers[0]!, 'KAPPA_OBSERVER_TOKEN_FILE')).toEqual({ secret: 'kappa-credentials', key: 'grpc-token' });
  });
});

describe('certificates for the cluster', () => {
  test('tools/make-k8s-tls.sh prints both Secrets, the server certificate naming every Service that serves TLS', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ksd-k8s-tls-'));
    try {
      const yaml = execFileSync('bash', [resolve(workspaceRoot, 'tools/make-k8s-tls.sh'), dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      const secrets = yaml.split(/^---$/m).map((doc) => parseYaml(doc) as KubeObject & { type: string; data: Record<string, string> });
      expect(secrets.map((s) => [s.metadata.name, s.metadata.namespace, s.type, Object.keys(s.data).sort()])).toEqual([
        [serverSecret, 'kappa', 'kubernetes.io/tls', ['ca.crt', 'tls.crt', 'tls.key']],
        [clientSecret, 'kappa', 'kubernetes.io/tls', ['ca.crt', 'tls.crt', 'tls.key']],
      ]);
      const file = (secret: (typeof secrets)[number], key: string) => {
        const path = join(dir, `${secret.metadata.name}-${key}`);
        writeFileSync(path, Buffer.from(secret.data[key] ?? '', 'base64'));
        return path;
      };
      const [server, client] = secrets as [(typeof secrets)[number], (typeof secrets)[number]];
      const sans = execFileSync('openssl', ['x509', '-in', file(server, 'tls.crt'), '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' });
      for (const service of tlsServices) expect(sans).toContain(`DNS:${service}.kappa.svc,`);
      for (const secret of [server, client]) {
        const verified = execFileSync('openssl', ['verify', '-CAfile', file(secret, 'ca.crt'), file(secret, 'tls.crt')], { encoding: 'utf8' });
        expect(verified).toContain(': OK');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('components/cert-manager issues exactly the two Secrets the base mounts, the server one for every TLS Service', () => {
    const objects = renderWith('base', ['components/cert-manager']);
    const certificates = objects.filter((o) => o.kind === 'Certificate') as (KubeObject & { spec: { secretName: string; dnsNames?: string[]; isCA?: boolean } })[];
    expect(certificates.filter((c) => !c.spec.isCA).map((c) => c.spec.secretName).sort()).toEqual([clientSecret, serverSecret]);
    const server = certificates.find((c) => c.spec.secretName === serverSecret)!;
    for (const service of tlsServices) expect(server.spec.dnsNames).toContain(`${service}.kappa.svc`);
    for (const o of objects.filter((x) => x.apiVersion.startsWith('cert-manager.io/'))) {
      expect(o.metadata.namespace).toBe('kappa');
      expect(o.metadata.labels?.['app.kubernetes.io/component']).toBe('infra');
    }
  });
});

// The NATS and Redis of the base, started from their manifests with the paths pointed at a
// local CA: plaintext and certificate-less clients are refused, the services' way in works.
describe('the servers as the base starts them', () => {
  const objects = render('base');
  let tls: TlsMaterial;
  let root: string;
  const servers: ServerProcess[] = [];
  /** The pod's file system, under root: /etc/kappa/tls/{server,client}, /etc/kappa/redis, /run/kappa-redis. */
  const local = (text: string) => text.replaceAll('/etc/kappa/', `${root}/etc/`).replaceAll('/run/kappa-redis', `${root}/run`);

  beforeAll(() => {
    tls = makeTlsMaterial();
    root = mkdtempSync(join(tmpdir(), 'ksd-pod-'));
    for (const [side, cert, key] of [['server', tls.serverCertFile, tls.serverKeyFile], ['client', tls.clientCertFile, tls.clientKeyFile]] as const) {
      mkdirSync(join(root, 'etc/tls', side), { recursive: true });
      writeFileSync(join(root, 'etc/tls', side, tlsKeys.ca), readFileSync(tls.caFile));
      writeFileSync(join(root, 'etc/tls', side, tlsKeys.cert), readFileSync(cert));
      writeFileSync(join(root, 'etc/tls', side, tlsKeys.key), readFileSync(key));
    }
    mkdirSync(join(root, 'etc/redis'), { recursive: true });
    mkdirSync(join(root, 'run'), { recursive: true });
    mkdirSync(join(root, 'data'), { recursive: true });
    const acl = one<KubeObject & { data: Record<string, string> }>(objects, 'ConfigMap', objects.find((o) => o.metadata.name.startsWith('kappa-redis-acl'))!.metadata.name);
    writeFileSync(join(root, 'etc/redis/kappa.acl'), acl.data['kappa.acl'] ?? '');
  });

  afterAll(async () => {
    for (const server of servers) await server.stop();
    tls?.remove();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const client = (side: 'client' | 'server') => ({
    ca: readFileSync(join(root, 'etc/tls', side, tlsKeys.ca)),
    cert: readFileSync(join(root, 'etc/tls', side, tlsKeys.cert)),
    key: readFileSync(join(root, 'etc/tls', side, tlsKeys.key)),
  });

  test('NATS refuses plaintext, a client without certificate and a wrong password; the services\' login works', async () => {
    const port = await freePort();
    const config = join(root, 'nats.conf');
    writeFileSync(
      config,
      local(natsConfig(objects).text)
        .replace('port: 4222', `host: 127.0.0.1\nport: ${port}`)
        .replace('http_port: 8222', 'http_port: 0')
        .replace('store_dir: "/data"', `store_dir: "${root}/data"`),
    );
    const nats = new ServerProcess({
      command: 'env',
      args: ['NATS_USER=kappa', 'NATS_PASSWORD=ksd-nats-password', 'nats-server', '-c', config],
      readyPattern: /Server is ready/,
    });
    servers.push(nats);
    await nats.start();
    const servers_ = [`127.0.0.1:${port}`];
    const { ca, cert, key } = client('client');
    const attempt = async (options: Parameters<typeof connect>[0]) => {
      try {
        const nc = await connect({ servers: servers_, reconnect: false, timeout: 5000, ...options });
        await nc.close();
        return 'connected';
      } catch (error) {
        return `refused: ${(error as Error).message}`;
      }
    };
    expect(await attempt({ user: 'kappa', pass: 'ksd-nats-password' })).toMatch(/^refused/);
    expect(await attempt({ user: 'kappa', pass: 'ksd-nats-password', tls: { ca: ca.toString() } })).toMatch(/^refused/);
    expect(await attempt({ user: 'kappa', pass: 'wrong', tls: { ca: ca.toString(), cert: cert.toString(), key: key.toString() } })).toMatch(/^refused/);
    expect(await attempt({ user: 'kappa', pass: 'ksd-nats-password', tls: { ca: ca.toString(), cert: cert.toString(), key: key.toString() } })).toBe('connected');
  });

  test('Redis refuses plaintext, a client without certificate and the default user; user kappa works within its ACL and the probe passes', async () => {
    const port = await freePort();
    const script = local(redisScript(objects)).replace('--tls-port 6379', `--tls-port ${port} --bind 127.0.0.1 --dir ${root}/data`);
    const redis = new ServerProcess({ command: 'env', args: ['REDIS_PASSWORD=ksd-redis-password', 'sh', '-c', script], readyPattern: /Ready to accept connections/ });
    servers.push(redis);
    await redis.start();
    const { ca, cert, key } = client('client');
    const attempt = async (options: RedisOptions) => {
      const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 5000, ...options });
      r.on('error', () => undefined);
      try {
        await r.connect();
        return `PING ${await r.ping()}`;
      } catch (error) {
        return `refused: ${(error as Error).message}`;
      } finally {
        r.disconnect();
      }
    };
    const tlsOptions = { ca, cert, key, servername: 'localhost' };
    expect(await attempt({ username: 'kappa', password: 'ksd-redis-password' })).toMatch(/^refused/);
    expect(await attempt({ username: 'kappa', password: 'ksd-redis-password', tls: { ca, servername: 'localhost' } })).toMatch(/^refused/);
    expect(await attempt({ tls: tlsOptions })).toMatch(/^refused/);
    expect(await attempt({ username: 'default', password: 'ksd-redis-password', tls: tlsOptions })).toMatch(/^refused/);
    expect(await attempt({ username: 'kappa', password: 'ksd-redis-password', tls: tlsOptions })).toBe('PING PONG');
    const joiner = new Redis({ host: '127.0.0.1', port, username: 'kappa', password: 'ksd-redis-password', tls: tlsOptions, lazyConnect: true, maxRetriesPerRequest: 0 });
    try {
      await joiner.connect();
      expect(await joiner.hset('kappa:{ksd}:pending', 'a', '1')).toBe(1);
      await expect(joiner.hset('other:key', 'a', '1')).rejects.toThrow(/NOPERM/);
      await expect(joiner.call('CONFIG', 'GET', 'maxmemory')).rejects.toThrow(/NOPERM/);
    } finally {
      joiner.disconnect();
    }

    const probe = one<Workload>(objects, 'Deployment', 'kappa-redis').spec.template.spec.containers[0]!.readinessProbe as { exec: { command: string[] } };
    const [shell, flag, command] = probe.exec.command as [string, string, string];
    const run = (password: string) =>
      execFileSync(shell, [flag, `${local(command).replace('redis-cli', `redis-cli -h 127.0.0.1 -p ${port}`)} && echo ready`], {
        env: { ...process.env, REDIS_USER: 'kappa', REDIS_PASSWORD: password },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    expect(run('ksd-redis-password')).toBe('ready');
    expect(() => run('wrong')).toThrow();
  });
});
