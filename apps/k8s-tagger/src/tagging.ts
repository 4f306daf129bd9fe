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
import { create, decodeFlowBatch, encodeField, encodeFlowBatch, EndpointSchema, FlowBatchView, FlowBatchWriter, FlowFields, KubeSchema, MessageCursor, Partitioner, ProcessSchema, StringInterner, toBinary, Vantage } from '@kappa/contracts';
import type { FlowBatch, Kube } from '@kappa/contracts';
import { kubeOf, localEnd, newEndTag, remoteEnd } from './endpoint-resolver.js';
import type { EndFacts, EndTag } from './endpoint-resolver.js';
import { Answer, highOf, KeptAnswers, lowOf } from './kept-answers.js';
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
  /** An end's answer as the resolver made it (kept from there, or the record's own). */
  private readonly localMade = new Answer();
  private readonly remoteMade = new Answer();
  /**
   * Per record of the batch: the encoded kube field of the local end and of the remote end, when
   * it is not a kept answer's (then spans says where it is in the kept answers' bytes).
   */
  private tags: (Uint8Array | undefined)[] = [];
  /**
   * Per record of the batch, found by the first pass so that the second does not parse the record
   * again (SPAN int32s): flags (LOCAL_IS_DST, IN_ORDER), then of the local and the remote end its
   * field's start (-1: absent), payload start and end and where its kube field goes (cut start,
   * cut end), then where the record's src, dst and cluster_id go (start, end each), then where
   * the local and the remote end's kube field is in the kept answers' bytes (start, end; -1: in
   * tags, or none). The cuts are
   * copyReplacing's answer for a message whose fields come in ascending order, each once (as
   * protobuf-es writes them): then the second pass copies the ranges between the cuts, without
   * walking the bytes again.
   */
  private spans = new Int32Array(SPAN * 1024);
  // Cursors of the second pass for a record whose fields are not in order (rare): indexed again
  // there, for copyReplacing.
  private readonly recordAgain = FlowBatchView.recordCursor();
  private readonly endAgain = new MessageCursor(EndpointSchema);
  private at = 0;
  private inOrder = false;
  private bytes: Uint8Array = EMPTY;
  // The last time field decoded (timeOf): its varint bytes and value.
  private readonly lastTime = new Uint8Array(10);
  private lastTimeLength = -1;
  private lastTimeNs = 0n;
  // Its int64 halves, as kept answers compare times.
  private lastTimeHi = 0;
  private lastTimeLo = 0;
  // The record being written, read by the hoisted emit callbacks.
  private writer: FlowBatchWriter | undefined;
  private localField = 0;
  // The kube fields of the record's ends: bytes[start, end) (remote undefined: no tag).
  private localKube: Uint8Array = EMPTY;
  private localKubeStart = 0;
  private localKubeEnd = 0;
  private remoteKube: Uint8Array | undefined;
  private remoteKubeStart = 0;
  private remoteKubeEnd = 0;
  private endpointKube: Uint8Array = EMPTY;
  private endpointKubeStart = 0;
  private endpointKubeEnd = 0;
  private clusterId = 0;
  private readonly emitKube = (): void => {
    this.writer!.raw(this.endpointKube, this.endpointKubeStart, this.endpointKubeEnd);
  };
  private readonly emitRecordField = (field: number): void => {
    const writer = this.writer!;
    if (field === R.clusterId) {
      writer.uint32Field(R.clusterId, this.clusterId);
      return;
    }
    const isLocal = field === this.localField;
    const kube = isLocal ? this.localKube : this.remoteKube;
    const kubeStart = isLocal ? this.localKubeStart : this.remoteKubeStart;
    const kubeEnd = isLocal ? this.localKubeEnd : this.remoteKubeEnd;
    const spans = this.spans;
    const at = this.at + (isLocal ? LOCAL : REMOTE);
    const present = spans[at]! >= 0;
    const bytes = this.bytes;
    if (kube === undefined) {
      // No tag for this end (no cluster): as it came, or an empty Endpoint.
      if (present) writer.raw(bytes, spans[at]!, spans[at + 2]!);
      else writer.bytesField(field, EMPTY, true);
      return;
    }
    const mark = writer.begin(field, 2);
    if (!present) writer.raw(kube, kubeStart, kubeEnd);
    else if (this.inOrder) {
      writer.raw(bytes, spans[at + 1]!, spans[at + 3]!);
      writer.raw(kube, kubeStart, kubeEnd);
      writer.raw(bytes, spans[at + 4]!, spans[at + 2]!);
    } else {
      this.endpointKube = kube;
      this.endpointKubeStart = kubeStart;
      this.endpointKubeEnd = kubeEnd;
      writer.copyReplacing(this.endAgain.reset(bytes, spans[at + 1]!, spans[at + 2]!), KUBE, this.emitKube);
    }
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
    // Read after the first pass: keeping answers may have grown them.
    const localKept = this.byContainer.bytes;
    const remoteKept = this.byAddress.bytes;
    const clusterId = this.tagger.clusterId();
    const replaced = clusterId !== 0 ? REPLACED_WITH_CLUSTER : REPLACED;
    this.clusterId = clusterId;
    this.writer = writer;
    const bytes = (this.bytes = view.bytes);
    const spans = this.spans;
    for (let i = 0; i < n; i++) {
      const at = (this.at = SPAN * i);
      const flags = spans[at]!;
      this.localField = (flags & LOCAL_IS_DST) !== 0 ? R.dst : R.src;
      const localTag = this.tags[2 * i];
      if (localTag !== undefined) {
        this.localKube = localTag;
        this.localKubeStart = 0;
        this.localKubeEnd = localTag.length;
      } else {
        this.localKube = localKept;
        this.localKubeStart = spans[at + KEPT]!;
        this.localKubeEnd = spans[at + KEPT + 1]!;
      }
      const remoteTag = this.tags[2 * i + 1];
      if (remoteTag !== undefined) {
        this.remoteKube = remoteTag;
        this.remoteKubeStart = 0;
        this.remoteKubeEnd = remoteTag.length;
      } else if (spans[at + KEPT + 2]! >= 0) {
        this.remoteKube = remoteKept;
        this.remoteKubeStart = spans[at + KEPT + 2]!;
        this.remoteKubeEnd = spans[at + KEPT + 3]!;
      } else this.remoteKube = undefined;
      writer.beginRecord();
      if ((this.inOrder = (flags & IN_ORDER) !== 0)) {
        // copyReplacing's output, from the first pass's cuts.
        writer.raw(bytes, view.recordStart(i), spans[at + CUTS]!);
        this.emitRecordField(R.src);
        writer.raw(bytes, spans[at + CUTS + 1]!, spans[at + CUTS + 2]!);
        this.emitRecordField(R.dst);
        if (clusterId !== 0) {
          writer.raw(bytes, spans[at + CUTS + 3]!, spans[at + CUTS + 4]!);
          writer.uint32Field(R.clusterId, clusterId);
          writer.raw(bytes, spans[at + CUTS + 5]!, view.recordEnd(i));
        } else writer.raw(bytes, spans[at + CUTS + 3]!, view.recordEnd(i));
      } else writer.copyReplacing(view.record(i, this.recordAgain), replaced, this.emitRecordField);
      writer.endRecord();
    }
    this.writer = undefined;
    this.bytes = EMPTY;
    this.localKube = EMPTY;
    this.remoteKube = undefined;
    this.tags.fill(undefined, 0, 2 * n);
  }

  /** Pass 1: each record's two encoded tags, the counts, and whether to hold the batch. */
  private resolve(view: FlowBatchView, stats: TaggingStats, hold: HoldPolicy | undefined): void {
    const index = this.tagger.index;
    const createdNs = view.createdNs;
    const fallbackNs = createdNs > 0n ? createdNs : BigInt(Date.now()) * 1_000_000n;
    const fallbackHi = highOf(fallbackNs);
    const fallbackLo = lowOf(fallbackNs);
    // Ranges noted below stay valid through the second pass: no starting over during a batch.
    this.byContainer.startBatch();
    this.byAddress.startBatch();
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
      spans[at + LOCAL] = record.fieldStart(localField);
      spans[at + LOCAL + 2] = record.fieldEnd(localField);
      spans[at + REMOTE] = record.fieldStart(remoteField);
      spans[at + REMOTE + 2] = record.fieldEnd(remoteField);
      let inOrder = cutsOf(record, REPLACED_WITH_CLUSTER, spans, at + CUTS);
      if (record.message(localField, this.local)) {
        spans[at + LOCAL + 1] = this.local.start;
        inOrder &&= cutsOf(this.local, KUBE, spans, at + LOCAL + 3);
      }
      if (!index) {
        spans[at] = (localIsDst ? LOCAL_IS_DST : 0) | (inOrder ? IN_ORDER : 0);
        spans[at + KEPT + 2] = -1;
        this.tags[2 * i] = this.fields.node(record.interned(R.node, this.strings));
        this.tags[2 * i + 1] = undefined;
        continue;
      }
      if (record.message(remoteField, this.remote)) {
        spans[at + REMOTE + 1] = this.remote.start;
        inOrder &&= cutsOf(this.remote, KUBE, spans, at + REMOTE + 3);
      }
      spans[at] = (localIsDst ? LOCAL_IS_DST : 0) | (inOrder ? IN_ORDER : 0);
      // The time a record's tags must reflect: the start of its interval.
      let atNs = fallbackNs;
      let atHi = fallbackHi;
      let atLo = fallbackLo;
      const timeField = !record.isZero(R.startNs) ? R.startNs : !record.isZero(R.firstSeenNs) ? R.firstSeenNs : 0;
      if (timeField !== 0) {
        atNs = this.timeOf(record, timeField);
        atHi = this.lastTimeHi;
        atLo = this.lastTimeLo;
      }
      if (atNs > latestNs) latestNs = atNs;
      const localPending = this.tagLocal(index, i, atNs, atHi, atLo, version, stats);
      const remotePending = this.tagRemote(index, i, atNs, atHi, atLo, version, stats);
      if (localPending) pendingLocal += 1;
      if (remotePending) pendingRemote += 1;
      if (localPending || remotePending) pending += 1;
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

  /**
   * A uint64 time field of the record; the records of one interval share their start, so the
   * value is decoded (a bigint made) only when its bytes differ from the last one's.
   */
  private timeOf(record: MessageCursor, field: number): bigint {
    const bytes = record.bytes;
    const start = record.valueStart(field);
    const n = record.fieldEnd(field) - start;
    const last = this.lastTime;
    if (n === this.lastTimeLength) {
      let i = 0;
      while (i < n && bytes[start + i] === last[i]) i++;
      if (i === n) return this.lastTimeNs;
    }
    // A canonical varint takes at most 10 bytes.
    for (let i = 0; i < n; i++) last[i] = bytes[start + i]!;
    this.lastTimeLength = n;
    const ns = (this.lastTimeNs = record.uint64(field));
    this.lastTimeHi = highOf(ns);
    this.lastTimeLo = lowOf(ns);
    return ns;
  }

  /**
   * Record i's local end: kept by container id (made on this record's node), else resolved (and
   * kept when it may be). Notes its kube field, counts it; returns whether it is pending.
   */
  private tagLocal(index: KubeIndex, i: number, atNs: bigint, atHi: number, atLo: number, version: number, stats: TaggingStats): boolean {
    const record = this.record;
    const process = this.process;
    const kept = this.byContainer;
    const at = SPAN * i + KEPT;
    let entry = -1;
    let made: Answer | undefined;
    if (this.local.message(E.process, process) && process.byteLength(P.containerId) > 0) {
      const idStart = process.payloadStart(P.containerId);
      const idEnd = process.fieldEnd(P.containerId);
      const hasNode = record.has(R.node);
      const nodeStart = hasNode ? record.payloadStart(R.node) : 0;
      const nodeEnd = hasNode ? record.fieldEnd(R.node) : 0;
      entry = kept.find(process.bytes, idStart, idEnd);
      if (entry < 0 || !kept.holds(entry, version, atHi, atLo) || !kept.madeFor(entry, record.bytes, nodeStart, nodeEnd)) {
        made = this.resolveLocal(index, atNs, true, version);
        if (made.version !== -1) entry = kept.keep(entry, process.bytes, idStart, idEnd, record.bytes, nodeStart, nodeEnd, made);
        else if (entry >= 0) {
          kept.forget(entry);
          entry = -1;
        }
      }
    } else made = this.resolveLocal(index, atNs, false, version);
    const port = this.local.uint32(E.port);
    let hit: boolean;
    let pending: boolean;
    if (entry >= 0) {
      this.spans[at] = kept.fieldOn(entry, port);
      this.spans[at + 1] = kept.fieldEnd;
      this.tags[2 * i] = undefined;
      hit = kept.hit(entry);
      pending = kept.pending(entry);
    } else {
      this.tags[2 * i] = made!.fieldOn(port);
      hit = made!.hit;
      pending = made!.pending;
    }
    if (hit) stats.hits.local += 1;
    else stats.misses.local += 1;
    return pending;
  }

  /** Record i's remote end: kept by address, else resolved and kept. As tagLocal. */
  private tagRemote(index: KubeIndex, i: number, atNs: bigint, atHi: number, atLo: number, version: number, stats: TaggingStats): boolean {
    const end = this.remote;
    const kept = this.byAddress;
    const at = SPAN * i + KEPT + 2;
    // An absent address is the empty one.
    const hasIp = end.has(E.ip);
    const ipStart = hasIp ? end.payloadStart(E.ip) : 0;
    const ipEnd = hasIp ? end.fieldEnd(E.ip) : 0;
    let entry = kept.find(end.bytes, ipStart, ipEnd);
    let made: Answer | undefined;
    if (entry < 0 || !kept.holds(entry, version, atHi, atLo)) {
      made = this.resolveRemote(index, atNs, version);
      if (made.version !== -1) entry = kept.keep(entry, end.bytes, ipStart, ipEnd, EMPTY, 0, 0, made);
      else if (entry >= 0) {
        kept.forget(entry);
        entry = -1;
      }
    }
    const port = end.uint32(E.port);
    let hit: boolean;
    let pending: boolean;
    if (entry >= 0) {
      this.spans[at] = kept.fieldOn(entry, port);
      this.spans[at + 1] = kept.fieldEnd;
      this.tags[2 * i + 1] = undefined;
      hit = kept.hit(entry);
      pending = kept.pending(entry);
    } else {
      this.spans[at] = -1;
      this.tags[2 * i + 1] = made!.fieldOn(port);
      hit = made!.hit;
      pending = made!.pending;
    }
    if (hit) stats.hits.remote += 1;
    else stats.misses.remote += 1;
    return pending;
  }

  /** The local end resolved (strings, index lookups); to keep when `keepable` and it may be. */
  private resolveLocal(index: KubeIndex, atNs: bigint, keepable: boolean, version: number): Answer {
    const node = this.record.interned(R.node, this.strings);
    const facts = this.localFactsOf(this.local);
    const protocol = this.record.uint32(R.protocol);
    return this.resolveAnswer(index, keepable, this.localMade, version, facts.port, (port) => {
      facts.port = port;
      return localEnd(index, node, facts, protocol, atNs, this.indexTag, this.localTag);
    });
  }

  private resolveRemote(index: KubeIndex, atNs: bigint, version: number): Answer {
    const node = this.record.interned(R.node, this.strings);
    const facts = this.remoteFactsOf(this.remote);
    const protocol = this.record.uint32(R.protocol);
    return this.resolveAnswer(index, true, this.remoteMade, version, facts.port, (port) => {
      facts.port = port;
      return remoteEnd(index, node, facts, protocol, atNs, this.indexTag, this.remoteTag);
    });
  }

  /**
   * An end resolved on the record's port into `answer`. When it may be kept (version set): the
   * answer on every port at which a Service lists the end as a backend (each resolved), and on
   * any other port (the record's, or port 0: no Service by backend); it holds where all of them
   * hold. Else (version -1) the record's own answer.
   */
  private resolveAnswer(index: KubeIndex, keepable: boolean, answer: Answer, version: number, port: number, resolveOn: (port: number) => EndTag): Answer {
    const tag = resolveOn(port);
    answer.ports.length = 0;
    answer.portFields.length = 0;
    answer.hit = tag.hit;
    answer.pending = tag.pending;
    const field = this.fields.of(tag);
    if (!keepable || !tag.reusable) {
      answer.version = -1;
      answer.field = field;
      return answer;
    }
    answer.version = version;
    answer.fromNs = tag.fromNs;
    answer.untilNs = tag.untilNs;
    const backendPorts = tag.backendIp === undefined ? NO_PORTS : index.services.backendPortsOf(tag.backendIp);
    if (port !== 0 && backendPorts.includes(port)) {
      answer.ports.push(port);
      answer.portFields.push(field);
      answer.field = this.keptOn(answer, resolveOn(0));
    } else answer.field = field;
    for (const other of backendPorts) {
      if (other === 0 || other === port) continue;
      answer.ports.push(other);
      answer.portFields.push(this.keptOn(answer, resolveOn(other)));
    }
    return answer;
  }

  /** One more port's answer of one to keep: it narrows where the answer holds. */
  private keptOn(answer: Answer, tag: EndTag): Uint8Array {
    // The counts are the same on every port (only the Service by backend differs); were they
    // not, the answer is not kept (this record's is still right).
    if (!tag.reusable || tag.hit !== answer.hit || tag.pending !== answer.pending) answer.version = -1;
    if (tag.fromNs > answer.fromNs) answer.fromNs = tag.fromNs;
    if (tag.untilNs < answer.untilNs) answer.untilNs = tag.untilNs;
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
/** Int32s per record in BatchTagger.spans, and where each part starts. */
const SPAN = 21;
const LOCAL = 1;
const REMOTE = 6;
const CUTS = 11;
const KEPT = 17;
/** Flags (spans[at]): the local end is dst; the record and its ends have their fields in order. */
const LOCAL_IS_DST = 1;
const IN_ORDER = 2;
const KUBE = [E.kube];
const REPLACED = [R.src, R.dst].sort((a, b) => a - b);
const REPLACED_WITH_CLUSTER = [R.src, R.dst, R.clusterId].sort((a, b) => a - b);

/**
 * Where copyReplacing(cursor, replaced) would leave out and emit each field of `replaced`
 * (ascending), into out[at + 2k] (start) and out[at + 2k + 1] (end; = start where the field is
 * absent), for a message whose fields come in ascending order, each once: its fields before the
 * cut, the replacement, its fields after. False (out unspecified) when they do not.
 */
function cutsOf(cursor: MessageCursor, replaced: readonly number[], out: Int32Array, at: number): boolean {
  const list = cursor.fieldList;
  const n = 4 * cursor.fieldCount;
  let r = 0;
  let last = -1;
  for (let k = 0; k < n; k += 4) {
    const field = list[k]!;
    if (field <= last) return false;
    last = field;
    while (r < replaced.length && replaced[r]! <= field) {
      const tagStart = list[k + 1]!;
      out[at + 2 * r] = tagStart;
      out[at + 2 * r + 1] = replaced[r] === field ? list[k + 3]! : tagStart;
      r++;
    }
  }
  for (; r < replaced.length; r++) out[at + 2 * r] = out[at + 2 * r + 1] = cursor.end;
  return true;
}

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
