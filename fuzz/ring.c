/* SPDX-License-Identifier: MIT */
/*
 * ring.c - libFuzzer target: a descriptor ring against a hostile peer.
 *
 * The input picks a mode (SPSC, MPSC, MPMC), a slot size, a capacity, where
 * the 64-bit positions start (0, 2^32, 2^63, just below 2^64), and which
 * side is honest (a handle of this library); the other side is played by
 * the script (fuzz_format.h, enum fzq_op). Peer operations are either
 * plausible (what an honest peer could do: move k elements, claim and
 * publish in two steps on a multi-writer side) or forged (any value into a
 * field the peer owns, bytes into slots), and are interleaved with the
 * honest side's calls: bursts through the generic and the explicit
 * sp/mp/sc/mc calls, single elements, count, calls the role or mode must
 * refuse, re-attach. A multi-writer honest side also has trusted
 * co-claimants that claim and publish whole.
 *
 * The model knows the values the peer's fields would hold had it stayed
 * plausible. A handle is "tainted" once it made a call while a field it
 * reads (the peer's tail) held anything else. Invariants:
 *
 *  always  every result is documented for the call; a call writes only
 *          what it may (a producer: the slots of the positions it enqueued
 *          and its own head/tail; a consumer: its own head/tail), never the
 *          peer's fields; its own tail moves by exactly the count returned;
 *          a consumer's elements are the slots of its positions, in order;
 *          PORTAL_EPROTO writes nothing, and after it every call returns
 *          PORTAL_EPROTO and portal_ring_quarantined() says so; attach
 *          refuses exactly when the tails are more than a ring apart;
 *          ASan: nothing outside the ring memory (allocated to the byte)
 *          or outside the caller's buffers (allocated to the element) is
 *          touched; a hang is a libFuzzer timeout.
 *  untainted  never PORTAL_EPROTO; a burst moves exactly
 *          min(n, room or elements available): nothing is lost, nothing is
 *          delivered twice or out of order, nothing unconsumed is
 *          overwritten; count is exact.
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

static const uint64_t bases[FZ_NBASES] = {
	0, (UINT64_C(1) << 32) - 3, (UINT64_C(1) << 63) - 5, UINT64_MAX - 7,
};

#define OFF_PROD_HEAD 128u
#define OFF_PROD_TAIL 136u
#define OFF_CONS_HEAD 256u
#define OFF_CONS_TAIL 264u

struct st {
	uint8_t *mem;
	size_t len;
	struct portal_ring_hdr *h;
	uint8_t *slots;
	uint32_t mode, slot, cap;
	bool hprod;            /* the honest side produces */
	bool own_multi;        /* honest side claims with a CAS (MP producer / MC consumer) */
	bool peer_multi;       /* the peer side has several writers */
	portal_ring_t *r;      /* NULL: the last attach was refused */
	bool quar;             /* r returned PORTAL_EPROTO */
	bool tainted;          /* r made a call while the peer's tail was forged */
	bool must_detect;      /* our own claim head is out of range: the next claim fails */
	uint64_t legit_head;   /* the peer's fields, as a plausible peer has them */
	uint64_t legit_tail;
	uint64_t nonce;
	uint8_t *snap;
};

static uint64_t ld(_Atomic uint64_t *p)
{
	return atomic_load_explicit(p, memory_order_relaxed);
}

static void st64(_Atomic uint64_t *p, uint64_t v)
{
	atomic_store_explicit(p, v, memory_order_relaxed);
}

static _Atomic uint64_t *peer_tail(struct st *s) { return s->hprod ? &s->h->cons_tail : &s->h->prod_tail; }
static _Atomic uint64_t *peer_head(struct st *s) { return s->hprod ? &s->h->cons_head : &s->h->prod_head; }
static _Atomic uint64_t *own_tail(struct st *s) { return s->hprod ? &s->h->prod_tail : &s->h->cons_tail; }
static _Atomic uint64_t *own_head(struct st *s) { return s->hprod ? &s->h->prod_head : &s->h->cons_head; }

/* The honest side's position: its claim head when multi, else its tail. */
static uint64_t own_pos(struct st *s)
{
	return ld(s->own_multi ? own_head(s) : own_tail(s));
}

static uint8_t *slot_at(struct st *s, uint64_t pos)
{
	return s->slots + (size_t)(pos & (s->cap - 1)) * s->slot;
}

static void fill_slot(struct st *s, uint64_t pos, uint64_t who)
{
	fz_fill(slot_at(s, pos), s->slot, s->nonce ^ fz_mix(pos) ^ who);
}

static void before_call(struct st *s)
{
	if (ld(peer_tail(s)) != s->legit_tail)
		s->tainted = true;
	if (s->own_multi && ld(own_head(s)) != ld(own_tail(s)))
		s->tainted = true;
	memcpy(s->snap, s->mem, s->len);
}

static void check_unchanged(struct st *s, const char *what)
{
	size_t at = fz_diff(s->mem, s->snap, s->len, NULL);

	FZ_CHECK(at == SIZE_MAX, "%s wrote ring byte %zu", what, at);
}

/* Common handling of a data call's result. Returns true when RC is a
 * count to check further. */
static bool judge(struct st *s, int rc, const char *what)
{
	if (s->quar) {
		FZ_CHECK(rc == PORTAL_EPROTO, "%s on a quarantined handle: %d", what, rc);
		check_unchanged(s, what);
		return false;
	}
	if (rc == PORTAL_EPROTO) {
		FZ_CHECK(s->tainted, "%s: PORTAL_EPROTO but the peer stayed plausible", what);
		check_unchanged(s, what);
		s->quar = true;
		FZ_CHECK(portal_ring_quarantined(s->r), "%s: EPROTO but not quarantined", what);
		return false;
	}
	FZ_CHECK(!portal_ring_quarantined(s->r), "%s: quarantined without EPROTO", what);
	return true;
}

static int64_t clamp0(int64_t v)
{
	return v < 0 ? 0 : v;
}

static void check_produced(struct st *s, int rc, unsigned n, uint64_t p0, const uint8_t *buf)
{
	struct fz_ranges ok = { .n = 0 };
	size_t at;
	unsigned k;

	if (!judge(s, rc, "enqueue"))
		return;
	FZ_CHECK(rc >= 0 && (unsigned)rc <= n, "enqueue(%u): %d", n, rc);
	k = (unsigned)rc;
	FZ_CHECK(ld(&s->h->prod_tail) == p0 + k, "prod_tail moved by %lld, enqueued %u",
		 (long long)(ld(&s->h->prod_tail) - p0), k);
	FZ_CHECK(!s->own_multi || ld(&s->h->prod_head) == p0 + k, "prod_head not at the tail");
	fz_allow(&ok, OFF_PROD_TAIL, OFF_PROD_TAIL + 8);
	if (s->own_multi)
		fz_allow(&ok, OFF_PROD_HEAD, OFF_PROD_HEAD + 8);
	if (k)
		fz_allow_ring(&ok, PORTAL_RING_HDR_SIZE, (uint64_t)s->cap * s->slot, p0 * s->slot,
			      (uint64_t)k * s->slot);
	at = fz_diff(s->mem, s->snap, s->len, &ok);
	FZ_CHECK(at == SIZE_MAX, "enqueue of %u at %llu wrote ring byte %zu", k,
		 (unsigned long long)p0, at);
	for (unsigned i = 0; i < k; i++)
		FZ_CHECK(!memcmp(slot_at(s, p0 + i), buf + (size_t)i * s->slot, s->slot),
			 "element %u is not in the slot of its position", i);
	if (!s->tainted) {
		int64_t room = clamp0((int64_t)(s->legit_tail + s->cap - p0));

		FZ_CHECK(k == (room < (int64_t)n ? (unsigned)room : n),
			 "enqueue(%u) moved %u, room is %lld", n, k, (long long)room);
	}
}

static void check_consumed(struct st *s, int rc, unsigned n, uint64_t p0, const uint8_t *out)
{
	struct fz_ranges ok = { .n = 0 };
	size_t at;
	unsigned k;

	if (!judge(s, rc, "dequeue"))
		return;
	FZ_CHECK(rc >= 0 && (unsigned)rc <= n, "dequeue(%u): %d", n, rc);
	k = (unsigned)rc;
	FZ_CHECK(ld(&s->h->cons_tail) == p0 + k, "cons_tail moved by %lld, dequeued %u",
		 (long long)(ld(&s->h->cons_tail) - p0), k);
	FZ_CHECK(!s->own_multi || ld(&s->h->cons_head) == p0 + k, "cons_head not at the tail");
	fz_allow(&ok, OFF_CONS_TAIL, OFF_CONS_TAIL + 8);
	if (s->own_multi)
		fz_allow(&ok, OFF_CONS_HEAD, OFF_CONS_HEAD + 8);
	at = fz_diff(s->mem, s->snap, s->len, &ok);
	FZ_CHECK(at == SIZE_MAX, "dequeue wrote ring byte %zu", at);
	for (unsigned i = 0; i < k; i++) {
		size_t so = PORTAL_RING_HDR_SIZE + (size_t)((p0 + i) & (s->cap - 1)) * s->slot;

		FZ_CHECK(!memcmp(out + (size_t)i * s->slot, s->snap + so, s->slot),
			 "element %u is not the slot of position %llu", i,
			 (unsigned long long)(p0 + i));
	}
	if (!s->tainted) {
		int64_t avail = clamp0((int64_t)(s->legit_tail - p0));

		FZ_CHECK(k == (avail < (int64_t)n ? (unsigned)avail : n),
			 "dequeue(%u) moved %u, %lld published", n, k, (long long)avail);
	}
}

/* ---- the honest side ---- */

/* A single-element call's result as a count: 0 -> 1, -EAGAIN -> 0; any
 * other non-negative value is undocumented (-1000 fails the checks). */
static int one_result(int rc)
{
	return rc == 0 ? 1 : rc == -EAGAIN ? 0 : rc > 0 ? -1000 : rc;
}

static void op_burst(struct st *s, unsigned n, unsigned variant, bool one)
{
	uint8_t *buf = malloc((size_t)(n ? n : 1) * s->slot);
	uint64_t p0;
	int rc;

	before_call(s);
	p0 = own_pos(s);
	if (s->hprod) {
		for (unsigned i = 0; i < n; i++)
			fz_fill(buf + (size_t)i * s->slot, s->slot, s->nonce ^ fz_mix(p0 + i) ^ 1);
		if (one) {
			rc = one_result(portal_ring_enqueue(s->r, buf));
		} else if (variant & 1) {
			rc = s->own_multi ? portal_ring_enqueue_burst_mp(s->r, buf, n)
					  : portal_ring_enqueue_burst_sp(s->r, buf, n);
		} else {
			rc = portal_ring_enqueue_burst(s->r, buf, n);
		}
		FZ_TRACE("enqueue(%u)%s at %llu: %d\n", n, one ? " one" : "",
			 (unsigned long long)p0, rc);
		check_produced(s, rc, n, p0, buf);
	} else {
		if (one) {
			rc = one_result(portal_ring_dequeue(s->r, buf));
		} else if (variant & 1) {
			rc = s->own_multi ? portal_ring_dequeue_burst_mc(s->r, buf, n)
					  : portal_ring_dequeue_burst_sc(s->r, buf, n);
		} else {
			rc = portal_ring_dequeue_burst(s->r, buf, n);
		}
		FZ_TRACE("dequeue(%u)%s at %llu: %d\n", n, one ? " one" : "",
			 (unsigned long long)p0, rc);
		check_consumed(s, rc, n, p0, buf);
	}
	/* A claim head out of range must be caught before the claim: it
	 * would make the in-order publish wait for ever. */
	if (s->must_detect)
		FZ_CHECK(rc == PORTAL_EPROTO, "claim with our head out of range: %d", rc);
	s->must_detect = false;
	free(buf);
}

static void op_count(struct st *s)
{
	int rc;

	before_call(s);
	rc = portal_ring_count(s->r);
	FZ_TRACE("count: %d\n", rc);
	check_unchanged(s, "count");
	if (s->hprod) {
		FZ_CHECK(rc == (s->quar ? PORTAL_EPROTO : -EINVAL), "producer count: %d", rc);
		return;
	}
	if (!judge(s, rc, "count"))
		return;
	FZ_CHECK(rc >= 0 && (uint32_t)rc <= s->cap, "count: %d", rc);
	if (!s->tainted)
		FZ_CHECK(rc == clamp0((int64_t)(s->legit_tail - own_pos(s))), "count %d, %lld published",
			 rc, (long long)(s->legit_tail - own_pos(s)));
}

static void op_wrong(struct st *s, unsigned which)
{
	uint8_t *el = malloc(s->slot);
	int rc;

	memset(el, 0, s->slot);
	before_call(s);
	switch (which % 3) {
	case 0: /* the other role's call */
		rc = s->hprod ? portal_ring_dequeue_burst(s->r, el, 1)
			      : portal_ring_enqueue_burst(s->r, el, 1);
		break;
	case 1: /* the explicit call of the other multiplicity */
		if (s->hprod)
			rc = s->own_multi ? portal_ring_enqueue_burst_sp(s->r, el, 1)
					  : portal_ring_enqueue_burst_mp(s->r, el, 1);
		else
			rc = s->own_multi ? portal_ring_dequeue_burst_sc(s->r, el, 1)
					  : portal_ring_dequeue_burst_mc(s->r, el, 1);
		break;
	default: /* the other role's single-element call */
		rc = s->hprod ? portal_ring_dequeue(s->r, el) : portal_ring_enqueue(s->r, el);
		break;
	}
	FZ_TRACE("wrong call %u: %d\n", which % 3, rc);
	FZ_CHECK(rc == (s->quar ? PORTAL_EPROTO : -EINVAL), "refused call %u: %d", which % 3, rc);
	check_unchanged(s, "refused call");
	free(el);
}

static void op_reattach(struct st *s)
{
	uint64_t prod = ld(&s->h->prod_tail), cons = ld(&s->h->cons_tail);
	int want = prod - cons > s->cap ? PORTAL_EPROTO : 0, rc;

	portal_ring_detach(s->r);
	s->r = NULL;
	memcpy(s->snap, s->mem, s->len);
	rc = portal_ring_attach(s->mem, s->len, s->hprod ? PORTAL_ROLE_PRODUCER : PORTAL_ROLE_CONSUMER,
				&s->r);
	FZ_TRACE("reattach: %d (prod %llu cons %llu)\n", rc, (unsigned long long)prod,
		 (unsigned long long)cons);
	FZ_CHECK(rc == want, "attach: %d, expected %d (tails %llu, %llu)", rc, want,
		 (unsigned long long)prod, (unsigned long long)cons);
	check_unchanged(s, "attach");
	if (rc) {
		s->r = NULL;
		return;
	}
	FZ_CHECK(portal_ring_slot_size(s->r) == s->slot && portal_ring_capacity(s->r) == s->cap &&
		 !portal_ring_quarantined(s->r), "fresh handle");
	s->quar = false;
	s->tainted = ld(peer_tail(s)) != s->legit_tail;
	s->must_detect = s->own_multi && ld(own_head(s)) != ld(own_tail(s));
}

/* ---- the peer ---- */

/* A plausible peer moves K elements: consumes (honest producer) or
 * produces (honest consumer), claiming and publishing at once. */
static void peer_good(struct st *s, unsigned k)
{
	uint64_t head = s->peer_multi ? s->legit_head : s->legit_tail;
	int64_t lim;

	if (s->hprod) {
		lim = (int64_t)(ld(&s->h->prod_tail) - head);
	} else {
		if ((int64_t)(ld(&s->h->cons_tail) - s->legit_tail) > 0)
			return; /* the consumer ran past us: only a heal helps */
		lim = (int64_t)(ld(&s->h->cons_tail) + s->cap - head);
		if (lim > 0 && k > (uint64_t)lim)
			k = (unsigned)lim;
		for (unsigned i = 0; lim > 0 && i < k; i++)
			fill_slot(s, head + i, 2);
	}
	if (lim <= 0)
		return;
	if (k > (uint64_t)lim)
		k = (unsigned)lim;
	if (s->peer_multi) {
		/* Publish what was in flight, then the new ones. */
		for (uint64_t p = s->legit_tail; !s->hprod && p != head; p++)
			fill_slot(s, p, 2);
		s->legit_head = head + k;
		st64(peer_head(s), s->legit_head);
	}
	s->legit_tail = head + k;
	st64(peer_tail(s), s->legit_tail);
	FZ_TRACE("peer moves %u, tail %llu\n", k, (unsigned long long)s->legit_tail);
}

static void peer_claim(struct st *s, unsigned k)
{
	int64_t lim;

	if (!s->peer_multi)
		return;
	if (s->hprod)
		lim = (int64_t)(ld(&s->h->prod_tail) - s->legit_head);
	else
		lim = (int64_t)(ld(&s->h->cons_tail) + s->cap - s->legit_head);
	if (lim <= 0)
		return;
	if (k > (uint64_t)lim)
		k = (unsigned)lim;
	s->legit_head += k;
	st64(peer_head(s), s->legit_head);
	FZ_TRACE("peer claims %u, head %llu\n", k, (unsigned long long)s->legit_head);
}

static void peer_publish(struct st *s)
{
	if (!s->peer_multi)
		return;
	for (uint64_t p = s->legit_tail; !s->hprod && p != s->legit_head; p++)
		fill_slot(s, p, 2);
	s->legit_tail = s->legit_head;
	st64(peer_tail(s), s->legit_tail);
	FZ_TRACE("peer publishes, tail %llu\n", (unsigned long long)s->legit_tail);
}

static void peer_heal(struct st *s)
{
	if (s->hprod) {
		uint64_t pt = ld(&s->h->prod_tail);

		/* A producer that believed a forged tail may have run ahead:
		 * the consumer skips what it can no longer read. */
		if ((int64_t)(pt - s->legit_tail) > (int64_t)s->cap)
			s->legit_tail = pt - s->cap;
	} else {
		uint64_t ct = ld(&s->h->cons_tail);

		/* A consumer that believed a forged tail took garbage past
		 * ours: carry on from where it is. */
		if ((int64_t)(ct - s->legit_tail) > 0)
			s->legit_tail = ct;
	}
	if (s->peer_multi && (int64_t)(s->legit_head - s->legit_tail) < 0)
		s->legit_head = s->legit_tail;
	st64(peer_tail(s), s->legit_tail);
	st64(peer_head(s), s->legit_head);
	FZ_TRACE("peer heals: head %llu tail %llu\n", (unsigned long long)s->legit_head,
		 (unsigned long long)s->legit_tail);
}

/* A trusted co-claimant of the honest side moves K elements whole. */
static void co_claim(struct st *s, unsigned k)
{
	uint64_t pos;
	int64_t lim;

	if (!s->own_multi || ld(own_head(s)) != ld(own_tail(s)))
		return;
	pos = ld(own_head(s));
	lim = s->hprod ? (int64_t)(s->legit_tail + s->cap - pos) : (int64_t)(s->legit_tail - pos);
	if (lim <= 0)
		return;
	if (k > (uint64_t)lim)
		k = (unsigned)lim;
	for (unsigned i = 0; s->hprod && i < k; i++)
		fill_slot(s, pos + i, 3);
	st64(own_head(s), pos + k);
	st64(own_tail(s), pos + k);
	FZ_TRACE("co-claimant moves %u\n", k);
}

/* A co-claimant (same trust domain) leaves our claim head out of range of
 * our tail, or puts it back. Only values the claim check must catch: one in
 * range but ahead would be a claimant that stalled, which the others wait
 * for by design. */
static void co_forge(struct st *s, unsigned how, unsigned d)
{
	uint64_t t = ld(own_tail(s));

	if (!s->own_multi)
		return;
	switch (how % 3) {
	case 0:  st64(own_head(s), t - 1 - d); break;
	case 1:  st64(own_head(s), t + s->cap + 1 + d); break;
	default: st64(own_head(s), t); break;
	}
	s->must_detect = how % 3 != 2 && s->r && !s->quar;
	FZ_TRACE("co-claimant sets our head %s\n", how % 3 == 2 ? "back" : "out of range");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	uint8_t s0 = fz_u8(&in), s1 = fz_u8(&in), s2 = fz_u8(&in);
	struct portal_ring_params p = { 0 };
	struct st s = { 0 };
	uint64_t base = bases[s2 % FZ_NBASES];
	int rc;

	p.mode = 1 + (s0 & 3) % 3;
	p.slot_size = 8u << (s1 % 6);
	p.capacity = 2u << ((s1 >> 3) % 6);
	s.mode = p.mode;
	s.slot = p.slot_size;
	s.cap = p.capacity;
	s.hprod = !(s0 & 4);
	s.own_multi = s.hprod ? s.mode != PORTAL_RING_SPSC : s.mode == PORTAL_RING_MPMC;
	s.peer_multi = s.hprod ? s.mode == PORTAL_RING_MPMC : s.mode != PORTAL_RING_SPSC;
	s.len = portal_ring_memsize(&p);
	FZ_CHECK(s.len == PORTAL_RING_HDR_SIZE + (size_t)s.cap * s.slot, "memsize %zu", s.len);
	s.mem = fz_alloc(s.len);
	s.snap = malloc(s.len);
	s.h = (struct portal_ring_hdr *)(void *)s.mem;
	s.slots = s.mem + PORTAL_RING_HDR_SIZE;
	s.nonce = fz_mix(base ^ s1);
	rc = portal_ring_init(s.mem, s.len, &p);
	FZ_CHECK(rc == 0, "init: %d", rc);
	/* A ring that has been running for a while. */
	st64(&s.h->prod_head, base);
	st64(&s.h->prod_tail, base);
	st64(&s.h->cons_head, base);
	st64(&s.h->cons_tail, base);
	s.legit_head = s.legit_tail = base;
	rc = portal_ring_attach(s.mem, s.len, s.hprod ? PORTAL_ROLE_PRODUCER : PORTAL_ROLE_CONSUMER,
				&s.r);
	FZ_CHECK(rc == 0, "attach: %d", rc);
	FZ_TRACE("ring: mode %u slot %u cap %u base %llu honest %s\n", s.mode, s.slot, s.cap,
		 (unsigned long long)base, s.hprod ? "producer" : "consumer");

	for (unsigned steps = 0; fz_more(&in) && steps < 4096; steps++) {
		unsigned op = fz_u8(&in) % FZQ_NOPS, a, b;

		switch (op) {
		case FZQ_BURST:
			a = fz_u8(&in) % (2 * s.cap + 2);
			b = fz_u8(&in);
			if (s.r)
				op_burst(&s, a, b, false);
			break;
		case FZQ_ONE:
			if (s.r)
				op_burst(&s, 1, 0, true);
			break;
		case FZQ_COUNT:
			if (s.r)
				op_count(&s);
			break;
		case FZQ_REATTACH:
			op_reattach(&s);
			break;
		case FZQ_WRONG:
			a = fz_u8(&in);
			if (s.r)
				op_wrong(&s, a);
			break;
		case FZQ_P_GOOD:
			peer_good(&s, fz_u8(&in) % (s.cap + 1));
			break;
		case FZQ_P_CLAIM:
			peer_claim(&s, fz_u8(&in) % (s.cap + 1));
			break;
		case FZQ_P_PUBLISH:
			peer_publish(&s);
			break;
		case FZQ_P_FORGE: {
			bool head = fz_u8(&in) & 1;
			uint64_t v = fz_value(&in, head ? s.legit_head : s.legit_tail, own_pos(&s),
					      s.cap);

			st64(head ? peer_head(&s) : peer_tail(&s), v);
			FZ_TRACE("peer forges %s = %llu\n", head ? "head" : "tail",
				 (unsigned long long)v);
			break;
		}
		case FZQ_P_SCRIBBLE:
			a = fz_u8(&in) % s.cap;
			b = fz_u8(&in) % s.slot;
			s.slots[(size_t)a * s.slot + b] = fz_u8(&in);
			break;
		case FZQ_P_HEAL:
			peer_heal(&s);
			break;
		case FZQ_CO:
			co_claim(&s, fz_u8(&in) % (s.cap + 1));
			break;
		case FZQ_CO_FORGE:
			a = fz_u8(&in);
			co_forge(&s, a, fz_u8(&in));
			break;
		}
	}
	portal_ring_detach(s.r);
	free(s.snap);
	free(s.mem);
	return 0;
}
