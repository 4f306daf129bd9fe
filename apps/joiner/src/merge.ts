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
 * The record with its remote end completed from `peer` (the peer record's local end). The remote
 * address stays what this node saw; when the peer answered on another address (a Service IP
 * DNAT'd to a pod), that address becomes backend_ip/backend_port, and the Service the remote end
 * was reached through stays named in kube.service_name/namespace.
 */
export function joinedRecord(record: FlowRecord, peer: Endpoint): FlowRecord {
  const out = clone(FlowRecordSchema, record);
  const remote = out.vantage === Vantage.SRC ? out.dst : out.src;
  if (remote) {
    const seenAs = remote.kube;
    // Outputs are encoded right away and never mutated, so sharing the peer's process is safe.
    if (peer.process) remote.process = peer.process;
    if (peer.kube) {
      const kube = clone(KubeSchema, peer.kube);
      if (!kube.serviceName && seenAs?.serviceName) {
        kube.serviceName = seenAs.serviceName;
        kube.serviceNamespace = seenAs.serviceNamespace;
      }
      if (!kube.serviceName && seenAs?.objectType === 'service') {
        kube.serviceName = seenAs.objectName;
        kube.serviceNamespace = seenAs.objectNamespace;
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

/** The record as the tagger left it, marked as leaving without its peer. */
export function unjoinedRecord(record: FlowRecord, status: string): FlowRecord {
  const out = clone(FlowRecordSchema, record);
  out.joined = false;
  out.joinStatus = status;
  return out;
}
