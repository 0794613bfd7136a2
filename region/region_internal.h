/* SPDX-License-Identifier: MIT */
#ifndef PORTAL_REGION_INTERNAL_H
#define PORTAL_REGION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

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
};

extern const struct portal_region_backend portal_region_backend_shm;
extern const struct portal_region_backend portal_region_backend_memfd;
extern const struct portal_region_backend portal_region_backend_fd;
extern const struct portal_region_backend portal_region_backend_file;

/* Shared by backends' create: take FD (or -1 with errno set by the call that
 * opened it), size it to SIZE (0: keep its size) and hand it out in *OUT;
 * on failure close it. Returns 0 or a negative errno. */
int portal_region_fd_finish(int fd, uint64_t size, int *out);

#endif
