/* Maps of the capture programs, and the kernel-only per-socket state. Sizes are defaults:
 * userspace sets the flow maps and kappa_roles from --max-conversations before load. Every map is
 * pinned by name under the instance's bpffs folder (userspace sets pin_root_path), so a restart
 * after a crash reuses them: the counts made while capture was down, and the vantages and owners
 * of open conversations, survive. */
#ifndef KAPPA_MAPS_H
#define KAPPA_MAPS_H

/* What the kernel knows about one socket, in BPF_MAP_TYPE_SK_STORAGE: freed with the socket, so
 * nothing here can outlive it or be found again by a socket that reuses its address. Cloned from
 * a listener to the sockets it accepts (BPF_F_CLONE), so accepted connections keep their owner;
 * the clone's conversation fields are reset when it is established.
 *
 * A connected TCP socket counts its packets here (`counting`): cumulative totals that only grow,
 * so a packet costs this one storage lookup and two adds. The drain reads them through the
 * task_file iterator and reports what grew since the last report (`kappa_reported`); the socket's
 * destruction reports the rest. Each direction's totals sit on a cache line of their own (the
 * storage data starts 8 bytes into a cache-aligned element: tx at 184 and rx at 248 start lines
 * 192 and 256 of it). */
struct kappa_sock {
	/* offset 0, the storage element's first line with the map pointer the lookup checks: all
	 * a connected TCP socket's packet reads besides its direction's totals. */
	__u32 keyed;	    /* key holds this socket's connected tuple: packets need no parsing */
	__u32 dead;	    /* destroyed: what is counted from now on goes to a flow map */
	__u8 counting;	    /* packets are counted in this storage (below), not in a flow map */
	__u8 role;	    /* KAPPA_ROLE_* once known */
	__u16 echo_id;	    /* raw ICMP sockets: the identifier of the echo requests this socket sent */
	__u32 netns;	    /* the socket's network namespace (inode number) */
	struct kappa_flow_key key; /* the connected tuple, valid when `keyed` (ports and version on line 0) */
	__u64 cgroup_id;
	__u64 owner_start_ns;  /* start_boottime of the owner's thread-group leader */
	__u64 connect_ns;      /* when the SYN of an active open left */
	__u64 pending_send_ns; /* app latency: first send not yet answered by a receive */
	__u64 cookie;	       /* socket cookie: the key of this socket's kappa_reported entry */
	__u32 pid;
	__u32 retrans_seen; /* hash path: tcp_sock.total_retrans already added to a flow */
	__u32 handshake_us; /* SYN -> established of an active open */
	__u32 pad_owner;
	char comm[KAPPA_COMM_LEN];
	/* request -> response latency (tracepoints), cumulative */
	__u64 app_sum_us;
	__u64 app_count;
	__u32 app_max_us[2]; /* per epoch parity, valid for app_max_epoch[parity] */
	__u32 app_max_epoch[2];
	__u8 pad_line[16];
	/* offset 184: sent */
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 tx_last_ns;
	__u32 tx_tcp_flags[2]; /* OR of the flags in the epoch tx_flags_epoch[parity] */
	__u32 tx_flags_epoch[2];
	__u8 pad_tx[24];
	/* offset 248: received */
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 rx_last_ns;
	__u32 rx_tcp_flags[2];
	__u32 rx_flags_epoch[2];
	/* 296 bytes, not the 288 of the layout before the hot fields moved to line 0: a pinned
	 * kappa_socks of that build is refused by its size (instance.ts) instead of misread. */
	__u64 pad_end;
};

_Static_assert(__builtin_offsetof(struct kappa_sock, key.ip_version) + 8 < 64, "the hot fields share the map pointer's line");
_Static_assert(__builtin_offsetof(struct kappa_sock, tx_bytes) == 184, "tx totals start a cache line");
_Static_assert(__builtin_offsetof(struct kappa_sock, rx_bytes) == 248, "rx totals start the next one");

/* How much of a counting socket's totals some drain or its destruction already reported. Each
 * reporter takes what grew with a compare-and-swap on these marks, so the iterator, the socket's
 * destruction and a packet racing it never report the same bytes twice. Pinned: a restarted
 * instance continues from the marks. An LRU: entries of destroyed sockets age out; a live
 * socket's entry is touched at every drain. */
struct kappa_reported {
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 app_sum_us;
	__u64 app_count;
	__u64 retransmits; /* tcp_sock.total_retrans reported */
	__u32 handshake;   /* 1 once the handshake latency was reported */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct kappa_reported);
} kappa_reported SEC(".maps");

/* The iterator's copy of one socket's storage (too large for its stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kappa_sock);
} kappa_sock_copy SEC(".maps");

/* Two flow maps, counted into alternately (see struct kappa_drain_state). Plain hashes, not
 * LRUs: when one is full the insert fails and the loss is counted, where an LRU would silently
 * evict a conversation. Not preallocated, so memory follows the number of conversations. */
#define KAPPA_FLOW_MAP(name)                                                                       \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_HASH);                                                   \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                                               \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                              \
		__uint(max_entries, 262144);                                                       \
		__type(key, struct kappa_flow_key);                                                \
		__type(value, struct kappa_flow_stats);                                            \
	} name SEC(".maps")

KAPPA_FLOW_MAP(kappa_flows_0);
KAPPA_FLOW_MAP(kappa_flows_1);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kappa_drain_state);
} kappa_drain SEC(".maps");

/* The drain's marks (struct kappa_drain_marks), by epoch parity. Pinned: a crashed instance's
 * programs keep marking for the instance that takes their maps over. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct kappa_drain_marks);
} kappa_marks SEC(".maps");

/* Who opened conversations that no connected socket keys (unconnected UDP, ICMP, listeners):
 * outlives the drains, because the next packet of such a conversation does not show it. */
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
	__type(value, struct kappa_sock);
} kappa_socks SEC(".maps");

/* The last packet counted on this CPU among those the kernel may hand to several sockets
 * (multicast, broadcast, raw sockets): their copies are delivered one after another on the CPU
 * that received the packet, so a copy looks like the packet just counted, for another socket. */
struct kappa_delivery {
	struct kappa_flow_key key;
	__u64 fingerprint[2]; /* IP id/length/checksum and the first 8 transport bytes */
	__u64 socket_cookie;  /* the socket it was counted at */
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kappa_delivery);
} kappa_last_delivery SEC(".maps");

/* Interface mode: the ports of a fragmented datagram, from its first fragment, for the later
 * fragments (which carry no transport header). */
struct kappa_fragment_key {
	__u8 src_ip[16];
	__u8 dst_ip[16];
	__u32 id;
	__u32 ifindex;
	__u8 protocol;
	__u8 pad[3];
};

struct kappa_fragment_ports {
	__u16 src_port;
	__u16 dst_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct kappa_fragment_key);
	__type(value, struct kappa_fragment_ports);
} kappa_fragments SEC(".maps");

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

/* bpf_ktime_get_coarse_ns() of this CPU's current tick. The helper is a real call (on this
 * machine's kernel every return goes through the SRSO return thunk: 25-49 ns per packet, a third
 * of the counting, by bench:datapath's profile), while bpf_jiffies64() is inlined by the verifier
 * into one load, and the coarse clock only moves at a tick, when jiffies does: so the coarse time
 * is read once per tick per CPU and kept here with the jiffies it belongs to. */
struct kappa_clock {
	__u64 jiffies;
	__u64 coarse_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kappa_clock);
} kappa_clock SEC(".maps");

/* What bpf_ktime_get_coarse_ns() returns now. The tick advances jiffies just before the coarse
 * clock, so a new jiffies is kept only once the clock has moved too (until then every call reads
 * the clock). A program interrupting another between the two stores finds the old jiffies and
 * reads the clock itself; one that saw the new jiffies saw the time stored before it. */
static __always_inline __u64 coarse_now(void)
{
	__u32 zero = 0;
	__u64 jiffies = bpf_jiffies64();
	struct kappa_clock *clock = bpf_map_lookup_elem(&kappa_clock, &zero);
	if (!clock)
		return bpf_ktime_get_coarse_ns();
	if (clock->jiffies == jiffies)
		return clock->coarse_ns;
	__u64 now = bpf_ktime_get_coarse_ns();
	if (now != clock->coarse_ns) {
		clock->coarse_ns = now;
		asm volatile("" ::: "memory");
		clock->jiffies = jiffies;
	}
	return now;
}

/* The drain's epoch counter; the flow map programs count into is kappa_flows_<epoch & 1>. */
static __always_inline __u32 current_epoch(void)
{
	__u32 zero = 0;
	struct kappa_drain_state *state = bpf_map_lookup_elem(&kappa_drain, &zero);
	return state ? state->epoch : 0;
}

/* Tells the drain of `epoch` that it has work (see struct kappa_drain_marks). Called once per
 * socket or conversation per epoch, not per packet; the store only when the mark is not set yet,
 * so the line stays shared between CPUs. */
static __always_inline void mark_drain(__u32 epoch, bool flows)
{
	__u32 parity = epoch & 1;
	struct kappa_drain_marks *marks = bpf_map_lookup_elem(&kappa_marks, &parity);
	if (!marks)
		return;
	if (flows) {
		if (!marks->flows)
			marks->flows = 1;
	} else if (!marks->sockets) {
		marks->sockets = 1;
	}
}

static __always_inline struct kappa_flow_stats *flow_lookup(__u32 epoch, struct kappa_flow_key *key)
{
	/* Two call sites, one map each: the verifier inlines a hash lookup only where the map is known. */
	if (epoch & 1)
		return bpf_map_lookup_elem(&kappa_flows_1, key);
	return bpf_map_lookup_elem(&kappa_flows_0, key);
}

static __always_inline long flow_insert(__u32 epoch, struct kappa_flow_key *key, struct kappa_flow_stats *init)
{
	if (epoch & 1)
		return bpf_map_update_elem(&kappa_flows_1, key, init, BPF_NOEXIST);
	return bpf_map_update_elem(&kappa_flows_0, key, init, BPF_NOEXIST);
}

#endif
