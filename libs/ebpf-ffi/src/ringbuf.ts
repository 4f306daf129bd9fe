// BPF ring buffer consumption: libbpf calls back once per record; `consume` hands over
// everything pending in one call (no per-record syscall), copying each record out of the
// shared pages before libbpf releases them.
import koffi from 'koffi';
import type { TypeObject } from 'koffi';
import { bpfError } from './errors.js';
import { libbpf } from './libbpf.js';
import type { BpfMap } from './object.js';

let sampleType: TypeObject | undefined;
let functions:
  | {
      create: (fd: number, callback: bigint, ctx: null, opts: null) => bigint;
      consume: (rb: bigint) => number;
      free: (rb: bigint) => void;
    }
  | undefined;

function bindings() {
  if (functions && sampleType) return { ...functions, sampleType };
  libbpf(); // loads libbpf.so.1 first
  const lib = koffi.load('libbpf.so.1');
  sampleType = koffi.proto('int ring_buffer_sample_fn(void *ctx, void *data, size_t size)');
  functions = {
    create: lib.func('void *ring_buffer__new(int map_fd, ring_buffer_sample_fn *sample_cb, void *ctx, void *opts)'),
    consume: lib.func('int ring_buffer__consume(void *rb)'),
    free: lib.func('void ring_buffer__free(void *rb)'),
  };
  return { ...functions, sampleType };
}

export class RingBufferReader {
  private readonly handle: bigint;
  private readonly callback: bigint;
  private pending: Buffer[] = [];

  constructor(map: BpfMap) {
    const b = bindings();
    this.callback = koffi.register((_ctx: bigint, data: bigint, size: number | bigint) => {
      this.pending.push(Buffer.from(koffi.view(data, Number(size))));
      return 0;
    }, koffi.pointer(b.sampleType));
    this.handle = b.create(map.fd, this.callback, null, null);
    if (!this.handle) {
      koffi.unregister(this.callback);
      throw bpfError(`cannot open ring buffer ${map.name}`, libbpf().errno());
    }
  }

  /** Every record written since the last call, oldest first. */
  consume(): Buffer[] {
    const rc = bindings().consume(this.handle);
    if (rc < 0) throw bpfError('cannot consume the ring buffer', -rc);
    const records = this.pending;
    this.pending = [];
    return records;
  }

  close(): void {
    bindings().free(this.handle);
    koffi.unregister(this.callback);
  }
}
