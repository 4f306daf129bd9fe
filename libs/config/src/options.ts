// Typed option definitions: each option knows its flag, its KAPPA_* variable, its default and how
// to parse and describe its accepted values, so one table drives parsing, errors and --help.

/** A value that failed validation; the message names the key, the value and what is accepted. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly key: string,
    readonly value: string | undefined,
    readonly accepted: string,
    readonly source: string,
    message?: string,
  ) {
    super(
      message ??
        (value === undefined
          ? `missing ${source}: expected ${accepted}`
          : `invalid ${source} ${JSON.stringify(value)}: expected ${accepted}`),
    );
  }
}

export interface Option<T, D extends boolean = boolean> {
  /** Type-level marker: the option has a default, so the parsed value is never undefined. */
  readonly hasDefault?: D;
  readonly description: string;
  /** What is accepted, in words, for errors and --help. */
  readonly accepted: string;
  readonly defaultValue: T | undefined;
  /** A flag written without a value (`--stdout`) means true. */
  readonly isSwitch: boolean;
  /** Keep secrets out of --help and of config dumps. */
  readonly secret: boolean;
  parse(raw: string): T;
}

interface Common<T> {
  description: string;
  default?: T;
  secret?: boolean;
}

class InvalidValue extends Error {}

type Defaulted<C> = C extends { default: unknown } ? true : false;

function option<T>(accepted: string, common: Common<T>, parse: (raw: string) => T, isSwitch = false): Option<T> {
  return {
    description: common.description,
    accepted,
    defaultValue: common.default,
    isSwitch,
    secret: common.secret ?? false,
    parse,
  };
}

export function string<C extends Common<string> & { pattern?: RegExp; accepted?: string }>(common: C): Option<string, Defaulted<C>> {
  const accepted = common.accepted ?? (common.pattern ? `a value matching ${common.pattern}` : 'a string');
  return <never>option(accepted, common, (raw) => {
    if (common.pattern && !common.pattern.test(raw)) throw new InvalidValue();
    return raw;
  });
}

export function integer<C extends Common<number> & { min?: number; max?: number }>(common: C): Option<number, Defaulted<C>> {
  const min = common.min ?? Number.MIN_SAFE_INTEGER;
  const max = common.max ?? Number.MAX_SAFE_INTEGER;
  const accepted =
    common.min !== undefined && common.max !== undefined
      ? `an integer from ${min} to ${max}`
      : common.min !== undefined
        ? `an integer of at least ${min}`
        : 'an integer';
  return <never>option(accepted, common, (raw) => {
    if (!/^-?\d+$/.test(raw.trim())) throw new InvalidValue();
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidValue();
    return n;
  });
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses "500ms", "10s", "2m", "1h" (or a bare number of seconds) into milliseconds. */
export function parseDurationMs(raw: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw.trim());
  if (!match) return undefined;
  return Math.round(Number(match[1]) * (units[match[2] ?? 's'] ?? 1000));
}

/** A duration, parsed to milliseconds. */
export function duration<C extends Common<string> & { minMs?: number }>(common: C): Option<number, Defaulted<C>> {
  const minMs = common.minMs ?? 0;
  const base = { ...common, default: common.default === undefined ? undefined : parseDurationMs(common.default) };
  return <never>option(`a duration like 500ms, 10s or 2m${minMs ? ` (at least ${minMs}ms)` : ''}`, base, (raw) => {
    const ms = parseDurationMs(raw);
    if (ms === undefined || ms < minMs) throw new InvalidValue();
    return ms;
  });
}

export function boolean(common: Common<boolean>): Option<boolean, true> {
  return <never>option(
    'true or false',
    { ...common, default: common.default ?? false },
    (raw) => {
      const v = raw.trim().toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(v)) return true;
      if (['false', '0', 'no', 'off'].includes(v)) return false;
      throw new InvalidValue();
    },
    true,
  );
}

export function oneOf<const V extends string, C extends Common<V> = Common<V>>(values: readonly V[], common: C): Option<V, Defaulted<C>> {
  return <never>option(`one of ${values.join(', ')}`, common, (raw) => {
    if (!(values as readonly string[]).includes(raw)) throw new InvalidValue();
    return raw as V;
  });
}

/** A comma-separated list. */
export function list<C extends Common<string[]> & { item?: RegExp; accepted?: string }>(common: C): Option<string[], Defaulted<C>> {
  return <never>option(common.accepted ?? 'a comma-separated list', common, (raw) => {
    const items = raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
    if (common.item && items.some((i) => !common.item?.test(i))) throw new InvalidValue();
    return items;
  });
}

export function regex<C extends Common<string>>(common: C): Option<RegExp, Defaulted<C>> {
  const base = { ...common, default: common.default === undefined ? undefined : new RegExp(`^(?:${common.default})$`) };
  return <never>option('a regular expression', base, (raw) => {
    try {
      return new RegExp(`^(?:${raw})$`);
    } catch {
      throw new InvalidValue();
    }
  });
}

/** A URL whose scheme is one of `schemes` (e.g. nats, tls, redis, udp). */
export function url<C extends Common<string> & { schemes: readonly string[] }>(common: C): Option<URL, Defaulted<C>> {
  const base = { ...common, default: common.default === undefined ? undefined : new URL(common.default) };
  return <never>option(`a URL like ${common.schemes[0]}://host:port (scheme ${common.schemes.join(', ')})`, base, (raw) => {
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      throw new InvalidValue();
    }
    if (!common.schemes.includes(parsed.protocol.replace(/:$/, ''))) throw new InvalidValue();
    return parsed;
  });
}

export { InvalidValue };
