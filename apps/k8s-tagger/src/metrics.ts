// The tagger's Prometheus metrics: records tagged, lookups hit/miss per end, informer restarts
// and index sizes.
import { Counter, Gauge } from '@kappa/observability';
import type { Registry } from '@kappa/observability';
import type { KubeIndex } from './kube-index.js';
import type { TaggingStats } from './tagging.js';

export interface TaggerMetrics {
  recordTagged(stats: TaggingStats): void;
  /** A batch held because a pod is not known yet: only its pending ends count. */
  recordHeld(stats: TaggingStats): void;
  grpcLookup(found: boolean): void;
  informerRestart(resource: string): void;
}

export function taggerMetrics(registry: Registry, index: () => KubeIndex | undefined): TaggerMetrics {
  const records = new Counter({ name: 'kappa_tagger_records_tagged_total', help: 'Flow records tagged and published', registers: [registry] });
  const lookups = new Counter({
    name: 'kappa_tagger_lookups_total',
    help: 'Endpoint lookups while tagging, by end (local/remote) and result (hit: a pod, service or node; miss; pending: the pod is expected but not known yet, so the batch was held; unknown: still not known when the hold ended)',
    labelNames: ['end', 'result'] as const,
    registers: [registry],
  });
  const grpc = new Counter({ name: 'kappa_tagger_grpc_lookups_total', help: 'KubeTags Lookup calls by result', labelNames: ['result'] as const, registers: [registry] });
  const restarts = new Counter({ name: 'kappa_tagger_informer_restarts_total', help: 'Informers restarted after an error (dropped watch, API server down)', labelNames: ['resource'] as const, registers: [registry] });
  new Gauge({
    name: 'kappa_tagger_index_entries',
    help: 'Entries in the tagger index, by index',
    labelNames: ['index'] as const,
    registers: [registry],
    collect() {
      const current = index();
      if (!current) return;
      for (const [name, size] of Object.entries(current.sizes())) this.set({ index: name }, size);
    },
  });
  return {
    recordTagged(stats) {
      records.inc(stats.records);
      lookups.inc({ end: 'local', result: 'hit' }, stats.hits.local);
      lookups.inc({ end: 'local', result: 'miss' }, stats.misses.local);
      lookups.inc({ end: 'remote', result: 'hit' }, stats.hits.remote);
      lookups.inc({ end: 'remote', result: 'miss' }, stats.misses.remote);
      for (const end of ['local', 'remote'] as const) {
        if (stats.pending[end] > 0) lookups.inc({ end, result: 'pending' }, stats.pending[end]);
        if (stats.unknown[end] > 0) lookups.inc({ end, result: 'unknown' }, stats.unknown[end]);
      }
    },
    recordHeld(stats) {
      for (const end of ['local', 'remote'] as const) if (stats.pending[end] > 0) lookups.inc({ end, result: 'pending' }, stats.pending[end]);
    },
    grpcLookup(found) {
      grpc.inc({ result: found ? 'hit' : 'miss' });
    },
    informerRestart(resource) {
      restarts.inc({ resource });
    },
  };
}
