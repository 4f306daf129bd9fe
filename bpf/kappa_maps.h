/* Maps of the capture programs. Sizes are defaults: userspace sets kappa_flows and kappa_roles
 * from --max-conversations before load. Every map is pinned by name under the instance's bpffs
 * folder (userspace sets pin_root_path), so a restart after a crash reuses them: the counts made
 * while capture was down, and the vantages and owners of open conversations, survive. */
#ifndef KAPPA_MAPS_H
#define KAPPA_MAPS_H

/* A plain hash, not an LRU: when it is full the update fails and the loss is counted, where an
 * LRU would silently evict a conversation. Not preallocated, so an element deleted by the
 * drain is freed after an RCU grace period instead of being reused under a running program. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct kappa_flow_key);
	__type(value, struct kappa_flow_stats);
} kappa_flows SEC(".maps");

/* Who opened each conversation; outlives the drains (see conversation_role). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 262144);
	__type(key, struct kappa_flow_key);
	__type(value, __u32);
} kappa_roles SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct kappa_sock_owner);
} kappa_owners SEC(".maps");

/* Keyed by the kernel's struct sock address, which the sock tracepoints expose. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct kappa_pending_request);
} kappa_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, KAPPA_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kappa_counters SEC(".maps");

static __always_inline void count(__u32 index, __u64 amount)
{
	__u64 *value = bpf_map_lookup_elem(&kappa_counters, &index);
	if (value)
		*value += amount; /* per-CPU: no other writer */
}

#endif
