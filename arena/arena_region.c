/* SPDX-License-Identifier: MIT */
/*
 * arena_region.c - placing an arena in a region's directory and finding it
 * again. Kept apart from arena.c so the allocator links without region.c.
 */
#include <string.h>

#include "arena/arena_internal.h"

struct create_args {
	const struct portal_arena_params *p;
	uint32_t region_id;
	uint32_t owner_side;
	portal_arena_t **owner_handle;
};

/* Runs before the directory entry is published: a peer that finds the name
 * finds a complete header. */
static int init_cb(void *mem, size_t len, uint64_t offset, void *arg)
{
	const struct create_args *c = arg;

	return portal_arena_init(mem, len, offset, c->region_id, c->p, c->owner_side,
				 c->owner_handle);
}

int portal_arena_create(portal_region_t *reg, const char *name,
			const struct portal_arena_params *p, uint32_t owner_side,
			portal_arena_t **owner_handle)
{
	struct portal_object_info info;
	struct create_args args;
	uint64_t param[6] = {0};
	size_t size;
	uint32_t i;

	if (!reg || !name || !p)
		return -EINVAL;
	size = portal_arena_memsize(p);
	if (size == 0)
		return -EINVAL;
	/* Only the owner side may hold the owner handle: one writer. */
	if (owner_handle && owner_side != portal_region_side(reg))
		return -EINVAL;
	/* Informative: nclasses, bump bytes, largest block, blocks. */
	param[0] = p->nclasses;
	param[1] = p->bump_size;
	for (i = 0; i < p->nclasses; i++) {
		param[2] = p->cls[i].block_size;
		param[3] += p->cls[i].count;
	}
	args.p = p;
	args.region_id = portal_region_id(reg);
	args.owner_side = owner_side;
	args.owner_handle = owner_handle;
	return portal_region_alloc_init(reg, name, PORTAL_OBJ_ARENA, size, 0, owner_side, param,
					init_cb, &args, &info);
}

int portal_arena_open(portal_region_t *reg, const char *name, portal_arena_t **owner_handle)
{
	struct portal_object_info info;
	portal_arena_t *a;
	int rc;

	if (!reg || !name || !owner_handle)
		return -EINVAL;
	rc = portal_region_lookup(reg, name, PORTAL_OBJ_ARENA, &info);
	if (rc)
		return rc;
	if (info.owner_side != portal_region_side(reg))
		return -EPERM;
	rc = portal_arena_attach(info.addr, info.size, info.offset, portal_region_id(reg), &a);
	if (rc)
		return rc;
	if (a->owner_side != info.owner_side) {
		portal_arena_detach(a);
		return PORTAL_EPROTO;
	}
	*owner_handle = a;
	return 0;
}
