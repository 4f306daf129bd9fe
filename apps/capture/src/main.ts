// kappa-capture: wires config, the kernel datapath, the capture loop, a sink and the
// observability server. Logic lives in the modules beside this file.
import { loadConfigOrExit } from '@kappa/config';
import { BpfError } from '@kappa/ebpf-ffi';
import { createLogger, createRegistry, startObservabilityServer } from '@kappa/observability';
import { CaptureLoop } from './capture.js';
import { Datapath } from './datapath.js';
import { captureOptions } from './options.js';
import { stdoutSink } from './sinks.js';

const config = loadConfigOrExit({
  command: 'kappa-capture',
  summary: 'Counts every conversation of this node in the kernel (eBPF) and publishes flow records.',
  options: captureOptions,
});
const logger = createLogger('kappa-capture', config.logLevel);

if (!config.stdout) {
  // Publishing to kappa.flow.captured.<node> arrives with @kappa/bus.
  process.stderr.write('kappa-capture: NATS publishing is not available in this build; run with --stdout\n');
  process.exit(2);
}

let datapath: Datapath;
try {
  datapath = Datapath.start({
    objectPath: config.bpfObject,
    btfPath: config.btf,
    cgroupPath: config.cgroup,
    maxConversations: config.maxConversations,
    socketMode: config.mode !== 'interface',
    interfaces: config.mode === 'socket' ? undefined : config.capture,
  });
} catch (error) {
  // One line an operator can act on, nothing else: the typed errors carry the remedy.
  if (error instanceof BpfError) {
    process.stderr.write(`kappa-capture: ${error.message}\n`);
    process.exit(1);
  }
  throw error;
}
logger.info({ attached: datapath.attached, cgroup: datapath.cgroupPath, node: config.node }, 'capturing');

const registry = createRegistry('kappa-capture');
const loop = new CaptureLoop(datapath, stdoutSink(), { node: config.node }, registry, logger);
const server = await startObservabilityServer(registry, { healthy: () => true, ready: () => true }, { port: config.metricsPort });

let draining: Promise<unknown> = Promise.resolve();
const timer = setInterval(() => {
  draining = draining.then(() => loop.drainOnce()).catch((error: unknown) => logger.error({ err: error }, 'drain failed'));
}, config.interval);

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  logger.info({ signal }, 'stopping: last drain, then detach');
  await draining;
  try {
    await loop.drainOnce();
  } finally {
    datapath.stop();
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
