// A map keyed by byte strings (label sets, IP address text, container ids) that is looked up
// straight from a buffer range, so a hit allocates nothing: FNV-1a over the bytes, then a byte
// compare. Shared by the stages that read records as bytes (the exporter's sinks and JSON writer).
export class BytesMap<V> {
  private readonly buckets = new Map<number, { key: Uint8Array; value: V }[]>();
  size = 0;

  get(bytes: Uint8Array, start: number, end: number): V | undefined {
    const bucket = this.buckets.get(hashBytes(bytes, start, end));
    if (!bucket) return undefined;
    for (let b = 0; b < bucket.length; b++) {
      const entry = bucket[b]!;
      if (sameRange(entry.key, 0, entry.key.length, bytes, start, end)) return entry.value;
    }
    return undefined;
  }

  /** Adds a key that get() did not find (the key bytes are copied). */
  set(bytes: Uint8Array, start: number, end: number, value: V): void {
    const hash = hashBytes(bytes, start, end);
    const entry = { key: bytes.slice(start, end), value };
    const bucket = this.buckets.get(hash);
    if (bucket) bucket.push(entry);
    else this.buckets.set(hash, [entry]);
    this.size++;
  }

  clear(): void {
    this.buckets.clear();
    this.size = 0;
  }
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
