import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isFieldSet } from '@bufbuild/protobuf';
import type { DescMessage } from '@bufbuild/protobuf';
import {
  ContractDecodeError,
  FlowRecordSchema,
  IpProtocol,
  Vantage,
  create,
  decodeFlowBatch,
  encodeFlowBatch,
  equals,
  flowRecordFromJson,
  flowRecordToJson,
  newFlowBatch,
  newFlowRecord,
} from '../src/index.js';
import type { FlowRecord } from '../src/index.js';

const fullEndpoint = (ip: string, port: number, pid: number) => ({
  ip,
  port,
  process: {
    pid,
    name: `proc-${pid}`,
    cmdline: `/usr/bin/proc-${pid} --password=***`,
    exe: `/usr/bin/proc-${pid}`,
    containerId: 'a'.repeat(64),
    containerName: 'web',
    containerRuntime: 'containerd',
    cgroupId: 0xffff_ffff_1234n,
    cgroupPath: '/kubepods.slice/x.scope',
    uid: 1000,
    startTimeTicks: 123_456_789n,
  },
  kube: {
    node: 'node-a',
    objectName: 'web-7f9c-abcde',
    objectNamespace: 'shop',
    objectType: 'pod',
    workloadName: 'web',
    workloadNamespace: 'shop',
    workloadKind: 'Deployment',
    labels: { app: 'web', tier: 'front' },
    containerName: 'web',
    serviceName: 'web-svc',
    serviceNamespace: 'shop',
    objectUid: 'c1a0e0c2-0000-4000-8000-000000000001',
  },
  backendIp: '10.0.0.9',
  backendPort: 8080,
  netns: 4026532201,
  peerDnsName: 'web.shop.svc.cluster.local',
});

function fullRecord(): FlowRecord {
  return newFlowRecord({
    node: 'node-a',
    vantage: Vantage.SRC,
    startNs: 1_700_000_000_000_000_000n,
    endNs: 1_700_000_010_000_000_000n,
    protocol: IpProtocol.TCP,
    src: fullEndpoint('2001:db8::1', 43210, 4242),
    dst: fullEndpoint('10.96.0.10', 80, 77),
    bytes: 5_182_528n,
    packets: 3510n,
    reverseBytes: 182_000n,
    reversePackets: 1750n,
    tcp: { srttUs: 250, minRttUs: 90, retransmits: 3, handshakeUs: 120, flags: 0x1b },
    appLatency: { count: 10n, sumUs: 12_345n, maxUs: 4_000n },
    joined: true,
    clusterId: 3_000_000_000,
    observation: 'socket',
    id: 'node-a/src/abc/1',
    icmpType: 8,
    icmpCode: 1,
    firstSeenNs: 1_700_000_000_100_000_000n,
    lastSeenNs: 1_700_000_009_900_000_000n,
    joinStatus: 'joined',
    dns: { queryName: 'web.shop.svc.cluster.local', queryType: 28, rcode: 3, queries: 4n, responses: 4n, latencyCount: 4n, latencySumUs: 2_000n, latencyMaxUs: 900n, nxdomain: 1n, failed: 2n, unparsable: 1n },
    drops: { packets: 12n, bytes: 7_200n, reason: 'NETFILTER_DROP', reasonPackets: 10n },
  });
}

/** Every field of a message (recursively) is set, so a round-trip test really covers it. */
function unsetFields(schema: DescMessage, message: Record<string, unknown>, path = ''): string[] {
  const missing: string[] = [];
  for (const field of schema.fields) {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    if (!isFieldSet(message as any, field)) missing.push(path + field.localName);
    else if (field.fieldKind === 'message') {
      missing.push(
        ...unsetFields(field.message, message[field.localName] as Record<string, unknown>, `${path}${field.localName}.`),
      );
    }
  }
  return missing;
}

describe('FlowRecord contract', () => {
  it('the test record sets every field, so the round trips below cover the whole schema', () => {
    expect(unsetFields(FlowRecordSchema, fullRecord() as unknown as Record<string, unknown>)).toEqual([]);
  });

  it('survives a binary round trip inside a FlowBatch with every field intact', () => {
    const batch = newFlowBatch({ batchId: 'node-a:1', producer: 'node-a', createdNs: 5n, records: [fullRecord(), fullRecord()] });
    const decoded = decodeFlowBatch(encodeFlowBatch(batch));
    expect(decoded.records).toHaveLength(2);
    expect(equals(FlowRecordSchema, decoded.records[0]!, fullRecord())).toBe(true);
    expect(decoded.batchId).toBe('node-a:1');
    expect(decoded.records[0]!.src?.process?.cgroupId).toBe(0xffff_ffff_1234n);
    expect(decoded.records[0]!.dst?.kube?.labels).toEqual({ app: 'web', tier: 'front' });
  });

  it('survives the canonical JSON mapping used by `kappa observe --output json`', () => {
    const json = flowRecordToJson(fullRecord());
    expect(json).toMatchObject({ vantage: 'VANTAGE_SRC', protocol: 'IP_PROTOCOL_TCP', bytes: '5182528' });
    expect(equals(FlowRecordSchema, flowRecordFromJson(JSON.parse(JSON.stringify(json))), fullRecord())).toBe(true);
  });

  it('keeps an unknown IP protocol number (open enum)', () => {
    const record = create(FlowRecordSchema, { protocol: 47 as IpProtocol });
    const decoded = decodeFlowBatch(encodeFlowBatch(newFlowBatch({ records: [record] })));
    expect(decoded.records[0]!.protocol).toBe(47);
  });

  it('rejects garbage and truncated payloads with a ContractDecodeError', () => {
    const good = encodeFlowBatch(newFlowBatch({ batchId: 'x', records: [fullRecord()] }));
    expect(() => decodeFlowBatch(good.subarray(0, good.length - 7))).toThrow(ContractDecodeError);
    expect(() => decodeFlowBatch(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff]))).toThrow(/cannot decode 5 bytes as kappa.flow.v1.FlowBatch/);
  });
});

describe('generated code', () => {
  it('matches what `buf generate` produces from the proto files (no stale codegen)', () => {
    const projectRoot = join(import.meta.dirname, '..');
    const out = mkdtempSync(join(tmpdir(), 'kappa-gen-'));
    try {
      const template = JSON.stringify({
        version: 'v2',
        plugins: [{ local: 'protoc-gen-es', out, opt: ['target=ts', 'import_extension=js'] }],
      });
      execFileSync('npx', ['buf', 'generate', '--template', template], { cwd: projectRoot, stdio: 'pipe' });
      const list = (dir: string): string[] =>
        readdirSync(dir).flatMap((name) => {
          const p = join(dir, name);
          return statSync(p).isDirectory() ? list(p) : [p];
        });
      const fresh = list(out).map((p) => relative(out, p)).sort();
      const committed = list(join(projectRoot, 'src/gen')).map((p) => relative(join(projectRoot, 'src/gen'), p)).sort();
      expect(committed).toEqual(fresh);
      for (const file of fresh) {
        expect(readFileSync(join(projectRoot, 'src/gen', file), 'utf8'), file).toBe(readFileSync(join(out, file), 'utf8'));
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it('passes buf lint', () => {
    execFileSync('npx', ['buf', 'lint'], { cwd: join(import.meta.dirname, '..'), stdio: 'pipe' });
  });
});
