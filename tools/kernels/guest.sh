#!/bin/bash
# Runs inside the test VM (called by the root image's /sbin/kappa-boot, project disk at /kappa):
# mounts what a node has, runs capture's tests listed in /kappa/.kernels/tests with this
# project's build and Node 24, and writes the results to the serial console between markers
# that tools/kernels/run.ts reads. Never reaches the network: the tests use namespaces only.
set -u
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# cgroup v2 alone (as on current managed nodes), bpffs, tracefs.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t securityfs securityfs /sys/kernel/security
ip link set lo up
hostname kappa-vm
# Modules the tests use (the cloud kernel builds them as modules; most also load on demand).
for module in veth nf_tables nft_numgen nft_ct sch_ingress cls_bpf; do modprobe -q "$module" || echo "guest: modprobe $module failed"; done

marker() { echo "@@kappa:$*"; }
cd /kappa || exit 1
export PATH=/kappa/node_modules/.bin:$PATH HOME=/root CI=true NO_COLOR=1 FORCE_COLOR=0
# Every Node process compiles its modules again; under TCG that is most of a start (tens of
# seconds for kappa-capture on a loaded host). V8's code cache on disk lets later starts skip it.
export NODE_COMPILE_CACHE=/tmp/node-compile-cache
marker "kernel $(uname -r)"
marker "uptime $(cut -d' ' -f1 /proc/uptime)"

# What this kernel offers capture, as an operator would ask (the hooks go into run.ts's table).
node /kappa/apps/capture/bin/kappa-capture.js --check >/kappa/.kernels/out/check.txt 2>&1
marker "check $?"

# One line per project: "<project dir> <vitest arguments...>", report n to .kernels/out; or
# "!<shell command>", run as is (e.g. raising lockdown before the tests that need it).
n=0
while read -r project args; do
  [[ -n $project ]] || continue
  if [[ $project == '!'* ]]; then
    marker "shell ${project#!} $args"
    bash -c "${project#!} $args" </dev/null
    marker "shell-exit $?"
    continue
  fi
  n=$((n + 1))
  marker "run $n $project $args"
  # shellcheck disable=SC2086
  (cd "/kappa/$project" && node /kappa/node_modules/vitest/vitest.mjs run --reporter=default --reporter=json \
    --outputFile.json="/kappa/.kernels/out/report-$n.json" $args </dev/null)
  marker "exit $n $?"
done </kappa/.kernels/tests
sync
marker "done"
