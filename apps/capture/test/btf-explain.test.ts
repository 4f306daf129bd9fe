// Which load failures capture blames on the BTF. libbpf logs "relo #N: no matching targets found"
// for every relocation that may miss (a field guarded by bpf_core_field_exists) on a kernel without
// that field: Debian 6.1's log has two such lines on every load. Those lines alone must not turn a
// verifier's refusal (the DNS copy refused on 6.1, which turns DNS off) into "the kernel's BTF lacks
// kernel types", which ends capture: that is what hid 6.1's real error behind "no match for 2 fields".
import { BpfError } from '@kappa/ebpf-ffi';
import { describe, expect, it } from 'vitest';
import { BtfMismatchError, explainBtfMismatch } from '../src/start.js';

const optionalMisses = [
  "libbpf: prog 'kappa_skb_ingress': relo #7: no matching targets found",
  "libbpf: prog 'kappa_skb_egress': relo #7: no matching targets found",
];

describe('explainBtfMismatch', () => {
  it('leaves a verifier refusal as it is when the log only has optional relocations without targets', () => {
    const error = new BpfError('load of kappa_skb_ingress failed: Permission denied', 13, [
      ...optionalMisses,
      'libbpf: prog \'kappa_skb_ingress\': BPF program load failed: Permission denied',
      'R3 min value is outside of the allowed memory range',
    ]);
    expect(explainBtfMismatch(error, undefined)).toBe(error);
  });

  it('names the BTF when the verifier reached a relocation libbpf could not resolve', () => {
    const rewritten = new BpfError('load failed', 22, [
      ...optionalMisses,
      '123: <invalid CO-RE relocation>',
      'failed to resolve CO-RE relocation <byte_off> [95] struct sock.sk_protocol (0:30:0 @ offset 168)',
    ]);
    const explained = explainBtfMismatch(rewritten, undefined);
    expect(explained).toBeInstanceOf(BtfMismatchError);
    expect((explained as Error).message).toContain('no match for struct sock.sk_protocol');

    const raw = new BpfError('load failed', 22, [...optionalMisses, 'invalid func unknown#195896080']);
    const explainedRaw = explainBtfMismatch(raw, '/tmp/other.btf');
    expect(explainedRaw).toBeInstanceOf(BtfMismatchError);
    expect((explainedRaw as Error).message).toMatch(/^BTF file \/tmp\/other\.btf lacks kernel types the programs need \(no match for 2 fields\)/);
  });
});
