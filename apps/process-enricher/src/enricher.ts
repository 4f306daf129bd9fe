// One captured FlowBatch → enriched FlowBatches, one per partition, as bytes: the local end's
// Endpoint.process gets name, command line, exe, uid, cgroup path, container id, runtime and
// name. Each distinct process of a batch is resolved once and encoded once (a Process fragment);
// every record is its received bytes with that fragment spliced in, nothing else re-encoded.
import { EndpointSchema, FlowBatchView, FlowFields, MessageCursor, Partitioner, ProcessSchema, ProtoWriter, StringInterner, Vantage } from '@kappa/contracts';
import type { FlowBatchWriter } from '@kappa/contracts';
import { subjects } from '@kappa/bus';
import type { StageBatch, StageOutput, StageTransform } from '@kappa/bus';
import { Counter, Gauge } from '@kappa/observability';
import type { Registry } from '@kappa/observability';
import type { CgroupTree } from './cgroup-tree.js';
import type { CriContainerNames } from './cri.js';
import type { ExecTable } from './exec-table.js';
import type { ProcessResolver, Resolution, ResolvedProcess } from './resolver.js';

export const STAGE = 'process-enricher';

export interface EnricherMetrics {
  records: Counter<'resolution'>;
  withoutProcess: Counter<'resolution'>;
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
    withoutProcess: new Counter({
      name: `${prefix}records_without_process_total`,
      help: 'Records whose local process got neither command line nor executable (it exited or its pid was reused before enrichment and no exec event from capture named it; or no pid), by resolution',
      labelNames: ['resolution'],
      registers: [registry],
    }),
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


const R = FlowFields.FlowRecord;
const E = FlowFields.Endpoint;
const P = FlowFields.Process;
/** Process fields the enricher writes (all but pid; uid only when /proc gave one). */
const REPLACED = [P.name, P.cmdline, P.exe, P.containerId, P.containerName, P.containerRuntime, P.cgroupId, P.cgroupPath, P.startTimeTicks].sort((a, b) => a - b);
const REPLACED_WITH_UID = [...REPLACED, P.uid].sort((a, b) => a - b);

export interface EnricherOptions {
  node: string;
  resolver: ProcessResolver;
  cgroupTree: CgroupTree | undefined;
  containerNames?: CriContainerNames | undefined;
  execs?: ExecTable | undefined;
  metrics?: EnricherMetrics | undefined;
}

/** One distinct process of a batch (same pid, comm, cgroup id and start time as capture stamped). */
interface ProcessEntry {
  hash: number;
  /** The stamp: pid, comm, cgroup id and start time (64-bit values as halves). */
  pid: number;
  name: string;
  cgroupLo: number;
  cgroupHi: number;
  startLo: number;
  startHi: number;
  resolved: ResolvedProcess;
  containerName: string;
  runtime: string;
  /** The container id is known, but the CRI runtime has no name for it (counted per record). */
  unnamed: boolean;
  named: boolean;
  /** The encoded Process fields the enricher replaces, in field order. */
  fragment: Uint8Array | undefined;
}

/** The 64-bit varint at `pos` as two 32-bit halves (no bigint). */
function varint64Parts(bytes: Uint8Array, pos: number, out: Int32Array): void {
  let lo = 0;
  let hi = 0;
  let b = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    b = bytes[pos++]!;
    lo |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) {
      out[0] = lo;
      out[1] = 0;
      return;
    }
  }
  b = bytes[pos++]!;
  lo |= (b & 0x0f) << 28;
  hi = (b & 0x70) >> 4;
  if ((b & 0x80) !== 0) {
    for (let shift = 3; shift <= 31; shift += 7) {
      b = bytes[pos++]!;
      hi |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) break;
    }
  }
  out[0] = lo;
  out[1] = hi;
}

function toBigint(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

export class FlowEnricher {
  recordsIn = 0;
  recordsOut = 0;
  private lastHits = 0;
  private lastMisses = 0;
  private lastTree = { hits: 0, misses: 0, rescans: 0 };
  private lastExec = { received: 0, malformed: 0, threadScans: 0 };
  // Reused batch after batch: cursors, the per-record plan, the process table.
  private readonly record = FlowBatchView.recordCursor();
  private readonly endpoint = new MessageCursor(EndpointSchema);
  private readonly process = new MessageCursor(ProcessSchema);
  private readonly names = new StringInterner(16_384);
  private readonly parts = new Int32Array(2);
  private entries: ProcessEntry[] = [];
  /** Records of this batch whose process got neither command line nor exe, by resolution. */
  private bare: Record<Resolution, number> = { live: 0, gone: 0, reused: 0, 'no-pid': 0 };
  private byHash = new Map<number, number[]>();
  /** Per record: partition, entry of the src process, entry of the dst process (-1: none). */
  private plan = new Int32Array(3 * 2048);
  private order = new Int32Array(2048);
  private readonly fragmentWriter = new ProtoWriter(4096);
  // State of the record being written, read by the hoisted emit callbacks.
  private writer: FlowBatchWriter | undefined;
  private currentEntry: ProcessEntry | undefined;
  private currentSrc = -1;
  private currentDst = -1;
  private readonly emitFragment = (field: number): void => {
    // Every replaced field is in the fragment: write it once, where the first of them belongs.
    if (field === REPLACED[0]) this.writer!.raw(this.currentEntry!.fragment!);
  };
  private readonly emitProcess = (): void => {
    const writer = this.writer!;
    const mark = writer.begin(E.process, 2);
    writer.copyReplacing(this.process, this.currentEntry!.resolved.uid !== undefined ? REPLACED_WITH_UID : REPLACED, this.emitFragment);
    writer.end(mark);
  };
  private readonly emitEndpoint = (field: number): void => {
    const entry = field === R.src ? this.currentSrc : this.currentDst;
    const writer = this.writer!;
    this.record.message(field, this.endpoint);
    if (entry < 0) {
      writer.raw(this.record.bytes, this.record.fieldStart(field), this.record.fieldEnd(field));
      return;
    }
    this.currentEntry = this.entries[entry]!;
    this.endpoint.message(E.process, this.process);
    const mark = writer.begin(field, 2);
    writer.copyReplacing(this.endpoint, [E.process], this.emitProcess);
    writer.end(mark);
  };

  constructor(private readonly options: EnricherOptions) {}

  /**
   * Enriches one input batch into `output`: each record goes to kappa.flow.enriched.p<k>.<node>
   * of its partition, in input order within a partition (one output batch per partition, id
   * `process-enricher:<input id>:p<k>`).
   */
  async enrichInto(view: FlowBatchView, output: StageOutput, partitioner: Partitioner): Promise<void> {
    const { containerNames } = this.options;
    containerNames?.reconnectIfDue();
    const n = view.length;
    if (this.plan.length < 3 * n) this.plan = new Int32Array(3 * n);
    if (this.order.length < n) this.order = new Int32Array(n);
    this.entries = [];
    this.byHash.clear();
    const counts: Record<Resolution, number> = { live: 0, gone: 0, reused: 0, 'no-pid': 0 };
    this.bare = { live: 0, gone: 0, reused: 0, 'no-pid': 0 };
    const partitions = partitioner.partitions;
    const perPartition = new Int32Array(partitions + 1);
    let unnamed = false;

    // Pass 1: partition and local processes of every record; each distinct process resolved once.
    const record = this.record;
    for (let i = 0; i < n; i++) {
      view.record(i, record);
      const k = partitioner.of(record);
      this.plan[3 * i] = k;
      perPartition[k + 1]!++;
      const vantage = record.int32(R.vantage);
      let src = -1;
      let dst = -1;
      if (vantage === Vantage.SRC) src = this.localProcess(R.src, counts);
      else if (vantage === Vantage.DST) dst = this.localProcess(R.dst, counts);
      else {
        // Unknown vantage: any end that carries a stamped process is local.
        src = this.localProcess(R.src, counts);
        dst = this.localProcess(R.dst, counts);
      }
      this.plan[3 * i + 1] = src;
      this.plan[3 * i + 2] = dst;
      if ((src >= 0 && this.entries[src]!.unnamed) || (dst >= 0 && this.entries[dst]!.unnamed)) unnamed = true;
    }
    this.recordsIn += n;

    // Container names the runtime did not know yet: one refresh per batch, then look again.
    if (unnamed && containerNames) {
      await containerNames.refreshIfStale();
      for (const entry of this.entries) {
        if (!entry.unnamed) continue;
        const name = containerNames.name(entry.resolved.container?.id ?? '');
        if (name !== undefined) this.named(entry, name);
      }
    }
    for (const entry of this.entries) entry.fragment = this.fragmentOf(entry);
    this.countNames(n);

    // Pass 2: records by partition (a counting sort keeps input order within one).
    for (let k = 0; k < partitions; k++) perPartition[k + 1]! += perPartition[k]!;
    const next = perPartition.slice(0, partitions);
    for (let i = 0; i < n; i++) this.order[next[this.plan[3 * i]!]!++] = i;
    let current = -1;
    for (let j = 0; j < n; j++) {
      const i = this.order[j]!;
      const k = this.plan[3 * i]!;
      if (k !== current) {
        current = k;
        this.writer = output.batch(subjects.enriched(k, this.options.node), `p${k}`);
      }
      this.currentSrc = this.plan[3 * i + 1]!;
      this.currentDst = this.plan[3 * i + 2]!;
      if (this.currentSrc < 0 && this.currentDst < 0) {
        this.writer!.copyRecord(view, i);
        continue;
      }
      view.record(i, record);
      this.writer!.beginRecord();
      this.writer!.copyReplacing(record, this.currentSrc >= 0 && this.currentDst >= 0 ? [R.src, R.dst] : this.currentSrc >= 0 ? [R.src] : [R.dst], this.emitEndpoint);
      this.writer!.endRecord();
    }
    this.writer = undefined;
    this.recordsOut += n;
    this.count(counts);
  }

  /**
   * The process table entry of the local end in `field` (resolving it on first sight), or -1 when
   * the end has no stamped process (none, or pid and cgroup id both 0).
   */
  private localProcess(field: number, counts: Record<Resolution, number>): number {
    const record = this.record;
    if (!record.message(field, this.endpoint)) return -1;
    if (!this.endpoint.message(E.process, this.process)) return -1;
    const process = this.process;
    const pid = process.uint32(P.pid);
    if (pid === 0 && process.isZero(P.cgroupId)) return -1;
    const bytes = process.bytes;
    // The key: pid, comm, cgroup id and start time as stamped (as values, not encodings).
    let cgroupLo = 0;
    let cgroupHi = 0;
    let startLo = 0;
    let startHi = 0;
    if (process.has(P.cgroupId)) {
      varint64Parts(bytes, process.valueStart(P.cgroupId), this.parts);
      cgroupLo = this.parts[0]!;
      cgroupHi = this.parts[1]!;
    }
    if (process.has(P.startTimeTicks)) {
      varint64Parts(bytes, process.valueStart(P.startTimeTicks), this.parts);
      startLo = this.parts[0]!;
      startHi = this.parts[1]!;
    }
    let hash = Math.imul(pid ^ 0x9e3779b9, 0x85ebca6b);
    hash = Math.imul(hash ^ cgroupLo, 0xc2b2ae35) ^ cgroupHi;
    hash = Math.imul(hash ^ startLo, 0x85ebca6b) ^ startHi;
    const nameStart = process.payloadStart(P.name);
    const nameEnd = process.fieldEnd(P.name);
    for (let i = nameStart; i >= 0 && i < nameEnd; i++) hash = Math.imul(hash ^ bytes[i]!, 0x01000193);
    const name = process.interned(P.name, this.names);
    const candidates = this.byHash.get(hash);
    if (candidates) {
      for (const index of candidates) {
        const entry = this.entries[index]!;
        if (entry.pid === pid && entry.name === name && entry.cgroupLo === cgroupLo && entry.cgroupHi === cgroupHi && entry.startLo === startLo && entry.startHi === startHi) {
          this.countResolved(entry.resolved, counts);
          return index;
        }
      }
    }
    const resolved = this.options.resolver.resolve(
      { pid, comm: name, cgroupId: toBigint(cgroupLo, cgroupHi), startTimeTicks: toBigint(startLo, startHi) },
      record.uint64(R.endNs),
    );
    this.countResolved(resolved, counts);
    const entry: ProcessEntry = { hash, pid, name, cgroupLo, cgroupHi, startLo, startHi, resolved, containerName: '', runtime: resolved.container?.runtime ?? '', unnamed: false, named: false, fragment: undefined };
    const containerId = resolved.container?.id ?? '';
    const names = this.options.containerNames;
    if (containerId !== '' && names?.connected) {
      const found = names.name(containerId);
      if (found !== undefined) this.named(entry, found);
      else entry.unnamed = true;
    }
    const index = this.entries.length;
    this.entries.push(entry);
    if (candidates) candidates.push(index);
    else this.byHash.set(hash, [index]);
    return index;
  }

  private countResolved(resolved: ResolvedProcess, counts: Record<Resolution, number>): void {
    counts[resolved.resolution]++;
    if (resolved.cmdline === '' && resolved.exe === '') this.bare[resolved.resolution]++;
  }

  private named(entry: ProcessEntry, name: string): void {
    entry.containerName = name;
    entry.unnamed = false;
    entry.named = true;
    // The cgroupfs driver's path does not name the runtime; the socket that lists the id does.
    const runtime = this.options.containerNames?.runtime;
    if (entry.resolved.container?.inferred === true && runtime) entry.runtime = runtime;
  }

  /** The Process fields the enricher writes, encoded once per distinct process of a batch. */
  private fragmentOf(entry: ProcessEntry): Uint8Array {
    const w = this.fragmentWriter;
    w.reset();
    const r = entry.resolved;
    // In field-number order, defaults left out, as protobuf-es writes them.
    w.stringField(P.name, r.name);
    w.stringField(P.cmdline, r.cmdline);
    w.stringField(P.exe, r.exe);
    w.stringField(P.containerId, r.container?.id ?? '');
    w.stringField(P.containerName, entry.containerName);
    w.stringField(P.containerRuntime, entry.runtime);
    w.uint64Field(P.cgroupId, r.cgroupId);
    w.stringField(P.cgroupPath, r.cgroupPath);
    if (r.uid !== undefined) w.uint32Field(P.uid, r.uid);
    w.uint64Field(P.startTimeTicks, r.startTimeTicks);
    return w.finish();
  }

  /** Container-name lookups, counted per enriched end as they always were. */
  private countNames(records: number): void {
    const metrics = this.options.metrics;
    if (!metrics || records === 0) return;
    let found = 0;
    let unknown = 0;
    for (let i = 0; i < records; i++) {
      for (const e of [this.plan[3 * i + 1]!, this.plan[3 * i + 2]!]) {
        if (e < 0) continue;
        const entry = this.entries[e]!;
        if (entry.named) found++;
        else if (entry.unnamed) unknown++;
      }
    }
    if (found > 0) metrics.containerNames.inc({ result: 'found' }, found);
    if (unknown > 0) metrics.containerNames.inc({ result: 'unknown' }, unknown);
  }

  private count(counts: Record<Resolution, number>): void {
    const m = this.options.metrics;
    if (!m) return;
    for (const [resolution, n] of Object.entries(counts)) if (n > 0) m.records.inc({ resolution }, n);
    for (const [resolution, n] of Object.entries(this.bare)) if (n > 0) m.withoutProcess.inc({ resolution }, n);
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

/** The stage transform: enrichInto with the stage's partitioner. */
export function enrichTransform(enricher: FlowEnricher, partitions: number): StageTransform {
  const partitioner = new Partitioner(partitions);
  return ({ view }: StageBatch, output: StageOutput) => enricher.enrichInto(view, output, partitioner);
}
