/* SPDX-License-Identifier: MIT */
/*
 * arena.c - libFuzzer target: spans, the arena owner's allocator, and the
 * return ring receivers give spans back on.
 *
 * The input lays out an arena (up to four size classes, a bump area, a
 * region offset up to the largest one allowed, a region id; generations
 * from 1 or from a seed) and a return ring, then runs a script (enum fza_op
 * in fuzz_format.h): the owner allocates, bump-allocates, resets the bump
 * area, frees and reclaims; the receiver (the peer) gives spans back through
 * the API or writes return-ring slots and prod_tail itself; spans are
 * handed-out ones, stale ones, mutated ones (offset, length, generation,
 * region, flags) or made of input bytes; portal_arena_resolve and
 * portal_span_check/resolve get the same spans. In header mode the input
 * instead patches the arena header, and the owner re-attaches to it.
 *
 * A model of the allocator, written from arena.h and region-format.md
 * (6.4, 7.7, 7.9): the class layout, a LIFO free stack per class, a
 * generation per block, the bump cursor and epoch, and the order of the
 * span checks. Invariants:
 *
 *  - alloc, bump_alloc and free give exactly the model's result, span and
 *    address; every block or bump allocation lies inside the arena (ASan:
 *    the harness writes all of it);
 *  - a refused span changes no allocator state (arena_state_digest), and
 *    every counter of portal_arena_stats equals the model's;
 *  - reclaim takes exactly the slots between cons_tail before and after
 *    the call, judges each as the model does, and (ring untainted) takes
 *    min(max, published) of them; a quarantined return ring says so;
 *  - resolve and span_check/resolve give the documented code, and an
 *    address that lies inside the extent checked;
 *  - header mode: attach accepts or refuses with a documented code, and
 *    whatever it accepts hands out only memory inside the object.
 */
#include "fuzz/fuzz_format.h"
#include "fuzz/fuzz_util.h"

#include "arena/arena_internal.h"
#include "portal/arena.h"
#include "portal/ring.h"
#include "portal/span.h"

FZ_DEFINE_GLOBALS

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fz_init();
	return 0;
}

typedef unsigned __int128 u128;

#define MAXCLS 4u
#define MAXBLK (MAXCLS * 8u)
#define HIST 64u

enum verdict { V_BLOCK, V_BUMP, V_REGION, V_RANGE, V_FORGED, V_STALE, V_DOUBLE };

struct mcls {
	uint64_t off, end;
	uint32_t bs, count, first;
	uint32_t stack[8], top;
};

struct st {
	uint8_t *mem;
	size_t len;
	uint64_t roff;
	uint32_t rid;
	portal_arena_t *a;
	/* the model */
	uint32_t ncls, nblk;
	struct mcls c[MAXCLS];
	uint64_t blo, bhi, bump_off, bump_size, cursor;
	uint32_t epoch;
	bool in_use[MAXBLK];
	uint32_t gen[MAXBLK];
	struct portal_arena_stats st;
	struct portal_span hist[HIST];
	unsigned nhist;
	/* return ring */
	uint8_t *ring, *rsnap;
	size_t rlen;
	struct portal_ring_hdr *rh;
	uint32_t rcap;
	portal_ring_t *rr;     /* the owner's consumer handle */
	uint64_t pt;           /* prod_tail as the receiver wrote it plausibly */
	bool tainted;
	/* resolve */
	bool can_resolve;
	void *region_base;
};

static uint64_t ld(_Atomic uint64_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static void st64(_Atomic uint64_t *p, uint64_t v) { atomic_store_explicit(p, v, memory_order_relaxed); }

static void remember(struct st *s, const struct portal_span *sp)
{
	s->hist[s->nhist % HIST] = *sp;
	s->nhist++;
}

static void check_stats(struct st *s, const char *what)
{
	struct portal_arena_stats got;

	portal_arena_stats(s->a, &got);
	s->st.blocks_total = s->nblk;
	s->st.bump_used = s->cursor;
	s->st.bump_epoch = s->epoch;
#define SAME(f) FZ_CHECK(got.f == s->st.f, "%s: stats." #f " %llu, model %llu", what, \
			 (unsigned long long)got.f, (unsigned long long)s->st.f)
	SAME(allocs); SAME(frees); SAME(alloc_failed); SAME(bump_allocs); SAME(bump_failed);
	SAME(bump_resets); SAME(bump_acks); SAME(returned); SAME(refused_region);
	SAME(refused_range); SAME(refused_forged); SAME(refused_stale); SAME(refused_double);
	SAME(blocks_total); SAME(blocks_in_use); SAME(bump_used); SAME(bump_epoch);
#undef SAME
}

/* ---- the model's judgement of a span given back (arena.h, 7.7) ---- */

static enum verdict judge(const struct st *s, const struct portal_span *sp, uint32_t *blk)
{
	u128 rel, end;

	if (sp->region_id != s->rid)
		return V_REGION;
	if (sp->flags & ~PORTAL_SPAN_F_BUMP)
		return V_FORGED;
	if (sp->offset < s->roff)
		return V_RANGE;
	rel = sp->offset - s->roff;
	end = rel + sp->length;
	if (sp->flags & PORTAL_SPAN_F_BUMP) {
		if (!s->bump_size || rel < s->bump_off || end > (u128)s->bump_off + s->bump_size)
			return V_RANGE;
		if (sp->generation != s->epoch)
			return V_STALE;
		if (end - s->bump_off > s->cursor)
			return V_FORGED;
		return V_BUMP;
	}
	if (rel < s->blo || end > s->bhi)
		return V_RANGE;
	for (uint32_t i = 0; i < s->ncls; i++) {
		const struct mcls *c = &s->c[i];

		if (rel < c->off || rel >= c->end)
			continue;
		if ((rel - c->off) % c->bs || sp->length > c->bs)
			return V_FORGED;
		*blk = c->first + (uint32_t)((rel - c->off) / c->bs);
		if (!s->in_use[*blk])
			return V_DOUBLE;
		if (sp->generation != s->gen[*blk])
			return V_STALE;
		return V_BLOCK;
	}
	return V_FORGED; /* a gap between classes */
}

static int verdict_code(enum verdict v)
{
	switch (v) {
	case V_BLOCK: case V_BUMP: return 0;
	case V_REGION: return PORTAL_EXDEV;
	case V_RANGE: return PORTAL_ERANGE;
	case V_FORGED: return PORTAL_EFORGED;
	default: return PORTAL_ESTALE;
	}
}

/* Apply what the owner does with SP; returns the code it must give. */
static int model_free(struct st *s, const struct portal_span *sp)
{
	uint32_t blk = 0, i;
	enum verdict v = judge(s, sp, &blk);

	switch (v) {
	case V_BLOCK:
		for (i = 0; blk >= s->c[i].first + s->c[i].count; i++)
			;
		s->in_use[blk] = false;
		s->gen[blk] = s->gen[blk] + 1 ? s->gen[blk] + 1 : 1;
		s->c[i].stack[s->c[i].top++] = blk - s->c[i].first;
		s->st.frees++;
		s->st.blocks_in_use--;
		break;
	case V_BUMP:   s->st.bump_acks++; break;
	case V_REGION: s->st.refused_region++; break;
	case V_RANGE:  s->st.refused_range++; break;
	case V_FORGED: s->st.refused_forged++; break;
	case V_STALE:  s->st.refused_stale++; break;
	case V_DOUBLE: s->st.refused_double++; break;
	}
	return verdict_code(v);
}

/* ---- owner calls ---- */

static void op_alloc(struct st *s, size_t len)
{
	struct portal_span sp;
	void *p = NULL;
	int rc = portal_arena_alloc(s->a, len, &sp, &p), want = -ENOSPC;
	uint32_t first, i;

	FZ_TRACE("alloc(%zu): %d\n", len, rc);
	if (len == 0) {
		FZ_CHECK(rc == -EINVAL, "alloc(0): %d", rc);
		return;
	}
	for (first = 0; first < s->ncls && s->c[first].bs < len; first++)
		;
	if (first == s->ncls) {
		FZ_CHECK(rc == -EMSGSIZE, "alloc(%zu) over every class: %d", len, rc);
		return;
	}
	for (i = first; i < s->ncls && !s->c[i].top; i++)
		;
	if (i == s->ncls) {
		FZ_CHECK(rc == want, "alloc(%zu) with no free block: %d", len, rc);
		s->st.alloc_failed++;
		check_stats(s, "alloc");
		return;
	}
	FZ_CHECK(rc == 0, "alloc(%zu): %d, class %u has a free block", len, rc, i);
	{
		struct mcls *c = &s->c[i];
		uint32_t k = c->stack[--c->top], blk = c->first + k;
		uint64_t rel = c->off + (uint64_t)k * c->bs;

		FZ_CHECK(!s->in_use[blk], "alloc handed out block %u twice", blk);
		FZ_CHECK(sp.offset == s->roff + rel && sp.length == len && sp.region_id == s->rid &&
			 sp.flags == 0, "alloc: span (%llu, %u) is not block %u of class %u",
			 (unsigned long long)sp.offset, sp.length, k, i);
		FZ_CHECK(p == s->mem + rel, "alloc: address is not the block's");
		if (s->gen[blk])
			FZ_CHECK(sp.generation == s->gen[blk], "alloc: generation %u, model %u",
				 sp.generation, s->gen[blk]);
		FZ_CHECK(sp.generation != 0, "alloc: generation 0");
		s->gen[blk] = sp.generation;
		s->in_use[blk] = true;
		memset(p, 0xab, len); /* ASan: inside the arena */
	}
	s->st.allocs++;
	s->st.blocks_in_use++;
	remember(s, &sp);
	check_stats(s, "alloc");
}

static void op_bump(struct st *s, size_t len, size_t align)
{
	struct portal_span sp;
	void *p = NULL;
	int rc = portal_arena_bump_alloc(s->a, len, align, &sp, &p);
	uint64_t start, pad, left;

	FZ_TRACE("bump_alloc(%zu, %zu): %d\n", len, align, rc);
	if (len == 0 || (align && (align > PORTAL_ARENA_MAX_ALIGN || (align & (align - 1))))) {
		FZ_CHECK(rc == -EINVAL, "bump_alloc(%zu, %zu): %d", len, align, rc);
		return;
	}
	if (!align)
		align = 8;
	if (len > UINT32_MAX || len > s->bump_size) {
		FZ_CHECK(rc == -EMSGSIZE, "bump_alloc(%zu) over the area: %d", len, rc);
		return;
	}
	start = s->roff + s->bump_off + s->cursor;
	pad = (uint64_t)(-start) & (align - 1);
	left = s->bump_size - s->cursor;
	if (pad > left || len > left - pad) {
		FZ_CHECK(rc == -ENOSPC, "bump_alloc(%zu, %zu): %d, %llu left", len, align, rc,
			 (unsigned long long)left);
		s->st.bump_failed++;
		check_stats(s, "bump_alloc");
		return;
	}
	FZ_CHECK(rc == 0, "bump_alloc(%zu, %zu): %d", len, align, rc);
	FZ_CHECK(sp.offset == start + pad && sp.length == len && sp.generation == s->epoch &&
		 sp.region_id == s->rid && sp.flags == PORTAL_SPAN_F_BUMP,
		 "bump_alloc: span differs from the model's");
	FZ_CHECK(sp.offset % align == 0, "bump_alloc: not aligned");
	FZ_CHECK(p == s->mem + (start + pad - s->roff), "bump_alloc: address");
	memset(p, 0xcd, len);
	s->cursor += pad + len;
	s->st.bump_allocs++;
	remember(s, &sp);
	check_stats(s, "bump_alloc");
}

static void op_bump_reset(struct st *s)
{
	portal_arena_bump_reset(s->a);
	s->cursor = 0;
	s->epoch = s->epoch + 1 ? s->epoch + 1 : 1;
	s->st.bump_resets++;
	check_stats(s, "bump_reset");
}

/* A span chosen by the input: handed out before (maybe mutated), or raw. */
static void pick_span(struct st *s, struct fz *in, struct portal_span *sp)
{
	uint8_t how = fz_u8(in);

	memset(sp, 0, sizeof(*sp));
	if (how % 4 == 0 || !s->nhist) {
		uint8_t lsel = fz_u8(in), r = fz_u8(in);

		sp->offset = fz_value(in, s->roff + 256, s->roff + s->len, 64);
		switch (lsel % 4) {
		case 0:  sp->length = fz_u8(in); break;
		case 1:  sp->length = fz_u16(in); break;
		case 2:  sp->length = fz_u32(in); break;
		default: sp->length = UINT32_MAX - fz_u8(in); break;
		}
		sp->generation = fz_u32(in);
		sp->region_id = r % 3 == 0 ? s->rid : r % 3 == 1 ? s->rid + 1 : 0;
		sp->flags = r & 0x80 ? fz_u32(in) : (r >> 2) & 1;
		return;
	}
	*sp = s->hist[(s->nhist - 1 - fz_u8(in) % (s->nhist < HIST ? s->nhist : HIST)) % HIST];
	if (how % 4 >= 2) {
		uint8_t what = fz_u8(in), amt = fz_u8(in);

		switch (what % 10) {
		case 0: sp->offset += amt; break;
		case 1: sp->offset -= amt; break;
		case 2: sp->offset += 64u * amt; break;
		case 3: sp->length += 1u + amt; break;
		case 4: sp->length = 0; break;
		case 5: sp->generation += 1; break;
		case 6: sp->generation = 0; break;
		case 7: sp->region_id ^= 1u + amt; break;
		case 8: sp->flags ^= 1u << (amt % 32); break;
		default: sp->offset = UINT64_MAX - amt; break;
		}
	}
}

static void op_free(struct st *s, struct fz *in)
{
	struct portal_span sp;
	uint64_t before = arena_state_digest(s->a);
	int rc, want;

	pick_span(s, in, &sp);
	rc = portal_arena_free(s->a, &sp);
	want = model_free(s, &sp);
	FZ_TRACE("free(%llu, %u, g%u, r%u, f%u): %d\n", (unsigned long long)sp.offset, sp.length,
		 sp.generation, sp.region_id, sp.flags, rc);
	FZ_CHECK(rc == want, "free: %d (%s), model says %d", rc, portal_strerror(rc), want);
	if (rc || (sp.flags & PORTAL_SPAN_F_BUMP))
		FZ_CHECK(arena_state_digest(s->a) == before, "a refused span changed the allocator");
	check_stats(s, "free");
}

/* ---- the return ring ---- */

static void op_give(struct st *s, struct fz *in, unsigned n)
{
	struct portal_span sp[8];
	portal_ring_t *prod = NULL;
	int rc;

	for (unsigned i = 0; i < n; i++)
		pick_span(s, in, &sp[i]);
	if (ld(&s->rh->prod_tail) != s->pt)
		return; /* a receiver that forged its own tail has to heal first */
	if (portal_ring_attach(s->ring, s->rlen, PORTAL_ROLE_PRODUCER, &prod))
		return;
	if (n == 1) {
		rc = portal_arena_give_back(prod, &sp[0]);
		FZ_CHECK(rc == 0 || rc == -EAGAIN, "give_back: %d", rc);
	} else {
		rc = portal_arena_give_back_burst(prod, sp, n);
		FZ_CHECK(rc >= 0 && (unsigned)rc <= n, "give_back_burst(%u): %d", n, rc);
	}
	portal_ring_detach(prod);
	s->pt = ld(&s->rh->prod_tail);
	FZ_TRACE("give back %u: %d\n", n, rc);
}

static void op_raw_give(struct st *s, struct fz *in)
{
	struct portal_span sp;
	uint64_t trailer, ct = ld(&s->rh->cons_tail);
	uint8_t *slot;

	pick_span(s, in, &sp);
	trailer = fz_u64(in);
	if ((int64_t)(ct - s->pt) > 0 || s->pt - ct >= s->rcap)
		return;
	slot = s->ring + PORTAL_RING_HDR_SIZE + (size_t)(s->pt & (s->rcap - 1)) * 32;
	memcpy(slot, &sp, sizeof(sp));
	memcpy(slot + 24, &trailer, 8); /* ignored by the owner */
	s->pt++;
	st64(&s->rh->prod_tail, s->pt);
}

static void op_reclaim(struct st *s, unsigned max)
{
	uint64_t ct0 = ld(&s->rh->cons_tail), ct1;
	struct fz_ranges ok = { .n = 0 };
	bool was_quar;
	int rc;
	size_t at;

	if (!s->rr)
		return;
	if (ld(&s->rh->prod_tail) != s->pt)
		s->tainted = true;
	was_quar = portal_ring_quarantined(s->rr);
	memcpy(s->rsnap, s->ring, s->rlen);
	rc = portal_arena_reclaim(s->a, s->rr, max);
	ct1 = ld(&s->rh->cons_tail);
	FZ_TRACE("reclaim(%u): %d\n", max, rc);
	fz_allow(&ok, 264, 272); /* cons_tail */
	at = fz_diff(s->ring, s->rsnap, s->rlen, &ok);
	FZ_CHECK(at == SIZE_MAX, "reclaim wrote byte %zu of the return ring", at);
	if (was_quar) {
		/* Even max 0 reports the quarantine. */
		FZ_CHECK(rc == PORTAL_EPROTO && ct1 == ct0,
			 "reclaim(%u) on a quarantined ring: %d", max, rc);
		check_stats(s, "reclaim");
		return;
	}
	FZ_CHECK(rc == PORTAL_EPROTO || (rc >= 0 && (unsigned)rc <= max), "reclaim(%u): %d", max, rc);
	if (portal_ring_quarantined(s->rr))
		FZ_CHECK(s->tainted, "the return ring quarantined, but the receiver stayed plausible");
	if (rc < 0) {
		FZ_CHECK(ct1 == ct0, "reclaim failed but took spans");
		check_stats(s, "reclaim");
		return;
	}
	FZ_CHECK(ct1 - ct0 == (uint64_t)rc, "reclaim returned %d, cons_tail moved %llu", rc,
		 (unsigned long long)(ct1 - ct0));
	for (int i = 0; i < rc; i++) {
		struct portal_span sp;

		memcpy(&sp, s->rsnap + PORTAL_RING_HDR_SIZE + (size_t)((ct0 + i) & (s->rcap - 1)) * 32,
		       sizeof(sp));
		s->st.returned++;
		(void)model_free(s, &sp);
	}
	if (!s->tainted) {
		uint64_t avail = s->pt - ct0;

		FZ_CHECK((uint64_t)rc == (avail < max ? avail : max), "reclaim(%u): %d of %llu", max,
			 rc, (unsigned long long)avail);
	}
	check_stats(s, "reclaim");
}

static void op_heal(struct st *s)
{
	uint64_t ct = ld(&s->rh->cons_tail);
	int rc, want;

	if ((int64_t)(ct - s->pt) > 0)
		s->pt = ct; /* the owner took garbage past our tail: carry on from there */
	st64(&s->rh->prod_tail, s->pt);
	/* A handle that saw a forged tail may still hold it: start afresh. */
	if (s->rr && !s->tainted)
		return;
	portal_ring_detach(s->rr);
	s->rr = NULL;
	want = ld(&s->rh->prod_tail) - ct > s->rcap ? PORTAL_EPROTO : 0;
	rc = portal_ring_attach(s->ring, s->rlen, PORTAL_ROLE_CONSUMER, &s->rr);
	FZ_CHECK(rc == want, "return ring attach: %d, expected %d", rc, want);
	if (rc)
		s->rr = NULL;
	s->tainted = false;
}

/* ---- receivers: resolve, and the span functions ---- */

static int ref_span_check(const struct portal_span *sp, uint32_t rid, uint64_t lo, uint64_t hi)
{
	if (sp->flags & ~PORTAL_SPAN_F_MASK)
		return -EINVAL;
	if (sp->region_id != rid)
		return PORTAL_EXDEV;
	if (lo > hi || sp->offset < lo || (u128)sp->offset + sp->length > hi)
		return PORTAL_ERANGE;
	return 0;
}

static void op_resolve(struct st *s, struct fz *in)
{
	struct portal_object_info info = { .kind = PORTAL_OBJ_ARENA };
	struct portal_span sp;
	uint8_t mut;
	void *p = NULL;
	int rc, want;

	pick_span(s, in, &sp);
	mut = fz_u8(in);
	info.offset = s->roff;
	info.size = s->len;
	info.addr = s->mem;
	switch (mut % 5) {
	case 1: info.kind = PORTAL_OBJ_RING; break;
	case 2: info.size = 255; break;
	case 3: info.size = s->len - 64u * (mut / 5 % (s->len / 64)); break;
	case 4: info.offset = UINT64_MAX - (mut & 7); break;
	default: break;
	}
	if (!s->can_resolve && mut % 5 != 1 && mut % 5 != 2 && mut % 5 != 4)
		return; /* no base pointer for this region offset */
	rc = portal_arena_resolve(&info, s->rid, s->can_resolve ? s->region_base : s->mem, &sp, &p);
	if (info.kind != PORTAL_OBJ_ARENA || info.size < 256 || info.offset > UINT64_MAX - info.size)
		want = -EINVAL;
	else
		want = ref_span_check(&sp, s->rid, info.offset + 256, info.offset + info.size);
	FZ_TRACE("resolve(%llu, %u): %d\n", (unsigned long long)sp.offset, sp.length, rc);
	FZ_CHECK(rc == want, "resolve: %d, reference says %d", rc, want);
	if (rc == 0) {
		FZ_CHECK((uint8_t *)p == s->mem + (sp.offset - s->roff), "resolve: address");
		memset(p, 0xef, sp.length); /* ASan: inside the arena, past its header */
		FZ_CHECK((uint8_t *)p >= s->mem + 256, "resolve: into the header");
	}
}

static void op_span(struct st *s, struct fz *in)
{
	static uint8_t buf[512];
	struct portal_span sp;
	uint64_t lo, hi;
	uint32_t rid;
	void *p = NULL;
	int rc, want;

	pick_span(s, in, &sp);
	lo = fz_value(in, s->roff, sp.offset, 64);
	hi = fz_value(in, s->roff + s->len, sp.offset + sp.length, 64);
	rid = fz_u8(in) & 1 ? s->rid : sp.region_id;
	rc = portal_span_check(&sp, rid, lo, hi);
	want = ref_span_check(&sp, rid, lo, hi);
	FZ_CHECK(rc == want, "span_check: %d, reference says %d", rc, want);
	/* resolve against a real 512-byte "region" */
	rc = portal_span_resolve(&sp, buf, sizeof(buf), rid, &p);
	want = ref_span_check(&sp, rid, 0, sizeof(buf));
	FZ_CHECK(rc == want, "span_resolve: %d, reference says %d", rc, want);
	if (rc == 0) {
		FZ_CHECK((uint8_t *)p == buf + sp.offset, "span_resolve: address");
		memset(p, 1, sp.length);
	}
}

/* ------------------------------------------------------------------ */
/* Header mode: the owner re-attaches to a header the input rewrote      */
/* ------------------------------------------------------------------ */

static void header_mode(struct st *s, struct fz *in, uint64_t seed)
{
	portal_arena_t *a = NULL;
	static const size_t sizes[] = { 1, 64, 100, 128, 256, 512, 1000, 4096, 1 << 20 };
	struct portal_span spans[256];
	unsigned n = 0, patches = 0;
	int rc;

	while (fz_more(in) && patches++ < 64) {
		uint8_t k = fz_u8(in);

		if (k & 1) {
			uint8_t at = fz_u8(in), v = fz_u8(in);

			s->mem[at] = v;
		} else {
			uint64_t w, *at = (uint64_t *)(void *)(s->mem + 8 * (fz_u8(in) % 32));

			memcpy(&w, at, 8);
			w = fz_value(in, w, s->len, 64);
			memcpy(at, &w, 8);
		}
	}
	rc = arena_attach_seeded(s->mem, s->len, s->roff, s->rid, seed, &a);
	FZ_TRACE("header mode: %u patches, attach %d\n", patches, rc);
	FZ_CHECK(fz_rc_in(rc, 3, 0, PORTAL_EPROTO, -EINVAL), "attach: %d", rc);
	if (!patches)
		FZ_CHECK(rc == 0, "attach refused the header init wrote: %d", rc);
	if (rc)
		return;
	/* Whatever was accepted: every class and the bump area are inside. */
	for (uint32_t i = 0; i < a->nclasses; i++)
		FZ_CHECK(a->cls[i].off >= 256 && a->cls[i].end <= s->len && a->cls[i].off < a->cls[i].end,
			 "accepted class %u outside the object", i);
	FZ_CHECK(a->bump_size == 0 || (a->bump_off >= 256 && a->bump_off + a->bump_size <= s->len),
		 "accepted bump area outside the object");
	for (unsigned t = 0; n < 256 && t < 1024; t++) {
		void *p = NULL;

		rc = portal_arena_alloc(a, sizes[t % 9], &spans[n], &p);
		if (rc == 0) {
			FZ_CHECK(spans[n].offset >= s->roff + 256 &&
				 spans[n].offset - s->roff + spans[n].length <= s->len,
				 "block outside the object");
			memset(p, 0x11, spans[n].length);
			n++;
		} else {
			FZ_CHECK(rc == -ENOSPC || rc == -EMSGSIZE, "alloc: %d", rc);
		}
		rc = portal_arena_bump_alloc(a, sizes[t % 9], 64, &spans[n], &p);
		if (rc == 0) {
			memset(p, 0x22, spans[n].length);
			n++;
		}
	}
	for (unsigned i = 0; i < n; i++)
		FZ_CHECK(portal_arena_free(a, &spans[i]) == 0, "free of a span just handed out");
	portal_arena_detach(a);
}

/* ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	uint8_t s0 = fz_u8(&in);
	struct portal_arena_params p = { 0 };
	struct portal_ring_params rp = { .mode = PORTAL_RING_SPSC, .slot_size = 32 };
	struct st *s = calloc(1, sizeof(*s));
	uint32_t bs = 0;
	uint64_t off = 256, seed;
	int rc;

	p.nclasses = fz_u8(&in) % (MAXCLS + 1);
	for (uint32_t i = 0; i < p.nclasses; i++) {
		bs += 64u * (1 + fz_u8(&in) % 4);
		p.cls[i].block_size = bs;
		p.cls[i].count = 1 + fz_u8(&in) % 8;
	}
	p.bump_size = fz_u16(&in) % 2048;
	rp.capacity = 2u << (fz_u8(&in) % 4);
	s->rid = fz_u32(&in);
	if (!s->rid)
		s->rid = 1;
	seed = fz_u64(&in);
	if (p.nclasses == 0 && p.bump_size == 0)
		p.bump_size = 64;
	s->len = portal_arena_memsize(&p);
	FZ_CHECK(s->len, "memsize refused valid params");

	/* The model's layout (region-format.md 6.4). */
	s->ncls = p.nclasses;
	for (uint32_t i = 0; i < p.nclasses; i++) {
		struct mcls *c = &s->c[i];

		c->off = off;
		c->bs = p.cls[i].block_size;
		c->count = p.cls[i].count;
		c->end = off + (uint64_t)c->bs * c->count;
		c->first = s->nblk;
		for (uint32_t k = 0; k < c->count; k++)
			c->stack[k] = c->count - 1 - k;
		c->top = c->count;
		s->nblk += c->count;
		off = c->end;
	}
	s->blo = s->ncls ? s->c[0].off : 0;
	s->bhi = s->ncls ? s->c[s->ncls - 1].end : 0;
	s->bump_off = off;
	s->bump_size = (p.bump_size + 63) & ~UINT64_C(63);
	FZ_CHECK(s->len == off + s->bump_size, "memsize %zu, layout says %llu", s->len,
		 (unsigned long long)(off + s->bump_size));

	switch ((s0 >> 1) & 3) {
	case 0:  s->roff = 4096; break;
	case 1:  s->roff = 12288 + 128u * (seed & 15); break;
	case 2:  s->roff = UINT64_C(1) << 40; break;
	default: s->roff = UINT64_MAX - s->len; break;   /* the largest allowed */
	}
	s->mem = fz_alloc(s->len);
	rc = portal_arena_init(s->mem, s->len, UINT64_MAX - s->len + 1, s->rid, &p, 1, NULL);
	FZ_CHECK(rc == -EINVAL, "init with region offset + size overflowing: %d", rc);
	rc = portal_arena_init(s->mem, s->len - 1, s->roff, s->rid, &p, 1, NULL);
	FZ_CHECK(rc == -EINVAL, "init into too little memory: %d", rc);
	rc = portal_arena_init(s->mem, s->len, s->roff, s->rid, &p, 1, NULL);
	FZ_CHECK(rc == 0, "init: %d", rc);
	if (s0 & 8) {
		header_mode(s, &in, seed);
		goto out;
	}
	if (s0 & 1)
		rc = arena_attach_seeded(s->mem, s->len, s->roff, s->rid, seed, &s->a);
	else
		rc = portal_arena_init(s->mem, s->len, s->roff, s->rid, &p, 1, &s->a);
	FZ_CHECK(rc == 0, "owner handle: %d", rc);
	for (uint32_t b = 0; b < s->nblk; b++)
		s->gen[b] = s0 & 1 ? 0 : 1; /* 0: unknown until handed out */
	portal_arena_stats(s->a, &s->st);
	s->epoch = s->st.bump_epoch;
	FZ_CHECK((s0 & 1) || s->epoch == 1, "bump epoch after init: %u", s->epoch);
	check_stats(s, "start");
	if (s->roff <= (uintptr_t)s->mem) {
		s->can_resolve = true;
		s->region_base = (void *)((uintptr_t)s->mem - s->roff);
	}

	s->rcap = rp.capacity;
	s->rlen = portal_ring_memsize(&rp);
	s->ring = fz_alloc(s->rlen);
	s->rsnap = malloc(s->rlen);
	s->rh = (struct portal_ring_hdr *)(void *)s->ring;
	FZ_CHECK(portal_ring_init(s->ring, s->rlen, &rp) == 0, "return ring init");
	FZ_CHECK(portal_ring_attach(s->ring, s->rlen, PORTAL_ROLE_CONSUMER, &s->rr) == 0,
		 "return ring attach");
	FZ_TRACE("arena: %u classes, %u blocks, bump %llu, region offset %llu, ring %u\n", s->ncls,
		 s->nblk, (unsigned long long)s->bump_size, (unsigned long long)s->roff, s->rcap);

	for (unsigned steps = 0; fz_more(&in) && steps < 4096; steps++) {
		unsigned op = fz_u8(&in) % FZA_NOPS;

		switch (op) {
		case FZA_ALLOC:
			op_alloc(s, fz_u16(&in) % (bs + 65));
			break;
		case FZA_BUMP: {
			static const size_t aligns[8] = { 0, 1, 2, 8, 64, 4096, 8192, 3 };
			size_t len = fz_u16(&in) % (s->bump_size + 65);

			op_bump(s, len, aligns[fz_u8(&in) % 8]);
			break;
		}
		case FZA_BUMP_RESET:
			op_bump_reset(s);
			break;
		case FZA_FREE:
			op_free(s, &in);
			break;
		case FZA_GIVE:
			op_give(s, &in, 1 + fz_u8(&in) % 8);
			break;
		case FZA_RAW_GIVE:
			op_raw_give(s, &in);
			break;
		case FZA_RECLAIM:
			op_reclaim(s, fz_u8(&in) % 40);
			break;
		case FZA_FORGE:
			st64(&s->rh->prod_tail, fz_value(&in, s->pt, ld(&s->rh->cons_tail), s->rcap));
			break;
		case FZA_HEAL:
			op_heal(s);
			break;
		case FZA_RESOLVE:
			op_resolve(s, &in);
			break;
		case FZA_SPAN:
			op_span(s, &in);
			break;
		}
	}
	portal_ring_detach(s->rr);
	portal_arena_detach(s->a);
	free(s->rsnap);
	free(s->ring);
out:
	free(s->mem);
	free(s);
	return 0;
}
