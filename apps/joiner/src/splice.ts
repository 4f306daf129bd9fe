// Writes the records the joiner emits, by splicing byte ranges into the output batch: a joined
// record is the input record with its remote end rebuilt around the peer's own Endpoint (its
// process and Kube copied as the peer's node sent them), an unjoined one the input with its
// join_status set. The meaning is the object-model merge's of before (test/oracle.ts): what the
// peer's node saw of itself replaces what the tagger guessed by IP, the address this node saw
// stays, and another address the peer answered on (DNAT) becomes backend_ip/backend_port.
import { EndpointSchema, FlowFields, KubeSchema, MessageCursor } from '@kappa/contracts';
import type { FlowBatchWriter } from '@kappa/contracts';
import { VANTAGE_SRC } from './record.js';
import type { JoinRecord } from './record.js';

const F = FlowFields.FlowRecord;
const E = FlowFields.Endpoint;
const K = FlowFields.Kube;
const WIRE_LEN = 2;

const UNJOINED = [F.joined, F.joinStatus];
const JOINED_SRC = [F.dst, F.joined, F.joinStatus];
const JOINED_DST = [F.src, F.joined, F.joinStatus];
/**
 * Endpoint fields the join writes itself: by (peer has a DNS name, peer has a process, peer
 * answered elsewhere). The DNS name is the one the peer's node saw the peer resolve this record's
 * local end from (peer_dns_name, set on the peer's local end): both vantages then carry it.
 */
const ENDPOINT_REPLACED = [false, true].flatMap((named) =>
  [
    [E.kube],
    [E.kube, E.backendIp, E.backendPort],
    [E.process, E.kube],
    [E.process, E.kube, E.backendIp, E.backendPort],
  ].map((fields) => (named ? [...fields, E.peerDnsName] : fields)),
);
const SERVICE_FIELDS = [K.serviceName, K.serviceNamespace];

export class RecordSplicer {
  private readonly peer = new MessageCursor(EndpointSchema);
  private readonly peerKube = new MessageCursor(KubeSchema);
  // What the emit callbacks below write; set before each copy (the callbacks are made once).
  private w!: FlowBatchWriter;
  private status = '';
  private remote!: MessageCursor;
  private remoteKube!: MessageCursor;
  private remoteField = 0;
  private serviceCursor!: MessageCursor;
  private nameField = 0;
  private nsField = 0;

  /** The record under `record` as it came, joined = false, join_status = `status`. */
  unjoined(w: FlowBatchWriter, record: MessageCursor, status: string): void {
    this.w = w;
    this.status = status;
    w.beginRecord();
    w.copyReplacing(record, UNJOINED, this.emitUnjoined);
    w.endRecord();
  }

  private readonly emitUnjoined = (field: number): void => {
    if (field === F.joinStatus) this.w.stringField(F.joinStatus, this.status);
  };

  /**
   * The record with its remote end completed from the peer's own Endpoint (payload
   * `peerBytes[peerStart, peerEnd)`), joined = true. `record` must have been read.
   */
  joined(w: FlowBatchWriter, record: JoinRecord, peerBytes: Uint8Array, peerStart: number, peerEnd: number, peerText?: Buffer): void {
    this.w = w;
    this.peer.reset(peerBytes, peerStart, peerEnd, peerText);
    this.remote = record.remote;
    this.remoteKube = record.remoteKube;
    this.remoteField = record.vantage === VANTAGE_SRC ? F.dst : F.src;
    w.beginRecord();
    w.copyReplacing(record.record, record.vantage === VANTAGE_SRC ? JOINED_SRC : JOINED_DST, this.emitJoined);
    w.endRecord();
  }

  private readonly emitJoined = (field: number): void => {
    const w = this.w;
    if (field === F.joined) {
      w.boolField(F.joined, true);
    } else if (field === this.remoteField) {
      const peer = this.peer;
      const remote = this.remote;
      const backend = peer.uint32(E.port) !== remote.uint32(E.port) || !sameBytes(peer, remote, E.ip);
      const replaced = ENDPOINT_REPLACED[(peer.byteLength(E.peerDnsName) > 0 ? 4 : 0) + (peer.has(E.process) ? 2 : 0) + (backend ? 1 : 0)]!;
      const mark = w.begin(this.remoteField, 2);
      w.copyReplacing(remote, replaced, this.emitEndpoint);
      w.end(mark);
    }
    // join_status: '' is not written.
  };

  private readonly emitEndpoint = (field: number): void => {
    const w = this.w;
    const peer = this.peer;
    switch (field) {
      case E.process:
        w.raw(peer.bytes, peer.fieldStart(E.process), peer.fieldEnd(E.process));
        break;
      case E.kube:
        this.kube();
        break;
      case E.backendIp: {
        const n = peer.byteLength(E.ip);
        if (n === 0) break;
        w.tag(E.backendIp, WIRE_LEN);
        w.varint32(n);
        w.raw(peer.bytes, peer.payloadStart(E.ip), peer.fieldEnd(E.ip));
        break;
      }
      case E.backendPort:
        w.uint32Field(E.backendPort, peer.uint32(E.port));
        break;
      case E.peerDnsName:
        w.raw(peer.bytes, peer.fieldStart(E.peerDnsName), peer.fieldEnd(E.peerDnsName));
        break;
    }
  };

  /** The remote end's Kube: the peer's own, naming the Service this end was reached through. */
  private kube(): void {
    const w = this.w;
    const peer = this.peer;
    const remote = this.remote;
    if (!peer.has(E.kube)) {
      if (remote.has(E.kube)) {
        w.raw(remote.bytes, remote.fieldStart(E.kube), remote.fieldEnd(E.kube));
      } else {
        w.tag(E.kube, WIRE_LEN);
        w.varint32(0);
      }
      return;
    }
    const seenAs = this.remoteKube;
    const named = seenAs.byteLength(K.serviceName) > 0;
    const service = seenAs.equalsAscii(K.objectType, 'service');
    // The peer's Kube is read only when this end was reached through a Service.
    if (!(named || service) || (peer.message(E.kube, this.peerKube) && this.peerKube.byteLength(K.serviceName) > 0)) {
      w.raw(peer.bytes, peer.fieldStart(E.kube), peer.fieldEnd(E.kube));
      return;
    }
    // Reached through a Service the peer's own Kube does not name: it names it now.
    this.serviceCursor = seenAs;
    this.nameField = named ? K.serviceName : K.objectName;
    this.nsField = named ? K.serviceNamespace : K.objectNamespace;
    const mark = w.begin(E.kube, 2);
    w.copyReplacing(this.peerKube, SERVICE_FIELDS, this.emitService);
    w.end(mark);
  }

  private readonly emitService = (field: number): void => {
    const from = this.serviceCursor;
    const source = field === K.serviceName ? this.nameField : this.nsField;
    const start = from.payloadStart(source);
    if (start < 0 || from.fieldEnd(source) === start) return;
    const w = this.w;
    w.tag(field, WIRE_LEN);
    w.varint32(from.fieldEnd(source) - start);
    w.raw(from.bytes, start, from.fieldEnd(source));
  };
}

/** Whether a string field holds the same bytes in both messages. */
function sameBytes(a: MessageCursor, b: MessageCursor, field: number): boolean {
  const n = a.byteLength(field);
  if (n !== b.byteLength(field)) return false;
  if (n === 0) return true;
  const as = a.payloadStart(field);
  const bs = b.payloadStart(field);
  for (let i = 0; i < n; i++) if (a.bytes[as + i] !== b.bytes[bs + i]) return false;
  return true;
}
