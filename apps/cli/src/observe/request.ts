// Turns `kappa observe` / `kappa top` flags into Observer requests: the hubble-style selection
// flags and --filter become one filter-language text, --since/--until become flow-time bounds.
import { ConfigError, list, parseDurationMs } from '@kappa/config';
import { FilterError, FlagValueError, andFilters, flagsToFilter, parseFilter, selectionFlags } from '@kappa/filter';

/** One list option per selection flag (--from-pod, --to-port, --namespace, ...). */
export const selectionOptions = Object.fromEntries(selectionFlags.map((flag) => [flag.option, list({ description: `only ${flag.description} (comma-separated or repeated)` })])) as Record<
  string,
  ReturnType<typeof list<{ description: string }>>
>;

/** A bad flag or filter, with the text to print (exit 2). */
export class UsageError extends Error {}

/**
 * A point in time: a duration back from now (30s, 5m, 2h), an RFC 3339 time
 * (2026-11-26T08:00:00Z) or unix nanoseconds. Unix ns.
 */
export function parseTime(flag: string, text: string, nowMs = Date.now()): bigint {
  if (/^\d{16,20}$/.test(text)) return BigInt(text);
  const ago = parseDurationMs(text);
  if (ago !== undefined) return BigInt(nowMs - ago) * 1_000_000n;
  if (/^\d{4}-\d{2}-\d{2}[T ]/.test(text)) {
    const at = Date.parse(text);
    if (!Number.isNaN(at)) return BigInt(at) * 1_000_000n;
  }
  throw new ConfigError(flag, text, 'a duration back from now like 30s or 5m, an RFC 3339 time like 2026-11-26T08:00:00Z, or unix nanoseconds', `--${flag}`);
}

/** The filter of --filter and every selection flag; throws UsageError naming the flag or position. */
export function buildFilter(config: Record<string, unknown>): string {
  let flags: string;
  try {
    flags = flagsToFilter(config as Record<string, string[] | undefined>);
  } catch (error) {
    if (error instanceof FlagValueError) throw new UsageError(error.message);
    throw error;
  }
  const text = typeof config.filter === 'string' ? config.filter : '';
  try {
    parseFilter(text);
  } catch (error) {
    if (error instanceof FilterError) throw new UsageError(`--filter: ${error.message}`);
    throw error;
  }
  return andFilters(text, flags);
}

/**
 * hubble-style argv: `-o json` is --output=json, and a repeated list flag (--from-pod a
 * --from-pod b) adds values instead of replacing them.
 */
export function normalizeArgv(argv: string[], listFlags: ReadonlySet<string>): string[] {
  const out: string[] = [];
  const lists = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    if (arg === '-o' || arg === '-f' || arg === '-n') {
      const long = { '-o': '--output', '-f': '--follow', '-n': '--namespace' }[arg]!;
      if (arg === '-f') {
        out.push(long);
        continue;
      }
      arg = `${long}=${argv[++i] ?? ''}`;
    } else if (/^-o.+/.test(arg)) arg = `--output=${arg.slice(2)}`;
    const m = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(arg);
    if (m && listFlags.has(m[1]!)) {
      const value = m[2] ?? argv[++i] ?? '';
      lists.set(m[1]!, [...(lists.get(m[1]!) ?? []), value]);
      continue;
    }
    out.push(arg);
  }
  for (const [name, values] of lists) out.push(`--${name}=${values.join(',')}`);
  return out;
}

export const selectionFlagNames: ReadonlySet<string> = new Set(selectionFlags.map((f) => f.option.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)));
