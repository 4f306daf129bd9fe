#!/usr/bin/env bash
# Builds profiling variants of the capture object into DIR. stop<n>.bpf.o stops at PROFILE_STOP(n)
# of bpf/kappa.bpf.c on a connected TCP socket's path: 1 at entry (an empty program: what any
# program costs), 2 after the socket-storage lookup, 3 after the epoch and the clock, 4 after the
# headers, 5 after the two adds; 6: the socket tracepoints (sock_send/recv) return after their
# storage lookup, the skb programs whole; 7 and 8: the skb programs read a slot of a 64- or
# 65 536-entry array found by the socket cookie instead of the storage lookup, then return (what
# another way to per-socket counters would cost); full.bpf.o is the real program. Prints the --objects argument of
# `npm run bench:datapath`, which runs them in one alternating run (bpf_stats per variant).
#   bash tools/bench/datapath-variants.sh DIR [STOPS...]     (after `npm run build`: needs bpf/.output/vmlinux.h)
set -euo pipefail
dir=${1:?usage: datapath-variants.sh DIR [STOPS...]}
shift
stops=("${@:-1 2 3 4 5}")
bpf="$(cd "$(dirname "$0")/../../bpf" && pwd)"
mkdir -p "$dir"
flags=(-g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror -I "$bpf/.output")
objects="full=$dir/full.bpf.o"
clang "${flags[@]}" -c "$bpf/kappa.bpf.c" -o "$dir/full.bpf.o"
for n in ${stops[*]}; do
	clang "${flags[@]}" -DKAPPA_PROFILE_STOP="$n" -c "$bpf/kappa.bpf.c" -o "$dir/stop$n.bpf.o"
	objects="$objects,stop$n=$dir/stop$n.bpf.o"
done
echo "$objects"
