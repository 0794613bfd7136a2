/* SPDX-License-Identifier: MIT */
/*
 * hostile_test.c - driver of the hostile-peer test (portal.process.hostile).
 *
 * For each scenario (hostile.h), two processes share a fresh region: the
 * honest side, portal_peer_asan (the library and the peer compiled with
 * AddressSanitizer and UBSan, the region mapped between guard pages and
 * everything outside its objects poisoned), and the hostile side,
 * portal_peer, which writes out-of-range and adversarial values into the
 * fields its role owns while the honest side keeps calling the API.
 *
 * A scenario passes when both processes exit 0: the honest side saw only
 * documented results, detected every case it must (quarantine, then
 * PORTAL_EPROTO on every later call), never crashed, hung or read out of
 * bounds, and ran under ASan. PORTAL_STRESS_HOSTILE_CALLS sets the honest
 * side's API calls in the random phase (default 200000, at most
 * HOSTILE_RANDOM_SECONDS, or PORTAL_STRESS_HOSTILE_SECONDS); the arena
 * scenario sends that many / 10 spans. The hostile side's random phase
 * includes the flipper (hostile_flip: a field toggled between a valid and a
 * hostile value while the honest side parses it). The last line sums every
 * scenario: honest calls, hostile writes (scribbles and flips), quarantines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "portal/arena.h"
#include "portal/ring.h"
#include "stress/driver.h"

#define DEFAULT_CALLS 200000ull
#define SCENARIO_TIMEOUT 120 /* plus twice the random phase's seconds */

/* Sums over the scenarios that ran, for the summary line. */
static struct {
	unsigned scenarios, passed;
	uint64_t calls, writes, flips, quarantines, must, slowest_us;
} total;

static const char *const extra_names[8] = {
	"calls", "quarantines", "attach_refused", "must_detect",
	"empty_or_full", "slowest_us", "scenario", "asan",
};

static void place_objects(struct driver_run *run, const char *scen)
{
	if (!strcmp(scen, "ring_cons") || !strcmp(scen, "ring_prod") ||
	    !strcmp(scen, "mpmc_cons") || !strcmp(scen, "mpmc_prod")) {
		bool mpmc = scen[0] == 'm';
		struct portal_ring_params rp = { .mode = mpmc ? PORTAL_RING_MPMC : PORTAL_RING_SPSC,
						 .slot_size = mpmc ? 32 : 64, .capacity = 64 };

		assert_int_equal(portal_ring_create(run->reg, STRESS_QUEUE_NAME, &rp, 1), 0);
	} else if (!strcmp(scen, "msg_cons") || !strcmp(scen, "msg_prod")) {
		struct portal_msgring_params mp = { .capacity = 4096, .max_msg = 1024 };

		assert_int_equal(portal_msgring_create(run->reg, STRESS_QUEUE_NAME, &mp, 1), 0);
	} else if (!strncmp(scen, "bcast_", 6)) {
		struct portal_bcast_params bp = {
			.mode = !strcmp(scen, "bcast_sub_lap") ? PORTAL_BCAST_LAP : PORTAL_BCAST_HOLD,
			.slot_size = 64, .capacity = 16, .max_subs = 2 };

		assert_int_equal(portal_bcast_create(run->reg, STRESS_QUEUE_NAME, &bp, 1), 0);
	} else if (!strcmp(scen, "arena")) {
		/* No bump area: a span with the bump flag is out of range. */
		struct portal_arena_params ap = {
			.nclasses = 3,
			.cls = { { 64, 32 }, { 256, 16 }, { 1024, 8 } },
		};
		struct portal_ring_params rp = { .mode = PORTAL_RING_SPSC,
						 .slot_size = PORTAL_ARENA_RETURN_SLOT,
						 .capacity = 64 };

		assert_int_equal(portal_arena_create(run->reg, "stress.arena", &ap, 1, NULL), 0);
		assert_int_equal(portal_ring_create(run->reg, "stress.to_rx", &rp, 1), 0);
		assert_int_equal(portal_ring_create(run->reg, "stress.ret", &rp, 2), 0);
	} else {
		fail_msg("unknown scenario %s", scen);
	}
}

/* File scope, so the teardown removes the region even after a failed
 * assertion. */
static struct driver_run the_run;

static int teardown(void **state)
{
	(void)state;
	driver_teardown(&the_run);
	return 0;
}

static void run_scenario(const char *scen)
{
	struct driver_run *run = &the_run;
	uint64_t calls = driver_env_count("PORTAL_STRESS_HOSTILE_CALLS", DEFAULT_CALLS);
	const char *skip_why;
	char count[32], seed[32], tmo[16];
	const char *secs_env = getenv("PORTAL_STRESS_HOSTILE_SECONDS");
	int timeout = SCENARIO_TIMEOUT + 2 * (secs_env ? atoi(secs_env) : 0);
	const char *honest[24], *hostile[24];
	struct stress_result *h, *x;
	uint64_t flips;
	bool ok;
	int rc;

	rc = driver_setup(run, scen, 1u << 20, 2, calls, &skip_why);
	if (rc && skip_why) {
		printf("skipped: %s\n", skip_why);
		skip();
	}
	assert_int_equal(rc, 0);
	place_objects(run, scen);
	snprintf(count, sizeof(count), "%llu",
		 (unsigned long long)(!strcmp(scen, "arena") ? calls / 10 + 1 : calls));
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)getpid() * 2654435761ull + 1);
	snprintf(tmo, sizeof(tmo), "%d", timeout - 10);
	{
		const char *h_args[] = { "--uri", run->uri, "--side", "1", "--role", "honest",
					 "--kind", scen, "--count", count, "--timeout", tmo,
					 "--seed", seed, "--guard", NULL };
		const char *x_args[] = { "--uri", run->uri, "--side", "2", "--role", "hostile",
					 "--kind", scen, "--count", count, "--timeout", tmo,
					 "--seed", seed, NULL };

		memcpy(honest, h_args, sizeof(h_args));
		memcpy(hostile, x_args, sizeof(x_args));
	}
	printf("driver: hostile scenario %s, region %s\n", scen, run->uri);
	rc = driver_spawn(run, "portal_peer_asan", "honest (asan)", honest, NULL);
	if (rc == 0)
		rc = driver_spawn(run, "portal_peer", "hostile", hostile, NULL);
	if (rc) {
		printf("driver: cannot start the peers: %s\n", strerror(-rc));
		atomic_store(&run->ctl->abort, 1);
	}
	ok = driver_wait(run, timeout) && rc == 0;

	h = &run->ctl->res[0];
	x = &run->ctl->res[1];
	printf("driver: %s honest:", scen);
	for (int i = 0; i < 8; i++)
		printf(" %s=%llu", extra_names[i], (unsigned long long)h->extra[i]);
	/* The hostile sides keep their flip count in extra[2]; the arena one
	 * forges spans instead and uses its extras for their kinds. */
	flips = strcmp(scen, "arena") ? x->extra[2] : 0;
	printf(" errors=%llu; hostile writes=%llu (flips %llu) errors=%llu\n",
	       (unsigned long long)h->errors, (unsigned long long)x->messages,
	       (unsigned long long)flips, (unsigned long long)x->errors);
	if (atomic_load(&h->state) != STRESS_ST_PASSED || atomic_load(&x->state) != STRESS_ST_PASSED ||
	    h->errors || x->errors) {
		printf("driver: %s: a side did not pass\n", scen);
		ok = false;
	}
	/* The honest side really ran under ASan, and checked its must-detect
	 * cases. */
	if (h->extra[7] != 1) {
		printf("driver: %s: the honest side did not run under ASan\n", scen);
		ok = false;
	}
	if (h->extra[3] == 0) {
		printf("driver: %s: no must-detect case was checked\n", scen);
		ok = false;
	}
	printf("driver: hostile scenario %s: %s\n", scen, ok ? "PASS" : "FAIL");
	total.scenarios++;
	total.passed += ok;
	total.calls += h->extra[0];
	total.quarantines += h->extra[1];
	total.must += h->extra[3];
	if (h->extra[5] > total.slowest_us)
		total.slowest_us = h->extra[5];
	total.writes += x->messages;
	total.flips += flips;
	driver_teardown(run);
	assert_true(ok);
}

#define SCENARIO(n)                                                                  \
	static void test_##n(void **state)                                          \
	{                                                                            \
		(void)state;                                                         \
		run_scenario(#n);                                                    \
	}

SCENARIO(ring_cons)
SCENARIO(ring_prod)
SCENARIO(mpmc_cons)
SCENARIO(mpmc_prod)
SCENARIO(msg_cons)
SCENARIO(msg_prod)
SCENARIO(bcast_sub_hold)
SCENARIO(bcast_sub_lap)
SCENARIO(bcast_pub)
SCENARIO(arena)

int main(int argc, char **argv)
{
	const struct CMUnitTest all[] = {
		cmocka_unit_test_teardown(test_ring_cons, teardown),
		cmocka_unit_test_teardown(test_ring_prod, teardown),
		cmocka_unit_test_teardown(test_mpmc_cons, teardown),
		cmocka_unit_test_teardown(test_mpmc_prod, teardown),
		cmocka_unit_test_teardown(test_msg_cons, teardown),
		cmocka_unit_test_teardown(test_msg_prod, teardown),
		cmocka_unit_test_teardown(test_bcast_sub_hold, teardown),
		cmocka_unit_test_teardown(test_bcast_sub_lap, teardown),
		cmocka_unit_test_teardown(test_bcast_pub, teardown),
		cmocka_unit_test_teardown(test_arena, teardown),
	};
	char want[64];
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Optional: one scenario, or a cmocka filter pattern ("test_msg*"). */
	if (argc > 1) {
		snprintf(want, sizeof(want), "test_%s", argv[1]);
		cmocka_set_test_filter(want);
	}
	rc = cmocka_run_group_tests_name("portal.process.hostile", all, NULL, NULL);
	printf("hostile: scenarios=%u passed=%u honest_calls=%llu hostile_writes=%llu flips=%llu "
	       "quarantines=%llu must_detect=%llu slowest_call_us=%llu failed=%d\n",
	       total.scenarios, total.passed, (unsigned long long)total.calls,
	       (unsigned long long)total.writes, (unsigned long long)total.flips,
	       (unsigned long long)total.quarantines, (unsigned long long)total.must,
	       (unsigned long long)total.slowest_us, rc);
	return rc;
}
