// The joiner's Redis side: typed calls of the Lua scripts and of the due-time schedule and sweep
// round index, with every failure surfaced as JoinStoreError (the caller naks its input).
import type { RedisClient } from './redis.js';
import { arriveLua, finalizeLua, sweepClaimLua, takeRoundLua } from './scripts.js';
import { SCHEDULE_SHARDS, groupKeys, parseScheduleMember, scheduleKey, scheduleMember, scheduleShard } from './conversation.js';

/** Redis did not answer or refused a command; state is unchanged or replayable, input stays unacked. */
export class JoinStoreError extends Error {
  override readonly name = 'JoinStoreError';
  constructor(operation: string, options: { cause: unknown }) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(`Redis ${operation} failed: ${why} (check --redis-url, credentials and that Redis is up; input is retried)`, options);
  }
}

export interface StoreSettings {
  joinWaitMs: number;
  metadataTtlMs: number;
  replayWindowMs: number;
  /** How long an input batch's claim on peer records holds before the sweeper may take them. */
  inputLeaseMs: number;
  /** How long a sweep round's claim holds before another replica takes the round over. */
  sweepLeaseMs: number;
}

export interface ClaimedRecord {
  recordKey: string;
  record: Buffer;
  arrivedMs: number;
}

export interface Arrival {
  tag: string;
  recordKey: string;
  vantage: number;
  conversations: string[];
  local: Uint8Array;
  record: Uint8Array;
  owner: string;
}

export type ArrivalOutcome = 'joined' | 'pending' | 'replayed-pending' | 'emit';

export interface ArrivalResult {
  outcome: ArrivalOutcome;
  peer: Buffer | undefined;
  /** When the record waits: its deadline, to (re)schedule it. 0 when it does not wait. */
  deadlineMs: number;
  claimed: ClaimedRecord[];
}

export type SweepClaim =
  | { status: 'claimed'; record: Buffer; peer: Buffer | undefined; arrivedMs: number }
  | { status: 'gone' }
  | { status: 'busy' | 'notdue'; retryAtMs: number };

export const SWEEP_INDEX = 'kappa:{sweeps}';
const roundKey = (roundId: string) => `kappa:{sweeps}:${roundId}`;

type ScriptCall = (...args: (string | number | Buffer | Uint8Array)[]) => Promise<unknown>;

export class JoinStore {
  private readonly scripts: Record<'arrive' | 'finalize' | 'sweepClaim' | 'takeRound', ScriptCall>;

  constructor(
    readonly redis: RedisClient,
    readonly settings: StoreSettings,
  ) {
    redis.defineCommand('kappaArrive', { numberOfKeys: 4, lua: arriveLua });
    redis.defineCommand('kappaFinalize', { numberOfKeys: 3, lua: finalizeLua });
    redis.defineCommand('kappaSweepClaim', { numberOfKeys: 3, lua: sweepClaimLua });
    redis.defineCommand('kappaTakeRound', { numberOfKeys: 1, lua: takeRoundLua });
    const commands = redis as unknown as Record<string, ScriptCall>;
    const bind = (name: string): ScriptCall => {
      const fn = commands[name];
      if (!fn) throw new Error(`ioredis did not define ${name}`);
      return fn.bind(redis);
    };
    this.scripts = {
      arrive: bind('kappaArriveBuffer'),
      finalize: bind('kappaFinalize'),
      sweepClaim: bind('kappaSweepClaimBuffer'),
      takeRound: bind('kappaTakeRound'),
    };
  }

  private async guard<T>(operation: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (cause) {
      throw new JoinStoreError(operation, { cause });
    }
  }

  /** Runs the arrival script for each record (pipelined), in order. */
  async arrive(arrivals: readonly Arrival[], now: number): Promise<ArrivalResult[]> {
    const s = this.settings;
    return this.guard('arrive', () =>
      Promise.all(
        arrivals.map(async (a) => {
          const k = groupKeys(a.tag);
          const reply = (await this.scripts.arrive(
            k.meta, k.rec, k.st, k.seen,
            now, a.recordKey, a.vantage, a.conversations.join('\n'), asBuffer(a.local), asBuffer(a.record),
            s.joinWaitMs, a.owner, s.metadataTtlMs, s.replayWindowMs, s.inputLeaseMs,
          )) as Buffer[];
          return parseArrival(reply);
        }),
      ),
    );
  }

  /** Adds waiting records to the due-time schedule (idempotent). */
  async schedule(entries: readonly { tag: string; recordKey: string; deadlineMs: number }[]): Promise<void> {
    if (entries.length === 0) return;
    // One command each (auto-pipelined): in a Cluster a pipeline must stay in one slot.
    await this.guard('schedule', () =>
      Promise.all(entries.map((e) => this.redis.zadd(scheduleKey(scheduleShard(e.tag)), e.deadlineMs, scheduleMember(e.tag, e.recordKey)))),
    );
  }

  /**
   * After the output is published: deletes the claimed records still held by their owner, marks
   * the owner's own input records finalized, and drops them all from the schedule.
   */
  async finalize(
    groups: ReadonlyMap<string, { claimed: { recordKey: string; owner: string }[]; own: string[] }>,
    now: number,
  ): Promise<void> {
    if (groups.size === 0) return;
    await this.guard('finalize', async () => {
      await Promise.all(
        [...groups].map(([tag, g]) => {
          const k = groupKeys(tag);
          const args: (string | number)[] = [now, this.settings.replayWindowMs, g.claimed.length];
          for (const c of g.claimed) args.push(c.recordKey, c.owner);
          args.push(...g.own);
          return this.scripts.finalize(k.rec, k.st, k.seen, ...args);
        }),
      );
      const unscheduled: Promise<unknown>[] = [];
      for (const [tag, g] of groups) {
        for (const c of g.claimed) unscheduled.push(this.redis.zrem(scheduleKey(scheduleShard(tag)), scheduleMember(tag, c.recordKey)));
      }
      await Promise.all(unscheduled);
    });
  }

  /** Schedule members whose deadline passed, oldest first, from one shard. */
  async due(shard: number, now: number, limit: number): Promise<string[]> {
    return this.guard('due', () => this.redis.zrangebyscore(scheduleKey(shard), '-inf', now, 'LIMIT', 0, limit));
  }

  /** Moves members still in the schedule to a later time (ZADD XX: never re-adds a finalized one). */
  async reschedule(entries: readonly { member: string; atMs: number }[]): Promise<void> {
    if (entries.length === 0) return;
    await this.guard('reschedule', () =>
      Promise.all(entries.map((e) => this.redis.zadd(scheduleKey(scheduleShard(parseScheduleMember(e.member).tag)), 'XX', e.atMs, e.member))),
    );
  }

  async unschedule(members: readonly string[]): Promise<void> {
    if (members.length === 0) return;
    await this.guard('unschedule', () => Promise.all(members.map((m) => this.redis.zrem(scheduleKey(scheduleShard(parseScheduleMember(m).tag)), m))));
  }

  /** Records in the schedule: every record waiting or claimed and not yet finalized. */
  async pendingCount(): Promise<number> {
    return this.guard('pending count', async () => {
      const sizes = await Promise.all(Array.from({ length: SCHEDULE_SHARDS }, (_, shard) => this.redis.zcard(scheduleKey(shard))));
      return sizes.reduce((sum, n) => sum + n, 0);
    });
  }

  async sweepClaim(members: readonly string[], owner: string, now: number): Promise<SweepClaim[]> {
    const s = this.settings;
    return this.guard('sweep claim', () =>
      Promise.all(
        members.map(async (member) => {
          const { tag, recordKey } = parseScheduleMember(member);
          const k = groupKeys(tag);
          const reply = (await this.scripts.sweepClaim(k.meta, k.rec, k.st, now, recordKey, owner, s.sweepLeaseMs, s.metadataTtlMs)) as Buffer[];
          const status = String(reply[0]);
          if (status === 'gone') return { status: 'gone' as const };
          if (status !== 'claimed') return { status: status as 'busy' | 'notdue', retryAtMs: Number(String(reply[1])) };
          const peer = reply[2];
          return {
            status: 'claimed' as const,
            record: reply[1] ?? Buffer.alloc(0),
            peer: peer && peer.length > 0 ? peer : undefined,
            arrivedMs: Number(String(reply[3])),
          };
        }),
      ),
    );
  }

  /** Records a sweep round before it claims anything, so another replica can finish it. */
  async openRound(roundId: string, members: readonly string[], now: number): Promise<void> {
    await this.guard('open sweep round', async () => {
      const tx = this.redis.multi();
      tx.hset(roundKey(roundId), 'members', members.join('\x1e'));
      tx.zadd(SWEEP_INDEX, now + this.settings.sweepLeaseMs, roundId);
      throwFirst(await tx.exec());
    });
  }

  async markRoundPublished(roundId: string): Promise<void> {
    await this.guard('mark sweep round published', () => this.redis.hset(roundKey(roundId), 'published', '1'));
  }

  async closeRound(roundId: string): Promise<void> {
    await this.guard('close sweep round', async () => {
      const tx = this.redis.multi();
      tx.del(roundKey(roundId));
      tx.zrem(SWEEP_INDEX, roundId);
      throwFirst(await tx.exec());
    });
  }

  /** Rounds whose owner's lease ran out (it died mid-round), taken over by this caller. */
  async takeAbandonedRounds(now: number, limit: number): Promise<{ roundId: string; members: string[]; published: boolean }[]> {
    return this.guard('take abandoned rounds', async () => {
      const expired = await this.redis.zrangebyscore(SWEEP_INDEX, '-inf', now, 'LIMIT', 0, limit);
      const taken: { roundId: string; members: string[]; published: boolean }[] = [];
      for (const roundId of expired) {
        const won = Number(await this.scripts.takeRound(SWEEP_INDEX, roundId, now, this.settings.sweepLeaseMs));
        if (won !== 1) continue;
        const round = await this.redis.hgetall(roundKey(roundId));
        const members = round.members ? round.members.split('\x1e') : [];
        taken.push({ roundId, members, published: round.published === '1' });
      }
      return taken;
    });
  }

  async ping(): Promise<void> {
    await this.guard('ping', () => this.redis.ping());
  }
}

function parseArrival(reply: Buffer[]): ArrivalResult {
  const claimed: ClaimedRecord[] = [];
  for (let i = 3; i + 2 < reply.length; i += 3) {
    const key = reply[i];
    const record = reply[i + 1];
    const arrived = reply[i + 2];
    if (key === undefined || record === undefined || arrived === undefined) break;
    claimed.push({ recordKey: key.toString(), record, arrivedMs: Number(arrived.toString()) });
  }
  const peer = reply[1];
  return {
    outcome: String(reply[0]) as ArrivalOutcome,
    peer: peer && peer.length > 0 ? peer : undefined,
    deadlineMs: Number(String(reply[2] ?? '0')),
    claimed,
  };
}

/** ioredis sends Buffers as bytes but stringifies other typed arrays. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function throwFirst(results: [Error | null, unknown][] | null): unknown[] {
  if (!results) throw new Error('transaction aborted');
  for (const [error] of results) if (error) throw error;
  return results.map(([, value]) => value);
}
