// Turns a parsed filter into what runs it: a predicate over FlowRecord objects (the live tail)
// and a SQL condition over the flow store's columns (history). Both come from the same tree, so
// the two cannot disagree on what a filter means; the tests run one filter through both.
import type { FlowRecord } from '@kappa/contracts';
import { fieldsByName, ipHex } from './fields.js';
import type { FieldDef } from './fields.js';
import { parseFilter } from './parse.js';
import type { FilterNode, Operator, Value } from './parse.js';

export type FlowPredicate = (record: FlowRecord) => boolean;

type Scalar = string | number | boolean;

/** `*` in a string value matches any run of characters. */
function globRegExp(pattern: string): RegExp {
  return new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's');
}

function valueTest(field: FieldDef, op: Operator, value: Value): (actual: Scalar) => boolean {
  switch (value.kind) {
    case 'cidr':
      return (actual) => {
        const hex = ipHex(actual as string);
        return hex !== '' && hex >= value.lowHex && hex <= value.highHex;
      };
    case 'string': {
      if (field.type === 'labels') {
        const needle = value.value.includes('=') ? `,${value.value},` : `,${value.value}=`;
        return (actual) => (actual as string).includes(needle);
      }
      if (value.value.includes('*')) {
        const re = globRegExp(value.value);
        return (actual) => re.test(actual as string);
      }
      return (actual) => actual === value.value;
    }
    case 'bool':
      return (actual) => actual === value.value;
    case 'number': {
      const n = value.value;
      switch (op) {
        case '<':
          return (actual) => (actual as number) < n;
        case '<=':
          return (actual) => (actual as number) <= n;
        case '>':
          return (actual) => (actual as number) > n;
        case '>=':
          return (actual) => (actual as number) >= n;
        default:
          return (actual) => actual === n;
      }
    }
  }
}

function sideFields(field: FieldDef, either: boolean): FieldDef[] {
  if (!either) return [field];
  return [field, fieldsByName.get(field.name.replace(/^src\./, 'dst.'))!];
}

function predicate(node: FilterNode): FlowPredicate {
  switch (node.kind) {
    case 'and': {
      const [l, r] = [predicate(node.left), predicate(node.right)];
      return (rec) => l(rec) && r(rec);
    }
    case 'or': {
      const [l, r] = [predicate(node.left), predicate(node.right)];
      return (rec) => l(rec) || r(rec);
    }
    case 'not': {
      const inner = predicate(node.expr);
      return (rec) => !inner(rec);
    }
    case 'compare': {
      const positive = node.op === '!=' ? '==' : node.op;
      const tests = node.values.map((v) => valueTest(node.field, positive, v));
      const readers = sideFields(node.field, node.either).map((f) => f.read);
      const matches: FlowPredicate = (rec) => readers.some((read) => {
        const actual = read(rec);
        return tests.some((test) => test(actual));
      });
      return node.op === '!=' ? (rec) => !matches(rec) : matches;
    }
  }
}

/** A predicate for a filter text; an empty filter matches every record. Throws FilterError. */
export function compilePredicate(source: string): FlowPredicate {
  const tree = parseFilter(source);
  return tree ? predicate(tree) : () => true;
}

/** A SQL string literal: single quotes doubled, NUL removed (values never reach SQL any other way). */
export function sqlString(text: string): string {
  return `'${text.replaceAll('\0', '').replaceAll("'", "''")}'`;
}

function likePattern(glob: string): string {
  return glob.replace(/[\\%_]/g, (c) => `\\${c}`).replaceAll('*', '%');
}

function valueSql(field: FieldDef, column: string, op: Operator, value: Value): string {
  switch (value.kind) {
    case 'cidr':
      return `(${column}_hex BETWEEN ${sqlString(value.lowHex)} AND ${sqlString(value.highHex)})`;
    case 'string':
      if (field.type === 'labels') {
        const needle = value.value.includes('=') ? `,${value.value},` : `,${value.value}=`;
        return `contains(${column}, ${sqlString(needle)})`;
      }
      if (value.value.includes('*')) return `(${column} LIKE ${sqlString(likePattern(value.value))} ESCAPE '\\')`;
      return `(${column} = ${sqlString(value.value)})`;
    case 'bool':
      return `(${column} = ${value.value ? 'true' : 'false'})`;
    case 'number':
      return `(${column} ${op === '==' || op === 'in' ? '=' : op} ${Math.trunc(value.value)})`;
  }
}

function sql(node: FilterNode): string {
  switch (node.kind) {
    case 'and':
      return `(${sql(node.left)} AND ${sql(node.right)})`;
    case 'or':
      return `(${sql(node.left)} OR ${sql(node.right)})`;
    case 'not':
      return `(NOT ${sql(node.expr)})`;
    case 'compare': {
      const positive = node.op === '!=' ? '==' : node.op;
      const parts: string[] = [];
      for (const f of sideFields(node.field, node.either)) for (const v of node.values) parts.push(valueSql(f, f.column, positive, v));
      const any = parts.length === 1 ? parts[0]! : `(${parts.join(' OR ')})`;
      return node.op === '!=' ? `(NOT ${any})` : any;
    }
  }
}

/** A SQL boolean expression over the store's columns; `true` for an empty filter. Throws FilterError. */
export function compileSql(source: string): string {
  const tree = parseFilter(source);
  return tree ? sql(tree) : 'true';
}

/**
 * The store columns a filter reads (a CIDR test reads `<column>_hex`); empty for an empty filter.
 * The store answers a filter from a pre-aggregated table when it reads only that table's columns.
 * Throws FilterError.
 */
export function filterColumns(source: string): Set<string> {
  const columns = new Set<string>();
  const walk = (node: FilterNode): void => {
    switch (node.kind) {
      case 'and':
      case 'or':
        walk(node.left);
        walk(node.right);
        return;
      case 'not':
        walk(node.expr);
        return;
      case 'compare':
        for (const f of sideFields(node.field, node.either)) for (const v of node.values) columns.add(v.kind === 'cidr' ? `${f.column}_hex` : f.column);
    }
  };
  const tree = parseFilter(source);
  if (tree) walk(tree);
  return columns;
}

/** Joins filters with "and" (each in parentheses); blank ones are left out. */
export function andFilters(...filters: (string | undefined)[]): string {
  const parts = filters.filter((f): f is string => f !== undefined && f.trim() !== '');
  if (parts.length <= 1) return parts[0] ?? '';
  return parts.map((p) => `(${p})`).join(' and ');
}
