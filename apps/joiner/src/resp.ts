// One Redis command with many arguments (HSET or HDEL of a whole commit) written straight into
// one buffer in the Redis protocol, and handed to ioredis as a ready command: no object, string
// or Buffer per argument, which cost the joiner more than the join itself.
import { Command } from 'ioredis';
import { writePendingField } from './commit.js';

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
    this.pos += this.buf.write(a, this.pos, 'latin1');
    if (b) this.pos += this.buf.write(b, this.pos, 'latin1');
    if (c) this.pos += this.buf.write(c, this.pos, 'latin1');
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
