// libbpf through koffi against the real kernel: open/configure/load, batch and fallback drains
// that move every entry exactly once, per-CPU sums, and the typed errors.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfError, BpfObject, BtfMissingError, KernelBtf, MapDrainer, RingBufferReader, attachCgroup, cgroup2Root, cgroupIdentity, readPerCpuCounter, updateElement } from '../src/index.js';
import { TestCgroup, runIn, uniqueName } from '@kappa/testing';

const root = process.getuid?.() === 0;
if (!root && process.env['CI'] === 'true') throw new Error('ebpf-ffi tests need root; CI must run them privileged');

const dir = mkdtempSync(join(tmpdir(), 'kc-ffi-'));
const objectPath = join(dir, 'maps.bpf.o');

beforeAll(() => {
  const source = fileURLToPath(new URL('./fixtures/maps.bpf.c', import.meta.url));
  // linux/bpf.h needs the arch's asm/ headers (Debian's multiarch include path).
  execFileSync('clang', ['-g', '-O2', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', source, '-o', objectPath]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('KernelBtf', () => {
  it("reads an enum's names and values as bpftool dumps them from the kernel's BTF", () => {
    const dump = execFileSync('bpftool', ['btf', 'dump', 'file', '/sys/kernel/btf/vmlinux', 'format', 'raw'], { encoding: 'utf8', maxBuffer: 1 << 30 });
    const at = dump.indexOf("ENUM 'skb_drop_reason'");
    expect(at).toBeGreaterThan(0);
    const expected = new Map<number, string>();
    for (const line of dump.slice(at).split('\n').slice(1)) {
      const item = /^\t'(\w+)' val=(\d+)$/.exec(line);
      if (!item) break;
      expected.set(Number(item[2]), item[1]!);
    }
    const btf = KernelBtf.open();
    try {
      expect(expected.size).toBeGreaterThan(50);
      expect(btf?.enumValues('skb_drop_reason')).toEqual(expected);
      expect(btf?.enumValues('no_such_enum_in_any_kernel')).toBeUndefined();
    } finally {
      btf?.close();
    }
  });
});

describe('errors an operator can act on', () => {
  it('names the missing BTF file and the flag to fix it', () => {
    expect(() => BpfObject.open(objectPath, { btfPath: '/missing/vmlinux' })).toThrow(BtfMissingError);
    expect(() => BpfObject.open(objectPath, { btfPath: '/missing/vmlinux' })).toThrow(/BTF file \/missing\/vmlinux does not exist; pass --btf PATH/);
  });

  it('names a missing object file', () => {
    expect(() => BpfObject.open(join(dir, 'nope.o'))).toThrow(BpfError);
  });

  it('finds cgroup v2 in /proc/mounts and the id the kernel uses for a cgroup', () => {
    expect(cgroup2Root()).toMatch(/^\/sys\/fs\/cgroup/);
    expect(cgroupIdentity(cgroup2Root())).toEqual({ id: 1n, level: 0 });
  });
});

describe.skipIf(!root)('maps in the kernel', () => {
  let object: BpfObject;
  beforeAll(() => {
    object = BpfObject.open(objectPath);
    object.setMaxEntries('kc_entries', 30_000);
    const config = Buffer.alloc(8);
    config.writeBigUInt64LE(7n);
    object.setReadOnlyConfig(config);
    object.load();
  });
  afterAll(() => object?.close());

  function fill(count: number): void {
    const map = object.map('kc_entries');
    const key = Buffer.alloc(4);
    const value = Buffer.alloc(8);
    for (let i = 0; i < count; i++) {
      key.writeUInt32LE(i);
      value.writeBigUInt64LE(BigInt(i) * 3n);
      updateElement(map, key, value);
    }
  }

  function drainAll(drainer: MapDrainer): Map<number, bigint> {
    const seen = new Map<number, bigint>();
    drainer.drain(({ keys, values, count }) => {
      for (let i = 0; i < count; i++) {
        const key = keys.readUInt32LE(i * 4);
        expect(seen.has(key)).toBe(false);
        seen.set(key, values.readBigUInt64LE(i * 8));
      }
    });
    return seen;
  }

  for (const batch of [true, false]) {
    it(`drains 25 000 entries exactly once in 4096-entry chunks (${batch ? 'batch lookup-and-delete' : 'get-next-key fallback'})`, () => {
      fill(25_000);
      const drainer = new MapDrainer(object.map('kc_entries'), 4096, { batch });
      const seen = drainAll(drainer);
      expect(drainer.usesBatch).toBe(batch);
      expect(seen.size).toBe(25_000);
      expect([...seen].every(([k, v]) => v === BigInt(k) * 3n)).toBe(true);
      expect(drainAll(drainer).size).toBe(0); // the map is empty afterwards
    });
  }

  it('sums a per-CPU counter over all CPUs', () => {
    // A different value on each possible CPU (the kernel's list, not libbpf's count), written in
    // the per-CPU layout: one 8-byte slot per possible CPU.
    const possible = readFileSync('/sys/devices/system/cpu/possible', 'utf8')
      .trim()
      .split(',')
      .reduce((n, range) => {
        const [first, last = first] = range.split('-').map(Number) as [number, number?];
        return Math.max(n, last! + 1);
      }, 0);
    const values = Buffer.alloc(8 * possible);
    let expected = 0n;
    for (let cpu = 0; cpu < possible; cpu++) {
      const value = 1000n ** BigInt(cpu) * 7n + BigInt(cpu);
      values.writeBigUInt64LE(value, 8 * cpu);
      expected += value;
    }
    const key = Buffer.alloc(4);
    updateElement(object.map('kc_counters'), key, values);
    expect(possible).toBeGreaterThan(0);
    expect(readPerCpuCounter(object.map('kc_counters'), 0)).toBe(expected);
    expect(readPerCpuCounter(object.map('kc_counters'), 1)).toBe(0n); // no packet counted yet
  });

  it('consumes ring buffer records written by a program attached to a cgroup, then detaches', async () => {
    const cgroup = new TestCgroup(uniqueName('kc-ffi'));
    const reader = new RingBufferReader(object.map('kc_events'));
    const attachment = attachCgroup(object.program('kc_pass'), cgroup.path);
    try {
      // Three 100-byte UDP datagrams on loopback from a process inside the cgroup.
      const send = "const s=require('dgram').createSocket('udp4');let n=0;const go=()=>s.send(Buffer.alloc(100),9,'127.0.0.1',()=>++n<3?go():s.close());go();";
      await runIn(undefined, cgroup, process.execPath, ['-e', send]);
      const events = reader.consume().map((b) => [b.readBigUInt64LE(0), b.readBigUInt64LE(8)]);
      expect(events).toEqual([[128n, 7n], [128n, 7n], [128n, 7n]]); // 20 IP + 8 UDP + 100, and the .rodata value
      // The program's per-CPU byte counter, summed over whichever CPUs sent them.
      expect(readPerCpuCounter(object.map('kc_counters'), 1)).toBe(3n * 128n);
    } finally {
      attachment.detach();
      reader.close();
      cgroup.destroy();
    }
    expect(execFileSync('bpftool', ['cgroup', 'tree'], { encoding: 'utf8' })).not.toContain('kc_pass');
  });

  it('reports the map sizes the object declared and the resize', () => {
    const map = object.map('kc_entries');
    expect([map.keySize, map.valueSize, map.maxEntries]).toEqual([4, 8, 30_000]);
  });
});
