// Drained conversations → FlowRecords: orientation by vantage (src is always the initiator),
// kernel monotonic times → unix ns, and a record id that is stable for one node, vantage,
// conversation and interval, so a re-sent batch is recognised downstream.
import { createHash } from 'node:crypto';
import { IpProtocol, Vantage, ipFromBytes, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { ROLE_DST, ROLE_SRC } from './layout.js';
import type { Conversation } from './layout.js';

export interface Interval {
  /** Unix ns of the previous drain (or start) and of this drain. */
  readonly startNs: bigint;
  readonly endNs: bigint;
}

export interface RecordContext {
  readonly node: string;
  /** Unix ns minus kernel monotonic ns (bpf_ktime_get_ns), see clock.ts. */
  readonly ktimeToUnixNs: bigint;
  /** ifindex → interface name, for interface-mode records. */
  readonly interfaceName: (ifindex: number) => string;
}

const ICMP_PROTOCOLS = new Set<number>([IpProtocol.ICMP, IpProtocol.ICMPV6]);

export function toFlowRecord(c: Conversation, interval: Interval, context: RecordContext): FlowRecord {
  const observation = c.ifindex === 0 ? 'socket' : context.interfaceName(c.ifindex);
  const local = { ip: ipFromBytes(c.localIp), port: c.localPort };
  const remote = { ip: ipFromBytes(c.remoteIp), port: c.remotePort };
  const owner = c.pid || c.comm ? { pid: c.pid, name: c.comm, cgroupId: c.cgroupId } : undefined;
  // The local end initiated (SRC) or accepted (DST). Unknown only for TCP connections that
  // predate capture and whose role was forgotten; they stay local → remote, vantage unset.
  const accepted = c.role === ROLE_DST;
  const vantage = c.role === ROLE_SRC ? Vantage.SRC : accepted ? Vantage.DST : Vantage.UNSPECIFIED;
  const src = accepted ? remote : { ...local, ...(owner && { process: owner }) };
  const dst = accepted ? { ...local, ...(owner && { process: owner }) } : remote;
  const forward = accepted ? { bytes: c.rxBytes, packets: c.rxPackets } : { bytes: c.txBytes, packets: c.txPackets };
  const reverse = accepted ? { bytes: c.txBytes, packets: c.txPackets } : { bytes: c.rxBytes, packets: c.rxPackets };
  const record = newFlowRecord({
    node: context.node,
    vantage,
    startNs: interval.startNs,
    endNs: interval.endNs,
    protocol: c.protocol,
    src,
    dst,
    bytes: forward.bytes,
    packets: forward.packets,
    reverseBytes: reverse.bytes,
    reversePackets: reverse.packets,
    observation,
    firstSeenNs: c.firstKtimeNs + context.ktimeToUnixNs,
    lastSeenNs: (c.lastKtimeNs || c.firstKtimeNs) + context.ktimeToUnixNs,
  });
  if (c.protocol === IpProtocol.TCP) {
    record.tcp = {
      $typeName: 'kappa.flow.v1.TcpStats',
      srttUs: c.srttUs,
      minRttUs: c.minRttUs,
      retransmits: c.retransmits,
      handshakeUs: c.handshakeUs,
      flags: c.tcpFlags,
    };
  }
  if (c.appCount > 0) {
    record.appLatency = { $typeName: 'kappa.flow.v1.AppLatency', count: BigInt(c.appCount), sumUs: c.appSumUs, maxUs: BigInt(c.appMaxUs) };
  }
  if (ICMP_PROTOCOLS.has(c.protocol)) {
    record.icmpType = c.icmpType;
    record.icmpCode = c.icmpCode;
  }
  record.id = recordId(record);
  return record;
}

/** Stable identity: the same conversation in the same interval on the same node → same id. */
export function recordId(r: FlowRecord): string {
  const key = [
    r.node, r.vantage, r.observation, r.protocol,
    r.src?.ip, r.src?.port, r.dst?.ip, r.dst?.port, r.startNs, r.endNs,
  ].join('|');
  return createHash('sha256').update(key).digest('hex').slice(0, 32);
}
