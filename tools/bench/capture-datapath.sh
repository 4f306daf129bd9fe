#!/usr/bin/env bash
# Capture datapath benchmark: iperf3 over a veth between two network namespaces, with and without
# kappa-capture attached (paired runs, alternating order, in the same invocation), the BPF
# programs' ns per run from kernel.bpf_stats_enabled, and capture's CPU and RSS under that load.
# Usage (root, after `npm run build`): tools/bench/capture-datapath.sh [PAIRS=5] [SECONDS=5]
# Prints Markdown for BENCHMARKS.md. Everything it creates is named kc-bench-* and removed.
set -euo pipefail
cd "$(dirname "$0")/../.."
pairs=${1:-5}
seconds=${2:-5}
node=${NODE:-$PWD/node_modules/.bin/node}
cg_root=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
cg=$cg_root/kc-bench
capture_pid=

cleanup() {
  [[ -n $capture_pid ]] && kill -INT "$capture_pid" 2>/dev/null && wait "$capture_pid" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled=0
  ip netns del kc-bench-a 2>/dev/null || true
  ip netns del kc-bench-b 2>/dev/null || true
  if [[ -d $cg ]]; then
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$cg/cgroup.procs"
    sleep 0.2
    rmdir "$cg" 2>/dev/null || true
  fi
}
trap cleanup EXIT
cleanup

# Processes of the benchmark run in their own cgroup; capture attaches to that sub-tree only.
mkdir -p "$cg"
in_cg() { sh -c "echo \$\$ > $cg/cgroup.procs && exec \"\$@\"" sh "$@"; }
in_cg ip netns add kc-bench-a
in_cg ip netns add kc-bench-b
ip link add kc-bench-va netns kc-bench-a type veth peer name kc-bench-vb netns kc-bench-b
ip -n kc-bench-a addr add 10.78.0.1/24 dev kc-bench-va
ip -n kc-bench-b addr add 10.78.0.2/24 dev kc-bench-vb
for ns in a b; do ip -n kc-bench-$ns link set lo up; ip -n kc-bench-$ns link set kc-bench-v$ns up; done
in_cg ip netns exec kc-bench-b iperf3 -s -D -B 10.78.0.2 -p 5299 --logfile /dev/null
sleep 0.5

iperf() { in_cg ip netns exec kc-bench-a iperf3 -c 10.78.0.2 -p 5299 -t "$seconds" -J | jq '.end.sum_received.bits_per_second / 1e9'; }
start_capture() {
  "$node" apps/capture/bin/kappa-capture.js --stdout --cgroup "$cg" --interval 2s --metrics-port 0 > /dev/null 2> /tmp/kc-bench-capture.log &
  capture_pid=$!
  for _ in $(seq 100); do grep -q '"msg":"capturing"' /tmp/kc-bench-capture.log && return; sleep 0.1; done
  echo "capture did not start: $(cat /tmp/kc-bench-capture.log)" >&2; exit 1
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
stop_capture() { kill -INT "$capture_pid"; wait "$capture_pid" || true; capture_pid=; }

echo "| pair | without capture, Gbit/s | with capture, Gbit/s | change | capture CPU, % of one core | capture RSS, MiB |"
echo "| --- | --- | --- | --- | --- | --- |"
for i in $(seq "$pairs"); do
  # Alternate which side of the pair runs first, so drift on the shared machine cancels out.
  if (( i % 2 )); then without=$(iperf); fi
  start_capture
  ticks=$(cpu_ticks "$capture_pid"); t0=$(date +%s%N)
  with=$(iperf)
  cpu=$(( $(cpu_ticks "$capture_pid") - ticks )); t1=$(date +%s%N)
  rss=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$capture_pid/status")
  stop_capture
  if (( i % 2 == 0 )); then without=$(iperf); fi
  hz=$(getconf CLK_TCK)
  awk -v i="$i" -v a="$without" -v b="$with" -v cpu="$cpu" -v hz="$hz" -v ns=$((t1 - t0)) -v rss="$rss" \
    'BEGIN { printf "| %d | %.2f | %.2f | %+.1f %% | %.2f | %s |\n", i, a, b, (b - a) / a * 100, cpu / hz / (ns / 1e9) * 100, rss }'
done

# ns per run: bpf_stats costs a little itself, so it is measured in its own run.
start_capture
sysctl -qw kernel.bpf_stats_enabled=1
iperf > /dev/null
echo
echo "| program | runs | ns per run |"
echo "| --- | --- | --- |"
# The programs this capture loaded: the prog ids behind its file descriptors.
ids=$(grep -h '^prog_id:' /proc/"$capture_pid"/fdinfo/* 2>/dev/null | awk '{ print $2 }' | sort -un | paste -sd, -)
bpftool -j prog show | jq -r --argjson ids "[$ids]" '.[] | select(.id as $id | $ids | index($id)) | select(.run_cnt != null and .run_cnt > 0) |
  "| \(.name) | \(.run_cnt) | \((.run_time_ns / .run_cnt) | floor) |"'
sysctl -qw kernel.bpf_stats_enabled=0
stop_capture
