// Start-up failures an operator can act on: one line on stderr, non-zero exit, nothing attached.
import { spawnSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { TestCgroup, uniqueName } from '@kappa/testing';
import { CAPTURE_BIN, kappaAttachments, startCapture } from './harness.js';
import { describePrivileged } from './privileges.js';

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line.trim() !== '');
}

describePrivileged('start-up errors', () => {
  it('prints one line naming every missing capability when started without privileges', () => {
    const drop = 'cap_bpf,cap_perfmon,cap_sys_admin,cap_net_admin';
    const result = spawnSync('capsh', [`--drop=${drop}`, '--', '-c', `exec "${process.execPath}" "${CAPTURE_BIN}" --stdout --metrics-port 0`], { encoding: 'utf8', timeout: 30_000 });
    expect(result.status).not.toBe(0);
    expect(lines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toMatch(/^kappa-capture: capture needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, missing from its effective capability set/);
    expect(result.stdout).toBe('');
  });

  it('prints one line naming the file when pointed at a missing BTF', () => {
    const result = spawnSync(process.execPath, [CAPTURE_BIN, '--stdout', '--metrics-port', '0', '--btf', '/missing/vmlinux.btf'], { encoding: 'utf8', timeout: 30_000 });
    expect(result.status).not.toBe(0);
    expect(lines(result.stderr)).toEqual(['kappa-capture: BTF file /missing/vmlinux.btf does not exist; pass --btf PATH to the BTF of this kernel']);
  });

  it('loads against an explicit BTF file (the kernel’s own, as BTFHub files are used)', async () => {
    // --btf reaches libbpf's btf_custom_path: CO-RE relocations are resolved against this file.
    const cgroup = new TestCgroup(uniqueName('kc-errors'));
    try {
      const capture = await startCapture(['--btf', '/sys/kernel/btf/vmlinux', '--cgroup', cgroup.path]);
      expect((await capture.stop()).code).toBe(0);
      expect(kappaAttachments([cgroup.path])).toEqual([]);
    } finally {
      cgroup.destroy();
    }
  });
});
