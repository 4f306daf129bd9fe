// Public API of @kappa/bus: the NATS JetStream bus between kappa's stages, and the stage runner
// every service is built on.
export { Bus, connectBus, messageLimit, natsLinkWarning } from './bus.js';
export type { BusOptions, StoredMessage } from './bus.js';
export { PULL_EXPIRES_MS } from './consumer.js';
export type { BatchConsumer, BatchContext, BatchHandler, ConsumeOptions, RawConsumeOptions, RawConsumer, RawMessage } from './consumer.js';
export { BusConnectError, BusPublishError, HoldBatch, JetStreamCodes, StreamSetupError, StreamStorageError, classifyPublishError, isPermissionError, jetStreamCode } from './errors.js';
export type { PublishFailureReason } from './errors.js';
export type { BusMetrics } from './metrics.js';
export { busOptionsFromConfig, natsOptions, partitionOptions } from './options.js';
export type { NatsAuth, NatsTls, StreamLimits } from './options.js';
export type { Settlement } from './settle.js';
export { TAGGER_STATE_STORE } from './state-store.js';
export type { StateStore, StateStoreOptions } from './state-store.js';
export { runSource, startSource } from './source.js';
export type { RunningSource, SourceOptions } from './source.js';
export { exitOnStartFailure, runStage, startStage } from './stage.js';
export type { RunningStage, StageBatch, StageBusSettings, StageInput, StageOptions, StageOutput, StageTransform } from './stage.js';
export { ForgedHeartbeat, heartbeatMatchesSubject, stageStatus } from './status.js';
export type { StageStatusInput } from './status.js';
export {
  DLQ_STREAM,
  FLOW_STREAM,
  STREAM_ADMISSION,
  admissionShare,
  dlqHeaders,
  partitionOfSubject,
  partitionToken,
  subjectLabel,
  subjectToken,
  subjects,
} from './subjects.js';
