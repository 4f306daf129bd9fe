// KubeTags' links with the project's TLS material (tools/make-ca.sh) and the real grpc-js client:
// plaintext clients refused by a TLS server, certificate-less clients by a mutual-TLS one, calls
// without the right bearer token answered UNAUTHENTICATED; one start warning per insecure setup.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, credentials, Metadata, status } from '@grpc/grpc-js';
import type { ChannelCredentials, MethodDefinition, ServiceError } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { create, kubeTagsServiceDefinition, LookupRequestSchema } from '@kappa/contracts';
import type { GrpcServerSecurity, LookupRequest, LookupResponse } from '@kappa/contracts';
import { makeTlsMaterial } from '@kappa/testing';
import type { TlsMaterial } from '@kappa/testing';
import { startKubeTagsServer } from '../src/grpc-server.js';

let tls: TlsMaterial;
let tokenFile: string;
const TOKEN = 'kubetags-token-93c1d2';
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(() => {
  tls = makeTlsMaterial();
  tokenFile = join(tls.dir, 'grpc.token');
  writeFileSync(tokenFile, TOKEN);
});
afterAll(() => tls?.remove());
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A KubeTags server without a cluster (every Lookup answers found=false), its log collected. */
async function kubeTags(security: GrpcServerSecurity): Promise<{ address: string; warnings: () => string[]; log: () => string }> {
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
  const server = await startKubeTagsServer(() => undefined, { port: 0, host: '127.0.0.1', security, logger });
  cleanups.push(() => server.stop());
  return {
    address: `127.0.0.1:${server.port}`,
    warnings: () => lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40).map((l) => l.msg),
    log: () => lines.join(''),
  };
}

/** One Lookup with the real grpc-js client: 'answered', or the status code it was refused with. */
function lookup(address: string, channel: ChannelCredentials, token?: string): Promise<'answered' | number> {
  const client = new Client(address, channel);
  cleanups.push(() => client.close());
  const method = kubeTagsServiceDefinition.Lookup as MethodDefinition<LookupRequest, LookupResponse>;
  const metadata = new Metadata();
  if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
  const request = create(LookupRequestSchema, { key: { case: 'ip', value: '10.244.1.5' } });
  return new Promise((resolve) => {
    client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, metadata, { deadline: Date.now() + 10_000 }, (error: ServiceError | null, response?: LookupResponse) => {
      resolve(error ? error.code : response?.found === false ? 'answered' : -1);
    });
  });
}

const pem = (file: string) => readFileSync(file);
const trusting = () => credentials.createSsl(pem(tls.caFile));
const withClientCert = () => credentials.createSsl(pem(tls.caFile), pem(tls.clientKeyFile), pem(tls.clientCertFile));
const plaintext = () => credentials.createInsecure();

describe('KubeTags gRPC security', () => {
  it('over TLS answers a client trusting the project CA and refuses a plaintext one', async () => {
    const s = await kubeTags({ certFile: tls.serverCertFile, keyFile: tls.serverKeyFile });
    expect(await lookup(s.address, trusting())).toBe('answered');
    expect(await lookup(s.address, plaintext())).toBe(status.UNAVAILABLE);
    expect(s.warnings()).toEqual([expect.stringMatching(/unauthenticated.*--grpc-tls-client-ca.*--grpc-token-file/)]);
  });

  it('with --grpc-tls-client-ca refuses a client without a certificate and answers one with the project client certificate', async () => {
    const s = await kubeTags({ certFile: tls.serverCertFile, keyFile: tls.serverKeyFile, clientCaFile: tls.caFile });
    expect(await lookup(s.address, trusting())).toBe(status.UNAVAILABLE);
    expect(await lookup(s.address, withClientCert())).toBe('answered');
    expect(s.warnings()).toEqual([]);
  });

  it('with --grpc-token-file answers UNAUTHENTICATED without a token or with a wrong one, answers the right one, never logs either', async () => {
    const s = await kubeTags({ certFile: tls.serverCertFile, keyFile: tls.serverKeyFile, clientCaFile: tls.caFile, tokenFile });
    expect(await lookup(s.address, withClientCert())).toBe(status.UNAUTHENTICATED);
    expect(await lookup(s.address, withClientCert(), 'wrong-token')).toBe(status.UNAUTHENTICATED);
    expect(await lookup(s.address, withClientCert(), `${TOKEN}x`)).toBe(status.UNAUTHENTICATED);
    expect(await lookup(s.address, withClientCert(), TOKEN)).toBe('answered');
    expect(s.log()).not.toContain(TOKEN);
    expect(s.log()).not.toContain('wrong-token');
    expect(s.warnings()).toEqual([]);
  });

  it('without TLS still answers plaintext and logs exactly one warning naming every flag', async () => {
    const s = await kubeTags({});
    expect(await lookup(s.address, plaintext())).toBe('answered');
    expect(s.warnings()).toEqual([expect.stringMatching(/^KubeTags gRPC is plaintext \(set --grpc-tls-cert and --grpc-tls-key\) and unauthenticated \(set --grpc-tls-client-ca .*--grpc-token-file\)/)]);
  });

  it('refuses to start on a client CA without a server certificate', async () => {
    await expect(startKubeTagsServer(() => undefined, { port: 0, host: '127.0.0.1', security: { clientCaFile: tls.caFile } })).rejects.toThrow(/--grpc-tls-client-ca needs --grpc-tls-cert/);
  });
});
