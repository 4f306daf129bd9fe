// Receive timestamps: the kernel stamps each received packet with its arrival time (skb->tstamp,
// CLOCK_REALTIME, in netif_rx / netif_receive_skb, where a packet capture reads it) only while at
// least one socket on the host asks for receive timestamps (net_enable_timestamp: a static key
// counted per socket; chronyd, ntpd, systemd-timesyncd and packet captures usually hold one).
// Holding such a socket turns them on for as long as it is open, and the kernel closes it with
// the process, so a crash never leaves them on.
import { BpfError, errnoName } from './errors.js';
import { libbpf } from './libbpf.js';

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
/** SO_TIMESTAMPNS_OLD: the same number on every Linux architecture's asm-generic socket.h. */
const SO_TIMESTAMPNS = 35;

/** Turns the kernel's receive timestamps on until the returned function is called. */
export function holdReceiveTimestamps(): () => void {
  const bpf = libbpf();
  const fd = bpf.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const errno = bpf.errno();
    throw new BpfError(`cannot open a socket to turn on receive timestamps (${errnoName(errno)})`, errno);
  }
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  if (bpf.setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, one, 4) !== 0) {
    const errno = bpf.errno();
    bpf.close(fd);
    throw new BpfError(`cannot turn on receive timestamps: setsockopt SO_TIMESTAMPNS failed (${errnoName(errno)})`, errno);
  }
  let open = true;
  return () => {
    if (open) bpf.close(fd);
    open = false;
  };
}

const CLOCK_REALTIME = 0;
const CLOCK_MONOTONIC = 1;

/**
 * CLOCK_REALTIME minus CLOCK_MONOTONIC (bpf_ktime_get_ns's clock), in ns, to within a quarter of
 * a microsecond: the realtime reading closest to the middle of the tightest of several monotonic
 * brackets. It changes only when the wall clock is stepped (NTP slews both clocks alike).
 */
export function realtimeMinusMonotonicNs(): bigint {
  const bpf = libbpf();
  const ts = Buffer.alloc(16);
  const read = (clock: number) => {
    bpf.clock_gettime(clock, ts);
    return ts.readBigInt64LE(0) * 1_000_000_000n + ts.readBigInt64LE(8);
  };
  let best: { offset: bigint; width: bigint } | undefined;
  for (let i = 0; i < 8; i++) {
    const before = read(CLOCK_MONOTONIC);
    const real = read(CLOCK_REALTIME);
    const after = read(CLOCK_MONOTONIC);
    const width = after - before;
    if (!best || width < best.width) best = { offset: real - (before + width / 2n), width };
  }
  return best!.offset;
}
