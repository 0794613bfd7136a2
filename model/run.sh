#!/usr/bin/env bash
# Check the Spin model of the SPSC ring and its doorbell (ring_doorbell.pml):
# the honest model and its properties, the crash and hostile-peer variants,
# and every seeded bug. See README.md in this directory.
#
#   run.sh [WORKDIR]
#
# WORKDIR receives the generated verifiers, their logs and any error trail
# (default: a new directory under ${TMPDIR:-/tmp}). Prints one line per check
# and exits 0 when every honest check passes and every seeded bug is caught,
# 1 otherwise, 77 when spin (or gcc) is missing. PORTAL_MODEL_CC picks another
# compiler for the verifiers.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model=$here/ring_doorbell.pml
cc=${PORTAL_MODEL_CC:-gcc}     # the compiler for pan (not $CC: a clang build's)

if ! command -v spin >/dev/null 2>&1; then
	echo "skipped: spin not installed"
	exit 77
fi
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "skipped: $cc not installed"
	exit 77
fi

work=${1:-}
if [ -z "$work" ]; then
	work=$(mktemp -d "${TMPDIR:-/tmp}/portal-model.XXXXXX") || exit 1
fi
mkdir -p "$work" || exit 1
work=$(cd "$work" && pwd)

# pan's search stack depth and hash table size. The deepest run (the hostile
# consumer) reaches about 10,000 steps; a search that hits the bound is
# reported as incomplete and counts as a failure. 2^21 hash slots are plenty
# for the 1.3 million states of the largest run (collisions are chained; the
# size only costs time), and much cheaper to set up than pan's default 2^24.
pan_opts="-m50000 -w21"
failed=0
t_all=$(date +%s%N)

# check NAME EXPECT SPIN_DEFINES CC_FLAGS PAN_FLAGS [PAN_FLAGS_2 ...]
#   EXPECT: pass        - no error allowed, and the search must be complete
#           catch=REGEX - the checker must report an error (a seeded bug), and
#                         its first report must match REGEX (the property
#                         that is meant to catch it, not some other one)
# One verifier is built per check; each further PAN_FLAGS runs it again
# (used for the two LTL claims, which share one build).
check()
{
	local name=$1 expect=$2 defs=$3 ccflags=$4
	shift 4
	local dir=$work/$name
	rm -rf "$dir" && mkdir -p "$dir" || { failed=1; return; }
	cp "$model" "$dir/" || { failed=1; return; }
	# spin writes pan.[bchmpt] into the current directory; pan writes
	# its trail there too.
	if ! (cd "$dir" && spin $defs -a ring_doorbell.pml >spin.log 2>&1); then
		printf '%-34s FAIL   spin -a failed, see %s/spin.log\n' "$name" "$dir"
		failed=1
		return
	fi
	if ! (cd "$dir" && "$cc" -w $ccflags -o pan pan.c >cc.log 2>&1); then
		printf '%-34s FAIL   %s failed, see %s/cc.log\n' "$name" "$cc" "$dir"
		failed=1
		return
	fi
	local run=0 flags label
	for flags in "$@"; do
		run=$((run + 1))
		label=$name
		case $flags in *"-N "*) label=$name.${flags##*-N };; esac
		local log=$dir/pan.$run.log t0 t1 errors states verdict what ms
		t0=$(date +%s%N)
		(cd "$dir" && ./pan $pan_opts $flags >"$log" 2>&1)
		t1=$(date +%s%N)
		ms=$(((t1 - t0) / 1000000))
		errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
		states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$log" | head -n 1)
		what=$(grep -m 1 -E 'assertion violated|invalid end state|acceptance cycle|non-progress cycle' "$log" |
			sed -e 's/^pan:[0-9]*: *//' -e 's/ (at depth [0-9]*)//' -e 's/[[:space:]]\{1,\}/ /g')
		[ -n "$states" ] || states=?
		if [ -z "$errors" ]; then
			verdict=FAIL
			what="pan did not finish, see $log"
		elif [ "$expect" = pass ]; then
			if [ "$errors" != 0 ]; then
				verdict=FAIL
				what="$what; trail in $dir"
			elif grep -q -E 'Search not completed|max search depth too small' "$log"; then
				verdict=FAIL
				what="search incomplete, see $log"
			else
				verdict=PASS
				what="no errors"
			fi
		elif [ "$errors" = 0 ]; then
			verdict=MISSED
			what="no error found"
		elif printf '%s\n' "$what" | grep -q -E "${expect#catch=}"; then
			verdict=CAUGHT
		else
			verdict=WRONG
			what="$what; expected ${expect#catch=}; trail in $dir"
		fi
		case $verdict in FAIL|MISSED|WRONG) failed=1 ;; esac
		printf '%-34s %-6s states=%-9s %6d ms  %s\n' "$label" "$verdict" "$states" "$ms" "$what"
	done
}

# Optimise only the verifiers with the largest state spaces: for the others
# -O1 costs more compile time than it saves.
safety="-O1 -DNOCLAIM -DSAFETY"
quick="-O0 -DNOCLAIM -DSAFETY"
ltl="-O0"

echo "spin model: $model"
echo "work dir:   $work"

# The honest pair: assertions and end states, then the two LTL properties
# (without the end-state monitor, so that they stand alone). They are checked
# with no fairness assumption, which is stronger than under weak fairness
# (pan -f): the honest model has no busy-wait loop, so fairness would have
# nothing to exclude (README, "Liveness").
check honest.safety            pass  ""                        "$quick"   ""
check honest.ltl               pass  "-DNO_WATCHDOG"           "$ltl"     "-a -N no_lost_wakeup" "-a -N all_delivered"

# The same pair on x86-TSO: prod_tail and armed are stored through store
# buffers, which the fences D1 and D2 drain.
check honest.tso               pass  "-DTSO"                   "$safety"  ""

# A peer may stop forever at any statement.
check crash.safety             pass  "-DCRASH"                 "$safety"  ""

# A hostile peer writes anything into what it owns.
check malicious.producer       pass  "-DMAL_PRODUCER"          "$quick"   ""
check malicious.consumer       pass  "-DMAL_CONSUMER"          "$quick"  ""
# ... and it does get quarantined (the checks are not vacuous).
check witness.quarantine.cons  catch=quarantine_reached "-DMAL_PRODUCER -DWITNESS" "$quick" ""
check witness.quarantine.prod  catch=quarantine_reached "-DMAL_CONSUMER -DWITNESS" "$quick" ""

# Seeded bugs: each must be caught, by the property meant for it.
check bug.no_bound_check       catch=bad_index_accepted "-DMAL_PRODUCER -DBUG_NO_BOUND_CHECK" "$quick" ""
check bug.no_bound_check.oob   catch=read_out_of_bounds \
	"-DMAL_PRODUCER -DBUG_NO_BOUND_CHECK -DNO_DETECT_ASSERT" "$quick" ""
check bug.publish_order        catch="read_unpublished|read_out_of_order" "-DBUG_PUBLISH_ORDER" "$quick" ""
check bug.no_recheck           catch="lost_wakeup|consumer_stuck|invalid end state" "-DBUG_NO_RECHECK" "$quick" ""
check bug.no_recheck.ltl       catch="acceptance cycle" "-DBUG_NO_RECHECK -DNO_WATCHDOG" "$ltl" "-a -N no_lost_wakeup"
# Why the fences are there: on TSO, leaving out either one loses a wake-up.
check bug.no_fence_d1          catch="lost_wakeup|consumer_stuck" "-DTSO -DBUG_NO_FENCE_D1" "$quick" ""
check bug.no_fence_d2          catch="lost_wakeup|consumer_stuck" "-DTSO -DBUG_NO_FENCE_D2" "$quick" ""

# Limits the model confirms (each must be reported, like a bug):
# without a deadline, a producer that dies between publishing and ringing
# leaves the consumer asleep forever (why every wait has a timeout);
# a wake_seq that wraps after CAP + 1 rings can hide a ring from the futex
# compare (why the word must be much wider than the ring is long).
check limit.crash_no_timeout   catch=consumer_stuck "-DCRASH -DNO_TIMEOUT" "$quick" ""
check limit.wake_seq_wrap      catch="lost_wakeup|consumer_stuck" "-DSEQMOD=3" "$quick" ""

t_end=$(date +%s%N)
if [ "$failed" = 0 ]; then
	printf 'model: all checks as expected (%d ms)\n' $(((t_end - t_all) / 1000000))
else
	printf 'model: FAILED (%d ms); logs and trails under %s\n' $(((t_end - t_all) / 1000000)) "$work"
fi
exit "$failed"
