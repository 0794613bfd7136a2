/* SPDX-License-Identifier: MIT */
/*
 * peer_hostile_bcast.c - hostile peers of the broadcast ring (see hostile.h).
 *
 *   bcast_sub_hold  honest subscriber of a HOLD ring; the hostile producer
 *   bcast_sub_lap   (LAP ring) writes prod_tail, slot sequence words and
 *                   payload noise
 *   bcast_pub       honest publisher and an honest subscriber in one
 *                   process; a hostile subscriber writes its own cursor
 *                   (ahead of the producer, too far behind, extremes) and
 *                   its active flag. The publisher must ignore it and keep
 *                   serving the honest subscriber, which must get every
 *                   message, in order, intact.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portal/ring.h"
#include "stress/hostile.h"

#define SLOT 64u /* the driver makes 64-byte slots */

struct hbc {
	struct portal_bcast_hdr *h;
	struct portal_bcast_sub *subs;
	uint8_t *slots;
	uint32_t cap;
	uint32_t stride;
	bool hold;
	uint64_t pos;          /* producer: next position */
};

static int open_raw(struct peer *p, struct portal_object_info *info, struct hbc *b)
{
	int rc = portal_region_lookup(p->reg, STRESS_QUEUE_NAME, PORTAL_OBJ_BCAST, info);

	if (rc)
		return rc;
	memset(b, 0, sizeof(*b));
	b->h = info->addr;
	b->hold = info->param[0] == PORTAL_BCAST_HOLD;
	b->cap = (uint32_t)info->param[2];
	b->stride = 8 + SLOT;
	b->subs = (struct portal_bcast_sub *)((uint8_t *)info->addr + PORTAL_BCAST_HDR_SIZE);
	b->slots = (uint8_t *)(b->subs + info->param[3]);
	return 0;
}

static _Atomic uint64_t *slot_seq(struct hbc *b, uint64_t pos)
{
	return (_Atomic uint64_t *)(b->slots + (size_t)(pos & (b->cap - 1)) * b->stride);
}

/* Producer: publish one message at our position, its sequence word SEQ
 * (0: the honest pos + 1). */
static void hb_publish(struct hbc *b, uint64_t seq)
{
	_Atomic uint64_t *s = slot_seq(b, b->pos);

	atomic_store_explicit(s, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	stress_fill((uint8_t *)s + 8, SLOT, stress_stamp(7, b->pos));
	atomic_store_explicit(s, seq ? seq : b->pos + 1, memory_order_release);
	b->pos++;
	atomic_store_explicit(&b->h->prod_tail, b->pos, memory_order_release);
}

static void hb_set_prod(struct hbc *b, uint64_t v)
{
	atomic_store_explicit(&b->h->prod_tail, v, memory_order_release);
}

static void hb_heal_prod(struct hbc *b)
{
	atomic_store_explicit(&b->h->prod_tail, b->pos, memory_order_release);
}

/* ------------------------------------------------------------------ */
/* Hostile producer (bcast_sub_hold, bcast_sub_lap)                     */
/* ------------------------------------------------------------------ */

static int hostile_bcast_producer(struct peer *p)
{
	struct portal_object_info info;
	struct lockstep ls = { 0 };
	struct hbc b;
	uint64_t rng = p->seed, scribbles = 0, flips = 0, cur;
	int code = 0;

	if (open_raw(p, &info, &b))
		return STRESS_EXIT_SETUP;
	if ((code = peer_barrier(p)) != 0)
		return code;

	/* 1 */ BEGIN_TURN(); hb_publish(&b, 0); hb_publish(&b, 0); hb_publish(&b, 0); END_TURN();
	/* 2 */ BEGIN_TURN(); hb_set_prod(&b, b.pos - 1); END_TURN();
	/* 3 */ BEGIN_TURN(); hb_heal_prod(&b); END_TURN();
	/* 4 */ BEGIN_TURN(); hb_set_prod(&b, b.pos + b.cap + 1); END_TURN();
	/* 5 */ BEGIN_TURN(); hb_heal_prod(&b); END_TURN();
	/* 6: a message whose slot says the wrong position. */
	BEGIN_TURN(); hb_publish(&b, b.pos + 2); END_TURN();
	/* 7: mend it. */
	BEGIN_TURN(); atomic_store(slot_seq(&b, b.pos - 1), b.pos); END_TURN();
	/* 8 */ BEGIN_TURN(); hb_set_prod(&b, UINT64_MAX); END_TURN();
	/* 9 */ BEGIN_TURN(); hb_heal_prod(&b); END_TURN();
	/* 10: random phase after the honest side's turn 9. */
	BEGIN_TURN();

	while (!hostile_stop(p)) {
		unsigned act = pick(&rng, 100);

		if (act < 50) {
			/* Honest, and in HOLD mode polite: never past the
			 * subscriber's cursor. */
			cur = atomic_load_explicit(&b.subs[0].cursor, memory_order_acquire);
			if (!b.hold || b.pos - cur < b.cap)
				hb_publish(&b, 0);
		} else if (act < 65) {
			static const int64_t d[] = { -1, 1, 2, -2 };
			uint64_t v;

			switch (pick(&rng, 5)) {
			case 0:  v = b.pos + (uint64_t)d[pick(&rng, 4)]; break;
			case 1:  v = b.pos + b.cap + 1 + pick(&rng, 3); break;
			case 2:  v = pick(&rng, 2) ? 0 : UINT64_MAX; break;
			case 3:  v = b.pos + (UINT64_C(1) << 62); break;
			default: v = stress_rand(&rng); break;
			}
			hb_set_prod(&b, v);
			scribbles++;
			if (pick(&rng, 2)) {
				for (int i = 0; i < 64; i++)
					portal_cpu_relax();
				hb_heal_prod(&b);
			}
		} else if (act < 75) {
			hb_publish(&b, pick(&rng, 2) ? stress_rand(&rng) : b.pos + 2);
			scribbles++;
		} else if (act < 80) {
			atomic_store_explicit(slot_seq(&b, stress_rand(&rng)), stress_rand(&rng),
					      memory_order_release);
			scribbles++;
		} else if (act < 85) {
			/* The slot the subscriber reads next, while it reads. */
			_Atomic uint64_t *w;

			cur = atomic_load_explicit(&b.subs[0].cursor, memory_order_acquire);
			w = slot_seq(&b, cur);
			flips += hostile_flip(w, atomic_load_explicit(w, memory_order_relaxed),
					      stress_rand(&rng));
		} else if (act < 90) {
			uint8_t *s = (uint8_t *)slot_seq(&b, stress_rand(&rng)) + 8;

			s[pick(&rng, SLOT)] ^= (uint8_t)(1 + pick(&rng, 255));
			scribbles++;
		} else {
			hb_heal_prod(&b);
		}
		for (unsigned i = pick(&rng, 256); i; i--)
			portal_cpu_relax();
	}
	hb_heal_prod(&b);
	hostile_done(p);
	p->res->messages = scribbles + flips;
	p->res->extra[0] = scribbles;
	p->res->extra[2] = flips;
out:
	return code;
}

/* ------------------------------------------------------------------ */
/* Hostile subscriber (bcast_pub)                                       */
/* ------------------------------------------------------------------ */

static int hostile_bcast_subscriber(struct peer *p)
{
	struct portal_object_info info;
	struct lockstep ls = { 0 };
	struct hbc b;
	portal_bcast_t *me;
	_Atomic uint64_t *cursor;
	uint64_t rng = p->seed, scribbles = 0, prod;
	int code = 0, rc;

	if (open_raw(p, &info, &b))
		return STRESS_EXIT_SETUP;
	/* Subscribe the honest way (subscriber 1), then misbehave. */
	rc = portal_bcast_attach(info.addr, (size_t)info.size, 1, &me);
	if (rc) {
		peer_log(p, "subscribe: %s", portal_strerror(rc));
		return STRESS_EXIT_SETUP;
	}
	cursor = &b.subs[1].cursor;
	if ((code = peer_barrier(p)) != 0)
		goto out;

#define PROD() atomic_load_explicit(&b.h->prod_tail, memory_order_acquire)
	/* 1 */ BEGIN_TURN(); END_TURN();
	/* 2: read the five (as far as the producer is concerned). */
	BEGIN_TURN(); atomic_store(cursor, PROD()); END_TURN();
	/* 3: catch up with what the held producer managed. */
	BEGIN_TURN(); atomic_store(cursor, PROD()); END_TURN();
	/* 4: a cursor ahead of the producer. */
	BEGIN_TURN(); atomic_store(cursor, UINT64_MAX); END_TURN();
	/* 5: more than a ring behind. */
	BEGIN_TURN(); atomic_store(cursor, PROD() - b.cap - 1); END_TURN();
	/* 6: inactive, with a nonsense cursor: not the producer's business. */
	BEGIN_TURN(); atomic_store(&b.subs[1].state, PORTAL_BCAST_SUB_FREE); atomic_store(cursor, 12345); END_TURN();
	/* 7: back, caught up. */
	BEGIN_TURN(); atomic_store(cursor, PROD()); atomic_store(&b.subs[1].state, PORTAL_BCAST_SUB_ACTIVE); END_TURN();
	/* 8: random phase after the honest side's turn 7. */
	BEGIN_TURN();

	while (!hostile_stop(p)) {
		unsigned act = pick(&rng, 100);

		prod = PROD();
		if (act < 40) {
			atomic_store_explicit(cursor, prod, memory_order_release);
		} else if (act < 60) {
			atomic_store_explicit(cursor, prod - pick(&rng, b.cap + 1),
					      memory_order_release);
		} else if (act < 88) {
			static const int64_t d[] = { 1, 1000, -17, -1 };
			uint64_t v;

			switch (pick(&rng, 4)) {
			case 0:  v = prod + (uint64_t)d[pick(&rng, 2)]; break;
			case 1:  v = prod - b.cap - 1 + (uint64_t)d[2 + pick(&rng, 2)]; break;
			case 2:  v = pick(&rng, 2) ? 0 : UINT64_MAX; break;
			default: v = stress_rand(&rng); break;
			}
			atomic_store_explicit(cursor, v, memory_order_release);
			scribbles++;
		} else if (act < 98) {
			atomic_store_explicit(&b.subs[1].state,
					      pick(&rng, 2) ? PORTAL_BCAST_SUB_ACTIVE : stress_rand(&rng),
					      memory_order_release);
			scribbles++;
		}
		for (unsigned i = pick(&rng, 512); i; i--)
			portal_cpu_relax();
	}
#undef PROD
	/* Heal: unsubscribe. */
	atomic_store_explicit(&b.subs[1].state, PORTAL_BCAST_SUB_FREE, memory_order_release);
	hostile_done(p);
	p->res->messages = scribbles;
	p->res->extra[0] = scribbles;
out:
	portal_bcast_detach(me);
	return code;
}

int hostile_bcast(struct peer *p)
{
	return strcmp(p->kind, "bcast_pub") == 0 ? hostile_bcast_subscriber(p)
						  : hostile_bcast_producer(p);
}

/* ------------------------------------------------------------------ */
/* Honest subscriber                                                    */
/* ------------------------------------------------------------------ */

struct hsub {
	struct honest *h;
	void *mem;
	size_t len;
	bool lap;
	portal_bcast_t *b;
	uint64_t lost;         /* last -EOVERFLOW's count */
};

static int hs_attach(struct hsub *s, int sub)
{
	int rc;

	if (s->b) {
		h_fail(s->h, __LINE__, "attach: a handle is still open");
		portal_bcast_detach(s->b);
		s->b = NULL;
	}
	h_start(s->h);
	rc = portal_bcast_attach(s->mem, s->len, sub, &s->b);
	h_stop(s->h);
	if (rc == PORTAL_EPROTO)
		s->h->attach_refused++;
	else if (rc)
		h_fail(s->h, __LINE__, "attach: unexpected %d (%s)", rc, portal_strerror(rc));
	if (rc)
		s->b = NULL;
	return rc;
}

/* Read into a heap buffer of exactly one slot. 0 with *STAMP (0 if the
 * payload is noise), -EAGAIN, -EOVERFLOW (LAP; s->lost set), PORTAL_EPROTO. */
static int hs_read(struct hsub *s, uint64_t *stamp)
{
	uint8_t *msg = malloc(SLOT);
	uint64_t lost = UINT64_MAX;
	int rc;

	if (!msg)
		return -ENOMEM;
	h_start(s->h);
	rc = portal_bcast_read(s->b, msg, &lost);
	h_stop(s->h);
	*stamp = 0;
	if (rc == 0) {
		if (!stress_check(msg, SLOT, stamp)) {
			*stamp = 0;
			s->h->garbage++;
		}
	} else if (rc == -EAGAIN) {
		s->h->empty++;
	} else if (rc == -EOVERFLOW && s->lap) {
		s->h->overflow++;
		s->lost = lost;
		CHECK(s->h, lost != UINT64_MAX, "-EOVERFLOW without a lost count");
	} else if (rc != PORTAL_EPROTO) {
		h_fail(s->h, __LINE__, "read: unexpected %d (%s)", rc, portal_strerror(rc));
	}
	free(msg);
	return rc;
}

static void hs_quarantined(struct hsub *s)
{
	uint64_t stamp;
	int rc;

	s->h->quarantines++;
	CHECK(s->h, portal_bcast_quarantined(s->b), "EPROTO but not quarantined");
	rc = hs_read(s, &stamp);
	CHECK(s->h, rc == PORTAL_EPROTO, "quarantined read gave %d", rc);
	rc = hs_read(s, &stamp);
	CHECK(s->h, rc == PORTAL_EPROTO, "quarantined read gave %d", rc);
	h_start(s->h);
	rc = portal_bcast_ready(s->b);
	h_stop(s->h);
	CHECK(s->h, rc == 1, "quarantined ready gave %d", rc);
	portal_bcast_detach(s->b);
	s->b = NULL;
}

#define MUST_Q(s, rc, what)                                                          \
	do {                                                                         \
		MUST_PROTO((s)->h, (rc), (what));                                    \
		if ((s)->b && (rc) == PORTAL_EPROTO)                                 \
			hs_quarantined(s);                                           \
		else if ((s)->b) {                                                   \
			portal_bcast_detach((s)->b);                                 \
			(s)->b = NULL;                                               \
		}                                                                    \
	} while (0)

static int honest_bcast_subscriber(struct peer *p, struct hsub *s)
{
	struct honest *h = s->h;
	struct lockstep ls = { 1 };
	uint64_t stamp, rng = p->seed;
	int rc, code = 0;

	if ((code = peer_barrier(p)) != 0)
		goto out;
	/* 1: three messages intact. */
	BEGIN_TURN();
	for (uint64_t i = 0; i < 3; i++) {
		rc = hs_read(s, &stamp);
		CHECK(h, rc == 0 && stamp == stress_stamp(7, i), "step 1: message %llu: %d",
		      (unsigned long long)i, rc);
	}
	CHECK(h, hs_read(s, &stamp) == -EAGAIN, "step 1: should be empty");
	END_TURN();
	/* 2: prod_tail backwards. */
	BEGIN_TURN(); rc = hs_read(s, &stamp); MUST_Q(s, rc, "prod_tail went backwards"); END_TURN();
	/* 3 */
	BEGIN_TURN();
	CHECK(h, hs_attach(s, 0) == 0, "step 3: attach after heal");
	CHECK(h, s->b && hs_read(s, &stamp) == -EAGAIN, "step 3: should be empty");
	END_TURN();
	/* 4: prod_tail a ring + 1 ahead: HOLD says corrupt; LAP says lapped
	 * (two messages lost: the cursor moves to the oldest one held). */
	BEGIN_TURN();
	rc = s->b ? hs_read(s, &stamp) : -1;
	if (s->lap) {
		CHECK(h, rc == -EOVERFLOW && s->lost == 2, "step 4 (lap): %d, lost %llu", rc,
		      (unsigned long long)s->lost);
	} else {
		MUST_Q(s, rc, "prod_tail a ring + 1 ahead");
	}
	END_TURN();
	/* 5: healed. LAP: prod_tail is now behind what we saw: corrupt. */
	BEGIN_TURN();
	if (s->lap) {
		rc = s->b ? hs_read(s, &stamp) : -1;
		MUST_Q(s, rc, "prod_tail back below what was seen (lap)");
	}
	CHECK(h, hs_attach(s, 0) == 0, "step 5: attach after heal");
	CHECK(h, s->b && hs_read(s, &stamp) == -EAGAIN, "step 5: should be empty");
	END_TURN();
	/* 6: a slot whose sequence word is wrong, one message after the
	 * cursor (prod_tail = cursor + 1, far less than a ring). HOLD: corrupt.
	 * LAP: the slot cannot have been lapped, so PORTAL_EPROTO is right;
	 * -EOVERFLOW is acceptable only as "torn, nothing lost" (lost 0): no
	 * more can be lost than was published. */
	BEGIN_TURN();
	rc = s->b ? hs_read(s, &stamp) : -1;
	if (s->lap) {
		CHECK(h, (rc == -EOVERFLOW && s->lost == 0) || rc == PORTAL_EPROTO,
		      "step 6 (lap): %d, lost %llu of the 1 message published since", rc,
		      (unsigned long long)s->lost);
		if (rc == PORTAL_EPROTO)
			hs_quarantined(s);
	} else {
		MUST_Q(s, rc, "slot sequence word wrong");
	}
	END_TURN();
	/* 7: mended. LAP, not quarantined: now it reads, intact. Otherwise a
	 * new handle starts after it. */
	BEGIN_TURN();
	if (s->lap && s->b) {
		rc = hs_read(s, &stamp);
		CHECK(h, rc == 0 && stamp == stress_stamp(7, 3), "step 7 (lap): mended slot gave %d",
		      rc);
	} else {
		CHECK(h, hs_attach(s, 0) == 0, "step 7: attach");
		CHECK(h, s->b && hs_read(s, &stamp) == -EAGAIN, "step 7: should be empty");
	}
	END_TURN();
	/* 8: prod_tail = UINT64_MAX. */
	BEGIN_TURN();
	rc = s->b ? hs_read(s, &stamp) : -1;
	if (s->lap)
		CHECK(h, rc == -EOVERFLOW, "step 8 (lap): %d", rc);
	else
		MUST_Q(s, rc, "prod_tail = UINT64_MAX");
	END_TURN();
	/* 9: healed. */
	BEGIN_TURN();
	if (s->lap) {
		rc = s->b ? hs_read(s, &stamp) : -1;
		MUST_Q(s, rc, "prod_tail back from UINT64_MAX (lap)");
	}
	CHECK(h, hs_attach(s, 0) == 0, "step 9: attach after heal");
	CHECK(h, s->b && hs_read(s, &stamp) == -EAGAIN, "step 9: should be empty");
	END_TURN();

	while (honest_more(h)) {
		if (!s->b) {
			if (hs_attach(s, 0))
				sched_yield();
			continue;
		}
		if (pick(&rng, 8) == 0) {
			h_start(h);
			rc = portal_bcast_ready(s->b);
			h_stop(h);
			CHECK(h, rc == 0 || rc == 1, "ready: %d", rc);
			continue;
		}
		rc = hs_read(s, &stamp);
		if (rc == PORTAL_EPROTO) {
			h->random_quarantines++;
			hs_quarantined(s);
		}
	}
	if ((code = honest_finish(h)) != 0)
		goto out;
	if (s->b) {
		portal_bcast_detach(s->b);
		s->b = NULL;
	}
	CHECK(h, hs_attach(s, 0) == 0, "final attach after heal failed");
	CHECK(h, s->b && hs_read(s, &stamp) == -EAGAIN, "final: should be empty");
	CHECK(h, h->random_quarantines > 0, "the random phase never tripped a check");
out:
	return code;
}

/* ------------------------------------------------------------------ */
/* Honest publisher with an honest subscriber (bcast_pub)               */
/* ------------------------------------------------------------------ */

struct hpub {
	struct honest *h;
	void *mem;
	size_t len;
	portal_bcast_t *prod;
	portal_bcast_t *sub;   /* subscriber 0, honest */
	uint64_t cap;
	uint64_t published;
	uint64_t held;         /* publishes refused with -EAGAIN */
};

/*
 * Publish up to N messages; after each, the honest subscriber must read
 * exactly it. Returns the number published (stops at the first -EAGAIN).
 */
static unsigned pump(struct hpub *x, unsigned n)
{
	uint8_t msg[SLOT], *in;
	uint64_t stamp, lost;
	unsigned done;
	int rc;

	for (done = 0; done < n; done++) {
		stress_fill(msg, SLOT, stress_stamp(1, x->published));
		h_start(x->h);
		rc = portal_bcast_publish(x->prod, msg);
		h_stop(x->h);
		if (rc == -EAGAIN) {
			x->held++;
			x->h->empty++;
			/* The honest subscriber has read everything: it is
			 * not the one holding the producer back. */
			in = malloc(SLOT);
			rc = in ? portal_bcast_read(x->sub, in, &lost) : -EAGAIN;
			free(in);
			CHECK(x->h, rc == -EAGAIN, "held, and the honest subscriber read %d", rc);
			break;
		}
		if (rc != 0) {
			h_fail(x->h, __LINE__, "publish: unexpected %d (%s)", rc, portal_strerror(rc));
			break;
		}
		in = malloc(SLOT);
		if (!in)
			break;
		h_start(x->h);
		rc = portal_bcast_read(x->sub, in, &lost);
		h_stop(x->h);
		CHECK(x->h, rc == 0 && stress_check(in, SLOT, &stamp) &&
				     stamp == stress_stamp(1, x->published),
		      "honest subscriber: message %llu: read %d",
		      (unsigned long long)x->published, rc);
		free(in);
		x->published++;
	}
	return done;
}

static uint64_t pub_proto_errors(struct hpub *x)
{
	struct portal_ring_stats st;

	portal_bcast_stats(x->prod, &st);
	return st.proto_errors;
}

/* A fresh publisher handle (forgets which subscribers it ignores). */
static int reattach_producer(struct hpub *x)
{
	int rc;

	portal_bcast_detach(x->prod);
	x->prod = NULL;
	h_start(x->h);
	rc = portal_bcast_attach(x->mem, x->len, -1, &x->prod);
	h_stop(x->h);
	if (rc) {
		h_fail(x->h, __LINE__, "producer attach: %d", rc);
		x->prod = NULL;
	}
	return rc;
}

static int honest_bcast_publisher(struct peer *p, struct hpub *x)
{
	struct honest *h = x->h;
	struct lockstep ls = { 1 };
	uint64_t rng = p->seed, cap = x->cap;
	unsigned n;
	int code = 0;

	if ((code = peer_barrier(p)) != 0)
		goto out;
	/* 1 */
	BEGIN_TURN(); CHECK(h, pump(x, 5) == 5, "step 1: publish 5"); END_TURN();
	/* 2: the hostile subscriber sits at 5, legally: it holds the
	 * publisher back at exactly a ring ahead of it (HOLD). */
	BEGIN_TURN();
	pump(x, (unsigned)(3 * cap));
	h->must++;
	CHECK(h, x->published == 5 + cap, "step 2: held at %llu, expected %llu",
	      (unsigned long long)x->published, (unsigned long long)(5 + cap));
	END_TURN();
	/* 3: it caught up: publishing resumes. */
	BEGIN_TURN(); CHECK(h, pump(x, 3) == 3, "step 3: publish after catch-up"); END_TURN();
	/* 4: a cursor ahead of the producer: ignored, counted, and the honest
	 * subscriber is served all along. */
	BEGIN_TURN();
	n = pump(x, (unsigned)(3 * cap));
	h->must++;
	CHECK(h, n == 3 * cap && pub_proto_errors(x) == 1,
	      "step 4: cursor ahead: published %u of %llu, %llu protocol errors", n,
	      (unsigned long long)(3 * cap), (unsigned long long)pub_proto_errors(x));
	END_TURN();
	/* 5: a cursor more than a ring behind (fresh publisher handle). */
	BEGIN_TURN();
	if (reattach_producer(x) == 0) {
		n = pump(x, (unsigned)(3 * cap));
		h->must++;
		CHECK(h, n == 3 * cap && pub_proto_errors(x) == 1,
		      "step 5: cursor a ring + 1 behind: published %u, %llu protocol errors", n,
		      (unsigned long long)pub_proto_errors(x));
	}
	END_TURN();
	/* 6: inactive subscriber, nonsense cursor: no error, no hold. */
	BEGIN_TURN();
	if (reattach_producer(x) == 0) {
		n = pump(x, (unsigned)(3 * cap));
		CHECK(h, n == 3 * cap && pub_proto_errors(x) == 0,
		      "step 6: inactive: published %u, %llu protocol errors", n,
		      (unsigned long long)pub_proto_errors(x));
	}
	END_TURN();
	/* 7: active again and caught up. */
	BEGIN_TURN();
	if (reattach_producer(x) == 0) {
		n = pump(x, (unsigned)(cap / 2));
		CHECK(h, n == cap / 2 && pub_proto_errors(x) == 0, "step 7: published %u", n);
	}
	END_TURN();

	while (x->prod && honest_more(h)) {
		pump(x, 1 + pick(&rng, 8));
		if (pick(&rng, 256) == 0) {
			h->quarantines += pub_proto_errors(x);
			h->random_quarantines += pub_proto_errors(x);
			reattach_producer(x);
		}
	}
	if (x->prod) {
		h->quarantines += pub_proto_errors(x);
		h->random_quarantines += pub_proto_errors(x);
	}
	if ((code = honest_finish(h)) != 0)
		goto out;
	/* The hostile subscriber left: a fresh publisher runs freely. */
	if (x->prod && reattach_producer(x) == 0) {
		n = pump(x, (unsigned)(3 * cap));
		CHECK(h, n == 3 * cap, "final: published %u of %llu", n,
		      (unsigned long long)(3 * cap));
	}
	CHECK(h, h->random_quarantines > 0, "the random phase never tripped a check");
out:
	return code;
}

int honest_bcast(struct peer *p)
{
	struct portal_object_info info;
	struct honest h;
	int code = 0;

	honest_init(&h, p);
	if (portal_region_lookup(p->reg, STRESS_QUEUE_NAME, PORTAL_OBJ_BCAST, &info))
		return STRESS_EXIT_SETUP;
	honest_guard(&h, &info, 1);
	if (strcmp(p->kind, "bcast_pub") == 0) {
		/* Capacity from the directory: the driver's word. */
		struct hpub x = { .h = &h, .mem = info.addr, .len = (size_t)info.size,
				  .cap = info.param[2] };

		if (portal_bcast_attach(x.mem, x.len, -1, &x.prod) ||
		    portal_bcast_attach(x.mem, x.len, 0, &x.sub)) {
			code = STRESS_EXIT_SETUP;
		} else {
			code = honest_bcast_publisher(p, &x);
			printf("honest bcast_pub: published %llu, held %llu times\n",
			       (unsigned long long)x.published, (unsigned long long)x.held);
		}
		portal_bcast_detach(x.prod);
		portal_bcast_detach(x.sub);
		honest_report(&h, "published", x.published);
	} else {
		struct hsub s = { .h = &h, .mem = info.addr, .len = (size_t)info.size,
				  .lap = strcmp(p->kind, "bcast_sub_lap") == 0 };

		if (hs_attach(&s, 0)) {
			code = STRESS_EXIT_SETUP;
		} else {
			code = honest_bcast_subscriber(p, &s);
		}
		if (s.b)
			portal_bcast_detach(s.b);
		honest_report(&h, "random_quarantines", h.random_quarantines);
	}
	honest_unguard(&h);
	return code;
}
