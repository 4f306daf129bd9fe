// The filter language: what each filter selects (checked against hand-written conditions on the
// records, not against the compiler), errors that point at the offending position, and the
// hubble-style flags compiling into the same language.
import { describe, expect, it } from 'vitest';
import { IpProtocol, Vantage, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { FilterError, FlagValueError, compilePredicate, compileSql, filterColumns, flagsToFilter, parseFilter } from '../src/index.js';

const records: FlowRecord[] = Array.from({ length: 40 }, (_, i) =>
  newFlowRecord({
    id: `r${i}`,
    node: `node-${i % 3}`,
    vantage: i % 2 ? Vantage.DST : Vantage.SRC,
    protocol: i % 5 === 0 ? IpProtocol.UDP : IpProtocol.TCP,
    src: {
      ip: i % 4 === 3 ? `2001:db8::${i.toString(16)}` : `10.0.${i % 3}.${i}`,
      port: 40000 + i,
      process: { name: i % 2 ? 'curl' : 'python3', pid: 100 + i },
      kube: { objectNamespace: i % 2 ? 'shop' : 'billing', objectName: `client-${i % 4}`, objectType: 'pod', workloadName: `client-${i % 4}`, labels: { app: `client-${i % 4}`, tier: 'front' } },
    },
    dst: {
      ip: `10.1.0.${i % 6}`,
      port: [443, 80, 6379][i % 3]!,
      process: { name: i % 3 === 2 ? 'redis-server' : 'nginx' },
      kube: i % 7 === 0 ? { objectType: 'external' } : { objectNamespace: 'backend', objectName: `server-${i % 6}`, objectType: 'pod', workloadName: i % 3 === 2 ? 'redis' : 'web' },
    },
    bytes: BigInt(100 * i),
    reverseBytes: BigInt(7 * i),
    tcp: { srttUs: 100 * i, retransmits: i % 4 },
    joined: i % 3 !== 1,
    // Every 5th flow lost packets; every 6th is a DNS conversation; every 4th client resolved its server by name.
    ...(i % 5 === 1 ? { drops: { packets: BigInt(i), bytes: BigInt(60 * i), reason: i % 2 ? 'NETFILTER_DROP' : 'NO_SOCKET', reasonPackets: BigInt(i) } } : {}),
    ...(i % 6 === 0 ? { dns: { queryName: i % 12 ? 'web.shop.svc' : 'missing.shop.svc', queryType: i % 12 ? 1 : 28, rcode: i % 12 ? 0 : 3, queries: 1n, responses: 1n, latencyCount: 1n, latencySumUs: BigInt(100 * i), latencyMaxUs: BigInt(100 * i) } } : {}),
  }),
);
for (const [i, r] of records.entries()) if (i % 4 === 1) r.src!.peerDnsName = `server-${i % 6}.backend.svc`;

const select = (filter: string) => records.filter(compilePredicate(filter)).map((r) => r.id);
const oracle = (keep: (r: FlowRecord) => boolean) => records.filter(keep).map((r) => r.id);

describe('filter language selects what it says', () => {
  it.each<[string, (r: FlowRecord) => boolean]>([
    ['src.namespace == "shop" and dst.port == 443 and not dst.workload == "redis"', (r) => r.src!.kube!.objectNamespace === 'shop' && r.dst!.port === 443 && r.dst!.kube!.workloadName !== 'redis'],
    ['namespace == backend', (r) => r.src!.kube!.objectNamespace === 'backend' || r.dst!.kube!.objectNamespace === 'backend'],
    ['namespace != backend', (r) => !(r.src!.kube!.objectNamespace === 'backend' || r.dst!.kube!.objectNamespace === 'backend')],
    ['src.ip == 10.0.0.0/16', (r) => r.src!.ip.startsWith('10.0.')],
    ['src.ip == 10.0.1.0/24 or src.ip == 2001:db8::/32', (r) => r.src!.ip.startsWith('10.0.1.') || r.src!.ip.startsWith('2001:db8:')],
    ['ip == 10.1.0.4', (r) => r.src!.ip === '10.1.0.4' || r.dst!.ip === '10.1.0.4'],
    ['src.ip == 2001:DB8:0::b', (r) => r.src!.ip === '2001:db8::b'],
    ['protocol == udp', (r) => r.protocol === IpProtocol.UDP],
    ['protocol in (tcp, 17) and vantage == dst', (r) => r.vantage === Vantage.DST],
    ['bytes >= 1500 and bytes < 2500', (r) => r.bytes >= 1500n && r.bytes < 2500n],
    ['rtt > 2ms', (r) => r.tcp!.srttUs > 2000],
    ['retransmits != 0 && !joined == true', (r) => r.tcp!.retransmits !== 0 && !r.joined],
    ['dst.type == external', (r) => r.dst!.kube!.objectType === 'external'],
    ['src.label == app=client-1', (r) => r.src!.kube!.labels.app === 'client-1'],
    ['src.label == tier and dst.process == redis-*', (r) => r.dst!.process!.name.startsWith('redis-')],
    ['(src.pod == client-0 or src.pod == client-2) and node not in (node-0)', (r) => ['client-0', 'client-2'].includes(r.src!.kube!.objectName) && r.node !== 'node-0'],
    ['dropped_packets > 0 and drop_reason == NETFILTER_DROP', (r) => (r.drops?.packets ?? 0n) > 0n && r.drops?.reason === 'NETFILTER_DROP'],
    ['dropped_bytes >= 600', (r) => (r.drops?.bytes ?? 0n) >= 600n],
    ['dns_rcode == 3 or dns_qtype == 28', (r) => r.dns?.rcode === 3],
    ['dns_query == web.shop.svc and dns_latency > 1ms', (r) => r.dns?.queryName === 'web.shop.svc' && (r.dns?.latencyMaxUs ?? 0n) > 1000n],
    ['src.peer_dns_name == server-1.backend.svc', (r) => r.src!.peerDnsName === 'server-1.backend.svc'],
    ['peer_dns_name in (server-1.backend.svc, server-5.backend.svc)', (r) => ['server-1.backend.svc', 'server-5.backend.svc'].includes(r.src!.peerDnsName)],
    ['process in (curl) and dst.workload in ("web")', (r) => (r.src!.process!.name === 'curl' || r.dst!.process!.name === 'curl') && r.dst!.kube!.workloadName === 'web'],
  ])('%s', (filter, keep) => {
    const want = oracle(keep);
    expect(want.length).toBeGreaterThan(0);
    expect(want.length).toBeLessThan(records.length);
    expect(select(filter)).toEqual(want);
  });

  it('an empty filter matches everything and compiles to true', () => {
    expect(select('  ')).toHaveLength(records.length);
    expect(compileSql('')).toBe('true');
  });
});

describe('errors name the position', () => {
  it.each([
    ['src.namespace = "shop"', 15, '"=" is not an operator'],
    ['src.namespcae == shop', 1, 'unknown field "src.namespcae"'],
    ['dst.port == http', 13, '"http" is not a whole number'],
    ['src.ip == 10.0.0.0/33', 11, 'is not a CIDR prefix'],
    ['namespace == shop and', 22, 'expected a field name, found the end of the filter'],
    ['(namespace == shop', 19, 'expected ")" to close the "(" at position 1'],
    ['namespace == "shop', 14, 'unterminated string'],
    ['namespace > shop', 11, 'is compared with == , != or in'],
    ['protocol == tcpp', 13, 'one of tcp, udp, icmp, icmpv6, sctp'],
    ['namespace == shop dst.port == 1', 19, 'expected "and", "or" or the end of the filter'],
  ])('%s → position %i', (filter, position, reason) => {
    let error: unknown;
    try {
      parseFilter(filter);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(FilterError);
    const e = error as FilterError;
    expect(e.position + 1).toBe(position);
    expect(e.reason).toContain(reason);
    expect(e.message).toContain(`at position ${position}`);
    // The caret under the offending character.
    expect(e.message.split('\n')[2]!.indexOf('^')).toBe(e.message.split('\n')[1]!.indexOf(filter) + position - 1);
  });
});

describe('hubble-style flags', () => {
  it('compile into the filter language: values of a flag or\'ed, flags and\'ed', () => {
    const text = flagsToFilter({ fromNamespace: ['shop'], toPort: ['443', '80'], toWorkload: ['backend/web'], protocol: 'tcp' });
    expect(text).toBe('src.namespace == shop and (dst.namespace == backend and dst.workload == web) and (dst.port == 443 or dst.port == 80) and protocol == tcp');
    expect(select(text)).toEqual(oracle((r) => r.src!.kube!.objectNamespace === 'shop' && [443, 80].includes(r.dst!.port) && r.dst!.kube!.workloadName === 'web' && r.protocol === IpProtocol.TCP));
  });

  it('either-end flags, CIDR and labels', () => {
    expect(select(flagsToFilter({ pod: ['backend/server-1'] }))).toEqual(oracle((r) => r.dst!.kube!.objectName === 'server-1'));
    expect(select(flagsToFilter({ fromCidr: ['10.0.2.0/24'] }))).toEqual(oracle((r) => r.src!.ip.startsWith('10.0.2.')));
    expect(select(flagsToFilter({ fromLabel: ['app=client-3'] }))).toEqual(oracle((r) => r.src!.kube!.labels.app === 'client-3'));
  });

  it('--verdict and --to-fqdn / --from-fqdn select on drops and DNS names', () => {
    expect(select(flagsToFilter({ verdict: 'dropped' }))).toEqual(oracle((r) => (r.drops?.packets ?? 0n) > 0n));
    expect(select(flagsToFilter({ verdict: ['FORWARDED'] }))).toEqual(oracle((r) => !r.drops));
    expect(select(flagsToFilter({ toFqdn: ['Server-3.backend.svc.'] }))).toEqual(oracle((r) => r.src!.peerDnsName === 'server-3.backend.svc'));
    expect(select(flagsToFilter({ toFqdn: ['server-3.backend.svc'] }))).not.toHaveLength(0);
    expect(select(flagsToFilter({ fromFqdn: ['server-3.backend.svc'] }))).toHaveLength(0);
    expect(() => flagsToFilter({ verdict: 'lost' })).toThrow('--verdict "lost": expected dropped or forwarded');
  });

  it('a bad flag value names the flag', () => {
    expect(() => flagsToFilter({ toPort: ['https'] })).toThrow(FlagValueError);
    expect(() => flagsToFilter({ toPort: ['https'] })).toThrow('--to-port "https": "https" is not a whole number (dst.port)');
  });
});

describe('filterColumns', () => {
  // The store answers a map from its rollups only when a filter reads nothing else: every column
  // named here must be exactly the ones the compiled SQL reads.
  it.each([
    ['', []],
    ['dst.port == 443', ['dst_port']],
    ['namespace == shop and not protocol == udp', ['dst_namespace', 'protocol', 'src_namespace']],
    ['src.workload == web or bytes > 10', ['bytes', 'src_workload']],
    ['ip == 10.0.0.0/8', ['dst_ip_hex', 'src_ip_hex']],
    ['ip == 10.0.0.1', ['dst_ip', 'src_ip']],
    ['rtt > 5ms and dropped_packets > 0', ['dropped_packets', 'srtt_us']],
  ])('%s reads %j', (filter, columns) => {
    expect([...filterColumns(filter)].sort()).toEqual(columns);
    // Each is a column the compiled SQL names.
    const sql = compileSql(filter);
    for (const c of columns) expect(sql).toMatch(new RegExp(`\\b${c}\\b`));
  });
});
