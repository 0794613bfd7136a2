/* SPDX-License-Identifier: MIT */
/*
 * process_test.c - cross-process tests: separate processes (fork+exec of
 * portal_peer, not threads) share a real POSIX shm region.
 *
 *   spsc        1 producer, 1 consumer, 64-byte slots
 *   mpsc        3 producers, 1 consumer, 16-byte slots
 *   mpmc        2 producers, 2 consumers, 32-byte slots; the consumers'
 *               bitmaps must unite to exactly every message, none twice
 *   msg         variable-length message ring, zero-copy and copying calls
 *   bcast       HOLD broadcast, 1 publisher, 2 subscribers: each sees all
 *   bcast_lap   LAP broadcast, one subscriber dawdles: sequences only
 *               increase, received + lost == published for each
 *   block_futex / block_eventfd
 *               SPSC with a blocking producer and consumer: each sleeps on
 *               a doorbell (futex word in the region, or an eventfd
 *               inherited across exec) when the ring is empty or full
 *
 * Every message carries producer id, sequence number and checksum, and the
 * receivers check every one (peer_stress.c). Message count per ring kind:
 * PORTAL_STRESS_MESSAGES (default 10^7); the blocking runs use
 * PORTAL_STRESS_BLOCK_MESSAGES (default 10^5).
 *
 * Usage: test_portal_process KIND   (ctest runs one KIND per test)
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

#include "portal/doorbell.h"
#include "portal/ring.h"
#include "stress/driver.h"

#define DEFAULT_MESSAGES       10000000ull
#define DEFAULT_BLOCK_MESSAGES 100000ull

struct kind {
	const char *name;      /* test and --kind */
	const char *peer_kind;
	uint32_t producers;
	uint32_t consumers;    /* subscribers for bcast */
	uint32_t slot;         /* descriptor ring / bcast slot bytes */
	uint32_t capacity;
	uint32_t mode;         /* ring or bcast mode */
	enum { K_RING, K_MSG, K_BCAST } type;
	int block;             /* 0, or PORTAL_DOORBELL_FUTEX / _EVENTFD */
};

static const struct kind kinds[] = {
	{ "spsc", "spsc", 1, 1, 64, 1024, PORTAL_RING_SPSC, K_RING, 0 },
	{ "mpsc", "mpsc", 3, 1, 16, 256, PORTAL_RING_MPSC, K_RING, 0 },
	{ "mpmc", "mpmc", 2, 2, 32, 256, PORTAL_RING_MPMC, K_RING, 0 },
	{ "msg", "msg", 1, 1, 0, 65536, 0, K_MSG, 0 },
	{ "bcast", "bcast-hold", 1, 2, 64, 1024, PORTAL_BCAST_HOLD, K_BCAST, 0 },
	{ "bcast_lap", "bcast-lap", 1, 2, 64, 64, PORTAL_BCAST_LAP, K_BCAST, 0 },
	{ "block_futex", "spsc", 1, 1, 64, 64, PORTAL_RING_SPSC, K_RING, PORTAL_DOORBELL_FUTEX },
	{ "block_eventfd", "spsc", 1, 1, 64, 64, PORTAL_RING_SPSC, K_RING,
	  PORTAL_DOORBELL_EVENTFD },
};

#define MSG_MAX 2048u

static uint64_t per_producer(uint64_t count, uint32_t producers, uint32_t id)
{
	return count / producers + (id < count % producers ? 1 : 0);
}

static uint64_t seen_bytes(uint64_t count, uint32_t producers)
{
	return (per_producer(count, producers, 0) + 63) / 64 * 8;
}

/* Peer deadline: generous for 2 shared cores and a sanitizer build. */
static double peer_timeout(uint64_t count, int block)
{
	return 60.0 + (double)count / (block ? 5000.0 : 50000.0);
}

/* The consumers' bitmaps must unite to exactly every message, none twice. */
static bool check_union(const struct kind *k, uint64_t count, uint8_t *const *seen)
{
	uint64_t stride = seen_bytes(count, k->producers), missing = 0, dups = 0, extra = 0;

	for (uint32_t p = 0; p < k->producers; p++) {
		uint64_t n = per_producer(count, k->producers, p);

		for (uint64_t w = 0; w < stride / 8; w++) {
			uint64_t all = 0, any = 0, twice = 0, want, v;

			for (uint32_t c = 0; c < k->consumers; c++) {
				memcpy(&v, seen[c] + p * stride + w * 8, 8);
				twice |= any & v;
				any |= v;
				all |= v;
			}
			want = (w + 1) * 64 <= n ? UINT64_MAX
			       : w * 64 >= n  ? 0
					      : (UINT64_C(1) << (n - w * 64)) - 1;
			missing += (uint64_t)__builtin_popcountll(want & ~all);
			extra += (uint64_t)__builtin_popcountll(all & ~want);
			dups += (uint64_t)__builtin_popcountll(twice);
		}
	}
	printf("driver: union of %u consumers: missing %llu, duplicated %llu, unknown %llu\n",
	       k->consumers, (unsigned long long)missing, (unsigned long long)dups,
	       (unsigned long long)extra);
	return missing == 0 && dups == 0 && extra == 0;
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

static void run_kind(const struct kind *k)
{
	struct driver_run *run = &the_run;
	uint64_t count = k->block ? driver_env_count("PORTAL_STRESS_BLOCK_MESSAGES",
						      DEFAULT_BLOCK_MESSAGES)
				  : driver_env_count("PORTAL_STRESS_MESSAGES", DEFAULT_MESSAGES);
	uint32_t npeers = k->producers + k->consumers;
	uint64_t size = 1u << 20;
	uint8_t *seen[STRESS_MAX_PEERS] = { 0 };
	const char *skip_why;
	char side[16], cnt[32], id[16], np[16], nc[16], tmo[32], efd_d[16], efd_s[16];
	char what[64];
	int efd[3] = { -1, -1, -1 };
	double timeout = peer_timeout(count, k->block), t0;
	uint64_t total_sleeps = 0;
	bool ok;
	int rc;

	if (k->consumers > 1 && k->type == K_RING)
		size += (uint64_t)k->consumers * seen_bytes(count, k->producers) * k->producers;
	size += (uint64_t)k->capacity * (k->slot + 8) + (1u << 16);
	rc = driver_setup(run, k->name, size, npeers, count, &skip_why);
	if (rc && skip_why) {
		printf("skipped: %s\n", skip_why);
		skip();
	}
	assert_int_equal(rc, 0);
	t0 = stress_now();

	switch (k->type) {
	case K_RING: {
		struct portal_ring_params rp = { .mode = k->mode, .slot_size = k->slot,
						 .capacity = k->capacity };

		assert_int_equal(portal_ring_create(run->reg, STRESS_QUEUE_NAME, &rp, 1), 0);
		for (uint32_t c = 0; k->consumers > 1 && c < k->consumers; c++) {
			snprintf(what, sizeof(what), "stress.seen.%u", c);
			seen[c] = driver_alloc_user(run, what,
						    seen_bytes(count, k->producers) * k->producers);
			assert_non_null(seen[c]);
		}
		break;
	}
	case K_MSG: {
		struct portal_msgring_params mp = { .capacity = k->capacity, .max_msg = MSG_MAX };

		assert_int_equal(portal_msgring_create(run->reg, STRESS_QUEUE_NAME, &mp, 1), 0);
		break;
	}
	case K_BCAST: {
		struct portal_bcast_params bp = { .mode = k->mode, .slot_size = k->slot,
						  .capacity = k->capacity, .max_subs = 4 };

		assert_int_equal(portal_bcast_create(run->reg, STRESS_QUEUE_NAME, &bp, 1), 0);
		break;
	}
	}
	if (k->block) {
		/* data: the consumer (side 2) waits, the producer (side 1)
		 * rings; space: the other way round. */
		assert_int_equal(portal_doorbell_create(run->reg, "stress.db.data", k->block, 1), 0);
		assert_int_equal(portal_doorbell_create(run->reg, "stress.db.space", k->block, 2), 0);
		if (k->block == PORTAL_DOORBELL_EVENTFD) {
			efd[0] = portal_doorbell_eventfd_create();
			efd[1] = portal_doorbell_eventfd_create();
			if (efd[0] == -ENOSYS || efd[1] == -ENOSYS) {
				driver_teardown(run);
				printf("skipped: no eventfd on this kernel\n");
				skip();
			}
			assert_true(efd[0] >= 0 && efd[1] >= 0);
			snprintf(efd_d, sizeof(efd_d), "%d", efd[0]);
			snprintf(efd_s, sizeof(efd_s), "%d", efd[1]);
		}
	}

	printf("driver: %s: %llu messages, %u producer(s), %u %s, region %s\n", k->name,
	       (unsigned long long)count, k->producers, k->consumers,
	       k->type == K_BCAST ? "subscriber(s)" : "consumer(s)", run->uri);
	snprintf(cnt, sizeof(cnt), "%llu", (unsigned long long)count);
	snprintf(np, sizeof(np), "%u", k->producers);
	snprintf(nc, sizeof(nc), "%u", k->consumers);
	snprintf(tmo, sizeof(tmo), "%.0f", timeout);
	for (uint32_t i = 0; i < npeers; i++) {
		bool prod = i < k->producers;
		uint32_t idx = prod ? i : i - k->producers;
		const char *role = prod ? "producer" : k->type == K_BCAST ? "sub" : "consumer";
		const char *argv[DRIVER_MAX_ARGS];
		unsigned a = 0;

		snprintf(side, sizeof(side), "%u", i + 1);
		snprintf(id, sizeof(id), "%u", idx);
		argv[a++] = "--uri", argv[a++] = run->uri;
		argv[a++] = "--side", argv[a++] = side;
		argv[a++] = "--role", argv[a++] = role;
		argv[a++] = "--kind", argv[a++] = k->peer_kind;
		argv[a++] = "--count", argv[a++] = cnt;
		argv[a++] = "--id", argv[a++] = id;
		argv[a++] = "--producers", argv[a++] = np;
		argv[a++] = "--consumers", argv[a++] = nc;
		argv[a++] = "--timeout", argv[a++] = tmo;
		/* LAP: subscriber 1 dawdles, so the publisher laps it. */
		if (k->type == K_BCAST && k->mode == PORTAL_BCAST_LAP && !prod && idx == 1)
			argv[a++] = "--slow";
		if (k->block) {
			argv[a++] = "--block";
			argv[a++] = k->block == PORTAL_DOORBELL_FUTEX ? "futex" : "eventfd";
			if (efd[0] >= 0) {
				argv[a++] = "--efd-data", argv[a++] = efd_d;
				argv[a++] = "--efd-space", argv[a++] = efd_s;
			}
		}
		argv[a] = NULL;
		snprintf(what, sizeof(what), "%s %u", role, idx);
		rc = driver_spawn(run, "portal_peer", what, argv, efd);
		if (rc) {
			printf("driver: cannot start portal_peer: %s\n", strerror(-rc));
			atomic_store(&run->ctl->abort, 1);
			break;
		}
	}
	if (efd[0] >= 0) {
		/* The children have their own copies now. */
		close(efd[0]);
		close(efd[1]);
	}
	ok = driver_wait(run, timeout + 30) && rc == 0;

	/* Every peer reported success in its slot, and the counts agree. */
	for (uint32_t i = 0; i < npeers; i++) {
		struct stress_result *r = &run->ctl->res[i];
		bool prod = i < k->producers;
		uint32_t idx = prod ? i : i - k->producers;

		if (atomic_load_explicit(&r->state, memory_order_acquire) != STRESS_ST_PASSED ||
		    r->errors) {
			printf("driver: peer %u did not pass (state %u, errors %llu)\n", i + 1,
			       (unsigned)r->state, (unsigned long long)r->errors);
			ok = false;
		}
		total_sleeps += r->sleeps;
		if (prod && r->messages != per_producer(count, k->producers, idx)) {
			printf("driver: producer %u sent %llu\n", idx,
			       (unsigned long long)r->messages);
			ok = false;
		}
		if (k->type == K_BCAST && !prod) {
			if (r->messages + r->lost != count) {
				printf("driver: subscriber %u: %llu + %llu lost != %llu\n", idx,
				       (unsigned long long)r->messages, (unsigned long long)r->lost,
				       (unsigned long long)count);
				ok = false;
			}
			/* The dawdling LAP subscriber must really have been lapped,
			 * or the run proved nothing about lapping. */
			if (k->mode == PORTAL_BCAST_LAP && idx == 1 && r->lost == 0 && ok) {
				printf("driver: the slow LAP subscriber was never lapped\n");
				ok = false;
			}
		}
	}
	if (ok && k->consumers > 1 && k->type == K_RING) {
		uint64_t sum = 0;

		for (uint32_t c = 0; c < k->consumers; c++)
			sum += run->ctl->res[k->producers + c].messages;
		if (sum != count) {
			printf("driver: consumers took %llu of %llu\n", (unsigned long long)sum,
			       (unsigned long long)count);
			ok = false;
		}
		ok = check_union(k, count, seen) && ok;
	}
	if (ok && k->block && total_sleeps == 0) {
		printf("driver: nobody ever slept on a doorbell: blocking path not exercised\n");
		ok = false;
	}
	printf("driver: %s: %s, %llu messages in %.2fs (%.2f M/s)\n", k->name,
	       ok ? "PASS" : "FAIL", (unsigned long long)count, stress_now() - t0,
	       (double)count / (stress_now() - t0) / 1e6);
	driver_teardown(run);
	assert_true(ok);
}

#define KIND_TEST(n)                                                                 \
	static void test_##n(void **state)                                          \
	{                                                                            \
		(void)state;                                                         \
		for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)       \
			if (!strcmp(kinds[i].name, #n))                              \
				run_kind(&kinds[i]);                                 \
	}

KIND_TEST(spsc)
KIND_TEST(mpsc)
KIND_TEST(mpmc)
KIND_TEST(msg)
KIND_TEST(bcast)
KIND_TEST(bcast_lap)
KIND_TEST(block_futex)
KIND_TEST(block_eventfd)

int main(int argc, char **argv)
{
	const struct CMUnitTest all[] = {
		cmocka_unit_test_teardown(test_spsc, teardown),
		cmocka_unit_test_teardown(test_mpsc, teardown),
		cmocka_unit_test_teardown(test_mpmc, teardown),
		cmocka_unit_test_teardown(test_msg, teardown),
		cmocka_unit_test_teardown(test_bcast, teardown),
		cmocka_unit_test_teardown(test_bcast_lap, teardown),
		cmocka_unit_test_teardown(test_block_futex, teardown),
		cmocka_unit_test_teardown(test_block_eventfd, teardown),
	};
	char want[64];

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1) {
		size_t i;

		snprintf(want, sizeof(want), "test_%s", argv[1]);
		for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
			if (!strcmp(all[i].name, want))
				break;
		if (i == sizeof(all) / sizeof(all[0])) {
			fprintf(stderr, "unknown kind %s\n", argv[1]);
			return 2;
		}
		cmocka_set_test_filter(want);
	}
	return cmocka_run_group_tests_name("portal.process", all, NULL, NULL);
}
