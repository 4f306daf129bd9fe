// SPDX-License-Identifier: GPL-2.0
/* The baseline of bench:datapath's socket tracepoints: empty programs at sock_send_length and
 * sock_recv_length, beside kappa_sock_send/recv in the same run (see empty-skb.bpf.c): built
 * twice, -DKBD_FIRST attached before kappa's programs, the other after them. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#ifdef KBD_FIRST
#define SEND kbd_first_send
#define RECV kbd_first_recv
#else
#define SEND kbd_after_send
#define RECV kbd_after_recv
#endif

SEC("tp_btf/sock_send_length")
int BPF_PROG(SEND, struct sock *sk, int ret, int flags)
{
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(RECV, struct sock *sk, int ret, int flags)
{
	return 0;
}
