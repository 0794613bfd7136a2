/* SPDX-License-Identifier: MIT */
/*
 * peer_hostile.c - the hostile-peer scenarios' common machinery (see
 * hostile.h) and the descriptor-ring scenarios:
 *
 *   ring_cons / mpmc_cons  honest consumer; the hostile producer writes
 *                          prod_tail, prod_head and slot contents
 *   ring_prod / mpmc_prod  honest producer; the hostile consumer writes
 *                          cons_tail and cons_head
 */
#include <errno.h>
#include <sanitizer/asan_interface.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portal/ring.h"
#include "stress/hostile.h"

/* ------------------------------------------------------------------ */
/* Lockstep, tallies, guards                                           */
/* ------------------------------------------------------------------ */

int turn_begin(struct peer *p, struct lockstep *ls)
{
	struct stress_backoff b = { 0 };

	/* Acquire: the other side's scribble (or its calls) happen before
	 * our turn; pairs with the release in turn_end. */
	while (atomic_load_explicit(&p->ctl->turn, memory_order_acquire) != ls->my) {
		if (atomic_load_explicit(&p->ctl->abort, memory_order_relaxed))
			return STRESS_EXIT_ABORTED;
		if (stress_now() > p->deadline) {
			peer_log(p, "lockstep: turn %llu never came",
				 (unsigned long long)ls->my);
			return STRESS_EXIT_TIMEOUT;
		}
		stress_backoff(&b);
	}
	return 0;
}

void turn_end(struct peer *p, struct lockstep *ls)
{
	ls->my += 2;
	/* Release: what we did this turn, then the turn; pairs with the
	 * acquire in turn_begin. */
	atomic_store_explicit(&p->ctl->turn, ls->my - 1, memory_order_release);
}

void honest_init(struct honest *h, struct peer *p)
{
	memset(h, 0, sizeof(*h));
	h->p = p;
}

void h_stop(struct honest *h)
{
	double dt = stress_now() - h->call_t0;

	h->calls++;
	if (dt > h->slowest)
		h->slowest = dt;
	if (dt > HOSTILE_SLOW_CALL)
		h_fail(h, __LINE__, "a call took %.3fs", dt);
}

void h_fail(struct honest *h, int line, const char *fmt, ...)
{
	char buf[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	h->p->res->errors++;
	if (h->p->res->errors <= 20)
		peer_log(h->p, "CHECK FAILED (line %d): %s", line, buf);
}

void honest_report(struct honest *h, const char *extra_name, uint64_t extra)
{
	struct stress_result *r = h->p->res;

	r->messages = h->calls;
	r->extra[0] = h->calls;
	r->extra[1] = h->quarantines;
	r->extra[2] = h->attach_refused;
	r->extra[3] = h->must;
	r->extra[4] = h->empty;
	r->extra[5] = (uint64_t)(h->slowest * 1e6);
	r->extra[6] = extra;
	r->extra[7] = PEER_ASAN;
	printf("honest %s: calls=%llu EPROTO(quarantined)=%llu (random phase %llu) "
	       "attach_EPROTO=%llu must_detect=%llu empty_or_full(0/-EAGAIN)=%llu "
	       "EOVERFLOW=%llu noise_delivered=%llu %s=%llu slowest_call=%.0fus asan=%s\n",
	       h->p->kind, (unsigned long long)h->calls, (unsigned long long)h->quarantines,
	       (unsigned long long)h->random_quarantines, (unsigned long long)h->attach_refused,
	       (unsigned long long)h->must, (unsigned long long)h->empty,
	       (unsigned long long)h->overflow, (unsigned long long)h->garbage,
	       extra_name ? extra_name : "-", (unsigned long long)extra, h->slowest * 1e6,
	       PEER_ASAN ? "on" : "off");
}

double hostile_random_seconds(void)
{
	const char *env = getenv("PORTAL_STRESS_HOSTILE_SECONDS");
	double secs = env ? strtod(env, NULL) : 0;

	return secs > 0 ? secs : HOSTILE_RANDOM_SECONDS;
}

bool honest_more(struct honest *h)
{
	if (h->random_end == 0)
		h->random_end = stress_now() + hostile_random_seconds();
	if (atomic_load_explicit(&h->p->ctl->abort, memory_order_relaxed))
		return false;
	return h->calls < h->p->count && ((h->calls & 63) || stress_now() < h->random_end);
}

int honest_finish(struct honest *h)
{
	struct stress_backoff b = { 0 };

	/* Release: pairs with the hostile side's acquire in hostile_stop. */
	atomic_store_explicit(&h->p->ctl->stop, 1, memory_order_release);
	while (!atomic_load_explicit(&h->p->ctl->scratch[HOSTILE_DONE_SLOT],
				     memory_order_acquire)) {
		if (atomic_load_explicit(&h->p->ctl->abort, memory_order_relaxed))
			return STRESS_EXIT_ABORTED;
		if (stress_now() > h->p->deadline)
			return STRESS_EXIT_TIMEOUT;
		stress_backoff(&b);
	}
	return 0;
}

bool hostile_stop(struct peer *p)
{
	return atomic_load_explicit(&p->ctl->stop, memory_order_acquire) ||
	       atomic_load_explicit(&p->ctl->abort, memory_order_relaxed) ||
	       stress_now() > p->deadline;
}

uint64_t hostile_flip(_Atomic uint64_t *word, uint64_t good, uint64_t bad)
{
	/* Relaxed: the point is to race the honest side's single load, not to
	 * publish anything; the final GOOD is published by whatever release
	 * store the caller makes next (or by the heal). */
	for (unsigned i = 0; i < HOSTILE_FLIPS; i++) {
		atomic_store_explicit(word, bad, memory_order_relaxed);
		atomic_store_explicit(word, good, memory_order_relaxed);
	}
	return 2 * HOSTILE_FLIPS;
}

void hostile_done(struct peer *p)
{
	/* Release: the healed fields, then the flag; pairs with
	 * honest_finish. */
	atomic_store_explicit(&p->ctl->scratch[HOSTILE_DONE_SLOT], 1, memory_order_release);
}

void honest_guard(struct honest *h, const struct portal_object_info *keep, unsigned n)
{
	uint8_t *base = portal_region_base(h->p->reg);
	size_t size = portal_region_size(h->p->reg);

	(void)base, (void)size, (void)keep, (void)n;
	ASAN_POISON_MEMORY_REGION(base, size);
	for (unsigned i = 0; i < n; i++)
		ASAN_UNPOISON_MEMORY_REGION(keep[i].addr, (size_t)keep[i].size);
	ASAN_UNPOISON_MEMORY_REGION(h->p->ctl, sizeof(*h->p->ctl));
}

void honest_unguard(struct honest *h)
{
	(void)h;
	ASAN_UNPOISON_MEMORY_REGION(portal_region_base(h->p->reg), portal_region_size(h->p->reg));
}

/* ------------------------------------------------------------------ */
/* Descriptor rings: the hostile side's raw access                      */
/* ------------------------------------------------------------------ */

#define HOSTILE_ID 7u /* producer id the hostile producer stamps with */

struct hring {
	struct portal_ring_hdr *h;
	uint8_t *slots;
	uint32_t cap;
	uint32_t slot;
	bool multi;            /* MPMC: also keep the head in step */
	uint64_t pos;          /* our honest position */
	uint64_t seq;          /* producer: next stamp */
	uint64_t bad;          /* consumer: elements that failed the check */
};

static uint8_t *hr_slot(struct hring *r, uint64_t pos)
{
	return r->slots + (size_t)(pos & (r->cap - 1)) * r->slot;
}

/* Producer: publish up to N honest elements (fewer if the ring is full). */
static unsigned hr_produce(struct hring *r, unsigned n)
{
	uint64_t cons = atomic_load_explicit(&r->h->cons_tail, memory_order_acquire);
	uint64_t used;

	/* The consumer took garbage past our position (we lied about
	 * prod_tail): carry on from where it is. */
	if ((int64_t)(cons - r->pos) > 0)
		r->pos = cons;
	used = r->pos - cons;
	if (used >= r->cap)
		return 0;
	if (n > r->cap - used)
		n = (unsigned)(r->cap - used);
	for (unsigned i = 0; i < n; i++)
		stress_fill(hr_slot(r, r->pos + i), r->slot, stress_stamp(HOSTILE_ID, r->seq++));
	r->pos += n;
	atomic_store_explicit(&r->h->prod_head, r->pos, memory_order_relaxed);
	atomic_store_explicit(&r->h->prod_tail, r->pos, memory_order_release);
	return n;
}

static void hr_set_prod(struct hring *r, uint64_t v)
{
	atomic_store_explicit(&r->h->prod_tail, v, memory_order_release);
}

static void hr_heal_prod(struct hring *r)
{
	uint64_t cons = atomic_load_explicit(&r->h->cons_tail, memory_order_acquire);

	if ((int64_t)(cons - r->pos) > 0)
		r->pos = cons;
	atomic_store_explicit(&r->h->prod_head, r->pos, memory_order_relaxed);
	atomic_store_explicit(&r->h->prod_tail, r->pos, memory_order_release);
}

/* Consumer: take up to N elements, checking them (they come from the
 * honest producer: stamp id 1, consecutive). */
static unsigned hr_consume(struct hring *r, unsigned n, bool check)
{
	uint64_t prod = atomic_load_explicit(&r->h->prod_tail, memory_order_acquire), stamp;

	/* We lied about cons_tail and the producer ran ahead: catch up. */
	if (prod - r->pos > r->cap && (int64_t)(prod - r->pos) > 0)
		r->pos = prod - r->cap;
	if ((int64_t)(prod - r->pos) <= 0)
		return 0;
	if (n > prod - r->pos)
		n = (unsigned)(prod - r->pos);
	for (unsigned i = 0; check && i < n; i++)
		if (!stress_check(hr_slot(r, r->pos + i), r->slot, &stamp) ||
		    stamp != stress_stamp(1, r->seq++))
			r->bad++;
	r->pos += n;
	atomic_store_explicit(&r->h->cons_head, r->pos, memory_order_relaxed);
	atomic_store_explicit(&r->h->cons_tail, r->pos, memory_order_release);
	return n;
}

static void hr_set_cons(struct hring *r, uint64_t v)
{
	atomic_store_explicit(&r->h->cons_tail, v, memory_order_release);
}

static void hr_heal_cons(struct hring *r)
{
	uint64_t prod = atomic_load_explicit(&r->h->prod_tail, memory_order_acquire);

	if ((int64_t)(r->pos - prod) > 0 || prod - r->pos > r->cap)
		r->pos = prod;
	atomic_store_explicit(&r->h->cons_head, r->pos, memory_order_relaxed);
	atomic_store_explicit(&r->h->cons_tail, r->pos, memory_order_release);
}

/* An index value chosen to hurt: around our position, a ring away, the
 * extremes, or noise. */
static uint64_t adversarial(uint64_t *rng, uint64_t pos, uint64_t peer, uint32_t cap)
{
	switch (pick(rng, 12)) {
	case 0:  return 0;
	case 1:  return UINT64_MAX;
	case 2:  return pos - 1;
	case 3:  return pos + 1;
	case 4:  return peer + cap;
	case 5:  return peer + cap + 1;
	case 6:  return pos - cap;
	case 7:  return pos + (UINT64_C(1) << 40);
	case 8:  return UINT64_C(1) << 63;
	case 9:  return peer - 1;
	case 10: return pos + cap * 2;
	default: return stress_rand(rng);
	}
}

static int open_raw(struct peer *p, struct portal_object_info *info, struct hring *r)
{
	int rc = portal_region_lookup(p->reg, STRESS_QUEUE_NAME, PORTAL_OBJ_RING, info);

	if (rc)
		return rc;
	memset(r, 0, sizeof(*r));
	/* The driver wrote the parameters; the hostile side trusts them. */
	r->h = info->addr;
	r->slots = (uint8_t *)info->addr + PORTAL_RING_HDR_SIZE;
	r->multi = info->param[0] == PORTAL_RING_MPMC;
	r->slot = (uint32_t)info->param[1];
	r->cap = (uint32_t)info->param[2];
	return 0;
}

/* ---- hostile producer (ring_cons, mpmc_cons) ---- */

static int hostile_ring_producer(struct peer *p)
{
	struct portal_object_info info;
	struct lockstep ls = { 0 };
	struct hring r;
	uint64_t rng = p->seed, scribbles = 0, flips = 0;
	int code = 0;

	if (open_raw(p, &info, &r))
		return STRESS_EXIT_SETUP;
	if ((code = peer_barrier(p)) != 0)
		return code;

	/* 1 */ BEGIN_TURN(); hr_produce(&r, 5); END_TURN();
	/* 2 */ BEGIN_TURN(); hr_set_prod(&r, r.pos + r.cap + 1); END_TURN();
	/* 3 */ BEGIN_TURN(); hr_heal_prod(&r); END_TURN();
	/* 4 */ BEGIN_TURN(); hr_set_prod(&r, r.pos - 1); END_TURN();
	/* 5 */ BEGIN_TURN(); hr_heal_prod(&r); END_TURN();
	/* 6 */ BEGIN_TURN(); hr_set_prod(&r, UINT64_MAX); END_TURN();
	/* 7 */ BEGIN_TURN(); hr_heal_prod(&r); END_TURN();
	/* 8 */ BEGIN_TURN(); hr_set_prod(&r, 0); END_TURN();
	/* 9 */ BEGIN_TURN(); hr_heal_prod(&r); END_TURN();
	/* 10: prod_head is not the consumer's business. */
	BEGIN_TURN();
	hr_produce(&r, 3);
	atomic_store_explicit(&r.h->prod_head, UINT64_MAX, memory_order_relaxed);
	END_TURN();
	/* 11: four elements whose contents are noise. */
	BEGIN_TURN();
	hr_produce(&r, 4);
	for (uint64_t i = r.pos - 4; i < r.pos; i++)
		for (uint32_t b = 0; b < r.slot; b++)
			hr_slot(&r, i)[b] = (uint8_t)stress_rand(&rng);
	END_TURN();
	/* 12: a full ring of whatever is in the slots: legal. */
	BEGIN_TURN();
	r.pos += r.cap;
	hr_heal_prod(&r);
	END_TURN();
	/* 13: the random phase starts when the honest side has had turn 12. */
	BEGIN_TURN();

	while (!hostile_stop(p)) {
		unsigned act = pick(&rng, 100);

		if (act < 55) {
			hr_produce(&r, 1 + pick(&rng, 8));
		} else if (act < 80) {
			uint64_t cons = atomic_load_explicit(&r.h->cons_tail, memory_order_relaxed);

			hr_set_prod(&r, adversarial(&rng, r.pos, cons, r.cap));
			scribbles++;
			if (pick(&rng, 2)) {
				for (int i = 0; i < 64; i++)
					portal_cpu_relax();
				hr_heal_prod(&r);
			}
		} else if (act < 88) {
			atomic_store_explicit(&r.h->prod_head, stress_rand(&rng),
					      memory_order_relaxed);
			scribbles++;
		} else if (act < 92) {
			uint64_t cons = atomic_load_explicit(&r.h->cons_tail, memory_order_relaxed);

			flips += hostile_flip(&r.h->prod_tail, r.pos,
					      adversarial(&rng, r.pos, cons, r.cap));
		} else if (act < 96) {
			uint8_t *s = hr_slot(&r, stress_rand(&rng));

			for (uint32_t b = 0; b < r.slot; b += 8) {
				uint64_t w = stress_rand(&rng);

				memcpy(s + b, &w, 8);
			}
			scribbles++;
		} else {
			hr_heal_prod(&r);
		}
		for (unsigned i = pick(&rng, 256); i; i--)
			portal_cpu_relax();
	}
	hr_heal_prod(&r);
	hostile_done(p);
	p->res->messages = scribbles + flips;
	p->res->extra[0] = scribbles;
	p->res->extra[2] = flips;
out:
	return code;
}

/* ---- hostile consumer (ring_prod, mpmc_prod) ---- */

static int hostile_ring_consumer(struct peer *p)
{
	struct portal_object_info info;
	struct lockstep ls = { 0 };
	struct hring r;
	uint64_t rng = p->seed, scribbles = 0, flips = 0, prod;
	int code = 0;

	if (open_raw(p, &info, &r))
		return STRESS_EXIT_SETUP;
	if ((code = peer_barrier(p)) != 0)
		return code;

	/* 1 */ BEGIN_TURN(); END_TURN();
	/* 2: take the five, checked. */
	BEGIN_TURN(); hr_consume(&r, 5, true); END_TURN();
	/* 3: claim to have consumed past the producer. */
	BEGIN_TURN();
	prod = atomic_load_explicit(&r.h->prod_tail, memory_order_acquire);
	hr_set_cons(&r, prod + 1);
	END_TURN();
	/* 4 */ BEGIN_TURN(); hr_heal_cons(&r); END_TURN();
	/* 5 */ BEGIN_TURN(); hr_set_cons(&r, r.pos - 1); END_TURN();
	/* 6 */ BEGIN_TURN(); hr_heal_cons(&r); END_TURN();
	/* 7 */ BEGIN_TURN(); hr_set_cons(&r, UINT64_MAX); END_TURN();
	/* 8: heal and drain, checking every element. */
	BEGIN_TURN(); hr_heal_cons(&r); hr_consume(&r, r.cap, true); END_TURN();
	/* 9: cons_head is not the producer's business. */
	BEGIN_TURN();
	atomic_store_explicit(&r.h->cons_head, UINT64_MAX - 5, memory_order_relaxed);
	hr_consume(&r, r.cap, true);
	atomic_store_explicit(&r.h->cons_head, 3, memory_order_relaxed);
	END_TURN();
	/* 10 */ BEGIN_TURN(); hr_consume(&r, r.cap, true); END_TURN();
	p->res->extra[1] = r.bad;
	if (r.bad) {
		peer_log(p, "%llu elements from the honest producer failed their check",
			 (unsigned long long)r.bad);
		p->res->errors++;
	}

	while (!hostile_stop(p)) {
		unsigned act = pick(&rng, 100);

		if (act < 55) {
			hr_consume(&r, 1 + pick(&rng, 8), false);
		} else if (act < 82) {
			prod = atomic_load_explicit(&r.h->prod_tail, memory_order_relaxed);
			hr_set_cons(&r, adversarial(&rng, r.pos, prod, r.cap));
			scribbles++;
			if (pick(&rng, 2)) {
				for (int i = 0; i < 64; i++)
					portal_cpu_relax();
				hr_heal_cons(&r);
			}
		} else if (act < 88) {
			atomic_store_explicit(&r.h->cons_head, stress_rand(&rng),
					      memory_order_relaxed);
			scribbles++;
		} else if (act < 92) {
			prod = atomic_load_explicit(&r.h->prod_tail, memory_order_relaxed);
			flips += hostile_flip(&r.h->cons_tail, r.pos,
					      adversarial(&rng, r.pos, prod, r.cap));
		} else {
			hr_heal_cons(&r);
		}
		for (unsigned i = pick(&rng, 256); i; i--)
			portal_cpu_relax();
	}
	hr_heal_cons(&r);
	hostile_done(p);
	p->res->messages = scribbles + flips;
	p->res->extra[0] = scribbles;
	p->res->extra[2] = flips;
out:
	return code;
}

/* ------------------------------------------------------------------ */
/* Descriptor rings: the honest side                                    */
/* ------------------------------------------------------------------ */

struct hq {
	struct honest *h;
	void *mem;
	size_t len;
	enum portal_ring_role role;
	uint32_t slot;
	uint32_t cap;
	portal_ring_t *q;
	uint64_t seq;          /* producer: next stamp */
};

static int hq_attach(struct hq *hq)
{
	int rc;

	h_start(hq->h);
	rc = portal_ring_attach(hq->mem, hq->len, hq->role, &hq->q);
	h_stop(hq->h);
	if (rc == PORTAL_EPROTO) {
		hq->q = NULL;
		hq->h->attach_refused++;
	} else if (rc) {
		hq->q = NULL;
		h_fail(hq->h, __LINE__, "attach: unexpected %d (%s)", rc, portal_strerror(rc));
	} else if (portal_ring_slot_size(hq->q) != hq->slot || portal_ring_capacity(hq->q) != hq->cap) {
		h_fail(hq->h, __LINE__, "attach: geometry changed");
	}
	return rc;
}

/*
 * Consumer: take up to N (1: the single-element call) into OUT, a heap
 * buffer of exactly N slots (so ASan sees a write past it). Returns the
 * count, or PORTAL_EPROTO; anything else the API does not document for
 * this call is a failure.
 */
static int hq_deq(struct hq *hq, unsigned n, uint8_t *out)
{
	int rc;

	h_start(hq->h);
	if (n == 1) {
		rc = portal_ring_dequeue(hq->q, out);
		h_stop(hq->h);
		if (rc == 0)
			rc = 1;
		else if (rc == -EAGAIN)
			rc = 0;
		else if (rc != PORTAL_EPROTO)
			h_fail(hq->h, __LINE__, "dequeue: unexpected %d", rc);
	} else {
		rc = portal_ring_dequeue_burst(hq->q, out, n);
		h_stop(hq->h);
		if (rc != PORTAL_EPROTO && (rc < 0 || rc > (int)n))
			h_fail(hq->h, __LINE__, "dequeue_burst(%u): unexpected %d", n, rc);
	}
	if (rc == 0)
		hq->h->empty++;
	return rc;
}

static int hq_count(struct hq *hq)
{
	int rc;

	h_start(hq->h);
	rc = portal_ring_count(hq->q);
	h_stop(hq->h);
	if (rc != PORTAL_EPROTO && (rc < 0 || rc > (int)hq->cap))
		h_fail(hq->h, __LINE__, "count: unexpected %d", rc);
	return rc;
}

/* Producer: enqueue up to N stamped elements; the count or PORTAL_EPROTO. */
static int hq_enq(struct hq *hq, unsigned n)
{
	uint8_t *buf = malloc((size_t)n * hq->slot);
	int rc;

	if (!buf)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		stress_fill(buf + (size_t)i * hq->slot, hq->slot, stress_stamp(1, hq->seq + i));
	h_start(hq->h);
	if (n == 1) {
		rc = portal_ring_enqueue(hq->q, buf);
		h_stop(hq->h);
		if (rc == 0)
			rc = 1;
		else if (rc == -EAGAIN)
			rc = 0;
		else if (rc != PORTAL_EPROTO)
			h_fail(hq->h, __LINE__, "enqueue: unexpected %d", rc);
	} else {
		rc = portal_ring_enqueue_burst(hq->q, buf, n);
		h_stop(hq->h);
		if (rc != PORTAL_EPROTO && (rc < 0 || rc > (int)n))
			h_fail(hq->h, __LINE__, "enqueue_burst(%u): unexpected %d", n, rc);
	}
	if (rc > 0)
		hq->seq += (uint64_t)rc;
	if (rc == 0)
		hq->h->empty++;
	free(buf);
	return rc;
}

/* After PORTAL_EPROTO: the handle says quarantined and stays so for every
 * call; then drop it. */
static void hq_quarantined(struct hq *hq)
{
	uint8_t *buf = malloc((size_t)4 * hq->slot);
	int rc;

	hq->h->quarantines++;
	CHECK(hq->h, portal_ring_quarantined(hq->q), "EPROTO but not quarantined");
	if (hq->role == PORTAL_ROLE_CONSUMER) {
		rc = hq_deq(hq, 4, buf);
		CHECK(hq->h, rc == PORTAL_EPROTO, "quarantined dequeue_burst gave %d", rc);
		rc = hq_deq(hq, 1, buf);
		CHECK(hq->h, rc == PORTAL_EPROTO, "quarantined dequeue gave %d", rc);
		rc = hq_count(hq);
		CHECK(hq->h, rc == PORTAL_EPROTO, "quarantined count gave %d", rc);
	} else {
		uint64_t seq = hq->seq;

		rc = hq_enq(hq, 4);
		CHECK(hq->h, rc == PORTAL_EPROTO, "quarantined enqueue_burst gave %d", rc);
		rc = hq_enq(hq, 1);
		CHECK(hq->h, rc == PORTAL_EPROTO, "quarantined enqueue gave %d", rc);
		hq->seq = seq;
	}
	free(buf);
	portal_ring_detach(hq->q);
	hq->q = NULL;
}

/* Before a fresh attach: drop a handle a failed check left behind.
 * True when there was none (the expected case). */
static bool hq_drop(struct hq *hq)
{
	if (!hq->q)
		return true;
	portal_ring_detach(hq->q);
	hq->q = NULL;
	return false;
}

/* Check a dequeued element from the hostile producer's honest moments. */
static bool elem_ok(const uint8_t *e, uint32_t slot, uint64_t seq)
{
	uint64_t stamp;

	return stress_check(e, slot, &stamp) && stamp == stress_stamp(HOSTILE_ID, seq);
}

/* Find the test ring, guard the region around it and attach as ROLE.
 * Returns 0, or STRESS_EXIT_SETUP when the ring cannot be found or attached. */
static int hq_open(struct hq *hq, struct honest *h, struct peer *p, enum portal_ring_role role)
{
	struct portal_object_info info;

	if (portal_region_lookup(p->reg, STRESS_QUEUE_NAME, PORTAL_OBJ_RING, &info))
		return STRESS_EXIT_SETUP;
	hq->h = h;
	hq->mem = info.addr;
	hq->len = (size_t)info.size;
	hq->role = role;
	hq->slot = (uint32_t)info.param[1];
	hq->cap = (uint32_t)info.param[2];
	honest_guard(h, &info, 1);
	return hq_attach(hq) ? STRESS_EXIT_SETUP : 0;
}

static int honest_ring_consumer(struct peer *p)
{
	struct lockstep ls = { 1 };
	struct honest h;
	struct hq hq = { 0 };
	uint8_t *buf = NULL;
	uint64_t rng = p->seed;
	int rc, code = 0, total;

	honest_init(&h, p);
	if ((code = hq_open(&hq, &h, p, PORTAL_ROLE_CONSUMER)) != 0)
		return code;
	buf = malloc((size_t)(hq.cap + 2) * hq.slot);
	if (!buf || (code = peer_barrier(p)) != 0)
		goto out;

	/* 1: five honest elements arrive intact, then nothing. */
	BEGIN_TURN();
	rc = hq_deq(&hq, 8, buf);
	CHECK(&h, rc == 5, "step 1: dequeued %d, expected 5", rc);
	for (int i = 0; i < rc && i < 5; i++)
		CHECK(&h, elem_ok(buf + (size_t)i * hq.slot, hq.slot, (uint64_t)i),
		      "step 1: element %d damaged", i);
	rc = hq_deq(&hq, 1, buf);
	CHECK(&h, rc == 0, "step 1: empty ring gave %d", rc);
	END_TURN();
	/* 2: prod_tail more than a ring ahead. */
	BEGIN_TURN();
	rc = hq_deq(&hq, 4, buf);
	MUST_PROTO(&h, rc, "prod_tail = cons + capacity + 1");
	if (rc == PORTAL_EPROTO)
		hq_quarantined(&hq);
	END_TURN();
	/* 3: healed: a fresh handle attaches and finds nothing. */
	BEGIN_TURN();
	hq_drop(&hq);
	CHECK(&h, hq_attach(&hq) == 0, "step 3: attach after heal failed");
	if (hq.q)
		CHECK(&h, hq_deq(&hq, 4, buf) == 0, "step 3: not empty");
	END_TURN();
	/* 4: prod_tail one step backwards; attach refuses while it stays. */
	BEGIN_TURN();
	rc = hq.q ? hq_deq(&hq, 4, buf) : -1;
	MUST_PROTO(&h, rc, "prod_tail went backwards by one");
	if (rc == PORTAL_EPROTO)
		hq_quarantined(&hq);
	rc = hq_attach(&hq);
	MUST_PROTO(&h, rc, "attach with prod_tail behind cons_tail");
	END_TURN();
	/* 5 */
	BEGIN_TURN();
	CHECK(&h, hq_drop(&hq) && hq_attach(&hq) == 0, "step 5: attach after heal failed");
	END_TURN();
	/* 6: prod_tail = UINT64_MAX. */
	BEGIN_TURN();
	rc = hq.q ? hq_deq(&hq, 1, buf) : -1;
	MUST_PROTO(&h, rc, "prod_tail = UINT64_MAX");
	if (rc == PORTAL_EPROTO)
		hq_quarantined(&hq);
	rc = hq_attach(&hq);
	MUST_PROTO(&h, rc, "attach with prod_tail = UINT64_MAX");
	END_TURN();
	/* 7 */
	BEGIN_TURN();
	CHECK(&h, hq_drop(&hq) && hq_attach(&hq) == 0, "step 7: attach after heal failed");
	END_TURN();
	/* 8: prod_tail = 0, behind what we have seen. The readiness call must
	 * detect it as well as a dequeue. */
	BEGIN_TURN();
	rc = hq.q ? hq_count(&hq) : -1;
	MUST_PROTO(&h, rc, "prod_tail = 0 (count)");
	if (rc == PORTAL_EPROTO)
		hq_quarantined(&hq);
	END_TURN();
	/* 9 */
	BEGIN_TURN();
	CHECK(&h, hq_drop(&hq) && hq_attach(&hq) == 0, "step 9: attach after heal failed");
	END_TURN();
	/* 10: prod_head scribbled: the consumer does not care. */
	BEGIN_TURN();
	rc = hq.q ? hq_deq(&hq, 8, buf) : -1;
	CHECK(&h, rc == 3, "step 10: dequeued %d, expected 3", rc);
	for (int i = 0; i < rc && i < 3; i++)
		CHECK(&h, elem_ok(buf + (size_t)i * hq.slot, hq.slot, (uint64_t)(5 + i)),
		      "step 10: element %d damaged", i);
	END_TURN();
	/* 11: noise in the slots is delivered as it is (the ring does not
	 * judge contents), and only there. */
	BEGIN_TURN();
	rc = hq.q ? hq_deq(&hq, 4, buf) : -1;
	CHECK(&h, rc == 4, "step 11: dequeued %d, expected 4", rc);
	for (int i = 0; i < rc && i < 4; i++)
		if (!elem_ok(buf + (size_t)i * hq.slot, hq.slot, (uint64_t)(8 + i)))
			h.garbage++;
	CHECK(&h, h.garbage == 4, "step 11: noise passed the checksum?");
	END_TURN();
	/* 12: prod_tail exactly one ring ahead is legal: a full ring. */
	BEGIN_TURN();
	total = 0;
	for (int i = 0; i < 8 && hq.q; i++) {
		rc = hq_deq(&hq, hq.cap + 2, buf);
		if (rc <= 0)
			break;
		total += rc;
	}
	CHECK(&h, total == (int)hq.cap, "step 12: a full ring gave %d", total);
	CHECK(&h, hq.q && hq_deq(&hq, 1, buf) == 0, "step 12: not empty after");
	END_TURN();

	/* Random phase. */
	while (honest_more(&h)) {
		if (!hq.q) {
			if (hq_attach(&hq))
				sched_yield();
			continue;
		}
		switch (pick(&rng, 3)) {
		case 0: {
			unsigned n = 2 + pick(&rng, hq.cap + 1);
			uint8_t *exact = malloc((size_t)n * hq.slot);

			rc = exact ? hq_deq(&hq, n, exact) : 0;
			free(exact);
			break;
		}
		case 1:
			rc = hq_deq(&hq, 1, buf);
			break;
		default:
			rc = hq_count(&hq);
			break;
		}
		if (rc == PORTAL_EPROTO) {
			h.random_quarantines++;
			hq_quarantined(&hq);
		}
	}
	if ((code = honest_finish(&h)) != 0)
		goto out;
	/* Healed: a fresh handle attaches and works. */
	hq_drop(&hq);
	CHECK(&h, hq_attach(&hq) == 0, "final attach after heal failed");
	if (hq.q) {
		rc = hq_deq(&hq, hq.cap + 2, buf);
		CHECK(&h, rc >= 0, "final dequeue gave %d", rc);
	}
	CHECK(&h, h.random_quarantines > 0, "the random phase never tripped a check");
out:
	honest_report(&h, "random_quarantines", h.random_quarantines);
	free(buf);
	if (hq.q)
		portal_ring_detach(hq.q);
	honest_unguard(&h);
	return code;
}

static int honest_ring_producer(struct peer *p)
{
	struct lockstep ls = { 1 };
	struct honest h;
	struct hq hq = { 0 };
	uint64_t rng = p->seed;
	int rc, code = 0, total;

	honest_init(&h, p);
	if ((code = hq_open(&hq, &h, p, PORTAL_ROLE_PRODUCER)) != 0)
		return code;
	if ((code = peer_barrier(p)) != 0)
		goto out;

	/* 1: five elements. */
	BEGIN_TURN();
	CHECK(&h, hq_enq(&hq, 5) == 5, "step 1: enqueue 5");
	END_TURN();
	/* 2: fill the ring (the consumer took the five). */
	BEGIN_TURN();
	total = 0;
	for (int i = 0; i < 8; i++) {
		rc = hq_enq(&hq, hq.cap);
		if (rc <= 0)
			break;
		total += rc;
	}
	CHECK(&h, total == (int)hq.cap, "step 2: filled %d of %u", total, hq.cap);
	END_TURN();
	/* 3: cons_tail ahead of the producer. */
	BEGIN_TURN();
	rc = hq_enq(&hq, 1);
	MUST_PROTO(&h, rc, "cons_tail = prod_tail + 1");
	if (rc == PORTAL_EPROTO)
		hq_quarantined(&hq);
	END_TURN();
	/* 4: healed: attach, still full. */
	BEGIN_TURN();
	CHECK(&h, hq_drop(&hq) && hq_attach(&hq) == 0, "step 4: attach after heal failed");
	CHECK(&h, hq.q && hq_enq(&hq, 1) == 0, "step 4: ring should be full");
	END_TURN();
	/* 5: cons_tail one step backwards. */
	BEGIN_TURN();
	rc = hq.q ? hq_enq(&hq, 1) : -1;
	MUST_PROTO(&h, rc, "cons_tail went backwards by one");
	if (rc == PORTAL_EPROTO)
		hq_quarantined(&hq);
	rc = hq_attach(&hq);
	MUST_PROTO(&h, rc, "attach with cons_tail a ring + 1 behind");
	END_TURN();
	/* 6 */
	BEGIN_TURN();
	CHECK(&h, hq_drop(&hq) && hq_attach(&hq) == 0, "step 6: attach after heal failed");
	END_TURN();
	/* 7: cons_tail = UINT64_MAX. */
	BEGIN_TURN();
	rc = hq.q ? hq_enq(&hq, 3) : -1;
	MUST_PROTO(&h, rc, "cons_tail = UINT64_MAX");
	if (rc == PORTAL_EPROTO)
		hq_quarantined(&hq);
	END_TURN();
	/* 8: healed and drained: room again. */
	BEGIN_TURN();
	CHECK(&h, hq_drop(&hq) && hq_attach(&hq) == 0, "step 8: attach after heal failed");
	CHECK(&h, hq.q && hq_enq(&hq, 3) == 3, "step 8: enqueue 3");
	END_TURN();
	/* 9: cons_head scribbled: the producer does not care. */
	BEGIN_TURN();
	CHECK(&h, hq.q && hq_enq(&hq, 2) == 2, "step 9: enqueue 2");
	END_TURN();
	/* 10 */ BEGIN_TURN(); END_TURN();

	while (honest_more(&h)) {
		if (!hq.q) {
			if (hq_attach(&hq))
				sched_yield();
			continue;
		}
		rc = hq_enq(&hq, pick(&rng, 2) ? 1 : 2 + pick(&rng, hq.cap + 1));
		if (rc == PORTAL_EPROTO) {
			h.random_quarantines++;
			hq_quarantined(&hq);
		}
	}
	if ((code = honest_finish(&h)) != 0)
		goto out;
	hq_drop(&hq);
	CHECK(&h, hq_attach(&hq) == 0, "final attach after heal failed");
	if (hq.q) {
		rc = hq_enq(&hq, 1);
		CHECK(&h, rc >= 0, "final enqueue gave %d", rc);
	}
	CHECK(&h, h.random_quarantines > 0, "the random phase never tripped a check");
out:
	honest_report(&h, "random_quarantines", h.random_quarantines);
	if (hq.q)
		portal_ring_detach(hq.q);
	honest_unguard(&h);
	return code;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */
/* ------------------------------------------------------------------ */

static bool is(const struct peer *p, const char *k)
{
	return strcmp(p->kind, k) == 0;
}

int peer_run_hostile(struct peer *p)
{
	if (is(p, "ring_cons") || is(p, "mpmc_cons"))
		return hostile_ring_producer(p);
	if (is(p, "ring_prod") || is(p, "mpmc_prod"))
		return hostile_ring_consumer(p);
	if (is(p, "msg_cons") || is(p, "msg_prod"))
		return hostile_msg(p);
	if (!strncmp(p->kind, "bcast_", 6))
		return hostile_bcast(p);
	if (is(p, "arena"))
		return hostile_arena(p);
	peer_log(p, "unknown scenario");
	return STRESS_EXIT_USAGE;
}

int peer_run_honest(struct peer *p)
{
	if (is(p, "ring_cons") || is(p, "mpmc_cons"))
		return honest_ring_consumer(p);
	if (is(p, "ring_prod") || is(p, "mpmc_prod"))
		return honest_ring_producer(p);
	if (is(p, "msg_cons") || is(p, "msg_prod"))
		return honest_msg(p);
	if (!strncmp(p->kind, "bcast_", 6))
		return honest_bcast(p);
	if (is(p, "arena"))
		return honest_arena(p);
	peer_log(p, "unknown scenario");
	return STRESS_EXIT_USAGE;
}
