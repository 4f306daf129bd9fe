// The one StageStatus builder: every service's heartbeat on kappa.status.<stage>.<instance> says
// the same things the same way, for `kappa status`.
import { StageStatusSchema, create } from '@kappa/contracts';
import type { StageStatus } from '@kappa/contracts';

export interface StageStatusInput {
  stage: string;
  instance: string;
  node: string;
  startedNs: bigint;
  ready: boolean;
  recordsIn?: number | bigint;
  recordsOut?: number | bigint;
  dlq?: number;
  lag?: number;
  /** Records (or packets, as the key says) lost, by reason; zero entries are left out. */
  lost?: Readonly<Record<string, bigint | number>>;
  version?: string;
  /** What each optional feature runs on here (capture: the kernel hook), for kappa status. */
  features?: Readonly<Record<string, string>>;
}

export function stageStatus(input: StageStatusInput): StageStatus {
  const lost: Record<string, bigint> = {};
  for (const [reason, n] of Object.entries(input.lost ?? {})) if (BigInt(n) > 0n) lost[reason] = BigInt(n);
  return create(StageStatusSchema, {
    stage: input.stage,
    instance: input.instance,
    node: input.node,
    startedNs: input.startedNs,
    sentNs: BigInt(Date.now()) * 1_000_000n,
    ready: input.ready,
    recordsIn: BigInt(input.recordsIn ?? 0),
    recordsOut: BigInt(input.recordsOut ?? 0),
    dlq: BigInt(input.dlq ?? 0),
    lag: BigInt(input.lag ?? 0),
    lost,
    version: input.version ?? '',
    features: { ...input.features },
  });
}
