/* SPDX-License-Identifier: MIT */
/*
 * Broadcast rings: one producer, up to 64 subscribers, each with its own
 * cursor line. Each slot starts with a sequence word (0 while being written,
 * then position + 1), so a subscriber can tell a slot it may read from one
 * being overwritten, as a seqlock does.
 *
 * HOLD: the producer never overwrites a slot an active subscriber has not
 * read; publish returns -EAGAIN instead. A subscriber whose cursor is out of
 * range is not held for while it stays so (counted once as a protocol
 * error), so a hostile subscriber cannot make the producer overwrite the
 * others' messages.
 * LAP: the producer never waits. A subscriber that fell a ring behind is
 * told how many messages it lost and moved to the oldest one still held.
 *
 * A subscriber that dies holds its line (and, in HOLD mode, the producer)
 * until someone who knows it is dead frees the line with portal_bcast_evict.
 * Each line's state word carries a generation, +1 at every join, so an
 * eviction's CAS names one subscription and never frees a successor's.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/atomic_internal.h"
#include "common/log_internal.h"
#include "portal/ring.h"
#include "ring/ring_internal.h"

#define MAX_SUBS 64u

/* A line's state word: generation in bits 32-63, state in bits 0-31. */
static inline uint64_t sub_word(uint32_t gen, uint32_t st) { return (uint64_t)gen << 32 | st; }
static inline uint32_t sub_state(uint64_t w) { return (uint32_t)w; }
static inline uint32_t sub_gen(uint64_t w) { return (uint32_t)(w >> 32); }

struct portal_bcast {
	struct portal_bcast_hdr *hdr;
	struct portal_bcast_sub *subs;
	uint8_t *slots;
	uint32_t mode;         /* private copies of the immutable header */
	uint32_t slot_size;
	uint32_t capacity;
	uint32_t mask;
	uint32_t stride;
	uint32_t max_subs;
	int sub;               /* -1: producer */
	uint64_t mine;         /* subscriber: its line's state word while subscribed */
	uint64_t pos;          /* producer: next to publish; subscriber: cursor */
	uint64_t peer;         /* producer: cached slowest cursor; subscriber: cached prod_tail */
	uint64_t ignored;      /* producer: subscribers that broke the protocol */
	bool quarantined;
	bool evicted;          /* subscriber: its line was freed by an eviction */
	struct portal_ring_stats st;
};

static bool params_ok(uint32_t mode, uint32_t slot_size, uint32_t capacity, uint32_t max_subs)
{
	return (mode == PORTAL_BCAST_HOLD || mode == PORTAL_BCAST_LAP) && slot_size >= 8 &&
	       slot_size <= 256 && slot_size % 8 == 0 && ring_is_pow2(capacity) && capacity >= 2 &&
	       capacity <= (1u << 28) && max_subs >= 1 && max_subs <= MAX_SUBS;
}

static uint64_t obj_size(uint32_t slot_size, uint32_t capacity, uint32_t max_subs)
{
	return PORTAL_BCAST_HDR_SIZE + (uint64_t)max_subs * sizeof(struct portal_bcast_sub) +
	       (uint64_t)capacity * (8 + slot_size);
}

size_t portal_bcast_memsize(const struct portal_bcast_params *p)
{
	if (!p || !params_ok(p->mode, p->slot_size, p->capacity, p->max_subs))
		return 0;
	return (size_t)obj_size(p->slot_size, p->capacity, p->max_subs);
}

int portal_bcast_init(void *mem, size_t len, const struct portal_bcast_params *p)
{
	struct portal_bcast_hdr *h = mem;
	size_t need = portal_bcast_memsize(p);

	if (!mem || !need || len < need || (uintptr_t)mem % PORTAL_CACHELINE)
		return -EINVAL;
	memset(mem, 0, need);
	h->magic = PORTAL_BCAST_MAGIC;
	h->version = 1;
	h->mode = (uint16_t)p->mode;
	h->slot_size = p->slot_size;
	h->capacity = p->capacity;
	h->max_subs = p->max_subs;
	h->stride = 8 + p->slot_size;
	h->obj_size = need;
	return 0;
}

static int quarantine(portal_bcast_t *b, const char *why, uint64_t seen)
{
	if (!b->quarantined)
		portal_log(PORTAL_LOG_ERROR, "bcast %p quarantined: %s (peer wrote %llu)",
			   (void *)b->hdr, why, (unsigned long long)seen);
	b->quarantined = true;
	b->st.proto_errors++;
	return PORTAL_EPROTO;
}

/* Subscriber: is our line still ours? Once it is not, every call says so. */
static bool still_mine(portal_bcast_t *b)
{
	/* Relaxed: our own line; E1 in evict is what changes it. */
	if (!b->evicted &&
	    atomic_load_explicit(&b->subs[b->sub].state, memory_order_relaxed) != b->mine)
		b->evicted = true;
	return !b->evicted;
}

static inline _Atomic uint64_t *slot_seq(const portal_bcast_t *b, uint64_t pos)
{
	return (_Atomic uint64_t *)(b->slots + (size_t)(pos & b->mask) * b->stride);
}

int portal_bcast_attach(void *mem, size_t len, int sub, portal_bcast_t **out)
{
	return portal_bcast_attach_owner(mem, len, sub, (uint64_t)getpid(), out);
}

int portal_bcast_attach_owner(void *mem, size_t len, int sub, uint64_t owner,
			      portal_bcast_t **out)
{
	struct portal_bcast_hdr h;
	portal_bcast_t *b;
	struct portal_bcast_sub *s;

	if (!mem || !out || (uintptr_t)mem % PORTAL_CACHELINE)
		return -EINVAL;
	if (len < PORTAL_BCAST_HDR_SIZE)
		return PORTAL_EPROTO;
	memcpy(&h, mem, offsetof(struct portal_bcast_hdr, pad0));
	if (h.magic != PORTAL_BCAST_MAGIC || h.version != 1 ||
	    !params_ok(h.mode, h.slot_size, h.capacity, h.max_subs) || h.stride != 8 + h.slot_size ||
	    h.obj_size != obj_size(h.slot_size, h.capacity, h.max_subs) || h.obj_size > len)
		return PORTAL_EPROTO;
	if (sub >= (int)h.max_subs)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->hdr = mem;
	b->subs = (struct portal_bcast_sub *)((uint8_t *)mem + PORTAL_BCAST_HDR_SIZE);
	b->slots = (uint8_t *)(b->subs + h.max_subs);
	b->mode = h.mode;
	b->slot_size = h.slot_size;
	b->capacity = h.capacity;
	b->mask = h.capacity - 1;
	b->stride = h.stride;
	b->max_subs = h.max_subs;
	b->sub = sub < 0 ? -1 : sub;
	/* Acquire: pairs with R1 in publish. */
	b->pos = atomic_load_explicit(&b->hdr->prod_tail, memory_order_acquire);
	/* Producer: no cached minimum yet, so the first publish scans the
	 * cursors (a re-attached producer must hold for readers behind). */
	b->peer = sub < 0 ? b->pos - b->capacity : b->pos;
	if (sub >= 0) {
		uint64_t w;
		uint32_t gen;

		s = &b->subs[sub];
		/* Relaxed: only a guess at the generation, checked by C1. */
		w = atomic_load_explicit(&s->state, memory_order_relaxed);
		gen = sub_gen(w) + 1;
		/* C1: one attacher wins the free line and starts a new
		 * generation (joining, which the producer skips); relaxed on
		 * failure, we give up. */
		if (sub_state(w) != PORTAL_BCAST_SUB_FREE ||
		    !atomic_compare_exchange_strong_explicit(&s->state, &w,
							     sub_word(gen, PORTAL_BCAST_SUB_JOINING),
							     memory_order_acquire,
							     memory_order_relaxed)) {
			free(b);
			return -EBUSY;
		}
		/* Relaxed: published by S1's seq_cst store below. */
		atomic_store_explicit(&s->owner, owner, memory_order_relaxed);
		atomic_store_explicit(&s->cursor, b->pos, memory_order_relaxed);
		/* S1: cursor, then subscribed; pairs with S2 in the producer's
		 * scan. Then (Dekker with S3) re-read prod_tail: a scan that
		 * missed our line ran before this read, so the producer's
		 * cached minimum is at most where we now start. */
		b->mine = sub_word(gen, PORTAL_BCAST_SUB_ACTIVE);
		atomic_store_explicit(&s->state, b->mine, memory_order_seq_cst);
		b->pos = atomic_load_explicit(&b->hdr->prod_tail, memory_order_seq_cst);
		b->peer = b->pos;
		/* Release: our starting cursor; pairs with A2 in the scan. */
		atomic_store_explicit(&s->cursor, b->pos, memory_order_release);
	}
	*out = b;
	return 0;
}

void portal_bcast_detach(portal_bcast_t *b)
{
	if (!b)
		return;
	if (b->sub >= 0) {
		uint64_t w = b->mine;

		/* Release: our reads are done before the producer may reuse
		 * (pairs with S2). A CAS, not a store: if we were evicted the
		 * line may have a new subscriber. Relaxed on failure. */
		atomic_compare_exchange_strong_explicit(&b->subs[b->sub].state, &w,
							sub_word(sub_gen(w), PORTAL_BCAST_SUB_FREE),
							memory_order_release, memory_order_relaxed);
	}
	free(b);
}

/* HOLD: the slowest active, well-behaved subscriber's cursor. */
static uint64_t slowest_cursor(portal_bcast_t *b)
{
	uint64_t min = b->pos, c;

	/* S3: prod_tail (stored by publish), then the active flags; pairs
	 * with the seq_cst store and load in attach (Dekker). */
	atomic_thread_fence(memory_order_seq_cst);
	for (uint32_t i = 0; i < b->max_subs; i++) {
		/* S2: state, then cursor; pairs with S1 and with detach's and
		 * evict's release. Joining is not subscribed yet. */
		if (sub_state(atomic_load_explicit(&b->subs[i].state, memory_order_acquire)) !=
		    PORTAL_BCAST_SUB_ACTIVE)
			continue;
		/* A2: the subscriber's slot reads happen before we reuse the
		 * slots; pairs with R2 in read. */
		c = atomic_load_explicit(&b->subs[i].cursor, memory_order_acquire);
		if (PORTAL_NEVER(c > b->pos || b->pos - c > b->capacity)) {
			/* Not held for while out of range; counted once per episode. */
			if (!(b->ignored & (UINT64_C(1) << i))) {
				portal_log(PORTAL_LOG_ERROR, "bcast %p: subscriber %u cursor %llu out"
					   " of range; not holding for it", (void *)b->hdr, i,
					   (unsigned long long)c);
				b->ignored |= UINT64_C(1) << i;
				b->st.proto_errors++;
			}
			continue;
		}
		b->ignored &= ~(UINT64_C(1) << i);
		if (c < min)
			min = c;
	}
	return min;
}

int portal_bcast_publish(portal_bcast_t *b, const void *msg)
{
	_Atomic uint64_t *seq;

	if (unlikely(b->sub >= 0 || !msg))
		return -EINVAL;
	if (b->mode == PORTAL_BCAST_HOLD && b->pos - b->peer >= b->capacity) {
		b->peer = slowest_cursor(b);
		if (b->pos - b->peer >= b->capacity) {
			b->st.full++;
			return -EAGAIN;
		}
	}
	seq = slot_seq(b, b->pos);
	/* W1: mark the slot busy before touching its payload. The release
	 * fence keeps the payload stores after the 0; pairs with F1 in read. */
	atomic_store_explicit(seq, 0, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	memcpy((uint8_t *)seq + 8, msg, b->slot_size);
	/* R1: payload, then the slot's sequence and prod_tail; pairs with A1. */
	atomic_store_explicit(seq, b->pos + 1, memory_order_release);
	b->pos++;
	atomic_store_explicit(&b->hdr->prod_tail, b->pos, memory_order_release);
	b->st.enqueued++;
	return 0;
}

/*
 * LAP: jump to the oldest message still held when the producer has reached
 * position NEWEST (a published count, or a position it is writing). Moving
 * nowhere, or past what was published, means the producer lied.
 */
static int lapped(portal_bcast_t *b, uint64_t newest, uint64_t *lost)
{
	/* +1: the slot after NEWEST's may be the next one rewritten. */
	uint64_t oldest = newest >= b->capacity ? newest - b->capacity + 1 : 0;
	uint64_t n;

	if (PORTAL_NEVER(oldest <= b->pos || oldest > b->peer))
		return quarantine(b, "lap position", newest);
	n = oldest - b->pos;
	b->pos = oldest;
	b->st.lapped += n;
	if (lost)
		*lost = n;
	/* Relaxed: informative in LAP mode; the producer does not wait. */
	atomic_store_explicit(&b->subs[b->sub].cursor, b->pos, memory_order_relaxed);
	return -EOVERFLOW;
}

int portal_bcast_read(portal_bcast_t *b, void *msg, uint64_t *lost)
{
	_Atomic uint64_t *seq;
	uint64_t prod, s1, s2 = 0;

	if (unlikely(b->quarantined))
		return PORTAL_EPROTO;
	if (unlikely(b->sub < 0 || !msg))
		return -EINVAL;
	if (unlikely(!still_mine(b)))
		return -EOWNERDEAD;
	if (b->pos == b->peer) {
		/* A1: prod_tail, then slots; pairs with R1. Read once. */
		prod = atomic_load_explicit(&b->hdr->prod_tail, memory_order_acquire);
		if (PORTAL_NEVER(prod < b->peer ||
				 (b->mode == PORTAL_BCAST_HOLD && prod - b->pos > b->capacity)))
			return quarantine(b, "producer tail out of range", prod);
		b->peer = prod;
		if (prod == b->pos) {
			b->st.empty++;
			return -EAGAIN;
		}
	}
	if (b->mode == PORTAL_BCAST_LAP && b->peer - b->pos > b->capacity)
		return lapped(b, b->peer, lost);
	seq = slot_seq(b, b->pos);
	s1 = atomic_load_explicit(seq, memory_order_acquire); /* A1 for the slot */
	if (s1 == b->pos + 1) {
		memcpy(msg, (const uint8_t *)seq + 8, b->slot_size);
		/* F1: payload copied, then re-read the sequence; pairs with W1. */
		atomic_thread_fence(memory_order_acquire);
		s2 = atomic_load_explicit(seq, memory_order_relaxed);
		if (s2 == s1) {
			b->pos++;
			/* R2: slot read, then cursor; pairs with A2 in the
			 * producer's scan. */
			atomic_store_explicit(&b->subs[b->sub].cursor, b->pos, memory_order_release);
			b->st.dequeued++;
			return 0;
		}
	}
	/* The slot is not the one prod_tail promised. In HOLD mode that is a
	 * lie, unless we were evicted and the producer stopped holding for us:
	 * the acquire fence makes the rewrite we saw (R1/W1) carry the
	 * eviction (E1) the producer's scan had read (S2). In LAP mode the
	 * producer overwrote it: the word must say so, 0 (rewriting now) or
	 * a later lap of this same slot. */
	atomic_thread_fence(memory_order_acquire);
	if (!still_mine(b))
		return -EOWNERDEAD;
	if (s1 == b->pos + 1)
		s1 = s2;
	if (b->mode == PORTAL_BCAST_HOLD ||
	    PORTAL_NEVER(s1 != 0 && (s1 <= b->pos + 1 || (s1 - b->pos - 1) & b->mask)))
		return quarantine(b, "slot sequence", s1);
	prod = atomic_load_explicit(&b->hdr->prod_tail, memory_order_acquire);
	if (PORTAL_NEVER(prod < b->peer))
		return quarantine(b, "producer tail went backwards", prod);
	b->peer = prod;
	/* The slot holds (or is getting) position s1 - 1; prod may lag it. */
	return lapped(b, s1 && s1 - 1 > prod ? s1 - 1 : prod, lost);
}

int portal_bcast_ready(portal_bcast_t *b)
{
	if (b->quarantined || b->pos != b->peer || (b->sub >= 0 && !still_mine(b)))
		return 1;
	/* Acquire: pairs with R1. */
	return atomic_load_explicit(&b->hdr->prod_tail, memory_order_acquire) != b->pos;
}

int portal_bcast_evict(portal_bcast_t *b, unsigned sub, uint64_t owner)
{
	struct portal_bcast_sub *s;
	uint64_t w;

	if (!b || sub >= b->max_subs || (int)sub == b->sub)
		return -EINVAL;
	s = &b->subs[sub];
	/* Acquire: pairs with S1, so the tag read below is at least the one
	 * this subscription stored before it was subscribed. */
	w = atomic_load_explicit(&s->state, memory_order_acquire);
	if (sub_state(w) == PORTAL_BCAST_SUB_FREE)
		return 0;
	if (owner != PORTAL_BCAST_OWNER_ANY &&
	    atomic_load_explicit(&s->owner, memory_order_relaxed) != owner)
		return 0;
	/* E1: free this generation's line and nothing else (a line that was
	 * re-joined since has a new generation and fails the CAS). Seq_cst:
	 * a release for the producer's scan (S2), which stops holding for
	 * it; relaxed on failure. */
	if (!atomic_compare_exchange_strong_explicit(&s->state, &w,
						     sub_word(sub_gen(w), PORTAL_BCAST_SUB_FREE),
						     memory_order_seq_cst, memory_order_relaxed))
		return -EAGAIN;
	portal_log(PORTAL_LOG_INFO, "bcast %p: subscriber line %u (owner %llu) evicted",
		   (void *)b->hdr, sub, (unsigned long long)atomic_load_explicit(&s->owner,
										memory_order_relaxed));
	return 1;
}

int portal_bcast_find_subs(portal_bcast_t *b, uint64_t owner, unsigned *subs, unsigned max)
{
	int n = 0;

	if (!b || (max && !subs))
		return -EINVAL;
	for (uint32_t i = 0; i < b->max_subs; i++) {
		/* Relaxed: a snapshot; evict re-checks with its CAS. */
		if (sub_state(atomic_load_explicit(&b->subs[i].state, memory_order_relaxed)) ==
			    PORTAL_BCAST_SUB_FREE ||
		    atomic_load_explicit(&b->subs[i].owner, memory_order_relaxed) != owner)
			continue;
		if ((unsigned)n < max)
			subs[n] = i;
		n++;
	}
	return n;
}

bool portal_bcast_quarantined(const portal_bcast_t *b) { return b->quarantined; }
void portal_bcast_stats(const portal_bcast_t *b, struct portal_ring_stats *st) { *st = b->st; }

static int bcast_init_cb(void *mem, size_t len, uint64_t offset, void *params)
{
	(void)offset;
	return portal_bcast_init(mem, len, params);
}

int portal_bcast_create(portal_region_t *reg, const char *name, const struct portal_bcast_params *p,
			uint32_t owner_side)
{
	uint64_t param[6] = { 0 };
	size_t size = portal_bcast_memsize(p);

	if (!size)
		return -EINVAL;
	param[0] = p->mode, param[1] = p->slot_size, param[2] = p->capacity, param[3] = p->max_subs;
	return ring_region_place(reg, name, PORTAL_OBJ_BCAST, size, owner_side, param,
				 bcast_init_cb, p);
}

int portal_bcast_open(portal_region_t *reg, const char *name, int sub, portal_bcast_t **out)
{
	void *mem;
	size_t len;
	int rc = ring_region_find(reg, name, PORTAL_OBJ_BCAST, &mem, &len);

	return rc ? rc : portal_bcast_attach(mem, len, sub, out);
}
