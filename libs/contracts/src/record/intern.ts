// Strings read from record bytes without allocating each time: node names, IP addresses and
// container ids repeat across records, so the first read of a byte sequence makes its string and
// later reads of equal bytes return that same string (a hash table keyed by the bytes).
import { bufferOf } from './cursor.js';

const EMPTY = '';

/**
 * Byte sequence → its UTF-8 string, remembered. Bounded: when it holds `maxEntries` strings it
 * starts over (a table of what one node or cluster repeats; a flood of distinct values costs a
 * string each, as decoding would).
 */
export class StringInterner {
  private keys: Uint8Array;
  private offsets: Int32Array;
  private lengths: Int32Array;
  private hashes: Int32Array;
  private strings: string[];
  private slots: Int32Array;
  private keyBytes = 0;
  private count = 0;
  private readonly mask: number;

  constructor(private readonly maxEntries = 65_536) {
    let size = 1;
    while (size < maxEntries * 2) size <<= 1;
    this.mask = size - 1;
    this.slots = new Int32Array(size).fill(-1);
    this.offsets = new Int32Array(maxEntries);
    this.lengths = new Int32Array(maxEntries);
    this.hashes = new Int32Array(maxEntries);
    this.strings = new Array<string>(maxEntries).fill(EMPTY);
    this.keys = new Uint8Array(64 * 1024);
  }

  get size(): number {
    return this.count;
  }

  /** The string of bytes[start, end) (decoded once, then found by hash and byte comparison). */
  intern(bytes: Uint8Array, start: number, end: number): string {
    const length = end - start;
    if (length <= 0) return EMPTY;
    let hash = 0x811c9dc5;
    for (let i = start; i < end; i++) hash = Math.imul(hash ^ bytes[i]!, 0x01000193);
    let slot = (hash ^ (hash >>> 15)) & this.mask;
    const keys = this.keys;
    for (;;) {
      const entry = this.slots[slot]!;
      if (entry < 0) break;
      if (this.hashes[entry] === hash && this.lengths[entry] === length) {
        const offset = this.offsets[entry]!;
        let same = true;
        for (let i = 0; i < length; i++) {
          if (keys[offset + i] !== bytes[start + i]) {
            same = false;
            break;
          }
        }
        if (same) return this.strings[entry]!;
      }
      slot = (slot + 1) & this.mask;
    }
    const text = bufferOf(bytes).toString('utf8', start, end);
    if (this.count >= this.maxEntries) {
      this.clear();
      return this.intern(bytes, start, end);
    }
    if (this.keyBytes + length > this.keys.length) {
      const grown = new Uint8Array(Math.max(this.keys.length * 2, this.keyBytes + length));
      grown.set(this.keys.subarray(0, this.keyBytes));
      this.keys = grown;
    }
    const entry = this.count++;
    this.keys.set(bytes.subarray(start, end), this.keyBytes);
    this.offsets[entry] = this.keyBytes;
    this.lengths[entry] = length;
    this.hashes[entry] = hash;
    this.strings[entry] = text;
    this.keyBytes += length;
    this.slots[slot] = entry;
    return text;
  }

  clear(): void {
    this.slots.fill(-1);
    this.strings.fill(EMPTY);
    this.count = 0;
    this.keyBytes = 0;
  }
}
