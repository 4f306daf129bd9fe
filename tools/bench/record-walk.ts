// Per-record CPU of the record path's two walks, in process: FlowBatchView.parse (the validator,
// once per received batch) and a stage's cursor walk (record, both endpoints, their kube and
// process messages), on the stage-ab backlog's records. No bus, no I/O: the bytes only.
// Run: node_modules/.bin/node --import tsx tools/bench/record-walk.ts [--batches=200 --records=625 --rounds=7]
// (CPU ns per record, median of the rounds; run it in two checkouts alternately for an A/B.)
import { FlowBatchView, FlowBatchWriter, FlowRecordSchema, MessageCursor, toBinary } from '@kappa/contracts';
import { conversation } from './lib/joiner-workload.js';

const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const BATCHES = Number(args.batches ?? 200);
const RECORDS = Number(args.records ?? 625);
const ROUNDS = Number(args.rounds ?? 7);

const pool = Array.from({ length: 500 }, (_, i) => conversation(i, 0).map((r) => toBinary(FlowRecordSchema, r))).flat();
const writer = new FlowBatchWriter(1 << 20);
const batches: Uint8Array[] = [];
for (let m = 0; m < BATCHES; m++) {
  writer.reset();
  writer.open({ batchId: `process-enricher:capture:node-a:${m}:p${m % 16}`, producer: 'node-a', createdNs: 1_800_000_000_000_000_000n + BigInt(m) }, 1 << 30);
  for (let r = 0; r < RECORDS; r++) writer.recordBytes(pool[(m * RECORDS + r) % pool.length]!);
  batches.push(writer.parts()[0]!.bytes.slice());
}

const view = new FlowBatchView();
const record = FlowBatchView.recordCursor();
const shape = record.shape;
const endpointShape = shape.fields[shape.numbers.src!]!.message!;
const src = new MessageCursor(endpointShape);
const inner = new MessageCursor(endpointShape.fields[endpointShape.numbers.kube!]!.message!);
const SRC = shape.numbers.src!;
const DST = shape.numbers.dst!;
const KUBE = endpointShape.numbers.kube!;
let sink = 0;

function parseAll(): void {
  for (const b of batches) sink += view.parse(b).length;
}
function walkAll(): void {
  for (const b of batches) {
    view.parse(b);
    for (let i = 0; i < view.length; i++) {
      view.record(i, record);
      record.message(SRC, src);
      src.message(KUBE, inner);
      record.message(DST, src);
      src.message(KUBE, inner);
      sink += record.fieldCount;
    }
  }
}
function nsPerRecord(run: () => void): number {
  const t = process.cpuUsage();
  run();
  const d = process.cpuUsage(t);
  return ((d.user + d.system) * 1000) / (BATCHES * RECORDS);
}
parseAll();
walkAll();
const parse: number[] = [];
const walk: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  parse.push(nsPerRecord(parseAll));
  walk.push(nsPerRecord(walkAll));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
console.log(JSON.stringify({ parseNs: +median(parse).toFixed(1), parseAndWalkNs: +median(walk).toFixed(1), parse: parse.map((x) => +x.toFixed(1)), walk: walk.map((x) => +x.toFixed(1)), sink }));
