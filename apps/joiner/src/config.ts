// The joiner's options: its own (Redis, join wait, clock ticks, metadata TTL, leases) plus the
// shared NATS and partition ones.
import { hostname } from 'node:os';
import { boolean, duration, integer, oneOf, string, url } from '@kappa/config';
import { natsOptions, partitionOptions } from '@kappa/bus';
import { logLevels } from '@kappa/observability';

export const joinerOptions = {
  redisUrl: url({ description: 'Redis URL (redis:// or rediss:// for TLS; user and password may be in the URL)', schemes: ['redis', 'rediss'], default: 'redis://127.0.0.1:6379' }),
  redisUser: string({ description: 'Redis ACL user (overrides the URL)' }),
  redisPassword: string({ description: 'Redis password (overrides the URL)', secret: true }),
  redisTlsCa: string({ description: 'CA file that signed Redis\'s certificate: speak TLS (as does a rediss:// URL)' }),
  redisTlsCert: string({ description: 'client certificate file, for a Redis that requires mutual TLS (with --redis-tls-key)' }),
  redisTlsKey: string({ description: 'client key file for --redis-tls-cert' }),
  redisCluster: boolean({ description: '--redis-url is a seed node of a Redis Cluster (keys carry hash tags)' }),
  interval: duration({ description: 'capture interval of the nodes (sets the default join wait)', default: '10s', minMs: 100 }),
  joinWait: duration({ description: 'how long a record waits for its peer, in event time (JetStream\'s) [default: 2 x --interval]', minMs: 10 }),
  sweepInterval: duration({ description: 'how often an idle partition whose waits are over gets a clock tick', default: '1s', minMs: 10 }),
  metadataTtl: duration({ description: 'how long an end\'s metadata stays cached so later intervals join at once (every replica the same)', default: '5m', minMs: 100 }),
  leaseTtl: duration({ description: 'a partition whose owner stops renewing its lease is taken over after this long', default: '8s', minMs: 500 }),
  joinExternal: boolean({ description: 'wait for a peer even when the tagger says the remote end is external' }),
  maxInFlight: integer({ description: 'input batches a partition holds at once (processed and published ahead of their Redis commit)', default: 8, min: 1, max: 256 }),
  ackWait: duration({ description: 'JetStream redelivers a batch held this long without an ack (to the same owner, which recognises it)', default: '15s', minMs: 1000 }),
  ...partitionOptions,
  ...natsOptions,
  metricsPort: integer({ description: 'port of /metrics, /healthz and /readyz (0 = any free port)', default: 9404, min: 0, max: 65535 }),
  logLevel: oneOf(logLevels, { description: 'log level', default: 'info' }),
  instance: string({ description: 'this replica\'s name in heartbeats and leases', default: `${hostname()}-${process.pid}` }),
};
