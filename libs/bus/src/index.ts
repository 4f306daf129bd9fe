// Public API of @kappa/bus: the NATS JetStream bus between kappa's stages.
export { Bus, connectBus } from './bus.js';
export type { BusMetrics, BusOptions } from './bus.js';
export { BatchConsumer, HoldBatch } from './consumer.js';
export type { BatchContext, BatchHandler, ConsumeOptions } from './consumer.js';
export { BusConnectError, BusPublishError } from './errors.js';
export type { PublishFailureReason } from './errors.js';
export { busOptionsFromConfig, natsOptions } from './options.js';
export type { NatsAuth, NatsTls, StreamLimits } from './options.js';
export { DLQ_STREAM, FLOW_STREAM, STREAM_ADMISSION, admissionShare, dlqHeaders, subjectToken, subjects } from './subjects.js';
export { splitBatch } from './split.js';
export { StateStore } from './state-store.js';
export type { StateStoreOptions } from './state-store.js';
export type { BatchPart } from './split.js';
