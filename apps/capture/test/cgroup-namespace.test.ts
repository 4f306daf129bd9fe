// capture as the DaemonSet runs it: in a private cgroup namespace (containerd gives every
// non-privileged container one, with its own view of cgroup2 at /sys/fs/cgroup) and the node's
// cgroup2 bind-mounted under a prefix (--cgroup /host/sys/fs/cgroup/...). It must attach to the
// node's tree there, and the tracepoints must filter by that cgroup's real depth.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { TestCgroup, VethPair, cgroup2Mount, runIn, spawnIn, uniqueName } from '@kappa/testing';
import { TRAFFIC, kappaAttachments, parseReport, startCapture, totals } from './harness.js';
import { describePrivileged } from './privileges.js';

describePrivileged('capture in a private cgroup namespace, the node cgroup2 under a prefix', () => {
  const cgroup = new TestCgroup(uniqueName('kc-cgns'));
  const nodes = cgroup.child('nodes');
  const agent = cgroup.child('agent');
  const prefix = mkdtempSync(join(tmpdir(), 'kc-cgns-'));
  let pair: VethPair;

  beforeAll(async () => {
    pair = await VethPair.create({ prefix: 'kc-', subnet: 52, cgroup: nodes });
    mkdirSync(join(prefix, 'host/sys/fs/cgroup'), { recursive: true });
  });
  afterAll(() => {
    pair?.destroy();
    nodes.destroy();
    agent.destroy();
    cgroup.destroy();
    rmSync(prefix, { recursive: true, force: true });
  });

  it('attaches to the node tree at the prefix and counts a TCP conversation with its process and latency', async () => {
    const hostMount = join(prefix, 'host/sys/fs/cgroup');
    const target = `${hostMount}${cgroup.path.slice(cgroup2Mount().length)}`;
    // Its own cgroup first (the namespace's root), then the namespaces, the node's cgroup2 at
    // the prefix and, as runc does, the namespace's own view mounted at a second place.
    const capture = await startCapture(['--cgroup', target, '--interval', '60s'], undefined, true, (node, argv) => [
      'sh',
      ['-c', `echo $$ > ${agent.path}/cgroup.procs && exec unshare --cgroup --mount sh -c "$0" "$@"`,
        `mount --bind ${cgroup2Mount()} ${hostMount} && mkdir -p ${prefix}/own && mount -t cgroup2 none ${prefix}/own && exec "$@"`, node, ...argv],
    ]);
    const server = spawnIn(pair.b.netns, nodes, process.execPath, [TRAFFIC, 'tcp-server', pair.b.ipv4, '7031', '1']);
    const serverDone = new Promise((resolve) => server.once('exit', resolve));
    await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
    const client = parseReport(await runIn(pair.a.netns, nodes, process.execPath, [TRAFFIC, 'tcp-client', pair.b.ipv4, '7031', '5', '500']));
    await serverDone;
    const { records, code, stderr } = await capture.stop();
    expect(code, stderr).toBe(0);
    const src = totals(records).get(`${Vantage.SRC} socket ${IpProtocol.TCP} ${pair.a.ipv4} ${client.localPort} ${pair.b.ipv4} 7031`);
    expect(src?.packets).toBeGreaterThanOrEqual(10);
    expect(src?.records[0]?.src?.process?.pid).toBe(client.pid);
    // The send/receive hooks see every process of the node and keep the target sub-tree's only:
    // 5 exchanges counted means the depth they filter at is the cgroup's real one.
    expect(src?.records.reduce((n, r) => n + Number(r.appLatency?.count ?? 0n), 0)).toBe(5);
  });

  it('leaves nothing of kappa attached once capture stopped', () => {
    expect(kappaAttachments([cgroup.path])).toEqual([]);
  });
});
