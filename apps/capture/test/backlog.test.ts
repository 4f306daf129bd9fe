// The capture loop's bound on unsent batches: it limits what failed sends leave behind, and never
// drops part of a drain that is simply large (a full flow map is more than 100 batches).
import { describe, expect, it } from 'vitest';
import { IpProtocol, decodeFlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { CaptureLoop } from '../src/capture.js';
import { DnsTracker } from '../src/dns/tracker.js';
import type { FlowSource } from '../src/capture.js';
import type { EncodedBatch } from '../src/encode.js';
import { FLOW_KEY, FLOW_STATS, ROLE_SRC, writeFlowEntry } from '../src/layout.js';
import type { Conversation } from '../src/layout.js';

/** A kernel flow table holding `count` UDP conversations at every drain, read in chunks of 64. */
function flowTable(count: number): FlowSource {
  const conversation = (i: number): Conversation => ({
    localIp: Uint8Array.of(10, 0, 0, 1), remoteIp: Uint8Array.of(10, 200, i >> 8, i & 255), localPort: 40000, remotePort: 53,
    protocol: IpProtocol.UDP, ifindex: 0, netns: 1, firstKtimeNs: 1_000n, lastKtimeNs: 2_000n,
    txBytes: 44n, txPackets: 1n, rxBytes: 0n, rxPackets: 0n, cgroupId: 7n, ownerStartNs: 0n, pid: 42, comm: 'dig',
    srttUs: 0, minRttUs: 0, retransmits: 0, handshakeUs: 0, tcpFlags: 0, appCount: 0, appSumUs: 0n, appMaxUs: 0,
    role: ROLE_SRC, icmpType: 0, icmpCode: 0,
  });
  let end = 0n;
  const pass = () => {
    end += 1_000_000_000n;
    function* chunks() {
      const keys = Buffer.alloc(FLOW_KEY.size * 64);
      const values = Buffer.alloc(FLOW_STATS.size * 64);
      for (let first = 0; first < count; first += 64) {
        const n = Math.min(64, count - first);
        for (let i = 0; i < n; i++) writeFlowEntry(conversation(first + i), keys, i * FLOW_KEY.size, values, i * FLOW_STATS.size);
        yield { keys, values, count: n };
      }
    }
    return { startNs: end - 1_000_000_000n, endNs: end, epoch: 0, chunks: chunks() };
  };
  return {
    leftover: () => undefined,
    drainInterval: pass,
    overflow: () => ({ packets: 0n, bytes: 0n, roles: 0n, copiesSkipped: 0n, dnsLost: 0n, dropsUnattributed: 0n }),
    interfaceNames: new Map(),
  };
}

async function droppedRecords(registry: ReturnType<typeof createRegistry>): Promise<number> {
  const metric = await registry.getSingleMetric('kappa_capture_records_dropped_total')?.get();
  return metric?.values[0]?.value ?? 0;
}

const recordsIn = (batches: EncodedBatch[]) => batches.flatMap((b) => decodeFlowBatch(b.bytes).records);
/** A copy of what the sink was handed, as a sink that keeps batches (the bus, a file) would keep it. */
const kept = (batch: EncodedBatch): EncodedBatch => ({ ...batch, bytes: Uint8Array.from(batch.bytes) });

describe('unsent batches', () => {
  it('sends every record of a drain larger than the unsent bound', async () => {
    const received: EncodedBatch[] = [];
    const registry = createRegistry('kc-backlog');
    // Batches of at most 4 KiB: 500 records make far more than 2 of them.
    const loop = new CaptureLoop(flowTable(500), (batch) => (received.push(kept(batch)), Promise.resolve()), { node: 'n1', maxBatchBytes: 6144, maxUnsentBatches: 2 }, registry, createLogger('kc-backlog', 'silent'));
    await loop.drainOnce();
    expect(received.length).toBeGreaterThan(2);
    expect(recordsIn(received)).toHaveLength(500);
    expect(await droppedRecords(registry)).toBe(0);
  });

  it('keeps a batch whose send failed intact until it is sent, while later batches are written', async () => {
    // No spool: the failed batch waits in memory, and the drain goes on encoding batches.
    let calls = 0;
    const received: EncodedBatch[] = [];
    const loop = new CaptureLoop(
      flowTable(100),
      (batch) => (calls++ === 0 ? Promise.reject(new Error('NATS down')) : (received.push(kept(batch)), Promise.resolve())),
      { node: 'n1', maxBatchBytes: 6144 },
      createRegistry('kc-backlog'),
      createLogger('kc-backlog', 'silent'),
    );
    await expect(loop.drainOnce()).rejects.toThrow('NATS down');
    await loop.sendUnsent();
    await loop.drainOnce(); // and a drain that sends at once
    expect(received.length).toBeGreaterThan(4);
    const records = recordsIn(received);
    expect(records).toHaveLength(200);
    expect(new Set(records.map((r) => `${r.endNs} ${r.dst?.ip}`)).size).toBe(200);
    expect(new Set(records.map((r) => r.id)).size).toBe(200);
  });

  it('drops the oldest failed batches, counted, when the sink keeps failing', async () => {
    const logger = createLogger('kc-backlog', 'silent');
    // How many batches one drain of 100 records makes at 4 KiB each.
    const once: EncodedBatch[] = [];
    await new CaptureLoop(flowTable(100), (b) => (once.push(kept(b)), Promise.resolve()), { node: 'n1', maxBatchBytes: 6144 }, createRegistry('kc-backlog'), logger).drainOnce();
    const perDrain = once.length;
    expect(perDrain).toBeGreaterThan(2);

    let up = false;
    const received: EncodedBatch[] = [];
    const attempted: string[] = [];
    const registry = createRegistry('kc-backlog');
    const sink = (batch: EncodedBatch) => {
      if (!up) return Promise.reject(new Error('NATS down'));
      received.push(kept(batch));
      return Promise.resolve();
    };
    const limit = perDrain + 1;
    const loop = new CaptureLoop(flowTable(100), (b) => (attempted.push(b.batchId), sink(b)), { node: 'n1', maxBatchBytes: 6144, maxUnsentBatches: limit }, registry, logger);
    await expect(loop.drainOnce()).rejects.toThrow('NATS down'); // perDrain batches waiting
    expect(await droppedRecords(registry)).toBe(0);
    await expect(loop.drainOnce()).rejects.toThrow('NATS down'); // 2 × perDrain > limit: the oldest go
    const dropped = await droppedRecords(registry);
    expect(dropped).toBeGreaterThan(0);
    up = true;
    await loop.sendUnsent();
    // The newest `limit` batches arrive, in order; everything else is counted as dropped.
    expect(received).toHaveLength(limit);
    expect(recordsIn(received).length + dropped).toBe(200);
    // Batches that waited in memory were not written over by later ones: every record intact, once.
    const ids = recordsIn(received).map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(recordsIn(received).every((r) => r.node === 'n1' && r.src?.ip !== undefined)).toBe(true);
    const secondDrainIds = new Set(attempted.filter((id) => id.includes('/2000000000/')));
    expect(received.slice(-perDrain).every((b) => secondDrainIds.has(b.batchId))).toBe(true);
  });

  it('writes later batches into the memory of delivered ones, never of one the sink still holds', async () => {
    const buffers = new Set<ArrayBufferLike>();
    const received: EncodedBatch[] = [];
    let changedWhileHeld = 0;
    // A sink that holds its batch across an await, as the bus does until NATS acknowledges it.
    const sink = async (batch: EncodedBatch) => {
      const copy = kept(batch);
      buffers.add(batch.bytes.buffer);
      await new Promise((resolve) => setTimeout(resolve, 1));
      if (Buffer.compare(copy.bytes, batch.bytes) !== 0) changedWhileHeld++;
      received.push(copy);
    };
    const registry = createRegistry('kc-backlog');
    const loop = new CaptureLoop(flowTable(500), sink, { node: 'n1', maxBatchBytes: 6144 }, registry, createLogger('kc-backlog', 'silent'));
    await loop.drainOnce();
    await loop.drainOnce();
    expect(changedWhileHeld).toBe(0);
    const records = recordsIn(received);
    expect(records).toHaveLength(1000);
    expect(new Set(records.map((r) => r.id)).size).toBe(1000);
    expect(new Set(records.map((r) => `${r.endNs} ${r.dst?.ip}`)).size).toBe(1000);
    // Dozens of batches, written into a few buffers: a fresh one per batch costs its page faults.
    expect(received.length).toBeGreaterThan(20);
    expect(buffers.size).toBeLessThanOrEqual(3);
  });

  it('warms its encoder up without sending a batch or moving a metric', async () => {
    const registry = createRegistry('kc-backlog');
    const sent: EncodedBatch[] = [];
    const loop = new CaptureLoop(flowTable(10), (b) => (sent.push(kept(b)), Promise.resolve()), { node: 'n1', maxBatchBytes: 6144 }, registry, createLogger('kc-backlog', 'silent'));
    const captureMetrics = async () => (await registry.metrics()).split('\n').filter((line) => line.startsWith('kappa_capture_'));
    const before = await captureMetrics();
    expect(before.length).toBeGreaterThan(10);
    loop.warmUp(4096);
    expect(sent).toHaveLength(0);
    expect(await captureMetrics()).toEqual(before);
    expect(loop.recordsOut).toBe(0);
    // And a drain after it is whole and numbered from the start.
    await loop.drainOnce();
    expect(recordsIn(sent).map((r) => r.dst?.ip)).toEqual(Array.from({ length: 10 }, (_, i) => `10.200.0.${i}`));
  });

  // Without DNS in the warm-up, the first real record with DNS exchanges deoptimised the encoder
  // and V8 compiled it again (60 ms of CPU in the second drain at 10 000 records: BENCHMARKS.md).
  it('warms the DNS path up with records that carry exchanges and names, in a tracker of its own', () => {
    const tracker = new DnsTracker({ maxNames: 100, ktimeToUnixNs: () => 0n });
    const dns = { events: { consume: () => [] }, tracker, pollMs: 0 };
    const loop = new CaptureLoop(flowTable(10), () => Promise.resolve(), { node: 'n1', maxBatchBytes: 6144, dns }, createRegistry('kc-backlog'), createLogger('kc-backlog', 'silent'));
    const before = { ...tracker.counts };
    const warmed = loop.warmUp(4096);
    expect(warmed.dns).toMatchObject({ unmatched: 0 });
    expect(warmed.dns!.queries).toBeGreaterThan(0);
    expect(warmed.dns!.responses).toBeGreaterThan(0);
    expect(warmed.dns!.unparsable).toBeGreaterThan(0);
    expect(warmed.dns!.namesLearnt).toBeGreaterThan(0);
    // The real tracker saw none of it.
    expect(tracker.counts).toEqual(before);
    expect(tracker.names.size).toBe(0);
    loop.close();
  });
});
