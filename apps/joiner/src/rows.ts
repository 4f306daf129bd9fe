// A flat copy of the groups whose records join at once (both ends cached, nothing waiting), so
// that a later interval's record is joined from one place: a 64-byte row per group in one typed
// array (hash, offsets, lengths, the two ends' storedAt) and, adjacent in one arena, the group's
// key bytes, the initiator's end, the responder's name and the responder's end. The Group and End
// objects stay the state (commit, expiry, recovery); a row is a cache of them, rebuilt after a
// record changed its group and dropped whenever the wheel changes the group.
import { hashBytes } from '@kappa/contracts';
import type { Group } from './partition.js';

/** Doubles per row: 64 bytes. */
const ROW = 8;
const HASH = 0;
const OFF = 1;
const KEY = 2;
/** Lengths (a row holds both ends). */
const SRC = 3;
const NAME = 4;
const DST = 5;
const SRC_AT = 6;
const DST_AT = 7;
const EMPTY = -1;
const TOMBSTONE = -2;

export class GroupRows {
  rows = new Float64Array(1024 * ROW).fill(EMPTY);
  arena = Buffer.allocUnsafeSlow(64 * 1024);
  private mask = 1023;
  /** Rows holding a group, and those plus tombstones. */
  private live = 0;
  private used = 0;
  private arenaUsed = 0;
  private arenaLive = 0;
  private readonly scratch = Buffer.allocUnsafe(256);

  /** Bytes held: the table and the arena. */
  get bytes(): number {
    return this.rows.byteLength + this.arena.length;
  }

  /** The row (index of its first double) of the group with key bytes[0, length), or -1. */
  find(hash: number, bytes: Uint8Array, length: number): number {
    const rows = this.rows;
    const arena = this.arena;
    for (let i = hash & this.mask; ; i = (i + 1) & this.mask) {
      const at = i * ROW;
      const h = rows[at + HASH]!;
      if (h === EMPTY) return -1;
      if (h === hash && rows[at + KEY] === length) {
        const off = rows[at + OFF]!;
        let k = 0;
        while (k < length && arena[off + k] === bytes[k]) k++;
        if (k === length) return at;
      }
    }
  }

  /**
   * After a record of `g` (key bytes[0, length), its hash; its row `at` as `find` gave it, or -1)
   * went through the join of objects: a row of a group the record changed is dropped; a group
   * the record joined at once without a change gets a row, if its state is one a row holds.
   * (Rows are made only then, so that a new conversation costs no copy.)
   */
  keep(g: Group, hash: number, bytes: Uint8Array, length: number, at: number, changed: boolean): void {
    if (changed) {
      if (at >= 0) this.dropAt(at);
      return;
    }
    if (at >= 0) return;
    const src = g.src;
    const dst = g.dst0;
    if (g.waitingDst || g.ws0 || (g.wsMore && g.wsMore.size > 0) || !src || !dst) return;
    const srcLen = src.end - src.at;
    const name = g.dst0Name;
    const dstLen = dst.end - dst.at;
    const size = length + srcLen + name.length + dstLen;
    if (this.arenaUsed + size > this.arena.length) this.compact(size);
    at = this.insert(hash);
    const arena = this.arena;
    const rows = this.rows;
    let off = this.arenaUsed;
    rows[at + OFF] = off;
    rows[at + KEY] = length;
    for (let k = 0; k < length; k++) arena[off++] = bytes[k]!;
    rows[at + SRC] = srcLen;
    src.buf.copy(arena, off, src.at, src.end);
    off += srcLen;
    rows[at + SRC_AT] = src.storedAt;
    rows[at + NAME] = name.length;
    for (let k = 0; k < name.length; k++) arena[off++] = name.charCodeAt(k);
    rows[at + DST] = dstLen;
    dst.buf.copy(arena, off, dst.at, dst.end);
    off += dstLen;
    rows[at + DST_AT] = dst.storedAt;
    this.arenaUsed = off;
    this.arenaLive += size;
  }

  /** Drops the row of the group `key` (a latin1 string), if any. */
  dropKey(key: string): void {
    const n = key.length;
    const buf = n <= this.scratch.length ? this.scratch : Buffer.allocUnsafe(n);
    buf.write(key, 0, n, 'latin1');
    this.drop(hashBytes(buf, 0, n), buf, n);
  }

  private drop(hash: number, bytes: Uint8Array, length: number): void {
    const at = this.find(hash, bytes, length);
    if (at >= 0) this.dropAt(at);
  }

  private dropAt(at: number): void {
    this.arenaLive -= this.regionSize(at);
    this.rows[at + HASH] = TOMBSTONE;
    this.live--;
  }

  private regionSize(at: number): number {
    const rows = this.rows;
    return rows[at + KEY]! + rows[at + SRC]! + rows[at + NAME]! + rows[at + DST]!;
  }

  /** A free row for `hash` (the table grown or cleared of tombstones first when half full). */
  private insert(hash: number): number {
    if ((this.used + 1) * 2 > this.mask + 1) this.rehash();
    const rows = this.rows;
    for (let i = hash & this.mask; ; i = (i + 1) & this.mask) {
      const at = i * ROW;
      const h = rows[at + HASH]!;
      if (h === EMPTY || h === TOMBSTONE) {
        if (h === EMPTY) this.used++;
        this.live++;
        rows[at + HASH] = hash;
        return at;
      }
    }
  }

  private rehash(): void {
    const old = this.rows;
    let capacity = this.mask + 1;
    while (this.live * 4 >= capacity) capacity *= 2;
    const rows = new Float64Array(capacity * ROW).fill(EMPTY);
    const mask = capacity - 1;
    for (let from = 0; from < old.length; from += ROW) {
      const h = old[from + HASH]!;
      if (h < 0) continue;
      let i = h & mask;
      while (rows[i * ROW + HASH] !== EMPTY) i = (i + 1) & mask;
      rows.set(old.subarray(from, from + ROW), i * ROW);
    }
    this.rows = rows;
    this.mask = mask;
    this.used = this.live;
  }

  /** Moves every row's bytes to the start of an arena with room for `size` more. */
  private compact(size: number): void {
    const old = this.arena;
    let length = old.length;
    while ((this.arenaLive + size) * 2 > length) length *= 2;
    const arena = Buffer.allocUnsafeSlow(length);
    const rows = this.rows;
    let off = 0;
    for (let at = 0; at < rows.length; at += ROW) {
      if (rows[at + HASH]! < 0) continue;
      const n = this.regionSize(at);
      const from = rows[at + OFF]!;
      old.copy(arena, off, from, from + n);
      rows[at + OFF] = off;
      off += n;
    }
    this.arena = arena;
    this.arenaUsed = off;
  }

  /** The length of the peer end joinAt found. */
  peerLength = 0;

  /**
   * Joins a record from its group's row when that is what the join of its objects would do: the
   * peer's end cached and fresh, this node's end stored lately with the same bytes, nothing
   * waiting. Returns the peer end's offset in `arena` (its length in `peerLength`), or -1.
   */
  joinAt(at: number, src: boolean, name: Uint8Array, nameLength: number, text: Buffer, from: number, to: number, now: number, ttlMs: number, refreshMs: number): number {
    const rows = this.rows;
    const arena = this.arena;
    const srcLen = rows[at + SRC]!;
    const dstLen = rows[at + DST]!;
    const nameLen = rows[at + NAME]!;
    const srcOff = rows[at + OFF]! + rows[at + KEY]!;
    const nameOff = srcOff + srcLen;
    const dstOff = nameOff + nameLen;
    if (nameLen !== nameLength) return -1;
    for (let k = 0; k < nameLen; k++) if (arena[nameOff + k] !== name[k]) return -1;
    // The peer's end fresh, this node's own stored within the refresh with the same bytes.
    const peerAt = src ? rows[at + DST_AT]! : rows[at + SRC_AT]!;
    const ownAt = src ? rows[at + SRC_AT]! : rows[at + DST_AT]!;
    if (peerAt + ttlMs < now || !(now - ownAt < refreshMs)) return -1;
    const ownOff = src ? srcOff : dstOff;
    const ownLen = src ? srcLen : dstLen;
    if (ownLen !== to - from || arena.compare(text, from, to, ownOff, ownOff + ownLen) !== 0) return -1;
    this.peerLength = src ? dstLen : srcLen;
    return src ? dstOff : srcOff;
  }
}
