// Boots one kernel under qemu (TCG: this machine has no usable KVM) with the cached root file
// system and a scratch disk holding this checkout's build, runs the guest script, and returns
// what the guest wrote. The project disk has no journal, so once the guest has synced and powered
// off, debugfs reads its files straight from the image.
import { spawn, execFileSync } from 'node:child_process';
import { cpSync, createWriteStream, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

/** What tools/kernels/image.sh prints. */
export interface KernelImage {
  kernel: string;
  config: string;
  root: string;
  release: string;
  package: string;
  version: string;
}

export function parseImageOutput(text: string): KernelImage {
  const values = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z]+)=(.*)$/.exec(line.trim());
    // image.sh quotes with printf %q; the paths it prints have no characters that need it.
    if (m) values.set(m[1]!, m[2]!.replace(/^'(.*)'$/, '$1'));
  }
  const get = (name: string) => {
    const value = values.get(name);
    if (!value) throw new Error(`tools/kernels/image.sh printed no ${name}=: ${text}`);
    return value;
  };
  return { kernel: get('KERNEL'), config: get('CONFIG'), root: get('ROOT'), release: get('RELEASE'), package: get('PACKAGE'), version: get('VERSION') };
}

/** The parts of the checkout the guest runs: sources, builds, node_modules (with Node 24 in it). */
const PROJECT_ENTRIES = ['package.json', 'tsconfig.base.json', 'apps', 'libs', 'tools', 'bpf/.output', 'node_modules'];
const SKIP = new Set(['.git', '.nx', '.test-results', '.kappa', 'tmp', '.cache']);

/** Hard links where the file system allows (instant), copies where it does not. */
function mirror(from: string, to: string): void {
  const stat = statSync(from, { throwIfNoEntry: false });
  if (!stat) return;
  if (!stat.isDirectory()) {
    mkdirSync(join(to, '..'), { recursive: true });
    try {
      linkSync(from, to);
    } catch {
      cpSync(from, to);
    }
    return;
  }
  try {
    execFileSync('cp', ['-al', from, to], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch {
    rmSync(to, { recursive: true, force: true });
    cpSync(from, to, { recursive: true, verbatimSymlinks: true, filter: (src) => !SKIP.has(relative(from, src).split('/').pop() ?? '') });
  }
}

/**
 * The project disk: an ext4 image (no journal) of the checkout's runnable parts at the same
 * layout, so node_modules' workspace links resolve, plus `.kernels/tests` for the guest.
 */
export function makeProjectDisk(workspace: string, runDir: string, testsSpec: string): string {
  const stage = join(runDir, 'stage');
  mkdirSync(stage, { recursive: true });
  for (const entry of PROJECT_ENTRIES) {
    const target = join(stage, entry);
    mkdirSync(join(target, '..'), { recursive: true });
    mirror(join(workspace, entry), target);
  }
  for (const skipped of SKIP) rmSync(join(stage, skipped), { recursive: true, force: true });
  mkdirSync(join(stage, '.kernels', 'out'), { recursive: true });
  writeFileSync(join(stage, '.kernels', 'tests'), testsSpec);
  const usedMb = Number(execFileSync('du', ['-sm', stage], { encoding: 'utf8' }).split('\t')[0]);
  const image = join(runDir, 'project.img');
  // Room for what the tests write there (reports; pcaps and logs go to the guest's tmpfs).
  execFileSync('mke2fs', ['-q', '-t', 'ext4', '-O', '^has_journal', '-m', '0', '-L', 'kappa', '-d', stage, image, `${usedMb + 512}M`]);
  rmSync(stage, { recursive: true, force: true });
  return image;
}

export interface BootOptions {
  image: KernelImage;
  projectDisk: string;
  runDir: string;
  memoryMb: number;
  cpus: number;
  timeoutMs: number;
  /** Each console line as it arrives (progress). */
  onLine?: (line: string) => void;
}

export interface BootResult {
  /** The serial console, whole. */
  consoleLog: string;
  /** Lines the guest marked `@@kappa:<text>`. */
  markers: string[];
  durationMs: number;
  timedOut: boolean;
  exitCode: number | null;
}

/** Runs the VM to power-off (or the timeout, then kills it). */
export async function boot(options: BootOptions): Promise<BootResult> {
  const { image } = options;
  const consolePath = join(options.runDir, 'console.log');
  const consoleFile = createWriteStream(consolePath);
  const args = [
    '-accel', 'tcg,thread=multi', '-cpu', 'max', '-smp', String(options.cpus), '-m', String(options.memoryMb),
    '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot', '-nic', 'none',
    '-kernel', image.kernel,
    // loglevel=3: only errors reach the console between the guest's lines. no_timer_check: the
    // kernel's early test of the IO-APIC timer counts ticks in a busy-wait window, and under TCG
    // on a loaded host the ticks come late: the official CI of e6a4b88 lost its 6.1 VM to
    // "Kernel panic - not syncing: IO-APIC + timer doesn't work!" 0.06 s into boot. (Cloud
    // images pass the same flag for the same reason.)
    '-append', 'console=ttyS0 root=/dev/nvme0n1 rw init=/sbin/kappa-boot panic=-1 loglevel=3 mitigations=off no_timer_check',
    // One NVMe controller (built into the cloud kernel, unlike virtio-blk), two namespaces: the
    // names nvme0n1 and nvme0n2 do not depend on probe order. The root is a snapshot: the cached
    // image is never written.
    '-device', 'nvme,id=nvme0,serial=kappa',
    '-drive', `if=none,id=root,format=raw,file=${image.root},snapshot=on`,
    '-device', 'nvme-ns,drive=root,bus=nvme0,nsid=1',
    '-drive', `if=none,id=project,format=raw,file=${options.projectDisk}`,
    '-device', 'nvme-ns,drive=project,bus=nvme0,nsid=2',
  ];
  const started = Date.now();
  // qemu's snapshot=on keeps the root's writes in a temporary file under TMPDIR.
  const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TMPDIR: options.runDir } });
  let consoleLog = '';
  let partial = '';
  const markers: string[] = [];
  const onData = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    consoleFile.write(text);
    consoleLog += text;
    partial += text;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      const at = line.indexOf('@@kappa:');
      if (at >= 0) markers.push(line.slice(at + '@@kappa:'.length));
      options.onLine?.(line);
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs);
  const kill = () => child.kill('SIGKILL');
  process.once('exit', kill);
  const exitCode = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  clearTimeout(timer);
  process.removeListener('exit', kill);
  await new Promise<void>((resolve) => consoleFile.end(() => resolve()));
  return { consoleLog, markers, durationMs: Date.now() - started, timedOut, exitCode };
}

/** Copies the guest's /kappa/.kernels/out into `dest` (debugfs reads the unmounted image). */
export function readGuestOutput(projectDisk: string, dest: string): Map<string, string> {
  mkdirSync(dest, { recursive: true });
  execFileSync('debugfs', ['-R', `rdump /.kernels/out ${dest}`, projectDisk], { stdio: ['ignore', 'ignore', 'pipe'] });
  const out = new Map<string, string>();
  const dir = join(dest, 'out');
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) out.set(name, readFileSync(join(dir, name), 'utf8'));
  return out;
}
