// Which addresses are pod addresses: the CIDRs nodes announce (spec.podCIDRs) or the operator
// gives (--pod-cidr), else the /24 (IPv4) or /64 (IPv6) prefixes that hold known pods (CNIs such
// as AWS VPC CNI or Calico IPAM give no podCIDRs). Answers are cached per address.
import { ipToBytes } from '@kappa/contracts';

interface Cidr {
  bytes: Uint8Array;
  bits: number;
}

export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0) throw new RangeError(`not a CIDR (want address/bits): ${text}`);
  const bytes = ipToBytes(text.slice(0, slash));
  const bits = Number(text.slice(slash + 1));
  if (!Number.isInteger(bits) || bits < 0 || bits > bytes.length * 8) throw new RangeError(`bad prefix length in ${text}`);
  return { bytes, bits };
}

function contains(cidr: Cidr, address: Uint8Array): boolean {
  if (cidr.bytes.length !== address.length) return false;
  let bits = cidr.bits;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((cidr.bytes[i] ?? 0) & mask) !== ((address[i] ?? 0) & mask)) return false;
  }
  return true;
}

function prefixOf(ip: string): string {
  // IPv4: a.b.c of a.b.c.d; IPv6: the first four groups.
  if (!ip.includes(':')) return ip.slice(0, ip.lastIndexOf('.'));
  const bytes = ipToBytes(ip);
  return Buffer.from(bytes.subarray(0, 8)).toString('hex');
}

export class PodNetworks {
  /** node name → its podCIDRs. */
  private readonly nodeCidrs = new Map<string, Cidr[]>();
  private readonly configured: Cidr[];
  /** Prefix → pod IPs in it (fallback when no CIDR is known). */
  private readonly learned = new Map<string, number>();
  private readonly cache = new Map<string, boolean>();

  constructor(configured: readonly string[] = []) {
    this.configured = configured.map(parseCidr);
  }

  setNodeCidrs(node: string, cidrs: readonly string[]): void {
    const parsed: Cidr[] = [];
    for (const text of cidrs) {
      try {
        parsed.push(parseCidr(text));
      } catch {
        // A node with a malformed podCIDR contributes nothing.
      }
    }
    if (parsed.length > 0) this.nodeCidrs.set(node, parsed);
    else this.nodeCidrs.delete(node);
    this.cache.clear();
  }

  podIpAdded(ip: string): void {
    const prefix = prefixOf(ip);
    const count = this.learned.get(prefix) ?? 0;
    this.learned.set(prefix, count + 1);
    if (count === 0) this.cache.clear();
  }

  podIpRemoved(ip: string): void {
    const prefix = prefixOf(ip);
    const count = (this.learned.get(prefix) ?? 1) - 1;
    if (count > 0) this.learned.set(prefix, count);
    else {
      this.learned.delete(prefix);
      this.cache.clear();
    }
  }

  contains(ip: string): boolean {
    const cached = this.cache.get(ip);
    if (cached !== undefined) return cached;
    let answer = false;
    try {
      if (this.configured.length === 0 && this.nodeCidrs.size === 0) {
        answer = this.learned.has(prefixOf(ip));
      } else {
        const address = ipToBytes(ip);
        answer = this.configured.some((c) => contains(c, address));
        for (const cidrs of this.nodeCidrs.values()) {
          if (answer) break;
          answer = cidrs.some((c) => contains(c, address));
        }
      }
    } catch {
      // Not an address at all (a record from a hostile or broken producer): in no pod network.
      answer = false;
    }
    if (this.cache.size >= 65_536) this.cache.clear();
    this.cache.set(ip, answer);
    return answer;
  }
}
