// The kernel's names for its drop reasons: enum skb_drop_reason as this kernel's BTF declares it
// (values differ between kernels, and new reasons arrive with each release), so a record says
// NETFILTER_DROP or NO_SOCKET whatever the number. Read once at start from the BTF capture has
// parsed already (the running kernel's, or --btf's).
const PREFIX = 'SKB_DROP_REASON_';
/** Longest name kept on a record (the kernel's are under 40 characters). */
const MAX_NAME = 60;

/** Drop reason values → the names records carry (SKB_DROP_REASON_ left off). */
export class DropReasons {
  private readonly fields = new Map<number, Buffer>();

  constructor(private readonly names: ReadonlyMap<number, string>) {}

  /** From the kernel's BTF; without one (or without the enum), numbers are named REASON_<n>. */
  static fromBtf(btf: { path: string; enumValues(name: string): ReadonlyMap<number, string> | undefined }): { reasons: DropReasons; problem?: string } {
    try {
      const values = btf.enumValues('skb_drop_reason');
      if (!values) return { reasons: new DropReasons(new Map()), problem: `${btf.path} has no enum skb_drop_reason (kernel before 5.17)` };
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
