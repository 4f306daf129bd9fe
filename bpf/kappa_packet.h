/* Packet parsing shared by the skb hooks: the IP and transport headers of a packet whose data
 * starts at the network header (as at the cgroup skb hooks and, after the Ethernet header, at tc). */
#ifndef KAPPA_PACKET_H
#define KAPPA_PACKET_H

#define KAPPA_IPPROTO_ICMP 1
#define KAPPA_IPPROTO_TCP 6
#define KAPPA_IPPROTO_UDP 17
#define KAPPA_IPPROTO_ICMPV6 58

#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

#define ICMP_ECHO_REQUEST 8
#define ICMP_ECHO_REPLY 0
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

struct packet {
	__u8 src_ip[16]; /* IPv4-mapped for IPv4 */
	__u8 dst_ip[16];
	__u16 src_port;
	__u16 dst_port;
	__u32 header_len; /* IP + transport header: repeated once per segment of a GSO packet */
	__u8 ip_version;
	__u8 protocol;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
};

static __always_inline void set_v4_mapped(__u8 *ip, __u32 v4)
{
	__builtin_memset(ip, 0, 10);
	ip[10] = 0xff;
	ip[11] = 0xff;
	__builtin_memcpy(ip + 12, &v4, 4);
}

static __always_inline void copy_ip6(__u8 *ip, __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	__builtin_memcpy(ip, &w0, 4);
	__builtin_memcpy(ip + 4, &w1, 4);
	__builtin_memcpy(ip + 8, &w2, 4);
	__builtin_memcpy(ip + 12, &w3, 4);
}

/* Reads the transport header at `offset`: ports, TCP flags and header length, ICMP type/code.
 * ICMP echo conversations are told apart by their identifier, placed in both ports. */
static __always_inline int parse_transport(struct __sk_buff *skb, __u32 offset, struct packet *pkt,
					   __u32 base)
{
	__u8 l4[20];
	switch (pkt->protocol) {
	case KAPPA_IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, base + offset, l4, 20))
			return -1;
		pkt->src_port = (l4[0] << 8) | l4[1];
		pkt->dst_port = (l4[2] << 8) | l4[3];
		pkt->tcp_flags = l4[13];
		pkt->header_len = offset + (l4[12] >> 4) * 4;
		break;
	case KAPPA_IPPROTO_UDP:
		if (bpf_skb_load_bytes(skb, base + offset, l4, 8))
			return -1;
		pkt->src_port = (l4[0] << 8) | l4[1];
		pkt->dst_port = (l4[2] << 8) | l4[3];
		pkt->header_len = offset + 8;
		break;
	case KAPPA_IPPROTO_ICMP:
	case KAPPA_IPPROTO_ICMPV6:
		if (bpf_skb_load_bytes(skb, base + offset, l4, 8))
			return -1;
		pkt->icmp_type = l4[0];
		pkt->icmp_code = l4[1];
		if (l4[0] == ICMP_ECHO_REQUEST || l4[0] == ICMP_ECHO_REPLY ||
		    l4[0] == ICMPV6_ECHO_REQUEST || l4[0] == ICMPV6_ECHO_REPLY) {
			pkt->src_port = (l4[4] << 8) | l4[5];
			pkt->dst_port = pkt->src_port;
		}
		pkt->header_len = offset + 8;
		break;
	default:
		pkt->header_len = offset;
	}
	return 0;
}

/* `base` is where the IP header starts (0 at cgroup hooks, 14 at tc on Ethernet). IPv6
 * extension headers are not walked: their packets count under the first next-header value. */
static __always_inline int parse_packet_at(struct __sk_buff *skb, struct packet *pkt, __u32 base)
{
	__u8 ip[40];
	if (bpf_skb_load_bytes(skb, base, ip, 1))
		return -1;
	__u8 version = ip[0] >> 4;
	if (version == 4) {
		if (bpf_skb_load_bytes(skb, base, ip, 20))
			return -1;
		__u32 saddr, daddr;
		__builtin_memcpy(&saddr, ip + 12, 4);
		__builtin_memcpy(&daddr, ip + 16, 4);
		set_v4_mapped(pkt->src_ip, saddr);
		set_v4_mapped(pkt->dst_ip, daddr);
		pkt->ip_version = 4;
		pkt->protocol = ip[9];
		/* A later fragment carries no transport header. */
		if (((ip[6] & 0x1f) | ip[7]) != 0) {
			pkt->header_len = (ip[0] & 0x0f) * 4;
			return 0;
		}
		return parse_transport(skb, (ip[0] & 0x0f) * 4, pkt, base);
	}
	if (version == 6) {
		if (bpf_skb_load_bytes(skb, base, ip, 40))
			return -1;
		__builtin_memcpy(pkt->src_ip, ip + 8, 16);
		__builtin_memcpy(pkt->dst_ip, ip + 24, 16);
		pkt->ip_version = 6;
		pkt->protocol = ip[6];
		return parse_transport(skb, 40, pkt, base);
	}
	return -1;
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *pkt)
{
	return parse_packet_at(skb, pkt, 0);
}

/* Orients the packet's tuple as the local end sees it. */
static __always_inline void key_from_packet(struct kappa_flow_key *key, struct packet *pkt, bool egress)
{
	if (egress) {
		__builtin_memcpy(key->local_ip, pkt->src_ip, 16);
		__builtin_memcpy(key->remote_ip, pkt->dst_ip, 16);
		key->local_port = pkt->src_port;
		key->remote_port = pkt->dst_port;
	} else {
		__builtin_memcpy(key->local_ip, pkt->dst_ip, 16);
		__builtin_memcpy(key->remote_ip, pkt->src_ip, 16);
		key->local_port = pkt->dst_port;
		key->remote_port = pkt->src_port;
	}
	key->ip_version = pkt->ip_version;
	key->protocol = pkt->protocol;
}

/* The same key from a kernel struct sock (tracepoints get only the socket). Fails for sockets
 * without a peer (listeners, unconnected UDP): no single conversation to attribute to. */
static __always_inline int key_from_kernel_sock(struct kappa_flow_key *key, const void *ptr)
{
	const struct sock *sk = ptr;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	if (!dport)
		return -1;
	key->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	key->remote_port = bpf_ntohs(dport);
	key->protocol = BPF_CORE_READ(sk, sk_protocol);
	if (family == 2) {
		set_v4_mapped(key->local_ip, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		set_v4_mapped(key->remote_ip, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		key->ip_version = 4;
		return 0;
	}
	/* Whole 16-byte reads: BPF_CORE_READ_INTO on an array would copy one element. */
	bpf_core_read(key->local_ip, 16, &sk->__sk_common.skc_v6_rcv_saddr);
	bpf_core_read(key->remote_ip, 16, &sk->__sk_common.skc_v6_daddr);
	/* A dual-stack socket talking IPv4 sends IPv4 packets: key it as the skb hooks do. */
	bool mapped = true;
	for (int i = 0; i < 10; i++)
		if (key->remote_ip[i])
			mapped = false;
	key->ip_version = (mapped && key->remote_ip[10] == 0xff && key->remote_ip[11] == 0xff) ? 4 : 6;
	return 0;
}

#endif
