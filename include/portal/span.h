/* SPDX-License-Identifier: MIT */
/*
 * portal/span.h - bounded offset references into a region.
 *
 * A span is the only way data is referenced across the boundary: which
 * region, where, how long, and the generation of the block it points into.
 * It is plain data; copy it by value. Whoever receives a span checks it
 * (portal_span_check or portal_span_resolve) before touching the bytes.
 *
 * All functions here are pure: any thread, any time.
 */
#ifndef PORTAL_SPAN_H
#define PORTAL_SPAN_H

#include <stdint.h>

#include "portal/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 24 bytes, fits a 32-byte ring slot. Layout is ABI (little-endian). */
struct portal_span {
	uint64_t offset;      /* from the region start */
	uint32_t length;      /* bytes */
	uint32_t generation;  /* of the arena block; 0 for spans outside arenas */
	uint32_t region_id;   /* portal_region_id() of the region it points into */
	uint32_t flags;       /* PORTAL_SPAN_F_* */
};

#define PORTAL_SPAN_F_BUMP 0x1u /* from an arena's bump area */
#define PORTAL_SPAN_F_MASK 0x1u

/*
 * Check that SPAN lies inside [lo, hi) of a region of id REGION_ID:
 * overflow-safe (offset >= lo && offset <= hi && length <= hi - offset).
 * Returns 0, PORTAL_EXDEV (other region), PORTAL_ERANGE (out of bounds),
 * -EINVAL (unknown flag bits).
 */
PORTAL_API int portal_span_check(const struct portal_span *span, uint32_t region_id,
				 uint64_t lo, uint64_t hi);

/*
 * Check SPAN against a region mapped at BASE of SIZE bytes and id REGION_ID,
 * and give its address in this process. Same errors as portal_span_check.
 */
PORTAL_API int portal_span_resolve(const struct portal_span *span, void *base, uint64_t size,
				   uint32_t region_id, void **addr);

#ifdef __cplusplus
}
#endif
#endif /* PORTAL_SPAN_H */
