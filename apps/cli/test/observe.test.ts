// `kappa observe` and `kappa top` against a real exporter process (with its flow store) fed
// through a real nats-server: every selection flag, the time range, --last, --follow, each output
// format, filter errors with their position, and the top talkers, each checked against the
// published records (the oracle), not against the code under test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { IpProtocol, Vantage, flowRecordFromJson, flowRecordToJson, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { Endpoint, FlowRecord } from '@kappa/contracts';
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
const SECOND = 1_000_000_000n;
/** Flow times: record i ends at base + i seconds, all within the last hour. */
const base = (BigInt(Date.now()) - 1_800_000n) * 1_000_000n;

function record(i: number): FlowRecord {
  const v6 = i % 4 === 3;
  const record = newFlowRecord({
    id: `r${i}`,
    node: `node-${i % 3}`,
    vantage: i % 2 === 0 ? Vantage.SRC : Vantage.DST,
    startNs: base + BigInt(i) * SECOND - 10n * SECOND,
    endNs: base + BigInt(i) * SECOND,
    protocol: i % 5 === 0 ? IpProtocol.UDP : IpProtocol.TCP,
    src: {
      ip: v6 ? `2001:db8::${i}` : `10.0.${i % 2}.${i}`,
      port: 40000 + i,
      process: { pid: 100 + i, name: i % 2 ? 'curl' : 'python3' },
      kube: { objectName: `client-${i % 4}`, objectNamespace: `team-${i % 2}`, objectType: 'pod', workloadName: `client-${i % 4}`, labels: { app: `client-${i % 4}`, tier: 'front' } },
    },
    dst: {
      ip: v6 ? '2001:db8::ffff' : `10.0.1.${i % 6}`,
      port: 8000 + (i % 6),
      process: { name: i % 3 ? 'nginx' : 'redis-server' },
      kube: { objectName: `server-${i % 6}`, objectNamespace: 'backend', objectType: 'pod', workloadName: i % 3 ? 'web' : 'cache', labels: { app: i % 3 ? 'web' : 'cache' } },
    },
    bytes: BigInt(100 * i + 1),
    packets: BigInt(i + 1),
    reverseBytes: BigInt(10 + i),
    reversePackets: 1n,
    tcp: { srttUs: 250 + i, retransmits: i % 4 === 0 ? 2 : 0 },
    joined: i % 3 !== 1,
    clusterId: 1,
    // Some flows lost packets, some clients resolved their server by name, the UDP ones are DNS.
    ...(i % 7 === 4 ? { drops: { packets: 3n, bytes: 180n, reason: i % 2 ? 'NO_SOCKET' : 'NETFILTER_DROP', reasonPackets: 3n } } : {}),
    ...(i % 5 === 0 ? { dns: { queryName: i % 10 ? 'web.backend.svc' : 'gone.backend.svc', queryType: 1, rcode: i % 10 ? 0 : 3, queries: 1n, responses: 1n, latencyCount: 1n, latencySumUs: 1500n, latencyMaxUs: 1500n } } : {}),
  });
  if (i % 5 === 4) record.src!.peerDnsName = `server-${i % 6}.backend.svc`;
  return record;
}

async function publish(id: string, records: FlowRecord[]): Promise<void> {
  await bus.publishBatch(subjects.joined(0), newFlowBatch({ batchId: id, producer: 'test', records }));
  published.push(...records);
}

async function observe(...args: string[]): Promise<{ code: number | null; records: FlowRecord[]; stdout: string; stderr: string }> {
  const result = await runKappa(['observe', `--server=${server}`, '--output=json', ...args]);
  const records = result.code === 0 ? result.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => flowRecordFromJson(JSON.parse(l))) : [];
  return { ...result, records };
}

const ids = (records: FlowRecord[]) => records.map((r) => r.id);
const sorted = (list: string[]) => [...list].sort();
/** Published records that keep, in flow-time order (what kappa observe prints). */
const expected = (keep: (r: FlowRecord) => boolean) => ids(published.filter(keep).sort((a, b) => (a.endNs < b.endNs ? -1 : 1)));
type End = NonNullable<FlowRecord['src']>;
const either = (r: FlowRecord, read: (e: End) => unknown, value: unknown) => read(r.src!) === value || read(r.dst!) === value;
const inV4 = (ip: string, prefix: string) => ip.startsWith(prefix);

beforeAll(async () => {
  buildApps();
  nats = await startNatsServer();
  bus = await connectBus({ servers: [nats.url], name: 'test', logger: createLogger('test', 'silent'), registry: createRegistry('test') });
  await bus.ensureStreams();
  const port = await freePort();
  server = `127.0.0.1:${port}`;
  dir = mkdtempSync(join(tmpdir(), `kx-observe-${process.pid}-`));
  exporter = startProcess(exporterMain, [
    `--nats-url=${nats.url}`,
    `--observer-port=${port}`,
    '--observer-host=127.0.0.1',
    '--metrics-port=0',
    `--jsonl=${join(dir, 'flows.jsonl')}`,
    `--store-dir=${join(dir, 'store')}`,
    // Small segments, so queries cross sealed Parquet segments and the hot one.
    '--store-segment-records=25',
    '--instance=test-exporter',
  ]);
  await until(() => exporter.stderr().includes('exporter started'), 60_000, `exporter start: ${exporter.stderr()}`);
  // Out of flow-time order, as batches of several nodes arrive.
  await publish('b1', Array.from({ length: 30 }, (_, i) => record(59 - i)));
  await publish('b2', Array.from({ length: 30 }, (_, i) => record(i)));
  await until(async () => (await observe()).records.length === 60, 30_000, 'exporter stored 60 records');
});

afterAll(async () => {
  exporter?.child.kill('SIGTERM');
  await bus?.close();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('kappa observe selects with hubble-style flags', () => {
  it('without flags prints every stored record once, oldest flow first, as canonical protobuf JSON', async () => {
    const result = await observe();
    expect(result.code).toBe(0);
    expect(ids(result.records)).toEqual(expected(() => true));
    const first = result.stdout.split('\n')[0]!;
    expect(JSON.parse(first)).toEqual(flowRecordToJson(published.find((r) => r.id === result.records[0]!.id)!));
  });

  const kube = (e: End) => e.kube!;
  it.each<[string, (r: FlowRecord) => boolean]>([
    ['--from-pod=client-1', (r) => kube(r.src!).objectName === 'client-1'],
    ['--from-pod=team-0/client-2', (r) => kube(r.src!).objectName === 'client-2' && kube(r.src!).objectNamespace === 'team-0'],
    ['--to-pod=server-2 --to-pod=server-3', (r) => ['server-2', 'server-3'].includes(kube(r.dst!).objectName)],
    ['--pod=server-4', (r) => either(r, (e) => e.kube?.objectName, 'server-4')],
    ['--from-namespace=team-1', (r) => kube(r.src!).objectNamespace === 'team-1'],
    ['--to-namespace=team-1', () => false],
    ['-n backend --from-namespace=team-0', (r) => kube(r.src!).objectNamespace === 'team-0'],
    ['--from-workload=client-3', (r) => kube(r.src!).workloadName === 'client-3'],
    ['--to-workload=backend/cache', (r) => kube(r.dst!).workloadName === 'cache'],
    ['--workload=cache', (r) => either(r, (e) => e.kube?.workloadName, 'cache')],
    ['--from-ip=10.0.0.4', (r) => r.src!.ip === '10.0.0.4'],
    ['--to-ip=2001:db8:0::ffff', (r) => r.dst!.ip === '2001:db8::ffff'],
    ['--ip=10.0.1.2', (r) => either(r, (e: Endpoint) => e.ip, '10.0.1.2')],
    ['--from-cidr=10.0.1.0/24', (r) => inV4(r.src!.ip, '10.0.1.')],
    ['--to-cidr=2001:db8::/32', (r) => r.dst!.ip.startsWith('2001:db8:')],
    ['--cidr=10.0.0.0/24', (r) => inV4(r.src!.ip, '10.0.0.') || inV4(r.dst!.ip, '10.0.0.')],
    ['--from-port=40007', (r) => r.src!.port === 40007],
    ['--to-port=8004,8005', (r) => [8004, 8005].includes(r.dst!.port)],
    ['--port=8001', (r) => either(r, (e: Endpoint) => e.port, 8001)],
    ['--from-process=curl', (r) => r.src!.process!.name === 'curl'],
    ['--to-process=redis-server', (r) => r.dst!.process!.name === 'redis-server'],
    ['--process=python3', (r) => either(r, (e: Endpoint) => e.process?.name, 'python3')],
    ['--from-label=app=client-0', (r) => kube(r.src!).labels.app === 'client-0'],
    ['--to-label=app=cache', (r) => kube(r.dst!).labels.app === 'cache'],
    ['--label=app=web --from-label=tier', (r) => kube(r.dst!).labels.app === 'web'],
    ['--node=node-1 --protocol=udp', (r) => r.node === 'node-1' && r.protocol === IpProtocol.UDP],
    ['--vantage=dst --joined=false', (r) => r.vantage === Vantage.DST && !r.joined],
    ['--verdict=dropped', (r) => (r.drops?.packets ?? 0n) > 0n],
    ['--verdict=forwarded --protocol=udp', (r) => !r.drops && r.protocol === IpProtocol.UDP],
    ['--to-fqdn=server-4.backend.svc', (r) => r.src!.peerDnsName === 'server-4.backend.svc'],
    ['--filter=dns_rcode == 3 or drop_reason == NO_SOCKET', (r) => r.dns?.rcode === 3 || r.drops?.reason === 'NO_SOCKET'],
    ['--filter=src.namespace == "team-0" and dst.port in (8000, 8004) and not dst.workload == "cache"', (r) => kube(r.src!).objectNamespace === 'team-0' && [8000, 8004].includes(r.dst!.port) && kube(r.dst!).workloadName !== 'cache'],
  ])('%s returns exactly the matching records', async (flags, keep) => {
    const want = expected(keep);
    if (!flags.startsWith('--to-namespace')) expect(want.length).toBeGreaterThan(0);
    expect(want.length).toBeLessThan(published.length);
    const args = flags.startsWith('--filter=') ? [flags] : flags.split(' ').flatMap((a) => (a === '-n' ? [a] : [a]));
    const result = await observe(...(flags.startsWith('-n ') ? ['-n', 'backend', '--from-namespace=team-0'] : args));
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(ids(result.records)).toEqual(want);
  });
});

describe('kappa observe over flow time', () => {
  const at = (i: number) => new Date(Number((base + BigInt(i) * SECOND) / 1_000_000n)).toISOString();

  it('--since and --until bound the flow time (RFC 3339, durations and unix ns)', async () => {
    expect(ids((await observe(`--since=${at(20)}`, `--until=${at(30)}`)).records)).toEqual(expected((r) => r.endNs >= base + 20n * SECOND && r.endNs < base + 30n * SECOND));
    expect(ids((await observe(`--since=${base + 55n * SECOND}`)).records)).toEqual(['r55', 'r56', 'r57', 'r58', 'r59']);
    // Every record is older than 10 minutes (the newest is ~29 minutes old).
    expect((await observe('--since=10m')).records).toHaveLength(0);
    expect((await observe('--since=2h', '--until=10m')).records).toHaveLength(published.length);
  });

  it('--last N prints the last N matching flows, oldest first; --limit stops early', async () => {
    expect(ids((await observe('--last=4', '--from-namespace=team-1')).records)).toEqual(expected((r) => r.src!.kube!.objectNamespace === 'team-1').slice(-4));
    expect(ids((await observe('--limit=3', `--since=${at(10)}`)).records)).toEqual(['r10', 'r11', 'r12']);
  });

  it('--follow prints the range, then new matching flows until interrupted, then exits 0', async () => {
    const follow = startProcess(cliMain, ['observe', `--server=${server}`, '-o', 'json', '-f', '--node=node-2', `--since=${at(50)}`]);
    const lines = () => follow.stdout().split('\n').filter((l) => l.trim() !== '');
    const history = expected((r) => r.node === 'node-2' && r.endNs >= base + 50n * SECOND);
    await until(() => lines().length === history.length, 20_000, `history of node-2: ${follow.stderr()}`);
    const live = Array.from({ length: 9 }, (_, i) => record(200 + i));
    await publish('b4', live);
    const newOnNode2 = live.filter((r) => r.node === 'node-2');
    await until(() => lines().length === history.length + newOnNode2.length, 20_000, 'live node-2 records');
    await new Promise((r) => setTimeout(r, 500));
    const printed = lines().map((l) => flowRecordFromJson(JSON.parse(l)).id);
    expect(printed.slice(0, history.length)).toEqual(history);
    expect(sorted(printed.slice(history.length))).toEqual(sorted(ids(newOnNode2)));
    const exited = new Promise<number | null>((resolve) => follow.child.on('exit', (code) => resolve(code)));
    follow.child.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});

describe('kappa observe output', () => {
  it('-o table: a date in the time column and bytes and packets per direction', async () => {
    const result = await runKappa(['observe', `--server=${server}`, '--from-ip=10.0.0.4']);
    expect(result.code).toBe(0);
    const lines = result.stdout.split('\n').filter((l) => l.trim() !== '');
    expect(lines[0]).toMatch(/^TIME\s+NODE\s+VANTAGE\s+SOURCE\s+DESTINATION\s+PROTO\s+BYTES→\s+BYTES←\s+PKTS→\s+PKTS←\s+RTT\s+DROPPED\s+JOINED$/);
    expect(lines).toHaveLength(2);
    const r4 = published.find((r) => r.id === 'r4')!;
    const date = new Date(Number(r4.endNs / 1_000_000n)).toISOString().replace('T', ' ').slice(0, 23);
    expect(lines[1]!.startsWith(date)).toBe(true);
    expect(lines[1]).toContain('team-0/client-0[python3] 10.0.0.4:40004');
    // The DNS name the client asked for goes before the address (cut with … at the column's width).
    expect(lines[1]).toContain('backend/server-4[nginx] server-4.backend.sv…');
    expect(lines[1]).toMatch(/node-1\s+src/);
    expect(lines[1]).toMatch(/tcp\s+401\s+14\s+5\s+1\s+254µs\s+3\s+no$/);
  });

  it('-o compact: one line per flow with date, both ends and bytes per direction', async () => {
    const result = await runKappa(['observe', `--server=${server}`, '-o', 'compact', '--from-ip=10.0.0.4']);
    expect(result.code).toBe(0);
    const date = new Date(Number(published.find((r) => r.id === 'r4')!.endNs / 1_000_000n)).toISOString().replace('T', ' ').slice(0, 23);
    expect(result.stdout.trim()).toBe(`${date} [node-1] src team-0/client-0[python3] 10.0.0.4:40004 -> backend/server-4[nginx] server-4.backend.svc 10.0.1.4:8004 tcp bytes 401→ 14← packets 5→ 1← rtt 254µs dropped 3 NETFILTER_DROP unjoined`);
    const dns = await runKappa(['observe', `--server=${server}`, '-o', 'compact', '--from-port=40010']);
    expect(dns.stdout.trim()).toMatch(/ udp bytes 1001→ 20← packets 11→ 1← rtt 260µs dns gone\.backend\.svc A NXDOMAIN 1\.50ms unjoined$/);
  });

  it('-o jsonpb: the GetFlowsResponse with the flow and when the exporter received it', async () => {
    const before = Date.now();
    const result = await runKappa(['observe', `--server=${server}`, '-o', 'jsonpb', '--from-ip=10.0.0.4']);
    expect(result.code).toBe(0);
    const response = JSON.parse(result.stdout.trim()) as { flow: unknown; receivedNs: string };
    expect(response.flow).toEqual(flowRecordToJson(published.find((r) => r.id === 'r4')!));
    expect(Number(BigInt(response.receivedNs) / 1_000_000n)).toBeLessThan(before);
    expect(Number(BigInt(response.receivedNs) / 1_000_000n)).toBeGreaterThan(before - 300_000);
  });

  it('a bad filter exits 2 naming the position, before any connection', async () => {
    const bad = await runKappa(['observe', `--server=127.0.0.1:${await freePort()}`, '--filter=src.namespace == shop and dst.port = 443']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('"=" is not an operator: compare with == at position 36');
    expect(bad.stderr).toContain(`\n  ${' '.repeat(35)}^`);
    const flag = await runKappa(['observe', `--server=${server}`, '--to-port=https']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('--to-port "https": "https" is not a whole number');
  });

  it('exits 1 and says so when no Observer listens', async () => {
    const result = await runKappa(['observe', `--server=127.0.0.1:${await freePort()}`, '--connect-timeout=1s']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('cannot reach the Observer');
  });
});

describe('kappa top', () => {
  const counted = () => published.filter((r) => r.vantage === Vantage.SRC || !r.joined);

  it('ranks workload pairs by bytes over the range, summing both directions', async () => {
    const result = await runKappa(['top', `--server=${server}`, '--since=2h', '-o', 'json', '--limit=100']);
    expect(result.code).toBe(0);
    const rows = result.stdout.trim().split('\n').map((l) => JSON.parse(l) as { src: { namespace: string; name: string }; dst: { namespace: string; name: string }; bytes?: string; reverseBytes?: string; droppedPackets?: string });
    const want = new Map<string, [bigint, bigint, bigint]>();
    // Bytes count each conversation once; drops are summed over both vantages (each is on the
    // record of the vantage that dropped it), so a responder's record with drops makes its pair too.
    for (const r of published.filter((p) => counted().includes(p) || (p.drops?.packets ?? 0n) > 0n)) {
      const key = `${r.src!.kube!.objectNamespace}/${r.src!.kube!.workloadName} -> backend/${r.dst!.kube!.workloadName}`;
      const [b, rb, d] = want.get(key) ?? [0n, 0n, 0n];
      const once = counted().includes(r) ? 1n : 0n;
      want.set(key, [b + once * r.bytes, rb + once * r.reverseBytes, d + (r.drops?.packets ?? 0n)]);
    }
    expect([...want.values()].some(([, , d]) => d > 0n)).toBe(true);
    expect(new Map(rows.map((row) => [`${row.src.namespace}/${row.src.name} -> ${row.dst.namespace}/${row.dst.name}`, [BigInt(row.bytes ?? 0), BigInt(row.reverseBytes ?? 0), BigInt(row.droppedPackets ?? 0)]]))).toEqual(want);
    const totals = rows.map((row) => BigInt(row.bytes ?? 0) + BigInt(row.reverseBytes ?? 0));
    expect(totals).toEqual([...totals].sort((a, b) => (a < b ? 1 : a > b ? -1 : 0)));
  });

  it.each([
    ['--level=namespace --side=src --by=packets', (r: FlowRecord) => r.src!.kube!.objectNamespace, (r: FlowRecord) => r.packets + r.reversePackets],
    ['--level=pod --side=dst --by=retransmits', (r: FlowRecord) => `backend/${r.dst!.kube!.objectName}`, (r: FlowRecord) => BigInt(r.tcp!.retransmits)],
    ['--level=process --side=src --by=bytes', (r: FlowRecord) => `${r.src!.kube!.objectNamespace}/${r.src!.kube!.objectName}/${r.src!.process!.name}`, (r: FlowRecord) => r.bytes + r.reverseBytes],
    ['--level=ip --side=dst --by=bytes --to-port=8001,8002', (r: FlowRecord) => (r.dst!.port === 8001 || r.dst!.port === 8002 ? r.dst!.ip : undefined), (r: FlowRecord) => r.bytes + r.reverseBytes],
  ])('%s prints the largest first with the right totals', async (flags, key, metric) => {
    const result = await runKappa(['top', `--server=${server}`, '--since=2h', '--limit=3', ...flags.split(' ')]);
    expect(result.code).toBe(0);
    const totals = new Map<string, bigint>();
    for (const r of counted()) {
      const k = key(r);
      if (k !== undefined) totals.set(k, (totals.get(k) ?? 0n) + metric(r));
    }
    const top = [...totals.entries()].sort((a, b) => (a[1] < b[1] ? 1 : a[1] > b[1] ? -1 : a[0].localeCompare(b[0])))[0]!;
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^(SOURCE|DESTINATION)\s+BYTES→\s+BYTES←\s+PKTS→\s+PKTS←\s+RETRANS\s+RTT\s+RECORDS$/);
    expect(lines.length).toBe(Math.min(3, totals.size) + 1);
    expect(lines[1]!.startsWith(`${top[0]} `)).toBe(true);
  });

  it('ranks by mean RTT and refuses a bad level', async () => {
    const result = await runKappa(['top', `--server=${server}`, '--since=2h', '--by=rtt', '--level=workload', '--side=src', '-o', 'json']);
    expect(result.code).toBe(0);
    const rtts = result.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { rttAvgUs?: number }).rttAvgUs ?? 0);
    expect(rtts).toEqual([...rtts].sort((a, b) => b - a));
    const bad = await runKappa(['top', `--server=${server}`, '--level=cluster']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--level');
  });
});
