// Least privilege, proven: the built kappa-capture runs with exactly CAP_BPF, CAP_PERFMON and
// CAP_NET_ADMIN (uid 0 as in the DaemonSet, every other capability gone from the bounding set,
// no_new_privs, RLIMIT_MEMLOCK 0) and counts flows; without any one of them it exits 1 with one
// line naming the missing capability, and leaves nothing attached.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { IpProtocol, Vantage, flowRecordFromJson } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { TestCgroup, freePort, runIn, spawnIn, uniqueName } from '@kappa/testing';
import { CAPTURE_BIN, TRAFFIC, kappaAttachments } from './harness.js';
import { describePrivileged } from './privileges.js';

/** The set documented in infra/README.md, apps/capture/README.md and infra/k8s/base/agent.yaml. */
const DOCUMENTED = ['cap_bpf', 'cap_perfmon', 'cap_net_admin'] as const;
const NUMBERS: Record<string, number> = { cap_net_admin: 12, cap_sys_admin: 21, cap_perfmon: 38, cap_bpf: 39 };

function mask(names: readonly string[]): bigint {
  return names.reduce((m, name) => m | (1n << BigInt(NUMBERS[name] ?? -1)), 0n);
}

/**
 * argv that runs `command` as uid 0 with exactly `keep`: every other capability dropped from the
 * bounding set (so root's execve grants only `keep`), `keep` inheritable and ambient,
 * no_new_privs (allowPrivilegeEscalation: false) and RLIMIT_MEMLOCK 0 (no CAP_SYS_RESOURCE to
 * raise it, as in a container).
 */
function withExactly(keep: readonly string[], command: string, args: readonly string[]): [string, string[]] {
  const last = Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'));
  const kept = new Set(keep.map((name) => NUMBERS[name]));
  const drop = Array.from({ length: last + 1 }, (_, i) => i).filter((i) => !kept.has(i));
  const iab = keep.map((name) => `^${name}`).join(',');
  return [
    'prlimit',
    ['--memlock=0:0', 'capsh', `--drop=${drop.join(',')}`, ...(iab ? [`--iab=${iab}`] : []), '--no-new-privs', `--shell=${command}`, '--', ...args],
  ];
}

function status(pid: number): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const [key, value] = line.split(':\t');
    if (key && value !== undefined) fields[key] = value.trim();
  }
  return fields;
}

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line.trim() !== '');
}

describePrivileged('capture with exactly its documented capabilities', () => {
  const cgroup = new TestCgroup(uniqueName('ksp-caps'));
  const workload = cgroup.child('workload');
  const running = new Set<ChildProcess>();

  afterAll(() => {
    for (const child of running) child.kill('SIGKILL');
    workload.destroy();
    cgroup.destroy();
  });

  function captureArgs(extra: readonly string[] = []): string[] {
    return [CAPTURE_BIN, '--stdout', '--metrics-port', '0', '--interval', '1s', '--node', 'ksp-node', '--cgroup', cgroup.path, ...extra];
  }

  describePrivileged('the documented set', () => {
    let child: ChildProcess;
    let stdout = '';
    let stderr = '';

    beforeAll(async () => {
      const [command, args] = withExactly(DOCUMENTED, process.execPath, captureArgs());
      child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      running.add(child);
      child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
      await new Promise<void>((resolve, reject) => {
        child.stderr?.on('data', (c: Buffer) => {
          stderr += c.toString();
          if (stderr.includes('"msg":"capturing"')) resolve();
        });
        child.once('exit', (code) => reject(new Error(`kappa-capture exited ${code} before attaching: ${stderr}`)));
      });
    });

    afterAll(() => {
      child?.kill('SIGKILL');
    });

    it('runs as uid 0 holding exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, none other, not even in its bounding set', () => {
      // prlimit and capsh exec: the pid spawned is, in the end, kappa-capture's node.
      const own = status(child.pid ?? 0);
      const exactly = mask(DOCUMENTED);
      expect(own['Uid']?.split(/\s+/)[0]).toBe('0');
      for (const set of ['CapEff', 'CapPrm', 'CapBnd']) expect(BigInt(`0x${own[set]}`), set).toBe(exactly);
      expect(BigInt(`0x${own['CapEff']}`) & mask(['cap_sys_admin'])).toBe(0n);
      expect(own['NoNewPrivs']).toBe('1');
      expect(readFileSync(`/proc/${child.pid}/limits`, 'utf8')).toMatch(/Max locked memory\s+0\s+0\s+bytes/);
    });

    it('attaches and counts a UDP conversation exactly (8 datagrams each way) with that set', async () => {
      const port = await freePort();
      const server = spawnIn(undefined, workload, process.execPath, [TRAFFIC, 'udp-server', '127.0.0.1', String(port), '8']);
      running.add(server);
      const served = new Promise((resolve) => server.once('exit', resolve));
      await new Promise<void>((resolve) => server.stderr?.on('data', (c: Buffer) => c.toString().includes('listening') && resolve()));
      await runIn(undefined, workload, process.execPath, [TRAFFIC, 'udp-client', '127.0.0.1', String(port), '8', '100']);
      await served;

      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      child.kill('SIGINT'); // last drain, detach
      expect(await exited).toBe(0);
      const records: FlowRecord[] = lines(stdout).map((line) => flowRecordFromJson(JSON.parse(line)));
      const client = records.filter((r) => r.protocol === IpProtocol.UDP && r.vantage === Vantage.SRC && r.dst?.port === port);
      expect(client.length, stderr).toBeGreaterThan(0);
      expect(client.reduce((n, r) => n + Number(r.packets), 0)).toBe(8);
      expect(client.reduce((n, r) => n + Number(r.reversePackets), 0)).toBe(8);
      expect(kappaAttachments([cgroup.path])).toEqual([]);
    });
  });

  it('in interface mode (tc on lo of its own network namespace) the same set attaches and counts 3 pings each way (twice: lo egress and ingress)', async () => {
    const netns = uniqueName('ksp-caps');
    execFileSync('ip', ['netns', 'add', netns]);
    try {
      execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
      // nsenter first, with root's full set; then capsh narrows to exactly the documented set.
      const [command, args] = withExactly(DOCUMENTED, process.execPath, captureArgs(['--mode', 'interface', '--capture', 'lo']));
      const child = spawn('nsenter', [`--net=/run/netns/${netns}`, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      running.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      await new Promise<void>((resolve, reject) => {
        child.stderr.on('data', (c: Buffer) => {
          stderr += c.toString();
          if (stderr.includes('"msg":"capturing"')) resolve();
        });
        void exited.then((code) => reject(new Error(`kappa-capture exited ${code} before attaching: ${stderr}`)));
      });
      execFileSync('ip', ['netns', 'exec', netns, 'ping', '-c', '3', '-i', '0.2', '-q', '127.0.0.1']);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      const icmp = lines(stdout)
        .map((line) => flowRecordFromJson(JSON.parse(line)))
        .filter((r) => r.protocol === IpProtocol.ICMP && r.observation === 'lo');
      // On lo every packet leaves (tc egress) and arrives (tc ingress): 3 echoes each way, seen twice.
      expect(icmp.reduce((n, r) => n + Number(r.packets), 0), stdout).toBe(6);
      expect(icmp.reduce((n, r) => n + Number(r.reversePackets), 0), stdout).toBe(6);
      expect(kappaAttachments([], [netns])).toEqual([]);
    } finally {
      execFileSync('ip', ['netns', 'del', netns]);
    }
  });

  it.each(DOCUMENTED.map((missing) => [missing.toUpperCase(), DOCUMENTED.filter((name) => name !== missing)] as const))(
    'without %s it exits 1 with one line naming it, and attaches nothing',
    (missing, keep) => {
      const [command, args] = withExactly(keep, process.execPath, captureArgs());
      const result = spawnSync(command, args, { encoding: 'utf8', timeout: 30_000 });
      expect(result.signal).toBeNull();
      expect(result.status).toBe(1);
      expect(result.stdout).toBe('');
      expect(lines(result.stderr)).toHaveLength(1);
      expect(result.stderr).toMatch(new RegExp(`^kappa-capture: capture needs ${missing}, missing from its effective capability set`));
      expect(result.stderr).not.toMatch(/\n\s+at /);
      expect(kappaAttachments([cgroup.path])).toEqual([]);
    },
  );

  it('in interface mode, CAP_SYS_ADMIN does not stand in for CAP_NET_ADMIN (tc wants it), and the line says so', () => {
    const [command, args] = withExactly(['cap_bpf', 'cap_perfmon', 'cap_sys_admin'], process.execPath, captureArgs(['--mode', 'interface', '--capture', 'ksp-none']));
    const result = spawnSync(command, args, { encoding: 'utf8', timeout: 30_000 });
    expect(result.status).toBe(1);
    expect(lines(result.stderr)).toEqual([expect.stringMatching(/^kappa-capture: capture needs CAP_NET_ADMIN, missing/)]);
  });

  it('in a user namespace (capabilities the kernel does not count for bpf()) it says the capabilities are there but refused', () => {
    const result = spawnSync('unshare', ['--user', '--map-root-user', process.execPath, ...captureArgs()], { encoding: 'utf8', timeout: 30_000 });
    expect(result.status).toBe(1);
    expect(lines(result.stderr)).toEqual([
      expect.stringMatching(/^kappa-capture: capture needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN and has them, but the kernel still refused: .*permission denied; .*user namespace/),
    ]);
    expect(kappaAttachments([cgroup.path])).toEqual([]);
  });

  it('the documented set is what the Kustomize base adds to the capture container', () => {
    const agent = readFileSync(new URL('../../../infra/k8s/base/agent.yaml', import.meta.url), 'utf8');
    const added = /- name: capture\n[\s\S]*?add: \[([^\]]*)\]/.exec(agent)?.[1]?.split(',').map((s) => `cap_${s.trim().toLowerCase()}`);
    expect(added?.sort()).toEqual([...DOCUMENTED].sort());
  });
});
