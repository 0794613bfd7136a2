/* SPDX-License-Identifier: MIT */
/*
 * bcast.c - libFuzzer target: a broadcast ring against hostile peers.
 *
 * The input picks HOLD or LAP, the slot size, the capacity, the number of
 * subscriber lines, where positions start, and which side is honest: the
 * producer (the peers are the subscribers: they join, half-join, leave,
 * read, and forge their cursor and active words) or one subscriber (the
 * peer is the producer: it publishes, leaves a slot half-written, forges
 * prod_tail and slot sequence words, scribbles payloads). The script is
 * enum fzb_op in fuzz_format.h.
 *
 * Invariants:
 *
 *  producer  publish returns 0 or (HOLD only) -EAGAIN, never quarantines,
 *            writes only the slot it publishes and prod_tail, never a
 *            subscriber line; -EAGAIN only when a subscribed line with a
 *            cursor in range is a full ring behind; and in HOLD mode it
 *            never overwrites a slot that a subscriber still has to read,
 *            for every line that only ever behaved (joined at prod_tail,
 *            moved its cursor forward), whatever the other lines wrote.
 *  subscriber  read writes only its own cursor; it delivers a message only
 *            from the slot whose sequence says it holds the cursor's
 *            position, and moves by one; -EOVERFLOW (LAP only) moves it
 *            forward by exactly *lost; PORTAL_EPROTO writes nothing and
 *            sticks. While the producer stayed plausible (untainted): never
 *            PORTAL_EPROTO, -EAGAIN exactly when nothing new was published,
 *            every intact message in order, -EOVERFLOW only when it really
 *            was lapped (and then not past prod_tail), ready agrees.
 *  both      ASan guards the ring memory and the message buffers.
 */
#include "fuzz/fuzz_format.h"
#include "fuzz/fuzz_util.h"

#include "portal/ring.h"

FZ_DEFINE_GLOBALS

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fz_init();
	return 0;
}

static const uint64_t bases[3] = { 0, 1000, UINT64_C(1) << 40 };

#define MAXCAP 32u
#define MAXSUBS 4u

struct st {
	uint8_t *mem, *snap, *slots;
	size_t len;
	struct portal_bcast_hdr *h;
	struct portal_bcast_sub *subs;
	uint32_t mode, slot, cap, stride, max_subs, hsub;
	bool hprod, lap;
	portal_bcast_t *b;
	bool quar, tainted;
	bool evicted;          /* honest subscriber: its line was freed by an eviction */
	uint64_t nonce;
	/* peer producer (honest subscriber) */
	uint64_t pt;
	bool valid[MAXCAP];
	uint64_t spos[MAXCAP];
	bool inflight;
	/* peer subscribers (honest producer) */
	bool honest_line[MAXSUBS];
	uint64_t base;         /* first position published in this run */
};

static uint64_t ld(_Atomic uint64_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static void st64(_Atomic uint64_t *p, uint64_t v) { atomic_store_explicit(p, v, memory_order_relaxed); }

/* Line J's state (bits 0-31 of its state word) and a store of a new state
 * that keeps the generation (bits 32-63). */
static uint32_t lstate(struct st *s, uint32_t j) { return (uint32_t)ld(&s->subs[j].state); }

static void set_lstate(struct st *s, uint32_t j, uint32_t v)
{
	st64(&s->subs[j].state, (ld(&s->subs[j].state) & ~(uint64_t)UINT32_MAX) | v);
}

static uint32_t idx(struct st *s, uint64_t pos) { return (uint32_t)(pos & (s->cap - 1)); }

static _Atomic uint64_t *seq_of(struct st *s, uint32_t i)
{
	return (_Atomic uint64_t *)(void *)(s->slots + (size_t)i * s->stride);
}

static size_t slot_off(struct st *s, uint32_t i)
{
	return (size_t)(s->slots - s->mem) + (size_t)i * s->stride;
}

static size_t line_off(uint32_t j)
{
	return PORTAL_BCAST_HDR_SIZE + (size_t)j * sizeof(struct portal_bcast_sub);
}

static void check_diff(struct st *s, const struct fz_ranges *ok, const char *what)
{
	size_t at = fz_diff(s->mem, s->snap, s->len, ok);

	FZ_CHECK(at == SIZE_MAX, "%s wrote byte %zu of the ring", what, at);
}

/* ------------------------------------------------------------------ */
/* Honest subscriber, peer producer                                     */
/* ------------------------------------------------------------------ */

static uint64_t model_seq(struct st *s, uint32_t i)
{
	if (s->inflight && i == idx(s, s->pt))
		return 0;
	return s->valid[i] ? s->spos[i] + 1 : 0;
}

static bool intact(struct st *s, uint64_t c)
{
	uint32_t i = idx(s, c);

	return s->valid[i] && s->spos[i] == c && !(s->inflight && idx(s, s->pt) == i);
}

static bool producer_forged(struct st *s)
{
	if (ld(&s->h->prod_tail) != s->pt)
		return true;
	for (uint32_t i = 0; i < s->cap; i++)
		if (ld(seq_of(s, i)) != model_seq(s, i))
			return true;
	return false;
}

static uint64_t my_cursor(struct st *s)
{
	return ld(&s->subs[s->hsub].cursor);
}

static void sub_before(struct st *s)
{
	if (producer_forged(s))
		s->tainted = true;
	memcpy(s->snap, s->mem, s->len);
}

static bool sub_judge(struct st *s, int rc, const char *what)
{
	if (s->quar) {
		FZ_CHECK(rc == PORTAL_EPROTO, "%s on a quarantined handle: %d", what, rc);
		check_diff(s, NULL, what);
		return false;
	}
	if (s->evicted) {
		FZ_CHECK(rc == -EOWNERDEAD, "%s on an evicted handle: %d", what, rc);
		check_diff(s, NULL, what);
		return false;
	}
	if (rc == PORTAL_EPROTO) {
		FZ_CHECK(s->tainted, "%s: PORTAL_EPROTO but the producer stayed plausible", what);
		check_diff(s, NULL, what);
		s->quar = true;
		FZ_CHECK(portal_bcast_quarantined(s->b), "%s: EPROTO but not quarantined", what);
		return false;
	}
	FZ_CHECK(!portal_bcast_quarantined(s->b), "%s: quarantined without EPROTO", what);
	return true;
}

static void sub_read(struct st *s)
{
	uint8_t *msg = malloc(s->slot);
	uint64_t c0, c1, lost = 0, sq;
	struct fz_ranges ok = { .n = 0 };
	int rc;

	sub_before(s);
	c0 = my_cursor(s);
	rc = portal_bcast_read(s->b, msg, &lost);
	c1 = my_cursor(s);
	FZ_TRACE("read at %llu: %d (lost %llu)\n", (unsigned long long)c0, rc,
		 (unsigned long long)lost);
	if (!sub_judge(s, rc, "read"))
		goto out;
	FZ_CHECK(rc == 0 || rc == -EAGAIN || (rc == -EOVERFLOW && s->lap), "read: %d", rc);
	fz_allow(&ok, line_off(s->hsub) + 8, line_off(s->hsub) + 16);
	check_diff(s, &ok, "read");
	if (rc == 0) {
		memcpy(&sq, s->snap + slot_off(s, idx(s, c0)), 8);
		FZ_CHECK(c1 == c0 + 1, "read: cursor moved by %lld", (long long)(c1 - c0));
		FZ_CHECK(sq == c0 + 1, "read: delivered the slot holding %llu at cursor %llu",
			 (unsigned long long)(sq - 1), (unsigned long long)c0);
		FZ_CHECK(!memcmp(msg, s->snap + slot_off(s, idx(s, c0)) + 8, s->slot),
			 "read: message differs from the slot");
	} else if (rc == -EAGAIN) {
		FZ_CHECK(c1 == c0, "read: -EAGAIN moved the cursor");
	} else {
		FZ_CHECK(lost >= 1 && c1 == c0 + lost, "read: lapped, lost %llu, moved %lld",
			 (unsigned long long)lost, (long long)(c1 - c0));
	}
	if (s->tainted)
		goto out;
	if (c0 == s->pt) {
		FZ_CHECK(rc == -EAGAIN, "read: %d at the producer's position", rc);
	} else if (s->pt - c0 <= s->cap && intact(s, c0)) {
		FZ_CHECK(rc == 0, "read: %d, the message at %llu is intact", rc, (unsigned long long)c0);
	} else {
		FZ_CHECK(s->lap, "HOLD: the message at %llu was overwritten", (unsigned long long)c0);
		FZ_CHECK(rc == -EOVERFLOW && c1 <= s->pt, "read: %d (cursor %llu, prod %llu) when lapped",
			 rc, (unsigned long long)c1, (unsigned long long)s->pt);
	}
out:
	free(msg);
}

static void sub_ready(struct st *s)
{
	int rc;

	sub_before(s);
	rc = portal_bcast_ready(s->b);
	check_diff(s, NULL, "ready");
	FZ_CHECK(rc == 0 || rc == 1, "ready: %d", rc);
	if (s->quar || s->evicted)
		FZ_CHECK(rc == 1, "ready on a quarantined or evicted handle: %d", rc);
	else if (!s->tainted)
		FZ_CHECK(rc == (my_cursor(s) != s->pt), "ready: %d", rc);
}

static void sub_reattach(struct st *s)
{
	int rc;

	uint64_t w = ld(&s->subs[s->hsub].state);

	memcpy(s->snap, s->mem, s->len);
	portal_bcast_detach(s->b);
	s->b = NULL;
	if (s->evicted) {
		/* Our line is someone else's now, or free: detach leaves it. */
		check_diff(s, NULL, "detach after eviction");
		if ((uint32_t)w != PORTAL_BCAST_SUB_FREE) {
			rc = portal_bcast_attach(s->mem, s->len, (int)s->hsub, &s->b);
			FZ_CHECK(rc == -EBUSY && !s->b, "attach to a line held by another: %d", rc);
			set_lstate(s, s->hsub, PORTAL_BCAST_SUB_FREE); /* the other one leaves */
		}
	} else {
		FZ_CHECK(lstate(s, s->hsub) == PORTAL_BCAST_SUB_FREE &&
			 ld(&s->subs[s->hsub].state) >> 32 == w >> 32,
			 "detach: the line is not free, or its generation changed");
	}
	w = ld(&s->subs[s->hsub].state);
	rc = portal_bcast_attach_owner(s->mem, s->len, (int)s->hsub, s->nonce, &s->b);
	FZ_TRACE("reattach: %d\n", rc);
	FZ_CHECK(rc == 0, "subscriber attach: %d", rc);
	FZ_CHECK(lstate(s, s->hsub) == PORTAL_BCAST_SUB_ACTIVE &&
		 my_cursor(s) == ld(&s->h->prod_tail) &&
		 ld(&s->subs[s->hsub].owner) == s->nonce,
		 "a new subscriber starts at prod_tail, subscribed, with its tag");
	FZ_CHECK(ld(&s->subs[s->hsub].state) >> 32 == (uint32_t)((w >> 32) + 1),
		 "a join starts a new generation");
	s->quar = false;
	s->evicted = false;
	s->tainted = producer_forged(s);
}

/* The peer producer may publish position pt (HOLD: the honest cursor in
 * range must not be a ring behind). */
static bool may_write(struct st *s)
{
	uint64_t c = my_cursor(s);

	if (s->lap || !s->b || lstate(s, s->hsub) != PORTAL_BCAST_SUB_ACTIVE)
		return true;
	return (int64_t)(s->pt - c) < 0 || s->pt - c < s->cap;
}

static void p_finish(struct st *s)
{
	uint32_t i = idx(s, s->pt);

	fz_fill(s->slots + (size_t)i * s->stride + 8, s->slot, s->nonce ^ fz_mix(s->pt));
	st64(seq_of(s, i), s->pt + 1);
	s->valid[i] = true;
	s->spos[i] = s->pt;
	s->pt++;
	s->inflight = false;
	st64(&s->h->prod_tail, s->pt);
}

static void p_begin(struct st *s)
{
	uint32_t i = idx(s, s->pt);

	if (s->inflight || !may_write(s))
		return;
	st64(seq_of(s, i), 0);
	s->valid[i] = false;
	s->inflight = true;
	/* Half of the new payload. */
	fz_fill(s->slots + (size_t)i * s->stride + 8, s->slot / 2, s->nonce ^ fz_mix(s->pt));
}

static void p_publish(struct st *s, unsigned k)
{
	if (s->inflight)
		p_finish(s);
	for (unsigned n = 0; n < k && may_write(s); n++) {
		st64(seq_of(s, idx(s, s->pt)), 0);
		p_finish(s);
	}
	FZ_TRACE("peer publishes up to %llu\n", (unsigned long long)s->pt);
}

static void p_heal(struct st *s)
{
	st64(&s->h->prod_tail, s->pt);
	for (uint32_t i = 0; i < s->cap; i++)
		st64(seq_of(s, i), model_seq(s, i));
}

/* ------------------------------------------------------------------ */
/* Honest producer, peer subscribers                                    */
/* ------------------------------------------------------------------ */

static void pub_call(struct st *s)
{
	uint8_t *msg = malloc(s->slot);
	uint64_t p0 = ld(&s->h->prod_tail);
	uint32_t i = idx(s, p0);
	struct fz_ranges ok = { .n = 0 };
	uint32_t active[MAXSUBS];
	uint64_t cur[MAXSUBS];
	bool full = false;
	int rc;

	fz_fill(msg, s->slot, s->nonce ^ fz_mix(p0) ^ 9);
	for (uint32_t j = 0; j < s->max_subs; j++) {
		active[j] = lstate(s, j);
		cur[j] = ld(&s->subs[j].cursor);
		/* In range (not ahead, at most a ring behind) and a ring behind. */
		if (active[j] == 1 && cur[j] <= p0 && p0 - cur[j] == s->cap)
			full = true;
	}
	memcpy(s->snap, s->mem, s->len);
	rc = portal_bcast_publish(s->b, msg);
	FZ_TRACE("publish at %llu: %d\n", (unsigned long long)p0, rc);
	FZ_CHECK(rc == 0 || (rc == -EAGAIN && !s->lap), "publish: %d", rc);
	if (rc == -EAGAIN) {
		check_diff(s, NULL, "publish");
		FZ_CHECK(full, "publish: -EAGAIN, but no subscribed line is a ring behind");
		goto out;
	}
	fz_allow(&ok, slot_off(s, i), slot_off(s, i) + s->stride);
	fz_allow(&ok, offsetof(struct portal_bcast_hdr, prod_tail),
		 offsetof(struct portal_bcast_hdr, prod_tail) + 8);
	check_diff(s, &ok, "publish");
	FZ_CHECK(ld(seq_of(s, i)) == p0 + 1 && ld(&s->h->prod_tail) == p0 + 1,
		 "publish: slot sequence or prod_tail");
	FZ_CHECK(!memcmp(s->slots + (size_t)i * s->stride + 8, msg, s->slot), "publish: payload");
	for (uint32_t j = 0; !s->lap && j < s->max_subs; j++)
		if (s->honest_line[j] && active[j] == 1 && cur[j] <= p0 && p0 - cur[j] <= s->cap)
			FZ_CHECK(p0 - cur[j] < s->cap,
				 "HOLD: overwrote position %llu, unread by well-behaved line %u at %llu",
				 (unsigned long long)(p0 - s->cap), j, (unsigned long long)cur[j]);
out:
	free(msg);
}

static void pub_wrong(struct st *s)
{
	uint8_t *msg = malloc(s->slot);
	int rc;

	memcpy(s->snap, s->mem, s->len);
	rc = portal_bcast_read(s->b, msg, NULL);
	FZ_CHECK(rc == -EINVAL, "read on the producer: %d", rc);
	check_diff(s, NULL, "refused call");
	free(msg);
}

static void pub_reattach(struct st *s)
{
	int rc;

	portal_bcast_detach(s->b);
	s->b = NULL;
	memcpy(s->snap, s->mem, s->len);
	rc = portal_bcast_attach(s->mem, s->len, -1, &s->b);
	FZ_CHECK(rc == 0, "producer attach: %d", rc);
	check_diff(s, NULL, "producer attach");
	/* A new producer scans every line before it publishes: what counts is
	 * that a line is in range now and behaves from now on. */
	for (uint32_t j = 0; j < s->max_subs; j++) {
		uint64_t pt = ld(&s->h->prod_tail), c = ld(&s->subs[j].cursor);

		s->honest_line[j] = lstate(s, j) != 1 || (c <= pt && pt - c <= s->cap);
	}
}

static void line_read(struct st *s, uint32_t j, unsigned k)
{
	uint64_t pt = ld(&s->h->prod_tail), c = ld(&s->subs[j].cursor);

	if (lstate(s, j) != 1 || c > pt)
		return;
	if (k > pt - c)
		k = (unsigned)(pt - c);
	/* Positions before base were never published here: nothing to check. */
	for (unsigned n = 0; n < k; n++, c++)
		if (!s->lap && s->honest_line[j] && c >= s->base)
			FZ_CHECK(ld(seq_of(s, idx(s, c))) == c + 1,
				 "HOLD: line %u finds position %llu overwritten", j,
				 (unsigned long long)c);
	st64(&s->subs[j].cursor, c);
}

static void line_join(struct st *s, uint32_t j, unsigned how)
{
	uint32_t a = lstate(s, j);

	switch (how % 3) {
	case 0: /* join, or finish joining */
		if (a != 0 && a != 2)
			return;
		if (a == 0)
			st64(&s->subs[j].state, ld(&s->subs[j].state) + (UINT64_C(1) << 32));
		st64(&s->subs[j].owner, 100 + j);
		st64(&s->subs[j].cursor, ld(&s->h->prod_tail));
		set_lstate(s, j, 1);
		s->honest_line[j] = true;
		break;
	case 1: /* half-join: claimed, not subscribed yet (its tag not stored) */
		if (a != 0)
			return;
		st64(&s->subs[j].state, ((ld(&s->subs[j].state) >> 32) + 1) << 32 | 2);
		st64(&s->subs[j].cursor, ld(&s->h->prod_tail));
		break;
	default:
		set_lstate(s, j, 0);
		break;
	}
}

static void line_forge(struct st *s, struct fz *in, uint32_t j, bool active)
{
	uint64_t pt = ld(&s->h->prod_tail), c = ld(&s->subs[j].cursor);

	if (active) {
		uint32_t v = fz_u8(in) % 4;

		if (v == 1 && c != pt)
			s->honest_line[j] = false;
		else if (v == 1)
			s->honest_line[j] = true;
		set_lstate(s, j, v);
	} else {
		uint64_t v = fz_value(in, c, pt, s->cap);

		/* Moving forward, not past the producer, is what a reader does. */
		if (!(lstate(s, j) == 1 && v >= c && v <= pt))
			s->honest_line[j] = false;
		st64(&s->subs[j].cursor, v);
	}
}

static void lines_heal(struct st *s)
{
	for (uint32_t j = 0; j < s->max_subs; j++)
		if (!s->honest_line[j])
			set_lstate(s, j, 0);
}

/* ------------------------------------------------------------------ */
/* Eviction                                                             */
/* ------------------------------------------------------------------ */

/* The honest side evicts line J under the line's own tag (TAGSEL 0),
 * another tag (1) or PORTAL_BCAST_OWNER_ANY (2). Only the state word of a
 * line that is held under that tag changes, to free with its generation. */
static void evict_call(struct st *s, uint32_t j, unsigned tagsel)
{
	uint64_t w = ld(&s->subs[j].state), owner = ld(&s->subs[j].owner);
	uint64_t tag = tagsel == 0 ? owner : tagsel == 1 ? owner + 1 : PORTAL_BCAST_OWNER_ANY;
	struct fz_ranges ok = { .n = 0 };
	int rc, want;

	if (!s->hprod && j == s->hsub)
		want = -EINVAL;
	else if ((uint32_t)w == PORTAL_BCAST_SUB_FREE || (tag != PORTAL_BCAST_OWNER_ANY && owner != tag))
		want = 0;
	else
		want = 1;
	memcpy(s->snap, s->mem, s->len);
	rc = portal_bcast_evict(s->b, j, tag);
	FZ_TRACE("evict line %u (state %#llx, tag %llu): %d\n", j, (unsigned long long)w,
		 (unsigned long long)tag, rc);
	FZ_CHECK(rc == want, "evict line %u: %d, want %d", j, rc, want);
	if (rc == 1) {
		FZ_CHECK(ld(&s->subs[j].state) == (w & ~(uint64_t)UINT32_MAX),
			 "evict: state %#llx from %#llx", (unsigned long long)ld(&s->subs[j].state),
			 (unsigned long long)w);
		fz_allow(&ok, line_off(j), line_off(j) + 8);
	}
	check_diff(s, &ok, "evict");
}

/* Someone else evicts the honest subscriber's line (HOW 0), and maybe a
 * new subscriber takes it (1): from then on its handle reads -EOWNERDEAD. */
static void sub_evicted(struct st *s, unsigned how)
{
	_Atomic uint64_t *w = &s->subs[s->hsub].state;

	if (how == 0) {
		set_lstate(s, s->hsub, PORTAL_BCAST_SUB_FREE);
	} else {
		st64(w, ((ld(w) >> 32) + 1) << 32 | PORTAL_BCAST_SUB_ACTIVE);
		st64(&s->subs[s->hsub].owner, 77);
		st64(&s->subs[s->hsub].cursor, ld(&s->h->prod_tail));
	}
	s->evicted = true;
	FZ_TRACE("the honest subscriber's line is evicted%s\n", how ? " and re-joined" : "");
}

/* ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	uint8_t s0 = fz_u8(&in), s1 = fz_u8(&in), s2 = fz_u8(&in);
	struct portal_bcast_params p = { 0 };
	struct st *s = calloc(1, sizeof(*s));
	uint64_t base = bases[((s0 >> 2) & 3) % 3];
	int rc;

	s->lap = s0 & 1;
	s->hprod = !(s0 & 2);
	s->mode = s->lap ? PORTAL_BCAST_LAP : PORTAL_BCAST_HOLD;
	s->slot = 8u * (1 + s1 % 8);
	s->cap = 2u << ((s1 >> 3) % 5);
	s->max_subs = 1 + s2 % MAXSUBS;
	s->hsub = (s2 >> 2) % s->max_subs;
	s->stride = 8 + s->slot;
	p.mode = s->mode;
	p.slot_size = s->slot;
	p.capacity = s->cap;
	p.max_subs = s->max_subs;
	s->len = portal_bcast_memsize(&p);
	FZ_CHECK(s->len == 256 + 128u * s->max_subs + (size_t)s->cap * s->stride, "memsize %zu",
		 s->len);
	s->mem = fz_alloc(s->len);
	s->snap = malloc(s->len);
	s->h = (struct portal_bcast_hdr *)(void *)s->mem;
	s->subs = (struct portal_bcast_sub *)(void *)(s->mem + PORTAL_BCAST_HDR_SIZE);
	s->slots = s->mem + PORTAL_BCAST_HDR_SIZE + 128u * s->max_subs;
	s->nonce = fz_mix(base ^ s1 ^ s2);
	rc = portal_bcast_init(s->mem, s->len, &p);
	FZ_CHECK(rc == 0, "init: %d", rc);
	st64(&s->h->prod_tail, base);
	s->pt = base;
	s->base = base;
	for (uint32_t j = 0; j < MAXSUBS; j++)
		s->honest_line[j] = true;
	rc = portal_bcast_attach(s->mem, s->len, s->hprod ? -1 : (int)s->hsub, &s->b);
	FZ_CHECK(rc == 0, "attach: %d", rc);
	FZ_TRACE("bcast: %s slot %u cap %u subs %u base %llu honest %s\n", s->lap ? "LAP" : "HOLD",
		 s->slot, s->cap, s->max_subs, (unsigned long long)base,
		 s->hprod ? "producer" : "subscriber");

	for (unsigned steps = 0; fz_more(&in) && steps < 4096; steps++) {
		unsigned op = fz_u8(&in) % FZB_NOPS;
		uint8_t a, b;

		switch (op) {
		case FZB_CALL:
			s->hprod ? pub_call(s) : sub_read(s);
			break;
		case FZB_READY:
			if (!s->hprod) {
				sub_ready(s);
				break;
			}
			a = fz_u8(&in);
			if (a & 1)
				pub_wrong(s);
			else
				evict_call(s, (a >> 1) % s->max_subs, (a >> 4) % 3);
			break;
		case FZB_REATTACH:
			s->hprod ? pub_reattach(s) : sub_reattach(s);
			break;
		case FZB_P_GOOD:
			a = fz_u8(&in);
			if (s->hprod) {
				b = fz_u8(&in);
				line_read(s, a % s->max_subs, b % (s->cap + 1));
			} else {
				p_publish(s, a % (2 * s->cap + 1));
			}
			break;
		case FZB_P_BEGIN:
			if (!s->hprod)
				p_begin(s);
			break;
		case FZB_P_END:
			if (!s->hprod && s->inflight)
				p_finish(s);
			break;
		case FZB_P_JOIN:
			a = fz_u8(&in);
			b = fz_u8(&in);
			if (s->hprod)
				line_join(s, a % s->max_subs, b);
			else if (a % s->max_subs == s->hsub && b % 3 < 2)
				sub_evicted(s, b % 3);
			else if (a % s->max_subs == s->hsub)
				evict_call(s, s->hsub, 0);
			else if (b % 6 < 3)
				line_join(s, a % s->max_subs, b);
			else
				evict_call(s, a % s->max_subs, b % 6 - 3);
			break;
		case FZB_P_FORGE:
			a = fz_u8(&in);
			if (s->hprod) {
				line_forge(s, &in, (a >> 1) % s->max_subs, a & 1);
			} else if (a & 1) {
				uint32_t i = (a >> 1) % s->cap;

				st64(seq_of(s, i), fz_value(&in, model_seq(s, i), my_cursor(s) + 1, s->cap));
			} else {
				st64(&s->h->prod_tail, fz_value(&in, s->pt, my_cursor(s), s->cap));
			}
			break;
		case FZB_P_PAYLOAD:
			a = fz_u8(&in);
			b = fz_u8(&in);
			s->slots[(size_t)(a % s->cap) * s->stride + 8 + b % s->slot] = fz_u8(&in);
			break;
		case FZB_P_HEAL:
			s->hprod ? lines_heal(s) : p_heal(s);
			break;
		}
	}
	portal_bcast_detach(s->b);
	free(s->snap);
	free(s->mem);
	free(s);
	return 0;
}
