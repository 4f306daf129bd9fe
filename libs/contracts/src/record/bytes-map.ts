// A map keyed by byte strings (label sets, IP address text, container ids) that is looked up
// straight from a buffer range, so a hit allocates nothing: FNV-1a over the bytes, then a byte
// compare. Shared by the stages that read records as bytes (the exporter's sinks and JSON writer,
// the tagger's answers by address and container id).

/**
 * Open addressing in typed arrays (no object per entry or bucket): slots hold entry numbers,
 * entries their hash and where their key lies in one arena of key bytes. Grows by doubling;
 * bound it with `size` and clear().
 */
export class BytesMap<V> {
  /** Entry number + 1 per slot (0: empty); at most half full. */
  private slots = new Int32Array(64);
  private mask = 63;
  private hashes = new Int32Array(32);
  /** Per entry: start and end of its key in `keys`. */
  private bounds = new Int32Array(64);
  private keys = new Uint8Array(1024);
  private keyBytes = 0;
  private values: V[] = [];
  size = 0;

  get(bytes: Uint8Array, start: number, end: number): V | undefined {
    const hash = hashBytes(bytes, start, end);
    const slots = this.slots;
    const mask = this.mask;
    for (let slot = (hash ^ (hash >>> 15)) & mask; ; slot = (slot + 1) & mask) {
      const entry = slots[slot]! - 1;
      if (entry < 0) return undefined;
      if (this.hashes[entry] === hash && sameRange(this.keys, this.bounds[2 * entry]!, this.bounds[2 * entry + 1]!, bytes, start, end)) return this.values[entry];
    }
  }

  /** Adds a key that get() did not find (the key bytes are copied). */
  set(bytes: Uint8Array, start: number, end: number, value: V): void {
    const entry = this.size;
    if (2 * (entry + 1) > this.slots.length) this.grow();
    if (entry >= this.hashes.length) {
      this.hashes = grown(this.hashes, 2 * this.hashes.length);
      this.bounds = grown(this.bounds, 2 * this.bounds.length);
    }
    const length = end - start;
    if (this.keyBytes + length > this.keys.length) this.keys = grown(this.keys, Math.max(2 * this.keys.length, this.keyBytes + length));
    this.keys.set(bytes.subarray(start, end), this.keyBytes);
    this.bounds[2 * entry] = this.keyBytes;
    this.bounds[2 * entry + 1] = this.keyBytes += length;
    const hash = hashBytes(bytes, start, end);
    this.hashes[entry] = hash;
    this.values[entry] = value;
    this.size = entry + 1;
    this.place(hash, entry);
  }

  clear(): void {
    this.slots.fill(0);
    this.values.length = 0;
    this.keyBytes = 0;
    this.size = 0;
  }

  private place(hash: number, entry: number): void {
    let slot = (hash ^ (hash >>> 15)) & this.mask;
    while (this.slots[slot] !== 0) slot = (slot + 1) & this.mask;
    this.slots[slot] = entry + 1;
  }

  private grow(): void {
    this.slots = new Int32Array(2 * this.slots.length);
    this.mask = this.slots.length - 1;
    for (let entry = 0; entry < this.size; entry++) this.place(this.hashes[entry]!, entry);
  }
}

function grown<T extends Int32Array | Uint8Array>(array: T, length: number): T {
  const bigger = new (array.constructor as new (length: number) => T)(length);
  bigger.set(array);
  return bigger;
}

/** FNV-1a over bytes[start, end), cut to 30 bits: a V8 small integer, as Map keys and Int32Array slots hold it. */
export function hashBytes(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h & 0x3fffffff;
}

/** Whether a[a0, a1) and b[b0, b1) hold the same bytes. */
export function sameRange(a: Uint8Array, a0: number, a1: number, b: Uint8Array, b0: number, b1: number): boolean {
  if (a1 - a0 !== b1 - b0) return false;
  for (let i = 0; i < a1 - a0; i++) if (a[a0 + i] !== b[b0 + i]) return false;
  return true;
}
