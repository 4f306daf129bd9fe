// Inside a test VM booted with a kernel older than capture's minimum (tools/kernels/run.ts
// --older: Debian 11's 5.10 cloud kernel, straight from its package): capture must refuse it
// before loading anything, in one line naming each missing feature and the minimum kernel, both
// when it starts and under --check (what the DaemonSet's check-node init container runs).
import { spawnSync } from 'node:child_process';
import { release } from 'node:os';
import { expect, it } from 'vitest';
import { refusalLines } from './refused.js';

it('refuses to start on a kernel older than 5.15, in one line naming what it lacks and the minimum kernel', () => {
  // The guest's own kernel, not a probe answer faked for the test.
  expect(release()).toMatch(/^5\.10\./);
  for (const line of refusalLines()) {
    expect(line).toMatch(/^kappa-capture: this kernel \(5\.10\.\S+\) lacks /);
    // What 5.10 lacks, each with the release that brought it.
    expect(line).toContain('bpf_ktime_get_coarse_ns() (kernel 5.11');
    expect(line).toContain('BPF atomic instructions (BPF_ATOMIC OR and CMPXCHG) (kernel 5.12');
    expect(line).toContain('bpf_get_current_task_btf() in cgroup programs (kernel 5.15');
    expect(line).toMatch(/; capture needs Linux 5\.15 or later with BTF \(CONFIG_DEBUG_INFO_BTF\)$/);
  }
  // Refused before anything was loaded: no kappa program is in the kernel.
  const progs = spawnSync('bpftool', ['prog', 'show'], { encoding: 'utf8' });
  expect(progs.status).toBe(0);
  expect(progs.stdout).not.toMatch(/kappa_/);
});
