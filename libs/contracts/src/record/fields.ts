// Field numbers of the flow messages by name, read from the descriptors (a new field in
// flow.proto appears here by itself): `FlowFields.FlowRecord.src === 6`.
import {
  AppLatencySchema,
  DnsSchema,
  DropsSchema,
  EndpointSchema,
  FlowBatchSchema,
  FlowRecordSchema,
  KubeSchema,
  ProcessSchema,
  StageStatusSchema,
  TcpStatsSchema,
} from '../gen/kappa/flow/v1/flow_pb.js';
import type { AppLatency, Dns, Drops, Endpoint, FlowBatch, FlowRecord, Kube, Process, StageStatus, TcpStats } from '../gen/kappa/flow/v1/flow_pb.js';
import { fieldNumbers } from './wire-schema.js';

export const FlowFields = {
  FlowBatch: fieldNumbers<FlowBatch>(FlowBatchSchema),
  FlowRecord: fieldNumbers<FlowRecord>(FlowRecordSchema),
  Endpoint: fieldNumbers<Endpoint>(EndpointSchema),
  Process: fieldNumbers<Process>(ProcessSchema),
  Kube: fieldNumbers<Kube>(KubeSchema),
  TcpStats: fieldNumbers<TcpStats>(TcpStatsSchema),
  AppLatency: fieldNumbers<AppLatency>(AppLatencySchema),
  Dns: fieldNumbers<Dns>(DnsSchema),
  Drops: fieldNumbers<Drops>(DropsSchema),
  StageStatus: fieldNumbers<StageStatus>(StageStatusSchema),
} as const;
