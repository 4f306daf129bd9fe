// kappa-capture: wires config, the kernel datapath, the capture loop and its sink (NATS through
// the source runner, or stdout). Logic lives in the modules beside this file.
import { join } from 'node:path';
import { loadConfigOrExit } from '@kappa/config';
import { BpfError, BpfFilesystemError, BpfPermissionError, cgroup2Root, mountProblems, readPerCpuCounter, realtimeMinusMonotonicNs } from '@kappa/ebpf-ffi';
import { createLogger, createRegistry } from '@kappa/observability';
import { busOptionsFromConfig, runSource, subjects } from '@kappa/bus';
import { MissingCapabilityError, assertCapabilities, permissionRefused } from './capabilities.js';
import { CaptureLoop } from './capture.js';
import type { BatchSink } from './capture.js';
import { ktimeToUnixOffsetNs } from './clock.js';
import type { Datapath } from './datapath.js';
import { holdDnsReceiveTimestamps } from './dns/receive-timestamps.js';
import { DnsTracker } from './dns/tracker.js';
import { DropReasons } from './drop-reasons.js';
import { ExecForwarder } from './exec.js';
import { EXEC_COUNTER_LOST } from './layout.js';
import { InstanceBusyError, PinnedLayoutError, defaultStateDir, instanceToken, pinFolder, sweepDeadInstances } from './instance.js';
import { KernelTooOldError, MINIMUM_KERNEL, describePlan } from './kernel.js';
import type { KernelPlan } from './kernel.js';
import { captureOptions, execSocketPath } from './options.js';
import { stdoutSink } from './sinks.js';
import { Spool } from './spool.js';
import { checkThisKernel, openKernelFacts, planFeatures, startOnThisKernel } from './start.js';

const config = loadConfigOrExit({
  command: 'kappa-capture',
  summary: 'Counts every conversation of this node in the kernel (eBPF) and publishes flow records.',
  options: captureOptions,
});
const logger = createLogger('kappa-capture', config.logLevel);

// Ctrl-C or SIGTERM while starting (right after `npm run up`) must not end the process with the
// default action: that left the maps (and the links, mid-attach) pinned in /sys/fs/bpf/kappa.
// Handlers run between JS steps, so never inside Datapath.start: until the source below takes
// over the signals, a stop detaches, unpins and exits (nothing was drained yet).
const starting: { datapath?: Datapath } = {};
const stopWhileStarting = (signal: NodeJS.Signals) => {
  logger.info({ signal }, 'stopping while starting: detach, unpin, exit');
  starting.datapath?.stop();
  openedSpool?.removeIfEmpty();
  process.exit(0);
};
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, stopWhileStarting);

let datapath: Datapath;
let plan: KernelPlan;
let openedSpool: Spool | undefined;
let kernel: ReturnType<typeof openKernelFacts> | undefined;
let dropReasons: ReturnType<typeof DropReasons.fromBtf>;
try {
  // Before anything touches the kernel or the disk: a missing capability is named, not guessed.
  assertCapabilities(config.mode !== 'socket');
  kernel = openKernelFacts(config.btf);
  const objects = { current: config.bpfObject, compat: config.bpfCompatObject };
  const onRefused = (hook: string, reason: string) => logger.warn({ hook, kernel: kernel?.release }, `${reason}: trying the next hook`);
  if (config.check) {
    // The node as the DaemonSet's init container sees it: mounts first, then the kernel.
    const problems = mountProblems(config.cgroup);
    if (problems.length > 0) throw new BpfFilesystemError(`${problems.join('; ')}`, 2);
    const checked = checkThisKernel({
      objects,
      kernel,
      disabledHooks: config.disableHooks,
      onRefused,
      btfPath: config.btf,
      interfaceMode: config.mode !== 'socket',
      socketMode: config.mode !== 'interface',
    });
    const mountsLine = `mounts: bpffs at /sys/fs/bpf, tracefs, cgroup v2 at ${config.cgroup ?? cgroup2Root()}`;
    process.stdout.write(`kernel ${kernel.release}: capture can run here (it needs Linux ${MINIMUM_KERNEL} or later)\n${mountsLine}\n${describePlan(checked).join('\n')}\n`);
    process.exit(0);
  }
  // Same --node and --cgroup after a crash → same token: the restart takes over the pinned
  // maps and links and the spool the crashed instance left.
  const token = instanceToken(config.node, config.cgroup ?? cgroup2Root());
  openedSpool = new Spool(join(config.stateDir ?? defaultStateDir(token), 'spool'));
  // Instances that died under another --node or --cgroup would count on into maps nobody drains.
  for (const swept of sweepDeadInstances(pinFolder(token))) logger.warn({ folder: swept.folder, pins: swept.pins }, 'removed the pinned programs and maps of a dead capture instance');
  ({ datapath, plan } = startOnThisKernel(
    {
      btfPath: config.btf,
      cgroupPath: config.cgroup,
      pinFolder: pinFolder(token),
      maxConversations: config.maxConversations,
      socketMode: config.mode !== 'interface',
      interfaces: config.mode === 'socket' ? undefined : config.capture,
      dnsBufferBytes: 2 ** Math.ceil(Math.log2(config.dnsBuffer * 1024)),
      execBufferBytes: 2 ** Math.ceil(Math.log2(config.execBuffer * 1024)),
    },
    { objects, kernel, disabledHooks: config.disableHooks, onRefused },
  ));
  // Drop reasons by name, from this kernel's BTF (its numbers change between releases).
  dropReasons = DropReasons.fromBtf(kernel.btf);
} catch (error) {
  openedSpool?.removeIfEmpty();
  // One line an operator can act on, nothing else: the typed errors carry the remedy.
  if (error instanceof MissingCapabilityError || error instanceof InstanceBusyError || error instanceof PinnedLayoutError || error instanceof KernelTooOldError) {
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
} finally {
  kernel?.close();
}
const spool = openedSpool;
starting.datapath = datapath;
// What this kernel gave each feature: "app latency: via fexit … (no sock_send_length tracepoint before 6.3)".
for (const line of describePlan(plan)) logger.info({ kernel: kernel.release }, line);

const registry = createRegistry('kappa-capture');
const subject = subjects.captured(config.node);
const toStdout = stdoutSink();
let publish: BatchSink | undefined;
// One drain at a time: the next starts an interval after the previous one started, or as soon as
// it ended when it took longer than that.
let draining: Promise<unknown> = Promise.resolve();
const drains: { timer?: NodeJS.Timeout; stopping: boolean } = { stopping: false };
// The loop's sink is the source's publish (or stdout); the source is made just below.
const made: { loop?: CaptureLoop; execs?: ExecForwarder } = {};
const rings: { timer?: NodeJS.Timeout } = {};
const RING_POLL_MS = 200;
const source = await runSource({
  stage: 'capture',
  instance: config.node,
  node: config.node,
  bus: config.stdout ? undefined : busOptionsFromConfig(config),
  logger,
  registry,
  metricsPort: config.metricsPort,
  metricsHost: config.metricsHost,
  // The kernel hook of each feature, for kappa status.
  features: planFeatures(plan),
  // map_full: packets the kernel could not count; sink_refused: records drained but dropped
  // because NATS kept refusing them (stream full) past --max-unsent-batches.
  lost: () => ({ map_full: made.loop?.overflowPacketsTotal ?? 0n, sink_refused: made.loop?.droppedRecordsTotal ?? 0 }),
  onStartFailure: () => {
    datapath.abandon();
    spool.removeIfEmpty();
  },
  // Detached first, so the last drain has every packet; a batch it cannot send stays spooled.
  stop: async () => {
    drains.stopping = true;
    clearTimeout(drains.timer);
    clearInterval(rings.timer);
    logger.info('stopping: detach, then last drain');
    await draining;
    try {
      datapath.detach();
      await made.execs?.forward();
      await made.loop?.drainOnce();
    } finally {
      made.execs?.close();
      made.loop?.close();
      datapath.stop();
      spool.removeIfEmpty();
    }
  },
});
// From here on the source's own handlers stop capture the normal way (last drain).
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.off(signal, stopWhileStarting);
const bus = source.bus;
if (bus) publish = (batch) => source.publish(subject, batch.bytes, batch.batchId, batch.records);
const maxBatchBytes = bus ? bus.messageLimit : 1024 * 1024;
if (dropReasons.problem) logger.warn({ problem: dropReasons.problem }, 'drop reasons are named by number');
// DNS responses are timed where they reached the interface (the kernel's receive timestamps, on
// while capture holds a socket that asks for them; closed with the process), as a packet capture
// there times them.
if (datapath.dnsEvents) holdDnsReceiveTimestamps(logger);
const dns = datapath.dnsEvents
  ? { events: datapath.dnsEvents, tracker: new DnsTracker({ maxNames: config.dnsNames, ktimeToUnixNs: ktimeToUnixOffsetNs, realtimeMinusKtimeNs: realtimeMinusMonotonicNs }), pollMs: 0 }
  : undefined;
const capture = new CaptureLoop(
  datapath,
  (batch) => (publish ?? toStdout)(batch),
  { node: config.node, spool, maxUnsentBatches: config.maxUnsentBatches, maxBatchBytes, ...(dns ? { dns } : {}), dropReasons: dropReasons.reasons },
  registry,
  logger,
);
made.loop = capture;
// Processes gone before enrichment keep their command line: their execs go to the enricher first.
const execEvents = datapath.execEvents;
if (execEvents) {
  made.execs = new ExecForwarder({
    socketPath: execSocketPath(config),
    events: execEvents.events,
    lostInKernel: () => readPerCpuCounter(execEvents.counters, EXEC_COUNTER_LOST),
    pollMs: 0,
    logger,
    registry,
  });
}
// Between drains one timer reads both rings (DNS messages, execs), so bursts fit in them; each
// drain reads them too. One wakeup where two timers would wake the process apart.
if (dns || made.execs) {
  rings.timer = setInterval(() => {
    capture.readDns();
    void made.execs?.poll();
  }, RING_POLL_MS).unref();
}
// A crashed instance's spool first, then what it left in the kernel; if the sink fails now, the
// next drain retries.
await capture.sendUnsent().catch((error: unknown) => logger.warn({ err: error }, 'spooled batches not sent yet'));
await capture.drainLeftover().catch((error: unknown) => logger.warn({ err: error }, 'records a crashed instance left not sent yet'));
// V8 optimises the drain's encoding now, on made-up entries, rather than during the first drains.
// After the leftover drain: its first run of the real path changes what V8 assumed (prototype
// chains, field types), which would throw away code optimised before it.
const warming = { cpu: process.cpuUsage(), started: performance.now() };
const warmed = capture.warmUp();
logger.debug({ ...warmed, cpuMs: (process.cpuUsage(warming.cpu).user + process.cpuUsage(warming.cpu).system) / 1000, durationMs: performance.now() - warming.started }, 'encoder warmed up');

function schedule(delayMs: number): void {
  drains.timer = setTimeout(() => {
    const started = performance.now();
    // Every exec before the interval's end is in the ring: on the socket before its records leave.
    draining = Promise.resolve(made.execs?.forward())
      .then(() => capture.drainOnce())
      .catch((error: unknown) => logger.error({ err: error }, 'drain failed'))
      .finally(() => {
        if (!drains.stopping) schedule(Math.max(0, config.interval - (performance.now() - started)));
      });
  }, delayMs);
}
schedule(config.interval);
// Logged last: from here on a SIGINT or SIGTERM drains and detaches (tests wait for this line).
logger.info({ attached: datapath.attached, cgroup: datapath.cgroupPath, node: config.node }, 'capturing');
