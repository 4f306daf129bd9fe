#!/usr/bin/env bash
# Installs the Debian packages kappa needs to build, run and test, when any is missing.
# Idempotent and quiet when everything is present. Needs root (or sudo) to install.
#   tools/install-deps.sh [--kernels]    --kernels: also what `npm run test:kernels` needs
set -euo pipefail

# command-or-file to check  →  Debian package
declare -A needs=(
  [clang]=clang
  [llvm-strip]=llvm
  [/usr/include/bpf/bpf_helpers.h]=libbpf-dev
  [/usr/lib/x86_64-linux-gnu/libbpf.so.1]=libbpf1
  [bpftool]=bpftool
  [redis-server]=redis-server
  [ip]=iproute2
  [ethtool]=ethtool
  [tcpdump]=tcpdump
  [tshark]=tshark
  [nfcapd]=nfdump
  [iperf3]=iperf3
  [softflowd]=softflowd # the pcap-based peers of the datapath benchmark (tools/bench/datapath.ts)
  [pmacctd]=pmacct
  [cc]=gcc              # the benchmarks' C traffic helpers (tools/bench/*.c)
  [nft]=nftables
  [ss]=iproute2
  [nstat]=iproute2
  [capsh]=libcap2-bin
  [ping]=iputils-ping
  [jq]=jq
  [dnsmasq]=dnsmasq-base # the DNS tests' resolver (the binary only: no system service)
  [dig]=bind9-dnsutils   # the DNS tests' client (UDP and TCP queries)
  [chromium]=chromium   # the console's browser tests (playwright-core drives it; no browser download)
)
if [[ ${1:-} == --kernels ]]; then
  # tools/kernels: qemu (TCG), a Debian root file system, ext4 images made and read without mounting.
  needs+=([qemu-system-x86_64]=qemu-system-x86 [debootstrap]=debootstrap [mke2fs]=e2fsprogs [debugfs]=e2fsprogs)
fi

missing=()
for what in "${!needs[@]}"; do
  if [[ $what == /* ]]; then
    [[ -e $what ]] || missing+=("${needs[$what]}")
  else
    command -v "$what" >/dev/null 2>&1 || missing+=("${needs[$what]}")
  fi
done
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
if [[ ${#missing[@]} -gt 0 ]]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "kappa: installing Debian packages: ${missing[*]}" >&2
  if [[ ${#sudo[@]} -gt 0 ]] && ! command -v sudo >/dev/null; then
    echo "kappa: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | "${sudo[@]}" debconf-set-selections
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nats-server: newer than Debian 12's (why: in the script). Quiet when the one on PATH will do;
# it asks for root itself only when it has to install (through sudo where there is one).
nats_script="$(dirname "${BASH_SOURCE[0]}")/install-nats-server.sh"
if [[ ${#sudo[@]} -gt 0 ]] && command -v sudo >/dev/null; then sudo bash "$nats_script"; else bash "$nats_script"; fi
