/* SPDX-License-Identifier: MIT */
/*
 * arena_internal.h - the owner handle, shared by the arena's source files,
 * and hooks for the arena's own tests. Not installed.
 */
#ifndef PORTAL_ARENA_INTERNAL_H
#define PORTAL_ARENA_INTERNAL_H

#include <stdint.h>

#include "portal/arena.h"

/* One size class, as copied from the validated header. */
struct arena_class {
	uint64_t off;         /* first block, from the arena start */
	uint64_t end;         /* off + count * block_size */
	uint32_t block_size;
	uint32_t count;
	uint32_t first;       /* index of block 0 in the per-block arrays */
	uint32_t free_top;    /* entries in free_stack */
	uint32_t *free_stack; /* class-local indices of free blocks; the next
	                       * one handed out is free_stack[free_top - 1] */
};

/* The owner handle: private memory, written by the owner thread only. */
struct portal_arena {
	uint8_t *mem;            /* arena start in this process */
	uint64_t obj_size;       /* from the header, checked against len */
	uint64_t region_offset;  /* arena start, from the region start */
	uint32_t region_id;
	uint32_t owner_side;
	uint32_t nclasses;
	uint32_t nblocks;        /* over all classes */
	uint64_t blocks_lo;      /* lowest class start, from the arena start */
	uint64_t blocks_hi;      /* highest class end */
	struct arena_class cls[PORTAL_ARENA_MAX_CLASSES];
	uint32_t *gen;           /* per block: current generation, never 0 */
	uint64_t *in_use;        /* per block: 1 bit, set while handed out */
	uint32_t *stacks;        /* backing store of every free_stack */
	uint64_t bump_off;       /* bump area, from the arena start */
	uint64_t bump_size;
	uint64_t bump_cursor;    /* bytes handed out in this epoch */
	uint32_t bump_epoch;     /* generation of bump spans, never 0 */
	/* Send tags (portal_arena_mark_sent), allocated on first use: */
	uint64_t *tagged;        /* per block: 1 bit, set while tagged */
	uint32_t *holder;        /* per block: receiver it was sent to */
	uint64_t *sent_seq;      /* per block: its place in that stream */
	struct portal_arena_stats st;
};

/* portal_arena_attach with the generation seed given instead of drawn from
 * getrandom(), so a test can replay it. Same returns. */
int arena_attach_seeded(void *mem, size_t len, uint64_t region_offset, uint32_t region_id,
			uint64_t seed, portal_arena_t **out);

/* A hash of all of the owner's allocator state (free stacks, allocated
 * bits, generations, bump cursor and epoch) but not the counters: equal
 * before and after a call that must not change state. */
uint64_t arena_state_digest(const portal_arena_t *a);

#endif /* PORTAL_ARENA_INTERNAL_H */
