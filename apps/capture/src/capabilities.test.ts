// Which capabilities the start-up check finds missing, from a /proc/self/status text.
import { expect, it } from 'vitest';
import { MissingCapabilityError, assertCapabilities, effectiveCapabilities, missingCapabilities } from './capabilities.js';

const BPF = 1n << 39n;
const PERFMON = 1n << 38n;
const NET_ADMIN = 1n << 12n;
const SYS_ADMIN = 1n << 21n;
const status = (eff: bigint) => `Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t${eff.toString(16).padStart(16, '0')}\nCapBnd:\t000001ffffffffff\n`;

it('reads CapEff, not the bounding or inheritable set', () => {
  expect(effectiveCapabilities(status(BPF | NET_ADMIN))).toBe(BPF | NET_ADMIN);
});

it('finds nothing missing with exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, in either mode', () => {
  expect(missingCapabilities(BPF | PERFMON | NET_ADMIN, false)).toEqual([]);
  expect(missingCapabilities(BPF | PERFMON | NET_ADMIN, true)).toEqual([]);
});

it('names each missing one, in the documented order', () => {
  expect(missingCapabilities(0n, false)).toEqual(['CAP_BPF', 'CAP_PERFMON', 'CAP_NET_ADMIN']);
  expect(missingCapabilities(BPF | NET_ADMIN, false)).toEqual(['CAP_PERFMON']);
});

it('lets CAP_SYS_ADMIN stand in for all three in socket mode, but not for CAP_NET_ADMIN in interface mode (tc is netlink)', () => {
  expect(missingCapabilities(SYS_ADMIN, false)).toEqual([]);
  expect(missingCapabilities(SYS_ADMIN, true)).toEqual(['CAP_NET_ADMIN']);
});

it('throws one error whose message names the missing capability and the Kubernetes remedy', () => {
  let thrown: unknown;
  try {
    assertCapabilities(false, status(BPF | NET_ADMIN));
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(MissingCapabilityError);
  expect((thrown as MissingCapabilityError).missing).toEqual(['CAP_PERFMON']);
  expect((thrown as Error).message).toMatch(/^capture needs CAP_PERFMON, missing .*capabilities\.add \[PERFMON\]/);
});
