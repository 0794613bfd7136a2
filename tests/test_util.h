/* SPDX-License-Identifier: MIT */
/*
 * tests/test_util.h - helpers shared by the cmocka unit tests (header only,
 * so no build wiring is needed; every helper is static inline).
 *
 *   tu_suite_*       build a cmocka test array at run time, one test per
 *                    (behaviour, configuration) pair, named "behaviour/config",
 *                    so a failure names the configuration (DPDK test_ring.c and
 *                    liburing FOR_ALL_TEST_CONFIGS cross tables the same way)
 *   tu_mem_alloc     64-byte aligned memory that ends (nearly) at a guard
 *                    page, with poisoned, canaried slack: out-of-bounds
 *                    accesses fault or are reported in every build
 *   tu_stamp/check   fill an element of any size (8..256+) with a tag (who,
 *                    sequence) and a checksum; check it and get the tag back
 *   tu_run_bounded   run a function in a forked child under alarm(), to test
 *                    calls that must return but might spin forever
 *   tu_log_*         capture portal_set_log() messages
 *   tu_unique_name   names that cannot collide across concurrent test runs
 *   tu_now_ns        CLOCK_MONOTONIC in nanoseconds; tu_sleep_ns sleeps that
 *                    long, through signals
 *
 * cmocka's assert_* macros longjmp, so they may only be used in the test's own
 * thread and never in a forked child: worker threads record errors in a
 * struct tu_err, children report through their exit code.
 */
#ifndef PORTAL_TESTS_TEST_UTIL_H
#define PORTAL_TESTS_TEST_UTIL_H

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "portal/common.h"

#define TU_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- dynamic test tables ---- */

struct tu_suite {
	struct CMUnitTest *tests;
	size_t n, cap;
};

/* Add one test named printf-style; STATE is handed to FN as *state. */
static inline __attribute__((format(printf, 4, 5))) void
tu_suite_add(struct tu_suite *s, CMUnitTestFunction fn, void *state, const char *fmt, ...)
{
	char buf[128];
	va_list ap;

	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->tests = realloc(s->tests, s->cap * sizeof(*s->tests));
		if (!s->tests)
			abort();
	}
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	s->tests[s->n] = (struct CMUnitTest){
		.name = strdup(buf), .test_func = fn, .initial_state = state,
	};
	s->n++;
}

static inline int tu_suite_run(struct tu_suite *s, const char *group)
{
	int rc = _cmocka_run_group_tests(group, s->tests, s->n, NULL, NULL);

	for (size_t i = 0; i < s->n; i++)
		free((void *)s->tests[i].name);
	free(s->tests);
	s->tests = NULL;
	s->n = s->cap = 0;
	return rc;
}

/* ---- memory ---- */

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define TU_POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define TU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define TU_POISON(p, n)   ((void)(p), (void)(n))
#define TU_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define TU_PAGE   4096u
#define TU_CANARY 0x5Cu

/*
 * LEN bytes, 64-byte aligned, filled with 0xA5 (so a test never relies on
 * zeroed memory the library should have initialised), placed as close as
 * alignment allows before an inaccessible guard page, with another guard
 * page in front: a stray access past the end faults in any build, even an
 * unaligned one that straddles the end (which ASan's 8-byte check can
 * miss). The < 64 bytes of slack on either side hold a canary, checked by
 * tu_mem_free, and are poisoned for ASan. Free with tu_mem_free(p, len).
 */
static inline void *tu_mem_alloc(size_t len)
{
	size_t body = (len + 63 + TU_PAGE - 1) / TU_PAGE * TU_PAGE;
	uint8_t *map = mmap(NULL, body + 2 * TU_PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *end, *p;

	if (map == MAP_FAILED)
		return NULL;
	if (mprotect(map, TU_PAGE, PROT_NONE) || mprotect(map + TU_PAGE + body, TU_PAGE, PROT_NONE))
		abort();
	end = map + TU_PAGE + body;
	p = (uint8_t *)((uintptr_t)(end - len) & ~(uintptr_t)63);
	memset(map + TU_PAGE, TU_CANARY, body);
	memset(p, 0xA5, len);
	TU_POISON(map + TU_PAGE, (size_t)(p - (map + TU_PAGE)));
	TU_POISON(p + len, (size_t)(end - (p + len)));
	return p;
}

/* Release memory from tu_mem_alloc. Returns false if a canary byte beside
 * the object was overwritten (an out-of-bounds write). */
static inline bool tu_mem_free(void *ptr, size_t len)
{
	uint8_t *p = ptr, *body, *end;
	/* The same geometry as tu_mem_alloc: the object ends < 64 bytes before
	 * the end of the body, which is this many pages long. */
	size_t pages = (len + 63 + TU_PAGE - 1) / TU_PAGE * TU_PAGE;
	bool ok = true;

	if (!p)
		return true;
	end = (uint8_t *)(((uintptr_t)(p + len) + TU_PAGE - 1) & ~(uintptr_t)(TU_PAGE - 1));
	body = end - pages;
	TU_UNPOISON(body, pages);
	for (uint8_t *q = body; q < p; q++)
		ok &= *q == TU_CANARY;
	for (uint8_t *q = p + len; q < end; q++)
		ok &= *q == TU_CANARY;
	munmap(body - TU_PAGE, pages + 2 * TU_PAGE);
	return ok;
}

#define tu_mem_free_checked(p, len)                                          \
	do {                                                                 \
		if (!tu_mem_free(p, len))                                    \
			fail_msg("out-of-bounds write next to a %zu-byte object", \
				 (size_t)(len));                             \
	} while (0)

/* ---- stamped elements ---- */

static inline uint32_t tu_fnv1a(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

/* A tag names the writer and its sequence number: (who << 32) | seq. Only
 * the low 48 bits are kept, so WHO must be < 2^16. */
static inline uint64_t tu_tag(uint32_t who, uint32_t seq)
{
	return ((uint64_t)who << 32) | seq;
}

static inline uint8_t tu_fill_byte(uint64_t tag, size_t i)
{
	return (uint8_t)(tag * 0x9E3779B97F4A7C15ull >> 56) ^ (uint8_t)(i * 29u);
}

/*
 * Fill SIZE bytes (>= 8) with TAG and a checksum.
 *   size 8:   48-bit tag, then a 16-bit fold of the tag's hash
 *   size 9+:  8-byte tag, a tag-derived pattern, and the last 4 bytes hold
 *             fnv1a of everything before them (a short tail is covered too)
 */
static inline void tu_stamp(void *buf, size_t size, uint64_t tag)
{
	uint8_t *b = buf;
	uint64_t t = tag & 0xFFFFFFFFFFFFull;

	if (size < 12) {
		uint32_t h = tu_fnv1a(&t, 6);
		uint64_t w = t | (uint64_t)((h ^ (h >> 16)) & 0xFFFF) << 48;

		memcpy(b, &w, 8);
		for (size_t i = 8; i < size; i++)
			b[i] = tu_fill_byte(t, i);
		return;
	}
	memcpy(b, &t, 8);
	for (size_t i = 8; i < size - 4; i++)
		b[i] = tu_fill_byte(t, i);
	uint32_t h = tu_fnv1a(b, size - 4);
	memcpy(b + size - 4, &h, 4);
}

/* True if BUF holds a well-formed stamp; *tag gets its tag. */
static inline bool tu_check(const void *buf, size_t size, uint64_t *tag)
{
	const uint8_t *b = buf;
	uint64_t w;

	memcpy(&w, b, 8);
	if (size < 12) {
		uint64_t t = w & 0xFFFFFFFFFFFFull;
		uint32_t h = tu_fnv1a(&t, 6);

		if ((w >> 48) != ((h ^ (h >> 16)) & 0xFFFF))
			return false;
		for (size_t i = 8; i < size; i++)
			if (b[i] != tu_fill_byte(t, i))
				return false;
		*tag = t;
		return true;
	}
	uint32_t h, want = tu_fnv1a(b, size - 4);

	memcpy(&h, b + size - 4, 4);
	if (h != want || (w >> 48) != 0)
		return false;
	for (size_t i = 8; i < size - 4; i++)
		if (b[i] != tu_fill_byte(w, i))
			return false;
	*tag = w;
	return true;
}

/* ---- errors from worker threads ---- */

struct tu_err {
	atomic_int failed;
	char msg[256];
};

static inline __attribute__((format(printf, 2, 3))) void
tu_err_set(struct tu_err *e, const char *fmt, ...)
{
	va_list ap;
	int expected = 0;

	if (!atomic_compare_exchange_strong(&e->failed, &expected, 1))
		return; /* keep the first */
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

static inline bool tu_err_any(struct tu_err *e)
{
	return atomic_load(&e->failed) != 0;
}

#define tu_assert_no_err(e)                                                  \
	do {                                                                 \
		if (tu_err_any(e))                                           \
			fail_msg("worker: %s", (e)->msg);                    \
	} while (0)

/* ---- bounded calls in a child process ---- */

#define TU_CHILD_TIMEOUT 124 /* exit status when alarm() fired */

/*
 * Start FN(ARG) in a forked child with SECONDS to finish; returns its pid
 * (or a negative errno). FN's return value becomes the exit status, so FN
 * must map its result into 0..123.
 */
static inline pid_t tu_spawn_bounded(int (*fn)(void *), void *arg, unsigned seconds)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		signal(SIGALRM, SIG_DFL);
		alarm(seconds);
		_exit(fn(arg) & 0x7F);
	}
	return pid;
}

/* Reap a child from tu_spawn_bounded: its FN's value, TU_CHILD_TIMEOUT if
 * alarm() killed it, or 200 + the signal if it crashed. */
static inline int tu_wait_bounded(pid_t pid)
{
	int status;

	if (pid < 0)
		return (int)pid;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return WTERMSIG(status) == SIGALRM ? TU_CHILD_TIMEOUT : 200 + WTERMSIG(status);
	return 255;
}

static inline int tu_run_bounded(int (*fn)(void *), void *arg, unsigned seconds)
{
	return tu_wait_bounded(tu_spawn_bounded(fn, arg, seconds));
}

/* ---- log capture ---- */

struct tu_log {
	unsigned count[4];
	char last[256];
};

static inline void tu_log_fn(enum portal_log_level level, const char *msg, void *arg)
{
	struct tu_log *l = arg;

	if ((unsigned)level < 4)
		l->count[level]++;
	snprintf(l->last, sizeof(l->last), "%s", msg);
}

static inline void tu_log_capture(struct tu_log *l)
{
	memset(l, 0, sizeof(*l));
	portal_set_log(tu_log_fn, l, PORTAL_LOG_DEBUG);
}

static inline void tu_log_release(void)
{
	portal_set_log(NULL, NULL, PORTAL_LOG_WARN);
}

/* ---- names ---- */

/* "portal-ut-<pid>-<tag>-<n>": unique per process and call. */
static inline const char *tu_unique_name(char *buf, size_t cap, const char *tag)
{
	static atomic_uint counter;

	snprintf(buf, cap, "portal-ut-%ld-%s-%u", (long)getpid(), tag,
		 atomic_fetch_add(&counter, 1));
	return buf;
}

static inline int64_t tu_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void tu_sleep_ns(int64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000),
			       .tv_nsec = (long)(ns % 1000000000) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

#endif /* PORTAL_TESTS_TEST_UTIL_H */
