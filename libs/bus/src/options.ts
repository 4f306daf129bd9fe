// The NATS settings every service shares, as a config-table fragment and a parsed shape.
import { readFileSync } from 'node:fs';
import { fromSeed } from '@nats-io/nkeys';
import { duration, integer, list, string } from '@kappa/config';
import { DEFAULT_PARTITIONS } from '@kappa/contracts';

export const natsOptions = {
  natsUrl: list({ description: 'NATS server URLs', default: ['nats://127.0.0.1:4222'], item: /^(nats|tls):\/\/[^\s]+$/, accepted: 'comma-separated nats:// or tls:// URLs' }),
  natsUser: string({ description: 'NATS user name' }),
  natsPassword: string({ description: 'NATS password', secret: true }),
  natsToken: string({ description: 'NATS token', secret: true }),
  natsNkeySeed: string({ description: 'file holding the NATS nkey seed (SU...)' }),
  natsInboxPrefix: string({ description: 'prefix of reply subjects (default: _INBOX_<nkey public key> with --nats-nkey-seed, which per-identity permissions let only this identity read; _INBOX otherwise)' }),
  natsTlsCa: string({ description: 'CA certificate file for NATS TLS' }),
  natsTlsCert: string({ description: 'client certificate file for NATS mutual TLS' }),
  natsTlsKey: string({ description: 'client key file for NATS mutual TLS' }),
  streamMaxBytes: integer({ description: 'size limit of the KAPPA_FLOWS stream in bytes', default: 1024 ** 3, min: 1024 }),
  streamMaxAge: duration({ description: 'age limit of unconsumed batches in KAPPA_FLOWS', default: '1h', minMs: 1000 }),
  streamReplicas: integer({
    description: 'copies of each JetStream stream kept on as many NATS servers (3 on a NATS cluster of 3 or more); unset: 1 for a stream made here, and an existing stream keeps its own',
    min: 1,
    max: 5,
  }),
};

/**
 * The cluster-wide partition count: the enricher hashes each record's conversation group into
 * one of them (kappa.flow.enriched.p<k>.<node>); every stage and replica must agree on it.
 */
export const partitionOptions = {
  partitions: integer({ description: 'partitions of the flow subjects (cluster-wide: every stage must use the same number)', default: DEFAULT_PARTITIONS, min: 1, max: 4096 }),
};

export interface NatsAuth {
  user?: string;
  pass?: string;
  token?: string;
  nkeySeed?: Uint8Array;
}

export interface NatsTls {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

export interface StreamLimits {
  maxBytes: number;
  maxAgeMs: number;
  /** num_replicas of every kappa stream; undefined leaves it to the server (1) and never changes it. */
  replicas?: number | undefined;
}

interface NatsConfig {
  natsUrl: string[];
  natsUser?: string | undefined;
  natsPassword?: string | undefined;
  natsToken?: string | undefined;
  natsNkeySeed?: string | undefined;
  natsInboxPrefix?: string | undefined;
  natsTlsCa?: string | undefined;
  natsTlsCert?: string | undefined;
  natsTlsKey?: string | undefined;
  streamMaxBytes: number;
  streamMaxAge: number;
  streamReplicas?: number | undefined;
}

/** Turns the parsed natsOptions into connectBus options. */
export function busOptionsFromConfig(config: NatsConfig): { servers: string[]; auth: NatsAuth; tls?: NatsTls; streams: StreamLimits; inboxPrefix?: string } {
  const auth: NatsAuth = {};
  if (config.natsUser !== undefined) auth.user = config.natsUser;
  if (config.natsPassword !== undefined) auth.pass = config.natsPassword;
  if (config.natsToken !== undefined) auth.token = config.natsToken;
  let inboxPrefix = config.natsInboxPrefix;
  if (config.natsNkeySeed !== undefined) {
    auth.nkeySeed = new TextEncoder().encode(readFileSync(config.natsNkeySeed, 'utf8').trim());
    // Replies (publish acks, pulled messages) to a subject only this identity may read.
    inboxPrefix ??= `_INBOX_${fromSeed(auth.nkeySeed).getPublicKey()}`;
  }
  const tls: NatsTls = {};
  if (config.natsTlsCa !== undefined) tls.caFile = config.natsTlsCa;
  if (config.natsTlsCert !== undefined) tls.certFile = config.natsTlsCert;
  if (config.natsTlsKey !== undefined) tls.keyFile = config.natsTlsKey;
  const useTls = Object.keys(tls).length > 0 || config.natsUrl.some((u) => u.startsWith('tls://'));
  return {
    servers: config.natsUrl,
    auth,
    ...(useTls ? { tls } : {}),
    streams: { maxBytes: config.streamMaxBytes, maxAgeMs: config.streamMaxAge, ...(config.streamReplicas !== undefined ? { replicas: config.streamReplicas } : {}) },
    ...(inboxPrefix !== undefined ? { inboxPrefix } : {}),
  };
}
