/* SPDX-License-Identifier: MIT */
/* Backends on the host's shared memory: shm:NAME, memfd:NAME and fd:N. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "portal/common.h"
#include "region/region_internal.h"

int portal_region_fd_finish(int fd, uint64_t size, int *out)
{
	struct stat st;
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		rc = -errno;
	else if (size == 0 && st.st_size <= 0)
		rc = -EINVAL;
	else if (size && (uint64_t)st.st_size != size && ftruncate(fd, (off_t)size) < 0)
		rc = -errno;
	if (rc) {
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

/* "NAME" -> "/NAME"; one path component, as shm_open wants. */
static int shm_path(const char *name, char *buf, size_t cap)
{
	if (!*name || strchr(name, '/') || strlen(name) + 2 > cap || strlen(name) > NAME_MAX - 1)
		return -EINVAL;
	snprintf(buf, cap, "/%s", name);
	return 0;
}

static int shm_create(const char *name, uint64_t size, bool excl, int *fd)
{
	char path[NAME_MAX + 1];
	int rc = shm_path(name, path, sizeof(path));

	if (rc)
		return rc;
	return portal_region_fd_finish(
		shm_open(path, O_RDWR | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : 0), 0600), size, fd);
}

static int shm_open_existing(const char *name, bool readonly, int *fd)
{
	char path[NAME_MAX + 1];
	int rc = shm_path(name, path, sizeof(path));

	if (rc)
		return rc;
	*fd = shm_open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0);
	return *fd < 0 ? -errno : 0;
}

static int shm_destroy(const char *name)
{
	char path[NAME_MAX + 1];
	int rc = shm_path(name, path, sizeof(path));

	if (rc)
		return rc;
	return shm_unlink(path) < 0 ? -errno : 0;
}

const struct portal_region_backend portal_region_backend_shm = {
	.scheme = "shm", .create = shm_create, .open = shm_open_existing, .destroy = shm_destroy,
};

/* memfd: anonymous; other processes get it by fork or SCM_RIGHTS and attach
 * through "fd:N". Not close-on-exec, so an exec'd child inherits it. */
static int memfd_create_region(const char *name, uint64_t size, bool excl, int *fd)
{
	(void)excl;
	if (size == 0)
		return -EINVAL;
	return portal_region_fd_finish(memfd_create(*name ? name : "portal", 0), size, fd);
}

static int memfd_open(const char *name, bool readonly, int *fd)
{
	(void)name, (void)readonly, (void)fd;
	return -EINVAL; /* nothing to open by name: use fd:N */
}

static int no_destroy(const char *name)
{
	(void)name;
	return -EOPNOTSUPP;
}

const struct portal_region_backend portal_region_backend_memfd = {
	.scheme = "memfd", .create = memfd_create_region, .open = memfd_open, .destroy = no_destroy,
};

static int fd_create(const char *name, uint64_t size, bool excl, int *fd)
{
	(void)name, (void)size, (void)excl, (void)fd;
	return -EINVAL; /* attach only */
}

/* fd:N duplicates N, so the region owns its own descriptor. */
static int fd_open(const char *name, bool readonly, int *fd)
{
	char *end;
	long n;

	(void)readonly;
	errno = 0;
	n = strtol(name, &end, 10);
	if (errno || end == name || *end || n < 0 || n > INT_MAX)
		return -EINVAL;
	*fd = fcntl((int)n, F_DUPFD_CLOEXEC, 0);
	return *fd < 0 ? -errno : 0;
}

const struct portal_region_backend portal_region_backend_fd = {
	.scheme = "fd", .create = fd_create, .open = fd_open, .destroy = no_destroy,
};
