// `kappa observe` against a real exporter process fed through a real nats-server: it returns
// exactly the records that match its filters, as canonical protobuf JSON or as a table.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { IpProtocol, Vantage, flowRecordFromJson, flowRecordToJson, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort, startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { buildApps, cliMain, exporterMain, runKappa, startProcess, until } from './run.js';

let nats: TestServer;
let bus: Bus;
let exporter: ReturnType<typeof startProcess>;
let server: string;
let dir: string;
const published: FlowRecord[] = [];

function record(i: number): FlowRecord {
  const v6 = i % 4 === 3;
  return newFlowRecord({
    id: `r${i}`,
    node: `node-${i % 3}`,
    vantage: i % 2 === 0 ? Vantage.SRC : Vantage.DST,
    startNs: 1_764_000_000_000_000_000n + BigInt(i),
    endNs: 1_764_000_010_000_000_000n + BigInt(i),
    protocol: i % 5 === 0 ? IpProtocol.UDP : IpProtocol.TCP,
    src: {
      ip: v6 ? `2001:db8::${i}` : `10.0.0.${i}`,
      port: 40000 + i,
      process: { pid: 100 + i, name: i % 2 ? 'curl' : 'python3' },
      kube: { objectName: `client-${i % 4}`, objectNamespace: `team-${i % 2}`, objectType: 'pod', workloadName: `client-${i % 4}` },
    },
    dst: {
      ip: v6 ? '2001:db8::ffff' : `10.0.1.${i % 6}`,
      port: 8000 + (i % 6),
      process: { name: i % 3 ? 'nginx' : 'redis-server' },
      kube: { objectName: `server-${i % 6}`, objectNamespace: 'backend', objectType: 'pod', workloadName: i % 3 ? 'web' : 'cache' },
    },
    bytes: BigInt(100 * i + 1),
    packets: BigInt(i + 1),
    reverseBytes: 10n,
    reversePackets: 1n,
    tcp: { srttUs: 250 + i },
    joined: i % 3 !== 1,
    clusterId: 1,
  });
}

async function publish(id: string, records: FlowRecord[]): Promise<void> {
  await bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: id, producer: 'test', records }));
  published.push(...records);
}

async function observe(...args: string[]): Promise<{ code: number | null; records: FlowRecord[]; stdout: string; stderr: string }> {
  const result = await runKappa(['observe', `--server=${server}`, '--output=json', ...args]);
  const records = result.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => flowRecordFromJson(JSON.parse(l)));
  return { ...result, records };
}

const ids = (records: FlowRecord[]) => records.map((r) => r.id).sort();
const expected = (keep: (r: FlowRecord) => boolean) => ids(published.filter(keep));
const either = (r: FlowRecord, read: (e: NonNullable<FlowRecord['src']>) => unknown, value: unknown) => read(r.src!) === value || read(r.dst!) === value;

beforeAll(async () => {
  buildApps();
  nats = await startNatsServer();
  bus = await connectBus({ servers: [nats.url], name: 'test', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
  await bus.ensureStreams();
  const port = await freePort();
  server = `127.0.0.1:${port}`;
  dir = mkdtempSync(join(tmpdir(), 'kx-observe-'));
  exporter = startProcess(exporterMain, [
    `--nats-url=${nats.url}`,
    `--observer-port=${port}`,
    '--observer-host=127.0.0.1',
    '--metrics-port=0',
    `--jsonl=${join(dir, 'flows.jsonl')}`,
    '--instance=test-exporter',
  ]);
  await until(() => exporter.stderr().includes('exporter started'), 60_000, `exporter start: ${exporter.stderr()}`);
  await publish('b1', Array.from({ length: 30 }, (_, i) => record(i)));
  await publish('b2', Array.from({ length: 30 }, (_, i) => record(30 + i)));
  await until(async () => (await observe()).records.length === 60, 30_000, 'exporter took 60 records');
});

afterAll(async () => {
  exporter?.child.kill('SIGTERM');
  await bus?.close();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('kappa observe --output json', () => {
  it('without filters prints every buffered record once, as canonical protobuf JSON, and exits 0', async () => {
    const result = await observe();
    expect(result.code).toBe(0);
    expect(ids(result.records)).toEqual(ids(published));
    const first = result.stdout.split('\n')[0]!;
    expect(JSON.parse(first)).toEqual(flowRecordToJson(published.find((r) => r.id === result.records[0]!.id)!));
  });

  it.each([
    ['--node=node-1', (r: FlowRecord) => r.node === 'node-1'],
    ['--namespace=team-1', (r: FlowRecord) => either(r, (e) => e.kube?.objectNamespace, 'team-1')],
    ['--pod=server-2', (r: FlowRecord) => either(r, (e) => e.kube?.objectName, 'server-2')],
    ['--workload=cache', (r: FlowRecord) => either(r, (e) => e.kube?.workloadName, 'cache')],
    ['--process=redis-server', (r: FlowRecord) => either(r, (e) => e.process?.name, 'redis-server')],
    ['--port=8004', (r: FlowRecord) => either(r, (e) => e.port, 8004)],
    ['--protocol=udp', (r: FlowRecord) => r.protocol === IpProtocol.UDP],
    ['--vantage=dst', (r: FlowRecord) => r.vantage === Vantage.DST],
    ['--joined=false', (r: FlowRecord) => !r.joined],
    ['--ip=2001:db8:0::ffff', (r: FlowRecord) => either(r, (e) => e.ip, '2001:db8::ffff')],
    ['--ip=10.0.0.7,10.0.1.2', (r: FlowRecord) => either(r, (e) => e.ip, '10.0.0.7') || either(r, (e) => e.ip, '10.0.1.2')],
    ['--node=node-0,node-2 --protocol=tcp --joined=true --namespace=team-0', (r: FlowRecord) => r.node !== 'node-1' && r.protocol === IpProtocol.TCP && r.joined && either(r, (e) => e.kube?.objectNamespace, 'team-0')],
  ])('%s returns exactly the matching records', async (flags, keep) => {
    const want = expected(keep);
    expect(want.length).toBeGreaterThan(0);
    expect(want.length).toBeLessThan(published.length);
    const result = await observe(...flags.split(' '));
    expect(result.code).toBe(0);
    expect(ids(result.records)).toEqual(want);
  });

  it('--limit stops after that many records', async () => {
    const result = await observe('--limit=7', '--vantage=src');
    expect(result.code).toBe(0);
    expect(result.records).toHaveLength(7);
    for (const r of result.records) expect(r.vantage).toBe(Vantage.SRC);
  });

  it('--since returns only records received within that period', async () => {
    await new Promise((r) => setTimeout(r, 1500));
    const before = new Date();
    const fresh = Array.from({ length: 5 }, (_, i) => record(100 + i));
    await publish('b3', fresh);
    await until(async () => (await observe()).records.length === published.length, 20_000, 'b3 buffered');
    expect(ids((await observe(`--since=${before.toISOString()}`)).records)).toEqual(ids(fresh));
    // A duration reaching back before the first batch returns everything.
    expect((await observe('--since=10m')).records).toHaveLength(published.length);
  });

  it('--follow prints buffered then new matching records until interrupted, then exits 0', async () => {
    const follow = startProcess(cliMain, ['observe', `--server=${server}`, '--output=json', '--follow', '--node=node-2']);
    const lines = () => follow.stdout().split('\n').filter((l) => l.trim() !== '');
    const buffered = published.filter((r) => r.node === 'node-2').length;
    await until(() => lines().length === buffered, 20_000, `buffered node-2 records: ${follow.stderr()}`);
    const live = Array.from({ length: 9 }, (_, i) => record(200 + i));
    await publish('b4', live);
    const newOnNode2 = live.filter((r) => r.node === 'node-2');
    await until(() => lines().length === buffered + newOnNode2.length, 20_000, 'live node-2 records');
    const tail = lines().slice(buffered).map((l) => flowRecordFromJson(JSON.parse(l)));
    expect(ids(tail)).toEqual(ids(newOnNode2));
    const exited = new Promise<number | null>((resolve) => follow.child.on('exit', (code) => resolve(code)));
    follow.child.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});

describe('kappa observe (table)', () => {
  it('prints a header and one row per record with both ends named', async () => {
    const result = await runKappa(['observe', `--server=${server}`, '--ip=10.0.0.4']);
    expect(result.code).toBe(0);
    const lines = result.stdout.split('\n').filter((l) => l.trim() !== '');
    expect(lines[0]).toMatch(/^TIME\s+NODE\s+VANTAGE\s+SOURCE/);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toContain('team-0/client-0[python3] 10.0.0.4:40004');
    expect(lines[1]).toContain('backend/server-4[nginx] 10.0.1.4:8004');
    expect(lines[1]).toMatch(/node-1\s+src/);
    expect(lines[1]).toMatch(/tcp\s+411\s+6\s+254µs\s+no$/);
  });

  it('exits 1 and says so when no Observer listens', async () => {
    const result = await runKappa(['observe', `--server=127.0.0.1:${await freePort()}`, '--connect-timeout=1s']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('cannot reach the Observer');
  });
});
