// Which kernel hook each feature uses, told in the start log, by `--check` and in the heartbeat
// `kappa status` reads, and checked against the kernel itself: the send/receive tracepoints are in
// tracefs or not. With a hook turned off, the feature takes the next one this kernel allows (on
// 6.1: fexit) or is off, says why, and counting goes on. Runs on every kernel npm run test:kernels
// boots; the assertions follow what the kernel offers, never a hard-coded answer.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { connectBus } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { createLogger, createRegistry } from '@kappa/observability';
import { TestCgroup, VethPair, runIn, spawnIn, startNatsServer, uniqueName } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { CAPTURE_BIN, TRAFFIC, kappaAttachments, parseReport, startCapture, totals } from './harness.js';
import { describePrivileged } from './privileges.js';

/** The kernel's own word: tracefs lists a tracepoint iff the kernel has it. */
function kernelHasTracepoint(name: string): boolean {
  return ['/sys/kernel/tracing', '/sys/kernel/debug/tracing'].some((root) => existsSync(`${root}/events/sock/${name}`));
}

/** The messages of the start log lines that name a feature's hook. */
function featureLines(stderr: string, feature: string): string[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => (JSON.parse(line) as { msg?: string }).msg ?? '')
    .filter((msg) => msg.startsWith(`${feature}: `));
}

describePrivileged('kernel hooks per feature', () => {
  const cgroup = new TestCgroup(uniqueName('kc-hooks'));
  const nodes = cgroup.child('nodes');
  let pair: VethPair;
  let nats: TestServer;
  let bus: Bus;
  const tracepoints = kernelHasTracepoint('sock_send_length') && kernelHasTracepoint('sock_recv_length');

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 81, cgroup: nodes });
    nats = await startNatsServer();
    bus = await connectBus({ servers: [nats.url], name: 'kc-hooks', logger: createLogger('kc-hooks', 'silent'), registry: createRegistry('kc-hooks') });
  });
  afterAll(async () => {
    await bus?.close();
    await nats?.stop();
    pair?.destroy();
    nodes.destroy();
    cgroup.destroy();
  });

  /** 5 request -> response exchanges over TCP; the client's report. */
  async function exchange(port: number) {
    const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', pair.b.ipv4, String(port), '1']);
    const serverDone = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
    const report = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, String(port), '5', '300']));
    await serverDone;
    return report;
  }

  it('names the hook of app latency in the start log, in --check and in the heartbeat, as the kernel offers it', async () => {
    const node = uniqueName('kc-hooks-node');
    const heartbeat = new Promise<Record<string, string>>((resolve) => {
      const unsubscribe = bus.subscribeStatus((status, subject) => {
        if (subject !== `kappa.status.capture.${node}`) return;
        unsubscribe();
        resolve(status.features);
      });
    });
    // A 64 MiB stream: the test VM's nats-server has less room than the default 1 GiB (it refused
    // it: 'insufficient storage resources available', now a StreamStorageError naming the flag).
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s', '--node', node, '--nats-url', nats.url, '--stream-max-bytes', String(64 * 1024 ** 2)], undefined, false);
    const features = await heartbeat;
    const { code, stderr } = await capture.stop();
    expect(code).toBe(0);
    const [line] = featureLines(stderr, 'app latency');
    // With the tracepoints in the kernel, them; without (before 6.3), fexit or off with the reason.
    if (tracepoints) expect(line).toBe('app latency: via tracepoints sock:sock_send_length and sock:sock_recv_length');
    else expect(line).toMatch(/^app latency: (via fexit inet_sendmsg, inet6_sendmsg, inet_recvmsg, inet6_recvmsg|off) \(no sock_send_length tracepoint before 6\.3/);
    expect(`app latency: ${features['app latency']}`).toBe(line);
    expect(features['kernel structures']).toMatch(/^bpf_(cast_to_kern_ctx|probe_read_kernel) /);
    const check = execFileSync(process.execPath, [CAPTURE_BIN, '--check', '--cgroup', cgroup.path], { encoding: 'utf8' });
    expect(check.split('\n')).toContain(line);
    expect(check).toMatch(/^kernel \S+: capture can run here \(it needs Linux 5\.15 or later\)\n/);
  });

  it('with the tracepoint hook turned off, counts on and measures app latency through the next hook the kernel allows, or says why not', async () => {
    const capture = await startCapture(['--cgroup', cgroup.path, '--interval', '60s', '--disable-hooks', 'tracepoint']);
    const client = await exchange(7041);
    const { records, code, stderr } = await capture.stop();
    expect(code).toBe(0);
    const [line] = featureLines(stderr, 'app latency');
    const src = totals(records).get(`${Vantage.SRC} socket ${IpProtocol.TCP} ${pair.a.ipv4} ${client.localPort} ${pair.b.ipv4} 7041`);
    expect(src?.packets).toBeGreaterThanOrEqual(10);
    const latencyCount = (src?.records ?? []).reduce((n, r) => n + Number(r.appLatency?.count ?? 0n), 0);
    if (line?.startsWith('app latency: via fexit')) {
      expect(latencyCount).toBe(5);
    } else {
      // This kernel allows no fexit (6.18 here refuses fentry/fexit with EPERM): off, and why.
      expect(line).toMatch(/^app latency: off \(tracepoint: turned off by --disable-hooks; fexit: /);
      expect(latencyCount).toBe(0);
    }
  });

  it('--check refuses a node without bpffs, tracefs or the cgroup in one line naming each, as the DaemonSet init container runs it', () => {
    // A private mount namespace hides them; nothing changes outside it. First it makes the layout
    // of Debian's 6.1 (debugfs at /sys/kernel/debug with tracefs automounted at .../tracing, both
    // listed in /proc/mounts), then hides all of it: a mount covered by a later one over its
    // parent is gone, though /proc/mounts still lists it (--check on 6.1 took it for tracefs).
    // (On 6.1 itself both are mounted already: those two mounts then fail, and that is fine.)
    const layout61 = 'mount -t debugfs none /sys/kernel/debug 2>/dev/null; mount -t tracefs none /sys/kernel/debug/tracing 2>/dev/null;';
    const hide = `${layout61} mount -t tmpfs none /sys/fs/bpf && mount -t tmpfs none /sys/kernel/tracing && mount -t tmpfs none /sys/kernel/debug && exec "$0" "$@"`;
    const missing = `/tmp/${uniqueName('kc-not-a-cgroup')}`;
    const run = spawnSync('unshare', ['--mount', 'sh', '-c', hide, process.execPath, CAPTURE_BIN, '--check', '--cgroup', missing], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(1);
    const lines = run.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^kappa-capture: bpffs is not mounted at \/sys\/fs\/bpf .*; tracefs is not mounted at \/sys\/kernel\/tracing .*; \S+ is not a cgroup v2 directory/);
    expect(lines[0]).toContain(missing);
    // Where everything is there, it says so.
    expect(execFileSync(process.execPath, [CAPTURE_BIN, '--check', '--cgroup', cgroup.path], { encoding: 'utf8' })).toContain(`mounts: bpffs at /sys/fs/bpf, tracefs, cgroup v2 at ${cgroup.path}`);
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path])).toEqual([]);
  });
});
