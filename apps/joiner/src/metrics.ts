// The joiner's Prometheus metrics: what came in, what left joined or not, what waits, how long
// records waited, which partitions this replica owns, and whether Redis answers.
import { Counter, Gauge, Histogram } from '@kappa/observability';
import type { Registry } from '@kappa/observability';

export interface JoinerMetrics {
  recordsIn: Counter;
  recordsOut: Counter;
  /** path: immediate (peer's end cached), peer-arrival (released when the peer came), sweeper. */
  joined: Counter<'path'>;
  /** reason: no-peer, external, no-vantage. */
  releasedUnjoined: Counter<'reason'>;
  pending: Gauge;
  cachedEnds: Gauge;
  stateBytes: Gauge;
  joinWait: Histogram<'result'>;
  redisErrors: Counter<'operation'>;
  redisUp: Gauge;
  partitionsOwned: Gauge;
  takeovers: Counter;
  partitionsLost: Counter;
}

export function joinerMetrics(registry: Registry): JoinerMetrics {
  const registers = [registry];
  return {
    recordsIn: new Counter({ name: 'kappa_joiner_records_in_total', help: 'Flow records consumed from kappa.flow.tagged.p<k> (counted when committed)', registers }),
    recordsOut: new Counter({ name: 'kappa_joiner_records_out_total', help: 'Flow records published on kappa.flow.joined.p<k> (counted when committed)', registers }),
    joined: new Counter({ name: 'kappa_joiner_joined_records_total', help: 'Records published with both ends metadata', labelNames: ['path'], registers }),
    releasedUnjoined: new Counter({ name: 'kappa_joiner_released_unjoined_total', help: 'Records published without their peer', labelNames: ['reason'], registers }),
    pending: new Gauge({ name: 'kappa_joiner_pending_records', help: 'Records waiting for their peer in the partitions this replica owns', registers }),
    cachedEnds: new Gauge({ name: 'kappa_joiner_cached_ends', help: 'Conversation ends cached (for --metadata-ttl) in the partitions this replica owns', registers }),
    stateBytes: new Gauge({ name: 'kappa_joiner_state_bytes', help: 'Memory of the waiting records and cached ends held in the partitions this replica owns', registers }),
    joinWait: new Histogram({
      name: 'kappa_joiner_join_wait_seconds',
      help: 'How long (event time) a record waited before it left',
      labelNames: ['result'],
      buckets: [0.05, 0.1, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120],
      registers,
    }),
    redisErrors: new Counter({ name: 'kappa_joiner_redis_errors_total', help: 'Redis operations that failed; their input is held and retried', labelNames: ['operation'], registers }),
    redisUp: new Gauge({ name: 'kappa_joiner_redis_up', help: '1 when the last Redis operation succeeded', registers }),
    partitionsOwned: new Gauge({ name: 'kappa_joiner_partitions_owned', help: 'Partitions whose lease this replica holds', registers }),
    takeovers: new Counter({ name: 'kappa_joiner_partitions_taken_total', help: 'Partitions this replica took (started, or took over from another replica)', registers }),
    partitionsLost: new Counter({ name: 'kappa_joiner_partitions_lost_total', help: 'Partitions this replica lost to another (its lease ran out unnoticed)', registers }),
  };
}
