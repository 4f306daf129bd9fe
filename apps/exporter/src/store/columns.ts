// The flow store's columns: the flow time, where the record's bytes are, and one column per
// field of @kappa/filter's field table. A record becomes one CSV line (the hot segment's
// format, which DuckDB reads natively); a new field in the table becomes a new column here
// without code changes.
import { fields, ipHex } from '@kappa/filter';
import type { ColumnType } from '@kappa/filter';
import type { FlowRecord } from '@kappa/contracts';

export interface StoreColumn {
  name: string;
  type: ColumnType;
}

/** Columns before the field columns. */
export const fixedColumns: readonly StoreColumn[] = [
  { name: 'time_ns', type: 'UBIGINT' },
  { name: 'start_ns', type: 'UBIGINT' },
  { name: 'received_ns', type: 'UBIGINT' },
  // The segment, byte offset and length of the encoded record in that segment's .rec file.
  { name: 'seg', type: 'UINTEGER' },
  { name: 'off', type: 'UBIGINT' },
  { name: 'len', type: 'UINTEGER' },
];

const ipHexColumns: readonly StoreColumn[] = [
  { name: 'src_ip_hex', type: 'VARCHAR' },
  { name: 'dst_ip_hex', type: 'VARCHAR' },
];

export const storeColumns: readonly StoreColumn[] = [...fixedColumns, ...fields.map((f) => ({ name: f.column, type: f.columnType })), ...ipHexColumns];

/** DuckDB's `columns={...}` argument of read_csv for the hot segment's files. */
export const csvColumnsSql = `{${storeColumns.map((c) => `'${c.name}': '${c.type}'`).join(', ')}}`;

const needsQuotes = /[",\n\r]/;

function csvText(text: string): string {
  if (!needsQuotes.test(text)) return text;
  return `"${text.replaceAll('"', '""')}"`;
}

const readers = fields.map((f) => f.read);

/** One CSV line (with its newline) of a record whose bytes are at seg/off/len. */
export function csvLine(record: FlowRecord, receivedNs: bigint, seg: number, off: number, len: number): string {
  let line = `${record.endNs},${record.startNs},${receivedNs},${seg},${off},${len}`;
  for (let i = 0; i < readers.length; i++) {
    const value = readers[i]!(record);
    line += typeof value === 'string' ? `,${csvText(value)}` : `,${value}`;
  }
  line += `,${ipHex(record.src?.ip ?? '')},${ipHex(record.dst?.ip ?? '')}\n`;
  return line;
}
