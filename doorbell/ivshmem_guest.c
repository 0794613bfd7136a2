/* SPDX-License-Identifier: MIT */
/*
 * ivshmem_guest.c - QEMU's ivshmem PCI device (vendor 0x1af4, device
 * 0x1110) seen from inside a guest: its registers (BAR0), its shared memory
 * (BAR2) and, with VFIO, its MSI-X interrupts as eventfds.
 *
 * Two ways in (ivshmem-server/README.md, "The guest side", has the exact
 * set-up, and /work/shared/docs/VM-TESTING.md the facts behind it):
 *
 *   sysfs  /sys/bus/pci/devices/BDF/{enable,resource0,resource2}: write 1 to
 *          `enable`, mmap resource0 for the registers and resource2 for the
 *          memory. No driver, no interrupts: a waiter polls (polling mode).
 *   VFIO   the device bound to vfio-pci behind an IOMMU (q35 with
 *          intel-iommu, intel_iommu=on): container /dev/vfio/vfio, group
 *          /dev/vfio/N, type-1 IOMMU, the device fd; BAR0 by pread/pwrite at
 *          its region offset, BAR2 by mmap, MSI-X vectors wired to eventfds
 *          with VFIO_DEVICE_SET_IRQS. A waiter sleeps on an eventfd, as a host
 *          process does.
 *
 * Register accesses are 32 bits wide. In the sysfs mapping they go through
 * a volatile pointer: that is what makes the compiler emit exactly one
 * access of the right width to device memory (an MMIO access, not a
 * synchronisation device; the ordering against the shared memory comes
 * from the explicit fence in portal_ivshmem_guest_ring).
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/pci_regs.h>
#include <linux/vfio.h>

#include "doorbell/doorbell_internal.h"

#define SYSFS_PCI_DEVICES "/sys/bus/pci/devices"
#define IVSHMEM_VENDOR 0x1af4
#define IVSHMEM_DEVICE 0x1110

struct portal_ivshmem_guest {
	uint32_t mode;               /* PORTAL_IVSHMEM_GUEST_F_SYSFS or _VFIO */
	uint32_t id;                 /* IVPosition, read at open */
	char bdf[64];

	/* sysfs: the BAR0 registers, mapped. volatile because these are device
	 * registers (MMIO): each access must reach the device, exactly once, as a
	 * 32-bit access. It is not used for synchronisation between threads. */
	volatile uint32_t *regs;
	size_t regs_map_len;

	/* Both: the shared memory, mapped. */
	void *shm;
	size_t shm_size;

	/* VFIO. */
	int container, group, device;
	uint64_t bar0_offset;        /* BAR0's offset in the device fd */
	unsigned nvec;
	int irq_fd[PORTAL_IVSHMEM_MAX_VECTORS];
};

/* ------------------------------------------------------------------ */
/* sysfs helpers                                                       */
/* ------------------------------------------------------------------ */

/* A PCI address as a directory name: no '/', not "." or "..". */
static bool bdf_ok(const char *bdf)
{
	size_t n = strlen(bdf);

	return n > 0 && n < 64 && !strchr(bdf, '/') && strcmp(bdf, ".") != 0 &&
	       strcmp(bdf, "..") != 0;
}

static int dev_path(char *buf, size_t len, const char *root, const char *bdf, const char *leaf)
{
	int n = snprintf(buf, len, "%s/%s/%s", root, bdf, leaf);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Read a small sysfs file holding a hex number ("0x1af4\n"). */
static int read_hex(const char *path, unsigned long *out)
{
	char buf[32];
	char *end;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return n < 0 ? -errno : -EINVAL;
	buf[n] = '\0';
	errno = 0;
	*out = strtoul(buf, &end, 16);
	if (errno || end == buf)
		return -EINVAL;
	return 0;
}

static bool is_ivshmem(const char *root, const char *bdf)
{
	char path[PATH_MAX];
	unsigned long vendor, device;

	if (dev_path(path, sizeof(path), root, bdf, "vendor") < 0 || read_hex(path, &vendor) < 0)
		return false;
	if (dev_path(path, sizeof(path), root, bdf, "device") < 0 || read_hex(path, &device) < 0)
		return false;
	return vendor == IVSHMEM_VENDOR && device == IVSHMEM_DEVICE;
}

/* The first ivshmem device under ROOT, in name order. */
static int find_device(const char *root, char *bdf, size_t len)
{
	struct dirent **list;
	int n, i, rc = -ENOENT;

	n = scandir(root, &list, NULL, alphasort);
	if (n < 0)
		return -errno;
	for (i = 0; i < n; i++) {
		if (rc == -ENOENT && bdf_ok(list[i]->d_name) &&
		    strlen(list[i]->d_name) < len && is_ivshmem(root, list[i]->d_name)) {
			memcpy(bdf, list[i]->d_name, strlen(list[i]->d_name) + 1);
			rc = 0;
		}
		free(list[i]);
	}
	free(list);
	return rc;
}

/* The last path component of the symlink ROOT/BDF/LEAF ("vfio-pci" for
 * driver, "7" for iommu_group). */
static int link_name(const char *root, const char *bdf, const char *leaf, char *out, size_t len)
{
	char path[PATH_MAX], target[PATH_MAX];
	const char *base;
	ssize_t n;
	int rc = dev_path(path, sizeof(path), root, bdf, leaf);

	if (rc < 0)
		return rc;
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	base = strrchr(target, '/');
	base = base ? base + 1 : target;
	if (strlen(base) >= len)
		return -ENAMETOOLONG;
	memcpy(out, base, strlen(base) + 1);
	return 0;
}

/* mmap a whole sysfs resource file. */
static int map_resource(const char *root, const char *bdf, const char *leaf, size_t min,
			void **addr, size_t *size)
{
	char path[PATH_MAX];
	struct stat st;
	void *p;
	int fd, rc = dev_path(path, sizeof(path), root, bdf, leaf);

	if (rc < 0)
		return rc;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		portal_log(PORTAL_LOG_WARN, "ivshmem guest: cannot open %s: errno %d", path, -rc);
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size < min || (uint64_t)st.st_size > SIZE_MAX) {
		portal_log(PORTAL_LOG_WARN, "ivshmem guest: %s is %lld bytes, need %zu", path,
			   (long long)st.st_size, min);
		close(fd);
		return -EINVAL;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	rc = p == MAP_FAILED ? -errno : 0;
	close(fd);
	if (rc < 0) {
		portal_log(PORTAL_LOG_WARN, "ivshmem guest: cannot map %s: errno %d", path, -rc);
		return rc;
	}
	*addr = p;
	*size = (size_t)st.st_size;
	return 0;
}

static int open_sysfs(struct portal_ivshmem_guest *g, const char *root)
{
	char path[PATH_MAX];
	void *regs;
	size_t len;
	int fd, rc;

	/* Enable the device's memory decoding; EBUSY (already enabled, or
	 * held by a driver) and a failure here are harmless if the mmaps
	 * below work. */
	rc = dev_path(path, sizeof(path), root, g->bdf, "enable");
	if (rc < 0)
		return rc;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			portal_log(PORTAL_LOG_DEBUG, "ivshmem guest: enable: errno %d", errno);
		close(fd);
	}
	rc = map_resource(root, g->bdf, "resource0", PORTAL_IVSHMEM_BAR0_SIZE, &regs, &len);
	if (rc < 0)
		return rc;
	g->regs = regs;
	g->regs_map_len = len;
	rc = map_resource(root, g->bdf, "resource2", 1, &g->shm, &g->shm_size);
	if (rc < 0)
		return rc;
	/* One 32-bit read of IVPosition. */
	g->id = le32toh(g->regs[PORTAL_IVSHMEM_REG_IVPOSITION / 4]);
	return 0;
}

/* ------------------------------------------------------------------ */
/* VFIO                                                                */
/* ------------------------------------------------------------------ */

static int region_info(int device, uint32_t index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	return ioctl(device, VFIO_DEVICE_GET_REGION_INFO, ri) < 0 ? -errno : 0;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n = pread(fd, buf, len, (off_t)off);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	ssize_t n = pwrite(fd, buf, len, (off_t)off);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

static int vfio_fail(const char *what, int rc)
{
	portal_log(PORTAL_LOG_WARN, "ivshmem guest: VFIO %s failed: errno %d", what, -rc);
	return rc;
}

static int open_vfio(struct portal_ivshmem_guest *g, const char *root, uint32_t want_vectors)
{
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	struct vfio_device_info di = { .argsz = sizeof(di) };
	struct vfio_irq_info ii = { .argsz = sizeof(ii) };
	struct vfio_region_info bar0, bar2, cfg;
	struct vfio_irq_set *set;
	char group[32], path[64];
	uint16_t cmd;
	uint32_t id;
	unsigned n, i;
	void *p;
	int rc;

	rc = link_name(root, g->bdf, "iommu_group", group, sizeof(group));
	if (rc < 0) {
		portal_log(PORTAL_LOG_WARN, "ivshmem guest: %s has no IOMMU group (no IOMMU?)",
			   g->bdf);
		return -ENODEV;
	}
	g->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (g->container < 0)
		return vfio_fail("open /dev/vfio/vfio", -errno);
	if (ioctl(g->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		return vfio_fail("API version", -ENODEV);
	if (ioctl(g->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0)
		return vfio_fail("type-1 IOMMU", -ENODEV);
	snprintf(path, sizeof(path), "/dev/vfio/%s", group);
	g->group = open(path, O_RDWR | O_CLOEXEC);
	if (g->group < 0)
		return vfio_fail(path, -errno);
	if (ioctl(g->group, VFIO_GROUP_GET_STATUS, &gs) < 0)
		return vfio_fail("group status", -errno);
	if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		portal_log(PORTAL_LOG_WARN, "ivshmem guest: IOMMU group %s is not viable (every "
			   "device in it must be bound to vfio-pci)", group);
		return -ENODEV;
	}
	if (ioctl(g->group, VFIO_GROUP_SET_CONTAINER, &g->container) < 0)
		return vfio_fail("set container", -errno);
	if (ioctl(g->container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0)
		return vfio_fail("set IOMMU", -errno);
	g->device = ioctl(g->group, VFIO_GROUP_GET_DEVICE_FD, g->bdf);
	if (g->device < 0)
		return vfio_fail("get device fd", -errno);
	if (ioctl(g->device, VFIO_DEVICE_GET_INFO, &di) < 0)
		return vfio_fail("device info", -errno);
	if (!(di.flags & VFIO_DEVICE_FLAGS_PCI) || di.num_regions <= VFIO_PCI_CONFIG_REGION_INDEX)
		return vfio_fail("device info (not PCI)", -ENODEV);

	rc = region_info(g->device, VFIO_PCI_BAR0_REGION_INDEX, &bar0);
	if (rc < 0)
		return vfio_fail("BAR0 info", rc);
	if (bar0.size < PORTAL_IVSHMEM_BAR0_SIZE)
		return vfio_fail("BAR0 size", -EINVAL);
	g->bar0_offset = bar0.offset;
	rc = region_info(g->device, VFIO_PCI_BAR2_REGION_INDEX, &bar2);
	if (rc < 0)
		return vfio_fail("BAR2 info", rc);
	if (!(bar2.flags & VFIO_REGION_INFO_FLAG_MMAP) || bar2.size == 0 ||
	    bar2.size > SIZE_MAX)
		return vfio_fail("BAR2 (not mappable)", -EINVAL);
	rc = region_info(g->device, VFIO_PCI_CONFIG_REGION_INDEX, &cfg);
	if (rc < 0)
		return vfio_fail("config info", rc);

	/* Memory space and bus mastering on (MSI-X writes are bus master
	 * writes). */
	rc = pread_all(g->device, &cmd, sizeof(cmd), cfg.offset + PCI_COMMAND);
	if (rc < 0)
		return vfio_fail("read command register", rc);
	cmd = htole16(le16toh(cmd) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	rc = pwrite_all(g->device, &cmd, sizeof(cmd), cfg.offset + PCI_COMMAND);
	if (rc < 0)
		return vfio_fail("write command register", rc);

	p = mmap(NULL, (size_t)bar2.size, PROT_READ | PROT_WRITE, MAP_SHARED, g->device,
		 (off_t)bar2.offset);
	if (p == MAP_FAILED)
		return vfio_fail("mmap BAR2", -errno);
	g->shm = p;
	g->shm_size = (size_t)bar2.size;

	rc = pread_all(g->device, &id, sizeof(id), g->bar0_offset + PORTAL_IVSHMEM_REG_IVPOSITION);
	if (rc < 0)
		return vfio_fail("read IVPosition", rc);
	g->id = le32toh(id);

	ii.index = VFIO_PCI_MSIX_IRQ_INDEX;
	if (ioctl(g->device, VFIO_DEVICE_GET_IRQ_INFO, &ii) < 0)
		return vfio_fail("MSI-X info", -errno);
	if (ii.count == 0) {
		portal_log(PORTAL_LOG_WARN, "ivshmem guest: device has no MSI-X vectors "
			   "(ivshmem-plain, or ivshmem-doorbell without vectors)");
		return -ENODEV;
	}
	n = want_vectors ? want_vectors : ii.count;
	if (n > ii.count || n > PORTAL_IVSHMEM_MAX_VECTORS) {
		if (want_vectors)
			return vfio_fail("vector count", -EINVAL);
		n = PORTAL_IVSHMEM_MAX_VECTORS;
	}
	set = calloc(1, sizeof(*set) + n * sizeof(int32_t));
	if (!set)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

		if (fd < 0) {
			rc = -errno;
			free(set);
			return rc;
		}
		g->irq_fd[i] = fd;
		g->nvec = i + 1;
		memcpy(set->data + i * sizeof(int32_t), &fd, sizeof(int32_t));
	}
	set->argsz = (uint32_t)(sizeof(*set) + n * sizeof(int32_t));
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = VFIO_PCI_MSIX_IRQ_INDEX;
	set->start = 0;
	set->count = n;
	rc = ioctl(g->device, VFIO_DEVICE_SET_IRQS, set) < 0 ? -errno : 0;
	free(set);
	if (rc < 0) {
		/* Nothing is wired: do not let close() try to unwire. */
		for (i = 0; i < g->nvec; i++)
			close(g->irq_fd[i]);
		g->nvec = 0;
		return vfio_fail("SET_IRQS (MSI-X)", rc);
	}
	return 0;
}

static void close_vfio(struct portal_ivshmem_guest *g)
{
	unsigned i;

	if (g->device >= 0 && g->nvec) {
		struct vfio_irq_set off = {
			.argsz = sizeof(off),
			.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
			.index = VFIO_PCI_MSIX_IRQ_INDEX,
			.start = 0,
			.count = 0,
		};

		(void)ioctl(g->device, VFIO_DEVICE_SET_IRQS, &off);
	}
	for (i = 0; i < g->nvec; i++)
		close(g->irq_fd[i]);
	g->nvec = 0;
	if (g->device >= 0)
		close(g->device);
	if (g->group >= 0)
		close(g->group);
	if (g->container >= 0)
		close(g->container);
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

int portal_ivshmem_guest_open(const struct portal_ivshmem_guest_opts *opts,
			      portal_ivshmem_guest_t **out)
{
	struct portal_ivshmem_guest *g;
	const char *root;
	char path[PATH_MAX], driver[64];
	struct stat st;
	uint32_t mode;
	int rc;

	if (!opts || !out || (opts->flags & ~PORTAL_IVSHMEM_GUEST_F_MASK) ||
	    opts->flags == PORTAL_IVSHMEM_GUEST_F_MASK ||
	    opts->vectors > PORTAL_IVSHMEM_MAX_VECTORS)
		return -EINVAL;
	if (opts->bdf && !bdf_ok(opts->bdf))
		return -EINVAL;
	root = opts->sysfs_root ? opts->sysfs_root : SYSFS_PCI_DEVICES;

	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->container = g->group = g->device = -1;

	if (opts->bdf) {
		memcpy(g->bdf, opts->bdf, strlen(opts->bdf) + 1);
		rc = dev_path(path, sizeof(path), root, g->bdf, "");
		if (rc == 0 && stat(path, &st) < 0)
			rc = -errno;
		if (rc < 0)
			goto fail;
		if (!is_ivshmem(root, g->bdf)) {
			portal_log(PORTAL_LOG_WARN, "ivshmem guest: %s is not an ivshmem device",
				   g->bdf);
			rc = -ENOENT;
			goto fail;
		}
	} else {
		rc = find_device(root, g->bdf, sizeof(g->bdf));
		if (rc < 0) {
			portal_log(PORTAL_LOG_WARN, "ivshmem guest: no ivshmem device under %s",
				   root);
			goto fail;
		}
	}

	mode = opts->flags;
	if (mode == 0) {
		mode = PORTAL_IVSHMEM_GUEST_F_SYSFS;
		if (link_name(root, g->bdf, "driver", driver, sizeof(driver)) == 0 &&
		    strcmp(driver, "vfio-pci") == 0)
			mode = PORTAL_IVSHMEM_GUEST_F_VFIO;
	}
	g->mode = mode;
	if (mode == PORTAL_IVSHMEM_GUEST_F_VFIO)
		rc = open_vfio(g, root, opts->vectors);
	else
		rc = open_sysfs(g, root);
	if (rc < 0)
		goto fail;
	if (g->id > PORTAL_IVSHMEM_MAX_PEER_ID) {
		/* Revision 0 devices read -1 for a while after reset. */
		portal_log(PORTAL_LOG_WARN, "ivshmem guest: IVPosition 0x%x is not an id yet",
			   (unsigned)g->id);
		rc = -EAGAIN;
		goto fail;
	}
	*out = g;
	return 0;

fail:
	portal_ivshmem_guest_close(g);
	return rc;
}

void portal_ivshmem_guest_close(portal_ivshmem_guest_t *g)
{
	if (!g)
		return;
	if (g->shm)
		munmap(g->shm, g->shm_size);
	if (g->regs)
		munmap((void *)(uintptr_t)g->regs, g->regs_map_len);
	close_vfio(g);
	free(g);
}

uint32_t portal_ivshmem_guest_id(const portal_ivshmem_guest_t *g)
{
	return g->id;
}

void *portal_ivshmem_guest_shm(const portal_ivshmem_guest_t *g, size_t *size)
{
	if (size)
		*size = g->shm_size;
	return g->shm;
}

unsigned portal_ivshmem_guest_vectors(const portal_ivshmem_guest_t *g)
{
	return g->nvec;
}

int portal_ivshmem_guest_irq_fd(const portal_ivshmem_guest_t *g, uint32_t vector)
{
	if (!g || vector >= g->nvec)
		return -ENOENT;
	return g->irq_fd[vector];
}

int portal_ivshmem_guest_ring(const portal_ivshmem_guest_t *g, uint32_t peer, uint32_t vector)
{
	int64_t v = portal_ivshmem_doorbell_value(peer, vector);
	uint32_t le;

	if (!g || v < 0)
		return -EINVAL;
	le = htole32((uint32_t)v);
	/* The caller's stores to the shared memory, then the doorbell write
	 * that makes the peer look; pairs with the peer's acquire of what it
	 * reads after it wakes. (On x86 an uncached MMIO store is not
	 * reordered before earlier stores anyway; the fence keeps the
	 * compiler honest and covers weaker CPUs.) */
	atomic_thread_fence(memory_order_seq_cst);
	if (g->mode == PORTAL_IVSHMEM_GUEST_F_VFIO)
		return pwrite_all(g->device, &le, sizeof(le),
				  g->bar0_offset + PORTAL_IVSHMEM_REG_DOORBELL);
	g->regs[PORTAL_IVSHMEM_REG_DOORBELL / 4] = le;
	return 0;
}
