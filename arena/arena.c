/* SPDX-License-Identifier: MIT */
/*
 * arena.c - the owner's allocator: layout, attach validation, slab classes,
 * span checks, the bump area, and the receiver's resolve.
 *
 * No atomics here: the shared header is written once before the arena is
 * published (portal_arena_create builds it inside portal_region_alloc_init,
 * so the directory's release publishes it), and everything
 * that changes lives in the owner's private handle.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "arena/arena_internal.h"
#include "common/atomic_internal.h"
#include "common/log_internal.h"

#define ARENA_VERSION 1u
#define ARENA_ALIGN   ((uint64_t)PORTAL_CACHELINE)
/* Largest bump area: keeps every offset sum far from overflow. */
#define ARENA_MAX_BUMP (UINT64_C(1) << 48)

enum arena_verdict {
	V_BLOCK,   /* a current block span: free it */
	V_BUMP,    /* a current bump span: acknowledge */
	V_REGION,  /* PORTAL_EXDEV */
	V_RANGE,   /* PORTAL_ERANGE */
	V_FORGED,  /* PORTAL_EFORGED */
	V_STALE,   /* PORTAL_ESTALE, block allocated */
	V_DOUBLE,  /* PORTAL_ESTALE, block free */
};

static uint64_t round_up64(uint64_t v)
{
	return (v + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
}

/* ------------------------------------------------------------------ */
/* Layout and validation                                               */
/* ------------------------------------------------------------------ */

/* Turn params into the header init writes. 0 or -EINVAL. */
static int arena_layout(const struct portal_arena_params *p, struct portal_arena_hdr *h)
{
	uint64_t off = PORTAL_ARENA_HDR_SIZE;
	uint64_t total = 0;
	uint32_t i;

	if (!p || p->nclasses > PORTAL_ARENA_MAX_CLASSES || (p->flags & ~PORTAL_ARENA_F_MASK))
		return -EINVAL;
	if (p->bump_size > ARENA_MAX_BUMP || (p->nclasses == 0 && p->bump_size == 0))
		return -EINVAL;
	memset(h, 0, sizeof(*h));
	h->magic = PORTAL_ARENA_MAGIC;
	h->version = ARENA_VERSION;
	h->nclasses = (uint16_t)p->nclasses;
	for (i = 0; i < p->nclasses; i++) {
		const struct portal_arena_class_params *c = &p->cls[i];

		if (c->block_size == 0 || c->block_size % ARENA_ALIGN || c->count == 0)
			return -EINVAL;
		if (i > 0 && c->block_size <= p->cls[i - 1].block_size)
			return -EINVAL;
		total += c->count;
		if (total > PORTAL_ARENA_MAX_BLOCKS)
			return -EINVAL;
		h->cls[i].block_size = c->block_size;
		h->cls[i].count = c->count;
		h->cls[i].offset = off;
		/* < 2^32 * 2^24 per class, 8 classes: no overflow. */
		off += (uint64_t)c->block_size * c->count;
	}
	h->bump_offset = off;
	h->bump_size = round_up64(p->bump_size);
	h->obj_size = off + h->bump_size;
	if (h->obj_size > SIZE_MAX)
		return -EINVAL;
	return 0;
}

struct extent {
	uint64_t lo, hi;
};

/* Check a header copied out of shared memory. 0 or PORTAL_EPROTO. */
static int arena_check_hdr(const struct portal_arena_hdr *h, size_t len)
{
	struct extent ext[PORTAL_ARENA_MAX_CLASSES + 1];
	unsigned next = 0;
	uint64_t total = 0;
	uint32_t i, j;

	if (h->magic != PORTAL_ARENA_MAGIC || h->version != ARENA_VERSION || h->flags != 0 ||
	    h->nclasses > PORTAL_ARENA_MAX_CLASSES || h->owner_side >= PORTAL_REGION_MAX_PARTS)
		return PORTAL_EPROTO;
	if (h->obj_size < PORTAL_ARENA_HDR_SIZE || h->obj_size > len || h->obj_size % ARENA_ALIGN)
		return PORTAL_EPROTO;
	if (h->nclasses == 0 && h->bump_size == 0)
		return PORTAL_EPROTO;
	for (i = 0; i < PORTAL_ARENA_MAX_CLASSES; i++) {
		const struct portal_arena_class *c = &h->cls[i];
		uint64_t bytes = (uint64_t)c->block_size * c->count;

		if (i >= h->nclasses) {
			/* Unused entries are zero: anything else is not ours. */
			if (c->block_size || c->count || c->offset)
				return PORTAL_EPROTO;
			continue;
		}
		if (c->block_size == 0 || c->block_size % ARENA_ALIGN || c->count == 0 ||
		    c->offset % ARENA_ALIGN || c->offset < PORTAL_ARENA_HDR_SIZE ||
		    c->offset > h->obj_size || bytes > h->obj_size - c->offset)
			return PORTAL_EPROTO;
		if (i > 0 && c->block_size <= h->cls[i - 1].block_size)
			return PORTAL_EPROTO;
		total += c->count;
		if (total > PORTAL_ARENA_MAX_BLOCKS)
			return PORTAL_EPROTO;
		ext[next].lo = c->offset;
		ext[next].hi = c->offset + bytes;
		next++;
	}
	if (h->bump_size % ARENA_ALIGN || h->bump_offset % ARENA_ALIGN ||
	    h->bump_offset > h->obj_size || h->bump_size > h->obj_size - h->bump_offset)
		return PORTAL_EPROTO;
	if (h->bump_size) {
		if (h->bump_offset < PORTAL_ARENA_HDR_SIZE)
			return PORTAL_EPROTO;
		ext[next].lo = h->bump_offset;
		ext[next].hi = h->bump_offset + h->bump_size;
		next++;
	}
	for (i = 0; i < next; i++)
		for (j = i + 1; j < next; j++)
			if (ext[i].lo < ext[j].hi && ext[j].lo < ext[i].hi)
				return PORTAL_EPROTO;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Owner handle                                                        */
/* ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static uint32_t nonzero32(uint64_t v)
{
	uint32_t g = (uint32_t)(v >> 32);

	return g ? g : 1;
}

static int arena_seed(uint64_t *seed)
{
	ssize_t n;

	do
		n = getrandom(seed, sizeof(*seed), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	/* Requests up to 256 bytes are never short. */
	if (PORTAL_NEVER(n != (ssize_t)sizeof(*seed)))
		return -EIO;
	return 0;
}

void portal_arena_detach(portal_arena_t *a)
{
	if (!a)
		return;
	free(a->gen);
	free(a->in_use);
	free(a->stacks);
	free(a->tagged);
	free(a->holder);
	free(a->sent_seq);
	free(a);
}

/*
 * Build an owner handle from a validated header H (a private copy). With
 * RANDOM, generations and the bump epoch start at values drawn from SEED;
 * otherwise at 1.
 */
static int arena_handle_new(void *mem, const struct portal_arena_hdr *h,
			    uint64_t region_offset, uint32_t region_id, int random,
			    uint64_t seed, portal_arena_t **out)
{
	portal_arena_t *a;
	uint32_t i, b, nblocks = 0;
	size_t words;

	for (i = 0; i < h->nclasses; i++)
		nblocks += h->cls[i].count; /* <= PORTAL_ARENA_MAX_BLOCKS: checked */
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	words = ((size_t)nblocks + 63) / 64;
	a->gen = malloc(sizeof(*a->gen) * (nblocks ? nblocks : 1));
	a->in_use = calloc(words ? words : 1, sizeof(*a->in_use));
	a->stacks = malloc(sizeof(*a->stacks) * (nblocks ? nblocks : 1));
	if (!a->gen || !a->in_use || !a->stacks) {
		portal_arena_detach(a);
		return -ENOMEM;
	}
	a->mem = mem;
	a->obj_size = h->obj_size;
	a->region_offset = region_offset;
	a->region_id = region_id;
	a->owner_side = h->owner_side;
	a->nclasses = h->nclasses;
	a->nblocks = nblocks;
	a->blocks_lo = UINT64_MAX;
	a->blocks_hi = 0;
	for (i = 0, b = 0; i < h->nclasses; i++) {
		struct arena_class *c = &a->cls[i];
		uint32_t k;

		c->off = h->cls[i].offset;
		c->block_size = h->cls[i].block_size;
		c->count = h->cls[i].count;
		c->end = c->off + (uint64_t)c->block_size * c->count;
		c->first = b;
		c->free_stack = a->stacks + b;
		/* Block 0 on top: a fresh arena hands blocks out in address order. */
		for (k = 0; k < c->count; k++)
			c->free_stack[k] = c->count - 1 - k;
		c->free_top = c->count;
		b += c->count;
		if (c->off < a->blocks_lo)
			a->blocks_lo = c->off;
		if (c->end > a->blocks_hi)
			a->blocks_hi = c->end;
	}
	if (h->nclasses == 0)
		a->blocks_lo = 0;
	for (b = 0; b < nblocks; b++)
		a->gen[b] = random ? nonzero32(splitmix64(&seed)) : 1;
	a->bump_off = h->bump_offset;
	a->bump_size = h->bump_size;
	a->bump_cursor = 0;
	a->bump_epoch = random ? nonzero32(splitmix64(&seed)) : 1;
	a->st.blocks_total = nblocks;
	a->st.bump_epoch = a->bump_epoch;
	*out = a;
	return 0;
}

size_t portal_arena_memsize(const struct portal_arena_params *p)
{
	struct portal_arena_hdr h;

	if (arena_layout(p, &h))
		return 0;
	return (size_t)h.obj_size;
}

int portal_arena_init(void *mem, size_t len, uint64_t region_offset, uint32_t region_id,
		      const struct portal_arena_params *p, uint32_t owner_side,
		      portal_arena_t **out)
{
	struct portal_arena_hdr h;
	uint64_t seed = 0;
	int rc;

	if (!mem || ((uintptr_t)mem % ARENA_ALIGN) || owner_side >= PORTAL_REGION_MAX_PARTS)
		return -EINVAL;
	rc = arena_layout(p, &h);
	if (rc)
		return rc;
	if (h.obj_size > len || region_offset > UINT64_MAX - h.obj_size)
		return -EINVAL;
	h.owner_side = owner_side;
	/* Our own layout must pass the check attach makes. */
	if (PORTAL_NEVER(arena_check_hdr(&h, len))) {
		portal_log(PORTAL_LOG_ERROR, "arena: layout fails its own check");
		return -EINVAL;
	}
	if (out && (p->flags & PORTAL_ARENA_F_RANDOM_GEN)) {
		rc = arena_seed(&seed);
		if (rc)
			return rc;
	}
	memcpy(mem, &h, sizeof(h));
	if (!out)
		return 0;
	return arena_handle_new(mem, &h, region_offset, region_id,
				!!(p->flags & PORTAL_ARENA_F_RANDOM_GEN), seed, out);
}

int arena_attach_seeded(void *mem, size_t len, uint64_t region_offset, uint32_t region_id,
			uint64_t seed, portal_arena_t **out)
{
	struct portal_arena_hdr h;
	int rc;

	if (!mem || !out || ((uintptr_t)mem % ARENA_ALIGN))
		return -EINVAL;
	if (len < sizeof(h))
		return PORTAL_EPROTO;
	/* Copy the header once; check and use only the copy. */
	memcpy(&h, mem, sizeof(h));
	rc = arena_check_hdr(&h, len);
	if (rc) {
		portal_log(PORTAL_LOG_WARN, "arena: header at region offset %llu is corrupt",
			   (unsigned long long)region_offset);
		return rc;
	}
	if (region_offset > UINT64_MAX - h.obj_size)
		return -EINVAL;
	return arena_handle_new(mem, &h, region_offset, region_id, 1, seed, out);
}

int portal_arena_attach(void *mem, size_t len, uint64_t region_offset, uint32_t region_id,
			portal_arena_t **out)
{
	uint64_t seed;
	int rc;

	if (!mem || !out)
		return -EINVAL;
	rc = arena_seed(&seed);
	if (rc)
		return rc;
	return arena_attach_seeded(mem, len, region_offset, region_id, seed, out);
}

/* ------------------------------------------------------------------ */
/* Blocks                                                              */
/* ------------------------------------------------------------------ */

static int bit_get(const uint64_t *bits, uint32_t i)
{
	return (int)((bits[i / 64] >> (i % 64)) & 1u);
}

static void bit_flip(uint64_t *bits, uint32_t i)
{
	bits[i / 64] ^= UINT64_C(1) << (i % 64);
}

int portal_arena_alloc(portal_arena_t *a, size_t len, struct portal_span *span, void **ptr)
{
	uint32_t i, first;

	if (!a || !span || len == 0)
		return -EINVAL;
	for (first = 0; first < a->nclasses; first++)
		if (a->cls[first].block_size >= len)
			break;
	if (first == a->nclasses)
		return -EMSGSIZE;
	for (i = first; i < a->nclasses; i++) {
		struct arena_class *c = &a->cls[i];
		uint32_t idx, blk;
		uint64_t rel;

		if (c->free_top == 0)
			continue;
		idx = c->free_stack[c->free_top - 1];
		blk = c->first + idx;
		/* The stack holds only free blocks; a set bit is our own bug. */
		if (PORTAL_NEVER(idx >= c->count || bit_get(a->in_use, blk))) {
			portal_log(PORTAL_LOG_ERROR, "arena: free list corrupt in class %u", i);
			return -EPROTO;
		}
		c->free_top--;
		bit_flip(a->in_use, blk);
		rel = c->off + (uint64_t)idx * c->block_size;
		span->offset = a->region_offset + rel;
		span->length = (uint32_t)len; /* <= block_size, a uint32_t */
		span->generation = a->gen[blk];
		span->region_id = a->region_id;
		span->flags = 0;
		if (ptr)
			*ptr = a->mem + rel;
		a->st.allocs++;
		a->st.blocks_in_use++;
		return 0;
	}
	a->st.alloc_failed++;
	return -ENOSPC;
}

/*
 * Judge SPAN without changing anything. For V_BLOCK, *CLS and *BLK say
 * which block it names.
 */
static enum arena_verdict arena_judge(const portal_arena_t *a, const struct portal_span *span,
				      uint32_t *cls, uint32_t *blk)
{
	uint64_t rel, lo, hi;
	uint32_t i;

	if (span->region_id != a->region_id)
		return V_REGION;
	if (span->flags & ~PORTAL_SPAN_F_MASK)
		return V_FORGED;
	if (span->offset < a->region_offset)
		return V_RANGE;
	rel = span->offset - a->region_offset;

	if (span->flags & PORTAL_SPAN_F_BUMP) {
		lo = a->bump_off;
		hi = a->bump_off + a->bump_size;
		if (a->bump_size == 0 || rel < lo || rel > hi || span->length > hi - rel)
			return V_RANGE;
		if (span->generation != a->bump_epoch)
			return V_STALE;
		/* Inside what this epoch handed out? */
		if (rel - lo > a->bump_cursor || span->length > a->bump_cursor - (rel - lo))
			return V_FORGED;
		return V_BUMP;
	}

	/* Never form rel + length: it may wrap. */
	if (rel < a->blocks_lo || rel > a->blocks_hi || span->length > a->blocks_hi - rel)
		return V_RANGE;
	for (i = 0; i < a->nclasses; i++) {
		const struct arena_class *c = &a->cls[i];
		uint64_t delta;

		if (rel < c->off || rel >= c->end)
			continue;
		delta = rel - c->off;
		if (delta % c->block_size || span->length > c->block_size)
			return V_FORGED;
		*cls = i;
		*blk = c->first + (uint32_t)(delta / c->block_size);
		if (!bit_get(a->in_use, *blk))
			return V_DOUBLE;
		if (span->generation != a->gen[*blk])
			return V_STALE;
		return V_BLOCK;
	}
	return V_FORGED; /* in a gap between classes */
}

/* Free allocated block BLK of class CI: generation bumped, tag dropped. */
static int arena_free_block(portal_arena_t *a, uint32_t ci, uint32_t blk)
{
	struct arena_class *c = &a->cls[ci];
	uint32_t g;

	/* An allocated block is never on the stack, so there is room. */
	if (PORTAL_NEVER(c->free_top >= c->count)) {
		portal_log(PORTAL_LOG_ERROR, "arena: free list overflow in class %u", ci);
		return -EPROTO;
	}
	bit_flip(a->in_use, blk);
	if (a->tagged && bit_get(a->tagged, blk))
		bit_flip(a->tagged, blk);
	g = a->gen[blk] + 1;
	a->gen[blk] = g ? g : 1;
	c->free_stack[c->free_top++] = blk - c->first;
	a->st.frees++;
	a->st.blocks_in_use--;
	return 0;
}

int portal_arena_free(portal_arena_t *a, const struct portal_span *span)
{
	uint32_t ci = 0, blk = 0;

	if (!a || !span)
		return -EINVAL;
	switch (arena_judge(a, span, &ci, &blk)) {
	case V_BLOCK:
		break;
	case V_BUMP:
		a->st.bump_acks++;
		return 0;
	case V_REGION:
		a->st.refused_region++;
		return PORTAL_EXDEV;
	case V_RANGE:
		a->st.refused_range++;
		return PORTAL_ERANGE;
	case V_FORGED:
		a->st.refused_forged++;
		return PORTAL_EFORGED;
	case V_STALE:
		a->st.refused_stale++;
		return PORTAL_ESTALE;
	case V_DOUBLE:
	default:
		a->st.refused_double++;
		return PORTAL_ESTALE;
	}
	return arena_free_block(a, ci, blk);
}

/* ------------------------------------------------------------------ */
/* Bump area                                                           */
/* ------------------------------------------------------------------ */

int portal_arena_bump_alloc(portal_arena_t *a, size_t len, size_t align,
			    struct portal_span *span, void **ptr)
{
	uint64_t start, pad, left, rel;

	if (!a || !span || len == 0)
		return -EINVAL;
	if (align == 0)
		align = 8;
	if (align > PORTAL_ARENA_MAX_ALIGN || (align & (align - 1)))
		return -EINVAL;
	if (len > UINT32_MAX || len > a->bump_size)
		return -EMSGSIZE;
	/* Align the region offset, which is what receivers see. */
	start = a->region_offset + a->bump_off + a->bump_cursor;
	pad = (uint64_t)(-start) & (align - 1);
	left = a->bump_size - a->bump_cursor;
	if (pad > left || len > left - pad) {
		a->st.bump_failed++;
		return -ENOSPC;
	}
	rel = a->bump_off + a->bump_cursor + pad;
	a->bump_cursor += pad + len;
	span->offset = a->region_offset + rel;
	span->length = (uint32_t)len;
	span->generation = a->bump_epoch;
	span->region_id = a->region_id;
	span->flags = PORTAL_SPAN_F_BUMP;
	if (ptr)
		*ptr = a->mem + rel;
	a->st.bump_allocs++;
	a->st.bump_used = a->bump_cursor;
	return 0;
}

void portal_arena_bump_reset(portal_arena_t *a)
{
	if (!a)
		return;
	a->bump_cursor = 0;
	a->bump_epoch++;
	if (a->bump_epoch == 0)
		a->bump_epoch = 1;
	a->st.bump_resets++;
	a->st.bump_used = 0;
	a->st.bump_epoch = a->bump_epoch;
}

/* ------------------------------------------------------------------ */
/* Receivers, counters, test hooks                                     */
/* ------------------------------------------------------------------ */

int portal_arena_resolve(const struct portal_object_info *arena_obj, uint32_t region_id,
			 void *region_base, const struct portal_span *span, void **ptr)
{
	int rc;

	if (!arena_obj || !region_base || !span || !ptr)
		return -EINVAL;
	if (arena_obj->kind != PORTAL_OBJ_ARENA || arena_obj->size < PORTAL_ARENA_HDR_SIZE ||
	    arena_obj->offset > UINT64_MAX - arena_obj->size)
		return -EINVAL;
	/* The extent comes from the directory entry; the header is skipped. */
	rc = portal_span_check(span, region_id, arena_obj->offset + PORTAL_ARENA_HDR_SIZE,
			       arena_obj->offset + arena_obj->size);
	if (rc)
		return rc;
	*ptr = (char *)region_base + span->offset;
	return 0;
}

void portal_arena_stats(const portal_arena_t *a, struct portal_arena_stats *st)
{
	if (a && st)
		*st = a->st;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n--) {
		h ^= *b++;
		h *= UINT64_C(0x100000001B3);
	}
	return h;
}

uint64_t arena_state_digest(const portal_arena_t *a)
{
	uint64_t h = UINT64_C(0xCBF29CE484222325);
	uint32_t i;

	h = fnv1a(h, a->gen, sizeof(*a->gen) * a->nblocks);
	h = fnv1a(h, a->in_use, sizeof(*a->in_use) * (((size_t)a->nblocks + 63) / 64));
	for (i = 0; i < a->nclasses; i++) {
		h = fnv1a(h, &a->cls[i].free_top, sizeof(a->cls[i].free_top));
		h = fnv1a(h, a->cls[i].free_stack, sizeof(uint32_t) * a->cls[i].free_top);
	}
	h = fnv1a(h, &a->bump_cursor, sizeof(a->bump_cursor));
	h = fnv1a(h, &a->bump_epoch, sizeof(a->bump_epoch));
	return h;
}


/* ------------------------------------------------------------------ */
/* Crash recovery: blocks held by a dead receiver                      */
/* ------------------------------------------------------------------ */

int portal_arena_mark_sent(portal_arena_t *a, const struct portal_span *span, uint32_t holder,
			   uint64_t seq)
{
	uint32_t ci = 0, blk = 0;

	if (!a || !span)
		return -EINVAL;
	switch (arena_judge(a, span, &ci, &blk)) {
	case V_BLOCK:
		break;
	case V_BUMP:
		return -EINVAL; /* bump memory comes back with bump_reset */
	case V_REGION:
		return PORTAL_EXDEV;
	case V_RANGE:
		return PORTAL_ERANGE;
	case V_FORGED:
		return PORTAL_EFORGED;
	default:
		return PORTAL_ESTALE;
	}
	if (!a->tagged) {
		size_t words = ((size_t)a->nblocks + 63) / 64;

		/* First use: 12 bytes and a bit a block, only for owners that
		 * recover. */
		a->tagged = calloc(words, sizeof(*a->tagged));
		a->holder = malloc(sizeof(*a->holder) * a->nblocks);
		a->sent_seq = malloc(sizeof(*a->sent_seq) * a->nblocks);
		if (!a->tagged || !a->holder || !a->sent_seq) {
			free(a->tagged);
			free(a->holder);
			free(a->sent_seq);
			a->tagged = NULL;
			a->holder = NULL;
			a->sent_seq = NULL;
			return -ENOMEM;
		}
	}
	if (!bit_get(a->tagged, blk))
		bit_flip(a->tagged, blk);
	a->holder[blk] = holder;
	a->sent_seq[blk] = seq;
	return 0;
}

int portal_arena_recover(portal_arena_t *a, uint32_t holder, uint64_t taken)
{
	uint32_t ci, k;
	int freed = 0;

	if (!a)
		return -EINVAL;
	if (!a->tagged)
		return 0;
	for (ci = 0; ci < a->nclasses; ci++) {
		const struct arena_class *c = &a->cls[ci];

		for (k = 0; k < c->count; k++) {
			uint32_t blk = c->first + k;

			/* Tagged blocks are allocated: free drops the tag. The
			 * receiver took SEQ < TAKEN; the rest is still in its
			 * stream, for its next life. */
			if (!bit_get(a->tagged, blk) || a->holder[blk] != holder ||
			    (int64_t)(a->sent_seq[blk] - taken) >= 0)
				continue;
			if (PORTAL_NEVER(!bit_get(a->in_use, blk)))
				continue;
			if (arena_free_block(a, ci, blk))
				return freed ? freed : -EPROTO;
			a->st.recovered++;
			freed++;
		}
	}
	if (freed)
		portal_log(PORTAL_LOG_WARN, "arena: %d blocks of dead receiver %u taken back",
			   freed, holder);
	return freed;
}
