// Shared by the benchmark scenarios: what machine a figure came from, and writing a scenario's
// latest section into BENCHMARKS.md between its markers, so a rerun replaces only its own table.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const benchmarksFile = path.join(repoRoot, 'BENCHMARKS.md');

/**
 * The boot's mitigations that change what a kernel entry costs: this machine has booted with
 * different ones between sessions (PTI on a CPU without PCID flushes the TLB at every kernel
 * entry; SRSO's "Safe RET" thunk makes every call dearer), and bpf_stats moved 2–4× with them.
 */
function mitigations() {
  const read = (name) => {
    try {
      return readFileSync(`/sys/devices/system/cpu/vulnerabilities/${name}`, 'utf8').trim();
    } catch {
      return 'unknown';
    }
  };
  const pcid = /^flags\s*:.*\bpcid\b/m.test(readFileSync('/proc/cpuinfo', 'utf8')) ? 'pcid' : 'no pcid';
  return `meltdown "${read('meltdown')}", spec_rstack_overflow "${read('spec_rstack_overflow')}", ${pcid}`;
}

/** One line naming the machine and the moment, for under a table. */
export function machineLine() {
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown CPU';
  const [load1] = os.loadavg();
  return (
    `Measured ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')} on ${os.availableParallelism()} cores ` +
    `(${cpu}; ${mitigations()}), kernel ${os.release()}, Node ${process.versions.node}, load average ${load1.toFixed(1)} at the end.`
  );
}

/** Markdown table from a header row and rows of cells. */
export function table(header, rows) {
  const line = (cells) => `| ${cells.map(String).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/**
 * Replaces the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` in
 * BENCHMARKS.md with `markdown`, or appends a new marked section at the end of the file.
 * Text outside the markers (the hand-written paragraph on what limits a figure) is kept.
 */
export function writeSection(name, markdown) {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const body = `${start}\n${markdown.trim()}\n${end}`;
  const text = existsSync(benchmarksFile) ? readFileSync(benchmarksFile, 'utf8') : '# kappa benchmarks\n';
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  const next =
    from >= 0 && to > from
      ? text.slice(0, from) + body + text.slice(to + end.length)
      : `${text.trimEnd()}\n\n${body}\n`;
  writeFileSync(benchmarksFile, next);
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / clockTicksPerSecond();
}

/** Resident set size of a process in bytes, from /proc/<pid>/status. */
export function rssBytes(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return match ? Number(match[1]) * 1024 : 0;
}

let ticks;
function clockTicksPerSecond() {
  ticks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  return ticks;
}
