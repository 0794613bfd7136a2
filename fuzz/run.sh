#!/usr/bin/env bash
# Build Portal's libFuzzer targets with clang and run them.
#
#   fuzz/run.sh [--seconds N | --runs N] [--no-build] [targets...]
#   fuzz/run.sh --seeds            rewrite fuzz/corpus/ with the seed writer
#   fuzz/run.sh --repro TARGET FILE...   run inputs once (a crash reproducer)
#   fuzz/run.sh --coverage [targets]     line coverage of the library code the
#                   targets exercise, replaying the last run's corpus (or the
#                   seeds); a separate build without sanitizers (BUILD-cov)
#
# Targets: region_attach ring msgring bcast arena ivshmem (default: all), one after
# the other. Each runs on a fresh copy of fuzz/corpus/<target>/ (the copy
# grows; the committed seeds do not) for N seconds (default 60) or N
# executions. Prints executions, coverage and crashes per target; exits 1 if
# any target crashed, hung or leaked, and 77 when clang-14 or libFuzzer is
# missing (CTest counts that as skipped).
#
# Environment:
#   PORTAL_FUZZ_BUILD  build directory (default: build-fuzz in the source tree)
#   PORTAL_FUZZ_CC     compiler (default: clang-14, else clang)
#   PORTAL_FUZZ_JOBS   build parallelism (default 2)
#   PORTAL_FUZZ_ARGS   extra libFuzzer flags for every target
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
build=${PORTAL_FUZZ_BUILD:-$root/build-fuzz}
jobs=${PORTAL_FUZZ_JOBS:-2}
all_targets=(region_attach ring msgring bcast arena ivshmem)

seconds=60
runs=
do_build=1
mode=run
targets=()
while [ $# -gt 0 ]; do
	case "$1" in
	--seconds) seconds=$2; runs=; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--no-build) do_build=0; shift ;;
	--seeds) mode=seeds; shift ;;
	--coverage) mode=coverage; shift ;;
	--repro) mode=repro; shift; break ;;
	-h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
	-*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
	*) targets+=("$1"); shift ;;
	esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
	case " ${all_targets[*]} " in
	*" $t "*) ;;
	*) echo "run.sh: unknown target $t (have: ${all_targets[*]})" >&2; exit 2 ;;
	esac
done

# ---- a compiler with libFuzzer, or skip ----
cc=${PORTAL_FUZZ_CC:-}
if [ -z "$cc" ]; then
	for c in clang-14 clang; do
		if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
	done
fi
if [ -z "$cc" ] || ! command -v "$cc" >/dev/null 2>&1; then
	echo "skipped: clang-14 not found (apt-get install clang-14 libclang-rt-14-dev)"
	exit 77
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
	'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
	>"$probe/p.c"
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >"$probe/log" 2>&1; then
	echo "skipped: $cc cannot link -fsanitize=fuzzer (apt-get install libclang-rt-14-dev)"
	sed 's/^/  /' "$probe/log" | head -5
	exit 77
fi

# ---- build ----
build_in() { # DIR [cmake options...]
	local dir=$1
	shift
	mkdir -p "$dir"
	if [ ! -f "$dir/CMakeCache.txt" ] || ! grep -q '^PORTAL_FUZZ:BOOL=ON' "$dir/CMakeCache.txt"; then
		cmake -S "$root" -B "$dir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
			-DPORTAL_FUZZ=ON -DPORTAL_TESTS=OFF -DPORTAL_BENCH=OFF "$@" >"$dir/fuzz-configure.log" 2>&1 ||
			{ cat "$dir/fuzz-configure.log"; echo "run.sh: configure failed"; exit 1; }
	fi
	cmake --build "$dir" -j "$jobs" --target portal_fuzz_all >"$dir/fuzz-build.log" 2>&1 ||
		{ tail -40 "$dir/fuzz-build.log"; echo "run.sh: build failed ($dir/fuzz-build.log)"; exit 1; }
}
if [ "$mode" = coverage ]; then
	cov=$build-cov
	build_in "$cov" -DPORTAL_FUZZ_COVERAGE=ON
	for t in "${targets[@]}"; do
		case "$t" in
		region_attach) files="region/region.c ring/ring.c ring/msgring.c ring/bcast.c arena/arena.c" ;;
		ring) files="ring/ring.c" ;;
		msgring) files="ring/msgring.c" ;;
		bcast) files="ring/bcast.c" ;;
		arena) files="arena/arena.c arena/arena_ring.c span/span.c" ;;
		ivshmem) files="doorbell/ivshmem_client.c ivshmem-server/server.c" ;;
		esac
		corpus=$build/fuzz-work/$t/corpus
		[ -d "$corpus" ] || corpus=$here/corpus/$t
		w=$cov/cov-work/$t
		rm -rf "$w"
		mkdir -p "$w"
		LLVM_PROFILE_FILE="$w/%p.profraw" "$cov/bin/portal_fuzz_$t" -runs=0 "$corpus" >"$w/log" 2>&1 || true
		llvm-profdata-14 merge -sparse "$w"/*.profraw -o "$w/merged.profdata"
		echo "== $t ($(find "$corpus" -type f | wc -l) inputs from $corpus)"
		# shellcheck disable=SC2086
		(cd "$root" && llvm-cov-14 report "$cov/bin/portal_fuzz_$t" -instr-profile="$w/merged.profdata" \
			$files) | sed -n '1,2p;/\.c /p;/^TOTAL/p' | cut -c1-160
	done
	exit 0
fi
if [ "$do_build" = 1 ]; then
	build_in "$build"
fi
bin=$build/bin

if [ "$mode" = seeds ]; then
	"$bin/portal_fuzz_seeds" "$here/corpus"
	exit 0
fi

if [ "$mode" = repro ]; then
	[ $# -ge 2 ] || { echo "usage: run.sh --repro TARGET FILE..." >&2; exit 2; }
	t=$1; shift
	exec "$bin/portal_fuzz_$t" -error_exitcode=1 -timeout=30 "$@"
fi

# ---- run ----
max_len_of() {
	case "$1" in
	region_attach) echo 16384 ;;
	*) echo 4096 ;;
	esac
}

work=$build/fuzz-work
mkdir -p "$work"
# Seconds one input may take. Every input runs in milliseconds; a target is
# deterministic, so a timeout that does not happen again on replay was the
# machine (another job busy-polling the cores), not a hang.
timeout=30
failed=0
printf '\n%-14s %12s %9s %7s %7s %7s  %s\n' target executions exec/s cov ft corpus result >"$work/summary"
for t in "${targets[@]}"; do
	w=$work/$t
	rm -rf "$w"
	mkdir -p "$w/corpus"
	if [ -d "$here/corpus/$t" ]; then
		cp -r "$here/corpus/$t/." "$w/corpus/"
	fi
	args=(-max_len="$(max_len_of "$t")" -timeout="$timeout" -rss_limit_mb=2048 -error_exitcode=1
		-timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$w/")
	[ -f "$here/$t.dict" ] && args+=(-dict="$here/$t.dict")
	[ "$t" = region_attach ] && args+=(-use_value_profile=1)
	if [ -n "$runs" ]; then args+=(-runs="$runs"); else args+=(-max_total_time="$seconds"); fi
	# shellcheck disable=SC2206
	args+=(${PORTAL_FUZZ_ARGS:-})
	echo "== $t: ${runs:+$runs runs}${runs:-$seconds s} (log: $w/log)"
	rc=0
	result=
	"$bin/portal_fuzz_$t" "${args[@]}" "$w/corpus" >"$w/log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$w/log" | tail -1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$w/log" | tail -1)
	last=$(grep -E '^#[0-9]+.*cov: ' "$w/log" | tail -1 || true)
	cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
	ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
	corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
	arts=$(find "$w" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' \
		-o -name 'leak-*' -o -name 'oom-*' \) | tr '\n' ' ')
	stuck=$(find "$w" -maxdepth 1 -type f -name 'timeout-*' | tr '\n' ' ')
	if [ "$rc" != 0 ] && [ -n "$stuck" ] && [ "$arts" = "$stuck" ]; then
		# Only timeouts: replay them before calling them hangs.
		again=
		for f in $stuck; do
			"$bin/portal_fuzz_$t" -timeout="$timeout" -error_exitcode=1 -timeout_exitcode=1 \
				"$f" >"$f.replay" 2>&1 || again="$again $f"
		done
		if [ -z "$again" ]; then
			rc=0
			echo "   timeout did not happen again on replay (machine busy?): $stuck"
			result="ok (stopped early: timeout not reproduced)"
		fi
	fi
	if [ "$rc" = 0 ]; then
		result=${result:-ok}
	else
		failed=1
		result="FAILED (exit $rc) ${arts:-see log}"
		grep -E 'ERROR|INVARIANT|SUMMARY|runtime error' "$w/log" | head -8 | sed 's/^/   /'
	fi
	printf '%-14s %12s %9s %7s %7s %7s  %s\n' "$t" "${execs:-?}" "${speed:-?}" "${cov:-?}" \
		"${ft:-?}" "${corp:-?}" "$result" >>"$work/summary"
done
cat "$work/summary"
if [ "$failed" = 1 ]; then
	echo "Reproduce: fuzz/run.sh --no-build --repro TARGET CRASHFILE (PORTAL_FUZZ_TRACE=1 to trace)"
	exit 1
fi
exit 0
