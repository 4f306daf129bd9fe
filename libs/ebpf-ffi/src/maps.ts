// Coarse map operations: one call moves thousands of entries between kernel and userspace.
import { constants } from 'node:os';
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
 * allocated once and reused by every chunk: the hot path allocates nothing per entry. Exact only
 * on a map nothing writes while it is drained (an update between an entry's copy and its delete
 * would be lost): capture drains the flow map programs are not counting into.
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
    let total = 0;
    for (const chunk of this.chunks()) {
      total += chunk.count;
      onChunk(chunk);
    }
    return total;
  }

  /**
   * The map's entries chunk by chunk, each deleted from the kernel as it is read. A chunk's
   * buffers are reused by the next one, so the caller finishes with a chunk (or copies it)
   * before asking for the next; it may await in between (the walk just waits).
   */
  *chunks(): Generator<DrainedChunk, void, undefined> {
    if (this.batchSupported) {
      let first = true;
      for (;;) {
        let chunk: { chunk: DrainedChunk; last: boolean };
        try {
          chunk = this.nextBatch(first);
        } catch (error) {
          // Only the very first call can find the kernel without batch support.
          if (!(first && error instanceof Error && 'errno' in error && (error.errno === EINVAL || error.errno === ENOTSUP))) throw error;
          this.batchSupported = false;
          break;
        }
        first = false;
        if (chunk.chunk.count > 0) yield chunk.chunk;
        if (chunk.last) return;
      }
    }
    yield* this.chunksOneByOne();
  }

  get usesBatch(): boolean {
    return this.batchSupported;
  }

  private nextBatch(first: boolean): { chunk: DrainedChunk; last: boolean } {
    const opts = { sz: 24, elem_flags: 0n, flags: 0n };
    if (!first) this.outBatch.copy(this.inBatch);
    this.count[0] = this.chunkEntries;
    const rc = libbpf().lookup_and_delete_batch(this.map.fd, first ? null : this.inBatch, this.outBatch, this.keys, this.values, this.count, opts);
    const errno = rc < 0 ? -rc : 0;
    if (errno && errno !== ENOENT) throw bpfError(`cannot drain map ${this.map.name}`, errno);
    // ENOENT: the walk reached the end of the map (with the last entries in this chunk).
    return { chunk: { keys: this.keys, values: this.values, count: this.count[0] ?? 0 }, last: errno === ENOENT };
  }

  private *chunksOneByOne(): Generator<DrainedChunk, void, undefined> {
    const bpf = libbpf();
    const { keySize, valueSize, fd } = this.map;
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
      if (filled === this.chunkEntries) {
        yield { keys: this.keys, values: this.values, count: filled };
        filled = 0;
      }
    }
    if (filled > 0) yield { keys: this.keys, values: this.values, count: filled };
  }
}

/** Writes one entry (BPF_ANY): for seeding maps, small state and tests. */
export function updateElement(map: BpfMap, key: Buffer, value: Buffer): void {
  const rc = libbpf().map_update_elem(map.fd, key, value, 0n);
  if (rc < 0) throw bpfError(`cannot update ${map.name}`, -rc);
}

/** Reads one entry into `value`; false when the key is absent. */
export function lookupElement(map: BpfMap, key: Buffer, value: Buffer): boolean {
  const rc = libbpf().map_lookup_elem(map.fd, key, value);
  if (rc === -ENOENT) return false;
  if (rc < 0) throw bpfError(`cannot read ${map.name}`, -rc);
  return true;
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

/** What the kernel says about a map pinned on bpffs (struct bpf_map_info). */
export interface PinnedMapInfo {
  readonly type: number;
  readonly id: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
}

/** The definition of the map pinned at `path` (undefined when nothing is pinned there). */
export function pinnedMapInfo(path: string): PinnedMapInfo | undefined {
  const bpf = libbpf();
  const fd = bpf.obj_get(path);
  if (fd < 0) {
    const errno = -fd;
    if (errno === ENOENT) return undefined;
    throw bpfError(`cannot open the map pinned at ${path}`, errno);
  }
  try {
    // struct bpf_map_info starts: type, id, key_size, value_size, max_entries, map_flags (u32 each).
    const info = Buffer.alloc(96);
    const length = new Uint32Array([info.length]);
    const rc = bpf.obj_get_info_by_fd(fd, info, length);
    if (rc < 0) throw bpfError(`cannot read what is pinned at ${path}`, -rc);
    return { type: info.readUInt32LE(0), id: info.readUInt32LE(4), keySize: info.readUInt32LE(8), valueSize: info.readUInt32LE(12), maxEntries: info.readUInt32LE(16), flags: info.readUInt32LE(20) };
  } finally {
    bpf.close(fd);
  }
}

const MEMBARRIER_CMD_GLOBAL = 1;
const SYS_MEMBARRIER: Partial<Record<NodeJS.Architecture, number>> = { x64: 324, arm64: 283 };

/**
 * Returns once every BPF program that was running when it was called has returned: BPF programs
 * run inside RCU read-side sections, and membarrier(MEMBARRIER_CMD_GLOBAL) waits for an RCU grace
 * period (synchronize_rcu). Throws where the kernel or a seccomp profile refuses membarrier.
 */
export function waitForRunningPrograms(): void {
  const number = SYS_MEMBARRIER[process.arch];
  if (number === undefined) throw new Error(`membarrier: no syscall number known for ${process.arch}`);
  const bpf = libbpf();
  const rc = bpf.syscall3(number, MEMBARRIER_CMD_GLOBAL, 0, 0);
  if (rc < 0) {
    const errno = bpf.errno();
    const name = Object.entries(constants.errno).find(([, value]) => value === errno)?.[0] ?? `errno ${errno}`;
    throw bpfError(`membarrier(MEMBARRIER_CMD_GLOBAL) failed (${name}); a seccomp profile may forbid it`, errno);
  }
}
