// The process-enricher assembled as a stage: consumes kappa.flow.captured.<node>, fills the local
// end's process, publishes each record's partition on kappa.flow.enriched.p<k>.<node>. main.ts
// runs it (runStage); tests start it in-process (startEnricher).
import { busOptionsFromConfig, startStage, subjects, subjectToken } from '@kappa/bus';
import type { RunningStage, StageOptions } from '@kappa/bus';
import type { Logger, Registry } from '@kappa/observability';
import { CgroupNamespaceError, SAME_NAMESPACE, detectCgroupNamespace } from './cgroup-namespace.js';
import type { CgroupPathMapper } from './cgroup-namespace.js';
import { CgroupTree, detectCgroup2Mount } from './cgroup-tree.js';
import { execSocketPath } from './config.js';
import type { EnricherConfig } from './config.js';
import { CriContainerNames } from './cri.js';
import { FlowEnricher, STAGE, enricherMetrics, enrichTransform } from './enricher.js';
import { ExecListener, ExecTable } from './exec-table.js';
import { checkPidNamespace } from './host-pid.js';
import { ptraceWarning } from './privileges.js';
import { ProcessCache } from './process-cache.js';
import { ProcReader } from './proc.js';
import { ProcessResolver } from './resolver.js';

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
  const execs = new ExecTable();
  const resolver = new ProcessResolver({
    proc,
    cgroupTree,
    cgroupPaths,
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

/** The enricher as a stage: what runStage (main.ts) and startStage (tests) take. */
export function enricherStage(config: EnricherConfig, logger: Logger, registry: Registry): StageOptions & { enricher: FlowEnricher; execs: ExecTable } {
  const view = checkPidNamespace(config.procRoot);
  if (view.hostPid) logger.info(view.message);
  else logger.warn(view.message);
  const noPtrace = ptraceWarning();
  if (noPtrace) logger.warn({ missingCapability: 'CAP_SYS_PTRACE' }, noPtrace);
  const { containerNames, enricher, execs } = buildEnricher(config, logger, registry);
  const execSocket = execSocketPath(config);
  const execListener = execSocket !== 'none' ? new ExecListener(execSocket, execs) : undefined;
  let listening = false;
  return {
    enricher,
    execs,
    stage: STAGE,
    instance: config.instance,
    node: config.node,
    producer: config.node,
    bus: busOptionsFromConfig(config),
    logger,
    registry,
    metricsPort: config.metricsPort,
    input: { subject: subjects.captured(config.node), durable: `${STAGE}-${subjectToken(config.node)}`, maxInFlight: config.maxInFlight },
    transform: enrichTransform(enricher, config.partitions),
    start: async () => {
      if (containerNames) await containerNames.connect();
      if (!execListener) return;
      try {
        await execListener.start();
        listening = true;
        logger.info({ execSocket }, 'listening for capture\'s exec events');
      } catch (error) {
        logger.warn({ err: error, execSocket }, 'cannot listen for exec events: processes that exit before enrichment keep only their name (check --exec-socket and that its folder is writable)');
      }
    },
    stop: async () => {
      containerNames?.close();
      if (listening) await execListener?.stop();
    },
  };
}

export interface RunningEnricher extends RunningStage {
  readonly enricher: FlowEnricher;
  /** What capture sent of each exec (processes that exit before enrichment). */
  readonly execs: ExecTable;
}

/** Starts the enricher in this process (tests). */
export async function startEnricher(config: EnricherConfig, logger: Logger, registry: Registry): Promise<RunningEnricher> {
  const options = enricherStage(config, logger, registry);
  const running = await startStage(options);
  return Object.assign(running, { enricher: options.enricher, execs: options.execs });
}
