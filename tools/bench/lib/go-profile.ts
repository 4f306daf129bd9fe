// A Go CPU profile (pprof's gzipped protobuf, from a nats-server's `--profile <port>` endpoint
// /debug/pprof/profile) read without Go's tools: the CPU time by kappa-level group (where in
// nats-server a stack runs: storing, acks, consumer state files…) and the top functions. The
// message layout is pprof's profile.proto (Profile, Sample, Location, Line, Function).
import { gunzipSync } from 'node:zlib';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';

interface Sample {
  locations: number[];
  values: number[];
}

/** One stack per sample, leaf first, as function names; the CPU nanoseconds it stands for. */
export interface GoStack {
  frames: string[];
  ns: number;
}

function packed(reader: BinaryReader, wireType: WireType, into: number[]): void {
  if (wireType !== WireType.LengthDelimited) {
    into.push(Number(reader.int64()));
    return;
  }
  const end = reader.uint32() + reader.pos;
  while (reader.pos < end) into.push(Number(reader.int64()));
}

/** Reads a profile as served by /debug/pprof/profile (gzipped or not). */
export function readGoProfile(bytes: Uint8Array): GoStack[] {
  const data = bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes;
  const reader = new BinaryReader(data);
  const strings: string[] = [];
  const samples: Sample[] = [];
  const locations = new Map<number, number[]>();
  const functionNames = new Map<number, number>();
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 2) {
      const end = reader.uint32() + reader.pos;
      const sample: Sample = { locations: [], values: [] };
      while (reader.pos < end) {
        const [f, w] = reader.tag();
        if (f === 1) packed(reader, w, sample.locations);
        else if (f === 2) packed(reader, w, sample.values);
        else reader.skip(w);
      }
      samples.push(sample);
    } else if (field === 4) {
      const end = reader.uint32() + reader.pos;
      let id = 0;
      const functions: number[] = [];
      while (reader.pos < end) {
        const [f, w] = reader.tag();
        if (f === 1) id = Number(reader.uint64());
        else if (f === 4) {
          const lineEnd = reader.uint32() + reader.pos;
          while (reader.pos < lineEnd) {
            const [g, w2] = reader.tag();
            if (g === 1) functions.push(Number(reader.uint64()));
            else reader.skip(w2);
          }
        } else reader.skip(w);
      }
      locations.set(id, functions);
    } else if (field === 5) {
      const end = reader.uint32() + reader.pos;
      let id = 0;
      let name = 0;
      while (reader.pos < end) {
        const [f, w] = reader.tag();
        if (f === 1) id = Number(reader.uint64());
        else if (f === 2) name = Number(reader.int64());
        else reader.skip(w);
      }
      functionNames.set(id, name);
    } else if (field === 6) strings.push(reader.string());
    else reader.skip(wireType);
  }
  const short = (name: string) => name.replace('github.com/nats-io/nats-server/v2/server.', '').replace('github.com/nats-io/nats-server/server.', '');
  // A CPU profile's values are [samples, cpu nanoseconds].
  return samples.map((s) => ({
    frames: s.locations.flatMap((id) => locations.get(id) ?? []).map((fn) => short(strings[functionNames.get(fn) ?? 0] ?? '?')),
    ns: s.values[1] ?? s.values[0] ?? 0,
  }));
}

/**
 * Where nats-server's CPU goes, by what a stack is doing: the first group whose pattern matches a
 * frame (leaf to root), in this order; the rest is "other".
 */
export const NATS_GROUPS: readonly { name: string; frame: RegExp }[] = [
  { name: 'consumer state files (each consumer rewrites its state file, ≤ 10 times a second)', frame: /^\(\*consumerFileStore\)\.(writeState|flushLoop)$/ },
  { name: 'message removal on ack: block compaction (rewrites a block\'s live messages)', frame: /^\(\*msgBlock\)\.compact/ },
  { name: 'message removal on ack: the rest', frame: /^\(\*fileStore\)\.(removeMsg|RemoveMsg)/ },
  { name: 'storing published messages (block write)', frame: /^\(\*fileStore\)\.(storeRawMsg|StoreMsg)$/ },
  { name: 'stream: dedupe, acks to publishers, other', frame: /^\(\*stream\)\.(processJetStreamMsg|internalLoop)/ },
  { name: 'acks from consumers: the rest', frame: /^\(\*consumer\)\.(processInboundAcks|processAck)/ },
  { name: 'finding and reading the next message for a pull', frame: /^\(\*consumer\)\.(getNextMsg|processWaiting|processNextMsgRequest|loopAndGatherMsgs)/ },
  { name: 'reading published messages (parse, copy to the stream\'s queue)', frame: /^\(\*client\)\.(parse|readLoop)$/ },
  { name: 'writing to clients (deliveries, replies)', frame: /^\(\*client\)\.(flushOutbound|writeLoop|flushClients)$/ },
  { name: 'JetStream API (info requests, consumer updates)', frame: /^\(\*Server\)\.(jsStreamInfoRequest|jsConsumerInfoRequest|processJSAPIRoutedRequests|jsConsumerCreateRequest)/ },
  { name: 'Go runtime: garbage collection', frame: /^runtime\.(gcBgMarkWorker|gcDrain|bgsweep|bgscavenge)/ },
  { name: 'Go runtime: scheduler and timers', frame: /^runtime\.(schedule|findRunnable|park_m|mcall|sysmon)$/ },
];

/** Nanoseconds by group (NATS_GROUPS' order, then "other"), and the total. */
export function groupStacks(stacks: readonly GoStack[], groups = NATS_GROUPS): { groups: Map<string, number>; total: number } {
  const byGroup = new Map<string, number>([...groups.map((g) => [g.name, 0] as [string, number]), ['other', 0]]);
  let total = 0;
  for (const stack of stacks) {
    total += stack.ns;
    const group = groups.find((g) => stack.frames.some((frame) => g.frame.test(frame)));
    const name = group?.name ?? 'other';
    byGroup.set(name, byGroup.get(name)! + stack.ns);
  }
  return { groups: byGroup, total };
}

/** Functions by inclusive time (each once per stack that holds it), highest first. */
export function inclusiveTop(stacks: readonly GoStack[], count: number): [string, number][] {
  const inclusive = new Map<string, number>();
  for (const stack of stacks) for (const frame of new Set(stack.frames)) inclusive.set(frame, (inclusive.get(frame) ?? 0) + stack.ns);
  return [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, count);
}
