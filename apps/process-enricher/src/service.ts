// Builds and runs the process-enricher from its config: bus, consumer of kappa.flow.captured.<node>,
// publisher of kappa.flow.enriched.<node>, caches, CRI names, health, heartbeat. main.ts calls
// this; tests call it in-process.
import { busOptionsFromConfig, connectBus, subjects, subjectToken } from '@kappa/bus';
import type { Bus, BatchConsumer } from '@kappa/bus';
import { create, StageStatusSchema } from '@kappa/contracts';
import { startObservabilityServer } from '@kappa/observability';
import type { Logger, ObservabilityServer, Registry } from '@kappa/observability';
import { CgroupNamespaceError, SAME_NAMESPACE, detectCgroupNamespace } from './cgroup-namespace.js';
import type { CgroupPathMapper } from './cgroup-namespace.js';
import { CgroupTree, detectCgroup2Mount } from './cgroup-tree.js';
import type { EnricherConfig } from './config.js';
import { CriContainerNames } from './cri.js';
import { FlowEnricher, STAGE, enricherMetrics } from './enricher.js';
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
  let cgroupPaths: CgroupPathMapper = SAME_NAMESPACE;
  if (mount !== undefined) {
    try {
      cgroupPaths = detectCgroupNamespace({ mount });
      logger.info(cgroupPaths.description);
    } catch (error) {
      if (!(error instanceof CgroupNamespaceError)) throw error;
      logger.warn(`${error.message}: live processes keep only the kernel's comm and cgroup`);
    }
  }
  const redaction = { enabled: config.redact && !config.noRedact, extraPatterns: config.redactPattern };
  if (!redaction.enabled) logger.warn('command-line redaction is OFF: secrets passed on command lines leave the node');
  const resolver = new ProcessResolver({
    proc,
    cgroupTree,
    cgroupPaths,
    redaction,
    cmdlineMaxLength: config.cmdlineMaxLength,
    cache: new ProcessCache({ maxEntries: config.processCacheSize, ttlMs: config.processCacheTtl }),
  });
  const sockets = config.criSocket.filter((s) => s !== 'none');
  const containerNames = sockets.length > 0 ? new CriContainerNames({ sockets, logger }) : undefined;
  const enricher = new FlowEnricher({ node: config.node, resolver, cgroupTree, containerNames, metrics: enricherMetrics(registry) });
  return { proc, cgroupTree, resolver, containerNames, enricher };
}

export async function runEnricher(config: EnricherConfig, logger: Logger, registry: Registry): Promise<RunningEnricher> {
  const startedNs = BigInt(Date.now()) * 1_000_000n;
  const view = checkPidNamespace(config.procRoot);
  if (view.hostPid) logger.info(view.message);
  else logger.warn(view.message);
  const noPtrace = ptraceWarning();
  if (noPtrace) logger.warn({ missingCapability: 'CAP_SYS_PTRACE' }, noPtrace);

  const { containerNames, enricher } = buildEnricher(config, logger, registry);
  if (containerNames) await containerNames.connect();

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
    stop: async () => {
      await consumer.stop();
      await bus.close();
      containerNames?.close();
      await server.close();
    },
  };
}
