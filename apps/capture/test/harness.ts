// Runs the built kappa-capture (dist) as a real process for the tests, and sums its records.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { flowRecordFromJson } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';
import { childEnv, dyingWithParent } from '@kappa/testing';

export const CAPTURE_BIN = fileURLToPath(new URL('../bin/kappa-capture.js', import.meta.url));
export const TRAFFIC = fileURLToPath(new URL('./fixtures/traffic.mjs', import.meta.url));

/** Every capture a test started: killed when the test process exits, so a failed test leaves none. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface CaptureRun {
  readonly process: ChildProcess;
  /** The records printed so far (complete lines only), while capture runs. */
  printed(): FlowRecord[];
  /** Stops with SIGINT (last drain, detach) and returns the records and exit code. */
  stop(): Promise<{ records: FlowRecord[]; code: number | null; stderr: string }>;
}

/**
 * Starts kappa-capture --stdout and waits until attached. With `netns`, it runs in that network
 * namespace through nsenter (not `ip netns exec`, which remounts /sys and hides cgroup v2).
 */
export async function startCapture(
  args: readonly string[],
  netns?: string,
  printRecords = true,
  /** Runs node with these arguments some other way (e.g. inside other namespaces): [command, args]. */
  launch?: (node: string, argv: readonly string[]) => [string, string[]],
): Promise<CaptureRun> {
  const argv = [CAPTURE_BIN, ...(printRecords ? ['--stdout'] : []), '--metrics-port', '0', ...args];
  const [command, commandArgs] = launch
    ? launch(process.execPath, argv)
    : netns
      ? ['nsenter', [`--net=/run/netns/${netns}`, process.execPath, ...argv]]
      : [process.execPath, argv];
  const child = spawn(...dyingWithParent(command, commandArgs), { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
      if (stderr.includes('"msg":"capturing"')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`kappa-capture exited ${code} before attaching: ${stderr}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const parse = () => stdout.slice(0, stdout.lastIndexOf('\n') + 1).split('\n').filter(Boolean).map((line) => flowRecordFromJson(JSON.parse(line)));
  return {
    process: child,
    printed: parse,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
      const code = await exited;
      return { records: parse(), code, stderr };
    },
  };
}

export interface Totals {
  bytes: number;
  packets: number;
  reverseBytes: number;
  reversePackets: number;
  records: FlowRecord[];
}

export function conversationKey(r: FlowRecord): string {
  return `${r.vantage} ${r.observation} ${r.protocol} ${r.src?.ip} ${r.src?.port} ${r.dst?.ip} ${r.dst?.port}`;
}

/** Sums records over intervals per vantage, observation and conversation. */
export function totals(records: readonly FlowRecord[]): Map<string, Totals> {
  const sums = new Map<string, Totals>();
  for (const r of records) {
    const key = conversationKey(r);
    const t = sums.get(key) ?? { bytes: 0, packets: 0, reverseBytes: 0, reversePackets: 0, records: [] };
    t.bytes += Number(r.bytes);
    t.packets += Number(r.packets);
    t.reverseBytes += Number(r.reverseBytes);
    t.reversePackets += Number(r.reversePackets);
    t.records.push(r);
    sums.set(key, t);
  }
  return sums;
}

/** The output line a traffic generator prints when done. */
export interface TrafficReport {
  pid: number;
  comm: string;
  localPort?: number;
  ss?: string;
  sent?: number;
  receivers?: number[];
}

export function parseReport(output: string): TrafficReport {
  const line = output.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as TrafficReport;
}

/**
 * kappa programs still attached to the given cgroups or below them (`bpftool cgroup tree`), or as
 * tc filters in the given namespaces (`bpftool net`). Scoped to what a test created: the machine
 * is shared, and another kappa (a running `npm run up`) may legitimately be attached elsewhere.
 */
export function kappaAttachments(cgroupPaths: readonly string[], netnsList: readonly string[] = []): string[] {
  const found: string[] = [];
  let current = '';
  for (const line of execFileSync('bpftool', ['cgroup', 'tree'], { encoding: 'utf8' }).split('\n')) {
    if (line.startsWith('/')) current = line.trim();
    else if (line.includes('kappa_') && cgroupPaths.some((p) => current === p || current.startsWith(`${p}/`))) found.push(`${current}: ${line.trim()}`);
  }
  for (const netns of netnsList) {
    const tc = execFileSync('ip', ['netns', 'exec', netns, 'bpftool', 'net', 'show'], { encoding: 'utf8' });
    found.push(...tc.split('\n').filter((line) => line.includes('kappa_')).map((line) => `${netns}: ${line}`));
  }
  return found;
}
