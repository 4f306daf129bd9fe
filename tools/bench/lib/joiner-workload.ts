// The joiner benchmarks' traffic: both ends of many conversations between pods on two nodes,
// shuffled, as one partition's input batches (bytes). Shared by joiner.ts and joiner-ab.ts so
// that both measure the same records.
import { IpProtocol, Vantage, encodeFlowBatch, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { FlowRecord } from '@kappa/contracts';

/** The join settings the benchmarks run with. */
export const JOIN_SETTINGS = { joinWaitMs: 20_000, metadataTtlMs: 300_000, endRefreshMs: 75_000, joinExternal: false };

/** Both ends of conversation i between two pods on two nodes, as the taggers send them. */
export function conversation(i: number, interval: number): [FlowRecord, FlowRecord] {
  const client = { ip: `10.1.${(i >> 8) & 255}.${i & 255}`, port: 30000 + (i % 30000) };
  const server = { ip: `10.2.${(i >> 10) & 255}.${(i >> 2) & 255}`, port: 8080 };
  const kube = (pod: string, node: string) => ({ node, objectName: pod, objectNamespace: 'shop', objectType: 'pod', workloadName: pod.replace(/-\d+$/, ''), workloadKind: 'Deployment', labels: { app: pod.replace(/-\d+$/, ''), tier: 'web' }, containerName: 'main' });
  const proc = (pid: number, name: string) => ({ pid, name, cmdline: `/usr/bin/${name} --serve`, containerId: `c0ffee${pid}`, containerRuntime: 'containerd', cgroupId: BigInt(pid) * 7n });
  const start = 1_800_000_000_000_000_000n + BigInt(interval) * 10_000_000_000n;
  const common = { startNs: start, endNs: start + 10_000_000_000n, protocol: IpProtocol.TCP, bytes: 12_345n, packets: 17n, reverseBytes: 54_321n, reversePackets: 15n, observation: 'socket', tcp: { srttUs: 180, minRttUs: 120, flags: 0x1b } };
  const c = newFlowRecord({
    ...common,
    node: 'node-a',
    vantage: Vantage.SRC,
    src: { ...client, process: proc(1000 + (i % 5000), 'client'), kube: kube(`client-${i % 500}`, 'node-a') },
    dst: { ...server, kube: { objectName: `server-${i % 300}`, objectNamespace: 'shop', objectType: 'pod' } },
  });
  const s = newFlowRecord({
    ...common,
    node: 'node-b',
    vantage: Vantage.DST,
    src: { ...client, kube: { objectName: `client-${i % 500}`, objectNamespace: 'shop', objectType: 'pod' } },
    dst: { ...server, process: proc(5000 + (i % 3000), 'server'), kube: kube(`server-${i % 300}`, 'node-b') },
  });
  return [c, s];
}

export function shuffle<T>(items: T[], seed = 7): T[] {
  let s = seed;
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = Math.floor((s / 2 ** 31) * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Batches of one partition's traffic: both ends of every conversation, shuffled within a window. */
export function workload(conversations: number, batch: number, interval = 0): { batches: Uint8Array[]; times: number[]; records: number; bytes: number } {
  const all = shuffle(Array.from({ length: conversations }, (_, i) => conversation(i, interval)).flat(), 7 + interval);
  const batches: Uint8Array[] = [];
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < all.length; i += batch) {
    const b = encodeFlowBatch(newFlowBatch({ batchId: `tagger:in-${i}`, producer: 'bench', createdNs: 1n, records: all.slice(i, i + batch) }));
    batches.push(b);
    times.push(1_000_000 + i); // event time: a millisecond per record, well inside the join wait
    bytes += b.byteLength;
  }
  return { batches, times, records: all.length, bytes };
}
