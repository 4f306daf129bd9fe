/* Drops: every packet the kernel frees as dropped (tracepoint skb:kfree_skb, with its reason,
 * enum skb_drop_reason, since 5.17) that belongs to a conversation kappa tracks is counted on
 * that conversation's flow entry, with its reason: the packets and bytes and up to three reasons
 * with their packet counts (userspace names them from the kernel's BTF and reports the most
 * frequent one). The sk_buff and what hangs off it are read as BTF pointers (the tracepoint's
 * argument is one), the packet's bytes with bpf_probe_read_kernel.
 *
 * Tracked means: the packet's socket is one of the watched cgroup's (it has socket storage); or
 * it has no socket and was dropped in a network namespace where a watched process made a socket
 * (kappa_drop_netns: a closed port, a firewall, a full backlog there). Everything else returns at
 * once, so the cost stays with the drops of the watched workloads.
 *
 * Two programs of their own: kappa_drop (tp_btf/kfree_skb) and kappa_drop_netns
 * (cgroup/sock_create kappa_drop_sock_create, marks the namespace of each new socket); userspace leaves both out when
 * the "drops" feature is off. Included at the end of kappa.bpf.c: uses its flow entries. The same
 * code loads in both objects (kappa.bpf.o and kappa-compat.bpf.o): BTF pointers work in tracing
 * programs on every kernel capture supports. */
#ifndef KAPPA_DROP_H
#define KAPPA_DROP_H

#define KAPPA_ETH_P_IP 0x0800
#define KAPPA_ETH_P_IPV6 0x86DD

/* Indexes into kappa_drop_counters (per CPU, totals since load). */
#define KAPPA_DROP_COUNTER_UNATTRIBUTED 0 /* drops of a tracked namespace whose headers could not be read */
#define KAPPA_DROP_COUNTER_MAX 4

/* Namespaces (inode numbers) where a process of the watched cgroup made a socket. An LRU: the
 * marks of namespaces that are gone age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} kappa_drop_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KAPPA_DROP_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kappa_drop_counters SEC(".maps");

static __always_inline void mark_netns(__u32 netns)
{
	if (!netns || bpf_map_lookup_elem(&kappa_drop_netns, &netns))
		return;
	__u32 one = 1;
	bpf_map_update_elem(&kappa_drop_netns, &netns, &one, BPF_ANY);
}

/* Reads the IP and transport headers of a dropped packet from kernel memory (the tracepoint has
 * the sk_buff, not a program context): the same fields parse_packet_at fills. */
static __always_inline int parse_dropped(unsigned char *ip_header, __u16 eth_protocol, struct packet *pkt)
{
	__u8 ip[40];
	__u32 offset;
	if (eth_protocol == KAPPA_ETH_P_IP) {
		if (bpf_probe_read_kernel(ip, 20, ip_header) || (ip[0] >> 4) != 4)
			return -1;
		__u32 saddr, daddr;
		__builtin_memcpy(&saddr, ip + 12, 4);
		__builtin_memcpy(&daddr, ip + 16, 4);
		set_v4_mapped(pkt->src_ip, saddr);
		set_v4_mapped(pkt->dst_ip, daddr);
		pkt->ip_version = 4;
		pkt->protocol = ip[9];
		pkt->ip_len = (ip[2] << 8) | ip[3];
		offset = (ip[0] & 0x0f) * 4;
		if (offset < 20)
			return -1;
		if (((ip[6] & 0x1f) | ip[7]) != 0)
			pkt->fragment = FRAGMENT_LATER;
	} else {
		if (bpf_probe_read_kernel(ip, 40, ip_header) || (ip[0] >> 4) != 6)
			return -1;
		__builtin_memcpy(pkt->src_ip, ip + 8, 16);
		__builtin_memcpy(pkt->dst_ip, ip + 24, 16);
		pkt->ip_version = 6;
		__u32 payload = (ip[4] << 8) | ip[5];
		pkt->ip_len = payload ? payload + 40 : 0;
		__u8 next = ip[6];
		offset = 40;
		for (int i = 0; i < KAPPA_IPV6_MAX_EXTENSIONS; i++) {
			if (next != KAPPA_IPPROTO_HOPOPTS && next != KAPPA_IPPROTO_ROUTING && next != KAPPA_IPPROTO_DSTOPTS &&
			    next != KAPPA_IPPROTO_FRAGMENT && next != KAPPA_IPPROTO_AH)
				break;
			__u8 ext[8];
			if (bpf_probe_read_kernel(ext, 8, ip_header + offset))
				return -1;
			if (next == KAPPA_IPPROTO_FRAGMENT) {
				if (((ext[2] << 8) | ext[3]) & 0xfff8)
					pkt->fragment = FRAGMENT_LATER;
				offset += 8;
			} else if (next == KAPPA_IPPROTO_AH) {
				offset += (ext[1] + 2) * 4;
			} else {
				offset += (ext[1] + 1) * 8;
			}
			next = ext[0];
		}
		pkt->protocol = next;
	}
	pkt->ip_header_len = offset;
	pkt->header_len = offset;
	if (pkt->fragment == FRAGMENT_LATER)
		return -1; /* no ports to tell its conversation by */
	__u8 l4[20] = {};
	switch (pkt->protocol) {
	case KAPPA_IPPROTO_TCP:
		if (bpf_probe_read_kernel(l4, 20, ip_header + offset))
			return -1;
		pkt->tcp_flags = l4[13];
		pkt->header_len = offset + (l4[12] >> 4) * 4;
		break;
	case KAPPA_IPPROTO_UDP:
		if (bpf_probe_read_kernel(l4, 8, ip_header + offset))
			return -1;
		pkt->header_len = offset + 8;
		break;
	case KAPPA_IPPROTO_ICMP:
	case KAPPA_IPPROTO_ICMPV6:
		if (bpf_probe_read_kernel(l4, 8, ip_header + offset))
			return -1;
		pkt->icmp_type = l4[0];
		pkt->icmp_code = l4[1];
		if (l4[0] == ICMP_ECHO_REQUEST || l4[0] == ICMP_ECHO_REPLY || l4[0] == ICMPV6_ECHO_REQUEST ||
		    l4[0] == ICMPV6_ECHO_REPLY) {
			pkt->src_port = (l4[4] << 8) | l4[5];
			pkt->dst_port = pkt->src_port;
			pkt->echo = 1;
		}
		pkt->header_len = offset + 8;
		return 0;
	default:
		return 0;
	}
	pkt->src_port = (l4[0] << 8) | l4[1];
	pkt->dst_port = (l4[2] << 8) | l4[3];
	return 0;
}

/* Counts one reason in the entry's three slots (first come, first slot); a fourth distinct
 * reason in one interval is counted in the totals only. */
static __always_inline void add_drop_reason(struct kappa_flow_stats *st, __u32 reason, __u32 packets)
{
	for (int i = 0; i < 3; i++) {
		__u32 seen = st->drop_reason[i];
		if (seen == 0)
			seen = __sync_val_compare_and_swap(&st->drop_reason[i], 0, reason);
		if (seen == 0 || seen == reason) {
			__sync_fetch_and_add(&st->drop_reason_packets[i], packets);
			return;
		}
	}
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(kappa_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	/* Not a drop: a packet freed after use (kernels that trace those here too). */
	if ((__u32)reason == 0)
		return 0;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	    (__u32)reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return 0;
	/* Not a drop either: icmpv6_rcv frees the ICMPv6 messages it handled or ignores with reason
	 * NOT_SPECIFIED where icmpv6_notify returns nothing (before 6.3: a destination unreachable
	 * delivered to its socket), and informational types it does not handle on every kernel. Its
	 * own drops there (a message shorter than its header) are given up with them. */
	if ((__u64)location - kappa_config.icmpv6_rcv_start < kappa_config.icmpv6_rcv_end - kappa_config.icmpv6_rcv_start &&
	    bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED) &&
	    (__u32)reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;
	__u16 eth_protocol = bpf_ntohs(skb->protocol);
	if (eth_protocol != KAPPA_ETH_P_IP && eth_protocol != KAPPA_ETH_P_IPV6)
		return 0;

	struct sock *sk = skb->sk;
	struct kappa_sock *s = 0;
	__u32 netns = 0;
	if (sk) {
		/* NULL for request and time-wait sockets: those are looked at like packets without one. */
		s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
		if (s)
			netns = s->netns;
		else if (sk->__sk_common.skc_state != TCP_NEW_SYN_RECV && sk->__sk_common.skc_state != TCP_TIME_WAIT)
			return 0; /* a full socket outside the watched cgroup */
	}
	if (!s) {
		struct net_device *dev = skb->dev;
		netns = sk ? sk->__sk_common.skc_net.net->ns.inum : dev ? dev->nd_net.net->ns.inum : 0;
		if (!netns || !bpf_map_lookup_elem(&kappa_drop_netns, &netns))
			return 0; /* not a namespace kappa tracks */
	} else {
		mark_netns(netns); /* a socket older than capture makes its namespace tracked too */
	}

	__u16 network_header = skb->network_header;
	/* Addresses as numbers (probe reads take them; the verifier forbids arithmetic on two pointers). */
	__u64 head = (__u64)BPF_CORE_READ(skb, head);
	struct packet pkt = {};
	if (network_header == (__u16)~0U || !head || parse_dropped((unsigned char *)(head + network_header), eth_protocol, &pkt)) {
		__u32 index = KAPPA_DROP_COUNTER_UNATTRIBUTED;
		__u64 *value = bpf_map_lookup_elem(&kappa_drop_counters, &index);
		if (value)
			*value += 1;
		return 0;
	}

	/* A packet that arrived has the interface it came in on; one sent from here has none. */
	bool egress = skb->skb_iif == 0;
	/* The IP bytes: from the network header to the end of the data. */
	__u64 length = skb->len + ((__u64)BPF_CORE_READ(skb, data) - head) - network_header;
	__u64 segs = 1;
	__u64 bytes = pkt.ip_len ? pkt.ip_len : length;
	/* A GSO packet is gso_segs packets on the wire, each with its own headers. */
	struct skb_shared_info *shinfo = (void *)(head + skb->end);
	__u16 gso_segs = BPF_CORE_READ(shinfo, gso_segs);
	if (gso_segs > 1) {
		segs = gso_segs;
		bytes = length + (segs - 1) * pkt.header_len;
	}

	struct kappa_flow_key key = {};
	__u8 role;
	__u16 remote_port = 0;
	if (s && s->keyed) {
		/* A connected socket's packet: its conversation is the socket's (the address the
		 * application connected to, before any DNAT the packet went through). */
		if (sk)
			remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	}
	if (s && s->keyed && s->key.remote_port == remote_port) {
		__builtin_memcpy(&key, &s->key, sizeof(key));
		role = s->role;
		if (role == KAPPA_ROLE_UNKNOWN)
			role = conversation_role(&key, pkt.protocol, pkt.tcp_flags, egress);
	} else {
		key_from_packet(&key, &pkt, egress);
		key.netns = netns;
		role = conversation_role(&key, pkt.protocol, pkt.tcp_flags, egress);
	}
	struct kappa_flow_stats *st = flow_entry(current_epoch(), &key, s, role, &pkt, segs, bytes);
	if (!st)
		return 0;
	__sync_fetch_and_add(&st->drop_packets, segs);
	__sync_fetch_and_add(&st->drop_bytes, bytes);
	add_drop_reason(st, (__u32)reason, segs);
	return 0;
}

/* Each new socket of the watched cgroup makes its namespace one whose drops count. */
SEC("cgroup/sock_create")
int kappa_drop_sock_create(struct bpf_sock *sk)
{
	mark_netns(sock_ctx_netns(sk));
	return 1;
}

#endif
