#!/usr/bin/env bash
# `npm test`: installs what is missing, builds, lints, typechecks and runs every project's tests
# through Nx, then prints one closing line `N passed, N failed, N skipped`.
set -uo pipefail
cd "$(dirname "$0")/.."

bash tools/install-deps.sh || { echo "0 passed, 1 failed"; exit 1; }
bash tools/ensure-node-modules.sh || { echo "0 passed, 1 failed"; exit 1; }

export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false NX_SKIP_NX_CACHE=${NX_SKIP_NX_CACHE:-false}
# From here on, node is the pinned Node 24 in node_modules/.bin.
export PATH="$PWD/node_modules/.bin:$PATH"
rm -rf .test-results

nx run-many -t build --outputStyle=stream; build=$?
nx run-many -t lint typecheck --outputStyle=stream; checks=$?
# Tests run one project at a time: BPF programs, cgroups and namespaces are machine-wide.
nx run-many -t test --parallel=1 --outputStyle=stream; tests=$?

# The test targets' exit status counts too: a project that crashed before writing its report
# must still fail the run.
node tools/test-summary.mjs "build=$build" "lint+typecheck=$checks" "test targets=$tests"
