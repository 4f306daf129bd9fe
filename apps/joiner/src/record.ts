// What the join reads of a record, through the record view (no objects): the vantage, its two
// ends, and the names it meets its peer under (conversation group and responder names). One
// reusable reader per partition. The group and names are built as bytes; their short key
// strings (latin1 of the raw bytes: a faithful map key, and the exact bytes of the Redis field
// they become) are made in one step each, and only for a record the group rows cannot join.
import { EndpointSchema, FlowBatchView, FlowFields, KubeSchema, MessageCursor } from '@kappa/contracts';

export const VANTAGE_SRC = 1;
export const VANTAGE_DST = 2;

const F = FlowFields.FlowRecord;
const E = FlowFields.Endpoint;
const K = FlowFields.Kube;

/** Why a record cannot wait for a peer and leaves at once. */
export type ImmediateRelease = 'external' | 'no-vantage';

const SLASH = 0x2f;

/** Builds a key from pieces of bytes into a reused buffer; its string is made in one allocation. */
export class KeyBuilder {
  buf = Buffer.allocUnsafe(256);
  pos = 0;

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

  /** The payload of a string field of `cursor` (nothing when absent). */
  field(cursor: MessageCursor, field: number): this {
    const start = cursor.payloadStart(field);
    if (start < 0) return this;
    const end = cursor.fieldEnd(field);
    this.room(end - start);
    const src = cursor.bytes;
    const buf = this.buf;
    let pos = this.pos;
    for (let i = start; i < end; i++) buf[pos++] = src[i]!;
    this.pos = pos;
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
    // n is a uint32 (protocol, port, netns): `>>> 0` is the floor of its tenth.
    let digits = 0;
    for (let m = n; m > 0; m = (m / 10) >>> 0) digits++;
    let at = this.pos + digits;
    this.pos = at;
    const buf = this.buf;
    for (let m = n; m > 0; m = (m / 10) >>> 0) buf[--at] = 0x30 + (m % 10);
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

function hasText(cursor: MessageCursor, field: number): boolean {
  return cursor.byteLength(field) > 0;
}

/** One record as the join sees it; `read` points every cursor at it. */
export class JoinRecord {
  readonly record = FlowBatchView.recordCursor();
  readonly src = new MessageCursor(EndpointSchema);
  readonly dst = new MessageCursor(EndpointSchema);
  /** The remote end's Kube (dst's for SRC, src's for DST); dst's Kube for DST too. */
  readonly srcKube = new MessageCursor(KubeSchema);
  readonly dstKube = new MessageCursor(KubeSchema);
  vantage = 0;
  /**
   * The conversation group: protocol, the initiator's ip and port (and for loopback the node and
   * the observed end's network namespace, `@<node>/<netns>`); the
   * same key as @kappa/contracts' conversationGroup, whose hash is the partition. Both vantages
   * agree on the initiator, and a Service client's record and its backend's share it.
   */
  group = '';
  /** Responder names the record waits under: "ip/port", and for a Service "svc/<ns>/<name>". */
  conversation0 = '';
  conversation1 = '';
  release: ImmediateRelease | '' = '';
  /** The bytes of group, conversation0 and conversation1 (latin1 of them is the string). */
  readonly groupKey = new KeyBuilder();
  readonly name0 = new KeyBuilder();
  readonly name1 = new KeyBuilder();

  /** Makes group and conversation0/1 from their bytes, after a `readKeyBytes`. */
  keyStrings(): void {
    this.group = this.groupKey.done();
    this.conversation0 = this.name0.done();
    this.conversation1 = this.name1.pos === 0 ? '' : this.name1.done();
  }

  /** Reads the record at bytes[start, end); `text` is a Buffer over `bytes`, if the caller has one. */
  read(bytes: Uint8Array, start: number, end: number, joinExternal: boolean, text?: Buffer): this {
    this.readRecord(bytes, start, end, joinExternal, text, true);
    if (this.release === '') this.keyStrings();
    return this;
  }

  /**
   * Reads the record with its group and names as bytes only (`groupKey`, `name0`, `name1`), no
   * strings: `keyStrings` makes them when they are needed.
   */
  readKeyBytes(bytes: Uint8Array, start: number, end: number, joinExternal: boolean, text: Buffer): this {
    return this.readRecord(bytes, start, end, joinExternal, text, true);
  }

  /**
   * Reads a record that waited, for its splice only: its vantage and ends, not the group and
   * names it was found by (left empty, so no strings are made for them).
   */
  readForSplice(bytes: Uint8Array, start: number, end: number, text: Buffer): this {
    return this.readRecord(bytes, start, end, true, text, false);
  }

  private readRecord(bytes: Uint8Array, start: number, end: number, joinExternal: boolean, text: Buffer | undefined, keys: boolean): this {
    const r = this.record.reset(bytes, start, end, text);
    this.vantage = r.int32(F.vantage);
    this.group = this.conversation0 = this.conversation1 = '';
    const src = this.src;
    const dst = this.dst;
    if (!r.message(F.src, src) || !r.message(F.dst, dst) || (this.vantage !== VANTAGE_SRC && this.vantage !== VANTAGE_DST)) {
      this.release = 'no-vantage';
      return this;
    }
    const dstKube = this.dstKube;
    dst.message(E.kube, dstKube);
    if (this.vantage === VANTAGE_DST) src.message(E.kube, this.srcKube);
    const remoteKube = this.vantage === VANTAGE_SRC ? dstKube : this.srcKube;
    if (!joinExternal && remoteKube.equalsAscii(K.objectType, 'external')) {
      this.release = 'external';
      return this;
    }
    this.release = '';
    if (!keys) return this;
    this.name1.start();
    const k = this.groupKey.start().number(r.int32(F.protocol) >>> 0).byte(SLASH).field(src, E.ip).byte(SLASH).number(src.uint32(E.port));
    if (src.startsWithAscii(E.ip, '127.') || src.equalsAscii(E.ip, '::1') || src.startsWithAscii(E.ip, '::ffff:127.')) {
      k.byte(0x40).field(r, F.node);
      // And the observed end's network namespace: every pod of a node has its own 127.0.0.1.
      const netns = src.uint32(E.netns) || dst.uint32(E.netns);
      if (netns) k.byte(SLASH).number(netns);
    }
    const service = dstKube.equalsAscii(K.objectType, 'service');
    const named = hasText(dstKube, K.serviceName);
    if (service || named) {
      // The Service this end was reached through (ClusterIP), or the one selecting this pod.
      const nameField = named || !service ? K.serviceName : K.objectName;
      const nsField = hasText(dstKube, K.serviceNamespace) || !service ? K.serviceNamespace : K.objectNamespace;
      if (hasText(dstKube, nameField)) {
        if (service) {
          this.name0.start().ascii('svc/').field(dstKube, nsField).byte(SLASH).field(dstKube, nameField);
          return this;
        }
        if (this.vantage === VANTAGE_DST) this.name1.start().ascii('svc/').field(dstKube, nsField).byte(SLASH).field(dstKube, nameField);
      }
    }
    this.name0.start().field(dst, E.ip).byte(SLASH).number(dst.uint32(E.port));
    return this;
  }

  /** The end the observing node saw itself (src for SRC, dst for DST): its payload range. */
  get localStart(): number {
    return this.record.payloadStart(this.vantage === VANTAGE_SRC ? F.src : F.dst);
  }

  get localEnd(): number {
    return this.record.fieldEnd(this.vantage === VANTAGE_SRC ? F.src : F.dst);
  }

  get remote(): MessageCursor {
    return this.vantage === VANTAGE_SRC ? this.dst : this.src;
  }

  get remoteKube(): MessageCursor {
    return this.vantage === VANTAGE_SRC ? this.dstKube : this.srcKube;
  }
}
