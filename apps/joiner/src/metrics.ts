// The joiner's Prometheus metrics: what came in, what left joined or not, what waits in Redis,
// how long records waited, and whether Redis answers.
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
  joinWait: Histogram<'result'>;
  redisErrors: Counter<'operation'>;
  redisUp: Gauge;
}

export function joinerMetrics(registry: Registry): JoinerMetrics {
  const registers = [registry];
  return {
    recordsIn: new Counter({ name: 'kappa_joiner_records_in_total', help: 'Flow records consumed from kappa.flow.tagged', registers }),
    recordsOut: new Counter({ name: 'kappa_joiner_records_out_total', help: 'Flow records published on kappa.flow.joined', registers }),
    joined: new Counter({ name: 'kappa_joiner_joined_records_total', help: 'Records published with both ends metadata', labelNames: ['path'], registers }),
    releasedUnjoined: new Counter({ name: 'kappa_joiner_released_unjoined_total', help: 'Records published without their peer', labelNames: ['reason'], registers }),
    pending: new Gauge({ name: 'kappa_joiner_pending_records', help: 'Records waiting in Redis for their peer (all replicas)', registers }),
    joinWait: new Histogram({
      name: 'kappa_joiner_join_wait_seconds',
      help: 'How long a record waited in Redis before it left',
      labelNames: ['result'],
      buckets: [0.05, 0.1, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120],
      registers,
    }),
    redisErrors: new Counter({ name: 'kappa_joiner_redis_errors_total', help: 'Redis operations that failed; their input is retried', labelNames: ['operation'], registers }),
    redisUp: new Gauge({ name: 'kappa_joiner_redis_up', help: '1 when the last Redis operation succeeded', registers }),
  };
}
