// `kappa observe` and `kappa tags` as processes against a real exporter and a real k8s-tagger
// whose gRPC servers require TLS, a client certificate (mutual TLS) and a bearer token, with the
// project's TLS material: each missing piece is refused; the flags, or the keys tlsCa, tlsCert,
// tlsKey and tokenFile of a config file such as .kappa/up.json, get answers.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { IpProtocol, Vantage, flowRecordFromJson, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, makeTlsMaterial, startNatsServer } from '@kappa/testing';
import type { TestServer, TlsMaterial } from '@kappa/testing';
import { buildApps, exporterMain, runKappa, startProcess, until } from './run.js';

const root = join(import.meta.dirname, '../../..');
const TOKEN = 'ksl-cli-token-41d7';

let tls: TlsMaterial;
let dir: string;
let tokenFile: string;
let nats: TestServer;
let bus: Bus;
let exporter: ReturnType<typeof startProcess>;
let tagger: ChildProcess;
let observer: string;
let taggerAddress: string;

beforeAll(async () => {
  buildApps();
  execFileSync(process.execPath, [join(root, 'tools/build-app.mjs')], { cwd: join(root, 'apps/k8s-tagger'), stdio: 'inherit' });
  tls = makeTlsMaterial();
  dir = mkdtempSync(join(tmpdir(), 'ksl-cli-secure-'));
  tokenFile = join(dir, 'grpc.token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  nats = await startNatsServer();
  bus = await connectBus({ servers: [nats.url], name: 'test', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
  await bus.ensureStreams();

  const [observerPort, grpcPort, metricsPort] = await Promise.all([freePort(), freePort(), freePort()]);
  observer = `127.0.0.1:${observerPort}`;
  taggerAddress = `127.0.0.1:${grpcPort}`;
  exporter = startProcess(exporterMain, [
    `--nats-url=${nats.url}`,
    '--observer-host=127.0.0.1',
    `--observer-port=${observerPort}`,
    `--observer-tls-cert=${tls.serverCertFile}`,
    `--observer-tls-key=${tls.serverKeyFile}`,
    `--observer-tls-client-ca=${tls.caFile}`,
    `--observer-token-file=${tokenFile}`,
    '--metrics-port=0',
    `--jsonl=${join(dir, 'flows.jsonl')}`,
    '--instance=ksl-exporter',
  ]);
  tagger = spawn(
    process.execPath,
    [
      join(root, 'apps/k8s-tagger/bin/kappa-k8s-tagger.js'),
      `--nats-url=${nats.url}`,
      '--grpc-host=127.0.0.1',
      `--grpc-port=${grpcPort}`,
      `--grpc-tls-cert=${tls.serverCertFile}`,
      `--grpc-tls-key=${tls.serverKeyFile}`,
      `--grpc-tls-client-ca=${tls.caFile}`,
      `--grpc-token-file=${tokenFile}`,
      `--metrics-port=${metricsPort}`,
      '--log-level=warn',
    ],
    { stdio: 'ignore', env: { ...process.env, KUBECONFIG: '' } },
  );
  await until(() => exporter.stderr().includes('exporter started'), 60_000, `exporter start: ${exporter.stderr()}`);
  // /readyz, not /healthz: healthy is not yet serving (at load ~30 the gRPC port still refused
  // connections after /healthz said 200); ready comes after KubeTags is bound.
  await until(async () => (await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined))?.status === 200, 60_000, 'tagger ready');
  const records = [0, 1].map((i) =>
    newFlowRecord({
      id: `ksl-${i}`,
      node: 'node-a',
      vantage: Vantage.SRC,
      // Recent: the Observer serves flow times within the store's retention (24h).
      startNs: BigInt(Date.now() - 20_000) * 1_000_000n,
      endNs: BigInt(Date.now() - 10_000) * 1_000_000n,
      protocol: IpProtocol.TCP,
      src: { ip: `10.0.0.${i + 1}`, port: 40000 + i },
      dst: { ip: '10.0.1.1', port: 443 },
      bytes: 100n,
      packets: 1n,
    }),
  );
  await bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: 'ksl-secure-1', producer: 'test', records }));
  await until(async () => (await observe(allFlags())).code === 0 && (await observe(allFlags())).ids.length === 2, 30_000, 'exporter took 2 records');
});

afterAll(async () => {
  exporter?.child.kill('SIGTERM');
  if (tagger && tagger.exitCode === null) {
    const exited = new Promise((resolve) => tagger.once('exit', resolve));
    tagger.kill('SIGTERM');
    await exited;
  }
  await bus?.close();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
  tls?.remove();
});

const allFlags = () => [`--tls-ca=${tls.caFile}`, `--tls-cert=${tls.clientCertFile}`, `--tls-key=${tls.clientKeyFile}`, `--token-file=${tokenFile}`];

async function observe(flags: string[], env: Record<string, string> = {}): Promise<{ code: number | null; ids: string[]; stderr: string }> {
  const result = await runKappa(['observe', `--server=${observer}`, '--output=json', '--connect-timeout=3s', ...flags], { KAPPA_CONFIG: '', ...env });
  const ids = result.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => flowRecordFromJson(JSON.parse(l)).id)
    .sort();
  return { code: result.code, ids, stderr: result.stderr };
}

describe('kappa observe against a TLS, mutual-TLS, token Observer', () => {
  it('a plaintext client is refused', async () => {
    const result = await observe([`--token-file=${tokenFile}`]);
    expect(result.code).toBe(1);
    expect(result.ids).toEqual([]);
  });

  it('a TLS client without a client certificate is refused', async () => {
    const result = await observe([`--tls-ca=${tls.caFile}`, `--token-file=${tokenFile}`]);
    expect(result.code).toBe(1);
    expect(result.ids).toEqual([]);
  });

  it('a client with a certificate but no or a wrong token is told the token is missing or wrong', async () => {
    const certOnly = [`--tls-ca=${tls.caFile}`, `--tls-cert=${tls.clientCertFile}`, `--tls-key=${tls.clientKeyFile}`];
    const none = await observe(certOnly);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('missing or wrong bearer token');
    const wrongFile = join(dir, 'wrong.token');
    writeFileSync(wrongFile, 'not-it');
    const wrong = await observe([...certOnly, `--token-file=${wrongFile}`]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('missing or wrong bearer token');
    expect(wrong.stderr).not.toContain('not-it');
  });

  it('with --tls-ca, --tls-cert, --tls-key and --token-file prints exactly the buffered records', async () => {
    expect(await observe(allFlags())).toEqual({ code: 0, ids: ['ksl-0', 'ksl-1'], stderr: '' });
  });

  it('reads tlsCa, tlsCert, tlsKey and tokenFile from the config file (.kappa/up.json while npm run up runs)', async () => {
    const upJson = join(dir, 'up.json');
    writeFileSync(upJson, JSON.stringify({ tlsCa: tls.caFile, tlsCert: tls.clientCertFile, tlsKey: tls.clientKeyFile, tokenFile }));
    expect(await observe([], { KAPPA_CONFIG: upJson })).toEqual({ code: 0, ids: ['ksl-0', 'ksl-1'], stderr: '' });
  });
});

describe('kappa tags against a TLS, mutual-TLS, token KubeTags', () => {
  const tags = (flags: string[], env: Record<string, string> = {}) => runKappa(['tags', '10.9.9.9', `--tagger=${taggerAddress}`, ...flags], { KAPPA_CONFIG: '', ...env });

  it('refuses plaintext, a client without a certificate, and a call without the token', async () => {
    const plain = await tags([`--token-file=${tokenFile}`]);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toContain('did not answer');
    const noCert = await tags([`--tls-ca=${tls.caFile}`, `--token-file=${tokenFile}`]);
    expect(noCert.code).toBe(1);
    expect(noCert.stderr).toContain('did not answer');
    const noToken = await tags([`--tls-ca=${tls.caFile}`, `--tls-cert=${tls.clientCertFile}`, `--tls-key=${tls.clientKeyFile}`]);
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/UNAUTHENTICATED|missing or wrong bearer token/);
  });

  it('answers with every flag, or with the KAPPA_CONFIG file keys tagger, tlsCa, tlsCert, tlsKey, tokenFile (no cluster: the IP is not known)', async () => {
    const flagged = await tags(allFlags());
    expect(flagged).toMatchObject({ code: 1, stderr: '' });
    expect(flagged.stdout).toBe('10.9.9.9\tnot known to the tagger\n');
    const upJson = join(dir, 'tags-up.json');
    writeFileSync(upJson, JSON.stringify({ tagger: taggerAddress, tlsCa: tls.caFile, tlsCert: tls.clientCertFile, tlsKey: tls.clientKeyFile, tokenFile }));
    const configured = await runKappa(['tags', '10.9.9.9'], { KAPPA_CONFIG: upJson });
    expect(configured).toMatchObject({ code: 1, stderr: '' });
    expect(configured.stdout).toBe('10.9.9.9\tnot known to the tagger\n');
  });
});
