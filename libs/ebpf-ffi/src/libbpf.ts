// The koffi binding to the system libbpf.so.1 (Debian's 1.1.2): the only place that declares C
// signatures. Everything else in this library calls these through typed wrappers.
import koffi from 'koffi';

/** libbpf and libc, loaded on first use so that importing the library never fails. */
export interface Libbpf {
  open_file: (path: string, opts: Record<string, unknown>) => bigint;
  object_load: (obj: bigint) => number;
  object_close: (obj: bigint) => void;
  find_program: (obj: bigint, name: string) => bigint;
  find_map: (obj: bigint, name: string) => bigint;
  program_fd: (prog: bigint) => number;
  map_fd: (map: bigint) => number;
  map_key_size: (map: bigint) => number;
  map_value_size: (map: bigint) => number;
  map_max_entries: (map: bigint) => number;
  map_type: (map: bigint) => number;
  next_map: (obj: bigint, prev: bigint | null) => bigint | null;
  map_name: (map: bigint) => string;
  map_flags: (map: bigint) => number;
  map_set_max_entries: (map: bigint, n: number) => number;
  map_set_initial_value: (map: bigint, data: Buffer, size: number) => number;
  attach_cgroup: (prog: bigint, cgroupFd: number) => bigint;
  attach_tracepoint: (prog: bigint, category: string, name: string) => bigint;
  attach_program: (prog: bigint) => bigint;
  attach_iter: (prog: bigint, opts: null) => bigint;
  iter_create: (linkFd: number) => number;
  program_set_autoload: (prog: bigint, autoload: boolean) => number;
  obj_get_info_by_fd: (fd: number, info: Buffer, length: Uint32Array) => number;
  lookup_batch: (fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: Uint32Array, opts: Record<string, unknown>) => number;
  link_pin: (link: bigint, path: string) => number;
  link_unpin: (link: bigint) => number;
  link_destroy: (link: bigint) => number;
  link_fd: (link: bigint) => number;
  link_open: (path: string) => bigint;
  link_update_program: (link: bigint, prog: bigint) => number;
  object_unpin_maps: (obj: bigint, path: string | null) => number;
  link_detach: (linkFd: number) => number;
  obj_get: (path: string) => number;
  lookup_and_delete_batch: (fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: Uint32Array, opts: Record<string, unknown>) => number;
  map_lookup_elem: (fd: number, key: Buffer, value: Buffer) => number;
  map_delete_elem: (fd: number, key: Buffer) => number;
  map_update_elem: (fd: number, key: Buffer, value: Buffer, flags: bigint) => number;
  map_get_next_key: (fd: number, key: Buffer | null, next: Buffer) => number;
  tc_hook_create: (hook: Record<string, unknown>) => number;
  tc_hook_destroy: (hook: Record<string, unknown>) => number;
  tc_attach: (hook: Record<string, unknown>, opts: Record<string, unknown>) => number;
  tc_detach: (hook: Record<string, unknown>, opts: Record<string, unknown>) => number;
  set_print: (fn: bigint | null) => bigint;
  vsnprintf: (buf: Buffer, size: number, fmt: bigint, args: bigint) => number;
  close: (fd: number) => number;
  open: (path: string, flags: number) => number;
  flock: (fd: number, operation: number) => number;
  syscall3: (number: number, a: number, b: number, c: number) => number;
  num_possible_cpus: () => number;
  errno: () => number;
  probe_prog_type: (type: number, opts: null) => number;
  probe_map_type: (type: number, opts: null) => number;
  probe_helper: (progType: number, helper: number, opts: null) => number;
  prog_load: (type: number, name: string | null, license: string, insns: Buffer, count: number, opts: null) => number;
  btf_parse: (path: string, base: null) => bigint;
  btf_free: (btf: bigint) => void;
  btf_find_by_name_kind: (btf: bigint, name: string, kind: number) => number;
  /** struct btf_type of `id`, followed by its kind's items; read with koffi.decode. */
  btf_type_by_id: (btf: bigint, id: number) => unknown;
  btf_name_by_offset: (btf: bigint, offset: number) => string | null;
  sigmask: (how: number, set: Buffer | null, old: Buffer | null) => number;
  socket: (domain: number, type: number, protocol: number) => number;
  setsockopt: (fd: number, level: number, name: number, value: Buffer, length: number) => number;
  clock_gettime: (clock: number, timespec: Buffer) => number;
}

let loaded: Libbpf | undefined;

export function libbpf(): Libbpf {
  if (loaded) return loaded;
  const lib = koffi.load('libbpf.so.1');
  const libc = koffi.load('libc.so.6');
  // Mirrors struct bpf_object_open_opts of libbpf 1.1 (sz first, so newer libbpf accepts it).
  koffi.struct('bpf_object_open_opts', {
    sz: 'size_t',
    object_name: 'const char *',
    relaxed_maps: 'bool',
    pin_root_path: 'const char *',
    removed_attach_prog_fd: 'uint32_t',
    kconfig: 'const char *',
    btf_custom_path: 'const char *',
    kernel_log_buf: 'char *',
    kernel_log_size: 'size_t',
    kernel_log_level: 'uint32_t',
  });
  koffi.struct('bpf_map_batch_opts', { sz: 'size_t', elem_flags: 'uint64_t', flags: 'uint64_t' });
  koffi.struct('bpf_tc_hook', { sz: 'size_t', ifindex: 'int', attach_point: 'int', parent: 'uint32_t' });
  koffi.struct('bpf_tc_opts', {
    sz: 'size_t', prog_fd: 'int', flags: 'uint32_t', prog_id: 'uint32_t', handle: 'uint32_t', priority: 'uint32_t',
  });
  koffi.proto('int libbpf_print_fn(int level, void *fmt, void *args)');
  loaded = {
    open_file: lib.func('void *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)'),
    object_load: lib.func('int bpf_object__load(void *obj)'),
    object_close: lib.func('void bpf_object__close(void *obj)'),
    find_program: lib.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
    find_map: lib.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
    program_fd: lib.func('int bpf_program__fd(void *prog)'),
    map_fd: lib.func('int bpf_map__fd(void *map)'),
    map_key_size: lib.func('uint32_t bpf_map__key_size(void *map)'),
    map_value_size: lib.func('uint32_t bpf_map__value_size(void *map)'),
    map_max_entries: lib.func('uint32_t bpf_map__max_entries(void *map)'),
    map_type: lib.func('int bpf_map__type(void *map)'),
    next_map: lib.func('void *bpf_object__next_map(void *obj, void *prev)'),
    map_name: lib.func('const char *bpf_map__name(void *map)'),
    map_flags: lib.func('uint32_t bpf_map__map_flags(void *map)'),
    map_set_max_entries: lib.func('int bpf_map__set_max_entries(void *map, uint32_t n)'),
    map_set_initial_value: lib.func('int bpf_map__set_initial_value(void *map, const void *data, size_t size)'),
    attach_cgroup: lib.func('void *bpf_program__attach_cgroup(void *prog, int cgroup_fd)'),
    attach_tracepoint: lib.func('void *bpf_program__attach_tracepoint(void *prog, const char *category, const char *name)'),
    attach_program: lib.func('void *bpf_program__attach(void *prog)'),
    attach_iter: lib.func('void *bpf_program__attach_iter(void *prog, void *opts)'),
    iter_create: lib.func('int bpf_iter_create(int link_fd)'),
    program_set_autoload: lib.func('int bpf_program__set_autoload(void *prog, bool autoload)'),
    obj_get_info_by_fd: lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, void *len)'),
    lookup_batch: lib.func(
      'int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, void *count, const bpf_map_batch_opts *opts)',
    ),
    link_pin: lib.func('int bpf_link__pin(void *link, const char *path)'),
    link_unpin: lib.func('int bpf_link__unpin(void *link)'),
    link_destroy: lib.func('int bpf_link__destroy(void *link)'),
    link_fd: lib.func('int bpf_link__fd(void *link)'),
    link_open: lib.func('void *bpf_link__open(const char *path)'),
    link_update_program: lib.func('int bpf_link__update_program(void *link, void *prog)'),
    object_unpin_maps: lib.func('int bpf_object__unpin_maps(void *obj, const char *path)'),
    link_detach: lib.func('int bpf_link_detach(int link_fd)'),
    obj_get: lib.func('int bpf_obj_get(const char *path)'),
    lookup_and_delete_batch: lib.func(
      'int bpf_map_lookup_and_delete_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, void *count, const bpf_map_batch_opts *opts)',
    ),
    map_lookup_elem: lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    map_delete_elem: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
    map_update_elem: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
    map_get_next_key: lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
    tc_hook_create: lib.func('int bpf_tc_hook_create(bpf_tc_hook *hook)'),
    tc_hook_destroy: lib.func('int bpf_tc_hook_destroy(bpf_tc_hook *hook)'),
    tc_attach: lib.func('int bpf_tc_attach(const bpf_tc_hook *hook, bpf_tc_opts *opts)'),
    tc_detach: lib.func('int bpf_tc_detach(const bpf_tc_hook *hook, const bpf_tc_opts *opts)'),
    set_print: lib.func('void *libbpf_set_print(libbpf_print_fn *fn)'),
    vsnprintf: libc.func('int vsnprintf(void *buf, size_t size, void *fmt, void *args)'),
    close: libc.func('int close(int fd)'),
    open: libc.func('int open(const char *path, int flags)'),
    flock: libc.func('int flock(int fd, int operation)'),
    syscall3: (() => {
      const syscall = libc.func('long syscall(long number, ...)');
      return (number: number, a: number, b: number, c: number) => Number(syscall(number, 'long', a, 'long', b, 'long', c));
    })(),
    num_possible_cpus: lib.func('int libbpf_num_possible_cpus(void)'),
    errno: () => koffi.errno(),
    probe_prog_type: lib.func('int libbpf_probe_bpf_prog_type(int prog_type, const void *opts)'),
    probe_map_type: lib.func('int libbpf_probe_bpf_map_type(int map_type, const void *opts)'),
    probe_helper: lib.func('int libbpf_probe_bpf_helper(int prog_type, int helper_id, const void *opts)'),
    prog_load: lib.func('int bpf_prog_load(int prog_type, const char *prog_name, const char *license, const void *insns, size_t insn_cnt, const void *opts)'),
    btf_parse: lib.func('void *btf__parse(const char *path, void *base_btf)'),
    btf_free: lib.func('void btf__free(void *btf)'),
    btf_find_by_name_kind: lib.func('int btf__find_by_name_kind(void *btf, const char *name, uint32_t kind)'),
    btf_type_by_id: lib.func('const void *btf__type_by_id(void *btf, uint32_t id)'),
    btf_name_by_offset: lib.func('const char *btf__name_by_offset(void *btf, uint32_t offset)'),
    sigmask: libc.func('int pthread_sigmask(int how, const void *set, void *oldset)'),
    socket: libc.func('int socket(int domain, int type, int protocol)'),
    setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t length)'),
    clock_gettime: libc.func('int clock_gettime(int clock, void *timespec)'),
  };
  return loaded;
}

/** Registers a JS function as libbpf's printer (verifier logs and warnings reach it). */
export function registerPrinter(print: (level: number, line: string) => void): void {
  const bpf = libbpf();
  // A verifier log comes as one message and explains a refusal in its LAST lines: room for all of it.
  const buffer = Buffer.alloc(1 << 20);
  const callback = koffi.register((level: number, fmt: bigint, args: bigint) => {
    // libbpf hands over printf arguments as a va_list; libc formats them for us.
    const length = bpf.vsnprintf(buffer, buffer.length, fmt, args);
    print(level, buffer.toString('utf8', 0, Math.min(Math.max(length, 0), buffer.length - 1)));
    return 0;
  }, 'libbpf_print_fn *');
  bpf.set_print(callback);
}
