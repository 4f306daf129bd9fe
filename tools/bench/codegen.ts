// Encode + decode of a 1000-record FlowBatch with protobuf-es (what kappa uses) and protobufjs
// (the other common codegen), in one run, alternating rounds so machine noise hits both alike.
// Run: npx tsx tools/bench/codegen.ts
import { cpus } from 'node:os';
import { release } from 'node:os';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { FlowBatchSchema, create, fromBinary, toBinary, IpProtocol, Vantage } from '@kappa/contracts';

const records = Array.from({ length: 1000 }, (_, i) => ({
  node: 'node-a',
  vantage: i % 2 ? Vantage.SRC : Vantage.DST,
  startNs: 1_700_000_000_000_000_000n + BigInt(i),
  endNs: 1_700_000_010_000_000_000n,
  protocol: IpProtocol.TCP,
  src: {
    ip: `10.1.${i >> 8}.${i & 255}`,
    port: 30000 + i,
    process: { pid: 1000 + i, name: 'nginx', cmdline: 'nginx: worker process', containerId: 'c'.repeat(64), cgroupId: 12345n },
    kube: { node: 'node-a', objectName: `web-${i}`, objectNamespace: 'shop', objectType: 'pod', workloadName: 'web', workloadNamespace: 'shop', workloadKind: 'Deployment', labels: { app: 'web' } },
  },
  dst: { ip: '10.2.0.7', port: 5432, kube: { objectName: 'db-0', objectNamespace: 'shop', objectType: 'pod', workloadName: 'db', workloadKind: 'StatefulSet' } },
  bytes: 123456n,
  packets: 321n,
  reverseBytes: 654321n,
  reversePackets: 123n,
  tcp: { srttUs: 250, minRttUs: 100, retransmits: 1, flags: 0x1b },
  observation: 'socket',
  id: `node-a/${i}`,
}));

const esBatch = create(FlowBatchSchema, { batchId: 'bench', producer: 'node-a', records });
const esBytes = toBinary(FlowBatchSchema, esBatch);

const root = protobuf.loadSync(join(import.meta.dirname, '../../libs/contracts/proto/kappa/flow/v1/flow.proto'));
const PbjsBatch = root.lookupType('kappa.flow.v1.FlowBatch');
const pbjsBatch = PbjsBatch.decode(esBytes); // same content, protobufjs' own message objects

function time(rounds: number, run: () => void): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) run();
  return Number(process.hrtime.bigint() - start) / 1e6 / rounds;
}

const rounds = 20;
const results = { 'protobuf-es': [] as number[], protobufjs: [] as number[] };
time(5, () => fromBinary(FlowBatchSchema, toBinary(FlowBatchSchema, esBatch)));
time(5, () => PbjsBatch.decode(PbjsBatch.encode(pbjsBatch).finish()));
for (let r = 0; r < 10; r++) {
  results['protobuf-es'].push(time(rounds, () => fromBinary(FlowBatchSchema, toBinary(FlowBatchSchema, esBatch))));
  results.protobufjs.push(time(rounds, () => PbjsBatch.decode(PbjsBatch.encode(pbjsBatch).finish())));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
console.log(`machine: ${cpus().length} cores, ${cpus()[0]?.model}, kernel ${release()}, node ${process.version}`);
console.log(`FlowBatch of 1000 records: ${esBytes.byteLength} bytes`);
console.log('| codegen | encode+decode ms (median of 10×20) | records/s |');
console.log('| --- | --- | --- |');
for (const [name, xs] of Object.entries(results)) {
  const ms = median(xs);
  console.log(`| ${name} | ${ms.toFixed(2)} | ${Math.round(1000 / (ms / 1000)).toLocaleString('en-US')} |`);
}
