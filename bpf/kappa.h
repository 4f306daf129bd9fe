/* The single source of truth for every struct and constant that the BPF programs share with
 * userspace (libs/ebpf-ffi decodes these; a test compares its layout with this object's BTF).
 * Fixed-width types only, every field naturally aligned, explicit padding: the TypeScript side
 * reads raw bytes, so no compiler may insert anything here. */
#ifndef KAPPA_H
#define KAPPA_H

/* Who opened the conversation, seen from the local socket (becomes FlowRecord.vantage). */
#define KAPPA_ROLE_UNKNOWN 0
#define KAPPA_ROLE_SRC 1 /* the local end initiated it: TCP connect, first UDP/ICMP sender */
#define KAPPA_ROLE_DST 2 /* the local end accepted it */

/* Indexes into the per-CPU counter array `kappa_counters`. */
#define KAPPA_COUNTER_OVERFLOW_PACKETS 0 /* packets not counted because `kappa_flows` was full */
#define KAPPA_COUNTER_OVERFLOW_BYTES 1
#define KAPPA_COUNTER_ROLE_OVERFLOW 2 /* conversations whose role could not be remembered */
#define KAPPA_COUNTER_MAX 4

#define KAPPA_COMM_LEN 16

/* A conversation as the local socket sees it. IPv4 addresses are stored IPv4-mapped
 * (::ffff:a.b.c.d) so a dual-stack socket and its IPv4 packets produce one key. */
struct kappa_flow_key {
	__u8 local_ip[16];
	__u8 remote_ip[16];
	__u16 local_port;  /* host order; ICMP echo: the identifier */
	__u16 remote_port; /* host order; ICMP echo: the identifier */
	__u8 ip_version;   /* 4 or 6, from the packet */
	__u8 protocol;     /* IANA number */
	__u16 pad;         /* always zero: part of the hashed key */
	__u32 ifindex;     /* 0 in socket mode; the interface in interface (tc) mode */
};

/* Totals of one conversation since the last drain, local perspective (tx = sent by the local
 * end). Packets are wire segments, bytes are IP bytes as on the wire. */
struct kappa_flow_stats {
	__u64 first_ns; /* bpf_ktime_get_ns() of the first packet since the last drain */
	__u64 last_ns;
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 cgroup_id;  /* cgroup v2 id of the owning process */
	__u64 app_sum_us; /* request -> response latency, sum over app_count pairs */
	__u32 pid;        /* tgid of the process that created / connected / bound the socket */
	__u32 srtt_us;    /* smoothed RTT at the last packet, microseconds (TCP) */
	__u32 min_rtt_us;
	__u32 retransmits; /* delta of tcp_sock.total_retrans since the last drain */
	__u32 handshake_us; /* SYN -> established of an active open, in the interval it completed */
	__u32 app_count;
	__u32 app_max_us;
	__u32 tcp_flags; /* OR of the flags seen in both directions */
	__u8 role;       /* KAPPA_ROLE_* */
	__u8 icmp_type;  /* of the first ICMP packet */
	__u8 icmp_code;
	__u8 pad;
	char comm[KAPPA_COMM_LEN];
	__u32 pad2;
};

/* Read-only configuration, set by userspace before load (the object's only .rodata variable). */
struct kappa_config {
	__u64 target_cgroup_id; /* with --cgroup: the sub-tree tracepoints keep */
	__u32 target_cgroup_level; /* its depth below the cgroup v2 root; 0 = no filtering */
	__u32 pad;
};

/* Per-socket state in BPF_MAP_TYPE_SK_STORAGE (kernel-only; userspace never reads it). Cloned
 * from a listener to the sockets it accepts, so accepted connections keep their owner. */
struct kappa_sock_owner {
	__u64 cgroup_id;
	__u64 connect_ns; /* when the SYN of an active open left */
	__u32 pid;
	__u32 role;
	__u32 handshake_us;
	__u32 handshake_reported;
	__u32 total_retrans_seen; /* total_retrans already added to a flow */
	__u32 pad;
	char comm[KAPPA_COMM_LEN];
};

/* A send on a socket waiting for the receive that answers it (app latency). */
struct kappa_pending_request {
	__u64 sent_ns;
};

#endif
