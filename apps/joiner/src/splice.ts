// Writes the records the joiner emits, by splicing byte ranges: a joined record is the input
// record with its remote end rebuilt from the peer's own Endpoint (its process and Kube slices
// copied as the peer's node sent them), an unjoined one the input with its join_status set.
// Same meaning as the object-model merge of before (see test/oracle.ts): what the peer's node
// saw of itself replaces what the tagger guessed by IP; the address this node saw stays, and a
// different address the peer answered on (DNAT) becomes backend_ip/backend_port.
import { ENDPOINT, EndpointFields, KUBE, RECORD, VANTAGE_SRC } from './record.js';
import type { JoinRecord } from './record.js';
import { FieldCursor, WIRE_LEN, WIRE_VARINT } from './wire.js';
import type { ByteWriter } from './wire.js';

/** FlowBatch.records */
export const BATCH_RECORDS = 4;

export class RecordSplicer {
  private readonly cursor = new FieldCursor();
  private readonly inner = new FieldCursor();
  private readonly kubeCursor = new FieldCursor();
  private readonly peer = new EndpointFields();
  private readonly peerCursor = new FieldCursor();

  /** The record as it came, joined = false, join_status = `status`, as one FlowBatch.records entry. */
  unjoined(w: ByteWriter, record: JoinRecord, status: string): void {
    this.unjoinedBytes(w, record.buf, record.start, record.end, status);
  }

  unjoinedBytes(w: ByteWriter, buf: Uint8Array, start: number, end: number, status: string): void {
    w.begin(BATCH_RECORDS);
    const c = this.cursor.reset(buf, start, end);
    let run = start;
    let wrote = false;
    while (c.next()) {
      const f = c.field;
      if (f === RECORD.joined || f === RECORD.joinStatus) {
        w.copy(buf, run, c.tagStart);
        run = c.pos;
        continue;
      }
      if (!wrote && f > RECORD.joinStatus) {
        w.copy(buf, run, c.tagStart);
        run = c.tagStart;
        w.stringField(RECORD.joinStatus, status);
        wrote = true;
      }
    }
    w.copy(buf, run, end);
    if (!wrote) w.stringField(RECORD.joinStatus, status);
    w.end();
  }

  /**
   * The record with its remote end completed from `peer` (the peer record's local Endpoint, its
   * value bytes), joined = true, as one FlowBatch.records entry. `record` must have been read.
   */
  joined(w: ByteWriter, record: JoinRecord, peerBuf: Uint8Array, peerStart: number, peerEnd: number): void {
    const buf = record.buf;
    const remoteField = record.vantage === VANTAGE_SRC ? RECORD.dst : RECORD.src;
    w.begin(BATCH_RECORDS);
    const c = this.cursor.reset(buf, record.start, record.end);
    let run = record.start;
    let wroteJoined = false;
    while (c.next()) {
      const f = c.field;
      if (!wroteJoined && f > RECORD.joined) {
        w.copy(buf, run, c.tagStart);
        run = c.tagStart;
        w.tag(RECORD.joined, WIRE_VARINT).varint(1);
        wroteJoined = true;
      }
      if (f === RECORD.joined || f === RECORD.joinStatus) {
        w.copy(buf, run, c.tagStart);
        run = c.pos;
      } else if (f === remoteField && c.wireType === WIRE_LEN) {
        w.copy(buf, run, c.tagStart);
        run = c.pos;
        this.remoteEnd(w, record, remoteField, c.valueStart, c.valueEnd, peerBuf, peerStart, peerEnd);
      }
    }
    w.copy(buf, run, record.end);
    if (!wroteJoined) w.tag(RECORD.joined, WIRE_VARINT).varint(1);
    w.end();
  }

  private remoteEnd(w: ByteWriter, record: JoinRecord, field: number, start: number, end: number, peerBuf: Uint8Array, peerStart: number, peerEnd: number): void {
    const buf = record.buf;
    const remote = field === RECORD.dst ? record.dst : record.src;
    const peer = this.peer;
    peer.read(this.peerCursor, peerBuf, peerStart, peerEnd, true);
    const peerProcess = peer.processStart >= 0;
    const backend = !peer.sameAddress(remote);
    // Fields written in number order: the remote's own, with process (3), kube (4) and, when the
    // peer answered on another address, backend_ip/port (5, 6) taken from the peer.
    this.next = peerProcess ? ENDPOINT.process : ENDPOINT.kube;
    w.begin(field);
    const c = this.inner.reset(buf, start, end);
    let run = start;
    while (c.next()) {
      const f = c.field;
      const replaced = (f === ENDPOINT.process && peerProcess) || f === ENDPOINT.kube || ((f === ENDPOINT.backendIp || f === ENDPOINT.backendPort) && backend);
      if (replaced || f >= this.next) {
        w.copy(buf, run, c.tagStart);
        run = replaced ? c.pos : c.tagStart;
        this.insertBefore(w, replaced ? f + 1 : f, remote, peerBuf, peerProcess, backend);
      }
    }
    w.copy(buf, run, end);
    this.insertBefore(w, ENDPOINT.backendPort + 1, remote, peerBuf, peerProcess, backend);
    w.end();
  }

  /** The next Endpoint field the join writes itself (see remoteEnd). */
  private next = 0;

  private insertBefore(w: ByteWriter, limit: number, remote: EndpointFields, peerBuf: Uint8Array, peerProcess: boolean, backend: boolean): void {
    const peer = this.peer;
    while (this.next < limit && this.next <= ENDPOINT.backendPort) {
      const f = this.next++;
      if (f === ENDPOINT.process && peerProcess) w.lenField(ENDPOINT.process, peerBuf, peer.processStart, peer.processEnd);
      else if (f === ENDPOINT.kube) this.kube(w, remote, peerBuf);
      else if (f === ENDPOINT.backendIp && backend && peer.ipEnd > peer.ipStart) w.lenField(ENDPOINT.backendIp, peerBuf, peer.ipStart, peer.ipEnd);
      else if (f === ENDPOINT.backendPort && backend && peer.port !== 0) w.tag(ENDPOINT.backendPort, WIRE_VARINT).varint(peer.port);
    }
  }

  /** The remote end's Kube: the peer's own, naming the Service this end was reached through. */
  private kube(w: ByteWriter, remote: EndpointFields, peerBuf: Uint8Array): void {
    const peer = this.peer;
    const buf = remote.buf;
    if (!peer.hasKube) {
      if (remote.hasKube) w.lenField(ENDPOINT.kube, buf, remote.kubeStart, remote.kubeEnd);
      else w.tag(ENDPOINT.kube, WIRE_LEN).varint(0);
      return;
    }
    // Reached through a Service (the tagger named it on this end): the peer's Kube names it too.
    const service = remote.isService();
    if (peer.hasServiceName || !(remote.hasServiceName || service)) {
      w.lenField(ENDPOINT.kube, peerBuf, peer.kubeStart, peer.kubeEnd);
      return;
    }
    if (remote.hasServiceName) this.kubeRenamed(w, peerBuf, buf, remote.serviceNameStart, remote.serviceNameEnd, remote.serviceNamespaceStart, remote.serviceNamespaceEnd);
    else this.kubeRenamed(w, peerBuf, buf, remote.objectNameStart, remote.objectNameEnd, remote.objectNamespaceStart, remote.objectNamespaceEnd);
  }

  /** The peer's Kube with service_name/service_namespace set to these byte ranges of `src` (empty: not written). */
  private kubeRenamed(w: ByteWriter, peerBuf: Uint8Array, src: Uint8Array, nameStart: number, nameEnd: number, nsStart: number, nsEnd: number): void {
    const peer = this.peer;
    w.begin(ENDPOINT.kube);
    const c = this.kubeCursor.reset(peerBuf, peer.kubeStart, peer.kubeEnd);
    let run = peer.kubeStart;
    let wrote = false;
    while (c.next()) {
      const f = c.field;
      if (!wrote && f > KUBE.serviceNamespace) {
        w.copy(peerBuf, run, c.tagStart);
        run = c.tagStart;
        this.serviceFields(w, src, nameStart, nameEnd, nsStart, nsEnd);
        wrote = true;
      }
      if (f === KUBE.serviceName || f === KUBE.serviceNamespace) {
        w.copy(peerBuf, run, c.tagStart);
        run = c.pos;
      }
    }
    w.copy(peerBuf, run, peer.kubeEnd);
    if (!wrote) this.serviceFields(w, src, nameStart, nameEnd, nsStart, nsEnd);
    w.end();
  }

  private serviceFields(w: ByteWriter, src: Uint8Array, nameStart: number, nameEnd: number, nsStart: number, nsEnd: number): void {
    if (nameEnd > nameStart) w.lenField(KUBE.serviceName, src, nameStart, nameEnd);
    if (nsEnd > nsStart) w.lenField(KUBE.serviceNamespace, src, nsStart, nsEnd);
  }
}
