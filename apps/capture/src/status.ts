// The heartbeat capture publishes on kappa.status.capture.<node> for `kappa status`.
import { StageStatusSchema, create } from '@kappa/contracts';
import type { StageStatus } from '@kappa/contracts';
import { unixNowNs } from './clock.js';

export function captureStatus(
  node: string,
  startedNs: bigint,
  totals: { recordsOut: number; overflowPackets: bigint; droppedRecords: number },
  /** The kernel hook of each feature (start.ts planFeatures). */
  features: Record<string, string> = {},
): StageStatus {
  return create(StageStatusSchema, {
    stage: 'capture',
    instance: node,
    node,
    startedNs,
    sentNs: unixNowNs(),
    ready: true,
    features,
    recordsOut: BigInt(totals.recordsOut),
    // map_full: packets the kernel could not count; sink_refused: records drained but dropped
    // because NATS kept refusing them (stream full) past --max-unsent-batches.
    lost: {
      ...(totals.overflowPackets > 0n ? { map_full: totals.overflowPackets } : {}),
      ...(totals.droppedRecords > 0 ? { sink_refused: BigInt(totals.droppedRecords) } : {}),
    },
  });
}
