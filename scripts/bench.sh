#!/usr/bin/env bash
# The main job: build Portal and run portal-bench in quick mode.
# Extra arguments go to portal-bench (e.g. --reps 9, --json out.json; see --help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
portal_install_deps
build=${PORTAL_BUILD_DIR:-$PORTAL_ROOT/build}
portal_build "$build" -DPORTAL_TESTS=OFF -DPORTAL_BENCH=ON
mkdir -p "$PORTAL_ROOT/out"
exec "$build/bin/portal-bench" --quick --json "$PORTAL_ROOT/out/bench.json" --out "$PORTAL_ROOT/out" "$@"
