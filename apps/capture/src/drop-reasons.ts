// The kernel's names for its drop reasons: enum skb_drop_reason as this kernel's BTF declares it
// (values differ between kernels, and new reasons arrive with each release), so a record says
// NETFILTER_DROP or NO_SOCKET whatever the number. Read once at start from the BTF file (the
// running kernel's, or --btf's): a small reader of the BTF format's type section, enough to walk
// to one enum.
import { readFileSync } from 'node:fs';

const BTF_MAGIC = 0xeb9f;
const KIND_ENUM = 6;
const KIND_ENUM64 = 19;
const PREFIX = 'SKB_DROP_REASON_';
/** Longest name kept on a record (the kernel's are under 40 characters). */
const MAX_NAME = 60;

/** Bytes each BTF kind adds after the 12-byte struct btf_type (vlen: the kind's item count). */
function extraBytes(kind: number, vlen: number): number {
  switch (kind) {
    case 1: // INT
    case 14: // VAR
    case 17: // DECL_TAG
      return 4;
    case 3: // ARRAY
      return 12;
    case 4: // STRUCT
    case 5: // UNION
    case 15: // DATASEC
      return 12 * vlen;
    case 6: // ENUM
    case 13: // FUNC_PROTO
      return 8 * vlen;
    case 19: // ENUM64
      return 12 * vlen;
    case 2: // PTR
    case 7: // FWD
    case 8: // TYPEDEF
    case 9: // VOLATILE
    case 10: // CONST
    case 11: // RESTRICT
    case 12: // FUNC
    case 16: // FLOAT
    case 18: // TYPE_TAG
      return 0;
    default:
      throw new Error(`BTF kind ${kind} unknown to this reader`);
  }
}

/**
 * The values and names of enum `name` in the BTF file at `path` (undefined when it has no such
 * enum). Throws on a file that is not BTF.
 */
export function readBtfEnum(path: string, name: string): Map<number, string> | undefined {
  const btf = readFileSync(path);
  if (btf.length < 24 || btf.readUInt16LE(0) !== BTF_MAGIC) throw new Error(`${path} is not a BTF file`);
  const headerLength = btf.readUInt32LE(4);
  const typeOff = headerLength + btf.readUInt32LE(8);
  const typeEnd = typeOff + btf.readUInt32LE(12);
  const strOff = headerLength + btf.readUInt32LE(16);
  const strEnd = strOff + btf.readUInt32LE(20);
  const text = (offset: number) => {
    const from = strOff + offset;
    let to = from;
    while (to < strEnd && btf[to] !== 0) to++;
    return btf.toString('latin1', from, to);
  };
  const wanted = Buffer.from(`${name}\0`, 'latin1');
  for (let at = typeOff; at + 12 <= typeEnd; ) {
    const nameOff = btf.readUInt32LE(at);
    const info = btf.readUInt32LE(at + 4);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    const items = at + 12;
    at = items + extraBytes(kind, vlen);
    if (kind !== KIND_ENUM && kind !== KIND_ENUM64) continue;
    if (btf.compare(wanted, 0, wanted.length, strOff + nameOff, strOff + nameOff + wanted.length) !== 0) continue;
    const values = new Map<number, string>();
    const size = kind === KIND_ENUM ? 8 : 12;
    for (let i = 0; i < vlen; i++) {
      const item = items + i * size;
      values.set(btf.readUInt32LE(item + 4), text(btf.readUInt32LE(item)));
    }
    return values;
  }
  return undefined;
}

/** Drop reason values → the names records carry (SKB_DROP_REASON_ left off). */
export class DropReasons {
  private readonly fields = new Map<number, Buffer>();

  constructor(private readonly names: ReadonlyMap<number, string>) {}

  /** From the kernel's BTF; without one (or without the enum), numbers are named REASON_<n>. */
  static fromBtf(path: string): { reasons: DropReasons; problem?: string } {
    try {
      const values = readBtfEnum(path, 'skb_drop_reason');
      if (!values) return { reasons: new DropReasons(new Map()), problem: `${path} has no enum skb_drop_reason (kernel before 5.17)` };
      return { reasons: new DropReasons(values) };
    } catch (error) {
      return { reasons: new DropReasons(new Map()), problem: (error as Error).message };
    }
  }

  get size(): number {
    return this.names.size;
  }

  name(value: number): string {
    const full = this.names.get(value);
    if (full === undefined) {
      // Subsystem reasons (mac80211, openvswitch) carry their subsystem in the high 16 bits.
      return value > 0xffff ? `SUBSYS${value >>> 16}_${value & 0xffff}` : `REASON_${value}`;
    }
    return (full.startsWith(PREFIX) ? full.slice(PREFIX.length) : full).slice(0, MAX_NAME);
  }

  /** Drops.reason = 3 as an encoded field. */
  field(value: number): Buffer {
    let field = this.fields.get(value);
    if (!field) {
      const name = Buffer.from(this.name(value), 'latin1');
      field = Buffer.concat([Buffer.from([(3 << 3) | 2, name.length]), name]);
      this.fields.set(value, field);
    }
    return field;
  }
}
