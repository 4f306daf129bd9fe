// The byte layout of the structs bpf/kappa.h shares with userspace, written once here and
// checked against the BPF object's BTF by test/layout.test.ts. Drained entries are read only
// through these offsets, so a drifted header fails that test instead of producing wrong numbers.

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

export const FLOW_KEY = struct('kappa_flow_key', 48, {
  local_ip: { offset: 0, size: 16 },
  remote_ip: { offset: 16, size: 16 },
  local_port: { offset: 32, size: 2 },
  remote_port: { offset: 34, size: 2 },
  ip_version: { offset: 36, size: 1 },
  protocol: { offset: 37, size: 1 },
  pad: { offset: 38, size: 2 },
  ifindex: { offset: 40, size: 4 },
  netns: { offset: 44, size: 4 },
});

export const FLOW_STATS = struct('kappa_flow_stats', 216, {
  first_ns: { offset: 0, size: 8 },
  cgroup_id: { offset: 8, size: 8 },
  owner_start_ns: { offset: 16, size: 8 },
  app_sum_us: { offset: 24, size: 8 },
  pid: { offset: 32, size: 4 },
  handshake_us: { offset: 36, size: 4 },
  srtt_us: { offset: 40, size: 4 },
  min_rtt_us: { offset: 44, size: 4 },
  retransmits: { offset: 48, size: 4 },
  app_count: { offset: 52, size: 4 },
  app_max_us: { offset: 56, size: 4 },
  role: { offset: 60, size: 1 },
  icmp_type: { offset: 61, size: 1 },
  icmp_code: { offset: 62, size: 1 },
  pad: { offset: 63, size: 1 },
  comm: { offset: 64, size: 16 },
  tx_bytes: { offset: 80, size: 8 },
  tx_packets: { offset: 88, size: 8 },
  tx_last_ns: { offset: 96, size: 8 },
  tx_tcp_flags: { offset: 104, size: 4 },
  tx_pad: { offset: 108, size: 4 },
  line_pad: { offset: 112, size: 32 },
  rx_bytes: { offset: 144, size: 8 },
  rx_packets: { offset: 152, size: 8 },
  rx_last_ns: { offset: 160, size: 8 },
  rx_tcp_flags: { offset: 168, size: 4 },
  rx_pad: { offset: 172, size: 4 },
  drop_bytes: { offset: 176, size: 8 },
  drop_packets: { offset: 184, size: 4 },
  drop_reason: { offset: 188, size: 12 },
  drop_reason_packets: { offset: 200, size: 12 },
  drop_pad: { offset: 212, size: 4 },
});

export const CONFIG = struct('kappa_config', 40, {
  target_cgroup_id: { offset: 0, size: 8 },
  target_cgroup_level: { offset: 8, size: 4 },
  socket_counters: { offset: 12, size: 4 },
  dns: { offset: 16, size: 4 },
  pad: { offset: 20, size: 4 },
  icmpv6_rcv_start: { offset: 24, size: 8 },
  icmpv6_rcv_end: { offset: 32, size: 8 },
});

export const DRAIN_STATE = struct('kappa_drain_state', 24, {
  epoch: { offset: 0, size: 4 },
  pad: { offset: 4, size: 4 },
  started_unix_ns: { offset: 8, size: 16 },
});

/** What the drain of one epoch parity has to read (map kappa_marks, one element per parity). */
export const DRAIN_MARKS = struct('kappa_drain_marks', 8, {
  sockets: { offset: 0, size: 4 },
  flows: { offset: 4, size: 4 },
});

/** One DNS message copied by bpf/kappa_dns.h (ring buffer kappa_dns_events). */
export const DNS_EVENT = struct('kappa_dns_event', 592, {
  key: { offset: 0, size: 48 },
  ktime_ns: { offset: 48, size: 8 },
  epoch: { offset: 56, size: 4 },
  length: { offset: 60, size: 2 },
  payload_length: { offset: 62, size: 2 },
  egress: { offset: 64, size: 1 },
  pad: { offset: 65, size: 7 },
  rx_tstamp_ns: { offset: 72, size: 8 },
  message: { offset: 80, size: 512 },
});

/** One exec seen by bpf/kappa_exec.h (ring buffer kappa_exec_events): only the header and args_length bytes of args arrive. */
export const EXEC_EVENT = struct('kappa_exec_event', 4400, {
  start_boottime_ns: { offset: 0, size: 8 },
  cgroup_id: { offset: 8, size: 8 },
  pid: { offset: 16, size: 4 },
  tid: { offset: 20, size: 4 },
  args_length: { offset: 24, size: 2 },
  flags: { offset: 26, size: 1 },
  pad: { offset: 27, size: 5 },
  comm: { offset: 32, size: 16 },
  file: { offset: 48, size: 256 },
  args: { offset: 304, size: 4096 },
});

/** Same values as KAPPA_EXEC_COUNTER_* and KAPPA_EXEC_ARGS_* (bpf/kappa_exec.h). */
export const EXEC_COUNTER_LOST = 0;
export const EXEC_COUNTER_UNREADABLE = 1;
export const EXEC_ARGS_CUT = 1;
export const EXEC_ARGS_UNREADABLE = 2;

/** Same values as KAPPA_DNS_COUNTER_* (bpf/kappa_dns.h) and KAPPA_DROP_COUNTER_* (bpf/kappa_drop.h). */
export const DNS_COUNTER_LOST = 0;
export const DROP_COUNTER_UNATTRIBUTED = 0;

/** Same values as KAPPA_ROLE_* and KAPPA_COUNTER_* in bpf/kappa.h. */
export const ROLE_UNKNOWN = 0;
export const ROLE_SRC = 1;
export const ROLE_DST = 2;
export const COUNTER_OVERFLOW_PACKETS = 0;
export const COUNTER_OVERFLOW_BYTES = 1;
export const COUNTER_ROLE_OVERFLOW = 2;
export const COUNTER_COPIES_SKIPPED = 3;
export const COUNTER_REPORTS_LOST = 4;

/** The .rodata image of struct kappa_config. */
export function encodeConfig(config: {
  targetCgroupId: bigint;
  targetCgroupLevel: number;
  socketCounters: boolean;
  dns: boolean;
  /** icmpv6_rcv's code, [start, end) (absent: unknown). */
  icmpv6Rcv?: { start: bigint; end: bigint } | undefined;
}): Buffer {
  const bytes = Buffer.alloc(CONFIG.size);
  bytes.writeBigUInt64LE(config.targetCgroupId, CONFIG.fields.target_cgroup_id.offset);
  bytes.writeUInt32LE(config.targetCgroupLevel, CONFIG.fields.target_cgroup_level.offset);
  bytes.writeUInt32LE(config.socketCounters ? 1 : 0, CONFIG.fields.socket_counters.offset);
  bytes.writeUInt32LE(config.dns ? 1 : 0, CONFIG.fields.dns.offset);
  bytes.writeBigUInt64LE(config.icmpv6Rcv?.start ?? 0n, CONFIG.fields.icmpv6_rcv_start.offset);
  bytes.writeBigUInt64LE(config.icmpv6Rcv?.end ?? 0n, CONFIG.fields.icmpv6_rcv_end.offset);
  return bytes;
}

export interface DrainState {
  epoch: number;
  /** Unix ns at which each flow map last became the one programs count into (0: never). */
  startedUnixNs: [bigint, bigint];
}

export function encodeDrainState(state: DrainState): Buffer {
  const bytes = Buffer.alloc(DRAIN_STATE.size);
  bytes.writeUInt32LE(state.epoch, DRAIN_STATE.fields.epoch.offset);
  bytes.writeBigUInt64LE(state.startedUnixNs[0], DRAIN_STATE.fields.started_unix_ns.offset);
  bytes.writeBigUInt64LE(state.startedUnixNs[1], DRAIN_STATE.fields.started_unix_ns.offset + 8);
  return bytes;
}

export function decodeDrainState(bytes: Buffer): DrainState {
  const at = DRAIN_STATE.fields.started_unix_ns.offset;
  return { epoch: bytes.readUInt32LE(DRAIN_STATE.fields.epoch.offset), startedUnixNs: [bytes.readBigUInt64LE(at), bytes.readBigUInt64LE(at + 8)] };
}

/**
 * One conversation as a test or a benchmark describes it, and its kernel bytes (`flowEntryBytes`):
 * the drain only ever reads raw entries, so tests feed it raw entries too.
 */
export interface Conversation {
  localIp: Uint8Array;
  remoteIp: Uint8Array;
  localPort: number;
  remotePort: number;
  protocol: number;
  ifindex: number;
  netns: number;
  firstKtimeNs: bigint;
  lastKtimeNs: bigint;
  txBytes: bigint;
  txPackets: bigint;
  rxBytes: bigint;
  rxPackets: bigint;
  cgroupId: bigint;
  ownerStartNs: bigint;
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
  /** What the kernel dropped of it: packets, IP bytes and up to three (reason, packets) slots. */
  drops?: { packets: number; bytes: bigint; reasons: readonly (readonly [number, number])[] };
}

/** Writes a conversation as the kernel would store it: key at `keys[keyAt]`, value at `values[valueAt]`. */
export function writeFlowEntry(c: Conversation, keys: Buffer, keyAt: number, values: Buffer, valueAt: number): void {
  const K = FLOW_KEY.fields;
  const S = FLOW_STATS.fields;
  keys.fill(0, keyAt, keyAt + FLOW_KEY.size);
  values.fill(0, valueAt, valueAt + FLOW_STATS.size);
  const v4 = c.localIp.length === 4;
  if (v4) {
    keys.set([0xff, 0xff], keyAt + K.local_ip.offset + 10);
    keys.set(c.localIp, keyAt + K.local_ip.offset + 12);
    keys.set([0xff, 0xff], keyAt + K.remote_ip.offset + 10);
    keys.set(c.remoteIp, keyAt + K.remote_ip.offset + 12);
  } else {
    keys.set(c.localIp, keyAt + K.local_ip.offset);
    keys.set(c.remoteIp, keyAt + K.remote_ip.offset);
  }
  keys.writeUInt16LE(c.localPort, keyAt + K.local_port.offset);
  keys.writeUInt16LE(c.remotePort, keyAt + K.remote_port.offset);
  keys.writeUInt8(v4 ? 4 : 6, keyAt + K.ip_version.offset);
  keys.writeUInt8(c.protocol, keyAt + K.protocol.offset);
  keys.writeUInt32LE(c.ifindex, keyAt + K.ifindex.offset);
  keys.writeUInt32LE(c.netns, keyAt + K.netns.offset);
  values.writeBigUInt64LE(c.firstKtimeNs, valueAt + S.first_ns.offset);
  values.writeBigUInt64LE(c.cgroupId, valueAt + S.cgroup_id.offset);
  values.writeBigUInt64LE(c.ownerStartNs, valueAt + S.owner_start_ns.offset);
  values.writeBigUInt64LE(c.appSumUs, valueAt + S.app_sum_us.offset);
  values.writeUInt32LE(c.pid, valueAt + S.pid.offset);
  values.writeUInt32LE(c.handshakeUs, valueAt + S.handshake_us.offset);
  values.writeUInt32LE(c.srttUs, valueAt + S.srtt_us.offset);
  values.writeUInt32LE(c.minRttUs, valueAt + S.min_rtt_us.offset);
  values.writeUInt32LE(c.retransmits, valueAt + S.retransmits.offset);
  values.writeUInt32LE(c.appCount, valueAt + S.app_count.offset);
  values.writeUInt32LE(c.appMaxUs, valueAt + S.app_max_us.offset);
  values.writeUInt8(c.role, valueAt + S.role.offset);
  values.writeUInt8(c.icmpType, valueAt + S.icmp_type.offset);
  values.writeUInt8(c.icmpCode, valueAt + S.icmp_code.offset);
  values.write(c.comm.slice(0, 15), valueAt + S.comm.offset, 'latin1');
  if (c.drops) {
    values.writeUInt32LE(c.drops.packets, valueAt + S.drop_packets.offset);
    values.writeBigUInt64LE(c.drops.bytes, valueAt + S.drop_bytes.offset);
    c.drops.reasons.slice(0, 3).forEach(([reason, packets], i) => {
      values.writeUInt32LE(reason, valueAt + S.drop_reason.offset + 4 * i);
      values.writeUInt32LE(packets, valueAt + S.drop_reason_packets.offset + 4 * i);
    });
  }
  values.writeBigUInt64LE(c.txBytes, valueAt + S.tx_bytes.offset);
  values.writeBigUInt64LE(c.txPackets, valueAt + S.tx_packets.offset);
  values.writeBigUInt64LE(c.lastKtimeNs, valueAt + S.tx_last_ns.offset);
  values.writeUInt32LE(c.tcpFlags, valueAt + S.tx_tcp_flags.offset);
  values.writeBigUInt64LE(c.rxBytes, valueAt + S.rx_bytes.offset);
  values.writeBigUInt64LE(c.rxPackets, valueAt + S.rx_packets.offset);
  values.writeBigUInt64LE(c.lastKtimeNs, valueAt + S.rx_last_ns.offset);
}
