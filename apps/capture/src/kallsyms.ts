// Where a kernel function's code lies, from /proc/kallsyms: read once before load for the drops
// program (bpf/kappa_drop.h tells icmpv6_rcv's frees by the tracepoint's location).
import { readFileSync } from 'node:fs';

const NEWLINE = 0x0a;

/**
 * The addresses [start, end) of kernel function `name`: its own address to the next symbol's.
 * Undefined when the file cannot be read, has no such function, or shows every address as 0
 * (kptr_restrict, a reader without CAP_SYSLOG).
 */
export function kernelFunction(name: string, path = '/proc/kallsyms'): { start: bigint; end: bigint } | undefined {
  let text: Buffer;
  try {
    text = readFileSync(path);
  } catch {
    return undefined;
  }
  const own = functionLine(text, name);
  if (own < 0) return undefined;
  // Addresses are all as wide as a pointer: as strings of one length they compare as numbers.
  const width = text.indexOf(0x20, own) - own;
  if (width <= 0) return undefined;
  const start = BigInt(`0x${text.toString('latin1', own, own + width)}`);
  if (start === 0n) return undefined;
  // The next address above it, in one pass compared in place (121 000 lines on 6.18): the file
  // is mostly in address order, but module symbols need not be.
  let end = -1;
  for (let at = 0; at < text.length; ) {
    if (above(text, at, own, width) && (end < 0 || above(text, end, at, width))) end = at;
    const next = text.indexOf(NEWLINE, at);
    at = next < 0 ? text.length : next + 1;
  }
  return end < 0 ? undefined : { start, end: BigInt(`0x${text.toString('latin1', end, end + width)}`) };
}

/** Where the line of text symbol `name` starts ("<address> t|T <name>[\t[module]]"), or -1. */
function functionLine(text: Buffer, name: string): number {
  const needle = ` ${name}`;
  for (let at = text.indexOf(needle, 0, 'latin1'); at >= 0; at = text.indexOf(needle, at + 1, 'latin1')) {
    const after = at + needle.length;
    // The whole name: the line ends there or goes on with the module ("\t[ipv6]").
    if (after < text.length && text[after] !== NEWLINE && text[after] !== 0x09) continue;
    // " t name" or " T name", at the start of its line.
    const type = text[at - 1];
    if ((type !== 0x74 && type !== 0x54) || text[at - 2] !== 0x20) continue;
    const lineStart = text.lastIndexOf(NEWLINE, at) + 1;
    if (lineStart < at - 2 && hexDigits(text, lineStart, at - 2)) return lineStart;
  }
  return -1;
}

function hexDigits(text: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = text[i]!;
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/** Whether the address at `a` is greater than the one at `b` (both `width` hex digits). */
function above(text: Buffer, a: number, b: number, width: number): boolean {
  for (let i = 0; i < width; i++) {
    const x = text[a + i]!;
    const y = text[b + i]!;
    if (x !== y) return x > y;
  }
  return false;
}
