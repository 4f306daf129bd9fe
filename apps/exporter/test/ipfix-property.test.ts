// Property tests of the IPFIX encoder: for any FlowRecords (strings up to 64 KiB of any Unicode,
// enterprise numbers up to 2^32-1, IPv4 and IPv6, zero and maximum counters) it never throws, every
// message is well-formed RFC 7011 within the transport's size, and an independent reader gets each
// record's fields back. `npm run fuzz` runs more cases (KAPPA_FUZZ_RUNS).
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { IpProtocol, Vantage, ipFromBytes, ipToBytes, newFlowBatch, newFlowRecord } from '@kappa/contracts';
import type { Endpoint, FlowRecord } from '@kappa/contracts';
import { createLogger, createRegistry } from '@kappa/observability';
import { freePort } from '@kappa/testing';
import { IpfixEncoder } from '../src/ipfix/encoder.js';
import { IpfixSink } from '../src/sinks/ipfix.js';
import { removeDir, startCapture, tsharkJson, tsharkText, valuesOf } from './collectors.js';
import { exportBatch, viewOf } from './fixtures.js';
import { readMessage } from './ipfix-reader.js';
import type { TemplateField } from './ipfix-reader.js';

// A run encodes up to 12 records with strings up to 64 KiB: ~20x a FlowBatch codec run.
const runs = process.env.KAPPA_FUZZ_RUNS ? Math.ceil(Number(process.env.KAPPA_FUZZ_RUNS) / 20) : 40;
const REVERSE_PEN = 29305;
const u64 = fc.oneof(fc.constantFrom(0n, (1n << 64n) - 1n), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
const u32 = fc.oneof(fc.constantFrom(0, 0xffff_ffff), fc.integer({ min: 0, max: 0xffff_ffff }));
const u16 = fc.oneof(fc.constantFrom(0, 65535), fc.integer({ min: 0, max: 65535 }));

/** s as UTF-8 carries it: each lone surrogate becomes U+FFFD (WHATWG encoding). */
function wellFormed(s: string): string {
  return Buffer.from(s, 'utf8').toString('utf8');
}

/**
 * One character of 1, 2, 3 or 4 UTF-8 bytes (lone surrogates included), equally likely. Cheaper
 * than fast-check's 'binary' unit, which rebuilds a map of all 1.1 million code points per run.
 */
const anyChar = fc
  .oneof(fc.integer({ min: 0, max: 0x7f }), fc.integer({ min: 0x80, max: 0x7ff }), fc.integer({ min: 0x800, max: 0xffff }), fc.integer({ min: 0x10000, max: 0x10ffff }))
  .map((cp) => String.fromCodePoint(cp));

/** Text of exactly `bytes` UTF-8 bytes or one character less, repeating a pattern of 1–4-byte characters. */
const longText = fc
  .record({ bytes: fc.integer({ min: 0, max: 65535 }), pattern: fc.string({ unit: anyChar, minLength: 1, maxLength: 6 }) })
  .map(({ bytes, pattern }) => {
    const unit = wellFormed(pattern);
    const utf8 = Buffer.from(unit.repeat(Math.ceil(bytes / Buffer.byteLength(unit)) + 1)).subarray(0, bytes + 1);
    // Drop the last (possibly partial) character: at most `bytes` bytes of whole characters.
    let end = Math.min(bytes, utf8.length);
    while (end > 0 && ((utf8[end] ?? 0) & 0xc0) === 0x80) end--;
    return utf8.subarray(0, end).toString('utf8');
  });
/** Mostly short strings of any Unicode (incl. lone surrogates), sometimes up to 64 KiB. */
const text = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: anyChar, maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('a', 'é', '€', '😀', '\ud800', '\udc00'), maxLength: 400 }) },
  { weight: 1, arbitrary: longText },
);
const ip = fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom('', 'not-an-ip', 'fe80::1%eth0', '::ffff:10.0.0.1', '::'));

const endpoint = fc.record({
  ip,
  port: u16,
  process: fc.record({ pid: u32, name: text, cmdline: text, exe: text, containerId: text, containerName: text }),
  kube: fc.record({
    node: text,
    objectName: text,
    objectNamespace: text,
    objectType: text,
    workloadName: text,
    workloadNamespace: text,
    workloadKind: text,
    serviceName: text,
    labels: fc.dictionary(fc.string({ maxLength: 20 }), fc.string({ maxLength: 20 }), { maxKeys: 4 }),
  }),
  backendIp: fc.oneof(fc.constant(''), fc.ipV4(), fc.ipV6()),
  backendPort: u16,
  peerDnsName: fc.oneof({ weight: 3, arbitrary: fc.constant('') }, { weight: 1, arbitrary: text }),
});

/** FlowRecord.dns and .drops: absent on most records, any values on the others. */
const dnsArb = fc.option(
  fc.record({ queryName: text, queryType: u16, rcode: u16, queries: u64, responses: u64, latencyCount: u64, latencySumUs: u64, latencyMaxUs: u64, nxdomain: u64, failed: u64, unparsable: u64 }),
  { nil: undefined, freq: 2 },
);
const dropsArb = fc.option(fc.record({ packets: u64, bytes: u64, reason: text, reasonPackets: u64 }), { nil: undefined, freq: 2 });

const recordArb = fc
  .record({
    node: text,
    vantage: fc.constantFrom(Vantage.UNSPECIFIED, Vantage.SRC, Vantage.DST),
    startNs: u64,
    endNs: u64,
    protocol: fc.oneof(fc.constantFrom(IpProtocol.TCP, IpProtocol.UDP, IpProtocol.ICMP, IpProtocol.ICMPV6), fc.integer({ min: 0, max: 255 })),
    icmpType: fc.integer({ min: 0, max: 255 }),
    icmpCode: fc.integer({ min: 0, max: 255 }),
    src: endpoint,
    dst: endpoint,
    bytes: u64,
    packets: u64,
    reverseBytes: u64,
    reversePackets: u64,
    tcp: fc.record({ srttUs: u32, retransmits: u32, flags: fc.integer({ min: 0, max: 0xffff }) }),
    appLatency: fc.record({ count: u64, sumUs: u64, maxUs: u64 }),
    joined: fc.boolean(),
    clusterId: fc.oneof(fc.constantFrom(0, 7, 0xffff_ffff), u32),
    observation: text,
    id: text,
    joinStatus: text,
    dns: dnsArb,
    drops: dropsArb,
  })
  .map((r) => newFlowRecord(r));

/** What the options of one run are: PEN (often above 65535), transport size, string cap. */
const optionsArb = fc.record({
  enterpriseNumber: fc.oneof(fc.constantFrom(1, 32473, 65535, 65536, 0xffff_ffff), fc.integer({ min: 1, max: 0xffff_ffff })),
  transport: fc.oneof(
    fc.constant({ protocol: 'tcp' as const, maxMessageBytes: 65535 }),
    fc.integer({ min: 576, max: 65535 }).map((mtu) => ({ protocol: 'udp' as const, maxMessageBytes: mtu - 48 })),
    fc.constantFrom(576, 1500, 9000).map((mtu) => ({ protocol: 'udp' as const, maxMessageBytes: mtu - 48 })),
  ),
  maxStringBytes: fc.oneof(fc.constantFrom(0, 1, 254, 255, 256, 1024, 1500), fc.integer({ min: 0, max: 1500 })),
});

// ---- What the wire must carry, written from the element list in docs, not from the encoder. ----

type Expected = { kind: 'number'; value: bigint } | { kind: 'ip'; value: string } | { kind: 'text'; value: string };

function isV6(r: FlowRecord): boolean {
  return [r.src?.ip, r.dst?.ip].some((a) => a !== undefined && a !== '' && isIpVersion(a) === 6);
}

function isIpVersion(a: string): 0 | 4 | 6 {
  try {
    return ipToBytes(a).length === 4 ? 4 : 6;
  } catch {
    return 0;
  }
}

/** The address as the template's family: unparseable → all zero, IPv4 in an IPv6 template → mapped. */
function addressText(a: string | undefined, v6: boolean): string {
  const family = a ? isIpVersion(a) : 0;
  if (family === 0) return v6 ? '::' : '0.0.0.0';
  const bytes = ipToBytes(a!);
  if (!v6 || family === 6) return ipFromBytes(bytes);
  return ipFromBytes(Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...bytes]));
}

/** A record's flow key (first in both templates), and setters for the rest of its fields. */
function expectedKey(r: FlowRecord) {
  const v6 = isV6(r);
  const m = new Map<string, Expected>();
  const num = (key: string, v: number | bigint) => m.set(key, { kind: 'number', value: BigInt(v) });
  const txt = (key: string, v: string) => m.set(key, { kind: 'text', value: v });
  m.set(v6 ? '0/27' : '0/8', { kind: 'ip', value: addressText(r.src?.ip, v6) });
  m.set(v6 ? '0/28' : '0/12', { kind: 'ip', value: addressText(r.dst?.ip, v6) });
  num('0/7', r.src?.port ?? 0);
  num('0/11', r.dst?.port ?? 0);
  num('0/4', r.protocol);
  return { v6, m, num, txt };
}

function expectedFields(r: FlowRecord, pen: number): Map<string, Expected> {
  const { v6, m, num, txt } = expectedKey(r);
  num(v6 ? '0/139' : '0/32', r.icmpType * 256 + r.icmpCode);
  num('0/6', r.tcp?.flags ?? 0);
  // Seen from the observing node: at the source end the flow leaves it (egress, 1).
  num('0/61', r.vantage === Vantage.SRC ? 1 : 0);
  num('0/1', r.bytes);
  num('0/2', r.packets);
  num(`${REVERSE_PEN}/1`, r.reverseBytes);
  num(`${REVERSE_PEN}/2`, r.reversePackets);
  num('0/152', r.startNs / 1_000_000n);
  num('0/153', r.endNs / 1_000_000n);
  num(`${pen}/2`, r.vantage);
  num(`${pen}/3`, r.joined ? 1 : 0);
  num(`${pen}/4`, r.clusterId);
  num(`${pen}/5`, r.tcp?.srttUs ?? 0);
  num(`${pen}/7`, r.tcp?.retransmits ?? 0);
  num(`${pen}/9`, r.appLatency?.count ?? 0n);
  num(`${pen}/10`, r.appLatency?.sumUs ?? 0n);
  num(`${pen}/11`, r.appLatency?.maxUs ?? 0n);
  txt(`${pen}/1`, r.node);
  txt(`${pen}/12`, r.observation);
  txt(`${pen}/13`, r.joinStatus);
  txt(`${pen}/14`, r.id);
  for (const [base, e] of [
    [100, r.src],
    [200, r.dst],
  ] as [number, Endpoint | undefined][]) {
    num(`${pen}/${base + 1}`, e?.process?.pid ?? 0);
    num(`${pen}/${base + 19}`, e?.backendPort ?? 0);
    txt(`${pen}/${base + 2}`, e?.process?.name ?? '');
    txt(`${pen}/${base + 3}`, e?.process?.cmdline ?? '');
    txt(`${pen}/${base + 4}`, e?.process?.exe ?? '');
    txt(`${pen}/${base + 5}`, e?.process?.containerId ?? '');
    txt(`${pen}/${base + 6}`, e?.process?.containerName ?? '');
    txt(`${pen}/${base + 7}`, e?.kube?.node ?? '');
    txt(`${pen}/${base + 8}`, e?.kube?.objectName ?? '');
    txt(`${pen}/${base + 9}`, e?.kube?.objectNamespace ?? '');
    txt(`${pen}/${base + 10}`, e?.kube?.objectType ?? '');
    txt(`${pen}/${base + 11}`, e?.kube?.workloadName ?? '');
    txt(`${pen}/${base + 12}`, e?.kube?.workloadNamespace ?? '');
    txt(`${pen}/${base + 13}`, e?.kube?.workloadKind ?? '');
    txt(`${pen}/${base + 14}`, e?.kube?.serviceName ?? '');
    const labels = e?.kube?.labels ?? {};
    txt(
      `${pen}/${base + 17}`,
      Object.keys(labels)
        .sort()
        .map((k) => `${k}=${labels[k]}`)
        .join(','),
    );
    txt(`${pen}/${base + 18}`, e?.backendIp ?? '');
  }
  return m;
}

/** True when a record goes out in the DNS / drops options template too. */
function hasDnsOrDrops(r: FlowRecord): boolean {
  return r.dns !== undefined || r.drops !== undefined || (r.src?.peerDnsName ?? '') !== '' || (r.dst?.peerDnsName ?? '') !== '';
}

/** The DNS / drops options record of r (templates 258/259): its scope (the flow), then drops and DNS. */
function expectedDnsDropsFields(r: FlowRecord, pen: number): Map<string, Expected> {
  const { m, num, txt } = expectedKey(r);
  num('0/152', r.startNs / 1_000_000n);
  num('0/153', r.endNs / 1_000_000n);
  num(`${pen}/2`, r.vantage);
  txt(`${pen}/14`, r.id);
  // RFC 5102 droppedOctetDeltaCount, droppedPacketDeltaCount.
  num('0/132', r.drops?.bytes ?? 0n);
  num('0/133', r.drops?.packets ?? 0n);
  txt(`${pen}/15`, r.drops?.reason ?? '');
  num(`${pen}/16`, r.drops?.reasonPackets ?? 0n);
  txt(`${pen}/17`, r.dns?.queryName ?? '');
  num(`${pen}/18`, r.dns?.queryType ?? 0);
  num(`${pen}/19`, r.dns?.rcode ?? 0);
  num(`${pen}/20`, r.dns?.queries ?? 0n);
  num(`${pen}/21`, r.dns?.responses ?? 0n);
  num(`${pen}/22`, r.dns?.latencyCount ?? 0n);
  num(`${pen}/23`, r.dns?.latencySumUs ?? 0n);
  num(`${pen}/24`, r.dns?.latencyMaxUs ?? 0n);
  num(`${pen}/25`, r.dns?.nxdomain ?? 0n);
  num(`${pen}/26`, r.dns?.failed ?? 0n);
  num(`${pen}/27`, r.dns?.unparsable ?? 0n);
  txt(`${pen}/122`, r.src?.peerDnsName ?? '');
  txt(`${pen}/222`, r.dst?.peerDnsName ?? '');
  return m;
}

/** The longest prefix of whole characters of `s` (as UTF-8, lone surrogates as U+FFFD) within max bytes. */
function utf8Prefix(s: string, max: number): string {
  const whole = wellFormed(s);
  if (Buffer.byteLength(whole) <= max) return whole;
  let out = '';
  let size = 0;
  for (const ch of whole) {
    const n = Buffer.byteLength(ch);
    if (size + n > max) break;
    out += ch;
    size += n;
  }
  return out;
}

// ignoreBOM: a string may start with U+FEFF, and it must come back too.
const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * What differs between one decoded record and its source record (empty when it matches), and how
 * many strings were cut below the cap to fit the message. Plain comparisons, one expect per record:
 * thousands of expect() calls per run would dominate the test's time.
 */
function recordProblems(values: Map<string, Buffer>, expected: Map<string, Expected>, maxStringBytes: number, mayCutFurther: boolean): { problems: string[]; cutFurther: number } {
  const problems: string[] = [];
  const keys = [...values.keys()].sort().join(' ');
  if (keys !== [...expected.keys()].sort().join(' ')) problems.push(`elements ${keys}`);
  let cutFurther = 0;
  for (const [key, want] of expected) {
    const got = values.get(key);
    if (!got) continue;
    if (want.kind === 'number') {
      const n = got.length === 1 ? BigInt(got.readUInt8()) : got.length === 2 ? BigInt(got.readUInt16BE()) : got.length === 4 ? BigInt(got.readUInt32BE()) : got.readBigUInt64BE();
      if (n !== want.value) problems.push(`${key}: ${n} instead of ${want.value}`);
    } else if (want.kind === 'ip') {
      const ip = ipFromBytes(got);
      if (ip !== want.value) problems.push(`${key}: ${ip} instead of ${want.value}`);
    } else {
      // Always valid UTF-8, always a prefix at a character boundary of the capped string.
      let decoded: string;
      try {
        decoded = strict.decode(got);
      } catch {
        problems.push(`${key}: invalid UTF-8 ${got.toString('hex').slice(0, 80)}`);
        continue;
      }
      const capped = utf8Prefix(want.value, maxStringBytes);
      if (decoded === capped) continue;
      cutFurther++;
      if (!mayCutFurther) problems.push(`${key}: cut to ${got.length} bytes although the record fits`);
      else if (!capped.startsWith(decoded) || utf8Prefix(capped, got.length) !== decoded) problems.push(`${key}: ${got.length} bytes are not a whole-character prefix`);
    }
  }
  return { problems, cutFurther };
}

function encodedSize(r: FlowRecord, maxStringBytes: number, dnsDrops = false): number {
  // The fixed-length fields: 116 / 140 bytes in the flow template, 122 / 146 in the DNS / drops one.
  let size = (dnsDrops ? 122 : 116) + (isV6(r) ? 24 : 0);
  for (const e of (dnsDrops ? expectedDnsDropsFields(r, 1) : expectedFields(r, 1)).values()) {
    if (e.kind !== 'text') continue;
    const n = Buffer.byteLength(utf8Prefix(e.value, maxStringBytes));
    size += (n < 255 ? 1 : 3) + n;
  }
  return size;
}

describe('IPFIX encoder under random records', () => {
  it('writes well-formed messages within the transport size that an independent reader decodes back to each record', () => {
    fc.assert(
      fc.property(optionsArb, fc.array(recordArb, { minLength: 1, maxLength: 12 }), fc.nat(), (options, records, exportSeconds) => {
        const encoder = new IpfixEncoder({ enterpriseNumber: options.enterpriseNumber, maxMessageBytes: options.transport.maxMessageBytes, maxStringBytes: options.maxStringBytes });
        const limit = options.transport.maxMessageBytes;
        const domains = [...new Set(records.map((r) => r.clusterId))];
        const templateMessages = domains.flatMap((d) => encoder.templateMessages(d, exportSeconds));
        const dataMessages = encoder.encode(viewOf(records), exportSeconds);

        const templates = new Map<string, TemplateField[]>();
        for (const m of templateMessages) {
          expect(m.bytes.length).toBeLessThanOrEqual(limit);
          const read = readMessage(m.bytes, templates);
          expect(read.records).toHaveLength(0);
          expect(read.exportSeconds).toBe(exportSeconds >>> 0);
          for (const t of read.templates) {
            expect([256, 257, 258, 259]).toContain(t.id);
            // The DNS / drops templates are options templates scoped to the flow record (9 fields).
            expect(t.scopeFields).toBe(t.id >= 258 ? 9 : 0);
            // Every enterprise element carries kappa's PEN or RFC 5103's, whatever its size.
            for (const f of t.fields) expect([0, REVERSE_PEN, options.enterpriseNumber]).toContain(f.enterprise);
          }
        }
        expect(templates.size).toBe(4 * domains.length);

        // Records come back per domain in order, then those with DNS, drops or a peer name again in
        // the DNS / drops template; sequence numbers count the domain's data records before.
        const ofDomain = (d: number) => records.filter((r) => r.clusterId === d);
        const remaining = new Map(domains.map((d) => [d, [...ofDomain(d).map((r) => ({ r, dnsDrops: false })), ...ofDomain(d).filter(hasDnsOrDrops).map((r) => ({ r, dnsDrops: true }))]]));
        const sequence = new Map<number, number>();
        let cutFurther = 0;
        for (const m of dataMessages) {
          expect(m.bytes.length).toBeLessThanOrEqual(limit);
          const read = readMessage(m.bytes, templates);
          expect(read.domain).toBe(m.domain);
          expect(read.sequence).toBe(sequence.get(read.domain) ?? 0);
          expect(read.records).toHaveLength(m.records);
          sequence.set(read.domain, (sequence.get(read.domain) ?? 0) + read.records.length);
          for (const got of read.records) {
            const { r, dnsDrops } = remaining.get(read.domain)!.shift()!;
            expect(got.templateId).toBe((dnsDrops ? 258 : 256) + (isV6(r) ? 1 : 0));
            // RFC 7011 §7: the 255 escape exactly when the value is 255 bytes or longer.
            const prefixes = [...got.prefixBytes].filter(([key, prefix]) => prefix !== (got.values.get(key)!.length < 255 ? 1 : 3));
            expect(prefixes).toEqual([]);
            const fits = encodedSize(r, options.maxStringBytes, dnsDrops) + 20 <= limit;
            const expected = dnsDrops ? expectedDnsDropsFields(r, options.enterpriseNumber) : expectedFields(r, options.enterpriseNumber);
            const checked = recordProblems(got.values, expected, options.maxStringBytes, !fits);
            expect(checked.problems, `record ${JSON.stringify(r.id)}`).toEqual([]);
            cutFurther += checked.cutFurther;
          }
        }
        for (const list of remaining.values()) expect(list).toHaveLength(0);
        // Strings cut for the cap or to fit the datagram are counted.
        const overCapOf = (fields: Map<string, Expected>) => [...fields.values()].filter((e) => e.kind === 'text' && Buffer.byteLength(e.value) > options.maxStringBytes).length;
        const overCap = records.reduce((n, r) => n + overCapOf(expectedFields(r, 1)) + (hasDnsOrDrops(r) ? overCapOf(expectedDnsDropsFields(r, 1)) : 0), 0);
        expect(encoder.truncatedStrings).toBeGreaterThanOrEqual(overCap);
        expect(encoder.truncatedStrings).toBeLessThanOrEqual(overCap + cutFurther);
      }),
      { numRuns: runs },
    );
  }, 60_000 + runs * 500);

  it('cuts a multi-byte character at the string cap back to its start, never into invalid UTF-8', () => {
    const encoder = new IpfixEncoder({ enterpriseNumber: 70000, maxMessageBytes: 65535, maxStringBytes: 256 });
    const templates = new Map<string, TemplateField[]>();
    for (const m of encoder.templateMessages(0, 1)) readMessage(m.bytes, templates);
    // 255 ASCII bytes then a 4-byte emoji: the cap falls inside the emoji.
    const record = newFlowRecord({ node: `${'a'.repeat(255)}😀`, id: '€'.repeat(200), src: { ip: '10.0.0.1' } });
    const [message] = encoder.encode(viewOf([record]), 1);
    const read = readMessage(message!.bytes, templates);
    expect(read.records[0]!.values.get('70000/1')!.toString('utf8')).toBe('a'.repeat(255));
    expect(read.records[0]!.values.get('70000/14')!.toString('utf8')).toBe('€'.repeat(85));
    expect(encoder.truncatedStrings).toBe(2);
  });

  it('keeps a record with 34 strings of 1500 bytes within a 576-byte MTU by cutting its longest strings', () => {
    // Before: such a record went out alone in a ~51 KB datagram, far beyond --ipfix-mtu.
    const long = 'x'.repeat(1500);
    const end = { ip: '2001:db8::1', process: { name: long, cmdline: long, exe: long, containerId: long, containerName: long }, kube: { node: long, objectName: long, objectNamespace: long, objectType: long, workloadName: long, workloadNamespace: long, workloadKind: long, serviceName: long, labels: { k: long } }, backendIp: long };
    const record = newFlowRecord({ node: long, observation: long, joinStatus: 'ok', id: 'short-id', src: end, dst: { ...end, ip: '10.0.0.2' } });
    const encoder = new IpfixEncoder({ enterpriseNumber: 4_000_000_000, maxMessageBytes: 576 - 48, maxStringBytes: 1500 });
    const templates = new Map<string, TemplateField[]>();
    for (const m of encoder.templateMessages(0, 1)) {
      expect(m.bytes.length).toBeLessThanOrEqual(528);
      readMessage(m.bytes, templates);
    }
    const messages = encoder.encode(viewOf([record]), 1);
    expect(messages).toHaveLength(1);
    expect(messages[0]!.bytes.length).toBeLessThanOrEqual(528);
    const values = readMessage(messages[0]!.bytes, templates).records[0]!.values;
    // The short strings stay whole; the long ones are all cut to the same length.
    expect(values.get('4000000000/14')!.toString()).toBe('short-id');
    expect(values.get('4000000000/13')!.toString()).toBe('ok');
    const cut = values.get('4000000000/1')!.length;
    expect(cut).toBeGreaterThan(0);
    expect(values.get('4000000000/103')!.length).toBe(cut);
  });

  it('refuses an MTU too small for one record instead of writing oversized datagrams', () => {
    expect(() => new IpfixEncoder({ enterpriseNumber: 1, maxMessageBytes: 150, maxStringBytes: 0 })).toThrow(RangeError);
  });
});

describe('IPFIX of random records decoded by tshark', () => {
  it('decodes 20 random records and one with every string at 1500 bytes, under a PEN above 65535, without warnings', async () => {
    const pen = 4_000_000_000;
    const records = fc.sample(recordArb, { numRuns: 20, seed: 7 });
    const long = (c: string) => c.repeat(1500);
    const end = (ip: string, c: string) => ({
      ip,
      port: 5000,
      process: { pid: 1, name: long(c), cmdline: long(c), exe: long(c), containerId: long(c), containerName: long(c) },
      kube: { node: long(c), objectName: long(c), objectNamespace: long(c), objectType: long(c), workloadName: long(c), workloadNamespace: long(c), workloadKind: long(c), serviceName: long(c), labels: { k: long(c) } },
      backendIp: long(c),
    });
    // 3-byte characters: 1500 bytes is exactly 500 of them, 1501 would split one.
    records.push(newFlowRecord({ id: long('i'), node: long('€'), observation: long('o'), joinStatus: long('j'), src: end('2001:db8::1', 'é'), dst: end('2001:db8::2', '😀'), bytes: (1n << 64n) - 1n }));
    // TCP: one message may hold 65535 bytes, so the longest record goes out uncut.
    const port = await freePort();
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.resume();
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    const capture = await startCapture(`tcp port ${port}`);
    const ipfix = new IpfixSink({ collector: new URL(`tcp://127.0.0.1:${port}`), enterpriseNumber: pen, templateRefreshMs: 30_000, udpMaxMessageBytes: 1452, maxStringBytes: 1500, logger: createLogger('test', 'silent'), registry: createRegistry('test') });
    try {
      await ipfix.start();
      await ipfix.write(exportBatch(newFlowBatch({ batchId: 'tshark', records })));
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await capture.stop();
      await ipfix.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    let text: string;
    let json: unknown[];
    try {
      text = await tsharkText(capture.file, `tcp.port==${port}`);
      json = await tsharkJson(capture.file, `tcp.port==${port}`);
    } finally {
      removeDir(dirname(capture.file));
    }
    expect(text).toContain('Cisco NetFlow/IPFIX');
    expect(text).not.toMatch(/Malformed/i);
    // TCP itself adds notes (handshake chat, D-SACK on a loaded loopback): those are Sequence ones.
    expect(text).not.toMatch(/Expert Info \((Warning|Error)\/(?!Sequence)/);
    expect(text).not.toMatch(/won't be used|No template/i);
    expect(valuesOf(json, 'cflow.template_ipfix_field_pen').map(Number)).toContain(pen);
    // Every record arrives with its counters and ports (as sets: the order follows observation
    // domains, and a segment TCP retransmits on a loaded loopback is decoded twice).
    const sorted = (values: unknown[]) => [...new Set(values.map(String))].sort();
    expect(sorted(valuesOf(json, 'cflow.srcport'))).toEqual(sorted(records.map((r) => r.src?.port ?? 0)));
    // tshark names RFC 5103's reverseOctetDeltaCount cflow.octets too.
    expect(sorted(valuesOf(json, 'cflow.octets'))).toEqual(sorted(records.flatMap((r) => [r.bytes, r.reverseBytes])));
    // Every non-empty string comes back byte for byte, cut to 1500 bytes at a character boundary.
    const strings = new Set(valuesOf(json, 'cflow.enterprise_private_entry').map((hex) => Buffer.from(String(hex).replace(/:/g, ''), 'hex').toString('utf8')));
    const missing = records.flatMap((r) => [...expectedFields(r, pen), ...(hasDnsOrDrops(r) ? expectedDnsDropsFields(r, pen) : [])].filter(([, e]) => e.kind === 'text' && e.value !== '' && !strings.has(utf8Prefix(e.value, 1500))).map(([key]) => `${r.id.slice(0, 20)} ${key}`));
    expect(missing).toEqual([]);
    for (const whole of ['é'.repeat(750), '😀'.repeat(375), '€'.repeat(500)]) expect(strings).toContain(whole);
  });
});
