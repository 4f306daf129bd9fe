// The join of one partition, in memory: the ends seen lately (each node's view of its own end),
// the records waiting for their peer, indexed by the exact names a peer looks them up under, and
// their deadlines on a timing wheel in event time. `apply` is a pure function of (this state,
// the batch, the batch's time): replayed after a crash from the state committed in Redis, it
// writes the same bytes, which is what lets JetStream's dedupe drop the second publish.
import { hashBytes } from '@kappa/contracts';
import type { FlowBatchView, FlowBatchWriter } from '@kappa/contracts';
import { JoinRecord, VANTAGE_SRC } from './record.js';
import { RecordSplicer } from './splice.js';
import { Slab } from './slab.js';
import { GroupRows } from './rows.js';
import { TimingWheel } from './wheel.js';
import type { WheelEntry } from './wheel.js';

export interface JoinSettings {
  /** How long a record waits for its peer, in event time. */
  joinWaitMs: number;
  /** How long an end stays usable after it was stored. */
  metadataTtlMs: number;
  /**
   * An end seen again with the same bytes is stored again (a Redis write) only when it was stored
   * this long ago; so an active end stays usable between ttl − refresh and ttl after its last
   * record. 0 stores it on every record.
   */
  endRefreshMs: number;
  /** Wait for a peer even when the tagger says the remote end is external. */
  joinExternal: boolean;
}

/**
 * One conversation group's state: the ends seen lately and the records waiting, by name. Most
 * groups have one responder: its end and its waiting list sit in the group itself, more in Maps.
 */
export interface Group {
  key: string;
  /** The initiator's own end. */
  src: End | undefined;
  /** Each responder's own end, by the names it is looked up under. */
  dst0: End | undefined;
  dst0Name: string;
  dstMore: Map<string, End> | undefined;
  /** Responder records waiting for the initiator's end. */
  waitingDst: PendingList | undefined;
  /** Initiator records waiting for a responder's end, by responder name. */
  ws0: PendingList | undefined;
  ws0Name: string;
  wsMore: Map<string, PendingList> | undefined;
}

function dstGet(g: Group, name: string): End | undefined {
  return g.dst0 !== undefined && g.dst0Name === name ? g.dst0 : g.dstMore?.get(name);
}

/** Only for a name dstGet does not find. */
function dstAdd(g: Group, name: string, e: End): void {
  if (g.dst0 === undefined) {
    g.dst0 = e;
    g.dst0Name = name;
  } else {
    (g.dstMore ??= new Map()).set(name, e);
  }
}

function dstDelete(g: Group, name: string): void {
  if (g.dst0 !== undefined && g.dst0Name === name) {
    g.dst0 = undefined;
    g.dst0Name = '';
  } else {
    g.dstMore?.delete(name);
  }
}

function wsGet(g: Group, name: string): PendingList | undefined {
  return g.ws0 !== undefined && g.ws0Name === name ? g.ws0 : g.wsMore?.get(name);
}

function wsAdd(g: Group, name: string, list: PendingList): void {
  if (g.ws0 === undefined) {
    g.ws0 = list;
    g.ws0Name = name;
  } else {
    (g.wsMore ??= new Map()).set(name, list);
  }
}

function wsDelete(g: Group, name: string): void {
  if (g.ws0 !== undefined && g.ws0Name === name) {
    g.ws0 = undefined;
    g.ws0Name = '';
  } else {
    g.wsMore?.delete(name);
  }
}

/**
 * A cached end: the Endpoint bytes `buf[at, end)`. Stored in Redis either as a value of its own,
 * `buf[start, end)` = [varint storedAtMs][Endpoint], or, while the record it came from waits,
 * inside that record's value only (`carrier`): Redis then holds the end once, not twice. A new
 * store moves it to new bytes (never writes into the old ones: a delta not yet committed may
 * still point at them).
 */
export interface End extends WheelEntry {
  group: Group;
  /** '' for the initiator's end, else the responder name. */
  name: string;
  buf: Buffer;
  /** Start of its own Redis value, -1 while a waiting record carries it. */
  start: number;
  at: number;
  end: number;
  storedAt: number;
  live: boolean;
  /** The waiting record whose Redis value holds this end's current bytes. */
  carrier: Pending | undefined;
  /** Its own value is in Redis (committed or about to be). */
  stored: boolean;
}

/**
 * A record waiting for its peer. Its Redis value is `buf[start, end)`: [varint deadlineMs]
 * [varint arrivedMs][carried ends: bit 0 its first name, bit 1 its second][record].
 */
export interface Pending extends WheelEntry {
  /** Unique in the partition and increasing: stream sequence × 2^20 + index in the batch. */
  id: number;
  buf: Buffer;
  start: number;
  /** Where the record starts. */
  at: number;
  end: number;
  arrivedMs: number;
  list: PendingList | undefined;
  done: boolean;
  /** The ends whose current bytes are this record's own (written out when it leaves). */
  carried0: End | undefined;
  carried1: End | undefined;
}

/** Records waiting under one name, in arrival order; entries leave lazily (done), the list when none is live. */
export interface PendingList {
  group: Group;
  /** '' for the responder records of a group, else the responder name initiator records wait under. */
  name: string;
  items: Pending[];
  live: number;
}

/**
 * What one batch changed, for the Redis commit, in order, without an object per change:
 * `ends` holds (End, buf, start, end) per store, with buf undefined for a removal;
 * `pendingPut` (id, buf, start, end) per record that began to wait; `pendingDel` the ids of
 * those that left.
 */
export class Delta {
  readonly ends: (End | Buffer | number | undefined)[] = [];
  readonly pendingPut: (number | Buffer)[] = [];
  readonly pendingDel: number[] = [];
  /** Stored values this batch stopped using: their memory is reused once the batch is committed. */
  readonly releases: Buffer[] = [];

  clear(): void {
    this.ends.length = this.pendingPut.length = this.pendingDel.length = this.releases.length = 0;
  }
}

/** Counts of one batch, for the metrics once it is committed. */
export class JoinStats {
  immediate = 0;
  peerArrival = 0;
  sweeper = 0;
  noPeer = 0;
  external = 0;
  noVantage = 0;
  recordsOut = 0;
  /** Event-time waits (s) of records that left the wait: joined, then not. */
  readonly joinedWaits: number[] = [];
  readonly noPeerWaits: number[] = [];

  clear(): void {
    this.immediate = this.peerArrival = this.sweeper = this.noPeer = this.external = this.noVantage = this.recordsOut = 0;
    this.joinedWaits.length = this.noPeerWaits.length = 0;
  }
}

export const ID_SHIFT = 2 ** 20;

const SLOT_MS = 50;
const SLOTS = 1024;

export class PartitionJoin {
  /** Event time (ms): the latest batch time applied. */
  clock = 0;
  private readonly groups = new Map<string, Group>();
  private readonly pendingWheel = new TimingWheel<Pending>(SLOT_MS, SLOTS, (p) => !p.done);
  private readonly endWheel: TimingWheel<End>;
  private livePending = 0;
  private liveEnds = 0;
  private readonly record = new JoinRecord();
  private readonly other = new JoinRecord();
  private readonly splicer = new RecordSplicer();
  private readonly duePending: Pending[] = [];
  private readonly dueEnds: End[] = [];
  private readonly claimed: Pending[] = [];
  private readonly slab = new Slab();
  /** The groups whose records join at once, flat (rows.ts); a cache of `groups`. */
  private readonly rows = new GroupRows();
  /** The hash of the group key of the record being applied, and its row (-1: none). */
  private keyHash = 0;
  private rowAt = -1;

  constructor(readonly settings: JoinSettings) {
    this.endWheel = new TimingWheel<End>(Math.max(SLOT_MS, Math.ceil(settings.metadataTtlMs / SLOTS)), SLOTS, (e) => e.live);
  }

  /** Records waiting for their peer. */
  get pendingCount(): number {
    return this.livePending;
  }

  /** Ends cached. */
  get endCount(): number {
    return this.liveEnds;
  }

  /** Whether a record's wait ends or an end expires by event time `time`. */
  dueBy(time: number): boolean {
    return this.pendingWheel.dueBy(time) || this.endWheel.dueBy(time);
  }

  /**
   * Applies one input batch: the records whose wait ended by `timeMs` leave first, then each of
   * the batch's records meets what waits for it. Output records go to `out` (an open batch),
   * state changes to `delta`, counts to `stats`. `text` is a Buffer over `view.bytes`.
   */
  apply(view: FlowBatchView, text: Buffer, timeMs: number, seq: number, out: FlowBatchWriter, delta: Delta, stats: JoinStats): void {
    const count = view.length;
    if (count >= ID_SHIFT) throw new RangeError(`a batch of ${count} records: at most ${ID_SHIFT - 1}`);
    if (timeMs > this.clock) this.clock = timeMs;
    this.expire(out, delta, stats);
    const r = this.record;
    const joinExternal = this.settings.joinExternal;
    const bytes = view.bytes;
    for (let i = 0; i < count; i++) {
      r.readKeyBytes(bytes, view.recordStart(i), view.recordEnd(i), joinExternal, text);
      if (r.release !== '') {
        this.splicer.unjoined(out, r.record, r.release);
        if (r.release === 'external') stats.external++;
        else stats.noVantage++;
        stats.recordsOut++;
        continue;
      }
      if (this.joinFromRow(r, text, out, stats)) continue;
      r.keyStrings();
      this.arrive(r, seq * ID_SHIFT + i, text, out, delta, stats);
    }
  }

  /** The record joined from its group's row, when arrive would only join it (no state changes). */
  private joinFromRow(r: JoinRecord, text: Buffer, out: FlowBatchWriter, stats: JoinStats): boolean {
    const k = r.groupKey;
    const hash = (this.keyHash = hashBytes(k.buf, 0, k.pos));
    const rows = this.rows;
    const at = (this.rowAt = rows.find(hash, k.buf, k.pos));
    if (at < 0) return false;
    const src = r.vantage === VANTAGE_SRC;
    if (!src && r.name1.pos !== 0) return false;
    const settings = this.settings;
    const peerAt = rows.joinAt(at, src, r.name0.buf, r.name0.pos, text, r.localStart, r.localEnd, this.clock, settings.metadataTtlMs, settings.endRefreshMs);
    if (peerAt < 0) return false;
    const arena = rows.arena;
    this.splicer.joined(out, r, arena, peerAt, peerAt + rows.peerLength, arena);
    stats.immediate++;
    stats.recordsOut++;
    return true;
  }

  private groupOf(key: string): Group {
    let g = this.groups.get(key);
    if (!g) this.groups.set(key, (g = { key, src: undefined, dst0: undefined, dst0Name: '', dstMore: undefined, waitingDst: undefined, ws0: undefined, ws0Name: '', wsMore: undefined }));
    return g;
  }

  private dropIfEmpty(g: Group): void {
    if (!g.src && !g.waitingDst && !g.dst0 && !g.ws0 && (!g.dstMore || g.dstMore.size === 0) && (!g.wsMore || g.wsMore.size === 0)) this.groups.delete(g.key);
  }

  private arrive(r: JoinRecord, id: number, text: Buffer, out: FlowBatchWriter, delta: Delta, stats: JoinStats): void {
    const src = r.vantage === VANTAGE_SRC;
    const g = this.groupOf(r.group);
    const peer = this.freshEnd(src ? dstGet(g, r.conversation0) : g.src);
    // The peer's records waiting for this end: an initiator's end completes every responder
    // record of its group; a responder's end completes the initiator records waiting under its
    // names. Exact keys, no scan.
    const claimed = this.claimed;
    if (src) {
      if (g.waitingDst) {
        this.take(g.waitingDst, claimed);
        g.waitingDst = undefined;
      }
    } else if (g.ws0 || g.wsMore) {
      this.takeNamed(g, r.conversation0, claimed);
      if (r.conversation1) this.takeNamed(g, r.conversation1, claimed);
    }
    const waiting = peer ? undefined : this.wait(g, r, id, text);
    // This node's view of its own end, for the peer's records (now and in later intervals). It
    // is not the end looked up above (an initiator stores its own, looks up a responder's).
    let carried = 0;
    if (src) {
      if (this.storeEnd(g, '', r, text, waiting, delta)) carried |= 1;
    } else {
      if (this.storeEnd(g, r.conversation0, r, text, waiting, delta)) carried |= 1;
      if (r.conversation1 && this.storeEnd(g, r.conversation1, r, text, waiting, delta)) carried |= 2;
    }
    if (waiting) {
      waiting.buf[waiting.at - 1] = carried;
      delta.pendingPut.push(id, waiting.buf, waiting.start, waiting.end);
    } else {
      this.splicer.joined(out, r, peer!.buf, peer!.at, peer!.end, peer!.buf);
      stats.immediate++;
      stats.recordsOut++;
    }
    if (claimed.length === 0) {
      this.rows.keep(g, this.keyHash, r.groupKey.buf, r.groupKey.pos, this.rowAt, waiting !== undefined || carried !== 0);
      return;
    }
    const localStart = r.localStart;
    const localEnd = r.localEnd;
    const o = this.other;
    const localBytes = r.record.bytes;
    for (const p of claimed) {
      o.readForSplice(p.buf, p.at, p.end, p.buf);
      this.splicer.joined(out, o, localBytes, localStart, localEnd, text);
      stats.peerArrival++;
      stats.recordsOut++;
      stats.joinedWaits.push(Math.max(0, this.clock - p.arrivedMs) / 1000);
      this.leave(p, delta);
    }
    claimed.length = 0;
    this.rows.keep(g, this.keyHash, r.groupKey.buf, r.groupKey.pos, this.rowAt, true);
  }

  /** A waiting record leaves (joined or timed out): out of Redis, its carried ends into values of their own. */
  private leave(p: Pending, delta: Delta): void {
    delta.pendingDel.push(p.id);
    this.livePending--;
    if (p.carried0?.live && p.carried0.carrier === p) this.storeOwn(p.carried0, delta);
    if (p.carried1?.live && p.carried1.carrier === p) this.storeOwn(p.carried1, delta);
    p.carried0 = p.carried1 = undefined;
    delta.releases.push(p.buf);
    p.buf = EMPTY;
  }

  /** Gives an end a waiting record carried a Redis value of its own (same bytes, same time). */
  private storeOwn(e: End, delta: Delta): void {
    const header = varintSize(e.storedAt);
    const length = e.end - e.at;
    const start = this.slab.reserve(header + length);
    const buf = this.slab.buf;
    const at = writeVarint(buf, start, e.storedAt);
    e.buf.copy(buf, at, e.at, e.end);
    e.buf = buf;
    e.start = start;
    e.at = at;
    e.end = at + length;
    e.carrier = undefined;
    e.stored = true;
    delta.ends.push(e, buf, start, e.end);
  }

  private takeNamed(g: Group, name: string, into: Pending[]): void {
    const list = wsGet(g, name);
    if (!list) return;
    wsDelete(g, name);
    this.take(list, into);
  }

  private take(list: PendingList, into: Pending[]): void {
    for (const p of list.items) {
      if (p.done) continue;
      p.done = true;
      p.list = undefined;
      into.push(p);
    }
    list.live = 0;
  }

  /** The record waits; its carried-ends byte (just before the record) is filled in by arrive. */
  private wait(g: Group, r: JoinRecord, id: number, text: Buffer): Pending {
    const deadline = this.clock + this.settings.joinWaitMs;
    const arrived = this.clock;
    const rec = r.record;
    const length = rec.end - rec.start;
    const header = varintSize(deadline) + varintSize(arrived) + 1;
    const start = this.slab.reserve(header + length);
    const buf = this.slab.buf;
    const at = writeVarint(buf, writeVarint(buf, start, deadline), arrived) + 1;
    text.copy(buf, at, rec.start, rec.end);
    const p: Pending = { id, deadline, order: id, buf, start, at, end: at + length, arrivedMs: arrived, list: undefined, done: false, carried0: undefined, carried1: undefined };
    this.index(g, p, r);
    this.pendingWheel.add(p);
    this.livePending++;
    return p;
  }

  /** Puts a waiting record under the name its peer looks it up by. */
  private index(g: Group, p: Pending, r: JoinRecord): void {
    let list: PendingList | undefined;
    if (r.vantage === VANTAGE_SRC) {
      list = wsGet(g, r.conversation0);
      if (!list) wsAdd(g, r.conversation0, (list = { group: g, name: r.conversation0, items: [], live: 0 }));
    } else {
      list = g.waitingDst ??= { group: g, name: '', items: [], live: 0 };
    }
    // Left-over entries (timed out) are dropped once they outnumber the live ones.
    if (list.items.length > 32 && list.live * 2 < list.items.length) list.items = list.items.filter((q) => !q.done);
    list.items.push(p);
    list.live++;
    p.list = list;
  }

  /**
   * Stores the record's local end under `name` (unless the same bytes were stored lately);
   * returns whether it did. With `carrier` (the record waits), Redis keeps it inside that
   * record's value; else it gets a value of its own.
   */
  private storeEnd(g: Group, name: string, r: JoinRecord, text: Buffer, carrier: Pending | undefined, delta: Delta): boolean {
    const from = r.localStart;
    const to = r.localEnd;
    const old = name === '' ? g.src : dstGet(g, name);
    const now = this.clock;
    if (old && now - old.storedAt < this.settings.endRefreshMs && sameBytes(old.buf, old.at, old.end, text, from, to)) return false;
    const e = old ?? this.newEnd(g, name);
    if (e.start >= 0) delta.releases.push(e.buf);
    // An end met again keeps its wheel entry: met before its new deadline, it stays for a later turn.
    e.storedAt = now;
    e.deadline = now + this.settings.metadataTtlMs + 1;
    if (!old) this.endWheel.add(e);
    if (carrier) {
      e.buf = carrier.buf;
      e.start = -1;
      e.at = carrier.at + (from - r.record.start);
      e.end = e.at + (to - from);
      e.carrier = carrier;
      if (name === '' || name === r.conversation0) carrier.carried0 = e;
      else carrier.carried1 = e;
      if (e.stored) {
        e.stored = false;
        delta.ends.push(e, undefined, 0, 0);
      }
      return true;
    }
    const header = varintSize(now);
    const start = this.slab.reserve(header + to - from);
    const buf = this.slab.buf;
    const at = writeVarint(buf, start, now);
    text.copy(buf, at, from, to);
    e.buf = buf;
    e.start = start;
    e.at = at;
    e.end = at + to - from;
    e.carrier = undefined;
    e.stored = true;
    delta.ends.push(e, buf, start, e.end);
    return true;
  }

  private newEnd(g: Group, name: string): End {
    const e: End = { group: g, name, buf: EMPTY, start: -1, at: 0, end: 0, storedAt: 0, deadline: 0, order: 0, live: true, carrier: undefined, stored: false };
    if (name === '') g.src = e;
    else dstAdd(g, name, e);
    this.liveEnds++;
    return e;
  }

  private freshEnd(end: End | undefined): End | undefined {
    return end && end.storedAt + this.settings.metadataTtlMs >= this.clock ? end : undefined;
  }

  private peerOf(o: JoinRecord): End | undefined {
    const g = this.groups.get(o.group);
    if (!g) return undefined;
    return this.freshEnd(o.vantage === VANTAGE_SRC ? dstGet(g, o.conversation0) : g.src);
  }

  /** Records whose wait is over leave, joined if their peer's end is known by now; stale ends go. */
  private expire(out: FlowBatchWriter, delta: Delta, stats: JoinStats): void {
    const now = this.clock;
    const o = this.other;
    for (const p of this.pendingWheel.advance(now, this.duePending)) {
      p.done = true;
      const list = p.list;
      p.list = undefined;
      if (list && --list.live === 0) {
        const g = list.group;
        if (list.name === '') g.waitingDst = undefined;
        else wsDelete(g, list.name);
      }
      o.read(p.buf, p.at, p.end, true, p.buf);
      const peer = this.peerOf(o);
      const waited = Math.max(0, now - p.arrivedMs) / 1000;
      if (peer) {
        this.splicer.joined(out, o, peer.buf, peer.at, peer.end, peer.buf);
        stats.sweeper++;
        stats.joinedWaits.push(waited);
      } else {
        this.splicer.unjoined(out, o.record, 'no-peer');
        stats.noPeer++;
        stats.noPeerWaits.push(waited);
      }
      stats.recordsOut++;
      this.leave(p, delta);
      if (list && list.live === 0) this.dropIfEmpty(list.group);
    }
    this.duePending.length = 0;
    for (const e of this.endWheel.advance(now, this.dueEnds)) {
      e.live = false;
      const g = e.group;
      // (A record leaving its wait needs no such drop: a group with a record waiting has no row.)
      this.rows.dropKey(g.key);
      if (e.name === '') g.src = undefined;
      else dstDelete(g, e.name);
      this.liveEnds--;
      if (e.stored) delta.ends.push(e, undefined, 0, 0);
      if (e.start >= 0) delta.releases.push(e.buf);
      this.dropIfEmpty(g);
    }
    this.dueEnds.length = 0;
  }

  /** The batch of `delta` is committed: the values it stopped using may be reused. */
  release(delta: Delta): void {
    for (const buf of delta.releases) this.slab.release(buf);
    delta.releases.length = 0;
  }

  /** Bytes of stored values held in memory (chunks in use or spare), and of the rows' copies. */
  get storedBytes(): number {
    return this.slab.bytes + this.rows.bytes;
  }

  /** Takes an end from Redis (`field` as endField writes it, `value` [varint storedAtMs][Endpoint]); before any apply. */
  loadEnd(field: string, value: Buffer): void {
    const split = field.indexOf('\0');
    if (split < 0 || split + 1 >= field.length) throw new Error(`an end's field in Redis has no name: ${JSON.stringify(field)}`);
    const g = this.groupOf(field.slice(0, split));
    const e = this.newEnd(g, field[split + 1] === 's' ? '' : field.slice(split + 2));
    e.storedAt = readVarint(value, 0);
    e.deadline = e.storedAt + this.settings.metadataTtlMs + 1;
    e.buf = value;
    e.start = 0;
    e.at = varintSize(e.storedAt);
    e.end = value.length;
    e.stored = true;
    this.endWheel.add(e);
  }

  /**
   * Takes a waiting record from Redis (its value as `wait` writes it); in id order, after the
   * ends, before any apply. An end it carries is its group's current one unless the end has a
   * value of its own (stored later) or a later record carries it.
   */
  loadPending(id: number, value: Buffer): void {
    const deadline = readVarint(value, 0);
    let at = varintSize(deadline);
    const arrived = readVarint(value, at);
    at += varintSize(arrived);
    const carried = value[at++]!;
    const r = this.other.read(value, at, value.length, true, value);
    if (r.release !== '') throw new Error(`waiting record ${id} in Redis cannot wait (${r.release})`);
    const g = this.groupOf(r.group);
    const p: Pending = { id, deadline, order: id, buf: value, start: 0, at, end: value.length, arrivedMs: arrived, list: undefined, done: false, carried0: undefined, carried1: undefined };
    this.index(g, p, r);
    this.pendingWheel.add(p);
    this.livePending++;
    if (carried & 1) this.loadCarried(g, r.vantage === VANTAGE_SRC ? '' : r.conversation0, p, r, arrived);
    if (carried & 2) this.loadCarried(g, r.conversation1, p, r, arrived);
  }

  private loadCarried(g: Group, name: string, p: Pending, r: JoinRecord, storedAt: number): void {
    const old = name === '' ? g.src : dstGet(g, name);
    if (old?.stored) return;
    const e = old ?? this.newEnd(g, name);
    e.storedAt = storedAt;
    e.deadline = storedAt + this.settings.metadataTtlMs + 1;
    if (!old) this.endWheel.add(e);
    e.buf = p.buf;
    e.at = p.at + (r.localStart - r.record.start);
    e.end = e.at + (r.localEnd - r.localStart);
    e.carrier = p;
    if (name === '' || name === r.conversation0) p.carried0 = e;
    else p.carried1 = e;
  }
}

/** An end's Redis field as text (latin1 = its bytes): group key, NUL, "s" (initiator) or "d" + responder name. */
export function endField(group: string, name: string): string {
  return `${group}${endTag(name)}${name}`;
}

/** The part of an end's field between its group and its name: a source end or a destination's. */
export function endTag(name: string): string {
  return name === '' ? '\0s' : '\0d';
}

const EMPTY = Buffer.alloc(0);

/** Whether a[aStart, aEnd) and b[bStart, bEnd) hold the same bytes (native compare: no copy, no view). */
function sameBytes(a: Buffer, aStart: number, aEnd: number, b: Buffer, bStart: number, bEnd: number): boolean {
  return aEnd - aStart === bEnd - bStart && a.compare(b, bStart, bEnd, aStart, aEnd) === 0;
}

/** Bytes of the varint of `n` (any integer up to 2^53: times in ms need 6). */
export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Writes `n` as a varint at `at`; returns where it ends. */
export function writeVarint(buf: Uint8Array, at: number, n: number): number {
  while (n >= 128) {
    buf[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at++] = n;
  return at;
}

/** The varint at `at` of a stored join value (written minimal, so it is varintSize(n) long). */
export function readVarint(buf: Uint8Array, at: number): number {
  let result = 0;
  let factor = 1;
  for (;;) {
    if (at >= buf.length) throw new RangeError('truncated varint in a stored join value');
    const b = buf[at++]!;
    result += (b & 0x7f) * factor;
    if (b < 0x80) return result;
    factor *= 128;
  }
}
