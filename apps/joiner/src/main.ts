// kappa-joiner: consumes kappa.flow.tagged.p<k>, joins both ends of each conversation through
// Redis, publishes kappa.flow.joined.p<k>. Wiring only; the join is in joiner.ts, the protocol
// in README.md.
import { busOptionsFromConfig, exitOnStartFailure, runStage, subjects } from '@kappa/bus';
import type { RunningStage } from '@kappa/bus';
import { loadConfigOrExit } from '@kappa/config';
import { decodeFlowBatch } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
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
  summary: 'Joins the two ends of every conversation (Redis) from kappa.flow.tagged.p<k> to kappa.flow.joined.p<k>.',
  options: joinerOptions,
});
const logger = createLogger(STAGE, config.logLevel);
const registry = createRegistry(STAGE);
const metrics = joinerMetrics(registry);
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
  const where = `${config.redisUrl.protocol}//${config.redisUrl.host}`;
  exitOnStartFailure(STAGE, new Error(`cannot connect to Redis at ${where}: ${error instanceof Error ? error.message : String(error)} (check --redis-url and credentials)`));
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

// The joiner publishes its output itself (before it finalizes Redis), through the stage.
let stage: RunningStage | undefined;
const publisher = { publishBatch: (subject: string, batch: FlowBatch) => stage!.publishBatch(subject, batch) };
const processor = new JoinProcessor(store, publisher, metrics, { instance: config.instance, partitions: config.partitions, joinExternal: config.joinExternal, crashHook }, onRedis);
const sweeper = new Sweeper(store, publisher, metrics, { instance: config.instance, partitions: config.partitions, roundSize: 256, crashHook }, logger);

let stopping = false;
let sweeping: Promise<void> = Promise.resolve();
let sweepTimer: NodeJS.Timeout | undefined;
stage = await runStage({
  stage: STAGE,
  instance: config.instance,
  bus: busOptionsFromConfig(config),
  logger,
  registry,
  metricsPort: config.metricsPort,
  input: { subject: subjects.allTagged, maxInFlight: config.maxInFlight, ackWaitMs: config.ackWait },
  transform: ({ view, partition }) => processor.handleBatch(decodeFlowBatch(view.bytes), partition),
  ready: () => redisOk && redis.status === 'ready',
  start: async (running) => {
    stage = running;
    sweepTimer = setInterval(() => {
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
  },
  stop: async () => {
    stopping = true;
    clearInterval(sweepTimer);
    await sweeping;
    await redis.quit().catch(() => redis.disconnect());
  },
});
logger.info({ joinWaitMs, metricsPort: stage.metricsPort, instance: config.instance }, 'joiner consuming kappa.flow.tagged.>');
// Tests and scripts wait for this line on stdout.
process.stdout.write(`kappa-joiner ready metrics=${stage.metricsPort}\n`);
