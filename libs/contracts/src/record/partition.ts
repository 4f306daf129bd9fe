// The partition of a record: a hash of its conversation group — protocol, the initiator's ip and
// port, and the node and network namespace when the initiator is a loopback address (127.0.0.1
// repeats on every node, and in every pod's namespace of one node).
// That is the group the joiner keys a conversation by, so both vantages of a conversation, and a
// Service client with its DNAT'd backend (same initiator), fall into one partition.
import { EndpointSchema, FlowRecordSchema } from '../gen/kappa/flow/v1/flow_pb.js';
import type { Endpoint, FlowRecord } from '../gen/kappa/flow/v1/flow_pb.js';
import { MessageCursor } from './cursor.js';
import { fieldNumbers } from './wire-schema.js';

const RECORD = fieldNumbers<FlowRecord>(FlowRecordSchema);
const ENDPOINT = fieldNumbers<Endpoint>(EndpointSchema);

/** The cluster-wide default of --partitions. */
export const DEFAULT_PARTITIONS = 16;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const SLASH = 0x2f;
const AT = 0x40;

function fnvByte(hash: number, byte: number): number {
  return Math.imul(hash ^ byte, FNV_PRIME);
}

/** Hashes the decimal digits of an integer as String(value) writes them, without the string. */
function fnvDecimal(hash: number, value: number): number {
  if (value < 0) {
    hash = fnvByte(hash, 0x2d);
    value = -value;
  }
  let div = 1;
  while (div * 10 <= value) div *= 10;
  for (; div >= 1; div /= 10) {
    const digit = Math.floor(value / div) % 10;
    hash = fnvByte(hash, 0x30 + digit);
  }
  return hash;
}

/** murmur3's finaliser: every input bit reaches the low bits the modulo keeps. */
function finish(hash: number, partitions: number): number {
  let h = hash >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) % partitions;
}

function isLoopbackText(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1' || ip.startsWith('::ffff:127.');
}

/**
 * The conversation group's key as the joiner writes it: `<protocol>/<initiator ip>/<initiator
 * port>`, plus `@<node>` and, when known, `/<netns>` (the observed end's network namespace) for a
 * loopback initiator. partitionOf hashes exactly these bytes.
 */
export function conversationGroup(protocol: number, initiatorIp: string, initiatorPort: number, node: string, netns = 0): string {
  const scope = isLoopbackText(initiatorIp) ? `@${node}${netns ? `/${netns}` : ''}` : '';
  return `${protocol}/${initiatorIp}/${initiatorPort}${scope}`;
}

/** The partition (0 … partitions-1) of a conversation group, from its parts as text. */
export function partitionOfGroup(protocol: number, initiatorIp: string, initiatorPort: number, node: string, partitions: number, netns = 0): number {
  const key = Buffer.from(conversationGroup(protocol, initiatorIp, initiatorPort, node, netns), 'utf8');
  let hash = FNV_OFFSET;
  for (let i = 0; i < key.length; i++) hash = fnvByte(hash, key[i]!);
  return finish(hash, partitions);
}

/** The partition of a FlowRecord object (tests, tools, the object-model code). */
export function partitionOfRecord(record: FlowRecord, partitions: number): number {
  return partitionOfGroup(record.protocol, record.src?.ip ?? '', record.src?.port ?? 0, record.node, partitions, observedNetns(record));
}

/** The network namespace of the end the record's node observed (capture sets it there only). */
export function observedNetns(record: FlowRecord): number {
  return record.src?.netns || record.dst?.netns || 0;
}

/**
 * Computes partitions from record bytes: reads protocol, src.ip, src.port and node where they lie
 * and hashes them without building a string. One per stage, reused.
 */
export class Partitioner {
  private readonly src = new MessageCursor(EndpointSchema);
  private readonly dst = new MessageCursor(EndpointSchema);

  constructor(readonly partitions: number = DEFAULT_PARTITIONS) {
    if (!Number.isInteger(partitions) || partitions < 1) throw new RangeError(`partitions must be a positive integer, not ${partitions}`);
  }

  /** The partition of the record under `record` (a FlowRecord cursor). */
  of(record: MessageCursor): number {
    const src = this.src;
    record.message(RECORD.src, src);
    let hash = fnvDecimal(FNV_OFFSET, record.int32(RECORD.protocol));
    hash = fnvByte(hash, SLASH);
    const bytes = record.bytes;
    let loopback = false;
    if (src.has(ENDPOINT.ip)) {
      const start = src.payloadStart(ENDPOINT.ip);
      const end = src.fieldEnd(ENDPOINT.ip);
      for (let i = start; i < end; i++) hash = fnvByte(hash, bytes[i]!);
      loopback = src.startsWithAscii(ENDPOINT.ip, '127.') || src.equalsAscii(ENDPOINT.ip, '::1') || src.startsWithAscii(ENDPOINT.ip, '::ffff:127.');
    }
    hash = fnvByte(hash, SLASH);
    hash = fnvDecimal(hash, src.uint32(ENDPOINT.port));
    if (loopback) {
      hash = fnvByte(hash, AT);
      const start = record.payloadStart(RECORD.node);
      if (start >= 0) {
        const end = record.fieldEnd(RECORD.node);
        for (let i = start; i < end; i++) hash = fnvByte(hash, bytes[i]!);
      }
      let netns = src.uint32(ENDPOINT.netns);
      if (!netns && record.message(RECORD.dst, this.dst)) netns = this.dst.uint32(ENDPOINT.netns);
      if (netns) hash = fnvDecimal(fnvByte(hash, SLASH), netns);
    }
    return finish(hash, this.partitions);
  }
}
