/* SPDX-License-Identifier: MIT */
/*
 * file:/path - any file: a plain file, a hugetlbfs file, or the file QEMU
 * maps with memory-backend-file for ivshmem or virtio-pmem. Creating over an
 * existing file with size 0 keeps its size, so a region can be laid into a
 * file QEMU already uses (QEMU wants a power-of-two size for ivshmem).
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "region/region_internal.h"

static int file_create(const char *path, uint64_t size, bool excl, int *fd)
{
	if (!*path)
		return -EINVAL;
	return portal_region_fd_finish(
		open(path, O_RDWR | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : 0), 0600), size, fd);
}

static int file_open(const char *path, bool readonly, int *fd)
{
	if (!*path)
		return -EINVAL;
	*fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	return *fd < 0 ? -errno : 0;
}

static int file_destroy(const char *path)
{
	return unlink(path) < 0 ? -errno : 0;
}

const struct portal_region_backend portal_region_backend_file = {
	.scheme = "file", .create = file_create, .open = file_open, .destroy = file_destroy,
};
