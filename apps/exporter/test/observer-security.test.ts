// The Observer's links with the project's TLS material (tools/make-ca.sh): a TLS Observer refuses
// plaintext clients, a mutual-TLS one clients without a certificate, a token one calls without
// the right bearer token (UNAUTHENTICATED, also after the token file is rotated); each insecure
// setup logs one warning naming the flags that fix it.
import { readFileSync as readPem, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, credentials, Metadata, status } from '@grpc/grpc-js';
import type { ChannelCredentials, ServiceError } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GetFlowsRequestSchema, create, observerServiceDefinition } from '@kappa/contracts';
import type { GetFlowsRequest, GetFlowsResponse, GrpcServerSecurity } from '@kappa/contracts';
import { makeTlsMaterial } from '@kappa/testing';
import type { TlsMaterial } from '@kappa/testing';
import { FlowRing } from '../src/observer/ring.js';
import { ObserverServer } from '../src/observer/server.js';
import { knownRecord, pushRecord } from './fixtures.js';

let tls: TlsMaterial;
let tokenFile: string;
const TOKEN = 'observer-token-5b1f0c9e';
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(() => {
  tls = makeTlsMaterial();
  tokenFile = join(tls.dir, 'observer.token');
  writeFileSync(tokenFile, `${TOKEN}\n`);
});
afterAll(() => tls?.remove());
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Starts an Observer holding rec-0..rec-4, with its warnings collected. */
async function observer(security: GrpcServerSecurity): Promise<{ address: string; warnings: string[]; log: string }> {
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
  const ring = new FlowRing(100, 600_000_000_000n);
  const now = BigInt(Date.now()) * 1_000_000n;
  for (let i = 0; i < 5; i++) pushRecord(ring, knownRecord(i), now);
  const server = new ObserverServer({ ring, host: '127.0.0.1', port: 0, logger, security });
  await server.start();
  cleanups.push(() => server.close());
  const warnings = () => lines.map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40).map((l) => l.msg);
  return {
    address: `127.0.0.1:${server.port}`,
    get warnings() {
      return warnings();
    },
    get log() {
      return lines.join('');
    },
  };
}

type Outcome = { ids: string[] } | { code: number; details: string };

/** GetFlows with the real grpc-js client: the record ids, or the status the call ended with. */
function getFlows(address: string, channel: ChannelCredentials, metadata = new Metadata()): Promise<Outcome> {
  const client = new Client(address, channel);
  cleanups.push(() => client.close());
  const method = observerServiceDefinition.GetFlows!;
  const stream = client.makeServerStreamRequest<GetFlowsRequest, GetFlowsResponse>(
    method.path,
    method.requestSerialize as (v: GetFlowsRequest) => Buffer,
    method.responseDeserialize as (b: Buffer) => GetFlowsResponse,
    create(GetFlowsRequestSchema, {}),
    metadata,
    { deadline: Date.now() + 10_000 },
  );
  const ids: string[] = [];
  return new Promise((resolve) => {
    stream.on('data', (r: GetFlowsResponse) => ids.push(r.flow!.id));
    stream.on('error', (e: ServiceError) => resolve({ code: e.code, details: e.details }));
    stream.on('end', () => resolve({ ids }));
  });
}

const ALL = ['rec-0', 'rec-1', 'rec-2', 'rec-3', 'rec-4'];
const caOnly = () => credentials.createSsl(readPem(tls.caFile));
const withCert = () => credentials.createSsl(readPem(tls.caFile), readPem(tls.clientKeyFile), readPem(tls.clientCertFile));
const bearer = (token: string) => {
  const m = new Metadata();
  m.set('authorization', `Bearer ${token}`);
  return m;
};

describe('Observer over TLS', () => {
  it('serves a client that trusts the project CA, refuses a plaintext client, and warns that nobody is authenticated', async () => {
    const o = await observer({ certFile: tls.serverCertFile, keyFile: tls.serverKeyFile });
    expect(await getFlows(o.address, caOnly())).toEqual({ ids: ALL });
    const plain = await getFlows(o.address, credentials.createInsecure());
    expect(plain).toMatchObject({ code: status.UNAVAILABLE });
    expect(o.warnings).toHaveLength(1);
    expect(o.warnings[0]).toContain('unauthenticated');
    expect(o.warnings[0]).toContain('--observer-tls-client-ca');
    expect(o.warnings[0]).toContain('--observer-token-file');
    expect(o.warnings[0]).not.toContain('plaintext');
  });

  it('with a client CA (mutual TLS) refuses a client without a certificate and serves one with the project client certificate, without a warning', async () => {
    const o = await observer({ certFile: tls.serverCertFile, keyFile: tls.serverKeyFile, clientCaFile: tls.caFile });
    const noCert = await getFlows(o.address, caOnly());
    expect(noCert).toMatchObject({ code: status.UNAVAILABLE });
    expect(await getFlows(o.address, withCert())).toEqual({ ids: ALL });
    expect(o.warnings).toEqual([]);
  });

  it('with a token file answers UNAUTHENTICATED without the token or with a wrong one, serves the right one, and never logs it', async () => {
    const o = await observer({ certFile: tls.serverCertFile, keyFile: tls.serverKeyFile, tokenFile });
    expect(await getFlows(o.address, caOnly())).toMatchObject({ code: status.UNAUTHENTICATED });
    expect(await getFlows(o.address, caOnly(), bearer('not-the-token'))).toMatchObject({ code: status.UNAUTHENTICATED });
    expect(await getFlows(o.address, caOnly(), bearer(TOKEN.slice(0, -1)))).toMatchObject({ code: status.UNAUTHENTICATED });
    const basic = new Metadata();
    basic.set('authorization', TOKEN);
    expect(await getFlows(o.address, caOnly(), basic)).toMatchObject({ code: status.UNAUTHENTICATED });
    expect(await getFlows(o.address, caOnly(), bearer(TOKEN))).toEqual({ ids: ALL });
    expect(o.warnings).toEqual([]);
    expect(o.log).not.toContain(TOKEN);
    expect(o.log).not.toContain('not-the-token');
  });

  it('re-reads a rotated token file: the old token is refused, the new one served', async () => {
    const rotating = join(tls.dir, 'rotating.token');
    writeFileSync(rotating, 'first-token');
    const o = await observer({ certFile: tls.serverCertFile, keyFile: tls.serverKeyFile, tokenFile: rotating });
    expect(await getFlows(o.address, caOnly(), bearer('first-token'))).toEqual({ ids: ALL });
    writeFileSync(rotating, 'second-token-longer');
    // The file is checked at most once a second: poll until the rotation is seen (bounded).
    let outcome: Outcome = await getFlows(o.address, caOnly(), bearer('first-token'));
    for (let i = 0; i < 30 && 'ids' in outcome; i++) {
      await new Promise((r) => setTimeout(r, 200));
      outcome = await getFlows(o.address, caOnly(), bearer('first-token'));
    }
    expect(outcome).toMatchObject({ code: status.UNAUTHENTICATED });
    expect(await getFlows(o.address, caOnly(), bearer('second-token-longer'))).toEqual({ ids: ALL });
  });
});

describe('Observer without TLS', () => {
  it('still serves plaintext (old setups, tests) and logs exactly one warning naming the TLS and auth flags', async () => {
    const o = await observer({});
    expect(await getFlows(o.address, credentials.createInsecure())).toEqual({ ids: ALL });
    expect(o.warnings).toHaveLength(1);
    expect(o.warnings[0]).toMatch(/plaintext.*--observer-tls-cert.*--observer-tls-key.*unauthenticated.*--observer-tls-client-ca.*--observer-token-file/);
  });

  it('a token works over plaintext too, and the warning then only says plaintext', async () => {
    const o = await observer({ tokenFile });
    expect(await getFlows(o.address, credentials.createInsecure())).toMatchObject({ code: status.UNAUTHENTICATED });
    expect(await getFlows(o.address, credentials.createInsecure(), bearer(TOKEN))).toEqual({ ids: ALL });
    expect(o.warnings).toHaveLength(1);
    expect(o.warnings[0]).toContain('plaintext');
    expect(o.warnings[0]).not.toContain('unauthenticated');
  });

  it('refuses to start with a certificate but no key, or an empty token file', async () => {
    const ring = new FlowRing(10, 1_000_000_000n);
    const logger = pino({ level: 'silent' });
    await expect(new ObserverServer({ ring, host: '127.0.0.1', port: 0, logger, security: { certFile: tls.serverCertFile } }).start()).rejects.toThrow(/--observer-tls-cert and --observer-tls-key go together/);
    const empty = join(tls.dir, 'empty.token');
    writeFileSync(empty, '\n');
    await expect(new ObserverServer({ ring, host: '127.0.0.1', port: 0, logger, security: { tokenFile: empty } }).start()).rejects.toThrow(/--observer-token-file .* is empty/);
  });
});
