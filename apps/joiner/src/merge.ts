// Builds the records the joiner emits: a record's remote end filled from the peer's own view of
// itself (joined), or left as the tagger saw it (released unjoined).
import { EndpointSchema, FlowRecordSchema, KubeSchema, Vantage, clone, create, fromBinary, toBinary } from '@kappa/contracts';
import type { Endpoint, FlowRecord } from '@kappa/contracts';

export function encodeEndpoint(endpoint: Endpoint): Uint8Array {
  return toBinary(EndpointSchema, endpoint);
}

export function decodeEndpoint(bytes: Uint8Array): Endpoint {
  return fromBinary(EndpointSchema, bytes);
}

export function encodeRecord(record: FlowRecord): Uint8Array {
  return toBinary(FlowRecordSchema, record);
}

export function decodeRecord(bytes: Uint8Array): FlowRecord {
  return fromBinary(FlowRecordSchema, bytes);
}

/**
 * Completes the record's remote end from `peer` (the peer record's local end), IN PLACE: the
 * joiner owns every record it decodes and emits each once, and cloning was a third of the
 * hot path. The remote
 * address stays what this node saw; when the peer answered on another address (a Service IP
 * DNAT'd to a pod), that address becomes backend_ip/backend_port, and the Service the remote end
 * was reached through stays named in kube.service_name/namespace.
 */
export function joinedRecord(record: FlowRecord, peer: Endpoint): FlowRecord {
  const out = record;
  const remote = out.vantage === Vantage.SRC ? out.dst : out.src;
  if (remote) {
    const seenAs = remote.kube;
    // Outputs are encoded right away and never mutated, so sharing the peer's process is safe.
    if (peer.process) remote.process = peer.process;
    // The name the peer resolved this end's address from (set by the peer's node on its local end).
    if (peer.peerDnsName) remote.peerDnsName = peer.peerDnsName;
    if (peer.kube) {
      let kube = peer.kube;
      const reachedAs = seenAs?.serviceName ? [seenAs.serviceName, seenAs.serviceNamespace] : seenAs?.objectType === 'service' ? [seenAs.objectName, seenAs.objectNamespace] : undefined;
      if (!kube.serviceName && reachedAs) {
        // peer.kube may be shared by several outputs: copy before naming the Service on it.
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

/** The record as the tagger left it, marked as leaving without its peer (in place). */
export function unjoinedRecord(record: FlowRecord, status: string): FlowRecord {
  const out = record;
  out.joined = false;
  out.joinStatus = status;
  return out;
}
