// What /proc said about a process, keyed by (pid, start time) so a reused pid never returns
// another process's entry; bounded in size (least recently used goes first) and in age.

export interface ProcessCacheOptions {
  maxEntries?: number;
  ttlMs?: number;
  now?: () => number;
}

interface Slot<V> {
  value: V;
  storedAt: number;
}

export class ProcessCache<V> {
  // Map iteration order is insertion order: re-inserting on a hit keeps the LRU entry first.
  private readonly slots = new Map<string, Slot<V>>();
  readonly maxEntries: number;
  readonly ttlMs: number;
  private readonly now: () => number;
  hits = 0;
  misses = 0;

  constructor(options: ProcessCacheOptions = {}) {
    this.maxEntries = Math.max(1, options.maxEntries ?? 16_384);
    this.ttlMs = options.ttlMs ?? 300_000;
    this.now = options.now ?? Date.now;
  }

  static key(pid: number, startTimeTicks: bigint): string {
    return `${pid}:${startTimeTicks}`;
  }

  get size(): number {
    return this.slots.size;
  }

  get(pid: number, startTimeTicks: bigint): V | undefined {
    const key = ProcessCache.key(pid, startTimeTicks);
    const slot = this.slots.get(key);
    if (slot === undefined || this.now() - slot.storedAt >= this.ttlMs) {
      if (slot) this.slots.delete(key);
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.slots.delete(key);
    this.slots.set(key, slot);
    return slot.value;
  }

  set(pid: number, startTimeTicks: bigint, value: V): void {
    const key = ProcessCache.key(pid, startTimeTicks);
    this.slots.delete(key);
    this.slots.set(key, { value, storedAt: this.now() });
    while (this.slots.size > this.maxEntries) {
      const oldest = this.slots.keys().next();
      if (oldest.done) break;
      this.slots.delete(oldest.value);
    }
  }

  delete(pid: number, startTimeTicks: bigint): void {
    this.slots.delete(ProcessCache.key(pid, startTimeTicks));
  }
}
