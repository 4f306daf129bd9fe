import { describe, expect, it } from 'vitest';
import { canonicalIp, ipFromBytes, ipToBytes } from '../src/index.js';

describe('IP text form', () => {
  it.each([
    ['10.1.2.3', '10.1.2.3'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs (RFC 5952 4.2.3)
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed (4.2.2)
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::1', 'fe80::1'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
    ['0:0:0:0:0:ffff:c000:0201', '::ffff:192.0.2.1'],
    ['fd00:0:0:0:0:0:0:0', 'fd00::'],
  ])('%s is written %s', (input, expected) => {
    expect(canonicalIp(input)).toBe(expected);
  });

  it('round-trips bytes', () => {
    const bytes = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    expect(ipFromBytes(bytes)).toBe('2001:db8::1');
    expect(ipToBytes('2001:db8::1')).toEqual(bytes);
  });

  it('rejects what is not an address', () => {
    expect(() => ipToBytes('10.1.2')).toThrow(/not an IP address/);
    expect(() => ipFromBytes(new Uint8Array(5))).toThrow(RangeError);
  });
});
