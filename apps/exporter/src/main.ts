// kappa-exporter: consumes kappa.flow.joined.p<k> and hands every batch to the enabled sinks (JSON
// Lines, IPFIX, the flow store, Prometheus, gRPC Observer); acks a batch only once every sink
// took it. Wiring only.
import { resolve } from 'node:path';
import { busOptionsFromConfig, exitOnStartFailure, runStage, subjects } from '@kappa/bus';
import { loadConfigOrExit } from '@kappa/config';
import { createLogger, createRegistry } from '@kappa/observability';
import { exporterOptions, jsonlPath, observerAdvertise, observerRelaySecurity, storeDir } from './config.js';
import { SinkDispatcher } from './dispatch.js';
import { OBSERVER_FEATURE, ObserverRelay, peersFromStatus } from './observer/relay.js';
import { FlowRing } from './observer/ring.js';
import { ObserverServer } from './observer/server.js';
import { StatusWatch } from './observer/status-watch.js';
import { IpfixSink } from './sinks/ipfix.js';
import { JsonlSink } from './sinks/jsonl.js';
import { ObserverSink } from './sinks/observer.js';
import { PrometheusSink } from './sinks/prometheus.js';
import type { FlowSink } from './sinks/sink.js';
import { StoreSink } from './store/sink.js';
import { FlowStore } from './store/store.js';

const STAGE = 'exporter';
const VERSION = '0.1.0';

const config = loadConfigOrExit({
  command: 'kappa-exporter',
  summary: 'Exports joined flows to JSON Lines, IPFIX, Prometheus and the gRPC Observer (kappa observe).',
  options: exporterOptions,
});
const logger = createLogger(STAGE, config.logLevel);
const registry = createRegistry(STAGE);

/** A start-up failure an operator must fix (collector, file, port): one line, exit 1. */
function fatal(what: string): (error: unknown) => never {
  return (error) => exitOnStartFailure(STAGE, new Error(`${what}: ${error instanceof Error ? error.message : String(error)}`));
}

const sinks: FlowSink[] = [];
const path = jsonlPath(config.jsonl);
if (path !== undefined) {
  const jsonl = new JsonlSink({ path: resolve(path), maxBytes: config.jsonlMaxBytes, keep: config.jsonlKeep, dedupeWindowBytes: config.jsonlDedupeWindow, logger, registry });
  await jsonl.start().catch(fatal('cannot open the JSON Lines file'));
  sinks.push(jsonl);
}
if (config.ipfix) {
  const ipfix = new IpfixSink({
    collector: config.ipfix,
    enterpriseNumber: config.ipfixEnterpriseNumber,
    templateRefreshMs: config.ipfixTemplateRefresh,
    // IPv6 (40) + UDP (8) headers: the datagram fits the MTU on either IP version.
    udpMaxMessageBytes: Math.min(65535, config.ipfixMtu - 48),
    maxStringBytes: config.ipfixMaxStringBytes,
    domainOffset: config.ipfixDomainOffset,
    logger,
    registry,
  });
  await ipfix.start().catch(fatal('cannot start the IPFIX export'));
  sinks.push(ipfix);
}
let store: FlowStore | undefined;
const storeFolder = resolve(storeDir(config));
if (config.store) {
  store = new FlowStore({
    dir: storeFolder,
    retentionMs: config.storeRetention,
    maxBytes: config.storeMaxBytes,
    segmentRecords: config.storeSegmentRecords,
    segmentAgeMs: config.storeSegmentAge,
    memoryLimit: config.storeMemory,
    threads: config.storeThreads,
    pendingSeals: config.storePendingSeals,
    dedupeWindow: config.storeDedupeWindow,
    onSealError: (err, segment) => logger.warn({ err, segment }, 'flow store: sealing a segment failed; it is read from its CSV and sealed at the next start'),
    logger,
    registry,
  });
  await store.open().catch(fatal(`cannot open the flow store in ${storeFolder} (check --store-dir, free space and permissions)`));
  sinks.push(new StoreSink(store));
}
if (config.prometheus) sinks.push(new PrometheusSink({ registry, maxSeries: config.prometheusMaxSeries }));
let observer: ObserverServer | undefined;
let statusWatch: StatusWatch | undefined;
/** Where the other replicas reach this Observer (heartbeat feature `observer`); set once it listens. */
let advertised: string | undefined;
const dispatcher = new SinkDispatcher({ sinks, registry });

const stage = await runStage({
  stage: STAGE,
  instance: config.instance,
  version: VERSION,
  bus: busOptionsFromConfig(config),
  logger,
  registry,
  metricsPort: config.metricsPort,
  metricsHost: config.metricsHost,
  input: { subject: subjects.allJoined, maxInFlight: config.maxInFlight },
  // The received bytes, checked and indexed once: every sink reads the records in place.
  transform: ({ view, redelivered }) => dispatcher.dispatch({ view, redelivered }),
  recordsOut: () => dispatcher.recordsOut,
  features: (): Record<string, string> => (advertised ? { [OBSERVER_FEATURE]: advertised } : {}),
  // The Observer answers status from the heartbeats this bus hears: it starts once connected.
  start: async ({ bus }) => {
    if (config.observer) {
      statusWatch = new StatusWatch(bus);
      statusWatch.start();
      const ring = new FlowRing(config.observerBuffer, BigInt(config.observerRetention) * 1_000_000n, config.observerBufferBytes);
      const relay = config.observerRelay
        ? new ObserverRelay({ peers: peersFromStatus(statusWatch, config.instance), security: observerRelaySecurity(config), tlsName: config.observerPeerName, logger, registry })
        : undefined;
      observer = new ObserverServer({
        ring,
        ...(relay ? { relay } : {}),
        ...(store ? { store, storeLimits: { maxBytes: config.storeMaxBytes, retentionMs: config.storeRetention } } : {}),
        status: statusWatch,
        host: config.observerHost,
        port: config.observerPort,
        logger,
        security: { certFile: config.observerTlsCert, keyFile: config.observerTlsKey, clientCaFile: config.observerTlsClientCa, tokenFile: config.observerTokenFile },
      });
      await observer.start().catch((error: unknown) => {
        throw new Error(`cannot start the Observer on port ${config.observerPort}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      });
      sinks.push(new ObserverSink(ring));
      advertised = observerAdvertise(config, observer.port);
    }
    if (sinks.length === 0) logger.warn('every sink is disabled: batches are acked and dropped');
  },
  // In-flight batches finish (every sink takes them) and are acked before the sinks close.
  stop: async () => {
    statusWatch?.stop();
    await dispatcher.close();
    await observer?.close();
  },
});
logger.info(
  { sinks: sinks.map((s) => s.name), jsonl: path, store: store ? storeFolder : undefined, ipfix: config.ipfix?.href, observerPort: observer?.port, metricsPort: stage.metricsPort },
  'exporter started',
);
