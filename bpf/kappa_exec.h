/* Exec: what each process of the watched cgroup was given when it exec'd (tp_btf
 * sched:sched_process_exec): its pid, start time, cgroup, the name exec gave it, the file run and
 * its argument list, copied to userspace through a ring buffer. A client that lives 20 ms has
 * exited before the process-enricher reads /proc/<pid>; capture hands these events to the
 * enricher of its node, which takes the command line (redacted there) from them instead.
 *
 * One program of its own (kappa_exec): userspace leaves it out when the "exec" feature is off.
 * It runs for every exec on the node and returns at once outside the watched cgroup. Included at
 * the end of kappa.bpf.c (uses in_target_cgroup). The same code loads in both objects
 * (kappa.bpf.o and kappa-compat.bpf.o): the task and linux_binprm are BTF pointers of the
 * tracepoint and read with CO-RE probe reads, which tracing programs have on every kernel
 * capture supports; nothing here goes through kappa_kernel.h. */
#ifndef KAPPA_EXEC_H
#define KAPPA_EXEC_H

/* Bytes of the argument list copied (NUL-separated, as in /proc/<pid>/cmdline); a longer list is
 * cut and flagged, and userspace drops the cut argument. A power of two: the length is masked. */
#define KAPPA_EXEC_ARGS_MAX 4096
/* Bytes of the path of the file run (longer paths are cut). */
#define KAPPA_EXEC_FILE_MAX 256

/* Indexes into kappa_exec_counters (per CPU, totals since load). */
#define KAPPA_EXEC_COUNTER_LOST 0	/* events not copied: the ring buffer was full */
#define KAPPA_EXEC_COUNTER_UNREADABLE 1 /* argument lists the kernel could not read (sent without) */
#define KAPPA_EXEC_COUNTER_MAX 4

#define KAPPA_EXEC_ARGS_CUT 1 /* flags: the argument list was longer than KAPPA_EXEC_ARGS_MAX */
#define KAPPA_EXEC_ARGS_UNREADABLE 2

/* One exec. Only the first 304 + args_length bytes are sent. */
struct kappa_exec_event {
	__u64 start_boottime_ns; /* the process's start (group leader's start_boottime) */
	__u64 cgroup_id;	 /* cgroup v2 id at exec */
	__u32 pid;		 /* tgid */
	__u32 tid;		 /* the thread that exec'd (after exec: the tgid) */
	__u16 args_length;	 /* valid bytes of args[] */
	__u8 flags;		 /* KAPPA_EXEC_ARGS_* */
	__u8 pad[5];
	char comm[16];		      /* the name exec gave it */
	char file[KAPPA_EXEC_FILE_MAX]; /* the file run (the interpreter of a #! script), NUL-terminated */
	char args[KAPPA_EXEC_ARGS_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* userspace sets it from --exec-buffer */
} kappa_exec_events SEC(".maps");

/* The event is built here (it is larger than the stack) and only its used part is copied out. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kappa_exec_event);
} kappa_exec_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KAPPA_EXEC_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kappa_exec_counters SEC(".maps");

static __always_inline void exec_count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&kappa_exec_counters, &index);
	if (value)
		*value += 1;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(kappa_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (!in_target_cgroup())
		return 0;
	__u32 zero = 0;
	struct kappa_exec_event *e = bpf_map_lookup_elem(&kappa_exec_scratch, &zero);
	if (!e)
		return 0;
	/* After exec the task is its group's leader (de_thread), so its start is the process's. */
	e->start_boottime_ns = BPF_CORE_READ(p, group_leader, start_boottime);
	e->cgroup_id = bpf_get_current_cgroup_id();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->flags = 0;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* interp is the file run: the path given to execve, or a #! script's interpreter. */
	if (bpf_probe_read_kernel_str(e->file, sizeof(e->file), BPF_CORE_READ(bprm, interp)) < 0)
		e->file[0] = 0;

	/* The new program's argument strings, as the new stack holds them (/proc/<pid>/cmdline). */
	unsigned long arg_start = BPF_CORE_READ(p, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(p, mm, arg_end);
	__u64 length = arg_end > arg_start ? arg_end - arg_start : 0;
	if (length > KAPPA_EXEC_ARGS_MAX) {
		length = KAPPA_EXEC_ARGS_MAX;
		e->flags |= KAPPA_EXEC_ARGS_CUT;
	}
	/* The mask tells the verifier what the test above already ensures. */
	__u32 copy = length & (2 * KAPPA_EXEC_ARGS_MAX - 1);
	if (copy > KAPPA_EXEC_ARGS_MAX)
		copy = KAPPA_EXEC_ARGS_MAX;
	if (copy && bpf_probe_read_user(e->args, copy, (void *)arg_start)) {
		copy = 0;
		e->flags |= KAPPA_EXEC_ARGS_UNREADABLE;
		exec_count(KAPPA_EXEC_COUNTER_UNREADABLE);
	}
	e->args_length = copy;
	/* Userspace reads the ring on a timer: no wakeup per event. */
	if (bpf_ringbuf_output(&kappa_exec_events, e, offsetof(struct kappa_exec_event, args) + copy, BPF_RB_NO_WAKEUP))
		exec_count(KAPPA_EXEC_COUNTER_LOST);
	return 0;
}

#endif
