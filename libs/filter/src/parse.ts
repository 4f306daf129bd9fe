// The flow filter language, shared by `kappa observe`, the console and the Observer API:
//   src.namespace == "shop" and dst.port == 443 and not dst.workload == "redis"
//   (namespace in (shop, billing) or ip == 10.0.0.0/8) and protocol != udp and rtt > 5ms
// Grammar (keywords are case-insensitive; && || ! work too):
//   expr       := and ("or" and)*
//   and        := unary ("and" unary)*
//   unary      := "not" unary | "(" expr ")" | comparison
//   comparison := field ("==" | "!=" | "<" | "<=" | ">" | ">=") value | field ["not"] "in" "(" value ("," value)* ")"
//   value      := "quoted string" | 'quoted string' | bare word (letters, digits, . : / _ - *)
// A field without src./dst. (namespace, pod, ip, port, ...) matches when either end matches.
import { isIP } from 'node:net';
import { canonicalIp, ipToBytes } from '@kappa/contracts';
import { eitherEndFields, fields, fieldsByName } from './fields.js';
import type { FieldDef } from './fields.js';

/** A filter that cannot be parsed; `position` is the 0-based offset of the offending text. */
export class FilterError extends Error {
  override readonly name = 'FilterError';
  constructor(
    readonly reason: string,
    readonly position: number,
    readonly source: string,
  ) {
    super(`${reason} at position ${position + 1}\n  ${source}\n  ${' '.repeat(position)}^`);
  }
}

export type Operator = '==' | '!=' | '<' | '<=' | '>' | '>=' | 'in';

/** One typed value of a comparison: a CIDR is kept as its address range in hex (see ipHex). */
export type Value =
  | { kind: 'string'; value: string }
  | { kind: 'number'; value: number }
  | { kind: 'bool'; value: boolean }
  | { kind: 'cidr'; text: string; lowHex: string; highHex: string };

export type FilterNode =
  | { kind: 'and' | 'or'; left: FilterNode; right: FilterNode }
  | { kind: 'not'; expr: FilterNode }
  | { kind: 'compare'; field: FieldDef; either: boolean; op: Operator; values: Value[]; position: number };

interface Token {
  kind: 'word' | 'string' | 'op' | '(' | ')' | ',' | 'end';
  text: string;
  position: number;
}

const operators = ['==', '!=', '<=', '>=', '<', '>', '&&', '||', '!'];
const wordChar = /[A-Za-z0-9_.:/*\-]/;

function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < source.length) {
    const c = source[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === '(' || c === ')' || c === ',') {
      tokens.push({ kind: c, text: c, position: i });
      i++;
      continue;
    }
    if (c === '"' || c === "'") {
      let text = '';
      let j = i + 1;
      for (; j < source.length && source[j] !== c; j++) {
        if (source[j] === '\\' && j + 1 < source.length) j++;
        text += source[j];
      }
      if (j >= source.length) throw new FilterError(`unterminated string (no closing ${c})`, i, source);
      tokens.push({ kind: 'string', text, position: i });
      i = j + 1;
      continue;
    }
    const op = operators.find((o) => source.startsWith(o, i));
    if (op) {
      tokens.push({ kind: 'op', text: op, position: i });
      i += op.length;
      continue;
    }
    if (c === '=') throw new FilterError('"=" is not an operator: compare with ==', i, source);
    if (wordChar.test(c)) {
      let j = i;
      // A single "=" inside a word belongs to it (a label app=web); "==" never does.
      while (j < source.length && (wordChar.test(source[j]!) || (source[j] === '=' && source[j + 1] !== '=' && source[j - 1] !== '='))) j++;
      tokens.push({ kind: 'word', text: source.slice(i, j), position: i });
      i = j;
      continue;
    }
    throw new FilterError(`unexpected character ${JSON.stringify(c)}`, i, source);
  }
  tokens.push({ kind: 'end', text: '', position: source.length });
  return tokens;
}

const keyword = (t: Token, word: string) => t.kind === 'word' && t.text.toLowerCase() === word;

const durationUnits: Record<string, number> = { us: 1, µs: 1, ms: 1000, s: 1_000_000 };

class Parser {
  private i = 0;
  constructor(
    private readonly tokens: Token[],
    private readonly source: string,
  ) {}

  private tok(): Token {
    return this.tokens[this.i]!;
  }

  private fail(reason: string, token: Token = this.tok()): never {
    throw new FilterError(reason, token.position, this.source);
  }

  parse(): FilterNode {
    const node = this.or();
    if (this.tok().kind !== 'end') this.fail(`expected "and", "or" or the end of the filter, found ${describe(this.tok())}`);
    return node;
  }

  private or(): FilterNode {
    let left = this.and();
    while (keyword(this.tok(), 'or') || (this.tok().kind === 'op' && this.tok().text === '||')) {
      this.i++;
      left = { kind: 'or', left, right: this.and() };
    }
    return left;
  }

  private and(): FilterNode {
    let left = this.unary();
    while (keyword(this.tok(), 'and') || (this.tok().kind === 'op' && this.tok().text === '&&')) {
      this.i++;
      left = { kind: 'and', left, right: this.unary() };
    }
    return left;
  }

  private unary(): FilterNode {
    const token = this.tok();
    if (keyword(token, 'not') || (token.kind === 'op' && token.text === '!')) {
      this.i++;
      return { kind: 'not', expr: this.unary() };
    }
    if (token.kind === '(') {
      this.i++;
      const inner = this.or();
      if (this.tok().kind !== ')') this.fail(`expected ")" to close the "(" at position ${token.position + 1}, found ${describe(this.tok())}`);
      this.i++;
      return inner;
    }
    return this.comparison();
  }

  private comparison(): FilterNode {
    const token = this.tok();
    if (token.kind !== 'word') this.fail(`expected a field name, found ${describe(token)}`);
    const name = token.text.toLowerCase();
    const either = eitherEndFields.has(name);
    const field = fieldsByName.get(either ? `src.${name}` : name);
    if (!field) this.fail(`unknown field "${token.text}" (fields: ${fieldNames().join(', ')})`, token);
    this.i++;
    let op = this.tok();
    let negated = false;
    if (keyword(op, 'not') && keyword(this.tokens[this.i + 1]!, 'in')) {
      negated = true;
      this.i++;
      op = this.tok();
    }
    if (keyword(op, 'in')) {
      this.i++;
      if (this.tok().kind !== '(') this.fail(`expected "(" after "in", found ${describe(this.tok())}`);
      this.i++;
      const values: Value[] = [this.value(field)];
      while (this.tok().kind === ',') {
        this.i++;
        values.push(this.value(field));
      }
      if (this.tok().kind !== ')') this.fail(`expected "," or ")" in the list, found ${describe(this.tok())}`);
      this.i++;
      const node: FilterNode = { kind: 'compare', field, either, op: 'in', values, position: token.position };
      return negated ? { kind: 'not', expr: node } : node;
    }
    if (op.kind !== 'op' || !['==', '!=', '<', '<=', '>', '>='].includes(op.text)) {
      this.fail(`expected an operator (==, !=, <, <=, >, >=, in) after "${token.text}", found ${describe(op)}`, op);
    }
    this.i++;
    const operator = op.text as Operator;
    const ordered = field.type === 'uint' || field.type === 'duration';
    if (!ordered && operator !== '==' && operator !== '!=') this.fail(`"${field.name}" is compared with == , != or in, not ${operator}`, op);
    const value = this.value(field);
    if (value.kind === 'cidr' && operator !== '==' && operator !== '!=') this.fail('a CIDR prefix is compared with == or !=', op);
    return { kind: 'compare', field, either, op: operator, values: [value], position: token.position };
  }

  private value(field: FieldDef): Value {
    const token = this.tok();
    if (token.kind !== 'word' && token.kind !== 'string') this.fail(`expected a value for "${field.name}", found ${describe(token)}`);
    this.i++;
    const text = token.text;
    const bad = (what: string): never => this.fail(`"${text}" is not ${what} (${field.name})`, token);
    switch (field.type) {
      case 'string':
        return { kind: 'string', value: text };
      case 'labels':
        if (text === '' || text.startsWith('=')) bad('a label key=value or key');
        return { kind: 'string', value: text };
      case 'bool':
        if (!/^(true|false)$/i.test(text)) bad('true or false');
        return { kind: 'bool', value: text.toLowerCase() === 'true' };
      case 'uint': {
        if (!/^\d+$/.test(text)) bad('a whole number');
        return { kind: 'number', value: Number(text) };
      }
      case 'duration': {
        const m = /^(\d+(?:\.\d+)?)(us|µs|ms|s)?$/.exec(text);
        if (!m) bad('a duration (250us, 5ms, 1s; a bare number is µs)');
        return { kind: 'number', value: Math.round(Number(m![1]) * (durationUnits[m![2] ?? 'us'] ?? 1)) };
      }
      case 'enum': {
        const names = field.names ?? {};
        const lower = text.toLowerCase();
        if (lower in names) return { kind: 'number', value: names[lower]! };
        if (/^\d+$/.test(text)) return { kind: 'number', value: Number(text) };
        return bad(`one of ${Object.keys(names).join(', ')}`);
      }
      case 'ip': {
        const slash = text.indexOf('/');
        if (slash < 0) {
          if (!isIP(text)) bad('an IP address or CIDR prefix');
          return { kind: 'string', value: canonicalIp(text) };
        }
        const cidr = parseCidr(text.slice(0, slash), text.slice(slash + 1));
        if (!cidr) bad('a CIDR prefix (10.0.0.0/8, 2001:db8::/32)');
        return { kind: 'cidr', text, ...cidr! };
      }
    }
  }
}

function describe(token: Token): string {
  if (token.kind === 'end') return 'the end of the filter';
  return token.kind === 'string' ? `"${token.text}"` : `"${token.text}"`;
}

/** Field names as written in a filter, for help and error messages. */
export function fieldNames(): string[] {
  return [...fields.filter((f) => !f.name.startsWith('dst.')).map((f) => f.name), ...eitherEndFields].filter((n, i, all) => all.indexOf(n) === i);
}

function parseCidr(address: string, bitsText: string): { lowHex: string; highHex: string } | undefined {
  const version = isIP(address);
  if (version === 0 || !/^\d+$/.test(bitsText)) return undefined;
  let bits = Number(bitsText);
  if (bits > (version === 4 ? 32 : 128)) return undefined;
  const octets: number[] = [];
  if (version === 4) {
    octets.push(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...address.split('.').map(Number));
    bits += 96;
  } else {
    octets.push(...ipToBytes(address));
  }
  const low = octets.map((o, i) => {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    return o & ((0xff << (8 - keep)) & 0xff);
  });
  const high = low.map((o, i) => {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    return o | (0xff >> keep);
  });
  const hex = (bytes: number[]) => bytes.map((b) => b.toString(16).padStart(2, '0')).join('');
  return { lowHex: hex(low), highHex: hex(high) };
}

/** Parses a filter; an empty or blank filter is undefined (matches everything). */
export function parseFilter(source: string): FilterNode | undefined {
  if (source.trim() === '') return undefined;
  return new Parser(tokenize(source), source).parse();
}
