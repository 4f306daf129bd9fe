// The bus against nats-servers secured with the project's TLS material (tools/make-ca.sh): TLS and
// a password; mutual TLS (verify) and an nkey user. The project's flags connect; plaintext,
// certificate-less, seed-less and wrong-credential clients are refused with a BusConnectError;
// an insecure link logs one warning naming the flags, a secure one none.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createUser } from '@nats-io/nkeys';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newFlowBatch } from '@kappa/contracts';
import { parseConfig } from '@kappa/config';
import { createLogger, createRegistry } from '@kappa/observability';
import { makeTlsMaterial, startNatsServer } from '@kappa/testing';
import type { TestServer, TlsMaterial } from '@kappa/testing';
import type { Logger } from '@kappa/observability';
import { BusConnectError, busOptionsFromConfig, connectBus, natsOptions } from '../src/index.js';

let tls: TlsMaterial;
let passwordNats: TestServer;
let nkeyNats: TestServer;
let seedFile: string;
let otherSeedFile: string;

beforeAll(async () => {
  tls = makeTlsMaterial();
  const user = createUser();
  seedFile = join(tls.dir, 'kappa.nk');
  writeFileSync(seedFile, new TextDecoder().decode(user.getSeed()), { mode: 0o600 });
  otherSeedFile = join(tls.dir, 'other.nk');
  writeFileSync(otherSeedFile, new TextDecoder().decode(createUser().getSeed()), { mode: 0o600 });
  // Mutual TLS (verify: a client certificate signed by the CA is required) and one nkey user.
  const config = join(tls.dir, 'nats-mtls-nkey.conf');
  writeFileSync(
    config,
    [
      'tls {',
      `  cert_file: "${tls.serverCertFile}"`,
      `  key_file: "${tls.serverKeyFile}"`,
      `  ca_file: "${tls.caFile}"`,
      '  verify: true',
      '}',
      'authorization {',
      `  users: [ { nkey: "${user.getPublicKey()}" } ]`,
      '}',
    ].join('\n'),
  );
  [passwordNats, nkeyNats] = await Promise.all([
    startNatsServer({ args: ['--tls', '--tlscert', tls.serverCertFile, '--tlskey', tls.serverKeyFile, '--user', 'kappa', '--pass', 's3cret-pass'] }),
    startNatsServer({ args: ['-c', config] }),
  ]);
});

afterAll(async () => {
  await Promise.all([passwordNats?.stop(), nkeyNats?.stop()]);
  tls?.remove();
});

const silent = createLogger('secure-test', 'silent');

function configFor(flags: string[]) {
  return busOptionsFromConfig(parseConfig(natsOptions, { argv: flags, env: {} }));
}

/** Connects with the flags; resolves to the error when refused, else carries one batch and closes. */
async function tryConnect(flags: string[], logger = silent): Promise<unknown> {
  try {
    const bus = await connectBus({ ...configFor(flags), name: 'secure', logger, registry: createRegistry('secure') });
    try {
      await bus.ensureStreams();
      await bus.publishBatch('kappa.flow.joined', newFlowBatch({ batchId: `secure-${Date.now()}-${Math.random()}` }));
    } finally {
      await bus.close();
    }
    return undefined;
  } catch (error) {
    return error;
  }
}

/** A logger whose warnings are collected. */
function recordingLogger(): { logger: Logger; warnings: () => string[] } {
  const lines: string[] = [];
  return {
    logger: pino<never>({ level: 'info' }, { write: (line: string) => lines.push(line) }),
    warnings: () => lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40).map((l) => l.msg),
  };
}

describe('bus over TLS with a password', () => {
  const url = () => `--nats-url=tls://127.0.0.1:${passwordNats.port}`;

  it('connects with the CA and the password given as flags, and carries a batch', async () => {
    const options = configFor([url(), `--nats-tls-ca=${tls.caFile}`, '--nats-user=kappa', '--nats-password=s3cret-pass']);
    const bus = await connectBus({ ...options, name: 'secure', logger: silent, registry: createRegistry('secure') });
    try {
      await bus.ensureStreams();
      await bus.publishBatch('kappa.flow.joined', newFlowBatch({ batchId: 'tls-1' }));
      const info = await bus.streamInfo('KAPPA_FLOWS');
      expect(info.state.messages).toBe(1);
    } finally {
      await bus.close();
    }
  });

  it('refuses a client that does not speak TLS', async () => {
    expect(await tryConnect([`--nats-url=nats://127.0.0.1:${passwordNats.port}`, '--nats-user=kappa', '--nats-password=s3cret-pass'])).toBeInstanceOf(BusConnectError);
  });

  it('refuses a wrong password, and the error does not print it', async () => {
    const error = await tryConnect([url(), `--nats-tls-ca=${tls.caFile}`, '--nats-user=kappa', '--nats-password=wrong-pass']);
    expect(error).toBeInstanceOf(BusConnectError);
    expect(String(error)).toMatch(/authorization/i);
    expect(String(error)).not.toContain('wrong-pass');
  });

  it('refuses a server whose certificate is not signed by the given CA', async () => {
    expect(await tryConnect([url(), '--nats-user=kappa', '--nats-password=s3cret-pass'])).toBeInstanceOf(BusConnectError);
  });
});

describe('bus over mutual TLS with an nkey user', () => {
  const url = () => `--nats-url=tls://127.0.0.1:${nkeyNats.port}`;
  const clientCert = () => [`--nats-tls-ca=${tls.caFile}`, `--nats-tls-cert=${tls.clientCertFile}`, `--nats-tls-key=${tls.clientKeyFile}`];

  it('connects with the client certificate and --nats-nkey-seed, carries a batch, and logs no warning', async () => {
    const recording = recordingLogger();
    expect(await tryConnect([url(), ...clientCert(), `--nats-nkey-seed=${seedFile}`], recording.logger)).toBeUndefined();
    expect(recording.warnings()).toEqual([]);
  });

  it('refuses a client without the seed', async () => {
    const error = await tryConnect([url(), ...clientCert()]);
    expect(error).toBeInstanceOf(BusConnectError);
    expect(String(error)).toMatch(/authorization/i);
  });

  it('refuses a client with another nkey seed', async () => {
    expect(await tryConnect([url(), ...clientCert(), `--nats-nkey-seed=${otherSeedFile}`])).toBeInstanceOf(BusConnectError);
  });

  it('refuses a client without a client certificate', async () => {
    expect(await tryConnect([url(), `--nats-tls-ca=${tls.caFile}`, `--nats-nkey-seed=${seedFile}`])).toBeInstanceOf(BusConnectError);
  });

  it('refuses a plaintext client', async () => {
    expect(await tryConnect([`--nats-url=nats://127.0.0.1:${nkeyNats.port}`, `--nats-nkey-seed=${seedFile}`])).toBeInstanceOf(BusConnectError);
  });
});

describe('bus over an open nats-server', () => {
  it('still connects, and logs exactly one warning naming the TLS and credential flags', async () => {
    const open = await startNatsServer();
    try {
      const recording = recordingLogger();
      expect(await tryConnect([`--nats-url=${open.url}`], recording.logger)).toBeUndefined();
      expect(recording.warnings()).toEqual([expect.stringMatching(/^the NATS link is plaintext .*--nats-tls-ca.* and unauthenticated.*--nats-nkey-seed/)]);
    } finally {
      await open.stop();
    }
  });
});
