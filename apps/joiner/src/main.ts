// kappa-joiner: owns partitions of kappa.flow.tagged.p<k> through leases in Redis, joins both
// ends of each conversation in memory with Redis as the durable state, and publishes
// kappa.flow.joined.p<k>. Wiring only; the join is in partition.ts, the protocol in README.md.
import { busOptionsFromConfig, exitOnStartFailure, runStage, subjects } from '@kappa/bus';
import { FLOW_STREAM } from '@kappa/bus';
import { loadConfigOrExit } from '@kappa/config';
import { createLogger, createRegistry } from '@kappa/observability';
import { joinerOptions } from './config.js';
import { Joiner } from './joiner.js';
import { joinerMetrics } from './metrics.js';
import type { CrashPoint } from './owner.js';
import { connectRedis, describeRedis, redisLinkWarning } from './redis.js';
import { PartitionStore } from './store.js';

const STAGE = 'joiner';
const config = loadConfigOrExit({
  command: 'kappa-joiner',
  summary: 'Joins the two ends of every conversation, partition by partition (leases and state in Redis), from kappa.flow.tagged.p<k> to kappa.flow.joined.p<k>.',
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
let joiner: Joiner | undefined;
const redisWarning = redisLinkWarning(redisSettings);
if (redisWarning) logger.warn(redisWarning);
const redis = await connectRedis(redisSettings).catch((error: unknown) => {
  const where = `${config.redisUrl.protocol}//${config.redisUrl.host}`;
  exitOnStartFailure(STAGE, new Error(`cannot connect to Redis at ${where}: ${error instanceof Error ? error.message : String(error)} (check --redis-url and credentials)`));
});
redis.on('error', () => undefined); // reported where a command fails; ioredis reconnects by itself
redis.on('close', () => joiner?.redisLost());
metrics.redisUp.set(1);

// Crash tests only: KAPPA_JOINER_CRASH_AT=<point>:<n> kills this process (SIGKILL) the n-th time
// it reaches that step of the protocol (see CrashPoint in owner.ts).
const crashAt = /^([a-z-]+):(\d+)$/.exec(process.env.KAPPA_JOINER_CRASH_AT ?? '');
let crashCountdown = Number(crashAt?.[2] ?? 0);
const crash = crashAt
  ? (point: CrashPoint) => {
      if (point === crashAt[1] && --crashCountdown <= 0) {
        process.stdout.write(`crashing at ${point}\n`);
        process.kill(process.pid, 'SIGKILL');
      }
    }
  : undefined;

const store = new PartitionStore(redis, config.instance);
const stage = await runStage({
  stage: STAGE,
  instance: config.instance,
  bus: busOptionsFromConfig(config),
  logger,
  registry,
  metricsPort: config.metricsPort,
  metricsHost: config.metricsHost,
  ready: () => (joiner?.ready() ?? false) && redis.status === 'ready',
  lag: () => joiner?.lag ?? 0,
  features: () => ({ redis: describeRedis(redis) }),
  start: async (running) => {
    joiner = new Joiner(store, running.bus, {
      stage: STAGE,
      instance: config.instance,
      partitions: config.partitions,
      join: { joinWaitMs, metadataTtlMs: config.metadataTtl, endRefreshMs: Math.floor(config.metadataTtl / 4), joinExternal: config.joinExternal },
      inputSubject: subjects.tagged,
      outputSubject: subjects.joined,
      stream: FLOW_STREAM,
      window: config.maxInFlight,
      tickMs: config.sweepInterval,
      ackWaitMs: config.ackWait,
      leaseMs: config.leaseTtl,
      loopMs: Math.max(100, Math.min(1000, Math.floor(config.leaseTtl / 4))),
      crash,
      counted: (recordsIn, recordsOut, input) => {
        running.countRecords(recordsIn, recordsOut);
        // The batches handled and acked, as every stage counts them (the DLQ counts the others).
        if (input) running.bus.metrics.consumed.inc({ stage: STAGE });
      },
    }, metrics, logger);
    joiner.start();
  },
  stop: async () => {
    await joiner?.stop(); // each partition's batches in flight are committed, its lease released
    await redis.quit().catch(() => redis.disconnect());
  },
});
logger.info({ joinWaitMs, partitions: config.partitions, leaseMs: config.leaseTtl, metricsPort: stage.metricsPort, instance: config.instance }, 'joiner started; taking partitions');
// Tests and scripts wait for this line on stdout.
process.stdout.write(`kappa-joiner ready metrics=${stage.metricsPort}\n`);
