// kappa-joiner: consumes kappa.flow.tagged, joins both ends of each conversation through Redis,
// publishes kappa.flow.joined. Wiring only; the join is in joiner.ts, the protocol in README.md.
import { hostname } from 'node:os';
import { StageStatusSchema, create } from '@kappa/contracts';
import { busOptionsFromConfig, connectBus, subjects } from '@kappa/bus';
import type { BatchConsumer } from '@kappa/bus';
import { loadConfigOrExit } from '@kappa/config';
import { createLogger, createRegistry, onShutdown, startObservabilityServer } from '@kappa/observability';
import { joinerOptions } from './config.js';
import { JoinProcessor, Sweeper } from './joiner.js';
import type { CrashHook } from './joiner.js';
import { joinerMetrics } from './metrics.js';
import { connectRedis, redisLinkWarning } from './redis.js';
import { JoinStore } from './store.js';
import type { JoinStoreError } from './store.js';

const STAGE = 'joiner';
const config = loadConfigOrExit({
  command: 'kappa-joiner',
  summary: 'Joins the two ends of every conversation (Redis) from kappa.flow.tagged to kappa.flow.joined.',
  options: joinerOptions,
});
const logger = createLogger(STAGE, config.logLevel);
const registry = createRegistry(STAGE);
const metrics = joinerMetrics(registry);
const startedNs = BigInt(Date.now()) * 1_000_000n;
const joinWaitMs = config.joinWait ?? 2 * config.interval;

const redisSettings = {
  url: config.redisUrl,
  cluster: config.redisCluster,
  user: config.redisUser,
  password: config.redisPassword,
  tlsCa: config.redisTlsCa,
  tlsCert: config.redisTlsCert,
  tlsKey: config.redisTlsKey,
};
const redisWarning = redisLinkWarning(redisSettings);
if (redisWarning) logger.warn(redisWarning);
const redis = await connectRedis(redisSettings).catch((error: unknown) => {
  logger.fatal({ err: error, redis: `${config.redisUrl.protocol}//${config.redisUrl.host}` }, 'cannot connect to Redis (check --redis-url and credentials)');
  process.exit(1);
});
let redisOk = true;
let lastRedisErrorLog = 0;
metrics.redisUp.set(1);
const onRedis = (ok: boolean, error?: JoinStoreError) => {
  redisOk = ok;
  metrics.redisUp.set(ok ? 1 : 0);
  if (!ok) {
    metrics.redisErrors.inc({ operation: error?.message.split(' failed')[0]?.replace(/^Redis /, '') ?? 'unknown' });
    if (Date.now() - lastRedisErrorLog > 5000) {
      lastRedisErrorLog = Date.now();
      logger.error({ err: error }, 'Redis unavailable: input batches stay unacked and are retried');
    }
  }
};
redis.on('error', () => undefined); // reported through onRedis; ioredis reconnects by itself
redis.on('end', () => onRedis(false));

// Crash tests only: KAPPA_JOINER_CRASH_AT=<point>:<n> kills this process (SIGKILL) the n-th time
// it reaches that step of the protocol (see CrashPoint in joiner.ts).
const crashAt = /^([a-z-]+):(\d+)$/.exec(process.env.KAPPA_JOINER_CRASH_AT ?? '');
let crashCountdown = Number(crashAt?.[2] ?? 0);
const crashHook: CrashHook | undefined = crashAt
  ? (point) => {
      if (point === crashAt[1] && --crashCountdown <= 0) {
        process.stdout.write(`crashing at ${point}\n`);
        process.kill(process.pid, 'SIGKILL');
      }
    }
  : undefined;

const store = new JoinStore(redis, {
  joinWaitMs,
  metadataTtlMs: config.metadataTtl,
  replayWindowMs: config.replayWindow,
  inputLeaseMs: Math.max(120_000, 4 * config.ackWait),
  sweepLeaseMs: config.sweepLease,
});

const bus = await connectBus({ ...busOptionsFromConfig(config), name: `kappa-${STAGE}`, logger, registry }).catch((error: unknown) => {
  logger.fatal({ err: error }, 'cannot connect to NATS (check --nats-url and its credentials)');
  return process.exit(1);
});
await bus.ensureStreams().catch((error: unknown) => {
  logger.fatal({ err: error }, 'cannot create the JetStream streams');
  return process.exit(1);
});
const processor = new JoinProcessor(store, bus, metrics, { instance: config.instance, joinExternal: config.joinExternal, crashHook }, onRedis);
const sweeper = new Sweeper(store, bus, metrics, { instance: config.instance, roundSize: 256, crashHook }, logger);

let consumer: BatchConsumer | undefined;
consumer = await bus.consumeBatches({
  stage: STAGE,
  subject: subjects.tagged,
  maxInFlight: config.maxInFlight,
  ackWaitMs: config.ackWait,
  handler: (batch) => processor.handleBatch(batch),
});

let stopping = false;
let sweeping: Promise<void> = Promise.resolve();
const sweepTimer = setInterval(() => {
  sweeping = sweeping.then(async () => {
    if (stopping) return;
    try {
      await sweeper.sweepOnce();
      onRedis(true);
    } catch (error) {
      if ((error as Error).name === 'JoinStoreError') onRedis(false, error as JoinStoreError);
      else logger.error({ err: error }, 'sweep failed; retried next interval');
    }
  });
}, config.sweepInterval);

const server = await startObservabilityServer(
  registry,
  { healthy: () => true, ready: () => consumer !== undefined && !bus.nc.isClosed() && redisOk && redis.status === 'ready' },
  { port: config.metricsPort, host: config.metricsHost },
);
bus.startHeartbeat(() =>
  create(StageStatusSchema, {
    stage: STAGE,
    instance: config.instance,
    node: hostname(),
    startedNs,
    sentNs: BigInt(Date.now()) * 1_000_000n,
    ready: consumer !== undefined && redisOk && redis.status === 'ready',
    recordsIn: BigInt(processor.recordsIn),
    recordsOut: BigInt(processor.recordsOut + sweeper.recordsOut),
    dlq: BigInt(bus.deadLettered()),
    lag: BigInt(consumer?.latestLag ?? 0),
  }),
);
logger.info({ joinWaitMs, metricsPort: server.port, instance: config.instance }, 'joiner consuming kappa.flow.tagged');
// Tests and scripts wait for this line on stdout.
process.stdout.write(`kappa-joiner ready metrics=${server.port}\n`);

onShutdown(logger, async () => {
  stopping = true;
  clearInterval(sweepTimer);
  await sweeping;
  await bus.close(); // in-flight batches finish (published + finalized) and are acked first
  consumer = undefined;
  await server.close();
  await redis.quit().catch(() => redis.disconnect());
});
