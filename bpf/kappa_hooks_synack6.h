/* An IPv6 listener's SYN-ACK, on kernels whose cgroup egress hook never sees it. The SYN-ACK leaves
 * from the request socket (skb->sk) through ip6_xmit(listener, skb, ...), and 6.1's
 * BPF_CGROUP_RUN_PROG_INET_EGRESS runs only when the socket it is handed is skb->sk, so the server
 * end would miss one packet of every IPv6 connection it accepts (npm run test:kernels showed it
 * against tcpdump on 6.1; IPv4's ip_build_and_send_pkt hands over skb->sk and is counted).
 * Userspace loads this with kappa-compat.bpf.o only (kernels before 6.2; 6.18's hook counts these
 * itself): the same entry, role and owner as the cgroup hook would have given it.
 * The hook is fexit of tcp_make_synack(listener, dst, req, foc, type, syn_skb), which builds the
 * segment tcp_v6_send_synack then hands to ip6_xmit: ip6_xmit and tcp_v6_send_synack have 7
 * arguments, more than 6.1's x86 BPF trampolines take (they load, then fail to attach).
 * 6.1 gives tracing programs no bpf_ktime_get_coarse_ns() (its verifier: "unknown func
 * bpf_ktime_get_coarse_ns#160"), so this program counts with bpf_ktime_get_ns() instead of
 * add_packets(): the same clock, finer (the last-packet time may lead the cgroup hook's coarse one
 * by under a tick). */
#ifndef KAPPA_HOOKS_SYNACK6_H
#define KAPPA_HOOKS_SYNACK6_H

#define KAPPA_AF_INET6 10

SEC("fexit/tcp_make_synack")
int BPF_PROG(kappa_synack6, const struct sock *sk, struct dst_entry *dst, struct request_sock *req, struct tcp_fastopen_cookie *foc,
	     enum tcp_synack_type synack_type, struct sk_buff *syn_skb, struct sk_buff *skb)
{
	/* No segment built; or an IPv4 request (a dual-stack listener's), which the cgroup hook counts. */
	if (!skb || !req || req->__req_common.skc_family != KAPPA_AF_INET6)
		return 0;
	struct sock *request = (struct sock *)req;
	/* Storage exists only for sockets of the attached cgroup. */
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, (struct sock *)sk, 0, 0);
	if (!s)
		return 0;
	struct packet pkt = {};
	struct sock_common *c = &request->__sk_common;
	copy_ip6(pkt.src_ip, c->skc_v6_rcv_saddr.in6_u.u6_addr32[0], c->skc_v6_rcv_saddr.in6_u.u6_addr32[1],
		 c->skc_v6_rcv_saddr.in6_u.u6_addr32[2], c->skc_v6_rcv_saddr.in6_u.u6_addr32[3]);
	copy_ip6(pkt.dst_ip, c->skc_v6_daddr.in6_u.u6_addr32[0], c->skc_v6_daddr.in6_u.u6_addr32[1],
		 c->skc_v6_daddr.in6_u.u6_addr32[2], c->skc_v6_daddr.in6_u.u6_addr32[3]);
	pkt.src_port = c->skc_num;
	pkt.dst_port = bpf_ntohs(c->skc_dport);
	pkt.ip_version = 6;
	pkt.protocol = KAPPA_IPPROTO_TCP;
	pkt.tcp_flags = TCP_FLAG_SYN | TCP_FLAG_ACK;
	struct kappa_flow_key key = {};
	key_from_packet(&key, &pkt, true);
	key.netns = s->netns;
	/* ip6_xmit pushes the IPv6 header later: the skb holds the TCP segment. */
	__u64 bytes = skb->len + 40;
	__u8 role = conversation_role(&key, KAPPA_IPPROTO_TCP, pkt.tcp_flags, true);
	struct kappa_flow_stats *st = flow_entry(current_epoch(), &key, s, role, &pkt, 1, bytes);
	if (st) {
		__sync_fetch_and_add(&st->tx_packets, 1);
		__sync_fetch_and_add(&st->tx_bytes, bytes);
		st->tx_last_ns = bpf_ktime_get_ns();
		if ((st->tx_tcp_flags | pkt.tcp_flags) != st->tx_tcp_flags)
			__sync_fetch_and_or(&st->tx_tcp_flags, pkt.tcp_flags);
	}
	return 0;
}

#endif
