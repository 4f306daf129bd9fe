// Machine-wide names of test fixtures: unique per test process, so two test runs at once (two
// clones, several engineers) never meet; what a killed run left is swept, a live run's never.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TestCgroup, VethPair, cgroup2Mount, isLeftover, ownerPid, sweepLeftovers, uniqueName } from '../src/index.js';
import type { NetnsEnd } from '../src/index.js';

const root = process.getuid?.() === 0;
if (!root && process.env['CI'] === 'true') throw new Error('the fixture tests need root; CI must run them privileged');

/** The pid of a process that has exited. */
function deadPid(): number {
  const pid = spawnSync('true').pid;
  if (!pid) throw new Error('cannot start true');
  return pid;
}

const netnsList = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0]);

describe('uniqueName', () => {
  it('carries the test process id and never repeats in a process', () => {
    const names = [uniqueName('kc-socket'), uniqueName('kc-socket'), uniqueName('kpe-e2e')];
    expect(new Set(names).size).toBe(3);
    for (const name of names) expect(ownerPid(name)).toBe(process.pid);
    expect(ownerPid(`${uniqueName('kc-31')}-a`)).toBe(process.pid);
    expect(ownerPid(`${uniqueName('ke-svc')}.slice`)).toBe(process.pid);
  });

  it('tells a dead run\'s names from a live run\'s and from names that are not a test\'s', () => {
    const dead = deadPid();
    expect(isLeftover(`kc-31-p${dead}-0-a`)).toBe(true);
    expect(isLeftover(`kc-31-p${process.pid}-0-a`)).toBe(false);
    expect(isLeftover(`kc-31-p${process.ppid}-0-a`)).toBe(false);
    for (const other of ['kc-31-a', 'kube-system', `cni-p${dead}-0`, 'kpe-e2e', `kubepods-p${dead}`]) expect(isLeftover(other), other).toBe(false);
  });
});

describe.skipIf(!root)('fixtures of two runs at once', () => {
  const cgroups: TestCgroup[] = [];
  const pairs: VethPair[] = [];
  afterAll(() => {
    for (const pair of pairs) pair.destroy();
    for (const cgroup of cgroups) cgroup.destroy();
  });

  it('two veth pairs with the same prefix and subnet both stand, each with its own namespaces', async () => {
    const cgroup = new TestCgroup(uniqueName('kt-names'));
    cgroups.push(cgroup);
    pairs.push(await VethPair.create({ prefix: 'kt-', subnet: 5, cgroup }));
    pairs.push(await VethPair.create({ prefix: 'kt-', subnet: 5, cgroup }));
    const [first, second] = pairs as [VethPair, VethPair];
    const names = (p: VethPair) => [p.a.netns, p.b.netns];
    expect(new Set([...names(first), ...names(second)]).size).toBe(4);
    // Both still there and working: a datagram crosses each pair.
    const sends = (from: NetnsEnd, to: NetnsEnd) => {
      const out = (ns: string) => Number(/"UdpOutDatagrams":(\d+)/.exec(execFileSync('ip', ['netns', 'exec', ns, 'nstat', '-a', '-z', '-s', '--json'], { encoding: 'utf8' }))?.[1] ?? 0);
      const before = out(from.netns);
      execFileSync('ip', ['netns', 'exec', from.netns, 'python3', '-c', `import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('${to.ipv4}', 9))`]);
      return out(from.netns) - before;
    };
    for (const pair of pairs) expect(sends(pair.a, pair.b)).toBe(1);
    expect(netnsList()).toEqual(expect.arrayContaining([...names(first), ...names(second)]));
    first.destroy();
    expect(netnsList()).toEqual(expect.arrayContaining(names(second)));
  });

  it('sweeps what a killed run left, and nothing of a live run', () => {
    const dead = deadPid();
    const leftNetns = `kt-9-p${dead}-0-a`;
    const liveNetns = uniqueName('kt-9');
    const leftCgroup = join(cgroup2Mount(), `kt-names-p${dead}-1`);
    execFileSync('ip', ['netns', 'add', leftNetns]);
    execFileSync('ip', ['netns', 'add', liveNetns]);
    mkdirSync(join(leftCgroup, 'nodes'), { recursive: true });
    try {
      sweepLeftovers(cgroup2Mount(), { again: true });
      expect(netnsList()).not.toContain(leftNetns);
      expect(existsSync(leftCgroup)).toBe(false);
      expect(netnsList()).toContain(liveNetns);
    } finally {
      for (const ns of [leftNetns, liveNetns]) spawnSync('ip', ['netns', 'del', ns]);
    }
  });
});
