// The joiner's Redis connection: fails fast while Redis is away (so the input batch is nak'ed and
// retried instead of hanging), reconnects forever, pipelines script calls automatically.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Cluster, Redis } from 'ioredis';
import type { ClusterOptions, RedisOptions } from 'ioredis';

/** A single Redis or a Redis Cluster: the joiner's keys carry hash tags, so both work. */
export type RedisClient = Redis | Cluster;

export interface RedisSettings {
  url: URL;
  /** --redis-url names one seed node of a Redis Cluster. */
  cluster?: boolean | undefined;
  user?: string | undefined;
  password?: string | undefined;
  /** Any of these set, or a rediss:// URL: TLS (the CA file replaces the system's trust store). */
  tlsCa?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
}

/** A Redis TLS file cannot be read, or a client certificate comes without its key. */
export class RedisTlsError extends Error {
  override readonly name = 'RedisTlsError';
}

function readTlsFile(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (cause) {
    throw new RedisTlsError(`cannot read ${flag} ${file}: ${(cause as Error).message}`, { cause });
  }
}

/** Whether the link is encrypted and authenticated, for the start warning. */
export function redisLinkSecurity(settings: RedisSettings): { tls: boolean; authenticated: boolean } {
  const { url } = settings;
  return {
    tls: url.protocol === 'rediss:' || settings.tlsCa !== undefined || settings.tlsCert !== undefined,
    authenticated: Boolean(settings.password ?? url.password),
  };
}

/** The one start warning for a plaintext or password-less Redis link, or undefined. */
export function redisLinkWarning(settings: RedisSettings): string | undefined {
  const { tls, authenticated } = redisLinkSecurity(settings);
  const lacks: string[] = [];
  if (!tls) lacks.push('plaintext (use a rediss:// --redis-url and --redis-tls-ca; --redis-tls-cert and --redis-tls-key for mutual TLS)');
  if (!authenticated) lacks.push('unauthenticated (set --redis-user and --redis-password for the ACL user of infra/redis/kappa.acl)');
  return lacks.length > 0 ? `the Redis link is ${lacks.join(' and ')}` : undefined;
}

export function redisOptions(settings: RedisSettings): RedisOptions {
  const { url } = settings;
  const options: RedisOptions = {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port ? Number(url.port) : 6379,
    db: url.pathname.length > 1 ? Number(url.pathname.slice(1)) || 0 : 0,
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: 5000,
    connectTimeout: 5000,
    retryStrategy: (attempt) => Math.min(100 * attempt, 1000),
    lazyConnect: true,
    // The ready check sends INFO, which the ACL user of infra/redis/kappa.acl may not run; a
    // Redis still loading answers LOADING, which fails the batch like any Redis error (retried).
    enableReadyCheck: false,
  };
  const user = settings.user ?? (url.username ? decodeURIComponent(url.username) : undefined);
  const password = settings.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
  if (user) options.username = user;
  if (password) options.password = password;
  if ((settings.tlsCert !== undefined) !== (settings.tlsKey !== undefined)) {
    throw new RedisTlsError('--redis-tls-cert and --redis-tls-key go together: set both or neither');
  }
  if (redisLinkSecurity(settings).tls) {
    options.tls = {
      // SNI only for names: an IP address as servername is invalid (RFC 6066); the certificate is still checked against it.
      ...(isIP(options.host ?? '') ? {} : { servername: options.host ?? '' }),
      ...(settings.tlsCa !== undefined ? { ca: readTlsFile(settings.tlsCa, '--redis-tls-ca') } : {}),
      ...(settings.tlsCert !== undefined ? { cert: readTlsFile(settings.tlsCert, '--redis-tls-cert') } : {}),
      ...(settings.tlsKey !== undefined ? { key: readTlsFile(settings.tlsKey, '--redis-tls-key') } : {}),
    };
  }
  return options;
}

/** Connects; resolves once connected or rejects on the first failure (the service exits). */
export async function connectRedis(settings: RedisSettings): Promise<RedisClient> {
  const options = redisOptions(settings);
  if (!settings.cluster) {
    const redis = new Redis(options);
    await redis.connect();
    return redis;
  }
  const { host, port, retryStrategy: _retry, enableOfflineQueue: _offline, db: _db, lazyConnect: _lazy, ...nodeOptions } = options;
  // A first CLUSTER SLOTS slower than slotsRefreshTimeout (ioredis's 1 s: a loaded machine) fails
  // the connect ('None of startup nodes is available'): try again for a while before giving up.
  for (const end = Date.now() + CLUSTER_CONNECT_WAIT_MS; ; ) {
    const cluster = new Cluster([{ host: host ?? '127.0.0.1', port: port ?? 6379 }], clusterOptions(nodeOptions));
    cluster.on('error', () => undefined); // the attempt's failure is what connect() rejects with
    try {
      await cluster.connect();
      return cluster;
    } catch (error) {
      cluster.disconnect();
      if (Date.now() >= end) throw error;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/**
 * How long a joiner starting against a Redis Cluster keeps trying before it exits. ioredis's
 * 1 s for CLUSTER SLOTS (slotsRefreshTimeout, kept: a longer one delays every refresh that meets
 * a dead primary during a failover) made a joiner starting at load 30 exit at once.
 */
export const CLUSTER_CONNECT_WAIT_MS = 10_000;

/** How often a Redis Cluster client re-reads the cluster's slots, primaries and replicas. */
export const SLOTS_REFRESH_MS = 5000;

/**
 * A Redis Cluster's client options. Over TLS each node's certificate is checked against that
 * node's own name as the cluster announces it (no servername fixed to the seed's), and names are
 * not resolved to addresses first: managed clusters (ElastiCache, a self-run cluster announcing
 * hostnames) have certificates for names, not pod or VM addresses.
 */
export function clusterOptions(nodeOptions: RedisOptions): ClusterOptions {
  const { servername: _servername, ...tls } = nodeOptions.tls ?? {};
  return {
    redisOptions: { ...nodeOptions, ...(nodeOptions.tls ? { tls } : {}) },
    ...(nodeOptions.tls ? { dnsLookup: (address: string, callback: (error: null, address: string) => void) => callback(null, address) } : {}),
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    clusterRetryStrategy: (attempt) => Math.min(100 * attempt, 1000),
    // ioredis 6 asks CLUSTER SLOTS only at connect and on MOVED/errors unless told to: without this
    // the heartbeat (kappa status) keeps the nodes of the first look (the replicas join later) and
    // a promoted replica is learnt only by the first command that fails on the dead primary.
    slotsRefreshInterval: SLOTS_REFRESH_MS,
    lazyConnect: true,
  };
}

/**
 * The Redis servers this client uses now, for the heartbeat (kappa status): a Redis Cluster's
 * primaries and replicas as the client last learnt them (on MOVED, and every SLOTS_REFRESH_MS).
 */
export function describeRedis(redis: RedisClient): string {
  if (!(redis instanceof Cluster)) return `single server ${redis.options.host ?? ''}:${redis.options.port ?? ''} (${redis.status})`;
  const where = (node: Redis) => `${node.options.host ?? ''}:${node.options.port ?? ''}`;
  const primaries = redis.nodes('master').map(where).sort();
  const replicas = redis.nodes('slave').map(where).sort();
  return `cluster of ${primaries.length} primaries and ${replicas.length} replicas (${redis.status}): primaries ${primaries.join(' ')}; replicas ${replicas.join(' ') || '-'}`;
}
