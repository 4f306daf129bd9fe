// Hostile protobuf payloads for the fuzz tests: valid encoded messages mutated in the ways decoders
// break (bit flips, truncation, splices, varint bombs, huge length prefixes, nested groups) plus
// purely random bytes, from a seeded generator so a failing run can be replayed (KAPPA_FUZZ_SEED).

/** A small deterministic PRNG (mulberry32). */
export class Random {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)]!;
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.below(256);
    return out;
  }
}

export type MutationKind = 'random' | 'bitflip' | 'truncate' | 'splice' | 'varint-bomb' | 'huge-length' | 'nested-groups' | 'group-bomb' | 'duplicate' | 'overwrite';

function varint(value: bigint): number[] {
  const out: number[] = [];
  let v = value;
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}

function insert(base: Uint8Array, at: number, piece: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(base.length + piece.length);
  out.set(base.subarray(0, at), 0);
  out.set(piece, at);
  out.set(base.subarray(at), at + piece.length);
  return out;
}

/** Field numbers to aim at: those of FlowBatch / StageStatus / FlowRecord, and unknown ones. */
const FIELDS = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 17, 22, 99, 536870911];

/** One hostile payload derived from the seeds, and how it was made. */
export function hostilePayload(random: Random, seeds: readonly Uint8Array[]): { kind: MutationKind; bytes: Uint8Array } {
  const seed = random.pick(seeds);
  const at = random.below(seed.length + 1);
  const field = random.pick(FIELDS);
  // A group bomb is 100 KB: rare, so 100 000 payloads stay within the streams' byte limits.
  const kind: MutationKind =
    random.next() < 0.003 ? 'group-bomb' : random.pick<MutationKind>(['random', 'bitflip', 'bitflip', 'truncate', 'splice', 'varint-bomb', 'huge-length', 'nested-groups', 'duplicate', 'overwrite']);
  switch (kind) {
    case 'random':
      return { kind, bytes: random.bytes(random.below(random.next() < 0.9 ? 64 : 4096)) };
    case 'bitflip': {
      const bytes = Uint8Array.from(seed);
      const flips = 1 + random.below(8);
      for (let i = 0; i < flips && bytes.length > 0; i++) bytes[random.below(bytes.length)]! ^= 1 << random.below(8);
      return { kind, bytes };
    }
    case 'truncate':
      return { kind, bytes: seed.slice(0, random.below(seed.length)) };
    case 'splice': {
      const other = random.pick(seeds);
      const tail = other.subarray(random.below(other.length + 1));
      const out = new Uint8Array(at + tail.length);
      out.set(seed.subarray(0, at), 0);
      out.set(tail, at);
      return { kind, bytes: out };
    }
    case 'varint-bomb': {
      // A varint tag then 10–40 continuation bytes: longer than any 64-bit varint may be.
      const run = Array<number>(10 + random.below(30)).fill(0xff);
      if (random.next() < 0.5) run.push(0x01);
      return { kind, bytes: insert(seed, at, [...varint(BigInt(field << 3)), ...run]) };
    }
    case 'huge-length': {
      // A length-delimited field claiming far more bytes than follow.
      const length = random.pick([0x7fff_ffffn, 0xffff_ffffn, 1n << 40n, (1n << 64n) - 1n, BigInt(seed.length + 1 + random.below(1000))]);
      return { kind, bytes: insert(seed, at, [...varint(BigInt((field << 3) | 2)), ...varint(length)]) };
    }
    case 'nested-groups': {
      // Start-group tags nested 1–64 deep, closed (a valid unknown field) or not (truncated).
      const depth = 1 + random.below(64);
      const open = varint(BigInt((field << 3) | 3));
      const close = varint(BigInt((field << 3) | 4));
      const closed = random.next() < 0.6;
      const piece = [...Array.from({ length: depth }, () => open).flat(), ...(closed ? Array.from({ length: depth }, () => close).flat() : [])];
      return { kind, bytes: insert(seed, random.next() < 0.5 ? seed.length : at, piece) };
    }
    case 'group-bomb': {
      // 100 000 nested groups: deep enough to exhaust any recursive decoder's stack.
      const piece = new Uint8Array(100_000).fill((5 << 3) | 3);
      return { kind, bytes: insert(seed, at, piece) };
    }
    case 'duplicate': {
      // Two messages back to back merge into one in protobuf: decodes when both halves do.
      const other = random.pick(seeds);
      const out = new Uint8Array(seed.length + other.length);
      out.set(seed, 0);
      out.set(other, seed.length);
      return { kind, bytes: out };
    }
    case 'overwrite': {
      const bytes = Uint8Array.from(seed);
      const n = 1 + random.below(4);
      for (let i = 0; i < n && bytes.length > 0; i++) bytes[random.below(bytes.length)] = random.pick([0x00, 0x7f, 0x80, 0xff, 0x0b, 0x0c, 0x0f]);
      return { kind, bytes };
    }
  }
}
