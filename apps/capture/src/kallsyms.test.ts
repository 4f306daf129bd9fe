// kernelFunction: a function's code range from a kallsyms listing (module symbols out of order).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kernelFunction } from './kallsyms.js';

describe('kernelFunction', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kc-kallsyms-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  };

  it('spans from the function to the next symbol above it, wherever that is listed', () => {
    const path = file('kallsyms', [
      'ffffffff82163200 T __pfx_icmpv6_rcv',
      'ffffffff82163210 t icmpv6_rcv',
      'ffffffffc0001000 t some_module_fn\t[veth]',
      'ffffffff82163760 T icmpv6_flow_init',
      'ffffffff82163750 T __pfx_icmpv6_flow_init',
      'ffffffff82163100 t icmpv6_rcv_helper',
      '',
    ].join('\n'));
    expect(kernelFunction('icmpv6_rcv', path)).toEqual({ start: 0xffffffff82163210n, end: 0xffffffff82163750n });
  });

  it('takes the text symbol of that whole name only, in the kernel or a module', () => {
    const path = file('lookalikes', [
      'ffffffff83000000 d icmpv6_rcv',
      'ffffffff82163200 T __pfx_icmpv6_rcv',
      'ffffffff82163100 t icmpv6_rcv_helper',
      'ffffffffc0002000 t icmpv6_rcv\t[ipv6]',
      'ffffffffc0002400 t icmpv6_other\t[ipv6]',
      'ffffffffc0002300 t icmpv6_next\t[ipv6]',
      '',
    ].join('\n'));
    expect(kernelFunction('icmpv6_rcv', path)).toEqual({ start: 0xffffffffc0002000n, end: 0xffffffffc0002300n });
    expect(kernelFunction('icmpv6_other', path)).toBeUndefined();
  });

  it('knows nothing when addresses are hidden, the function is absent or the file unreadable', () => {
    expect(kernelFunction('icmpv6_rcv', file('hidden', '0000000000000000 t icmpv6_rcv\n0000000000000000 T icmpv6_flow_init\n'))).toBeUndefined();
    expect(kernelFunction('icmpv6_rcv', file('absent', 'ffffffff82163760 T icmpv6_flow_init\n'))).toBeUndefined();
    expect(kernelFunction('icmpv6_rcv', join(dir, 'nothing'))).toBeUndefined();
  });
});
