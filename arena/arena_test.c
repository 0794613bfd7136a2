/* SPDX-License-Identifier: MIT */
/*
 * arena_test.c - the owner's allocator and its span checks, table-driven
 * over class configurations; the return ring round trip; the region glue;
 * a randomized run against a shadow model with its own reference checker.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arena/arena_internal.h"
#include "portal/arena.h"

#define RID  0xA7E4u
#define ROFF UINT64_C(4096) /* where the arena sits in its pretend region */
#define NCFG (sizeof(cfgs) / sizeof(cfgs[0]))

struct cfg {
	const char *name;
	struct portal_arena_params p;
};

static const struct cfg cfgs[] = {
	{ "one class", { .nclasses = 1, .cls = { { 64, 4 } } } },
	{ "three classes and bump",
	  { .nclasses = 3, .cls = { { 64, 8 }, { 256, 4 }, { 4096, 2 } }, .bump_size = 1000 } },
	{ "eight classes",
	  { .nclasses = 8,
	    .cls = { { 64, 3 }, { 128, 3 }, { 192, 2 }, { 256, 2 }, { 512, 2 }, { 1024, 1 },
		     { 2048, 1 }, { 8192, 1 } },
	    .bump_size = 4096 } },
	{ "odd sizes", { .nclasses = 2, .cls = { { 192, 3 }, { 320, 5 } }, .bump_size = 64 } },
	{ "random generations",
	  { .nclasses = 2, .flags = PORTAL_ARENA_F_RANDOM_GEN, .cls = { { 64, 5 }, { 128, 3 } },
	    .bump_size = 256 } },
	{ "bump only", { .nclasses = 0, .bump_size = 512 } },
};

/* ------------------------------------------------------------------ */
/* Fixture and helpers                                                 */
/* ------------------------------------------------------------------ */

struct fx {
	const struct cfg *cfg;
	uint8_t *region;   /* ROFF + len bytes: a pretend region */
	uint8_t *mem;      /* region + ROFF */
	size_t len;
	portal_arena_t *a;
	/* Geometry the test computes on its own, from the params. */
	uint64_t cls_off[PORTAL_ARENA_MAX_CLASSES];
	uint64_t bump_off, bump_size, obj_size;
	uint32_t nblocks;
};

static void fx_geometry(struct fx *f)
{
	const struct portal_arena_params *p = &f->cfg->p;
	uint64_t off = 256;
	uint32_t i;

	f->nblocks = 0;
	for (i = 0; i < p->nclasses; i++) {
		f->cls_off[i] = off;
		off += (uint64_t)p->cls[i].block_size * p->cls[i].count;
		f->nblocks += p->cls[i].count;
	}
	f->bump_off = off;
	f->bump_size = (p->bump_size + 63) / 64 * 64;
	f->obj_size = off + f->bump_size;
}

static void fx_open(struct fx *f, const struct cfg *c)
{
	void *r = NULL;

	memset(f, 0, sizeof(*f));
	f->cfg = c;
	fx_geometry(f);
	f->len = portal_arena_memsize(&c->p);
	if (f->len != f->obj_size)
		fail_msg("%s: memsize %zu, want %llu", c->name, f->len,
			 (unsigned long long)f->obj_size);
	/* Exactly the arena's bytes after ROFF, so ASan sees any overrun. */
	assert_int_equal(posix_memalign(&r, 4096, ROFF + f->len), 0);
	f->region = r;
	f->mem = f->region + ROFF;
	memset(f->region, 0xEE, ROFF + f->len);
	assert_int_equal(portal_arena_init(f->mem, f->len, ROFF, RID, &c->p, 1, &f->a), 0);
	assert_non_null(f->a);
}

static void fx_close(struct fx *f)
{
	portal_arena_detach(f->a);
	free(f->region);
	f->a = NULL;
	f->region = NULL;
}

static struct portal_arena_stats stats(const portal_arena_t *a)
{
	struct portal_arena_stats st;

	memset(&st, 0xAB, sizeof(st));
	portal_arena_stats(a, &st);
	return st;
}

/* Which class a block span falls in, from the test's own geometry; -1 if
 * none. */
static int span_class(const struct fx *f, const struct portal_span *s)
{
	uint32_t i;

	for (i = 0; i < f->cfg->p.nclasses; i++) {
		uint64_t lo = ROFF + f->cls_off[i];
		uint64_t bytes = (uint64_t)f->cfg->p.cls[i].block_size * f->cfg->p.cls[i].count;

		if (s->offset >= lo && s->offset - lo < bytes)
			return (int)i;
	}
	return -1;
}

enum counter { C_NONE, C_REGION, C_RANGE, C_FORGED, C_STALE, C_DOUBLE, C_NCOUNTERS };

static const char *const counter_name[] = { "none", "region", "range", "forged", "stale",
					    "double" };

static uint64_t refused(const struct portal_arena_stats *st, enum counter c)
{
	switch (c) {
	case C_REGION: return st->refused_region;
	case C_RANGE:  return st->refused_range;
	case C_FORGED: return st->refused_forged;
	case C_STALE:  return st->refused_stale;
	case C_DOUBLE: return st->refused_double;
	default:       return 0;
	}
}

/* Free SPAN expecting refusal WANT counted in WHICH, and nothing else to
 * change: no other counter, no allocator state. */
static void expect_refused(const char *ctx, portal_arena_t *a, const struct portal_span *span,
			   int want, enum counter which)
{
	struct portal_arena_stats before = stats(a), after;
	uint64_t digest = arena_state_digest(a);
	int rc = portal_arena_free(a, span);
	int c;

	if (rc != want)
		fail_msg("%s: free returned %d (%s), want %d (%s)", ctx, rc, portal_strerror(rc),
			 want, portal_strerror(want));
	after = stats(a);
	for (c = C_REGION; c < C_NCOUNTERS; c++) {
		uint64_t d = refused(&after, (enum counter)c) - refused(&before, (enum counter)c);

		if (d != (c == (int)which ? 1u : 0u))
			fail_msg("%s: counter %s moved by %llu", ctx, counter_name[c],
				 (unsigned long long)d);
	}
	if (after.frees != before.frees || after.allocs != before.allocs ||
	    after.blocks_in_use != before.blocks_in_use || after.bump_acks != before.bump_acks)
		fail_msg("%s: a refused span changed the counters", ctx);
	if (arena_state_digest(a) != digest)
		fail_msg("%s: a refused span changed allocator state", ctx);
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic, so a failure replays. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

/* ------------------------------------------------------------------ */
/* Parameters and layout                                               */
/* ------------------------------------------------------------------ */

struct bad_params {
	const char *what;
	struct portal_arena_params p;
};

static const struct bad_params bad_params[] = {
	{ "nothing at all", { .nclasses = 0, .bump_size = 0 } },
	{ "too many classes", { .nclasses = 9, .cls = { { 64, 1 } } } },
	{ "block size 0", { .nclasses = 1, .cls = { { 0, 1 } } } },
	{ "block size 100", { .nclasses = 1, .cls = { { 100, 1 } } } },
	{ "block size 32", { .nclasses = 1, .cls = { { 32, 1 } } } },
	{ "count 0", { .nclasses = 1, .cls = { { 64, 0 } } } },
	{ "equal sizes", { .nclasses = 2, .cls = { { 64, 1 }, { 64, 1 } } } },
	{ "decreasing sizes", { .nclasses = 2, .cls = { { 128, 1 }, { 64, 1 } } } },
	{ "unknown flag", { .nclasses = 1, .flags = 0x80, .cls = { { 64, 1 } } } },
	{ "too many blocks", { .nclasses = 2, .cls = { { 64, 1u << 23 }, { 128, (1u << 23) + 1 } } } },
	{ "huge bump", { .nclasses = 0, .bump_size = UINT64_MAX - 10 } },
	{ "bad class past nclasses ok, bad one inside",
	  { .nclasses = 2, .cls = { { 64, 1 }, { 65, 1 } } } },
};

static void arena_params_invalid(void **state)
{
	static uint8_t buf[1 << 16] __attribute__((aligned(4096)));
	portal_arena_t *a = (portal_arena_t *)buf; /* must stay untouched */
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_params) / sizeof(bad_params[0]); i++) {
		const struct bad_params *b = &bad_params[i];
		int rc;

		if (portal_arena_memsize(&b->p) != 0)
			fail_msg("%s: memsize accepted it", b->what);
		rc = portal_arena_init(buf, sizeof(buf), 0, RID, &b->p, 0, &a);
		if (rc != -EINVAL)
			fail_msg("%s: init returned %d", b->what, rc);
		assert_ptr_equal(a, (portal_arena_t *)buf);
	}
	assert_int_equal(portal_arena_memsize(NULL), 0);
}

static void arena_init_args(void **state)
{
	static uint8_t buf[1 << 14] __attribute__((aligned(4096)));
	const struct portal_arena_params *p = &cfgs[1].p;
	size_t need = portal_arena_memsize(p);
	portal_arena_t *a = NULL;

	(void)state;
	assert_true(need > 0 && need <= sizeof(buf));
	assert_int_equal(portal_arena_init(NULL, need, 0, RID, p, 0, &a), -EINVAL);
	assert_int_equal(portal_arena_init(buf, need - 64, 0, RID, p, 0, &a), -EINVAL);
	assert_int_equal(portal_arena_init(buf + 8, need, 0, RID, p, 0, &a), -EINVAL);
	assert_int_equal(portal_arena_init(buf, need, 0, RID, NULL, 0, &a), -EINVAL);
	assert_int_equal(portal_arena_init(buf, need, 0, RID, p, PORTAL_REGION_MAX_PARTS, &a),
			 -EINVAL);
	assert_int_equal(portal_arena_init(buf, need, UINT64_MAX - need + 1, RID, p, 0, &a),
			 -EINVAL);
	assert_null(a);
	/* The largest offset that still fits is fine; so is no handle. */
	assert_int_equal(portal_arena_init(buf, need, UINT64_MAX - need, RID, p, 0, NULL), 0);
	assert_int_equal(portal_arena_init(buf, need, 0, RID, p, 0, &a), 0);
	assert_non_null(a);
	portal_arena_detach(a);
	portal_arena_detach(NULL);
}

static void arena_layout(void **state)
{
	size_t k;

	(void)state;
	for (k = 0; k < NCFG; k++) {
		struct fx f;
		struct portal_arena_hdr h;
		struct portal_arena_stats st;
		uint32_t i;

		fx_open(&f, &cfgs[k]);
		memcpy(&h, f.mem, sizeof(h));
		assert_int_equal(h.magic, PORTAL_ARENA_MAGIC);
		assert_int_equal(h.version, 1);
		assert_int_equal(h.nclasses, f.cfg->p.nclasses);
		assert_int_equal(h.owner_side, 1);
		assert_int_equal(h.flags, 0);
		assert_int_equal(h.obj_size, f.obj_size);
		assert_int_equal(h.bump_offset, f.bump_off);
		assert_int_equal(h.bump_size, f.bump_size);
		for (i = 0; i < PORTAL_ARENA_MAX_CLASSES; i++) {
			if (i < f.cfg->p.nclasses) {
				assert_int_equal(h.cls[i].block_size, f.cfg->p.cls[i].block_size);
				assert_int_equal(h.cls[i].count, f.cfg->p.cls[i].count);
				assert_int_equal(h.cls[i].offset, f.cls_off[i]);
			} else {
				assert_int_equal(h.cls[i].block_size, 0);
				assert_int_equal(h.cls[i].count, 0);
				assert_int_equal(h.cls[i].offset, 0);
			}
		}
		/* init writes only the header: the blocks keep their bytes. */
		for (i = 256; i < f.len; i++)
			if (f.mem[i] != 0xEE)
				fail_msg("%s: init touched byte %u", f.cfg->name, i);
		st = stats(f.a);
		assert_int_equal(st.blocks_total, f.nblocks);
		assert_int_equal(st.blocks_in_use, 0);
		assert_int_equal(st.bump_used, 0);
		assert_int_equal(st.allocs + st.frees + st.alloc_failed + st.refused_range, 0);
		if (f.cfg->p.flags & PORTAL_ARENA_F_RANDOM_GEN)
			assert_int_not_equal(st.bump_epoch, 0);
		else
			assert_int_equal(st.bump_epoch, 1);
		fx_close(&f);
	}
}

/* ------------------------------------------------------------------ */
/* Slab classes                                                        */
/* ------------------------------------------------------------------ */

static void check_block_span(const struct fx *f, const struct portal_span *s, void *ptr,
			     uint32_t want_cls, size_t len)
{
	uint32_t bs = f->cfg->p.cls[want_cls].block_size;
	int c = span_class(f, s);

	if (c != (int)want_cls)
		fail_msg("%s: len %zu landed in class %d, want %u", f->cfg->name, len, c, want_cls);
	assert_int_equal((s->offset - ROFF - f->cls_off[c]) % bs, 0);
	assert_int_equal(s->length, len);
	assert_int_equal(s->region_id, RID);
	assert_int_equal(s->flags, 0);
	assert_int_not_equal(s->generation, 0);
	assert_ptr_equal(ptr, f->mem + (s->offset - ROFF));
}

static void arena_alloc_exhaust(void **state)
{
	size_t k;

	(void)state;
	for (k = 0; k < NCFG; k++) {
		struct portal_span spans[64];
		struct portal_span s;
		struct fx f;
		const struct portal_arena_params *p = &cfgs[k].p;
		uint32_t i, j, n = 0, last;
		void *ptr;

		fx_open(&f, &cfgs[k]);
		assert_true(f.nblocks <= 64);
		assert_int_equal(portal_arena_alloc(f.a, 0, &s, &ptr), -EINVAL);
		if (p->nclasses == 0) {
			assert_int_equal(portal_arena_alloc(f.a, 1, &s, &ptr), -EMSGSIZE);
			fx_close(&f);
			continue;
		}
		last = p->nclasses - 1;
		assert_int_equal(portal_arena_alloc(f.a, p->cls[last].block_size + 1, &s, &ptr),
				 -EMSGSIZE);
		assert_int_equal(portal_arena_alloc(f.a, SIZE_MAX, &s, &ptr), -EMSGSIZE);
		/* Smallest class that fits: one byte over a class goes one up. */
		for (i = 1; i < p->nclasses; i++) {
			assert_int_equal(portal_arena_alloc(f.a, p->cls[i - 1].block_size + 1, &s, &ptr), 0);
			check_block_span(&f, &s, ptr, i, p->cls[i - 1].block_size + 1);
			assert_int_equal(portal_arena_free(f.a, &s), 0);
		}
		/* Fill class by class, in address order; stamp every block. */
		for (i = 0; i < p->nclasses; i++) {
			for (j = 0; j < p->cls[i].count; j++) {
				uint32_t len = p->cls[i].block_size - (j % 2);

				assert_int_equal(portal_arena_alloc(f.a, len, &spans[n], &ptr), 0);
				check_block_span(&f, &spans[n], ptr, i, len);
				assert_int_equal(spans[n].offset,
						 ROFF + f.cls_off[i] + (uint64_t)j * p->cls[i].block_size);
				memset(ptr, (int)(n + 1), len);
				n++;
			}
		}
		assert_int_equal(n, f.nblocks);
		assert_int_equal(stats(f.a).blocks_in_use, n);
		/* Full: every size fails with -ENOSPC, and is counted. */
		for (i = 0; i < p->nclasses; i++)
			assert_int_equal(portal_arena_alloc(f.a, p->cls[i].block_size, &s, &ptr), -ENOSPC);
		assert_int_equal(stats(f.a).alloc_failed, p->nclasses);
		/* A free block in the largest class serves every smaller size. */
		for (i = 0; i < p->nclasses; i++) {
			assert_int_equal(portal_arena_free(f.a, &spans[n - 1]), 0);
			assert_int_equal(portal_arena_alloc(f.a, p->cls[i].block_size, &s, &ptr), 0);
			check_block_span(&f, &s, ptr, last, p->cls[i].block_size);
			assert_int_equal(s.offset, spans[n - 1].offset);
			assert_int_not_equal(s.generation, spans[n - 1].generation);
			spans[n - 1] = s;
			memset(ptr, (int)n, s.length);
		}
		/* No block was handed out twice: every stamp is intact. */
		for (i = 0; i < n; i++) {
			const uint8_t *b = f.mem + (spans[i].offset - ROFF);

			for (j = 0; j < spans[i].length; j++)
				if (b[j] != (uint8_t)(i + 1))
					fail_msg("%s: block %u byte %u overwritten", f.cfg->name, i, j);
		}
		/* Free everything; every block comes back with a new generation. */
		for (i = 0; i < n; i++)
			assert_int_equal(portal_arena_free(f.a, &spans[i]), 0);
		assert_int_equal(stats(f.a).blocks_in_use, 0);
		for (i = 0; i < p->nclasses; i++)
			for (j = 0; j < p->cls[i].count; j++) {
				uint32_t x;

				assert_int_equal(portal_arena_alloc(f.a, p->cls[i].block_size, &s, &ptr), 0);
				assert_int_equal(span_class(&f, &s), i);
				for (x = 0; x < n; x++)
					if (spans[x].offset == s.offset)
						break;
				assert_true(x < n);
				assert_int_equal(s.generation, spans[x].generation == UINT32_MAX ? 1 : spans[x].generation + 1);
				spans[x].offset = UINT64_MAX; /* each block once */
			}
		assert_int_equal(stats(f.a).blocks_in_use, n);
		assert_int_equal(portal_arena_alloc(f.a, 1, &s, &ptr), -ENOSPC);
		fx_close(&f);
	}
}

static void arena_free_realloc_generation(void **state)
{
	size_t k;

	(void)state;
	for (k = 0; k < NCFG; k++) {
		struct portal_span s1, s2, s3;
		struct fx f;
		uint32_t blk;
		void *p1, *p2;

		if (cfgs[k].p.nclasses == 0)
			continue;
		fx_open(&f, &cfgs[k]);
		assert_int_equal(portal_arena_alloc(f.a, 10, &s1, &p1), 0);
		if (!(cfgs[k].p.flags & PORTAL_ARENA_F_RANDOM_GEN))
			assert_int_equal(s1.generation, 1);
		assert_int_equal(portal_arena_free(f.a, &s1), 0);
		/* Same block again (last freed, first reused), next generation. */
		assert_int_equal(portal_arena_alloc(f.a, 10, &s2, &p2), 0);
		assert_int_equal(s2.offset, s1.offset);
		assert_ptr_equal(p2, p1);
		assert_int_equal(s2.generation, s1.generation == UINT32_MAX ? 1 : s1.generation + 1);
		/* The old span is stale now that the block is handed out again. */
		expect_refused("old span after realloc", f.a, &s1, PORTAL_ESTALE, C_STALE);
		assert_int_equal(portal_arena_free(f.a, &s2), 0);
		assert_int_equal(stats(f.a).frees, 2);

		/* The generation wraps to 1, never to 0. */
		assert_int_equal(portal_arena_alloc(f.a, 10, &s3, NULL), 0);
		blk = f.a->cls[0].first + (uint32_t)((s3.offset - ROFF - f.cls_off[0]) /
						     cfgs[k].p.cls[0].block_size);
		f.a->gen[blk] = UINT32_MAX;
		s3.generation = UINT32_MAX;
		assert_int_equal(portal_arena_free(f.a, &s3), 0);
		assert_int_equal(portal_arena_alloc(f.a, 10, &s3, NULL), 0);
		assert_int_equal(s3.generation, 1);
		fx_close(&f);
	}
}

/* ------------------------------------------------------------------ */
/* Refused spans                                                       */
/* ------------------------------------------------------------------ */

enum base { B_FIRST, B_LAST, B_BUMP };

enum mut {
	M_REGION, M_REGION_ZERO, M_BELOW, M_ZERO, M_HEADER, M_PAST_END, M_HUGE, M_MAX,
	M_LEN_PAST_END, M_INTO_BUMP, M_MISALIGNED, M_INSIDE, M_TOO_LONG, M_FLAG, M_FLAG_HIGH,
	M_GEN_NEXT, M_GEN_PREV, M_GEN_ZERO,
	M_BUMP_OUTSIDE, M_BUMP_BEYOND, M_BUMP_HUGE, M_BUMP_EPOCH, M_BUMP_REGION, M_BUMP_NO_AREA,
};

struct refuse_case {
	const char *what;
	enum base base;
	enum mut mut;
	int want;
	enum counter which;
};

static const struct refuse_case refuse_cases[] = {
	{ "wrong region",                B_FIRST, M_REGION, PORTAL_EXDEV, C_REGION },
	{ "region 0",                    B_LAST, M_REGION_ZERO, PORTAL_EXDEV, C_REGION },
	{ "below the arena",             B_FIRST, M_BELOW, PORTAL_ERANGE, C_RANGE },
	{ "offset 0",                    B_FIRST, M_ZERO, PORTAL_ERANGE, C_RANGE },
	{ "in the header",               B_FIRST, M_HEADER, PORTAL_ERANGE, C_RANGE },
	{ "past the end",                B_LAST, M_PAST_END, PORTAL_ERANGE, C_RANGE },
	{ "offset + length wraps",       B_LAST, M_HUGE, PORTAL_ERANGE, C_RANGE },
	{ "offset UINT64_MAX",           B_FIRST, M_MAX, PORTAL_ERANGE, C_RANGE },
	{ "length past the block area",  B_LAST, M_LEN_PAST_END, PORTAL_ERANGE, C_RANGE },
	{ "into the bump area unflagged", B_FIRST, M_INTO_BUMP, PORTAL_ERANGE, C_RANGE },
	{ "misaligned by one",           B_FIRST, M_MISALIGNED, PORTAL_EFORGED, C_FORGED },
	{ "inside, not on a boundary",   B_LAST, M_INSIDE, PORTAL_EFORGED, C_FORGED },
	{ "longer than the block",       B_FIRST, M_TOO_LONG, PORTAL_EFORGED, C_FORGED },
	{ "unknown flag",                B_FIRST, M_FLAG, PORTAL_EFORGED, C_FORGED },
	{ "unknown high flag",           B_LAST, M_FLAG_HIGH, PORTAL_EFORGED, C_FORGED },
	{ "next generation",             B_FIRST, M_GEN_NEXT, PORTAL_ESTALE, C_STALE },
	{ "previous generation",         B_LAST, M_GEN_PREV, PORTAL_ESTALE, C_STALE },
	{ "generation 0",                B_FIRST, M_GEN_ZERO, PORTAL_ESTALE, C_STALE },
	{ "bump flag on a block",        B_FIRST, M_BUMP_OUTSIDE, PORTAL_ERANGE, C_RANGE },
	{ "bump beyond the cursor",      B_BUMP, M_BUMP_BEYOND, PORTAL_EFORGED, C_FORGED },
	{ "bump length wraps",           B_BUMP, M_BUMP_HUGE, PORTAL_ERANGE, C_RANGE },
	{ "bump wrong epoch",            B_BUMP, M_BUMP_EPOCH, PORTAL_ESTALE, C_STALE },
	{ "bump wrong region",           B_BUMP, M_BUMP_REGION, PORTAL_EXDEV, C_REGION },
	{ "empty bump span, no bump area", B_FIRST, M_BUMP_NO_AREA, PORTAL_ERANGE, C_RANGE },
};

/* Apply M to S. Returns 0 if the case does not apply to this config. */
static int mutate(const struct fx *f, enum mut m, struct portal_span *s)
{
	const struct portal_arena_params *p = &f->cfg->p;
	uint32_t bs = 0;
	int c = span_class(f, s);

	if (c >= 0)
		bs = p->cls[c].block_size;
	switch (m) {
	case M_REGION:       s->region_id ^= 1; return 1;
	case M_REGION_ZERO:  s->region_id = 0; return 1;
	case M_BELOW:        s->offset = ROFF - 64; return 1;
	case M_ZERO:         s->offset = 0; return 1;
	case M_HEADER:       s->offset = ROFF + 64; return 1;
	case M_PAST_END:     s->offset = ROFF + f->obj_size; s->length = 1; return 1;
	case M_HUGE:         s->offset = UINT64_MAX - 3; s->length = 100; return 1;
	case M_MAX:          s->offset = UINT64_MAX; s->length = 0; return 1;
	case M_LEN_PAST_END: s->length = UINT32_MAX; return 1;
	case M_INTO_BUMP:
		if (!f->bump_size)
			return 0;
		s->offset = ROFF + f->bump_off;
		s->length = 8;
		return 1;
	case M_MISALIGNED:   s->offset += 1; s->length = 1; return 1;
	case M_INSIDE:
		s->offset += bs > 64 ? 64 : 32;
		s->length = 1;
		return 1;
	case M_TOO_LONG:     s->length = bs + 1; return 1;
	case M_FLAG:         s->flags |= 0x2; return 1;
	case M_FLAG_HIGH:    s->flags |= 0x80000000u; return 1;
	case M_GEN_NEXT:     s->generation = s->generation == UINT32_MAX ? 1 : s->generation + 1; return 1;
	case M_GEN_PREV:     s->generation = s->generation == 1 ? UINT32_MAX : s->generation - 1; return 1;
	case M_GEN_ZERO:     s->generation = 0; return 1;
	case M_BUMP_OUTSIDE: s->flags |= PORTAL_SPAN_F_BUMP; return 1;
	case M_BUMP_BEYOND:  s->offset += s->length; return 1;
	case M_BUMP_HUGE:    s->length = UINT32_MAX; return 1;
	case M_BUMP_EPOCH:   s->generation += 7; if (!s->generation) s->generation = 3; return 1;
	case M_BUMP_REGION:  s->region_id = RID + 1; return 1;
	case M_BUMP_NO_AREA:
		/* Where the bump area would start, current epoch, length 0. */
		if (f->bump_size)
			return 0;
		s->flags = PORTAL_SPAN_F_BUMP;
		s->offset = ROFF + f->bump_off;
		s->length = 0;
		s->generation = stats(f->a).bump_epoch;
		return 1;
	}
	return 0;
}

static void arena_refused_spans(void **state)
{
	size_t k, i;
	unsigned ran = 0;

	(void)state;
	for (k = 0; k < NCFG; k++) {
		struct portal_span base[3];
		int have[3] = { 0, 0, 0 };
		const struct portal_arena_params *p = &cfgs[k].p;
		struct fx f;
		void *ptr;

		fx_open(&f, &cfgs[k]);
		if (p->nclasses) {
			/* One block in the first class (a second stays free), the
			 * last block of the last class. */
			assert_int_equal(portal_arena_alloc(f.a, 16, &base[B_FIRST], &ptr), 0);
			have[B_FIRST] = 1;
			while (portal_arena_alloc(f.a, p->cls[p->nclasses - 1].block_size,
						  &base[B_LAST], &ptr) == 0)
				have[B_LAST] = 1;
			assert_int_equal(span_class(&f, &base[B_LAST]), p->nclasses - 1);
		}
		if (f.bump_size) {
			assert_int_equal(portal_arena_bump_alloc(f.a, 24, 8, &base[B_BUMP], &ptr), 0);
			have[B_BUMP] = 1;
		}
		for (i = 0; i < sizeof(refuse_cases) / sizeof(refuse_cases[0]); i++) {
			const struct refuse_case *rc = &refuse_cases[i];
			struct portal_span s;
			char ctx[128];

			if (!have[rc->base])
				continue;
			s = base[rc->base];
			if (!mutate(&f, rc->mut, &s))
				continue;
			snprintf(ctx, sizeof(ctx), "%s: %s", f.cfg->name, rc->what);
			expect_refused(ctx, f.a, &s, rc->want, rc->which);
			ran++;
		}
		/* Nothing moved: the real spans still free, exactly once. */
		if (have[B_FIRST]) {
			assert_int_equal(portal_arena_free(f.a, &base[B_FIRST]), 0);
			expect_refused("double free", f.a, &base[B_FIRST], PORTAL_ESTALE, C_DOUBLE);
		}
		if (have[B_LAST]) {
			assert_int_equal(portal_arena_free(f.a, &base[B_LAST]), 0);
			expect_refused("double free, last", f.a, &base[B_LAST], PORTAL_ESTALE,
				       C_DOUBLE);
		}
		if (have[B_BUMP]) {
			/* A current bump span is an acknowledgement; after a reset it
			 * is stale. */
			uint64_t d = arena_state_digest(f.a);

			assert_int_equal(portal_arena_free(f.a, &base[B_BUMP]), 0);
			assert_int_equal(stats(f.a).bump_acks, 1);
			assert_int_equal(arena_state_digest(f.a), d);
			portal_arena_bump_reset(f.a);
			expect_refused("bump span after reset", f.a, &base[B_BUMP], PORTAL_ESTALE,
				       C_STALE);
		}
		assert_int_equal(portal_arena_free(f.a, NULL), -EINVAL);
		assert_int_equal(portal_arena_free(NULL, &base[0]), -EINVAL);
		fx_close(&f);
	}
	/* Every case ran somewhere. */
	assert_true(ran >= sizeof(refuse_cases) / sizeof(refuse_cases[0]) * 3);
}

/* ------------------------------------------------------------------ */
/* Bump area                                                           */
/* ------------------------------------------------------------------ */

struct bump_req {
	size_t len, align;
};

static const struct bump_req bump_reqs[] = {
	{ 1, 1 }, { 3, 0 }, { 8, 8 }, { 100, 64 }, { 1, 4096 }, { 64, 128 }, { 7, 2 },
	{ 200, 16 }, { 500, 256 }, { 1000, 8 }, { 16, 32 }, { 2000, 1 }, { 64, 64 },
};

static void arena_bump(void **state)
{
	size_t k, i;

	(void)state;
	for (k = 0; k < NCFG; k++) {
		struct portal_span s, first = { 0 };
		struct fx f;
		uint64_t cursor = 0, ok = 0, failed;
		uint32_t epoch;
		void *ptr;

		fx_open(&f, &cfgs[k]);
		if (!f.bump_size) {
			assert_int_equal(portal_arena_bump_alloc(f.a, 1, 8, &s, &ptr), -EMSGSIZE);
			fx_close(&f);
			continue;
		}
		epoch = stats(f.a).bump_epoch;
		assert_int_equal(portal_arena_bump_alloc(f.a, 0, 8, &s, &ptr), -EINVAL);
		assert_int_equal(portal_arena_bump_alloc(f.a, 8, 3, &s, &ptr), -EINVAL);
		assert_int_equal(portal_arena_bump_alloc(f.a, 8, 8192, &s, &ptr), -EINVAL);
		assert_int_equal(portal_arena_bump_alloc(f.a, f.bump_size + 1, 1, &s, &ptr), -EMSGSIZE);
		assert_int_equal(portal_arena_bump_alloc(f.a, (size_t)UINT32_MAX + 1, 1, &s, &ptr),
				 -EMSGSIZE);
		/* Against a reference model of the cursor. */
		for (i = 0; i < sizeof(bump_reqs) / sizeof(bump_reqs[0]); i++) {
			size_t al = bump_reqs[i].align ? bump_reqs[i].align : 8;
			uint64_t start = ROFF + f.bump_off + cursor;
			uint64_t pad = (al - start % al) % al;
			int want = bump_reqs[i].len > f.bump_size ? -EMSGSIZE
				 : cursor + pad + bump_reqs[i].len <= f.bump_size ? 0 : -ENOSPC;
			int rc = portal_arena_bump_alloc(f.a, bump_reqs[i].len, bump_reqs[i].align, &s,
							 &ptr);

			if (rc != want)
				fail_msg("%s: bump req %zu: got %d want %d", f.cfg->name, i, rc, want);
			if (rc)
				continue;
			if (!ok)
				first = s;
			ok++;
			assert_int_equal(s.offset, start + pad);
			assert_int_equal(s.offset % al, 0);
			assert_int_equal(s.length, bump_reqs[i].len);
			assert_int_equal(s.flags, PORTAL_SPAN_F_BUMP);
			assert_int_equal(s.generation, epoch);
			assert_int_equal(s.region_id, RID);
			assert_ptr_equal(ptr, f.mem + (s.offset - ROFF));
			memset(ptr, 0x5A, s.length);
			cursor += pad + bump_reqs[i].len;
		}
		assert_true(ok > 0);
		assert_int_equal(stats(f.a).bump_used, cursor);
		assert_int_equal(stats(f.a).bump_allocs, ok);
		/* Fill to the end, then -ENOSPC, counted. */
		while (portal_arena_bump_alloc(f.a, 1, 1, &s, &ptr) == 0)
			cursor++;
		assert_int_equal(cursor, f.bump_size);
		failed = stats(f.a).bump_failed;
		assert_int_equal(portal_arena_bump_alloc(f.a, 1, 1, &s, &ptr), -ENOSPC);
		assert_int_equal(stats(f.a).bump_failed, failed + 1);
		/* Reset: a new epoch, the area starts over. */
		portal_arena_bump_reset(f.a);
		assert_int_not_equal(stats(f.a).bump_epoch, epoch);
		assert_int_equal(stats(f.a).bump_used, 0);
		assert_int_equal(stats(f.a).bump_resets, 1);
		assert_int_equal(portal_arena_bump_alloc(f.a, first.length, 1, &s, &ptr), 0);
		assert_int_equal(s.offset, ROFF + f.bump_off);
		assert_int_equal(s.generation, stats(f.a).bump_epoch);
		expect_refused("bump span from the last epoch", f.a, &first, PORTAL_ESTALE, C_STALE);
		/* The epoch wraps to 1, never to 0. */
		f.a->bump_epoch = UINT32_MAX;
		portal_arena_bump_reset(f.a);
		assert_int_equal(stats(f.a).bump_epoch, 1);
		fx_close(&f);
	}
}

/* ------------------------------------------------------------------ */
/* Attach                                                              */
/* ------------------------------------------------------------------ */

static void arena_reattach(void **state)
{
	size_t k;

	(void)state;
	for (k = 0; k < NCFG; k++) {
		struct portal_span old[64], fresh[64], ob = { 0 }, s;
		const struct portal_arena_params *p = &cfgs[k].p;
		portal_arena_t *b = NULL, *c = NULL;
		uint32_t n = 0, m = 0, i, same = 0;
		struct fx f;
		void *ptr;

		fx_open(&f, &cfgs[k]);
		while (n < 64 && portal_arena_alloc(f.a, 1, &old[n], &ptr) == 0)
			n++;
		assert_int_equal(n, f.nblocks);
		if (f.bump_size)
			assert_int_equal(portal_arena_bump_alloc(f.a, 8, 8, &ob, &ptr), 0);
		/* Let some blocks go round a few times first. */
		for (i = 0; i < n; i += 2) {
			assert_int_equal(portal_arena_free(f.a, &old[i]), 0);
			assert_int_equal(portal_arena_alloc(f.a, 1, &old[i], &ptr), 0);
		}
		/* The owner restarts: its private state is gone. */
		portal_arena_detach(f.a);
		f.a = NULL;
		assert_int_equal(arena_attach_seeded(f.mem, f.len, ROFF, RID, 42, &b), 0);
		assert_int_equal(stats(b).blocks_in_use, 0);
		assert_int_equal(stats(b).blocks_total, f.nblocks);
		/* Spans of the last life: the blocks are free now. */
		for (i = 0; i < n; i++)
			expect_refused("old span, block free", b, &old[i], PORTAL_ESTALE, C_DOUBLE);
		/* Every block can be handed out again, at a new generation. */
		while (m < 64 && portal_arena_alloc(b, 1, &fresh[m], &ptr) == 0)
			m++;
		assert_int_equal(m, n);
		for (i = 0; i < n; i++) {
			assert_int_equal(fresh[i].offset, old[i].offset);
			assert_int_not_equal(fresh[i].generation, 0);
			same += fresh[i].generation == old[i].generation;
		}
		assert_int_equal(same, 0);
		for (i = 0; i < n; i++)
			expect_refused("old span, block reused", b, &old[i], PORTAL_ESTALE, C_STALE);
		if (f.bump_size) {
			assert_int_not_equal(stats(b).bump_epoch, ob.generation);
			expect_refused("old bump span", b, &ob, PORTAL_ESTALE, C_STALE);
		}
		for (i = 0; i < n; i++)
			assert_int_equal(portal_arena_free(b, &fresh[i]), 0);
		/* The same seed replays; the public attach draws a new one. */
		portal_arena_detach(b);
		assert_int_equal(arena_attach_seeded(f.mem, f.len, ROFF, RID, 42, &b), 0);
		if (p->nclasses) {
			assert_int_equal(portal_arena_alloc(b, 1, &s, &ptr), 0);
			assert_int_equal(s.generation, fresh[0].generation);
		}
		assert_int_equal(portal_arena_attach(f.mem, f.len, ROFF, RID, &c), 0);
		assert_int_equal(stats(c).blocks_total, f.nblocks);
		portal_arena_detach(b);
		portal_arena_detach(c);
		fx_close(&f);
	}
}

enum hmut {
	H_MAGIC, H_VERSION, H_FLAGS, H_NCLASSES_9, H_NCLASSES_0, H_OWNER, H_OBJ_BIG, H_OBJ_SMALL,
	H_OBJ_ODD, H_BS_0, H_BS_100, H_COUNT_0, H_OFF_HDR, H_OFF_ODD, H_CLS_PAST_END,
	H_COUNT_HUGE, H_OVERLAP, H_SAME_SIZE, H_DESCENDING, H_UNUSED_NONZERO, H_BUMP_OVERLAP,
	H_BUMP_PAST_END, H_BUMP_ODD, H_BUMP_IN_HDR, H_BUMP_OFF_PAST_END,
};

static const char *const hmut_name[] = {
	"magic", "version", "flags", "nclasses 9", "nclasses 0 and no bump", "owner side",
	"obj_size > len", "obj_size < header", "obj_size unaligned", "block size 0",
	"block size 100", "count 0", "class in header", "class unaligned", "class past end",
	"count huge", "overlapping classes", "same block size", "descending", "unused class set",
	"bump overlaps a class", "bump past end", "bump size unaligned", "bump in header",
	"bump offset past end",
};

static void arena_attach_corrupt(void **state)
{
	const struct cfg *c = &cfgs[1]; /* three classes and bump */
	struct portal_arena_hdr good;
	portal_arena_t *a = NULL;
	struct fx f;
	int m;

	(void)state;
	fx_open(&f, c);
	memcpy(&good, f.mem, sizeof(good));
	portal_arena_detach(f.a);
	f.a = NULL;
	for (m = H_MAGIC; m <= H_BUMP_OFF_PAST_END; m++) {
		struct portal_arena_hdr h = good;
		int rc;

		switch ((enum hmut)m) {
		case H_MAGIC:          h.magic ^= 1; break;
		case H_VERSION:        h.version = 2; break;
		case H_FLAGS:          h.flags = 1; break;
		case H_NCLASSES_9:     h.nclasses = 9; break;
		case H_NCLASSES_0:
			h.nclasses = 0;
			memset(h.cls, 0, sizeof(h.cls));
			h.bump_size = 0;
			break;
		case H_OWNER:          h.owner_side = PORTAL_REGION_MAX_PARTS; break;
		case H_OBJ_BIG:        h.obj_size = f.len + 64; break;
		case H_OBJ_SMALL:      h.obj_size = 192; break;
		case H_OBJ_ODD:        h.obj_size -= 8; break;
		case H_BS_0:           h.cls[0].block_size = 0; break;
		case H_BS_100:         h.cls[0].block_size = 100; break;
		case H_COUNT_0:        h.cls[1].count = 0; break;
		case H_OFF_HDR:        h.cls[0].offset = 128; break;
		case H_OFF_ODD:        h.cls[2].offset += 8; break;
		case H_CLS_PAST_END:   h.cls[2].count++; break;
		case H_COUNT_HUGE:     h.cls[0].count = UINT32_MAX; break;
		case H_OVERLAP:        h.cls[1].offset = h.cls[0].offset + 64; break;
		case H_SAME_SIZE:      h.cls[1].block_size = h.cls[0].block_size; break;
		case H_DESCENDING:
			/* Swap the geometry of classes 0 and 1: no overlap, wrong order. */
			h.cls[0] = good.cls[1];
			h.cls[1] = good.cls[0];
			break;
		case H_UNUSED_NONZERO: h.cls[5].count = 1; break;
		case H_BUMP_OVERLAP:   h.bump_offset = h.cls[2].offset; break;
		case H_BUMP_PAST_END:  h.bump_size += 64; break;
		case H_BUMP_ODD:       h.bump_size -= 8; break;
		case H_BUMP_IN_HDR:    h.bump_offset = 0; break;
		case H_BUMP_OFF_PAST_END: h.bump_offset = UINT64_MAX - 63; h.bump_size = 64; break;
		}
		memcpy(f.mem, &h, sizeof(h));
		rc = arena_attach_seeded(f.mem, f.len, ROFF, RID, 1, &a);
		if (rc != PORTAL_EPROTO)
			fail_msg("corrupt header (%s): attach returned %d", hmut_name[m], rc);
		assert_null(a);
	}
	/* The good header still attaches; a short or misaligned mapping does not. */
	memcpy(f.mem, &good, sizeof(good));
	assert_int_equal(arena_attach_seeded(f.mem, 100, ROFF, RID, 1, &a), PORTAL_EPROTO);
	assert_int_equal(arena_attach_seeded(f.mem, f.len - 64, ROFF, RID, 1, &a), PORTAL_EPROTO);
	assert_int_equal(arena_attach_seeded(f.mem + 8, f.len - 8, ROFF, RID, 1, &a), -EINVAL);
	assert_int_equal(arena_attach_seeded(f.mem, f.len, UINT64_MAX - 64, RID, 1, &a), -EINVAL);
	assert_int_equal(portal_arena_attach(NULL, f.len, ROFF, RID, &a), -EINVAL);
	assert_int_equal(portal_arena_attach(f.mem, f.len, ROFF, RID, NULL), -EINVAL);
	assert_null(a);
	assert_int_equal(arena_attach_seeded(f.mem, f.len, ROFF, RID, 1, &a), 0);
	portal_arena_detach(a);
	fx_close(&f);
}

/* A header another writer laid out with a gap between classes and the bump
 * area first: valid, and a span into the gap is forged. */
static void arena_attach_gap(void **state)
{
	static uint8_t mem[1024] __attribute__((aligned(64)));
	struct portal_arena_hdr h;
	struct portal_span s, g;
	portal_arena_t *a = NULL;
	void *ptr;

	(void)state;
	memset(&h, 0, sizeof(h));
	h.magic = PORTAL_ARENA_MAGIC;
	h.version = 1;
	h.nclasses = 2;
	h.owner_side = 0;
	h.obj_size = 1024;
	h.bump_offset = 256;
	h.bump_size = 128;
	h.cls[0] = (struct portal_arena_class){ .block_size = 64, .count = 2, .offset = 384 };
	h.cls[1] = (struct portal_arena_class){ .block_size = 128, .count = 2, .offset = 640 };
	memcpy(mem, &h, sizeof(h));
	assert_int_equal(arena_attach_seeded(mem, sizeof(mem), ROFF, RID, 9, &a), 0);
	assert_int_equal(portal_arena_alloc(a, 64, &s, &ptr), 0);
	assert_int_equal(s.offset, ROFF + 384);
	assert_ptr_equal(ptr, mem + 384);
	g = s;
	g.offset = ROFF + 512; /* between class 0 (384..512) and class 1 (640..896) */
	expect_refused("span into the gap", a, &g, PORTAL_EFORGED, C_FORGED);
	g.offset = ROFF + 576;
	expect_refused("span into the gap, aligned", a, &g, PORTAL_EFORGED, C_FORGED);
	g.offset = ROFF + 256; /* the bump area, below the blocks */
	expect_refused("unflagged span into the bump area", a, &g, PORTAL_ERANGE, C_RANGE);
	assert_int_equal(portal_arena_bump_alloc(a, 128, 64, &g, &ptr), 0);
	assert_int_equal(g.offset, ROFF + 256);
	assert_int_equal(portal_arena_free(a, &s), 0);
	portal_arena_detach(a);
}

/* ------------------------------------------------------------------ */
/* Receiver-side resolve                                               */
/* ------------------------------------------------------------------ */

static void arena_resolve(void **state)
{
	size_t k;

	(void)state;
	for (k = 0; k < NCFG; k++) {
		struct portal_object_info info;
		struct portal_span s, t;
		struct fx f;
		void *own, *got, *none = (void *)&f;

		fx_open(&f, &cfgs[k]);
		memset(&info, 0, sizeof(info));
		info.kind = PORTAL_OBJ_ARENA;
		info.offset = ROFF;
		info.size = f.len;
		info.addr = f.mem;
		if (cfgs[k].p.nclasses)
			assert_int_equal(portal_arena_alloc(f.a, 33, &s, &own), 0);
		else
			assert_int_equal(portal_arena_bump_alloc(f.a, 33, 8, &s, &own), 0);
		got = none;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &s, &got), 0);
		assert_ptr_equal(got, own);

		t = s;
		t.region_id = RID + 1;
		got = none;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &t, &got), PORTAL_EXDEV);
		t = s;
		t.offset = ROFF + 8; /* the header is not data */
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &t, &got), PORTAL_ERANGE);
		t = s;
		t.offset = ROFF + f.len - 8;
		t.length = 9;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &t, &got), PORTAL_ERANGE);
		t.offset = UINT64_MAX - 4;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &t, &got), PORTAL_ERANGE);
		t = s;
		t.flags = 0x40;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &t, &got), -EINVAL);
		assert_ptr_equal(got, none);
		/* The extent comes from the directory entry: a smaller one wins. */
		info.size = s.offset - ROFF;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &s, &got), PORTAL_ERANGE);
		info.size = f.len;
		info.kind = PORTAL_OBJ_RING;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &s, &got), -EINVAL);
		info.kind = PORTAL_OBJ_ARENA;
		info.size = 128;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &s, &got), -EINVAL);
		info.size = UINT64_MAX;
		assert_int_equal(portal_arena_resolve(&info, RID, f.region, &s, &got), -EINVAL);
		info.size = f.len;
		assert_int_equal(portal_arena_resolve(NULL, RID, f.region, &s, &got), -EINVAL);
		assert_int_equal(portal_arena_resolve(&info, RID, NULL, &s, &got), -EINVAL);
		assert_ptr_equal(got, none);
		fx_close(&f);
	}
}

/* ------------------------------------------------------------------ */
/* Randomized run against a shadow model                               */
/* ------------------------------------------------------------------ */

struct mblock {
	uint64_t rel;         /* from the arena start */
	uint32_t block_size;
	uint32_t cls;
	int allocated;
	uint32_t gen;         /* current, when known */
	int gen_known;
	struct portal_span span;
	uint8_t stamp;
};

struct model {
	const struct fx *f;
	struct mblock b[64];
	uint32_t n;
	uint64_t bump_cursor;
	uint32_t bump_epoch;
	struct portal_arena_stats st; /* what the counters should say */
};

static void model_init(struct model *m, const struct fx *f)
{
	const struct portal_arena_params *p = &f->cfg->p;
	uint32_t i, j;

	memset(m, 0, sizeof(*m));
	m->f = f;
	for (i = 0; i < p->nclasses; i++)
		for (j = 0; j < p->cls[i].count; j++) {
			struct mblock *b = &m->b[m->n++];

			b->rel = f->cls_off[i] + (uint64_t)j * p->cls[i].block_size;
			b->block_size = p->cls[i].block_size;
			b->cls = i;
			b->gen = 1;
			b->gen_known = !(p->flags & PORTAL_ARENA_F_RANDOM_GEN);
		}
	m->bump_epoch = stats(f->a).bump_epoch;
}

/* The reference checker: written apart from the library's, with 128-bit
 * ends so nothing can wrap. */
static int model_judge(const struct model *m, const struct portal_span *s, enum counter *which,
		       struct mblock **blk)
{
	const struct fx *f = m->f;
	unsigned __int128 end;
	uint64_t rel;
	uint32_t i;

	*blk = NULL;
	*which = C_NONE;
	if (s->region_id != RID)
		return *which = C_REGION, PORTAL_EXDEV;
	if (s->flags & ~PORTAL_SPAN_F_BUMP)
		return *which = C_FORGED, PORTAL_EFORGED;
	if (s->offset < ROFF)
		return *which = C_RANGE, PORTAL_ERANGE;
	rel = s->offset - ROFF;
	end = (unsigned __int128)rel + s->length;
	if (s->flags & PORTAL_SPAN_F_BUMP) {
		if (!f->bump_size || rel < f->bump_off || end > f->bump_off + f->bump_size)
			return *which = C_RANGE, PORTAL_ERANGE;
		if (s->generation != m->bump_epoch)
			return *which = C_STALE, PORTAL_ESTALE;
		if (end > f->bump_off + m->bump_cursor)
			return *which = C_FORGED, PORTAL_EFORGED;
		return 0;
	}
	if (m->n == 0 || rel < m->b[0].rel ||
	    end > m->b[m->n - 1].rel + m->b[m->n - 1].block_size)
		return *which = C_RANGE, PORTAL_ERANGE;
	for (i = 0; i < m->n; i++) {
		struct mblock *b = (struct mblock *)&m->b[i];

		if (b->rel != rel)
			continue;
		if (s->length > b->block_size)
			return *which = C_FORGED, PORTAL_EFORGED;
		if (!b->allocated)
			return *which = C_DOUBLE, PORTAL_ESTALE;
		if (s->generation != b->gen)
			return *which = C_STALE, PORTAL_ESTALE;
		*blk = b;
		return 0;
	}
	return *which = C_FORGED, PORTAL_EFORGED;
}

static void model_count(struct model *m, enum counter which)
{
	switch (which) {
	case C_REGION: m->st.refused_region++; break;
	case C_RANGE:  m->st.refused_range++; break;
	case C_FORGED: m->st.refused_forged++; break;
	case C_STALE:  m->st.refused_stale++; break;
	case C_DOUBLE: m->st.refused_double++; break;
	default: break;
	}
}

/* Free S in the arena and in the model; the two must agree. */
static void model_free(struct model *m, const struct portal_span *s, const char *what,
		       uint32_t op)
{
	struct mblock *b;
	enum counter which;
	int want = model_judge(m, s, &which, &b);
	int rc;
	uint32_t i;

	if (want == 0 && b) {
		/* Whoever held it wrote its stamp; nobody else did. */
		const uint8_t *p = m->f->mem + b->rel;

		for (i = 0; i < b->span.length; i++)
			if (p[i] != b->stamp)
				fail_msg("%s op %u: block at %llu byte %u overwritten", m->f->cfg->name,
					 op, (unsigned long long)b->rel, i);
	}
	rc = portal_arena_free(m->f->a, s);
	if (rc != want)
		fail_msg("%s op %u (%s): free got %d want %d", m->f->cfg->name, op, what, rc, want);
	model_count(m, which);
	if (want == 0 && b) {
		b->allocated = 0;
		b->gen = b->gen == UINT32_MAX ? 1 : b->gen + 1;
		m->st.frees++;
		m->st.blocks_in_use--;
	} else if (want == 0) {
		m->st.bump_acks++;
	}
}

static void arena_random_model(void **state)
{
	size_t k;

	(void)state;
	for (k = 0; k < NCFG; k++) {
		const struct portal_arena_params *p = &cfgs[k].p;
		struct portal_span freed[16];
		struct portal_span bumps[16];
		uint32_t nfreed = 0, nbumps = 0, op;
		uint32_t largest = p->nclasses ? p->cls[p->nclasses - 1].block_size : 0;
		struct model m;
		struct fx f;

		fx_open(&f, &cfgs[k]);
		model_init(&m, &f);
		rng_state = UINT64_C(0x9E3779B97F4A7C15) ^ (k * 7919 + 1);
		for (op = 0; op < 3000; op++) {
			uint64_t r = rnd_below(100);
			struct portal_span s;
			void *ptr;

			if (r < 40 && largest) {
				/* alloc */
				size_t len = rnd_below(10) == 0 ? largest + 1 + rnd_below(64)
								: 1 + rnd_below(largest);
				uint32_t i, want_cls = 0, any = 0;
				int rc, want;

				for (i = 0; i < m.n; i++)
					if (!m.b[i].allocated && m.b[i].block_size >= len &&
					    (!any || m.b[i].cls < want_cls)) {
						want_cls = m.b[i].cls;
						any = 1;
					}
				want = len > largest ? -EMSGSIZE : any ? 0 : -ENOSPC;
				rc = portal_arena_alloc(f.a, len, &s, &ptr);
				if (rc != want)
					fail_msg("%s op %u: alloc(%zu) got %d want %d", f.cfg->name, op,
						 len, rc, want);
				if (rc == -ENOSPC)
					m.st.alloc_failed++;
				if (rc)
					continue;
				for (i = 0; i < m.n; i++)
					if (m.b[i].rel == s.offset - ROFF)
						break;
				if (i == m.n || m.b[i].allocated || m.b[i].cls != want_cls)
					fail_msg("%s op %u: alloc handed out a wrong block", f.cfg->name, op);
				if (m.b[i].gen_known && s.generation != m.b[i].gen)
					fail_msg("%s op %u: generation %u, want %u", f.cfg->name, op,
						 s.generation, m.b[i].gen);
				assert_int_not_equal(s.generation, 0);
				assert_int_equal(s.length, len);
				m.b[i].gen = s.generation;
				m.b[i].gen_known = 1;
				m.b[i].allocated = 1;
				m.b[i].span = s;
				m.b[i].stamp = (uint8_t)(op * 31 + 1);
				memset(ptr, m.b[i].stamp, len);
				m.st.allocs++;
				m.st.blocks_in_use++;
			} else if (r < 70) {
				/* free an outstanding block */
				uint32_t i, start = (uint32_t)rnd_below(m.n ? m.n : 1);

				for (i = 0; i < m.n; i++)
					if (m.b[(start + i) % m.n].allocated)
						break;
				if (i == m.n)
					continue;
				s = m.b[(start + i) % m.n].span;
				model_free(&m, &s, "free", op);
				freed[nfreed++ % 16] = s;
			} else if (r < 78 && nfreed) {
				/* give back an old span again: stale or double */
				s = freed[rnd_below(nfreed < 16 ? nfreed : 16)];
				model_free(&m, &s, "old span", op);
			} else if (r < 90) {
				/* a near miss of a real span */
				uint32_t i = (uint32_t)rnd_below(m.n ? m.n : 1);

				if (m.n && m.b[i].gen_known && m.b[i].span.region_id)
					s = m.b[i].span;
				else if (nbumps)
					s = bumps[rnd_below(nbumps < 16 ? nbumps : 16)];
				else
					continue;
				switch (rnd_below(9)) {
				case 0: s.offset += (uint64_t)(int64_t)(rnd_below(5) * 64) - 128; break;
				case 1: s.offset += rnd_below(3) + 1; break;
				case 2: s.length = (uint32_t)rnd_below(2 * (largest + 64) + 1); break;
				case 3: s.length = UINT32_MAX - (uint32_t)rnd_below(3); break;
				case 4: s.generation += (uint32_t)rnd_below(3) - 1; break;
				case 5: s.region_id ^= 1u << rnd_below(32); break;
				case 6: s.flags ^= 1u << rnd_below(32); break;
				case 7: s.offset = rnd(); break;
				default: s.offset = UINT64_MAX - rnd_below(256); break;
				}
				model_free(&m, &s, "near miss", op);
			} else if (r < 97 && f.bump_size) {
				size_t len = 1 + rnd_below(f.bump_size / 4 + 1);
				size_t al = (size_t)1 << rnd_below(8);
				uint64_t start = ROFF + f.bump_off + m.bump_cursor;
				uint64_t pad = (al - start % al) % al;
				int want = m.bump_cursor + pad + len <= f.bump_size ? 0 : -ENOSPC;
				int rc = portal_arena_bump_alloc(f.a, len, al, &s, &ptr);

				if (rc != want)
					fail_msg("%s op %u: bump got %d want %d", f.cfg->name, op, rc, want);
				if (rc) {
					m.st.bump_failed++;
					continue;
				}
				assert_int_equal(s.offset, start + pad);
				m.bump_cursor += pad + len;
				bumps[nbumps++ % 16] = s;
				m.st.bump_allocs++;
			} else if (f.bump_size) {
				portal_arena_bump_reset(f.a);
				m.bump_cursor = 0;
				m.bump_epoch = m.bump_epoch == UINT32_MAX ? 1 : m.bump_epoch + 1;
				m.st.bump_resets++;
			}
			if (stats(f.a).blocks_in_use != m.st.blocks_in_use)
				fail_msg("%s op %u: %u blocks in use, model says %u", f.cfg->name, op,
					 stats(f.a).blocks_in_use, m.st.blocks_in_use);
		}
		{
			struct portal_arena_stats st = stats(f.a);

			assert_int_equal(st.allocs, m.st.allocs);
			assert_int_equal(st.frees, m.st.frees);
			assert_int_equal(st.alloc_failed, m.st.alloc_failed);
			assert_int_equal(st.bump_allocs, m.st.bump_allocs);
			assert_int_equal(st.bump_failed, m.st.bump_failed);
			assert_int_equal(st.bump_resets, m.st.bump_resets);
			assert_int_equal(st.bump_acks, m.st.bump_acks);
			assert_int_equal(st.refused_region, m.st.refused_region);
			assert_int_equal(st.refused_range, m.st.refused_range);
			assert_int_equal(st.refused_forged, m.st.refused_forged);
			assert_int_equal(st.refused_stale, m.st.refused_stale);
			assert_int_equal(st.refused_double, m.st.refused_double);
			assert_int_equal(st.bump_used, m.bump_cursor);
			assert_int_equal(st.bump_epoch, m.bump_epoch);
			/* The run exercised every path. */
			if (largest)
				assert_true(m.st.frees > 100 && m.st.refused_stale + m.st.refused_double > 10 &&
					    m.st.refused_forged > 10 && m.st.refused_range > 10 &&
					    m.st.refused_region > 10);
		}
		fx_close(&f);
	}
}


/* ------------------------------------------------------------------ */
/* Return ring                                                         */
/* ------------------------------------------------------------------ */

struct rr {
	void *mem;
	portal_ring_t *prod; /* the receiver's end */
	portal_ring_t *cons; /* the owner's end */
};

static void rr_open(struct rr *r, uint32_t mode, uint32_t slot_size, uint32_t capacity)
{
	struct portal_ring_params p = { .mode = mode, .slot_size = slot_size, .capacity = capacity };
	size_t n = portal_ring_memsize(&p);

	assert_true(n > 0);
	assert_int_equal(posix_memalign(&r->mem, 64, n), 0);
	assert_int_equal(portal_ring_init(r->mem, n, &p), 0);
	assert_int_equal(portal_ring_attach(r->mem, n, PORTAL_ROLE_PRODUCER, &r->prod), 0);
	assert_int_equal(portal_ring_attach(r->mem, n, PORTAL_ROLE_CONSUMER, &r->cons), 0);
}

static void rr_close(struct rr *r)
{
	portal_ring_detach(r->prod);
	portal_ring_detach(r->cons);
	free(r->mem);
}

/* The span in ring slot POS, as the ring memory holds it. */
static uint8_t *rr_slot(const struct rr *r, uint32_t capacity, uint64_t pos)
{
	return (uint8_t *)r->mem + PORTAL_RING_HDR_SIZE +
	       (pos & (capacity - 1)) * PORTAL_ARENA_RETURN_SLOT;
}

static void arena_return_ring(void **state)
{
	static const uint32_t modes[] = { PORTAL_RING_SPSC, PORTAL_RING_MPSC };
	size_t k, mi;

	(void)state;
	for (mi = 0; mi < 2; mi++)
		for (k = 0; k < NCFG; k++) {
			struct portal_span sp[8], bump = { 0 }, s, junk;
			struct portal_object_info info;
			struct portal_arena_stats st;
			uint32_t n = 0, i, want_returned;
			static const uint8_t zero[8];
			struct rr r;
			struct fx f;
			void *ptr, *seen;

			if (cfgs[k].p.nclasses == 0 || cfgs[k].p.bump_size == 0)
				continue;
			fx_open(&f, &cfgs[k]);
			rr_open(&r, modes[mi], PORTAL_ARENA_RETURN_SLOT, 8);
			memset(&info, 0, sizeof(info));
			info.kind = PORTAL_OBJ_ARENA;
			info.offset = ROFF;
			info.size = f.len;
			while (n < 4 && portal_arena_alloc(f.a, 40, &sp[n], &ptr) == 0) {
				memset(ptr, (int)(0x30 + n), 40);
				n++;
			}
			assert_int_equal(n, 4);
			assert_int_equal(portal_arena_bump_alloc(f.a, 16, 8, &bump, &ptr), 0);

			/* The receiver reads each block in place, then gives it back. */
			for (i = 0; i < 3; i++) {
				assert_int_equal(portal_arena_resolve(&info, RID, f.region, &sp[i], &seen), 0);
				assert_int_equal(((uint8_t *)seen)[39], 0x30 + i);
				assert_int_equal(portal_arena_give_back(r.prod, &sp[i]), 0);
			}
			/* The slot carries the span, then zeroes. */
			assert_memory_equal(rr_slot(&r, 8, 0), &sp[0], sizeof(sp[0]));
			assert_memory_equal(rr_slot(&r, 8, 0) + 24, zero, 8);
			junk = sp[3];
			junk.offset += 1;
			assert_int_equal(portal_arena_give_back(r.prod, &junk), 0);   /* forged */
			assert_int_equal(portal_arena_give_back(r.prod, &bump), 0);   /* bump ack */
			assert_int_equal(portal_arena_give_back(r.prod, &sp[0]), 0);  /* double */
			junk = sp[3];
			junk.region_id ^= 0x100;
			assert_int_equal(portal_arena_give_back(r.prod, &junk), 0);   /* region */
			/* A hostile receiver scribbles on a slot after publishing it. */
			assert_int_equal(portal_arena_give_back(r.prod, &sp[3]), 0);
			memset(rr_slot(&r, 8, 7), 0xFF, 8); /* offset = UINT64_MAX */
			assert_int_equal(portal_arena_give_back(r.prod, &sp[3]), -EAGAIN); /* full */

			assert_int_equal(portal_arena_reclaim(f.a, r.cons, 100), 8);
			st = stats(f.a);
			assert_int_equal(st.returned, 8);
			assert_int_equal(st.frees, 3);
			assert_int_equal(st.blocks_in_use, 1);
			assert_int_equal(st.bump_acks, 1);
			assert_int_equal(st.refused_forged, 1);
			assert_int_equal(st.refused_double, 1);
			assert_int_equal(st.refused_region, 1);
			assert_int_equal(st.refused_range, 1);
			assert_int_equal(portal_arena_reclaim(f.a, r.cons, 100), 0); /* empty */
			/* sp[3] survived the scribble; it is still the owner's. */
			assert_int_equal(portal_arena_free(f.a, &sp[3]), 0);
			/* The freed blocks come back at a new generation. */
			for (i = 0; i < 4; i++) {
				assert_int_equal(portal_arena_alloc(f.a, 40, &s, &ptr), 0);
				assert_true(span_class(&f, &s) >= 0);
			}

			/* MAX bounds a reclaim; bursts move many at once. */
			for (i = 0; i < 8; i++)
				sp[i] = junk;
			assert_int_equal(portal_arena_give_back_burst(r.prod, sp, 8), 8);
			assert_int_equal(portal_arena_give_back_burst(r.prod, sp, 8), 0);
			assert_int_equal(portal_arena_reclaim(f.a, r.cons, 3), 3);
			assert_int_equal(portal_arena_reclaim(f.a, r.cons, 0), 0);
			assert_int_equal(portal_arena_give_back_burst(r.prod, sp, 8), 3);
			assert_int_equal(portal_arena_reclaim(f.a, r.cons, 100), 8);
			want_returned = 8 + 8 + 3;
			st = stats(f.a);
			assert_int_equal(st.returned, want_returned);
			assert_int_equal(st.refused_region, 1 + 8 + 3);
			/* A burst of real spans, more than one internal batch. */
			n = 0;
			while (n < 8 && portal_arena_alloc(f.a, 1, &sp[n], &ptr) == 0)
				n++;
			assert_int_equal(portal_arena_give_back_burst(r.prod, sp, n), (int)n);
			assert_int_equal(portal_arena_reclaim(f.a, r.cons, 1000), (int)n);
			assert_int_equal(stats(f.a).frees, st.frees + n);

			/* Wrong ends, wrong arguments. */
			assert_int_equal(portal_arena_give_back(r.cons, &sp[0]), -EINVAL);
			assert_int_equal(portal_arena_reclaim(f.a, r.prod, 4), -EINVAL);
			assert_int_equal(portal_arena_give_back(NULL, &sp[0]), -EINVAL);
			assert_int_equal(portal_arena_give_back(r.prod, NULL), -EINVAL);
			assert_int_equal(portal_arena_give_back_burst(r.prod, NULL, 1), -EINVAL);
			assert_int_equal(portal_arena_give_back_burst(r.prod, NULL, 0), 0);
			assert_int_equal(portal_arena_reclaim(NULL, r.cons, 4), -EINVAL);

			/* A receiver that corrupts the ring index: the ring is
			 * quarantined, the arena reports it and stays intact. */
			{
				struct portal_ring_hdr *h = r.mem;
				uint64_t d = arena_state_digest(f.a);

				assert_int_equal(portal_arena_give_back(r.prod, &junk), 0);
				atomic_store_explicit(&h->prod_tail, UINT64_C(1) << 40,
						      memory_order_relaxed);
				assert_int_equal(portal_arena_reclaim(f.a, r.cons, 4), PORTAL_EPROTO);
				assert_int_equal(portal_arena_reclaim(f.a, r.cons, 4), PORTAL_EPROTO);
				assert_int_equal(arena_state_digest(f.a), d);
				assert_int_equal(stats(f.a).returned, want_returned + n);
			}
			rr_close(&r);
			fx_close(&f);
		}
}

static void arena_return_ring_slot_size(void **state)
{
	struct portal_span s = { 0 };
	struct rr r;
	struct fx f;
	void *ptr;

	(void)state;
	fx_open(&f, &cfgs[1]);
	assert_int_equal(portal_arena_alloc(f.a, 1, &s, &ptr), 0);
	rr_open(&r, PORTAL_RING_SPSC, 64, 4);
	assert_int_equal(portal_arena_give_back(r.prod, &s), -EINVAL);
	assert_int_equal(portal_arena_give_back_burst(r.prod, &s, 1), -EINVAL);
	assert_int_equal(portal_arena_reclaim(f.a, r.cons, 4), -EINVAL);
	rr_close(&r);
	rr_open(&r, PORTAL_RING_SPSC, 16, 4);
	assert_int_equal(portal_arena_give_back(r.prod, &s), -EINVAL);
	assert_int_equal(portal_arena_reclaim(f.a, r.cons, 4), -EINVAL);
	rr_close(&r);
	assert_int_equal(stats(f.a).returned, 0);
	fx_close(&f);
}


/* More spans than one internal batch, both ways. */
static void arena_return_ring_batches(void **state)
{
	struct portal_span sp[40];
	struct rr r;
	struct fx f;
	uint32_t n = 0, i;
	void *ptr;

	(void)state;
	fx_open(&f, &cfgs[2]);
	rr_open(&r, PORTAL_RING_SPSC, PORTAL_ARENA_RETURN_SLOT, 64);
	while (n < 40 && portal_arena_alloc(f.a, 1, &sp[n], &ptr) == 0)
		n++;
	assert_int_equal(n, f.nblocks);
	for (i = n; i < 40; i++) {
		sp[i] = sp[i % n];
		sp[i].region_id = RID + 2;
	}
	assert_int_equal(portal_arena_give_back_burst(r.prod, sp, 40), 40);
	assert_int_equal(portal_ring_count(r.cons), 40);
	assert_int_equal(portal_arena_reclaim(f.a, r.cons, 21), 21);
	assert_int_equal(portal_ring_count(r.cons), 19);
	assert_int_equal(portal_arena_reclaim(f.a, r.cons, UINT32_MAX), 19);
	assert_int_equal(stats(f.a).returned, 40);
	assert_int_equal(stats(f.a).frees, n);
	assert_int_equal(stats(f.a).refused_region, 40 - n);
	assert_int_equal(stats(f.a).blocks_in_use, 0);
	/* A burst larger than the room left stops at the room. */
	for (i = 0; i < 40; i++)
		sp[i].region_id = RID + 2;
	assert_int_equal(portal_arena_give_back_burst(r.prod, sp, 40), 40);
	assert_int_equal(portal_arena_give_back_burst(r.prod, sp, 40), 24);
	assert_int_equal(portal_arena_reclaim(f.a, r.cons, 1000), 64);
	rr_close(&r);
	fx_close(&f);
}

/* ------------------------------------------------------------------ */
/* Region glue                                                         */
/* ------------------------------------------------------------------ */

static void arena_region(void **state)
{
	struct portal_region_opts o = { .size = 1 << 20, .region_id = 0x1234 };
	struct portal_region_opts o1 = { .side = 1 };
	const struct portal_arena_params *p = &cfgs[2].p;
	struct portal_ring_params rp = {
		.mode = PORTAL_RING_SPSC, .slot_size = PORTAL_ARENA_RETURN_SLOT, .capacity = 16,
	};
	struct portal_object_info info, info1;
	struct portal_span s, s1;
	portal_region_t *reg = NULL, *reg1 = NULL;
	portal_arena_t *a = NULL, *b = NULL, *h = NULL;
	portal_ring_t *prod = NULL, *cons = NULL;
	struct portal_arena_hdr hdr;
	uint8_t *base;
	void *ptr, *seen;

	(void)state;
	assert_int_equal(portal_region_create("memfd:portal-arena-test", &o, &reg), 0);
	base = portal_region_base(reg);
	assert_int_equal(portal_region_id(reg), 0x1234);

	/* The creator owns arena0; arena1 belongs to side 1. */
	assert_int_equal(portal_arena_create(reg, "arena0", p, 0, &a), 0);
	assert_int_equal(portal_arena_create(reg, "arena0", p, 0, &b), -EEXIST);
	assert_int_equal(portal_arena_create(reg, "arena1", p, 1, &b), -EINVAL);
	assert_null(b);
	assert_int_equal(portal_arena_create(reg, "arena1", p, 1, NULL), 0);
	assert_int_equal(portal_arena_create(reg, "bad", &bad_params[2].p, 0, NULL), -EINVAL);
	assert_int_equal(portal_arena_create(NULL, "x", p, 0, NULL), -EINVAL);

	assert_int_equal(portal_region_lookup(reg, "arena0", PORTAL_OBJ_ARENA, &info), 0);
	assert_int_equal(info.owner_side, 0);
	assert_true(info.size >= portal_arena_memsize(p));
	assert_int_equal(info.param[0], p->nclasses);
	assert_int_equal(info.offset % 64, 0);
	memcpy(&hdr, info.addr, sizeof(hdr));
	assert_int_equal(hdr.magic, PORTAL_ARENA_MAGIC);
	assert_int_equal(hdr.owner_side, 0);

	/* A span from arena0 resolves the same through the directory. */
	assert_int_equal(portal_arena_alloc(a, 64, &s, &ptr), 0);
	assert_int_equal(s.region_id, 0x1234);
	assert_int_equal(s.offset, info.offset + 256);
	assert_ptr_equal(ptr, base + s.offset);
	assert_int_equal(portal_arena_resolve(&info, 0x1234, base, &s, &seen), 0);
	assert_ptr_equal(seen, ptr);
	assert_int_equal(portal_span_resolve(&s, base, portal_region_size(reg), 0x1234, &seen), 0);
	assert_ptr_equal(seen, ptr);
	/* ... but not against the other arena's entry. */
	assert_int_equal(portal_region_lookup(reg, "arena1", PORTAL_OBJ_ARENA, &info1), 0);
	assert_int_equal(portal_arena_resolve(&info1, 0x1234, base, &s, &seen), PORTAL_ERANGE);

	/* open: only the owner side, only arenas. */
	assert_int_equal(portal_arena_open(reg, "arena1", &b), -EPERM);
	assert_int_equal(portal_arena_open(reg, "nope", &b), -ENOENT);
	assert_int_equal(portal_arena_open(reg, NULL, &b), -EINVAL);
	assert_null(b);
	/* The owner restarts: arena0's outstanding span is refused. */
	assert_int_equal(portal_arena_open(reg, "arena0", &b), 0);
	expect_refused("span from before the restart", b, &s, PORTAL_ESTALE, C_DOUBLE);
	portal_arena_detach(a);
	a = b;
	b = NULL;

	/* Side 1 attaches and takes its arena. */
	assert_int_equal(portal_region_attach_mem(base, portal_region_size(reg), &o1, &reg1), 0);
	assert_int_equal(portal_arena_open(reg1, "arena0", &h), -EPERM);
	assert_int_equal(portal_arena_open(reg1, "arena1", &h), 0);
	assert_int_equal(portal_arena_alloc(h, 1, &s1, &ptr), 0);
	assert_int_equal(s1.offset, info1.offset + 256);
	portal_arena_detach(h);
	h = NULL;

	/* The return ring: side 1 produces, the owner (side 0) consumes. */
	assert_int_equal(portal_ring_create(reg, "arena0.ret", &rp, 1), 0);
	assert_int_equal(portal_ring_open(reg, "arena0.ret", PORTAL_ROLE_CONSUMER, &cons), 0);
	assert_int_equal(portal_ring_open(reg1, "arena0.ret", PORTAL_ROLE_PRODUCER, &prod), 0);
	assert_int_equal(portal_arena_alloc(a, 100, &s, &ptr), 0);
	memcpy(ptr, "hello", 6);
	{
		struct portal_object_info seen_info;

		assert_int_equal(portal_region_lookup(reg1, "arena0", PORTAL_OBJ_ARENA, &seen_info), 0);
		assert_int_equal(portal_arena_resolve(&seen_info, portal_region_id(reg1),
						      portal_region_base(reg1), &s, &seen), 0);
		assert_string_equal(seen, "hello");
	}
	assert_int_equal(portal_arena_give_back(prod, &s), 0);
	assert_int_equal(portal_arena_give_back(prod, &s), 0);
	assert_int_equal(portal_arena_reclaim(a, cons, 16), 2);
	assert_int_equal(stats(a).frees, 1);
	assert_int_equal(stats(a).refused_double, 2); /* one above, one here */
	assert_int_equal(stats(a).blocks_in_use, 0);

	/* A header that names another owner than the directory does. */
	memcpy(&hdr, info1.addr, sizeof(hdr));
	hdr.owner_side = 0;
	memcpy(info1.addr, &hdr, sizeof(hdr));
	assert_int_equal(portal_arena_open(reg1, "arena1", &h), PORTAL_EPROTO);
	assert_null(h);

	portal_ring_detach(prod);
	portal_ring_detach(cons);
	portal_arena_detach(a);
	portal_region_detach(reg1);
	portal_region_detach(reg);
}

/* ------------------------------------------------------------------ */
/* Crash recovery: blocks held by a dead receiver                       */
/* ------------------------------------------------------------------ */

/*
 * The owner sends four spans over an SPSC send ring, tagging each with its
 * ring position; the receiver takes two, gives one back, and dies. The
 * owner drains the return ring and recovers: the one taken and kept is
 * freed, the two still in the send ring stay valid for the receiver's
 * next life, and a late give-back from the old life is refused as stale.
 */
static void arena_recover_dead_receiver(void **state)
{
	struct portal_span sp[6], got[6], s;
	struct rr send, ret;
	struct fx f;
	uint64_t taken;
	uint32_t holder = 3;

	(void)state;
	fx_open(&f, &cfgs[0]); /* one class of 4 blocks */
	rr_open(&send, PORTAL_RING_SPSC, 32, 8);
	rr_open(&ret, PORTAL_RING_SPSC, PORTAL_ARENA_RETURN_SLOT, 8);
	assert_int_equal(portal_arena_recover(f.a, holder, 100), 0); /* nothing tagged */
	for (int i = 0; i < 4; i++) {
		uint8_t slot[32] = { 0 };

		assert_int_equal(portal_arena_alloc(f.a, 10, &sp[i], NULL), 0);
		assert_int_equal(portal_arena_mark_sent(f.a, &sp[i], holder,
							portal_ring_position(send.prod)), 0);
		memcpy(slot, &sp[i], sizeof(sp[i]));
		assert_int_equal(portal_ring_enqueue(send.prod, slot), 0);
	}
	/* Receiver: takes two, gives the first back, dies holding the second. */
	for (int i = 0; i < 2; i++) {
		uint8_t slot[32];

		assert_int_equal(portal_ring_dequeue(send.cons, slot), 0);
		memcpy(&got[i], slot, sizeof(got[i]));
	}
	assert_int_equal(portal_arena_give_back(ret.prod, &got[0]), 0);
	free(send.cons); /* killed */
	/* Owner. */
	assert_int_equal(portal_arena_reclaim(f.a, ret.cons, 16), 1);
	assert_int_equal(portal_ring_peer_position(send.prod, &taken), 0);
	assert_int_equal(taken, 2);
	assert_int_equal(portal_arena_recover(f.a, holder, taken), 1);
	assert_int_equal(portal_arena_recover(f.a, holder, taken), 0);
	assert_int_equal(portal_arena_recover(f.a, holder + 1, 100), 0); /* another holder */
	assert_int_equal(stats(f.a).recovered, 1);
	assert_int_equal(stats(f.a).blocks_in_use, 2);
	/* The late give-back of the dead life is refused. */
	assert_int_equal(portal_arena_free(f.a, &got[1]), PORTAL_ESTALE);
	/* The next life gets the two spans still in the ring; they are good. */
	assert_int_equal(portal_ring_attach(send.mem, portal_ring_memsize(&(struct portal_ring_params){
						    .mode = PORTAL_RING_SPSC, .slot_size = 32,
						    .capacity = 8 }),
					    PORTAL_ROLE_CONSUMER, &send.cons), 0);
	for (int i = 2; i < 4; i++) {
		uint8_t slot[32];

		assert_int_equal(portal_ring_dequeue(send.cons, slot), 0);
		memcpy(&s, slot, sizeof(s));
		assert_memory_equal(&s, &sp[i], sizeof(s));
		assert_int_equal(portal_arena_free(f.a, &s), 0);
	}
	assert_int_equal(stats(f.a).blocks_in_use, 0);
	/* Freed blocks lost their tag: a recovery now frees nothing. */
	assert_int_equal(portal_arena_recover(f.a, holder, UINT64_MAX), 0);
	rr_close(&send);
	rr_close(&ret);
	fx_close(&f);
}

static void arena_mark_sent_refused(void **state)
{
	struct portal_span s, b;
	struct fx f;

	(void)state;
	fx_open(&f, &cfgs[1]);
	assert_int_equal(portal_arena_mark_sent(NULL, &s, 1, 0), -EINVAL);
	assert_int_equal(portal_arena_alloc(f.a, 10, &s, NULL), 0);
	assert_int_equal(portal_arena_bump_alloc(f.a, 10, 8, &b, NULL), 0);
	assert_int_equal(portal_arena_mark_sent(f.a, &b, 1, 0), -EINVAL);
	s.offset += 64;
	assert_int_equal(portal_arena_mark_sent(f.a, &s, 1, 0), PORTAL_ESTALE); /* free block */
	s.offset += 1;
	assert_int_equal(portal_arena_mark_sent(f.a, &s, 1, 0), PORTAL_EFORGED);
	s.offset -= 65;
	s.region_id ^= 1;
	assert_int_equal(portal_arena_mark_sent(f.a, &s, 1, 0), PORTAL_EXDEV);
	s.region_id ^= 1;
	assert_int_equal(portal_arena_mark_sent(f.a, &s, 1, 5), 0);
	/* Re-tagged by a second send; SEQ compares wrap-safe. */
	assert_int_equal(portal_arena_mark_sent(f.a, &s, 2, UINT64_MAX), 0);
	assert_int_equal(portal_arena_recover(f.a, 1, 100), 0);
	assert_int_equal(portal_arena_recover(f.a, 2, UINT64_MAX), 0);
	assert_int_equal(portal_arena_recover(f.a, 2, 1), 1);
	assert_int_equal(stats(f.a).refused_stale + stats(f.a).refused_double, 0);
	fx_close(&f);
}

/* reclaim with MAX 0 on a quarantined ring says so; poison is skipped. */
static void arena_reclaim_quarantine_and_poison(void **state)
{
	struct portal_ring_params p = { .mode = PORTAL_RING_MPSC,
					.slot_size = PORTAL_ARENA_RETURN_SLOT, .capacity = 8 };
	struct portal_ring_recovery_params rp = { .max_producers = 2 };
	struct portal_ring_claim *claims;
	struct portal_ring_hdr *h;
	portal_ring_t *giver, *owner;
	struct portal_span s;
	struct rr r;
	struct fx f;
	void *mem;
	size_t n;

	(void)state;
	fx_open(&f, &cfgs[0]);
	rr_open(&r, PORTAL_RING_SPSC, PORTAL_ARENA_RETURN_SLOT, 8);
	assert_int_equal(portal_arena_reclaim(f.a, r.cons, 0), 0);
	atomic_store(&((struct portal_ring_hdr *)r.mem)->prod_tail, 1000); /* hostile */
	assert_int_equal(portal_arena_reclaim(f.a, r.cons, 1), PORTAL_EPROTO);
	assert_int_equal(portal_arena_reclaim(f.a, r.cons, 0), PORTAL_EPROTO);
	assert_int_equal(portal_arena_reclaim(f.a, r.prod, 0), -EINVAL); /* wrong role */
	rr_close(&r);

	/* A receiver dies in the middle of a give-back on an MPSC return
	 * ring; recovery turns its claim into poison, reclaim skips it. */
	n = portal_ring_memsize_recoverable(&p, &rp);
	assert_int_equal(posix_memalign(&mem, 64, n), 0);
	assert_int_equal(portal_ring_init_recoverable(mem, n, &p, &rp), 0);
	h = mem;
	claims = (void *)((uint8_t *)mem + PORTAL_RING_HDR_SIZE + 8 * PORTAL_ARENA_RETURN_SLOT);
	assert_int_equal(portal_ring_attach_claim(mem, n, PORTAL_ROLE_PRODUCER, 0, 1, &giver), 0);
	assert_int_equal(portal_ring_attach(mem, n, PORTAL_ROLE_CONSUMER, &owner), 0);
	atomic_store(&claims[1].state, PORTAL_CLAIM_HELD);
	atomic_store(&claims[1].count, 1);
	atomic_store(&claims[1].head, 0);
	atomic_store(&h->prod_head, 1); /* claimed slot 0, died */
	assert_int_equal(portal_arena_alloc(f.a, 10, &s, NULL), 0);
	assert_int_equal(portal_ring_recover_producer(owner, 1), 1);
	assert_int_equal(portal_arena_give_back(giver, &s), 0);
	assert_int_equal(portal_arena_reclaim(f.a, owner, 16), 2);
	assert_int_equal(stats(f.a).poison_skipped, 1);
	assert_int_equal(stats(f.a).returned, 1);
	assert_int_equal(stats(f.a).blocks_in_use, 0);
	portal_ring_detach(giver);
	portal_ring_detach(owner);
	free(mem);
	fx_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(arena_params_invalid),
		cmocka_unit_test(arena_init_args),
		cmocka_unit_test(arena_layout),
		cmocka_unit_test(arena_alloc_exhaust),
		cmocka_unit_test(arena_free_realloc_generation),
		cmocka_unit_test(arena_refused_spans),
		cmocka_unit_test(arena_bump),
		cmocka_unit_test(arena_reattach),
		cmocka_unit_test(arena_attach_corrupt),
		cmocka_unit_test(arena_attach_gap),
		cmocka_unit_test(arena_resolve),
		cmocka_unit_test(arena_random_model),
		cmocka_unit_test(arena_return_ring),
		cmocka_unit_test(arena_return_ring_slot_size),
		cmocka_unit_test(arena_return_ring_batches),
		cmocka_unit_test(arena_region),
		cmocka_unit_test(arena_recover_dead_receiver),
		cmocka_unit_test(arena_mark_sent_refused),
		cmocka_unit_test(arena_reclaim_quarantine_and_poison),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
