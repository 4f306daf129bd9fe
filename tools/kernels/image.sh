#!/usr/bin/env bash
# Makes (or finds in the cache) what `npm run test:kernels` boots: a Debian kernel package,
# unpacked, and an ext4 root file system for it with the tools capture's tests run (tshark,
# tcpdump, iproute2, nftables, bpftool, ...) and that kernel's modules. Everything comes from the
# Debian package registry this host already uses; nothing else is downloaded.
#
#   tools/kernels/image.sh [KERNEL_PACKAGE]     default: what linux-image-cloud-amd64 depends on
#
# Prints shell assignments on stdout (KERNEL=… ROOT=… RELEASE=… PACKAGE=… VERSION=…).
# Cache: $KAPPA_KERNELS_CACHE (default /var/cache/kappa/kernels), one entry per content key:
#   kernel-<package>_<version>/   vmlinuz, config, lib/modules/<release>   (key: package version)
#   root-<sha256>.img             root file system (key: this script, the kernel entry, the mirror)
# Entries are built in a temporary folder and renamed into place under a lock, so two runs at once
# build once; entries unused for 14 days are removed.
set -euo pipefail

cache=${KAPPA_KERNELS_CACHE:-/var/cache/kappa/kernels}
suite=bookworm
# What the guest needs beyond minbase: capture's exactness tests (tcpdump, tshark, ip, ethtool,
# nft, nstat, ss, ping, bpftool, nsenter), nats-server for the heartbeat test, and module loading (kmod).
packages=iproute2,nftables,ethtool,tcpdump,tshark,iputils-ping,kmod,procps,libbpf1,bpftool,libcap2-bin,nats-server
log() { echo "kernels/image: $*" >&2; }

mkdir -p "$cache"
exec 9>"$cache/.lock"

# --- the kernel package -------------------------------------------------------------------------
package=${1:-}
if [[ -z $package ]]; then
  package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  [[ -n $package ]] || { log "cannot resolve linux-image-cloud-amd64 (apt-get update?)"; exit 1; }
fi
version=$(apt-cache show --no-all-versions "$package" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
if [[ -z $version ]]; then
  apt-get update -qq >&2
  version=$(apt-cache show --no-all-versions "$package" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
fi
[[ -n $version ]] || { log "Debian has no package $package"; exit 1; }
kernel_dir=$cache/kernel-${package}_$version

build_kernel() {
  local tmp
  tmp=$(mktemp -d "$cache/.tmp-kernel.XXXXXX")
  log "downloading $package $version"
  (cd "$tmp" && apt-get download "$package=$version" >/dev/null 2>&1) || { rm -rf "$tmp"; log "apt-get download $package failed"; exit 1; }
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
key=$( { cat "$0"; echo "$kernel_dir $mirror"; } | sha256sum | cut -c1-16)
root_img=$cache/root-$key.img

build_root() {
  local tmp root start=$SECONDS
  tmp=$(mktemp -d "$cache/.tmp-root.XXXXXX")
  root=$tmp/root
  log "debootstrap $suite from $mirror (once per recipe; about 2 minutes)"
  if ! debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
    tail -n 20 "$tmp/debootstrap.log" >&2
    rm -rf "$tmp"
    exit 1
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
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

flock 9
[[ -f $root_img ]] || build_root
# Unused for 14 days: another recipe's or kernel's; in use entries are touched below.
touch "$root_img" "$kernel_dir"
find "$cache" -maxdepth 1 \( -name 'root-*.img' -o -name 'kernel-*' -o -name '.tmp-*' \) -mtime +14 -exec rm -rf {} + 2>/dev/null || true
flock -u 9

printf 'KERNEL=%q\nCONFIG=%q\nROOT=%q\nRELEASE=%q\nPACKAGE=%q\nVERSION=%q\n' \
  "$kernel_dir/vmlinuz" "$kernel_dir/config" "$root_img" "$release" "$package" "$version"
