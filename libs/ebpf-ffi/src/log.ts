// libbpf's own messages (warnings, verifier logs), kept in a short ring so that an error can
// quote the line that explains it instead of libbpf printing to stderr behind our back.
import { registerPrinter } from './libbpf.js';

const LIMIT = 400;
const lines: string[] = [];
let printed = 0; // lines ever received, so marks survive the ring dropping old ones
let registered = false;
let echo: ((line: string) => void) | undefined;

/** Collects libbpf's messages from now on; `onLine` (e.g. a debug logger) also gets each one. */
export function captureLibbpfLog(onLine?: (line: string) => void): void {
  echo = onLine;
  if (registered) return;
  registered = true;
  registerPrinter((_level, text) => {
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      lines.push(line);
      printed++;
      echo?.(line);
    }
    if (lines.length > LIMIT) lines.splice(0, lines.length - LIMIT);
  });
}

/** A position in the log; pass it to `libbpfLogSince`. */
export function markLibbpfLog(): number {
  return printed;
}

/** The lines libbpf printed after `mark` (those still in the ring). */
export function libbpfLogSince(mark: number): string[] {
  const newer = printed - mark;
  return newer <= 0 ? [] : lines.slice(-Math.min(newer, lines.length));
}
