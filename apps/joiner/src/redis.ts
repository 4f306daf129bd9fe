// The joiner's Redis connection: fails fast while Redis is away (so the input batch is nak'ed and
// retried instead of hanging), reconnects forever, pipelines script calls automatically.
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';

export interface RedisSettings {
  url: URL;
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
export async function connectRedis(settings: RedisSettings): Promise<Redis> {
  const redis = new Redis(redisOptions(settings));
  await redis.connect();
  return redis;
}
