// Two exporter replicas on one host, sharing the durable consumer of kappa.flow.joined.> (each
// takes a share of the batches), export IPFIX over UDP to one nfcapd from one address. nfcapd
// keys an exporter by (source address, observation domain), not by source port, so the replicas'
// sequence numbers must not share a domain there: --ipfix-domain-offset gives each its own.
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { subjects } from '@kappa/bus';
import type { Bus } from '@kappa/bus';
import { newFlowBatch } from '@kappa/contracts';
import type { FlowBatch, FlowRecord } from '@kappa/contracts';
import { freePort } from '@kappa/testing';
import type { TestServer } from '@kappa/testing';
import { expectDecoded, nfcapdSequenceFailures, nfdumpFlows, removeDir, startCapture, startNfcapd, tsharkMessages } from './collectors.js';
import type { Capture, Nfcapd, TsharkMessage } from './collectors.js';
import { buildAndStartBus, metricSum, startExporterProcess, until } from './exporter-process.js';
import { knownRecord } from './fixtures.js';

let nats: TestServer;
let bus: Bus;
const children: ChildProcess[] = [];
let collector: Nfcapd | undefined;
let capture: Capture | undefined;

beforeAll(async () => {
  ({ nats, bus } = await buildAndStartBus());
});
afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  await capture?.stop();
  capture = undefined;
  if (collector) {
    await collector.stop();
    removeDir(collector.dir);
    collector = undefined;
  }
});
afterAll(async () => {
  await bus?.close();
  await nats?.stop();
});

/**
 * Batch b of 50 known records without DNS, drops or a peer name: flow data records only. nfcapd
 * counts only the data records of templates it decodes, not options data records (the DNS /
 * drops template), so a message that carries some makes it count a sequence failure even from
 * one exporter (nfdump src/netflow/ipfix.c: PacketSequence grows in Process_ipfix_data only).
 */
function flowOnlyBatch(id: string, b: number): FlowBatch {
  const indices = Array.from({ length: 200 }, (_, k) => b * 200 + k).filter((i) => i % 3 !== 1 && i % 4 !== 3 && i % 5 !== 0);
  return newFlowBatch({ batchId: id, producer: 'test', records: indices.slice(0, 50).map((i) => knownRecord(i)) });
}

interface ReplicaRun {
  records: FlowRecord[];
  /** IPFIX records each replica sent (its kappa_exporter_ipfix_records_total). */
  perReplica: number[];
  messages: TsharkMessage[];
}

/**
 * One replica per domain offset, fed `sent` (cluster 7), until together they sent every record;
 * then they stop, and the capture and nfcapd close.
 */
async function runReplicas(offsets: number[], sent: FlowBatch[], prefix: string): Promise<ReplicaRun> {
  const port = await freePort();
  collector = await startNfcapd(port);
  capture = await startCapture(`udp and dst port ${port}`);
  // Only IPFIX: no file, store, Prometheus or Observer; one batch at a time so both take a share.
  const replicas = await Promise.all(
    offsets.map((offset, i) =>
      startExporterProcess(
        nats.url,
        ['--jsonl=off', '--store=false', '--prometheus=false', '--max-in-flight=1', `--ipfix=udp://127.0.0.1:${port}`, `--ipfix-domain-offset=${offset}`, `--instance=${prefix}-${i}`],
        children,
      ),
    ),
  );
  for (const [b, batch] of sent.entries()) await bus.publishBatch(subjects.joined(b % 2), batch);
  const records = sent.flatMap((b) => b.records);
  const ipfixRecords = async () => Promise.all(replicas.map(async (r) => metricSum(await r.metrics(), 'kappa_exporter_ipfix_records_total')));
  await until(async () => (await ipfixRecords()).reduce((a, b) => a + b, 0) === records.length, 60_000, `${records.length} records sent over IPFIX`);
  const perReplica = await ipfixRecords();
  for (const replica of replicas) expect(await replica.stop()).toBe(0);
  await capture.stop();
  const messages = await tsharkMessages(capture.file, `udp.port==${port}`);
  removeDir(join(capture.file, '..'));
  capture = undefined;
  await collector.stop();
  return { records, perReplica, messages };
}

/**
 * Checks from the capture alone that every message's sequence number counts the data records its
 * sender sent before in that domain on that socket (RFC 7011 §10.3.2); returns the domains each
 * source port used.
 */
function expectContiguousPerSession(messages: TsharkMessage[]): Map<number, Set<number>> {
  const next = new Map<string, number>();
  const domainsByPort = new Map<number, Set<number>>();
  for (const m of messages) {
    const session = `${m.srcPort}/${m.domain}`;
    expect(m.sequence, `sequence of a message from port ${m.srcPort}, domain ${m.domain}`).toBe(next.get(session) ?? 0);
    next.set(session, (m.sequence + m.records) % 2 ** 32);
    domainsByPort.set(m.srcPort, (domainsByPort.get(m.srcPort) ?? new Set()).add(m.domain));
  }
  return domainsByPort;
}

describe('exporter replicas sending IPFIX to one collector from one address', () => {
  it('exports every record once across two replicas with their own --ipfix-domain-offset, and nfcapd counts no sequence failure', async () => {
    const run = await runReplicas([0, 1], Array.from({ length: 24 }, (_, b) => flowOnlyBatch(`ipx-own-${b}`, b)), 'ipx-own');
    // Both replicas took a share (else the test would not test two senders).
    expect(run.perReplica.every((n) => n > 0), `records per replica: ${run.perReplica.join(', ')}`).toBe(true);

    // What the collector's user sees: every record once, decoded, and no sequence failure.
    expectDecoded(await nfdumpFlows(collector!.dir), run.records);
    expect(await nfcapdSequenceFailures(collector!.dir)).toBe(0);

    // The wire, read by tshark: two source ports, cluster 7 as domain 7 from one and 8 from the
    // other, each numbered contiguously; templates went first (every data message decoded).
    const domainsByPort = expectContiguousPerSession(run.messages);
    expect([...domainsByPort.values()].map((d) => [...d]).sort()).toEqual([[7], [8]]);
    expect(run.messages.filter((m) => m.records > 0).length).toBeGreaterThan(0);
  });

  it('with the default offset both replicas number domain 7 and nfcapd, which keys by address and domain, counts sequence failures', async () => {
    const run = await runReplicas([0, 0], Array.from({ length: 24 }, (_, b) => flowOnlyBatch(`ipx-shared-${b}`, b)), 'ipx-shared');
    expect(run.perReplica.every((n) => n > 0), `records per replica: ${run.perReplica.join(', ')}`).toBe(true);
    // Right per RFC 7011 (per domain per transport session: each socket is contiguous) ...
    const domainsByPort = expectContiguousPerSession(run.messages);
    expect([...domainsByPort.values()].map((d) => [...d])).toEqual([[7], [7]]);
    // ... but nfcapd sees one exporter and two interleaved counters.
    expect(await nfcapdSequenceFailures(collector!.dir)).toBeGreaterThan(0);
  });
});
