// Where a kernel function's code lies, from /proc/kallsyms: read once before load for the drops
// program (bpf/kappa_drop.h tells icmpv6_rcv's frees by the tracepoint's location).
import { readFileSync } from 'node:fs';

/**
 * The addresses [start, end) of kernel function `name`: its own address to the next symbol's.
 * Undefined when the file cannot be read, has no such function, or shows every address as 0
 * (kptr_restrict, a reader without CAP_SYSLOG).
 */
export function kernelFunction(name: string, path = '/proc/kallsyms'): { start: bigint; end: bigint } | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
  const line = new RegExp(`^([0-9a-f]+) [tT] ${name}(?:\\t\\[\\w+\\])?$`, 'm').exec(text);
  if (!line) return undefined;
  const start = BigInt(`0x${line[1]}`);
  if (start === 0n) return undefined;
  // The next address above it: the file is mostly in address order, but module symbols need not
  // be. Addresses are all as wide as a pointer: as strings of one length they compare as numbers.
  const own = line[1]!;
  let end = '';
  for (let at = 0; at < text.length; ) {
    const address = text.slice(at, at + own.length);
    if (address > own && (end === '' || address < end)) end = address;
    const next = text.indexOf('\n', at);
    at = next < 0 ? text.length : next + 1;
  }
  return end ? { start, end: BigInt(`0x${end}`) } : undefined;
}
