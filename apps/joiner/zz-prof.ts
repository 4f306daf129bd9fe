import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';
import { FlowBatchView, FlowBatchWriter, IpProtocol, Vantage, encodeFlowBatch, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import { Delta, JoinStats, PartitionJoin } from './src/partition.js';
function conversation(i: number): any[] {
  const client = { ip: `10.1.${(i >> 8) & 255}.${i & 255}`, port: 30000 + (i % 30000) };
  const server = { ip: `10.2.${(i >> 10) & 255}.${(i >> 2) & 255}`, port: 8080 };
  const kube = (pod: string, node: string) => ({ node, objectName: pod, objectNamespace: 'shop', objectType: 'pod', workloadName: 'w', workloadKind: 'Deployment', labels: { app: 'a', tier: 'web' }, containerName: 'main' });
  const proc = (pid: number, name: string) => ({ pid, name, cmdline: `/usr/bin/${name} --serve`, containerId: `c0ffee${pid}` });
  const common = { startNs: 1n, endNs: 2n, protocol: IpProtocol.TCP, bytes: 12_345n, packets: 17n, observation: 'socket' };
  return [newFlowRecord({ ...common, node: 'node-a', vantage: Vantage.SRC, src: { ...client, process: proc(1000, 'client'), kube: kube(`client-${i % 500}`, 'node-a') }, dst: { ...server, kube: { objectName: 's', objectNamespace: 'shop', objectType: 'pod' } } }),
          newFlowRecord({ ...common, node: 'node-b', vantage: Vantage.DST, src: { ...client, kube: { objectName: 'c', objectNamespace: 'shop', objectType: 'pod' } }, dst: { ...server, process: proc(5000, 'server'), kube: kube(`server-${i % 300}`, 'node-b') } })];
}
const all = Array.from({ length: 20000 }, (_, i) => conversation(i)).flat();
for (let i = all.length - 1; i > 0; i--) { const j = Math.floor(Math.random() * (i + 1)); [all[i], all[j]] = [all[j], all[i]]; }
const batches: Uint8Array[] = [];
for (let i = 0; i < all.length; i += 1000) batches.push(encodeFlowBatch(newFlowBatch({ batchId: `b${i}`, records: all.slice(i, i + 1000) })));
const view = new FlowBatchView(); const w = new FlowBatchWriter(4 << 20); const stats = new JoinStats(); const delta = new Delta();
const run = () => {
  const j = new PartitionJoin({ joinWaitMs: 20_000, metadataTtlMs: 300_000, endRefreshMs: 75_000, joinExternal: false });
  const t = process.cpuUsage();
  for (const [i, b] of batches.entries()) { view.parse(b); w.reset(); w.open({ batchId: 'x', producer: 'j', createdNs: 1n }, 1 << 24); delta.clear(); stats.clear(); j.apply(view, Buffer.from(b.buffer, b.byteOffset, b.byteLength), 1000 + i, i + 1, w, delta, stats); w.parts(); }
  const u = process.cpuUsage(t); console.log('cpu us/record', ((u.user + u.system) / all.length).toFixed(2));
};
run(); run();
const s = new Session(); s.connect(); await s.post('Profiler.enable'); await s.post('Profiler.setSamplingInterval', { interval: 100 }); await s.post('Profiler.start');
for (let i = 0; i < 6; i++) run();
const { profile } = await s.post('Profiler.stop');
writeFileSync('/tmp/rj/join.cpuprofile', JSON.stringify(profile));
