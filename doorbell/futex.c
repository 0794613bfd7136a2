/* SPDX-License-Identifier: MIT */
/*
 * futex.c - doorbell backend: the waiter sleeps in FUTEX_WAIT on the shared
 * wake_seq word; the notifier wakes it with FUTEX_WAKE.
 *
 * The word lives in memory shared between processes, so the futex calls
 * are the shared kind (no FUTEX_PRIVATE_FLAG): the kernel keys them on the
 * physical page, not on this process's address space. Processes on one
 * host only; a futex does not cross a VM boundary.
 *
 * The fd path. The kernel has no fd for a futex, so portal_doorbell_fd()
 * starts a helper thread that sleeps in FUTEX_WAIT on wake_seq and writes a
 * private eventfd each time the word moves. See doorbell.h for the cost.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/thread_internal.h"
#include "doorbell/doorbell_internal.h"

/* Detach re-sends its wake-up this often until the helper has exited. */
#define WATCH_STOP_RETRY_NS 10000000

static long sys_futex(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *ts,
		      uint32_t val3)
{
	return syscall(SYS_futex, (void *)word, op, val, ts, NULL, val3);
}

static int futex_attach(struct portal_doorbell *d, const struct portal_doorbell_opts *o)
{
	(void)o;
	d->efd = -1;
	return 0;
}

static int futex_ring(struct portal_doorbell *d)
{
	/* Wake every sleeper on the word: the waiter, and its fd helper
	 * thread if it has one (at most two). */
	if (sys_futex(&d->shm->wake_seq, FUTEX_WAKE, INT_MAX, NULL, 0) < 0) {
		int err = errno;

		portal_log(PORTAL_LOG_ERROR, "doorbell: FUTEX_WAKE failed: errno %d", err);
		return -err;
	}
	return 0;
}

static int futex_sleep(struct portal_doorbell *d, uint32_t seq, int64_t deadline_ns)
{
	struct timespec abs, *tp = NULL;
	int err;

	if (deadline_ns != PORTAL_DB_NO_DEADLINE) {
		abs.tv_sec = (time_t)(deadline_ns / 1000000000);
		abs.tv_nsec = (long)(deadline_ns % 1000000000);
		tp = &abs;
	}
	/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so
	 * EINTR and spurious returns need no re-computation. The kernel
	 * compares wake_seq with SEQ and queues us atomically against
	 * FUTEX_WAKE (see the argument at the top of doorbell.c). */
	if (sys_futex(&d->shm->wake_seq, FUTEX_WAIT_BITSET, seq, tp, FUTEX_BITSET_MATCH_ANY) == 0)
		return 0;
	err = errno;
	switch (err) {
	case EAGAIN:    return 0;          /* wake_seq moved already */
	case EINTR:     return -EINTR;
	case ETIMEDOUT: return -ETIMEDOUT;
	default:
		portal_log(PORTAL_LOG_ERROR, "doorbell: FUTEX_WAIT failed: errno %d", err);
		return -err;
	}
}

/* ------------------------------------------------------------------ */
/* fd path: the helper thread                                          */
/* ------------------------------------------------------------------ */

static void *watch_main(void *arg)
{
	struct portal_doorbell *d = arg;
	_Atomic uint32_t *word = &d->shm->wake_seq;
	uint32_t last = d->watch.start_seq, now;
	const uint64_t one = 1;

	for (;;) {
		/* W2: the stop request; acquire, pairs with W3 in
		 * watch_stop(). It only ends the loop, no data. */
		if (atomic_load_explicit(&d->watch.stop, memory_order_acquire))
			break;
		if (sys_futex(word, FUTEX_WAIT_BITSET, last, NULL, FUTEX_BITSET_MATCH_ANY) < 0 &&
		    errno != EAGAIN && errno != EINTR) {
			int err = errno;

			/* Cannot watch any more: make the fd readable so the
			 * application looks, then stop. */
			portal_log(PORTAL_LOG_ERROR, "doorbell: fd helper FUTEX_WAIT failed: errno %d",
				   err);
			if (write(d->efd, &one, sizeof(one)) < 0) { /* nothing more to do */ }
			break;
		}
		/* W1: the current wake_seq; relaxed, it is only compared:
		 * the application's own check after poll() acquires the work,
		 * and the eventfd write/read orders the rest. */
		now = atomic_load_explicit(word, memory_order_relaxed);
		if (now != last) {
			last = now;
			/* EAGAIN: the counter is saturated, already readable. */
			while (write(d->efd, &one, sizeof(one)) < 0 && errno == EINTR)
				;
		}
	}
	/* W4: tell watch_stop() we are past every use of the handle, then
	 * wake it; release, pairs with W5. */
	atomic_store_explicit(&d->watch.exited, 1, memory_order_release);
	(void)sys_futex(&d->watch.exited, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, 0);
	return NULL;
}

static int watch_start(struct portal_doorbell *d)
{
	int efd, rc;

	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0)
		return -errno;
	/* W0: wake_seq before anything is armed through the fd path; acquire,
	 * pairs with D3 in notify for the same reason as D0 (a bump made by a
	 * notify that saw our later arming is not in this value, so the helper
	 * will see wake_seq move away from it). */
	d->watch.start_seq = atomic_load_explicit(&d->shm->wake_seq, memory_order_acquire);
	/* Relaxed: pthread_create() below orders these before the helper's
	 * first look. */
	atomic_store_explicit(&d->watch.stop, 0, memory_order_relaxed);
	atomic_store_explicit(&d->watch.exited, 0, memory_order_relaxed);
	d->efd = efd;
	d->efd_nonblock = true;

	rc = doorbell_helper_thread(&d->watch.tid, watch_main, d);
	if (rc != 0) {
		portal_log(PORTAL_LOG_ERROR, "doorbell: cannot start the fd helper thread: %d", rc);
		close(efd);
		d->efd = -1;
		return -rc;
	}
	d->watch.started = true;
	return 0;
}

static void watch_stop(struct portal_doorbell *d)
{
	const struct timespec retry = { .tv_sec = 0, .tv_nsec = WATCH_STOP_RETRY_NS };

	if (!d->watch.started)
		return;
	/* W3: ask the helper to stop, then wake it; release, pairs with W2.
	 * It may test the flag just before our wake-up and go to sleep just
	 * after, so the wake-up is repeated until it says it has left (W5).
	 * A FUTEX_WAKE writes nothing: wake_seq stays the notifier's. */
	atomic_store_explicit(&d->watch.stop, 1, memory_order_release);
	for (;;) {
		(void)sys_futex(&d->shm->wake_seq, FUTEX_WAKE, INT_MAX, NULL, 0);
		/* W5: the helper is done with the handle; acquire, pairs
		 * with W4. Sleep on the private word until it says so. */
		if (atomic_load_explicit(&d->watch.exited, memory_order_acquire))
			break;
		(void)sys_futex(&d->watch.exited, FUTEX_WAIT_PRIVATE, 0, &retry, 0);
		if (atomic_load_explicit(&d->watch.exited, memory_order_acquire))
			break;
	}
	pthread_join(d->watch.tid, NULL);
	d->watch.started = false;
}

static void futex_detach(struct portal_doorbell *d)
{
	watch_stop(d);
}

static int futex_fd(struct portal_doorbell *d)
{
	int rc;

	if (!d->watch.started) {
		rc = watch_start(d);
		if (rc < 0)
			return rc;
	}
	return d->efd;
}

static int futex_drain(struct portal_doorbell *d)
{
	if (d->efd < 0)
		return 0;
	return portal_db_eventfd_drain(d->efd, d->efd_nonblock);
}

const struct portal_doorbell_ops portal_doorbell_futex_ops = {
	.name   = "futex",
	.attach = futex_attach,
	.detach = futex_detach,
	.ring   = futex_ring,
	.sleep  = futex_sleep,
	.fd     = futex_fd,
	.drain  = futex_drain,
};

/* Kept for the guest poller (ivshmem_guest.c); the starter lives in common/. */
int doorbell_helper_thread(pthread_t *tid, void *(*fn)(void *), void *arg)
{
	return portal_helper_thread(tid, fn, arg);
}
