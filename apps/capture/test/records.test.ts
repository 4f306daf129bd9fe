// Orientation of records by vantage, and the record id's stability.
import { describe, expect, it } from 'vitest';
import { IpProtocol, Vantage } from '@kappa/contracts';
import { ROLE_DST, ROLE_SRC, ROLE_UNKNOWN } from '../src/layout.js';
import type { Conversation } from '../src/layout.js';
import { toFlowRecord } from '../src/records.js';

const conversation: Conversation = {
  localIp: Uint8Array.of(10, 0, 0, 1), remoteIp: Uint8Array.of(10, 0, 0, 2), localPort: 40000, remotePort: 80,
  protocol: IpProtocol.TCP, ifindex: 0, firstKtimeNs: 1_000n, lastKtimeNs: 2_000n,
  txBytes: 100n, txPackets: 2n, rxBytes: 300n, rxPackets: 3n, cgroupId: 7n, pid: 42, comm: 'curl',
  srttUs: 10, minRttUs: 5, retransmits: 1, handshakeUs: 20, tcpFlags: 0x1b, appCount: 0, appSumUs: 0n, appMaxUs: 0,
  role: ROLE_SRC, icmpType: 0, icmpCode: 0,
};
const interval = { startNs: 10n, endNs: 20n };
const context = { node: 'n1', ktimeToUnixNs: 1_000_000n, interfaceName: () => 'eth0' };

describe('toFlowRecord', () => {
  it('puts the local initiator first and its process on src at the SRC vantage', () => {
    const r = toFlowRecord(conversation, interval, context);
    expect([r.vantage, r.src?.ip, r.src?.port, r.src?.process?.pid, r.dst?.ip, r.dst?.process]).toEqual([Vantage.SRC, '10.0.0.1', 40000, 42, '10.0.0.2', undefined]);
    expect([r.bytes, r.packets, r.reverseBytes, r.reversePackets]).toEqual([100n, 2n, 300n, 3n]);
    expect([r.firstSeenNs, r.lastSeenNs, r.observation]).toEqual([1_001_000n, 1_002_000n, 'socket']);
  });

  it('puts the remote initiator first and the local process on dst at the DST vantage', () => {
    const r = toFlowRecord({ ...conversation, role: ROLE_DST }, interval, context);
    expect([r.vantage, r.src?.ip, r.src?.process, r.dst?.ip, r.dst?.process?.name]).toEqual([Vantage.DST, '10.0.0.2', undefined, '10.0.0.1', 'curl']);
    expect([r.bytes, r.packets, r.reverseBytes, r.reversePackets]).toEqual([300n, 3n, 100n, 2n]);
  });

  it('leaves the vantage unspecified when the kernel could not tell who initiated', () => {
    expect(toFlowRecord({ ...conversation, role: ROLE_UNKNOWN }, interval, context).vantage).toBe(Vantage.UNSPECIFIED);
  });

  it('gives the same id to the same conversation and interval, and another to the next interval', () => {
    const a = toFlowRecord(conversation, interval, context).id;
    expect(toFlowRecord(conversation, interval, context).id).toBe(a);
    expect(toFlowRecord(conversation, { startNs: 20n, endNs: 30n }, context).id).not.toBe(a);
  });

  it('names the interface in interface mode', () => {
    expect(toFlowRecord({ ...conversation, ifindex: 3 }, interval, context).observation).toBe('eth0');
  });
});
