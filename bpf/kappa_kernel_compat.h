/* kappa_kernel.h's functions for kernels without bpf_cast_to_kern_ctx() (before 6.2: EKS AL2023's
 * and GKE COS's 6.1, AKS Ubuntu's 5.15). Built into bpf/.output/kappa-compat.bpf.o
 * (-DKAPPA_KERNEL_COMPAT); capture loads that object where the kernel's BTF has no such kfunc.
 *
 * A program's context pointer is the kernel object itself at run time (struct sk_buff for the skb
 * hooks and tc, struct sock for cgroup/sock_create, struct bpf_sock_addr_kern for connect,
 * struct bpf_sock_ops_kern for sock_ops), but
 * without the kfunc the verifier lets no program dereference it as one. It does let a program
 * holding CAP_PERFMON (allow_ptr_leaks) hand its address to bpf_probe_read_kernel(), which
 * cgroup and tc programs may call from 5.x on with CAP_PERFMON: the fields are read that way,
 * at their CO-RE offsets. Same meaning of 0 as in kappa_kernel.h. */
#ifndef KAPPA_KERNEL_COMPAT_H
#define KAPPA_KERNEL_COMPAT_H

/* The context as the kernel object it is: only ever read through BPF_CORE_READ (probe reads). */
#define kappa_kern(type, ctx) ((type *)(void *)(ctx))

static __always_inline __u32 sock_netns(struct sock *sk)
{
	if (!sk)
		return 0;
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline __u32 sock_ctx_netns(struct bpf_sock *ctx)
{
	return sock_netns(kappa_kern(struct sock, ctx));
}

static __always_inline void sock_ctx_tcp_health(struct bpf_sock *ctx, __u32 *total_retrans, __u32 *srtt_us, __u32 *min_rtt_us)
{
	struct tcp_sock *tp = kappa_kern(struct tcp_sock, ctx);
	if (BPF_CORE_READ(kappa_kern(struct sock, ctx), sk_protocol) != IPPROTO_TCP)
		return;
	*total_retrans = BPF_CORE_READ(tp, total_retrans);
	*srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	*min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
}

static __always_inline __u32 sock_addr_netns(struct bpf_sock_addr *ctx)
{
	return sock_netns(BPF_CORE_READ(kappa_kern(struct bpf_sock_addr_kern, ctx), sk));
}

static __always_inline __u32 sock_ops_netns(struct bpf_sock_ops *ctx)
{
	return sock_netns(BPF_CORE_READ(kappa_kern(struct bpf_sock_ops_kern, ctx), sk));
}

static __always_inline __u32 skb_sock_netns(struct __sk_buff *ctx)
{
	return sock_netns(BPF_CORE_READ(kappa_kern(struct sk_buff, ctx), sk));
}

static __always_inline __u32 skb_dev_netns(struct __sk_buff *ctx)
{
	struct net_device *dev = BPF_CORE_READ(kappa_kern(struct sk_buff, ctx), dev);
	if (!dev)
		return 0;
	return BPF_CORE_READ(dev, nd_net.net, ns.inum);
}

static __always_inline __u32 skb_dev_mtu(struct __sk_buff *ctx)
{
	struct net_device *dev = BPF_CORE_READ(kappa_kern(struct sk_buff, ctx), dev);
	return dev ? BPF_CORE_READ(dev, mtu) : 0;
}

static __always_inline __u32 skb_frag_max_size(struct __sk_buff *ctx, bool ipv6)
{
	struct sk_buff *skb = kappa_kern(struct sk_buff, ctx);
	__u16 size = 0;
	__u32 offset = ipv6 ? bpf_core_field_offset(struct inet6_skb_parm, frag_max_size)
			    : bpf_core_field_offset(struct inet_skb_parm, frag_max_size);
	bpf_probe_read_kernel(&size, sizeof(size), (void *)__builtin_preserve_access_index(&skb->cb) + offset);
	return size;
}

static __always_inline __u32 skb_link_header_len(struct __sk_buff *ctx)
{
	struct sk_buff *skb = kappa_kern(struct sk_buff, ctx);
	__u16 network = BPF_CORE_READ(skb, network_header);
	__u16 mac = BPF_CORE_READ(skb, mac_header);
	if (mac == (__u16)~0U || network < mac)
		return 0;
	return (network - mac) & 0xff;
}

#endif
