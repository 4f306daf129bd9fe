// Three changes to how nats.js (3.x) moves bytes, installed once per process by connectBus: the
// copies and throwaway objects it makes per message were most of a stage's cost outside its
// transform. The ArrayBuffers a message goes through are memory outside V8's heap that V8 frees
// only by collecting garbage, so every byte copied is also garbage-collector time: in the
// pipeline bench (Node 24) a stage spent ~30 % of its CPU in the collector, mostly full
// mark-compacts started by that outside memory, not by the heap.
//
// - Receive: a message that continues past the socket read it started in was gathered in a
//   buffer that doubled as it filled (a 122 KB batch allocated ~3x its size and was copied 2-3
//   times); it now gets one buffer of its announced size when it is first seen incomplete. That
//   buffer comes from a pool and goes back to it when its last reader says so (releasePayload: the
//   stage runner, once a batch is settled), so a running stage receives into the same few buffers
//   instead of a new zero-filled one per message: no page faults on fresh memory and no outside
//   memory that starts mark-compacts.
// - Publish: everything queued was packed into one new buffer before the socket write (one copy
//   of every payload); a flush of 64 KiB or more is now written as it is, one gathered write.
//   The payload is then read by the socket after publish() returns: a caller must not change it
//   before the server confirmed it (every kappa publish awaits its PubAck before reusing a buffer).
// - Requests (every publish awaiting its PubAck, every confirmed ack) built a RequestError, a stack
//   capture, when they were answered, only to reject a promise that had already resolved.
//
// Each change checks that the internals it uses are there and leaves nats.js as it is otherwise.
import type { Socket } from 'node:net';
import { Parser, ProtocolHandler, RequestOne, State } from '@nats-io/nats-core/internal';
import type { DataBuffer, Transport } from '@nats-io/nats-core/internal';

/** What the flush uses of a ProtocolHandler (flushPending is private in its types). */
interface Flushing {
  flushPending(): void;
  readonly outbound: DataBuffer;
  readonly transport: Transport & { socket?: Socket };
  readonly infoReceived: boolean;
  readonly connected: boolean;
}

/** A flush at least this large is written without packing it first; smaller ones are cheaper packed. */
export const GATHER_WRITE_BYTES = 64 * 1024;

let installed: { gather: boolean; wholePayload: boolean; quietAnswers: boolean } | undefined;

/** The smallest pooled payload buffer: 2^16 bytes (a message this small rarely spans reads). */
const MIN_POOL_CLASS = 16;
/** Buffers kept per size class: a stage holds maxInFlight batches plus the few nats.js buffered. */
export const POOLED_PER_CLASS = 8;
/** Payload buffers lent to messages and not handed back yet (only these may be taken back). */
const lent = new WeakSet<ArrayBuffer>();
/** Buffers handed back, by size class (2^class bytes). */
const pool: ArrayBuffer[][] = [];

function sizeClass(bytes: number): number {
  return Math.max(MIN_POOL_CLASS, 32 - Math.clz32(bytes - 1));
}

/** A buffer of at least `bytes` for one message's payload, from the pool when it has one. */
function lendPayloadBuffer(bytes: number): Uint8Array {
  const cls = sizeClass(bytes);
  const buffer = pool[cls]?.pop() ?? new ArrayBuffer(2 ** cls);
  lent.add(buffer);
  return new Uint8Array(buffer);
}

/**
 * Hands a received message's payload back for the next message to be received into. Only for a
 * caller that knows nothing reads these bytes any more: not the message, not a view of it, not a
 * publish of them still queued. Bytes of a message that fit one socket read (not lent) are ignored.
 */
export function releasePayload(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (!(buffer instanceof ArrayBuffer) || !lent.delete(buffer)) return;
  const free = (pool[sizeClass(buffer.byteLength)] ??= []);
  if (free.length < POOLED_PER_CLASS) free.push(buffer);
}

/** Buffers in the pool now (tests). */
export function pooledPayloadBuffers(): number {
  return pool.reduce((n, free) => n + free.length, 0);
}

/** Installs the changes (idempotent); returns which ones took (false: nats.js's internals differ). */
export function installNatsCopies(): { gather: boolean; wholePayload: boolean; quietAnswers: boolean } {
  installed ??= { wholePayload: wholePayloadBuffer(), gather: gatheredWrites(), quietAnswers: quietAnsweredRequests() };
  return installed;
}

/**
 * A partial message's buffer sized once to the message (Parser.parse leaves it in msgBuf), lent
 * from the pool: the parser's DenoBuffer reslices within the ArrayBuffer it is given (its capacity
 * is the ArrayBuffer's length) and hands over exactly the message's bytes.
 */
function wholePayloadBuffer(): boolean {
  const proto = Parser.prototype as Parser & { parse: (buf: Uint8Array) => void };
  if (typeof proto.parse !== 'function' || typeof State.MSG_PAYLOAD !== 'number') return false;
  const stockParse = proto.parse;
  proto.parse = function parse(this: Parser, buf: Uint8Array): void {
    stockParse.call(this, buf);
    const partial = this.msgBuf;
    if (this.state !== State.MSG_PAYLOAD || partial === undefined || partial.capacity >= this.ma.size) return;
    // The parser copies the rest in with write(), which then only reslices (no growth, no copy).
    const whole = lendPayloadBuffer(this.ma.size);
    const received = partial.bytes({ copy: false });
    whole.set(received);
    partial._buf = whole.subarray(0, received.length);
    partial._off = 0;
  };
  return true;
}

/** Large flushes written as their parts (socket writev) instead of packed into one new buffer. */
function gatheredWrites(): boolean {
  const proto = ProtocolHandler.prototype as unknown as Flushing;
  if (typeof proto.flushPending !== 'function') return false;
  const stockFlush = proto.flushPending;
  proto.flushPending = function flushPending(this: Flushing): void {
    const outbound = this.outbound;
    const socket = this.transport.socket;
    if (!this.infoReceived || !this.connected || outbound.size() < GATHER_WRITE_BYTES || outbound.length() < 2 || this.transport.isClosed || socket === undefined || typeof socket.cork !== 'function') {
      stockFlush.call(this);
      return;
    }
    // As the stock flush: write errors surface on the socket (the transport's error and close
    // handlers), and a connection that is down keeps its outbound for the reconnect (above).
    socket.cork();
    for (const part of outbound.buffers) socket.write(part);
    socket.uncork();
    outbound.reset();
  };
  return true;
}

/** No RequestError built to reject an answered request's promise (a no-op). */
function quietAnsweredRequests(): boolean {
  const proto = RequestOne.prototype as RequestOne & { answered?: boolean };
  if (typeof proto.resolver !== 'function' || typeof proto.cancel !== 'function') return false;
  const stockResolver = proto.resolver;
  const stockCancel = proto.cancel;
  proto.resolver = function resolver(this: RequestOne & { answered?: boolean }, err, msg) {
    this.answered = true;
    stockResolver.call(this, err, msg);
  };
  proto.cancel = function cancel(this: RequestOne & { answered?: boolean }, err?: Error) {
    if (err !== undefined || this.answered !== true) {
      stockCancel.call(this, err);
      return;
    }
    // Answered: its promise is settled; what is left is the timer and the mux entry.
    this.timer.cancel();
    this.mux.cancel(this);
  };
  return true;
}
