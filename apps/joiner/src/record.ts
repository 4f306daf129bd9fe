// What the join reads of a record, by offset into its bytes: the vantage, where its two ends are,
// and the names it meets its peer under (conversation group and responder names). One reusable
// reader per partition; the only allocations are the short key strings of the group and names,
// each made in one step from the record's bytes (latin1 of the raw bytes: a faithful map key).
import { FieldCursor, WIRE_LEN } from './wire.js';

export const VANTAGE_SRC = 1;
export const VANTAGE_DST = 2;

/** FlowRecord field numbers the join reads or rewrites. */
export const RECORD = { node: 1, vantage: 2, protocol: 5, src: 6, dst: 7, joined: 14, joinStatus: 22 } as const;
/** Endpoint field numbers. */
export const ENDPOINT = { ip: 1, port: 2, process: 3, kube: 4, backendIp: 5, backendPort: 6 } as const;
/** Kube field numbers. */
export const KUBE = { objectName: 2, objectNamespace: 3, objectType: 4, serviceName: 10, serviceNamespace: 11 } as const;

const SERVICE = Buffer.from('service');
const EXTERNAL = Buffer.from('external');

/** Byte ranges of the Endpoint fields the join reads (start = end when absent; kube: -1). */
export class EndpointFields {
  buf: Uint8Array = EMPTY;
  ipStart = 0;
  ipEnd = 0;
  port = 0;
  processStart = -1;
  processEnd = -1;
  kubeStart = -1;
  kubeEnd = -1;
  typeStart = 0;
  typeEnd = 0;
  serviceNameStart = 0;
  serviceNameEnd = 0;
  serviceNamespaceStart = 0;
  serviceNamespaceEnd = 0;
  objectNameStart = 0;
  objectNameEnd = 0;
  objectNamespaceStart = 0;
  objectNamespaceEnd = 0;

  /** Reads the endpoint's own fields and, with `kube`, those of its Kube. */
  read(cursor: FieldCursor, buf: Uint8Array, start: number, end: number, kube: boolean): void {
    this.buf = buf;
    this.ipStart = this.ipEnd = this.port = 0;
    this.processStart = this.processEnd = this.kubeStart = this.kubeEnd = -1;
    cursor.reset(buf, start, end);
    while (cursor.next()) {
      switch (cursor.field) {
        case ENDPOINT.ip:
          if (cursor.wireType === WIRE_LEN) {
            this.ipStart = cursor.valueStart;
            this.ipEnd = cursor.valueEnd;
          }
          break;
        case ENDPOINT.port:
          this.port = cursor.value >>> 0;
          break;
        case ENDPOINT.process:
          this.processStart = cursor.valueStart;
          this.processEnd = cursor.valueEnd;
          break;
        case ENDPOINT.kube:
          this.kubeStart = cursor.valueStart;
          this.kubeEnd = cursor.valueEnd;
          break;
      }
    }
    this.typeStart = this.typeEnd = this.serviceNameStart = this.serviceNameEnd = this.serviceNamespaceStart = this.serviceNamespaceEnd = 0;
    this.objectNameStart = this.objectNameEnd = this.objectNamespaceStart = this.objectNamespaceEnd = 0;
    if (!kube || this.kubeStart < 0) return;
    cursor.reset(buf, this.kubeStart, this.kubeEnd);
    while (cursor.next()) {
      if (cursor.wireType !== WIRE_LEN) continue;
      switch (cursor.field) {
        case KUBE.objectType:
          this.typeStart = cursor.valueStart;
          this.typeEnd = cursor.valueEnd;
          break;
        case KUBE.serviceName:
          this.serviceNameStart = cursor.valueStart;
          this.serviceNameEnd = cursor.valueEnd;
          break;
        case KUBE.serviceNamespace:
          this.serviceNamespaceStart = cursor.valueStart;
          this.serviceNamespaceEnd = cursor.valueEnd;
          break;
        case KUBE.objectName:
          this.objectNameStart = cursor.valueStart;
          this.objectNameEnd = cursor.valueEnd;
          break;
        case KUBE.objectNamespace:
          this.objectNamespaceStart = cursor.valueStart;
          this.objectNamespaceEnd = cursor.valueEnd;
          break;
      }
    }
  }

  get hasKube(): boolean {
    return this.kubeStart >= 0;
  }

  get hasServiceName(): boolean {
    return this.serviceNameEnd > this.serviceNameStart;
  }

  isService(): boolean {
    return rangeIs(this.buf, this.typeStart, this.typeEnd, SERVICE);
  }

  isExternal(): boolean {
    return rangeIs(this.buf, this.typeStart, this.typeEnd, EXTERNAL);
  }

  /** Same ip and port as `other`. */
  sameAddress(other: EndpointFields): boolean {
    if (this.port !== other.port) return false;
    const n = this.ipEnd - this.ipStart;
    if (n !== other.ipEnd - other.ipStart) return false;
    for (let i = 0; i < n; i++) if (this.buf[this.ipStart + i] !== other.buf[other.ipStart + i]) return false;
    return true;
  }
}

function rangeIs(buf: Uint8Array, start: number, end: number, word: Uint8Array): boolean {
  if (end - start !== word.length) return false;
  for (let i = 0; i < word.length; i++) if (buf[start + i] !== word[i]) return false;
  return true;
}

/** Why a record cannot wait for a peer and leaves at once. */
export type ImmediateRelease = 'external' | 'no-vantage';

const EMPTY = new Uint8Array(0);
const SLASH = 0x2f;

/** Builds a key string from pieces of bytes, in one allocation. */
class KeyBuilder {
  private buf = Buffer.allocUnsafe(256);
  private pos = 0;

  start(): this {
    this.pos = 0;
    return this;
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  bytes(src: Uint8Array, start: number, end: number): this {
    this.room(end - start);
    for (let i = start; i < end; i++) this.buf[this.pos++] = src[i]!;
    return this;
  }

  byte(b: number): this {
    this.room(1);
    this.buf[this.pos++] = b;
    return this;
  }

  number(n: number): this {
    this.room(10);
    if (n === 0) {
      this.buf[this.pos++] = 0x30;
      return this;
    }
    let digits = 0;
    for (let m = n; m > 0; m = Math.floor(m / 10)) digits++;
    let at = this.pos + digits;
    this.pos = at;
    for (let m = n; m > 0; m = Math.floor(m / 10)) this.buf[--at] = 0x30 + (m % 10);
    return this;
  }

  ascii(text: string): this {
    this.room(text.length);
    for (let i = 0; i < text.length; i++) this.buf[this.pos++] = text.charCodeAt(i);
    return this;
  }

  done(): string {
    return this.buf.toString('latin1', 0, this.pos);
  }
}

const LOOPBACK = [Buffer.from('127.'), Buffer.from('::ffff:127.')];
const LOOPBACK6 = Buffer.from('::1');

function isLoopback(e: EndpointFields): boolean {
  const n = e.ipEnd - e.ipStart;
  if (rangeIs(e.buf, e.ipStart, e.ipEnd, LOOPBACK6)) return true;
  for (const prefix of LOOPBACK) if (n >= prefix.length && rangeIs(e.buf, e.ipStart, e.ipStart + prefix.length, prefix)) return true;
  return false;
}

/**
 * One record as the join sees it. `read` fills every field from the record's bytes; the ranges
 * stay valid while those bytes do.
 */
export class JoinRecord {
  buf: Uint8Array = EMPTY;
  start = 0;
  end = 0;
  vantage = 0;
  protocol = 0;
  /** Value ranges of the src (6) and dst (7) endpoints; -1 when absent. */
  srcStart = -1;
  srcEnd = -1;
  dstStart = -1;
  dstEnd = -1;
  readonly src = new EndpointFields();
  readonly dst = new EndpointFields();
  /**
   * The conversation group: protocol, the initiator's ip and port (and node for loopback). Both
   * vantages agree on the initiator, and a Service client's record and its backend's record share
   * it, so they meet in one group (and one partition).
   */
  group = '';
  /** Responder names the record waits under: "ip/port", and for a Service "svc/<ns>/<name>". */
  conversation0 = '';
  conversation1 = '';
  release: ImmediateRelease | '' = '';

  private readonly cursor = new FieldCursor();
  private readonly endpointCursor = new FieldCursor();
  private readonly key = new KeyBuilder();

  read(buf: Uint8Array, start: number, end: number, joinExternal: boolean): this {
    this.buf = buf;
    this.start = start;
    this.end = end;
    this.vantage = this.protocol = 0;
    this.srcStart = this.srcEnd = this.dstStart = this.dstEnd = -1;
    let nodeStart = 0;
    let nodeEnd = 0;
    const c = this.cursor.reset(buf, start, end);
    while (c.next()) {
      switch (c.field) {
        case RECORD.node:
          nodeStart = c.valueStart;
          nodeEnd = c.valueEnd;
          break;
        case RECORD.vantage:
          this.vantage = c.value;
          break;
        case RECORD.protocol:
          this.protocol = c.value;
          break;
        case RECORD.src:
          this.srcStart = c.valueStart;
          this.srcEnd = c.valueEnd;
          break;
        case RECORD.dst:
          this.dstStart = c.valueStart;
          this.dstEnd = c.valueEnd;
          break;
      }
    }
    this.group = this.conversation0 = this.conversation1 = '';
    if (this.srcStart < 0 || this.dstStart < 0 || (this.vantage !== VANTAGE_SRC && this.vantage !== VANTAGE_DST)) {
      this.release = 'no-vantage';
      return this;
    }
    const src = this.src;
    const dst = this.dst;
    src.read(this.endpointCursor, buf, this.srcStart, this.srcEnd, this.vantage === VANTAGE_DST);
    dst.read(this.endpointCursor, buf, this.dstStart, this.dstEnd, true);
    const remote = this.vantage === VANTAGE_SRC ? dst : src;
    if (!joinExternal && remote.isExternal()) {
      this.release = 'external';
      return this;
    }
    this.release = '';
    const k = this.key.start().number(this.protocol).byte(SLASH).bytes(buf, src.ipStart, src.ipEnd).byte(SLASH).number(src.port);
    if (isLoopback(src)) k.byte(0x40).bytes(buf, nodeStart, nodeEnd);
    this.group = k.done();
    const service = dst.isService();
    if (service || dst.hasServiceName) {
      // The Service this end was reached through, or the one selecting this pod on this port.
      const named = dst.hasServiceName;
      const nameStart = named || !service ? dst.serviceNameStart : dst.objectNameStart;
      const nameEnd = named || !service ? dst.serviceNameEnd : dst.objectNameEnd;
      const nsNamed = dst.serviceNamespaceEnd > dst.serviceNamespaceStart || !service;
      const nsStart = nsNamed ? dst.serviceNamespaceStart : dst.objectNamespaceStart;
      const nsEnd = nsNamed ? dst.serviceNamespaceEnd : dst.objectNamespaceEnd;
      const svc = nameEnd > nameStart ? this.key.start().ascii('svc/').bytes(buf, nsStart, nsEnd).byte(SLASH).bytes(buf, nameStart, nameEnd).done() : '';
      if (service && svc) {
        this.conversation0 = svc;
        return this;
      }
      if (this.vantage === VANTAGE_DST && svc) this.conversation1 = svc;
    }
    this.conversation0 = this.key.start().bytes(buf, dst.ipStart, dst.ipEnd).byte(SLASH).number(dst.port).done();
    return this;
  }

  /** The end the observing node saw itself: src for SRC, dst for DST. */
  get localStart(): number {
    return this.vantage === VANTAGE_SRC ? this.srcStart : this.dstStart;
  }

  get localEnd(): number {
    return this.vantage === VANTAGE_SRC ? this.srcEnd : this.dstEnd;
  }
}
