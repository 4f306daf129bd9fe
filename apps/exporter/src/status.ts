// The exporter's heartbeat: what `kappa status` shows for this instance.
import { StageStatusSchema, create } from '@kappa/contracts';
import type { StageStatus } from '@kappa/contracts';

export interface ExporterStatusInput {
  instance: string;
  node: string;
  startedNs: bigint;
  ready: boolean;
  recordsIn: number;
  recordsOut: number;
  dlq: number;
  lag: number;
  version: string;
}

export function exporterStatus(s: ExporterStatusInput): StageStatus {
  return create(StageStatusSchema, {
    stage: 'exporter',
    instance: s.instance,
    node: s.node,
    startedNs: s.startedNs,
    sentNs: BigInt(Date.now()) * 1_000_000n,
    ready: s.ready,
    recordsIn: BigInt(s.recordsIn),
    recordsOut: BigInt(s.recordsOut),
    dlq: BigInt(s.dlq),
    lag: BigInt(s.lag),
    version: s.version,
  });
}
