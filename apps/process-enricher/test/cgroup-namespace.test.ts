// process-enricher as the DaemonSet runs it: inside a private cgroup namespace (containerd gives
// every non-privileged container one), with the node's /proc and cgroup2 bind-mounted under a
// prefix. There /proc/<pid>/cgroup reads `0::/../../<pod>/<container>` while the mounted tree
// holds `/kubepods.slice/...`; a live process must still get its command line, exe and
// container, and so must one that exited after the enricher saw it.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectBus, subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import type { FlowBatch, FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer, uniqueName } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CgroupNamespaceError, SAME_NAMESPACE, detectCgroupNamespace, mountRootOf } from '../src/cgroup-namespace.js';
import { CgroupFixture, capturedBatch, capturedRecord, commOf, hex64, waitFor } from './helpers.js';
import type { TestCgroup } from './helpers.js';

const appRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const workspaceRoot = join(appRoot, '../..');
const main = join(appRoot, 'src/main.ts');
const root = process.getuid?.() === 0;
if (!root && process.env['CI'] === 'true') throw new Error('the cgroup namespace test needs root (unshare, mount, cgroups); CI must run it privileged');

/** A container cgroup the kubelet's systemd driver would make, under the fixture's slice. */
function podContainer(fixture: CgroupFixture, qos: string): TestCgroup & { containerId: string } {
  const containerId = hex64();
  const pod = randomUUID().replace(/-/g, '_');
  return { ...fixture.make(`kubepods-${qos}.slice/kubepods-${qos}-pod${pod}.slice/cri-containerd-${containerId}.scope`), containerId };
}

function startTicks(pid: number): bigint {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return BigInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '0');
}

describe.skipIf(!root)('process-enricher in a private cgroup namespace, host /proc and cgroup2 under a prefix', () => {
  const fixture = new CgroupFixture('ke-cgns');
  const agent = podContainer(fixture, 'burstable');
  const workload = podContainer(fixture, 'besteffort');
  const node = uniqueName('ke-cgns');
  const prefix = mkdtempSync(join(tmpdir(), 'ke-cgns-'));
  let nats: TestServer;
  let service: ChildProcess;
  let output = '';
  let publisher: Bus;
  let reader: Bus;
  const batches: FlowBatch[] = [];

  async function enrich(records: FlowRecord[]): Promise<FlowRecord[]> {
    const batch = capturedBatch(node, records);
    await publisher.publishBatch(subjects.captured(node), batch);
    const out = await waitFor(`enriched ${batch.batchId}`, () => batches.find((b) => b.batchId === `process-enricher:${batch.batchId}:p0`), 30_000);
    return out.records;
  }

  beforeAll(async () => {
    nats = await startNatsServer();
    for (const dir of ['host/proc', 'host/sys/fs/cgroup']) mkdirSync(join(prefix, dir), { recursive: true });
    // The agent's container: its own cgroup, then a private cgroup namespace rooted there and a
    // private mount namespace with the node's /proc and cgroup2 at <prefix>/host/..., as the
    // DaemonSet's hostPath volumes put them at /host/....
    const inner = [
      `mount --bind /proc ${prefix}/host/proc`,
      `mount --bind ${fixture.mount} ${prefix}/host/sys/fs/cgroup`,
      `exec "$0" --import tsx ${main} --nats-url=${nats.url} --node=${node} --metrics-port=0 --partitions=1 --cri-socket=none ` +
        `--proc-root=${prefix}/host/proc --cgroup-root=${prefix}/host/sys/fs/cgroup`,
    ].join(' && ');
    service = spawn('sh', ['-c', `echo $$ > ${agent.dir}/cgroup.procs && exec unshare --cgroup --mount sh -c '${inner}' "$0"`, process.execPath], {
      cwd: workspaceRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    service.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    service.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    await waitFor('the enricher to be ready', () => (/"msg":"ready"/.test(output) ? true : undefined), 60_000).catch((error: unknown) => {
      throw new Error(`${String(error)}: ${output}`);
    });
    const silent = createLogger('ke-test', 'silent');
    publisher = await connectBus({ servers: [nats.url], name: 'ke-cgns-publisher', logger: silent, registry: createRegistry('ke-cgns-pub') });
    reader = await connectBus({ servers: [nats.url], name: 'ke-cgns-reader', logger: silent, registry: createRegistry('ke-cgns-reader') });
    await reader.consumeBatches({ stage: 'ke-cgns-reader', subject: subjects.enrichedOfNode(node), handler: async (b) => void batches.push(b) });
  }, 90_000);

  afterAll(async () => {
    if (service && service.exitCode === null && service.signalCode === null) {
      // Reaped before its cgroup is removed: an unreaped task keeps the cgroup busy.
      const exited = new Promise((resolve) => service.once('exit', resolve));
      service.kill('SIGKILL');
      await exited;
    }
    await reader?.close();
    await publisher?.close();
    await nats?.stop();
    await fixture.cleanup();
    // The bind mounts lived in the enricher's mount namespace and went with it.
    rmSync(prefix, { recursive: true, force: true });
  });

  it('sees /proc/<pid>/cgroup relative to its own namespace, as a DaemonSet container does', async () => {
    const pid = service.pid!;
    expect(readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toContain(agent.path);
    // Read from inside its namespaces: the workload's path climbs out of the agent's cgroup.
    const seen = await new Promise<string>((resolve) => {
      const probe = spawn('nsenter', [`--target=${pid}`, '--cgroup', 'cat', `/proc/${pid}/cgroup`], { stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      probe.stdout.on('data', (c: Buffer) => (text += c.toString()));
      probe.once('exit', () => resolve(text));
    });
    expect(seen.split('\n')).toContain('0::/');
  });

  it('gives a live process in another pod its command line, exe and container', async () => {
    const sleeper = await fixture.start('sleep', ['1021'], workload);
    const record = capturedRecord(node, { pid: sleeper.pid, comm: commOf(sleeper.pid), cgroupId: workload.id }, 41001);
    const [out] = await enrich([record]);
    expect(out?.src?.process).toMatchObject({
      pid: sleeper.pid,
      cmdline: 'sleep 1021',
      exe: readlinkSync(`/proc/${sleeper.pid}/exe`),
      containerId: workload.containerId,
      containerRuntime: 'containerd',
      cgroupPath: workload.path,
    });
  });

  it('gives a process that exited after the enricher saw it its command line, exe and container', async () => {
    const worker = await fixture.start(process.execPath, ['-e', 'setInterval(() => {}, 1e9)', '--', 'ke-cgns-worker', '--batch=7'], workload);
    const stamp = { pid: worker.pid, comm: commOf(worker.pid), cgroupId: workload.id };
    const ticks = startTicks(worker.pid);
    const exe = readlinkSync(`/proc/${worker.pid}/exe`);
    const first = capturedRecord(node, stamp, 41002);
    first.src!.process!.startTimeTicks = ticks;
    const [live] = await enrich([first]);
    expect(live?.src?.process?.cmdline).toBe(`${process.execPath} -e setInterval(() => {}, 1e9) -- ke-cgns-worker --batch=7`);

    worker.kill('SIGKILL');
    await new Promise((resolve) => worker.once('exit', resolve));
    const later = capturedRecord(node, stamp, 41002);
    later.src!.process!.startTimeTicks = ticks;
    const [gone] = await enrich([later]);
    expect(gone?.src?.process).toMatchObject({
      pid: worker.pid,
      cmdline: `${process.execPath} -e setInterval(() => {}, 1e9) -- ke-cgns-worker --batch=7`,
      exe,
      containerId: workload.containerId,
      cgroupPath: workload.path,
    });
  });

  it('gives a process that exited before the enricher saw it its container, from the cgroup id', async () => {
    const brief = await fixture.start('sleep', ['1022'], workload);
    const stamp = { pid: brief.pid, comm: commOf(brief.pid), cgroupId: workload.id };
    brief.kill('SIGKILL');
    await new Promise((resolve) => brief.once('exit', resolve));
    const [out] = await enrich([capturedRecord(node, stamp, 41003)]);
    expect(out?.src?.process).toMatchObject({ pid: stamp.pid, name: 'sleep', containerId: workload.containerId, cgroupPath: workload.path });
  });

  it('says at start where its cgroup namespace sits in the node tree', () => {
    expect(output).toContain(agent.path);
  });
});

describe('where a private cgroup namespace sits in the mounted tree', () => {
  const fake = mkdtempSync(join(tmpdir(), 'ke-cgns-tree-'));
  const mountinfo = (root: string) =>
    `25 30 0:22 / /sys rw - sysfs sysfs rw\n31 25 0:27 ${root} ${fake} ro,nosuid - cgroup2 cgroup2 rw\n`;
  const dir = (path: string, pids: number[] = []) => {
    mkdirSync(join(fake, path), { recursive: true });
    writeFileSync(join(fake, path, 'cgroup.procs'), pids.map((p) => `${p}\n`).join(''));
  };
  dir('', []);
  dir('/kubepods.slice/pod-a.slice/cri-containerd-a.scope', [11, 12]);
  dir('/kubepods.slice/pod-b.slice/cri-containerd-b.scope', [21]);
  dir('/system.slice/containerd.service/sub', [31]);
  afterAll(() => rmSync(fake, { recursive: true, force: true }));

  it('maps paths that climb out of the namespace onto the tree', () => {
    const mapper = detectCgroupNamespace({ mount: fake, mountinfoText: mountinfo('/../../..'), selfCgroupText: '0::/\n', pid: 21 });
    expect(mapper.toMountPath('/../../pod-a.slice/cri-containerd-a.scope')).toBe('/kubepods.slice/pod-a.slice/cri-containerd-a.scope');
    expect(mapper.toMountPath('/')).toBe('/kubepods.slice/pod-b.slice/cri-containerd-b.scope');
    expect(mapper.toMountPath('/../../../../system.slice')).toBe('/system.slice');
    expect(mapper.description).toContain('/kubepods.slice/pod-b.slice/cri-containerd-b.scope');
  });

  it('finds the namespace root when this process sits below it', () => {
    const mapper = detectCgroupNamespace({ mount: fake, mountinfoText: mountinfo('/../..'), selfCgroupText: '0::/sub\n', pid: 31 });
    expect(mapper.toMountPath('/../../kubepods.slice')).toBe('/kubepods.slice');
    expect(mapper.toMountPath('/sub')).toBe('/system.slice/containerd.service/sub');
  });

  it('changes nothing when the mount is the namespace root', () => {
    expect(detectCgroupNamespace({ mount: fake, mountinfoText: mountinfo('/'), pid: 1 })).toBe(SAME_NAMESPACE);
  });

  it('says what to do when no cgroup at that depth holds this process (no host PID namespace)', () => {
    expect(() => detectCgroupNamespace({ mount: fake, mountinfoText: mountinfo('/../../..'), selfCgroupText: '0::/\n', pid: 999 })).toThrow(
      /3 level\(s\) below the root of .*no cgroup there lists its pid 999; run it in the node's PID namespace \(hostPID\)/,
    );
  });

  it('refuses a mount of a sub-tree that is not an ancestor of the namespace', () => {
    expect(() => detectCgroupNamespace({ mount: fake, mountinfoText: mountinfo('/../kubepods.slice'), pid: 11 })).toThrow(CgroupNamespaceError);
  });

  it('reads the root of the cgroup2 mount at the given point from mountinfo', () => {
    expect(mountRootOf(mountinfo('/../..'), fake)).toBe('/../..');
    expect(mountRootOf(mountinfo('/'), '/sys')).toBeUndefined();
  });
});
