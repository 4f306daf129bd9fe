/* DNS: the messages of every conversation with port 53 at either end (UDP datagrams, TCP
 * segments), seen at the cgroup skb hooks of the watched sockets, copied to userspace through a
 * ring buffer. Userspace parses them (never the kernel: names, compression pointers and CNAME
 * chains need loops the verifier would price per packet), measures query -> answer latency from
 * the two hook times, and learns which name each local namespace resolved to which address.
 *
 * Run by the counting programs themselves (kappa_skb_ingress / kappa_skb_egress call kappa_dns_copy after
 * counting, when userspace set kappa_config.dns: the DNS feature), not by programs of their own:
 * a second program on the hook cost every packet of the watched sockets a program dispatch
 * (~15 ns by BPF_PROG_TEST_RUN; bpf_stats shows 80-100, most of it its own cost) to find out it
 * was not DNS. With the feature off the verifier
 * drops this code (kappa_config is read-only). Included by kappa.bpf.c before its skb hooks: uses
 * its maps (kappa_socks, the drain epoch) and its packet parser. */
#ifndef KAPPA_DNS_H
#define KAPPA_DNS_H

#define KAPPA_DNS_PORT 53
/* The classic UDP limit: a larger answer (EDNS, TCP) is parsed as far as these bytes go. */
#define KAPPA_DNS_MAX_MESSAGE 512

/* Indexes into kappa_dns_counters (per CPU, totals since load). */
#define KAPPA_DNS_COUNTER_LOST 0 /* messages not copied: the ring buffer was full */
#define KAPPA_DNS_COUNTER_MAX 4

/* One DNS message (or the first KAPPA_DNS_MAX_MESSAGE bytes of one TCP segment's payload), with
 * the conversation it belongs to keyed exactly as the flow maps key it. */
struct kappa_dns_event {
	struct kappa_flow_key key;
	__u64 ktime_ns;	       /* bpf_ktime_get_ns() at the hook */
	__u32 epoch;	       /* the drain epoch the packet was counted in */
	__u16 length;	       /* valid bytes of message[] */
	__u16 payload_length;  /* the transport payload's length (TCP: with its 2-byte length prefix) */
	__u8 egress;	       /* 1: sent by the local end, 0: received */
	__u8 pad[7];
	__u64 rx_tstamp_ns;    /* received: the kernel's receive timestamp (skb->tstamp), else 0 */
	__u8 message[KAPPA_DNS_MAX_MESSAGE];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* userspace sets it from --dns-buffer */
} kappa_dns_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KAPPA_DNS_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} kappa_dns_counters SEC(".maps");

static __always_inline void dns_count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&kappa_dns_counters, &index);
	if (value)
		*value += 1;
}

/* The ports of a UDP packet by direct access (IPv4, or IPv6 without extension headers); 0 when
 * the headers are not in the linear part (the caller then parses). */
static __always_inline __u32 udp_ports_direct(struct __sk_buff *skb)
{
	__u8 *data = (void *)(long)skb->data;
	__u8 *end = (void *)(long)skb->data_end;
	if (data + 1 > end)
		return 0;
	__u32 ihl = (data[0] >> 4) == 4 ? (data[0] & 0x0f) * 4 : 40;
	if ((data[0] >> 4) == 6) {
		if (data + 40 > end || data[6] != KAPPA_IPPROTO_UDP)
			return 0;
	}
	if (ihl < 20 || ihl > 60)
		return 0;
	__u8 *udp = data + ihl;
	if (udp + 4 > end)
		return 0;
	return (__u32)((udp[0] << 8) | udp[1]) << 16 | ((udp[2] << 8) | udp[3]);
}

/* A global function, not inlined: the verifier checks it once, on its own, instead of once per
 * path through the counting code before it. Inlined, those paths multiplied with the copy's: 6.1's
 * verifier gave up after a million instructions (E2BIG) where 6.18's pruned them. The gate is
 * repeated inside: a global function is verified even where no call reaches it, and with the
 * feature off the verifier must still drop all of it (a kernel that rejects the copy then loads
 * the counting programs without it). */
__noinline int kappa_dns_copy(struct __sk_buff *skb, __u32 egress)
{
	if (!kappa_config.dns)
		return 1;
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	/* The cheap test first, on the socket's own ports (readable on any socket): a connected
	 * socket names its peer's port; an unconnected UDP socket (a resolver's, or a client's
	 * sendto) has it in the packet. */
	__u16 local_port = sk->src_port;
	__u16 remote_port = bpf_ntohs(sk->dst_port);
	bool dns_socket = local_port == KAPPA_DNS_PORT || remote_port == KAPPA_DNS_PORT;
	if (!dns_socket && remote_port != 0)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	__u32 protocol = sk->protocol;
	if (protocol != KAPPA_IPPROTO_UDP && protocol != KAPPA_IPPROTO_TCP)
		return 1;
	if (!dns_socket) {
		if (protocol != KAPPA_IPPROTO_UDP)
			return 1;
		__u32 ports = udp_ports_direct(skb);
		if (ports && (ports >> 16) != KAPPA_DNS_PORT && (ports & 0xffff) != KAPPA_DNS_PORT)
			return 1;
	}
	struct kappa_sock *s = bpf_sk_storage_get(&kappa_socks, sk, 0, 0);
	if (!s)
		return 1; /* not a socket of the watched cgroup */
	struct packet pkt = {};
	if (parse_packet_at(skb, &pkt, 0) || pkt.fragment == FRAGMENT_LATER || pkt.protocol != protocol)
		return 1;
	if (pkt.src_port != KAPPA_DNS_PORT && pkt.dst_port != KAPPA_DNS_PORT)
		return 1;
	__u32 total = pkt.ip_len ? pkt.ip_len : skb->len;
	if (total > skb->len)
		total = skb->len;
	if (total <= pkt.header_len)
		return 1; /* no payload: a TCP ACK, SYN or FIN */
	__u32 payload = total - pkt.header_len;
	__u32 copy = payload < KAPPA_DNS_MAX_MESSAGE ? payload : KAPPA_DNS_MAX_MESSAGE;

	struct kappa_dns_event *e = bpf_ringbuf_reserve(&kappa_dns_events, sizeof(*e), 0);
	if (!e) {
		dns_count(KAPPA_DNS_COUNTER_LOST);
		return 1;
	}
	/* The conversation as the counting programs key it: the socket's own tuple while it is
	 * connected to this peer, else the packet's. */
	if (s->keyed && s->key.remote_port == remote_port && remote_port != 0) {
		__builtin_memcpy(&e->key, &s->key, sizeof(e->key));
	} else {
		__builtin_memset(&e->key, 0, sizeof(e->key));
		key_from_packet(&e->key, &pkt, egress);
		e->key.netns = s->netns;
	}
	e->ktime_ns = bpf_ktime_get_ns();
	/* A received packet's skb->tstamp, while the kernel takes receive timestamps (capture holds a
	 * socket that asks for them: net_enable_timestamp), is the CLOCK_REALTIME time netif_rx /
	 * netif_receive_skb took it in at the interface: the time a packet capture there shows. The
	 * path from there to this hook (a backlog queue, a softirq that may wait) is tens of µs on a
	 * loaded host, the size of a whole sub-millisecond exchange's 10 %. Userspace moves it to
	 * ktime's clock (DnsTracker); 0 (timestamps off): the hook time stands. */
	/* Read at its fixed UAPI offset, not as skb->tstamp: vmlinux.h's __sk_buff makes that a CO-RE
	 * relocation, which Debian 6.1's BTF did not resolve (capture exited: "no match for 2 fields"). */
	/* Read on both directions, not behind `egress ? 0 :`: a branch on egress, which stays live to
	 * the store below, splits every later state in two, and 6.1's verifier then passed its million
	 * instructions in kappa_skb_ingress (E2BIG, seen in the VM) where 6.18 pruned them. Userspace
	 * reads it for received messages only. */
	e->rx_tstamp_ns = *(__u64 *)((void *)skb + __builtin_offsetof(struct __sk_buff, tstamp));
	e->epoch = current_epoch();
	e->length = copy;
	e->payload_length = payload > 0xffff ? 0xffff : payload;
	e->egress = egress;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	/* The length bpf_skb_load_bytes gets must be provably within [1, KAPPA_DNS_MAX_MESSAGE] in
	 * the very register the helper receives. A check does not do that on every kernel: clang
	 * drops it (it knows payload > 0 and copy <= the limit), and where it keeps one it may test a
	 * 32-bit copy of the register (w1 = w8; if w1 == 0 ...; w4 = w8), which 6.1's verifier does
	 * not link back to the original ("R3 min value is outside of the allowed memory range": a
	 * length whose minimum is 0). Bounds made by arithmetic travel with every move: hide the
	 * value from clang, then fold it into the range (the same number for every copy in range). */
	_Static_assert((KAPPA_DNS_MAX_MESSAGE & (KAPPA_DNS_MAX_MESSAGE - 1)) == 0, "a power of two");
	__u32 length = copy;
	asm volatile("" : "+r"(length));
	length = ((length - 1) & (KAPPA_DNS_MAX_MESSAGE - 1)) + 1;
	if (copy == 0 || bpf_skb_load_bytes(skb, pkt.header_len, e->message, length)) {
		bpf_ringbuf_discard(e, 0);
		return 1;
	}
	/* Userspace reads the ring on a timer: no wakeup per message. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 1;
}

#endif
