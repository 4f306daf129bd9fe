// RFC 7011 message encoding: message header, template sets and data sets for FlowRecords, split
// into messages that fit the transport (the path MTU for UDP, 65535 bytes for TCP).
import { isIP } from 'node:net';
import { ipToBytes } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { REVERSE_PEN, fixedLength, templateFields } from './elements.js';
import type { FieldSpec } from './elements.js';

export const IPFIX_VERSION = 10;
export const MESSAGE_HEADER_BYTES = 16;
export const SET_HEADER_BYTES = 4;
export const TEMPLATE_SET_ID = 2;
export const TEMPLATE_ID_IPV4 = 256;
export const TEMPLATE_ID_IPV6 = 257;
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
}

interface Template {
  id: number;
  ipVersion: 4 | 6;
  fields: FieldSpec[];
  fixedBytes: number;
  strings: ((r: FlowRecord) => string)[];
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

function addressBytes(ip: string | undefined, version: 4 | 6): Buffer {
  const family = ip ? isIP(ip) : 0;
  if (family === 0) return version === 4 ? zeroV4 : zeroV6;
  const bytes = Buffer.from(ipToBytes(ip!));
  if (family === 6 || version === 4) return bytes;
  // An IPv4 end in an IPv6 record: IPv4-mapped (RFC 4291 §2.5.5.2).
  return Buffer.concat([v4MappedPrefix, bytes]);
}

/** RFC 7011 §7: a variable-length field takes one length byte below 255, else three. */
function encodedStringLength(bytes: number): number {
  return (bytes < 255 ? 1 : 3) + bytes;
}

/** The UTF-8 bytes of s, cut to at most max bytes without splitting a character. */
export function utf8Truncated(s: string, max: number): Buffer {
  return utf8Cut(Buffer.from(s, 'utf8'), max);
}

/** Valid UTF-8 bytes cut to at most max bytes without splitting a character. */
function utf8Cut(bytes: Buffer, max: number): Buffer {
  if (bytes.length <= max) return bytes;
  let end = max;
  // Step back over continuation bytes (10xxxxxx) so the cut falls on a character start.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

function buildTemplate(id: number, ipVersion: 4 | 6): Template {
  const fields = templateFields(ipVersion);
  let fixedBytes = 0;
  const strings: ((r: FlowRecord) => string)[] = [];
  for (const f of fields) {
    if (f.kind === 'string') strings.push(f.text ?? (() => ''));
    else fixedBytes += fixedLength(f.kind);
  }
  return { id, ipVersion, fields, fixedBytes, strings };
}

/**
 * Encodes FlowRecords as IPFIX messages. Sequence numbers count data records per observation
 * domain (RFC 7011 §3.1); `resetSession()` starts them again for a new transport session.
 */
export class IpfixEncoder {
  readonly templates: readonly Template[] = [buildTemplate(TEMPLATE_ID_IPV4, 4), buildTemplate(TEMPLATE_ID_IPV6, 6)];
  private readonly sequences = new Map<number, number>();
  /** Strings cut to maxStringBytes since start. */
  truncatedStrings = 0;

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
   * The templates of a domain: both in one message when they fit the message budget (TCP, a
   * 1500-byte MTU), else one message per template (small MTUs).
   */
  templateMessages(domain: number, exportSeconds = Math.floor(Date.now() / 1000)): IpfixMessage[] {
    if (!this.sequences.has(domain)) this.sequences.set(domain, 0);
    const records = this.templates.map((t) => this.templateRecord(t));
    const together = MESSAGE_HEADER_BYTES + SET_HEADER_BYTES + records.reduce((n, r) => n + r.length, 0);
    const groups = together <= this.options.maxMessageBytes ? [records] : records.map((r) => [r]);
    return groups.map((group) => this.templateSetMessage(domain, group, exportSeconds));
  }

  private templateRecord(t: Template): Buffer {
    const record = Buffer.alloc(4 + t.fields.reduce((n, f) => n + (f.owner === 'iana' ? 4 : 8), 0));
    record.writeUInt16BE(t.id, 0);
    record.writeUInt16BE(t.fields.length, 2);
    let o = 4;
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

  private templateSetMessage(domain: number, records: Buffer[], exportSeconds: number): IpfixMessage {
    const setLength = SET_HEADER_BYTES + records.reduce((n, p) => n + p.length, 0);
    const bytes = Buffer.alloc(MESSAGE_HEADER_BYTES + setLength);
    this.header(bytes, bytes.length, domain, exportSeconds);
    bytes.writeUInt16BE(TEMPLATE_SET_ID, MESSAGE_HEADER_BYTES);
    bytes.writeUInt16BE(setLength, MESSAGE_HEADER_BYTES + 2);
    let o = MESSAGE_HEADER_BYTES + SET_HEADER_BYTES;
    for (const r of records) {
      r.copy(bytes, o);
      o += r.length;
    }
    return { bytes, records: 0, domain };
  }

  /** True when the domain has not had its templates yet (the caller sends templateMessages first). */
  isNewDomain(domain: number): boolean {
    return !this.sequences.has(domain);
  }

  /**
   * Encodes records into data messages, grouped by observation domain (cluster id). Each message
   * stays within maxMessageBytes; IPv4 and IPv6 records go to their template's data set.
   */
  encode(records: readonly FlowRecord[], exportSeconds = Math.floor(Date.now() / 1000)): IpfixMessage[] {
    const byDomain = new Map<number, FlowRecord[]>();
    for (const r of records) {
      const list = byDomain.get(r.clusterId);
      if (list) list.push(r);
      else byDomain.set(r.clusterId, [r]);
    }
    const out: IpfixMessage[] = [];
    for (const [domain, list] of byDomain) this.encodeDomain(domain, list, exportSeconds, out);
    return out;
  }

  private encodeDomain(domain: number, records: FlowRecord[], exportSeconds: number, out: IpfixMessage[]): void {
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
    for (const r of records) {
      const v6 = isIP(r.src?.ip ?? '') === 6 || isIP(r.dst?.ip ?? '') === 6;
      const template = this.templates[v6 ? 1 : 0]!;
      const strings = this.recordStrings(r, template, max - MESSAGE_HEADER_BYTES - SET_HEADER_BYTES - template.fixedBytes);
      const length = template.fixedBytes + strings.reduce((n, s) => n + encodedStringLength(s.length), 0);
      const needsSet = setTemplate !== template.id;
      if (offset + (needsSet ? SET_HEADER_BYTES : 0) + length > max && inMessage > 0) flush();
      if (setTemplate !== template.id) {
        closeSet();
        setStart = offset;
        setTemplate = template.id;
        buf.writeUInt16BE(template.id, offset);
        offset += SET_HEADER_BYTES;
      }
      offset = this.writeRecord(buf, offset, r, template, strings);
      inMessage++;
    }
    flush();
  }

  /**
   * The UTF-8 strings of a record, each cut to maxStringBytes, and then, when they still exceed
   * `budget` (what a message alone can hold for them), all cut to the largest common cap that
   * fits: short strings stay whole, the longest ones lose their tails. RFC 7011 §10.3.3: a UDP
   * message must not exceed the path MTU, and IP fragments are often dropped on the way.
   */
  private recordStrings(r: FlowRecord, template: Template, budget: number): Buffer[] {
    const texts = template.strings.map((read) => read(r));
    const strings = texts.map((text) => utf8Truncated(text, this.options.maxStringBytes));
    const total = (cap: number) => strings.reduce((n, s) => n + encodedStringLength(Math.min(s.length, cap)), 0);
    if (total(this.options.maxStringBytes) > budget) {
      // The largest cap that fits (total() grows with cap); the constructor guarantees cap 0 fits.
      let fits = 0;
      let tooBig = this.options.maxStringBytes;
      while (tooBig - fits > 1) {
        const mid = (fits + tooBig) >>> 1;
        if (total(mid) <= budget) fits = mid;
        else tooBig = mid;
      }
      for (let i = 0; i < strings.length; i++) strings[i] = utf8Cut(strings[i]!, fits);
    }
    texts.forEach((text, i) => {
      if (strings[i]!.length < Buffer.byteLength(text)) this.truncatedStrings++;
    });
    return strings;
  }

  private writeRecord(buf: Buffer, start: number, r: FlowRecord, template: Template, strings: Buffer[]): number {
    let o = start;
    let s = 0;
    for (const f of template.fields) {
      switch (f.kind) {
        case 'u8':
          buf.writeUInt8((f.number?.(r) ?? 0) & 0xff, o);
          o += 1;
          break;
        case 'u16':
          buf.writeUInt16BE((f.number?.(r) ?? 0) & 0xffff, o);
          o += 2;
          break;
        case 'u32':
          buf.writeUInt32BE((f.number?.(r) ?? 0) >>> 0, o);
          o += 4;
          break;
        case 'u64':
          buf.writeBigUInt64BE(BigInt.asUintN(64, f.bigint?.(r) ?? 0n), o);
          o += 8;
          break;
        case 'ipv4':
        case 'ipv6': {
          const end = f.end === 'dst' ? r.dst : r.src;
          const bytes = addressBytes(end?.ip, template.ipVersion);
          bytes.copy(buf, o);
          o += bytes.length;
          break;
        }
        case 'string': {
          const bytes = strings[s++]!;
          // RFC 7011 §7: one length byte below 255, else 255 followed by a 16-bit length.
          if (bytes.length < 255) {
            buf.writeUInt8(bytes.length, o);
            o += 1;
          } else {
            buf.writeUInt8(255, o);
            buf.writeUInt16BE(bytes.length, o + 1);
            o += 3;
          }
          bytes.copy(buf, o);
          o += bytes.length;
          break;
        }
      }
    }
    return o;
  }
}
