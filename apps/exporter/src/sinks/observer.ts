// The Observer sink: keeps every record in the in-memory ring the gRPC Observer serves.
import type { FlowBatch } from '@kappa/contracts';
import type { FlowRing } from '../observer/ring.js';
import type { FlowSink } from './sink.js';

export class ObserverSink implements FlowSink {
  readonly name = 'observer';

  constructor(private readonly ring: FlowRing) {}

  async write(batch: FlowBatch): Promise<void> {
    const receivedNs = BigInt(Date.now()) * 1_000_000n;
    this.ring.trim(receivedNs);
    for (const record of batch.records) this.ring.push(record, receivedNs);
  }

  async close(): Promise<void> {}
}
