// The joiner replica: which partitions it owns (leases in Redis, balanced over the replicas
// alive), one PartitionOwner per owned partition, clock ticks for idle ones, and what the
// metrics and readiness say. Protocol and reasons: README.md.
import type { Logger } from '@kappa/observability';
import type { JoinerMetrics } from './metrics.js';
import { PartitionOwner } from './owner.js';
import type { JoinerBus, OwnerEvents, OwnerSettings } from './owner.js';
import type { JoinStats } from './partition.js';
import type { PartitionStore } from './store.js';

export interface JoinerSettings extends OwnerSettings {
  /** Partitions of the flow subjects, cluster-wide. */
  partitions: number;
  /** A lease not renewed for this long ends; another replica then takes the partition. */
  leaseMs: number;
  /** How often leases are renewed and free partitions looked for. */
  loopMs: number;
  /** Each committed batch: records in and out (the heartbeat's counts), and whether it was input (not a DLQ entry or a clock tick). */
  counted?: ((recordsIn: number, recordsOut: number, input: boolean) => void) | undefined;
}

export class Joiner {
  recordsIn = 0;
  recordsOut = 0;
  private readonly owners = new Map<number, PartitionOwner>();
  private readonly busy = new Set<number>();
  /** Partitions seen without a lease by the previous loop (taken even beyond this replica's share). */
  private freeBefore = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private looping: Promise<void> = Promise.resolve();
  private stopped = false;
  private redisOk = true;
  private redisUpSince = Date.now();
  private lastRedisLog = 0;
  private readonly order: number[];
  private rounds = 0;

  constructor(
    private readonly store: PartitionStore,
    private readonly bus: JoinerBus,
    private readonly settings: JoinerSettings,
    private readonly metrics: JoinerMetrics,
    private readonly logger: Logger,
  ) {
    // Rendezvous order: each replica prefers different partitions, so they rarely race for one.
    this.order = Array.from({ length: settings.partitions }, (_, k) => k).sort((a, b) => score(settings.instance, a) - score(settings.instance, b));
  }

  /** Partitions owned now. */
  get owned(): number[] {
    return [...this.owners.keys()].sort((a, b) => a - b);
  }

  ready(): boolean {
    return !this.stopped && this.redisOk;
  }

  /** Input waiting in JetStream for the partitions owned (the heartbeat's lag). */
  get lag(): number {
    let n = 0;
    for (const o of this.owners.values()) n += o.lag;
    return n;
  }

  get pendingCount(): number {
    let n = 0;
    for (const o of this.owners.values()) n += o.pendingCount;
    return n;
  }

  start(): void {
    const run = () => {
      this.looping = this.looping.then(() => this.loop()).catch((error: unknown) => this.logger.error({ err: error }, 'joiner lease loop failed; retrying'));
    };
    run();
    this.timer = setInterval(run, this.settings.loopMs);
  }

  private readonly events: OwnerEvents = {
    committed: (_partition: number, stats: JoinStats, recordsIn: number, input: boolean) => {
      const m = this.metrics;
      this.recordsIn += recordsIn;
      this.recordsOut += stats.recordsOut;
      m.recordsIn.inc(recordsIn);
      m.recordsOut.inc(stats.recordsOut);
      this.settings.counted?.(recordsIn, stats.recordsOut, input);
      if (stats.immediate) m.joined.inc({ path: 'immediate' }, stats.immediate);
      if (stats.peerArrival) m.joined.inc({ path: 'peer-arrival' }, stats.peerArrival);
      if (stats.sweeper) m.joined.inc({ path: 'sweeper' }, stats.sweeper);
      if (stats.noPeer) m.releasedUnjoined.inc({ reason: 'no-peer' }, stats.noPeer);
      if (stats.external) m.releasedUnjoined.inc({ reason: 'external' }, stats.external);
      if (stats.noVantage) m.releasedUnjoined.inc({ reason: 'no-vantage' }, stats.noVantage);
      for (const s of stats.joinedWaits) m.joinWait.observe({ result: 'joined' }, s);
      for (const s of stats.noPeerWaits) m.joinWait.observe({ result: 'no-peer' }, s);
    },
    redis: (ok: boolean, error?: unknown) => this.redis(ok, error),
    lost: (partition: number, why: string) => void this.lose(partition, why),
  };

  /** The Redis connection dropped: hold input at once (a commit would fail; nothing runs ahead of it). */
  redisLost(error?: unknown): void {
    if (this.stopped) return;
    this.redis(false, error ?? new Error('Redis connection closed failed: the connection closed'));
  }

  private redis(ok: boolean, error?: unknown): void {
    this.metrics.redisUp.set(ok ? 1 : 0);
    if (ok) {
      if (!this.redisOk) {
        this.redisOk = true;
        this.redisUpSince = Date.now();
        this.logger.info('Redis reachable again; partitions carry on');
        for (const o of this.owners.values()) o.resume();
      }
      return;
    }
    const operation = error instanceof Error ? (/^Redis (.*?) failed/.exec(error.message)?.[1] ?? 'unknown') : 'unknown';
    this.metrics.redisErrors.inc({ operation });
    if (this.redisOk) for (const o of this.owners.values()) o.pause();
    this.redisOk = false;
    if (Date.now() - this.lastRedisLog > 5000) {
      this.lastRedisLog = Date.now();
      this.logger.error({ err: error }, 'Redis unavailable: input stays unacked in JetStream and is retried');
    }
  }

  /** One round: membership and renewals, then taking or giving partitions, then clock ticks. */
  private async loop(): Promise<void> {
    if (this.stopped) return;
    const s = this.settings;
    let members: string[];
    let holders: (string | null)[];
    try {
      members = await this.store.members(s.leaseMs);
      for (const [k, owner] of this.owners) {
        const renewing = Date.now();
        if (!(await this.store.renew(k, owner.epoch, s.leaseMs))) {
          await this.lose(k, 'its lease was taken over by another replica');
          continue;
        }
        owner.leaseRenewedMs = renewing;
        owner.resumeInput();
      }
      holders = await this.store.holders(s.partitions);
      this.redis(true);
    } catch (error) {
      this.redis(false, error);
      // Not sure of the lease any more: stop fetching before it could run out, so that a new
      // owner's consumer never has this replica fetching from it.
      const now = Date.now();
      for (const owner of this.owners.values()) {
        if (now - owner.leaseRenewedMs > s.leaseMs / 2) owner.suspendInput(`lease not renewed for ${now - owner.leaseRenewedMs} ms`);
      }
      return;
    }
    // The first round only says this replica is alive: replicas started together then see each
    // other before they take partitions, instead of the first taking all and handing them back.
    if (this.rounds++ === 0) return;
    const target = Math.ceil(s.partitions / Math.max(1, members.length));
    const free = new Set<number>();
    for (let k = 0; k < s.partitions; k++) if (holders[k] === null && !this.owners.has(k)) free.add(k);
    const foreignOk = Date.now() - this.redisUpSince >= s.leaseMs;
    for (const k of this.order) {
      if (!free.has(k) || this.busy.has(k)) continue;
      // Up to this replica's share; beyond it only what stayed free for a whole round.
      if (this.owners.size + this.busy.size >= target && !this.freeBefore.has(k)) continue;
      await this.acquire(k, foreignOk);
    }
    this.freeBefore = free;
    if (this.owners.size > target && free.size === 0) {
      // More than this replica's share while others have less: hand the excess over (at most
      // what the others miss), the partitions last in this replica's order first.
      const counts = new Map<string, number>();
      for (const h of holders) if (h) counts.set(h, (counts.get(h) ?? 0) + 1);
      let missing = 0;
      for (const m of members) if (m !== this.store.me) missing += Math.max(0, target - (counts.get(m) ?? 0));
      const excess = Math.min(this.owners.size - target, missing);
      const give = [...this.order].reverse().filter((k) => this.owners.has(k) && !this.busy.has(k)).slice(0, excess);
      await Promise.all(give.map((k) => this.handOver(k)));
    }
    this.metrics.partitionsOwned.set(this.owners.size);
    let pending = 0;
    let ends = 0;
    let bytes = 0;
    for (const o of this.owners.values()) {
      pending += o.pendingCount;
      ends += o.endCount;
      bytes += o.stateBytes;
    }
    this.metrics.pending.set(pending);
    this.metrics.cachedEnds.set(ends);
    this.metrics.stateBytes.set(bytes);
    const now = Date.now();
    for (const owner of this.owners.values()) {
      owner.tick(now).catch((error: unknown) => this.logger.warn({ err: error, partition: owner.partition }, 'clock tick not published; next round'));
    }
  }

  private async acquire(k: number, foreignOk: boolean): Promise<void> {
    const s = this.settings;
    this.busy.add(k);
    try {
      const result = await this.store.acquire(k, s.leaseMs, foreignOk);
      if (result.status !== 'acquired') return;
      const owner = new PartitionOwner(k, result.epoch, this.store, this.bus, s, this.events, this.logger);
      this.owners.set(k, owner);
      const started = Date.now();
      try {
        const loaded = await owner.start();
        this.metrics.takeovers.inc();
        this.logger.info({ partition: k, epoch: result.epoch, ...loaded, ms: Date.now() - started }, 'partition taken');
      } catch (error) {
        this.logger.error({ err: error, partition: k }, 'cannot start a partition; releasing it');
        this.owners.delete(k);
        await owner.abandon();
        await this.store.release(k).catch(() => undefined);
        throw error;
      }
    } finally {
      this.busy.delete(k);
    }
  }

  /** The partition is another replica's now: stop at once, publish and ack nothing more. */
  private async lose(k: number, why: string): Promise<void> {
    const owner = this.owners.get(k);
    if (!owner) return;
    this.owners.delete(k);
    this.metrics.partitionsLost.inc();
    this.logger.warn({ partition: k, epoch: owner.epoch, why }, 'partition lost');
    await owner.abandon();
    await this.store.drop(k, owner.epoch).catch(() => undefined);
  }

  /** Gives a partition back after what it holds is committed, for another replica to take at once. */
  private async handOver(k: number): Promise<void> {
    const owner = this.owners.get(k);
    if (!owner) return;
    this.busy.add(k);
    try {
      const drained = await owner.stop(10_000);
      this.owners.delete(k);
      if (drained) await this.store.release(k).catch(() => undefined);
      this.logger.info({ partition: k, drained }, 'partition handed over');
    } finally {
      this.busy.delete(k);
    }
  }

  /** Stops: every partition's in-flight batches are committed and its lease released. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.looping;
    await Promise.all([...this.owners.keys()].map((k) => this.handOver(k)));
    await this.store.members(0).catch(() => undefined);
  }
}

function score(instance: string, k: number): number {
  let h = 0x811c9dc5;
  const key = `${instance}/${k}`;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}
