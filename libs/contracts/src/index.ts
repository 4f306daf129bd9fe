// Public API of @kappa/contracts: the protobuf messages every service exchanges, their codecs,
// the IP text form, the record view and writer (records read and written as bytes), partitions,
// and the grpc-js definitions of the tagger and observer services.
export {
  AppLatencySchema,
  DnsSchema,
  DropsSchema,
  EndpointSchema,
  FlowBatchSchema,
  FlowRecordSchema,
  IpProtocol,
  KubeSchema,
  ProcessSchema,
  StageStatusSchema,
  TcpStatsSchema,
  Vantage,
} from './gen/kappa/flow/v1/flow_pb.js';
export type {
  AppLatency,
  Dns,
  Drops,
  Endpoint,
  FlowBatch,
  FlowRecord,
  Kube,
  Process,
  StageStatus,
  TcpStats,
} from './gen/kappa/flow/v1/flow_pb.js';
export {
  KubeTags,
  LookupRequestSchema,
  LookupResponseSchema,
  WatchRequestSchema,
  WatchResponseSchema,
} from './gen/kappa/tagger/v1/tagger_pb.js';
export type { LookupRequest, LookupResponse, WatchRequest, WatchResponse } from './gen/kappa/tagger/v1/tagger_pb.js';
export {
  AggregateSchema,
  GetAggregatesRequestSchema,
  GetAggregatesResponseSchema,
  GetFlowsRequestSchema,
  GetFlowsResponseSchema,
  GetStatusRequestSchema,
  GetStatusResponseSchema,
  GroupSchema,
  InstanceStatusSchema,
  Observer,
  StoreStatusSchema,
} from './gen/kappa/observer/v1/observer_pb.js';
export type {
  Aggregate,
  GetAggregatesRequest,
  GetAggregatesResponse,
  GetFlowsRequest,
  GetFlowsResponse,
  GetStatusRequest,
  GetStatusResponse,
  Group,
  InstanceStatus,
  StoreStatus,
} from './gen/kappa/observer/v1/observer_pb.js';
export {
  ContractDecodeError,
  decodeFlowBatch,
  decodeStageStatus,
  encodeFlowBatch,
  encodeStageStatus,
  flowRecordFromJson,
  flowRecordToJson,
  newFlowBatch,
  newFlowRecord,
} from './codec.js';
export { canonicalIp, ipFromBytes, ipToBytes } from './ip.js';
export { formatExecLine, parseExecLine } from './exec-event.js';
export type { ExecEvent } from './exec-event.js';
export { FlowBatchView } from './record/batch-view.js';
export { MessageCursor, readVarint32, readVarint64, skipValue, skipVarint } from './record/cursor.js';
export { FlowFields } from './record/fields.js';
export { StringInterner } from './record/intern.js';
export { BytesMap, hashBytes, sameRange } from './record/bytes-map.js';
export { DEFAULT_PARTITIONS, Partitioner, conversationGroup, observedNetns, partitionOfGroup, partitionOfRecord } from './record/partition.js';
export { FlowBatchWriter, ProtoWriter, RecordTooLargeError, encodeField, varintSize } from './record/writer.js';
export type { EncodedBatch } from './record/writer.js';
export { fieldNumbers, messageShape } from './record/wire-schema.js';
export type { FieldNumbers, FieldShape, MessageShape } from './record/wire-schema.js';
export { kubeTagsServiceDefinition, observerServiceDefinition } from './grpc.js';
export { create, clone, equals, fromBinary, toBinary, toJson, fromJson } from '@bufbuild/protobuf';
export { GrpcSecurityError, bearerTokenCheck, grpcClientSecurity, grpcServerSecurity } from './grpc-security.js';
export type { GrpcClientSecurity, GrpcServerSecurity, SecuredGrpcClient, SecuredGrpcServer } from './grpc-security.js';
export { OBSERVER_MISSING_TRAILER, OBSERVER_SCOPE_HEADER, ObserverClient, missingOf } from './observer-client.js';
export type { AggregatesRequestInit, FlowsRequestInit, ObserverAnswer, ObserverClientOptions } from './observer-client.js';
