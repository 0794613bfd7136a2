/* SPDX-License-Identifier: MIT */
/*
 * peer_hostile_arena.c - a hostile receiver of arena spans (scenario
 * "arena", see hostile.h).
 *
 * The honest side owns the arena "stress.arena": it allocates blocks,
 * writes them, and sends their spans over "stress.to_rx"; it takes spans
 * back from "stress.ret" with portal_arena_reclaim. The hostile receiver
 * checks what it gets (the span resolves, the contents are the owner's,
 * no block is handed out twice) and gives back, besides every span once
 * honestly, forged ones, each kind counted:
 *
 *   exdev     another region id                       -> PORTAL_EXDEV
 *   forged    unknown flag bits; an offset inside a    -> PORTAL_EFORGED
 *             block (not on its boundary)
 *   range     offset 0, near UINT64_MAX, in the arena  -> PORTAL_ERANGE
 *             header; length 2^32 - 1; the bump flag
 *             (this arena has no bump area)
 *   ambig     longer than any block: EFORGED inside    -> EFORGED or ERANGE
 *             the block area, ERANGE at its end
 *   stale     the right block, generation + 1 (block   -> PORTAL_ESTALE
 *             still out)
 *   dup       a span given back before (block free     -> PORTAL_ESTALE
 *             again, or reused at a new generation)
 *
 * At the end the owner checks its refusal counters against those counts
 * exactly, that every block came home, and that the allocator is whole:
 * every block can be allocated exactly once, freed, and allocated again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portal/arena.h"
#include "portal/ring.h"
#include "stress/hostile.h"

#define ARENA_NAME  "stress.arena"
#define TO_RX_NAME  "stress.to_rx"
#define RET_NAME    "stress.ret"
#define HOSTILE_SIDE 2u

/* Hostile result slot extras. */
enum { X_HONEST, X_EXDEV, X_FORGED, X_RANGE, X_AMBIG, X_STALE, X_DUP, X_RECEIVED };

#define MAX_HELD 64u
#define KEEP_RETURNED 32u

struct slot {
	struct portal_span span;
	uint64_t zero;
};

static int give(struct peer *p, portal_ring_t *ret, const struct portal_span *s)
{
	struct stress_backoff b = { 0 };
	int rc;

	while ((rc = portal_arena_give_back(ret, s)) == -EAGAIN) {
		if (atomic_load_explicit(&p->ctl->abort, memory_order_relaxed) ||
		    stress_now() > p->deadline)
			return -ETIMEDOUT;
		stress_backoff(&b);
	}
	return rc;
}

int hostile_arena(struct peer *p)
{
	struct portal_object_info arena;
	struct portal_span held[MAX_HELD], returned[KEEP_RETURNED], s;
	portal_ring_t *rx = NULL, *ret = NULL;
	uint64_t rng = p->seed, *x = p->res->extra, received = 0;
	unsigned nheld = 0, nret = 0;
	struct slot in;
	void *ptr;
	int rc, code = 0;

	if (portal_region_lookup(p->reg, ARENA_NAME, PORTAL_OBJ_ARENA, &arena) ||
	    portal_ring_open(p->reg, TO_RX_NAME, PORTAL_ROLE_CONSUMER, &rx) ||
	    portal_ring_open(p->reg, RET_NAME, PORTAL_ROLE_PRODUCER, &ret)) {
		code = STRESS_EXIT_SETUP;
		goto out;
	}
	if ((code = peer_barrier(p)) != 0)
		goto out;

	for (;;) {
		bool stop = atomic_load_explicit(&p->ctl->stop, memory_order_acquire);

		rc = portal_ring_dequeue(rx, &in);
		if (rc == 0) {
			uint64_t stamp;

			s = in.span;
			/* The span resolves inside the arena, the block holds what
			 * the owner wrote, and we do not hold it already. */
			if (portal_arena_resolve(&arena, portal_region_id(p->reg),
						 portal_region_base(p->reg), &s, &ptr) ||
			    !stress_msg_check(ptr, s.length, &stamp) ||
			    stamp != stress_stamp(0, received)) {
				peer_log(p, "span %llu (offset %llu, length %u) does not hold what "
					    "the owner wrote", (unsigned long long)received,
					 (unsigned long long)s.offset, s.length);
				p->res->errors++;
			}
			for (unsigned i = 0; i < nheld; i++)
				if (held[i].offset == s.offset) {
					peer_log(p, "block at %llu handed out while we hold it",
						 (unsigned long long)s.offset);
					p->res->errors++;
				}
			received++;
			if (nheld < MAX_HELD)
				held[nheld++] = s;
			else
				p->res->errors++;
		} else if (rc != -EAGAIN) {
			peer_log(p, "to_rx dequeue: %d", rc);
			p->res->errors++;
			break;
		} else if (stop) {
			break; /* the owner sends no more, and we have it all */
		}

		/* Misbehave, and now and then behave. */
		while (nheld && (pick(&rng, 4) || nheld > 40)) {
			unsigned i = pick(&rng, nheld), act = pick(&rng, 100);
			unsigned kind;

			s = held[i];
			if (act < 45 || nheld > 40) {
				/* Honest: give it back, once; keep a copy to replay. */
				if ((rc = give(p, ret, &s)) != 0)
					goto fail;
				x[X_HONEST]++;
				returned[nret++ % KEEP_RETURNED] = s;
				held[i] = held[--nheld];
				continue;
			}
			if (act < 85) {
				switch (pick(&rng, 9)) {
				case 0: s.region_id ^= 1; kind = X_EXDEV; break;
				case 1: s.flags = 0x80; kind = X_FORGED; break;
				case 2: s.offset += 8; s.length = 1; kind = X_FORGED; break;
				case 3: s.offset = 0; kind = X_RANGE; break;
				case 4: s.offset = UINT64_MAX - 3; s.length = 16; kind = X_RANGE; break;
				case 5: s.offset = arena.offset + 8; s.length = 8; kind = X_RANGE; break;
				case 6: s.length = UINT32_MAX; kind = X_RANGE; break;
				case 7: s.flags = PORTAL_SPAN_F_BUMP; kind = X_RANGE; break;
				default: s.length += 2048; kind = X_AMBIG; break;
				}
				if (pick(&rng, 10) == 0) {
					s = held[i];
					s.generation++;
					kind = X_STALE;
				}
			} else if (nret) {
				s = returned[pick(&rng, nret < KEEP_RETURNED ? nret : KEEP_RETURNED)];
				kind = X_DUP;
			} else {
				break;
			}
			if ((rc = give(p, ret, &s)) != 0)
				goto fail;
			x[kind]++;
		}
	}
	/* Give everything back, honestly. */
	while (nheld) {
		s = held[--nheld];
		if ((rc = give(p, ret, &s)) != 0)
			goto fail;
		x[X_HONEST]++;
	}
	x[X_RECEIVED] = received;
	p->res->messages = x[X_EXDEV] + x[X_FORGED] + x[X_RANGE] + x[X_AMBIG] + x[X_STALE] + x[X_DUP];
	printf("hostile arena: received %llu, returned honestly %llu, forged: exdev %llu forged "
	       "%llu range %llu ambiguous %llu stale %llu replayed %llu\n",
	       (unsigned long long)received, (unsigned long long)x[X_HONEST],
	       (unsigned long long)x[X_EXDEV], (unsigned long long)x[X_FORGED],
	       (unsigned long long)x[X_RANGE], (unsigned long long)x[X_AMBIG],
	       (unsigned long long)x[X_STALE], (unsigned long long)x[X_DUP]);
	hostile_done(p);
	goto out;
fail:
	peer_log(p, "give back: %d (%s)", rc, portal_strerror(rc));
	code = rc == -ETIMEDOUT ? STRESS_EXIT_TIMEOUT : STRESS_EXIT_FAIL;
out:
	portal_ring_detach(rx);
	portal_ring_detach(ret);
	return code;
}

/* ------------------------------------------------------------------ */
/* Honest owner                                                         */
/* ------------------------------------------------------------------ */

static void owner_final_checks(struct honest *h, portal_arena_t *a, const uint64_t *x,
			       uint64_t sent)
{
	struct portal_arena_stats st;
	uint64_t bogus = x[X_EXDEV] + x[X_FORGED] + x[X_RANGE] + x[X_AMBIG] + x[X_STALE] + x[X_DUP];

	portal_arena_stats(a, &st);
	printf("honest arena: allocs %llu frees %llu returned %llu refused: region %llu range %llu "
	       "forged %llu stale %llu double %llu; in use %u of %u\n",
	       (unsigned long long)st.allocs, (unsigned long long)st.frees,
	       (unsigned long long)st.returned, (unsigned long long)st.refused_region,
	       (unsigned long long)st.refused_range, (unsigned long long)st.refused_forged,
	       (unsigned long long)st.refused_stale, (unsigned long long)st.refused_double,
	       st.blocks_in_use, st.blocks_total);
	h->must += 6;
	CHECK(h, x[X_RECEIVED] == sent && x[X_HONEST] == sent,
	      "hostile received %llu and returned %llu of %llu sent",
	      (unsigned long long)x[X_RECEIVED], (unsigned long long)x[X_HONEST],
	      (unsigned long long)sent);
	CHECK(h, st.allocs == sent && st.frees == sent && st.blocks_in_use == 0,
	      "blocks: %llu allocated, %llu freed, %u still out", (unsigned long long)st.allocs,
	      (unsigned long long)st.frees, st.blocks_in_use);
	CHECK(h, st.returned == sent + bogus, "returned %llu, expected %llu",
	      (unsigned long long)st.returned, (unsigned long long)(sent + bogus));
	CHECK(h, st.refused_region == x[X_EXDEV], "EXDEV: refused %llu, sent %llu",
	      (unsigned long long)st.refused_region, (unsigned long long)x[X_EXDEV]);
	CHECK(h, st.refused_forged >= x[X_FORGED] && st.refused_range >= x[X_RANGE] &&
		  st.refused_forged + st.refused_range == x[X_FORGED] + x[X_RANGE] + x[X_AMBIG],
	      "EFORGED %llu / ERANGE %llu refused; sent forged %llu, range %llu, either %llu",
	      (unsigned long long)st.refused_forged, (unsigned long long)st.refused_range,
	      (unsigned long long)x[X_FORGED], (unsigned long long)x[X_RANGE],
	      (unsigned long long)x[X_AMBIG]);
	CHECK(h, st.refused_stale >= x[X_STALE] &&
		  st.refused_stale + st.refused_double == x[X_STALE] + x[X_DUP],
	      "ESTALE: %llu stale + %llu double refused; sent stale %llu, replayed %llu",
	      (unsigned long long)st.refused_stale, (unsigned long long)st.refused_double,
	      (unsigned long long)x[X_STALE], (unsigned long long)x[X_DUP]);
	h->quarantines = st.refused_region + st.refused_range + st.refused_forged +
			 st.refused_stale + st.refused_double;
	h->random_quarantines = h->quarantines;
}

/* Every block can be allocated exactly once (distinct, aligned blocks
 * inside the arena), then freed, twice over. */
static void owner_whole(struct honest *h, portal_arena_t *a,
			const struct portal_object_info *arena)
{
	struct portal_arena_stats st;
	struct portal_span *all;
	uint32_t total;
	int rc;

	portal_arena_stats(a, &st);
	total = st.blocks_total;
	all = calloc(total + 1, sizeof(*all));
	if (!all)
		return;
	for (int round = 0; round < 2; round++) {
		uint32_t n = 0;

		while (n <= total && (rc = portal_arena_alloc(a, 1, &all[n], NULL)) == 0)
			n++;
		h->must++;
		CHECK(h, n == total && rc == -ENOSPC, "round %d: allocated %u of %u blocks (%d)",
		      round, n, total, rc);
		for (uint32_t i = 0; i < n; i++) {
			CHECK(h, all[i].offset >= arena->offset + PORTAL_ARENA_HDR_SIZE &&
					 all[i].offset < arena->offset + arena->size &&
					 all[i].offset % 64 == 0,
			      "block %u at %llu is not in the arena", i,
			      (unsigned long long)all[i].offset);
			for (uint32_t j = 0; j < i; j++)
				CHECK(h, all[i].offset != all[j].offset,
				      "block at %llu handed out twice", (unsigned long long)all[i].offset);
		}
		for (uint32_t i = 0; i < n; i++) {
			rc = portal_arena_free(a, &all[i]);
			CHECK(h, rc == 0, "free of block %u: %d", i, rc);
		}
		portal_arena_stats(a, &st);
		CHECK(h, st.blocks_in_use == 0, "%u blocks in use after freeing all", st.blocks_in_use);
	}
	free(all);
}

int honest_arena(struct peer *p)
{
	struct portal_object_info keep[3];
	struct portal_arena_stats st;
	struct honest h;
	portal_arena_t *a = NULL;
	portal_ring_t *rx = NULL, *ret = NULL;
	struct slot out = { 0 };
	bool pending = false, stopped = false;
	uint64_t sent = 0, rng = p->seed;
	const uint64_t *x = p->ctl->res[HOSTILE_SIDE - 1].extra;
	void *ptr;
	int rc, code = 0;

	honest_init(&h, p);
	if (portal_region_lookup(p->reg, ARENA_NAME, PORTAL_OBJ_ARENA, &keep[0]) ||
	    portal_region_lookup(p->reg, TO_RX_NAME, PORTAL_OBJ_RING, &keep[1]) ||
	    portal_region_lookup(p->reg, RET_NAME, PORTAL_OBJ_RING, &keep[2]) ||
	    portal_arena_open(p->reg, ARENA_NAME, &a) ||
	    portal_ring_open(p->reg, TO_RX_NAME, PORTAL_ROLE_PRODUCER, &rx) ||
	    portal_ring_open(p->reg, RET_NAME, PORTAL_ROLE_CONSUMER, &ret)) {
		code = STRESS_EXIT_SETUP;
		goto out;
	}
	honest_guard(&h, keep, 3);
	if ((code = peer_barrier(p)) != 0)
		goto out;
	h.random_end = stress_now() + hostile_random_seconds();

	for (;;) {
		if (!pending && sent < p->count && stress_now() < h.random_end) {
			uint32_t len = 16 + pick(&rng, 1009);

			h_start(&h);
			rc = portal_arena_alloc(a, len, &out.span, &ptr);
			h_stop(&h);
			if (rc == 0) {
				stress_msg_fill(ptr, len, stress_stamp(0, sent));
				pending = true;
			} else if (rc == -ENOSPC) {
				h.empty++;
			} else {
				h_fail(&h, __LINE__, "alloc(%u): %d", len, rc);
				break;
			}
		}
		if (pending) {
			h_start(&h);
			rc = portal_ring_enqueue(rx, &out);
			h_stop(&h);
			if (rc == 0) {
				pending = false;
				sent++;
			} else if (rc != -EAGAIN) {
				h_fail(&h, __LINE__, "to_rx enqueue: %d", rc);
				break;
			}
		}
		if (!pending && !stopped && (sent == p->count || stress_now() >= h.random_end)) {
			/* Release: every span is in to_rx before the flag. */
			atomic_store_explicit(&p->ctl->stop, 1, memory_order_release);
			stopped = true;
		}
		h_start(&h);
		rc = portal_arena_reclaim(a, ret, 16);
		h_stop(&h);
		if (rc < 0) {
			h_fail(&h, __LINE__, "reclaim: %d (%s)", rc, portal_strerror(rc));
			break;
		}
		if (rc == 0 && stopped &&
		    atomic_load_explicit(&p->ctl->scratch[HOSTILE_DONE_SLOT], memory_order_acquire)) {
			/* The hostile side is done: whatever it gave back is in
			 * the ring now (acquire above). Drain it, then judge. */
			do {
				h_start(&h);
				rc = portal_arena_reclaim(a, ret, UINT32_MAX);
				h_stop(&h);
			} while (rc > 0);
			CHECK(&h, rc == 0, "final reclaim: %d", rc);
			break;
		}
		if (peer_should_stop(p)) {
			portal_arena_stats(a, &st);
			peer_log(p, "out of time: sent %llu, %u blocks out", (unsigned long long)sent,
				 st.blocks_in_use);
			code = STRESS_EXIT_TIMEOUT;
			goto out;
		}
		if (rc == 0 && (pending || stopped))
			sched_yield();
	}
	owner_final_checks(&h, a, x, sent);
	owner_whole(&h, a, &keep[0]);
out:
	honest_report(&h, "spans_refused", h.quarantines);
	portal_ring_detach(rx);
	portal_ring_detach(ret);
	portal_arena_detach(a);
	honest_unguard(&h);
	return code;
}
