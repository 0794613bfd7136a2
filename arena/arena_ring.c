/* SPDX-License-Identifier: MIT */
/*
 * arena_ring.c - the return path: receivers give spans back over a
 * descriptor ring of PORTAL_ARENA_RETURN_SLOT-byte slots, the owner drains
 * it and checks each span before the block is reused.
 *
 * Ordering comes from the ring: a give_back is a release of the receiver's
 * reads of the block (pairs with the acquire of the owner's dequeue), so the
 * owner can only reuse a block after the receiver stopped reading it.
 */
#include <limits.h>
#include <string.h>

#include "arena/arena_internal.h"

#define RETURN_BATCH 16u

/* One slot: the span, then zeroes. */
struct return_slot {
	struct portal_span span;
	uint8_t reserved[PORTAL_ARENA_RETURN_SLOT - sizeof(struct portal_span)];
};
_Static_assert(sizeof(struct portal_span) == 24, "span is 24 bytes");
_Static_assert(sizeof(struct return_slot) == PORTAL_ARENA_RETURN_SLOT, "return slot");

int portal_arena_reclaim(portal_arena_t *a, portal_ring_t *return_ring, unsigned max)
{
	struct return_slot buf[RETURN_BATCH];
	unsigned done = 0;

	if (!a || !return_ring || portal_ring_slot_size(return_ring) != PORTAL_ARENA_RETURN_SLOT)
		return -EINVAL;
	if (max > INT_MAX)
		max = INT_MAX;
	if (max == 0) {
		/* Nothing to take, but a quarantined ring (or a wrong role)
		 * still says so. */
		int rc = portal_ring_count(return_ring);

		return rc < 0 ? rc : 0;
	}
	while (done < max) {
		unsigned want = max - done < RETURN_BATCH ? max - done : RETURN_BATCH;
		int n = portal_ring_dequeue_burst(return_ring, buf, want);
		int i;

		if (n < 0)
			return done ? (int)done : n; /* a quarantined ring says so again */
		for (i = 0; i < n; i++) {
			struct portal_span s;

			/* A give-back whose receiver died mid-enqueue, turned
			 * into poison by ring recovery: nothing to free. */
			if (portal_ring_is_poison(return_ring, &buf[i])) {
				a->st.poison_skipped++;
				continue;
			}
			/* Copy out of the slot buffer, then judge the copy. */
			memcpy(&s, &buf[i].span, sizeof(s));
			a->st.returned++;
			(void)portal_arena_free(a, &s); /* refusals are counted there */
		}
		done += (unsigned)n;
		if ((unsigned)n < want)
			break;
	}
	return (int)done;
}

int portal_arena_give_back(portal_ring_t *return_ring, const struct portal_span *span)
{
	struct return_slot slot;

	if (!return_ring || !span ||
	    portal_ring_slot_size(return_ring) != PORTAL_ARENA_RETURN_SLOT)
		return -EINVAL;
	memset(&slot, 0, sizeof(slot));
	slot.span = *span;
	return portal_ring_enqueue(return_ring, &slot);
}

int portal_arena_give_back_burst(portal_ring_t *return_ring, const struct portal_span *spans,
				 unsigned n)
{
	struct return_slot buf[RETURN_BATCH];
	unsigned done = 0;

	if (!return_ring || (!spans && n) ||
	    portal_ring_slot_size(return_ring) != PORTAL_ARENA_RETURN_SLOT)
		return -EINVAL;
	if (n > INT_MAX)
		n = INT_MAX;
	memset(buf, 0, sizeof(buf));
	while (done < n) {
		unsigned want = n - done < RETURN_BATCH ? n - done : RETURN_BATCH;
		unsigned i;
		int k;

		for (i = 0; i < want; i++)
			buf[i].span = spans[done + i];
		k = portal_ring_enqueue_burst(return_ring, buf, want);
		if (k < 0)
			return done ? (int)done : k;
		done += (unsigned)k;
		if ((unsigned)k < want)
			break;
	}
	return (int)done;
}
