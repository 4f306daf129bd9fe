// RFC 7011 message encoding: message header, template sets and data sets for the records of a
// FlowBatchView, split into messages that fit the transport (the path MTU for UDP, 65535 bytes for
// TCP). Values are read in place and strings copied from the record's bytes: no object per record.
import { isIP } from 'node:net';
import { BytesMap, FlowFields, ipToBytes } from '@kappa/contracts';
import type { FlowBatchView, MessageCursor } from '@kappa/contracts';
import { ExportRecord, stringEnd, stringStart, u64 } from '../record/export-record.js';
import { REVERSE_PEN, dnsDropsFields, fixedLength, hasDnsOrDrops, templateFields } from './elements.js';
import type { FieldSpec, TextRange } from './elements.js';

export const IPFIX_VERSION = 10;
export const MESSAGE_HEADER_BYTES = 16;
export const SET_HEADER_BYTES = 4;
export const TEMPLATE_SET_ID = 2;
export const OPTIONS_TEMPLATE_SET_ID = 3;
export const TEMPLATE_ID_IPV4 = 256;
export const TEMPLATE_ID_IPV6 = 257;
/**
 * The DNS / drops options templates (dnsDropsFields): only records with DNS, drops or a peer name,
 * scoped to their flow record.
 */
export const TEMPLATE_ID_DNS_DROPS_IPV4 = 258;
export const TEMPLATE_ID_DNS_DROPS_IPV6 = 259;
/** RFC 7011 §3.1: the message length field is 16 bits. */
export const MAX_MESSAGE_BYTES = 65535;

export interface IpfixEncoderOptions {
  enterpriseNumber: number;
  /** Upper bound of one message: the UDP payload that fits the MTU, or 65535 for TCP. */
  maxMessageBytes: number;
  /**
   * Longer strings are cut at a UTF-8 character boundary. A record whose strings still do not fit
   * maxMessageBytes (a small UDP MTU) has its longest strings cut further until it fits.
   */
  maxStringBytes: number;
  /**
   * Added (mod 2^32) to the record's cluster id to give its observation domain id; 0 (the default)
   * keeps domain = cluster id. Exporters that share one source address each need their own, since
   * collectors such as nfcapd count sequence numbers per (source address, domain), not per
   * transport session (docs/architecture.md "Clusters").
   */
  domainOffset?: number;
}

interface Template {
  id: number;
  ipVersion: 4 | 6;
  fields: FieldSpec[];
  /** RFC 7011 §3.4.2.2: an options template's first `scopeFields` fields are its scope; 0 for a data template. */
  scopeFields: number;
  fixedBytes: number;
  strings: ((r: ExportRecord, out: TextRange) => void)[];
}

/** An encoded message ready to send, with how many data records it carries. */
export interface IpfixMessage {
  bytes: Buffer;
  records: number;
  domain: number;
}

const zeroV4 = Buffer.alloc(4);
const zeroV6 = Buffer.alloc(16);
const v4MappedPrefix = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** An end's address as text in the record, parsed once per distinct text. */
interface Address {
  family: 0 | 4 | 6;
  /** 4 or 16 bytes as the text says (zero bytes when it is not an address). */
  native: Buffer;
  /** In an IPv6 template: IPv4 ends IPv4-mapped (RFC 4291 §2.5.5.2). */
  v6: Buffer;
}

const NO_ADDRESS: Address = { family: 0, native: zeroV4, v6: zeroV6 };
const E = FlowFields.Endpoint;
const R = FlowFields.FlowRecord;

/** Parsed addresses by their text's bytes: pod IPs repeat, so a lookup is what a record costs. */
class Addresses {
  private readonly cache = new BytesMap<Address>();

  of(endpoint: MessageCursor): Address {
    const start = stringStart(endpoint, E.ip);
    const end = stringEnd(endpoint, E.ip);
    if (start === end) return NO_ADDRESS;
    const known = this.cache.get(endpoint.bytes, start, end);
    if (known) return known;
    const text = Buffer.from(endpoint.bytes.buffer, endpoint.bytes.byteOffset, endpoint.bytes.byteLength).toString('utf8', start, end);
    const family = isIP(text) as 0 | 4 | 6;
    let address = NO_ADDRESS;
    if (family !== 0) {
      const native = Buffer.from(ipToBytes(text));
      address = { family, native, v6: family === 6 ? native : Buffer.concat([v4MappedPrefix, native]) };
    }
    if (this.cache.size >= 65536) this.cache.clear();
    this.cache.set(endpoint.bytes, start, end, address);
    return address;
  }
}

/** RFC 7011 §7: a variable-length field takes one length byte below 255, else three. */
function encodedStringLength(bytes: number): number {
  return (bytes < 255 ? 1 : 3) + bytes;
}

/** The UTF-8 bytes of s, cut to at most max bytes without splitting a character. */
export function utf8Truncated(s: string, max: number): Buffer {
  const bytes = Buffer.from(s, 'utf8');
  return bytes.subarray(0, utf8CutLength(bytes, 0, bytes.length, max));
}

/** The length of valid UTF-8 bytes[start, end) cut to at most max bytes without splitting a character. */
function utf8CutLength(bytes: Uint8Array, start: number, end: number, max: number): number {
  if (end - start <= max) return end - start;
  let cut = max;
  // Step back over continuation bytes (10xxxxxx) so the cut falls on a character start.
  while (cut > 0 && (bytes[start + cut]! & 0xc0) === 0x80) cut--;
  return cut;
}

function noText(_r: ExportRecord, out: TextRange): void {
  out.start = out.end = 0;
}

function buildTemplate(id: number, ipVersion: 4 | 6, fields: FieldSpec[], scopeFields = 0): Template {
  let fixedBytes = 0;
  const strings: ((r: ExportRecord, out: TextRange) => void)[] = [];
  for (const f of fields) {
    if (f.kind === 'string') strings.push(f.text ?? noText);
    else fixedBytes += fixedLength(f.kind);
  }
  return { id, ipVersion, fields, fixedBytes, strings, scopeFields };
}

/**
 * Encodes FlowRecords as IPFIX messages. Sequence numbers count data records per observation
 * domain (RFC 7011 §3.1); `resetSession()` starts them again for a new transport session.
 */
export class IpfixEncoder {
  readonly templates: readonly Template[] = [
    buildTemplate(TEMPLATE_ID_IPV4, 4, templateFields(4)),
    buildTemplate(TEMPLATE_ID_IPV6, 6, templateFields(6)),
    buildTemplate(TEMPLATE_ID_DNS_DROPS_IPV4, 4, ...dnsDropsFields(4)),
    buildTemplate(TEMPLATE_ID_DNS_DROPS_IPV6, 6, ...dnsDropsFields(6)),
  ];
  private readonly sequences = new Map<number, number>();
  /** Strings cut to maxStringBytes since start. */
  truncatedStrings = 0;
  private readonly record = new ExportRecord();
  private readonly addresses = new Addresses();
  /** The strings of the record being written: where each one's bytes are, and its cut length. */
  private readonly stringBytes: Uint8Array[] = [];
  private stringStarts = new Int32Array(64);
  private stringLengths = new Int32Array(64);
  private readonly text: TextRange = { bytes: new Uint8Array(0), start: 0, end: 0 };
  private domainOf = new Float64Array(1024);

  constructor(private readonly options: IpfixEncoderOptions) {
    if (options.maxMessageBytes > MAX_MESSAGE_BYTES) throw new RangeError(`an IPFIX message is at most ${MAX_MESSAGE_BYTES} bytes`);
    const worst = this.templates.reduce((m, t) => Math.max(m, t.fixedBytes + t.strings.length * (3 + options.maxStringBytes)), 0);
    if (MESSAGE_HEADER_BYTES + SET_HEADER_BYTES + worst > MAX_MESSAGE_BYTES) {
      throw new RangeError(`--ipfix-max-string-bytes ${options.maxStringBytes} is too large: a record could exceed an IPFIX message`);
    }
    // Every template, and every record with its strings cut to nothing, must fit one message.
    const smallest = this.templates.reduce((m, t) => Math.max(m, t.fixedBytes + t.strings.length, this.templateRecord(t).length), 0);
    if (MESSAGE_HEADER_BYTES + SET_HEADER_BYTES + smallest > options.maxMessageBytes) {
      throw new RangeError(`an IPFIX message of ${options.maxMessageBytes} bytes cannot hold one record (${MESSAGE_HEADER_BYTES + SET_HEADER_BYTES + smallest} bytes)`);
    }
  }

  /** Observation domains seen so far (templates are scoped to a domain). */
  get domains(): number[] {
    return [...this.sequences.keys()];
  }

  /** A new transport session (TCP reconnect): sequence numbers restart at 0. */
  resetSession(): void {
    for (const domain of this.sequences.keys()) this.sequences.set(domain, 0);
  }

  private header(buf: Buffer, length: number, domain: number, exportSeconds: number): void {
    buf.writeUInt16BE(IPFIX_VERSION, 0);
    buf.writeUInt16BE(length, 2);
    buf.writeUInt32BE(exportSeconds >>> 0, 4);
    buf.writeUInt32BE((this.sequences.get(domain) ?? 0) >>> 0, 8);
    buf.writeUInt32BE(domain >>> 0, 12);
  }

  /**
   * The templates of a domain: all in one message when they fit the message budget (TCP, a
   * 1500-byte MTU), else one message per template (small MTUs).
   */
  templateMessages(domain: number, exportSeconds = Math.floor(Date.now() / 1000)): IpfixMessage[] {
    if (!this.sequences.has(domain)) this.sequences.set(domain, 0);
    const records = this.templates.map((t) => ({ setId: t.scopeFields > 0 ? OPTIONS_TEMPLATE_SET_ID : TEMPLATE_SET_ID, bytes: this.templateRecord(t) }));
    const together = MESSAGE_HEADER_BYTES + 2 * SET_HEADER_BYTES + records.reduce((n, r) => n + r.bytes.length, 0);
    const groups = together <= this.options.maxMessageBytes ? [records] : records.map((r) => [r]);
    return groups.map((group) => this.templateSetMessage(domain, group, exportSeconds));
  }

  /** A template record, or an options template record (RFC 7011 §3.4.2.2) when it has scope fields. */
  private templateRecord(t: Template): Buffer {
    const header = t.scopeFields > 0 ? 6 : 4;
    const record = Buffer.alloc(header + t.fields.reduce((n, f) => n + (f.owner === 'iana' ? 4 : 8), 0));
    record.writeUInt16BE(t.id, 0);
    record.writeUInt16BE(t.fields.length, 2);
    if (t.scopeFields > 0) record.writeUInt16BE(t.scopeFields, 4);
    let o = header;
    for (const f of t.fields) {
      const enterprise = f.owner === 'reverse' ? REVERSE_PEN : f.owner === 'kappa' ? this.options.enterpriseNumber : 0;
      record.writeUInt16BE(enterprise ? f.id | 0x8000 : f.id, o);
      record.writeUInt16BE(fixedLength(f.kind), o + 2);
      o += 4;
      if (enterprise) {
        record.writeUInt32BE(enterprise >>> 0, o);
        o += 4;
      }
    }
    return record;
  }

  /** One message of template records: a set per set id (templates, options templates) in order. */
  private templateSetMessage(domain: number, records: { setId: number; bytes: Buffer }[], exportSeconds: number): IpfixMessage {
    const sets = new Set(records.map((r) => r.setId)).size;
    const bytes = Buffer.alloc(MESSAGE_HEADER_BYTES + sets * SET_HEADER_BYTES + records.reduce((n, r) => n + r.bytes.length, 0));
    this.header(bytes, bytes.length, domain, exportSeconds);
    let o = MESSAGE_HEADER_BYTES;
    let setStart = -1;
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      if (i === 0 || records[i - 1]!.setId !== r.setId) {
        setStart = o;
        bytes.writeUInt16BE(r.setId, o);
        o += SET_HEADER_BYTES;
      }
      r.bytes.copy(bytes, o);
      o += r.bytes.length;
      if (i === records.length - 1 || records[i + 1]!.setId !== r.setId) bytes.writeUInt16BE(o - setStart, setStart + 2);
    }
    return { bytes, records: 0, domain };
  }

  /** True when the domain has not had its templates yet (the caller sends templateMessages first). */
  isNewDomain(domain: number): boolean {
    return !this.sequences.has(domain);
  }

  /**
   * The observation domains of the view's records (cluster id + domainOffset), in order of first
   * appearance.
   */
  domainsOf(view: FlowBatchView): number[] {
    if (view.length > this.domainOf.length) this.domainOf = new Float64Array(view.length * 2);
    const domains: number[] = [];
    const cursor = this.record.record;
    const offset = this.options.domainOffset ?? 0;
    for (let i = 0; i < view.length; i++) {
      const domain = (view.record(i, cursor).uint32(R.clusterId) + offset) >>> 0;
      this.domainOf[i] = domain;
      if (!domains.includes(domain)) domains.push(domain);
    }
    return domains;
  }

  /**
   * Encodes the view's records into data messages, grouped by observation domain (cluster id).
   * Each message stays within maxMessageBytes; IPv4 and IPv6 records go to their template's set.
   */
  encode(view: FlowBatchView, exportSeconds = Math.floor(Date.now() / 1000)): IpfixMessage[] {
    const out: IpfixMessage[] = [];
    for (const domain of this.domainsOf(view)) this.encodeDomain(domain, view, exportSeconds, out);
    return out;
  }

  private encodeDomain(domain: number, view: FlowBatchView, exportSeconds: number, out: IpfixMessage[]): void {
    if (!this.sequences.has(domain)) this.sequences.set(domain, 0);
    const max = this.options.maxMessageBytes;
    let buf = Buffer.allocUnsafe(max);
    let offset = MESSAGE_HEADER_BYTES;
    let setStart = -1;
    let setTemplate = -1;
    let inMessage = 0;
    const closeSet = () => {
      if (setStart >= 0) buf.writeUInt16BE(offset - setStart, setStart + 2);
      setStart = -1;
      setTemplate = -1;
    };
    const flush = () => {
      closeSet();
      if (inMessage === 0) return;
      this.header(buf, offset, domain, exportSeconds);
      out.push({ bytes: buf.subarray(0, offset), records: inMessage, domain });
      this.sequences.set(domain, ((this.sequences.get(domain) ?? 0) + inMessage) % 2 ** 32);
      buf = Buffer.allocUnsafe(max);
      offset = MESSAGE_HEADER_BYTES;
      inMessage = 0;
    };
    const r = this.record;
    // First every record in the flow templates, then those with DNS, drops or a peer name in the
    // DNS / drops templates: a set per template rather than one per record.
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < view.length; i++) {
        if (this.domainOf[i] !== domain) continue;
        r.load(view, i);
        if (pass === 1 && !hasDnsOrDrops(r)) continue;
        const src = this.addresses.of(r.end('src').endpoint);
        const dst = this.addresses.of(r.end('dst').endpoint);
        const template = this.templates[2 * pass + (src.family === 6 || dst.family === 6 ? 1 : 0)]!;
        const length = template.fixedBytes + this.recordStrings(r, template, max - MESSAGE_HEADER_BYTES - SET_HEADER_BYTES - template.fixedBytes);
        const needsSet = setTemplate !== template.id;
        if (offset + (needsSet ? SET_HEADER_BYTES : 0) + length > max && inMessage > 0) flush();
        if (setTemplate !== template.id) {
          closeSet();
          setStart = offset;
          setTemplate = template.id;
          buf.writeUInt16BE(template.id, offset);
          offset += SET_HEADER_BYTES;
        }
        offset = this.writeRecord(buf, offset, r, template, src, dst);
        inMessage++;
      }
    }
    flush();
  }

  /**
   * Finds the record's strings (each cut to maxStringBytes) and, when they still exceed `budget`
   * (what a message alone can hold for them), cuts them all to the largest common cap that fits:
   * short strings stay whole, the longest ones lose their tails. RFC 7011 §10.3.3: a UDP message
   * must not exceed the path MTU, and IP fragments are often dropped on the way. Returns the
   * strings' encoded size.
   */
  private recordStrings(r: ExportRecord, template: Template, budget: number): number {
    const n = template.strings.length;
    if (n > this.stringStarts.length) {
      this.stringStarts = new Int32Array(n);
      this.stringLengths = new Int32Array(n);
    }
    const starts = this.stringStarts;
    const lengths = this.stringLengths;
    const maxString = this.options.maxStringBytes;
    const text = this.text;
    let total = 0;
    let cut = 0;
    for (let s = 0; s < n; s++) {
      template.strings[s]!(r, text);
      const whole = text.end - text.start;
      const length = utf8CutLength(text.bytes, text.start, text.end, maxString);
      if (length < whole) cut++;
      this.stringBytes[s] = text.bytes;
      starts[s] = text.start;
      lengths[s] = length;
      total += encodedStringLength(length);
    }
    if (total > budget) {
      const totalAt = (cap: number) => {
        let t = 0;
        for (let s = 0; s < n; s++) t += encodedStringLength(Math.min(lengths[s]!, cap));
        return t;
      };
      // The largest cap that fits (totalAt() grows with cap); the constructor guarantees cap 0 fits.
      let fits = 0;
      let tooBig = maxString;
      while (tooBig - fits > 1) {
        const mid = (fits + tooBig) >>> 1;
        if (totalAt(mid) <= budget) fits = mid;
        else tooBig = mid;
      }
      total = 0;
      cut = 0;
      for (let s = 0; s < n; s++) {
        template.strings[s]!(r, text);
        const length = utf8CutLength(this.stringBytes[s]!, starts[s]!, starts[s]! + lengths[s]!, fits);
        if (length < text.end - text.start) cut++;
        lengths[s] = length;
        total += encodedStringLength(length);
      }
    }
    this.truncatedStrings += cut;
    return total;
  }

  private writeRecord(buf: Buffer, start: number, r: ExportRecord, template: Template, src: Address, dst: Address): number {
    let o = start;
    let s = 0;
    const fields = template.fields;
    for (let f = 0; f < fields.length; f++) {
      const field = fields[f]!;
      switch (field.kind) {
        case 'u8':
          buf[o] = field.number!(r) & 0xff;
          o += 1;
          break;
        case 'u16': {
          const v = field.number!(r);
          buf[o] = (v >>> 8) & 0xff;
          buf[o + 1] = v & 0xff;
          o += 2;
          break;
        }
        case 'u32':
          buf.writeUInt32BE(field.number!(r) >>> 0, o);
          o += 4;
          break;
        case 'u64':
          field.uint64!(r);
          buf.writeUInt32BE(u64.hi, o);
          buf.writeUInt32BE(u64.lo, o + 4);
          o += 8;
          break;
        case 'ipv4':
        case 'ipv6': {
          const address = field.end === 'dst' ? dst : src;
          const bytes = template.ipVersion === 4 ? (address.family === 4 ? address.native : zeroV4) : address.family === 0 ? zeroV6 : address.v6;
          bytes.copy(buf, o);
          o += bytes.length;
          break;
        }
        case 'string': {
          const length = this.stringLengths[s]!;
          const from = this.stringStarts[s]!;
          const bytes = this.stringBytes[s++]!;
          // RFC 7011 §7: one length byte below 255, else 255 followed by a 16-bit length.
          if (length < 255) {
            buf[o++] = length;
          } else {
            buf[o] = 255;
            buf[o + 1] = length >>> 8;
            buf[o + 2] = length & 0xff;
            o += 3;
          }
          for (let i = 0; i < length; i++) buf[o + i] = bytes[from + i]!;
          o += length;
          break;
        }
      }
    }
    return o;
  }
}
