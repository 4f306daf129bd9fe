// withRefusals over a kernel described by its probe answers: what a failed load makes of the plan.
import { constants } from 'node:os';
import { describe, expect, it } from 'vitest';
import { BpfError, BtfKind } from '@kappa/ebpf-ffi';
import { DNS, featureOn } from './kernel.js';
import type { KernelFacts, KernelPlan } from './kernel.js';
import { INTERRUPTED_LOAD_RETRIES, LoadInterruptedError, withRefusals } from './start.js';

const { EAGAIN, EINVAL } = constants.errno;

/** 6.18 as its probes and BTF answer: every hook there. */
const everything: KernelFacts = {
  release: '6.18.0',
  programType: () => true,
  mapType: () => true,
  helper: () => true,
  atomics: () => true,
  btf: { has: (kind, name) => !(kind === BtfKind.FUNC && name === 'tcp_make_synack') },
};

/** What libbpf logs when the verifier of an skb program (DNS lives inside them) fails with `errno`. */
function skbLoadFailure(errno: number): BpfError {
  return new BpfError('cannot load kappa.bpf.o into the kernel', errno, [
    "libbpf: prog 'kappa_skb_ingress': BPF program load failed: -" + String(errno),
    "libbpf: prog 'kappa_skb_ingress': failed to load: -" + String(errno),
  ]);
}

describe('withRefusals', () => {
  it('loads again when the verifier was interrupted by a signal (EAGAIN), and DNS stays on', () => {
    const refusals: string[] = [];
    const plans: KernelPlan[] = [];
    const { plan } = withRefusals({ objects: { current: 'a', compat: 'b' }, kernel: everything, onRefused: (hook) => refusals.push(hook) }, false, (p) => {
      plans.push(p);
      if (plans.length === 1) throw skbLoadFailure(EAGAIN);
      return 'started';
    });
    expect(plans).toHaveLength(2);
    expect(refusals).toEqual([]);
    expect(featureOn(plan, DNS)).toBe(true);
  });

  it('gives up after a bounded number of interrupted loads with an error that says so, refusing nothing', () => {
    const refusals: string[] = [];
    let loads = 0;
    const start = () =>
      withRefusals({ objects: { current: 'a', compat: 'b' }, kernel: everything, onRefused: (hook) => refusals.push(hook) }, false, () => {
        loads++;
        throw skbLoadFailure(EAGAIN);
      });
    expect(start).toThrow(LoadInterruptedError);
    expect(start).toThrow(/interrupted by signals/);
    expect(loads).toBe(2 * (INTERRUPTED_LOAD_RETRIES + 1));
    expect(refusals).toEqual([]);
  });

  it('still turns DNS off when the verifier refuses the skb programs with it in', () => {
    const refusals: string[] = [];
    let loads = 0;
    const { plan } = withRefusals({ objects: { current: 'a', compat: 'b' }, kernel: everything, onRefused: (hook) => refusals.push(hook) }, false, () => {
      if (loads++ === 0) throw skbLoadFailure(EINVAL);
      return 'started';
    });
    expect(refusals).toEqual(['cgroup-skb']);
    expect(featureOn(plan, DNS)).toBe(false);
  });
});
