// The bus's Prometheus counters, shared by every consumer and publisher of one process.
import { Counter } from '@kappa/observability';
import type { Registry } from '@kappa/observability';

export interface BusMetrics {
  published: Counter<'subject'>;
  duplicates: Counter<'subject'>;
  publishFailures: Counter<'subject' | 'reason'>;
  consumed: Counter<'stage'>;
  handlerFailures: Counter<'stage'>;
  deadLettered: Counter<'stage'>;
  held: Counter<'stage' | 'reason'>;
}

export function busMetrics(registry: Registry): BusMetrics {
  const make = <L extends string>(name: string, help: string, labelNames: L[]) => {
    const existing = registry.getSingleMetric(name);
    return (existing as Counter<L> | undefined) ?? new Counter<L>({ name, help, labelNames, registers: [registry] });
  };
  return {
    published: make('kappa_bus_published_batches_total', 'FlowBatches stored in JetStream', ['subject']),
    duplicates: make('kappa_bus_duplicate_batches_total', 'Publishes JetStream dropped as duplicates (same Nats-Msg-Id)', ['subject']),
    publishFailures: make('kappa_bus_publish_failures_total', 'Publishes that failed; the input stays unacked', ['subject', 'reason']),
    consumed: make('kappa_bus_consumed_batches_total', 'FlowBatches handled and acked', ['stage']),
    handlerFailures: make('kappa_bus_handler_failures_total', 'Batches whose handler failed; redelivered later', ['stage']),
    deadLettered: make('kappa_bus_dead_lettered_total', 'Undecodable messages moved to kappa.dlq.<stage>', ['stage']),
    held: make('kappa_bus_held_batches_total', 'Batches a stage asked to have again later (HoldBatch), by reason', ['stage', 'reason']),
  };
}

