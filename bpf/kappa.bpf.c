// SPDX-License-Identifier: GPL-2.0
/* kappa capture. Socket mode: per-conversation wire counts at the cgroup skb hooks; the owning
 * process, the namespace and, once connected, the conversation key kept per socket in socket
 * storage, so a connected socket's packet needs no parsing; TCP health from the socket; request ->
 * response latency from the sock tracepoints. Interface mode: the same counts at tc.
 * Userspace drains the flow map programs are not counting into (see struct kappa_drain_state).
 *
 * Sections: socket storage and owners | flow entries | skb hooks | sock hooks and sock_ops |
 * socket tracepoints | interface mode. Each program stands alone: userspace may leave any of them
 * out at load (a kernel without its hook) and the others count on. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "kappa.h"
#include "kappa_maps.h"
#include "kappa_packet.h"
#include "kappa_kernel.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2
#define SOCK_RAW 3
#define EEXIST 17
#define TCP_CLOSE 7
#define PACKET_HOST 0
/* Below this an IP datagram is never fragmented (the IPv4 minimum MTU of a link is 576). */
#define MIN_FRAGMENTED_LEN 576
/* Copies of one packet reach their sockets within microseconds of each other. */
#define COPY_WINDOW_NS 100000

/* Profiling (tools/bench/datapath-variants.sh): an object built with -DKAPPA_PROFILE_STOP=n
 * stops counting at point n of a connected TCP socket's path (1: the skb programs return at
 * once; 2: after the socket-storage lookup; 3: after the epoch and the clock; 4: after the headers;
 * 5: after the two adds; from 2 on the DNS port test after it still runs; 6: the socket
 * tracepoints return after their storage lookup, the skb programs run whole; 7 and 8: the skb
 * programs read a slot found by the socket cookie instead of the storage, and return), so
 * bpf_stats of objects stopped at successive points say what each part costs. 0 (every real
 * build): no stop. */
#ifndef KAPPA_PROFILE_STOP
#define KAPPA_PROFILE_STOP 0
#endif
#define PROFILE_STOP(n)                                                                            \
	do {                                                                                       \
		if (KAPPA_PROFILE_STOP == (n))                                                      \
			return 1;                                                                  \
	} while (0)
#define PROFILE_STOP0(n)                                                                           \
	do {                                                                                       \
		if (KAPPA_PROFILE_STOP == (n))                                                      \
			return 0;                                                                  \
	} while (0)
#define PROFILE_STOP_FALSE(n)                                                                      \
	do {                                                                                       \
		if (KAPPA_PROFILE_STOP == (n))                                                      \
			return false;                                                              \
	} while (0)

/* Set by userspace before load: with --cgroup, tracepoints (which fire for every process)
 * keep only processes below that cgroup, like the cgroup hooks do by construction. */
const volatile struct kappa_config kappa_config = {};

/* ---- socket storage and owners ------------------------------------------------------------ */

static __always_inline bool in_target_cgroup(void)
{
	if (!kappa_config.target_cgroup_level)
		return true;
	return bpf_get_current_ancestor_cgroup_id(kappa_config.target_cgroup_level) == kappa_config.target_cgroup_id;
}

/* The current process becomes the socket's owner: tgid, comm, cgroup, and the start time of its
 * thread-group leader (what /proc/<pid>/stat says), so a reused pid can be told apart exactly. */
static __always_inline void set_owner_from_current(struct kappa_sock *s)
{
	struct task_struct *task = bpf_get_current_task_btf();
	s->pid = bpf_get_current_pid_tgid() >> 32;
	s->cgroup_id = bpf_get_current_cgroup_id();
	s->owner_start_ns = task->group_leader->start_boottime;
	bpf_get_current_comm(s->comm, sizeof(s->comm));
}

static __always_inline void copy_owner(struct kappa_flow_stats *st, struct kappa_sock *s)
{
	st->pid = s->pid;
	st->cgroup_id = s->cgroup_id;
	st->owner_start_ns = s->owner_start_ns;
	__builtin_memcpy(st->comm, s->comm, sizeof(st->comm));
}

/* A connected TCP or UDP socket: its own tuple is the conversation (raw and ICMP sockets, and
 * sockets without a peer, are keyed packet by packet). */
static __always_inline bool keyable(struct bpf_sock *sk, __u16 dst_port)
{
	return dst_port != 0 && sk->type != SOCK_RAW &&
	       (sk->protocol == KAPPA_IPPROTO_TCP || sk->protocol == KAPPA_IPPROTO_UDP);
}

/* The conversation key from the socket's own tuple: DNAT'd traffic then keeps the address the
 * application connected to. A TCP socket then counts its packets in its storage (when the drain's
 * iterator is loaded); `cookie` and `total_retrans` (what it retransmitted before it was keyed:
 * not this capture's to report) start its kappa_reported entry. */
static __always_inline void key_socket(struct kappa_sock *s, struct bpf_sock *sk, __u64 cookie, __u32 total_retrans)
{
	struct kappa_flow_key *key = &s->key;
	if (sk->family == AF_INET) {
		set_v4_mapped(key->local_ip, sk->src_ip4);
		set_v4_mapped(key->remote_ip, sk->dst_ip4);
		key->ip_version = 4;
	} else {
		/* One load per word: the verifier forbids pointer arithmetic on a socket. */
		copy_ip6(key->local_ip, sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]);
		copy_ip6(key->remote_ip, sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2], sk->dst_ip6[3]);
		/* A dual-stack socket talking IPv4 sends IPv4 packets: key it as its packets would be. */
		key->ip_version = (sk->dst_ip6[0] == 0 && sk->dst_ip6[1] == 0 && sk->dst_ip6[2] == bpf_htonl(0xffff)) ? 4 : 6;
	}
	key->local_port = sk->src_port;
	key->remote_port = bpf_ntohs(sk->dst_port);
	key->protocol = sk->protocol;
	key->pad = 0;
	key->ifindex = 0;
	key->netns = s->netns;
	if (kappa_config.socket_counters && sk->protocol == KAPPA_IPPROTO_TCP && cookie) {
		/* A re-keyed socket (connect after a failed connect) keeps its marks: its totals only grow. */
		struct kappa_reported start = { .retransmits = total_retrans };
		bpf_map_update_elem(&kappa_reported, &cookie, &start, BPF_NOEXIST);
		s->cookie = cookie;
		s->counting = 1;
	}
	/* Published last, with a full barrier: a reader that sees it sees the key. */
	__sync_fetch_and_or(&s->keyed, 1);
}

/* ---- flow entries ----------------------------------------------------------------------- */

/* The conversation's entry in the map programs count into now, created with its owner and role
 * on the first packet of the interval. A full map is counted in kappa_counters, never silent. */
static __always_inline struct kappa_flow_stats *flow_entry(__u32 epoch, struct kappa_flow_key *key, struct kappa_sock *s,
							   __u8 role, struct packet *pkt, __u64 segs, __u64 bytes)
{
	struct kappa_flow_stats *st = flow_lookup(epoch, key);
	if (st)
		return st;
	struct kappa_flow_stats init = {};
	init.first_ns = bpf_ktime_get_ns();
	init.role = role;
	if (pkt) {
		init.icmp_type = pkt->icmp_type;
		init.icmp_code = pkt->icmp_code;
	}
	if (s)
		copy_owner(&init, s);
	long err = flow_insert(epoch, key, &init);
	if (!err)
		mark_drain(epoch, true);
	if (!err || err == -EEXIST /* another CPU created it first (and marked it) */)
		st = flow_lookup(epoch, key);
	if (!st) {
		count(KAPPA_COUNTER_OVERFLOW_PACKETS, segs);
		count(KAPPA_COUNTER_OVERFLOW_BYTES, bytes);
	}
	return st;
}

static __always_inline void add_packets(struct kappa_flow_stats *st, bool egress, __u64 segs, __u64 bytes, __u8 tcp_flags)
{
	__u64 now = coarse_now();
	if (egress) {
		__sync_fetch_and_add(&st->tx_packets, segs);
		__sync_fetch_and_add(&st->tx_bytes, bytes);
		if (st->tx_last_ns != now)
			st->tx_last_ns = now;
		if ((st->tx_tcp_flags | tcp_flags) != st->tx_tcp_flags)
			__sync_fetch_and_or(&st->tx_tcp_flags, tcp_flags);
	} else {
		__sync_fetch_and_add(&st->rx_packets, segs);
		__sync_fetch_and_add(&st->rx_bytes, bytes);
		if (st->rx_last_ns != now)
			st->rx_last_ns = now;
		if ((st->rx_tcp_flags | tcp_flags) != st->rx_tcp_flags)
			__sync_fetch_and_or(&st->rx_tcp_flags, tcp_flags);
	}
}

/* What grew past a report mark, taken with a compare-and-swap: of two reporters racing, each
 * gets a disjoint part, and what neither took stays for the next report. */
static __always_inline __u64 take(__u64 *mark, __u64 now)
{
	for (int i = 0; i < 4; i++) {
		__u64 seen = *mark;
		if (now <= seen)
			return 0;
		if (__sync_val_compare_and_swap(mark, seen, now) == seen)
			return now - seen;
	}
	return 0;
}

/* A per-epoch value of a counting socket (TCP flags, app max), if it belongs to `epoch`. */
static __always_inline __u32 of_epoch(__u32 *values, __u32 *epochs, __u32 epoch)
{
	__u32 p = epoch & 1;
	return epochs[p] == epoch ? values[p] : 0;
}

/* Reports what a counting socket's totals grew by since the last report into the flow entry of
 * `epoch`. `s` is the socket's storage, or the drain iterator's copy of it. TCP health is what
 * the caller read from the socket now (total_retrans 0: unknown, nothing taken). */
static __always_inline void report_socket(struct kappa_sock *s, __u32 epoch, __u32 total_retrans, __u32 srtt_us,
					  __u32 min_rtt_us)
{
	__u64 cookie = s->cookie;
	struct kappa_reported *r = bpf_map_lookup_elem(&kappa_reported, &cookie);
	if (!r) {
		/* Aged out of the LRU (the map is smaller than the sockets alive): start over from
		 * here, without reporting totals that may have been reported before. */
		struct kappa_reported start = { .tx_bytes = s->tx_bytes, .tx_packets = s->tx_packets, .rx_bytes = s->rx_bytes,
						 .rx_packets = s->rx_packets, .app_sum_us = s->app_sum_us, .app_count = s->app_count,
						 .retransmits = total_retrans, .handshake = 1 };
		bpf_map_update_elem(&kappa_reported, &cookie, &start, BPF_NOEXIST);
		count(KAPPA_COUNTER_REPORTS_LOST, 1);
		return;
	}
	__u64 tx_bytes = take(&r->tx_bytes, s->tx_bytes);
	__u64 tx_packets = take(&r->tx_packets, s->tx_packets);
	__u64 rx_bytes = take(&r->rx_bytes, s->rx_bytes);
	__u64 rx_packets = take(&r->rx_packets, s->rx_packets);
	__u64 retransmits = total_retrans ? take(&r->retransmits, total_retrans) : 0;
	__u64 app_count = take(&r->app_count, s->app_count);
	__u64 app_sum_us = take(&r->app_sum_us, s->app_sum_us);
	bool handshake = s->handshake_us && !r->handshake && __sync_val_compare_and_swap(&r->handshake, 0, 1) == 0;
	if (!(tx_packets | rx_packets | tx_bytes | rx_bytes | retransmits | app_count | app_sum_us) && !handshake)
		return;
	struct kappa_flow_stats *st = flow_entry(epoch, &s->key, s, s->role, 0, tx_packets + rx_packets, tx_bytes + rx_bytes);
	if (!st)
		return;
	if (!st->pid && s->pid)
		copy_owner(st, s); /* the entry was made before a process claimed the socket */
	if (tx_packets | tx_bytes) {
		__sync_fetch_and_add(&st->tx_packets, tx_packets);
		__sync_fetch_and_add(&st->tx_bytes, tx_bytes);
		if (st->tx_last_ns < s->tx_last_ns)
			st->tx_last_ns = s->tx_last_ns;
	}
	if (rx_packets | rx_bytes) {
		__sync_fetch_and_add(&st->rx_packets, rx_packets);
		__sync_fetch_and_add(&st->rx_bytes, rx_bytes);
		if (st->rx_last_ns < s->rx_last_ns)
			st->rx_last_ns = s->rx_last_ns;
	}
	__u32 tx_flags = of_epoch(s->tx_tcp_flags, s->tx_flags_epoch, epoch);
	__u32 rx_flags = of_epoch(s->rx_tcp_flags, s->rx_flags_epoch, epoch);
	if (tx_flags)
		__sync_fetch_and_or(&st->tx_tcp_flags, tx_flags);
	if (rx_flags)
		__sync_fetch_and_or(&st->rx_tcp_flags, rx_flags);
	if (retransmits)
		__sync_fetch_and_add(&st->retransmits, retransmits);
	if (srtt_us)
		st->srtt_us = srtt_us;
	if (min_rtt_us && min_rtt_us != ~0U)
		st->min_rtt_us = min_rtt_us;
	if (handshake)
		st->handshake_us = s->handshake_us;
	if (app_count | app_sum_us) {
		__sync_fetch_and_add(&st->app_count, app_count);
		__sync_fetch_and_add(&st->app_sum_us, app_sum_us);
	}
	__u32 app_max = of_epoch(s->app_max_us, s->app_max_epoch, epoch);
	if (app_max > st->app_max_us)
		st->app_max_us = app_max;
}

/* Who opened a conversation no sockops callback told us about: a SYN's direction for TCP, the
 * first sender for UDP and ICMP. Remembered in kappa_roles, which outlives the drains. */
static __always_inline __u8 conversation_role(struct kappa_flow_key *key, __u8 protocol, __u8 tcp_flags, bool egress)
{
	__u32 *known = bpf_map_lookup_elem(&kappa_roles, key);
	if (known)
		return *known;
	__u32 role = KAPPA_ROLE_UNKNOWN;
	if (protocol == KAPPA_IPPROTO_TCP) {
		if (tcp_flags & TCP_FLAG_SYN)
			role = (egress == !(tcp_flags & TCP_FLAG_ACK)) ? KAPPA_ROLE_SRC : KAPPA_ROLE_DST;
	} else {
		role = egress ? KAPPA_ROLE_SRC : KAPPA_ROLE_DST;
	}
	if (role != KAPPA_ROLE_UNKNOWN && bpf_map_update_elem(&kappa_roles, key, &role, BPF_ANY))
		count(KAPPA_COUNTER_ROLE_OVERFLOW, 1);
	return role;
}

/* srtt and min RTT at this packet, and the segments retransmitted since the socket's last
 * packet. Both directions read total_retrans; the compare-and-swap lets exactly one of them add
 * each increase, so two CPUs never add the same retransmits twice. */
static __always_inline void account_tcp_health(struct kappa_flow_stats *st, struct bpf_sock *sk, struct kappa_sock *s)
{
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	if (!tp)
		return;
	__u32 srtt = tp->srtt_us >> 3;
	if (st->srtt_us != srtt)
		st->srtt_us = srtt;
	__u32 min_rtt = tp->rtt_min;
	if (min_rtt != ~0U && st->min_rtt_us != min_rtt) /* ~0: no RTT sample yet */
		st->min_rtt_us = min_rtt;
	__u32 total = tp->total_retrans;
	__u32 seen = s->retrans_seen;
	if (total != seen && __sync_val_compare_and_swap(&s->retrans_seen, seen, total) == seen)
		__sync_fetch_and_add(&st->retransmits, total - seen);
}

/* ---- skb hooks (socket mode) ------------------------------------------------------------ */

/* Header lengths of a keyed socket's packet by direct packet access; -1 when the headers are not
 * in the linear part or IPv6 extension headers come first (the caller then parses). */
static __always_inline int direct_headers(struct __sk_buff *skb, __u8 version, __u8 protocol, __u32 *ip_header_len,
					  __u32 *header_len, __u8 *tcp_flags)
{
	__u8 *data = (void *)(long)skb->data;
	__u8 *end = (void *)(long)skb->data_end;
	__u32 ihl = 40;
	if (version == 4) {
		if (data + 20 > end)
			return -1;
		ihl = (data[0] & 0x0f) * 4;
		if (ihl < 20)
			return -1;
	} else {
		if (data + 40 > end || data[6] != protocol)
			return -1;
	}
	*ip_header_len = ihl;
	if (protocol != KAPPA_IPPROTO_TCP) {
		*header_len = ihl + 8;
		return 0;
	}
	__u8 *th = data + ihl;
	if (th + 20 > end)
		return -1;
	*tcp_flags = th[13];
	*header_len = ihl + (th[12] >> 4) * 4;
	return 0;
}

/* A packet of a connected TCP/UDP socket: the key is in its storage. */
static __always_inline int account_keyed(struct __sk_buff *skb, struct bpf_sock *sk, struct kappa_sock *s, bool egress)
{
	__u8 protocol = s->key.protocol;
	__u8 version = s->key.ip_version;
	__u64 segs = skb->gso_segs ? skb->gso_segs : 1;
	__u64 bytes = skb->len;
	__u32 ip_header_len = 0, header_len = 0;
	__u8 tcp_flags = 0;
	if (direct_headers(skb, version, protocol, &ip_header_len, &header_len, &tcp_flags)) {
		struct packet pkt = {};
		if (parse_packet_at(skb, &pkt, 0))
			return 1;
		ip_header_len = pkt.ip_header_len;
		header_len = pkt.header_len;
		tcp_flags = pkt.tcp_flags;
	}
	/* GSO super-packets: one skb, gso_segs packets on the wire, each with its own headers. */
	if (segs > 1)
		bytes += (segs - 1) * header_len;
	else if (protocol == KAPPA_IPPROTO_UDP) {
		/* Egress runs before IP fragmentation, ingress after reassembly. */
		if (egress && bytes > MIN_FRAGMENTED_LEN)
			fragmented(bytes, skb_dev_mtu(skb), ip_header_len, version == 6, &segs, &bytes);
		else if (!egress)
			fragmented(bytes, skb_frag_max_size(skb, version == 6), ip_header_len, version == 6, &segs, &bytes);
	}

	__u8 role = s->role;
	if (role == KAPPA_ROLE_UNKNOWN) {
		/* Known from sockops for sockets opened while attached; otherwise learnt here. */
		role = conversation_role(&s->key, protocol, tcp_flags, egress);
		if (role != KAPPA_ROLE_UNKNOWN)
			s->role = role;
	}
	struct kappa_flow_stats *st = flow_entry(current_epoch(), &s->key, s, role, 0, segs, bytes);
	if (!st)
		return 1;
	add_packets(st, egress, segs, bytes, tcp_flags);
	if (protocol == KAPPA_IPPROTO_TCP)
		account_tcp_health(st, sk, s);
	return 1;
}

static __always_inline bool keys_equal(struct kappa_flow_key *a, struct kappa_flow_key *b)
{
	__u64 *x = (__u64 *)a, *y = (__u64 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4] && x[5] == y[5];
}

/* A per-epoch value of this socket: reset at the first update of an epoch. Only the TCP flags
 * and the app max use it; a race at an epoch's first packet can lose a flag bit, never a count. */
static __always_inline void or_in_epoch(__u32 *values, __u32 *epochs, __u32 epoch, __u32 bits)
{
	__u32 p = epoch & 1;
	if (epochs[p] != epoch) {
		values[p] = bits;
		epochs[p] = epoch;
		mark_drain(epoch, false); /* this socket's first count in the epoch (either direction) */
	} else if ((values[p] | bits) != values[p]) {
		__sync_fetch_and_or(&values[p], bits);
	}
}

/* A packet of a connected TCP socket that counts in its own storage: two adds on the cache line
 * of its direction. The drain iterator and the socket's destruction report the totals. Returns
 * true when the socket was destroyed while this packet was counted: its destruction's report may
 * have missed these adds, so the caller reports again (what was already taken is not taken
 * twice). */
static __always_inline bool count_in_socket(struct kappa_sock *s, bool egress, __u64 segs, __u64 bytes, __u8 tcp_flags,
					    __u32 epoch, __u64 now)
{
	if (egress) {
		__sync_fetch_and_add(&s->tx_packets, segs);
		__sync_fetch_and_add(&s->tx_bytes, bytes);
		PROFILE_STOP_FALSE(5);
		if (s->tx_last_ns != now)
			s->tx_last_ns = now;
		or_in_epoch(s->tx_tcp_flags, s->tx_flags_epoch, epoch, tcp_flags);
	} else {
		__sync_fetch_and_add(&s->rx_packets, segs);
		__sync_fetch_and_add(&s->rx_bytes, bytes);
		PROFILE_STOP_FALSE(5);
		if (s->rx_last_ns != now)
			s->rx_last_ns = now;
		or_in_epoch(s->rx_tcp_flags, s->rx_flags_epoch, epoch, tcp_flags);
	}
	return s->dead;
}

/* A TCP skb's packets and bytes on the wire: a GSO super-packet is gso_segs packets, each with
 * its own headers. */
static __always_inline void tcp_wire_size(struct __sk_buff *skb, __u32 header_len, __u64 *segs, __u64 *bytes)
{
	__u32 gso_segs = skb->gso_segs;
	*segs = gso_segs ? gso_segs : 1;
	*bytes = skb->len;
	if (*segs > 1)
		*bytes += (*segs - 1) * header_len;
}

static __always_inline int account_counting(struct __sk_buff *skb, struct kappa_sock *s, bool egress)
{
	__u32 epoch = current_epoch();
	__u64 now = coarse_now();
	__u32 ip_header_len = 0, header_len = 0;
	__u8 tcp_flags = 0;
	if (direct_headers(skb, s->key.ip_version, KAPPA_IPPROTO_TCP, &ip_header_len, &header_len, &tcp_flags)) {
		struct packet pkt = {};
		if (parse_packet_at(skb, &pkt, 0))
			return 1;
		header_len = pkt.header_len;
		tcp_flags = pkt.tcp_flags;
	}
	__u64 segs, bytes;
	tcp_wire_size(skb, header_len, &segs, &bytes);
	if (count_in_socket(s, egress, segs, bytes, tcp_flags, epoch, now))
		report_socket(s, epoch, 0, 0, 0);
	return 1;
}

/* One wire packet delivered to several sockets (multicast and broadcast with several listeners,
 * raw sockets, which get a copy of every packet of their protocol) is counted once: at the first
 * socket; the copies that follow on this CPU are skipped. A raw ICMP socket counts only the echo
 * replies to its own requests. */
static __always_inline bool is_copy(struct __sk_buff *skb, struct bpf_sock *sk, struct kappa_sock *s,
				    struct kappa_flow_key *key, struct packet *pkt)
{
	if (sk->type == SOCK_RAW && pkt->echo &&
	    (pkt->icmp_type == ICMP_ECHO_REPLY || pkt->icmp_type == ICMPV6_ECHO_REPLY) &&
	    (pkt->protocol == KAPPA_IPPROTO_ICMP || pkt->protocol == KAPPA_IPPROTO_ICMPV6))
		return !s || s->echo_id != pkt->src_port;
	if (sk->type != SOCK_RAW && skb->pkt_type == PACKET_HOST && pkt->protocol != KAPPA_IPPROTO_ICMP &&
	    pkt->protocol != KAPPA_IPPROTO_ICMPV6)
		return false;
	__u32 zero = 0;
	struct kappa_delivery *last = bpf_map_lookup_elem(&kappa_last_delivery, &zero);
	if (!last)
		return false;
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 now = bpf_ktime_get_ns();
	if (last->socket_cookie != cookie && now - last->ns < COPY_WINDOW_NS &&
	    last->fingerprint[0] == pkt->fingerprint[0] && last->fingerprint[1] == pkt->fingerprint[1] &&
	    keys_equal(&last->key, key))
		return true;
	__builtin_memcpy(&last->key, key, sizeof(*key));
	last->fingerprint[0] = pkt->fingerprint[0];
	last->fingerprint[1] = pkt->fingerprint[1];
	last->socket_cookie = cookie;
	last->ns = now;
	return false;
}

/* A packet of a socket without a peer (listener, unconnected UDP, raw, ICMP): keyed by its tuple. */
static __always_inline int account_parsed(struct __sk_buff *skb, struct bpf_sock *sk, struct kappa_sock *s, bool egress)
{
	struct packet pkt = {};
	if (parse_packet_at(skb, &pkt, 0))
		return 1;
	struct kappa_flow_key key = {};
	key_from_packet(&key, &pkt, egress);
	key.netns = s ? s->netns : skb_sock_netns(skb);

	if (egress && s && sk->type == SOCK_RAW && pkt.echo &&
	    (pkt.icmp_type == ICMP_ECHO_REQUEST || pkt.icmp_type == ICMPV6_ECHO_REQUEST))
		s->echo_id = pkt.src_port;
	if (!egress && is_copy(skb, sk, s, &key, &pkt)) {
		count(KAPPA_COUNTER_COPIES_SKIPPED, 1);
		return 1;
	}

	__u64 segs = skb->gso_segs ? skb->gso_segs : 1;
	__u64 bytes = skb->len;
	if (segs > 1)
		bytes += (segs - 1) * pkt.header_len;
	else if (egress && bytes > MIN_FRAGMENTED_LEN)
		fragmented(bytes, skb_dev_mtu(skb), pkt.ip_header_len, pkt.ip_version == 6, &segs, &bytes);
	else if (!egress)
		fragmented(bytes, skb_frag_max_size(skb, pkt.ip_version == 6), pkt.ip_header_len, pkt.ip_version == 6, &segs,
			   &bytes);

	__u8 role = conversation_role(&key, pkt.protocol, pkt.tcp_flags, egress);
	struct kappa_flow_stats *st = flow_entry(current_epoch(), &key, s, role, &pkt, segs, bytes);
	if (st)
		add_packets(st, egress, segs, bytes, pkt.tcp_flags);
	return 1;
}

static __always_inline int account_skb(struct __sk_buff *skb, bool egress)
{
	/* At the cgroup hooks skb->sk is the socket the packet belongs to: a full one, or a request
	 * or timewait socket (no storage: the lookup takes any socket and finds nothing there). */
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
	PROFILE_STOP(2);
	/* (The common case, a counting socket's packet with its headers in the linear part, was taken
	 * by account_fast in the hook.) Each path below is inlined once: 6.1's verifier walks every
	 * copy, and the hook's program with its global functions must stay within its million
	 * instructions. */
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	if (!s) {
		/* A socket older than the attach (or a kernel socket): storage now, owner unknown until
		 * a process sends or receives on it (see claim_owner). */
		s = bpf_sk_storage_get(&kappa_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (s)
			s->netns = skb_sock_netns(skb);
	}
	if (s) {
		/* Still connected to the peer it was keyed with (UDP can disconnect or reconnect). */
		__u16 dst_port = bpf_ntohs(sk->dst_port);
		bool connected = s->keyed && s->key.remote_port == dst_port;
		if (!connected && keyable(sk, dst_port)) {
			__u32 total_retrans = 0;
			if (sk->protocol == KAPPA_IPPROTO_TCP) {
				/* Seen first mid-stream: only retransmits from now on are this capture's. */
				struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
				if (tp && !s->keyed)
					s->retrans_seen = total_retrans = tp->total_retrans;
			}
			if (s->keyed)
				s->role = KAPPA_ROLE_UNKNOWN; /* reconnected: a new conversation */
			key_socket(s, sk, bpf_get_socket_cookie(skb), total_retrans);
			if (s->counting && s->role == KAPPA_ROLE_UNKNOWN) {
				/* Keyed without sockops (older than the attach): learn the role now. */
				struct packet pkt = {};
				if (!parse_packet_at(skb, &pkt, 0))
					s->role = conversation_role(&s->key, KAPPA_IPPROTO_TCP, pkt.tcp_flags, egress);
			}
			connected = true;
		}
		if (connected)
			return s->counting && !s->dead ? account_counting(skb, s, egress) : account_keyed(skb, sk, s, egress);
	}
	return account_parsed(skb, sk, s, egress);
}

#include "kappa_dns.h"

/* count_in_socket found the socket destroyed (see there): its report, behind a call, so that the
 * report's frame (a flow entry's initial value) stays off the hook's. */
__noinline int kappa_report_dead(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
	if (s && s->counting)
		report_socket(s, current_epoch(), 0, 0, 0);
	return 1;
}

/* The common case, in the hook itself rather than behind a call (on this machine's kernel every
 * return of a call costs the SRSO return thunk): a connected TCP socket counting in its storage,
 * still connected to the peer it was keyed with, whose headers are in the linear part. Its frame
 * is a few scalars, so the hook's stack stays the calls'. false: nothing was counted, the caller
 * takes the whole path (account_skb), which looks the storage up again. */
#if KAPPA_PROFILE_STOP == 7 || KAPPA_PROFILE_STOP == 8
/* Profiling only: what reaching a per-socket slot through the socket cookie and an array would
 * cost instead of the storage lookup (7: 64 slots, one kmalloc'd page; 8: 65 536 slots, 4 MiB of
 * vmalloc'd pages). Not a counting design: nothing claims or frees the slots. */
#define KAPPA_PROBE_SLOTS (KAPPA_PROFILE_STOP == 7 ? 64 : 65536)
struct kappa_probe_slot {
	__u64 words[8];
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KAPPA_PROBE_SLOTS);
	__type(key, __u32);
	__type(value, struct kappa_probe_slot);
} kappa_probe_slots SEC(".maps");
#endif

static __always_inline bool account_fast(struct __sk_buff *skb, bool egress)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return true;
#if KAPPA_PROFILE_STOP == 7 || KAPPA_PROFILE_STOP == 8
	__u32 slot = (__u32)bpf_get_socket_cookie(skb) & (KAPPA_PROBE_SLOTS - 1);
	struct kappa_probe_slot *probe = bpf_map_lookup_elem(&kappa_probe_slots, &slot);
	return !(probe && probe->words[0] == 1);
#endif
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
	PROFILE_STOP(2);
	if (!s || !s->keyed || !s->counting || s->dead || s->key.remote_port != bpf_ntohs(sk->dst_port))
		return false;
	/* The calls first: then only skb, s and the epoch live across them, in the registers calls
	 * keep, and the hook's frame stays the two map keys (6.1 counts it beside the global
	 * functions' frames against 512 bytes, in multiples of 32). */
	__u32 epoch = current_epoch();
	__u64 now = coarse_now();
	PROFILE_STOP(3);
	__u32 ip_header_len = 0, header_len = 0;
	__u8 tcp_flags = 0;
	if (direct_headers(skb, s->key.ip_version, KAPPA_IPPROTO_TCP, &ip_header_len, &header_len, &tcp_flags))
		return false;
	__u64 segs, bytes;
	tcp_wire_size(skb, header_len, &segs, &bytes);
	PROFILE_STOP(4);
	if (count_in_socket(s, egress, segs, bytes, tcp_flags, epoch, now))
		kappa_report_dead(skb);
	return true;
}

/* Whether a packet may be DNS, by its socket's ports, before the call to kappa_dns_copy (which
 * tests the same first): a socket connected to a peer, neither end on port 53, is not. */
static __always_inline bool maybe_dns(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return false;
	__u16 remote_port = bpf_ntohs(sk->dst_port);
	return sk->src_port == KAPPA_DNS_PORT || remote_port == KAPPA_DNS_PORT || remote_port == 0;
}

/* The counting of each direction, as a global function of its own (the verifier checks it once,
 * on its own): the combined stack of a program and the functions it calls is at most 512 bytes,
 * and the counting's frame (~450) beside kappa_dns_copy's (~220) would pass it. Each hook's frame
 * is then only the calls. */
__noinline int kappa_account_ingress(struct __sk_buff *skb)
{
	return account_skb(skb, false);
}

__noinline int kappa_account_egress(struct __sk_buff *skb)
{
	return account_skb(skb, true);
}

/* Every packet of the watched sockets: counted, then (the DNS feature) copied if it is DNS. Always
 * 1: observe only. */
SEC("cgroup_skb/ingress")
int kappa_skb_ingress(struct __sk_buff *skb)
{
	PROFILE_STOP(1);
	if (!account_fast(skb, false))
		kappa_account_ingress(skb);
	if (kappa_config.dns && maybe_dns(skb))
		kappa_dns_copy(skb, 0);
	return 1;
}

SEC("cgroup_skb/egress")
int kappa_skb_egress(struct __sk_buff *skb)
{
	PROFILE_STOP(1);
	if (!account_fast(skb, true))
		kappa_account_egress(skb);
	if (kappa_config.dns && maybe_dns(skb))
		kappa_dns_copy(skb, 1);
	return 1;
}

/* ---- sock hooks and sock_ops ------------------------------------------------------------ */

/* Every socket gets its owner and namespace at creation, in the creating process's context.
 * Storage is cloned to accepted sockets (BPF_F_CLONE), so servers are attributed too. */
SEC("cgroup/sock_create")
int kappa_sock_create(struct bpf_sock *sk)
{
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (s) {
		set_owner_from_current(s);
		s->netns = sock_ctx_netns(sk);
	}
	return 1;
}

/* connect() re-stamps the owner (the process that connects is the one a user asks about, even
 * if another one created the socket) and starts a new conversation: the next packet keys it. */
static __always_inline int on_connect(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (s) {
		set_owner_from_current(s);
		if (!s->netns)
			s->netns = sock_addr_netns(ctx);
		s->keyed = 0;
		s->role = sk->protocol == KAPPA_IPPROTO_TCP ? KAPPA_ROLE_SRC : KAPPA_ROLE_UNKNOWN;
	}
	return 1;
}

SEC("cgroup/connect4")
int kappa_connect4(struct bpf_sock_addr *ctx)
{
	return on_connect(ctx);
}

SEC("cgroup/connect6")
int kappa_connect6(struct bpf_sock_addr *ctx)
{
	return on_connect(ctx);
}

/* Keys, roles and handshake latency of TCP connections, and their last retransmits at close. */
SEC("sockops")
int kappa_sockops(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;
	if (!sk)
		return 1;
	switch (ops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB: {
		/* The SYN is about to leave: the tuple is complete. */
		struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!s)
			break;
		if (s->counting && s->keyed)
			report_socket(s, current_epoch(), 0, 0, 0); /* a connect after a failed one: the old key's rest */
		s->connect_ns = bpf_ktime_get_ns();
		if (!s->netns)
			s->netns = sock_ops_netns(ops);
		s->role = KAPPA_ROLE_SRC;
		s->retrans_seen = 0;
		s->keyed = 0;
		key_socket(s, sk, bpf_get_socket_cookie(ops), 0);
		bpf_sock_ops_cb_flags_set(ops, BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
		if (!s || !s->connect_ns || !s->keyed)
			break;
		__u32 handshake_us = (bpf_ktime_get_ns() - s->connect_ns) / 1000;
		if (s->counting) {
			s->handshake_us = handshake_us; /* reported with the socket's totals */
			break;
		}
		struct kappa_flow_stats *st = flow_entry(current_epoch(), &s->key, s, s->role, 0, 0, 0);
		if (st)
			st->handshake_us = handshake_us;
		break;
	}
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		/* An accepted socket: its storage is the listener's clone (owner, namespace); what
		 * belongs to a conversation starts over. */
		struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!s)
			break;
		__u64 *from = (__u64 *)&s->app_sum_us;
		for (int i = 0; i < (sizeof(*s) - __builtin_offsetof(struct kappa_sock, app_sum_us)) / 8; i++)
			from[i] = 0;
		s->role = KAPPA_ROLE_DST;
		s->retrans_seen = 0; /* SYN-ACK retransmits are in total_retrans: count them */
		s->pending_send_ns = 0;
		s->handshake_us = 0;
		s->counting = 0;
		s->dead = 0;
		s->keyed = 0;
		if (!s->netns)
			s->netns = sock_ops_netns(ops); /* no listener storage to clone it from */
		key_socket(s, sk, bpf_get_socket_cookie(ops), 0);
		bpf_sock_ops_cb_flags_set(ops, BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}
	case BPF_SOCK_OPS_STATE_CB: {
		/* Into CLOSE: the socket's last report of its TCP health, before tcp_disconnect (a
		 * close with SO_LINGER 0) zeroes total_retrans and srtt; and for the flow-map path, a
		 * retransmission no later packet of this socket followed. */
		if (ops->args[1] != TCP_CLOSE)
			break;
		struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
		if (!s || !s->keyed)
			break;
		__u32 total = ops->total_retrans;
		if (s->counting) {
			struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
			report_socket(s, current_epoch(), total, ops->srtt_us >> 3, tp ? tp->rtt_min : 0);
			break;
		}
		__u32 seen = s->retrans_seen;
		if (total == seen || __sync_val_compare_and_swap(&s->retrans_seen, seen, total) != seen)
			break;
		struct kappa_flow_stats *st = flow_entry(current_epoch(), &s->key, s, s->role, 0, 0, 0);
		if (st)
			__sync_fetch_and_add(&st->retransmits, total - seen);
		break;
	}
	}
	return 1;
}

/* ---- socket tracepoints: app latency and owners of sockets older than the attach ------- */

/* A socket created before capture attached has no owner: sock_create never saw it, and the
 * connections a listener of that age accepts inherit nothing. The first send or receive on it
 * runs in its process's context. */
static __always_inline void claim_owner(struct kappa_sock *s)
{
	if (s->pid || !in_target_cgroup())
		return;
	set_owner_from_current(s);
	if (!s->keyed || s->counting) /* a counting socket's owner goes with its next report */
		return;
	struct kappa_flow_stats *st = flow_lookup(current_epoch(), &s->key);
	if (st && !st->pid)
		copy_owner(st, s);
}

/* Request -> response latency at the socket layer: the first send of a request and the receive
 * that follows on the same socket are one pair. Storage exists only for sockets of the attached
 * cgroup, so these global tracepoints ignore every other socket at the first lookup. */
static __always_inline int on_sock_send(struct sock *sk, int ret)
{
	if (ret <= 0)
		return 0;
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
	if (!s)
		return 0;
	PROFILE_STOP0(6);
	claim_owner(s);
	if (!s->pending_send_ns)
		s->pending_send_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_sock_recv(struct sock *sk, int ret, int flags)
{
	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
	if (!s)
		return 0;
	PROFILE_STOP0(6);
	claim_owner(s);
	__u64 sent = s->pending_send_ns;
	if (!sent)
		return 0;
	s->pending_send_ns = 0;
	/* Only the initiator's send -> receive is a request and its response; on the accepting
	 * side the same pattern would measure the client's think time. */
	if (s->role != KAPPA_ROLE_SRC || !s->keyed)
		return 0;
	__u64 latency_us = (bpf_ktime_get_ns() - sent) / 1000;
	if (s->counting && !s->dead) {
		__u32 epoch = current_epoch();
		__u32 p = epoch & 1;
		__sync_fetch_and_add(&s->app_sum_us, latency_us);
		__sync_fetch_and_add(&s->app_count, 1);
		if (s->app_max_epoch[p] != epoch) {
			s->app_max_us[p] = latency_us;
			s->app_max_epoch[p] = epoch;
			mark_drain(epoch, false);
		} else if (latency_us > s->app_max_us[p]) {
			s->app_max_us[p] = latency_us; /* a lost race only under-reports one max */
		}
		return 0;
	}
	struct kappa_flow_stats *st = flow_entry(current_epoch(), &s->key, s, s->role, 0, 0, 0);
	if (!st)
		return 0;
	__sync_fetch_and_add(&st->app_count, 1);
	__sync_fetch_and_add(&st->app_sum_us, latency_us);
	if (latency_us > st->app_max_us)
		st->app_max_us = latency_us; /* a lost race only under-reports one max */
	return 0;
}

/* ---- counting sockets: destruction and the drain's iterator ------------------------------ */

/* The last report of a counting TCP socket, at its destruction (its storage goes with it). A
 * packet that races this is reported by that packet (see account_counting). */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(kappa_tcp_destroy, struct sock *sk)
{
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
	if (!s || !s->counting)
		return 0;
	__sync_lock_test_and_set(&s->dead, 1); /* a full barrier: then read the totals */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u32 total_retrans = 0, srtt_us = 0, min_rtt_us = 0;
	if (tp) {
		total_retrans = tp->total_retrans;
		srtt_us = tp->srtt_us >> 3;
		min_rtt_us = tp->rtt_min.s[0].v;
	}
	report_socket(s, current_epoch(), total_retrans, srtt_us, min_rtt_us);
	return 0;
}

/* close() of a counting socket, before tcp_close (and tcp_disconnect, on a close with SO_LINGER 0,
 * which zeroes total_retrans and srtt): its TCP health while it is still there. Sockets keyed by
 * sock_ops report at their CLOSE state change too; this covers the ones older than the attach. */
SEC("cgroup/sock_release")
int kappa_sock_release(struct bpf_sock *ctx)
{
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, ctx, 0, 0);
	if (!s || !s->counting || s->dead)
		return 1;
	__u32 total_retrans = 0, srtt_us = 0, min_rtt_us = 0;
	sock_ctx_tcp_health(ctx, &total_retrans, &srtt_us, &min_rtt_us);
	report_socket(s, current_epoch(), total_retrans, srtt_us, min_rtt_us);
	return 1;
}

/* Run by the drain (userspace reads the iterator once the epoch flipped): every socket file of
 * every process, and for each counting socket of this instance, what its totals grew by goes to
 * the flow map of the interval that just ended, with its RTT and retransmits read now. The socket
 * pointer a file gives is not one the verifier trusts for socket storage, so this reads the
 * storage element by walking the socket's storage list (CO-RE offsets, probe reads) and writes
 * only to maps. Sockets without a file (orphaned, not yet accepted) report at destruction. */
SEC("iter/task_file")
int kappa_drain_sockets(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	if (!file)
		return 0;
	struct socket *sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	struct sock *sk = sock->sk;
	if (!sk || sk->sk_protocol != KAPPA_IPPROTO_TCP)
		return 0;
	__u64 node = (__u64)sk->sk_bpf_storage;
	if (!node)
		return 0;
	bpf_probe_read_kernel(&node, sizeof(node), (void *)node + bpf_core_field_offset(struct bpf_local_storage, list));
	__u32 snode = bpf_core_field_offset(struct bpf_local_storage_elem, snode);
	__u32 data = bpf_core_field_offset(struct bpf_local_storage_elem, sdata) + bpf_core_field_offset(struct bpf_local_storage_data, data);
	__u32 smap = bpf_core_field_offset(struct bpf_local_storage_elem, sdata) + bpf_core_field_offset(struct bpf_local_storage_data, smap);
	__u32 zero = 0;
	struct kappa_sock *copy = bpf_map_lookup_elem(&kappa_sock_copy, &zero);
	if (!copy)
		return 0;
	for (int i = 0; i < 16 && node; i++) {
		__u64 element = node - snode;
		__u64 map = 0;
		bpf_probe_read_kernel(&map, sizeof(map), (void *)(element + smap));
		if (map == (__u64)(void *)&kappa_socks) {
			if (bpf_probe_read_kernel(copy, sizeof(*copy), (void *)(element + data)))
				return 0;
			if (!copy->counting || copy->dead)
				return 0;
			struct tcp_sock *tp = (struct tcp_sock *)sk;
			__u32 total_retrans = BPF_CORE_READ(tp, total_retrans);
			__u32 srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
			__u32 min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
			/* The interval that just ended: userspace flipped the epoch before reading this. */
			report_socket(copy, current_epoch() - 1, total_retrans, srtt_us, min_rtt_us);
			return 0;
		}
		bpf_probe_read_kernel(&node, sizeof(node), (void *)node);
	}
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(kappa_sock_send, struct sock *sk, int ret, int flags)
{
	return on_sock_send(sk, ret);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(kappa_sock_recv, struct sock *sk, int ret, int flags)
{
	return on_sock_recv(sk, ret, flags);
}

/* The same at fexit of inet(6)_sendmsg/recvmsg, for kernels before 6.3 (userspace loads one or
 * the other). */
#include "kappa_hooks_fexit.h"
#include "kappa_hooks_synack6.h"

/* ---- interface mode --------------------------------------------------------------------- */

/* Traffic that reaches no local socket (routed, forwarded, NodePort) counted on the interfaces
 * matching --capture. The key carries the ifindex, so these records never merge with socket-mode
 * ones; "local" is this host's side of the interface. */
static __always_inline int account_tc(struct __sk_buff *skb, bool egress)
{
	if (skb->protocol != bpf_htons(0x0800) && skb->protocol != bpf_htons(0x86DD))
		return 0;
	__u32 link_header = skb_link_header_len(skb);
	struct packet pkt = {};
	if (parse_packet_at(skb, &pkt, link_header))
		return 0;
	if (pkt.fragment != FRAGMENT_NONE) {
		/* Later fragments carry no ports: take them from the first fragment of the datagram. */
		struct kappa_fragment_key fragment = { .id = pkt.fragment_id, .ifindex = skb->ifindex, .protocol = pkt.protocol };
		__builtin_memcpy(fragment.src_ip, pkt.src_ip, 16);
		__builtin_memcpy(fragment.dst_ip, pkt.dst_ip, 16);
		if (pkt.fragment == FRAGMENT_FIRST) {
			struct kappa_fragment_ports ports = { .src_port = pkt.src_port, .dst_port = pkt.dst_port };
			bpf_map_update_elem(&kappa_fragments, &fragment, &ports, BPF_ANY);
		} else {
			struct kappa_fragment_ports *ports = bpf_map_lookup_elem(&kappa_fragments, &fragment);
			if (ports) {
				pkt.src_port = ports->src_port;
				pkt.dst_port = ports->dst_port;
			}
		}
	}
	struct kappa_flow_key key = {};
	key_from_packet(&key, &pkt, egress);
	key.ifindex = skb->ifindex;
	key.netns = skb_dev_netns(skb);

	__u64 segs = skb->gso_segs ? skb->gso_segs : 1;
	/* The IP length, not the frame's: a short frame is padded to 60 bytes on Ethernet. */
	__u64 bytes = skb->len > link_header ? skb->len - link_header : 0;
	if (segs > 1)
		bytes += (segs - 1) * pkt.header_len;
	else if (pkt.ip_len && pkt.ip_len < bytes)
		bytes = pkt.ip_len;
	__u8 role = conversation_role(&key, pkt.protocol, pkt.tcp_flags, egress);
	struct kappa_flow_stats *st = flow_entry(current_epoch(), &key, 0, role, &pkt, segs, bytes);
	if (st)
		add_packets(st, egress, segs, bytes, pkt.tcp_flags);
	return 0;
}

/* TC_ACT_OK (0): observe only, never change the packet's fate. */
SEC("tc")
int kappa_tc_ingress(struct __sk_buff *skb)
{
	return account_tc(skb, false);
}

SEC("tc")
int kappa_tc_egress(struct __sk_buff *skb)
{
	return account_tc(skb, true);
}

/* ---- drops: programs of their own, an optional feature ----------------------------------- */
#include "kappa_drop.h"

/* ---- exec: argument lists of the watched processes, an optional feature of its own -------- */
#include "kappa_exec.h"
