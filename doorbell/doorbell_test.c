/* SPDX-License-Identifier: MIT */
/*
 * doorbell_test.c - unit tests for doorbell/, table-driven over the
 * backends and sides (struct cfg): futex, eventfd, ivshmem host side (the
 * eventfds an ivshmem server hands out), ivshmem guest side in polling mode
 * (ringing the Doorbell register of a fake sysfs device), and stream (one
 * byte per wake-up over a socketpair). Then tests of what is particular to
 * a backend: stream coalescing, the ivshmem register encoding and the guest
 * device's argument checks.
 *
 * Each test that waits has a bounded timeout, so a lost wake-up fails the
 * test instead of hanging it; an alarm() in main() is the last line of
 * defence. PORTAL_DOORBELL_TORTURE sets the number of handoffs of the
 * lost-wakeup torture loop (default 20000).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/atomic_internal.h"
#include "portal/doorbell.h"
#include "portal/region.h"
#include "tests/test_util.h"

#define PAGE 4096
#define MS   INT64_C(1000000)
#define SEC  INT64_C(1000000000)

/* ------------------------------------------------------------------ */
/* Fixture: one doorbell in a MAP_SHARED page (fork shares it), plus the  */
/* work words a ready() callback checks, in the same page.              */
/* ------------------------------------------------------------------ */

struct work {
	_Atomic uint64_t published; /* producer: items published; release */
	_Atomic uint64_t consumed;  /* consumer: items taken; release */
	_Atomic int err;            /* test: make ready() fail with this */
	_Atomic int abort;          /* test: a thread failed; stop */
};

/* A configuration of the table: a backend, and how handles reach it. */
enum cfg_kind {
	K_PLAIN,          /* futex, eventfd: as before */
	K_IVS_HOST,       /* ivshmem, host side: an eventfd for both roles */
	K_IVS_GUEST_POLL, /* ivshmem, guest side, polling mode, fake device */
	K_STREAM,         /* stream over a socketpair */
};

struct cfg {
	const char *name;
	enum portal_doorbell_backend backend;
	enum cfg_kind kind;
};

static const struct cfg *cur_cfg;             /* the running test's */
static portal_ivshmem_guest_t *cur_guest;     /* K_IVS_GUEST_POLL */
static char fake_root[64];                    /* its fake sysfs tree */

/* Stream channels: the fd a test calls "efd" is the waiter's end; the
 * notifier's end is looked up here (inherited across fork). */
#define MAX_FD 4096
static int stream_peer[MAX_FD];

#define FAKE_BDF "0000:00:04.0"
#define FAKE_ID  5

static int write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, buf, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

/* A fake /sys/bus/pci/devices with one ivshmem device: vendor, device,
 * enable, resource0 (256 bytes of registers, IVPosition = ID) and resource2
 * (SHM bytes). Returns 0 and the root in ROOT. */
static int fake_sysfs(char *root, size_t len, uint32_t id, size_t shm)
{
	char dir[128], path[192];
	uint32_t regs[64];
	char *zero;
	int rc;

	snprintf(root, len, "/tmp/portal-fakepci-XXXXXX");
	if (!mkdtemp(root))
		return -1;
	snprintf(dir, sizeof(dir), "%s/%s", root, FAKE_BDF);
	if (mkdir(dir, 0755) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/vendor", dir);
	rc = write_file(path, "0x1af4\n", 7);
	snprintf(path, sizeof(path), "%s/device", dir);
	rc |= write_file(path, "0x1110\n", 7);
	snprintf(path, sizeof(path), "%s/enable", dir);
	rc |= write_file(path, "0\n", 2);
	memset(regs, 0, sizeof(regs));
	regs[PORTAL_IVSHMEM_REG_IVPOSITION / 4] = id;
	snprintf(path, sizeof(path), "%s/resource0", dir);
	rc |= write_file(path, regs, sizeof(regs));
	zero = calloc(1, shm);
	if (!zero)
		return -1;
	snprintf(path, sizeof(path), "%s/resource2", dir);
	rc |= write_file(path, zero, shm);
	free(zero);
	return rc;
}

static void fake_sysfs_remove(const char *root)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0) { /* leftovers in /tmp only */ }
}

/* The fake device's Doorbell register, as last written. */
static uint32_t fake_doorbell_reg(const char *root)
{
	char path[192];
	uint32_t v = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/%s/resource0", root, FAKE_BDF);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (pread(fd, &v, sizeof(v), PORTAL_IVSHMEM_REG_DOORBELL) != sizeof(v))
			v = 0xdeadbeef;
		close(fd);
	}
	return v;
}

/* A wake-up channel for the current configuration: an eventfd, the
 * waiter's end of a socketpair, or -1 (futex, guest polling mode). */
static int chan_create(void)
{
	int sv[2];

	switch (cur_cfg->kind) {
	case K_IVS_GUEST_POLL:
		return -1;
	case K_STREAM:
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
		    sv[0] >= MAX_FD || sv[1] >= MAX_FD)
			return -1;
		stream_peer[sv[0]] = sv[1];
		return sv[0];
	case K_IVS_HOST:
		return portal_doorbell_eventfd_create();
	case K_PLAIN:
	default:
		return cur_cfg->backend == PORTAL_DOORBELL_EVENTFD ? portal_doorbell_eventfd_create()
								    : -1;
	}
}

static void chan_close(int fd)
{
	if (fd < 0)
		return;
	if (cur_cfg->kind == K_STREAM)
		close(stream_peer[fd]);
	close(fd);
}

struct fx {
	enum portal_doorbell_backend backend;
	void *page;            /* doorbell at offset 0, struct work at 2048 */
	struct portal_doorbell_shm *shm;
	struct work *w;
	int efd;               /* the wake-up channel (chan_create) */
};

static int setup(void **state)
{
	const struct cfg *c = *state;
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	cur_cfg = c;
	f->backend = c->backend;
	if (c->kind == K_IVS_GUEST_POLL) {
		struct portal_ivshmem_guest_opts go = { .sysfs_root = fake_root };

		if (fake_sysfs(fake_root, sizeof(fake_root), FAKE_ID, PAGE) < 0)
			return -1;
		if (portal_ivshmem_guest_open(&go, &cur_guest) != 0)
			return -1;
	}
	f->page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (f->page == MAP_FAILED) {
		free(f);
		return -1;
	}
	f->shm = f->page;
	f->w = (struct work *)((char *)f->page + 2048);
	f->efd = chan_create();
	if (f->efd < 0 && (c->kind == K_STREAM || c->kind == K_IVS_HOST ||
			   c->backend == PORTAL_DOORBELL_EVENTFD))
		return -1;
	if (portal_doorbell_init(f->page, PAGE, f->backend) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	chan_close(f->efd);
	munmap(f->page, PAGE);
	free(f);
	if (cur_guest) {
		portal_ivshmem_guest_close(cur_guest);
		cur_guest = NULL;
		fake_sysfs_remove(fake_root);
	}
	return 0;
}

/* Options for ROLE on channel EFD in the current configuration. */
static struct portal_doorbell_opts opts_for(int efd, enum portal_doorbell_role role,
					    int64_t spin_ns)
{
	struct portal_doorbell_opts o;

	memset(&o, 0, sizeof(o));
	o.eventfd = efd;
	o.spin_ns = spin_ns;
	o.stream_fd = -1;
	switch (cur_cfg->kind) {
	case K_STREAM:
		o.stream_fd = efd < 0 ? -1 : role == PORTAL_DOORBELL_NOTIFIER ? stream_peer[efd] : efd;
		break;
	case K_IVS_GUEST_POLL:
		o.ivshmem_guest = cur_guest;
		o.ivshmem_peer = 3;
		o.ivshmem_vector = 1;
		break;
	default:
		break;
	}
	return o;
}

static portal_doorbell_t *attach_at(void *mem, int efd, enum portal_doorbell_role role,
				    int64_t spin_ns)
{
	struct portal_doorbell_opts o = opts_for(efd, role, spin_ns);
	portal_doorbell_t *d = NULL;

	assert_int_equal(portal_doorbell_attach(mem, PAGE, role, &o, &d), 0);
	assert_non_null(d);
	return d;
}

static portal_doorbell_t *attach(struct fx *f, enum portal_doorbell_role role, int64_t spin_ns)
{
	return attach_at(f->page, f->efd, role, spin_ns);
}

/* Poll until the waiter is armed (or TIMEOUT passes). Returns 1 if armed. */
static int wait_armed(struct portal_doorbell_shm *shm, int64_t timeout)
{
	int64_t end = tu_now_ns() + timeout;

	while (atomic_load_explicit(&shm->armed, memory_order_acquire) == 0) {
		if (tu_now_ns() > end)
			return 0;
		tu_sleep_ns(100000);
	}
	return 1;
}

static int readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int k = poll(&p, 1, timeout_ms);

	return k > 0 && (p.revents & POLLIN);
}

/* ready(): work is there when published > consumed; err forces a failure. */
static int ready_work(void *arg)
{
	struct work *w = arg;
	int e = atomic_load_explicit(&w->err, memory_order_relaxed);

	if (e)
		return e;
	/* pairs with the release store of published by the producer */
	return atomic_load_explicit(&w->published, memory_order_acquire) >
	       atomic_load_explicit(&w->consumed, memory_order_relaxed);
}

static int ready_never(void *arg)
{
	(void)arg;
	return 0;
}

static int ready_two(void *arg)
{
	(void)arg;
	return 2;
}

static void publish(struct work *w)
{
	atomic_fetch_add_explicit(&w->published, 1, memory_order_release);
}

/* ------------------------------------------------------------------ */
/* Layout, init and attach validation                                  */
/* ------------------------------------------------------------------ */

static void test_memsize_init(void **state)
{
	struct fx *f = *state;
	char *p = f->page;

	assert_int_equal(portal_doorbell_memsize(), sizeof(struct portal_doorbell_shm));
	assert_int_equal(portal_doorbell_memsize(), 384);

	assert_int_equal(portal_doorbell_init(NULL, PAGE, f->backend), -EINVAL);
	assert_int_equal(portal_doorbell_init(p, 383, f->backend), -EINVAL);
	assert_int_equal(portal_doorbell_init(p + 8, PAGE - 8, f->backend), -EINVAL);
	assert_int_equal(portal_doorbell_init(p, PAGE, (enum portal_doorbell_backend)0), -EINVAL);
	assert_int_equal(portal_doorbell_init(p, PAGE, (enum portal_doorbell_backend)5), -EINVAL);
	assert_int_equal(portal_doorbell_init(p, PAGE, (enum portal_doorbell_backend)99), -EINVAL);

	memset(p, 0xa5, 384);
	assert_int_equal(portal_doorbell_init(p, 384, f->backend), 0);
	assert_int_equal(f->shm->magic, PORTAL_DOORBELL_MAGIC);
	assert_int_equal(f->shm->version, 1);
	assert_int_equal(f->shm->backend, f->backend);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	assert_int_equal(atomic_load(&f->shm->wake_seq), 0);
	assert_int_equal(atomic_load(&f->shm->rings), 0);
	assert_int_equal(f->shm->pad2[0], 0);
}

static void test_attach_errors(void **state)
{
	struct fx *f = *state;
	struct portal_doorbell_opts o = opts_for(f->efd, PORTAL_DOORBELL_WAITER, 0);
	portal_doorbell_t *d = NULL;
	char *p = f->page;
	int closed_fd;

	assert_int_equal(portal_doorbell_attach(NULL, PAGE, PORTAL_DOORBELL_WAITER, &o, &d), -EINVAL);
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, &o, NULL), -EINVAL);
	assert_int_equal(portal_doorbell_attach(p + 64, PAGE - 64, PORTAL_DOORBELL_WAITER, &o, &d),
			 PORTAL_EPROTO); /* aligned, but no doorbell there */
	assert_int_equal(portal_doorbell_attach(p + 4, PAGE - 4, PORTAL_DOORBELL_WAITER, &o, &d),
			 -EINVAL);
	assert_int_equal(portal_doorbell_attach(p, PAGE, (enum portal_doorbell_role)0, &o, &d),
			 -EINVAL);
	assert_int_equal(portal_doorbell_attach(p, PAGE, (enum portal_doorbell_role)3, &o, &d),
			 -EINVAL);
	o.flags = 1;
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, &o, &d), -EINVAL);
	o.flags = 0;

	/* too small */
	assert_int_equal(portal_doorbell_attach(p, 383, PORTAL_DOORBELL_WAITER, &o, &d),
			 PORTAL_EPROTO);
	/* bad magic, version, backend */
	f->shm->magic ^= 1;
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &d),
			 PORTAL_EPROTO);
	f->shm->magic ^= 1;
	f->shm->version = 2;
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &d),
			 PORTAL_EPROTO);
	f->shm->version = 1;
	f->shm->backend = 0;
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, &o, &d),
			 PORTAL_EPROTO);
	f->shm->backend = 7;
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, &o, &d),
			 PORTAL_EPROTO);
	f->shm->backend = (uint16_t)f->backend;
	assert_null(d);

	/* the fd backends need a usable fd; the futex one needs none */
	closed_fd = dup(0 <= f->efd ? f->efd : 2);
	assert_true(closed_fd >= 0);
	close(closed_fd);
	if (cur_cfg->kind == K_IVS_GUEST_POLL) {
		/* needs opts; without a device it is the host side, which
		 * needs an eventfd; a notifier's peer and vector fit 16 bits */
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, NULL, &d),
				 -EINVAL);
		o.ivshmem_guest = NULL;
		o.eventfd = -1;
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, &o, &d),
				 -EINVAL);
		o.ivshmem_guest = cur_guest;
		o.ivshmem_peer = 0x10000;
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &d),
				 -EINVAL);
		o.ivshmem_peer = 3;
		o.ivshmem_vector = 0x10000;
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &d),
				 -EINVAL);
		o.ivshmem_vector = 1;
		assert_null(d);
	} else if (f->backend != PORTAL_DOORBELL_FUTEX) {
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, NULL, &d),
				 -EINVAL);
		o.eventfd = -1;
		o.stream_fd = -1;
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &d),
				 -EINVAL);
		o.eventfd = closed_fd;
		o.stream_fd = closed_fd;
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, &o, &d),
				 -EINVAL);
		assert_null(d);
	} else {
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, NULL, &d), 0);
		assert_int_equal(portal_doorbell_get_backend(d), PORTAL_DOORBELL_FUTEX);
		portal_doorbell_detach(d);
		d = NULL;
	}

	/* and a good attach, both roles; the waiter clears a stale arm */
	atomic_store(&f->shm->armed, 1);
	o = opts_for(f->efd, PORTAL_DOORBELL_WAITER, 0);
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, &o, &d), 0);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	assert_int_equal(portal_doorbell_get_backend(d), f->backend);
	portal_doorbell_detach(d);
	o = opts_for(f->efd, PORTAL_DOORBELL_NOTIFIER, 0);
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &d), 0);
	portal_doorbell_detach(d);
	portal_doorbell_detach(NULL);
}

static void test_role_errors(void **state)
{
	struct fx *f = *state;
	portal_doorbell_t *wt = attach(f, PORTAL_DOORBELL_WAITER, 0);
	portal_doorbell_t *nt = attach(f, PORTAL_DOORBELL_NOTIFIER, 0);

	assert_int_equal(portal_doorbell_notify(wt), -EINVAL);
	assert_int_equal(portal_doorbell_notify(NULL), -EINVAL);
	assert_int_equal(portal_doorbell_wait(nt, ready_never, NULL, 0), -EINVAL);
	assert_int_equal(portal_doorbell_wait(wt, NULL, NULL, 0), -EINVAL);
	assert_int_equal(portal_doorbell_wait(NULL, ready_never, NULL, 0), -EINVAL);
	assert_int_equal(portal_doorbell_fd(nt), -EINVAL);
	assert_int_equal(portal_doorbell_arm(nt, ready_never, NULL), -EINVAL);
	assert_int_equal(portal_doorbell_ack(nt), -EINVAL);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	portal_doorbell_detach(nt);
	portal_doorbell_detach(wt);
}

/* ------------------------------------------------------------------ */
/* Notify: no system call unless armed                                 */
/* ------------------------------------------------------------------ */

static void test_notify_unarmed(void **state)
{
	struct fx *f = *state;
	portal_doorbell_t *wt = attach(f, PORTAL_DOORBELL_WAITER, 0);
	portal_doorbell_t *nt = attach(f, PORTAL_DOORBELL_NOTIFIER, 0);
	struct portal_doorbell_stats st;
	int i, fd;

	for (i = 0; i < 1000; i++) {
		publish(f->w);
		assert_int_equal(portal_doorbell_notify(nt), 0);
	}
	portal_doorbell_stats(nt, &st);
	assert_int_equal(st.notifies, 1000);
	assert_int_equal(st.rings, 0);
	assert_int_equal(st.shared_rings, 0);
	assert_int_equal(atomic_load(&f->shm->rings), 0);
	assert_int_equal(atomic_load(&f->shm->wake_seq), 0);
	if (f->efd >= 0)
		assert_false(readable(f->efd, 0));

	/* Armed (fd path, nothing there): now notify must ring, once. */
	fd = portal_doorbell_fd(wt);
	assert_true(fd >= 0);
	atomic_store(&f->w->consumed, atomic_load(&f->w->published));
	assert_int_equal(portal_doorbell_arm(wt, ready_work, f->w), 0);
	assert_int_equal(atomic_load(&f->shm->armed), 1);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	portal_doorbell_stats(nt, &st);
	assert_int_equal(st.rings, 1);
	assert_int_equal(st.shared_rings, 1);
	assert_int_equal(atomic_load(&f->shm->wake_seq), 1);
	assert_true(readable(fd, 5000));
	assert_int_equal(portal_doorbell_ack(wt), 0);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	assert_false(readable(fd, 0));

	/* Disarmed again: back to no system call. */
	assert_int_equal(portal_doorbell_notify(nt), 0);
	assert_int_equal(atomic_load(&f->shm->rings), 1);
	assert_false(readable(fd, 20));

	portal_doorbell_detach(nt);
	portal_doorbell_detach(wt);
}

/* ------------------------------------------------------------------ */
/* Wait: timeouts, threads, processes                                  */
/* ------------------------------------------------------------------ */

static void test_wait_timeout(void **state)
{
	struct fx *f = *state;
	portal_doorbell_t *wt = attach(f, PORTAL_DOORBELL_WAITER, 0);
	struct portal_doorbell_stats st;
	int64_t t0, dt;

	/* check once */
	t0 = tu_now_ns();
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 0), -ETIMEDOUT);
	assert_int_equal(portal_doorbell_wait(wt, ready_two, NULL, 0), 0);
	assert_true(tu_now_ns() - t0 < 100 * MS);

	/* a deadline inside the spin phase */
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 5000), -ETIMEDOUT);

	/* a deadline past it: arms, sleeps, times out, disarms */
	t0 = tu_now_ns();
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 50 * MS), -ETIMEDOUT);
	dt = tu_now_ns() - t0;
	assert_true(dt >= 50 * MS);
	assert_true(dt < 2 * SEC);
	assert_int_equal(atomic_load(&f->shm->armed), 0);

	portal_doorbell_stats(wt, &st);
	assert_int_equal(st.waits, 4);
	assert_int_equal(st.timeouts, 3);
	assert_true(st.sleeps >= 1);
	assert_true(st.arms >= 1);
	portal_doorbell_detach(wt);
}

struct notifier_arg {
	struct fx *f;
	int64_t delay_ns;   /* after seeing the waiter armed */
	int rc;             /* notify's result, or -1000 if never armed */
};

static void *notifier_thread(void *p)
{
	struct notifier_arg *a = p;
	portal_doorbell_t *nt = NULL;
	struct portal_doorbell_opts o = opts_for(a->f->efd, PORTAL_DOORBELL_NOTIFIER, 0);

	a->rc = portal_doorbell_attach(a->f->page, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &nt);
	if (a->rc < 0)
		return NULL;
	if (!wait_armed(a->f->shm, 5 * SEC)) {
		a->rc = -1000;
	} else {
		tu_sleep_ns(a->delay_ns);
		publish(a->f->w);
		a->rc = portal_doorbell_notify(nt);
	}
	portal_doorbell_detach(nt);
	return NULL;
}

static void run_wait_thread(struct fx *f, int64_t spin_ns, int64_t timeout)
{
	portal_doorbell_t *wt = attach(f, PORTAL_DOORBELL_WAITER, spin_ns);
	struct notifier_arg a = { .f = f, .delay_ns = 20 * MS };
	struct portal_doorbell_stats st;
	pthread_t th;

	atomic_store(&f->w->published, 0);
	atomic_store(&f->w->consumed, 0);
	assert_int_equal(pthread_create(&th, NULL, notifier_thread, &a), 0);
	assert_int_equal(portal_doorbell_wait(wt, ready_work, f->w, timeout), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(a.rc, 1);  /* the waiter was asleep: it had to ring */
	assert_int_equal(atomic_load(&f->w->published), 1);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	portal_doorbell_stats(wt, &st);
	assert_true(st.sleeps >= 1);
	/* The ring was consumed: an empty wait now sleeps out its timeout
	 * instead of waking again and again. */
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 30 * MS), -ETIMEDOUT);
	portal_doorbell_stats(wt, &st);
	assert_true(st.spurious <= 1);
	portal_doorbell_detach(wt);
}

static void test_wait_thread(void **state)
{
	struct fx *f = *state;

	run_wait_thread(f, -1, 5 * SEC);  /* no spin */
	run_wait_thread(f, 0, 5 * SEC);   /* default spin */
	run_wait_thread(f, -1, -1);       /* forever (main()'s alarm bounds it) */
}

/* Child: attach as notifier, wait for the parent to arm, publish, notify.
 * Exit status 0 when notify rang. Never returns. */
static void child_notifier(struct fx *f, int efd)
{
	struct portal_doorbell_opts o = opts_for(efd, PORTAL_DOORBELL_NOTIFIER, 0);
	portal_doorbell_t *nt = NULL;
	int rc;

	alarm(20);
	if (portal_doorbell_attach(f->page, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &nt) != 0)
		_exit(2);
	if (!wait_armed(f->shm, 5 * SEC))
		_exit(3);
	tu_sleep_ns(20 * MS);
	publish(f->w);
	rc = portal_doorbell_notify(nt);
	portal_doorbell_detach(nt);
	_exit(rc == 1 ? 0 : 4);
}

/* PASS_FD: the child makes its own eventfd and sends it to the parent over a
 * Unix socket (SCM_RIGHTS); otherwise the child inherits the fixture's. */
static void run_wait_process(struct fx *f, int pass_fd)
{
	struct portal_doorbell_stats st;
	portal_doorbell_t *wt;
	int sv[2] = { -1, -1 }, efd = f->efd, status = 0;
	pid_t pid;

	atomic_store(&f->w->published, 0);
	atomic_store(&f->w->consumed, 0);
	if (pass_fd)
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (pass_fd) {
			efd = portal_doorbell_eventfd_create();
			if (efd < 0 || portal_fd_send(sv[1], efd) != 0)
				_exit(5);
		}
		child_notifier(f, efd);
	}
	if (pass_fd) {
		assert_int_equal(portal_fd_recv(sv[0], &efd), 0);
		assert_true(efd != f->efd);
	}
	wt = attach_at(f->page, efd, PORTAL_DOORBELL_WAITER, -1);
	assert_int_equal(portal_doorbell_wait(wt, ready_work, f->w, 5 * SEC), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(atomic_load(&f->w->published), 1);
	assert_int_equal(atomic_load(&f->shm->rings), 1);
	portal_doorbell_stats(wt, &st);
	assert_true(st.sleeps >= 1);
	portal_doorbell_detach(wt);
	if (pass_fd) {
		close(efd);
		close(sv[0]);
		close(sv[1]);
	}
}

static void test_wait_process(void **state)
{
	struct fx *f = *state;

	run_wait_process(f, 0);
	if (f->backend == PORTAL_DOORBELL_EVENTFD) {
		atomic_store(&f->shm->rings, 0);
		run_wait_process(f, 1);
	}
}

/* ------------------------------------------------------------------ */
/* Lost-wakeup torture: ping-pong through two doorbells, no spinning,   */
/* so each side arms and sleeps on nearly every handoff.                */
/* ------------------------------------------------------------------ */

struct torture {
	struct fx *f;
	void *page_b;          /* second doorbell: consumer -> producer */
	int efd_b;
	uint64_t n;
	uint64_t done;         /* consumer: handoffs completed */
	int rc;                /* consumer: first failure */
	uint64_t bad_seq;      /* consumer: a published value out of order */
	struct portal_doorbell_stats st;
};

static int ready_pub(void *arg)
{
	struct work *w = arg;

	if (atomic_load_explicit(&w->abort, memory_order_relaxed))
		return -ECANCELED;
	/* pairs with the producer's release store of published */
	return atomic_load_explicit(&w->published, memory_order_acquire) >
	       atomic_load_explicit(&w->consumed, memory_order_relaxed);
}

static int ready_cons(void *arg)
{
	struct work *w = arg;

	if (atomic_load_explicit(&w->abort, memory_order_relaxed))
		return -ECANCELED;
	/* pairs with the consumer's release store of consumed */
	return atomic_load_explicit(&w->consumed, memory_order_acquire) >=
	       atomic_load_explicit(&w->published, memory_order_relaxed);
}

static void *torture_consumer(void *p)
{
	struct torture *t = p;
	struct work *w = t->f->w;
	portal_doorbell_t *wa = attach_at(t->f->page, t->f->efd, PORTAL_DOORBELL_WAITER, -1);
	portal_doorbell_t *nb = attach_at(t->page_b, t->efd_b, PORTAL_DOORBELL_NOTIFIER, 0);
	uint64_t i, v;
	int rc;

	for (i = 1; i <= t->n; i++) {
		rc = portal_doorbell_wait(wa, ready_pub, w, 5 * SEC);
		if (rc != 0) {
			t->rc = rc;
			break;
		}
		v = atomic_load_explicit(&w->published, memory_order_acquire);
		if (v != i) {
			t->bad_seq = v;
			t->rc = -EBADMSG;
			break;
		}
		atomic_store_explicit(&w->consumed, i, memory_order_release);
		rc = portal_doorbell_notify(nb);
		if (rc < 0) {
			t->rc = rc;
			break;
		}
		t->done = i;
	}
	if (t->rc) {
		atomic_store(&w->abort, 1);
		(void)portal_doorbell_notify(nb);
	}
	portal_doorbell_stats(wa, &t->st);
	portal_doorbell_detach(nb);
	portal_doorbell_detach(wa);
	return NULL;
}

/*
 * One torture run of N handoffs on fresh doorbells. The consumer never
 * spins: every wait that finds nothing arms, re-checks and sleeps. With
 * PRODUCER_SPINS the producer spins for `consumed` (its wait has the default
 * spin phase) and then publishes after a random 0..63 pause jitter, so the
 * publish lands anywhere in the consumer's arm / fence / re-check / sleep
 * sequence; without, the producer sleeps too and both sides go through the
 * kernel on nearly every handoff.
 */
static void torture_run(struct fx *f, uint64_t n, int producer_spins)
{
	struct torture t = { .f = f, .efd_b = -1, .n = n };
	struct portal_doorbell_stats pst;
	portal_doorbell_t *na, *wb;
	struct work *w = f->w;
	uint64_t i, x = 88172645463325252ull;
	unsigned k, spins;
	pthread_t th;
	int rc = 0;

	t.page_b = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(t.page_b != MAP_FAILED);
	t.efd_b = chan_create();
	if (f->efd >= 0)
		assert_true(t.efd_b >= 0);
	assert_int_equal(portal_doorbell_init(t.page_b, PAGE, f->backend), 0);
	assert_int_equal(portal_doorbell_init(f->page, PAGE, f->backend), 0);
	atomic_store(&w->published, 0);
	atomic_store(&w->consumed, 0);
	atomic_store(&w->abort, 0);

	na = attach(f, PORTAL_DOORBELL_NOTIFIER, 0);
	wb = attach_at(t.page_b, t.efd_b, PORTAL_DOORBELL_WAITER, producer_spins ? 0 : -1);
	assert_int_equal(pthread_create(&th, NULL, torture_consumer, &t), 0);

	for (i = 1; i <= t.n; i++) {
		if (producer_spins) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			spins = (unsigned)(x & 63);
			for (k = 0; k < spins; k++)
				portal_cpu_relax();
		}
		/* publish, then notify */
		atomic_store_explicit(&w->published, i, memory_order_release);
		rc = portal_doorbell_notify(na);
		if (rc < 0)
			break;
		rc = portal_doorbell_wait(wb, ready_cons, w, 5 * SEC);
		if (rc != 0)
			break;
	}
	if (rc < 0) {
		atomic_store(&w->abort, 1);
		(void)portal_doorbell_notify(na);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	portal_doorbell_stats(wb, &pst);
	portal_doorbell_detach(wb);
	portal_doorbell_detach(na);
	chan_close(t.efd_b);
	munmap(t.page_b, PAGE);

	print_message("    %s, producer %s: %llu/%llu handoffs; consumer arms %llu sleeps %llu "
		      "spurious %llu; producer sleeps %llu spin hits %llu\n",
		      cur_cfg->name,
		      producer_spins ? "spins" : "sleeps",
		      (unsigned long long)t.done, (unsigned long long)t.n,
		      (unsigned long long)t.st.arms, (unsigned long long)t.st.sleeps,
		      (unsigned long long)t.st.spurious, (unsigned long long)pst.sleeps,
		      (unsigned long long)pst.spin_hits);
	assert_int_equal(rc, 0);
	assert_int_equal(t.rc, 0);
	assert_int_equal(t.bad_seq, 0);
	assert_int_equal(t.done, t.n);
	/* Only worth something if the consumer really went through arming
	 * and sleeping, many times (here typically 60% to 99% of handoffs;
	 * the rest found the next item already there). */
	assert_true(t.st.arms >= t.n / 10);
	assert_true(t.st.sleeps >= t.n / 10);
}

static void test_torture(void **state)
{
	struct fx *f = *state;
	const char *env = getenv("PORTAL_DOORBELL_TORTURE");
	uint64_t n = 20000;

	if (env && atoi(env) > 0)
		n = (uint64_t)atoi(env);
	torture_run(f, n / 2, 0);
	torture_run(f, n - n / 2, 1);
}

/* ------------------------------------------------------------------ */
/* fd path: arm, poll, ack                                             */
/* ------------------------------------------------------------------ */

static void test_fd_poll(void **state)
{
	struct fx *f = *state;
	portal_doorbell_t *wt = attach(f, PORTAL_DOORBELL_WAITER, 0);
	portal_doorbell_t *nt = attach(f, PORTAL_DOORBELL_NOTIFIER, 0);
	struct notifier_arg a = { .f = f, .delay_ns = 10 * MS };
	pthread_t th;
	int64_t t0;
	int fd;

	atomic_store(&f->w->published, 0);
	atomic_store(&f->w->consumed, 0);
	fd = portal_doorbell_fd(wt);
	assert_true(fd >= 0);
	assert_int_equal(portal_doorbell_fd(wt), fd); /* same fd every time */

	/* nothing there: armed, fd not readable */
	assert_int_equal(portal_doorbell_arm(wt, ready_work, f->w), 0);
	assert_false(readable(fd, 0));

	/* another thread publishes and rings: the fd becomes readable */
	assert_int_equal(pthread_create(&th, NULL, notifier_thread, &a), 0);
	assert_true(readable(fd, 5000));
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(a.rc, 1);
	assert_int_equal(portal_doorbell_ack(wt), 0);
	assert_false(readable(fd, 0));
	assert_int_equal(atomic_load(&f->shm->armed), 0);

	/* work is there: arm says so and stays disarmed */
	assert_int_equal(portal_doorbell_arm(wt, ready_work, f->w), 1);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	atomic_store(&f->w->consumed, 1);

	/* armed, nobody rings: no stale readiness */
	assert_int_equal(portal_doorbell_arm(wt, ready_work, f->w), 0);
	assert_false(readable(fd, 30));
	assert_int_equal(portal_doorbell_ack(wt), 0);

	/* disarmed: a notify does not ring, the fd stays quiet */
	assert_int_equal(portal_doorbell_notify(nt), 0);
	assert_false(readable(fd, 20));

	/* ready NULL: arm only */
	assert_int_equal(portal_doorbell_arm(wt, NULL, NULL), 0);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	assert_true(readable(fd, 5000));
	assert_int_equal(portal_doorbell_ack(wt), 0);

	/* detach stops the futex helper promptly */
	t0 = tu_now_ns();
	portal_doorbell_detach(wt);
	assert_true(tu_now_ns() - t0 < SEC);
	portal_doorbell_detach(nt);
}

/* ------------------------------------------------------------------ */
/* ready() errors end the wait                                         */
/* ------------------------------------------------------------------ */

struct err_arg {
	struct fx *f;
	int rc;
};

static void *error_thread(void *p)
{
	struct err_arg *a = p;
	struct portal_doorbell_opts o = opts_for(a->f->efd, PORTAL_DOORBELL_NOTIFIER, 0);
	portal_doorbell_t *nt = NULL;

	a->rc = portal_doorbell_attach(a->f->page, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &nt);
	if (a->rc < 0)
		return NULL;
	if (!wait_armed(a->f->shm, 5 * SEC)) {
		a->rc = -1000;
	} else {
		tu_sleep_ns(10 * MS);
		atomic_store(&a->f->w->err, PORTAL_EPROTO);
		a->rc = portal_doorbell_notify(nt);
	}
	portal_doorbell_detach(nt);
	return NULL;
}

static void test_ready_error(void **state)
{
	struct fx *f = *state;
	portal_doorbell_t *wt = attach(f, PORTAL_DOORBELL_WAITER, 0);
	struct err_arg a = { .f = f };
	pthread_t th;

	atomic_store(&f->w->published, 0);
	atomic_store(&f->w->consumed, 0);

	/* at once */
	atomic_store(&f->w->err, PORTAL_EPROTO);
	assert_int_equal(portal_doorbell_wait(wt, ready_work, f->w, 5 * SEC), PORTAL_EPROTO);
	assert_int_equal(portal_doorbell_wait(wt, ready_work, f->w, 0), PORTAL_EPROTO);
	assert_int_equal(portal_doorbell_arm(wt, ready_work, f->w), PORTAL_EPROTO);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	assert_int_equal(portal_doorbell_ack(wt), 0);

	/* while asleep: the ring wakes it, the re-check fails */
	atomic_store(&f->w->err, 0);
	assert_int_equal(pthread_create(&th, NULL, error_thread, &a), 0);
	assert_int_equal(portal_doorbell_wait(wt, ready_work, f->w, 5 * SEC), PORTAL_EPROTO);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(a.rc, 1);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	atomic_store(&f->w->err, 0);

	/* any positive answer is "work" */
	assert_int_equal(portal_doorbell_wait(wt, ready_two, NULL, 5 * SEC), 0);
	assert_int_equal(portal_doorbell_arm(wt, ready_two, NULL), 1);
	portal_doorbell_detach(wt);
}

/* ------------------------------------------------------------------ */
/* Region glue                                                         */
/* ------------------------------------------------------------------ */

static void test_region(void **state)
{
	struct fx *f = *state;
	struct portal_region_opts ro = { .size = 64 * 1024 };
	struct portal_doorbell_opts o = opts_for(f->efd, PORTAL_DOORBELL_WAITER, 0);
	struct portal_object_info info;
	portal_region_t *reg = NULL;
	portal_doorbell_t *wt = NULL, *nt = NULL;
	char uri[64];

	snprintf(uri, sizeof(uri), "memfd:portal-db-test-%d", (int)getpid());
	assert_int_equal(portal_region_create(uri, &ro, &reg), 0);

	assert_int_equal(portal_doorbell_create(reg, "bell", f->backend, 0), 0);
	assert_int_equal(portal_doorbell_create(reg, "bell", f->backend, 0), -EEXIST);
	assert_int_equal(portal_doorbell_create(reg, "bad", (enum portal_doorbell_backend)9, 0),
			 -EINVAL);
	assert_int_equal(portal_doorbell_create(NULL, "x", f->backend, 0), -EINVAL);
	assert_int_equal(portal_region_lookup(reg, "bell", PORTAL_OBJ_DOORBELL, &info), 0);
	assert_int_equal(info.param[0], f->backend);
	assert_int_equal(info.param[1], PORTAL_DOORBELL_VERSION);
	assert_true(info.size >= portal_doorbell_memsize());
	assert_int_equal(info.offset % PORTAL_LINE_PAIR, 0);

	assert_int_equal(portal_doorbell_open(reg, "nope", PORTAL_DOORBELL_WAITER, &o, &wt),
			 -ENOENT);
	assert_int_equal(portal_doorbell_open(reg, "bell", PORTAL_DOORBELL_WAITER, &o, &wt), 0);
	assert_int_equal(portal_doorbell_open(reg, "bell", PORTAL_DOORBELL_NOTIFIER, &o, &nt), 0);

	assert_int_equal(portal_doorbell_notify(nt), 0);
	assert_int_equal(portal_doorbell_arm(wt, ready_never, NULL), 0);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	assert_true(readable(portal_doorbell_fd(wt), 5000));
	assert_int_equal(portal_doorbell_ack(wt), 0);
	portal_doorbell_detach(nt);
	portal_doorbell_detach(wt);

	/* a corrupt header in the region is refused */
	((struct portal_doorbell_shm *)info.addr)->magic = 0;
	assert_int_equal(portal_doorbell_open(reg, "bell", PORTAL_DOORBELL_WAITER, &o, &wt),
			 PORTAL_EPROTO);
	assert_int_equal(portal_region_detach(reg), 0);
}

/* ------------------------------------------------------------------ */
/* Liveness: a waiter that watches its peer                              */
/* ------------------------------------------------------------------ */

/*
 * The peer, a forked process: attach side 1 of the region (VM: no OS lock,
 * heartbeat every 2 ms), tell the parent, publish one item and ring after
 * 30 ms, then either die at once (_exit, no detach) or stall (heartbeat
 * stopped, still alive) until killed.
 */
static void watch_peer(struct fx *f, int regfd, bool vm, int up)
{
	struct portal_region_opts o = { .side = 1, .flags = vm ? PORTAL_REGION_F_VM : 0 };
	portal_region_t *r = NULL;
	portal_doorbell_t *n;
	char uri[32], ok;

	alarm(20); /* never outlive a failed test */
	snprintf(uri, sizeof(uri), "fd:%d", regfd);
	ok = portal_region_attach(uri, &o, &r) == 0 ? 0 : 1;
	if (!ok && vm)
		ok = portal_region_heartbeat_start(r, 2 * MS) == 0 ? 0 : 1;
	if (write(up, &ok, 1) != 1 || ok)
		_exit(1);
	n = attach_at(f->page, f->efd, PORTAL_DOORBELL_NOTIFIER, 0);
	tu_sleep_ns(30 * MS);
	publish(f->w);
	portal_doorbell_notify(n);
	if (!vm)
		_exit(0); /* dies holding its slot: the lock goes with it */
	portal_region_heartbeat_stop(r);
	for (;;)
		pause(); /* alive, but silent: a stalled VM */
}

static void watch_case(struct fx *f, bool vm)
{
	struct portal_region_opts ro = { .size = 64 * 1024 };
	struct portal_liveness_opts lo = { .stall_ns = 200 * MS }; /* >> scheduling gaps */
	struct portal_doorbell_opts o = opts_for(f->efd, PORTAL_DOORBELL_WAITER, 0);
	struct portal_peer_status st;
	portal_peer_watch_t *w = NULL;
	portal_region_t *reg = NULL;
	portal_doorbell_t *wt = NULL;
	int64_t t0, took;
	int up[2], status;
	char uri[64], ok = 9;
	pid_t pid;

	snprintf(uri, sizeof(uri), "memfd:portal-db-live-%d", (int)getpid());
	assert_int_equal(portal_region_create(uri, &ro, &reg), 0);
	assert_int_equal(pipe(up), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(up[0]);
		watch_peer(f, portal_region_fd(reg), vm, up[1]);
	}
	close(up[1]);
	assert_int_equal(read(up[0], &ok, 1), 1);
	assert_int_equal(ok, 0);
	close(up[0]);

	assert_int_equal(portal_region_watch_open(reg, 1, &lo, &w), 0);
	assert_int_equal(portal_region_watch_status(w, &st), 0);
	assert_int_equal(st.state, PORTAL_PEER_ALIVE);
	assert_int_equal(st.method, vm ? PORTAL_LIVENESS_BY_HEARTBEAT : PORTAL_LIVENESS_BY_LOCK);
	o.watch = w;
	o.watch_check_ns = 10 * MS;
	assert_int_equal(portal_doorbell_attach(f->page, PAGE, PORTAL_DOORBELL_WAITER, &o, &wt), 0);

	/* The item published before the peer went comes first ... */
	assert_int_equal(portal_doorbell_wait(wt, ready_work, f->w, -1), 0);
	atomic_fetch_add_explicit(&f->w->consumed, 1, memory_order_relaxed);
	/* ... then an endless wait ends with the peer's death. */
	t0 = tu_now_ns();
	assert_int_equal(portal_doorbell_wait(wt, ready_work, f->w, -1), PORTAL_EPEERDEAD);
	took = tu_now_ns() - t0;
	assert_true(took < 2 * SEC);
	assert_int_equal(portal_region_watch_status(w, &st), 0);
	assert_int_equal(st.state, PORTAL_PEER_DEAD);

	/* Without a watch the wait is what it always was. */
	assert_int_equal(portal_doorbell_set_watch(wt, NULL, 0), 0);
	assert_int_equal(portal_doorbell_wait(wt, ready_work, f->w, 20 * MS), -ETIMEDOUT);
	assert_int_equal(portal_doorbell_set_watch(wt, w, 50), -EINVAL);
	assert_int_equal(portal_doorbell_set_watch(wt, w, -1), -EINVAL);
	assert_int_equal(portal_doorbell_set_watch(NULL, w, 0), -EINVAL);
	o.watch_check_ns = 50;
	portal_doorbell_detach(wt);
	assert_int_equal(portal_doorbell_attach(f->page, PAGE, PORTAL_DOORBELL_WAITER, &o, &wt),
			 -EINVAL);

	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	portal_region_watch_close(w);
	assert_int_equal(portal_region_detach(reg), 0);
}

static void test_watch_lock(void **state)
{
	watch_case(*state, false);
}

static void test_watch_heartbeat(void **state)
{
	watch_case(*state, true);
}

/* ------------------------------------------------------------------ */
/* fd passing                                                          */
/* ------------------------------------------------------------------ */

static void test_fdpass(void **state)
{
	int sv[2], efd, got = -1, closed_fd;
	uint64_t v = 1;
	char byte = 'x';

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	efd = portal_doorbell_eventfd_create();
	assert_true(efd >= 0);
	assert_true(fcntl(efd, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(efd, F_GETFL) & O_NONBLOCK);

	assert_int_equal(portal_fd_send(sv[0], efd), 0);
	assert_int_equal(portal_fd_recv(sv[1], &got), 0);
	assert_true(got >= 0 && got != efd);
	assert_true(fcntl(got, F_GETFD) & FD_CLOEXEC);
	/* the same eventfd object */
	assert_int_equal(write(got, &v, sizeof(v)), sizeof(v));
	v = 0;
	assert_int_equal(read(efd, &v, sizeof(v)), sizeof(v));
	assert_int_equal(v, 1);
	close(got);

	closed_fd = dup(efd);
	close(closed_fd);
	assert_int_equal(portal_fd_send(sv[0], -1), -EBADF);
	assert_int_equal(portal_fd_send(sv[0], closed_fd), -EBADF);
	assert_int_equal(portal_fd_recv(sv[1], NULL), -EINVAL);

	/* a message without an fd */
	assert_int_equal(write(sv[0], &byte, 1), 1);
	assert_int_equal(portal_fd_recv(sv[1], &got), PORTAL_EPROTO);

	/* peer gone */
	close(sv[0]);
	assert_int_equal(portal_fd_recv(sv[1], &got), PORTAL_EPEERDEAD);
	close(sv[1]);
	close(efd);
}


/* ------------------------------------------------------------------ */
/* stream: coalescing, end of stream, pipes, re-synchronisation         */
/* ------------------------------------------------------------------ */

static int unread(int fd)
{
	int n = -1;

	return ioctl(fd, FIONREAD, &n) < 0 ? -1 : n;
}

static portal_doorbell_t *stream_attach(void *mem, int fd, enum portal_doorbell_role role)
{
	struct portal_doorbell_opts o;
	portal_doorbell_t *d = NULL;

	memset(&o, 0, sizeof(o));
	o.eventfd = -1;
	o.stream_fd = fd;
	o.spin_ns = -1;
	assert_int_equal(portal_doorbell_attach(mem, PAGE, role, &o, &d), 0);
	return d;
}

static uint32_t word_at(struct fx *f, size_t off)
{
	uint32_t v;

	memcpy(&v, (char *)f->page + off, sizeof(v));
	return v;
}

static void test_stream_coalesce(void **state)
{
	struct fx *f = *state;
	int wfd = f->efd, nfd = stream_peer[f->efd], i, fd;
	portal_doorbell_t *wt = stream_attach(f->page, wfd, PORTAL_DOORBELL_WAITER);
	portal_doorbell_t *nt = stream_attach(f->page, nfd, PORTAL_DOORBELL_NOTIFIER);
	struct portal_doorbell_stats st;

	fd = portal_doorbell_fd(wt);
	assert_true(fd >= 0);
	atomic_store(&f->w->published, 0);
	atomic_store(&f->w->consumed, 0);

	/* Armed, ten notifies: every one rings (the waiter is armed), but
	 * only the first writes a byte; the others see it unread. */
	assert_int_equal(portal_doorbell_arm(wt, ready_work, f->w), 0);
	for (i = 0; i < 10; i++) {
		publish(f->w);
		assert_int_equal(portal_doorbell_notify(nt), 1);
	}
	assert_int_equal(unread(wfd), 1);
	assert_int_equal(word_at(f, 260), 1); /* stream_sent */
	assert_int_equal(word_at(f, 132), 0); /* stream_drained */
	portal_doorbell_stats(nt, &st);
	assert_int_equal(st.rings, 10);
	assert_true(readable(fd, 0));

	/* ack drains it and publishes the count: the next ring writes again */
	assert_int_equal(portal_doorbell_ack(wt), 0);
	assert_int_equal(unread(wfd), 0);
	assert_int_equal(word_at(f, 132), 1);
	assert_int_equal(portal_doorbell_notify(nt), 0); /* disarmed: nothing */
	assert_int_equal(unread(wfd), 0);
	assert_int_equal(portal_doorbell_arm(wt, NULL, NULL), 0);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	assert_int_equal(unread(wfd), 1);
	assert_int_equal(word_at(f, 260), 2);

	/* wait() drains on wake-up too */
	atomic_store(&f->w->consumed, 0);
	atomic_store(&f->w->published, 0);
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 20 * MS), -ETIMEDOUT);
	assert_int_equal(unread(wfd), 0);
	assert_int_equal(word_at(f, 132), 2);
	portal_doorbell_detach(nt);
	portal_doorbell_detach(wt);

	/* A re-attached waiter re-synchronises: counters that say a byte is
	 * pending when none is (a byte lost) would make notifiers skip for
	 * ever; attach drains and takes drained = sent. */
	memcpy((char *)f->page + 260, &(uint32_t){ 7 }, 4);
	memcpy((char *)f->page + 132, &(uint32_t){ 3 }, 4);
	wt = stream_attach(f->page, wfd, PORTAL_DOORBELL_WAITER);
	nt = stream_attach(f->page, nfd, PORTAL_DOORBELL_NOTIFIER);
	assert_int_equal(word_at(f, 132), 7);
	assert_int_equal(portal_doorbell_arm(wt, NULL, NULL), 0);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	assert_int_equal(unread(wfd), 1);
	assert_int_equal(portal_doorbell_ack(wt), 0);
	portal_doorbell_detach(nt);
	portal_doorbell_detach(wt);
}

static void test_stream_ends(void **state)
{
	struct fx *f = *state;
	portal_doorbell_t *wt, *nt, *d = NULL;
	struct portal_doorbell_opts o;
	int sv[2], pp[2], reg;
	char path[] = "/tmp/portal-db-file-XXXXXX";

	/* not a stream */
	reg = mkstemp(path);
	assert_true(reg >= 0);
	unlink(path);
	memset(&o, 0, sizeof(o));
	o.stream_fd = reg;
	assert_int_equal(portal_doorbell_attach(f->page, PAGE, PORTAL_DOORBELL_WAITER, &o, &d),
			 -EINVAL);
	close(reg);

	/* the notifier's end closes: the sleeping waiter learns it */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	wt = stream_attach(f->page, sv[0], PORTAL_DOORBELL_WAITER);
	close(sv[1]);
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 2 * SEC), PORTAL_EPEERDEAD);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	portal_doorbell_detach(wt);
	close(sv[0]);

	/* the waiter's end closes: an armed notify says so */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	nt = stream_attach(f->page, sv[1], PORTAL_DOORBELL_NOTIFIER);
	close(sv[0]);
	atomic_store(&f->shm->armed, 1);
	memset((char *)f->page + 132, 0, 4);
	memset((char *)f->page + 260, 0, 4);
	assert_int_equal(portal_doorbell_notify(nt), PORTAL_EPEERDEAD);
	assert_int_equal(word_at(f, 260), 0); /* the failed byte is not counted */
	atomic_store(&f->shm->armed, 0);
	portal_doorbell_detach(nt);
	close(sv[1]);

	/* a blocking pipe works, and a broken one gives -EPIPE, no SIGPIPE */
	assert_int_equal(pipe2(pp, O_CLOEXEC), 0);
	wt = stream_attach(f->page, pp[0], PORTAL_DOORBELL_WAITER);
	nt = stream_attach(f->page, pp[1], PORTAL_DOORBELL_NOTIFIER);
	assert_int_equal(portal_doorbell_arm(wt, NULL, NULL), 0);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	assert_int_equal(unread(pp[0]), 1);
	assert_true(readable(portal_doorbell_fd(wt), 1000));
	assert_int_equal(portal_doorbell_ack(wt), 0);
	assert_int_equal(unread(pp[0]), 0);
	portal_doorbell_detach(wt);
	close(pp[0]);
	atomic_store(&f->shm->armed, 1);
	assert_int_equal(portal_doorbell_notify(nt), PORTAL_EPEERDEAD);
	atomic_store(&f->shm->armed, 0);
	portal_doorbell_detach(nt);
	close(pp[1]);

	/* wait_connected: a connected socket at once; a hung-up one times out */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(portal_doorbell_stream_wait_connected(sv[0], 0), 0);
	close(sv[1]);
	assert_int_equal(portal_doorbell_stream_wait_connected(sv[0], 30 * MS), -ETIMEDOUT);
	close(sv[0]);
	assert_int_equal(portal_doorbell_stream_wait_connected(-1, 0), -EINVAL);
}

/* ------------------------------------------------------------------ */
/* ivshmem: register value, guest device (fake sysfs), client checks   */
/* ------------------------------------------------------------------ */

static void test_ivshmem_value(void **state)
{
	(void)state;
	assert_int_equal(portal_ivshmem_doorbell_value(0, 0), 0);
	assert_int_equal(portal_ivshmem_doorbell_value(1, 0), 0x10000);
	assert_int_equal(portal_ivshmem_doorbell_value(0, 1), 1);
	assert_int_equal(portal_ivshmem_doorbell_value(3, 1), 0x30001);
	assert_int_equal(portal_ivshmem_doorbell_value(0xffff, 0xffff), 0xffffffffll);
	assert_int_equal(portal_ivshmem_doorbell_value(0x10000, 0), -EINVAL);
	assert_int_equal(portal_ivshmem_doorbell_value(0, 0x10000), -EINVAL);
	assert_int_equal(portal_ivshmem_doorbell_value(UINT32_MAX, UINT32_MAX), -EINVAL);
}

static int fake_file(const char *root, const char *leaf, const void *buf, size_t len)
{
	char path[192];

	snprintf(path, sizeof(path), "%s/%s/%s", root, FAKE_BDF, leaf);
	return write_file(path, buf, len);
}

static void test_ivshmem_guest(void **state)
{
	struct portal_ivshmem_guest_opts go;
	portal_ivshmem_guest_t *g = NULL;
	portal_doorbell_t *wt, *nt;
	struct portal_doorbell_opts o;
	char root[64], other[64], path[192], buf[8];
	uint32_t regs[64];
	size_t size = 0;
	char *shm;
	int fd;

	(void)state;
	assert_int_equal(fake_sysfs(root, sizeof(root), 42, 2 * PAGE), 0);
	memset(&go, 0, sizeof(go));
	go.sysfs_root = root;

	/* argument checks */
	assert_int_equal(portal_ivshmem_guest_open(NULL, &g), -EINVAL);
	assert_int_equal(portal_ivshmem_guest_open(&go, NULL), -EINVAL);
	go.flags = 0x4;
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -EINVAL);
	go.flags = PORTAL_IVSHMEM_GUEST_F_SYSFS | PORTAL_IVSHMEM_GUEST_F_VFIO;
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -EINVAL);
	go.flags = 0;
	go.vectors = PORTAL_IVSHMEM_MAX_VECTORS + 1;
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -EINVAL);
	go.vectors = 0;
	go.bdf = "../etc";
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -EINVAL);
	go.bdf = "0000:00:05.0";
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -ENOENT);
	go.bdf = NULL;
	/* VFIO asked for, but no IOMMU group: -ENODEV */
	go.flags = PORTAL_IVSHMEM_GUEST_F_VFIO;
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -ENODEV);
	go.flags = 0;
	assert_null(g);

	/* an empty tree, and a device that is not ivshmem */
	assert_int_equal(fake_sysfs(other, sizeof(other), 1, PAGE), 0);
	go.sysfs_root = other;
	assert_int_equal(fake_file(other, "vendor", "0x8086\n", 7), 0);
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -ENOENT);
	go.bdf = FAKE_BDF;
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -ENOENT);
	go.bdf = NULL;
	/* registers too small; an id that is not one yet */
	assert_int_equal(fake_file(other, "vendor", "0x1af4\n", 7), 0);
	assert_int_equal(fake_file(other, "resource0", "abc", 3), 0);
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -EINVAL);
	memset(regs, 0, sizeof(regs));
	regs[PORTAL_IVSHMEM_REG_IVPOSITION / 4] = 0xffffffffu;
	assert_int_equal(fake_file(other, "resource0", regs, sizeof(regs)), 0);
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), -EAGAIN);
	assert_null(g);
	fake_sysfs_remove(other);

	/* the good one, found by scanning (sysfs: polling mode) */
	go.sysfs_root = root;
	assert_int_equal(portal_ivshmem_guest_open(&go, &g), 0);
	assert_int_equal(portal_ivshmem_guest_id(g), 42);
	assert_int_equal(portal_ivshmem_guest_vectors(g), 0);
	assert_int_equal(portal_ivshmem_guest_irq_fd(g, 0), -ENOENT);
	shm = portal_ivshmem_guest_shm(g, &size);
	assert_non_null(shm);
	assert_int_equal(size, 2 * PAGE);
	snprintf(path, sizeof(path), "%s/%s/enable", root, FAKE_BDF);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, 1), 1);
	close(fd);
	assert_int_equal(buf[0], '1');

	/* BAR2 is the memory: a write shows in resource2 */
	memcpy(shm + PAGE + 8, "portal", 6);
	snprintf(path, sizeof(path), "%s/%s/resource2", root, FAKE_BDF);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, 6, PAGE + 8), 6);
	close(fd);
	assert_memory_equal(buf, "portal", 6);

	/* ring: the Doorbell register gets peer << 16 | vector */
	assert_int_equal(portal_ivshmem_guest_ring(g, 7, 2), 0);
	assert_int_equal(fake_doorbell_reg(root), 0x70002);
	assert_int_equal(portal_ivshmem_guest_ring(g, 0xffff, 0xffff), 0);
	assert_int_equal(fake_doorbell_reg(root), 0xffffffffu);
	assert_int_equal(portal_ivshmem_guest_ring(g, 0x10000, 0), -EINVAL);
	assert_int_equal(portal_ivshmem_guest_ring(g, 0, 0x10000), -EINVAL);
	assert_int_equal(fake_doorbell_reg(root), 0xffffffffu);

	/* a doorbell in BAR2: the guest notifier rings peer 9 vector 4 when
	 * the waiter (polling mode) is armed, and only then */
	assert_int_equal(portal_doorbell_init(shm, PAGE, PORTAL_DOORBELL_IVSHMEM), 0);
	memset(&o, 0, sizeof(o));
	o.eventfd = -1;
	o.stream_fd = -1;
	o.ivshmem_guest = g;
	o.ivshmem_peer = 9;
	o.ivshmem_vector = 4;
	wt = NULL;
	nt = NULL;
	assert_int_equal(portal_doorbell_attach(shm, PAGE, PORTAL_DOORBELL_WAITER, &o, &wt), 0);
	assert_int_equal(portal_doorbell_attach(shm, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &nt), 0);
	assert_int_equal(portal_doorbell_notify(nt), 0);
	assert_int_equal(fake_doorbell_reg(root), 0xffffffffu);
	assert_int_equal(portal_doorbell_arm(wt, NULL, NULL), 0);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	assert_int_equal(fake_doorbell_reg(root), 0x90004);
	assert_true(readable(portal_doorbell_fd(wt), 2000)); /* the poll helper saw it */
	assert_int_equal(portal_doorbell_ack(wt), 0);
	/* polling wait times out (waking on rings is the table's
	 * ivs_poll/test_wait_* and ivs_poll/test_torture) */
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 10 * MS), -ETIMEDOUT);
	portal_doorbell_detach(nt);
	portal_doorbell_detach(wt);

	portal_ivshmem_guest_close(g);
	portal_ivshmem_guest_close(NULL);
	fake_sysfs_remove(root);
}

/* A scripted, hostile server: accept one client, send MSGS (value, number
 * of fds to attach, raw byte count or 0 for all 8), then close. */
struct script_msg {
	int64_t value;
	int nfds;
	int bytes;
};

struct script {
	int lsock;
	const struct script_msg *msgs;
	size_t n;
	int hold_ms;     /* keep the connection open this long at the end */
};

static void script_send(int c, const struct script_msg *m)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * 2)];
	} u;
	uint64_t le = htole64((uint64_t)m->value);
	struct msghdr msg;
	struct iovec iov;
	int fds[2], i;

	memset(&msg, 0, sizeof(msg));
	iov.iov_base = &le;
	iov.iov_len = m->bytes ? (size_t)m->bytes : sizeof(le);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	for (i = 0; i < m->nfds; i++)
		fds[i] = portal_doorbell_eventfd_create();
	if (m->nfds) {
		struct cmsghdr *c2;

		memset(&u, 0, sizeof(u));
		msg.msg_control = u.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)m->nfds);
		c2 = CMSG_FIRSTHDR(&msg);
		c2->cmsg_level = SOL_SOCKET;
		c2->cmsg_type = SCM_RIGHTS;
		c2->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)m->nfds);
		memcpy(CMSG_DATA(c2), fds, sizeof(int) * (size_t)m->nfds);
	}
	if (sendmsg(c, &msg, MSG_NOSIGNAL) < 0) { /* the client may be gone */ }
	for (i = 0; i < m->nfds; i++)
		close(fds[i]);
}

static void *script_main(void *p)
{
	struct script *sc = p;
	size_t i;
	int c = accept4(sc->lsock, NULL, NULL, SOCK_CLOEXEC);

	if (c < 0)
		return NULL;
	for (i = 0; i < sc->n; i++) {
		script_send(c, &sc->msgs[i]);
		if (sc->msgs[i].bytes)
			tu_sleep_ns(20 * MS); /* a split message: the rest comes later */
	}
	tu_sleep_ns((int64_t)sc->hold_ms * MS);
	close(c);
	return NULL;
}

/* Run a client connect against SCRIPT; return its result. */
static int against_script(const char *path, const struct script_msg *msgs, size_t n, int hold_ms,
			  portal_ivshmem_client_t **out)
{
	struct sockaddr_un sa;
	struct script sc = { .msgs = msgs, .n = n, .hold_ms = hold_ms };
	pthread_t th;
	int rc;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	unlink(path);
	sc.lsock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(sc.lsock >= 0);
	assert_int_equal(bind(sc.lsock, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(sc.lsock, 4), 0);
	assert_int_equal(pthread_create(&th, NULL, script_main, &sc), 0);
	rc = portal_ivshmem_client_connect(path, 1, 2 * SEC, out);
	assert_int_equal(pthread_join(th, NULL), 0);
	close(sc.lsock);
	unlink(path);
	return rc;
}

static void test_ivshmem_client_hostile(void **state)
{
	/* a memfd for the shm messages: the scripted server sends eventfds,
	 * whose size is 0, which the client must refuse as shared memory */
	static const struct script_msg bad_version[] = { { 1, 0, 0 } };
	static const struct script_msg version_fd[] = { { 0, 1, 0 } };
	static const struct script_msg bad_id[] = { { 0, 0, 0 }, { 70000, 0, 0 } };
	static const struct script_msg no_shm[] = { { 0, 0, 0 }, { 3, 0, 0 }, { 5, 1, 0 } };
	static const struct script_msg two_fds[] = { { 0, 0, 0 }, { 3, 0, 0 }, { -1, 2, 0 } };
	static const struct script_msg empty_shm[] = { { 0, 0, 0 }, { 3, 0, 0 }, { -1, 1, 0 } };
	static const struct script_msg split[] = { { 0, 0, 3 } };
	char path[64];
	portal_ivshmem_client_t *c = NULL;
	int64_t v;
	int fd, sv[2];

	(void)state;
	snprintf(path, sizeof(path), "/tmp/portal-ivs-script-%d.sock", (int)getpid());

	assert_int_equal(portal_ivshmem_client_connect(NULL, 1, 0, &c), -EINVAL);
	assert_int_equal(portal_ivshmem_client_connect(path, 0, 0, &c), -EINVAL);
	assert_int_equal(portal_ivshmem_client_connect(path, PORTAL_IVSHMEM_MAX_VECTORS + 1, 0, &c),
			 -EINVAL);
	assert_int_equal(portal_ivshmem_client_connect(
				 "/tmp/this/path/is/much/too/long/for/a/unix/socket/address/"
				 "because/sun_path/holds/only/one/hundred/and/eight/bytes/x.sock",
				 1, 0, &c), -EINVAL);
	/* nobody there: retried until the timeout */
	assert_int_equal(portal_ivshmem_client_connect(path, 1, 50 * MS, &c), -ENOENT);

	/* a server that closes at once (full) */
	assert_int_equal(against_script(path, NULL, 0, 0, &c), -ECONNREFUSED);
	assert_int_equal(against_script(path, bad_version, 1, 0, &c), PORTAL_EVERSION);
	assert_int_equal(against_script(path, version_fd, 1, 0, &c), PORTAL_EPROTO);
	assert_int_equal(against_script(path, bad_id, 2, 0, &c), PORTAL_EPROTO);
	assert_int_equal(against_script(path, no_shm, 3, 0, &c), PORTAL_EPROTO);
	assert_int_equal(against_script(path, two_fds, 3, 0, &c), PORTAL_EPROTO);
	assert_int_equal(against_script(path, empty_shm, 3, 0, &c), PORTAL_EPROTO);
	/* the set-up stops half-way: inside a message, or between two */
	assert_int_equal(against_script(path, split, 1, 0, &c), PORTAL_EPROTO);
	assert_int_equal(against_script(path, bad_id, 1, 0, &c), PORTAL_EPEERDEAD);
	assert_null(c);

	/* recv_msg: a message split in two arrives whole */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(portal_ivshmem_recv_msg(sv[0], &v, &fd, 0), -ETIMEDOUT);
	assert_int_equal(portal_ivshmem_recv_msg(-1, &v, &fd, 0), -EINVAL);
	assert_int_equal(portal_ivshmem_recv_msg(sv[0], NULL, &fd, 0), -EINVAL);
	{
		uint64_t le = htole64((uint64_t)-1234567);

		assert_int_equal(write(sv[1], &le, 5), 5);
		assert_int_equal(write(sv[1], (char *)&le + 5, 3), 3);
		assert_int_equal(portal_ivshmem_recv_msg(sv[0], &v, &fd, 0), 0);
		assert_int_equal(v, -1234567);
		assert_int_equal(fd, -1);
		/* closed inside a message */
		assert_int_equal(write(sv[1], &le, 4), 4);
		close(sv[1]);
		assert_int_equal(portal_ivshmem_recv_msg(sv[0], &v, &fd, 1 * SEC), PORTAL_EPROTO);
		assert_int_equal(portal_ivshmem_recv_msg(sv[0], &v, &fd, 1 * SEC), PORTAL_EPEERDEAD);
		close(sv[0]);
	}
	portal_ivshmem_client_close(NULL);
}

/* ------------------------------------------------------------------ */

static const struct cfg cfg_futex = { "futex", PORTAL_DOORBELL_FUTEX, K_PLAIN };
static const struct cfg cfg_eventfd = { "eventfd", PORTAL_DOORBELL_EVENTFD, K_PLAIN };
static const struct cfg cfg_ivs_host = { "ivshmem-host", PORTAL_DOORBELL_IVSHMEM, K_IVS_HOST };
static const struct cfg cfg_ivs_poll = { "ivshmem-guest-poll", PORTAL_DOORBELL_IVSHMEM,
					 K_IVS_GUEST_POLL };
static const struct cfg cfg_stream = { "stream", PORTAL_DOORBELL_STREAM, K_STREAM };

#define ONE(cfg, fn) { #cfg "/" #fn, fn, setup, teardown, (void *)&cfg_##cfg }
/* futex and eventfd only: the region glue (doorbell_region.c) does not take
 * the ivshmem and stream backends yet */
#define BOTH(fn) ONE(futex, fn), ONE(eventfd, fn)
#define ALL(fn) BOTH(fn), ONE(ivs_host, fn), ONE(ivs_poll, fn), ONE(stream, fn)

int main(void)
{
	const struct CMUnitTest tests[] = {
		ALL(test_memsize_init),
		ALL(test_attach_errors),
		ALL(test_role_errors),
		ALL(test_notify_unarmed),
		ALL(test_wait_timeout),
		ALL(test_wait_thread),
		ALL(test_wait_process),
		ALL(test_torture),
		ALL(test_fd_poll),
		ALL(test_ready_error),
		BOTH(test_region),
		BOTH(test_watch_lock),
		BOTH(test_watch_heartbeat),
		ONE(stream, test_stream_coalesce),
		ONE(stream, test_stream_ends),
		cmocka_unit_test(test_fdpass),
		cmocka_unit_test(test_ivshmem_value),
		cmocka_unit_test(test_ivshmem_guest),
		cmocka_unit_test(test_ivshmem_client_hostile),
	};

	/* Last line of defence against a hang: SIGALRM kills the run. */
	alarm(100);
	return cmocka_run_group_tests_name("portal.doorbell", tests, NULL, NULL);
}
