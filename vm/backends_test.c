/* SPDX-License-Identifier: MIT */
/*
 * backends_test.c - the VM backends' host-side code, without a VM:
 *
 *   file: windows   "?offset=N&size=N" maps a part of a file; bad windows
 *                   are refused; a window is never created, resized or
 *                   destroyed
 *   file:?devdax    the data area of a devdax namespace image, read from a
 *                   NVDIMM_DAX_INFO block built here (the real one, written
 *                   by a guest kernel, is exercised by portal.vm.pmem)
 *   pmem:           refuses a file that is not DAX, a device that is not
 *                   device-dax, a relative path; nothing to destroy
 *   ivshmem:        address syntax; refuses a PCI device that is not ivshmem
 *                   (when this machine has PCI devices in sysfs)
 *   doorbells       portal_doorbell_create places every backend by name,
 *                   the VM ones (ivshmem, stream) included; opened by name,
 *                   the ivshmem host side (an eventfd standing in for the
 *                   server's) and the stream backend (a socketpair standing
 *                   in for a virtio-serial port) ring a waiter that really
 *                   sleeps, from another thread
 */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "tests/test_util.h"

#include "portal/doorbell.h"
#include "portal/region.h"
#include "region/region_internal.h"

#define MIB (UINT64_C(1) << 20)

static char dir[256];

static void path_of(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", dir, name);
}

/* A zero-filled file of SIZE bytes. */
static void make_file(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static uint64_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static uint64_t magic_at(const char *path, uint64_t off)
{
	uint64_t m = 0;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &m, sizeof(m), (off_t)off), (ssize_t)sizeof(m));
	close(fd);
	return m;
}

/* ------------------------------------------------------------------ */

static void test_file_window(void **state)
{
	char path[300], uri[400];
	portal_region_t *c, *a;
	struct portal_object_info info;

	(void)state;
	path_of(path, sizeof(path), "win");
	make_file(path, 8 * MIB);

	/* Create in the window: the file keeps its size, the header lands
	 * 2 MiB in, nothing is written at offset 0. */
	snprintf(uri, sizeof(uri), "file:%s?offset=2M&size=4M", path);
	assert_int_equal(portal_region_create(uri, NULL, &c), 0);
	assert_int_equal(portal_region_size(c), 4 * MIB);
	assert_int_equal(portal_region_alloc(c, "obj", PORTAL_OBJ_USER, 4096, 0, 0, NULL, &info), 0);
	assert_int_equal(file_size(path), 8 * MIB);
	assert_true(magic_at(path, 2 * MIB) == PORTAL_REGION_MAGIC);
	assert_true(magic_at(path, 0) == 0);

	/* The same window, spelled in bytes, attaches. */
	snprintf(uri, sizeof(uri), "file:%s?size=0x400000&offset=2097152", path);
	assert_int_equal(portal_region_attach(uri, NULL, &a), 0);
	assert_int_equal(portal_region_lookup(a, "obj", PORTAL_OBJ_USER, &info), 0);
	portal_region_detach(a);

	/* Another window is not a region: no magic, or the wrong size. */
	snprintf(uri, sizeof(uri), "file:%s", path);
	assert_int_equal(portal_region_attach(uri, NULL, &a), PORTAL_EMAGIC);
	snprintf(uri, sizeof(uri), "file:%s?offset=2M", path);
	assert_int_equal(portal_region_attach(uri, NULL, &a), PORTAL_ESIZE);

	/* Bad windows. */
	static const char *const bad[] = { "?offset=100", "?offset=9M", "?offset=2M&size=7M",
					   "?bogus=1", "?offset=", "?offset=-4096", "?size=1T",
					   "?devdax=1", "?offset=1X" };
	for (size_t i = 0; i < TU_ARRAY_SIZE(bad); i++) {
		snprintf(uri, sizeof(uri), "file:%s%s", path, bad[i]);
		assert_int_equal(portal_region_attach(uri, NULL, &a), -EINVAL);
	}
	/* A window is laid into an existing file, never made or resized. */
	snprintf(uri, sizeof(uri), "file:%s?offset=2M", path);
	assert_int_equal(portal_region_create(uri, &(struct portal_region_opts){ .size = MIB }, &a),
			 -EINVAL);
	assert_int_equal(
		portal_region_create(uri, &(struct portal_region_opts){ .flags = PORTAL_REGION_F_EXCL },
				     &a),
		-EINVAL);
	assert_int_equal(portal_region_destroy(uri), -EOPNOTSUPP);
	assert_int_equal(file_size(path), 8 * MIB);
	path_of(path, sizeof(path), "absent");
	snprintf(uri, sizeof(uri), "file:%s?offset=0", path);
	assert_int_equal(portal_region_create(uri, NULL, &a), -ENOENT);
	assert_int_equal(access(path, F_OK), -1);

	/* fd:N takes a window too. */
	path_of(path, sizeof(path), "win");
	{
		int fd = open(path, O_RDWR);

		assert_true(fd >= 0);
		snprintf(uri, sizeof(uri), "fd:%d?offset=2M&size=4M", fd);
		assert_int_equal(portal_region_attach(uri, NULL, &a), 0);
		portal_region_detach(a);
		close(fd);
	}
	portal_region_detach(c);
	unlink(path);
}

/* ------------------------------------------------------------------ */

/* Build the info block a guest kernel writes for a devdax namespace. */
static uint64_t fletcher64(const uint8_t *b, size_t n)
{
	uint32_t lo = 0;
	uint64_t hi = 0;

	for (size_t i = 0; i < n; i += 4) {
		uint32_t w;

		memcpy(&w, b + i, 4);
		lo += w;
		hi += lo;
	}
	return hi << 32 | lo;
}

static void write_info(const char *path, uint64_t dataoff, uint32_t start_pad,
		       uint32_t end_trunc, uint32_t align, bool break_sum)
{
	uint8_t b[4096] = { 0 };
	uint16_t major = 1, minor = 4;
	uint64_t sum;
	int fd;

	memcpy(b, "NVDIMM_DAX_INFO", 16);
	memcpy(b + 52, &major, 2);
	memcpy(b + 54, &minor, 2);
	memcpy(b + 56, &dataoff, 8);
	memcpy(b + 76, &start_pad, 4);
	memcpy(b + 80, &end_trunc, 4);
	memcpy(b + 84, &align, 4);
	sum = fletcher64(b, sizeof(b)) + (break_sum ? 1 : 0);
	memcpy(b + 4088, &sum, 8);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, b, sizeof(b), 4096), (ssize_t)sizeof(b));
	close(fd);
}

static void test_devdax_image(void **state)
{
	char path[300], uri[400];
	portal_region_t *c, *a;
	uint64_t off, len;
	int fd;

	(void)state;
	path_of(path, sizeof(path), "pmem.img");
	make_file(path, 16 * MIB);
	snprintf(uri, sizeof(uri), "file:%s?devdax", path);

	/* No info block yet. */
	assert_int_equal(portal_region_create(uri, NULL, &c), PORTAL_EMAGIC);

	write_info(path, 2 * MIB, 0, 0, 2 * MIB, false);
	assert_int_equal(portal_region_create(uri, NULL, &c), 0);
	assert_int_equal(portal_region_size(c), 14 * MIB);
	assert_true(magic_at(path, 2 * MIB) == PORTAL_REGION_MAGIC);
	assert_int_equal(portal_region_attach(uri, NULL, &a), 0);
	portal_region_detach(a);
	/* What a guest maps at /dev/dax0.0 offset 0 is the same region. */
	snprintf(uri, sizeof(uri), "file:%s?offset=2M", path);
	assert_int_equal(portal_region_attach(uri, NULL, &a), 0);
	portal_region_detach(a);
	portal_region_detach(c);

	/* A window inside the data area is relative to its start. */
	snprintf(uri, sizeof(uri), "file:%s?devdax&offset=2M&size=4M", path);
	assert_int_equal(portal_region_create(uri, NULL, &c), 0);
	assert_true(magic_at(path, 4 * MIB) == PORTAL_REGION_MAGIC);
	portal_region_detach(c);

	/* start_pad and end_trunc; the length is whole alignment units. */
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	write_info(path, 2 * MIB - 4096, 4096, 3 * 4096, 2 * MIB, false);
	assert_int_equal(portal_region_devdax_data(fd, 16 * MIB, &off, &len), 0);
	assert_int_equal(off, 2 * MIB);
	assert_int_equal(len, 12 * MIB);
	/* A block whose checksum is wrong, or fields outside the file. */
	write_info(path, 2 * MIB, 0, 0, 2 * MIB, true);
	assert_int_equal(portal_region_devdax_data(fd, 16 * MIB, &off, &len), PORTAL_EMAGIC);
	write_info(path, 32 * MIB, 0, 0, 2 * MIB, false);
	assert_int_equal(portal_region_devdax_data(fd, 16 * MIB, &off, &len), -EINVAL);
	write_info(path, 2 * MIB + 512, 0, 0, 2 * MIB, false);
	assert_int_equal(portal_region_devdax_data(fd, 16 * MIB, &off, &len), -EINVAL);
	close(fd);
	unlink(path);
}

/* ------------------------------------------------------------------ */

static void test_pmem_refuses(void **state)
{
	char path[300], uri[400];
	portal_region_t *a;
	int rc;

	(void)state;
	/* A file in the test directory (tmpfs or a disk) is not DAX here. */
	path_of(path, sizeof(path), "notdax");
	make_file(path, 4 * MIB);
	snprintf(uri, sizeof(uri), "pmem:%s", path);
	rc = portal_region_attach(uri, NULL, &a);
	if (rc != PORTAL_EMAGIC) { /* PORTAL_EMAGIC: a DAX mount after all */
		assert_int_equal(rc, -EOPNOTSUPP);
		assert_int_equal(portal_region_create(uri, NULL, &a), -EOPNOTSUPP);
	}
	assert_int_equal(portal_region_attach("pmem:relative/path", NULL, &a), -EINVAL);
	assert_int_equal(portal_region_attach("pmem:/dev/null", NULL, &a), -ENODEV);
	assert_int_equal(portal_region_attach("pmem:/nonexistent/dax9.9", NULL, &a), -ENOENT);
	assert_int_equal(portal_region_destroy(uri), -EOPNOTSUPP);
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);
}

/* The first PCI device in sysfs that is not ivshmem, if any. */
static bool some_pci_device(char *addr, size_t cap)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *de;
	bool found = false;

	while (d && (de = readdir(d)) != NULL && !found) {
		char path[300], buf[16] = "";
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/device", de->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		if (read(fd, buf, sizeof(buf) - 1) > 0 && strncmp(buf, "0x1110", 6) != 0 &&
		    strlen(de->d_name) < cap) {
			memcpy(addr, de->d_name, strlen(de->d_name) + 1);
			found = true;
		}
		close(fd);
	}
	if (d)
		closedir(d);
	return found;
}

static void test_ivshmem_refuses(void **state)
{
	char addr[64], uri[128];
	portal_region_t *a;

	(void)state;
	assert_int_equal(portal_region_attach("ivshmem:zz", NULL, &a), -EINVAL);
	assert_int_equal(portal_region_attach("ivshmem:0000:00:04.0?offset=0", NULL, &a), -EINVAL);
	assert_int_equal(portal_region_attach("ivshmem:ffff:ff:1f.7", NULL, &a), -ENOENT);
	assert_int_equal(portal_region_destroy("ivshmem:"), -EOPNOTSUPP);
	assert_int_equal(portal_region_create("ivshmem:", &(struct portal_region_opts){
						  .flags = PORTAL_REGION_F_EXCL }, &a),
			 -EEXIST);
	if (some_pci_device(addr, sizeof(addr))) {
		snprintf(uri, sizeof(uri), "ivshmem:%s", addr);
		assert_int_equal(portal_region_attach(uri, NULL, &a), -ENODEV);
	}
}

static void test_other_schemes_unchanged(void **state)
{
	char name[96], uri[128];
	portal_region_t *c;

	(void)state;
	/* shm: names take no window: '?' is part of the name. */
	snprintf(uri, sizeof(uri), "shm:%s?x", tu_unique_name(name, sizeof(name), "vmq"));
	assert_int_equal(portal_region_create(uri, NULL, &c), 0);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
	assert_int_equal(portal_region_attach("nosuch:thing", NULL, &c), -EINVAL);
}

/* ------------------------------------------------------------------ */
/* Doorbells placed by name, every backend                             */
/* ------------------------------------------------------------------ */

static portal_region_t *doorbell_region(char *uri, size_t cap)
{
	char name[96];
	portal_region_t *c;

	snprintf(uri, cap, "shm:%s", tu_unique_name(name, sizeof(name), "vmdb"));
	assert_int_equal(portal_region_create(uri, NULL, &c), 0);
	return c;
}

static void test_doorbell_create_backends(void **state)
{
	static const enum portal_doorbell_backend all[] = {
		PORTAL_DOORBELL_FUTEX, PORTAL_DOORBELL_EVENTFD, PORTAL_DOORBELL_IVSHMEM,
		PORTAL_DOORBELL_STREAM,
	};
	struct portal_object_info info;
	char uri[128], name[32];
	portal_region_t *c;

	(void)state;
	c = doorbell_region(uri, sizeof(uri));
	for (size_t i = 0; i < TU_ARRAY_SIZE(all); i++) {
		snprintf(name, sizeof(name), "db%u", (unsigned)all[i]);
		assert_int_equal(portal_doorbell_create(c, name, all[i], 1), 0);
		assert_int_equal(portal_region_lookup(c, name, PORTAL_OBJ_DOORBELL, &info), 0);
		assert_int_equal(info.param[0], all[i]);
		assert_int_equal(info.param[1], PORTAL_DOORBELL_VERSION);
		assert_int_equal(info.owner_side, 1);
		assert_true(info.size >= portal_doorbell_memsize());
		assert_int_equal(portal_doorbell_create(c, name, all[i], 1), -EEXIST);
	}
	/* Still refused: no backend, the reserved number, garbage. */
	assert_int_equal(portal_doorbell_create(c, "bad0", (enum portal_doorbell_backend)0, 1),
			 -EINVAL);
	assert_int_equal(portal_doorbell_create(c, "bad5", (enum portal_doorbell_backend)5, 1),
			 -EINVAL);
	assert_int_equal(portal_doorbell_create(c, "badx", (enum portal_doorbell_backend)-1, 1),
			 -EINVAL);
	assert_int_equal(portal_region_lookup(c, "bad5", 0, &info), -ENOENT);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

struct ring_later {
	portal_doorbell_t *n;
	atomic_int work;
	int rc;
};

static int work_ready(void *arg)
{
	struct ring_later *r = arg;

	/* Acquire: pairs with the release in ring_later_main. */
	return atomic_load_explicit(&r->work, memory_order_acquire);
}

static void *ring_later_main(void *arg)
{
	struct ring_later *r = arg;
	struct timespec ts = { 0, 50 * 1000 * 1000 };

	nanosleep(&ts, NULL); /* the waiter is asleep by then */
	/* Release: the work, then the notify that makes the waiter look. */
	atomic_store_explicit(&r->work, 1, memory_order_release);
	r->rc = portal_doorbell_notify(r->n);
	return NULL;
}

/*
 * Open doorbell NAME (placed by the creator C) as waiter with WO and as
 * notifier with NO, then: no ring while disarmed; arm, ring, the fd becomes
 * readable, ack; a waiter that sleeps (spin off) is woken by a notify from
 * another thread.
 */
static void doorbell_roundtrip(portal_region_t *c, const char *name,
			       enum portal_doorbell_backend backend, struct portal_doorbell_opts *wo,
			       struct portal_doorbell_opts *no)
{
	struct ring_later r = { .rc = -1 };
	struct portal_doorbell_stats st;
	portal_doorbell_t *w, *n;
	struct pollfd pfd;
	pthread_t t;
	int fd;

	assert_int_equal(portal_doorbell_create(c, name, backend, 1), 0);
	wo->spin_ns = -1; /* sleep at once: the wake-up path is what is tested */
	assert_int_equal(portal_doorbell_open(c, name, PORTAL_DOORBELL_WAITER, wo, &w), 0);
	assert_int_equal(portal_doorbell_open(c, name, PORTAL_DOORBELL_NOTIFIER, no, &n), 0);
	assert_int_equal(portal_doorbell_get_backend(w), backend);
	assert_int_equal(portal_doorbell_get_backend(n), backend);

	/* Disarmed: no ring, nothing readable. */
	assert_int_equal(portal_doorbell_notify(n), 0);
	fd = portal_doorbell_fd(w);
	assert_true(fd >= 0);
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 0), 0);

	/* The fd path: arm (nothing there), ring, readable, ack. */
	assert_int_equal(portal_doorbell_arm(w, work_ready, &r), 0);
	assert_int_equal(portal_doorbell_notify(n), 1);
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	assert_int_equal(portal_doorbell_ack(w), 0);
	assert_int_equal(poll(&pfd, 1, 0), 0);

	/* A sleeping wait, woken from another thread. */
	r.n = n;
	assert_int_equal(pthread_create(&t, NULL, ring_later_main, &r), 0);
	assert_int_equal(portal_doorbell_wait(w, work_ready, &r, 10LL * 1000 * 1000 * 1000), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(r.rc, 1);

	portal_doorbell_stats(w, &st);
	assert_true(st.sleeps >= 1);
	assert_int_equal(st.timeouts, 0);
	portal_doorbell_stats(n, &st);
	assert_int_equal(st.notifies, 3);
	assert_int_equal(st.rings, 2);
	portal_doorbell_detach(n);
	portal_doorbell_detach(w);
}

static void test_doorbell_ivshmem_host(void **state)
{
	struct portal_doorbell_opts wo = { .stream_fd = -1 }, no = { .stream_fd = -1 };
	portal_region_t *c;
	char uri[128];
	int efd;

	(void)state;
	c = doorbell_region(uri, sizeof(uri));
	/* On the host an ivshmem doorbell uses the server's eventfds: the
	 * waiter its own vector's, the notifier the peer's. One eventfd plays
	 * both here (the server and QEMU are exercised by portal.ivshmem.*
	 * and portal.vm.ivshmem_doorbell). */
	efd = portal_doorbell_eventfd_create();
	assert_true(efd >= 0);
	wo.eventfd = no.eventfd = efd;
	doorbell_roundtrip(c, "ivs", PORTAL_DOORBELL_IVSHMEM, &wo, &no);
	close(efd);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

static void test_doorbell_stream(void **state)
{
	struct portal_doorbell_opts wo = { .eventfd = -1 }, no = { .eventfd = -1 };
	portal_region_t *c;
	char uri[128];
	int sv[2];

	(void)state;
	c = doorbell_region(uri, sizeof(uri));
	/* The two ends of a virtio-serial port: the notifier writes one, the
	 * waiter reads the other. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	wo.stream_fd = sv[0];
	no.stream_fd = sv[1];
	doorbell_roundtrip(c, "stream", PORTAL_DOORBELL_STREAM, &wo, &no);
	close(sv[0]);
	close(sv[1]);
	portal_region_detach(c);
	assert_int_equal(portal_region_destroy(uri), 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/portal-vmbe-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_window),
		cmocka_unit_test(test_devdax_image),
		cmocka_unit_test(test_pmem_refuses),
		cmocka_unit_test(test_ivshmem_refuses),
		cmocka_unit_test(test_other_schemes_unchanged),
		cmocka_unit_test(test_doorbell_create_backends),
		cmocka_unit_test(test_doorbell_ivshmem_host),
		cmocka_unit_test(test_doorbell_stream),
	};

	return cmocka_run_group_tests_name("portal.vm.backends", tests, setup, teardown);
}
