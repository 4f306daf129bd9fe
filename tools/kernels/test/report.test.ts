// The kernel × feature table: a feature fails only where its tests failed, a run that never
// finished fails everything, and a test no feature names still gets its own row.
import { describe, expect, it } from 'vitest';
import { allPassed, featureRows, hooksOfCheck, hostRunFromReport, renderReport, renderTable, testsOfReport, withFilesWithoutResults } from '../report.js';
import type { Feature, KernelRun } from '../report.js';

const report = (tests: { fullName: string; status: string; failureMessages?: string[] }[], extra: object = {}) =>
  JSON.stringify({ testResults: [{ name: '/kappa/apps/capture/test/socket-mode.test.ts', status: 'passed', assertionResults: tests, ...extra }] });

const features: Feature[] = [
  { name: 'TCP over IPv4', tests: /TCP over IPv4/ },
  { name: 'app latency', check: 'app latency', tests: /latency/ },
  { name: 'never run', tests: /nothing matches this/ },
];

describe('the kernel × feature table', () => {
  const host: KernelRun = {
    kernel: '6.18 (host)',
    tests: testsOfReport(report([
      { fullName: 'socket mode counts TCP over IPv4 exactly', status: 'passed' },
      { fullName: 'socket mode measures application latency over IPv4', status: 'passed' },
      { fullName: 'socket mode leaves nothing attached', status: 'passed' },
    ])),
    hooks: { 'app latency': 'tracepoint' },
  };
  const vm: KernelRun = {
    kernel: '6.1 (qemu)',
    tests: testsOfReport(report([
      { fullName: 'socket mode counts TCP over IPv4 exactly', status: 'passed' },
      { fullName: 'socket mode measures application latency over IPv4', status: 'failed', failureMessages: ['expected 0 to be 20\n at ...'] },
    ])),
    hooks: { 'app latency': 'fexit' },
  };

  it('marks a feature FAIL only on the kernel where its test failed, with the hook used there', () => {
    const rows = featureRows([host, vm], features);
    expect(rows.find((r) => r.feature === 'app latency')?.cells).toEqual([
      { outcome: 'pass', hook: 'tracepoint' },
      { outcome: 'FAIL', hook: 'fexit' },
    ]);
    expect(rows.find((r) => r.feature === 'TCP over IPv4')?.cells.map((c) => c.outcome)).toEqual(['pass', 'pass']);
    expect(allPassed([host, vm])).toBe(false);
    expect(allPassed([host])).toBe(true);
  });

  it('shows a feature no test proved as missing, and a test no feature names as its own row', () => {
    const rows = featureRows([host, vm], features);
    expect(rows.find((r) => r.feature === 'never run')?.cells.map((c) => c.outcome)).toEqual(['missing', 'missing']);
    expect(rows.find((r) => r.feature === 'socket mode leaves nothing attached')?.cells.map((c) => c.outcome)).toEqual(['pass', 'missing']);
  });

  it('fails every feature of a run that did not finish, and says why under the table', () => {
    const crashed: KernelRun = { kernel: '6.1 (qemu)', tests: [], error: 'the VM did not finish within 30 min' };
    const rows = featureRows([host, crashed], features);
    expect(rows.every((r) => r.cells[1]?.outcome === 'FAIL')).toBe(true);
    expect(allPassed([host, crashed])).toBe(false);
    const table = renderTable([host, crashed], features);
    expect(table).toContain('6.1 (qemu): the VM did not finish within 30 min');
    expect(table.split('\n')[0]).toMatch(/^feature\s+6\.18 \(host\)\s+6\.1 \(qemu\)$/);
  });

  it('counts a test file that failed before any test ran as one failed test', () => {
    const tests = testsOfReport(report([], { status: 'failed', message: 'kappa-capture exited 1 before attaching' }));
    expect(tests).toEqual([{ file: 'test/socket-mode.test.ts', name: 'test/socket-mode.test.ts (did not run)', status: 'failed', message: 'kappa-capture exited 1 before attaching' }]);
    expect(allPassed([{ kernel: 'k', tests }])).toBe(false);
  });

  it('fails the tests a failed beforeAll left skipped, with the error of their file', () => {
    const tests = testsOfReport(report([{ fullName: 'socket mode counts TCP over IPv4 exactly', status: 'skipped' }], { status: 'failed', message: 'cannot load kappa.bpf.o' }));
    expect(tests).toEqual([{ file: 'test/socket-mode.test.ts', name: 'socket mode counts TCP over IPv4 exactly', status: 'failed', message: 'cannot load kappa.bpf.o' }]);
  });

  it('fails a test file that left no result on a kernel, by name, instead of showing its features as missing', () => {
    const files = ['test/socket-mode.test.ts', 'test/tcp-health.test.ts'];
    const checked = withFilesWithoutResults(host, files);
    expect(checked.tests.filter((t) => t.status === 'failed').map((t) => t.name)).toEqual(['test/tcp-health.test.ts (no result on this kernel)']);
    expect(allPassed([checked])).toBe(false);
    expect(renderTable([checked], features)).toContain('6.18 (host): FAIL test/tcp-health.test.ts (no result on this kernel): vitest reported no test of this file');
    expect(withFilesWithoutResults(host, ['test/socket-mode.test.ts'])).toBe(host);
  });

  it('lists the failed tests with the first line of their message', () => {
    expect(renderTable([host, vm], features)).toContain('6.1 (qemu): FAIL socket mode measures application latency over IPv4: expected 0 to be 20');
  });
});

describe('kappa-capture --check lines', () => {
  it('give the hook of each feature for the table', () => {
    const check = [
      'kernel 6.1.0-57-cloud-amd64: capture can run here (it needs Linux 5.15 or later)',
      'kernel structures: read with bpf_probe_read_kernel (kappa-compat.bpf.o: no bpf_cast_to_kern_ctx before 6.2)',
      'app latency: via fexit inet_sendmsg, inet6_sendmsg, inet_recvmsg, inet6_recvmsg (no sock_send_length tracepoint before 6.3)',
      'TCP counters: via the flow maps, per packet (socket-iterator: turned off by --disable-hooks)',
    ].join('\n');
    expect(hooksOfCheck(check)).toEqual({ 'kernel structures': 'bpf_probe_read_kernel', 'app latency': 'fexit', 'TCP counters': 'flow' });
    expect(hooksOfCheck('app latency: via tracepoints sock:sock_send_length and sock:sock_recv_length\ndns latency: off (x)')).toEqual({ 'app latency': 'tracepoint', 'dns latency': 'off' });
    expect(hooksOfCheck('IPv6 SYN-ACKs of listeners: via fexit tcp_make_synack (the cgroup egress hook skips them before 6.2)')).toEqual({ 'IPv6 SYN-ACKs of listeners': 'fexit' });
  });

  it('leave a refused kernel\'s column empty but for its refusal', () => {
    const refused = { kernel: '5.10.0-46-cloud-amd64 (qemu)', refused: true, tests: [{ file: 'older.test.ts', name: 'refuses to start on a kernel older than 5.15, in one line', status: 'passed' as const }] };
    const rows = featureRows([refused]);
    expect(rows.find((r) => r.feature.startsWith('kernel before 5.15'))?.cells[0]?.outcome).toBe('pass');
    expect(rows.find((r) => r.feature.startsWith('TCP over IPv4'))?.cells[0]?.outcome).toBe('-');
    expect(allPassed([refused])).toBe(true);
  });
});

describe("npm test's table: the host's column from capture's own report", () => {
  // capture's whole suite, as npm test's kernel lane runs it: two files the VM ran, one it did not.
  const suite = JSON.stringify({
    testResults: [
      { name: '/w/apps/capture/test/socket-mode.test.ts', status: 'passed', assertionResults: [{ fullName: 'socket mode counts TCP over IPv4 exactly', status: 'passed' }] },
      { name: '/w/apps/capture/test/kernel-features.test.ts', status: 'passed', assertionResults: [{ fullName: 'kernel hooks per feature names the hook of app latency', status: 'passed' }] },
      { name: '/w/apps/capture/test/flood.test.ts', status: 'failed', assertionResults: [{ fullName: 'flood keeps up', status: 'failed', failureMessages: ['slow'] }] },
    ],
  });
  const check = 'kernel 6.18: capture can run here\napp latency: via tracepoints sock:sock_send_length and sock:sock_recv_length\n';
  const vm: KernelRun = { kernel: '6.1 (qemu)', tests: testsOfReport(report([{ fullName: 'socket mode counts TCP over IPv4 exactly', status: 'passed' }])), hooks: { 'app latency': 'fexit' }, check: 'app latency: via fexit x' };

  it('takes the results of the files the VMs ran, with the hooks of this kernel, in front of the VMs', () => {
    const host = hostRunFromReport('6.18 (host)', suite, ['test/socket-mode.test.ts', 'test/kernel-features.test.ts'], check);
    expect(host.tests.map((t) => t.name)).toEqual(['socket mode counts TCP over IPv4 exactly', 'kernel hooks per feature names the hook of app latency']);
    expect(host.error).toBeUndefined();
    const rows = featureRows([host, vm], features);
    expect(rows.find((r) => r.feature === 'TCP over IPv4')?.cells.map((c) => c.outcome)).toEqual(['pass', 'pass']);
    expect(rows.find((r) => r.feature === 'app latency')?.cells).toEqual([{ outcome: 'pass', hook: 'tracepoint' }, { outcome: 'missing', hook: 'fexit' }]);
    expect(rows.some((r) => r.feature.includes('flood'))).toBe(false);
    const printed = renderReport([host, vm]);
    expect(printed.split('\n')[1]).toMatch(/^feature\s+6\.18 \(host\)\s+6\.1 \(qemu\)$/);
    expect(printed).toContain('6.18 (host), kappa-capture --check:\n  kernel 6.18: capture can run here\n');
    expect(printed).toContain('6.1 (qemu), kappa-capture --check:\n  app latency: via fexit x\n');
  });

  it("fails the host's column when capture left no report, or none of the VMs' files", () => {
    expect(renderTable([hostRunFromReport('6.18 (host)', undefined, ['test/socket-mode.test.ts'], check), vm], features)).toContain("6.18 (host): no report of capture's tests on this kernel");
    const none = hostRunFromReport('6.18 (host)', suite, ['test/dns.test.ts'], check);
    expect(featureRows([none], features).every((r) => r.cells[0]?.outcome === 'FAIL')).toBe(true);
    expect(none.error).toBe("capture's report on this kernel has none of test/dns.test.ts");
  });
});
