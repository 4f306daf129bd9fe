#!/usr/bin/env bash
# Builds the CO-RE BPF object: vmlinux.h from the running kernel's BTF (or $KAPPA_BTF), then
# clang for the bpf target. Output: bpf/.output/kappa.bpf.o (kernels 6.2+) and kappa-compat.bpf.o
# (older kernels), found by apps/capture at run time.
set -euo pipefail
cd "$(dirname "$0")"
btf=${KAPPA_BTF:-/sys/kernel/btf/vmlinux}
mkdir -p .output
# vmlinux.h only carries type definitions, and CO-RE relocates them at load time, so one
# generated here works on other kernels too.
bpftool btf dump file "$btf" format c > .output/vmlinux.h.tmp
mv .output/vmlinux.h.tmp .output/vmlinux.h
# -mcpu=v3: 32-bit atomics (the OR of TCP flags) and better code.
flags=(-g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86 -Wall -Werror -I .output)
clang "${flags[@]}" -c kappa.bpf.c -o .output/kappa.bpf.o
# The same programs for kernels without bpf_cast_to_kern_ctx (before 6.2): kappa_kernel_compat.h.
clang "${flags[@]}" -DKAPPA_KERNEL_COMPAT -c kappa.bpf.c -o .output/kappa-compat.bpf.o
