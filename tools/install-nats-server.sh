#!/usr/bin/env bash
# Installs the nats-server kappa runs (tests, `npm run up`, the benchmarks) when the one on PATH is
# older than $KAPPA_NATS_MIN: /usr/local/sbin/nats-server, ahead of /usr/sbin in root's PATH.
#
# Why not Debian 12's own (2.9.10): on an R3 stream, a server that restarts into its cluster can
# apply a work-queue ack (a message delete) for a sequence already gone, and then resets the
# stream ("stream store EOF", "Resetting stream cluster state"): messages exported twice or never
# (nats-io/nats-server#7308, fixed by #7348 in September 2025). kappa's streams are work queues.
#
# Where from: Debian's `testing` suite, through this host's own Debian mirror (the URIs of its
# apt sources, the suite swapped), so apt checks the index against Debian's archive keys and the
# package against the index. The package is a static Go binary (it needs libc6 >= 2.34: Debian 12
# has 2.36); only the binary is taken, nothing else of testing is installed.
set -euo pipefail

min=${KAPPA_NATS_MIN:-2.12.1}
target=/usr/local/sbin/nats-server
cache=${KAPPA_CACHE:-/var/cache/kappa}/nats-server
log() { echo "kappa: $*" >&2; }

version_of() { "$1" --version 2>/dev/null | sed -n 's/^nats-server: v//p'; }
current=$(command -v nats-server >/dev/null 2>&1 && version_of nats-server || true)
if [[ -n $current ]] && dpkg --compare-versions "$current" ge "$min"; then exit 0; fi
[[ $(id -u) -eq 0 ]] || { log "nats-server ${current:-missing}, kappa needs >= $min: run tools/install-nats-server.sh as root"; exit 1; }

suite=testing
apt_dir=$cache/apt-$suite
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null |
  awk -v to="$suite" '$1 ~ /\/debian\/$/ && !seen[$1]++ {print "deb " $1 " " to " main"}' >"$apt_dir/sources.list"
[[ -s $apt_dir/sources.list ]] || { log "no Debian mirror in this host's apt sources: cannot fetch nats-server >= $min"; exit 1; }
apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives")
log "installing nats-server >= $min (have ${current:-none}) from Debian $suite as $target"
apt-get "${apt_opts[@]}" update -qq >&2
version=$({ apt-cache "${apt_opts[@]}" show --no-all-versions nats-server 2>/dev/null || true; } | awk '/^Version:/ {print $2; exit}')
[[ -n $version ]] || { log "Debian $suite has no nats-server"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chown _apt "$tmp" 2>/dev/null || true # apt downloads as _apt where it can
(cd "$tmp" && apt-get "${apt_opts[@]}" download "nats-server=$version" >/dev/null) || { log "apt-get download nats-server=$version failed"; exit 1; }
dpkg-deb -x "$tmp"/nats-server_*.deb "$tmp/root"
got=$(version_of "$tmp/root/usr/sbin/nats-server")
dpkg --compare-versions "${got:-0}" ge "$min" || { log "Debian $suite's nats-server is ${got:-unrunnable}, kappa needs >= $min"; exit 1; }
install -m 0755 "$tmp/root/usr/sbin/nats-server" "$target"
log "nats-server $got installed as $target"
