/* SPDX-License-Identifier: MIT */
/*
 * doorbell_region.c - place a doorbell in a region directory and open it by
 * name. Kept apart from doorbell.c so that a program using only the
 * caller-provided-memory API does not pull region/ in from libportal.a.
 */
#include <errno.h>
#include <stdint.h>

#include "doorbell/doorbell_internal.h"

static int init_cb(void *mem, size_t len, uint64_t offset, void *arg)
{
	(void)offset;
	return portal_doorbell_init(mem, len, *(const enum portal_doorbell_backend *)arg);
}

int portal_doorbell_create(portal_region_t *reg, const char *name,
			   enum portal_doorbell_backend backend, uint32_t owner_side)
{
	uint64_t param[6] = { (uint64_t)backend, PORTAL_DOORBELL_VERSION, 0, 0, 0, 0 };

	if (!reg || !name)
		return -EINVAL;
	/* Every backend keeps only words in shared memory; whatever wakes
	 * the waiter (an eventfd, the ivshmem server's eventfds or a guest's
	 * MSI-X, a stream) belongs to the handles and is given at attach. So
	 * the creator needs no resource of its own for any of them. */
	switch (backend) {
	case PORTAL_DOORBELL_FUTEX:
	case PORTAL_DOORBELL_EVENTFD:
	case PORTAL_DOORBELL_IVSHMEM:
	case PORTAL_DOORBELL_STREAM:
		break;
	default:
		return -EINVAL;
	}
	/* Built before its entry is published: a peer never sees magic 0. */
	return portal_region_alloc_init(reg, name, PORTAL_OBJ_DOORBELL, portal_doorbell_memsize(),
					PORTAL_LINE_PAIR, owner_side, param, init_cb, &backend,
					NULL);
}

int portal_doorbell_open(portal_region_t *reg, const char *name, enum portal_doorbell_role role,
			 const struct portal_doorbell_opts *opts, portal_doorbell_t **out)
{
	struct portal_object_info info;
	int rc;

	if (!reg || !name || !out)
		return -EINVAL;
	rc = portal_region_lookup(reg, name, PORTAL_OBJ_DOORBELL, &info);
	if (rc < 0)
		return rc;
	if (info.size > SIZE_MAX)
		return PORTAL_EPROTO;
	return portal_doorbell_attach(info.addr, (size_t)info.size, role, opts, out);
}
