// Turns argv, the KAPPA_* environment and an optional JSON file into one typed config object.
// Precedence: flag > environment > file > default.
import { readFileSync } from 'node:fs';
import { ConfigError, InvalidValue } from './options.js';
import type { Option } from './options.js';
import { redactSecrets, registerSecret, registerUrlSecret } from './secrets.js';

export type OptionTable = Record<string, Option<unknown>>;
/** The parsed config: options with a default are always present, the others may be undefined. */
export type ConfigOf<T extends OptionTable> = {
  [K in keyof T]: T[K] extends Option<infer V, infer D> ? (D extends true ? V : V | undefined) : never;
};

export interface ConfigSources {
  argv: readonly string[];
  env: Readonly<Record<string, string | undefined>>;
}

/** camelCase option key → --kebab-case flag. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** camelCase option key → KAPPA_SCREAMING_SNAKE variable. */
export function envName(key: string): string {
  return `KAPPA_${flagName(key).replace(/-/g, '_').toUpperCase()}`;
}

function parseValue(key: string, option: Option<unknown>, raw: string, source: string): unknown {
  try {
    return option.parse(raw);
  } catch (error) {
    // A value not marked secret may still carry one (a URL with user:password@).
    if (error instanceof InvalidValue) throw new ConfigError(key, option.secret ? '***' : redactSecrets(raw), option.accepted, source);
    throw error;
  }
}

/**
 * Parses the config. Throws ConfigError naming the flag (or variable) for the first bad value,
 * for an unknown flag and for a missing required value.
 */
export function parseConfig<T extends OptionTable>(
  table: T,
  sources: ConfigSources,
  required: readonly (keyof T & string)[] = [],
): ConfigOf<T> {
  const byFlag = new Map(Object.keys(table).map((key) => [flagName(key), key]));
  const fromFlags = new Map<string, string>();
  let configFile: string | undefined = sources.env.KAPPA_CONFIG;
  const argv = [...sources.argv];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const match = /^--([a-z0-9][a-z0-9-]*)(?:=(.*))?$/s.exec(arg);
    if (!match) throw new ConfigError('argv', arg, `a flag like --name=value (see --help)`, 'argument');
    const name = match[1] ?? '';
    let value = match[2];
    if (name === 'config') {
      configFile = value ?? argv[++i];
      continue;
    }
    const key = byFlag.get(name);
    const option = key === undefined ? undefined : table[key];
    if (key === undefined || option === undefined) {
      throw new ConfigError(name, undefined, 'a flag listed by --help', `--${name}`, `unknown flag --${name}: see --help for the flags`);
    }
    if (value === undefined) {
      const next = argv[i + 1];
      if (option.isSwitch && (next === undefined || next.startsWith('--') || !/^(true|false|1|0|yes|no|on|off)$/i.test(next))) {
        value = 'true';
      } else if (next === undefined) {
        throw new ConfigError(key, undefined, option.accepted, `value for --${name}`);
      } else {
        value = next;
        i++;
      }
    }
    fromFlags.set(key, value);
  }

  let fromFile: Record<string, unknown> = {};
  if (configFile) {
    try {
      fromFile = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    } catch (cause) {
      throw new ConfigError('config', configFile, `a readable JSON file (${(cause as Error).message})`, '--config');
    }
  }

  const config: Record<string, unknown> = {};
  for (const [key, option] of Object.entries(table)) {
    const flag = fromFlags.get(key);
    const env = sources.env[envName(key)];
    const file = fromFile[key] ?? fromFile[flagName(key)];
    if (flag !== undefined) config[key] = parseValue(key, option, flag, `--${flagName(key)}`);
    else if (env !== undefined && env !== '') config[key] = parseValue(key, option, env, envName(key));
    else if (file !== undefined) config[key] = parseValue(key, option, String(file), `"${key}" in ${configFile}`);
    else config[key] = option.defaultValue;
    rememberSecrets(key, option, config[key]);
    if (config[key] === undefined && required.includes(key as keyof T & string)) {
      throw new ConfigError(key, undefined, option.accepted, `--${flagName(key)} (or ${envName(key)})`);
    }
  }
  return config as ConfigOf<T>;
}

/** Option names that hold a secret even where the table forgot `secret: true`. */
const secretByName = /password|passwd|token|secret|credential/i;

/** Secret options and passwords in URL-valued options become known to redactSecrets. */
function rememberSecrets(key: string, option: Option<unknown>, value: unknown): void {
  for (const item of Array.isArray(value) ? (value as unknown[]) : [value]) {
    if (item instanceof URL) registerUrlSecret(item);
    else if (typeof item === 'string') {
      if (option.secret || secretByName.test(key)) registerSecret(item);
      else if (/^[a-z][a-z0-9+.-]*:\/\/[^/\s]*@/i.test(item)) registerUrlSecret(item);
    }
  }
}

/** --help text: one line per option with its flag, variable, default and accepted values. */
export function renderHelp(command: string, summary: string, table: OptionTable): string {
  const lines = [`Usage: ${command} [--flag=value ...]`, '', summary, '', 'Options (each also read from its KAPPA_* variable):'];
  for (const [key, option] of Object.entries(table)) {
    const dflt = option.defaultValue;
    const shown =
      dflt === undefined || option.secret
        ? ''
        : ` [default: ${dflt instanceof RegExp ? dflt.source.replace(/^\^\(\?:(.*)\)\$$/, '$1') : Array.isArray(dflt) ? dflt.join(',') : String(dflt)}]`;
    lines.push(`  --${flagName(key)}  (${envName(key)})`);
    lines.push(`      ${option.description}; ${option.accepted}${shown}`);
  }
  lines.push('  --config FILE  (KAPPA_CONFIG)', '      a JSON file of option values (flags and environment win)');
  lines.push('  --help', '      print this help and exit');
  return lines.join('\n');
}

