/* SPDX-License-Identifier: MIT */
#ifndef PORTAL_RING_INTERNAL_H
#define PORTAL_RING_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "portal/region.h"
#include "portal/ring.h"

static inline bool ring_is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* Place an object of SIZE bytes and KIND in a region (creator), build it
 * with INIT(mem, size, params) and only then publish its directory entry. */
int ring_region_place(portal_region_t *reg, const char *name, uint32_t kind, size_t size,
		      uint32_t owner_side, const uint64_t param[6],
		      portal_object_init_fn init, const void *params);

/* Find NAME of KIND in a region; *mem and *len describe the object. */
int ring_region_find(portal_region_t *reg, const char *name, uint32_t kind, void **mem,
		     size_t *len);

/* Test hook (ring/ring_test.c): if set, a recoverable multi-producer
 * enqueue or multi-consumer dequeue calls it between its copy of the
 * claim [HEAD, HEAD + N) and its done mark, so that a test can hold a
 * claim open and run other handles meanwhile. NULL otherwise. */
extern void (*ring_test_hook_before_done)(portal_ring_t *r, uint64_t head, unsigned n);

#endif
