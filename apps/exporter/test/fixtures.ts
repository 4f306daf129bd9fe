// Known FlowRecords for the exporter tests: IPv4 and IPv6, TCP and UDP, with every field set.
import type { MessageInitShape } from '@bufbuild/protobuf';
import { FlowBatchView, FlowRecordSchema as RecordSchema, IpProtocol, Vantage, encodeFlowBatch, newFlowBatch, newFlowRecord, toBinary } from '@kappa/contracts';
import type { FlowBatch, FlowRecord, FlowRecordSchema } from '@kappa/contracts';
import type { FlowRing } from '../src/observer/ring.js';
import type { ExportBatch } from '../src/sinks/sink.js';

export const T0 = 1_764_000_000_000_000_000n;

/** Record i of a test set: even i are IPv4, odd i IPv6; bytes and packets derive from i. */
export function knownRecord(i: number, overrides: Partial<MessageInitShape<typeof FlowRecordSchema>> = {}): FlowRecord {
  const v6 = i % 2 === 1;
  return newFlowRecord(<MessageInitShape<typeof FlowRecordSchema>>{
    id: `rec-${i}`,
    node: `node-${i % 3}`,
    vantage: i % 4 < 2 ? Vantage.SRC : Vantage.DST,
    startNs: T0 + BigInt(i) * 1_000_000_000n,
    endNs: T0 + BigInt(i) * 1_000_000_000n + 10_000_000_000n,
    protocol: i % 5 === 0 ? IpProtocol.UDP : IpProtocol.TCP,
    src: {
      ip: v6 ? `2001:db8::${(i + 1).toString(16)}` : `10.0.${Math.floor(i / 250)}.${(i % 250) + 1}`,
      port: 30000 + i,
      peerDnsName: i % 3 === 1 ? `server-${i % 3}.backend.svc.cluster.local` : '',
      process: { pid: 1000 + i, name: `client-${i}`, cmdline: `/usr/bin/client --id ${i}` },
      kube: { objectName: `client-pod-${i % 7}`, objectNamespace: `ns-${i % 2}`, objectType: 'pod', workloadName: `client-${i % 7}`, workloadNamespace: `ns-${i % 2}`, workloadKind: 'Deployment' },
    },
    dst: {
      ip: v6 ? `fd00::${(i + 1).toString(16)}` : `192.168.${Math.floor(i / 250)}.${(i % 250) + 1}`,
      port: 8000 + (i % 100),
      process: { pid: 2000 + i, name: `server-${i % 3}` },
      kube: { objectName: `server-pod-${i % 3}`, objectNamespace: 'backend', objectType: 'pod', workloadName: `server-${i % 3}`, workloadNamespace: 'backend', workloadKind: 'StatefulSet' },
    },
    bytes: BigInt(1000 + i * 37),
    packets: BigInt(3 + i),
    reverseBytes: BigInt(500 + i * 11),
    reversePackets: BigInt(2 + i),
    tcp: { srttUs: 100 + i, retransmits: i % 3, flags: 0x1b },
    appLatency: { count: 2n, sumUs: 3000n, maxUs: 2000n },
    joined: i % 3 !== 0,
    clusterId: 7,
    observation: 'socket',
    // Every 4th flow lost packets; the UDP ones are DNS conversations, every 10th answered NXDOMAIN.
    ...(i % 4 === 3 ? { drops: { packets: BigInt(1 + (i % 5)), bytes: BigInt(60 * (1 + (i % 5))), reason: i % 8 === 3 ? 'NETFILTER_DROP' : 'NO_SOCKET', reasonPackets: BigInt(1 + (i % 5)) } } : {}),
    ...(i % 5 === 0
      ? { dns: { queryName: `server-${i % 3}.backend.svc.cluster.local`, queryType: 1, rcode: i % 10 === 0 ? 3 : 0, queries: 2n, responses: 2n, latencyCount: 2n, latencySumUs: 900n, latencyMaxUs: 600n, nxdomain: i % 10 === 0 ? 1n : 0n, failed: i % 10 === 0 ? 1n : 0n } }
      : {}),
    ...overrides,
  });
}

export function knownBatch(id: string, from: number, count: number): FlowBatch {
  return newFlowBatch({ batchId: id, producer: 'test', records: Array.from({ length: count }, (_, k) => knownRecord(from + k)) });
}

/** Records (or a batch) as the exporter's sinks receive them: encoded, behind a view. */
export function viewOf(records: FlowBatch | readonly FlowRecord[]): FlowBatchView {
  const batch = Array.isArray(records) ? newFlowBatch({ batchId: 'test', producer: 'test', records: [...records] }) : (records as FlowBatch);
  return new FlowBatchView().parse(encodeFlowBatch(batch));
}

export function exportBatch(records: FlowBatch | readonly FlowRecord[], redelivered = false): ExportBatch {
  return { view: viewOf(records), redelivered };
}

/** Puts one record into the Observer's ring, as the Observer sink does with a batch's records. */
export function pushRecord(ring: FlowRing, record: FlowRecord, receivedNs: bigint): void {
  const bytes = toBinary(RecordSchema, record);
  ring.push(bytes, 0, bytes.length, receivedNs);
}

type Write = (bytes: Uint8Array, offset: number, length: number) => Promise<{ bytesWritten: number }>;

/**
 * A disk filling up under a file handle: its next write takes half of what it is given, every
 * write after that fails with ENOSPC. Returns the function that frees the disk again.
 */
export function fillDiskPartWay(handle: { write: Write }): () => void {
  const write = handle.write.bind(handle);
  let calls = 0;
  handle.write = (bytes, offset, length) => {
    if (calls++ === 0) return write(bytes, offset, length >> 1);
    return Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
  };
  return () => {
    handle.write = write;
  };
}

/**
 * Record i of the flow store's crash tests (the test's truth and the child's input): about 2 KiB
 * each, so a segment's record bytes span several 64 KiB blocks of its .recz.
 */
export function storeCrashRecord(i: number): FlowRecord {
  return knownRecord(i, { node: `node-${i % 3}-${'n'.repeat(1500 + ((i * 37) % 900))}` });
}
