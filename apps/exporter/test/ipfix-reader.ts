// A small IPFIX reader written from RFC 7011 for the tests, independent of the encoder: it checks
// every length field while it parses and returns the data records as (enterprise, element) → bytes.

export interface TemplateField {
  id: number;
  /** 0 for IANA elements. */
  enterprise: number;
  /** 0xffff: variable length (RFC 7011 §7). */
  length: number;
}

export interface DataRecord {
  templateId: number;
  /** Keyed `${enterprise}/${id}`; IANA elements have enterprise 0. */
  values: Map<string, Buffer>;
  /** The length prefix each variable-length value had on the wire: 1 or 3 bytes. */
  prefixBytes: Map<string, number>;
}

export interface ReadMessage {
  length: number;
  exportSeconds: number;
  sequence: number;
  domain: number;
  /** scopeFields: 0 for a template, the scope field count of an options template. */
  templates: { id: number; fields: TemplateField[]; scopeFields: number }[];
  records: DataRecord[];
}

/** A message that breaks RFC 7011, with where and why. */
export class IpfixFormatError extends Error {
  override readonly name = 'IpfixFormatError';
}

const VARIABLE = 0xffff;

/**
 * Reads one IPFIX message. `templates` holds the templates of earlier messages per domain (the
 * reader adds this message's templates to it); a data set without a known template is an error.
 */
export function readMessage(bytes: Buffer, templates: Map<string, TemplateField[]>): ReadMessage {
  const fail = (what: string): never => {
    throw new IpfixFormatError(what);
  };
  if (bytes.length < 16) fail(`message of ${bytes.length} bytes is shorter than its header`);
  if (bytes.readUInt16BE(0) !== 10) fail(`version ${bytes.readUInt16BE(0)}, not 10`);
  const length = bytes.readUInt16BE(2);
  if (length !== bytes.length) fail(`length field ${length} but the message has ${bytes.length} bytes`);
  const message: ReadMessage = {
    length,
    exportSeconds: bytes.readUInt32BE(4),
    sequence: bytes.readUInt32BE(8),
    domain: bytes.readUInt32BE(12),
    templates: [],
    records: [],
  };
  let o = 16;
  if (o === length) fail('a message without sets');
  while (o < length) {
    if (length - o < 4) fail(`${length - o} bytes after the last set`);
    const setId = bytes.readUInt16BE(o);
    const setLength = bytes.readUInt16BE(o + 2);
    if (setLength < 4 || o + setLength > length) fail(`set ${setId} at ${o} has length ${setLength}, message ends at ${length}`);
    const end = o + setLength;
    let p = o + 4;
    if (setId === 2 || setId === 3) {
      // RFC 7011 §3.4.1 template records, §3.4.2.2 options template records (with a scope count).
      const header = setId === 2 ? 4 : 6;
      if (p === end) fail('an empty template set');
      while (p < end) {
        // An options template set may end in padding (fewer bytes than a record header).
        if (setId === 3 && end - p < header && bytes.subarray(p, end).every((b) => b === 0)) break;
        if (end - p < header) fail('a truncated template record header');
        const id = bytes.readUInt16BE(p);
        const count = bytes.readUInt16BE(p + 2);
        const scopeFields = setId === 3 ? bytes.readUInt16BE(p + 4) : 0;
        if (id < 256) fail(`template id ${id} is below 256`);
        if (setId === 3 && (scopeFields === 0 || scopeFields > count)) fail(`options template ${id}: scope field count ${scopeFields} of ${count} fields`);
        p += header;
        const fields: TemplateField[] = [];
        for (let i = 0; i < count; i++) {
          if (end - p < 4) fail(`template ${id} field ${i} runs past its set`);
          const raw = bytes.readUInt16BE(p);
          const fieldLength = bytes.readUInt16BE(p + 2);
          p += 4;
          let enterprise = 0;
          if (raw & 0x8000) {
            if (end - p < 4) fail(`template ${id} field ${i}: enterprise number runs past its set`);
            enterprise = bytes.readUInt32BE(p);
            if (enterprise === 0) fail(`template ${id} field ${i}: enterprise bit set with enterprise 0`);
            p += 4;
          }
          fields.push({ id: raw & 0x7fff, enterprise, length: fieldLength });
        }
        templates.set(`${message.domain}/${id}`, fields);
        message.templates.push({ id, fields, scopeFields });
      }
    } else if (setId >= 256) {
      const fields = templates.get(`${message.domain}/${setId}`) ?? fail(`data set ${setId} without a template in domain ${message.domain}`);
      const minimum = fields.reduce((n, f) => n + (f.length === VARIABLE ? 1 : f.length), 0);
      // Records until what is left is padding (shorter than the smallest record, all zero).
      while (end - p >= minimum && end - p > 0) {
        const values = new Map<string, Buffer>();
        const prefixBytes = new Map<string, number>();
        for (const f of fields) {
          const key = `${f.enterprise}/${f.id}`;
          let n = f.length;
          if (n === VARIABLE) {
            if (p >= end) fail(`data set ${setId}: variable-length field ${key} runs past its set`);
            n = bytes.readUInt8(p);
            p += 1;
            prefixBytes.set(key, 1);
            if (n === 255) {
              if (end - p < 2) fail(`data set ${setId}: long length of ${key} runs past its set`);
              n = bytes.readUInt16BE(p);
              p += 2;
              prefixBytes.set(key, 3);
            }
          }
          if (end - p < n) fail(`data set ${setId}: field ${key} of ${n} bytes runs past its set`);
          values.set(key, bytes.subarray(p, p + n));
          p += n;
        }
        message.records.push({ templateId: setId, values, prefixBytes });
      }
      if (bytes.subarray(p, end).some((b) => b !== 0)) fail(`data set ${setId}: ${end - p} trailing bytes that are not padding`);
    } else {
      fail(`set id ${setId} is reserved`);
    }
    o = end;
  }
  return message;
}
