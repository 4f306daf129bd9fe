// The store sink: hands every batch's view to the flow store; the batch is acked once its records are
// on disk (bytes and index line), like the JSON Lines file.
import type { ExportBatch, FlowSink } from '../sinks/sink.js';
import type { FlowStore } from './store.js';

export class StoreSink implements FlowSink {
  readonly name = 'store';
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly store: FlowStore) {
    // Seals an idle hot segment and applies retention even when no batch comes.
    this.timer = setInterval(() => void this.store.tick().catch(() => undefined), 5_000);
    this.timer.unref();
  }

  async write(batch: ExportBatch): Promise<void> {
    // The records' bytes as received and their index lines, read in place (no decode, no encode).
    // A redelivered batch skips the records the store already holds (after a crash).
    await this.store.append(batch.view, BigInt(Date.now()) * 1_000_000n, batch.redelivered);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.store.close();
  }
}
