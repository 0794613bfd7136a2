/* SPDX-License-Identifier: MIT */
/*
 * doorbell_test.c - unit tests for doorbell/, table-driven over the futex
 * and eventfd backends.
 *
 * Each test that waits has a bounded timeout, so a lost wake-up fails the
 * test instead of hanging it; an alarm() in main() is the last line of
 * defence. PORTAL_DOORBELL_TORTURE sets the number of handoffs of the
 * lost-wakeup torture loop (default 20000).
 */
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
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/atomic_internal.h"
#include "portal/doorbell.h"
#include "portal/region.h"

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

struct fx {
	enum portal_doorbell_backend backend;
	void *page;            /* doorbell at offset 0, struct work at 2048 */
	struct portal_doorbell_shm *shm;
	struct work *w;
	int efd;               /* eventfd backend: the shared eventfd */
};

static int setup(void **state)
{
	const enum portal_doorbell_backend *b = *state;
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->backend = *b;
	f->page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (f->page == MAP_FAILED) {
		free(f);
		return -1;
	}
	f->shm = f->page;
	f->w = (struct work *)((char *)f->page + 2048);
	f->efd = -1;
	if (f->backend == PORTAL_DOORBELL_EVENTFD) {
		f->efd = portal_doorbell_eventfd_create();
		if (f->efd < 0)
			return -1;
	}
	if (portal_doorbell_init(f->page, PAGE, f->backend) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->efd >= 0)
		close(f->efd);
	munmap(f->page, PAGE);
	free(f);
	return 0;
}

static struct portal_doorbell_opts opts_for(int efd, int64_t spin_ns)
{
	struct portal_doorbell_opts o;

	memset(&o, 0, sizeof(o));
	o.eventfd = efd;
	o.spin_ns = spin_ns;
	return o;
}

static portal_doorbell_t *attach_at(void *mem, int efd, enum portal_doorbell_role role,
				    int64_t spin_ns)
{
	struct portal_doorbell_opts o = opts_for(efd, spin_ns);
	portal_doorbell_t *d = NULL;

	assert_int_equal(portal_doorbell_attach(mem, PAGE, role, &o, &d), 0);
	assert_non_null(d);
	return d;
}

static portal_doorbell_t *attach(struct fx *f, enum portal_doorbell_role role, int64_t spin_ns)
{
	return attach_at(f->page, f->efd, role, spin_ns);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void sleep_ns(int64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / SEC), .tv_nsec = (long)(ns % SEC) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Poll until the waiter is armed (or TIMEOUT passes). Returns 1 if armed. */
static int wait_armed(struct portal_doorbell_shm *shm, int64_t timeout)
{
	int64_t end = now_ns() + timeout;

	while (atomic_load_explicit(&shm->armed, memory_order_acquire) == 0) {
		if (now_ns() > end)
			return 0;
		sleep_ns(100000);
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
	assert_int_equal(portal_doorbell_init(p, PAGE, (enum portal_doorbell_backend)3), -EINVAL);
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
	struct portal_doorbell_opts o = opts_for(f->efd, 0);
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

	/* the eventfd backend needs a usable eventfd; the futex one needs none */
	closed_fd = dup(0 <= f->efd ? f->efd : 2);
	assert_true(closed_fd >= 0);
	close(closed_fd);
	if (f->backend == PORTAL_DOORBELL_EVENTFD) {
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, NULL, &d),
				 -EINVAL);
		o.eventfd = -1;
		assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &d),
				 -EINVAL);
		o.eventfd = closed_fd;
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
	o.eventfd = f->efd;
	assert_int_equal(portal_doorbell_attach(p, PAGE, PORTAL_DOORBELL_WAITER, &o, &d), 0);
	assert_int_equal(atomic_load(&f->shm->armed), 0);
	assert_int_equal(portal_doorbell_get_backend(d), f->backend);
	portal_doorbell_detach(d);
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
	t0 = now_ns();
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 0), -ETIMEDOUT);
	assert_int_equal(portal_doorbell_wait(wt, ready_two, NULL, 0), 0);
	assert_true(now_ns() - t0 < 100 * MS);

	/* a deadline inside the spin phase */
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 5000), -ETIMEDOUT);

	/* a deadline past it: arms, sleeps, times out, disarms */
	t0 = now_ns();
	assert_int_equal(portal_doorbell_wait(wt, ready_never, NULL, 50 * MS), -ETIMEDOUT);
	dt = now_ns() - t0;
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
	struct portal_doorbell_opts o = opts_for(a->f->efd, 0);

	a->rc = portal_doorbell_attach(a->f->page, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &nt);
	if (a->rc < 0)
		return NULL;
	if (!wait_armed(a->f->shm, 5 * SEC)) {
		a->rc = -1000;
	} else {
		sleep_ns(a->delay_ns);
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
	struct portal_doorbell_opts o = opts_for(efd, 0);
	portal_doorbell_t *nt = NULL;
	int rc;

	alarm(20);
	if (portal_doorbell_attach(f->page, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &nt) != 0)
		_exit(2);
	if (!wait_armed(f->shm, 5 * SEC))
		_exit(3);
	sleep_ns(20 * MS);
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
	if (f->backend == PORTAL_DOORBELL_EVENTFD) {
		t.efd_b = portal_doorbell_eventfd_create();
		assert_true(t.efd_b >= 0);
	}
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
	if (t.efd_b >= 0)
		close(t.efd_b);
	munmap(t.page_b, PAGE);

	print_message("    %s, producer %s: %llu/%llu handoffs; consumer arms %llu sleeps %llu "
		      "spurious %llu; producer sleeps %llu spin hits %llu\n",
		      f->backend == PORTAL_DOORBELL_FUTEX ? "futex" : "eventfd",
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
	t0 = now_ns();
	portal_doorbell_detach(wt);
	assert_true(now_ns() - t0 < SEC);
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
	struct portal_doorbell_opts o = opts_for(a->f->efd, 0);
	portal_doorbell_t *nt = NULL;

	a->rc = portal_doorbell_attach(a->f->page, PAGE, PORTAL_DOORBELL_NOTIFIER, &o, &nt);
	if (a->rc < 0)
		return NULL;
	if (!wait_armed(a->f->shm, 5 * SEC)) {
		a->rc = -1000;
	} else {
		sleep_ns(10 * MS);
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
	struct portal_doorbell_opts o = opts_for(f->efd, 0);
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

static const enum portal_doorbell_backend be_futex = PORTAL_DOORBELL_FUTEX;
static const enum portal_doorbell_backend be_eventfd = PORTAL_DOORBELL_EVENTFD;

#define BOTH(fn) \
	{ "futex/" #fn, fn, setup, teardown, (void *)&be_futex }, \
	{ "eventfd/" #fn, fn, setup, teardown, (void *)&be_eventfd }

int main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_memsize_init),
		BOTH(test_attach_errors),
		BOTH(test_role_errors),
		BOTH(test_notify_unarmed),
		BOTH(test_wait_timeout),
		BOTH(test_wait_thread),
		BOTH(test_wait_process),
		BOTH(test_torture),
		BOTH(test_fd_poll),
		BOTH(test_ready_error),
		BOTH(test_region),
		cmocka_unit_test(test_fdpass),
	};

	/* Last line of defence against a hang: SIGALRM kills the run. */
	alarm(100);
	return cmocka_run_group_tests_name("portal.doorbell", tests, NULL, NULL);
}
