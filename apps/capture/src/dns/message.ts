// DNS messages as they cross a socket (RFC 1035 wire format): the header, the question, and the
// addresses the answer section gives for the question's name, following its CNAME chain. Any
// input is safe: a malformed message is reported ('invalid'), never thrown, and a message cut
// short by the kernel's copy limit ('partial') keeps what its complete records say. Names are
// bounded (253 characters, as DNS allows), lower case, without the trailing dot.

/** Resource record types kappa reads. */
export const DNS_TYPE_A = 1;
export const DNS_TYPE_CNAME = 5;
export const DNS_TYPE_AAAA = 28;
const CLASS_IN = 1;

/** Longest name text kept: DNS allows 253 characters (255 bytes on the wire). */
export const MAX_NAME_LENGTH = 253;
/** Compression pointers followed in one name at most (a loop is invalid anyway). */
const MAX_POINTERS = 32;
/** Answer records read at most per message (more are left unread: 'partial'). */
const MAX_ANSWERS = 64;
/** CNAME hops followed from the question at most. */
const MAX_CHAIN = 16;

export type ParseOutcome = 'ok' | 'partial' | 'invalid';

/** An address the answer gave for the question's name (directly or through its CNAME chain). */
export interface ResolvedAddress {
  /** 16 bytes; IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), as the flow key stores it. */
  readonly address: Uint8Array;
  /** Seconds. */
  readonly ttl: number;
}

/** What one message says; reused between messages (see `DnsMessageParser`). */
export interface DnsMessage {
  id: number;
  /** QR: an answer (true) or a query. */
  response: boolean;
  opcode: number;
  rcode: number;
  /** TC: the answer did not fit (a UDP client retries over TCP). */
  truncated: boolean;
  /** The first question's name ('' without a question) and type. */
  questionName: string;
  questionType: number;
  /** Answers only: A / AAAA records of the question's name or its CNAME chain. */
  addresses: ResolvedAddress[];
  /** Answers only: the names of the CNAME chain after the question's, in order. */
  chain: string[];
}

export function emptyMessage(): DnsMessage {
  return { id: 0, response: false, opcode: 0, rcode: 0, truncated: false, questionName: '', questionType: 0, addresses: [], chain: [] };
}

/** Response codes by number (RFC 1035, 2136, 6895), for names in logs, labels and the CLI. */
export const RCODE_NAMES: readonly string[] = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'YXDOMAIN', 'YXRRSET', 'NXRRSET', 'NOTAUTH', 'NOTZONE'];
export const RCODE_NXDOMAIN = 3;

export function rcodeName(rcode: number): string {
  return RCODE_NAMES[rcode] ?? `RCODE${rcode}`;
}

const TYPE_NAMES: Readonly<Record<number, string>> = {
  1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 35: 'NAPTR', 43: 'DS', 48: 'DNSKEY', 64: 'SVCB', 65: 'HTTPS', 99: 'SPF', 255: 'ANY', 257: 'CAA',
};

export function queryTypeName(type: number): string {
  return TYPE_NAMES[type] ?? `TYPE${type}`;
}

/**
 * Parses DNS messages from byte ranges. `parse` fills `message` (reused) and returns how far the
 * bytes went: 'ok', 'partial' (cut short: the header and question are whole, the answers as far
 * as they go), or 'invalid' (not a DNS message kappa can read: nothing in `message` is to be used).
 */
export class DnsMessageParser {
  private bytes: Uint8Array = new Uint8Array(0);
  private end = 0;
  private start = 0;
  /** Where the last readName stopped (after its last label or first pointer). */
  private next = 0;
  private readonly text = Buffer.alloc(MAX_NAME_LENGTH + 2);

  parse(bytes: Uint8Array, start: number, end: number, message: DnsMessage): ParseOutcome {
    this.bytes = bytes;
    this.start = start;
    this.end = Math.min(end, bytes.length);
    message.addresses.length = 0;
    message.chain.length = 0;
    message.questionName = '';
    message.questionType = 0;
    if (this.end - start < 12) return 'invalid';
    const flags = this.u16(start + 2);
    message.id = this.u16(start);
    message.response = (flags & 0x8000) !== 0;
    message.opcode = (flags >> 11) & 0xf;
    message.truncated = (flags & 0x0200) !== 0;
    message.rcode = flags & 0xf;
    const questions = this.u16(start + 4);
    const answers = this.u16(start + 6);
    // A standard query or answer has exactly one question (RFC 9619); opcodes other than QUERY
    // (notify, update) do not resolve names.
    if (message.opcode !== 0 || questions !== 1) return 'invalid';
    let at = start + 12;
    const name = this.readName(at);
    if (name === undefined) return 'invalid';
    at = this.next;
    if (at + 4 > this.end) return 'invalid';
    message.questionName = name;
    message.questionType = this.u16(at);
    at += 4;
    if (!message.response || answers === 0) return 'ok';
    return this.readAnswers(at, Math.min(answers, MAX_ANSWERS), message) && answers <= MAX_ANSWERS ? 'ok' : 'partial';
  }

  /** Reads the answer section; false when it ends early (cut short, or a record kappa cannot read). */
  private readAnswers(at: number, count: number, message: DnsMessage): boolean {
    // Owners and targets first, then the chain from the question: answers may come in any order.
    const owners: string[] = [];
    const types: number[] = [];
    const values: (string | ResolvedAddress)[] = [];
    let whole = true;
    for (let i = 0; i < count; i++) {
      const owner = this.readName(at);
      if (owner === undefined) {
        whole = false;
        break;
      }
      at = this.next;
      if (at + 10 > this.end) {
        whole = false;
        break;
      }
      const type = this.u16(at);
      const klass = this.u16(at + 2);
      const ttl = this.u32(at + 4);
      const length = this.u16(at + 8);
      const data = at + 10;
      at = data + length;
      if (at > this.end) {
        whole = false;
        break;
      }
      if (klass !== CLASS_IN) continue;
      if (type === DNS_TYPE_A && length === 4) {
        const address = new Uint8Array(16);
        address[10] = 0xff;
        address[11] = 0xff;
        address.set(this.bytes.subarray(data, data + 4), 12);
        owners.push(owner);
        types.push(type);
        values.push({ address, ttl });
      } else if (type === DNS_TYPE_AAAA && length === 16) {
        owners.push(owner);
        types.push(type);
        values.push({ address: this.bytes.slice(data, data + 16), ttl });
      } else if (type === DNS_TYPE_CNAME) {
        const target = this.readName(data);
        if (target === undefined || this.next > at) return false; // a CNAME whose name overruns its record
        owners.push(owner);
        types.push(type);
        values.push(target);
      }
    }
    // Follow the chain: the question's name, then each CNAME target in turn.
    let current = message.questionName;
    for (let hop = 0; hop <= MAX_CHAIN; hop++) {
      let target: string | undefined;
      for (let i = 0; i < owners.length; i++) {
        if (owners[i] !== current) continue;
        const value = values[i]!;
        if (types[i] === DNS_TYPE_CNAME) target ??= value as string;
        else message.addresses.push(value as ResolvedAddress);
      }
      if (target === undefined || target === current || message.chain.includes(target)) break;
      message.chain.push(target);
      current = target;
    }
    return whole;
  }

  /**
   * The name at `at` as lower-case text without the trailing dot ('' for the root), following
   * compression pointers; `next` is set to the first byte after it. Undefined when malformed
   * (a label running past the end, a pointer loop or forward pointer, a reserved label type,
   * a name longer than DNS allows).
   */
  private readName(at: number): string | undefined {
    const bytes = this.bytes;
    const text = this.text;
    let length = 0;
    let next = -1;
    let pointers = 0;
    let lowest = at;
    for (;;) {
      if (at >= this.end) return undefined;
      const label = bytes[at]!;
      if (label === 0) {
        if (next < 0) next = at + 1;
        break;
      }
      const kind = label & 0xc0;
      if (kind === 0xc0) {
        if (at + 1 >= this.end || ++pointers > MAX_POINTERS) return undefined;
        const target = this.start + (((label & 0x3f) << 8) | bytes[at + 1]!);
        // Pointers only go back (RFC 1035 4.1.4): a pointer to where this name already was is a loop.
        if (target >= lowest) return undefined;
        if (next < 0) next = at + 2;
        at = lowest = target;
        continue;
      }
      if (kind !== 0) return undefined; // 0x40 / 0x80: extended and reserved label types
      if (at + 1 + label > this.end) return undefined;
      if (length > 0) text[length++] = 0x2e; // '.'
      for (let i = at + 1; i <= at + label; i++) {
        let c = bytes[i]!;
        if (c >= 0x41 && c <= 0x5a) c |= 0x20; // ASCII upper case → lower case
        if (c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c) {
          if (length >= MAX_NAME_LENGTH) return undefined;
          text[length++] = c;
        } else {
          // Escaped as presentation format does (RFC 1035 5.1): \DDD.
          if (length + 4 > MAX_NAME_LENGTH) return undefined;
          text[length++] = 0x5c;
          text[length++] = 0x30 + Math.floor(c / 100);
          text[length++] = 0x30 + (Math.floor(c / 10) % 10);
          text[length++] = 0x30 + (c % 10);
        }
      }
      at += 1 + label;
    }
    this.next = next;
    return text.toString('latin1', 0, length);
  }

  private u16(at: number): number {
    return (this.bytes[at]! << 8) | this.bytes[at + 1]!;
  }

  private u32(at: number): number {
    return ((this.bytes[at]! << 24) >>> 0) + (this.bytes[at + 1]! << 16) + (this.bytes[at + 2]! << 8) + this.bytes[at + 3]!;
  }
}
