/* The single source of truth for every struct and constant that the BPF programs share with
 * userspace (apps/capture/src/layout.ts decodes these; a test compares that layout with this
 * object's BTF). Fixed-width types only, every field naturally aligned, explicit padding: the
 * TypeScript side reads raw bytes, so no compiler may insert anything here. */
#ifndef KAPPA_H
#define KAPPA_H

/* Who opened the conversation, seen from the local socket (becomes FlowRecord.vantage). */
#define KAPPA_ROLE_UNKNOWN 0
#define KAPPA_ROLE_SRC 1 /* the local end initiated it: TCP connect, first UDP/ICMP sender */
#define KAPPA_ROLE_DST 2 /* the local end accepted it */

/* Indexes into the per-CPU counter array `kappa_counters` (totals since the maps were created). */
#define KAPPA_COUNTER_OVERFLOW_PACKETS 0 /* packets not counted because the flow map was full */
#define KAPPA_COUNTER_OVERFLOW_BYTES 1
#define KAPPA_COUNTER_ROLE_OVERFLOW 2	/* conversations whose role could not be remembered */
#define KAPPA_COUNTER_COPIES_SKIPPED 3	/* one wire packet delivered to several sockets: the copies */
#define KAPPA_COUNTER_REPORTS_LOST 4	/* sockets whose report marks aged out of kappa_reported */
#define KAPPA_COUNTER_MAX 8

#define KAPPA_COMM_LEN 16

/* A conversation as the local socket sees it, in one network namespace. IPv4 addresses are
 * stored IPv4-mapped (::ffff:a.b.c.d) so a dual-stack socket and its IPv4 packets produce one
 * key. The namespace keeps identical tuples of two pods (loopback, 127.0.0.6 sidecars, probes)
 * apart. */
struct kappa_flow_key {
	__u8 local_ip[16];
	__u8 remote_ip[16];
	__u16 local_port;  /* host order; ICMP echo: the identifier */
	__u16 remote_port; /* host order; ICMP echo: the identifier */
	__u8 ip_version;   /* 4 or 6, from the packet */
	__u8 protocol;	   /* IANA number */
	__u16 pad;	   /* always zero: part of the hashed key */
	__u32 ifindex;	   /* 0 in socket mode; the interface in interface (tc) mode */
	__u32 netns;	   /* inode of the network namespace (as /proc/<pid>/ns/net shows it); 0 unknown */
};

/* Totals of one conversation in one drain interval, local perspective (tx = sent by the local
 * end). Packets are wire packets (GSO segments, IP fragments), bytes are IP bytes as on the
 * wire. What each direction's packets update sits on its own cache line (tx at 80, rx at 144:
 * 64 bytes apart, so the two never share a line), so the two directions of a busy connection,
 * counted on two CPUs, do not bounce one line between them. */
struct kappa_flow_stats {
	__u64 first_ns;	      /* bpf_ktime_get_ns() when the entry was created */
	__u64 cgroup_id;      /* cgroup v2 id of the owning process */
	__u64 owner_start_ns; /* start_boottime of the owner's thread-group leader; 0 unknown */
	__u64 app_sum_us;     /* request -> response latency, sum over app_count pairs */
	__u32 pid;	      /* tgid of the process that created / connected / first used the socket */
	__u32 handshake_us;   /* SYN -> established of an active open, in the interval it completed */
	__u32 srtt_us;	      /* smoothed RTT at the last packet, microseconds (TCP) */
	__u32 min_rtt_us;
	__u32 retransmits;    /* segments retransmitted (tcp_sock.total_retrans grew by) */
	__u32 app_count;
	__u32 app_max_us;
	__u8 role;	      /* KAPPA_ROLE_* */
	__u8 icmp_type;	      /* of the first ICMP packet */
	__u8 icmp_code;
	__u8 pad;
	char comm[KAPPA_COMM_LEN];
	/* offset 80: sent by the local end */
	__u64 tx_bytes;
	__u64 tx_packets;
	__u64 tx_last_ns; /* bpf_ktime_get_coarse_ns() of the last packet */
	__u32 tx_tcp_flags;
	__u32 tx_pad;
	__u8 line_pad[32];
	/* offset 144: received by the local end */
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 rx_last_ns;
	__u32 rx_tcp_flags;
	__u32 rx_pad;
	/* offset 176: packets of this conversation the kernel dropped (bpf/kappa_drop.h), either
	 * direction, and up to three of their reasons (enum skb_drop_reason values of this kernel,
	 * first seen first; 0: slot free) with the packets of each. */
	__u64 drop_bytes;
	__u32 drop_packets;
	__u32 drop_reason[3];
	__u32 drop_reason_packets[3];
	__u32 drop_pad;
};

/* Read-only configuration, set by userspace before load (the object's only .rodata variable). */
struct kappa_config {
	__u64 target_cgroup_id;	   /* with --cgroup: the sub-tree tracepoints keep */
	__u32 target_cgroup_level; /* its depth below the cgroup v2 root; 0 = no filtering */
	__u32 socket_counters;	   /* 1: connected TCP sockets count in socket storage (the drain's
				    * iterator loaded); 0: every packet goes to a flow map */
	__u32 dns;		   /* 1: the skb hooks copy DNS messages to kappa_dns_events (the DNS
				    * feature, bpf/kappa_dns.h) */
	__u32 pad;
	/* icmpv6_rcv's code, [start, end) from /proc/kallsyms (0, 0: unknown): the drops program
	 * skips the NOT_SPECIFIED frees made there, messages handled or ignored (bpf/kappa_drop.h) */
	__u64 icmpv6_rcv_start;
	__u64 icmpv6_rcv_end;
};

/* The drain's state, in the one-entry array `kappa_drain`. Programs count into
 * kappa_flows_<epoch & 1>; userspace flips the epoch, waits one RCU grace period (every program
 * that read the old epoch has returned), and then reads and empties the other map, which nothing
 * writes any more: no update can fall between a read and its delete. The start times make the
 * records of a map a crashed instance left behind carry the interval they were counted in. */
struct kappa_drain_state {
	__u32 epoch;
	__u32 pad;
	__u64 started_unix_ns[2]; /* when each map last became the one programs count into */
};

/* What the drain of an epoch has to read, in `kappa_marks` (one element per epoch parity, so
 * userspace clears the drained parity's marks without touching the ones programs set now). Set
 * by programs, never cleared by them: `flows` at the first insert into kappa_flows_<parity>,
 * `sockets` when a counting socket first counts (packets or app latency) in an epoch of that
 * parity. An idle drain finds both 0 and skips the socket iterator and the map walk. */
struct kappa_drain_marks {
	__u32 sockets; /* the socket iterator has something to report */
	__u32 flows;   /* kappa_flows_<parity> has entries */
};

#endif
