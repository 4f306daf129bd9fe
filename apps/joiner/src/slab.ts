// Bump allocation of the join's stored bytes (waiting records, cached ends) from large chunks:
// one allocation per chunk instead of one per value, and no view object per value (a value is
// its chunk and offsets), so the joiner's memory outside the V8 heap is a few big blocks the
// allocator hands back whole. Every value lives at most the metadata TTL or the join wait, so a
// chunk goes at most that long after its last use.
export class Slab {
  /** The buffer the last `reserve` placed its bytes in. */
  buf: Buffer;
  private chunk: Buffer;
  private used = 0;

  constructor(private readonly chunkSize = 1024 * 1024) {
    this.chunk = this.buf = Buffer.allocUnsafeSlow(chunkSize);
  }

  /** Reserves `size` bytes; they are `buf[offset, offset + size)`. */
  reserve(size: number): number {
    if (size > this.chunkSize / 8) {
      this.buf = Buffer.allocUnsafeSlow(size);
      return 0;
    }
    if (this.used + size > this.chunk.length) {
      this.chunk = Buffer.allocUnsafeSlow(this.chunkSize);
      this.used = 0;
    }
    this.buf = this.chunk;
    const offset = this.used;
    this.used += size;
    return offset;
  }
}
