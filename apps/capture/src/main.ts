// kappa-capture: wires config, the kernel datapath, the capture loop and its sink (NATS through
// the source runner, or stdout). Logic lives in the modules beside this file.
import { join } from 'node:path';
import { loadConfigOrExit } from '@kappa/config';
import { BpfError, BpfPermissionError, cgroup2Root } from '@kappa/ebpf-ffi';
import { createLogger, createRegistry } from '@kappa/observability';
import { busOptionsFromConfig, runSource, subjects } from '@kappa/bus';
import { MissingCapabilityError, assertCapabilities, permissionRefused } from './capabilities.js';
import { CaptureLoop } from './capture.js';
import type { BatchSink } from './capture.js';
import { Datapath } from './datapath.js';
import { defaultStateDir, instanceToken, pinFolder } from './instance.js';
import { captureOptions } from './options.js';
import { stdoutSink } from './sinks.js';
import { Spool } from './spool.js';

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
  if (error instanceof MissingCapabilityError) {
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
const subject = subjects.captured(config.node);
const toStdout = stdoutSink();
let publish: BatchSink | undefined;
let draining: Promise<unknown> = Promise.resolve();
const drainTimer: { handle?: NodeJS.Timeout } = {};
// The loop's sink is the source's publish (or stdout); the source is made just below.
const loop = new CaptureLoop(datapath, (batch) => (publish ?? toStdout)(batch), { node: config.node, spool, maxUnsentBatches: config.maxUnsentBatches }, registry, logger);
const source = await runSource({
  stage: 'capture',
  instance: config.node,
  node: config.node,
  bus: config.stdout ? undefined : busOptionsFromConfig(config),
  logger,
  registry,
  metricsPort: config.metricsPort,
  // map_full: packets the kernel could not count; sink_refused: records drained but dropped
  // because NATS kept refusing them (stream full) past --max-unsent-batches.
  lost: () => ({ map_full: loop.overflowPacketsTotal, sink_refused: loop.droppedRecordsTotal }),
  onStartFailure: () => {
    datapath.abandon();
    spool.removeIfEmpty();
  },
  // Detached first, so the last drain has every packet; a batch it cannot send stays spooled.
  stop: async () => {
    clearInterval(drainTimer.handle);
    logger.info('stopping: detach, then last drain');
    await draining;
    try {
      datapath.detach();
      await loop.drainOnce();
    } finally {
      datapath.stop();
      spool.removeIfEmpty();
    }
  },
});
if (source.bus) publish = (batch) => source.publishBatch(subject, batch);
// A crashed instance's spool first; if the sink fails now, the next drain retries.
await loop.sendUnsent().catch((error: unknown) => logger.warn({ err: error }, 'spooled batches not sent yet'));
drainTimer.handle = setInterval(() => {
  draining = draining.then(() => loop.drainOnce()).catch((error: unknown) => logger.error({ err: error }, 'drain failed'));
}, config.interval);
// Logged last: from here on a SIGINT or SIGTERM drains and detaches (tests wait for this line).
logger.info({ attached: datapath.attached, cgroup: datapath.cgroupPath, node: config.node }, 'capturing');
