// The exporter's options: which sinks run and how, plus the settings every service shares.
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { natsOptions } from '@kappa/bus';
import type { GrpcClientSecurity } from '@kappa/contracts';
import { boolean, duration, integer, oneOf, string, url } from '@kappa/config';
import { logLevels, metricsHostOption } from '@kappa/observability';
import { DEFAULT_KAPPA_PEN } from './ipfix/elements.js';

export const exporterOptions = {
  jsonl: string({
    description: 'JSON Lines file of flows (canonical protobuf JSON, one FlowRecord per line); empty or "off" disables',
    default: './.kappa/flows.jsonl',
  }),
  jsonlMaxBytes: integer({ description: 'rotate the JSON Lines file before it grows past this many bytes', default: 100 * 1024 ** 2, min: 1024 }),
  jsonlKeep: integer({ description: 'rotated JSON Lines files kept (flows.jsonl.1 … .N)', default: 5, min: 0, max: 1000 }),
  jsonlDedupeWindow: integer({
    description: 'bytes at the end of the JSON Lines files whose record ids are read at start, so that batches redelivered after a crash are not written twice',
    default: 32 * 1024 ** 2,
    min: 0,
  }),
  ipfix: url({ description: 'IPFIX collector to export to, udp://host:port or tcp://host:port (disabled when unset)', schemes: ['udp', 'tcp'] }),
  ipfixTemplateRefresh: duration({ description: 'how often templates are resent over UDP (TCP sends them on each connect)', default: '30s', minMs: 100 }),
  ipfixEnterpriseNumber: integer({
    description: 'IANA private enterprise number of kappa\'s IPFIX elements; the default 32473 is the documentation PEN (RFC 5612): set your own',
    default: DEFAULT_KAPPA_PEN,
    min: 1,
    max: 4294967295,
  }),
  ipfixDomainOffset: integer({
    description:
      'added to the cluster id to make the IPFIX observation domain id; give each exporter replica that reaches a collector from the same address its own (0, 1, ...): collectors such as nfcapd check sequence numbers per address and domain',
    default: 0,
    min: 0,
    max: 4294967295,
  }),
  ipfixMtu: integer({ description: 'path MTU towards a UDP collector; each IPFIX datagram fits it', default: 1500, min: 576, max: 65535 }),
  ipfixMaxStringBytes: integer({ description: 'longer process and Kubernetes strings are cut (at a UTF-8 boundary) in IPFIX', default: 1024, min: 0, max: 1500 }),
  prometheus: boolean({ description: 'export workload-to-workload kappa_flow_* metrics on /metrics', default: true }),
  prometheusMaxSeries: integer({ description: 'label sets of kappa_flow_* kept; records of further sets are dropped and counted', default: 10_000, min: 1 }),
  observer: boolean({ description: 'serve recent flows over gRPC (kappa.observer.v1.Observer) for kappa observe', default: true }),
  observerHost: string({ description: 'address the Observer listens on', default: '0.0.0.0' }),
  observerPort: integer({ description: 'Observer gRPC port (0 = any free port)', default: 9481, min: 0, max: 65535 }),
  observerTlsCert: string({ description: 'server certificate file: the Observer speaks TLS (with --observer-tls-key)' }),
  observerTlsKey: string({ description: 'server key file for --observer-tls-cert' }),
  observerTlsClientCa: string({ description: 'CA file: Observer clients must present a certificate it signed (mutual TLS)' }),
  observerTokenFile: string({ description: 'file holding a bearer token every Observer call must send (authorization: Bearer <token>); re-read when it changes' }),
  observerRelay: boolean({
    description: 'answer Observer calls with the flows of every exporter replica: the others (heard on kappa.status with an advertised Observer) are asked for their share and the answers merged',
    default: true,
  }),
  observerAdvertise: string({
    description: 'host:port the other exporter replicas reach this Observer at (default: --observer-host:port unless that is a wildcard address; in Kubernetes the pod IP)',
  }),
  observerPeerCa: string({ description: 'CA file that signed the other replicas\' Observer certificates (default: --observer-tls-client-ca); this replica presents --observer-tls-cert to them' }),
  observerPeerName: string({ description: 'the name the other replicas\' Observer certificates carry, when they are reached by an address the certificate does not name (Kubernetes: the Service name)' }),
  observerBuffer: integer({ description: 'records kept in memory for the Observer', default: 100_000, min: 1 }),
  observerBufferBytes: integer({
    description: 'bytes of records (as received, protobuf) the Observer keeps at most; the oldest make room',
    default: 128 * 1024 ** 2,
    min: 64 * 1024,
  }),
  observerRetention: duration({ description: 'records older than this leave the Observer buffer', default: '10m', minMs: 1000 }),
  store: boolean({ description: 'keep every flow on disk for --store-retention and serve time-range queries and aggregates (the console, kappa observe --since, kappa top)', default: true }),
  storeDir: string({ description: 'folder of the flow store (default: "store" beside the JSON Lines file, else ./.kappa/store)' }),
  storeRetention: duration({ description: 'flows older than this (flow time) leave the store', default: '24h', minMs: 60_000 }),
  storeMaxBytes: integer({ description: 'the store folder is kept under this many bytes by dropping its oldest segments', default: 2 * 1024 ** 3, min: 16 * 1024 ** 2 }),
  storeSegmentRecords: integer({ description: 'records per store segment (a segment is sealed into Parquet when full)', default: 500_000, min: 1 }),
  storeSegmentAge: duration({ description: 'a store segment is sealed at this age even when not full', default: '5m', minMs: 1000 }),
  storeMemory: string({ description: 'memory DuckDB may use for store queries (e.g. 256MB)', default: '256MB' }),
  storeThreads: integer({
    description: 'DuckDB threads for sealing segments and for store queries: one keeps a seal within one core beside the live path (with two a seal cost ~20 % more CPU on 2 busy cores; queries over many raw rows gain from more)',
    default: 1,
    min: 1,
    max: 64,
  }),
  storePendingSeals: integer({ description: 'full store segments that may wait for their seal while ingest goes on (0: seal before taking the next batch)', default: 2, min: 0, max: 64 }),
  storeDedupeWindow: integer({ description: 'ids of the newest stored records remembered at start: a batch redelivered after a crash skips them', default: 200_000, min: 0, max: 10_000_000 }),
  maxInFlight: integer({ description: 'batches handled at once', default: 4, min: 1, max: 64 }),
  ...natsOptions,
  metricsHost: metricsHostOption,
  metricsPort: integer({ description: 'port of /metrics, /healthz and /readyz (0 = any free port)', default: 9405, min: 0, max: 65535 }),
  logLevel: oneOf(logLevels, { description: 'log level', default: 'info' }),
  instance: string({ description: 'instance name in heartbeats and logs', default: `${hostname()}-${process.pid}` }),
};

/** The store's folder: --store-dir, else `store` beside the JSON Lines file, else ./.kappa/store. */
export function storeDir(config: { storeDir?: string | undefined; jsonl: string }): string {
  if (config.storeDir) return config.storeDir;
  const jsonl = jsonlPath(config.jsonl);
  return jsonl === undefined ? './.kappa/store' : join(dirname(jsonl), 'store');
}

/** `--jsonl=` (or off / none / false) turns the file sink off. */
export function jsonlPath(value: string): string | undefined {
  return ['', 'off', 'none', 'false'].includes(value.trim().toLowerCase()) ? undefined : value;
}

interface ObserverLinkConfig {
  observerHost: string;
  observerAdvertise?: string | undefined;
  observerTlsCert?: string | undefined;
  observerTlsKey?: string | undefined;
  observerTlsClientCa?: string | undefined;
  observerTokenFile?: string | undefined;
  observerPeerCa?: string | undefined;
}

/** Where the other replicas reach this Observer: --observer-advertise, else the listen address unless it is a wildcard (then none). */
export function observerAdvertise(config: ObserverLinkConfig, port: number): string | undefined {
  if (config.observerAdvertise) return config.observerAdvertise;
  const host = config.observerHost.replace(/^\[|\]$/g, '');
  if (host === '' || host === '0.0.0.0' || host === '::') return undefined;
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * How the relay calls the other replicas' Observers: they run with this replica's settings, so it
 * presents its own certificate (make-ca.sh's server certificate is a client's too) and token, and
 * checks theirs against --observer-peer-ca, else the CA its own clients are checked against.
 * Throws when TLS is on and no CA is known to check the others with.
 */
export function observerRelaySecurity(config: ObserverLinkConfig): GrpcClientSecurity {
  const caFile = config.observerPeerCa ?? config.observerTlsClientCa;
  if (config.observerTlsCert !== undefined && caFile === undefined) {
    throw new Error('the Observer speaks TLS but the relay has no CA to check the other replicas with: set --observer-peer-ca (or --observer-tls-client-ca), or --observer-relay=false');
  }
  return {
    caFile,
    ...(config.observerTlsCert !== undefined ? { certFile: config.observerTlsCert, keyFile: config.observerTlsKey } : {}),
    tokenFile: config.observerTokenFile,
  };
}
