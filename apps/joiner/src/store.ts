// The joiner's durable state in Redis, per partition k, every key under the hash tag {p<k>} (one
// Redis Cluster slot per partition):
//   kappa:{p<k>}:lease            the owner's lease (SET PX): "<instance>#<nonce>"
//   kappa:{p<k>}:fence            HASH epoch, instance: the fencing epoch and who took it last
//   kappa:{p<k>}:e<epoch>:state   HASH applied (stream sequence), clock (event time, ms), stream
//   kappa:{p<k>}:e<epoch>:ends    HASH end field → [varint storedAtMs][Endpoint]
//   kappa:{p<k>}:e<epoch>:pending HASH 8-byte id → [varint deadlineMs][FlowRecord]
// The state lives under its owner's epoch: taking a partition over RENAMEs it to the next epoch
// in one script, so an owner that lost the partition without knowing can only write keys nobody
// reads, and its commit (a MULTI that also reads the fence) tells it so before it acks anything.
// A commit is plain HSET/HDEL (no Lua per record: a script costs Redis ~3× a plain field write).
import { randomBytes } from 'node:crypto';
import type { CommitSet } from './commit.js';
import { readPendingField } from './commit.js';
import type { PartitionJoin } from './partition.js';
import type { RedisClient } from './redis.js';
import { CommitCommands } from './resp.js';

/** Redis did not answer or refused a command; the joiner holds its input and retries. */
export class JoinStoreError extends Error {
  override readonly name = 'JoinStoreError';
  constructor(operation: string, options: { cause: unknown }) {
    const why = options.cause instanceof Error ? options.cause.message : String(options.cause);
    super(`Redis ${operation} failed: ${why} (check --redis-url, credentials and that Redis is up; input is held and retried)`, options);
  }
}

/** Another replica took the partition over: this one must stop, ack nothing more, and drop it. */
export class PartitionFencedError extends Error {
  override readonly name = 'PartitionFencedError';
  constructor(partition: number, epoch: number, current: number) {
    super(`partition ${partition}: epoch ${epoch} was fenced by epoch ${current} (another joiner replica took it over)`);
  }
}

export function partitionKeys(k: number) {
  const tag = `kappa:{p${k}}`;
  return {
    lease: `${tag}:lease`,
    fence: `${tag}:fence`,
    state: (epoch: number) => `${tag}:e${epoch}:state`,
    ends: (epoch: number) => `${tag}:e${epoch}:ends`,
    pending: (epoch: number) => `${tag}:e${epoch}:pending`,
  };
}

export const MEMBERS_KEY = 'kappa:joiners';

/**
 * Takes a free partition. KEYS lease, fence, then state/ends/pending of epochs e-1, e, e+1.
 * ARGV me, instance, e (the epoch the caller read), lease ms, foreign ok (1: may take a partition
 * another instance held last). Returns {status, value}: acquired/epoch, held/pttl, moved/epoch,
 * deferred/last instance.
 */
const acquireLua = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {'held', tostring(redis.call('PTTL', KEYS[1]))} end
local epoch = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
if epoch ~= tonumber(ARGV[3]) then return {'moved', tostring(epoch)} end
local last = redis.call('HGET', KEYS[2], 'instance')
if ARGV[5] ~= '1' and last and last ~= ARGV[2] then return {'deferred', last} end
for i = 3, 5 do redis.call('DEL', KEYS[i]) end
for i = 6, 8 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAME', KEYS[i], KEYS[i + 3]) end
end
redis.call('HSET', KEYS[2], 'epoch', epoch + 1, 'instance', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return {'acquired', tostring(epoch + 1)}
`;

/**
 * Keeps a partition: the lease is set again as long as nobody took a newer epoch, even when it
 * ran out meanwhile (Redis was away), so an owner that kept its state in memory goes on.
 * KEYS lease, fence. ARGV me, epoch, lease ms. Returns 1 (kept) or 0 (lost).
 */
const renewLua = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0') ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`;

/** KEYS lease. ARGV me. Frees the partition if this caller holds it. */
const releaseLua = `
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`;

/**
 * After losing a partition: deletes what this owner may have written under its epoch after the
 * takeover (keys nobody reads). KEYS fence, state, ends, pending of the epoch. ARGV epoch.
 */
const dropLua = `
if tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') ~= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
end
return 1
`;

/**
 * Replicas alive: each one renews its entry; entries whose time ran out (Redis's clock) go.
 * KEYS members. ARGV me, ttl ms (0: leave). Returns the members.
 */
const membersLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] == '0' then redis.call('ZREM', KEYS[1], ARGV[1])
else redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
`;

export type AcquireResult =
  | { status: 'acquired'; epoch: number }
  | { status: 'held'; leaseLeftMs: number }
  | { status: 'deferred'; lastInstance: string };

export interface LoadedState {
  applied: number;
  clock: number;
  /** The JetStream stream (its creation time) the applied sequence counts in; '' when new. */
  stream: string;
  ends: number;
  pending: number;
}

type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

export class PartitionStore {
  /** This process's lease value: the instance name and a nonce, so a restart is a new owner. */
  readonly me: string;
  private readonly scripts: Record<'acquire' | 'renew' | 'release' | 'drop' | 'members', ScriptCall>;
  private readonly commands = new CommitCommands();

  constructor(
    readonly redis: RedisClient,
    readonly instance: string,
  ) {
    this.me = `${instance}#${randomBytes(6).toString('hex')}`;
    redis.defineCommand('kappaAcquire', { numberOfKeys: 11, lua: acquireLua });
    redis.defineCommand('kappaRenew', { numberOfKeys: 2, lua: renewLua });
    redis.defineCommand('kappaRelease', { numberOfKeys: 1, lua: releaseLua });
    redis.defineCommand('kappaDrop', { numberOfKeys: 4, lua: dropLua });
    redis.defineCommand('kappaMembers', { numberOfKeys: 1, lua: membersLua });
    const commands = redis as unknown as Record<string, ScriptCall>;
    const bind = (name: string): ScriptCall => {
      const fn = commands[name];
      if (!fn) throw new Error(`ioredis did not define ${name}`);
      return fn.bind(redis);
    };
    this.scripts = { acquire: bind('kappaAcquire'), renew: bind('kappaRenew'), release: bind('kappaRelease'), drop: bind('kappaDrop'), members: bind('kappaMembers') };
  }

  private async guard<T>(operation: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (cause) {
      if (cause instanceof PartitionFencedError) throw cause;
      throw new JoinStoreError(operation, { cause });
    }
  }

  /** Tries to take partition k; `foreignOk` lets it take one another instance held last. */
  async acquire(k: number, leaseMs: number, foreignOk: boolean): Promise<AcquireResult> {
    const key = partitionKeys(k);
    return this.guard('acquire partition', async () => {
      for (let attempt = 0; attempt < 3; attempt++) {
        const epoch = Number((await this.redis.hget(key.fence, 'epoch')) ?? 0);
        const keys = [key.lease, key.fence];
        for (const e of [epoch - 1, epoch, epoch + 1]) keys.push(key.state(e), key.ends(e), key.pending(e));
        const [status, value] = (await this.scripts.acquire(...keys, this.me, this.instance, epoch, leaseMs, foreignOk ? 1 : 0)) as [string, string];
        if (status === 'acquired') return { status, epoch: Number(value) };
        if (status === 'held') return { status, leaseLeftMs: Number(value) };
        if (status === 'deferred') return { status, lastInstance: value };
        // 'moved': another replica took an epoch between our read and the script; read again.
      }
      return { status: 'held', leaseLeftMs: 0 };
    });
  }

  /** Renews the lease of partition k at `epoch`; false when another replica took it over. */
  async renew(k: number, epoch: number, leaseMs: number): Promise<boolean> {
    const key = partitionKeys(k);
    return this.guard('renew partition lease', async () => Number(await this.scripts.renew(key.lease, key.fence, this.me, epoch, leaseMs)) === 1);
  }

  async release(k: number): Promise<void> {
    await this.guard('release partition', () => this.scripts.release(partitionKeys(k).lease, this.me));
  }

  /** After losing partition k at `epoch`: removes anything written under that epoch after the takeover. */
  async drop(k: number, epoch: number): Promise<void> {
    const key = partitionKeys(k);
    await this.guard('drop partition', () => this.scripts.drop(key.fence, key.state(epoch), key.ends(epoch), key.pending(epoch), epoch));
  }

  /** Registers this replica as alive for `ttlMs` (0: leaves) and returns the replicas alive. */
  async members(ttlMs: number): Promise<string[]> {
    return this.guard('joiner membership', async () => (await this.scripts.members(MEMBERS_KEY, this.me, ttlMs)) as string[]);
  }

  /** Who holds each partition's lease now (null: free). */
  async holders(partitions: number): Promise<(string | null)[]> {
    return this.guard('read leases', () => Promise.all(Array.from({ length: partitions }, (_, k) => this.redis.get(partitionKeys(k).lease))));
  }

  /** Reads partition k's state at `epoch` into `join` (which must be fresh). */
  async load(k: number, epoch: number, join: PartitionJoin): Promise<LoadedState> {
    const key = partitionKeys(k);
    return this.guard('load partition', async () => {
      const state = await this.redis.hgetall(key.state(epoch));
      let ends = 0;
      await this.scan(key.ends(epoch), (field, value) => {
        join.loadEnd(field.toString('latin1'), value);
        ends++;
      });
      const pending: { id: number; value: Buffer }[] = [];
      await this.scan(key.pending(epoch), (field, value) => pending.push({ id: readPendingField(field), value }));
      pending.sort((a, b) => a.id - b.id);
      for (const p of pending) join.loadPending(p.id, p.value);
      const clock = Number(state.clock ?? 0);
      join.clock = clock;
      return { applied: Number(state.applied ?? 0), clock, stream: state.stream ?? '', ends, pending: pending.length };
    });
  }

  private async scan(hash: string, each: (field: Buffer, value: Buffer) => void): Promise<void> {
    let cursor = '0';
    do {
      const [next, items] = await this.redis.hscanBuffer(hash, cursor, 'COUNT', 1000);
      cursor = next.toString();
      for (let i = 0; i + 1 < items.length; i += 2) each(items[i]!, items[i + 1]!);
    } while (cursor !== '0');
  }

  /**
   * Commits partition k at `epoch`: the applied stream sequence, the clock and the net writes of
   * `set`, in one MULTI/EXEC that also reads the fence. Throws PartitionFencedError when another
   * replica took the partition over (the writes then went to keys nobody reads).
   */
  async commit(k: number, epoch: number, applied: number, clock: number, stream: string, set: CommitSet): Promise<void> {
    const key = partitionKeys(k);
    // Built and copied out before the first await: one set of buffers serves every commit.
    const commands = this.commands.build(key.ends(epoch), key.pending(epoch), set);
    const tx = this.redis.multi();
    tx.hget(key.fence, 'epoch');
    tx.hset(key.state(epoch), 'applied', applied, 'clock', clock, 'stream', stream);
    const raw = tx as unknown as { sendCommand(c: unknown): void };
    for (const c of commands) raw.sendCommand(c);
    await this.guard('commit', async () => {
      const results = await tx.exec();
      if (!results) throw new Error('transaction aborted');
      for (const [error] of results) if (error) throw error;
      const current = Number(results[0]?.[1] ?? 0);
      if (current !== epoch) throw new PartitionFencedError(k, epoch, current);
    });
  }
}
