// The /proc parsers on real and tricky inputs: comm with spaces and parentheses, NUL-separated
// argv, v1/v2/hybrid cgroup files, and the live /proc of this test.
import { describe, expect, it } from 'vitest';
import { findCgroup2Mount } from '../src/cgroup-tree.js';
import { ProcReader, parseCgroupFile, parseCmdline, parseStat, unifiedCgroupPath } from '../src/proc.js';

describe('parseStat', () => {
  it('reads comm and start time even when comm holds spaces and parentheses', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    fields[19] = '987654321';
    const text = `4242 (my (odd) name) ${fields.join(' ')}\n`;
    expect(parseStat(text)).toEqual({ comm: 'my (odd) name', startTimeTicks: 987654321n });
  });

  it('rejects truncated input', () => {
    expect(parseStat('12 (x) S 1 2')).toBeUndefined();
  });
});

describe('parseCmdline', () => {
  it('splits on NUL and drops the trailing one', () => {
    expect(parseCmdline(Buffer.from('node\0-e\0a b\0\0x\0'))).toEqual(['node', '-e', 'a b', '', 'x']);
  });
  it('is empty for kernel threads', () => {
    expect(parseCmdline(Buffer.alloc(0))).toEqual([]);
  });
});

describe('parseCgroupFile', () => {
  it('reads hybrid files', () => {
    const m = parseCgroupFile('4:cpu,cpuacct:/a\n1:name=systemd:/b\n0::/c\n');
    expect(m).toEqual([
      { hierarchyId: 4, controllers: ['cpu', 'cpuacct'], path: '/a' },
      { hierarchyId: 1, controllers: ['name=systemd'], path: '/b' },
      { hierarchyId: 0, controllers: [], path: '/c' },
    ]);
    expect(unifiedCgroupPath(m)).toBe('/c');
  });
});

describe('findCgroup2Mount', () => {
  it('finds the unified mount of a hybrid node', () => {
    const mounts = 'tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n';
    expect(findCgroup2Mount(mounts)).toBe('/sys/fs/cgroup/unified');
  });
  it('finds /sys/fs/cgroup on a v2-only node', () => {
    expect(findCgroup2Mount('cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n')).toBe('/sys/fs/cgroup');
  });
  it('finds nothing on a v1-only node', () => {
    expect(findCgroup2Mount('cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n')).toBeUndefined();
  });
});

describe('ProcReader on the live /proc', () => {
  const proc = new ProcReader();
  it('reads this process', () => {
    const stat = proc.stat(process.pid);
    expect(stat?.comm).toBe(proc.comm(process.pid));
    expect(stat?.startTimeTicks).toBeGreaterThan(0n);
    expect(proc.cmdline(process.pid)?.[0]).toMatch(/node/);
    expect(proc.exe(process.pid)).toBe(process.execPath);
  });
  it('answers undefined for a pid that does not exist', () => {
    expect(proc.stat(2 ** 22 + 1)).toBeUndefined();
    expect(proc.cmdline(2 ** 22 + 1)).toBeUndefined();
  });
});
