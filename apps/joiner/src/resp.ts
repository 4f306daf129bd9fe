// One Redis command with many arguments (HSET or HDEL of a whole commit) written straight into
// one buffer in the Redis protocol, and handed to ioredis as a ready command: no object, string
// or Buffer per argument, which cost the joiner more than the join itself.
import { Command } from 'ioredis';
import { writePendingField } from './commit.js';
import type { CommitSet, CommitVisitor } from './commit.js';
import { endTag } from './partition.js';

export class BulkCommand {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private pos = 0;
  /** Arguments after the key. */
  count = 0;

  constructor(
    readonly name: string,
    public key = '',
  ) {}

  /** Starts a new command on `key` (the buffer is kept: commands are built one after another). */
  reset(key: string): this {
    this.key = key;
    this.pos = 0;
    this.count = 0;
    return this;
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  private header(length: number): void {
    this.room(length + 16);
    const buf = this.buf;
    buf[this.pos++] = 0x24; // $
    let digits = 1;
    for (let n = length; n >= 10; n = Math.floor(n / 10)) digits++;
    let at = this.pos + digits;
    this.pos = at;
    let n = length;
    do {
      buf[--at] = 0x30 + (n % 10);
      n = Math.floor(n / 10);
    } while (n > 0);
    buf[this.pos++] = 0x0d;
    buf[this.pos++] = 0x0a;
  }

  private trailer(): void {
    this.buf[this.pos++] = 0x0d;
    this.buf[this.pos++] = 0x0a;
    this.count++;
  }

  bytes(src: Buffer, start: number, end: number): this {
    this.header(end - start);
    this.pos += src.copy(this.buf, this.pos, start, end);
    this.trailer();
    return this;
  }

  /** An argument made of latin1 text (its chars are its bytes), in up to three parts. */
  latin1(a: string, b = '', c = ''): this {
    this.header(a.length + b.length + c.length);
    // Char by char: these are short (keys, names), and Buffer.write is a native call each.
    const buf = this.buf;
    let pos = this.pos;
    for (let i = 0; i < a.length; i++) buf[pos++] = a.charCodeAt(i);
    for (let i = 0; i < b.length; i++) buf[pos++] = b.charCodeAt(i);
    for (let i = 0; i < c.length; i++) buf[pos++] = c.charCodeAt(i);
    this.pos = pos;
    this.trailer();
    return this;
  }

  /** A waiting record's field: its id as 8 bytes (see writePendingField). */
  id8(id: number): this {
    this.header(8);
    this.pos = writePendingField(this.buf, this.pos, id);
    this.trailer();
    return this;
  }

  /** The whole command in the Redis protocol. */
  toBuffer(): Buffer {
    const head = `*${this.count + 2}\r\n$${Buffer.byteLength(this.name)}\r\n${this.name}\r\n$${Buffer.byteLength(this.key)}\r\n${this.key}\r\n`;
    const out = Buffer.allocUnsafe(Buffer.byteLength(head) + this.pos);
    const n = out.write(head, 0, 'latin1');
    this.buf.copy(out, n, 0, this.pos);
    return out;
  }

  /** An ioredis command that sends these bytes as they are (routed by its key in a Cluster). */
  command(): Command {
    return new RawCommand(this.name, this.key, this.toBuffer());
  }
}

class RawCommand extends Command {
  constructor(
    name: string,
    key: string,
    private readonly bytes: Buffer,
  ) {
    super(name, [key], { replyEncoding: 'utf8' });
  }

  override toWritable(): Buffer {
    return this.bytes;
  }
}

/**
 * A commit's net writes as up to four ready commands (HDEL and HSET of the ends' hash, of the
 * waiting records' hash; fields as endField and writePendingField write them). One per store,
 * reused commit after commit: build() copies each command out before the next one starts.
 */
export class CommitCommands {
  private readonly endDel = new BulkCommand('hdel');
  private readonly endPut = new BulkCommand('hset');
  private readonly pendingDel = new BulkCommand('hdel');
  private readonly pendingPut = new BulkCommand('hset');
  private readonly visitor: CommitVisitor = {
    endDel: (end) => void this.endDel.latin1(end.group.key, endTag(end.name), end.name),
    endPut: (end, buf, start, stop) => void this.endPut.latin1(end.group.key, endTag(end.name), end.name).bytes(buf, start, stop),
    pendingDel: (id) => void this.pendingDel.id8(id),
    pendingPut: (id, buf, start, stop) => void this.pendingPut.id8(id).bytes(buf, start, stop),
  };

  /** The commands of `set` on the two hashes that have something to do, in the order they must run. */
  build(endsKey: string, pendingKey: string, set: CommitSet): Command[] {
    this.endDel.reset(endsKey);
    this.endPut.reset(endsKey);
    this.pendingDel.reset(pendingKey);
    this.pendingPut.reset(pendingKey);
    set.visit(this.visitor);
    const commands: Command[] = [];
    for (const c of [this.endDel, this.endPut, this.pendingDel, this.pendingPut]) if (c.count > 0) commands.push(c.command());
    return commands;
  }
}
