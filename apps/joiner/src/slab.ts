// Bump allocation of the join's stored bytes (waiting records, cached ends) from 1 MiB chunks,
// with a count of the values alive in each: a chunk whose values all left is reused, not given
// back and asked for again. Fresh memory costs a page fault per page the first time it is
// written (here ~10× the copy itself), and one allocation per value would cost an object each.
// A value is its chunk and offsets; `release` is called once per value, after the Redis commit
// that last read it.
interface Chunk {
  buf: Buffer;
  live: number;
}

/** Chunks kept for reuse beyond those in use (each 1 MiB). */
const SPARE_CHUNKS = 32;

export class Slab {
  /** The buffer the last `reserve` placed its bytes in. */
  buf: Buffer;
  private current: Chunk;
  private used = 0;
  private readonly chunks = new Map<Buffer, Chunk>();
  private readonly spare: Chunk[] = [];

  constructor(private readonly chunkSize = 1024 * 1024) {
    this.current = this.newChunk(chunkSize);
    this.buf = this.current.buf;
  }

  private newChunk(size: number): Chunk {
    const chunk = { buf: Buffer.allocUnsafeSlow(size), live: 0 };
    this.chunks.set(chunk.buf, chunk);
    return chunk;
  }

  /** Reserves `size` bytes for one value; they are `buf[offset, offset + size)`. */
  reserve(size: number): number {
    if (size > this.chunkSize / 8) {
      const own = this.newChunk(size);
      own.live = 1;
      this.buf = own.buf;
      return 0;
    }
    if (this.used + size > this.current.buf.length) {
      const full = this.current;
      this.current = this.spare.pop() ?? this.newChunk(this.chunkSize);
      this.used = 0;
      if (full.live === 0) this.retire(full);
    }
    this.current.live++;
    this.buf = this.current.buf;
    const offset = this.used;
    this.used += size;
    return offset;
  }

  /** One value in `buf` is no longer read (values not from this slab are ignored). */
  release(buf: Buffer): void {
    const chunk = this.chunks.get(buf);
    if (!chunk) return;
    if (--chunk.live === 0 && chunk !== this.current) this.retire(chunk);
  }

  private retire(chunk: Chunk): void {
    if (chunk.buf.length === this.chunkSize && this.spare.length < SPARE_CHUNKS) this.spare.push(chunk);
    else this.chunks.delete(chunk.buf);
  }

  /** Bytes in chunks held (in use or spare). */
  get bytes(): number {
    let n = 0;
    for (const chunk of this.chunks.values()) n += chunk.buf.length;
    return n;
  }
}
