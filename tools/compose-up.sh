#!/usr/bin/env bash
# Proves infra/compose/docker-compose.yml on this host with podman (no Docker engine here):
# builds the local base image, the service images and NATS/Redis images, starts the stack with
# podman-compose, waits until every service's healthcheck passes, makes loopback TCP traffic on
# a fresh port and waits until that conversation appears in the exporter's JSON Lines output,
# then tears the stack down. Exit 0 only when the flow arrived.
#
#   tools/compose-up.sh            build + prove + tear down
#   tools/compose-up.sh --keep     leave the stack running (stop: tools/compose-up.sh --down)
#   tools/compose-up.sh --down     tear down a stack left by --keep
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-prove}

project=${KAPPA_COMPOSE_PROJECT:-kd-kappa}
tag=${KAPPA_TAG:-dev}
base=${KAPPA_BASE_IMAGE:-localhost/kappa-base:node24}
run_dir=$root/infra/compose/.run
podman=(podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs)
services=(capture process-enricher k8s-tagger joiner exporter)
t0=$SECONDS
phase() { echo "compose-up: [$((SECONDS - t0)) s] $*" >&2; }
fail() { echo "compose-up: FAILED: $*" >&2; exit 1; }

# --- podman-compose that knows `pid: host` --------------------------------------------------------
# Debian 12's podman-compose 1.0.3 ignores `pid:` and adds a bridge network next to
# `network_mode: host` (podman refuses both). 1.3.0 (Debian 13's package, pure Python, runs on
# Debian 12's python3-yaml and python3-dotenv) handles both: fetch it with apt into a cache
# folder, without installing it over the system's.
podman_compose() {
  local have
  have=$(podman-compose version 2>/dev/null | sed -n 's/^podman-compose version \([0-9.]*\).*/\1/p' | head -n1 || true)
  if [[ -n $have ]] && printf '1.1.0\n%s\n' "$have" | sort -V -C; then
    pc=(podman-compose)
    return
  fi
  local cache=/var/cache/kappa/podman-compose-1.3.0
  if [[ ! -f $cache/podman_compose.py ]]; then
    phase "fetching podman-compose 1.3.0 (Debian trixie package) into $cache"
    python3_deps=()
    /usr/bin/python3 -c 'import yaml' 2>/dev/null || python3_deps+=(python3-yaml)
    /usr/bin/python3 -c 'import dotenv' 2>/dev/null || python3_deps+=(python3-dotenv)
    ((${#python3_deps[@]})) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${python3_deps[@]}" >/dev/null
    local mirror apt_dir
    mirror=$(grep -hoE '^URIs:[[:space:]]*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
    [[ -n $mirror ]] || mirror=$(grep -hoE '^deb[[:space:]]+\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
    [[ -n $mirror ]] || fail "no Debian mirror found in /etc/apt/sources.list(.d)"
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/deb"
    echo "deb $mirror trixie main" >"$apt_dir/sources.list"
    local apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists" -o APT::Get::List-Cleanup=0)
    apt-get "${apt_opts[@]}" update -qq >/dev/null
    (cd "$apt_dir/deb" && apt-get "${apt_opts[@]}" download podman-compose=1.3.0-1 2>&1 | grep -v unsandboxed >&2 || true)
    dpkg -x "$apt_dir"/deb/podman-compose_*.deb "$apt_dir/x"
    mkdir -p "$cache"
    cp "$apt_dir/x/usr/lib/python3/dist-packages/podman_compose.py" "$cache/"
    rm -rf "$apt_dir"
  fi
  pc=(/usr/bin/python3 "$cache/podman_compose.py")
}

free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }

compose_env() {
  export KAPPA_TAG=$tag KAPPA_IMAGE_PREFIX=localhost/kappa KAPPA_BASE_IMAGE=$base
  export KAPPA_NATS_IMAGE=localhost/kappa-nats:$tag KAPPA_REDIS_IMAGE=localhost/kappa-redis:$tag
  export KAPPA_AGENT_SECCOMP=$run_dir/seccomp-agent.json
  # podman-compose 1.3 resolves `KEY: ${KEY:-default}` in `environment:` against the service's own
  # environment first, i.e. to itself, unless KEY is set here: set every such variable.
  export KAPPA_INTERVAL=${KAPPA_INTERVAL:-2s} KAPPA_LOG_LEVEL=${KAPPA_LOG_LEVEL:-info}
  export KAPPA_MODE=${KAPPA_MODE:-socket} KAPPA_CAPTURE=${KAPPA_CAPTURE:-en.*|veth.*|eth.*}
  # The host's cgroup v2 mount, as seen under /host/sys/fs/cgroup in capture and enricher.
  local cgroup2
  cgroup2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
  [[ $cgroup2 == /sys/fs/cgroup* ]] || fail "no cgroup v2 mount under /sys/fs/cgroup (found '${cgroup2}')"
  export KAPPA_HOST_CGROUP2=/host$cgroup2
  if [[ -f $run_dir/ports.env ]]; then
    # shellcheck disable=SC1091
    source "$run_dir/ports.env"
  fi
}

compose() { (cd infra/compose && "${pc[@]}" -p "$project" -f docker-compose.yml -f docker-compose.podman.yml "$@"); }

down() {
  compose down -v >"$run_dir/down.log" 2>&1 || true
  # podman-compose does not remove named volumes of the project in every version.
  "${podman[@]}" volume rm -f "${project}_nats-data" "${project}_exports" >/dev/null 2>&1 || true
  "${podman[@]}" network rm -f "${project}_kappa" >/dev/null 2>&1 || true
}

mkdir -p "$run_dir"
podman_compose

if [[ $mode == --down ]]; then
  compose_env
  down
  rm -f "$run_dir/ports.env"
  exit 0
fi

# --- images --------------------------------------------------------------------------------
phase "base image"
bash tools/build-base-image.sh
phase "NATS and Redis images (Debian packages)"
for dep in nats redis; do
  "${podman[@]}" build -q -f infra/docker/deps.Dockerfile --build-arg "BASE=$base" --target "$dep" \
    -t "localhost/kappa-$dep:$tag" infra/docker >"$run_dir/build-$dep.log" 2>&1 ||
    { tail -n 30 "$run_dir/build-$dep.log" >&2; fail "building the $dep image"; }
done
for service in "${services[@]}"; do
  phase "image kappa-$service"
  target=service run_as=1000
  [[ $service == capture ]] && target=capture
  [[ $service == process-enricher ]] && run_as=0
  "${podman[@]}" build -f infra/docker/Dockerfile --build-arg "BASE=$base" --build-arg "SERVICE=$service" \
    --build-arg "RUN_AS=$run_as" --target "$target" -t "localhost/kappa-$service:$tag" . >"$run_dir/build-$service.log" 2>&1 ||
    { tail -n 40 "$run_dir/build-$service.log" >&2; fail "building the $service image (log: $run_dir/build-$service.log)"; }
done

# Docker's default seccomp rules for bpf()/perf_event_open() on top of podman's default profile.
/usr/bin/python3 - "$run_dir/seccomp-agent.json" <<'PY'
import json, sys
profile = json.load(open('/usr/share/containers/seccomp.json'))
for rule in profile['syscalls']:
    if rule.get('action') == 'SCMP_ACT_ERRNO':
        rule['names'] = [n for n in rule['names'] if n not in ('bpf', 'perf_event_open')]
profile['syscalls'] = [r for r in profile['syscalls'] if r['names']]
profile['syscalls'] += [
    {'names': ['bpf'], 'action': 'SCMP_ACT_ALLOW', 'includes': {'caps': ['CAP_BPF']}},
    {'names': ['perf_event_open'], 'action': 'SCMP_ACT_ALLOW', 'includes': {'caps': ['CAP_PERFMON']}},
]
json.dump(profile, open(sys.argv[1], 'w'), indent=1)
PY

# --- up ------------------------------------------------------------------------------------
# Ports on the host: free ones, so the stack does not collide with `npm run up` or tests.
cat >"$run_dir/ports.env" <<PORTS
export KAPPA_NATS_PORT=$(free_port) KAPPA_REDIS_PORT=$(free_port) KAPPA_OBSERVER_PORT=$(free_port)
export KAPPA_CAPTURE_METRICS_PORT=$(free_port) KAPPA_ENRICHER_METRICS_PORT=$(free_port)
PORTS
compose_env
down
if [[ $mode != --keep ]]; then trap 'phase "tearing down"; down; rm -f "$run_dir/ports.env"' EXIT; fi
# capture's spool is bind-mounted from the host; podman, unlike Docker, does not create it.
mkdir -p /var/lib/kappa/capture
phase "podman-compose up (project $project, NATS on 127.0.0.1:$KAPPA_NATS_PORT)"
compose up -d >"$run_dir/up.log" 2>&1 || { tail -n 40 "$run_dir/up.log" >&2; fail "podman-compose up"; }

# podman runs periodic healthchecks from systemd timers, and there is no systemd here: run each
# container's healthcheck (the compose file's test) until it passes.
phase "waiting for every healthcheck"
for service in "${services[@]}"; do
  container="${project}_${service}_1"
  deadline=$((SECONDS + 120))
  until "${podman[@]}" healthcheck run "$container" >/dev/null 2>&1; do
    if ((SECONDS > deadline)) || [[ $("${podman[@]}" inspect -f '{{.State.Status}}' "$container" 2>/dev/null) == exited ]]; then
      "${podman[@]}" logs --tail 30 "$container" >&2 || true
      fail "$service did not become healthy"
    fi
    sleep 2
  done
  phase "$service healthy"
done

# --- the proof: this host's loopback conversation reaches the exporter's JSON Lines -----------
# A process of this host (outside every container) serves and connects on a fresh port and stays
# alive, so the enricher can read its command line (the marker) from the host's /proc.
port=$(free_port)
marker=kappa-compose-proof-$port
phase "loopback TCP traffic on 127.0.0.1:$port from '$marker'"
cat >"$run_dir/traffic.cjs" <<'JS'
// Echo server and five clients on 127.0.0.1:PORT; stays alive until killed (at most 3 min).
const net = require('net');
const port = Number(process.argv[2]);
const server = net.createServer((s) => s.on('data', (d) => s.write(d))).listen(port, '127.0.0.1', async () => {
  for (let i = 0; i < 5; i++) {
    await new Promise((done) => {
      const c = net.connect(port, '127.0.0.1', () => c.write(`kappa compose proof ${i}`));
      c.on('data', () => c.end());
      c.on('close', done);
    });
  }
});
setTimeout(() => process.exit(0), 180_000);
JS
node "$run_dir/traffic.cjs" "$port" "$marker" &
traffic=$!
jsonl=$("${podman[@]}" volume inspect -f '{{.Mountpoint}}' "${project}_exports")/flows.jsonl
deadline=$((SECONDS + 120))
until [[ -f $jsonl ]] && grep "\"port\":$port[,}]" "$jsonl" | grep -q "$marker"; do
  if ((SECONDS > deadline)); then
    kill "$traffic" 2>/dev/null || true
    for service in "${services[@]}"; do echo "--- $service" >&2; "${podman[@]}" logs --tail 15 "${project}_${service}_1" >&2 || true; done
    found=$(grep -c "\"port\":$port[,}]" "$jsonl" 2>/dev/null || true)
    fail "no record of port $port whose process command line names $marker in $jsonl after 120 s (records of the port: ${found:-0})"
  fi
  sleep 2
done
kill "$traffic" 2>/dev/null || true
records=$(grep -c "\"port\":$port[,}]" "$jsonl")
phase "PASS: $records record(s) of 127.0.0.1:$port in the exporter's $jsonl, the process's command line included, e.g.:"
grep "\"port\":$port[,}]" "$jsonl" | grep -m1 "$marker" | cut -c1-900
echo "compose-up: total $((SECONDS - t0)) s"
