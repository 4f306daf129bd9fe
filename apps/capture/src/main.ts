// kappa-capture: wires config, the kernel datapath, the capture loop, a sink (NATS or stdout)
// and the observability server. Logic lives in the modules beside this file.
import { join } from 'node:path';
import { loadConfigOrExit } from '@kappa/config';
import { BpfError, BpfPermissionError, cgroup2Root } from '@kappa/ebpf-ffi';
import { createLogger, createRegistry, startObservabilityServer } from '@kappa/observability';
import { busOptionsFromConfig, connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { MissingCapabilityError, assertCapabilities, permissionRefused } from './capabilities.js';
import { CaptureLoop } from './capture.js';
import type { BatchSink } from './capture.js';
import { unixNowNs } from './clock.js';
import { Datapath } from './datapath.js';
import { InstanceBusyError, PinnedLayoutError, defaultStateDir, instanceToken, pinFolder, sweepDeadInstances } from './instance.js';
import { captureOptions } from './options.js';
import { stdoutSink } from './sinks.js';
import { Spool } from './spool.js';
import { captureStatus } from './status.js';

const config = loadConfigOrExit({
  command: 'kappa-capture',
  summary: 'Counts every conversation of this node in the kernel (eBPF) and publishes flow records.',
  options: captureOptions,
});
const logger = createLogger('kappa-capture', config.logLevel);

let datapath: Datapath;
let openedSpool: Spool | undefined;
try {
  // Before anything touches the kernel or the disk: a missing capability is named, not guessed.
  assertCapabilities(config.mode !== 'socket');
  // Same --node and --cgroup after a crash → same token: the restart takes over the pinned
  // maps and links and the spool the crashed instance left.
  const token = instanceToken(config.node, config.cgroup ?? cgroup2Root());
  openedSpool = new Spool(join(config.stateDir ?? defaultStateDir(token), 'spool'));
  // Instances that died under another --node or --cgroup would count on into maps nobody drains.
  for (const swept of sweepDeadInstances(pinFolder(token))) logger.warn({ folder: swept.folder, pins: swept.pins }, 'removed the pinned programs and maps of a dead capture instance');
  datapath = Datapath.start({
    objectPath: config.bpfObject,
    btfPath: config.btf,
    cgroupPath: config.cgroup,
    pinFolder: pinFolder(token),
    maxConversations: config.maxConversations,
    socketMode: config.mode !== 'interface',
    interfaces: config.mode === 'socket' ? undefined : config.capture,
  });
} catch (error) {
  openedSpool?.removeIfEmpty();
  // One line an operator can act on, nothing else: the typed errors carry the remedy.
  if (error instanceof MissingCapabilityError || error instanceof InstanceBusyError || error instanceof PinnedLayoutError) {
    process.stderr.write(`kappa-capture: ${error.message}\n`);
    process.exit(1);
  }
  if (error instanceof BpfPermissionError) {
    process.stderr.write(`kappa-capture: ${permissionRefused(error).message}\n`);
    process.exit(1);
  }
  if (error instanceof BpfError) {
    process.stderr.write(`kappa-capture: ${error.message}\n`);
    process.exit(1);
  }
  throw error;
}
const spool = openedSpool;

const registry = createRegistry('kappa-capture');
const startedNs = unixNowNs();
let bus: Bus | undefined;
if (!config.stdout) {
  try {
    bus = await connectBus({ ...busOptionsFromConfig(config), name: 'kappa-capture', logger, registry });
    await bus.ensureStreams();
  } catch (error) {
    datapath.abandon();
    spool.removeIfEmpty();
    process.stderr.write(`kappa-capture: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  }
}
const publisher = bus;
const subject = subjects.captured(config.node);
const sink: BatchSink = publisher ? (batch) => publisher.publishEncodedBatch(subject, batch.batchId, batch.bytes) : stdoutSink();
const maxBatchBytes = publisher ? publisher.maxPayload - 4096 : 1024 * 1024;
const loop = new CaptureLoop(datapath, sink, { node: config.node, spool, maxUnsentBatches: config.maxUnsentBatches, maxBatchBytes }, registry, logger);
// A crashed instance's spool first, then what it left in the kernel; if the sink fails now, the
// next drain retries.
await loop.sendUnsent().catch((error: unknown) => logger.warn({ err: error }, 'spooled batches not sent yet'));
await loop.drainLeftover().catch((error: unknown) => logger.warn({ err: error }, 'records a crashed instance left not sent yet'));
publisher?.startHeartbeat(() => captureStatus(config.node, startedNs, { recordsOut: loop.recordsOut, overflowPackets: loop.overflowPacketsTotal, droppedRecords: loop.droppedRecordsTotal }));
const server = await startObservabilityServer(registry, { healthy: () => true, ready: () => true }, { port: config.metricsPort });

// One drain at a time: the next starts an interval after the previous one started, or as soon as
// it ended when it took longer than that.
let draining: Promise<unknown> = Promise.resolve();
let timer: NodeJS.Timeout | undefined;
let stopping = false;
function schedule(delayMs: number): void {
  timer = setTimeout(() => {
    const started = performance.now();
    draining = loop
      .drainOnce()
      .catch((error: unknown) => logger.error({ err: error }, 'drain failed'))
      .finally(() => {
        if (!stopping) schedule(Math.max(0, config.interval - (performance.now() - started)));
      });
  }, delayMs);
}
schedule(config.interval);

async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearTimeout(timer);
  logger.info({ signal }, 'stopping: detach, then last drain');
  await draining;
  try {
    // Detached first, so the last drain has every packet; a batch it cannot send stays spooled.
    datapath.detach();
    await loop.drainOnce();
  } finally {
    datapath.stop();
    spool.removeIfEmpty();
    await bus?.close();
    await server.close();
  }
  process.exit(0);
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    shutdown(signal).catch((error: unknown) => {
      logger.error({ err: error }, 'shutdown failed');
      process.exit(1);
    });
  });
}
// Logged last: from here on a SIGINT or SIGTERM drains and detaches (tests wait for this line).
logger.info({ attached: datapath.attached, cgroup: datapath.cgroupPath, node: config.node }, 'capturing');
