// The Observer sink: copies every record's bytes into the ring the gRPC Observer serves.
import type { FlowRing } from '../observer/ring.js';
import type { ExportBatch, FlowSink } from './sink.js';

export class ObserverSink implements FlowSink {
  readonly name = 'observer';

  constructor(private readonly ring: FlowRing) {}

  write(batch: ExportBatch): Promise<void> {
    const view = batch.view;
    const receivedNs = BigInt(Date.now()) * 1_000_000n;
    this.ring.trim(receivedNs);
    for (let i = 0; i < view.length; i++) this.ring.push(view.bytes, view.recordStart(i), view.recordEnd(i), receivedNs);
    return Promise.resolve();
  }

  async close(): Promise<void> {}
}
