// `kappa tags <ip|container-id>`: asks a running k8s-tagger (kappa.tagger.v1.KubeTags/Lookup)
// what it knows of an IP address or a container id, and prints it as a short table or JSON.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Client } from '@grpc/grpc-js';
import type { MethodDefinition } from '@grpc/grpc-js';
import { create, GrpcSecurityError, grpcClientSecurity, kubeTagsServiceDefinition, LookupRequestSchema, LookupResponseSchema, toJson } from '@kappa/contracts';
import type { GrpcClientSecurity, LookupRequest, LookupResponse } from '@kappa/contracts';

/** The tagger's default gRPC port (apps/k8s-tagger --grpc-port). */
export const DEFAULT_TAGGER = '127.0.0.1:9480';

const USAGE = `Usage: kappa tags <ip|container-id> [--tagger host:port] [--output table|json] [--at <RFC 3339 time | unix ns>]
                  [--tls-ca FILE] [--tls-cert FILE --tls-key FILE] [--token-file FILE]

Shows the Kubernetes tags a running k8s-tagger has for an IP address or a container id.
  --tagger      the tagger's gRPC address (KAPPA_TAGGER; key tagger of the config file) [default: ${DEFAULT_TAGGER}]
  --output      table or json [default: table]
  --at          answer as of this time (a pod IP may have been reused) [default: now]
  --tls-ca      CA file that signed the tagger's certificate: speak TLS (KAPPA_TLS_CA)
  --tls-cert    client certificate file, for a tagger that requires mutual TLS (KAPPA_TLS_CERT)
  --tls-key     client key file for --tls-cert (KAPPA_TLS_KEY)
  --token-file  file holding the tagger's bearer token, its --grpc-token-file (KAPPA_TOKEN_FILE)
The last four are also read from the --config / KAPPA_CONFIG file (keys tlsCa, tlsCert, tlsKey,
tokenFile), which is .kappa/up.json while \`npm run up\` runs.
Exit status: 0 found, 1 not found or the tagger did not answer, 2 bad usage.`;

export interface TagsIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  env: Readonly<Record<string, string | undefined>>;
}

class UsageError extends Error {}

interface TagsArgs {
  key: string;
  tagger: string;
  output: 'table' | 'json';
  atNs: bigint;
  security: GrpcClientSecurity;
}

const securityFlags = { '--tls-ca': 'caFile', '--tls-cert': 'certFile', '--tls-key': 'keyFile', '--token-file': 'tokenFile' } as const;
const securityKeys = { caFile: ['tlsCa', 'KAPPA_TLS_CA'], certFile: ['tlsCert', 'KAPPA_TLS_CERT'], keyFile: ['tlsKey', 'KAPPA_TLS_KEY'], tokenFile: ['tokenFile', 'KAPPA_TOKEN_FILE'] } as const;

/** The --config / KAPPA_CONFIG file (.kappa/up.json while `npm run up` runs), or {}. */
function readConfigFile(configFile: string | undefined): Record<string, unknown> {
  if (!configFile) return {};
  try {
    return JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  } catch (cause) {
    throw new UsageError(`cannot read the config file ${configFile}: ${(cause as Error).message}`);
  }
}

/** TLS and token settings from the environment, then the config file (flags override both). */
function securityDefaults(env: TagsIo['env'], fromFile: Record<string, unknown>): GrpcClientSecurity {
  const security: GrpcClientSecurity = {};
  for (const [field, [key, variable]] of Object.entries(securityKeys) as [keyof GrpcClientSecurity, readonly [string, string]][]) {
    const value = env[variable] || (typeof fromFile[key] === 'string' ? fromFile[key] : undefined);
    if (value) security[field] = value;
  }
  return security;
}

function parseAt(raw: string): bigint {
  if (/^\d+$/.test(raw)) return BigInt(raw);
  const ms = Date.parse(raw);
  if (!Number.isFinite(ms)) throw new UsageError(`invalid --at "${raw}": expected an RFC 3339 time or unix nanoseconds`);
  return BigInt(ms) * 1_000_000n;
}

function parseArgs(argv: readonly string[], env: TagsIo['env']): TagsArgs {
  const positional: string[] = [];
  let tagger: string | undefined;
  let output: 'table' | 'json' = 'table';
  let atNs = 0n;
  let configFile = env.KAPPA_CONFIG;
  const flagged: GrpcClientSecurity = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = () => {
      const next = inline ?? argv[++i];
      if (next === undefined) throw new UsageError(`${flag} needs a value`);
      return next;
    };
    if (flag === '--tagger') tagger = value();
    else if (flag === '--output' || flag === '-o') {
      const chosen = value();
      if (chosen !== 'table' && chosen !== 'json') throw new UsageError(`invalid --output "${chosen}": expected table or json`);
      output = chosen;
    } else if (flag === '--at') atNs = parseAt(value());
    else if (flag === '--config') configFile = value();
    else if (flag in securityFlags) flagged[securityFlags[flag as keyof typeof securityFlags]] = value();
    else if (flag.startsWith('-')) throw new UsageError(`unknown flag ${flag}: expected --tagger, --output, --at, --tls-ca, --tls-cert, --tls-key, --token-file or --config`);
    else positional.push(arg);
  }
  if (positional.length !== 1) throw new UsageError('expected exactly one IP address or container id');
  const fromFile = readConfigFile(configFile);
  tagger ??= env.KAPPA_TAGGER ?? (typeof fromFile.tagger === 'string' ? fromFile.tagger : DEFAULT_TAGGER);
  if (!/^[^:\s]+:\d+$|^\[[0-9a-fA-F:]+\]:\d+$/.test(tagger)) throw new UsageError(`invalid --tagger "${tagger}": expected host:port`);
  return { key: positional[0]!, tagger, output, atNs, security: { ...securityDefaults(env, fromFile), ...flagged } };
}

async function lookup(address: string, request: LookupRequest, security: GrpcClientSecurity, timeoutMs = 5000): Promise<LookupResponse> {
  const method = kubeTagsServiceDefinition.Lookup as MethodDefinition<LookupRequest, LookupResponse>;
  const secured = grpcClientSecurity(security);
  const client = new Client(address, secured.credentials);
  try {
    return await new Promise<LookupResponse>((resolve, reject) => {
      client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, secured.metadata(), { deadline: Date.now() + timeoutMs }, (error, response) => {
        if (error || !response) reject(error ?? new Error('empty response'));
        else resolve(response);
      });
    });
  } finally {
    client.close();
  }
}

function table(key: string, response: LookupResponse): string {
  const kube = response.kube;
  if (!kube) return `${key}\tnot known to the tagger\n`;
  const rows: [string, string][] = [
    ['key', key],
    ['object', `${kube.objectType} ${kube.objectNamespace ? `${kube.objectNamespace}/` : ''}${kube.objectName}`],
  ];
  if (kube.workloadKind) rows.push(['workload', `${kube.workloadKind} ${kube.workloadNamespace ? `${kube.workloadNamespace}/` : ''}${kube.workloadName}`]);
  if (kube.node) rows.push(['node', kube.node]);
  if (kube.containerName) rows.push(['container', kube.containerName]);
  if (kube.serviceName) rows.push(['service', `${kube.serviceNamespace}/${kube.serviceName}`]);
  const labels = Object.entries(kube.labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`);
  if (labels.length > 0) rows.push(['labels', labels.join(',')]);
  if (kube.objectUid) rows.push(['uid', kube.objectUid]);
  if (response.backends.length > 0) rows.push(['backends', response.backends.join(' ')]);
  return rows.map(([name, value]) => `${name.padEnd(10)}${value}\n`).join('');
}

export async function runTags(argv: string[], io: TagsIo = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let args: TagsArgs;
  try {
    args = parseArgs(argv, io.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.stderr.write(`kappa tags: ${error.message}\n`);
    return 2;
  }
  const request = create(LookupRequestSchema, {
    key: isIP(args.key) ? { case: 'ip', value: args.key } : { case: 'containerId', value: args.key },
    atNs: args.atNs,
  });
  let response: LookupResponse;
  try {
    response = await lookup(args.tagger, request, args.security);
  } catch (error) {
    if (error instanceof GrpcSecurityError) {
      io.stderr.write(`kappa tags: ${error.message}\n`);
      return 2;
    }
    io.stderr.write(`kappa tags: the tagger at ${args.tagger} did not answer (${error instanceof Error ? error.message : String(error)}); is kappa-k8s-tagger running? (--tagger / KAPPA_TAGGER)\n`);
    return 1;
  }
  if (args.output === 'json') {
    const json = toJson(LookupResponseSchema, response) as Record<string, unknown>;
    io.stdout.write(`${JSON.stringify({ ...json, found: response.found })}\n`);
  }
  else io.stdout.write(table(args.key, response));
  return response.found ? 0 : 1;
}
