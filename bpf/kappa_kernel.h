/* What the programs read from kernel structures rather than from their context: the network
 * namespace, the device MTU and link-header length, and the largest fragment of a reassembled
 * datagram. All of it goes through bpf_cast_to_kern_ctx() (kernel 6.2+) and CO-RE field offsets,
 * and lives in this one header, so a kernel without that kfunc needs another body for these few
 * functions only (each documents what 0 means to its callers). */
#ifndef KAPPA_KERNEL_H
#define KAPPA_KERNEL_H

#ifdef KAPPA_KERNEL_COMPAT
/* The same functions for kernels before 6.2, in kappa-compat.bpf.o. */
#include "kappa_kernel_compat.h"
#else

extern void *bpf_cast_to_kern_ctx(void *) __ksym;

static __always_inline __u32 net_inode(struct net *net)
{
	return net ? net->ns.inum : 0;
}

/* The namespace of a socket (0: unknown). */
static __always_inline __u32 sock_netns(struct sock *sk)
{
	if (!sk)
		return 0;
	return net_inode(sk->__sk_common.skc_net.net);
}

/* The namespace of the socket a cgroup sock program runs for. */
static __always_inline __u32 sock_ctx_netns(struct bpf_sock *ctx)
{
	struct sock *sk = bpf_cast_to_kern_ctx(ctx);
	return sock_netns(sk);
}

/* total_retrans, srtt and min RTT of the TCP socket a cgroup sock program runs for (left alone
 * when it is not a TCP socket). */
static __always_inline void sock_ctx_tcp_health(struct bpf_sock *ctx, __u32 *total_retrans, __u32 *srtt_us, __u32 *min_rtt_us)
{
	struct sock *sk = bpf_cast_to_kern_ctx(ctx);
	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	/* bpf_skc_to_tcp_sock is not offered to cgroup sock programs: read through probe reads. */
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	*total_retrans = BPF_CORE_READ(tp, total_retrans);
	*srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	*min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
}

/* The namespace of the socket a cgroup sock_addr program (connect) runs for. */
static __always_inline __u32 sock_addr_netns(struct bpf_sock_addr *ctx)
{
	struct bpf_sock_addr_kern *kern = bpf_cast_to_kern_ctx(ctx);
	return sock_netns(kern->sk);
}

/* The namespace of the socket a sock_ops program runs for. */
static __always_inline __u32 sock_ops_netns(struct bpf_sock_ops *ctx)
{
	struct bpf_sock_ops_kern *kern = bpf_cast_to_kern_ctx(ctx);
	return sock_netns(kern->sk);
}

/* The namespace of the socket a cgroup skb program runs for. */
static __always_inline __u32 skb_sock_netns(struct __sk_buff *ctx)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	return sock_netns(skb->sk);
}

/* The namespace of the device a tc program runs on. */
static __always_inline __u32 skb_dev_netns(struct __sk_buff *ctx)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	struct net_device *dev = skb->dev;
	if (!dev)
		return 0;
	return net_inode(dev->nd_net.net);
}

/* MTU of the device an egress packet leaves through (0: unknown, the caller assumes no
 * fragmentation). The route's path MTU can be lower; a datagram fragmented for a learned path
 * MTU is counted as if the device MTU applied. */
static __always_inline __u32 skb_dev_mtu(struct __sk_buff *ctx)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	struct net_device *dev = skb->dev;
	return dev ? dev->mtu : 0;
}

/* Length of the largest fragment a reassembled datagram arrived in (IPCB/IP6CB frag_max_size;
 * 0: it was not fragmented). Valid at the cgroup ingress hook: the IPv4/IPv6 control block in
 * skb->cb is still the one reassembly filled in. */
static __always_inline __u32 skb_frag_max_size(struct __sk_buff *ctx, bool ipv6)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	if (ipv6)
		return *(__u16 *)((void *)skb->cb + bpf_core_field_offset(struct inet6_skb_parm, frag_max_size));
	return *(__u16 *)((void *)skb->cb + bpf_core_field_offset(struct inet_skb_parm, frag_max_size));
}

/* Bytes between the start of the packet data and the network header at tc: 14 on Ethernet,
 * 0 on devices without a link header (tun, wireguard), 18 with a VLAN tag kept in the frame. */
static __always_inline __u32 skb_link_header_len(struct __sk_buff *ctx)
{
	struct sk_buff *skb = bpf_cast_to_kern_ctx(ctx);
	__u16 network = skb->network_header;
	__u16 mac = skb->mac_header;
	if (mac == (__u16)~0U || network < mac)
		return 0;
	return (network - mac) & 0xff;
}

#endif /* KAPPA_KERNEL_COMPAT */

#endif
