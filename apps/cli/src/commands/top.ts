// `kappa top`: the top talkers over a range of flow time, grouped at any level (namespace,
// workload, pod, process, node, ip), as pairs or per side, by bytes, packets, retransmits, RTT or drops.
import type { ServiceError, StatusObject } from '@grpc/grpc-js';
import { ConfigError, integer, loadConfigOrExit, oneOf, string } from '@kappa/config';
import { GetAggregatesRequestSchema, GetAggregatesResponseSchema, create, observerServiceDefinition, toJson } from '@kappa/contracts';
import type { Aggregate, GetAggregatesRequest, GetAggregatesResponse, Group } from '@kappa/contracts';
import { connectObserver, connectionOptions, missingWarner, observerEnv } from '../observe/client.js';
import { UsageError, buildFilter, normalizeArgv, parseTime, selectionFlagNames, selectionOptions } from '../observe/request.js';

const options = {
  ...connectionOptions,
  since: string({ description: 'start of the range: a duration back (5m, 1h), an RFC 3339 time or unix ns', default: '1h' }),
  until: string({ description: 'end of the range (same forms; default now)' }),
  level: oneOf(['namespace', 'workload', 'pod', 'process', 'node', 'ip'] as const, { description: 'what one talker is', default: 'workload' }),
  by: oneOf(['bytes', 'packets', 'retransmits', 'rtt', 'dropped'] as const, { description: 'rank by bytes or packets (both directions), retransmits, mean RTT, or packets the kernel dropped (-o json has droppedPackets)', default: 'bytes' }),
  side: oneOf(['pair', 'src', 'dst'] as const, { description: 'pair: source → destination talkers; src or dst: one side only', default: 'pair' }),
  limit: integer({ description: 'rows to print', default: 10, min: 1, max: 100000 }),
  output: oneOf(['table', 'json'] as const, { description: 'table, or json: one protobuf JSON Aggregate per line (-o)', default: 'table' }),
  filter: string({ description: 'a filter-language expression (and\'ed with the flags)', default: '' }),
  ...selectionOptions,
};

export function groupLabel(g: Group | undefined): string {
  if (!g) return '*';
  if (g.external) return '(external)';
  if (!g.namespace) return g.name || '*';
  return g.name ? `${g.namespace}/${g.name}` : g.namespace;
}

/** 1.2 kB, 3.4 MB: SI units, as people read traffic volumes. */
export function humanBytes(n: bigint): string {
  const v = Number(n);
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let x = v;
  while (x >= 1000 && i < units.length - 1) {
    x /= 1000;
    i++;
  }
  return i === 0 ? `${v} B` : `${x.toFixed(1)} ${units[i]}`;
}

function row(a: Aggregate, side: string): string {
  const rtt = a.rttAvgUs === 0 ? '-' : a.rttAvgUs >= 1000 ? `${(a.rttAvgUs / 1000).toFixed(2)}ms` : `${a.rttAvgUs}µs`;
  const who = side === 'src' ? groupLabel(a.src) : side === 'dst' ? groupLabel(a.dst) : `${groupLabel(a.src)} -> ${groupLabel(a.dst)}`;
  return [
    who.padEnd(60),
    humanBytes(a.bytes).padStart(10),
    humanBytes(a.reverseBytes).padStart(10),
    String(a.packets).padStart(9),
    String(a.reversePackets).padStart(9),
    String(a.retransmits).padStart(7),
    rtt.padStart(9),
    String(a.records).padStart(8),
  ].join(' ');
}

export async function runTop(argv: string[]): Promise<number> {
  const config = loadConfigOrExit({ command: 'kappa top', summary: 'Top talkers over a range of flow time.', options }, normalizeArgv(argv, selectionFlagNames), observerEnv());
  let request: GetAggregatesRequest;
  try {
    const now = Date.now();
    request = create(GetAggregatesRequestSchema, {
      query: buildFilter(config),
      sinceNs: parseTime('since', config.since, now),
      untilNs: config.until === undefined ? 0n : parseTime('until', config.until, now),
      level: config.level,
      side: config.side,
      orderBy: config.by,
      limit: config.limit,
    });
  } catch (error) {
    if (!(error instanceof ConfigError || error instanceof UsageError)) throw error;
    process.stderr.write(`kappa top: ${error.message}\n`);
    return 2;
  }
  const connected = await connectObserver('kappa top', config);
  if (typeof connected === 'number') return connected;
  const { client, security } = connected;
  const method = observerServiceDefinition.GetAggregates!;
  try {
    const warnMissing = missingWarner('kappa top');
    const response = await new Promise<GetAggregatesResponse>((resolve, reject) => {
      const call = client.makeUnaryRequest<GetAggregatesRequest, GetAggregatesResponse>(
        method.path,
        method.requestSerialize as (value: GetAggregatesRequest) => Buffer,
        method.responseDeserialize as (bytes: Buffer) => GetAggregatesResponse,
        request,
        security.metadata(),
        (error, value) => (error || !value ? reject(error) : resolve(value)),
      );
      call.on('status', (s: StatusObject) => warnMissing(s.metadata));
    });
    if (config.output === 'json') {
      for (const a of response.aggregates) process.stdout.write(`${JSON.stringify(toJson(GetAggregatesResponseSchema.field.aggregates!.message!, a))}\n`);
      return 0;
    }
    const who = config.side === 'pair' ? 'SOURCE -> DESTINATION' : config.side === 'src' ? 'SOURCE' : 'DESTINATION';
    process.stdout.write(`${[who.padEnd(60), 'BYTES→'.padStart(10), 'BYTES←'.padStart(10), 'PKTS→'.padStart(9), 'PKTS←'.padStart(9), 'RETRANS'.padStart(7), 'RTT'.padStart(9), 'RECORDS'.padStart(8)].join(' ')}\n`);
    for (const a of response.aggregates) process.stdout.write(`${row(a, config.side)}\n`);
    return 0;
  } catch (error) {
    const e = error as ServiceError;
    process.stderr.write(`kappa top: ${e.details || e.message}\n`);
    return e.code === 3 ? 2 : 1;
  } finally {
    client.close();
  }
}
