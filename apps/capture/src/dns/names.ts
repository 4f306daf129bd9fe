// Which name each network namespace resolved each address from: (namespace, address) → the name
// the client asked for (the question; the first name of a CNAME chain), with the answer's TTL.
// Read once per drained record, so a lookup hashes the key bytes in place and allocates nothing.
//
// A name outlives its TTL while conversations keep using it: a connection opened while the name
// was valid keeps it as long as it lives (Hubble loses it, and its users complain). An entry is
// valid until max(TTL end, last use) + linger; a newer answer for the same address replaces it.

/** How long an entry stays valid after its TTL ran out and its last use. */
export const NAME_LINGER_MS = 10 * 60 * 1000;

const EMPTY = 0;
const USED = 1;
const DELETED = 2;
const KEY_WORDS = 5; // netns + 4 address words

export class AddressNames {
  private capacity: number;
  private state: Uint8Array;
  private keys: Uint32Array;
  private fields: (Buffer | undefined)[];
  private names: string[];
  private expiresMs: Float64Array;
  private usedMs: Float64Array;
  private used = 0;
  private deleted = 0;
  private readonly probe = new Uint32Array(KEY_WORDS);
  /** Entries not added because the table was full of valid ones. */
  refused = 0;

  constructor(
    /** Most entries kept. */
    readonly maxEntries: number,
    /** Encodes a name as the field a record carries (done once per learnt name). */
    private readonly encodeField: (name: string) => Buffer,
  ) {
    this.capacity = 1 << Math.ceil(Math.log2(Math.max(16, maxEntries * 2)));
    this.state = new Uint8Array(this.capacity);
    this.keys = new Uint32Array(this.capacity * KEY_WORDS);
    this.fields = new Array<Buffer | undefined>(this.capacity).fill(undefined);
    this.names = new Array<string>(this.capacity).fill('');
    this.expiresMs = new Float64Array(this.capacity);
    this.usedMs = new Float64Array(this.capacity);
  }

  get size(): number {
    return this.used;
  }

  /** Remembers that `netns` resolved `address` (16 bytes, IPv4-mapped for IPv4) from `name`. */
  learn(netns: number, address: Uint8Array, name: string, expiresMs: number, nowMs: number): void {
    const key = this.probe;
    key[0] = netns >>> 0;
    for (let i = 0; i < 4; i++) key[i + 1] = ((address[4 * i]! << 24) | (address[4 * i + 1]! << 16) | (address[4 * i + 2]! << 8) | address[4 * i + 3]!) >>> 0;
    let slot = this.find(key);
    if (slot < 0) {
      if (this.used >= this.maxEntries) this.sweep(nowMs);
      if (this.used >= this.maxEntries) {
        this.refused++;
        return;
      }
      if (this.used + this.deleted + 1 > this.capacity * 0.7) this.rehash();
      slot = this.insertSlot(key);
      this.state[slot] = USED;
      this.keys.set(key, slot * KEY_WORDS);
      this.used++;
      this.usedMs[slot] = 0;
    }
    if (this.names[slot] !== name) {
      this.names[slot] = name;
      this.fields[slot] = this.encodeField(name);
    }
    this.expiresMs[slot] = expiresMs;
  }

  /**
   * The encoded name field for the address at `bytes[addressAt, +16)` in `netns`, or undefined;
   * marks the entry used at `nowMs`.
   */
  lookup(netns: number, bytes: Buffer, addressAt: number, nowMs: number): Buffer | undefined {
    if (this.used === 0) return undefined;
    const key = this.probe;
    key[0] = netns >>> 0;
    for (let i = 0; i < 4; i++) key[i + 1] = bytes.readUInt32BE(addressAt + 4 * i);
    const slot = this.find(key);
    if (slot < 0) return undefined;
    if (nowMs > Math.max(this.expiresMs[slot]!, this.usedMs[slot]!) + NAME_LINGER_MS) return undefined;
    this.usedMs[slot] = nowMs;
    return this.fields[slot];
  }

  /** The name text (tests and logs). */
  nameOf(netns: number, address: Uint8Array): string | undefined {
    const key = new Uint32Array(KEY_WORDS);
    key[0] = netns >>> 0;
    for (let i = 0; i < 4; i++) key[i + 1] = ((address[4 * i]! << 24) | (address[4 * i + 1]! << 16) | (address[4 * i + 2]! << 8) | address[4 * i + 3]!) >>> 0;
    const slot = this.find(key);
    return slot < 0 ? undefined : this.names[slot];
  }

  /** Removes the entries no longer valid at `nowMs`. */
  sweep(nowMs: number): void {
    for (let slot = 0; slot < this.capacity; slot++) {
      if (this.state[slot] !== USED) continue;
      if (nowMs <= Math.max(this.expiresMs[slot]!, this.usedMs[slot]!) + NAME_LINGER_MS) continue;
      this.state[slot] = DELETED;
      this.fields[slot] = undefined;
      this.names[slot] = '';
      this.used--;
      this.deleted++;
    }
  }

  private hash(key: Uint32Array): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < KEY_WORDS; i++) {
      h = Math.imul(h ^ key[i]!, 0x01000193);
      h ^= h >>> 15;
    }
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    return (h ^ (h >>> 13)) >>> 0;
  }

  private find(key: Uint32Array): number {
    const mask = this.capacity - 1;
    for (let slot = this.hash(key) & mask, n = 0; n < this.capacity; slot = (slot + 1) & mask, n++) {
      const state = this.state[slot];
      if (state === EMPTY) return -1;
      if (state === DELETED) continue;
      const at = slot * KEY_WORDS;
      const keys = this.keys;
      if (keys[at] === key[0] && keys[at + 1] === key[1] && keys[at + 2] === key[2] && keys[at + 3] === key[3] && keys[at + 4] === key[4]) return slot;
    }
    return -1;
  }

  private insertSlot(key: Uint32Array): number {
    const mask = this.capacity - 1;
    let slot = this.hash(key) & mask;
    while (this.state[slot] === USED) slot = (slot + 1) & mask;
    if (this.state[slot] === DELETED) this.deleted--;
    return slot;
  }

  private rehash(): void {
    const old = { state: this.state, keys: this.keys, fields: this.fields, names: this.names, expiresMs: this.expiresMs, usedMs: this.usedMs, capacity: this.capacity };
    this.state = new Uint8Array(this.capacity);
    this.keys = new Uint32Array(this.capacity * KEY_WORDS);
    this.fields = new Array<Buffer | undefined>(this.capacity).fill(undefined);
    this.names = new Array<string>(this.capacity).fill('');
    this.expiresMs = new Float64Array(this.capacity);
    this.usedMs = new Float64Array(this.capacity);
    this.deleted = 0;
    for (let slot = 0; slot < old.capacity; slot++) {
      if (old.state[slot] !== USED) continue;
      const key = old.keys.subarray(slot * KEY_WORDS, slot * KEY_WORDS + KEY_WORDS);
      const to = this.insertSlot(key);
      this.state[to] = USED;
      this.keys.set(key, to * KEY_WORDS);
      this.fields[to] = old.fields[slot];
      this.names[to] = old.names[slot]!;
      this.expiresMs[to] = old.expiresMs[slot]!;
      this.usedMs[to] = old.usedMs[slot]!;
    }
  }
}
