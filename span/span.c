/* SPDX-License-Identifier: MIT */
#include "portal/span.h"

int portal_span_check(const struct portal_span *span, uint32_t region_id, uint64_t lo,
		      uint64_t hi)
{
	if (span->flags & ~PORTAL_SPAN_F_MASK)
		return -EINVAL;
	if (span->region_id != region_id)
		return PORTAL_EXDEV;
	/* Never form offset + length: it may wrap. */
	if (lo > hi || span->offset < lo || span->offset > hi || span->length > hi - span->offset)
		return PORTAL_ERANGE;
	return 0;
}

int portal_span_resolve(const struct portal_span *span, void *base, uint64_t size,
			uint32_t region_id, void **addr)
{
	int rc = portal_span_check(span, region_id, 0, size);

	if (rc)
		return rc;
	*addr = (char *)base + span->offset;
	return 0;
}
