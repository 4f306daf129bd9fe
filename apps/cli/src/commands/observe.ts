// `kappa observe`: flows from the exporter's Observer over a range of flow time (the flow store),
// selected by hubble-style flags and/or the filter language, then (with --follow) new ones as they
// arrive; as a table, compact lines, or protobuf JSON.
import { status as grpcStatus } from '@grpc/grpc-js';
import type { ServiceError, StatusObject } from '@grpc/grpc-js';
import { ConfigError, boolean, integer, loadConfigOrExit, oneOf, string } from '@kappa/config';
import { GetFlowsRequestSchema, create, observerServiceDefinition } from '@kappa/contracts';
import type { GetFlowsRequest, GetFlowsResponse } from '@kappa/contracts';
import { connectObserver, connectionOptions, missingWarner, observerEnv } from '../observe/client.js';
import { compactRow, jsonLine, jsonpbLine, tableHeader, tableRow } from '../observe/format.js';
import { UsageError, buildFilter, normalizeArgv, parseTime, selectionFlagNames, selectionOptions } from '../observe/request.js';

const options = {
  ...connectionOptions,
  output: oneOf(['table', 'compact', 'json', 'jsonpb'] as const, {
    description: 'table or compact for people; json: canonical protobuf JSON of each FlowRecord; jsonpb: of each GetFlowsResponse (-o)',
    default: 'table',
  }),
  since: string({ description: 'only flows whose time is at or after this: a duration back (30s, 5m, 2h), an RFC 3339 time or unix ns (default: the oldest stored)' }),
  until: string({ description: 'only flows whose time is before this (same forms as --since; not with --follow)' }),
  last: integer({ description: 'only the last N matching flows of the range (still printed oldest first)', default: 0, min: 0, max: 4294967295 }),
  follow: boolean({ description: 'keep printing new flows until Ctrl-C (-f)' }),
  limit: integer({ description: 'stop after this many flows (0 = no limit)', default: 0, min: 0, max: 4294967295 }),
  filter: string({ description: 'a filter-language expression, e.g. \'src.namespace == "shop" and dst.port == 443\' (and\'ed with the flags)', default: '' }),
  ...selectionOptions,
};

export async function runObserve(argv: string[]): Promise<number> {
  const config = loadConfigOrExit({ command: 'kappa observe', summary: 'Print flows from the exporter\'s Observer (like hubble observe).', options }, normalizeArgv(argv, selectionFlagNames), observerEnv());
  let request: GetFlowsRequest;
  try {
    if (config.follow && config.until !== undefined) throw new UsageError('--until and --follow do not go together');
    const now = Date.now();
    request = create(GetFlowsRequestSchema, {
      query: buildFilter(config),
      sinceNs: config.since === undefined ? 0n : parseTime('since', config.since, now),
      untilNs: config.until === undefined ? 0n : parseTime('until', config.until, now),
      last: config.last,
      follow: config.follow,
      limit: config.limit,
    });
  } catch (error) {
    if (!(error instanceof ConfigError || error instanceof UsageError)) throw error;
    process.stderr.write(`kappa observe: ${error.message}\n`);
    return 2;
  }
  const connected = await connectObserver('kappa observe', config);
  if (typeof connected === 'number') return connected;
  const { client, security } = connected;
  const method = observerServiceDefinition.GetFlows!;
  const stream = client.makeServerStreamRequest<GetFlowsRequest, GetFlowsResponse>(
    method.path,
    method.requestSerialize as (value: GetFlowsRequest) => Buffer,
    method.responseDeserialize as (bytes: Buffer) => GetFlowsResponse,
    request,
    security.metadata(),
  );
  const warnMissing = missingWarner('kappa observe');
  stream.on('metadata', warnMissing);
  // The trailers (which name replicas that did not answer) come with the status, after 'end'.
  const statusSeen = new Promise<void>((resolve) =>
    stream.on('status', (s: StatusObject) => {
      warnMissing(s.metadata);
      resolve();
    }),
  );
  const stop = () => stream.cancel();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    // The reader went away (kappa observe | head): stop quietly.
    if (error.code === 'EPIPE') stream.cancel();
  });
  const print = (response: GetFlowsResponse): string => {
    switch (config.output) {
      case 'jsonpb':
        return jsonpbLine(response);
      case 'json':
        return jsonLine(response.flow!);
      case 'compact':
        return compactRow(response.flow!);
      default:
        return tableRow(response.flow!);
    }
  };
  if (config.output === 'table') process.stdout.write(`${tableHeader}\n`);
  const code = await new Promise<number>((resolve) => {
    stream.on('data', (response: GetFlowsResponse) => {
      if (!response.flow) return;
      if (!process.stdout.write(`${print(response)}\n`)) {
        stream.pause();
        process.stdout.once('drain', () => stream.resume());
      }
    });
    stream.on('error', (error: ServiceError) => {
      if (error.code === grpcStatus.CANCELLED) resolve(0);
      else {
        process.stderr.write(`kappa observe: ${error.details || error.message}\n`);
        resolve(error.code === grpcStatus.INVALID_ARGUMENT ? 2 : 1);
      }
    });
    stream.on('end', () => void statusSeen.then(() => resolve(0)));
  });
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  client.close();
  return code;
}
