#!/usr/bin/env bash
# Build Portal with warnings as errors and run the whole test suite: unit and
# cross-process tests; then the unit and cross-process tests again under ASan
# and UBSan, and the threaded unit tests under ThreadSanitizer.
# Long stress and fuzz runs are separate: ctest -L stress / -L fuzz.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
portal_install_deps
build=${PORTAL_BUILD_DIR:-$PORTAL_ROOT/build}

portal_build "$build" -DPORTAL_TESTS=ON -DPORTAL_WERROR=ON
(cd "$build" && ctest --output-on-failure --timeout 900 -LE '^(stress|fuzz)$')

portal_build "$build-asan" -DPORTAL_TESTS=ON -DPORTAL_WERROR=ON -DPORTAL_SANITIZE=ON -DPORTAL_BENCH=OFF
(cd "$build-asan" && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 900 -L '^(unit|process)$')

# TSan: the unit tests that run threads against each other. Only their
# targets are built (the stress programs force ASan on, which TSan excludes).
threaded=(ring msgring bcast doorbell region)
cmake -S "$PORTAL_ROOT" -B "$build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPORTAL_TESTS=ON \
	-DPORTAL_WERROR=ON -DPORTAL_TSAN=ON -DPORTAL_BENCH=OFF >/dev/null
cmake --build "$build-tsan" -j "$(nproc)" --target "${threaded[@]/#/test_portal_}"
(cd "$build-tsan" && TSAN_OPTIONS="halt_on_error=1 suppressions=$PORTAL_ROOT/tests/tsan.supp" \
	ctest --output-on-failure --timeout 900 -R "^portal\\.($(IFS='|'; echo "${threaded[*]}"))\$")
