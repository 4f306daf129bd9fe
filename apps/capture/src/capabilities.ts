// The Linux capabilities kappa-capture needs, checked against the effective set before anything
// touches the kernel, so a missing one is named in one line instead of surfacing as a libbpf
// EPERM (or, for CAP_PERFMON, a verifier EINVAL) halfway through loading.
import { readFileSync } from 'node:fs';

/** Capability numbers (linux/capability.h). */
const CAPABILITY_NUMBERS = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_ADMIN: 21,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;

export type CapabilityName = keyof typeof CAPABILITY_NUMBERS;

/**
 * What each one is for. Every mode needs all three: the object is loaded whole (cgroup_skb,
 * sock_ops and tc programs are CAP_NET_ADMIN program types; the tracepoint programs and the CO-RE
 * reads of kernel memory need CAP_PERFMON; maps, BTF and programs need CAP_BPF). Measured on
 * kernel 6.18 by test/capabilities.test.ts. BPF memory is charged to the memory cgroup (kernel
 * >= 5.11), so RLIMIT_MEMLOCK and CAP_SYS_RESOURCE play no part.
 */
export const REQUIRED_CAPABILITIES: Readonly<Record<Exclude<CapabilityName, 'CAP_SYS_ADMIN'>, string>> = {
  CAP_BPF: 'maps, BTF and programs (bpf())',
  CAP_PERFMON: 'tracepoint programs and reads of kernel memory',
  CAP_NET_ADMIN: 'cgroup_skb, sock_ops and tc programs and their attachment',
};

/** The process lacks a capability it needs; the message names it. */
export class MissingCapabilityError extends Error {
  override name = 'MissingCapabilityError';
  constructor(
    message: string,
    readonly missing: readonly CapabilityName[],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The effective capability set from a /proc/<pid>/status text. */
export function effectiveCapabilities(statusText: string): bigint {
  const hex = /^CapEff:\s*([0-9a-f]+)$/im.exec(statusText)?.[1];
  if (hex === undefined) throw new Error('no CapEff line in /proc/self/status');
  return BigInt(`0x${hex}`);
}

export function hasCapability(effective: bigint, name: CapabilityName): boolean {
  return (effective & (1n << BigInt(CAPABILITY_NUMBERS[name]))) !== 0n;
}

/**
 * The required capabilities missing from `effective`. CAP_SYS_ADMIN stands in for CAP_BPF and
 * CAP_PERFMON, and for CAP_NET_ADMIN when loading and attaching to cgroups, as the kernel's
 * bpf_capable(), perfmon_capable() and bpf_net_capable() accept it (kappa never asks for it, but
 * an operator running privileged is not refused); tc filters (interface mode) are netlink
 * requests that want CAP_NET_ADMIN itself.
 */
export function missingCapabilities(effective: bigint, interfaceMode: boolean): CapabilityName[] {
  const admin = hasCapability(effective, 'CAP_SYS_ADMIN');
  return (Object.keys(REQUIRED_CAPABILITIES) as (keyof typeof REQUIRED_CAPABILITIES)[]).filter(
    (name) => !hasCapability(effective, name) && (!admin || (name === 'CAP_NET_ADMIN' && interfaceMode)),
  );
}

function list(names: readonly string[]): string {
  return names.length <= 1 ? (names[0] ?? '') : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
}

/** Throws MissingCapabilityError naming every required capability the process lacks. */
export function assertCapabilities(interfaceMode: boolean, statusText = readFileSync('/proc/self/status', 'utf8')): void {
  const missing = missingCapabilities(effectiveCapabilities(statusText), interfaceMode);
  if (missing.length === 0) return;
  const uses = missing.map((name) => `${name}: ${REQUIRED_CAPABILITIES[name as keyof typeof REQUIRED_CAPABILITIES]}`).join('; ');
  throw new MissingCapabilityError(
    `capture needs ${list(missing)}, missing from its effective capability set (${uses}); ` +
      `add ${missing.length === 1 ? 'it' : 'them'} to the container's capabilities (Kubernetes: securityContext.capabilities.add ` +
      `[${missing.map((name) => name.slice(4)).join(', ')}]) or run as root; CAP_SYS_ADMIN is not needed`,
    missing,
  );
}

/**
 * A permission error from the kernel although every required capability is effective: something
 * other than capabilities refused (a seccomp profile that wants CAP_SYS_ADMIN for bpf(), an LSM,
 * or a user namespace). Named as such, with the capabilities kappa holds.
 */
export function permissionRefused(error: Error): MissingCapabilityError {
  return new MissingCapabilityError(
    `capture needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN and has them, but the kernel still refused: ${error.message.replace(/; kappa-capture needs .*$/, '')}; ` +
      `a seccomp profile (older runtimes allow bpf() and perf_event_open() only with CAP_SYS_ADMIN), an LSM or a user namespace forbids it`,
    [],
    { cause: error },
  );
}
