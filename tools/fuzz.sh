#!/usr/bin/env bash
# `npm run fuzz`: the long fuzz and property runs. KAPPA_FUZZ_RUNS scales the FlowBatch codec and
# IPFIX encoder properties (IPFIX runs = KAPPA_FUZZ_RUNS / 20) and the JSON writer's (/ 10), KAPPA_FUZZ_SUBJECT_BUFFERS the
# hostile buffers per NATS subject against the built services; KAPPA_FUZZ_SEED replays a run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
export KAPPA_FUZZ_RUNS="${KAPPA_FUZZ_RUNS:-20000}"
export KAPPA_FUZZ_SUBJECT_BUFFERS="${KAPPA_FUZZ_SUBJECT_BUFFERS:-100000}"
# The subject test runs the services' bundles.
for app in process-enricher k8s-tagger joiner exporter cli; do (cd "apps/$app" && npm run --silent build); done
status=0
vitest run --config libs/contracts/vitest.config.ts test/fuzz.test.ts || status=1
vitest run --config apps/exporter/vitest.config.ts test/ipfix-property.test.ts test/json-writer.test.ts || status=1
vitest run --config tests/e2e/vitest.config.ts test/fuzz-subjects.test.ts || status=1
exit $status
