// One captured FlowBatch → one enriched FlowBatch: the local end's Endpoint.process gets name,
// command line, exe, uid, cgroup path, container id, runtime and name. Records are changed in
// place (no per-record copies), and one process seen in many records is resolved once per batch.
import { FlowRecordSchema, Vantage, decodeFlowBatch, partitionOfRecord, toBinary } from '@kappa/contracts';
import type { Endpoint, FlowBatch, FlowRecord } from '@kappa/contracts';
import { subjects } from '@kappa/bus';
import type { StageTransform } from '@kappa/bus';
import { Counter, Gauge } from '@kappa/observability';
import type { Registry } from '@kappa/observability';
import type { CgroupTree } from './cgroup-tree.js';
import type { CriContainerNames } from './cri.js';
import type { ExecTable } from './exec-table.js';
import type { ProcessResolver, Resolution, ResolvedProcess } from './resolver.js';

export const STAGE = 'process-enricher';

export interface EnricherMetrics {
  records: Counter<'resolution'>;
  cacheHits: Counter;
  cacheMisses: Counter;
  gone: Counter;
  pidReuse: Counter;
  cgroupLookups: Counter<'result'>;
  cgroupRescans: Counter;
  containerNames: Counter<'result'>;
  cacheEntries: Gauge;
  execEvents: Counter<'result'>;
  execEntries: Gauge;
  threadScans: Counter;
}

export function enricherMetrics(registry: Registry): EnricherMetrics {
  const prefix = 'kappa_process_enricher_';
  return {
    records: new Counter({ name: `${prefix}records_enriched_total`, help: 'Records whose local process was enriched, by where the answer came from (live /proc, gone, reused pid, no pid)', labelNames: ['resolution'], registers: [registry] }),
    cacheHits: new Counter({ name: `${prefix}process_cache_hits_total`, help: 'Process lookups answered by the (pid, start time) cache', registers: [registry] }),
    cacheMisses: new Counter({ name: `${prefix}process_cache_misses_total`, help: 'Process lookups that read /proc', registers: [registry] }),
    gone: new Counter({ name: `${prefix}processes_gone_total`, help: 'Records whose process exited before enrichment (kernel comm and cgroup kept)', registers: [registry] }),
    pidReuse: new Counter({ name: `${prefix}pid_reuse_detected_total`, help: 'Records whose pid now belongs to another process (its /proc data not used)', registers: [registry] }),
    cgroupLookups: new Counter({ name: `${prefix}cgroup_tree_lookups_total`, help: 'cgroup id → path lookups for processes not readable in /proc', labelNames: ['result'], registers: [registry] }),
    cgroupRescans: new Counter({ name: `${prefix}cgroup_tree_rescans_total`, help: 'Walks of the cgroup v2 tree after a miss', registers: [registry] }),
    containerNames: new Counter({ name: `${prefix}container_names_total`, help: 'Container name lookups at the CRI runtime', labelNames: ['result'], registers: [registry] }),
    cacheEntries: new Gauge({ name: `${prefix}process_cache_entries`, help: 'Processes in the (pid, start time) cache', registers: [registry] }),
    execEvents: new Counter({ name: `${prefix}exec_events_total`, help: 'Exec events received from capture (result: ok, malformed)', labelNames: ['result'], registers: [registry] }),
    execEntries: new Gauge({ name: `${prefix}exec_table_entries`, help: 'Processes remembered from their exec (command lines of processes gone before enrichment)', registers: [registry] }),
    threadScans: new Counter({ name: `${prefix}thread_scans_total`, help: 'Reads of a process\'s thread names (at most one per process per 10 s)', registers: [registry] }),
  };
}

/** The endpoint(s) of this node's side: vantage SRC → src, DST → dst; unknown → any stamped one. */
function localEndpoints(record: FlowRecord): Endpoint[] {
  if (record.vantage === Vantage.SRC) return record.src ? [record.src] : [];
  if (record.vantage === Vantage.DST) return record.dst ? [record.dst] : [];
  return [record.src, record.dst].filter((e): e is Endpoint => e?.process !== undefined);
}

export interface EnricherOptions {
  node: string;
  resolver: ProcessResolver;
  cgroupTree: CgroupTree | undefined;
  containerNames?: CriContainerNames | undefined;
  execs?: ExecTable | undefined;
  metrics?: EnricherMetrics | undefined;
}

export class FlowEnricher {
  recordsIn = 0;
  recordsOut = 0;
  private lastHits = 0;
  private lastMisses = 0;
  private lastTree = { hits: 0, misses: 0, rescans: 0 };
  private lastExec = { received: 0, malformed: 0, threadScans: 0 };

  constructor(private readonly options: EnricherOptions) {}

  /** Enriches the batch in place and gives it the output id `process-enricher:<input id>`. */
  async enrichBatch(batch: FlowBatch): Promise<FlowBatch> {
    const { resolver, containerNames } = this.options;
    containerNames?.reconnectIfDue();
    const memo = new Map<string, ResolvedProcess>();
    const unnamed: { endpoint: Endpoint; containerId: string; inferred: boolean }[] = [];
    const counts: Record<Resolution, number> = { live: 0, gone: 0, reused: 0, 'no-pid': 0 };
    for (const record of batch.records) {
      this.recordsIn++;
      for (const endpoint of localEndpoints(record)) {
        const p = endpoint.process;
        if (p === undefined || (p.pid === 0 && p.cgroupId === 0n)) continue;
        const key = `${p.pid}|${p.name}|${p.cgroupId}|${p.startTimeTicks}`;
        let resolved = memo.get(key);
        if (resolved === undefined) {
          resolved = resolver.resolve({ pid: p.pid, comm: p.name, cgroupId: p.cgroupId, startTimeTicks: p.startTimeTicks }, record.endNs);
          memo.set(key, resolved);
        }
        counts[resolved.resolution]++;
        p.name = resolved.name;
        p.cmdline = resolved.cmdline;
        p.exe = resolved.exe;
        if (resolved.uid !== undefined) p.uid = resolved.uid;
        p.cgroupId = resolved.cgroupId;
        p.cgroupPath = resolved.cgroupPath;
        p.startTimeTicks = resolved.startTimeTicks;
        p.containerId = resolved.container?.id ?? '';
        p.containerRuntime = resolved.container?.runtime ?? '';
        p.containerName = '';
        if (p.containerId !== '' && containerNames?.connected) {
          const inferred = resolved.container?.inferred === true;
          const name = containerNames.name(p.containerId);
          if (name !== undefined) this.named(endpoint, name, inferred);
          else unnamed.push({ endpoint, containerId: p.containerId, inferred });
        }
      }
    }
    if (unnamed.length > 0 && containerNames) {
      await containerNames.refreshIfStale();
      for (const { endpoint, containerId, inferred } of unnamed) {
        const name = containerNames.name(containerId);
        if (name !== undefined) this.named(endpoint, name, inferred);
        else this.options.metrics?.containerNames.inc({ result: 'unknown' });
      }
    }
    this.recordsOut += batch.records.length;
    this.count(counts);
    batch.batchId = `${STAGE}:${batch.batchId}`;
    batch.producer = this.options.node;
    batch.createdNs = BigInt(Date.now()) * 1_000_000n;
    return batch;
  }

  private named(endpoint: Endpoint, name: string, runtimeInferred: boolean): void {
    const p = endpoint.process;
    if (!p) return;
    p.containerName = name;
    // The cgroupfs driver's path does not name the runtime; the socket that lists the id does.
    if (runtimeInferred && this.options.containerNames?.runtime) p.containerRuntime = this.options.containerNames.runtime;
    this.options.metrics?.containerNames.inc({ result: 'found' });
  }

  private count(counts: Record<Resolution, number>): void {
    const m = this.options.metrics;
    if (!m) return;
    for (const [resolution, n] of Object.entries(counts)) if (n > 0) m.records.inc({ resolution }, n);
    if (counts.gone > 0) m.gone.inc(counts.gone);
    if (counts.reused > 0) m.pidReuse.inc(counts.reused);
    const cache = this.options.resolver.cache;
    m.cacheHits.inc(cache.hits - this.lastHits);
    m.cacheMisses.inc(cache.misses - this.lastMisses);
    this.lastHits = cache.hits;
    this.lastMisses = cache.misses;
    m.cacheEntries.set(cache.size);
    const execs = this.options.execs;
    if (execs) {
      m.execEvents.inc({ result: 'ok' }, execs.received - this.lastExec.received);
      m.execEvents.inc({ result: 'malformed' }, execs.malformed - this.lastExec.malformed);
      m.execEntries.set(execs.size);
      this.lastExec.received = execs.received;
      this.lastExec.malformed = execs.malformed;
    }
    m.threadScans.inc(this.options.resolver.threadScans - this.lastExec.threadScans);
    this.lastExec.threadScans = this.options.resolver.threadScans;
    const tree = this.options.cgroupTree?.stats;
    if (tree) {
      m.cgroupLookups.inc({ result: 'hit' }, tree.hits - this.lastTree.hits);
      m.cgroupLookups.inc({ result: 'miss' }, tree.misses - this.lastTree.misses);
      m.cgroupRescans.inc(tree.rescans - this.lastTree.rescans);
      this.lastTree = { hits: tree.hits, misses: tree.misses, rescans: tree.rescans };
    }
  }
}

/**
 * The stage transform: enrich the input batch and write each record to its partition's output,
 * kappa.flow.enriched.p<k>.<node> (one output batch per partition present, id `…:p<k>`).
 */
export function enrichTransform(enricher: FlowEnricher, node: string, partitions: number): StageTransform {
  return async ({ view }, output) => {
    const batch = await enricher.enrichBatch(decodeFlowBatch(view.bytes));
    const byPartition = new Map<number, FlowRecord[]>();
    for (const record of batch.records) {
      const k = partitionOfRecord(record, partitions);
      let list = byPartition.get(k);
      if (!list) byPartition.set(k, (list = []));
      list.push(record);
    }
    for (const k of [...byPartition.keys()].sort((a, b) => a - b)) {
      const writer = output.batch(subjects.enriched(k, node), `p${k}`);
      for (const record of byPartition.get(k)!) writer.recordBytes(toBinary(FlowRecordSchema, record));
    }
  };
}
