// SPDX-License-Identifier: GPL-2.0
/* kappa capture, socket mode: per-conversation wire counts at the cgroup skb hooks, the owning
 * process stamped in socket storage at creation/connect, TCP health from the socket, and
 * request -> response latency from the sock tracepoints. Userspace drains `kappa_flows`. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "kappa.h"
#include "kappa_maps.h"
#include "kappa_packet.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2

/* Set by userspace before load: with --cgroup, tracepoints (which fire for every process)
 * keep only processes below that cgroup, like the cgroup hooks do by construction. */
const volatile struct kappa_config kappa_config = {};

static __always_inline void set_owner_from_current(struct kappa_sock_owner *owner)
{
	owner->pid = bpf_get_current_pid_tgid() >> 32;
	owner->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(owner->comm, sizeof(owner->comm));
}

static __always_inline void key_from_bpf_sock(struct kappa_flow_key *key, struct bpf_sock *sk)
{
	if (sk->family == AF_INET) {
		set_v4_mapped(key->local_ip, sk->src_ip4);
		set_v4_mapped(key->remote_ip, sk->dst_ip4);
	} else {
		/* One load per word: the verifier forbids pointer arithmetic on a socket. */
		copy_ip6(key->local_ip, sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3]);
		copy_ip6(key->remote_ip, sk->dst_ip6[0], sk->dst_ip6[1], sk->dst_ip6[2], sk->dst_ip6[3]);
	}
	key->local_port = sk->src_port;
	key->remote_port = bpf_ntohs(sk->dst_port);
}

/* Who opened the conversation. Remembered in `kappa_roles` across drains, because the flow
 * entry is deleted every interval and the next packet in the middle of a TCP stream no longer
 * shows a SYN. */
static __always_inline __u8 conversation_role(struct kappa_flow_key *key, struct packet *pkt,
					      struct kappa_sock_owner *owner, bool egress)
{
	__u32 *known = bpf_map_lookup_elem(&kappa_roles, key);
	if (known)
		return *known;
	__u32 role = KAPPA_ROLE_UNKNOWN;
	if (pkt->protocol == KAPPA_IPPROTO_TCP) {
		if (pkt->tcp_flags & TCP_FLAG_SYN)
			role = (egress == !(pkt->tcp_flags & TCP_FLAG_ACK)) ? KAPPA_ROLE_SRC : KAPPA_ROLE_DST;
		else if (owner)
			role = owner->role;
	} else {
		/* UDP, ICMP: the first sender. */
		role = egress ? KAPPA_ROLE_SRC : KAPPA_ROLE_DST;
	}
	if (role != KAPPA_ROLE_UNKNOWN && bpf_map_update_elem(&kappa_roles, key, &role, BPF_ANY))
		count(KAPPA_COUNTER_ROLE_OVERFLOW, 1);
	return role;
}

/* srtt, min RTT and the retransmits since the last packet, from the kernel's tcp_sock. */
static __always_inline void account_tcp_health(struct kappa_flow_stats *st, struct bpf_sock *sk,
					       struct kappa_sock_owner *owner)
{
	struct bpf_tcp_sock *tp = bpf_tcp_sock(sk);
	if (!tp)
		return;
	st->srtt_us = tp->srtt_us >> 3;
	if (tp->rtt_min != ~0U) /* ~0: no RTT sample yet */
		st->min_rtt_us = tp->rtt_min;
	if (!owner)
		return;
	__u32 total = tp->total_retrans;
	__u32 delta = total - owner->total_retrans_seen;
	if (delta) {
		owner->total_retrans_seen = total;
		__sync_fetch_and_add(&st->retransmits, delta);
	}
	if (owner->handshake_us && !owner->handshake_reported) {
		owner->handshake_reported = 1;
		st->handshake_us = owner->handshake_us;
	}
}

/* Adds one (possibly GSO) packet to its conversation, creating the entry for the interval.
 * A full map is counted in kappa_counters, never silently dropped. */
static __always_inline struct kappa_flow_stats *add_to_flow(struct kappa_flow_key *key, struct packet *pkt,
							    struct kappa_sock_owner *owner, bool egress,
							    __u64 segs, __u64 bytes)
{
	__u64 now = bpf_ktime_get_ns();
	struct kappa_flow_stats *st = bpf_map_lookup_elem(&kappa_flows, key);
	if (!st) {
		struct kappa_flow_stats init = {};
		init.first_ns = now;
		init.role = conversation_role(key, pkt, owner, egress);
		init.icmp_type = pkt->icmp_type;
		init.icmp_code = pkt->icmp_code;
		if (owner) {
			init.pid = owner->pid;
			init.cgroup_id = owner->cgroup_id;
			__builtin_memcpy(init.comm, owner->comm, sizeof(init.comm));
		}
		long err = bpf_map_update_elem(&kappa_flows, key, &init, BPF_NOEXIST);
		if (err && err != -17 /* EEXIST: another CPU created it first */) {
			count(KAPPA_COUNTER_OVERFLOW_PACKETS, segs);
			count(KAPPA_COUNTER_OVERFLOW_BYTES, bytes);
			return 0;
		}
		st = bpf_map_lookup_elem(&kappa_flows, key);
		if (!st)
			return 0;
	}
	st->last_ns = now;
	if (egress) {
		__sync_fetch_and_add(&st->tx_packets, segs);
		__sync_fetch_and_add(&st->tx_bytes, bytes);
	} else {
		__sync_fetch_and_add(&st->rx_packets, segs);
		__sync_fetch_and_add(&st->rx_bytes, bytes);
	}
	if (pkt->protocol == KAPPA_IPPROTO_TCP && (st->tcp_flags | pkt->tcp_flags) != st->tcp_flags)
		__sync_fetch_and_or(&st->tcp_flags, pkt->tcp_flags);
	return st;
}

static __always_inline int account_skb(struct __sk_buff *skb, bool egress)
{
	struct kappa_flow_key key = {};
	struct packet pkt = {};
	if (parse_packet(skb, &pkt))
		return 1;
	key_from_packet(&key, &pkt, egress);

	/* Key by the socket's own tuple when it has one: DNAT'd traffic then keeps the address the
	 * application connected to. Listeners (SYN, SYN-ACK, handshake ACK) and unconnected UDP
	 * sockets have no peer, so their packets keep the packet's tuple. */
	struct bpf_sock *sk = skb->sk;
	struct kappa_sock_owner *owner = 0;
	bool connected = false;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (sk) {
		owner = bpf_sk_storage_get(&kappa_owners, sk, 0, 0);
		connected = sk->dst_port != 0 && sk->protocol == pkt.protocol &&
			    pkt.protocol != KAPPA_IPPROTO_ICMP && pkt.protocol != KAPPA_IPPROTO_ICMPV6;
		if (connected)
			key_from_bpf_sock(&key, sk);
	}

	/* GSO super-packets: one skb, gso_segs packets on the wire, each with its own headers. */
	__u64 segs = skb->gso_segs ? skb->gso_segs : 1;
	__u64 bytes = skb->len + (segs - 1) * pkt.header_len;
	struct kappa_flow_stats *st = add_to_flow(&key, &pkt, owner, egress, segs, bytes);
	if (st && connected && pkt.protocol == KAPPA_IPPROTO_TCP)
		account_tcp_health(st, sk, owner);
	return 1;
}

SEC("cgroup_skb/ingress")
int kappa_skb_ingress(struct __sk_buff *skb)
{
	return account_skb(skb, false);
}

SEC("cgroup_skb/egress")
int kappa_skb_egress(struct __sk_buff *skb)
{
	return account_skb(skb, true);
}

/* Every socket gets its owner at creation, in the creating process's context. Storage is
 * cloned to accepted sockets (BPF_F_CLONE), so servers are attributed too. */
SEC("cgroup/sock_create")
int kappa_sock_create(struct bpf_sock *sk)
{
	struct kappa_sock_owner *owner =
		bpf_sk_storage_get(&kappa_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (owner)
		set_owner_from_current(owner);
	return 1;
}

/* connect() marks the local end as the initiator, and re-stamps the owner: the process that
 * connects is the one a user asks about, even if another one created the socket. */
static __always_inline int on_connect(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct kappa_sock_owner *owner =
		bpf_sk_storage_get(&kappa_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (owner) {
		set_owner_from_current(owner);
		owner->role = KAPPA_ROLE_SRC;
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

/* Handshake latency of active opens, and the accepting side's role. */
SEC("sockops")
int kappa_sockops(struct bpf_sock_ops *ops)
{
	struct bpf_sock *sk = ops->sk;
	if (!sk)
		return 1;
	switch (ops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB: {
		struct kappa_sock_owner *owner =
			bpf_sk_storage_get(&kappa_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (owner)
			owner->connect_ns = bpf_ktime_get_ns();
		break;
	}
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		struct kappa_sock_owner *owner = bpf_sk_storage_get(&kappa_owners, sk, 0, 0);
		if (owner && owner->connect_ns)
			owner->handshake_us = (bpf_ktime_get_ns() - owner->connect_ns) / 1000;
		break;
	}
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		struct kappa_sock_owner *owner =
			bpf_sk_storage_get(&kappa_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (owner)
			owner->role = KAPPA_ROLE_DST;
		break;
	}
	}
	return 1;
}

/* Request -> response latency at the socket layer: a send followed by a receive on the same
 * socket is one pair. Tracepoints fire for every process on the host, so they filter to the
 * attached cgroup sub-tree and to conversations the cgroup hooks already counted. */
static __always_inline bool in_target_cgroup(void)
{
	if (!kappa_config.target_cgroup_level)
		return true;
	return bpf_get_current_ancestor_cgroup_id(kappa_config.target_cgroup_level) ==
	       kappa_config.target_cgroup_id;
}

/* A socket created before capture attached has no owner: sock_create never saw it, and the
 * connections a listener of that age accepts inherit nothing. The first send or receive on such
 * a conversation runs in its process's context, so its flow takes the owner from there. */
static __always_inline void claim_unowned_flow(const void *sk)
{
	struct kappa_flow_key key = {};
	if (key_from_kernel_sock(&key, sk))
		return;
	struct kappa_flow_stats *st = bpf_map_lookup_elem(&kappa_flows, &key);
	if (!st || st->pid)
		return;
	st->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(st->comm, sizeof(st->comm));
	st->pid = bpf_get_current_pid_tgid() >> 32;
}

SEC("tracepoint/sock/sock_send_length")
int kappa_sock_send(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->ret <= 0 || (ctx->family != AF_INET && ctx->family != AF_INET6))
		return 0;
	if (!in_target_cgroup())
		return 0;
	claim_unowned_flow(ctx->sk);
	__u64 sk = (__u64)ctx->sk;
	/* The response time runs from the first send of a request, not from its last chunk. */
	struct kappa_pending_request request = { .sent_ns = bpf_ktime_get_ns() };
	bpf_map_update_elem(&kappa_pending, &sk, &request, BPF_NOEXIST);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int kappa_sock_recv(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->ret <= 0 || (ctx->flags & MSG_PEEK))
		return 0;
	if (ctx->family != AF_INET && ctx->family != AF_INET6)
		return 0;
	if (in_target_cgroup())
		claim_unowned_flow(ctx->sk);
	__u64 sk = (__u64)ctx->sk;
	struct kappa_pending_request *request = bpf_map_lookup_elem(&kappa_pending, &sk);
	if (!request)
		return 0;
	__u64 latency_us = (bpf_ktime_get_ns() - request->sent_ns) / 1000;
	bpf_map_delete_elem(&kappa_pending, &sk);

	struct kappa_flow_key key = {};
	if (key_from_kernel_sock(&key, ctx->sk))
		return 0;
	struct kappa_flow_stats *st = bpf_map_lookup_elem(&kappa_flows, &key);
	/* Only the initiator's send -> receive is a request and its response; on the accepting
	 * side the same pattern would measure the client's think time. */
	if (!st || st->role != KAPPA_ROLE_SRC)
		return 0;
	__sync_fetch_and_add(&st->app_count, 1);
	__sync_fetch_and_add(&st->app_sum_us, latency_us);
	if (latency_us > st->app_max_us)
		st->app_max_us = latency_us; /* a lost race only under-reports one max */
	return 0;
}

/* Interface mode: traffic that reaches no local socket (routed, forwarded, NodePort) counted on
 * the interfaces matching --capture. The key carries the ifindex, so these records never merge
 * with socket-mode ones; "local" is this host's side of the interface. */
static __always_inline int account_tc(struct __sk_buff *skb, bool egress)
{
	struct kappa_flow_key key = {};
	struct packet pkt = {};
	/* Ethernet devices only: the network header follows 14 bytes of link header. */
	if (skb->protocol != bpf_htons(0x0800) && skb->protocol != bpf_htons(0x86DD))
		return 0;
	if (parse_packet_at(skb, &pkt, 14))
		return 0;
	key_from_packet(&key, &pkt, egress);
	key.ifindex = skb->ifindex;

	__u64 segs = skb->gso_segs ? skb->gso_segs : 1;
	__u64 ip_len = skb->len > 14 ? skb->len - 14 : 0;
	add_to_flow(&key, &pkt, 0, egress, segs, ip_len + (segs - 1) * pkt.header_len);
	return 0;
}

/* TC_ACT_OK (0): observe only, never change the packet's fate. */
SEC("tc")
int kappa_tc_ingress(struct __sk_buff *skb)
{
	account_tc(skb, false);
	return 0;
}

SEC("tc")
int kappa_tc_egress(struct __sk_buff *skb)
{
	account_tc(skb, true);
	return 0;
}
