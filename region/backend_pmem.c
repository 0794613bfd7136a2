/* SPDX-License-Identifier: MIT */
/*
 * pmem: - guest side of virtio-pmem (or any NVDIMM) memory, mapped directly
 * (DAX: no page cache between the guest and the host's file).
 *
 *   pmem:/dev/daxN.M          a devdax device. Offsets and lengths must be
 *                             multiples of the device's alignment (sysfs
 *                             "align", 2 MiB as usually configured); the
 *                             default window is the whole device, rounded
 *                             down to the alignment
 *   pmem:/dev/daxN.M?offset=N&size=N   a part of it
 *   pmem:/mnt/pmem/file       a file on a filesystem mounted with DAX
 *                             (ext4 or xfs, -o dax=always); refused with
 *                             -EOPNOTSUPP when the file is not DAX, because
 *                             the guest would then see neither the host's
 *                             writes nor publish its own until writeback
 *
 * The host maps the same bytes with file: on the memory-backend-file QEMU
 * was given: for devdax, "file:/path/to/image?devdax" reads where the data
 * starts from the NVDIMM_DAX_INFO block the guest kernel wrote at byte 4096
 * of the image (portal_region_devdax_data, below); "?offset=N" gives it by
 * hand. Byte k of /dev/daxN.M is byte (data start + k) of the image.
 *
 * Like ivshmem:, pmem: never resizes and there is nothing to destroy.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/log_internal.h"
#include "portal/common.h"
#include "region/region_internal.h"

#ifndef STATX_ATTR_DAX
#define STATX_ATTR_DAX 0x00200000 /* Linux 5.8 */
#endif

#define PMD_ALIGN (UINT64_C(2) << 20)

/* ---- the host's view: the NVDIMM_DAX_INFO block of a namespace image ---- */

/*
 * The info block ("PFN superblock") Linux writes at byte 4096 of a namespace
 * configured as devdax (ndctl create-namespace -m devdax). Little-endian;
 * only the fields read here are named.
 */
#define DAX_INFO_OFFSET 4096u
#define DAX_INFO_SIZE 4096u
#define DAX_INFO_SIG "NVDIMM_DAX_INFO" /* 16 bytes with its NUL */
#define DAX_OFF_VERSION_MAJOR 52
#define DAX_OFF_VERSION_MINOR 54
#define DAX_OFF_DATAOFF 56
#define DAX_OFF_START_PAD 76
#define DAX_OFF_END_TRUNC 80
#define DAX_OFF_ALIGN 84
#define DAX_OFF_CHECKSUM 4088

static uint64_t le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

/* Fletcher-64 over 32-bit little-endian words, the checksum field as 0. */
static uint64_t info_checksum(const uint8_t *b)
{
	uint32_t lo = 0;
	uint64_t hi = 0;

	for (unsigned i = 0; i < DAX_INFO_SIZE; i += 4) {
		lo += i >= DAX_OFF_CHECKSUM ? 0 : (uint32_t)le(b + i, 4);
		hi += lo;
	}
	return hi << 32 | lo;
}

int portal_region_devdax_data(int fd, uint64_t file_size, uint64_t *offset, uint64_t *len)
{
	uint8_t *b = malloc(DAX_INFO_SIZE);
	uint64_t dataoff, start_pad = 0, end_trunc = 0, align = 0, off;
	unsigned minor;
	ssize_t n;
	int rc = 0;

	if (!b)
		return -ENOMEM;
	n = pread(fd, b, DAX_INFO_SIZE, DAX_INFO_OFFSET);
	if (n < 0)
		rc = -errno;
	else if (n != DAX_INFO_SIZE || memcmp(b, DAX_INFO_SIG, sizeof(DAX_INFO_SIG)) ||
		 le(b + DAX_OFF_CHECKSUM, 8) != info_checksum(b) ||
		 le(b + DAX_OFF_VERSION_MAJOR, 2) != 1)
		rc = PORTAL_EMAGIC;
	if (rc) {
		free(b);
		portal_log(PORTAL_LOG_WARN, "devdax image: no valid NVDIMM_DAX_INFO block at 4096");
		return rc;
	}
	minor = (unsigned)le(b + DAX_OFF_VERSION_MINOR, 2);
	dataoff = le(b + DAX_OFF_DATAOFF, 8);
	if (minor >= 1) {
		start_pad = le(b + DAX_OFF_START_PAD, 4);
		end_trunc = le(b + DAX_OFF_END_TRUNC, 4);
	}
	if (minor >= 2)
		align = le(b + DAX_OFF_ALIGN, 4);
	free(b);
	if (align == 0 || (align & (align - 1)))
		align = PMD_ALIGN;
	/* The device starts start_pad + dataoff into the namespace (the whole
	 * file for virtio-pmem) and ends end_trunc before its end; the guest
	 * maps whole alignment units of it. */
	off = start_pad + dataoff;
	if (dataoff > file_size || off > file_size || end_trunc > file_size - off || off % 4096)
		return -EINVAL;
	*offset = off;
	*len = (file_size - off - end_trunc) & ~(align - 1);
	return *len ? 0 : -EINVAL;
}

/* ---- the guest's side: devdax devices and DAX files ---- */

/* One number from sysfs attribute ATTR of char device DEV. */
static int dax_attr(dev_t dev, const char *attr, uint64_t *v)
{
	char path[128], buf[32], *end;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/sys/dev/char/%u:%u/%s", major(dev), minor(dev), attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	errno = 0;
	*v = strtoull(buf, &end, 0);
	return errno || end == buf ? -EIO : 0;
}

/* Is char device DEV a device-dax instance? Its sysfs subsystem says. */
static bool is_dax(dev_t dev)
{
	char path[128], link[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/dev/char/%u:%u/subsystem", major(dev), minor(dev));
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return false;
	link[n] = '\0';
	return strcmp(strrchr(link, '/') ? strrchr(link, '/') + 1 : link, "dax") == 0;
}

static bool file_is_dax(int fd)
{
	struct statx stx;

	return statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) == 0 &&
	       (stx.stx_attributes & STATX_ATTR_DAX);
}

static int pmem_open(const char *path, bool readonly, int *fd)
{
	struct stat st;
	int rc = 0;

	if (*path != '/')
		return -EINVAL;
	*fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (*fd < 0)
		return -errno;
	if (fstat(*fd, &st) < 0)
		rc = -errno;
	else if (S_ISCHR(st.st_mode) && !is_dax(st.st_rdev))
		rc = -ENODEV;
	else if (S_ISREG(st.st_mode) && !file_is_dax(*fd)) {
		portal_log(PORTAL_LOG_WARN,
			   "pmem:%s is not DAX (mount with -o dax=always): the page cache "
			   "would stand between this side and the other", path);
		rc = -EOPNOTSUPP;
	} else if (!S_ISCHR(st.st_mode) && !S_ISREG(st.st_mode))
		rc = -ENODEV;
	if (rc) {
		close(*fd);
		*fd = -1;
	}
	return rc;
}

/* The device or file exists with its size; region.c refuses another size. */
static int pmem_create(const char *path, uint64_t size, bool excl, int *fd)
{
	(void)size;
	if (excl)
		return -EEXIST;
	return pmem_open(path, false, fd);
}

static int pmem_destroy(const char *path)
{
	(void)path;
	return -EOPNOTSUPP;
}

static int pmem_extent(int fd, const struct portal_region_window *w, uint64_t *offset,
		       uint64_t *len)
{
	uint64_t size, align, off = w->offset, want = w->size;
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode))
		return portal_region_file_extent(fd, w, offset, len);
	/* devdax: mmap wants offset and length in whole alignment units. */
	if (dax_attr(st.st_rdev, "size", &size) != 0)
		return -ENODEV;
	if (dax_attr(st.st_rdev, "align", &align) != 0 &&
	    dax_attr(st.st_rdev, "device/dax_region/align", &align) != 0)
		align = PMD_ALIGN;
	if (align == 0 || (align & (align - 1)))
		return -EINVAL;
	size &= ~(align - 1);
	if (off % align || want % align || off > size || want > size - off)
		return -EINVAL;
	*offset = off;
	*len = want ? want : size - off;
	return 0;
}

const struct portal_region_backend portal_region_backend_pmem = {
	.scheme = "pmem",
	.create = pmem_create,
	.open = pmem_open,
	.destroy = pmem_destroy,
	.extent = pmem_extent,
};
