/* SPDX-License-Identifier: MIT */
/*
 * fuzz/fuzz_util.h - what every Portal fuzz target shares (header only).
 *
 *   struct fz        a cursor over the fuzz input; reads past the end give
 *                    zeroes, so every input, however short, is a valid script
 *   fz_value         a 64-bit value chosen to hurt: near the current value,
 *                    near the honest side's position, a ring away, the
 *                    extremes, or eight raw bytes
 *   FZ_CHECK         an invariant: on failure print what and where, then
 *                    abort(), which libFuzzer reports as a crash and saves
 *                    the input
 *   fz_alloc         memory of exactly the size asked for, page aligned, so
 *                    ASan reports any access past either end
 *   fz_diff          compare memory with a snapshot, allowing changes only in
 *                    given ranges ("the call wrote nothing else")
 *   fz_fill          deterministic bytes for a (tag, position) pair
 *
 * The library logs through portal_set_log(); fz_init() installs a sink that
 * checks each message is a terminated string and otherwise drops it, so the
 * formatting code runs on every fuzzed path. PORTAL_FUZZ_TRACE=1 in the
 * environment prints each step of a script to stderr (for reading a crash
 * reproducer).
 */
#ifndef PORTAL_FUZZ_UTIL_H
#define PORTAL_FUZZ_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portal/common.h"

/* ---- the input cursor ---- */

struct fz {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fz_u8(struct fz *f)
{
	if (!f->n)
		return 0;
	f->n--;
	return *f->p++;
}

static inline uint16_t fz_u16(struct fz *f)
{
	uint16_t v = fz_u8(f);

	return (uint16_t)(v | (uint16_t)fz_u8(f) << 8);
}

static inline uint32_t fz_u32(struct fz *f)
{
	uint32_t v = fz_u16(f);

	return v | (uint32_t)fz_u16(f) << 16;
}

static inline uint64_t fz_u64(struct fz *f)
{
	uint64_t v = fz_u32(f);

	return v | (uint64_t)fz_u32(f) << 32;
}

/* Copy LEN bytes of input to DST; zeroes once the input runs out. */
static inline void fz_bytes(struct fz *f, void *dst, size_t len)
{
	size_t k = len < f->n ? len : f->n;

	memcpy(dst, f->p, k);
	memset((uint8_t *)dst + k, 0, len - k);
	f->p += k;
	f->n -= k;
}

static inline bool fz_more(const struct fz *f)
{
	return f->n != 0;
}

/*
 * A value for a forged index: a selector byte and a signed delta byte,
 * then sometimes eight raw bytes. CUR is the field's honest value, PEER the
 * honest side's position, CAP the ring's capacity.
 */
static inline uint64_t fz_value(struct fz *f, uint64_t cur, uint64_t peer, uint64_t cap)
{
	uint8_t sel = fz_u8(f);
	uint64_t d = (uint64_t)(int64_t)(int8_t)fz_u8(f);

	switch (sel % 12) {
	case 0:  return cur + d;
	case 1:  return peer + d;
	case 2:  return peer + cap + d;
	case 3:  return cur - cap + d;
	case 4:  return d;                            /* near 0 */
	case 5:  return UINT64_MAX + d;               /* near 2^64 */
	case 6:  return (UINT64_C(1) << 63) + d;
	case 7:  return (UINT64_C(1) << 32) + d;
	case 8:  return cur + cap * d;                /* whole laps */
	case 9:  return peer - cap + d;
	case 10: return cur + (d << 3);               /* aligned steps */
	default: return fz_u64(f);
	}
}

/* ---- invariants ---- */

extern int fz_trace_on;

static inline void __attribute__((noreturn, format(printf, 4, 5)))
fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\n==== PORTAL FUZZ INVARIANT FAILED at %s:%d: %s\n     ", file, line,
		cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

#define FZ_CHECK(cond, ...)                                                          \
	do {                                                                         \
		if (!(cond))                                                         \
			fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);             \
	} while (0)

#define FZ_TRACE(...)                                                                \
	do {                                                                         \
		if (fz_trace_on)                                                     \
			fprintf(stderr, __VA_ARGS__);                                \
	} while (0)

/* One definition per target: put FZ_DEFINE_GLOBALS in exactly one file. */
#define FZ_DEFINE_GLOBALS                                                            \
	int fz_trace_on;                                                             \
	uint64_t fz_log_count;

extern uint64_t fz_log_count;

static inline void fz_log_sink(enum portal_log_level level, const char *msg, void *arg)
{
	(void)arg;
	FZ_CHECK(level <= PORTAL_LOG_DEBUG, "log level %d", (int)level);
	FZ_CHECK(msg && memchr(msg, '\0', 256), "log message not terminated");
	fz_log_count++;
	if (fz_trace_on > 1)
		fprintf(stderr, "  log: %s\n", msg);
}

static inline void fz_init(void)
{
	const char *t = getenv("PORTAL_FUZZ_TRACE");

	fz_trace_on = t && *t ? atoi(t) : 0;
	if (t && *t && fz_trace_on == 0)
		fz_trace_on = 1;
	portal_set_log(fz_log_sink, NULL, PORTAL_LOG_DEBUG);
}

/* ---- memory ---- */

/* Exactly LEN bytes (LEN > 0), page aligned: ASan guards both ends. */
static inline void *fz_alloc(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, len ? len : 1))
		abort();
	return p;
}

struct fz_range {
	size_t lo, hi; /* [lo, hi) */
};

#define FZ_MAX_RANGES 8

struct fz_ranges {
	struct fz_range r[FZ_MAX_RANGES];
	unsigned n;
};

static inline void fz_allow(struct fz_ranges *rs, size_t lo, size_t hi)
{
	if (rs->n >= FZ_MAX_RANGES)
		abort(); /* harness bug */
	rs->r[rs->n].lo = lo;
	rs->r[rs->n].hi = hi;
	rs->n++;
}

/* Allow [pos, pos + len) of a circular area of CAP bytes (a power of two)
 * that starts at offset BASE of the object; split at the wrap. */
static inline void fz_allow_ring(struct fz_ranges *rs, size_t base, uint64_t cap, uint64_t pos,
				 uint64_t len)
{
	uint64_t off = pos & (cap - 1);

	if (len > cap)
		len = cap;
	if (off + len <= cap) {
		fz_allow(rs, base + off, base + off + len);
	} else {
		fz_allow(rs, base + off, base + cap);
		fz_allow(rs, base, base + (off + len - cap));
	}
}

/* The first byte of NOW that differs from BEFORE outside the allowed
 * ranges, or SIZE_MAX when there is none. */
static inline size_t fz_diff(const uint8_t *now, const uint8_t *before, size_t len,
			     const struct fz_ranges *ok)
{
	if (memcmp(now, before, len) == 0)
		return SIZE_MAX;
	for (size_t i = 0; i < len; i++) {
		bool allowed = false;

		if (now[i] == before[i])
			continue;
		for (unsigned k = 0; ok && k < ok->n && !allowed; k++)
			allowed = i >= ok->r[k].lo && i < ok->r[k].hi;
		if (!allowed)
			return i;
	}
	return SIZE_MAX;
}

/* ---- contents ---- */

static inline uint64_t fz_mix(uint64_t z)
{
	z += UINT64_C(0x9E3779B97F4A7C15);
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* LEN bytes that depend on TAG and on each byte's index. */
static inline void fz_fill(void *dst, size_t len, uint64_t tag)
{
	uint8_t *d = dst;
	uint64_t w = 0;

	for (size_t i = 0; i < len; i++) {
		if (i % 8 == 0)
			w = fz_mix(tag + i);
		d[i] = (uint8_t)(w >> (8 * (i % 8)));
	}
}

/* Is RC one of the N codes that follow? */
static inline bool fz_rc_in(int rc, int n, ...)
{
	va_list ap;
	bool ok = false;

	va_start(ap, n);
	for (int i = 0; i < n; i++)
		if (va_arg(ap, int) == rc)
			ok = true;
	va_end(ap);
	return ok;
}

#endif /* PORTAL_FUZZ_UTIL_H */
