// What the Observer's GetStatus answers: the first and the latest heartbeat of every instance
// (kappa.status.<stage>.<instance>), heard by the exporter itself, and the DLQ counts of
// KAPPA_DLQ read when asked: the same facts `kappa status` shows, for the console.
import type { Bus } from '@kappa/bus';
import { DLQ_STREAM, JetStreamCodes, jetStreamCode, subjects } from '@kappa/bus';
import type { StageStatus } from '@kappa/contracts';

export interface HeardInstance {
  first: StageStatus;
  last: StageStatus;
}

/** Instances silent for longer than this are forgotten (a stopped replica leaves the page). */
const FORGET_NS = 60_000_000_000n;

export class StatusWatch {
  private readonly heard = new Map<string, HeardInstance>();
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly bus: Bus) {}

  start(): void {
    // A message on kappa.status.> that is not a StageStatus is someone else's: ignored.
    this.unsubscribe = this.bus.subscribeStatus((status) => {
      const key = `${status.stage}\0${status.instance}`;
      const seen = this.heard.get(key);
      this.heard.set(key, { first: seen?.first ?? status, last: status });
    });
  }

  instances(nowNs = BigInt(Date.now()) * 1_000_000n): HeardInstance[] {
    for (const [key, beat] of this.heard) if (nowNs - beat.last.sentNs > FORGET_NS) this.heard.delete(key);
    return [...this.heard.values()];
  }

  /** Dead-lettered messages per stage; empty when KAPPA_DLQ does not exist yet. */
  async dlq(): Promise<Record<string, bigint>> {
    const counts: Record<string, bigint> = {};
    try {
      const info = await this.bus.streamInfo(DLQ_STREAM, { subjectsFilter: subjects.allDlq });
      for (const [subject, count] of Object.entries(info.state.subjects ?? {})) counts[subject.replace(/^kappa\.dlq\./, '')] = BigInt(count);
    } catch (error) {
      if (jetStreamCode(error) !== JetStreamCodes.StreamNotFound) throw error;
    }
    return counts;
  }

  stop(): void {
    this.unsubscribe?.();
  }
}
