// Ctrl-C or SIGTERM at any moment of capture's start (as `npm run up` stopped right after it
// started) ends it cleanly: exit 0, no folder left in /sys/fs/bpf/kappa, no program attached.
// Before, the default signal action ended capture with its maps (and, mid-attach, its links)
// pinned.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { TestCgroup, uniqueName } from '@kappa/testing';
import { CAPTURE_BIN, kappaAttachments } from './harness.js';
import { describePrivileged } from './privileges.js';

const BPFFS = '/sys/fs/bpf/kappa';

/** This node's pin folders (node names are unique to this test) and what each holds. */
function pinned(node: string): string[] {
  if (!existsSync(BPFFS)) return [];
  return readdirSync(BPFFS)
    .filter((entry) => entry.startsWith(`${node}-`))
    .flatMap((entry) => [join(BPFFS, entry), ...readdirSync(join(BPFFS, entry)).map((file) => join(BPFFS, entry, file))]);
}

describePrivileged('a stop while capture starts', () => {
  const cgroup = new TestCgroup(uniqueName('kc-startstop'));
  afterAll(() => cgroup.destroy());

  // The moments a stop can fall in: while the maps are pinned one by one (the load) and while the
  // links are pinned one by one (the attach). A stop after "capturing" is every other capture
  // test's way out.
  const moments: [string, NodeJS.Signals, (node: string) => boolean][] = [
    ['after the first map is pinned', 'SIGTERM', (node) => pinned(node).some((p) => /\/kappa_[a-z_]+$/.test(p))],
    ['after the first link is pinned', 'SIGINT', (node) => pinned(node).some((p) => p.includes('/link_'))],
  ];
  for (const [moment, signal, reached] of moments) {
    it(`${signal} ${moment}: exit 0, nothing pinned, nothing attached`, async () => {
      const node = uniqueName('kc-startstop');
      const watched = cgroup.child(node);
      const child = spawn(process.execPath, [CAPTURE_BIN, '--stdout', '--metrics-port', '0', '--cgroup', watched.path, '--node', node, '--interval', '60s'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      try {
        // A tight poll: the load and the attach take tens of milliseconds.
        const deadline = Date.now() + 30_000;
        while (!reached(node)) {
          if (child.exitCode !== null) throw new Error(`capture exited ${child.exitCode} before the moment: ${stderr}`);
          if (Date.now() > deadline) throw new Error(`capture never reached the moment: ${stderr}`);
          await new Promise((r) => setImmediate(r));
        }
        child.kill(signal);
        expect(await exited, stderr.slice(-2000)).toBe(0);
        expect(pinned(node)).toEqual([]);
        expect(kappaAttachments([watched.path])).toEqual([]);
      } finally {
        child.kill('SIGKILL');
        await exited;
        // On a failure, what the killed capture left: unpinning releases its links and maps.
        for (const path of pinned(node)) rmSync(path, { recursive: true, force: true });
        watched.destroy();
      }
    });
  }
});
