// The joiner's Redis connection: fails fast while Redis is away (so the input batch is nak'ed and
// retried instead of hanging), reconnects forever, pipelines script calls automatically.
import { Cluster, Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';

/** A single Redis or a Redis Cluster: the joiner's keys carry hash tags, so both work. */
export type RedisClient = Redis | Cluster;

export interface RedisSettings {
  url: URL;
  /** --redis-url names one seed node of a Redis Cluster. */
  cluster?: boolean | undefined;
  user?: string | undefined;
  password?: string | undefined;
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
  };
  const user = settings.user ?? (url.username ? decodeURIComponent(url.username) : undefined);
  const password = settings.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
  if (user) options.username = user;
  if (password) options.password = password;
  if (url.protocol === 'rediss:') options.tls = { servername: options.host ?? '' };
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
  const cluster = new Cluster([{ host: host ?? '127.0.0.1', port: port ?? 6379 }], {
    redisOptions: nodeOptions,
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    clusterRetryStrategy: (attempt) => Math.min(100 * attempt, 1000),
    lazyConnect: true,
  });
  await cluster.connect();
  return cluster;
}
