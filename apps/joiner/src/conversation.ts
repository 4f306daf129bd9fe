// Where a record meets its peer: the conversation group (Redis hash tag) and the conversation
// names it waits under, derived from the record alone so both ends' records derive the same ones.
import { Vantage, observedNetns } from '@kappa/contracts';
import type { Endpoint, FlowRecord } from '@kappa/contracts';

export interface ConversationPlace {
  /**
   * Hash tag of the group: protocol + the initiator's ip:port. Both records of a conversation
   * agree on the initiator (src), so this is canonical without sorting, and a Service
   * conversation (client → Service IP) and its backend's conversation (client → pod IP) share
   * the initiator, hence the slot, so one script can claim across both atomically.
   */
  tag: string;
  /**
   * Responder names the record waits under: "ip/port" of the responder, and for a Service,
   * "svc/<namespace>/<name>". An initiator's (SRC) record has exactly one; a backend's (DST)
   * record of a pod selected by a Service has both, so it meets the client under either.
   */
  conversations: string[];
  /**
   * Identity of the record inside its group: vantage, node, interval, observation point and the
   * responder. The responder matters: one initiator socket (the group) may talk to many
   * responders in one interval (a UDP socket sending to many ports, a resolver asking several
   * servers); without it their records shared one key and all but one were taken for replays.
   */
  recordKey: string;
  /** The end the observing node saw itself: src for SRC, dst for DST. */
  local: Endpoint;
  /** The end the tagger only knew by IP. */
  remote: Endpoint | undefined;
}

/** Why a record cannot wait for a peer and leaves at once. */
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
  // Loopback addresses repeat on every node, and in every network namespace of a node: such a
  // conversation can only meet on its own node, in its own namespace.
  const netns = observedNetns(record);
  const scope = loopback.test(src.ip) ? `@${record.node}${netns ? `/${netns}` : ''}` : '';
  const tag = `${record.protocol}/${src.ip}/${src.port}${scope}`;
  const plain = `${dst.ip}/${dst.port}`;
  const service = serviceName(dst);
  let conversations: string[];
  if (dst.kube?.objectType === 'service' && service) conversations = [service];
  else if (vantage === Vantage.DST && service) conversations = [plain, service];
  else conversations = [plain];
  const recordKey = `${vantage}|${record.node}|${record.startNs}|${record.observation}|${plain}`;
  return vantage === Vantage.SRC
    ? { tag, conversations, recordKey, local: src, remote: dst }
    : { tag, conversations, recordKey, local: dst, remote: src };
}

/** The remote end is outside the cluster as far as the tagger knows: no kappa node will report it. */
export function remoteIsExternal(place: ConversationPlace): boolean {
  return place.remote?.kube?.objectType === 'external';
}

export function groupKeys(tag: string) {
  const base = `kappa:{${tag}}`;
  return { meta: `${base}:meta`, rec: `${base}:rec`, st: `${base}:st`, seen: `${base}:seen` };
}

export const SCHEDULE_SHARDS = 16;

/** The due-time index is sharded so a Redis Cluster spreads it over several slots. */
export function scheduleShard(tag: string): number {
  let h = 5381;
  for (let i = 0; i < tag.length; i++) h = ((h * 33) ^ tag.charCodeAt(i)) >>> 0;
  return h % SCHEDULE_SHARDS;
}

export function scheduleKey(shard: number): string {
  return `kappa:{due:${shard}}`;
}

/** Schedule member: group tag and record key, separated by a unit separator. */
export function scheduleMember(tag: string, recordKey: string): string {
  return `${tag}\x1f${recordKey}`;
}

export function parseScheduleMember(member: string): { tag: string; recordKey: string } {
  const i = member.indexOf('\x1f');
  return { tag: member.slice(0, i), recordKey: member.slice(i + 1) };
}
