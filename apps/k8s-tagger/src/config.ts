// The k8s-tagger's options: flags, KAPPA_* variables or a --config file.
import { hostname } from 'node:os';
import { duration, integer, list, oneOf, string } from '@kappa/config';
import type { ConfigOf } from '@kappa/config';
import { natsOptions, partitionOptions } from '@kappa/bus';

export const DEFAULT_GRPC_PORT = 9480;
export const DEFAULT_METRICS_PORT = 9403;

export const taggerOptions = {
  kubeconfig: string({ description: 'kubeconfig file; without it the in-cluster service account is used, and without that only node names are tagged' }),
  clusterId: integer({ description: 'cluster id stamped on records (default: derived from the kube-system namespace UID)', min: 0, max: 0xffff_ffff }),
  deletedGrace: duration({ description: 'how long a deleted pod or Service stays known after its end, in flow time (late flows, a backlog)', default: '2m', minMs: 0 }),
  deletedRetention: duration({ description: 'wall-clock bound on keeping deleted pods and Services, whatever the flows\' times', default: '1h', minMs: 0 }),
  holdMax: duration({ description: 'how long a batch whose pod is not known yet is held (from its arrival) before its ends are tagged unknown', default: '10s', minMs: 0 }),
  podCidr: list({ item: /^[0-9a-fA-F:.]+\/\d{1,3}$/, accepted: 'comma-separated CIDRs (10.244.0.0/16,fd00:244::/56)', description: 'pod networks (CIDRs) besides the nodes\' spec.podCIDRs; an unknown address in one is a pod not seen yet' }),
  grpcPort: integer({ description: 'port of the kappa.tagger.v1.KubeTags gRPC service', default: DEFAULT_GRPC_PORT, min: 0, max: 65535 }),
  grpcHost: string({ description: 'address the gRPC service listens on', default: '0.0.0.0' }),
  grpcTlsCert: string({ description: 'server certificate file: the gRPC service speaks TLS (with --grpc-tls-key)' }),
  grpcTlsKey: string({ description: 'server key file for --grpc-tls-cert' }),
  grpcTlsClientCa: string({ description: 'CA file: clients must present a certificate it signed (mutual TLS)' }),
  grpcTokenFile: string({ description: 'file holding a bearer token every gRPC call must send (authorization: Bearer <token>); re-read when it changes' }),
  metricsPort: integer({ description: 'port of /metrics, /healthz and /readyz', default: DEFAULT_METRICS_PORT, min: 0, max: 65535 }),
  instance: string({ description: 'name of this replica in heartbeats and batch producers', default: hostname() }),
  maxInFlight: integer({ description: 'batches tagged at once by this replica', default: 4, min: 1, max: 256 }),
  logLevel: oneOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const, { description: 'log level', default: 'info' }),
  ...partitionOptions,
  ...natsOptions,
};

export type TaggerConfig = ConfigOf<typeof taggerOptions>;
