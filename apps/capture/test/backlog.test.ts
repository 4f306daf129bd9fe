// The capture loop's bound on unsent batches: it limits what failed sends leave behind, and never
// drops part of a drain that is simply large (a full flow map is more than 100 batches).
import { describe, expect, it } from 'vitest';
import { IpProtocol } from '@kappa/contracts';
import type { FlowBatch } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { CaptureLoop } from '../src/capture.js';
import type { FlowSource } from '../src/capture.js';
import { ROLE_SRC } from '../src/layout.js';
import type { Conversation } from '../src/layout.js';

/** A kernel flow table holding `count` UDP conversations at every drain. */
function flowTable(count: number): FlowSource {
  const conversation = (i: number): Conversation => ({
    localIp: Uint8Array.of(10, 0, 0, 1), remoteIp: Uint8Array.of(10, 200, i >> 8, i & 255), localPort: 40000, remotePort: 53,
    protocol: IpProtocol.UDP, ifindex: 0, firstKtimeNs: 1_000n, lastKtimeNs: 2_000n,
    txBytes: 44n, txPackets: 1n, rxBytes: 0n, rxPackets: 0n, cgroupId: 7n, pid: 42, comm: 'dig',
    srttUs: 0, minRttUs: 0, retransmits: 0, handshakeUs: 0, tcpFlags: 0, appCount: 0, appSumUs: 0n, appMaxUs: 0,
    role: ROLE_SRC, icmpType: 0, icmpCode: 0,
  });
  return {
    drain(onConversation) {
      for (let i = 0; i < count; i++) onConversation(conversation(i));
      return count;
    },
    overflow: () => ({ packets: 0n, bytes: 0n, roles: 0n }),
    interfaceNames: new Map(),
  };
}

async function droppedRecords(registry: ReturnType<typeof createRegistry>): Promise<number> {
  const metric = await registry.getSingleMetric('kappa_capture_records_dropped_total')?.get();
  return metric?.values[0]?.value ?? 0;
}

describe('unsent batches', () => {
  it('sends every record of a drain larger than the unsent bound', async () => {
    const received: FlowBatch[] = [];
    const registry = createRegistry('kc-backlog');
    const loop = new CaptureLoop(flowTable(500), (batch) => (received.push(batch), Promise.resolve()), { node: 'n1', batchSize: 2, maxUnsentBatches: 100 }, registry, createLogger('kc-backlog', 'silent'));
    await loop.drainOnce();
    expect(received.flatMap((b) => b.records)).toHaveLength(500);
    expect(await droppedRecords(registry)).toBe(0);
  });

  it('drops the oldest failed batches, counted, when the sink keeps failing', async () => {
    let up = false;
    const received: FlowBatch[] = [];
    const registry = createRegistry('kc-backlog');
    const sink = (batch: FlowBatch) => (up ? (received.push(batch), Promise.resolve()) : Promise.reject(new Error('NATS down')));
    const loop = new CaptureLoop(flowTable(10), sink, { node: 'n1', batchSize: 2, maxUnsentBatches: 8 }, registry, createLogger('kc-backlog', 'silent'));
    await expect(loop.drainOnce()).rejects.toThrow('NATS down'); // 5 batches waiting
    await expect(loop.drainOnce()).rejects.toThrow('NATS down'); // 10 > 8: the 2 oldest go
    expect(await droppedRecords(registry)).toBe(4);
    up = true;
    await loop.sendUnsent();
    expect(received.flatMap((b) => b.records)).toHaveLength(16);
  });
});
