#!/usr/bin/env bash
# Makes (or finds in the cache) what `npm run test:kernels` boots: a Debian kernel package,
# unpacked, and an ext4 root file system for it with the tools capture's tests run (tshark,
# tcpdump, iproute2, nftables, bpftool, ...) and that kernel's modules. Everything comes from the
# Debian package registry this host already uses; nothing else is downloaded.
#
#   tools/kernels/image.sh [KERNEL_PACKAGE] [SUITE]
#     KERNEL_PACKAGE  default: what linux-image-cloud-amd64 depends on (in SUITE)
#     SUITE           the Debian release to take the kernel from (default bookworm, this host's;
#                     e.g. bullseye for 5.10): its index is fetched into the cache, from the same
#                     mirrors as this host's bookworm sources. The root file system is bookworm's.
#
# Prints shell assignments on stdout (KERNEL=… ROOT=… RELEASE=… PACKAGE=… VERSION=…).
# Cache: $KAPPA_KERNELS_CACHE (default /var/cache/kappa/kernels), one entry per content key:
#   kernel-<package>_<version>/   vmlinuz, config, lib/modules/<release>   (key: package version)
#   base-<sha256>/                debootstrap of the root (key: the recipe below, the mirror)
#   root-<sha256>.img             base + the kernel's modules + PID 1 (key: base, kernel entry)
#   apt-<suite>/                  apt's index of another suite
# Entries are built in a temporary folder and renamed into place under a lock, so two runs at once
# build once; entries unused for 14 days are removed.
set -euo pipefail

cache=${KAPPA_KERNELS_CACHE:-/var/cache/kappa/kernels}
suite=bookworm
# What the guest needs beyond minbase: capture's exactness tests (tcpdump, tshark, ip, ethtool,
# nft, nstat, ss, ping, bpftool, nsenter), nats-server for the heartbeat test, dnsmasq (its binary
# alone, no service) for the DNS test, and module loading (kmod).
packages=iproute2,nftables,ethtool,tcpdump,tshark,iputils-ping,kmod,procps,libbpf1,bpftool,libcap2-bin,nats-server,dnsmasq-base
log() { echo "kernels/image: $*" >&2; }

mkdir -p "$cache"
exec 9>"$cache/.lock"

# --- the kernel package -------------------------------------------------------------------------
package=${1:-}
kernel_suite=${2:-$suite}
apt_opts=()
if [[ $kernel_suite != "$suite" ]]; then
  # Another Debian release: its index in the cache, from this host's mirrors of $suite (the same
  # URIs, the release's name swapped), so no host name is written anywhere.
  apt_dir=$cache/apt-$kernel_suite
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
    awk -v from="$suite" -v to="$kernel_suite" 'index($2, from) == 1 && !seen[$0]++ {sub(from, to, $2); print "deb " $1 " " $2 " main"}' >"$apt_dir/sources.list"
  [[ -s $apt_dir/sources.list ]] || { log "no Debian $suite mirror in this host's apt sources"; exit 1; }
  apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives")
fi
# (|| true: an index without the package is an empty answer, not the end of the script)
apt_version() { { apt-cache "${apt_opts[@]}" show --no-all-versions "$1" 2>/dev/null || true; } | awk '/^Version:/ {print $2; exit}'; }
apt_package() { { apt-cache "${apt_opts[@]}" depends linux-image-cloud-amd64 2>/dev/null || true; } | awk '/Depends: linux-image-/ {print $2; exit}'; }
[[ -n $package ]] || package=$(apt_package)
if [[ -z $package ]] || [[ -z $(apt_version "$package") ]]; then
  apt-get "${apt_opts[@]}" update -qq >&2
  [[ -n $package ]] || package=$(apt_package)
fi
[[ -n $package ]] || { log "cannot resolve linux-image-cloud-amd64 in $kernel_suite (apt-get update?)"; exit 1; }
version=$(apt_version "$package")
[[ -n $version ]] || { log "Debian $kernel_suite has no package $package"; exit 1; }
kernel_dir=$cache/kernel-${package}_$version

build_kernel() {
  local tmp
  tmp=$(mktemp -d "$cache/.tmp-kernel.XXXXXX")
  log "downloading $package $version"
  (cd "$tmp" && apt-get "${apt_opts[@]}" download "$package=$version" >/dev/null 2>&1) || { rm -rf "$tmp"; log "apt-get download $package failed"; exit 1; }
  dpkg-deb -x "$tmp"/*.deb "$tmp/x"
  mkdir -p "$tmp/out"
  mv "$tmp"/x/boot/vmlinuz-* "$tmp/out/vmlinuz"
  mv "$tmp"/x/boot/config-* "$tmp/out/config"
  mkdir -p "$tmp/out/lib"
  mv "$tmp/x/lib/modules" "$tmp/out/lib/modules"
  mv "$tmp/out" "$kernel_dir"
  rm -rf "$tmp"
}

flock 9
[[ -d $kernel_dir ]] || build_kernel
flock -u 9
release=$(ls "$kernel_dir/lib/modules")

# --- the root file system -----------------------------------------------------------------------
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
  awk -v suite="$suite" '$2 == suite {print $1; exit}')
[[ -n $mirror ]] || { log "no Debian $suite mirror in this host's apt sources"; exit 1; }
# The base (debootstrap, minutes) is shared by every kernel; a kernel's root is the base plus its
# modules and PID 1 (seconds).
build_base() {
  local tmp start=$SECONDS
  tmp=$(mktemp -d "$cache/.tmp-base.XXXXXX")
  log "debootstrap $suite from $mirror (once per recipe; about 2 minutes)"
  if ! debootstrap --variant=minbase --include="$packages" "$suite" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
    tail -n 20 "$tmp/debootstrap.log" >&2
    rm -rf "$tmp"
    exit 1
  fi
  rm -rf "$tmp/root"/var/cache/apt/archives/*.deb "$tmp/root"/var/lib/apt/lists/*
  mv "$tmp/root" "$base_dir"
  rm -rf "$tmp"
  log "base ready in $((SECONDS - start)) s: $base_dir"
}

build_root() {
  local tmp root start=$SECONDS
  tmp=$(mktemp -d "$cache/.tmp-root.XXXXXX")
  root=$tmp/root
  cp -a "$base_dir" "$root"
  mkdir -p "$root/lib/modules" "$root/kappa"
  cp -a "$kernel_dir/lib/modules/$release" "$root/lib/modules/"
  chroot "$root" /sbin/depmod "$release"
  # PID 1: the pseudo file systems, the project disk (label kappa), then the project's own guest
  # script, which does the rest; power off when it returns, whatever happened.
  cat >"$root/sbin/kappa-boot" <<'BOOT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -o noatime LABEL=kappa /kappa || echo "kappa-boot: cannot mount the project disk"
if [ -x /kappa/tools/kernels/guest.sh ]; then /kappa/tools/kernels/guest.sh; else echo "kappa-boot: no /kappa/tools/kernels/guest.sh"; fi
sync
echo o > /proc/sysrq-trigger
sleep 60
BOOT
  chmod 755 "$root/sbin/kappa-boot"
  local size_mb
  size_mb=$(( $(du -sm "$root" | cut -f1) + 768 ))
  mke2fs -q -t ext4 -m 0 -L kapparoot -d "$root" "$tmp/root.img" "${size_mb}M"
  mv "$tmp/root.img" "$root_img"
  rm -rf "$tmp"
  log "root file system ready in $((SECONDS - start)) s: $root_img"
}

# Keys: what each is made of.
base_key=$( { echo "$suite $mirror $packages"; declare -f build_base; } | sha256sum | cut -c1-16)
base_dir=$cache/base-$base_key
key=$( { echo "$base_key $kernel_dir"; declare -f build_root; } | sha256sum | cut -c1-16)
root_img=$cache/root-$key.img

flock 9
[[ -d $base_dir ]] || build_base
[[ -f $root_img ]] || build_root
# Unused for 14 days: another recipe's or kernel's; in use entries are touched below.
touch "$root_img" "$kernel_dir" "$base_dir"
find "$cache" -maxdepth 1 \( -name 'root-*.img' -o -name 'base-*' -o -name 'kernel-*' -o -name 'apt-*' -o -name '.tmp-*' \) -mtime +14 -exec rm -rf {} + 2>/dev/null || true
flock -u 9

printf 'KERNEL=%q\nCONFIG=%q\nROOT=%q\nRELEASE=%q\nPACKAGE=%q\nVERSION=%q\n' \
  "$kernel_dir/vmlinuz" "$kernel_dir/config" "$root_img" "$release" "$package" "$version"
