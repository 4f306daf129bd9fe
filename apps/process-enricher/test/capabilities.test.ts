// Least privilege of the enricher, proven: as uid 0 with exactly CAP_SYS_PTRACE (every other
// capability gone from the bounding set, no_new_privs) it resolves the exe of another user's
// process and of a root process holding more capabilities; with no capability at all it says at
// start that CAP_SYS_PTRACE is missing and those records keep name and command line, not exe.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectBus, subjects } from '@kappa/bus';
import type { BatchConsumer, Bus } from '@kappa/bus';
import type { FlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { startNatsServer } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { capturedBatch, capturedRecord, waitFor } from './helpers.js';

const appRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
const workspaceRoot = join(appRoot, '../..');
const main = join(appRoot, 'src/main.ts');
const root = process.getuid?.() === 0;
if (!root && process.env['CI'] === 'true') throw new Error('the enricher capability test needs root; CI must run it privileged');

/** argv running node as uid 0 with exactly `keep` (names like cap_sys_ptrace). */
function withExactly(keep: readonly string[], args: readonly string[]): [string, string[]] {
  const last = Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'));
  const kept = new Set<number>(keep.map((name) => (name === 'cap_sys_ptrace' ? 19 : -1)));
  const drop = Array.from({ length: last + 1 }, (_, i) => i).filter((i) => !kept.has(i));
  const iab = keep.map((name) => `^${name}`).join(',');
  return ['capsh', [`--drop=${drop.join(',')}`, ...(iab ? [`--iab=${iab}`] : []), '--no-new-privs', `--shell=${process.execPath}`, '--', ...args]];
}

describe.skipIf(!root)('process-enricher capabilities', () => {
  let nats: TestServer;
  let publisher: Bus;
  const children = new Set<ChildProcess>();
  const targets: { otherUser: number; privilegedRoot: number } = { otherUser: 0, privilegedRoot: 0 };

  function keep(child: ChildProcess): ChildProcess {
    children.add(child);
    return child;
  }

  beforeAll(async () => {
    nats = await startNatsServer();
    publisher = await connectBus({ servers: [nats.url], name: 'ke-caps-publisher', logger: createLogger('ke-caps', 'silent'), registry: createRegistry('ke-caps') });
    await publisher.ensureStreams();
    // setpriv execs sleep: the pid is sleep's, owned by uid 1000.
    targets.otherUser = keep(spawn('setpriv', ['--reuid', '1000', '--regid', '1000', '--clear-groups', 'sleep', '300'], { stdio: 'ignore' })).pid ?? 0;
    targets.privilegedRoot = keep(spawn('sleep', ['300'], { stdio: 'ignore' })).pid ?? 0;
    await waitFor('targets exec', () => (['otherUser', 'privilegedRoot'] as const).every((t) => readFileSync(`/proc/${targets[t]}/comm`, 'utf8').trim() === 'sleep') || undefined);
  }, 60_000);

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL');
    await publisher?.close();
    await nats?.stop();
  });

  /** Runs the enricher with exactly `capabilities`, enriches one record per target, stops it. */
  async function enrichWith(capabilities: readonly string[], node: string): Promise<{ batch: FlowBatch; output: string }> {
    const [command, args] = withExactly(capabilities, ['--import', 'tsx', main, `--nats-url=${nats.url}`, `--node=${node}`, '--metrics-port=0', '--partitions=1', '--cri-socket=none']);
    const service = keep(spawn(command, args, { cwd: workspaceRoot, stdio: ['ignore', 'pipe', 'pipe'] }));
    let output = '';
    service.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    service.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    const reader = await connectBus({ servers: [nats.url], name: `${node}-reader`, logger: createLogger('ke-caps', 'silent'), registry: createRegistry('ke-caps-r') });
    const batches: FlowBatch[] = [];
    const consumer: BatchConsumer = await reader.consumeBatches({ stage: `${node}-reader`, subject: subjects.enrichedOfNode(node), handler: async (b) => void batches.push(b) });
    try {
      await waitFor('the enricher to be ready', () => (output.includes('"msg":"ready"') ? true : undefined), 30_000);
      const status = readFileSync(`/proc/${service.pid}/status`, 'utf8');
      expect(/^CapEff:\s*(\w+)/m.exec(status)?.[1], 'CapEff').toBe(capabilities.includes('cap_sys_ptrace') ? '0000000000080000' : '0000000000000000');
      expect(/^CapBnd:\s*(\w+)/m.exec(status)?.[1], 'CapBnd').toBe(capabilities.includes('cap_sys_ptrace') ? '0000000000080000' : '0000000000000000');
      const records = [capturedRecord(node, { pid: targets.otherUser, comm: 'sleep', cgroupId: 0n }, 41001), capturedRecord(node, { pid: targets.privilegedRoot, comm: 'sleep', cgroupId: 0n }, 41002)];
      const input = capturedBatch(node, records);
      await publisher.publishBatch(subjects.captured(node), input);
      const batch = await waitFor('the enriched batch', () => batches.find((b) => b.batchId === `process-enricher:${input.batchId}:p0`), 20_000);
      return { batch, output };
    } finally {
      await consumer.stop();
      await reader.close();
      service.kill('SIGTERM');
    }
  }

  it('with exactly CAP_SYS_PTRACE it resolves exe and command line of another user’s process and of a more privileged root process', async () => {
    const { batch, output } = await enrichWith(['cap_sys_ptrace'], `ke-caps-ptrace-${process.pid}`);
    for (const record of batch.records) {
      expect(record.src?.process?.cmdline, `pid ${record.src?.process?.pid}`).toBe('sleep 300');
      expect(record.src?.process?.exe, `pid ${record.src?.process?.pid}`).toBe('/usr/bin/sleep');
    }
    expect(output).not.toContain('CAP_SYS_PTRACE');
  });

  it('without CAP_SYS_PTRACE it warns naming it at start, and those records keep the command line but no exe', async () => {
    const { batch, output } = await enrichWith([], `ke-caps-none-${process.pid}`);
    const warnings = output.split('\n').filter((line) => line.includes('"missingCapability":"CAP_SYS_PTRACE"'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('process-enricher needs CAP_SYS_PTRACE');
    for (const record of batch.records) {
      expect(record.src?.process?.cmdline, `pid ${record.src?.process?.pid}`).toBe('sleep 300');
      expect(record.src?.process?.exe, `pid ${record.src?.process?.pid}`).toBe('');
    }
  });
});
