// The relay over real gRPC: two exporter replicas' Observers, each with its share of the flows in
// its own ring and flow store, and a third store holding every flow (the truth the merged answers
// are checked against: one replica would have answered that). A call to the relaying replica
// answers with every flow once, in flow time, with `last`, `limit` and filters applied to the
// whole; aggregates equal the single store's exactly; a follower gets new flows of both; a
// replica that started later joins a running follow; a replica that is down leaves a trailer
// naming it, and the answer holds the rest.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Metadata, StatusObject } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AggregateSchema, OBSERVER_MISSING_TRAILER, ObserverClient, create } from '@kappa/contracts';
import type { FlowRecord, FlowsRequestInit, GetFlowsResponse } from '@kappa/contracts';
import { ObserverRelay } from '../src/observer/relay.js';
import type { ObserverPeer } from '../src/observer/relay.js';
import { FlowRing } from '../src/observer/ring.js';
import { ObserverServer } from '../src/observer/server.js';
import { FlowStore } from '../src/store/store.js';
import { knownRecord, pushRecord, viewOf } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'kappa-relay-test-'));
const logger = pino({ level: 'silent' });
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const nowNs = () => BigInt(Date.now()) * 1_000_000n;
const NOW = nowNs();
/** Record i, its flow time i seconds into the last two minutes (the store keeps 24 h). */
function record(i: number): FlowRecord {
  const endNs = NOW - 120_000_000_000n + BigInt(i) * 1_000_000_000n;
  return knownRecord(i, { startNs: endNs - 5_000_000_000n, endNs });
}
const ALL = Array.from({ length: 60 }, (_, i) => record(i));
// Replica A holds records 0, 1, 4, 5, …, B the others: every workload pair has records in both.
// A holds rec-10 too (a batch redelivered to the other replica after a lost ack lands in both
// stores): the merged flows have it once. (Its vantage is dst and it has no drops, so no
// aggregate counts it: sums cannot tell a redelivered record.)
const SHARE_A = [...ALL.filter((_, i) => i % 4 < 2), ALL[10]!];
const SHARE_B = ALL.filter((_, i) => i % 4 >= 2);

let storeCount = 0;
async function storeOf(records: readonly FlowRecord[]): Promise<FlowStore> {
  const store = new FlowStore({ dir: join(dir, `store-${storeCount++}`), retentionMs: 24 * 3_600_000, maxBytes: 1024 ** 3, segmentRecords: 25, segmentAgeMs: 3_600_000 });
  await store.open();
  for (let b = 0; b < records.length; b += 10) await store.append(viewOf(records.slice(b, b + 10)), nowNs());
  return store;
}

interface Replica {
  address: string;
  ring: FlowRing;
  server: ObserverServer;
}

async function replica(records: readonly FlowRecord[], peers?: () => ObserverPeer[]): Promise<Replica> {
  const ring = new FlowRing(1000, 600_000_000_000n);
  for (const r of records) pushRecord(ring, r, nowNs());
  const store = await storeOf(records);
  const relay = peers ? new ObserverRelay({ peers, security: {}, logger, timeoutMs: 5000 }) : undefined;
  const server = new ObserverServer({ ring, store, ...(relay ? { relay } : {}), host: '127.0.0.1', port: 0, logger });
  await server.start();
  cleanups.push(async () => {
    await server.close();
    await store.close();
  });
  return { address: `127.0.0.1:${server.port}`, ring, server };
}

/** Every flow of a GetFlows call, and its trailers' missing replicas. */
function flows(address: string, init: FlowsRequestInit, scope?: 'local'): Promise<{ ids: string[]; missing: string | undefined }> {
  const client = new ObserverClient(address, {}, scope ? { scope } : {});
  return new Promise((resolve, reject) => {
    const ids: string[] = [];
    let missing: string | undefined;
    const stream = client.flows(init);
    stream.on('data', (r: GetFlowsResponse) => ids.push(r.flow!.id));
    stream.on('status', (s: StatusObject) => {
      missing = s.metadata.get(OBSERVER_MISSING_TRAILER)[0] as string | undefined;
    });
    stream.on('error', reject);
    stream.on('end', () => {
      // 'status' comes after 'end' in grpc-js: let it arrive.
      setTimeout(() => {
        client.close();
        resolve({ ids, missing });
      }, 50);
    });
  });
}

const byTime = (records: readonly FlowRecord[]) => [...records].sort((a, b) => (a.endNs < b.endNs ? -1 : a.endNs > b.endNs ? 1 : 0)).map((r) => r.id);

describe('the Observer relay: any replica gives the whole picture', () => {
  let a: Replica;
  let b: Replica;
  let truth: FlowStore;
  let peers: ObserverPeer[];

  beforeAll(async () => {
    truth = await storeOf(ALL);
  });
  afterAll(async () => truth.close());

  async function twoReplicas(): Promise<void> {
    b = await replica(SHARE_B);
    peers = [{ instance: 'exporter-b', address: b.address }];
    a = await replica(SHARE_A, () => peers);
  }

  it('answers a range with every replica\'s flows, each once, in flow time, last/limit/filter over the whole', async () => {
    await twoReplicas();
    const all = await flows(a.address, {});
    expect(all.ids).toEqual(byTime(ALL));
    expect(all.missing).toBeUndefined();
    expect((await flows(a.address, { last: 7 })).ids).toEqual(byTime(ALL).slice(-7));
    expect((await flows(a.address, { limit: 9 })).ids).toEqual(byTime(ALL).slice(0, 9));
    const query = 'dst.port >= 8010 and dst.port < 8020';
    const expected = (await truth.flows({ sinceNs: 0n, untilNs: 0n, filter: query, last: 0, limit: 0 })).map((f) => f.record.id);
    expect(expected.length).toBeGreaterThan(5);
    expect((await flows(a.address, { query })).ids).toEqual(expected);
    // Asked for its own share alone (what a relay asks the others), it gives only that.
    expect((await flows(a.address, {}, 'local')).ids).toEqual(byTime(SHARE_A));
  });

  it('aggregates equal those of one store holding every flow, at every level and order', async () => {
    await twoReplicas();
    const client = new ObserverClient(a.address, {});
    cleanups.push(() => client.close());
    for (const level of ['namespace', 'workload', 'pod', 'ip'] as const) {
      for (const orderBy of ['bytes', 'rtt', 'dropped'] as const) {
        for (const limit of [0, 3]) {
          const { response: got } = await client.aggregates({ level, orderBy, limit });
          const want = await truth.aggregate({ sinceNs: 0n, untilNs: got.untilNs, filter: '', level, side: 'pair', orderBy, limit });
          expect(got.aggregates, `${level} by ${orderBy}, limit ${limit}`).toEqual(want.map((r) => create(AggregateSchema, r)));
        }
      }
    }
  });

  it('status counts the records of every replica\'s store', async () => {
    await twoReplicas();
    const client = new ObserverClient(a.address, {});
    cleanups.push(() => client.close());
    const { response: status } = await client.status();
    expect(status.store?.records).toBe(BigInt(SHARE_A.length + SHARE_B.length));
  });

  it('a follower gets the new flows of every replica, also of one that starts after it', async () => {
    await twoReplicas();
    const client = new ObserverClient(a.address, {});
    cleanups.push(() => client.close());
    const got: string[] = [];
    const stream = client.flows({ follow: true, sinceNs: NOW });
    cleanups.push(() => stream.cancel());
    stream.on('error', () => undefined);
    await new Promise<Metadata>((resolve) => stream.once('metadata', resolve));
    stream.on('data', (r: GetFlowsResponse) => got.push(r.flow!.id));
    const fresh = (i: number) => knownRecord(i, { startNs: nowNs(), endNs: nowNs() });
    pushRecord(b.ring, fresh(100), nowNs());
    pushRecord(a.ring, fresh(101), nowNs());
    await until(() => got.length >= 2);
    expect(got.sort()).toEqual(['rec-100', 'rec-101']);
    // A third replica starts: the follow picks it up at its next look for replicas (5 s).
    const c = await replica([]);
    peers = [...peers, { instance: 'exporter-c', address: c.address }];
    await until(async () => {
      pushRecord(c.ring, fresh(102 + got.length), nowNs());
      await new Promise((r) => setTimeout(r, 500));
      return got.some((id) => Number(id.slice(4)) >= 102);
    }, 15_000);
  });

  it('a follower names a replica it cannot follow once, however often it retries it', async () => {
    await twoReplicas();
    const dead = await replica([]);
    const deadAddress = dead.address;
    await dead.server.close();
    peers = [...peers, { instance: 'exporter-dead', address: deadAddress }];
    const client = new ObserverClient(a.address, {});
    cleanups.push(() => client.close());
    const stream = client.flows({ follow: true, sinceNs: NOW, limit: 1 });
    let headers: string | undefined;
    let trailer: string | undefined;
    stream.once('metadata', (m: Metadata) => (headers = m.get(OBSERVER_MISSING_TRAILER)[0] as string | undefined));
    const ended = new Promise<void>((resolve) =>
      stream.on('status', (s: StatusObject) => {
        trailer = s.metadata.get(OBSERVER_MISSING_TRAILER)[0] as string | undefined;
        resolve();
      }),
    );
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    await until(() => headers !== undefined);
    expect(headers).toMatch(/^exporter-dead \(127\.0\.0\.1:\d+\): [^;]+$/);
    // Two looks for replicas later (5 s each), the dead one was tried twice more.
    await new Promise((r) => setTimeout(r, 11_000));
    pushRecord(b.ring, knownRecord(200, { startNs: nowNs(), endNs: nowNs() }), nowNs());
    await ended;
    expect(trailer).toMatch(/^exporter-dead \(127\.0\.0\.1:\d+\): [^;]+$/);
  }, 30_000);

  it('a replica that does not answer is named in the trailer, and the answer holds the others\'', async () => {
    await twoReplicas();
    await b.server.close();
    const answer = await flows(a.address, {});
    expect(answer.ids).toEqual(byTime(SHARE_A));
    expect(answer.missing).toMatch(/^exporter-b \(127\.0\.0\.1:\d+\): /);
  });
});

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
