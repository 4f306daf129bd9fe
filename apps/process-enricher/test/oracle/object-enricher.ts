// THE ORACLE of the differential test, not product code: the process-enricher's object-model
// enrichment as it was before the byte path (protobuf-es objects changed in place), kept verbatim
// so the byte path can be compared with it. It shares nothing with src/enricher.ts's byte path;
// it uses the same ProcessResolver and CRI client, which decide what a process is (not under test).
import { Vantage } from '@kappa/contracts';
import type { Endpoint, FlowBatch, FlowRecord } from '@kappa/contracts';
import type { CgroupTree } from '../../src/cgroup-tree.js';
import type { CriContainerNames } from '../../src/cri.js';
import type { EnricherMetrics } from '../../src/enricher.js';
import type { ProcessResolver, Resolution, ResolvedProcess } from '../../src/resolver.js';

const STAGE = 'process-enricher';

/** The endpoint(s) of this node's side: vantage SRC → src, DST → dst; unknown → any stamped one. */
function localEndpoints(record: FlowRecord): Endpoint[] {
  if (record.vantage === Vantage.SRC) return record.src ? [record.src] : [];
  if (record.vantage === Vantage.DST) return record.dst ? [record.dst] : [];
  return [record.src, record.dst].filter((e): e is Endpoint => e?.process !== undefined);
}

export interface ObjectEnricherOptions {
  node: string;
  resolver: ProcessResolver;
  cgroupTree: CgroupTree | undefined;
  containerNames?: CriContainerNames | undefined;
  metrics?: EnricherMetrics | undefined;
}

export class ObjectEnricher {
  recordsIn = 0;
  recordsOut = 0;
  private lastHits = 0;
  private lastMisses = 0;
  private lastTree = { hits: 0, misses: 0, rescans: 0 };

  constructor(private readonly options: ObjectEnricherOptions) {}

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
    const tree = this.options.cgroupTree?.stats;
    if (tree) {
      m.cgroupLookups.inc({ result: 'hit' }, tree.hits - this.lastTree.hits);
      m.cgroupLookups.inc({ result: 'miss' }, tree.misses - this.lastTree.misses);
      m.cgroupRescans.inc(tree.rescans - this.lastTree.rescans);
      this.lastTree = { hits: tree.hits, misses: tree.misses, rescans: tree.rescans };
    }
  }
}
