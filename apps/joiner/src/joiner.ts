// The join itself: each tagged batch goes through Redis (arrive → publish → finalize) and comes
// out on kappa.flow.joined; a sweeper releases what waited too long. Protocol: README.md.
//
// Exactly-once without a transaction across Redis and JetStream:
//   * Input path. A record arriving either joins at once (its peer's end is cached), or waits as
//     a pending record in Redis. Arriving, it CLAIMS the peer's pending records for its input
//     batch (owner = output batch id + record key); they stay in Redis. Then the output is
//     published with Nats-Msg-Id derived from the input batch, then the claimed records are
//     deleted (finalize), then the input is acked. A crash anywhere before the ack redelivers the
//     input; the arrival script remembers each record's outcome (seen-set) and hands back exactly
//     what the same owner claimed before, so the republished batch has the same id and the same
//     records, and JetStream drops it if the first attempt got through.
//   * Sweep path. A round writes its member list under a round id (with a lease) BEFORE it
//     claims; it publishes with Nats-Msg-Id = round id, marks the round published, finalizes,
//     and closes the round. A replica that finds a round whose lease ran out takes it over and
//     replays it under the same id: it publishes only if the round was not marked published.
//   * Both paths claim in the same per-conversation Lua scripts, so a pending record is claimed
//     by one owner only; a sweep never takes another live claim, nor another round's claim.
import { Vantage, newFlowBatch, partitionOfRecord } from '@kappa/contracts';
import type { FlowBatch, FlowRecord } from '@kappa/contracts';
import { subjects } from '@kappa/bus';
import type { Logger } from '@kappa/observability';
import { conversationPlace, parseScheduleMember, remoteIsExternal, SCHEDULE_SHARDS } from './conversation.js';
import type { ConversationPlace } from './conversation.js';
import { decodeEndpoint, decodeRecord, encodeEndpoint, encodeRecord, joinedRecord, unjoinedRecord } from './merge.js';
import type { JoinerMetrics } from './metrics.js';
import { JoinStoreError } from './store.js';
import type { Arrival, JoinStore } from './store.js';

/** Where output goes; the bus in production (Nats-Msg-Id = batchId). */
export interface JoinedPublisher {
  publishBatch(subject: string, batch: FlowBatch): Promise<void>;
}

/** Points between the steps of the protocol, where crash tests kill the process. */
export type CrashPoint = 'input-claimed' | 'input-published' | 'sweep-claimed' | 'sweep-published';
export type CrashHook = (point: CrashPoint) => void;

/**
 * Publishes records on kappa.flow.joined.p<k>: all on `partition` when the input said which, or
 * grouped by each record's own partition (sweep rounds, which span partitions), ids `<id>:p<k>`.
 */
async function publishJoined(publisher: JoinedPublisher, id: string, producer: string, createdNs: bigint, records: FlowRecord[], partition: number | undefined, partitions: number): Promise<void> {
  if (partition !== undefined) {
    await publisher.publishBatch(subjects.joined(partition), newFlowBatch({ batchId: id, producer, createdNs, records }));
    return;
  }
  const byPartition = new Map<number, FlowRecord[]>();
  for (const record of records) {
    const k = partitionOfRecord(record, partitions);
    let list = byPartition.get(k);
    if (!list) byPartition.set(k, (list = []));
    list.push(record);
  }
  await Promise.all([...byPartition].map(([k, list]) => publisher.publishBatch(subjects.joined(k), newFlowBatch({ batchId: `${id}:p${k}`, producer, createdNs, records: list }))));
}

export interface JoinerSettings {
  instance: string;
  /** The cluster-wide partition count (outputs of sweep rounds go to each record's partition). */
  partitions: number;
  crashHook?: CrashHook | undefined;
  /** Wait for a peer even when the tagger says the remote end is outside the cluster. */
  joinExternal: boolean;
}

/** Input records per output part: part membership depends on the input only, never on sizes. */
export const OUTPUT_PART_RECORDS = 128;

type FinalizeGroups = Map<string, { claimed: { recordKey: string; owner: string }[]; own: string[] }>;

function groupOf(groups: FinalizeGroups, tag: string) {
  let g = groups.get(tag);
  if (!g) groups.set(tag, (g = { claimed: [], own: [] }));
  return g;
}

export class JoinProcessor {
  recordsIn = 0;
  recordsOut = 0;

  constructor(
    private readonly store: JoinStore,
    private readonly publisher: JoinedPublisher,
    private readonly metrics: JoinerMetrics,
    private readonly settings: JoinerSettings,
    private readonly onRedis: (ok: boolean, error?: JoinStoreError) => void,
  ) {}

  /**
   * Handles one input batch of partition `partition`; resolves once its output is published on
   * kappa.flow.joined.p<partition> and its state finalized.
   */
  async handleBatch(batch: FlowBatch, partition?: number): Promise<void> {
    const now = Date.now();
    const outputId = `joiner:${batch.batchId}`;
    const records = batch.records;
    this.metrics.recordsIn.inc(records.length);
    this.recordsIn += records.length;

    const places: (ConversationPlace | undefined)[] = [];
    const immediate: (FlowRecord | undefined)[] = [];
    const arrivals: Arrival[] = [];
    const arrivalOf: number[] = [];
    for (const [i, record] of records.entries()) {
      const place = conversationPlace(record);
      if (typeof place === 'string') {
        immediate[i] = unjoinedRecord(record, place);
        this.metrics.releasedUnjoined.inc({ reason: place });
        continue;
      }
      if (!this.settings.joinExternal && remoteIsExternal(place)) {
        immediate[i] = unjoinedRecord(record, 'external');
        this.metrics.releasedUnjoined.inc({ reason: 'external' });
        continue;
      }
      places[i] = place;
      arrivalOf[i] = arrivals.length;
      arrivals.push({
        tag: place.tag,
        recordKey: place.recordKey,
        vantage: record.vantage === Vantage.SRC ? 1 : 2,
        conversations: place.conversations,
        local: encodeEndpoint(place.local),
        record: encodeRecord(record),
        owner: `${outputId}\x1f${place.recordKey}`,
      });
    }

    const results = await this.redis(() => this.store.arrive(arrivals, now));
    this.settings.crashHook?.('input-claimed');
    const parts: FlowRecord[][] = [];
    const toSchedule: { tag: string; recordKey: string; deadlineMs: number }[] = [];
    const groups: FinalizeGroups = new Map();
    for (const [i, record] of records.entries()) {
      const part = (parts[Math.floor(i / OUTPUT_PART_RECORDS)] ??= []);
      const done = immediate[i];
      if (done) {
        part.push(done);
        continue;
      }
      const place = places[i];
      const result = results[arrivalOf[i] ?? -1];
      if (!place || !result) continue;
      switch (result.outcome) {
        case 'joined':
        case 'emit':
          if (result.peer) {
            part.push(joinedRecord(record, decodeEndpoint(result.peer)));
            this.metrics.joined.inc({ path: 'immediate' });
          } else {
            part.push(unjoinedRecord(record, 'no-peer'));
            this.metrics.releasedUnjoined.inc({ reason: 'no-peer' });
          }
          groupOf(groups, place.tag).own.push(place.recordKey);
          break;
        case 'pending':
        case 'replayed-pending':
          if (result.deadlineMs > 0) toSchedule.push({ tag: place.tag, recordKey: place.recordKey, deadlineMs: result.deadlineMs });
          break;
      }
      const owner = `${outputId}\x1f${place.recordKey}`;
      for (const claimed of result.claimed) {
        part.push(joinedRecord(decodeRecord(claimed.record), place.local));
        this.metrics.joined.inc({ path: 'peer-arrival' });
        this.metrics.joinWait.observe({ result: 'joined' }, Math.max(0, now - claimed.arrivedMs) / 1000);
        groupOf(groups, place.tag).claimed.push({ recordKey: claimed.recordKey, owner });
      }
    }

    await this.redis(() => this.store.schedule(toSchedule));
    let published = 0;
    for (const [j, part] of parts.entries()) {
      if (!part || part.length === 0) continue;
      await publishJoined(this.publisher, parts.length === 1 ? outputId : `${outputId}#${j}`, this.settings.instance, batch.createdNs, part, partition, this.settings.partitions);
      published += part.length;
    }
    this.settings.crashHook?.('input-published');
    await this.redis(() => this.store.finalize(groups, Date.now()));
    this.metrics.recordsOut.inc(published);
    this.recordsOut += published;
  }

  private async redis<T>(run: () => Promise<T>): Promise<T> {
    try {
      const value = await run();
      this.onRedis(true);
      return value;
    } catch (error) {
      if (error instanceof JoinStoreError) this.onRedis(false, error);
      throw error;
    }
  }
}

export interface SweeperSettings {
  instance: string;
  partitions: number;
  crashHook?: CrashHook | undefined;
  /** Most records in one sweep round (one output batch, well under max_payload). */
  roundSize: number;
}

/** Releases records whose peer never came, and finishes rounds of replicas that died mid-round. */
export class Sweeper {
  private seq = 0;
  private readonly startedMs = Date.now();
  recordsOut = 0;

  constructor(
    private readonly store: JoinStore,
    private readonly publisher: JoinedPublisher,
    private readonly metrics: JoinerMetrics,
    private readonly settings: SweeperSettings,
    private readonly logger: Logger,
  ) {}

  /** One pass: abandoned rounds first, then every schedule shard. Returns records published. */
  async sweepOnce(): Promise<number> {
    let released = 0;
    for (const round of await this.store.takeAbandonedRounds(Date.now(), 16)) {
      this.logger.warn({ round: round.roundId, members: round.members.length, published: round.published }, 'taking over an abandoned sweep round');
      released += await this.runRound(round.roundId, round.members, round.published);
    }
    for (let shard = 0; shard < SCHEDULE_SHARDS; shard++) {
      for (;;) {
        const now = Date.now();
        const members = await this.store.due(shard, now, this.settings.roundSize);
        if (members.length === 0) break;
        const roundId = `joiner:sweep:${this.settings.instance}:${this.startedMs}:${this.seq++}`;
        await this.store.openRound(roundId, members, now);
        const out = await this.runRound(roundId, members, false);
        released += out;
        // Only busy or early members left at the front: they were moved later; next pass.
        if (members.length < this.settings.roundSize) break;
      }
    }
    this.metrics.pending.set(await this.store.pendingCount());
    return released;
  }

  private async runRound(roundId: string, members: readonly string[], alreadyPublished: boolean): Promise<number> {
    const now = Date.now();
    const claims = await this.store.sweepClaim(members, roundId, now);
    if (claims.some((c) => c.status === 'claimed')) this.settings.crashHook?.('sweep-claimed');
    const records: FlowRecord[] = [];
    const groups: FinalizeGroups = new Map();
    const gone: string[] = [];
    const later: { member: string; atMs: number }[] = [];
    const waits: { result: string; seconds: number }[] = [];
    for (const [i, claim] of claims.entries()) {
      const member = members[i] ?? '';
      if (claim.status === 'gone') {
        gone.push(member);
        continue;
      }
      if (claim.status !== 'claimed') {
        later.push({ member, atMs: Math.max(claim.retryAtMs, now + 100) });
        continue;
      }
      const { tag, recordKey } = parseScheduleMember(member);
      const record = decodeRecord(claim.record);
      if (claim.peer) {
        records.push(joinedRecord(record, decodeEndpoint(claim.peer)));
        waits.push({ result: 'joined', seconds: (now - claim.arrivedMs) / 1000 });
      } else {
        records.push(unjoinedRecord(record, 'no-peer'));
        waits.push({ result: 'no-peer', seconds: (now - claim.arrivedMs) / 1000 });
      }
      groupOf(groups, tag).claimed.push({ recordKey, owner: roundId });
    }
    if (records.length > 0 && !alreadyPublished) {
      await publishJoined(this.publisher, roundId, this.settings.instance, 0n, records, undefined, this.settings.partitions);
      this.settings.crashHook?.('sweep-published');
      await this.store.markRoundPublished(roundId);
      for (const r of records) {
        if (r.joined) this.metrics.joined.inc({ path: 'sweeper' });
        else this.metrics.releasedUnjoined.inc({ reason: 'no-peer' });
      }
      for (const w of waits) this.metrics.joinWait.observe({ result: w.result }, Math.max(0, w.seconds));
      this.metrics.recordsOut.inc(records.length);
      this.recordsOut += records.length;
    }
    await this.store.finalize(groups, Date.now());
    await this.store.unschedule(gone);
    await this.store.reschedule(later);
    await this.store.closeRound(roundId);
    return alreadyPublished ? 0 : records.length;
  }
}
