// Fills Endpoint.kube on both ends of every record of a batch, as bytes: the local end (the
// vantage says which) by container id first, then IP; the remote end by IP and port, as of the
// time of the flow (endpoint-resolver.ts). Each distinct tag (an object's, with the Service that
// selects the backend and the observing node) is encoded once and spliced into the records'
// received bytes; nothing else of a record is decoded or re-encoded. Answers that hold beyond
// their record are kept by the end's bytes (kept-answers.ts): most records cost two hashes and
// byte compares, no strings and no index lookup. A batch with an end whose
// pod is not known yet is held (the bus redelivers it later) until its hold deadline; past it,
// such ends are tagged `unknown`.
import { HoldBatch, subjects } from '@kappa/bus';
import type { StageTransform } from '@kappa/bus';
import { create, decodeFlowBatch, encodeField, encodeFlowBatch, EndpointSchema, FlowBatchView, FlowBatchWriter, FlowFields, KubeSchema, MessageCursor, Partitioner, ProcessSchema, sameRange, StringInterner, toBinary, Vantage } from '@kappa/contracts';
import type { FlowBatch, Kube } from '@kappa/contracts';
import { kubeOf, localEnd, newEndTag, remoteEnd } from './endpoint-resolver.js';
import type { EndFacts, EndTag } from './endpoint-resolver.js';
import { KeptAnswer, KeptAnswers } from './kept-answers.js';
import { newKubeTag } from './kube-index.js';
import type { KubeIndex } from './kube-index.js';
import type { TaggerMetrics } from './metrics.js';

export type EndRole = 'local' | 'remote';

export interface TaggingStats {
  records: number;
  /** Per end: how many endpoints resolved to a Kubernetes object, and how many did not. */
  hits: Record<EndRole, number>;
  misses: Record<EndRole, number>;
  /** Ends whose pod was expected but not known: held (the batch comes back) or given up. */
  pending: Record<EndRole, number>;
  /** Pending ends tagged as they were when the hold deadline passed. */
  unknown: Record<EndRole, number>;
}

export interface Tagger {
  /** undefined: no cluster configured, tag node names only. */
  index: KubeIndex | undefined;
  clusterId(): number;
  readonly metrics?: TaggerMetrics;
}

/** Hold a batch with unknown pods while `nowNs` is before `deadlineNs`; retry after delayMs. */
export interface HoldPolicy {
  nowNs: bigint;
  deadlineNs: bigint;
  retryDelayMs: number;
}

export function emptyStats(): TaggingStats {
  return {
    records: 0,
    hits: { local: 0, remote: 0 },
    misses: { local: 0, remote: 0 },
    pending: { local: 0, remote: 0 },
    unknown: { local: 0, remote: 0 },
  };
}

const R = FlowFields.FlowRecord;
const E = FlowFields.Endpoint;
const P = FlowFields.Process;
const EMPTY = new Uint8Array(0);
const KUBEPODS = Buffer.from('kubepods');

/** A Kube as the `kube` field of an Endpoint: tag, length, payload. */
function kubeField(kube: Kube): Uint8Array {
  return encodeField(E.kube, toBinary(KubeSchema, kube));
}

/** The encoded kube fields of one shared base: the last one used, and the others by Service and node. */
interface BaseFields {
  service: EndTag['service'];
  node: string | undefined;
  field: Uint8Array | undefined;
  others: Map<string, Map<string, Uint8Array>> | undefined;
}

/**
 * Encoded kube fields, one per distinct tag: per shared base (the index's tag object, which is
 * replaced whenever what it says changes; gone with it), Service name and namespace, and node.
 */
class KubeFields {
  private readonly byBase = new WeakMap<Kube, BaseFields>();
  private readonly nodeOnly = new Map<string, Uint8Array>();

  of(tag: EndTag): Uint8Array {
    let entry = this.byBase.get(tag.base);
    if (!entry) this.byBase.set(tag.base, (entry = { service: undefined, node: undefined, field: undefined, others: undefined }));
    // Most ends of one object come with the same Service and node as the last time.
    const service = tag.service;
    const node = tag.node;
    if (entry.field !== undefined && entry.service === service && entry.node === node) return entry.field;
    const key = node === undefined ? '\0' : node;
    const serviceKey = service === undefined ? '' : service.key;
    entry.others ??= new Map();
    let byNode = entry.others.get(serviceKey);
    if (!byNode) entry.others.set(serviceKey, (byNode = new Map()));
    let field = byNode.get(key);
    if (!field) {
      if (byNode.size >= 4096) byNode.clear();
      byNode.set(key, (field = kubeField(kubeOf(tag))));
    }
    entry.service = service;
    entry.node = node;
    entry.field = field;
    return field;
  }

  /** No cluster configured: the local end is its node, by name only. */
  node(node: string): Uint8Array {
    let field = this.nodeOnly.get(node);
    if (!field) {
      if (this.nodeOnly.size >= 4096) this.nodeOnly.clear();
      this.nodeOnly.set(node, (field = kubeField(create(KubeSchema, { node }))));
    }
    return field;
  }
}

/** Tags batches as bytes; one per stage (its cursors, strings and encoded tags are reused). */
export class BatchTagger {
  private readonly record = FlowBatchView.recordCursor();
  private readonly local = new MessageCursor(EndpointSchema);
  private readonly remote = new MessageCursor(EndpointSchema);
  private readonly process = new MessageCursor(ProcessSchema);
  private readonly strings = new StringInterner(65_536);
  private readonly fields = new KubeFields();
  private readonly localFacts = new LocalFacts();
  private readonly remoteFacts: EndFacts = { ip: '', port: 0, containerId: '', inPodCgroup: false };
  private readonly localTag = newEndTag();
  private readonly remoteTag = newEndTag();
  private readonly indexTag = newKubeTag();
  /** Local ends' answers by container id (on the node they were made for). */
  private readonly byContainer = new KeptAnswers();
  /** Remote ends' answers by address. */
  private readonly byAddress = new KeptAnswers();
  /** The answer of an end that is not kept (a record's own). */
  private readonly localOnce = new KeptAnswer();
  private readonly remoteOnce = new KeptAnswer();
  /** Per record of the batch: the encoded kube field of the local end and of the remote end. */
  private tags: (Uint8Array | undefined)[] = [];
  /**
   * Per record of the batch, found by the first pass so that the second does not parse the record
   * again: whether the local end is dst, then of the local and the remote end's field its start
   * (-1: absent), payload start and end.
   */
  private spans = new Int32Array(SPAN * 1024);
  // Cursors of the second pass over the record and its ends: only their ranges are read
  // (copyReplacing), set from `spans`.
  private readonly recordSpan = FlowBatchView.recordCursor();
  private readonly localSpan = new MessageCursor(EndpointSchema);
  private readonly remoteSpan = new MessageCursor(EndpointSchema);
  private at = 0;
  // The record being written, read by the hoisted emit callbacks.
  private writer: FlowBatchWriter | undefined;
  private localField = 0;
  private localKube: Uint8Array = EMPTY;
  private remoteKube: Uint8Array | undefined;
  private endpointKube: Uint8Array = EMPTY;
  private clusterId = 0;
  private readonly emitKube = (): void => {
    this.writer!.raw(this.endpointKube);
  };
  private readonly emitRecordField = (field: number): void => {
    const writer = this.writer!;
    if (field === R.clusterId) {
      writer.uint32Field(R.clusterId, this.clusterId);
      return;
    }
    const isLocal = field === this.localField;
    const kube = isLocal ? this.localKube : this.remoteKube;
    const spans = this.spans;
    const at = this.at + (isLocal ? 1 : 4);
    const present = spans[at]! >= 0;
    if (kube === undefined) {
      // No tag for this end (no cluster): as it came, or an empty Endpoint.
      if (present) writer.raw(this.recordSpan.bytes, spans[at]!, spans[at + 2]!);
      else writer.bytesField(field, EMPTY, true);
      return;
    }
    const mark = writer.begin(field, 2);
    this.endpointKube = kube;
    if (present) {
      const end = isLocal ? this.localSpan : this.remoteSpan;
      end.bytes = this.recordSpan.bytes;
      end.start = spans[at + 1]!;
      end.end = spans[at + 2]!;
      writer.copyReplacing(end, KUBE, this.emitKube);
    } else writer.raw(kube);
    writer.end(mark);
  };

  constructor(private readonly tagger: Tagger) {}

  /**
   * Tags every record of `view` into `writer` (a batch already open). Throws HoldBatch (nothing
   * written) when an end's pod is not known yet and `hold` allows waiting.
   */
  tagInto(view: FlowBatchView, writer: FlowBatchWriter, stats: TaggingStats, hold?: HoldPolicy): void {
    const n = view.length;
    if (this.tags.length < 2 * n) this.tags = new Array<Uint8Array | undefined>(2 * n);
    if (this.spans.length < SPAN * n) this.spans = new Int32Array(SPAN * n);
    this.resolve(view, stats, hold);
    const clusterId = this.tagger.clusterId();
    const replaced = clusterId !== 0 ? REPLACED_WITH_CLUSTER : REPLACED;
    this.clusterId = clusterId;
    this.writer = writer;
    const record = this.recordSpan;
    record.bytes = view.bytes;
    for (let i = 0; i < n; i++) {
      record.start = view.recordStart(i);
      record.end = view.recordEnd(i);
      this.at = SPAN * i;
      this.localField = this.spans[SPAN * i] === 1 ? R.dst : R.src;
      this.localKube = this.tags[2 * i]!;
      this.remoteKube = this.tags[2 * i + 1];
      writer.beginRecord();
      writer.copyReplacing(record, replaced, this.emitRecordField);
      writer.endRecord();
    }
    this.writer = undefined;
    this.tags.fill(undefined, 0, 2 * n);
  }

  /** Pass 1: each record's two encoded tags, the counts, and whether to hold the batch. */
  private resolve(view: FlowBatchView, stats: TaggingStats, hold: HoldPolicy | undefined): void {
    const index = this.tagger.index;
    const createdNs = view.createdNs;
    const fallbackNs = createdNs > 0n ? createdNs : BigInt(Date.now()) * 1_000_000n;
    const record = this.record;
    let pending = 0;
    let pendingLocal = 0;
    let pendingRemote = 0;
    let latestNs = 0n;
    // Index changes come between batches (informer events), never during one.
    const version = index ? index.version : 0;
    const spans = this.spans;
    for (let i = 0; i < view.length; i++) {
      view.record(i, record);
      stats.records += 1;
      // SRC: the local end initiated (it is src); DST: the local end accepted (it is dst).
      const localIsDst = record.int32(R.vantage) === Vantage.DST;
      const localField = localIsDst ? R.dst : R.src;
      const remoteField = localIsDst ? R.src : R.dst;
      const at = SPAN * i;
      spans[at] = localIsDst ? 1 : 0;
      spans[at + 1] = record.fieldStart(localField);
      spans[at + 2] = record.payloadStart(localField);
      spans[at + 3] = record.fieldEnd(localField);
      spans[at + 4] = record.fieldStart(remoteField);
      spans[at + 5] = record.payloadStart(remoteField);
      spans[at + 6] = record.fieldEnd(remoteField);
      if (!index) {
        this.tags[2 * i] = this.fields.node(record.interned(R.node, this.strings));
        this.tags[2 * i + 1] = undefined;
        continue;
      }
      // The time a record's tags must reflect: the start of its interval.
      const atNs = !record.isZero(R.startNs) ? record.uint64(R.startNs) : !record.isZero(R.firstSeenNs) ? record.uint64(R.firstSeenNs) : fallbackNs;
      if (atNs > latestNs) latestNs = atNs;
      record.message(localField, this.local);
      record.message(remoteField, this.remote);
      const l = this.localAnswer(index, atNs, version);
      const r = this.remoteAnswer(index, atNs, version);
      this.tags[2 * i] = l.fieldOn(this.local.uint32(E.port));
      this.tags[2 * i + 1] = r.fieldOn(this.remote.uint32(E.port));
      if (l.hit) stats.hits.local += 1;
      else stats.misses.local += 1;
      if (r.hit) stats.hits.remote += 1;
      else stats.misses.remote += 1;
      if (l.pending) pendingLocal += 1;
      if (r.pending) pendingRemote += 1;
      if (l.pending || r.pending) pending += 1;
    }
    stats.pending.local += pendingLocal;
    stats.pending.remote += pendingRemote;
    if (pending > 0 && hold && hold.nowNs < hold.deadlineNs) {
      const leftMs = Number((hold.deadlineNs - hold.nowNs) / 1_000_000n);
      throw new HoldBatch(Math.max(1, Math.min(hold.retryDelayMs, leftMs)), 'pod-not-known');
    }
    stats.unknown.local += pendingLocal;
    stats.unknown.remote += pendingRemote;
    if (index) index.observeFlowTime(latestNs);
  }

  /** The local end's answer: kept by container id (on this node), else resolved. */
  private localAnswer(index: KubeIndex, atNs: bigint, version: number): KeptAnswer {
    const record = this.record;
    const process = this.process;
    if (!this.local.message(E.process, process) || process.byteLength(P.containerId) === 0) return this.resolveLocal(index, atNs, undefined, version);
    const idStart = process.payloadStart(P.containerId);
    const idEnd = process.fieldEnd(P.containerId);
    const kept = this.byContainer.get(process.bytes, idStart, idEnd);
    if (kept !== undefined && kept.holds(version, atNs) && sameRange(kept.node, 0, kept.node.length, record.bytes, record.payloadStart(R.node), record.fieldEnd(R.node))) return kept;
    return this.resolveLocal(index, atNs, kept ?? this.byContainer.add(process.bytes, idStart, idEnd), version);
  }

  /** The remote end's answer: kept by address, else resolved. */
  private remoteAnswer(index: KubeIndex, atNs: bigint, version: number): KeptAnswer {
    const end = this.remote;
    // An absent address is the empty one.
    const ipStart = end.has(E.ip) ? end.payloadStart(E.ip) : 0;
    const ipEnd = end.has(E.ip) ? end.fieldEnd(E.ip) : 0;
    const kept = this.byAddress.get(end.bytes, ipStart, ipEnd);
    if (kept !== undefined && kept.holds(version, atNs)) return kept;
    return this.resolveRemote(index, atNs, kept ?? this.byAddress.add(end.bytes, ipStart, ipEnd), version);
  }

  /** The local end resolved (strings, index lookups); kept in `keep` when it may be. */
  private resolveLocal(index: KubeIndex, atNs: bigint, keep: KeptAnswer | undefined, version: number): KeptAnswer {
    const node = this.record.interned(R.node, this.strings);
    const facts = this.localFactsOf(this.local);
    const protocol = this.record.uint32(R.protocol);
    const answer = this.resolveOrKeep(index, keep, this.localOnce, version, facts.port, (port) => {
      facts.port = port;
      return localEnd(index, node, facts, protocol, atNs, this.indexTag, this.localTag);
    });
    if (answer === keep) {
      const record = this.record;
      keep.node = record.has(R.node) ? record.bytes.slice(record.payloadStart(R.node), record.fieldEnd(R.node)) : EMPTY;
    }
    return answer;
  }

  private resolveRemote(index: KubeIndex, atNs: bigint, keep: KeptAnswer, version: number): KeptAnswer {
    const node = this.record.interned(R.node, this.strings);
    const facts = this.remoteFactsOf(this.remote);
    const protocol = this.record.uint32(R.protocol);
    return this.resolveOrKeep(index, keep, this.remoteOnce, version, facts.port, (port) => {
      facts.port = port;
      return remoteEnd(index, node, facts, protocol, atNs, this.indexTag, this.remoteTag);
    });
  }

  /**
   * An end resolved on the record's port; when the answer may be kept, `keep` filled and
   * returned: the answer on every port at which a Service lists the end as a backend (each
   * resolved), and on any other port (the record's, or port 0: no Service by backend). It holds
   * where all of them hold. Else `once`, the record's own answer.
   */
  private resolveOrKeep(index: KubeIndex, keep: KeptAnswer | undefined, once: KeptAnswer, version: number, port: number, resolveOn: (port: number) => EndTag): KeptAnswer {
    const tag = resolveOn(port);
    if (keep === undefined || !tag.reusable) {
      if (keep !== undefined) keep.version = -1;
      once.field = this.fields.of(tag);
      once.hit = tag.hit;
      once.pending = tag.pending;
      return once;
    }
    keep.version = version;
    keep.fromNs = tag.fromNs;
    keep.untilNs = tag.untilNs;
    keep.hit = tag.hit;
    keep.pending = tag.pending;
    keep.ports.length = 0;
    keep.portFields.length = 0;
    const field = this.fields.of(tag);
    const backendPorts = tag.backendIp === undefined ? NO_PORTS : index.services.backendPortsOf(tag.backendIp);
    if (port !== 0 && backendPorts.includes(port)) {
      keep.ports.push(port);
      keep.portFields.push(field);
      keep.field = this.keptOn(keep, resolveOn(0));
    } else keep.field = field;
    for (const other of backendPorts) {
      if (other === 0 || other === port) continue;
      keep.ports.push(other);
      keep.portFields.push(this.keptOn(keep, resolveOn(other)));
    }
    return keep;
  }

  /** One more port's answer of a kept one: it narrows where the answer holds. */
  private keptOn(keep: KeptAnswer, tag: EndTag): Uint8Array {
    // The counts are the same on every port (only the Service by backend differs); were they
    // not, the answer is not kept (this record's is still right).
    if (!tag.reusable || tag.hit !== keep.hit || tag.pending !== keep.pending) keep.version = -1;
    if (tag.fromNs > keep.fromNs) keep.fromNs = tag.fromNs;
    if (tag.untilNs < keep.untilNs) keep.untilNs = tag.untilNs;
    return this.fields.of(tag);
  }

  /** What the resolver reads of the local end (strings interned: no allocation). */
  private localFactsOf(end: MessageCursor): EndFacts {
    const facts = this.localFacts;
    facts.ip = end.byteLength(E.ip) > 0 ? end.interned(E.ip, this.strings) : '';
    facts.port = end.uint32(E.port);
    facts.containerId = '';
    facts.cgroup(EMPTY, -1, -1);
    if (end.message(E.process, this.process)) {
      const process = this.process;
      if (process.byteLength(P.containerId) > 0) facts.containerId = process.interned(P.containerId, this.strings);
      facts.cgroup(process.bytes, process.payloadStart(P.cgroupPath), process.fieldEnd(P.cgroupPath));
    }
    return facts;
  }

  /** What the resolver reads of the remote end: its address and port. */
  private remoteFactsOf(end: MessageCursor): EndFacts {
    const facts = this.remoteFacts;
    facts.ip = end.byteLength(E.ip) > 0 ? end.interned(E.ip, this.strings) : '';
    facts.port = end.uint32(E.port);
    return facts;
  }
}

/**
 * The local end's facts. Whether its cgroup is the kubelet's is a search through the cgroup
 * path, needed only when the container id finds no pod: done then, on the record's bytes.
 */
class LocalFacts implements EndFacts {
  ip = '';
  port = 0;
  containerId = '';
  private bytes: Uint8Array = EMPTY;
  private start = -1;
  private end = -1;

  cgroup(bytes: Uint8Array, start: number, end: number): void {
    this.bytes = bytes;
    this.start = start;
    this.end = end;
  }

  get inPodCgroup(): boolean {
    return contains(this.bytes, this.start, this.end, KUBEPODS);
  }
}

const NO_PORTS: readonly number[] = [];
/** Int32s per record in BatchTagger.spans. */
const SPAN = 7;
const KUBE = [E.kube];
const REPLACED = [R.src, R.dst].sort((a, b) => a - b);
const REPLACED_WITH_CLUSTER = [R.src, R.dst, R.clusterId].sort((a, b) => a - b);

/** Whether bytes[start, end) contains `needle` (start < 0: the field is absent). */
function contains(bytes: Uint8Array, start: number, end: number, needle: Uint8Array): boolean {
  if (start < 0) return false;
  const last = end - needle.length;
  outer: for (let i = start; i <= last; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/**
 * The stage transform: one input batch of partition k → one tagged output batch of partition k
 * (kappa.flow.tagged.p<k>, id `k8s-tagger:<input id>`). Input without a partition token (an
 * enricher of an older version) is routed record by record (`…:p<k>` outputs).
 */
export function tagTransform(tagger: Tagger, partitions: number, holdMaxMs = 10_000): StageTransform {
  const batchTagger = new BatchTagger(tagger);
  const partitioner = new Partitioner(partitions);
  const cursor = FlowBatchView.recordCursor();
  return ({ view, partition, storedNs }, output) => {
    const stats = emptyStats();
    // Ends whose pod is not known yet hold the batch (HoldBatch: the runner naks it with the
    // delay) until holdMaxMs after its first arrival.
    const hold = { nowNs: BigInt(Date.now()) * 1_000_000n, deadlineNs: storedNs + BigInt(holdMaxMs) * 1_000_000n, retryDelayMs: 500 };
    try {
      if (partition !== undefined) {
        batchTagger.tagInto(view, output.batch(subjects.tagged(partition)), stats, hold);
      } else {
        // Legacy input: tagged whole (one hold decision), then split by partition.
        const tagged = new FlowBatchWriter();
        tagged.open({ batchId: view.batchId, producer: view.producer, createdNs: view.createdNs }, Number.MAX_SAFE_INTEGER);
        batchTagger.tagInto(view, tagged, stats, hold);
        const all = new FlowBatchView().parse(tagged.parts()[0]!.bytes);
        const byPartition = new Map<number, number[]>();
        for (let i = 0; i < all.length; i++) {
          const k = partitioner.of(all.record(i, cursor));
          let list = byPartition.get(k);
          if (!list) byPartition.set(k, (list = []));
          list.push(i);
        }
        for (const [k, indexes] of [...byPartition].sort((a, b) => a[0] - b[0])) {
          const writer = output.batch(subjects.tagged(k), `p${k}`);
          for (const i of indexes) writer.copyRecord(all, i);
        }
      }
    } catch (error) {
      if (error instanceof HoldBatch) tagger.metrics?.recordHeld(stats);
      throw error;
    }
    tagger.metrics?.recordTagged(stats);
  };
}

/**
 * Tags a FlowBatch object through the byte path (tests, tools): encoded, tagged as bytes,
 * decoded; re-stamped `k8s-tagger:<id>` with `producer`. Throws HoldBatch as the transform does.
 */
export function tagBatch(tagger: Tagger, input: FlowBatch, producer: string, stats: TaggingStats, hold?: HoldPolicy): FlowBatch {
  const view = new FlowBatchView().parse(encodeFlowBatch(input));
  const writer = new FlowBatchWriter();
  writer.open({ batchId: `k8s-tagger:${input.batchId}`, producer, createdNs: BigInt(Date.now()) * 1_000_000n }, Number.MAX_SAFE_INTEGER);
  new BatchTagger(tagger).tagInto(view, writer, stats, hold);
  return decodeFlowBatch(writer.parts()[0]!.bytes);
}
