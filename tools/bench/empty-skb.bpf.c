// SPDX-License-Identifier: GPL-2.0
/* The baseline of bench:datapath's bpf_stats runs: empty programs at the same cgroup skb hooks as
 * kappa's, on the same skbs in the same run. Built twice: -DKBD_FIRST programs are attached before
 * kappa's (the first program of a hook pays cold-cache costs of bpf_stats itself: its clock
 * page), the others after them, in the same position as kappa's (not first): kappa's program
 * minus the empty program after it is what kappa's code costs; bpf_stats' own cost per run (two
 * clock reads and the per-CPU stats update) is in both and cancels. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

#ifdef KBD_FIRST
#define INGRESS kbd_first_in
#define EGRESS kbd_first_eg
#else
#define INGRESS kbd_after_in
#define EGRESS kbd_after_eg
#endif

SEC("cgroup_skb/ingress")
int INGRESS(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup_skb/egress")
int EGRESS(struct __sk_buff *skb)
{
	return 1;
}
