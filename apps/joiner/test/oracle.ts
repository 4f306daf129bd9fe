// The join as it was before the byte path (object model, protobuf-es), kept as the independent
// truth the differential test compares the new join with: conversationPlace and the merge are
// the old src/conversation.ts and src/merge.ts as they were; OracleJoin replays what the old Lua
// scripts did in Redis (arrive, then sweep), with the sweeper running at each batch's time.
import { EndpointSchema, FlowRecordSchema, KubeSchema, Vantage, clone, create, fromBinary, toBinary } from '@kappa/contracts';
import type { Endpoint, FlowRecord } from '@kappa/contracts';

export interface ConversationPlace {
  tag: string;
  conversations: string[];
  local: Endpoint;
  remote: Endpoint | undefined;
}

export type ImmediateRelease = 'external' | 'no-vantage';

const loopback = /^(127\.|::1$|::ffff:127\.)/;

function serviceName(endpoint: Endpoint): string | undefined {
  const kube = endpoint.kube;
  if (!kube) return undefined;
  if (kube.objectType === 'service') {
    const name = kube.serviceName || kube.objectName;
    const namespace = kube.serviceNamespace || kube.objectNamespace;
    return name ? `svc/${namespace}/${name}` : undefined;
  }
  if (kube.serviceName) return `svc/${kube.serviceNamespace}/${kube.serviceName}`;
  return undefined;
}

export function conversationPlace(record: FlowRecord): ConversationPlace | ImmediateRelease {
  const src = record.src;
  const dst = record.dst;
  if (!src || !dst) return 'no-vantage';
  const vantage = record.vantage;
  if (vantage !== Vantage.SRC && vantage !== Vantage.DST) return 'no-vantage';
  const netns = src.netns || record.dst?.netns || 0;
  const scope = loopback.test(src.ip) ? `@${record.node}${netns ? `/${netns}` : ''}` : '';
  const tag = `${record.protocol}/${src.ip}/${src.port}${scope}`;
  const plain = `${dst.ip}/${dst.port}`;
  const service = serviceName(dst);
  let conversations: string[];
  if (dst.kube?.objectType === 'service' && service) conversations = [service];
  else if (vantage === Vantage.DST && service) conversations = [plain, service];
  else conversations = [plain];
  return vantage === Vantage.SRC ? { tag, conversations, local: src, remote: dst } : { tag, conversations, local: dst, remote: src };
}

export function joinedRecord(record: FlowRecord, peer: Endpoint): FlowRecord {
  const out = record;
  const remote = out.vantage === Vantage.SRC ? out.dst : out.src;
  if (remote) {
    const seenAs = remote.kube;
    if (peer.process) remote.process = peer.process;
    if (peer.peerDnsName) remote.peerDnsName = peer.peerDnsName;
    if (peer.kube) {
      let kube = peer.kube;
      const reachedAs = seenAs?.serviceName ? [seenAs.serviceName, seenAs.serviceNamespace] : seenAs?.objectType === 'service' ? [seenAs.objectName, seenAs.objectNamespace] : undefined;
      if (!kube.serviceName && reachedAs) {
        kube = clone(KubeSchema, kube);
        kube.serviceName = reachedAs[0] ?? '';
        kube.serviceNamespace = reachedAs[1] ?? '';
      }
      remote.kube = kube;
    } else if (!remote.kube) {
      remote.kube = create(KubeSchema);
    }
    if (peer.ip !== remote.ip || peer.port !== remote.port) {
      remote.backendIp = peer.ip;
      remote.backendPort = peer.port;
    }
  }
  out.joined = true;
  out.joinStatus = '';
  return out;
}

export function unjoinedRecord(record: FlowRecord, status: string): FlowRecord {
  record.joined = false;
  record.joinStatus = status;
  return record;
}

interface Meta {
  storedAt: number;
  bytes: Uint8Array;
}

interface Waiting {
  seq: number;
  vantage: number;
  conversations: string[];
  deadline: number;
  record: FlowRecord;
}

export interface OracleSettings {
  joinWaitMs: number;
  metadataTtlMs: number;
  /** 0: the old rule, every record stores its end again. >0: the new joiner's documented rule. */
  endRefreshMs: number;
  joinExternal: boolean;
}

/** The old join's state and steps, in memory: one `meta` and one pending set per group. */
export class OracleJoin {
  private readonly meta = new Map<string, Map<string, Meta>>();
  private readonly pending = new Map<string, Map<number, Waiting>>();
  private seq = 0;
  private now = 0;

  constructor(private readonly settings: OracleSettings) {}

  /** One batch at time `timeMs`: the sweep of everything due, then each record's arrival. */
  apply(records: readonly FlowRecord[], timeMs: number): FlowRecord[] {
    this.now = Math.max(this.now, timeMs);
    const out: FlowRecord[] = [];
    this.sweep(out);
    for (const input of records) this.arrive(clone(FlowRecordSchema, input), out);
    return out;
  }

  private fresh(tag: string, name: string): Endpoint | undefined {
    const m = this.meta.get(tag)?.get(name);
    if (!m || m.storedAt + this.settings.metadataTtlMs < this.now) return undefined;
    return fromBinary(EndpointSchema, m.bytes);
  }

  private store(tag: string, name: string, endpoint: Endpoint): void {
    let group = this.meta.get(tag);
    if (!group) this.meta.set(tag, (group = new Map()));
    const bytes = toBinary(EndpointSchema, endpoint);
    const old = group.get(name);
    if (old && this.now - old.storedAt < this.settings.endRefreshMs && Buffer.compare(old.bytes, bytes) === 0) return;
    group.set(name, { storedAt: this.now, bytes });
  }

  private arrive(record: FlowRecord, out: FlowRecord[]): void {
    const place = conversationPlace(record);
    if (typeof place === 'string') {
      out.push(unjoinedRecord(record, place));
      return;
    }
    if (!this.settings.joinExternal && place.remote?.kube?.objectType === 'external') {
      out.push(unjoinedRecord(record, 'external'));
      return;
    }
    const v = record.vantage === Vantage.SRC ? 1 : 2;
    if (v === 1) this.store(place.tag, 'src', place.local);
    else for (const c of place.conversations) this.store(place.tag, `dst|${c}`, place.local);
    const peer = v === 1 ? this.fresh(place.tag, `dst|${place.conversations[0]}`) : this.fresh(place.tag, 'src');
    const claimed: Waiting[] = [];
    const group = this.pending.get(place.tag);
    if (group) {
      for (const [seq, s] of group) {
        if (s.vantage === v) continue;
        const take = v === 1 || place.conversations.includes(s.conversations[0]!);
        if (take) {
          claimed.push(s);
          group.delete(seq);
        }
      }
    }
    if (peer) out.push(joinedRecord(record, peer));
    else {
      let g = this.pending.get(place.tag);
      if (!g) this.pending.set(place.tag, (g = new Map()));
      const seq = this.seq++;
      g.set(seq, { seq, vantage: v, conversations: place.conversations, deadline: this.now + this.settings.joinWaitMs, record });
    }
    for (const s of claimed) out.push(joinedRecord(s.record, clone(EndpointSchema, place.local)));
  }

  private sweep(out: FlowRecord[]): void {
    const due: { tag: string; s: Waiting }[] = [];
    for (const [tag, group] of this.pending) for (const s of group.values()) if (s.deadline <= this.now) due.push({ tag, s });
    due.sort((a, b) => a.s.deadline - b.s.deadline || a.s.seq - b.s.seq);
    for (const { tag, s } of due) {
      this.pending.get(tag)?.delete(s.seq);
      const place = conversationPlace(s.record) as ConversationPlace;
      const peer = s.vantage === 1 ? this.fresh(tag, `dst|${place.conversations[0]}`) : this.fresh(tag, 'src');
      out.push(peer ? joinedRecord(s.record, peer) : unjoinedRecord(s.record, 'no-peer'));
    }
  }
}
