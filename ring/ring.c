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
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_internal.h"
#include "common/log_internal.h"
#include "portal/ring.h"
#include "ring/ring_internal.h"

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
	struct portal_ring_stats st;
};

static bool params_ok(uint32_t mode, uint32_t slot_size, uint32_t capacity)
{
	return mode >= PORTAL_RING_SPSC && mode <= PORTAL_RING_MPMC && ring_is_pow2(slot_size) &&
	       slot_size >= 8 && slot_size <= 256 && ring_is_pow2(capacity) && capacity >= 2 &&
	       capacity <= (1u << 30);
}

size_t portal_ring_memsize(const struct portal_ring_params *p)
{
	if (!p || p->flags || !params_ok(p->mode, p->slot_size, p->capacity))
		return 0;
	return PORTAL_RING_HDR_SIZE + (size_t)p->capacity * p->slot_size;
}

int portal_ring_init(void *mem, size_t len, const struct portal_ring_params *p)
{
	struct portal_ring_hdr *h = mem;
	size_t need = portal_ring_memsize(p);

	if (!mem || !need || len < need || (uintptr_t)mem % PORTAL_CACHELINE)
		return -EINVAL;
	memset(h, 0, PORTAL_RING_HDR_SIZE);
	h->magic = PORTAL_RING_MAGIC;
	h->version = 1;
	h->mode = (uint16_t)p->mode;
	h->slot_size = p->slot_size;
	h->capacity = p->capacity;
	h->obj_size = need;
	/* Relaxed: nobody may attach before init returns; the region directory
	 * (or the caller's own hand-off) publishes the ring. */
	atomic_store_explicit(&h->prod_head, 0, memory_order_relaxed);
	atomic_store_explicit(&h->prod_tail, 0, memory_order_relaxed);
	atomic_store_explicit(&h->cons_head, 0, memory_order_relaxed);
	atomic_store_explicit(&h->cons_tail, 0, memory_order_relaxed);
	return 0;
}

static int quarantine(portal_ring_t *r, const char *why, uint64_t seen)
{
	if (!r->quarantined)
		portal_log(PORTAL_LOG_ERROR, "ring %p quarantined: %s (peer wrote %llu)",
			   (void *)r->hdr, why, (unsigned long long)seen);
	r->quarantined = true;
	r->st.proto_errors++;
	return PORTAL_EPROTO;
}

int portal_ring_attach(void *mem, size_t len, enum portal_ring_role role, portal_ring_t **out)
{
	struct portal_ring_hdr h;
	portal_ring_t *r;
	uint64_t prod, cons;

	if (!mem || !out || (role != PORTAL_ROLE_PRODUCER && role != PORTAL_ROLE_CONSUMER) ||
	    (uintptr_t)mem % PORTAL_CACHELINE)
		return -EINVAL;
	if (len < PORTAL_RING_HDR_SIZE)
		return PORTAL_EPROTO;
	memcpy(&h, mem, offsetof(struct portal_ring_hdr, pad0));
	if (h.magic != PORTAL_RING_MAGIC || h.version != 1 ||
	    !params_ok(h.mode, h.slot_size, h.capacity) ||
	    h.obj_size != PORTAL_RING_HDR_SIZE + (uint64_t)h.capacity * h.slot_size ||
	    h.obj_size > len)
		return PORTAL_EPROTO;
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

	/* Start from the published tails; a restarted side resumes there. */
	prod = atomic_load_explicit(&r->hdr->prod_tail, memory_order_acquire);
	cons = atomic_load_explicit(&r->hdr->cons_tail, memory_order_acquire);
	if (prod - cons > r->capacity) {
		free(r);
		return PORTAL_EPROTO;
	}
	r->pos = role == PORTAL_ROLE_PRODUCER ? prod : cons;
	r->peer = role == PORTAL_ROLE_PRODUCER ? cons : prod;
	*out = r;
	return 0;
}

void portal_ring_detach(portal_ring_t *r)
{
	free(r);
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
			return PORTAL_EPROTO;                                        \
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
 * Wait until the claims before ours have been published, then publish ours.
 * The earlier claimants are in our trust domain (MP/MC rings never cross a VM
 * boundary); a long wait means one was preempted, so yield after a while.
 */
static void publish_in_order(_Atomic uint64_t *tail, uint64_t old, uint64_t new_pos)
{
	unsigned spins = 0;

	/* A3: the earlier claimants' publish, then ours, so that one acquire
	 * of our tail covers their slots too; pairs with the R1/R2 below
	 * as executed by the claimant before us. */
	while (atomic_load_explicit(tail, memory_order_acquire) != old) {
		if (++spins < 1024)
			portal_cpu_relax();
		else
			sched_yield();
	}
	/* R1/R2 (MP/MC): our slots, then the tail; pairs with A1/A2. */
	atomic_store_explicit(tail, new_pos, memory_order_release);
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
 * Snapshot a claim head (prod_head or cons_head) for a CAS loop, checked
 * against its own side's tail: a head behind its tail, or more than a ring
 * ahead of it, would make publish_in_order wait for ever. Each bound is
 * checked against a tail read on the side that makes it hold for honest
 * claimants racing with us: head >= a tail read before it, and head - cap
 * <= a tail read after it.
 */
static int load_claim_head(portal_ring_t *r, _Atomic uint64_t *head, _Atomic uint64_t *tail,
			   uint64_t *out)
{
	/* Acquire: tails only grow, and the head read next is ordered after. */
	uint64_t t1 = atomic_load_explicit(tail, memory_order_acquire);
	/* Acquire: orders the second tail read after this one. The CAS later
	 * revalidates the head; the peer's tail is read with A1/A2. */
	uint64_t h = atomic_load_explicit(head, memory_order_acquire);
	uint64_t t2 = atomic_load_explicit(tail, memory_order_relaxed);

	if (PORTAL_NEVER((int64_t)(h - t1) < 0 || (int64_t)(h - t2) > (int64_t)r->capacity))
		return quarantine(r, "claim head out of range of its tail", h);
	*out = h;
	return 0;
}

int portal_ring_enqueue_burst_mp(portal_ring_t *r, const void *objs, unsigned n)
{
	uint64_t head;
	int64_t room;
	unsigned want = n;
	int rc;

	CHECK_CALL(r, PORTAL_ROLE_PRODUCER, r->mode != PORTAL_RING_SPSC);
	rc = load_claim_head(r, &r->hdr->prod_head, &r->hdr->prod_tail, &head);
	if (rc)
		return rc;
	do {
		n = want;
		room = (int64_t)(r->peer + r->capacity - head);
		if (room < (int64_t)n) {
			rc = refresh_cons_mp(r, &head);
			if (rc)
				return rc;
			room = (int64_t)(r->peer + r->capacity - head);
		}
		if (room < (int64_t)n)
			n = room > 0 ? (unsigned)room : 0;
		if (n == 0) {
			r->st.full++;
			return 0;
		}
		/* C1: claim [head, head+n); relaxed, the slots are ours only
		 * after success and are published by R1. */
	} while (!atomic_compare_exchange_weak_explicit(&r->hdr->prod_head, &head, head + n,
							memory_order_relaxed, memory_order_relaxed));
	copy_in(r, head, objs, n);
	publish_in_order(&r->hdr->prod_tail, head, head + n);
	r->st.enqueued += n;
	return (int)n;
}

int portal_ring_dequeue_burst_mc(portal_ring_t *r, void *objs, unsigned n)
{
	uint64_t head;
	int64_t avail;
	unsigned want = n;
	int rc;

	CHECK_CALL(r, PORTAL_ROLE_CONSUMER, r->mode == PORTAL_RING_MPMC);
	rc = load_claim_head(r, &r->hdr->cons_head, &r->hdr->cons_tail, &head);
	if (rc)
		return rc;
	do {
		n = want;
		avail = (int64_t)(r->peer - head);
		if (avail < (int64_t)n) {
			rc = refresh_prod_mc(r, &head);
			if (rc)
				return rc;
			avail = (int64_t)(r->peer - head);
		}
		/* Honest producers keep prod_tail <= cons_tail + capacity, and
		 * HEAD was read after the cached prod_tail, so at most capacity
		 * elements are ever available. More means the cached prod_tail
		 * is forged: a value about 2^63 ahead of the cache passes the
		 * signed checks of refresh_prod_mc as "behind cons_head", and
		 * reads as ahead again once cons_head has moved past the cache. */
		if (PORTAL_NEVER(avail > (int64_t)r->capacity))
			return quarantine(r, "producer tail beyond capacity", r->peer);
		if (avail < (int64_t)n)
			n = avail > 0 ? (unsigned)avail : 0;
		if (n == 0) {
			r->st.empty++;
			return 0;
		}
		/* C2: claim [head, head+n); A1 already ordered our slot reads
		 * after the producers' publish. */
	} while (!atomic_compare_exchange_weak_explicit(&r->hdr->cons_head, &head, head + n,
							memory_order_relaxed, memory_order_relaxed));
	copy_out(r, head, objs, n);
	publish_in_order(&r->hdr->cons_tail, head, head + n);
	r->st.dequeued += n;
	return (int)n;
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
		return PORTAL_EPROTO;
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

static int ring_init_cb(void *mem, size_t len, uint64_t offset, void *params)
{
	(void)offset;
	return portal_ring_init(mem, len, params);
}

int portal_ring_create(portal_region_t *reg, const char *name, const struct portal_ring_params *p,
		       uint32_t owner_side)
{
	uint64_t param[6] = { 0 };
	size_t size = portal_ring_memsize(p);

	if (!size)
		return -EINVAL;
	param[0] = p->mode, param[1] = p->slot_size, param[2] = p->capacity;
	return ring_region_place(reg, name, PORTAL_OBJ_RING, size, owner_side, param,
				 ring_init_cb, p);
}

int portal_ring_open(portal_region_t *reg, const char *name, enum portal_ring_role role,
		     portal_ring_t **out)
{
	void *mem;
	size_t len;
	int rc = ring_region_find(reg, name, PORTAL_OBJ_RING, &mem, &len);

	return rc ? rc : portal_ring_attach(mem, len, role, out);
}
