/* SPDX-License-Identifier: MIT */
#ifndef PORTAL_REGION_INTERNAL_H
#define PORTAL_REGION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A window into a backing: which bytes of the opened file or device hold
 * the region. Parsed by region.c from a URI's query (file: and pmem: only):
 *   ?offset=N     start N bytes in (a page multiple)
 *   ?size=N       N bytes long (0 or absent: to the end)
 *   ?devdax       file: the file is a devdax namespace image (virtio-pmem);
 *                 map the data area its NVDIMM_DAX_INFO block describes
 * Without a query the window is the whole file, offset 0.
 */
struct portal_region_window {
	uint64_t offset;
	uint64_t size;
	bool devdax;
	bool given;   /* the URI had a query: never create, truncate or destroy */
};

/*
 * A backend turns the part of a URI after "scheme:" into an open file
 * descriptor of the right size; region.c maps it. One file per backend.
 */
struct portal_region_backend {
	const char *scheme;
	/* Open or create NAME with SIZE bytes (0: keep an existing file's size).
	 * Returns 0 and *fd, or a negative errno. */
	int (*create)(const char *name, uint64_t size, bool excl, int *fd);
	/* Open an existing NAME. Returns 0 and *fd, or a negative errno. */
	int (*open)(const char *name, bool readonly, int *fd);
	/* Remove NAME. Returns 0 or a negative errno (-EOPNOTSUPP if it cannot). */
	int (*destroy)(const char *name);
	/* Optional: the bytes of FD to map for window W, for backings whose size
	 * fstat does not give or whose mapping has rules (a PCI BAR, a devdax
	 * device). Sets *offset and *len; returns 0 or a negative errno. NULL:
	 * portal_region_file_extent. */
	int (*extent)(int fd, const struct portal_region_window *w, uint64_t *offset,
		      uint64_t *len);
};

extern const struct portal_region_backend portal_region_backend_shm;
extern const struct portal_region_backend portal_region_backend_memfd;
extern const struct portal_region_backend portal_region_backend_fd;
extern const struct portal_region_backend portal_region_backend_file;
extern const struct portal_region_backend portal_region_backend_ivshmem; /* backend_ivshmem.c */
extern const struct portal_region_backend portal_region_backend_pmem;    /* backend_pmem.c */

/* Shared by backends' create: take FD (or -1 with errno set by the call that
 * opened it), size it to SIZE (0: keep its size) and hand it out in *OUT;
 * on failure close it. Returns 0 or a negative errno. */
int portal_region_fd_finish(int fd, uint64_t size, int *out);

/*
 * The default extent (region.c): window W of a backing whose size fstat
 * gives (shm, memfd, a plain file, a sysfs PCI resource). The offset must
 * be a page multiple and the window inside the file; with W->devdax it is
 * taken relative to the data area of the file's NVDIMM_DAX_INFO block.
 * Returns 0, -EINVAL (window outside the file or unaligned), PORTAL_EMAGIC
 * (devdax: no valid info block), or a negative errno.
 */
int portal_region_file_extent(int fd, const struct portal_region_window *w, uint64_t *offset,
			      uint64_t *len);

/*
 * Where the data of a devdax namespace image starts and how long it is,
 * from the NVDIMM_DAX_INFO block the guest kernel wrote at byte 4096 of
 * FD (virtio-pmem backing file of FILE_SIZE bytes). Returns 0,
 * PORTAL_EMAGIC (no such block, or its checksum is wrong), -EINVAL
 * (fields that do not fit the file) or a negative errno from pread.
 */
int portal_region_devdax_data(int fd, uint64_t file_size, uint64_t *offset, uint64_t *len);

#endif
