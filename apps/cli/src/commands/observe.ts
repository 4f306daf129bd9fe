// `kappa observe`: recent flows from the exporter's gRPC Observer, then (with --follow) new ones
// as they arrive; as a table or as canonical protobuf JSON lines.
import { Client, status as grpcStatus } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import { ConfigError, boolean, duration, integer, list, loadConfigOrExit, oneOf, string } from '@kappa/config';
import { GrpcSecurityError, grpcClientSecurity, observerServiceDefinition } from '@kappa/contracts';
import type { GetFlowsRequest, GetFlowsResponse } from '@kappa/contracts';
import { jsonLine, tableHeader, tableRow } from '../observe/format.js';
import { observeRequest, parseSince } from '../observe/request.js';

const options = {
  server: string({ description: 'the exporter\'s Observer, host:port (also KAPPA_OBSERVER)', default: '127.0.0.1:9481' }),
  output: oneOf(['table', 'json'] as const, { description: 'table for people, json for canonical protobuf JSON of FlowRecord, one per line', default: 'table' }),
  since: string({ description: 'only flows received in this last period (30s, 5m) or since an RFC 3339 time (default: everything buffered)' }),
  follow: boolean({ description: 'keep printing new flows until Ctrl-C' }),
  limit: integer({ description: 'stop after this many flows (0 = no limit)', default: 0, min: 0, max: 4294967295 }),
  node: list({ description: 'only flows observed on these nodes' }),
  namespace: list({ description: 'only flows with either end in these namespaces' }),
  pod: list({ description: 'only flows with either end in these pods' }),
  workload: list({ description: 'only flows with either end in these workloads' }),
  process: list({ description: 'only flows with either end in these processes (comm)' }),
  port: list({ description: 'only flows with either end on these ports', item: /^\d{1,5}$/, accepted: 'comma-separated port numbers' }),
  protocol: list({ description: 'only these protocols', accepted: 'comma-separated tcp, udp, icmp, icmpv6, sctp or numbers' }),
  vantage: oneOf(['src', 'dst'] as const, { description: 'only flows observed at the initiator (src) or the responder (dst)' }),
  joined: oneOf(['true', 'false'] as const, { description: 'only joined (true) or unjoined (false) flows' }),
  ip: list({ description: 'only flows with either end at these IP addresses' }),
  connectTimeout: duration({ description: 'how long to wait for the Observer', default: '5s' }),
  // Also read from .kappa/up.json (keys tlsCa, tlsCert, tlsKey, tokenFile) while `npm run up` runs.
  tlsCa: string({ description: 'CA file that signed the Observer\'s certificate: speak TLS' }),
  tlsCert: string({ description: 'client certificate file, for an Observer that requires mutual TLS (with --tls-key)' }),
  tlsKey: string({ description: 'client key file for --tls-cert' }),
  tokenFile: string({ description: 'file holding the Observer\'s bearer token (--observer-token-file of the exporter)' }),
};

export async function runObserve(argv: string[]): Promise<number> {
  const env = { ...process.env };
  if (env.KAPPA_SERVER === undefined && env.KAPPA_OBSERVER !== undefined) env.KAPPA_SERVER = env.KAPPA_OBSERVER;
  const config = loadConfigOrExit({ command: 'kappa observe', summary: 'Print flows from the exporter\'s Observer.', options }, argv, env);
  let request;
  try {
    request = observeRequest({ ...config, since: parseSince(config.since) });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`kappa observe: ${error.message}\n`);
    return 2;
  }
  const print = config.output === 'json' ? jsonLine : tableRow;
  const method = observerServiceDefinition.GetFlows!;
  let security;
  try {
    security = grpcClientSecurity({ caFile: config.tlsCa, certFile: config.tlsCert, keyFile: config.tlsKey, tokenFile: config.tokenFile });
  } catch (error) {
    if (!(error instanceof GrpcSecurityError)) throw error;
    process.stderr.write(`kappa observe: ${error.message}\n`);
    return 2;
  }
  const client = new Client(config.server, security.credentials);
  try {
    await new Promise<void>((resolve, reject) => {
      client.waitForReady(Date.now() + config.connectTimeout, (error) => (error ? reject(error) : resolve()));
    });
  } catch {
    process.stderr.write(`kappa observe: cannot reach the Observer at ${config.server} (is the exporter running with --observer? set --server or KAPPA_OBSERVER; a TLS Observer needs --tls-ca, one with mutual TLS also --tls-cert and --tls-key)\n`);
    client.close();
    return 1;
  }
  const stream = client.makeServerStreamRequest<GetFlowsRequest, GetFlowsResponse>(
    method.path,
    method.requestSerialize as (value: GetFlowsRequest) => Buffer,
    method.responseDeserialize as (bytes: Buffer) => GetFlowsResponse,
    request,
    security.metadata(),
  );
  const stop = () => stream.cancel();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    // The reader went away (kappa observe | head): stop quietly.
    if (error.code === 'EPIPE') stream.cancel();
  });
  if (config.output === 'table') process.stdout.write(`${tableHeader}\n`);
  const code = await new Promise<number>((resolve) => {
    stream.on('data', (response: GetFlowsResponse) => {
      if (!response.flow) return;
      if (!process.stdout.write(`${print(response.flow)}\n`)) {
        stream.pause();
        process.stdout.once('drain', () => stream.resume());
      }
    });
    stream.on('error', (error: ServiceError) => {
      if (error.code === grpcStatus.CANCELLED) resolve(0);
      else {
        process.stderr.write(`kappa observe: ${error.details || error.message}\n`);
        resolve(1);
      }
    });
    stream.on('end', () => resolve(0));
  });
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
  client.close();
  return code;
}
