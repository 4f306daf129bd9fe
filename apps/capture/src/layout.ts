// The byte layout of the structs bpf/kappa.h shares with userspace, written once here and
// checked against the BPF object's BTF by test/layout.test.ts. Decoding reads only through
// these offsets, so a drifted header fails that test instead of producing wrong numbers.

export interface FieldLayout {
  readonly offset: number;
  readonly size: number;
}

export interface StructLayout<F extends string> {
  readonly name: string;
  readonly size: number;
  readonly fields: Readonly<Record<F, FieldLayout>>;
}

function struct<F extends string>(name: string, size: number, fields: Record<F, FieldLayout>): StructLayout<F> {
  return { name, size, fields };
}

export const FLOW_KEY = struct('kappa_flow_key', 44, {
  local_ip: { offset: 0, size: 16 },
  remote_ip: { offset: 16, size: 16 },
  local_port: { offset: 32, size: 2 },
  remote_port: { offset: 34, size: 2 },
  ip_version: { offset: 36, size: 1 },
  protocol: { offset: 37, size: 1 },
  pad: { offset: 38, size: 2 },
  ifindex: { offset: 40, size: 4 },
});

export const FLOW_STATS = struct('kappa_flow_stats', 120, {
  first_ns: { offset: 0, size: 8 },
  last_ns: { offset: 8, size: 8 },
  tx_bytes: { offset: 16, size: 8 },
  tx_packets: { offset: 24, size: 8 },
  rx_bytes: { offset: 32, size: 8 },
  rx_packets: { offset: 40, size: 8 },
  cgroup_id: { offset: 48, size: 8 },
  app_sum_us: { offset: 56, size: 8 },
  pid: { offset: 64, size: 4 },
  srtt_us: { offset: 68, size: 4 },
  min_rtt_us: { offset: 72, size: 4 },
  retransmits: { offset: 76, size: 4 },
  handshake_us: { offset: 80, size: 4 },
  app_count: { offset: 84, size: 4 },
  app_max_us: { offset: 88, size: 4 },
  tcp_flags: { offset: 92, size: 4 },
  role: { offset: 96, size: 1 },
  icmp_type: { offset: 97, size: 1 },
  icmp_code: { offset: 98, size: 1 },
  pad: { offset: 99, size: 1 },
  comm: { offset: 100, size: 16 },
  pad2: { offset: 116, size: 4 },
});

export const CONFIG = struct('kappa_config', 16, {
  target_cgroup_id: { offset: 0, size: 8 },
  target_cgroup_level: { offset: 8, size: 4 },
  pad: { offset: 12, size: 4 },
});

/** Same values as KAPPA_ROLE_* and KAPPA_COUNTER_* in bpf/kappa.h. */
export const ROLE_UNKNOWN = 0;
export const ROLE_SRC = 1;
export const ROLE_DST = 2;
export const COUNTER_OVERFLOW_PACKETS = 0;
export const COUNTER_OVERFLOW_BYTES = 1;
export const COUNTER_ROLE_OVERFLOW = 2;

/** One drained conversation, decoded. IPs are 4 or 16 bytes as the key's ip_version says. */
export interface Conversation {
  localIp: Uint8Array;
  remoteIp: Uint8Array;
  localPort: number;
  remotePort: number;
  protocol: number;
  ifindex: number;
  firstKtimeNs: bigint;
  lastKtimeNs: bigint;
  txBytes: bigint;
  txPackets: bigint;
  rxBytes: bigint;
  rxPackets: bigint;
  cgroupId: bigint;
  pid: number;
  comm: string;
  srttUs: number;
  minRttUs: number;
  retransmits: number;
  handshakeUs: number;
  tcpFlags: number;
  appCount: number;
  appSumUs: bigint;
  appMaxUs: number;
  role: number;
  icmpType: number;
  icmpCode: number;
}

const K = FLOW_KEY.fields;
const S = FLOW_STATS.fields;

function ip(buffer: Buffer, at: number, version: number): Uint8Array {
  // IPv4 is stored IPv4-mapped: the address is the last four bytes.
  return version === 4 ? Uint8Array.from(buffer.subarray(at + 12, at + 16)) : Uint8Array.from(buffer.subarray(at, at + 16));
}

function cString(buffer: Buffer, at: number, size: number): string {
  const end = buffer.indexOf(0, at);
  return buffer.toString('latin1', at, end < 0 || end > at + size ? at + size : end);
}

/** Decodes entry `index` of a drained chunk (keys and values packed back to back). */
export function decodeConversation(keys: Buffer, values: Buffer, index: number): Conversation {
  const k = index * FLOW_KEY.size;
  const v = index * FLOW_STATS.size;
  const version = keys.readUInt8(k + K.ip_version.offset);
  return {
    localIp: ip(keys, k + K.local_ip.offset, version),
    remoteIp: ip(keys, k + K.remote_ip.offset, version),
    localPort: keys.readUInt16LE(k + K.local_port.offset),
    remotePort: keys.readUInt16LE(k + K.remote_port.offset),
    protocol: keys.readUInt8(k + K.protocol.offset),
    ifindex: keys.readUInt32LE(k + K.ifindex.offset),
    firstKtimeNs: values.readBigUInt64LE(v + S.first_ns.offset),
    lastKtimeNs: values.readBigUInt64LE(v + S.last_ns.offset),
    txBytes: values.readBigUInt64LE(v + S.tx_bytes.offset),
    txPackets: values.readBigUInt64LE(v + S.tx_packets.offset),
    rxBytes: values.readBigUInt64LE(v + S.rx_bytes.offset),
    rxPackets: values.readBigUInt64LE(v + S.rx_packets.offset),
    cgroupId: values.readBigUInt64LE(v + S.cgroup_id.offset),
    appSumUs: values.readBigUInt64LE(v + S.app_sum_us.offset),
    pid: values.readUInt32LE(v + S.pid.offset),
    srttUs: values.readUInt32LE(v + S.srtt_us.offset),
    minRttUs: values.readUInt32LE(v + S.min_rtt_us.offset),
    retransmits: values.readUInt32LE(v + S.retransmits.offset),
    handshakeUs: values.readUInt32LE(v + S.handshake_us.offset),
    appCount: values.readUInt32LE(v + S.app_count.offset),
    appMaxUs: values.readUInt32LE(v + S.app_max_us.offset),
    tcpFlags: values.readUInt32LE(v + S.tcp_flags.offset),
    role: values.readUInt8(v + S.role.offset),
    icmpType: values.readUInt8(v + S.icmp_type.offset),
    icmpCode: values.readUInt8(v + S.icmp_code.offset),
    comm: cString(values, v + S.comm.offset, S.comm.size),
  };
}

/** The .rodata image of struct kappa_config. */
export function encodeConfig(config: { targetCgroupId: bigint; targetCgroupLevel: number }): Buffer {
  const bytes = Buffer.alloc(CONFIG.size);
  bytes.writeBigUInt64LE(config.targetCgroupId, CONFIG.fields.target_cgroup_id.offset);
  bytes.writeUInt32LE(config.targetCgroupLevel, CONFIG.fields.target_cgroup_level.offset);
  return bytes;
}
