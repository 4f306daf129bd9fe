// When a DNS exchange meets its record: the messages carry the drain epoch their packet was seen
// in, but the conversation's counts may land in the next interval's map (a counting socket
// destroyed between the epoch flip and the drain's socket report reports there). The exchange
// must wait for that record, not be dropped as unmatched at the end of its own interval.
import { fromBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import { FlowRecordSchema } from '@kappa/contracts';
import { DNS_EVENT } from '../layout.js';
import { DnsTracker } from './tracker.js';

const KEY_SIZE = DNS_EVENT.fields.key.size;

/** A flow key (48 bytes) as the kernel writes it: only the bytes the tracker reads matter here. */
function flowKey(localPort: number): Buffer {
  const key = Buffer.alloc(KEY_SIZE);
  key.writeUInt16LE(localPort, 32);
  key.writeUInt16LE(53, 34);
  key[37] = 17; // UDP
  key.writeUInt32LE(4026531840, 44);
  return key;
}

/** A DNS query or response for `name` (A, class IN), no answers. */
function dnsMessage(id: number, response: boolean, name: string): Buffer {
  const labels = name.split('.').flatMap((label) => [Buffer.from([label.length]), Buffer.from(label, 'latin1')]);
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(response ? 0x8180 : 0x0100, 2);
  header.writeUInt16BE(1, 4);
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

function event(key: Buffer, epoch: number, ktimeNs: bigint, egress: boolean, message: Buffer, rxRealtimeNs = 0n): Uint8Array {
  const e = Buffer.alloc(DNS_EVENT.size);
  e.writeBigUInt64LE(rxRealtimeNs, DNS_EVENT.fields.rx_tstamp_ns.offset);
  key.copy(e, DNS_EVENT.fields.key.offset);
  e.writeBigUInt64LE(ktimeNs, DNS_EVENT.fields.ktime_ns.offset);
  e.writeUInt32LE(epoch, DNS_EVENT.fields.epoch.offset);
  e.writeUInt16LE(message.length, DNS_EVENT.fields.length.offset);
  e.writeUInt16LE(message.length, DNS_EVENT.fields.payload_length.offset);
  e[DNS_EVENT.fields.egress.offset] = egress ? 1 : 0;
  message.copy(e, DNS_EVENT.fields.message.offset);
  return e;
}

describe('DnsTracker', () => {
  const tracker = () => new DnsTracker({ maxNames: 100, ktimeToUnixNs: () => 0n });

  it('keeps an exchange whose record comes one interval later, and gives it to that record', () => {
    const t = tracker();
    const key = flowKey(40000);
    t.add(event(key, 7, 1_000_000n, true, dnsMessage(9, false, 'web.kappa.test')));
    t.add(event(key, 7, 1_250_000n, false, dnsMessage(9, true, 'web.kappa.test')));
    // Drain 7 had no record of this conversation.
    t.endDrain(7, 2_000_000n, Date.now());
    expect(t.counts.unmatched).toBe(0);
    // Drain 8 has it.
    const field = t.takeRecordField(key, 0);
    expect(field).toBeDefined();
    expect(field!.toString('latin1')).toContain('web.kappa.test');
    t.endDrain(8, 3_000_000n, Date.now());
    expect(t.counts.unmatched).toBe(0);
  });

  it('counts an exchange as unmatched once the interval after its own ended without its record', () => {
    const t = tracker();
    const key = flowKey(40001);
    t.add(event(key, 7, 1_000_000n, true, dnsMessage(10, false, 'web.kappa.test')));
    t.endDrain(7, 2_000_000n, Date.now());
    t.endDrain(8, 3_000_000n, Date.now());
    expect(t.counts.unmatched).toBe(1);
    expect(t.takeRecordField(key, 0)).toBeUndefined();
  });

  // The kernel's receive timestamp (CLOCK_REALTIME, where the response reached the interface) is
  // the response's time on the hooks' clock once moved by realtime - monotonic; one that cannot
  // be this packet's (after the hook, or long before it) leaves the hook's time.
  describe('times a response where it reached the interface', () => {
    const REALTIME_MINUS_KTIME = 1_700_000_000_000_000_000n;
    const latency = (rx: bigint) => {
      const t = new DnsTracker({ maxNames: 100, ktimeToUnixNs: () => 0n, realtimeMinusKtimeNs: () => REALTIME_MINUS_KTIME });
      const key = flowKey(40002);
      t.add(event(key, 7, 1_000_000n, true, dnsMessage(11, false, 'web.kappa.test')));
      t.add(event(key, 7, 1_300_000n, false, dnsMessage(11, true, 'web.kappa.test'), rx));
      const dns = fromBinary(FlowRecordSchema, t.takeRecordField(key, 0)!).dns!;
      return { us: Number(dns.latencySumUs), atInterface: t.counts.timedAtInterface };
    };

    it('from the receive timestamp, 40 µs before the hook', () => {
      expect(latency(REALTIME_MINUS_KTIME + 1_260_000n)).toEqual({ us: 260, atInterface: 1 });
    });

    it('from the hook without one, or with one that is not this arrival', () => {
      expect(latency(0n)).toEqual({ us: 300, atInterface: 0 });
      expect(latency(REALTIME_MINUS_KTIME + 1_400_000n)).toEqual({ us: 300, atInterface: 0 });
      expect(latency(REALTIME_MINUS_KTIME - 5_000_000_000n)).toEqual({ us: 300, atInterface: 0 });
    });
  });
});
