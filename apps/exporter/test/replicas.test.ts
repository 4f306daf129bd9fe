// Two exporter replicas as real processes on a real nats-server, sharing the durable of
// kappa.flow.joined.> (each exports its share, the JSON Lines files say which), with the Observer
// over mutual TLS and a token as `npm run up` runs it. Each finds the other from its heartbeats
// (the advertised Observer) and `kappa observe`, the real CLI, asked of either replica, lists every
// record once. With one replica SIGKILLed, the other still answers with its own share and the CLI
// warns that the dead replica's flows are missing.
import { spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { newFlowBatch } from '@kappa/contracts';
import type { StageStatus } from '@kappa/contracts';
import { freePort, makeTlsMaterial } from '@kappa/testing';
import type { TestServer, TlsMaterial } from '@kappa/testing';
import { buildAndStartBus, startExporterProcess, until } from './exporter-process.js';
import type { ExporterProcess } from './exporter-process.js';
import { knownRecord } from './fixtures.js';

const cli = join(import.meta.dirname, '../../cli/bin/kappa.js');
const RECORDS = 400;
const BATCH = 10;
let nats: TestServer;
let bus: Bus;
let tls: TlsMaterial;
let dir: string;
let tokenFile: string;
const children: ChildProcess[] = [];

interface Replica extends ExporterProcess {
  instance: string;
  observerPort: number;
  jsonl: string;
}

/** One replica with its Observer on (over mutual TLS and a token, as `npm run up` runs it). */
async function startReplica(instance: string): Promise<Replica> {
  const observerPort = await freePort();
  const jsonl = join(dir, instance, 'flows.jsonl');
  const exporter = await startExporterProcess(
    nats.url,
    [
      `--instance=${instance}`,
      `--jsonl=${jsonl}`,
      '--prometheus=false',
      '--observer=true',
      '--observer-host=127.0.0.1',
      `--observer-port=${observerPort}`,
      `--observer-tls-cert=${tls.serverCertFile}`,
      `--observer-tls-key=${tls.serverKeyFile}`,
      `--observer-tls-client-ca=${tls.caFile}`,
      `--observer-token-file=${tokenFile}`,
    ],
    children,
  );
  return { ...exporter, instance, observerPort, jsonl };
}

/** `kappa observe` of one replica: the record ids it printed, its stderr and exit code. */
function observe(replica: Replica): { ids: string[]; stderr: string; code: number } {
  const args = [cli, 'observe', `--server=127.0.0.1:${replica.observerPort}`, `--tls-ca=${tls.caFile}`, `--tls-cert=${tls.clientCertFile}`, `--tls-key=${tls.clientKeyFile}`, `--token-file=${tokenFile}`, '-o', 'json'];
  const run = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 60_000 });
  return { ids: ids(run.stdout ?? ''), stderr: run.stderr ?? '', code: run.status ?? -1 };
}

function ids(jsonLines: string): string[] {
  return jsonLines
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as { id: string }).id);
}

function exported(replica: Replica): string[] {
  try {
    return ids(readFileSync(replica.jsonl, 'utf8'));
  } catch {
    return [];
  }
}

beforeAll(async () => {
  ({ nats, bus } = await buildAndStartBus());
  tls = makeTlsMaterial();
  dir = mkdtempSync(join(tmpdir(), 'kappa-exporter-replicas-'));
  tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, 'replicas-token-3f9a\n');
});
afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  await bus?.close();
  await nats?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
  tls?.remove();
});

describe('exporter replicas: either one gives the whole picture', () => {
  it('kappa observe on either replica lists every record once; with one killed, the other warns and lists its own', async () => {
    const replicas = [await startReplica('exporter-r0'), await startReplica('exporter-r1')];
    // Each hears the other's heartbeat, with its Observer address, before the records go out.
    const heard = new Set<string>();
    const unsubscribe = bus.subscribeStatus((s: StageStatus) => {
      if (s.stage === 'exporter' && s.features['observer']) heard.add(`${s.instance}=${s.features['observer']}`);
    });
    await until(() => heard.size >= 2, 20_000, 'both replicas advertise their Observer');
    unsubscribe();
    expect([...heard].sort()).toEqual(replicas.map((r) => `${r.instance}=127.0.0.1:${r.observerPort}`));

    const now = BigInt(Date.now()) * 1_000_000n;
    const all: string[] = [];
    for (let b = 0; b < RECORDS / BATCH; b++) {
      const records = Array.from({ length: BATCH }, (_, k) => {
        const i = b * BATCH + k;
        all.push(`rec-${i}`);
        return knownRecord(i, { startNs: now - 60_000_000_000n, endNs: now - 60_000_000_000n + BigInt(i) * 1_000_000n });
      });
      await bus.publishBatch(subjects.joined(b % 4), newFlowBatch({ batchId: `replicas-${b}`, producer: 'test', records }));
    }
    await until(() => exported(replicas[0]!).length + exported(replicas[1]!).length >= RECORDS, 60_000, 'every record exported');
    const shares = replicas.map(exported);
    // The work was split: each replica exported a share, together every record once.
    expect(shares[0]!.length, 'replica 0 took part').toBeGreaterThan(0);
    expect(shares[1]!.length, 'replica 1 took part').toBeGreaterThan(0);
    expect([...shares[0]!, ...shares[1]!].sort()).toEqual([...all].sort());

    for (const replica of replicas) {
      const answer = observe(replica);
      expect(answer.code, answer.stderr).toBe(0);
      expect(answer.stderr).toBe('');
      expect(answer.ids, `kappa observe --server ${replica.instance}`).toEqual(all);
    }

    // Replica 1 dies; its heartbeats are still fresh, so replica 0 asks it and cannot reach it.
    replicas[1]!.child.kill('SIGKILL');
    await new Promise<void>((resolve) => (replicas[1]!.child.exitCode !== null ? resolve() : replicas[1]!.child.once('exit', () => resolve())));
    const partial = observe(replicas[0]!);
    expect(partial.code).toBe(0);
    expect(partial.stderr).toMatch(/^kappa observe: warning: the answer lacks the flows of exporter replicas that did not answer: exporter-r1 \(127\.0\.0\.1:\d+\): /);
    expect(partial.ids).toEqual(all.filter((id) => shares[0]!.includes(id)));
  });
});
