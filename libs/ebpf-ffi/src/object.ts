// A BPF object file: open (optionally against a custom BTF), configure, load, and reach its
// programs and maps. Wraps libbpf's bpf_object; one instance per loaded object.
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { BtfMissingError, bpfError } from './errors.js';
import { libbpf } from './libbpf.js';
import { captureLibbpfLog, libbpfLogSince, markLibbpfLog } from './log.js';

export const KERNEL_BTF = '/sys/kernel/btf/vmlinux';

const { SIGPROF } = constants.signals;
const SIG_BLOCK = 0;
const SIG_SETMASK = 2;
/** glibc's sigset_t: 1024 bits. */
const SIGSET_BYTES = 128;

/** Blocks `signal` for this thread; returns what puts the thread's mask back. */
function blockSignal(signal: number): () => void {
  const bpf = libbpf();
  const set = Buffer.alloc(SIGSET_BYTES);
  set[(signal - 1) >> 3] = 1 << ((signal - 1) & 7);
  const old = Buffer.alloc(SIGSET_BYTES);
  if (bpf.sigmask(SIG_BLOCK, set, old) !== 0) return () => undefined;
  return () => void bpf.sigmask(SIG_SETMASK, old, null);
}

export interface OpenOptions {
  /** BTF for kernels without /sys/kernel/btf/vmlinux (BTFHub style). */
  btfPath?: string;
  /**
   * bpffs folder for the maps declared with LIBBPF_PIN_BY_NAME: load reuses a map already pinned
   * there (same type, sizes and flags) instead of creating it, so its contents outlive a crash.
   */
  pinRoot?: string;
}

export interface BpfProgram {
  readonly name: string;
  readonly handle: bigint;
  readonly fd: number;
}

export interface BpfMap {
  readonly name: string;
  readonly handle: bigint;
  readonly fd: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  /** BPF_MAP_TYPE_* and map_flags, as the object defines them. */
  readonly type: number;
  readonly flags: number;
}

export class BpfObject {
  private closed = false;
  private loaded = false;

  private constructor(
    readonly path: string,
    private readonly handle: bigint,
  ) {}

  static open(path: string, options: OpenOptions = {}): BpfObject {
    captureLibbpfLog();
    if (options.btfPath !== undefined && !existsSync(options.btfPath)) {
      throw new BtfMissingError(`BTF file ${options.btfPath} does not exist; pass --btf PATH to the BTF of this kernel`, 2);
    }
    if (options.btfPath === undefined && !existsSync(KERNEL_BTF)) {
      throw new BtfMissingError(`kernel has no BTF at ${KERNEL_BTF}; pass --btf PATH to a BTF file for this kernel (BTFHub)`, 2);
    }
    if (!existsSync(path)) throw bpfError(`BPF object ${path}`, 2, ['build it with `npx nx run bpf:build`']);
    const bpf = libbpf();
    const mark = markLibbpfLog();
    const handle = bpf.open_file(path, {
      sz: 80,
      object_name: null,
      relaxed_maps: false,
      pin_root_path: options.pinRoot ?? null,
      removed_attach_prog_fd: 0,
      kconfig: null,
      btf_custom_path: options.btfPath ?? null,
      kernel_log_buf: null,
      kernel_log_size: 0,
      kernel_log_level: 0,
    });
    if (!handle) throw bpfError(`cannot open BPF object ${path}`, bpf.errno(), libbpfLogSince(mark));
    return new BpfObject(path, handle);
  }

  /** Sets the initial bytes of .rodata (the programs' `const volatile` config) before load. */
  setReadOnlyConfig(bytes: Buffer): void {
    this.assertOpen('set read-only config');
    const bpf = libbpf();
    const map = bpf.find_map(this.handle, '.rodata');
    if (!map) throw bpfError(`${this.path} has no .rodata to configure`, 2);
    const size = bpf.map_value_size(map);
    const data = Buffer.alloc(size);
    bytes.copy(data, 0, 0, Math.min(size, bytes.length));
    const rc = bpf.map_set_initial_value(map, data, size);
    if (rc < 0) throw bpfError('cannot set .rodata', -rc);
  }

  /** Resizes a map before load (e.g. the flow table from --max-conversations). */
  setMaxEntries(mapName: string, entries: number): void {
    this.assertOpen('resize a map');
    const bpf = libbpf();
    const rc = bpf.map_set_max_entries(this.mapHandle(mapName), entries);
    if (rc < 0) throw bpfError(`cannot resize map ${mapName} to ${entries}`, -rc);
  }

  /** Leaves a program out of `load` (a kernel without its hook); the others load as usual. */
  setAutoload(programName: string, autoload: boolean): void {
    this.assertOpen('choose the programs to load');
    const bpf = libbpf();
    const handle = bpf.find_program(this.handle, programName);
    if (!handle) throw bpfError(`${this.path} has no program ${programName}`, 2);
    const rc = bpf.program_set_autoload(handle, autoload);
    if (rc < 0) throw bpfError(`cannot ${autoload ? 'include' : 'leave out'} program ${programName}`, -rc);
  }

  /** Names of the maps pinned by name (LIBBPF_PIN_BY_NAME) are the object's map names. */
  mapNames(): string[] {
    this.assertOpen('list maps');
    const names: string[] = [];
    const bpf = libbpf();
    for (let map = bpf.next_map(this.handle, null); map; map = bpf.next_map(this.handle, map)) names.push(bpf.map_name(map));
    return names;
  }

  /** Creates the maps and loads every program into the kernel. */
  load(): void {
    this.assertOpen('load');
    const bpf = libbpf();
    const mark = markLibbpfLog();
    // The verifier gives up (EAGAIN) at any signal pending for this thread, and a CPU profiler's
    // SIGPROF (node --cpu-prof: every 1 ms) came sooner than a verification ends (0.3-0.8 s for
    // each skb program): blocked while loading, a sample waits instead.
    const unblock = blockSignal(SIGPROF);
    let rc: number;
    try {
      rc = bpf.object_load(this.handle);
    } finally {
      unblock();
    }
    if (rc < 0) throw bpfError(`cannot load ${this.path} into the kernel`, -rc, libbpfLogSince(mark));
    this.loaded = true;
  }

  program(name: string): BpfProgram {
    this.assertOpen('find a program');
    const bpf = libbpf();
    const handle = bpf.find_program(this.handle, name);
    if (!handle) throw bpfError(`${this.path} has no program ${name}`, 2);
    return { name, handle, fd: this.loaded ? bpf.program_fd(handle) : -1 };
  }

  map(name: string): BpfMap {
    const bpf = libbpf();
    const handle = this.mapHandle(name);
    return {
      name,
      handle,
      fd: this.loaded ? bpf.map_fd(handle) : -1,
      keySize: bpf.map_key_size(handle),
      valueSize: bpf.map_value_size(handle),
      maxEntries: bpf.map_max_entries(handle),
      type: bpf.map_type(handle),
      flags: bpf.map_flags(handle),
    };
  }

  /** Removes the pins of the LIBBPF_PIN_BY_NAME maps: they go away with the object's last user. */
  unpinMaps(): void {
    this.assertOpen('unpin maps');
    const rc = libbpf().object_unpin_maps(this.handle, null);
    if (rc < 0) throw bpfError(`cannot unpin the maps of ${this.path}`, -rc);
  }

  /** Frees the object: its programs and maps go away once no link holds them. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    libbpf().object_close(this.handle);
  }

  private mapHandle(name: string): bigint {
    this.assertOpen('find a map');
    const handle = libbpf().find_map(this.handle, name);
    if (!handle) throw bpfError(`${this.path} has no map ${name}`, 2);
    return handle;
  }

  private assertOpen(what: string): void {
    if (this.closed) throw new Error(`cannot ${what}: the BPF object ${this.path} is closed`);
  }
}
