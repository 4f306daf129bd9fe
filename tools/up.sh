#!/usr/bin/env bash
# `npm run up`: the whole of kappa on this host. Installs what is missing, builds (BPF included),
# then hands over to tools/up.mjs, which runs NATS, Redis and the five services until Ctrl-C.
# `npm run up -- --plaintext` (or KAPPA_PLAINTEXT=1) runs the links without TLS, with a warning.
# `npm run up -- --cluster` (or KAPPA_UP_CLUSTER=1) runs 3 NATS servers (R3 streams), a Redis Cluster
# of 6 and 2 replicas of k8s-tagger, joiner and exporter.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -f .kappa/up.pid ]] && kill -0 "$(cat .kappa/up.pid)" 2>/dev/null; then
  echo "kappa is already running here (pid $(cat .kappa/up.pid)); stop it with Ctrl-C in its terminal first." >&2
  exit 1
fi
bash tools/install-deps.sh
bash tools/ensure-node-modules.sh
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false
export PATH="$PWD/node_modules/.bin:$PATH"
nx run-many -t build --outputStyle=static
exec node tools/up.mjs "$@"
