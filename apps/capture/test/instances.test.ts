// One capture instance per bpffs folder (--node and --cgroup), and what a crashed one leaves:
// swept when another starts under another --node on the same cgroup, refused to a second live
// instance of the same folder with one line, and named when its maps have another layout.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { afterAll, afterEach, expect, it } from 'vitest';
import { TestCgroup } from '@kappa/testing';
import { instanceToken, pinFolder } from '../src/instance.js';
import { CAPTURE_BIN, kappaAttachments, startCapture as startCaptureProcess } from './harness.js';
import type { CaptureRun } from './harness.js';
import { describePrivileged } from './privileges.js';

const lines = (text: string) => text.split('\n').filter((line) => line.trim() !== '');

describePrivileged('capture instances', () => {

  // Every capture a test starts is stopped after it, also when an assertion failed half-way.
  const started: CaptureRun[] = [];
  const startCapture = async (...args: Parameters<typeof startCaptureProcess>) => {
    const run = await startCaptureProcess(...args);
    started.push(run);
    return run;
  };
  afterEach(async () => {
    for (const run of started.splice(0)) await run.stop();
  });
  const cgroup = new TestCgroup(`kc-instances-${process.pid}`);
  const node = (name: string) => `kc-${name}-${process.pid}`;
  afterAll(() => cgroup.destroy());

  it('leaves no program of a crashed instance attached when another starts under another --node', async () => {
    const crashed = await startCapture(['--cgroup', cgroup.path, '--node', node('old')]);
    crashed.process.kill('SIGKILL');
    await crashed.stop();
    const oldFolder = pinFolder(instanceToken(node('old'), cgroup.path));
    // Its links are pinned: the kernel counts on into maps nobody drains.
    expect(readdirSync(oldFolder)).toContain('link_kappa_skb_ingress');
    expect(kappaAttachments([cgroup.path]).filter((line) => line.includes('kappa_skb_ingress'))).toHaveLength(1);

    const renamed = await startCapture(['--cgroup', cgroup.path, '--node', node('new')]);
    expect(existsSync(oldFolder)).toBe(false);
    // One set of programs, the new instance's.
    expect(kappaAttachments([cgroup.path]).filter((line) => line.includes('kappa_skb_ingress'))).toHaveLength(1);
    const { code, stderr } = await renamed.stop();
    expect(code).toBe(0);
    expect(stderr).toMatch(/removed the pinned programs and maps of a dead capture instance/);
    expect(kappaAttachments([cgroup.path])).toEqual([]);
  });

  it('refuses a second instance on the same --node and --cgroup with one line naming the first', async () => {
    const first = await startCapture(['--cgroup', cgroup.path, '--node', node('busy')]);
    try {
      const second = spawnSync(process.execPath, [CAPTURE_BIN, '--stdout', '--metrics-port', '0', '--cgroup', cgroup.path, '--node', node('busy')], { encoding: 'utf8', timeout: 60_000 });
      expect(second.status).toBe(1);
      expect(lines(second.stderr)).toEqual([
        `kappa-capture: another kappa-capture (pid ${first.process.pid}) holds ${pinFolder(instanceToken(node('busy'), cgroup.path))}: one instance per --node and --cgroup; stop it first or start this one with another --node`,
      ]);
      // The first one still counts.
      expect(kappaAttachments([cgroup.path]).filter((line) => line.includes('kappa_skb_ingress'))).toHaveLength(1);
    } finally {
      expect((await first.stop()).code).toBe(0);
    }
    expect(kappaAttachments([cgroup.path])).toEqual([]);
  });

  it('names the pinned map whose layout differs, and how, instead of a bare EINVAL', async () => {
    const crashed = await startCapture(['--cgroup', cgroup.path, '--node', node('layout'), '--max-conversations', '2048']);
    crashed.process.kill('SIGKILL');
    await crashed.stop();
    const folder = pinFolder(instanceToken(node('layout'), cgroup.path));
    const restart = spawnSync(process.execPath, [CAPTURE_BIN, '--stdout', '--metrics-port', '0', '--cgroup', cgroup.path, '--node', node('layout'), '--max-conversations', '4096'], { encoding: 'utf8', timeout: 60_000 });
    expect(restart.status).toBe(1);
    expect(lines(restart.stderr)).toHaveLength(1);
    expect(restart.stderr).toMatch(new RegExp(`^kappa-capture: ${folder} holds pinned maps of another layout, .*kappa_flows_0 \\(2048 entries, this start 4096 \\(--max-conversations\\)\\).* rm -r ${folder}`));
    // Refused, and left as it was: the crashed instance's programs still count for a start that matches.
    expect(existsSync(folder)).toBe(true);
    const matching = await startCapture(['--cgroup', cgroup.path, '--node', node('layout'), '--max-conversations', '2048']);
    expect((await matching.stop()).code).toBe(0);
    expect(existsSync(folder)).toBe(false);
    expect(kappaAttachments([cgroup.path])).toEqual([]);
  });
});
