// pino JSON logs, one logger per service, with the service name on every line. No line carries a
// secret: fields named like one are censored, a Redis client's command arguments (which hold
// AUTH passwords and stored records) are dropped from errors, and each finished line goes through
// @kappa/config's redactSecrets (known secret values, URL passwords, bearer tokens, NAME=value).
import { pino } from 'pino';
import type { Logger, LevelWithSilent } from 'pino';
import { redactSecrets } from '@kappa/config';

export type { Logger };
export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const CENSOR = '[redacted]';
const secretKey = /^(pass|password|passwd|token|secret|authorization|cookie|credentials?|nkeySeed|seed|apiKey|privateKey)$/i;

/** Censors secret-named fields and Redis command arguments, at any depth (bounded). */
function scrub(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  // An Error is left whole for the err serializer (which scrubs what it makes of it).
  if (seen.has(value) || value instanceof Error) return value;
  seen.add(value);
  if (Array.isArray(value)) return value.map((item) => scrub(item, depth + 1, seen));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (secretKey.test(key) && item !== undefined && item !== null && item !== '') out[key] = CENSOR;
    // ioredis puts {name, args} of the failed command on its errors: AUTH args are credentials,
    // SET/HSET args are records (command lines included).
    else if (key === 'command' && item !== null && typeof item === 'object' && 'args' in item) out[key] = { ...(item as object), args: [CENSOR] };
    else out[key] = scrub(item, depth + 1, seen);
  }
  return out;
}

function serializeError(error: unknown): unknown {
  return scrub(error instanceof Error ? pino.stdSerializers.err(error) : error);
}

export function createLogger(service: string, level: LevelWithSilent = 'info', destination: number | NodeJS.WritableStream = 2): Logger {
  const stream = typeof destination === 'number' ? pino.destination({ fd: destination, sync: true }) : destination;
  return pino(
    {
      name: service,
      level,
      base: { service, pid: process.pid },
      serializers: { err: serializeError, error: serializeError },
      formatters: { log: (fields) => scrub(fields) as Record<string, unknown> },
      hooks: { streamWrite: (line) => redactSecrets(line) },
    },
    stream,
  );
}
