/* SPDX-License-Identifier: MIT */
/*
 * portal/region.h - shared regions: create, attach, detach, destroy; the
 * directory of named objects; participant slots.
 *
 * A region is one contiguous shared mapping laid out as in portal/abi.h:
 * a 4 KiB header (magic, version, size, epoch, checksum, participant slots),
 * a directory of named objects, then the objects themselves. The backend
 * that maps it is chosen by a URI:
 *
 *   shm:NAME      POSIX shared memory (/dev/shm/NAME); the default when the
 *                 URI has no scheme
 *   memfd:NAME    an anonymous memfd, shared by fork or by passing its fd
 *                 (portal_region_fd)
 *   file:/path    any file: a plain host file, a hugetlbfs file, or the file
 *                 QEMU maps as memory-backend-file for ivshmem or virtio-pmem
 *   fd:N          attach only: an inherited file descriptor (memfd, shm, file)
 *   ivshmem:[ADDR]  inside a QEMU guest: BAR2 of an ivshmem-plain or
 *                 ivshmem-doorbell PCI device (1af4:1110), the first one in
 *                 address order, or the one at ADDR ("0000:00:04.0"); the
 *                 region is the whole BAR. The host side is file: on the
 *                 memory-backend-file
 *   pmem:/dev/daxN.M  inside a guest: a device-dax instance (virtio-pmem
 *                 configured as devdax), mapped directly; the region is the
 *                 whole device, in whole units of its alignment
 *   pmem:/path    inside a guest: a file on a filesystem mounted with DAX;
 *                 -EOPNOTSUPP if the file is not DAX
 *
 * Windows. file:, fd: and pmem: take a query that maps part of the backing:
 *   ?offset=N     start N bytes in (file: a page multiple; devdax: a
 *                 multiple of the alignment); N may end in k, M or G
 *   ?size=N       N bytes (default: to the end)
 *   ?devdax       file: only: the file is a virtio-pmem image whose
 *                 namespace a guest made devdax; map the data area that the
 *                 NVDIMM_DAX_INFO block at byte 4096 describes (offsets in
 *                 the same query count from there). This is the host's side
 *                 of pmem:/dev/daxN.M: byte k of the device is byte k here
 * e.g. "file:/var/lib/vm/pmem.img?devdax", "file:/dev/shm/x?offset=2M".
 * A window is laid into an existing backing: create never makes, truncates
 * or resizes it (opts.size must be 0 or the window's size, F_EXCL is
 * -EINVAL), and destroy refuses it (-EOPNOTSUPP). In a file: path, '?'
 * always starts the query.
 *
 * The backing outlives every handle: detach leaves it, and
 * portal_region_destroy removes it (not for ivshmem: and pmem:, whose memory
 * belongs to the host: -EOPNOTSUPP).
 *
 * Concurrency: one portal_region_t is used by one thread at a time for
 * create/alloc/detach; lookup, base and heartbeat may run concurrently.
 * The creator (side 0) is the only side that adds directory entries.
 */
#ifndef PORTAL_REGION_H
#define PORTAL_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portal/abi.h"
#include "portal/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct portal_region portal_region_t;

#define PORTAL_REGION_F_EXCL     0x1u /* create: fail with -EEXIST if it exists */
#define PORTAL_REGION_F_READONLY 0x2u /* attach: map read-only, take no slot (observers) */
#define PORTAL_REGION_F_MASK     0x3u

struct portal_region_opts {
	uint64_t size;          /* create: total bytes; 0 = 1 MiB (file:, ivshmem:,
	                         * pmem: and windows: the backing's size). Rounded
	                         * up to a page */
	uint32_t dir_capacity;  /* create: directory entries; 0 = 64 */
	uint32_t part_count;    /* create: participant slots; 0 = 2 */
	uint32_t region_id;     /* create: 0 = random nonzero */
	uint32_t side;          /* attach: participant slot to take, 1..part_count-1; 0 = 1 */
	uint32_t flags;         /* PORTAL_REGION_F_* */
	const char *ident;      /* free text stored in our participant slot; may be NULL */
};

/*
 * Create a region at URI and take side 0. The header, directory and slots
 * are written before anything else can attach. Creating over an existing
 * region (without PORTAL_REGION_F_EXCL) reformats it with a new epoch; never
 * do that while peers still map it (a smaller size would fault them): use
 * F_EXCL, or portal_region_destroy first.
 * Returns 0, -EINVAL (bad URI, size or flags; a device or window whose
 * size is not opts->size), -EEXIST (F_EXCL and it exists; always for
 * ivshmem: and pmem:), or a negative errno from the backend.
 */
PORTAL_API int portal_region_create(const char *uri, const struct portal_region_opts *opts,
				    portal_region_t **out);

/*
 * Attach to an existing region at URI and take side opts->side (opts may be
 * NULL for side 1). The header and every directory entry are validated;
 * attach refuses, each with its own code:
 *   PORTAL_EMAGIC     wrong magic (not a Portal region)
 *   PORTAL_EVERSION   unsupported major version
 *   PORTAL_ESIZE      header size differs from the mapping, or file truncated
 *   PORTAL_ECHECKSUM  header or directory entry checksum wrong
 *   PORTAL_EDIR       a directory entry out of bounds, overlapping another,
 *                     or of an unknown kind
 *   -EBUSY            the participant slot is held by a live process, or
 *                     another attacher is claiming it right now
 *   -ENOENT           no such region; -EINVAL bad arguments
 */
PORTAL_API int portal_region_attach(const char *uri, const struct portal_region_opts *opts,
				    portal_region_t **out);

/*
 * Validate memory that is already mapped (an ivshmem BAR, a DAX mapping, a
 * buffer under test) and attach to it as opts->side. The caller keeps
 * ownership of the mapping. Same errors as portal_region_attach.
 */
PORTAL_API int portal_region_attach_mem(void *base, size_t len,
					const struct portal_region_opts *opts,
					portal_region_t **out);

/* Check a mapping's header and directory without attaching. Same errors. */
PORTAL_API int portal_region_validate(const void *base, size_t len);

/*
 * Mark our participant slot gone, unmap, free the handle. The backing stays
 * (portal_region_destroy removes it). Returns 0. Safe with NULL.
 */
PORTAL_API int portal_region_detach(portal_region_t *r);

/* Remove the backing object named by URI (shm_unlink / unlink). Returns 0,
 * -ENOENT, or another negative errno. memfd: regions vanish with their fds. */
PORTAL_API int portal_region_destroy(const char *uri);

PORTAL_API void *portal_region_base(const portal_region_t *r);
PORTAL_API size_t portal_region_size(const portal_region_t *r);
PORTAL_API uint64_t portal_region_epoch(const portal_region_t *r);
PORTAL_API uint32_t portal_region_id(const portal_region_t *r);
PORTAL_API uint32_t portal_region_side(const portal_region_t *r);
/* The backing fd (memfd, shm or file), to pass to another process; -1 if
 * the region was attached from memory. Owned by the region. */
PORTAL_API int portal_region_fd(const portal_region_t *r);

/* What a directory entry says, copied out and validated. */
struct portal_object_info {
	char name[PORTAL_NAME_MAX];
	uint32_t kind;        /* enum portal_obj_kind */
	uint32_t owner_side;
	uint64_t offset;      /* from region start */
	uint64_t size;
	uint64_t param[6];
	void *addr;           /* base + offset, in this process */
};

/*
 * Creator only: place an object of SIZE bytes named NAME, aligned to ALIGN
 * (0 = 128; a power of two), zero it, and publish its directory entry.
 * Returns 0 with *info filled, -EINVAL, -EEXIST (name taken), -ENOSPC
 * (directory or region full), -EPERM (not the creator).
 * Memory order: the entry is published with release after the memory is
 * zeroed; a lookup that finds it also sees the zeroes.
 */
PORTAL_API int portal_region_alloc(portal_region_t *r, const char *name, uint32_t kind,
				   uint64_t size, uint64_t align, uint32_t owner_side,
				   const uint64_t param[6], struct portal_object_info *info);

/* Lays out an object in freshly zeroed memory at OFFSET from the region
 * start; returns 0 or a negative errno. */
typedef int (*portal_object_init_fn)(void *mem, size_t len, uint64_t offset, void *arg);

/*
 * As portal_region_alloc, but INIT(mem, size, offset, arg) runs on the zeroed object
 * before its entry is published, so no peer can find a half-built object.
 * An INIT failure is returned and the object is not published (its space is
 * not reused). INIT may be NULL.
 */
PORTAL_API int portal_region_alloc_init(portal_region_t *r, const char *name, uint32_t kind,
					uint64_t size, uint64_t align, uint32_t owner_side,
					const uint64_t param[6], portal_object_init_fn init,
					void *arg, struct portal_object_info *info);

/*
 * Find NAME in the directory (kind 0 matches any kind). The entry is copied
 * and re-validated: checksum, bounds, kind.
 * Returns 0, -ENOENT, PORTAL_ECHECKSUM or PORTAL_EDIR.
 */
PORTAL_API int portal_region_lookup(const portal_region_t *r, const char *name, uint32_t kind,
				    struct portal_object_info *info);

/* Bump our heartbeat counter (relaxed store: only we write it). */
PORTAL_API void portal_region_heartbeat(portal_region_t *r);

struct portal_participant_info {
	uint32_t state;       /* enum portal_part_state */
	uint32_t kind;        /* enum portal_part_kind */
	uint64_t epoch;
	uint64_t heartbeat;
	uint64_t pid;
	char ident[32];
};

/* Copy participant SIDE's slot. Returns 0 or -EINVAL. */
PORTAL_API int portal_region_participant(const portal_region_t *r, uint32_t side,
					 struct portal_participant_info *out);

#ifdef __cplusplus
}
#endif
#endif /* PORTAL_REGION_H */
