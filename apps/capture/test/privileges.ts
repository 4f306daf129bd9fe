// The capture tests load BPF into the real kernel: they need root. Outside CI a non-root run
// skips them; under CI=true a missing privilege fails the run instead of hiding it.
import { describe } from 'vitest';

const root = process.getuid?.() === 0;
if (!root && process.env['CI'] === 'true') {
  throw new Error('capture tests need root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN); CI must run them privileged');
}

/** `describe` for tests that need root. */
export const describePrivileged = describe.skipIf(!root);
