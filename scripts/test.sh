#!/usr/bin/env bash
# Build Portal with warnings as errors and run the whole test suite: unit and
# cross-process tests, then the unit tests again under ASan and UBSan.
# Long stress and fuzz runs are separate: ctest -L stress / -L fuzz.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
portal_install_deps
build=${PORTAL_BUILD_DIR:-$PORTAL_ROOT/build}

portal_build "$build" -DPORTAL_TESTS=ON -DPORTAL_WERROR=ON
(cd "$build" && ctest --output-on-failure --timeout 900 -LE '^(stress|fuzz)$')

portal_build "$build-asan" -DPORTAL_TESTS=ON -DPORTAL_WERROR=ON -DPORTAL_SANITIZE=ON -DPORTAL_BENCH=OFF
(cd "$build-asan" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 900 -L unit)
