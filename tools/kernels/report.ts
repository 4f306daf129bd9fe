// Turns the vitest JSON reports of one run per kernel into the table `npm run test:kernels`
// prints: one row per capture feature, one column per kernel, each cell the result of the tests
// that prove that feature there. A test no feature names gets a row of its own, so nothing that
// ran is left out of the table.

export type Outcome = 'pass' | 'FAIL' | 'skip' | 'missing' | '-';

/** One test of a vitest JSON report (`--reporter=json`), the fields used here. */
export interface TestResult {
  file: string;
  name: string;
  status: 'passed' | 'failed' | 'skipped' | 'pending' | 'todo';
  message?: string;
}

/** A kernel's run: its name for the column, its tests, and why it has none if it has none. */
export interface KernelRun {
  kernel: string;
  tests: TestResult[];
  /** The run itself failed (boot, timeout, crash): every feature there is FAIL. */
  error?: string;
  /** Per feature: the hook it uses on that kernel (`kappa-capture --check`), shown in the cell. */
  hooks?: Record<string, string>;
  /** `kappa-capture --check` on that kernel, printed under the table. */
  check?: string;
  /** A kernel capture must refuse (older than its minimum): only the refusal runs there. */
  refused?: boolean;
}

interface VitestJson {
  testResults?: {
    name?: string;
    status?: string;
    message?: string;
    assertionResults?: { fullName?: string; title?: string; status?: string; failureMessages?: string[] }[];
  }[];
}

/** The tests of a vitest JSON report; a file that failed before any test ran counts as one failed test. */
export function testsOfReport(json: string): TestResult[] {
  const report = JSON.parse(json) as VitestJson;
  const tests: TestResult[] = [];
  for (const suite of report.testResults ?? []) {
    const file = (suite.name ?? '').replace(/^.*\/(test|src)\//, '$1/');
    const assertions = suite.assertionResults ?? [];
    // A file that failed outside its tests (a beforeAll threw) reports them skipped: they did not
    // pass there, so they count as failed, with the file's error.
    const fileFailed = suite.status === 'failed' && !assertions.some((a) => a.status === 'failed');
    for (const a of assertions) {
      let status = (a.status ?? 'failed') as TestResult['status'];
      let message = a.failureMessages?.[0];
      if (fileFailed && status !== 'passed') {
        status = 'failed';
        message = suite.message ?? '';
      }
      tests.push({ file, name: a.fullName ?? a.title ?? '?', status, ...(message ? { message } : {}) });
    }
    if (assertions.length === 0 && suite.status === 'failed') {
      tests.push({ file, name: `${file} (did not run)`, status: 'failed', message: suite.message ?? '' });
    }
  }
  return tests;
}

/** A capture feature and the tests (by full name) that prove it. */
export interface Feature {
  name: string;
  /** Key of the feature in `kappa-capture --check` (its hook goes in the cell). */
  check?: string;
  tests: RegExp;
  /** Proved only on kernels whose name contains this (the test changes the kernel: VM only). */
  only?: string;
}

/**
 * The features of capture's exactness tests (apps/capture/test), most basic first. The patterns
 * match the tests' full names ("<describe> <it>").
 */
export const FEATURES: readonly Feature[] = [
  { name: 'TCP over IPv4, both vantages = tshark', tests: /socket mode.*\bTCP over IPv4\b/ },
  { name: 'TCP over IPv6, both vantages = tshark', check: 'IPv6 SYN-ACKs of listeners', tests: /socket mode.*\bTCP over IPv6\b/ },
  { name: 'UDP over IPv4, both vantages = tshark', tests: /socket mode.*\bUDP over IPv4\b/ },
  { name: 'UDP over IPv6, both vantages = tshark', tests: /socket mode.*\bUDP over IPv6\b/ },
  { name: 'ICMP echo = tshark', tests: /socket mode.*\bICMP echo over IPv4\b/ },
  { name: 'ICMPv6 echo = tshark', tests: /socket mode.*\bICMPv6 echo\b/ },
  { name: 'TCP flags', tests: /socket mode.*\bORs the TCP flags\b/ },
  { name: 'application latency', check: 'app latency', tests: /socket mode.*\bapplication latency\b/ },
  { name: 'GSO/GRO segments (offloads on) = nstat', tests: /GSO\/GRO super-packets/ },
  { name: 'process attribution (exited process)', tests: /keeps pid and comm/ },
  { name: 'process attribution (listener older than capture)', check: 'late owner', tests: /listening before capture attached/ },
  { name: 'retransmits = nstat, RTT = ss, handshake', tests: /retransmits equal to RetransSegs/ },
  { name: 'interface mode (tc) = tshark', tests: /^interface mode .*counts pings/ },
  { name: 'interface mode: crash takeover of tc filters', tests: /^interface mode .*(?:SIGKILL|replaces|left)/ },
  { name: 'in a private cgroup namespace, node cgroup2 under a prefix (DaemonSet)', tests: /private cgroup namespace.*attaches to the node tree/ },
  { name: 'hook per feature: start log = --check = heartbeat = tracefs', check: 'app latency', tests: /kernel hooks per feature names the hook/ },
  { name: 'tracepoint hook off: next hook, or off with the reason', tests: /kernel hooks per feature with the tracepoint hook turned off/ },
  { name: '--check: missing bpffs, tracefs, cgroup named in one line', tests: /kernel hooks per feature --check refuses a node without bpffs/ },
  { name: 'unfit kernel refused in one line (6.1 in lockdown)', tests: /refuses to start, in one line naming bpf_probe_read_kernel/, only: 'qemu' },
  { name: 'kernel before 5.15 refused in one line (Debian 11 5.10)', tests: /refuses to start on a kernel older than 5\.15/, only: '5.10' },
  { name: 'DNS: names on records (UDP/TCP DNS, v4/v6, CNAME chain), dnsmasq', check: 'DNS', tests: /DNS names and exchanges names/ },
  { name: 'DNS: queries, NXDOMAIN, latency = tshark', check: 'DNS', tests: /DNS names and exchanges (?:counts|measures|sees)/ },
  { name: 'DNS feature off (--disable-hooks cgroup-skb): conversations counted, no DNS', tests: /DNS names and exchanges with the DNS feature off/ },
  { name: 'drops with the kernel reason = nftables counters, UdpNoPorts', check: 'drops', tests: /drops with the kernel reason (?:counts|puts)/ },
  { name: 'exec: pid, start, cgroup, file, argv of processes that exec (exited too)', check: 'exec', tests: /exec events hands over/ },
  { name: 'nothing left attached after stop', tests: /leaves nothing of kappa attached/ },
];

function outcomeOf(tests: readonly TestResult[]): Outcome {
  if (tests.length === 0) return 'missing';
  if (tests.some((t) => t.status === 'failed')) return 'FAIL';
  if (tests.every((t) => t.status !== 'passed')) return 'skip';
  return 'pass';
}

export interface FeatureRow {
  feature: string;
  cells: { outcome: Outcome; hook?: string }[];
}

/** The table's rows: every feature, then every test no feature claims. */
export function featureRows(runs: readonly KernelRun[], features: readonly Feature[] = FEATURES): FeatureRow[] {
  const rows: FeatureRow[] = [];
  const claimed = new Set<string>();
  for (const feature of features) {
    const cells = runs.map((run) => {
      const tests = run.tests.filter((t) => feature.tests.test(t.name));
      for (const t of tests) claimed.add(t.name);
      const hook = feature.check ? run.hooks?.[feature.check] : undefined;
      if (feature.only !== undefined && !run.kernel.includes(feature.only) && tests.length === 0) return { outcome: '-' as const };
      if (run.refused && tests.length === 0) return { outcome: '-' as const };
      return { outcome: run.error !== undefined ? ('FAIL' as const) : outcomeOf(tests), ...(hook ? { hook } : {}) };
    });
    rows.push({ feature: feature.name, cells });
  }
  const others = [...new Set(runs.flatMap((r) => r.tests.map((t) => t.name)))].filter((name) => !claimed.has(name));
  for (const name of others) {
    rows.push({ feature: name, cells: runs.map((run) => ({ outcome: run.error !== undefined ? 'FAIL' : outcomeOf(run.tests.filter((t) => t.name === name)) })) });
  }
  return rows;
}

/** Plain-text table: feature × kernel, then each run's error and each failed test's first line. */
export function renderTable(runs: readonly KernelRun[], features: readonly Feature[] = FEATURES): string {
  const rows = featureRows(runs, features);
  const cell = (c: FeatureRow['cells'][number]) => (c.hook ? `${c.outcome} (${c.hook})` : c.outcome);
  const firstWidth = Math.max('feature'.length, ...rows.map((r) => r.feature.length));
  const widths = runs.map((run, i) => Math.max(run.kernel.length, ...rows.map((r) => cell(r.cells[i]!).length)));
  const line = (first: string, rest: string[]) => [first.padEnd(firstWidth), ...rest.map((s, i) => s.padEnd(widths[i]!))].join('  ').trimEnd();
  const out = [line('feature', runs.map((r) => r.kernel)), line('-'.repeat(firstWidth), widths.map((w) => '-'.repeat(w)))];
  for (const row of rows) out.push(line(row.feature, row.cells.map(cell)));
  for (const run of runs) {
    if (run.error !== undefined) out.push('', `${run.kernel}: ${run.error}`);
    for (const t of run.tests.filter((x) => x.status === 'failed')) {
      out.push(`${run.kernel}: FAIL ${t.name}: ${(t.message ?? '').split('\n')[0]}`);
    }
  }
  return out.join('\n');
}

/**
 * Feature → hook from `kappa-capture --check` lines ("app latency: via fexit inet_sendmsg, …" →
 * fexit; "… off (…)" → off).
 */
export function hooksOfCheck(output: string): Record<string, string> {
  const hooks: Record<string, string> = {};
  for (const line of output.split('\n')) {
    const m = /^([\w -]+): (?:via (?:the )?(\S+)|(off)|read with (\S+))/.exec(line);
    if (!m?.[1]) continue;
    hooks[m[1]] = (m[2] ?? m[3] ?? m[4] ?? '').replace(/s$/, '').replace(/,$/, '');
  }
  return hooks;
}

/** True when every feature passed (or was skipped for a stated reason) on every kernel. */
export function allPassed(runs: readonly KernelRun[]): boolean {
  return runs.every((r) => r.error === undefined && r.tests.length > 0 && r.tests.every((t) => t.status !== 'failed'));
}

/** What `npm run test:kernels --runs-file` saves: the test files it ran and each kernel's run. */
export interface SavedRuns {
  tests: string[];
  runs: KernelRun[];
}

/**
 * The host's column from another run of the same test files on this kernel: `npm test`'s kernel
 * lane runs capture's whole suite here while its VM lane runs `--host=false`; the host's cell of a
 * feature is then that report's result for the files the VMs ran (the rest of the suite stays out
 * of the table). No report (the capture tests crashed before writing one): the column fails.
 */
export function hostRunFromReport(kernel: string, report: string | undefined, files: readonly string[], check: string): KernelRun {
  const hooks = hooksOfCheck(check);
  if (report === undefined) return { kernel, tests: [], hooks, check, error: "no report of capture's tests on this kernel" };
  const tests = testsOfReport(report).filter((t) => files.includes(t.file));
  return { kernel, tests, hooks, check, ...(tests.length === 0 ? { error: `capture's report on this kernel has none of ${files.join(', ')}` } : {}) };
}

/** The table, then each kernel's `kappa-capture --check`: what `npm run test:kernels` prints at the end. */
export function renderReport(runs: readonly KernelRun[]): string {
  const checks = runs.filter((run) => run.check).map((run) => `${run.kernel}, kappa-capture --check:\n${run.check!.trimEnd().replace(/^/gm, '  ')}\n\n`);
  return `\n${renderTable(runs)}\n\n${checks.join('')}`;
}

/**
 * A test file asked for that left no result on a kernel (vitest reported nothing of it: seen on
 * 6.1 under load, 2026-12-06, for tcp-health and interface-mode) fails there as one test naming
 * it: its features would otherwise show `missing` while the run passed.
 */
export function withFilesWithoutResults(run: KernelRun, files: readonly string[]): KernelRun {
  const silent = files.filter((file) => !run.tests.some((t) => t.file === file));
  if (silent.length === 0) return run;
  const failed = silent.map((file) => ({ file, name: `${file} (no result on this kernel)`, status: 'failed' as const, message: 'vitest reported no test of this file' }));
  return { ...run, tests: [...run.tests, ...failed] };
}
