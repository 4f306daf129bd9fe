// A segment's record bytes: `seg-<n>.rec` (the records' protobuf bytes back to back, appended
// while the segment is hot) and, once the segment is sealed, `seg-<n>.recz`: the same bytes cut
// into fixed blocks of REC_BLOCK uncompressed bytes, each block compressed with zstd on its
// own, so a record at (offset, length) is read by decompressing the one or two blocks it spans.
// Index rows keep their offsets into the uncompressed bytes, whichever file holds them.
//
// .recz layout: block 0 … block n-1, then the footer: n + 1 little-endian uint64 file offsets
// (block k is [offsets[k], offsets[k+1]); offsets[n] is where the footer starts), uint32 n,
// uint32 REC_BLOCK, the 8 bytes "KAPPARZ1".
import { existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { constants, zstdCompress, zstdDecompress } from 'node:zlib';

export const REC_BLOCK = 64 * 1024;
/**
 * zstd level 1: half the CPU of level 3 for 5 % more bytes (bench:store --seal-profile: 1.0–1.3
 * against 2.6–3.0 µs per record, 62.2 against 59.1 bytes per record); the seal runs in the
 * exporter beside the appends, where CPU is what limits the rate.
 */
const RECZ_LEVEL = 1;
const MAGIC = Buffer.from('KAPPARZ1');
const compress = promisify(zstdCompress) as (buf: Buffer, options: object) => Promise<Buffer>;
const decompress = promisify(zstdDecompress) as (buf: Buffer) => Promise<Buffer>;

/**
 * Compresses `rec` into `to` and makes it durable (fdatasync) before closing it: the seal writes a
 * temporary name and renames it only after this. zstd runs in libuv's thread pool, one block at a
 * time, so the main thread only moves buffers. Returns the uncompressed length.
 */
export async function compressRecords(rec: string, to: string, level = RECZ_LEVEL): Promise<number> {
  const input = await open(rec, 'r');
  const output = await open(to, 'w');
  let length = 0;
  try {
    const offsets: number[] = [0];
    // 16 blocks read at once and compressed side by side (libuv's pool has 4 threads).
    const chunk = Buffer.allocUnsafe(16 * REC_BLOCK);
    let at = 0;
    for (;;) {
      const { bytesRead } = await input.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      const blocks: Buffer[] = [];
      for (let from = 0; from < bytesRead; from += REC_BLOCK) blocks.push(chunk.subarray(from, Math.min(bytesRead, from + REC_BLOCK)));
      const packed = await Promise.all(blocks.map((b) => compress(b, { params: { [constants.ZSTD_c_compressionLevel]: level } })));
      const joined = Buffer.concat(packed);
      await output.write(joined, 0, joined.length, at);
      for (const p of packed) offsets.push((at += p.length));
      if (bytesRead < chunk.length) break;
    }
    const n = offsets.length - 1;
    const footer = Buffer.allocUnsafe(8 * (n + 1) + 16);
    offsets.forEach((o, k) => footer.writeBigUInt64LE(BigInt(o), 8 * k));
    footer.writeUInt32LE(n, 8 * (n + 1));
    footer.writeUInt32LE(REC_BLOCK, 8 * (n + 1) + 4);
    MAGIC.copy(footer, 8 * (n + 1) + 8);
    await output.write(footer, 0, footer.length, at);
    await output.datasync();
  } finally {
    await input.close();
    await output.close();
  }
  return length;
}

/**
 * The uncompressed length of a .recz file, or undefined when it is not whole: no footer, a footer
 * that does not match the file's size, or a block that does not decompress to its size.
 * `decompressAll` false checks the footer and the last block only (cheap: every sealed segment at
 * open); true decompresses every block (a .recz found beside its .rec after a stop).
 */
export async function reczLength(recz: string, decompressAll: boolean): Promise<number | undefined> {
  let file: RecordBytes;
  try {
    file = await RecordBytes.open(`${recz}.no-rec`, recz);
  } catch {
    return undefined;
  }
  try {
    return await file.length(decompressAll);
  } catch {
    return undefined;
  } finally {
    await file.close();
  }
}

/** Reads byte ranges of one segment's records, from its .recz when there is one, else its .rec. */
export class RecordBytes {
  /** Decompressed blocks kept while this reader is open (a query's rows are mostly in order). */
  private readonly blocks = new Map<number, Buffer>();

  private constructor(
    private readonly file: FileHandle,
    /** Compressed: the blocks' file offsets; undefined for a plain .rec. */
    private readonly offsets: number[] | undefined,
    private readonly blockSize: number,
    /** Bytes of the file the footer was read from (compressed only). */
    private readonly size = 0,
  ) {}

  static async open(rec: string, recz: string): Promise<RecordBytes> {
    if (!existsSync(recz)) return new RecordBytes(await open(rec, 'r'), undefined, 0);
    const file = await open(recz, 'r');
    try {
      const { size } = await file.stat();
      const tail = Buffer.allocUnsafe(16);
      await file.read(tail, 0, 16, size - 16);
      if (size < 24 || !tail.subarray(8).equals(MAGIC)) throw new Error(`${recz} is not a compressed record file (no KAPPARZ1 footer)`);
      const n = tail.readUInt32LE(0);
      const blockSize = tail.readUInt32LE(4);
      const table = Buffer.allocUnsafe(8 * (n + 1));
      await file.read(table, 0, table.length, size - 16 - table.length);
      const offsets = Array.from({ length: n + 1 }, (_, k) => Number(table.readBigUInt64LE(8 * k)));
      return new RecordBytes(file, offsets, blockSize, size);
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  /** The bytes [off, off + len) of the uncompressed records. */
  async read(off: number, len: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(len);
    if (!this.offsets) {
      await this.file.read(out, 0, len, off);
      return out;
    }
    let written = 0;
    while (written < len) {
      const at = off + written;
      const k = Math.floor(at / this.blockSize);
      const block = await this.block(k);
      const from = at - k * this.blockSize;
      const take = Math.min(len - written, block.length - from);
      if (take <= 0) throw new Error(`record bytes [${off}, ${off + len}) lie past the end of the compressed records`);
      block.copy(out, written, from, from + take);
      written += take;
    }
    return out;
  }

  /**
   * The uncompressed length, checking that the footer's blocks fill the file up to the footer
   * (and with `decompressAll`, that every block decompresses to its size); throws when not.
   */
  async length(decompressAll: boolean): Promise<number> {
    const offsets = this.offsets;
    if (!offsets) return (await this.file.stat()).size;
    const n = offsets.length - 1;
    if (offsets[0] !== 0 || offsets[n] !== this.size - 8 * (n + 1) - 16) throw new Error('the footer does not match the file');
    if (n === 0) return 0;
    // The last block alone gives the length; the others are checked only when asked.
    if (!decompressAll) return (n - 1) * this.blockSize + (await this.block(n - 1)).length;
    let total = 0;
    for (let k = 0; k < n; k++) {
      const block = await this.block(k);
      if (k < n - 1 && block.length !== this.blockSize) throw new Error(`block ${k} decompresses to ${block.length} bytes`);
      total += block.length;
      this.blocks.clear();
    }
    return total;
  }

  private async block(k: number): Promise<Buffer> {
    const cached = this.blocks.get(k);
    if (cached) return cached;
    const offsets = this.offsets!;
    if (k + 1 >= offsets.length) throw new Error(`block ${k} is past the end of the compressed records (${offsets.length - 1} blocks)`);
    const packed = Buffer.allocUnsafe(offsets[k + 1]! - offsets[k]!);
    await this.file.read(packed, 0, packed.length, offsets[k]!);
    const block = await decompress(packed);
    // At most 64 blocks (4 MiB) at once; rows in flow-time order walk the blocks forwards.
    if (this.blocks.size >= 64) this.blocks.clear();
    this.blocks.set(k, block);
    return block;
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
