// Hands every joined batch to every enabled sink; the batch is acked only when all took it. A sink
// that already took a batch is skipped when the batch comes again (redelivery after another sink
// failed, or an ack that was lost), as long as this process remembers the batch id.
import { Counter } from '@kappa/observability';
import type { Registry } from '@kappa/observability';
import { SinkFailedError } from './errors.js';
import type { ExportBatch, FlowSink } from './sinks/sink.js';

export interface DispatcherOptions {
  sinks: readonly FlowSink[];
  registry: Registry;
  /** Batch ids remembered per sink for redelivery dedupe. */
  rememberBatches?: number;
}

export class SinkDispatcher {
  /** batchId → sinks that took it; insertion-ordered, so the oldest is evicted first. */
  private readonly taken = new Map<string, Set<string>>();
  private readonly remember: number;
  private readonly records: Counter<'sink'>;
  private readonly failures: Counter<'sink'>;
  private readonly skipped: Counter<'sink'>;
  recordsIn = 0;
  recordsOut = 0;

  constructor(private readonly options: DispatcherOptions) {
    this.remember = options.rememberBatches ?? 10_000;
    const registers = [options.registry];
    this.records = new Counter({ name: 'kappa_exporter_records_total', help: 'Records taken by a sink', labelNames: ['sink'], registers });
    this.failures = new Counter({ name: 'kappa_exporter_sink_failures_total', help: 'Batches a sink did not take (the batch is redelivered)', labelNames: ['sink'], registers });
    this.skipped = new Counter({
      name: 'kappa_exporter_redelivered_skips_total',
      help: 'Redelivered batches a sink skipped because it had already taken them',
      labelNames: ['sink'],
      registers,
    });
  }

  get sinks(): readonly FlowSink[] {
    return this.options.sinks;
  }

  async dispatch(batch: ExportBatch): Promise<void> {
    const records = batch.view.length;
    const batchId = batch.view.batchId;
    this.recordsIn += records;
    let taken = this.taken.get(batchId);
    if (!taken) {
      taken = new Set();
      this.taken.set(batchId, taken);
      if (this.taken.size > this.remember) {
        const oldest = this.taken.keys().next().value;
        if (oldest !== undefined) this.taken.delete(oldest);
      }
    }
    const done = taken;
    const pending = this.options.sinks.filter((sink) => {
      if (!done.has(sink.name)) return true;
      this.skipped.inc({ sink: sink.name });
      return false;
    });
    const results = await Promise.allSettled(pending.map((sink) => sink.write(batch)));
    const failures: { sink: string; error: unknown }[] = [];
    results.forEach((result, i) => {
      const sink = pending[i]!;
      if (result.status === 'fulfilled') {
        done.add(sink.name);
        this.records.inc({ sink: sink.name }, records);
      } else {
        failures.push({ sink: sink.name, error: result.reason });
        this.failures.inc({ sink: sink.name });
      }
    });
    if (failures.length > 0) throw new SinkFailedError(batchId, failures);
    this.recordsOut += records;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.options.sinks.map((sink) => sink.close()));
  }
}
