// Inside the test VM only, after run.ts raised the guest kernel's lockdown to "confidentiality"
// (which forbids bpf_probe_read_kernel, and cannot be lowered again until reboot): 6.1 has no
// bpf_cast_to_kern_ctx, so capture's compat object needs those reads, and a kernel that forbids
// them must be refused in one line naming what is missing, before anything is loaded.
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { refusalLines } from './refused.js';

it('refuses to start, in one line naming bpf_probe_read_kernel and the minimum kernel, on a 6.1 kernel in lockdown', () => {
  expect(readFileSync('/sys/kernel/security/lockdown', 'utf8')).toContain('[confidentiality]');
  for (const line of refusalLines()) {
    expect(line).toMatch(
      /^kappa-capture: this kernel \(6\.1\.\S+\) lacks bpf_probe_read_kernel\(\) in cgroup and sock_ops programs \(denied under kernel lockdown "confidentiality"\) \(kernel 5\.8, for namespaces, device MTU and fragment sizes on kernels without bpf_cast_to_kern_ctx \(before 6\.2\)\); capture needs Linux 5\.15 or later with BTF \(CONFIG_DEBUG_INFO_BTF\)$/,
    );
  }
});
