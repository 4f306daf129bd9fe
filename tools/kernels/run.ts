// `npm run test:kernels`: capture's exactness tests on other kernels. Boots Debian 12's cloud
// kernel (6.1, what EKS AL2023 and GKE COS run) under qemu with this checkout's build, runs the
// tests there, runs the same tests on this host's kernel meanwhile, and prints a table of
// feature × kernel × result. Exits 1 when anything failed on any kernel.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { loadavg, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { boolean, integer, list, loadConfigOrExit, string } from '@kappa/config';
import { machineLock } from '@kappa/testing';
import { allPassed, hooksOfCheck, renderReport, testsOfReport, withFilesWithoutResults } from './report.js';
import type { KernelRun, SavedRuns } from './report.js';
import { boot, makeProjectDisk, parseImageOutput, readGuestOutput } from './vm.js';

const workspace = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** capture's tests that compare with an independent truth (tshark, nstat, ss). */
// test/dns.test.ts: dnsmasq is in the guest image; test/drops.test.ts: nftables is.
const DEFAULT_TESTS = [
  'test/socket-mode.test.ts',
  'test/tcp-health.test.ts',
  'test/interface-mode.test.ts',
  'test/cgroup-namespace.test.ts',
  'test/kernel-features.test.ts',
  'test/dns.test.ts',
  'test/drops.test.ts',
  'test/exec.test.ts',
];

/** The machine-wide lock (/run/lock/<name>.lock) a VM holds while it runs. */
const VM_LOCK = 'kappa-kernels-vm';

/** The Debian release whose cloud kernel (5.10) is older than capture's minimum (5.15). */
const OLDER_SUITE = 'bullseye';

const config = loadConfigOrExit({
  command: 'npm run test:kernels --',
  summary: "Runs capture's exactness tests inside a Debian kernel under qemu and on this host's kernel; prints feature × kernel × result.",
  options: {
    kernel: string({ description: 'Debian kernel package to boot (default: what linux-image-cloud-amd64 depends on, the 6.1 cloud kernel)' }),
    tests: list({ description: 'capture test files to run (relative to apps/capture)', default: DEFAULT_TESTS }),
    host: boolean({ description: "also run the tests on this host's kernel (--host=false: the VM only)", default: true }),
    memory: integer({ description: 'VM memory (MiB)', default: 2048, min: 512 }),
    cpus: integer({ description: 'VM CPUs (TCG threads)', default: 2, min: 1, max: 16 }),
    timeoutMinutes: integer({ description: 'the VM is killed after this long (counted from when it holds the VM lock)', default: 30, min: 1 }),
    slowdown: integer({ description: "multiplies the tests' timeouts inside the VM (TCG emulates every instruction)", default: 4, min: 1 }),
    refusal: boolean({ description: "last, in the VM: raise its lockdown to confidentiality and check capture refuses that kernel in one line (tools/kernels/guest)", default: true }),
    older: boolean({ description: `then boot Debian ${OLDER_SUITE}'s cloud kernel (5.10, below capture's minimum) and check capture refuses it in one line (tools/kernels/guest/older.test.ts)`, default: true }),
    runsFile: string({ description: "also save the runs (test files, each kernel's tests and hooks) as JSON there: tools/kernels/table.ts adds the host's column from another report (npm test)" }),
    keep: boolean({ description: 'keep the run folder (console log, project disk) instead of removing it' }),
    verbose: boolean({ description: "print the VM's console as it runs" }),
  },
});

function log(message: string): void {
  process.stderr.write(`kernels: ${message}\n`);
}

function loadNow(): string {
  return loadavg().map((l) => l.toFixed(1)).join(' ');
}

/** The console's last non-empty line (what a kernel said before it stopped). */
function lastLine(consoleLog: string): string {
  return consoleLog.split('\n').map((line) => line.trim()).filter(Boolean).at(-1) ?? '(none)';
}

/** Host tools the run needs, installed from Debian when missing. */
function ensureTools(): void {
  try {
    execFileSync('bash', [join(workspace, 'tools/install-deps.sh'), '--kernels'], { stdio: 'inherit' });
  } catch (error) {
    // In `npm test` (and CI) this lane fails rather than skips: say what is missing in one line.
    log(`FAIL: qemu, debootstrap or e2fsprogs missing and not installable (tools/install-deps.sh --kernels: ${error instanceof Error ? error.message.split('\n')[0] : String(error)})`);
    process.exit(1);
  }
}

/** The build the tests run: capture's bundle and the BPF object (Nx: from its cache when unchanged). */
function build(): void {
  execFileSync('npx', ['nx', 'run', '@kappa/capture:build', '--outputStyle=stream'], {
    cwd: workspace,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, NX_DAEMON: 'false', NX_NO_CLOUD: 'true', NX_TUI: 'false' },
  });
}

function timeoutArgs(factor: number): string[] {
  return [`--testTimeout=${60_000 * factor}`, `--hookTimeout=${120_000 * factor}`];
}

/** The tests on this host's kernel, as the VM runs them. */
async function runOnHost(runDir: string): Promise<KernelRun> {
  const kernel = `${release()} (host)`;
  const report = join(runDir, 'host.json');
  const args = [join(workspace, 'node_modules/vitest/vitest.mjs'), 'run', '--reporter=dot', '--reporter=json', `--outputFile.json=${report}`, ...config.tests];
  const child = spawn(process.execPath, args, { cwd: join(workspace, 'apps/capture'), stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const code = await new Promise<number | null>((done) => child.once('exit', done));
  writeFileSync(join(runDir, 'host.log'), output);
  const check = spawnSync(process.execPath, [join(workspace, 'apps/capture/bin/kappa-capture.js'), '--check'], { encoding: 'utf8' });
  const hooks = hooksOfCheck(check.stdout);
  if (!existsSync(report)) return { kernel, tests: [], hooks, error: `vitest exited ${code} without a report: ${output.slice(-2000)}` };
  return withFilesWithoutResults({ kernel, tests: testsOfReport(readFileSync(report, 'utf8')), hooks, check: `${check.stdout}${check.stderr}` }, config.tests);
}

/** The VM of the kernel under test: capture's tests, then the refusal of a kernel in lockdown. */
function mainVm(runDir: string): Promise<KernelRun> {
  // capture's tests, then (the guest kernel only: lockdown cannot be lowered again) the refusal of
  // a kernel that forbids what capture needs.
  const spec = [
    `apps/capture ${[...timeoutArgs(config.slowdown), ...config.tests].join(' ')}`,
    ...(config.refusal ? ['!echo confidentiality > /sys/kernel/security/lockdown', `tools/kernels/guest ${timeoutArgs(config.slowdown).join(' ')} refusal.test.ts`] : []),
  ];
  return runInVm(join(runDir, 'vm'), config.kernel ? [config.kernel] : [], spec).then((run) => withFilesWithoutResults(run, config.tests));
}

/** A kernel older than capture's minimum, from Debian's older release: only the refusal. */
async function olderVm(runDir: string): Promise<KernelRun> {
  const run = await runInVm(join(runDir, 'older'), ['', OLDER_SUITE], [`tools/kernels/guest ${timeoutArgs(config.slowdown).join(' ')} older.test.ts`]);
  return { ...run, refused: true };
}

async function runInVm(runDir: string, imageArgs: string[], specLines: string[]): Promise<KernelRun> {
  mkdirSync(runDir, { recursive: true });
  let imageOutput: string;
  try {
    imageOutput = execFileSync('bash', [join(workspace, 'tools/kernels/image.sh'), ...imageArgs], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  } catch (error) {
    throw new Error(`no kernel to boot: tools/kernels/image.sh ${imageArgs.join(' ')} failed (the kernel package or the root file system could not be had from the Debian mirror; its log is above)`, { cause: error });
  }
  const image = parseImageOutput(imageOutput);
  const kernel = `${image.release} (qemu)`;
  log(`${image.package} ${image.version}: making the project disk`);
  const disk = makeProjectDisk(workspace, runDir, `${specLines.join('\n')}\n`);
  const bootOnce = async () => {
    log(`booting ${image.release} under qemu (TCG, ${config.cpus} CPUs, ${config.memory} MiB); load average ${loadNow()}`);
    const result = await boot({
      image,
      projectDisk: disk,
      runDir,
      memoryMb: config.memory,
      cpus: config.cpus,
      timeoutMs: config.timeoutMinutes * 60_000,
      onLine: (line) => {
        if (config.verbose) process.stderr.write(`vm| ${line}\n`);
        else if (line.includes('@@kappa:')) log(`vm: ${line.slice(line.indexOf('@@kappa:') + 8)}`);
      },
    });
    log(`VM ran ${(result.durationMs / 1000).toFixed(0)} s; load average ${loadNow()}`);
    return result;
  };
  let result = await bootOnce();
  // A kernel that died before the guest's first line (an emulated-hardware panic in early boot on
  // a loaded host) ran no test and wrote nothing to the project disk: boot it once more, and say so.
  if (!result.timedOut && result.markers.length === 0) {
    log(`the VM stopped before the guest started (qemu exit ${result.exitCode}; last console line: ${lastLine(result.consoleLog)}); booting once more`);
    result = await bootOnce();
  }
  const outputs = readGuestOutput(disk, join(runDir, 'guest'));
  const tests = [...outputs.entries()].filter(([name]) => name.startsWith('report-')).flatMap(([, json]) => testsOfReport(json));
  const finished = result.markers.includes('done');
  const error = result.timedOut
    ? `the VM did not finish within ${config.timeoutMinutes} min (console: ${join(runDir, 'console.log')})`
    : !finished
      ? `the VM stopped before the guest finished (qemu exit ${result.exitCode}); last console lines:\n${result.consoleLog.split('\n').slice(-30).join('\n')}`
      : undefined;
  const check = outputs.get('check.txt') ?? '';
  return { kernel, tests, hooks: hooksOfCheck(check), check, ...(error ? { error } : {}) };
}

const started = Date.now();
ensureTools();
build();
const runDir = mkdtempSync(join(tmpdir(), 'kappa-kernels-'));
let cleanedUp = false;
const cleanUp = () => {
  if (cleanedUp || config.keep) return;
  cleanedUp = true;
  rmSync(runDir, { recursive: true, force: true });
};
process.once('exit', cleanUp);
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

log(`run folder ${runDir}; load average ${loadNow()}`);
const failedVm = (kernel: string) => (error: unknown): KernelRun => ({ kernel, tests: [], error: String(error instanceof Error ? error.message : error) });
// The VMs one after the other (each takes both cores under TCG), beside the host's run.
const [vms, host] = await Promise.all([
  (async () => {
    // One run's VMs at a time on the machine, whichever run boots them (npm test's lane, two npm
    // test runs, a manual run): two at once (two `npm test` runs) took ~27 min each and starved
    // the other tests. Held for both VMs: released between them, the other run's 6.1 VM went
    // in before this run's 22 s one (ci19a, 2026-12-05). Each VM's kill timer starts once the
    // lock is held; the wait allows for two VMs ahead.
    const lock = await machineLock(VM_LOCK, 2 * config.timeoutMinutes * 60_000);
    try {
      const main = await mainVm(runDir).catch(failedVm('qemu'));
      const older = config.older ? await olderVm(runDir).catch(failedVm(`${OLDER_SUITE} (qemu)`)) : undefined;
      return [main, ...(older ? [older] : [])];
    } finally {
      await lock.release();
    }
  })(),
  config.host ? runOnHost(runDir) : Promise.resolve(undefined),
]);
const runs = [...(host ? [host] : []), ...vms];

// The reports beside the other projects', so `npm test`'s closing line counts them.
const results = join(workspace, '.test-results');
mkdirSync(results, { recursive: true });
for (const run of runs) {
  const name = `kernel-${run.kernel.replace(/[^A-Za-z0-9.]+/g, '-').replace(/-+$/, '')}`;
  writeFileSync(join(results, `${name}.json`), JSON.stringify(toVitestShape(run)));
}

process.stdout.write(renderReport(runs));
if (config.runsFile) {
  mkdirSync(dirname(resolve(config.runsFile)), { recursive: true });
  writeFileSync(config.runsFile, JSON.stringify({ tests: config.tests, runs } satisfies SavedRuns));
}
const seconds = Math.round((Date.now() - started) / 1000);
process.stdout.write(`test:kernels took ${seconds} s (load average now ${loadNow()})${config.keep ? `; kept ${runDir}` : ''}\n`);
process.exitCode = allPassed(runs) ? 0 : 1;

/** A run as a vitest-like JSON report (what tools/test-summary.mjs totals). */
function toVitestShape(run: KernelRun) {
  const failed = run.tests.filter((t) => t.status === 'failed').length + (run.error !== undefined ? 1 : 0);
  return {
    numPassedTests: run.tests.filter((t) => t.status === 'passed').length,
    numFailedTests: failed,
    numPendingTests: run.tests.filter((t) => t.status === 'skipped' || t.status === 'pending').length,
    testResults: [
      {
        name: `kernel ${run.kernel}`,
        status: failed > 0 ? 'failed' : 'passed',
        message: run.error ?? '',
        assertionResults: [
          ...run.tests.map((t) => ({ fullName: `[${run.kernel}] ${t.name}`, status: t.status })),
          ...(run.error !== undefined ? [{ fullName: `[${run.kernel}] ${run.error.split('\n')[0]}`, status: 'failed' }] : []),
        ],
      },
    ],
  };
}
