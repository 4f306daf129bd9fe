/* Packet parsing shared by the skb hooks: the IP header (IPv6 extension headers walked), the
 * transport header, fragments, and what a GSO packet or a fragmented datagram is on the wire.
 * `base` is where the IP header starts: 0 at the cgroup skb hooks, the link-header length at tc. */
#ifndef KAPPA_PACKET_H
#define KAPPA_PACKET_H

#define KAPPA_IPPROTO_HOPOPTS 0
#define KAPPA_IPPROTO_ICMP 1
#define KAPPA_IPPROTO_TCP 6
#define KAPPA_IPPROTO_UDP 17
#define KAPPA_IPPROTO_ROUTING 43
#define KAPPA_IPPROTO_FRAGMENT 44
#define KAPPA_IPPROTO_AH 51
#define KAPPA_IPPROTO_ICMPV6 58
#define KAPPA_IPPROTO_DSTOPTS 60

#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

#define ICMP_ECHO_REQUEST 8
#define ICMP_ECHO_REPLY 0
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define KAPPA_IPV6_MAX_EXTENSIONS 6

#define FRAGMENT_NONE 0
#define FRAGMENT_FIRST 1 /* offset 0, more follow: carries the transport header */
#define FRAGMENT_LATER 2 /* no transport header */

struct packet {
	__u8 src_ip[16]; /* IPv4-mapped for IPv4 */
	__u8 dst_ip[16];
	__u16 src_port;
	__u16 dst_port;
	__u32 ip_len;	     /* total length from the IP header (0: not given, e.g. a jumbogram) */
	__u32 ip_header_len; /* IPv4 header with options, IPv6 header with extension headers */
	__u32 header_len;    /* IP + transport header: repeated once per segment of a GSO packet */
	__u32 fragment_id;
	__u64 fingerprint[2]; /* tells one packet from the next (see kappa_delivery) */
	__u8 ip_version;
	__u8 protocol;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 fragment; /* FRAGMENT_* */
	__u8 echo;     /* ICMP echo request or reply: the ports hold its identifier */
	__u8 pad;
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
static __always_inline int parse_transport(struct __sk_buff *skb, __u32 offset, struct packet *pkt)
{
	__u8 l4[20] = {};
	switch (pkt->protocol) {
	case KAPPA_IPPROTO_TCP:
		if (bpf_skb_load_bytes(skb, offset, l4, 20))
			return -1;
		pkt->src_port = (l4[0] << 8) | l4[1];
		pkt->dst_port = (l4[2] << 8) | l4[3];
		pkt->tcp_flags = l4[13];
		pkt->header_len = pkt->ip_header_len + (l4[12] >> 4) * 4;
		break;
	case KAPPA_IPPROTO_UDP:
		if (bpf_skb_load_bytes(skb, offset, l4, 8))
			return -1;
		pkt->src_port = (l4[0] << 8) | l4[1];
		pkt->dst_port = (l4[2] << 8) | l4[3];
		pkt->header_len = pkt->ip_header_len + 8;
		break;
	case KAPPA_IPPROTO_ICMP:
	case KAPPA_IPPROTO_ICMPV6:
		if (bpf_skb_load_bytes(skb, offset, l4, 8))
			return -1;
		pkt->icmp_type = l4[0];
		pkt->icmp_code = l4[1];
		if (l4[0] == ICMP_ECHO_REQUEST || l4[0] == ICMP_ECHO_REPLY || l4[0] == ICMPV6_ECHO_REQUEST ||
		    l4[0] == ICMPV6_ECHO_REPLY) {
			pkt->src_port = (l4[4] << 8) | l4[5];
			pkt->dst_port = pkt->src_port;
			pkt->echo = 1;
		}
		pkt->header_len = pkt->ip_header_len + 8;
		break;
	default:
		pkt->header_len = pkt->ip_header_len;
		return 0;
	}
	__u64 first8;
	__builtin_memcpy(&first8, l4, 8);
	pkt->fingerprint[1] = first8;
	return 0;
}

/* Walks the IPv6 extension headers after the fixed header. Leaves the transport protocol in
 * pkt->protocol and returns its offset from `base`, or -1. */
static __always_inline int walk_ipv6_extensions(struct __sk_buff *skb, __u32 base, struct packet *pkt, __u8 next)
{
	__u32 offset = 40;
	for (int i = 0; i < KAPPA_IPV6_MAX_EXTENSIONS; i++) {
		__u8 ext[8];
		if (next != KAPPA_IPPROTO_HOPOPTS && next != KAPPA_IPPROTO_ROUTING && next != KAPPA_IPPROTO_DSTOPTS &&
		    next != KAPPA_IPPROTO_FRAGMENT && next != KAPPA_IPPROTO_AH)
			break;
		if (bpf_skb_load_bytes(skb, base + offset, ext, 8))
			return -1;
		if (next == KAPPA_IPPROTO_FRAGMENT) {
			__u16 fragment_offset = ((ext[2] << 8) | ext[3]) & 0xfff8;
			__u32 id;
			__builtin_memcpy(&id, ext + 4, 4);
			pkt->fragment_id = id;
			if (fragment_offset)
				pkt->fragment = FRAGMENT_LATER;
			else if (ext[3] & 1)
				pkt->fragment = FRAGMENT_FIRST;
			offset += 8;
		} else if (next == KAPPA_IPPROTO_AH) {
			offset += (ext[1] + 2) * 4;
		} else {
			offset += (ext[1] + 1) * 8;
		}
		next = ext[0];
	}
	pkt->protocol = next;
	return offset;
}

/* Parses the IP header at `base` and, unless the packet is a later fragment, the transport
 * header after it. */
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
		pkt->ip_len = (ip[2] << 8) | ip[3];
		pkt->ip_header_len = (ip[0] & 0x0f) * 4;
		pkt->fragment_id = (ip[4] << 8) | ip[5];
		/* id, total length and checksum: differ between consecutive packets of one sender */
		pkt->fingerprint[0] = (__u64)pkt->fragment_id | (__u64)pkt->ip_len << 16 | (__u64)ip[10] << 32 |
				      (__u64)ip[11] << 40;
		if (((ip[6] & 0x1f) | ip[7]) != 0) {
			pkt->fragment = FRAGMENT_LATER;
			pkt->header_len = pkt->ip_header_len;
			return 0;
		}
		if (ip[6] & 0x20)
			pkt->fragment = FRAGMENT_FIRST;
		return parse_transport(skb, base + pkt->ip_header_len, pkt);
	}
	if (version == 6) {
		if (bpf_skb_load_bytes(skb, base, ip, 40))
			return -1;
		__builtin_memcpy(pkt->src_ip, ip + 8, 16);
		__builtin_memcpy(pkt->dst_ip, ip + 24, 16);
		pkt->ip_version = 6;
		__u32 payload = (ip[4] << 8) | ip[5];
		pkt->ip_len = payload ? payload + 40 : 0;
		__u32 flow;
		__builtin_memcpy(&flow, ip, 4);
		pkt->fingerprint[0] = (__u64)flow | (__u64)payload << 32;
		int offset = walk_ipv6_extensions(skb, base, pkt, ip[6]);
		if (offset < 0)
			return -1;
		pkt->ip_header_len = offset;
		if (pkt->fragment == FRAGMENT_LATER) {
			pkt->header_len = pkt->ip_header_len;
			return 0;
		}
		return parse_transport(skb, base + offset, pkt);
	}
	return -1;
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

/* What a datagram of `len` IP bytes is on the wire when sent in fragments of at most `fragment_len`
 * bytes (the egress device's MTU, or at ingress the largest fragment it was reassembled from):
 * the IP header (`ip_header` bytes) repeats in every fragment, and IPv6 adds an 8-byte fragment
 * header to each. Leaves packets and bytes alone when it fits in one. */
static __always_inline void fragmented(__u32 len, __u32 fragment_len, __u32 ip_header, bool ipv6, __u64 *packets,
				       __u64 *bytes)
{
	__u32 extra = ipv6 ? 8 : 0;
	if (!fragment_len || len + extra <= fragment_len || fragment_len <= ip_header + extra + 8)
		return;
	__u32 per_fragment = (fragment_len - ip_header - extra) & ~7U;
	__u32 data = len - ip_header;
	__u32 n = (data + per_fragment - 1) / per_fragment;
	*packets = n;
	*bytes = len + (n - 1) * ip_header + n * extra;
}

#endif
