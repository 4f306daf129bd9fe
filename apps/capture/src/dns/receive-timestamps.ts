// DNS responses are timed where they reached the interface, from the kernel's receive timestamp
// (bpf/kappa_dns.h), which the kernel takes only while some socket asks for receive timestamps.
// Capture holds one while DNS is on. Without it (refused), responses are timed at the socket,
// 10-50 µs after they arrived.
import { holdReceiveTimestamps } from '@kappa/ebpf-ffi';
import type { Logger } from '@kappa/observability';

/** Turns the kernel's receive timestamps on; returns what turns them off again. */
export function holdDnsReceiveTimestamps(logger: Logger): () => void {
  try {
    return holdReceiveTimestamps();
  } catch (error) {
    logger.warn({ err: error }, 'DNS responses are timed at the socket, 10-50 µs after they reached the interface: the kernel\'s receive timestamps could not be turned on');
    return () => {};
  }
}
