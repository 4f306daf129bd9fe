// Coarse map operations: one call moves thousands of entries between kernel and userspace.
import { bpfError } from './errors.js';
import { libbpf } from './libbpf.js';
import type { BpfMap } from './object.js';

const ENOENT = 2;
const EINVAL = 22;
const ENOTSUP = 524; // the kernel's ENOTSUPP, returned by maps without batch support

/** Entries moved by one drain call, valid until the next call on the same drainer. */
export interface DrainedChunk {
  readonly keys: Buffer;
  readonly values: Buffer;
  readonly count: number;
}

/**
 * Empties a hash map in chunks with BPF_MAP_LOOKUP_AND_DELETE_BATCH (one syscall per chunk),
 * falling back to get-next-key + lookup + delete on kernels without batch support. Buffers are
 * allocated once and reused by every drain: the hot path allocates nothing per entry.
 */
export class MapDrainer {
  private readonly keys: Buffer;
  private readonly values: Buffer;
  private readonly inBatch: Buffer;
  private readonly outBatch: Buffer;
  private readonly count = new Uint32Array(1);
  private batchSupported = true;

  constructor(
    private readonly map: BpfMap,
    private readonly chunkEntries = 8192,
    options: { batch?: boolean } = {},
  ) {
    this.batchSupported = options.batch ?? true;
    this.keys = Buffer.alloc(map.keySize * chunkEntries);
    this.values = Buffer.alloc(map.valueSize * chunkEntries);
    // The batch cursor is opaque; for hash maps it is a bucket index (4 bytes).
    this.inBatch = Buffer.alloc(Math.max(8, map.keySize));
    this.outBatch = Buffer.alloc(Math.max(8, map.keySize));
  }

  /** Calls `onChunk` for every chunk until the map is empty; returns the number of entries. */
  drain(onChunk: (chunk: DrainedChunk) => void): number {
    if (this.batchSupported) {
      try {
        return this.drainBatch(onChunk);
      } catch (error) {
        if (!(error instanceof Error && 'errno' in error && (error.errno === EINVAL || error.errno === ENOTSUP))) throw error;
        this.batchSupported = false;
      }
    }
    return this.drainOneByOne(onChunk);
  }

  get usesBatch(): boolean {
    return this.batchSupported;
  }

  private drainBatch(onChunk: (chunk: DrainedChunk) => void): number {
    const bpf = libbpf();
    const opts = { sz: 24, elem_flags: 0n, flags: 0n };
    let total = 0;
    let first = true;
    for (;;) {
      this.count[0] = this.chunkEntries;
      const rc = bpf.lookup_and_delete_batch(this.map.fd, first ? null : this.inBatch, this.outBatch, this.keys, this.values, this.count, opts);
      const errno = rc < 0 ? -rc : 0;
      if (errno && errno !== ENOENT) throw bpfError(`cannot drain map ${this.map.name}`, errno);
      const count = this.count[0] ?? 0;
      if (count > 0) {
        total += count;
        onChunk({ keys: this.keys, values: this.values, count });
      }
      if (errno === ENOENT) return total; // ENOENT: the walk reached the end of the map
      this.outBatch.copy(this.inBatch);
      first = false;
    }
  }

  private drainOneByOne(onChunk: (chunk: DrainedChunk) => void): number {
    const bpf = libbpf();
    const { keySize, valueSize, fd } = this.map;
    let total = 0;
    let filled = 0;
    const next = Buffer.alloc(keySize);
    // Deleting while walking restarts from the first key each time: always correct.
    while (bpf.map_get_next_key(fd, null, next) === 0) {
      const key = this.keys.subarray(filled * keySize, (filled + 1) * keySize);
      const value = this.values.subarray(filled * valueSize, (filled + 1) * valueSize);
      next.copy(key);
      const found = bpf.map_lookup_elem(fd, key, value) === 0;
      bpf.map_delete_elem(fd, key);
      if (!found) continue;
      filled++;
      total++;
      if (filled === this.chunkEntries) {
        onChunk({ keys: this.keys, values: this.values, count: filled });
        filled = 0;
      }
    }
    if (filled > 0) onChunk({ keys: this.keys, values: this.values, count: filled });
    return total;
  }
}

/** Writes one entry (BPF_ANY): for seeding maps and for tests. */
export function updateElement(map: BpfMap, key: Buffer, value: Buffer): void {
  const rc = libbpf().map_update_elem(map.fd, key, value, 0n);
  if (rc < 0) throw bpfError(`cannot update ${map.name}`, -rc);
}

/** Sums one u64 slot of a per-CPU array over all possible CPUs. */
export function readPerCpuCounter(map: BpfMap, index: number): bigint {
  const bpf = libbpf();
  const cpus = bpf.num_possible_cpus();
  const slot = Math.ceil(map.valueSize / 8) * 8;
  const values = Buffer.alloc(slot * cpus);
  const key = Buffer.alloc(4);
  key.writeUInt32LE(index);
  const rc = bpf.map_lookup_elem(map.fd, key, values);
  if (rc < 0) throw bpfError(`cannot read ${map.name}[${index}]`, -rc);
  let sum = 0n;
  for (let cpu = 0; cpu < cpus; cpu++) sum += values.readBigUInt64LE(cpu * slot);
  return sum;
}
