/* SPDX-License-Identifier: MIT */
/*
 * ivshmem: - guest side of QEMU's ivshmem-plain and ivshmem-doorbell
 * devices (PCI vendor 0x1af4, device 0x1110). The shared memory is the
 * device's BAR2; byte k of it is byte k of the host's memory-backend-file.
 *
 *   ivshmem:              the first ivshmem device, by PCI address order
 *   ivshmem:0000:00:04.0  the device at that address ("00:04.0" means
 *                         domain 0000)
 *
 * The backend enables the device (writes 1 to its sysfs "enable"), then
 * opens BAR2 as /sys/bus/pci/devices/<addr>/resource2; region.c maps it with
 * MAP_SHARED at its full size, the BAR size (a power of two, the size QEMU
 * was given). No kernel driver is needed and none may be bound that keeps
 * the BAR to itself. Interrupts (ivshmem-doorbell) are not handled here.
 *
 * The host creates the region in the memory-backend-file with file:; the
 * guest attaches. Create works too (on a backing of the BAR's size), for a
 * guest that lays out a region for other guests. There is nothing to
 * destroy: the memory belongs to the host.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log_internal.h"
#include "region/region_internal.h"

#define PCI_DEVICES "/sys/bus/pci/devices"
#define IVSHMEM_VENDOR 0x1af4u
#define IVSHMEM_DEVICE 0x1110u

/* Read a small sysfs attribute holding one number ("0x1af4\n"). */
static int read_hex(const char *dir, const char *attr, unsigned long *v)
{
	char path[512], buf[32], *end;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, attr);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -EIO;
	buf[n] = '\0';
	errno = 0;
	*v = strtoul(buf, &end, 0);
	return errno || end == buf ? -EIO : 0;
}

static bool is_ivshmem(const char *dir)
{
	unsigned long vendor, device;

	return read_hex(dir, "vendor", &vendor) == 0 && read_hex(dir, "device", &device) == 0 &&
	       vendor == IVSHMEM_VENDOR && device == IVSHMEM_DEVICE;
}

/* A PCI address as sysfs names it: "dddd:bb:ss.f", hex digits. */
static bool valid_addr(const char *a)
{
	size_t n = strlen(a);

	if (n != 12 || a[4] != ':' || a[7] != ':' || a[10] != '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (i != 4 && i != 7 && i != 10 && !strchr("0123456789abcdefABCDEF", a[i]))
			return false;
	return true;
}

/* NAME -> the sysfs directory of the ivshmem device it selects. */
static int find_device(const char *name, char *dir, size_t cap)
{
	char addr[32], best[32] = "";
	struct dirent *de;
	DIR *d;

	if (*name) {
		/* "bb:ss.f" is in domain 0000. */
		snprintf(addr, sizeof(addr), "%s%s", strlen(name) == 7 ? "0000:" : "", name);
		if (!valid_addr(addr))
			return -EINVAL;
		snprintf(dir, cap, PCI_DEVICES "/%s", addr);
		if (access(dir, F_OK) < 0)
			return -ENOENT;
		if (!is_ivshmem(dir)) {
			portal_log(PORTAL_LOG_WARN, "ivshmem:%s is not an ivshmem device", name);
			return -ENODEV;
		}
		return 0;
	}
	/* The first match in address order (readdir order is arbitrary). */
	d = opendir(PCI_DEVICES);
	if (!d)
		return -ENODEV;
	while ((de = readdir(d)) != NULL) {
		if (!valid_addr(de->d_name) || (*best && strcmp(de->d_name, best) >= 0))
			continue;
		snprintf(dir, cap, PCI_DEVICES "/%s", de->d_name);
		if (is_ivshmem(dir))
			memcpy(best, de->d_name, 13); /* valid_addr: 12 characters */
	}
	closedir(d);
	if (!*best)
		return -ENODEV;
	snprintf(dir, cap, PCI_DEVICES "/%s", best);
	return 0;
}

/* Turn on memory decoding. Writing "1" when the device is already enabled
 * fails with EBUSY on some kernels; what matters is that it ends enabled. */
static int enable_device(const char *dir)
{
	char path[512];
	unsigned long on = 0;
	int fd, err = 0;

	snprintf(path, sizeof(path), "%s/enable", dir);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1", 1) != 1)
		err = errno;
	if (fd >= 0)
		close(fd);
	if (read_hex(dir, "enable", &on) == 0 && on)
		return 0;
	portal_log(PORTAL_LOG_WARN, "ivshmem: cannot enable %s: %s", dir, strerror(err ? err : EIO));
	return err ? -err : -EIO;
}

static int ivshmem_open(const char *name, bool readonly, int *fd)
{
	char dir[300], path[320];
	int rc = find_device(name, dir, sizeof(dir));

	if (rc == 0)
		rc = enable_device(dir);
	if (rc)
		return rc;
	snprintf(path, sizeof(path), "%s/resource2", dir);
	*fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	return *fd < 0 ? -errno : 0;
}

/* The BAR exists already with its size; region.c refuses another size. */
static int ivshmem_create(const char *name, uint64_t size, bool excl, int *fd)
{
	(void)size;
	if (excl)
		return -EEXIST;
	return ivshmem_open(name, false, fd);
}

static int ivshmem_destroy(const char *name)
{
	(void)name;
	return -EOPNOTSUPP;
}

/* The whole BAR: sysfs gives resource2 the BAR's size. */
static int ivshmem_extent(int fd, const struct portal_region_window *w, uint64_t *offset,
			  uint64_t *len)
{
	struct stat st;

	(void)w; /* ivshmem: takes no query */
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size <= 0 || ((uint64_t)st.st_size & ((uint64_t)st.st_size - 1)))
		return -ENODEV; /* not a BAR as QEMU makes them */
	*offset = 0;
	*len = (uint64_t)st.st_size;
	return 0;
}

const struct portal_region_backend portal_region_backend_ivshmem = {
	.scheme = "ivshmem",
	.create = ivshmem_create,
	.open = ivshmem_open,
	.destroy = ivshmem_destroy,
	.extent = ivshmem_extent,
};
