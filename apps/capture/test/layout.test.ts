// The TypeScript layout of the shared structs must be the one the compiler gave the BPF object:
// read the object's BTF (bpftool) and compare every field's offset and size, and the constants.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DEFAULT_BPF_OBJECT } from '../src/options.js';
import * as layout from '../src/layout.js';
import type { StructLayout } from '../src/layout.js';

interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number; bits_offset: number }[];
  vars?: { type_id: number; offset: number; size: number }[];
}

const btf = (JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', DEFAULT_BPF_OBJECT, 'format', 'raw'], { encoding: 'utf8', maxBuffer: 64 << 20 })) as { types: BtfType[] }).types;
const byId = new Map(btf.map((t) => [t.id, t]));

function sizeOf(typeId: number): number {
  const t = byId.get(typeId);
  if (!t) throw new Error(`no BTF type ${typeId}`);
  if (t.kind === 'TYPEDEF' || t.kind === 'VOLATILE' || t.kind === 'CONST') return sizeOf(t.type_id ?? 0);
  if (t.kind === 'ARRAY') return sizeOf(t.type_id ?? 0) * (t.nr_elems ?? 0);
  return t.size ?? 0;
}

function btfLayout(name: string): { size: number; fields: Record<string, { offset: number; size: number }> } {
  const struct = btf.find((t) => t.kind === 'STRUCT' && t.name === name);
  if (!struct) throw new Error(`${DEFAULT_BPF_OBJECT} has no struct ${name}`);
  const fields: Record<string, { offset: number; size: number }> = {};
  for (const m of struct.members ?? []) fields[m.name] = { offset: m.bits_offset / 8, size: sizeOf(m.type_id) };
  return { size: struct.size ?? 0, fields };
}

describe('shared struct layout', () => {
  for (const struct of [layout.FLOW_KEY, layout.FLOW_STATS, layout.CONFIG, layout.DRAIN_STATE, layout.DRAIN_MARKS, layout.EXEC_EVENT] as StructLayout<string>[]) {
    it(`decodes ${struct.name} with the object's offsets and sizes`, () => {
      expect({ size: struct.size, fields: struct.fields }).toEqual(btfLayout(struct.name));
    });
  }

  it('finds kappa_config at the start of .rodata, where setReadOnlyConfig writes it', () => {
    const rodata = btf.find((t) => t.kind === 'DATASEC' && t.name === '.rodata');
    const vars = (rodata?.vars ?? []).map((v) => ({ name: byId.get(v.type_id)?.name, offset: v.offset, size: v.size }));
    expect(vars).toEqual([{ name: 'kappa_config', offset: 0, size: layout.CONFIG.size }]);
  });

  it('uses the role and counter numbers of bpf/kappa.h', () => {
    const header = readFileSync(new URL('../../../bpf/kappa.h', import.meta.url), 'utf8');
    const define = (name: string) => Number(new RegExp(`#define ${name} (\\d+)`).exec(header)?.[1]);
    expect({
      unknown: layout.ROLE_UNKNOWN, src: layout.ROLE_SRC, dst: layout.ROLE_DST,
      packets: layout.COUNTER_OVERFLOW_PACKETS, bytes: layout.COUNTER_OVERFLOW_BYTES, roles: layout.COUNTER_ROLE_OVERFLOW,
      copies: layout.COUNTER_COPIES_SKIPPED,
    }).toEqual({
      unknown: define('KAPPA_ROLE_UNKNOWN'), src: define('KAPPA_ROLE_SRC'), dst: define('KAPPA_ROLE_DST'),
      packets: define('KAPPA_COUNTER_OVERFLOW_PACKETS'), bytes: define('KAPPA_COUNTER_OVERFLOW_BYTES'), roles: define('KAPPA_COUNTER_ROLE_OVERFLOW'),
      copies: define('KAPPA_COUNTER_COPIES_SKIPPED'),
    });
  });

  it('uses the exec counter and flag numbers of bpf/kappa_exec.h', () => {
    const header = readFileSync(new URL('../../../bpf/kappa_exec.h', import.meta.url), 'utf8');
    const define = (name: string) => Number(new RegExp(`#define ${name} (\\d+)`).exec(header)?.[1]);
    expect([layout.EXEC_COUNTER_LOST, layout.EXEC_COUNTER_UNREADABLE, layout.EXEC_ARGS_CUT, layout.EXEC_ARGS_UNREADABLE]).toEqual(
      ['KAPPA_EXEC_COUNTER_LOST', 'KAPPA_EXEC_COUNTER_UNREADABLE', 'KAPPA_EXEC_ARGS_CUT', 'KAPPA_EXEC_ARGS_UNREADABLE'].map(define),
    );
  });

  it('keeps what each direction updates on its own cache line', () => {
    const f = layout.FLOW_STATS.fields;
    // 64 bytes apart, whatever the alignment of the map value: never on one 64-byte line.
    expect(f.rx_bytes.offset - f.tx_bytes.offset).toBeGreaterThanOrEqual(64);
    expect(f.rx_tcp_flags.offset + 4 - f.rx_bytes.offset).toBeLessThanOrEqual(64 - 8);
  });
});
