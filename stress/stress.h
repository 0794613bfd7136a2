/* SPDX-License-Identifier: MIT */
/*
 * stress.h - what the cross-process drivers (process_test.c, hostile_test.c)
 * and the peer program (portal_peer) share: the control block every test
 * region carries, the message stamps and checksums, deadlines and backoff.
 *
 * The driver creates the region (side 0) and places, besides the queue under
 * test, a control block named STRESS_CTL_NAME (kind PORTAL_OBJ_USER). Every
 * peer attaches as its own side, opens its handles, then checks in at the
 * start barrier; each writes only its own result slot. The driver reads the
 * slots after the peers have exited (waitpid orders their stores before our
 * loads: the processes are gone).
 */
#ifndef PORTAL_STRESS_H
#define PORTAL_STRESS_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "common/atomic_internal.h"

#define STRESS_CTL_NAME   "stress.ctl"
#define STRESS_QUEUE_NAME "stress.q"
#define STRESS_CTL_MAGIC  UINT32_C(0x4C544353) /* "SCTL" */
#define STRESS_MAX_PEERS  16u

/* Exit codes of portal_peer besides 0 (all checks passed) and 1 (a check
 * failed): the driver prints them. */
#define STRESS_EXIT_FAIL    1
#define STRESS_EXIT_USAGE   2
#define STRESS_EXIT_SETUP   3
#define STRESS_EXIT_TIMEOUT 4
#define STRESS_EXIT_ABORTED 5

enum stress_state {
	STRESS_ST_NONE    = 0,
	STRESS_ST_RUNNING = 1,
	STRESS_ST_PASSED  = 2,
	STRESS_ST_FAILED  = 3,
};

/* One peer's report, 128 bytes, written only by that peer. */
struct stress_result {
	_Atomic uint32_t state;  /* enum stress_state; release after the rest */
	uint32_t role;           /* informative */
	uint64_t messages;       /* moved (sent or received and checked) */
	uint64_t errors;         /* every failed check */
	uint64_t lost;           /* broadcast LAP: messages skipped */
	uint64_t seq_errors;     /* sequence: gap, duplicate, reorder, bad id */
	uint64_t sum_errors;     /* checksum or length mismatch */
	uint64_t sleeps;         /* blocking mode: doorbell sleeps (both bells) */
	uint64_t rings;          /* blocking mode: doorbell rings made */
	uint64_t extra[8];       /* scenario-specific (hostile: see there) */
};
_Static_assert(sizeof(struct stress_result) == 128, "result slot");

/* The control block. Line by line: the driver writes the geometry before
 * any peer starts; `ready` and `abort` are written by everyone (atomic
 * add/store); `turn` and `stop` are the hostile test's lockstep. */
struct stress_ctl {
	uint32_t magic;           /* driver, before spawning */
	uint32_t npeers;          /* driver: processes that check in */
	uint64_t count;           /* driver: messages in the run */
	uint8_t pad0[48];
	_Atomic uint32_t ready;   /* peers: +1 at the start barrier */
	_Atomic uint32_t abort;   /* anyone: 1 = give up now (a peer failed) */
	uint8_t pad1[56];
	_Atomic uint64_t turn;    /* hostile lockstep: whose move (see hostile) */
	_Atomic uint32_t stop;    /* hostile random phase: honest side is done */
	uint32_t reserved;
	_Atomic uint64_t scratch[6]; /* hostile: values the two sides exchange */
	struct stress_result res[STRESS_MAX_PEERS];
};
_Static_assert(sizeof(struct stress_ctl) % 64 == 0, "ctl size");

/* ---- time ---- */

static inline double stress_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void stress_sleep_us(unsigned us)
{
	struct timespec ts = { .tv_sec = us / 1000000u, .tv_nsec = (long)(us % 1000000u) * 1000 };

	nanosleep(&ts, NULL);
}

/*
 * Backoff for a busy-polling peer. A few pause-spins, then sched_yield, then
 * short sleeps: with more processes than CPUs a spinning peer must give its
 * CPU to the one it waits for, or the run crawls.
 */
struct stress_backoff {
	unsigned n;
};

static inline void stress_backoff_reset(struct stress_backoff *b)
{
	b->n = 0;
}

static inline void stress_backoff(struct stress_backoff *b)
{
	unsigned n = b->n++;

	if (n < 64) {
		for (unsigned i = 0; i < (1u << (n < 6 ? n : 6)); i++)
			portal_cpu_relax();
	} else if (n < 256) {
		sched_yield();
	} else {
		stress_sleep_us(n < 1024 ? 20 : 200);
	}
}

/* ---- stamps and checksums ---- */

static inline uint64_t stress_mix(uint64_t z)
{
	/* splitmix64's finaliser: a cheap bijective scramble. */
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* 64-bit checksum of LEN bytes (any length), never 0. */
static inline uint64_t stress_hash(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t h = UINT64_C(0x243F6A8885A308D3) ^ len, w;

	while (len >= 8) {
		memcpy(&w, b, 8);
		h = (h ^ w) * UINT64_C(0x9E3779B97F4A7C15);
		h ^= h >> 29;
		b += 8;
		len -= 8;
	}
	if (len) {
		w = 0;
		memcpy(&w, b, len);
		h = (h ^ w) * UINT64_C(0x9E3779B97F4A7C15);
	}
	h = stress_mix(h);
	return h ? h : 1;
}

/* Stamp word: producer id in the top 16 bits, sequence in the low 48. */
#define STRESS_SEQ_BITS 48
#define STRESS_SEQ_MASK ((UINT64_C(1) << STRESS_SEQ_BITS) - 1)

static inline uint64_t stress_stamp(uint32_t id, uint64_t seq)
{
	return ((uint64_t)id << STRESS_SEQ_BITS) | (seq & STRESS_SEQ_MASK);
}

/*
 * Fill a fixed-size element of SIZE bytes (a multiple of 8, >= 16): the
 * stamp, filler words derived from it, and the checksum of everything
 * before it in the last word.
 */
static inline void stress_fill(void *elem, size_t size, uint64_t stamp)
{
	uint8_t *p = elem;
	size_t words = size / 8;
	uint64_t w, h;

	memcpy(p, &stamp, 8);
	for (size_t i = 1; i + 1 < words; i++) {
		w = stress_mix(stamp + i);
		memcpy(p + 8 * i, &w, 8);
	}
	h = stress_hash(p, size - 8);
	memcpy(p + size - 8, &h, 8);
}

/* Check an element made by stress_fill; give its stamp. */
static inline bool stress_check(const void *elem, size_t size, uint64_t *stamp)
{
	const uint8_t *p = elem;
	uint64_t h;

	memcpy(stamp, p, 8);
	memcpy(&h, p + size - 8, 8);
	return h == stress_hash(p, size - 8);
}

/*
 * Variable-length message for the message ring: its length is a function of
 * the sequence (so a truncated or stretched record is caught), at least 16
 * bytes: the stamp, the checksum, then filler bytes. Mostly short, every
 * 61st up to MAX.
 */
static inline size_t stress_msg_len(uint64_t seq, size_t max)
{
	uint64_t r = stress_mix(seq ^ UINT64_C(0x5157));
	size_t span = seq % 61 == 0 ? max - 16 + 1 : (max < 272 ? max - 16 + 1 : 257);

	return 16 + (size_t)(r % span);
}

static inline void stress_msg_fill(void *buf, size_t len, uint64_t stamp)
{
	uint8_t *p = buf;
	uint64_t w = stress_mix(stamp), h;

	memcpy(p, &stamp, 8);
	for (size_t i = 16; i < len; i++) {
		p[i] = (uint8_t)w;
		w = (w >> 8) | (w << 56);
		if ((i & 7) == 7)
			w += stamp;
	}
	h = stress_hash(p + 16, len - 16) ^ stress_mix(stamp);
	memcpy(p + 8, &h, 8);
}

static inline bool stress_msg_check(const void *buf, size_t len, uint64_t *stamp)
{
	const uint8_t *p = buf;
	uint64_t h;

	if (len < 16)
		return false;
	memcpy(stamp, p, 8);
	memcpy(&h, p + 8, 8);
	return h == (stress_hash(p + 16, len - 16) ^ stress_mix(*stamp));
}

/* A small fast PRNG for the peers' choices (xorshift64*). */
static inline uint64_t stress_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(0x2545F4914F6CDD1D);
}

#endif /* PORTAL_STRESS_H */
