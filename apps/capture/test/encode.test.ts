// Drained kernel entries → FlowBatch bytes: orientation by vantage, every field as the kernel
// stored it, ids unique per interval, and bytes identical to protobuf-es's own encoding of the
// same records (so every stage decodes them as it would decode any FlowBatch).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FlowBatchSchema, IpProtocol, Vantage, decodeFlowBatch, ipFromBytes, toBinary } from '@kappa/contracts';
import { DropReasons } from '../src/drop-reasons.js';
import { encodeDns, encodePeerName } from '../src/dns/tracker.js';
import { FlowBatchEncoder } from '../src/encode.js';
import type { DrainInterval, RecordAnnotations } from '../src/encode.js';
import { FLOW_KEY, FLOW_STATS, ROLE_DST, ROLE_SRC, ROLE_UNKNOWN, writeFlowEntry } from '../src/layout.js';
import type { Conversation } from '../src/layout.js';

const conversation: Conversation = {
  localIp: Uint8Array.of(10, 0, 0, 1), remoteIp: Uint8Array.of(10, 0, 0, 2), localPort: 40000, remotePort: 80,
  protocol: IpProtocol.TCP, ifindex: 0, netns: 4026531840, firstKtimeNs: 1_000n, lastKtimeNs: 2_000n,
  txBytes: 100n, txPackets: 2n, rxBytes: 300n, rxPackets: 3n, cgroupId: 7n, ownerStartNs: 123_456_789_000n, pid: 42, comm: 'curl',
  srttUs: 10, minRttUs: 5, retransmits: 1, handshakeUs: 20, tcpFlags: 0x1b, appCount: 0, appSumUs: 0n, appMaxUs: 0,
  role: ROLE_SRC, icmpType: 0, icmpCode: 0,
};
const interval: DrainInterval = { node: 'n1', startNs: 10n, endNs: 20n, ktimeToUnixNs: 1_000_000n, interfaceName: () => 'eth0' };

/** Encodes the conversations as one drain and decodes the batches back. */
function drain(conversations: Conversation[], at: DrainInterval = interval, maxBatchBytes = 1 << 20, annotations?: RecordAnnotations) {
  const keys = Buffer.alloc(FLOW_KEY.size * conversations.length);
  const values = Buffer.alloc(FLOW_STATS.size * conversations.length);
  conversations.forEach((c, i) => writeFlowEntry(c, keys, i * FLOW_KEY.size, values, i * FLOW_STATS.size));
  const encoder = new FlowBatchEncoder(at.node, maxBatchBytes, annotations);
  encoder.begin(at);
  const batches = [];
  for (let i = 0; i < conversations.length; i++) {
    const full = encoder.add(keys, i * FLOW_KEY.size, values, i * FLOW_STATS.size);
    if (full) batches.push(full);
  }
  const last = encoder.finish();
  if (last) batches.push(last);
  return batches;
}

const records = (conversations: Conversation[], at?: DrainInterval) => drain(conversations, at).flatMap((b) => decodeFlowBatch(b.bytes).records);

describe('FlowBatchEncoder', () => {
  it('puts the local initiator first and its process on src at the SRC vantage', () => {
    const [r] = records([conversation]);
    expect([r?.vantage, r?.src?.ip, r?.src?.port, r?.src?.process?.pid, r?.dst?.ip, r?.dst?.process]).toEqual([Vantage.SRC, '10.0.0.1', 40000, 42, '10.0.0.2', undefined]);
    expect([r?.bytes, r?.packets, r?.reverseBytes, r?.reversePackets]).toEqual([100n, 2n, 300n, 3n]);
    expect([r?.firstSeenNs, r?.lastSeenNs, r?.observation, r?.startNs, r?.endNs, r?.node]).toEqual([1_001_000n, 1_002_000n, 'socket', 10n, 20n, 'n1']);
    expect(r?.tcp).toMatchObject({ srttUs: 10, minRttUs: 5, retransmits: 1, handshakeUs: 20, flags: 0x1b });
    // /proc/<pid>/stat start time: clock ticks of 10 ms since boot.
    expect([r?.src?.process?.name, r?.src?.process?.cgroupId, r?.src?.process?.startTimeTicks]).toEqual(['curl', 7n, 12345n]);
    // The network namespace is the local end's: the remote one is another node's to say.
    expect([r?.src?.netns, r?.dst?.netns]).toEqual([4026531840, 0]);
  });

  it('puts the remote initiator first and the local process on dst at the DST vantage', () => {
    const [r] = records([{ ...conversation, role: ROLE_DST }]);
    expect([r?.vantage, r?.src?.ip, r?.src?.process, r?.dst?.ip, r?.dst?.process?.name]).toEqual([Vantage.DST, '10.0.0.2', undefined, '10.0.0.1', 'curl']);
    expect([r?.src?.netns, r?.dst?.netns]).toEqual([0, 4026531840]);
    expect([r?.bytes, r?.packets, r?.reverseBytes, r?.reversePackets]).toEqual([300n, 3n, 100n, 2n]);
  });

  it('leaves the vantage unspecified when the kernel could not tell who initiated', () => {
    expect(records([{ ...conversation, role: ROLE_UNKNOWN }])[0]?.vantage).toBe(Vantage.UNSPECIFIED);
  });

  it('gives every record of an interval its own id, the same ids when the same entries are encoded again, and others in the next interval', () => {
    const three = [conversation, { ...conversation, localPort: 40001 }, { ...conversation, localPort: 40002 }];
    const ids = records(three).map((r) => r.id);
    expect(new Set(ids).size).toBe(3);
    expect(records(three).map((r) => r.id)).toEqual(ids);
    const next = records(three, { ...interval, startNs: 20n, endNs: 30n }).map((r) => r.id);
    expect(next.some((id) => ids.includes(id))).toBe(false);
  });

  it('names the interface in interface mode', () => {
    expect(records([{ ...conversation, ifindex: 3 }])[0]?.observation).toBe('eth0');
  });

  it('writes app latency and ICMP type and code when present', () => {
    const [tcp] = records([{ ...conversation, appCount: 3, appSumUs: 900n, appMaxUs: 500 }]);
    expect(tcp?.appLatency).toMatchObject({ count: 3n, sumUs: 900n, maxUs: 500n });
    const [icmp] = records([{ ...conversation, protocol: IpProtocol.ICMP, icmpType: 8, icmpCode: 0, localPort: 77, remotePort: 77 }]);
    expect([icmp?.icmpType, icmp?.tcp, icmp?.src?.port]).toEqual([8, undefined, 77]);
  });

  it('splits a drain into batches under the size limit, every record in exactly one', () => {
    const many = Array.from({ length: 2000 }, (_, i) => ({ ...conversation, localPort: 1024 + i }));
    const batches = drain(many, interval, 64 * 1024);
    expect(batches.length).toBeGreaterThan(3);
    expect(batches.every((b) => b.bytes.length <= 64 * 1024)).toBe(true);
    const decoded = batches.flatMap((b) => decodeFlowBatch(b.bytes).records);
    expect(decoded.map((r) => r.src?.port)).toEqual(many.map((c) => c.localPort));
    expect(new Set(batches.map((b) => b.batchId)).size).toBe(batches.length);
    expect(batches.map((b) => decodeFlowBatch(b.bytes).batchId)).toEqual(batches.map((b) => b.batchId));
  });

  it('writes exactly the bytes protobuf-es writes for the same records, for any conversation', () => {
    const address = (v4: boolean) => (v4 ? fc.uint8Array({ minLength: 4, maxLength: 4 }) : fc.oneof(
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      // zero runs, the cases RFC 5952 compression is about
      fc.array(fc.constantFrom(0, 0, 0, 1, 0xff), { minLength: 16, maxLength: 16 }).map((a) => Uint8Array.from(a)),
    ));
    const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    const arbitrary = fc.boolean().chain((v4) => fc.record({
      localIp: address(v4), remoteIp: address(v4), localPort: fc.integer({ min: 0, max: 65535 }), remotePort: fc.integer({ min: 0, max: 65535 }),
      protocol: fc.constantFrom(1, 6, 17, 58, 132), ifindex: fc.constantFrom(0, 0, 7), netns: fc.nat(),
      firstKtimeNs: fc.bigInt({ min: 1n, max: 1n << 62n }), lastKtimeNs: fc.bigInt({ min: 0n, max: 1n << 62n }),
      txBytes: u64, txPackets: u64, rxBytes: u64, rxPackets: u64, cgroupId: u64, ownerStartNs: fc.bigInt({ min: 0n, max: 1n << 52n }),
      pid: fc.nat(), comm: fc.string({ maxLength: 15, unit: 'binary-ascii' }).map((s) => s.replace(/\0/g, '')),
      srttUs: fc.nat(), minRttUs: fc.nat(), retransmits: fc.nat(), handshakeUs: fc.nat(), tcpFlags: fc.integer({ min: 0, max: 255 }),
      appCount: fc.nat(), appSumUs: u64, appMaxUs: fc.nat(), role: fc.constantFrom(0, 1, 2), icmpType: fc.integer({ min: 0, max: 255 }), icmpCode: fc.integer({ min: 0, max: 255 }),
    }));
    fc.assert(
      fc.property(fc.array(arbitrary, { minLength: 1, maxLength: 20 }), (conversations) => {
        for (const batch of drain(conversations as Conversation[], { ...interval, ktimeToUnixNs: 1_796_000_000_000_000_000n })) {
          const decoded = decodeFlowBatch(batch.bytes);
          expect(Buffer.from(toBinary(FlowBatchSchema, decoded)).equals(Buffer.from(batch.bytes))).toBe(true);
          decoded.records.forEach((r, i) => {
            const c = conversations[i]!;
            const local = c.role === ROLE_DST ? r.dst : r.src;
            expect(local?.ip).toBe(ipFromBytes(c.localIp));
            expect(c.role === ROLE_DST ? r.src?.ip : r.dst?.ip).toBe(ipFromBytes(c.remoteIp));
          });
        }
      }),
      { numRuns: 300 },
    );
  });

  it('writes drops, DNS exchanges and the local end\'s DNS name exactly as protobuf-es does, for any values', () => {
    const reasons = new DropReasons(new Map([[2, 'SKB_DROP_REASON_NO_SOCKET'], [6, 'SKB_DROP_REASON_NETFILTER_DROP']]));
    // Short names, and names long enough that an endpoint or the DNS message needs a 2-byte length.
    const name = fc.oneof(
      fc.stringMatching(/^[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63}){0,3}$/).map((n) => n.slice(0, 253)),
      fc.integer({ min: 60, max: 253 }).map((n) => `${'s3-bucket.'.repeat(26)}`.slice(0, n).replace(/\.$/, 'x')),
    );
    const u53 = fc.nat({ max: Number.MAX_SAFE_INTEGER });
    const extra = fc.record({
      role: fc.constantFrom(ROLE_SRC, ROLE_DST, ROLE_UNKNOWN),
      v4: fc.boolean(),
      remotePort: fc.constantFrom(53, 80),
      protocol: fc.constantFrom(IpProtocol.UDP, IpProtocol.TCP),
      peerName: fc.option(name, { nil: undefined }),
      dns: fc.option(fc.record({ queryName: fc.oneof(name, fc.constant('')), queryType: fc.nat({ max: 65535 }), rcode: fc.nat({ max: 15 }), queries: u53, responses: u53, latencyCount: u53, latencySumUs: u53, latencyMaxUs: u53, nxdomain: u53, failed: u53, unparsable: u53, epoch: fc.constant(0) }), { nil: undefined }),
      drops: fc.option(fc.record({ packets: fc.integer({ min: 1, max: 0xffffffff }), bytes: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), reasons: fc.array(fc.tuple(fc.constantFrom(2, 6, 77, 0x10005), fc.nat({ max: 0xffffffff })), { maxLength: 3 }) }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(extra, { minLength: 1, maxLength: 10 }), (extras) => {
        const conversations = extras.map((e) => ({
          ...conversation,
          localIp: e.v4 ? conversation.localIp : Uint8Array.from({ length: 16 }, (_, i) => i + 1),
          remoteIp: e.v4 ? conversation.remoteIp : Uint8Array.from({ length: 16 }, (_, i) => 0xf0 + i),
          remotePort: e.remotePort,
          protocol: e.protocol,
          role: e.role,
          ...(e.drops ? { drops: e.drops } : {}),
        }));
        let at = 0;
        const annotations: RecordAnnotations = {
          dnsField: () => (extras[at]!.dns ? encodeDns(extras[at]!.dns!) : undefined),
          peerNameField: () => (extras[at]!.peerName ? encodePeerName(extras[at]!.peerName!) : undefined),
          dropReasonField: (reason) => reasons.field(reason),
        };
        // The encoder asks for a record's annotations while it writes that record.
        const keys = Buffer.alloc(FLOW_KEY.size * conversations.length);
        const values = Buffer.alloc(FLOW_STATS.size * conversations.length);
        conversations.forEach((c, i) => writeFlowEntry(c, keys, i * FLOW_KEY.size, values, i * FLOW_STATS.size));
        const encoder = new FlowBatchEncoder('n1', 1 << 20, annotations);
        encoder.begin({ ...interval, ktimeToUnixNs: 1_796_000_000_000_000_000n });
        for (at = 0; at < conversations.length; at++) expect(encoder.add(keys, at * FLOW_KEY.size, values, at * FLOW_STATS.size)).toBeUndefined();
        const bytes = encoder.finish()!.bytes;
        const decoded = decodeFlowBatch(bytes);
        expect(Buffer.from(toBinary(FlowBatchSchema, decoded)).equals(Buffer.from(bytes))).toBe(true);
        decoded.records.forEach((r, i) => {
          const e = extras[i]!;
          const local = e.role === ROLE_DST ? r.dst : r.src;
          const remote = e.role === ROLE_DST ? r.src : r.dst;
          expect(local?.peerDnsName).toBe(e.peerName ?? '');
          expect(remote?.peerDnsName).toBe('');
          // Only a conversation with port 53 at one end carries DNS exchanges.
          const dns = e.remotePort === 53 ? e.dns : undefined;
          expect(r.dns?.queryName).toBe(dns?.queryName);
          expect(r.dns?.latencySumUs).toBe(dns ? BigInt(dns.latencySumUs) : undefined);
          expect(r.dns?.unparsable).toBe(dns ? BigInt(dns.unparsable) : undefined);
          expect(r.drops?.packets).toBe(e.drops ? BigInt(e.drops.packets) : undefined);
          expect(r.drops?.bytes).toBe(e.drops?.bytes);
          // The reason with the most packets (the first of equals), by the kernel's name.
          const best = (e.drops?.reasons ?? []).reduce<[number, number] | undefined>((m, x) => (x[1] > (m?.[1] ?? 0) ? [x[0], x[1]] : m), undefined);
          expect(r.drops?.reason ?? '').toBe(best ? reasons.name(best[0]) : '');
        });
      }),
      { numRuns: 300 },
    );
  });
});
