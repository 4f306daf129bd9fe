// Builds and runs the process-enricher from its config: bus, consumer of kappa.flow.captured.<node>,
// publisher of kappa.flow.enriched.<node>, caches, CRI names, health, heartbeat. main.ts calls
// this; tests call it in-process.
import { busOptionsFromConfig, connectBus, subjects, subjectToken } from '@kappa/bus';
import type { Bus, BatchConsumer } from '@kappa/bus';
import { create, StageStatusSchema } from '@kappa/contracts';
import { startObservabilityServer } from '@kappa/observability';
import type { Logger, ObservabilityServer, Registry } from '@kappa/observability';
import { CgroupTree, detectCgroup2Mount } from './cgroup-tree.js';
import { execSocketPath } from './config.js';
import type { EnricherConfig } from './config.js';
import { CriContainerNames } from './cri.js';
import { FlowEnricher, STAGE, enricherMetrics } from './enricher.js';
import { ExecListener, ExecTable } from './exec-table.js';
import { checkPidNamespace } from './host-pid.js';
import { ptraceWarning } from './privileges.js';
import { ProcessCache } from './process-cache.js';
import { ProcReader } from './proc.js';
import { ProcessResolver } from './resolver.js';

export interface RunningEnricher {
  readonly bus: Bus;
  readonly consumer: BatchConsumer;
  readonly server: ObservabilityServer;
  readonly enricher: FlowEnricher;
  /** What capture sent of each exec (processes that exit before enrichment). */
  readonly execs: ExecTable;
  /** Stops consuming (in-flight batches finish and are acked), closes the bus and servers. */
  stop(): Promise<void>;
}

/** Wires the pieces; each piece is testable alone. */
export function buildEnricher(config: EnricherConfig, logger: Logger, registry: Registry) {
  const proc = new ProcReader(config.procRoot);
  const mount = config.cgroupRoot ?? detectCgroup2Mount(`${config.procRoot}/mounts`);
  const cgroupTree = mount === undefined ? undefined : new CgroupTree({ mount, maxEntries: config.cgroupCacheSize, retainRemovedMs: config.cgroupRetain });
  if (cgroupTree) cgroupTree.rescan();
  logger.info({ cgroup2Mount: mount ?? null, cgroups: cgroupTree?.size ?? 0 }, mount ? 'cgroup v2 tree loaded' : 'no cgroup v2 mount: containers of exited processes cannot be resolved');
  const redaction = { enabled: config.redact && !config.noRedact, extraPatterns: config.redactPattern };
  if (!redaction.enabled) logger.warn('command-line redaction is OFF: secrets passed on command lines leave the node');
  const execs = new ExecTable();
  const resolver = new ProcessResolver({
    proc,
    cgroupTree,
    execs,
    redaction,
    cmdlineMaxLength: config.cmdlineMaxLength,
    cache: new ProcessCache({ maxEntries: config.processCacheSize, ttlMs: config.processCacheTtl }),
  });
  const sockets = config.criSocket.filter((s) => s !== 'none');
  const containerNames = sockets.length > 0 ? new CriContainerNames({ sockets, logger }) : undefined;
  const enricher = new FlowEnricher({ node: config.node, resolver, cgroupTree, containerNames, execs, metrics: enricherMetrics(registry) });
  return { proc, cgroupTree, resolver, containerNames, enricher, execs };
}

export async function runEnricher(config: EnricherConfig, logger: Logger, registry: Registry): Promise<RunningEnricher> {
  const startedNs = BigInt(Date.now()) * 1_000_000n;
  const view = checkPidNamespace(config.procRoot);
  if (view.hostPid) logger.info(view.message);
  else logger.warn(view.message);
  const noPtrace = ptraceWarning();
  if (noPtrace) logger.warn({ missingCapability: 'CAP_SYS_PTRACE' }, noPtrace);

  const { containerNames, enricher, execs } = buildEnricher(config, logger, registry);
  if (containerNames) await containerNames.connect();
  let execListener: ExecListener | undefined;
  const execSocket = execSocketPath(config);
  if (execSocket !== 'none') {
    execListener = new ExecListener(execSocket, execs);
    try {
      await execListener.start();
      logger.info({ execSocket }, 'listening for capture\'s exec events');
    } catch (error) {
      execListener = undefined;
      logger.warn({ err: error, execSocket }, 'cannot listen for exec events: processes that exit before enrichment keep only their name (check --exec-socket and that its folder is writable)');
    }
  }

  const bus = await connectBus({ ...busOptionsFromConfig(config), name: `kappa-${STAGE}-${config.node}`, logger, registry });
  await bus.ensureStreams();
  const output = subjects.enriched(config.node);
  const consumer = await bus.consumeBatches({
    stage: STAGE,
    subject: subjects.captured(config.node),
    durable: `${STAGE}-${subjectToken(config.node)}`,
    maxInFlight: config.maxInFlight,
    handler: async (batch) => {
      const enriched = await enricher.enrichBatch(batch);
      await bus.publishBatch(output, enriched);
    },
  });
  logger.info({ input: subjects.captured(config.node), output, durable: consumer.durable }, 'enriching');

  const server = await startObservabilityServer(
    registry,
    { healthy: () => true, ready: () => !bus.nc.isClosed() },
    { port: config.metricsPort },
  );
  bus.startHeartbeat(() =>
    create(StageStatusSchema, {
      stage: STAGE,
      instance: config.instance,
      node: config.node,
      startedNs,
      sentNs: BigInt(Date.now()) * 1_000_000n,
      ready: !bus.nc.isClosed(),
      recordsIn: BigInt(enricher.recordsIn),
      recordsOut: BigInt(enricher.recordsOut),
      dlq: BigInt(bus.deadLettered(STAGE)),
      lag: BigInt(consumer.latestLag),
    }),
  );
  logger.info({ metricsPort: server.port }, 'ready');

  return {
    bus,
    consumer,
    server,
    enricher,
    execs,
    stop: async () => {
      await consumer.stop();
      await bus.close();
      containerNames?.close();
      await execListener?.stop();
      await server.close();
    },
  };
}
