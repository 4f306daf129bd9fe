// The bus against a nats-server that requires TLS and a password: the project's options connect,
// a plaintext client and a wrong password are refused with a BusConnectError.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newFlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { BusConnectError, busOptionsFromConfig, connectBus, natsOptions } from '../src/index.js';
import { parseConfig } from '@kappa/config';

let dir: string;
let nats: TestServer;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'kappa-bus-tls-'));
  const ssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=kappa-test-ca']);
  ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
  ssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext']);
  nats = await startNatsServer({
    args: ['--tls', '--tlscert', join(dir, 'server.pem'), '--tlskey', join(dir, 'server.key'), '--user', 'kappa', '--pass', 's3cret-pass'],
  });
});

afterAll(async () => {
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const logger = createLogger('secure-test', 'silent');

function configFor(flags: string[]) {
  return busOptionsFromConfig(parseConfig(natsOptions, { argv: flags, env: {} }));
}

describe('bus over TLS with credentials', () => {
  it('connects with the CA and the password given as flags, and carries a batch', async () => {
    const options = configFor([`--nats-url=tls://127.0.0.1:${nats.port}`, `--nats-tls-ca=${join(dir, 'ca.pem')}`, '--nats-user=kappa', '--nats-password=s3cret-pass']);
    const bus = await connectBus({ ...options, name: 'secure', logger, registry: createRegistry('secure') });
    try {
      await bus.ensureStreams();
      await bus.publishBatch('kappa.flow.joined', newFlowBatch({ batchId: 'tls-1' }));
      const info = await bus.jsm.streams.info('KAPPA_FLOWS');
      expect(info.state.messages).toBe(1);
    } finally {
      await bus.close();
    }
  });

  it('refuses a client that does not speak TLS', async () => {
    const options = configFor([`--nats-url=nats://127.0.0.1:${nats.port}`, '--nats-user=kappa', '--nats-password=s3cret-pass']);
    await expect(connectBus({ ...options, name: 'plain', logger, registry: createRegistry('plain') })).rejects.toThrow(BusConnectError);
  });

  it('refuses a wrong password, and the error does not print it', async () => {
    const options = configFor([`--nats-url=tls://127.0.0.1:${nats.port}`, `--nats-tls-ca=${join(dir, 'ca.pem')}`, '--nats-user=kappa', '--nats-password=wrong-pass']);
    const error = await connectBus({ ...options, name: 'wrong', logger, registry: createRegistry('wrong') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BusConnectError);
    expect(String(error)).toMatch(/authorization/i);
    expect(String(error)).not.toContain('wrong-pass');
  });

  it('refuses a server whose certificate is not signed by the given CA', async () => {
    const options = configFor([`--nats-url=tls://127.0.0.1:${nats.port}`, '--nats-user=kappa', '--nats-password=s3cret-pass']);
    await expect(connectBus({ ...options, name: 'noca', logger, registry: createRegistry('noca') })).rejects.toThrow(BusConnectError);
  });
});
