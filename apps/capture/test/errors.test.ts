// Start-up failures an operator can act on: one line on stderr, non-zero exit, nothing attached.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { TestCgroup, childEnv, uniqueName } from '@kappa/testing';
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

  it('prints one line naming the --btf file when that BTF lacks the kernel types the programs read', () => {
    // A real but foreign BTF: `bpftool gen min_core_btf` keeps only what an unrelated program
    // reads (task_struct.pid), as a BTFHub-minimised file made for another object would be. The
    // kernel would load kappa fine with its own BTF, so the error must blame the file, not the kernel.
    const dir = mkdtempSync(join(tmpdir(), `${uniqueName('kc-btf')}-`));
    const cgroup = new TestCgroup(uniqueName('kc-btf'));
    const node = uniqueName('kc-btf');
    try {
      const source = join(dir, 'unrelated.bpf.c');
      writeFileSync(
        source,
        [
          '#include <linux/bpf.h>',
          '#include <bpf/bpf_helpers.h>',
          '#include <bpf/bpf_core_read.h>',
          'struct task_struct { int pid; } __attribute__((preserve_access_index));',
          'SEC("tp_btf/sched_process_exec") int unrelated(void *ctx) { struct task_struct *t = (void *)bpf_get_current_task(); return BPF_CORE_READ(t, pid) > 0; }',
          'char LICENSE[] SEC("license") = "GPL";',
          '',
        ].join('\n'),
      );
      const object = join(dir, 'unrelated.bpf.o');
      execFileSync('clang', ['-g', '-O2', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', source, '-o', object]);
      const btf = join(dir, 'foreign.btf');
      execFileSync('bpftool', ['gen', 'min_core_btf', '/sys/kernel/btf/vmlinux', btf, object]);
      expect(statSync(btf).size).toBeGreaterThan(24);

      const result = spawnSync(process.execPath, [CAPTURE_BIN, '--stdout', '--metrics-port', '0', '--btf', btf, '--node', node, '--cgroup', cgroup.path], {
        encoding: 'utf8',
        timeout: 60_000,
        env: childEnv(),
      });
      expect(result.status, result.stderr).toBe(1);
      expect(lines(result.stderr), result.stderr).toHaveLength(1);
      expect(result.stderr).toMatch(new RegExp(`^kappa-capture: BTF file ${btf.replace(/[.]/g, '\\.')} lacks kernel types the programs need \\(no match for struct \\w+\\.\\w+`));
      expect(result.stderr).toContain('pass --btf PATH to the BTF of this kernel');
      expect(result.stderr).not.toMatch(/kernel does not support/);
      expect(result.stdout).toBe('');
      // Nothing stays behind: no program on the cgroup, no pinned maps of this node.
      expect(kappaAttachments([cgroup.path])).toEqual([]);
      expect(existsSync('/sys/fs/bpf/kappa') ? readdirSync('/sys/fs/bpf/kappa').filter((name) => name.startsWith(`${node}-`)) : []).toEqual([]);
    } finally {
      cgroup.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('--check says DNS is off, with the refusal, when the kernel refuses only the skb programs carrying the DNS copy, as a start then finds', () => {
    // The copy is verified only with DNS on (kappa_config.dns is read-only: off, the verifier
    // drops it), so a kernel can take the counting programs and refuse the copy (6.1 once did,
    // E2BIG). Stand-in for such a kernel: the real sources with one unchecked packet read added to
    // the copy, which every verifier refuses.
    const dir = mkdtempSync(join(tmpdir(), 'kappa-dnsrefused-'));
    try {
      const bpf = fileURLToPath(new URL('../../../bpf', import.meta.url));
      for (const name of readdirSync(bpf).filter((n) => /\.(c|h)$/.test(n))) cpSync(join(bpf, name), join(dir, name));
      const header = join(dir, 'kappa_dns.h');
      const text = readFileSync(header, 'utf8');
      const at = 'return 1; /* not a socket of the watched cgroup */';
      expect(text).toContain(at);
      writeFileSync(header, text.replace(at, `${at}\n\ts->pad_end += *(__u8 *)(long)(skb->data + 100);`));
      const object = join(dir, 'dns-refused.bpf.o');
      execFileSync('clang', ['-g', '-O2', '-target', 'bpf', '-mcpu=v3', '-D__TARGET_ARCH_x86', '-I', join(bpf, '.output'), '-I', dir, '-c', join(dir, 'kappa.bpf.c'), '-o', object]);

      const check = spawnSync(process.execPath, [CAPTURE_BIN, '--check', '--bpf-object', object], { encoding: 'utf8', timeout: 60_000, env: childEnv() });
      expect(check.status, check.stderr).toBe(0);
      expect(check.stdout).toMatch(/^DNS: off \(cgroup-skb: the kernel refused it \(EACCES: prog 'kappa_skb_(in|e)gress'/m);
      // Counting goes on without it.
      expect(check.stdout).toMatch(/^TCP counters: via socket storage/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("--check under a CPU profiler (SIGPROF every 50 µs) loads every program: the verifier's EAGAIN is no refusal", () => {
    const profiles = mkdtempSync(join(tmpdir(), 'kappa-cpuprof-'));
    try {
      const check = spawnSync(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profiles}`, '--cpu-prof-interval', '50', CAPTURE_BIN, '--check'], { encoding: 'utf8', timeout: 120_000, env: childEnv() });
      expect(check.stderr).not.toMatch(/refused|EAGAIN/);
      expect(check.status, check.stderr).toBe(0);
      expect(check.stdout).toMatch(/^DNS: via cgroup skb hooks/m);
      expect(readdirSync(profiles).some((name) => name.endsWith('.cpuprofile'))).toBe(true);
    } finally {
      rmSync(profiles, { recursive: true, force: true });
    }
  });
});
