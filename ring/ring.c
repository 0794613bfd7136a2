/* SPDX-License-Identifier: MIT */
/*
 * Descriptor rings: fixed-size slots, SPSC / MPSC / MPMC, burst operations.
 *
 * The shared header holds four 64-bit positions that only grow: prod_head and
 * prod_tail (written by producers), cons_head and cons_tail (written by
 * consumers). A single producer or consumer keeps its position in the handle
 * (authoritative) and only publishes it; a multi-producer or multi-consumer
 * side claims with a CAS on its head and publishes its tail in claim order.
 *
 * The peer's tail is read into a cache in the handle and re-read only when the
 * cache says full or empty. Every re-read is checked: it may not go backwards
 * and may not claim more than the capacity. A violation quarantines the
 * handle (PORTAL_EPROTO from then on).
 *
 * Crash recovery. A recoverable ring has a claim record per multi-side
 * handle after the slots. Before every CAS on its side's head, a handle
 * stores in its record the head the CAS expects and the count it claims
 * (release; the CAS is a release on success). So the record of whoever
 * won the claim starting at position x shows x from before its CAS until
 * the side's tail has passed its claim: there is no window in which a
 * claim exists and no record names it.
 *
 * Done marks and helping (recoverable sides only). A handle that has
 * copied its claim [x, x+n) in or out stores done = x+n in its record,
 * and then any handle may publish it: whoever finds the tail at the start
 * of a done claim moves the tail past it with a CAS (help()). Nobody ever
 * waits for an unfinished claim: a handle whose claim is behind one
 * returns at once, and the finisher of the earlier claim (or a recovery)
 * carries the tail over it. A handle renames its record only once the
 * tail has passed its last claim; until then a later call returns
 * -EAGAIN after a short bounded spin. A survivor that is told a holder
 * died finds the claim its record names, decides whether the dead holder
 * won it (the head moved past x, the tail has not, and no other record
 * shows x), and if its copy was not done finishes it - poison for a
 * producer's claim, a copy to the recovering caller for a consumer's -
 * marks it done and helps. docs/recovery.md has the argument in full.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/atomic_internal.h"
#include "common/log_internal.h"
#include "portal/ring.h"
#include "ring/ring_internal.h"

/* One side's claim state: its head and tail, and its records. */
struct claim_side {
	_Atomic uint64_t *head;
	_Atomic uint64_t *tail;
	struct portal_ring_claim *recs;
	uint32_t nrec;
};

struct portal_ring {
	struct portal_ring_hdr *hdr;
	uint8_t *slots;
	uint32_t mode;           /* private copies of the immutable header */
	uint32_t role;
	uint32_t slot_size;
	uint32_t capacity;
	uint32_t mask;
	uint32_t slot_shift;
	uint64_t pos;            /* single side: our position (authoritative) */
	uint64_t peer;           /* cached peer tail: cons_tail or prod_tail */
	bool quarantined;
	int qerr;                /* returned while quarantined */
	struct portal_ring_claim *claims; /* producer records, then consumer */
	uint32_t max_prod;       /* records per side (private copies) */
	uint32_t max_cons;
	struct portal_ring_claim *rec; /* ours, or NULL */
	int rec_slot;            /* its number on our side, or -1 */
	uint64_t rec_count;      /* count last stored in it */
	uint64_t rec_end;        /* end of our last done claim */
	bool rec_pending;        /* ... and the tail may not have passed it */
	struct claim_side own;   /* our side, when we hold a record */
	uint64_t poison;         /* pattern of a recovered slot */
	struct portal_ring_stats st;
};

/* Largest capacity. The doorbell's futex word (wake_seq) is 32 bits, and
 * our Spin model shows the futex compare is sound only while capacity plus
 * the notifies in flight stay below 2^32: keep capacity at most 2^30. */
#define RING_MAX_CAPACITY (1u << 30)
static_assert(sizeof(((struct portal_doorbell_shm *)0)->wake_seq) == 4 &&
		      (uint64_t)RING_MAX_CAPACITY <= (UINT64_C(1) << 32) / 4,
	      "ring capacity must stay far below the range of the doorbell's wake_seq");

static bool params_ok(uint32_t mode, uint32_t slot_size, uint32_t capacity)
{
	return mode >= PORTAL_RING_SPSC && mode <= PORTAL_RING_MPMC && ring_is_pow2(slot_size) &&
	       slot_size >= 8 && slot_size <= 256 && ring_is_pow2(capacity) && capacity >= 2 &&
	       capacity <= RING_MAX_CAPACITY;
}

static bool recovery_ok(uint32_t mode, uint32_t max_prod, uint32_t max_cons, uint32_t rflags)
{
	return !(rflags & ~PORTAL_RING_RF_MASK) && max_prod <= PORTAL_RING_MAX_CLAIMS &&
	       max_cons <= PORTAL_RING_MAX_CLAIMS && (!max_prod || mode != PORTAL_RING_SPSC) &&
	       (!max_cons || mode == PORTAL_RING_MPMC);
}

size_t portal_ring_memsize_recoverable(const struct portal_ring_params *p,
				       const struct portal_ring_recovery_params *rp)
{
	size_t n = 0;

	if (!p || p->flags || !params_ok(p->mode, p->slot_size, p->capacity))
		return 0;
	if (rp) {
		if (!recovery_ok(p->mode, rp->max_producers, rp->max_consumers, rp->flags))
			return 0;
		n = (size_t)rp->max_producers + rp->max_consumers;
	}
	return PORTAL_RING_HDR_SIZE + (size_t)p->capacity * p->slot_size +
	       n * sizeof(struct portal_ring_claim);
}

size_t portal_ring_memsize(const struct portal_ring_params *p)
{
	return portal_ring_memsize_recoverable(p, NULL);
}

int portal_ring_init_recoverable(void *mem, size_t len, const struct portal_ring_params *p,
				 const struct portal_ring_recovery_params *rp)
{
	struct portal_ring_hdr *h = mem;
	size_t need = portal_ring_memsize_recoverable(p, rp);
	size_t slots;

	if (!mem || !need || len < need || (uintptr_t)mem % PORTAL_CACHELINE)
		return -EINVAL;
	slots = (size_t)p->capacity * p->slot_size;
	memset(h, 0, PORTAL_RING_HDR_SIZE);
	/* Every record FREE, no claim. */
	memset((uint8_t *)mem + PORTAL_RING_HDR_SIZE + slots, 0,
	       need - PORTAL_RING_HDR_SIZE - slots);
	h->magic = PORTAL_RING_MAGIC;
	h->version = 1;
	h->mode = (uint16_t)p->mode;
	h->slot_size = p->slot_size;
	h->capacity = p->capacity;
	h->obj_size = need;
	if (rp) {
		h->max_producers = rp->max_producers;
		h->max_consumers = rp->max_consumers;
		h->rflags = rp->flags;
		h->poison = rp->flags & PORTAL_RING_F_POISON ? rp->poison : UINT64_MAX;
	} else {
		h->poison = UINT64_MAX;
	}
	/* Relaxed: nobody may attach before init returns; the region directory
	 * (or the caller's own hand-off) publishes the ring. */
	atomic_store_explicit(&h->prod_head, 0, memory_order_relaxed);
	atomic_store_explicit(&h->prod_tail, 0, memory_order_relaxed);
	atomic_store_explicit(&h->cons_head, 0, memory_order_relaxed);
	atomic_store_explicit(&h->cons_tail, 0, memory_order_relaxed);
	return 0;
}

int portal_ring_init(void *mem, size_t len, const struct portal_ring_params *p)
{
	return portal_ring_init_recoverable(mem, len, p, NULL);
}

static int quarantine(portal_ring_t *r, const char *why, uint64_t seen)
{
	if (!r->quarantined)
		portal_log(PORTAL_LOG_ERROR, "ring %p quarantined: %s (peer wrote %llu)",
			   (void *)r->hdr, why, (unsigned long long)seen);
	r->quarantined = true;
	r->qerr = PORTAL_EPROTO;
	r->st.proto_errors++;
	return PORTAL_EPROTO;
}

/* Side ROLE's head, tail and records. -EINVAL if it has no records. */
static int claim_side(portal_ring_t *r, enum portal_ring_role role, struct claim_side *sd)
{
	if (role == PORTAL_ROLE_PRODUCER) {
		sd->head = &r->hdr->prod_head;
		sd->tail = &r->hdr->prod_tail;
		sd->recs = r->claims;
		sd->nrec = r->max_prod;
	} else {
		sd->head = &r->hdr->cons_head;
		sd->tail = &r->hdr->cons_tail;
		sd->recs = r->claims + r->max_prod;
		sd->nrec = r->max_cons;
	}
	return sd->nrec ? 0 : -EINVAL;
}

static int retired_settle(portal_ring_t *r, const struct claim_side *sd,
			  struct portal_ring_claim *c);

/*
 * Take claim record SLOT (or the first free one) of side SD for handle R:
 * a FREE record, or else a RETIRED one whose last claim the tail has
 * passed (judged under the RECOVERING lock, so it cannot change under us).
 */
static int claim_take(portal_ring_t *r, const struct claim_side *sd, int slot, uint64_t owner,
		      int *taken)
{
	uint32_t i, pass, lo = 0, hi = sd->nrec;

	if (slot != PORTAL_RING_CLAIM_ANY) {
		if (slot < 0 || (uint32_t)slot >= sd->nrec)
			return -EINVAL;
		lo = (uint32_t)slot;
		hi = lo + 1;
	}
	for (pass = 0; pass < 2; pass++) {
		for (i = lo; i < hi; i++) {
			struct portal_ring_claim *c = &sd->recs[i];
			uint32_t want = pass ? PORTAL_CLAIM_RETIRED : PORTAL_CLAIM_FREE;
			uint32_t st = want;
			int rc;

			/* Acquire: pairs with the release that freed or retired
			 * it (detach, recovery), so the holder before us is
			 * finished with it and its record is visible. */
			if (!atomic_compare_exchange_strong_explicit(
				    &c->state, &st,
				    pass ? PORTAL_CLAIM_RECOVERING : PORTAL_CLAIM_HELD,
				    memory_order_acquire, memory_order_relaxed))
				continue;
			if (pass) {
				rc = retired_settle(r, sd, c);
				if (rc <= 0) {
					/* Release: back as we found it (our help
					 * included); pairs with the next locker. */
					atomic_store_explicit(&c->state, PORTAL_CLAIM_RETIRED,
							      memory_order_release);
					if (rc < 0)
						return rc;
					continue;
				}
			}
			/* Relaxed: a tag for find_claims; no claim yet (count 0). */
			atomic_store_explicit(&c->owner, owner, memory_order_relaxed);
			atomic_store_explicit(&c->count, 0, memory_order_relaxed);
			if (pass)
				/* Release: ours now; pairs with the acquire of a
				 * later locker (recovery). */
				atomic_store_explicit(&c->state, PORTAL_CLAIM_HELD,
						      memory_order_release);
			*taken = (int)i;
			return 0;
		}
	}
	return -EBUSY;
}

int portal_ring_attach_claim(void *mem, size_t len, enum portal_ring_role role, int slot,
			     uint64_t owner, portal_ring_t **out)
{
	struct portal_ring_hdr h;
	portal_ring_t *r;
	uint64_t prod, cons, base;
	uint32_t nrec;
	int rc;

	if (!mem || !out || (role != PORTAL_ROLE_PRODUCER && role != PORTAL_ROLE_CONSUMER) ||
	    (uintptr_t)mem % PORTAL_CACHELINE)
		return -EINVAL;
	if (len < PORTAL_RING_HDR_SIZE)
		return PORTAL_EPROTO;
	memcpy(&h, mem, offsetof(struct portal_ring_hdr, pad0));
	if (h.magic != PORTAL_RING_MAGIC || h.version != 1 ||
	    !params_ok(h.mode, h.slot_size, h.capacity) || h.obj_size > len)
		return PORTAL_EPROTO;
	base = PORTAL_RING_HDR_SIZE + (uint64_t)h.capacity * h.slot_size;
	if (h.obj_size == base) {
		/* No claim records: the recovery fields are not ours to read. */
		h.max_producers = h.max_consumers = 0;
		if (h.rflags != PORTAL_RING_F_POISON)
			h.poison = UINT64_MAX;
	} else if (h.max_producers + h.max_consumers == 0 ||
		   !recovery_ok(h.mode, h.max_producers, h.max_consumers, h.rflags) ||
		   h.obj_size != base + (uint64_t)(h.max_producers + h.max_consumers) *
						sizeof(struct portal_ring_claim)) {
		return PORTAL_EPROTO;
	} else if (!(h.rflags & PORTAL_RING_F_POISON)) {
		h.poison = UINT64_MAX;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->hdr = mem;
	r->slots = (uint8_t *)mem + PORTAL_RING_HDR_SIZE;
	r->mode = h.mode;
	r->role = role;
	r->slot_size = h.slot_size;
	r->capacity = h.capacity;
	r->mask = h.capacity - 1;
	r->slot_shift = (uint32_t)__builtin_ctz(h.slot_size);
	r->qerr = PORTAL_EPROTO;
	r->claims = (struct portal_ring_claim *)(void *)((uint8_t *)mem + base);
	r->max_prod = h.max_producers;
	r->max_cons = h.max_consumers;
	r->poison = h.poison;
	r->rec_slot = -1;

	/* Start from the published tails; a restarted side resumes there.
	 * cons_tail first, then prod_tail, then cons_tail again: both only
	 * grow, so with cons_tail unchanged across the prod_tail load the
	 * pair is one the ring really held (prod_tail first would let live
	 * consumers pass the loaded prod_tail before cons_tail is read). A
	 * peer that keeps moving cons_tail gets a bounded number of tries. */
	for (unsigned tries = 0;; tries++) {
		uint64_t again;

		cons = atomic_load_explicit(&r->hdr->cons_tail, memory_order_acquire);
		prod = atomic_load_explicit(&r->hdr->prod_tail, memory_order_acquire);
		again = atomic_load_explicit(&r->hdr->cons_tail, memory_order_acquire);
		if (again == cons || tries == 64)
			break;
		portal_cpu_relax();
	}
	if (prod - cons > r->capacity) {
		free(r);
		return PORTAL_EPROTO;
	}
	r->pos = role == PORTAL_ROLE_PRODUCER ? prod : cons;
	r->peer = role == PORTAL_ROLE_PRODUCER ? cons : prod;

	/* A multi-side handle of a side with records must hold one. */
	nrec = role == PORTAL_ROLE_PRODUCER ? r->max_prod : r->max_cons;
	if (nrec) {
		claim_side(r, role, &r->own);
		rc = claim_take(r, &r->own, slot, owner, &r->rec_slot);
		if (rc) {
			free(r);
			return rc;
		}
		r->rec = &r->own.recs[r->rec_slot];
	}
	*out = r;
	return 0;
}

int portal_ring_attach(void *mem, size_t len, enum portal_ring_role role, portal_ring_t **out)
{
	return portal_ring_attach_claim(mem, len, role, PORTAL_RING_CLAIM_ANY, (uint64_t)getpid(),
					out);
}

static int rec_prev_wait(portal_ring_t *r);

void portal_ring_detach(portal_ring_t *r)
{
	uint32_t st = PORTAL_CLAIM_HELD;
	uint32_t to = PORTAL_CLAIM_FREE;

	if (r && r->rec) {
		/* Our last claim must stay readable until the tail has passed
		 * it: help a little, and if an earlier claim is still open,
		 * retire the record rather than wait (an attach reclaims it). */
		if (r->rec_pending && rec_prev_wait(r))
			to = PORTAL_CLAIM_RETIRED;
		else
			/* Relaxed: no claim; the release below publishes it. */
			atomic_store_explicit(&r->rec->count, 0, memory_order_relaxed);
		/* Release: our last use of the record, then FREE (or RETIRED);
		 * pairs with the acquire in claim_take. A CAS, so a record
		 * that a mistaken recovery already took stays theirs. */
		atomic_compare_exchange_strong_explicit(&r->rec->state, &st, to,
							memory_order_release, memory_order_relaxed);
	}
	free(r);
}

int portal_ring_claim_slot(const portal_ring_t *r)
{
	return r ? r->rec_slot : -1;
}

/* ---- slot copies, split at the wrap ---- */

static inline void copy_in(portal_ring_t *r, uint64_t pos, const void *src, unsigned n)
{
	uint32_t idx = (uint32_t)pos & r->mask;
	uint32_t first = r->capacity - idx;

	if (likely(n <= first)) {
		memcpy(r->slots + ((size_t)idx << r->slot_shift), src, (size_t)n << r->slot_shift);
		return;
	}
	memcpy(r->slots + ((size_t)idx << r->slot_shift), src, (size_t)first << r->slot_shift);
	memcpy(r->slots, (const uint8_t *)src + ((size_t)first << r->slot_shift),
	       (size_t)(n - first) << r->slot_shift);
}

static inline void copy_out(portal_ring_t *r, uint64_t pos, void *dst, unsigned n)
{
	uint32_t idx = (uint32_t)pos & r->mask;
	uint32_t first = r->capacity - idx;

	if (likely(n <= first)) {
		memcpy(dst, r->slots + ((size_t)idx << r->slot_shift), (size_t)n << r->slot_shift);
		return;
	}
	memcpy(dst, r->slots + ((size_t)idx << r->slot_shift), (size_t)first << r->slot_shift);
	memcpy((uint8_t *)dst + ((size_t)first << r->slot_shift), r->slots,
	       (size_t)(n - first) << r->slot_shift);
}

/*
 * Re-read the consumer tail for a producer whose own claim position is POS.
 * Valid: it did not go backwards from our cache and does not pass POS.
 */
static inline int refresh_cons(portal_ring_t *r, uint64_t pos)
{
	/* A2: consumers' reads of the slots happen before we reuse them;
	 * pairs with R2 in dequeue. */
	uint64_t cons = atomic_load_explicit(&r->hdr->cons_tail, memory_order_acquire);

	if (PORTAL_NEVER(cons - r->peer > r->capacity || pos - cons > r->capacity))
		return quarantine(r, "consumer tail out of range", cons);
	r->peer = cons;
	return 0;
}

/* Re-read the producer tail for a consumer at POS: no going backwards, and
 * at most a full ring ahead of POS. */
static inline int refresh_prod(portal_ring_t *r, uint64_t pos)
{
	/* A1: the producer's slot writes happen before we read them; pairs
	 * with R1 in enqueue. */
	uint64_t prod = atomic_load_explicit(&r->hdr->prod_tail, memory_order_acquire);

	if (PORTAL_NEVER(prod - r->peer > r->capacity || prod - pos > r->capacity))
		return quarantine(r, "producer tail out of range", prod);
	r->peer = prod;
	return 0;
}

#define CHECK_CALL(r, want_role, ok_mode)                                            \
	do {                                                                         \
		if (unlikely((r)->quarantined))                                      \
			return (r)->qerr;                                            \
		if (unlikely((r)->role != (want_role) || !(ok_mode)))                \
			return -EINVAL;                                              \
	} while (0)

int portal_ring_enqueue_burst_sp(portal_ring_t *r, const void *objs, unsigned n)
{
	uint64_t pos;
	uint64_t room;
	int rc;

	CHECK_CALL(r, PORTAL_ROLE_PRODUCER, r->mode == PORTAL_RING_SPSC);
	pos = r->pos;
	room = r->peer + r->capacity - pos;
	if (room < n) {
		rc = refresh_cons(r, pos);
		if (rc)
			return rc;
		room = r->peer + r->capacity - pos;
	}
	if (n > room)
		n = (unsigned)room;
	if (n == 0) {
		r->st.full++;
		return 0;
	}
	copy_in(r, pos, objs, n);
	r->pos = pos + n;
	/* R1: slots written, then prod_tail; pairs with A1 in dequeue. */
	atomic_store_explicit(&r->hdr->prod_tail, pos + n, memory_order_release);
	r->st.enqueued += n;
	return (int)n;
}

int portal_ring_dequeue_burst_sc(portal_ring_t *r, void *objs, unsigned n)
{
	uint64_t pos;
	uint64_t avail;
	int rc;

	CHECK_CALL(r, PORTAL_ROLE_CONSUMER, r->mode != PORTAL_RING_MPMC);
	pos = r->pos;
	avail = r->peer - pos;
	if (avail < n) {
		rc = refresh_prod(r, pos);
		if (rc)
			return rc;
		avail = r->peer - pos;
	}
	if (n > avail)
		n = (unsigned)avail;
	if (n == 0) {
		r->st.empty++;
		return 0;
	}
	copy_out(r, pos, objs, n);
	r->pos = pos + n;
	/* R2: slots read, then cons_tail; pairs with A2 in enqueue. */
	atomic_store_explicit(&r->hdr->cons_tail, pos + n, memory_order_release);
	r->st.dequeued += n;
	return (int)n;
}

/*
 * Back off while waiting for another claimant: spin a little (it is
 * usually running and about to publish), then yield (it was preempted),
 * then sleep, 2 us doubling to 1 ms (busy claimants outnumber the CPUs, or
 * it is stopped or dead). *N counts the calls; returns false once *N has
 * passed LIMIT (0: no limit), having waited about 1 ms in all by then if
 * LIMIT is RECOVER_WAITS.
 */
#define BACKOFF_SPINS  128u
#define BACKOFF_YIELDS 32u
#define BACKOFF_SLEEP_MAX_SHIFT 9u /* 2 us << 9 = 1 ms */
#define RECOVER_WAITS (BACKOFF_SPINS + BACKOFF_YIELDS + BACKOFF_SLEEP_MAX_SHIFT + 1)

static bool backoff(unsigned *n, unsigned limit)
{
	unsigned k = (*n)++;
	struct timespec ts = { 0, 0 };

	if (limit && k >= limit)
		return false;
	if (k < BACKOFF_SPINS) {
		portal_cpu_relax();
		return true;
	}
	if (k < BACKOFF_SPINS + BACKOFF_YIELDS) {
		sched_yield();
		return true;
	}
	k -= BACKOFF_SPINS + BACKOFF_YIELDS;
	ts.tv_nsec = 2000L << (k < BACKOFF_SLEEP_MAX_SHIFT ? k : BACKOFF_SLEEP_MAX_SHIFT);
	nanosleep(&ts, NULL);
	return true;
}

/*
 * Wait until the claims before ours have been published, then publish ours.
 * The earlier claimants are in our trust domain (MP/MC rings never cross a VM
 * boundary); a long wait means one was preempted, or died: recovery by a
 * survivor publishes a dead one's claim for it. Returns 0, or -EOWNERDEAD
 * if the tail has passed our claim: a recovery took it over, believing us
 * dead, and we must not publish.
 */
static int publish_in_order(_Atomic uint64_t *tail, uint64_t old, uint64_t new_pos)
{
	unsigned waits = 0;
	uint64_t t;

	/* A3: the earlier claimants' publish, then ours, so that one acquire
	 * of our tail covers their slots too; pairs with the R1/R2 below
	 * as executed by the claimant before us (or R4/R5 in recovery). */
	while ((t = atomic_load_explicit(tail, memory_order_acquire)) != old) {
		if (unlikely((int64_t)(t - old) > 0))
			return -EOWNERDEAD;
		backoff(&waits, 0);
	}
	/* R1/R2 (MP/MC): our slots, then the tail; pairs with A1/A2. */
	atomic_store_explicit(tail, new_pos, memory_order_release);
	return 0;
}

/* Our claim was recovered, or our record taken, while we were alive: stop
 * using this handle (and its record, which is no longer ours). */
static int claim_lost(portal_ring_t *r)
{
	portal_log(PORTAL_LOG_ERROR, "ring %p: our claim was recovered by another party",
		   (void *)r->hdr);
	r->rec = NULL;
	r->rec_slot = -1;
	r->quarantined = true;
	r->qerr = -EOWNERDEAD;
	return -EOWNERDEAD;
}

/* ---- recoverable sides: done marks and helping ---- */

void (*ring_test_hook_before_done)(portal_ring_t *r, uint64_t head, unsigned n);

/*
 * Bound on the wait of a handle whose last claim is done but not yet
 * published (an earlier claim of another handle is open): about 128
 * spins and 4 yields, then -EAGAIN. It never sleeps.
 */
#define PREV_WAITS (BACKOFF_SPINS + 4u)

/*
 * The done claim that starts at T on side SD: 1 with *NP its count, or 0.
 * A record shows one iff count > 0 and done == head + count; its holder
 * renames it only after the tail has passed it (rec_prev_wait), and every
 * earlier done value of the record is at most its head, so a torn read of
 * a record being renamed never passes the test for a claim at T that is
 * still unpublished. Only the CAS in help() acts on the answer.
 */
static int find_done(portal_ring_t *r, const struct claim_side *sd, uint64_t t, uint64_t *np)
{
	uint32_t i;

	for (i = 0; i < sd->nrec; i++) {
		struct portal_ring_claim *c = &sd->recs[i];
		/* H1: pairs with D1 (the done mark, by the holder or by a
		 * recovery): their copy of the slots, then our publish P1.
		 * seq_cst: against D1 then S1 in the finisher (a store-load
		 * pair on each side): if it did not see the tail at its claim,
		 * we see its mark. Read first, so head and count below are
		 * the holder's for this mark. */
		uint64_t e = atomic_load_explicit(&c->done, memory_order_seq_cst);
		uint64_t x, n;

		/* t < e <= t + capacity, else not a claim at t. */
		if (e - t - 1 >= r->capacity)
			continue;
		/* Relaxed: stored before D1, which H1 read. */
		x = atomic_load_explicit(&c->head, memory_order_relaxed);
		n = atomic_load_explicit(&c->count, memory_order_relaxed);
		if (x != t || n == 0 || x + n != e)
			continue;
		*np = n;
		return 1;
	}
	return 0;
}

/*
 * Publish done claims: from *TP, a value of SD's tail, while the claim at
 * the tail is done (anyone's), move the tail past it with a CAS. Stops
 * when nothing more is claimed, when the claim at the tail is not done,
 * or when a CAS fails (whoever moved the tail goes on from there). *TP:
 * the tail as last seen. Returns 0, or PORTAL_EPROTO (a done claim beyond
 * its side's head: a corrupt record). Every step publishes a claim; it
 * never waits for one.
 */
static int help(portal_ring_t *r, const struct claim_side *sd, uint64_t *tp)
{
	uint64_t t = *tp, n, h;
	int rc = 0;

	for (;;) {
		/* H0: nothing claimed at or past the tail: stop. seq_cst: after
		 * our P1 (or S1), against a claimant's C1/C2 then S1: if we
		 * read the head before its claim, it reads our tail. */
		h = atomic_load_explicit(sd->head, memory_order_seq_cst);
		if (h == t || find_done(r, sd, t, &n) <= 0)
			break;
		if ((int64_t)(h - (t + n)) < 0) {
			/* Acquire: a head read after H1 covers that claim's CAS. */
			h = atomic_load_explicit(sd->head, memory_order_acquire);
			if (PORTAL_NEVER((int64_t)(h - (t + n)) < 0)) {
				rc = quarantine(r, "done claim beyond its side's head", t + n);
				break;
			}
		}
		/* P1: the claim's copy (ordered before by H1), then the tail;
		 * pairs with A1/A2 on the other side, A5 of the claim's holder
		 * and H1/H0 of other helpers. Tails of a recoverable side move
		 * only by this CAS, so every later value is in its release
		 * sequence. Acquire on failure: the new tail is someone's P1. */
		if (!atomic_compare_exchange_strong_explicit(sd->tail, &t, t + n,
							     memory_order_seq_cst,
							     memory_order_acquire))
			break;
		t += n;
	}
	*tp = t;
	return rc;
}

/*
 * Our claim [X, X+N) is copied: mark it done, publish it if the tail is at
 * X, and help past it. If an earlier claim is still open we return at once
 * and whoever finishes it publishes ours. Returns 0, -EOWNERDEAD (a
 * recovery took our claim), or PORTAL_EPROTO (a corrupt record met while
 * helping: the handle is quarantined, our claim is done all the same).
 */
static int rec_finish(portal_ring_t *r, uint64_t x, unsigned n)
{
	uint64_t t = x;
	int rc = 0;

	if (unlikely(ring_test_hook_before_done))
		ring_test_hook_before_done(r, x, n);
	/* D1: our copy in (slot writes) or out (slot reads), then the mark;
	 * pairs with H1 in whoever publishes it, and through its P1 with
	 * A1/A2 of the other side. seq_cst (an exchange): then S1. */
	atomic_exchange_explicit(&r->rec->done, x + n, memory_order_seq_cst);
	/* Relaxed: a recovery that took our claim (believing us dead) has
	 * locked the record before it read the claim; best effort. */
	if (unlikely(atomic_load_explicit(&r->rec->state, memory_order_relaxed) !=
		     PORTAL_CLAIM_HELD))
		return claim_lost(r);
	r->rec_end = x + n;
	/* S1: the tail at our claim? Then publish it ourselves (P1). A seq_cst
	 * CAS: as a load on failure it is the other half of H1's pair. */
	if (atomic_compare_exchange_strong_explicit(r->own.tail, &t, x + n, memory_order_seq_cst,
						    memory_order_seq_cst)) {
		t = x + n;
		rc = help(r, &r->own, &t);
	}
	/* Not before X: someone published us already (t past X), or an
	 * earlier claim is open (t before X) and its finisher will. */
	r->rec_pending = (int64_t)(t - (x + n)) < 0;
	return rc;
}

/*
 * Before a new claim: wait (bounded, no sleeping) until the tail has passed
 * our last done claim, helping it along. 0, -EAGAIN (an earlier claim of
 * another handle is not finished yet), or PORTAL_EPROTO.
 */
static int rec_prev_wait(portal_ring_t *r)
{
	unsigned waits = 0;
	uint64_t t;
	int rc;

	for (;;) {
		/* A5: the tail past our claim, then we may rename our record;
		 * pairs with the P1 that passed it (or one after it, in its
		 * release sequence), so every helper's reads of our record
		 * happen before our next record_claim. */
		t = atomic_load_explicit(r->own.tail, memory_order_acquire);
		if ((int64_t)(t - r->rec_end) < 0) {
			rc = help(r, &r->own, &t);
			if (rc)
				return rc;
		}
		/* t is ours from P1 or a failed CAS (acquire): as A5. */
		if ((int64_t)(t - r->rec_end) >= 0) {
			r->rec_pending = false;
			return 0;
		}
		if (!backoff(&waits, PREV_WAITS))
			return -EAGAIN;
	}
}

/* Start of a recoverable multi-side call: our record is still ours and
 * our last claim is published. 0, -EAGAIN, -EOWNERDEAD, PORTAL_EPROTO. */
static inline int rec_begin(portal_ring_t *r)
{
	/* Relaxed: while we hold the record only a recovery (a mistaken
	 * one: we are alive) changes its state. */
	if (unlikely(atomic_load_explicit(&r->rec->state, memory_order_relaxed) !=
		     PORTAL_CLAIM_HELD))
		return claim_lost(r);
	return r->rec_pending ? rec_prev_wait(r) : 0;
}

/*
 * Multi-producer refresh of the cached consumer tail. HEAD is our snapshot of
 * prod_head and may be stale. Honest peers keep cons_tail <= prod_tail <=
 * prod_head, and cons_tail never goes backwards; a prod_head read after
 * cons_tail is therefore never behind it.
 */
static int refresh_cons_mp(portal_ring_t *r, uint64_t *head)
{
	/* A2 (MP): pairs with R2 in dequeue. */
	uint64_t cons = atomic_load_explicit(&r->hdr->cons_tail, memory_order_acquire);

	if (PORTAL_NEVER((int64_t)(cons - r->peer) < 0))
		return quarantine(r, "consumer tail went backwards", cons);
	if ((int64_t)(cons - *head) > 0) {
		/* Relaxed: a fresher snapshot; the CAS revalidates it. */
		*head = atomic_load_explicit(&r->hdr->prod_head, memory_order_relaxed);
		if (PORTAL_NEVER((int64_t)(cons - *head) > 0))
			return quarantine(r, "consumer tail ahead of producers", cons);
	}
	r->peer = cons;
	return 0;
}

/* Multi-consumer refresh of the cached producer tail; HEAD is our snapshot
 * of cons_head. A cons_head read after prod_tail is at least prod_tail -
 * capacity for honest producers. */
static int refresh_prod_mc(portal_ring_t *r, uint64_t *head)
{
	/* A1 (MC): pairs with R1 in enqueue. */
	uint64_t prod = atomic_load_explicit(&r->hdr->prod_tail, memory_order_acquire);

	if (PORTAL_NEVER((int64_t)(prod - r->peer) < 0))
		return quarantine(r, "producer tail went backwards", prod);
	if ((int64_t)(prod - *head) > (int64_t)r->capacity || (int64_t)(prod - *head) < 0) {
		/* Relaxed: a fresher snapshot; the CAS revalidates it. */
		*head = atomic_load_explicit(&r->hdr->cons_head, memory_order_relaxed);
		if (PORTAL_NEVER((int64_t)(prod - *head) > (int64_t)r->capacity))
			return quarantine(r, "producer tail beyond capacity", prod);
	}
	r->peer = prod;
	return 0;
}

/*
 * Check a snapshot H of a claim head (prod_head or cons_head) against its
 * own side's tail: a head behind its tail, or more than a ring ahead of it,
 * would make publish_in_order wait for ever. Each bound is checked against
 * a tail read on the side that makes it hold for honest claimants racing
 * with us: head >= T1, a tail read before the head, and head - cap <= a
 * tail read after it. Run on the first snapshot and again on every new one
 * (after a failed CAS or a refresh), before it is used to claim.
 */
static int check_claim_head(portal_ring_t *r, _Atomic uint64_t *tail, uint64_t t1, uint64_t h)
{
	/* Relaxed: the head was read before (acquire, or by the CAS that
	 * failed with acquire); tails only grow. */
	uint64_t t2 = atomic_load_explicit(tail, memory_order_relaxed);

	if (PORTAL_NEVER((int64_t)(h - t1) < 0 || (int64_t)(h - t2) > (int64_t)r->capacity))
		return quarantine(r, "claim head out of range of its tail", h);
	return 0;
}

static int load_claim_head(portal_ring_t *r, _Atomic uint64_t *head, _Atomic uint64_t *tail,
			   uint64_t *t1, uint64_t *out)
{
	/* Acquire: tails only grow, and the head read next is ordered after. */
	*t1 = atomic_load_explicit(tail, memory_order_acquire);
	/* Acquire: orders the second tail read after this one. The CAS later
	 * revalidates the head; the peer's tail is read with A1/A2. */
	*out = atomic_load_explicit(head, memory_order_acquire);
	return check_claim_head(r, tail, *t1, *out);
}

/*
 * Name the claim we are about to try, [HEAD, HEAD + N), in our record.
 * Release: with the release of a successful claim CAS (C1/C2) it makes the
 * record visible to a recovery that sees the head moved (pairs with A4).
 */
static inline void record_claim(portal_ring_t *r, uint64_t head, unsigned n)
{
	if (r->rec_count != n) {
		/* Relaxed: ordered before the head by its release. */
		atomic_store_explicit(&r->rec->count, n, memory_order_relaxed);
		r->rec_count = n;
	}
	atomic_store_explicit(&r->rec->head, head, memory_order_release);
}

/* We named a claim and then did not make it (full / empty): say so, or a
 * recovery of whoever did win it would wait on our record. */
static inline void record_none(portal_ring_t *r)
{
	/* Relaxed: a record whose CAS failed never owned anything; this only
	 * lets a recovery stop waiting on it. */
	atomic_store_explicit(&r->rec->count, 0, memory_order_relaxed);
	r->rec_count = 0;
}

/* C1/C2: claim [HEAD, HEAD+N) of a side's head. When we hold a record:
 * release on success (pairs with A4 in recovery), and seq_cst: against a
 * helper's P1 then H0, with our S1 after it (help()). Otherwise the slots
 * are ours only after success and are published by R1/R2. Acquire on
 * failure (and so, as C11 wants, on success): orders the re-check of the
 * new head's tail after it; free on x86, where every CAS is a full
 * barrier. */
static inline bool claim_cas(portal_ring_t *r, _Atomic uint64_t *h, uint64_t *head, unsigned n)
{
	if (r->rec)
		return atomic_compare_exchange_weak_explicit(h, head, *head + n,
							     memory_order_seq_cst,
							     memory_order_acquire);
	return atomic_compare_exchange_weak_explicit(h, head, *head + n, memory_order_acquire,
						     memory_order_acquire);
}

int portal_ring_enqueue_burst_mp(portal_ring_t *r, const void *objs, unsigned n)
{
	uint64_t head, t1;
	int64_t room;
	unsigned want = n;
	bool named = false;
	int rc;

	CHECK_CALL(r, PORTAL_ROLE_PRODUCER, r->mode != PORTAL_RING_SPSC);
	if (r->rec) {
		rc = rec_begin(r);
		if (rc)
			return rc;
	}
	rc = load_claim_head(r, &r->hdr->prod_head, &r->hdr->prod_tail, &t1, &head);
	if (rc)
		return rc;
	for (;;) {
		n = want;
		room = (int64_t)(r->peer + r->capacity - head);
		if (room < (int64_t)n) {
			uint64_t before = head;

			rc = refresh_cons_mp(r, &head);
			if (!rc && head != before)
				rc = check_claim_head(r, &r->hdr->prod_tail, t1, head);
			if (rc)
				goto fail;
			room = (int64_t)(r->peer + r->capacity - head);
		}
		if (room < (int64_t)n)
			n = room > 0 ? (unsigned)room : 0;
		if (n == 0) {
			if (named)
				record_none(r);
			r->st.full++;
			return 0;
		}
		if (r->rec) {
			record_claim(r, head, n);
			named = true;
		}
		if (claim_cas(r, &r->hdr->prod_head, &head, n))
			break;
		rc = check_claim_head(r, &r->hdr->prod_tail, t1, head);
		if (rc)
			goto fail;
	}
	copy_in(r, head, objs, n);
	if (r->rec) {
		/* Committed by the done mark: a quarantine met while helping
		 * after it shows from the next call. */
		if (unlikely(rec_finish(r, head, n) == -EOWNERDEAD))
			return -EOWNERDEAD;
		r->st.enqueued += n;
		return (int)n;
	}
	if (unlikely(publish_in_order(&r->hdr->prod_tail, head, head + n)))
		return claim_lost(r);
	r->st.enqueued += n;
	return (int)n;
fail:
	if (named)
		record_none(r);
	return rc;
}

int portal_ring_dequeue_burst_mc(portal_ring_t *r, void *objs, unsigned n)
{
	uint64_t head, t1;
	int64_t avail;
	unsigned want = n;
	bool named = false;
	int rc;

	CHECK_CALL(r, PORTAL_ROLE_CONSUMER, r->mode == PORTAL_RING_MPMC);
	if (r->rec) {
		rc = rec_begin(r);
		if (rc)
			return rc;
	}
	rc = load_claim_head(r, &r->hdr->cons_head, &r->hdr->cons_tail, &t1, &head);
	if (rc)
		return rc;
	for (;;) {
		n = want;
		avail = (int64_t)(r->peer - head);
		if (avail < (int64_t)n) {
			uint64_t before = head;

			rc = refresh_prod_mc(r, &head);
			if (!rc && head != before)
				rc = check_claim_head(r, &r->hdr->cons_tail, t1, head);
			if (rc)
				goto fail;
			avail = (int64_t)(r->peer - head);
		}
		/* Honest producers keep prod_tail <= cons_tail + capacity, and
		 * HEAD was read after the cached prod_tail, so at most capacity
		 * elements are ever available. More means the cached prod_tail
		 * is forged: a value about 2^63 ahead of the cache passes the
		 * signed checks of refresh_prod_mc as "behind cons_head", and
		 * reads as ahead again once cons_head has moved past the cache. */
		if (PORTAL_NEVER(avail > (int64_t)r->capacity)) {
			rc = quarantine(r, "producer tail beyond capacity", r->peer);
			goto fail;
		}
		if (avail < (int64_t)n)
			n = avail > 0 ? (unsigned)avail : 0;
		if (n == 0) {
			if (named)
				record_none(r);
			r->st.empty++;
			return 0;
		}
		if (r->rec) {
			record_claim(r, head, n);
			named = true;
		}
		/* C2: A1 already ordered our slot reads after the producers'
		 * publish. */
		if (claim_cas(r, &r->hdr->cons_head, &head, n))
			break;
		rc = check_claim_head(r, &r->hdr->cons_tail, t1, head);
		if (rc)
			goto fail;
	}
	copy_out(r, head, objs, n);
	if (r->rec) {
		/* Delivered by the done mark: a quarantine met while helping
		 * after it shows from the next call. */
		if (unlikely(rec_finish(r, head, n) == -EOWNERDEAD))
			return -EOWNERDEAD;
		r->st.dequeued += n;
		return (int)n;
	}
	if (unlikely(publish_in_order(&r->hdr->cons_tail, head, head + n)))
		return claim_lost(r);
	r->st.dequeued += n;
	return (int)n;
fail:
	if (named)
		record_none(r);
	return rc;
}

int portal_ring_enqueue_burst(portal_ring_t *r, const void *objs, unsigned n)
{
	return r->mode == PORTAL_RING_SPSC ? portal_ring_enqueue_burst_sp(r, objs, n)
					   : portal_ring_enqueue_burst_mp(r, objs, n);
}

int portal_ring_dequeue_burst(portal_ring_t *r, void *objs, unsigned n)
{
	return r->mode == PORTAL_RING_MPMC ? portal_ring_dequeue_burst_mc(r, objs, n)
					   : portal_ring_dequeue_burst_sc(r, objs, n);
}

int portal_ring_enqueue(portal_ring_t *r, const void *obj)
{
	int rc = portal_ring_enqueue_burst(r, obj, 1);

	return rc == 1 ? 0 : rc == 0 ? -EAGAIN : rc;
}

int portal_ring_dequeue(portal_ring_t *r, void *obj)
{
	int rc = portal_ring_dequeue_burst(r, obj, 1);

	return rc == 1 ? 0 : rc == 0 ? -EAGAIN : rc;
}

int portal_ring_count(portal_ring_t *r)
{
	uint64_t pos;
	int rc;

	if (r->quarantined)
		return r->qerr;
	if (r->role != PORTAL_ROLE_CONSUMER)
		return -EINVAL;
	if (r->mode == PORTAL_RING_MPMC) {
		/* Relaxed: a snapshot for readiness; dequeue re-checks. */
		pos = atomic_load_explicit(&r->hdr->cons_head, memory_order_relaxed);
		rc = refresh_prod_mc(r, &pos);
		if (rc)
			return rc;
		return (int64_t)(r->peer - pos) > 0 ? (int)(r->peer - pos) : 0;
	}
	pos = r->pos;
	rc = refresh_prod(r, pos);
	return rc ? rc : (int)(r->peer - pos);
}

uint32_t portal_ring_slot_size(const portal_ring_t *r) { return r->slot_size; }
uint32_t portal_ring_capacity(const portal_ring_t *r) { return r->capacity; }
bool portal_ring_quarantined(const portal_ring_t *r) { return r->quarantined; }
void portal_ring_stats(const portal_ring_t *r, struct portal_ring_stats *st) { *st = r->st; }

uint64_t portal_ring_position(const portal_ring_t *r)
{
	bool multi = r->role == PORTAL_ROLE_PRODUCER ? r->mode != PORTAL_RING_SPSC
						     : r->mode == PORTAL_RING_MPMC;

	if (!multi)
		return r->pos;
	/* Relaxed: a snapshot of our side's published tail. */
	return atomic_load_explicit(r->role == PORTAL_ROLE_PRODUCER ? &r->hdr->prod_tail
								    : &r->hdr->cons_tail,
				    memory_order_relaxed);
}

int portal_ring_peer_position(portal_ring_t *r, uint64_t *pos)
{
	uint64_t h;
	int rc;

	if (!r || !pos)
		return -EINVAL;
	if (r->quarantined)
		return r->qerr;
	if (r->role == PORTAL_ROLE_PRODUCER) {
		if (r->mode == PORTAL_RING_SPSC) {
			rc = refresh_cons(r, r->pos);
		} else {
			/* Relaxed: a bound for the check, read after nothing. */
			h = atomic_load_explicit(&r->hdr->prod_head, memory_order_relaxed);
			rc = refresh_cons_mp(r, &h);
		}
	} else if (r->mode != PORTAL_RING_MPMC) {
		rc = refresh_prod(r, r->pos);
	} else {
		/* Relaxed: as in portal_ring_count. */
		h = atomic_load_explicit(&r->hdr->cons_head, memory_order_relaxed);
		rc = refresh_prod_mc(r, &h);
	}
	if (rc)
		return rc;
	*pos = r->peer;
	return 0;
}

bool portal_ring_is_poison(const portal_ring_t *r, const void *slot)
{
	const uint8_t *p = slot;
	uint32_t i;

	for (i = 0; i < r->slot_size; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		if (w != r->poison)
			return false;
	}
	return true;
}

/* ---- crash recovery ---- */

/*
 * Find what the dead holder of record SLOT still holds. Returns 1 with
 * [*X, *X + *N) its claim, won and not done; 2 with [*X, *X + *N) its claim,
 * done (by the holder before it died) and perhaps not yet published; 0 if
 * it holds nothing (its last CAS failed or never ran, or it lost to a
 * claim that is done or published); -EAGAIN if another record still names
 * the same position, not done, after a bounded wait; or PORTAL_EPROTO.
 *
 * Why 1 is right: X was a value of the head (the holder read it there).
 * Whoever won the claim at X named X in its record before its CAS, and
 * renames its record only in a later call, after the tail has passed X. We
 * read the head (acquire) past X, so that winner's record is visible;
 * then every record; then the tail. If the tail is still at or before X,
 * the winner's claim was not published when we read the tail, so its
 * record showed X when we read it: if the dead holder's is the only one,
 * the dead holder won. A done mark shows the winner directly.
 */
static int judge_dead(portal_ring_t *r, const struct claim_side *sd, uint32_t slot, uint64_t *xo,
		      uint32_t *no)
{
	struct portal_ring_claim *d = &sd->recs[slot];
	/* Acquire: the holder is dead, so this is its last record; pairs
	 * with its release in record_claim. */
	uint64_t x = atomic_load_explicit(&d->head, memory_order_acquire);
	uint64_t n = atomic_load_explicit(&d->count, memory_order_relaxed);
	/* Acquire: pairs with its D1, so its copy is complete for us. */
	uint64_t e = atomic_load_explicit(&d->done, memory_order_acquire);
	unsigned waits = 0;
	uint32_t i;

	if (n == 0)
		return 0;
	*xo = x;
	*no = (uint32_t)n;
	if (x + n == e) {
		if (PORTAL_NEVER(n > r->capacity))
			return quarantine(r, "dead claim out of range", x);
		return 2; /* done: only a done claim has done == head + count */
	}
	for (;;) {
		/* A4: pairs with the release of the winning claim CAS C1/C2
		 * (and the release sequence of the CASes after it). */
		uint64_t h = atomic_load_explicit(sd->head, memory_order_acquire);
		uint64_t t;
		bool dup = false;

		if ((int64_t)(h - x) <= 0)
			return 0; /* nobody has claimed at x: its CAS never ran */
		for (i = 0; i < sd->nrec; i++) {
			struct portal_ring_claim *c = &sd->recs[i];
			uint64_t cn;

			/* Relaxed: FREE records hold no claim (freed only once
			 * published); a record taken after our head read
			 * cannot have won at x. */
			if (i == slot ||
			    atomic_load_explicit(&c->state, memory_order_relaxed) == PORTAL_CLAIM_FREE)
				continue;
			/* Acquire: orders the tail read below after it. */
			if (atomic_load_explicit(&c->head, memory_order_acquire) != x)
				continue;
			cn = atomic_load_explicit(&c->count, memory_order_relaxed);
			/* Relaxed: a done mark at x + count is the winner's;
			 * it need not be ordered (we touch nothing of it). */
			if (cn && atomic_load_explicit(&c->done, memory_order_relaxed) == x + cn)
				return 0; /* the other one won x and is done */
			if (cn)
				dup = true;
		}
		/* Acquire: after the records. */
		t = atomic_load_explicit(sd->tail, memory_order_acquire);
		if ((int64_t)(t - x) > 0)
			return 0; /* published: not the dead holder's claim */
		if (!dup) {
			if (PORTAL_NEVER(n > r->capacity || (int64_t)(h - x) < (int64_t)n ||
					 x + n - t > r->capacity))
				return quarantine(r, "dead claim out of range", x);
			return 1;
		}
		if (!backoff(&waits, RECOVER_WAITS))
			return -EAGAIN;
	}
}

/*
 * The done claim ending at END: publish what can be published now (no
 * waiting) and say whether the tail has passed END: 1 yes, 0 no (an
 * earlier claim is open; its finisher or its recovery will publish this
 * one), or PORTAL_EPROTO.
 */
static int settle(portal_ring_t *r, const struct claim_side *sd, uint64_t end)
{
	/* S1 (recovery): after our D1 for the dead holder, as in
	 * rec_finish: if the finisher of the claim before did not see our
	 * mark, we see its tail. Acquire for A5: the record is reused after. */
	uint64_t t = atomic_load_explicit(sd->tail, memory_order_seq_cst);
	int rc = 0;

	if ((int64_t)(t - end) < 0)
		rc = help(r, sd, &t);
	if (rc)
		return rc;
	if ((int64_t)(t - end) < 0)
		/* help() stopped on a lost CAS: look once more (A5). */
		t = atomic_load_explicit(sd->tail, memory_order_acquire);
	return (int64_t)(t - end) >= 0;
}

/* A RETIRED record C, locked: can it be reused (1: no claim, or its last
 * claim is published, after helping), or not yet (0), or PORTAL_EPROTO. */
static int retired_settle(portal_ring_t *r, const struct claim_side *sd,
			  struct portal_ring_claim *c)
{
	/* Relaxed: the lock's acquire ordered them after the release that
	 * retired the record. */
	uint64_t x = atomic_load_explicit(&c->head, memory_order_relaxed);
	uint64_t n = atomic_load_explicit(&c->count, memory_order_relaxed);
	uint64_t e = atomic_load_explicit(&c->done, memory_order_relaxed);

	if (n == 0)
		return 1;
	if (PORTAL_NEVER(x + n != e))
		return 0; /* retired with a claim not done: keep it out of use */
	return settle(r, sd, e);
}

/* Lock record SLOT for recovery: 1 locked (HELD), 2 locked (RETIRED: its
 * holder is gone, its done claim may wait to be published), 0 free
 * (nothing to do), -EBUSY. */
static int recover_lock(struct portal_ring_claim *c)
{
	uint32_t st = PORTAL_CLAIM_HELD;

	/* Acquire: pairs with a previous recovery's, detach's or holder's
	 * release. */
	if (atomic_compare_exchange_strong_explicit(&c->state, &st, PORTAL_CLAIM_RECOVERING,
						    memory_order_acquire, memory_order_relaxed))
		return 1;
	if (st == PORTAL_CLAIM_RETIRED &&
	    atomic_compare_exchange_strong_explicit(&c->state, &st, PORTAL_CLAIM_RECOVERING,
						    memory_order_acquire, memory_order_relaxed))
		return 2;
	return st == PORTAL_CLAIM_FREE ? 0 : -EBUSY;
}

/* Unlock to TO: FREE (no claim left: count 0), RETIRED (a done claim waits
 * to be published: helpers may still read it) or HELD (unchanged). */
static void recover_unlock(struct portal_ring_claim *c, uint32_t to)
{
	if (to == PORTAL_CLAIM_FREE)
		/* Relaxed: published by the release below. */
		atomic_store_explicit(&c->count, 0, memory_order_relaxed);
	/* Release: our writes (poison, done mark, count), then the state;
	 * pairs with the acquire in claim_take and recover_lock. */
	atomic_store_explicit(&c->state, to, memory_order_release);
}

/* After a recovery has left a done claim ending at END in record C: help,
 * then unlock to FREE if it is published, else RETIRED. 0 or PORTAL_EPROTO. */
static int recover_settle(portal_ring_t *r, const struct claim_side *sd,
			  struct portal_ring_claim *c, uint64_t end)
{
	int rc = settle(r, sd, end);

	recover_unlock(c, rc == 1 ? PORTAL_CLAIM_FREE : PORTAL_CLAIM_RETIRED);
	return rc < 0 ? rc : 0;
}

/* Mark the dead holder's claim [X, X+N) in C done, for it. */
static void mark_done_for(struct portal_ring_claim *c, uint64_t x, uint32_t n)
{
	/* D1 (recovery): the poison written (producer side) or the elements
	 * copied out (consumer side), then the mark; pairs with H1, and is
	 * seq_cst for S1 in settle(). */
	atomic_exchange_explicit(&c->done, x + n, memory_order_seq_cst);
}

/*
 * Recover record SLOT of side SD: lock it, judge it, and for a claim won
 * and not done call FINISH (poison, or copy out; it may refuse with a
 * negative code, which leaves everything unchanged), mark it done and
 * settle. Returns what FINISH returned (n), 0, or an error.
 */
static int recover_slot(portal_ring_t *r, const struct claim_side *sd, unsigned slot,
			int (*finish)(portal_ring_t *r, uint64_t x, uint32_t n, void *arg), void *arg)
{
	struct portal_ring_claim *c = &sd->recs[slot];
	uint64_t x = 0;
	uint32_t n = 0;
	int rc, got;

	rc = recover_lock(c);
	if (rc <= 0)
		return rc;
	if (rc == 2) {
		/* Retired: help its done claim along; free it once published. */
		rc = retired_settle(r, sd, c);
		recover_unlock(c, rc == 1 ? PORTAL_CLAIM_FREE : PORTAL_CLAIM_RETIRED);
		return rc < 0 ? rc : 0;
	}
	rc = judge_dead(r, sd, slot, &x, &n);
	if (rc == 0) {
		recover_unlock(c, PORTAL_CLAIM_FREE);
		return 0;
	}
	if (rc < 0) {
		recover_unlock(c, PORTAL_CLAIM_HELD);
		return rc;
	}
	got = 0;
	if (rc == 1) {
		got = finish(r, x, n, arg);
		if (got < 0) {
			recover_unlock(c, PORTAL_CLAIM_HELD);
			return got;
		}
		mark_done_for(c, x, n);
		r->st.recovered += n;
	}
	/* Done (by the holder, or by us just now): publish it when we can. */
	rc = recover_settle(r, sd, c, x + n);
	return rc < 0 ? rc : got;
}

static void fill_poison(portal_ring_t *r, uint64_t x, uint32_t n)
{
	uint32_t k, i;

	for (k = 0; k < n; k++) {
		uint8_t *p = r->slots + ((size_t)((uint32_t)(x + k) & r->mask) << r->slot_shift);

		for (i = 0; i < r->slot_size; i += 8)
			memcpy(p + i, &r->poison, 8);
	}
}

/* The slots are the dead producer's until its claim is marked done: the
 * consumers stop at prod_tail <= x. Idempotent. */
static int finish_poison(portal_ring_t *r, uint64_t x, uint32_t n, void *arg)
{
	(void)arg;
	fill_poison(r, x, n);
	portal_log(PORTAL_LOG_WARN, "ring %p: dead producer: %u slots at %llu poisoned",
		   (void *)r->hdr, n, (unsigned long long)x);
	return (int)n;
}

struct copy_arg {
	void *objs;
	unsigned max;
};

/* The slots stay as the dead consumer found them while cons_tail <= x:
 * producers wait for the tail, which waits for our done mark. */
static int finish_copy(portal_ring_t *r, uint64_t x, uint32_t n, void *arg)
{
	struct copy_arg *a = arg;

	if (n > a->max)
		return -EMSGSIZE;
	copy_out(r, x, a->objs, n);
	portal_log(PORTAL_LOG_WARN, "ring %p: dead consumer: %u elements at %llu re-delivered",
		   (void *)r->hdr, n, (unsigned long long)x);
	return (int)n;
}

int portal_ring_recover_producer(portal_ring_t *r, unsigned slot)
{
	struct claim_side sd;

	if (!r || claim_side(r, PORTAL_ROLE_PRODUCER, &sd) || slot >= sd.nrec)
		return -EINVAL;
	if (r->quarantined)
		return r->qerr;
	return recover_slot(r, &sd, slot, finish_poison, NULL);
}

int portal_ring_recover_consumer(portal_ring_t *r, unsigned slot, void *objs, unsigned max)
{
	struct claim_side sd;
	struct copy_arg a = { objs, max };

	if (!r || (!objs && max) || claim_side(r, PORTAL_ROLE_CONSUMER, &sd) || slot >= sd.nrec)
		return -EINVAL;
	if (r->quarantined)
		return r->qerr;
	return recover_slot(r, &sd, slot, finish_copy, &a);
}

int portal_ring_find_claims(portal_ring_t *r, enum portal_ring_role role, uint64_t owner,
			    unsigned *slots, unsigned max)
{
	struct claim_side sd;
	uint32_t i;
	int found = 0;

	if (!r || (!slots && max) ||
	    (role != PORTAL_ROLE_PRODUCER && role != PORTAL_ROLE_CONSUMER))
		return -EINVAL;
	if (claim_side(r, role, &sd))
		return 0;
	for (i = 0; i < sd.nrec; i++) {
		/* Relaxed: a snapshot; recovery locks and re-reads. */
		if (atomic_load_explicit(&sd.recs[i].state, memory_order_relaxed) ==
			    PORTAL_CLAIM_FREE ||
		    atomic_load_explicit(&sd.recs[i].owner, memory_order_relaxed) != owner)
			continue;
		if ((unsigned)found < max)
			slots[found] = i;
		found++;
	}
	return found;
}

/* ---- placing rings in a region ---- */

int ring_region_place(portal_region_t *reg, const char *name, uint32_t kind, size_t size,
		      uint32_t owner_side, const uint64_t param[6],
		      portal_object_init_fn init, const void *params)
{
	if (!size)
		return -EINVAL;
	return portal_region_alloc_init(reg, name, kind, size, 0, owner_side, param, init,
					(void *)params, NULL);
}

int ring_region_find(portal_region_t *reg, const char *name, uint32_t kind, void **mem,
		     size_t *len)
{
	struct portal_object_info info;
	int rc = portal_region_lookup(reg, name, kind, &info);

	if (rc == 0) {
		*mem = info.addr;
		*len = (size_t)info.size;
	}
	return rc;
}

struct ring_init_args {
	const struct portal_ring_params *p;
	const struct portal_ring_recovery_params *rp;
};

static int ring_init_cb(void *mem, size_t len, uint64_t offset, void *params)
{
	const struct ring_init_args *a = params;

	(void)offset;
	return portal_ring_init_recoverable(mem, len, a->p, a->rp);
}

int portal_ring_create(portal_region_t *reg, const char *name, const struct portal_ring_params *p,
		       uint32_t owner_side)
{
	return portal_ring_create_recoverable(reg, name, p, NULL, owner_side);
}

int portal_ring_create_recoverable(portal_region_t *reg, const char *name,
				   const struct portal_ring_params *p,
				   const struct portal_ring_recovery_params *rp, uint32_t owner_side)
{
	uint64_t param[6] = { 0 };
	size_t size = portal_ring_memsize_recoverable(p, rp);
	struct ring_init_args args = { p, rp };

	if (!size)
		return -EINVAL;
	param[0] = p->mode, param[1] = p->slot_size, param[2] = p->capacity;
	if (rp)
		param[3] = rp->max_producers, param[4] = rp->max_consumers;
	return ring_region_place(reg, name, PORTAL_OBJ_RING, size, owner_side, param,
				 ring_init_cb, &args);
}

int portal_ring_open(portal_region_t *reg, const char *name, enum portal_ring_role role,
		     portal_ring_t **out)
{
	void *mem;
	size_t len;
	int rc = ring_region_find(reg, name, PORTAL_OBJ_RING, &mem, &len);

	return rc ? rc : portal_ring_attach(mem, len, role, out);
}

