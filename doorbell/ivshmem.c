/* SPDX-License-Identifier: MIT */
/*
 * ivshmem.c - doorbell backend for QEMU's ivshmem-doorbell device, host and
 * guest sides. The doorbell's shared words (armed, wake_seq) live in the
 * ivshmem shared memory like any other Portal object; only the wake-up
 * travels another way. Each handle picks its side at attach:
 *
 *   host (opts.ivshmem_guest == NULL): a client of an ivshmem server.
 *     notifier  writes 1 to the eventfd of the peer and vector it rings
 *               (QEMU turns it into an MSI-X interrupt in the guest, or a
 *               host peer polls it)
 *     waiter    sleeps in ppoll on its own vector's eventfd, then drains it
 *     This is the eventfd backend with the eventfds the server handed out:
 *     the ops below call portal_doorbell_eventfd_ops.
 *
 *   guest (opts.ivshmem_guest set, from portal_ivshmem_guest_open):
 *     notifier  writes ivshmem_peer << 16 | ivshmem_vector to the BAR0
 *               Doorbell register; QEMU writes the peer's eventfd
 *     waiter    with VFIO (MSI-X wired to eventfds): sleeps on the eventfd
 *               of ivshmem_vector, like the host
 *               without interrupts (sysfs, no IOMMU): polling mode, below
 *
 * Why no wake-up is lost: the protocol in doorbell.c is unchanged. On the
 * eventfd paths a ring that lands between the re-check and ppoll() stays in
 * the eventfd's count. In polling mode the waiter sleeps "until wake_seq !=
 * seq", which is exactly the futex condition; the notifier bumps wake_seq
 * (D3) before it writes the register, so a waiter that polls sees the bump
 * whether or not an interrupt ever arrives. Polling mode only adds latency:
 * the waiter looks at wake_seq with a backoff that starts at 1 us and
 * doubles up to PORTAL_IVSHMEM_POLL_MAX_NS (0.5 ms).
 *
 * A doorbell between a host process and a guest has the host on one side
 * and the guest on the other, with the same shared header (backend 3): the
 * side is a property of the handle, not of the doorbell.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "doorbell/doorbell_internal.h"

#define POLL_MIN_NS 1000

static int ivs_attach(struct portal_doorbell *d, const struct portal_doorbell_opts *o)
{
	struct portal_doorbell_opts eo;
	portal_ivshmem_guest_t *g;
	int fd;

	if (!o) {
		portal_log(PORTAL_LOG_WARN, "doorbell: ivshmem backend needs opts");
		return -EINVAL;
	}
	g = o->ivshmem_guest;
	if (!g) {
		d->ivs.mode = PORTAL_DB_IVS_HOST;
		if (o->eventfd < 0) {
			portal_log(PORTAL_LOG_WARN, "doorbell: ivshmem host side needs opts->eventfd "
				   "(portal_ivshmem_client_eventfd)");
			return -EINVAL;
		}
		return portal_doorbell_eventfd_ops.attach(d, o);
	}

	d->ivs.guest = g;
	if (d->role == PORTAL_DOORBELL_NOTIFIER) {
		if (portal_ivshmem_doorbell_value(o->ivshmem_peer, o->ivshmem_vector) < 0) {
			portal_log(PORTAL_LOG_WARN, "doorbell: ivshmem peer %u vector %u out of range",
				   (unsigned)o->ivshmem_peer, (unsigned)o->ivshmem_vector);
			return -EINVAL;
		}
		d->ivs.peer = o->ivshmem_peer;
		d->ivs.vector = o->ivshmem_vector;
		d->ivs.mode = portal_ivshmem_guest_vectors(g) ? PORTAL_DB_IVS_GUEST_IRQ
							      : PORTAL_DB_IVS_GUEST_POLL;
		return 0;
	}
	if (portal_ivshmem_guest_vectors(g) == 0) {
		d->ivs.mode = PORTAL_DB_IVS_GUEST_POLL;
		return 0;
	}
	fd = portal_ivshmem_guest_irq_fd(g, o->ivshmem_vector);
	if (fd < 0) {
		portal_log(PORTAL_LOG_WARN, "doorbell: ivshmem vector %u is not wired (%u vectors)",
			   (unsigned)o->ivshmem_vector, portal_ivshmem_guest_vectors(g));
		return -EINVAL;
	}
	d->ivs.mode = PORTAL_DB_IVS_GUEST_IRQ;
	eo = *o;
	eo.eventfd = fd;
	return portal_doorbell_eventfd_ops.attach(d, &eo);
}

static int ivs_ring(struct portal_doorbell *d)
{
	int rc;

	if (d->ivs.guest) {
		rc = portal_ivshmem_guest_ring(d->ivs.guest, d->ivs.peer, d->ivs.vector);
		if (rc < 0)
			portal_log(PORTAL_LOG_ERROR, "doorbell: ivshmem register write failed: %d",
				   rc);
		return rc;
	}
	return portal_doorbell_eventfd_ops.ring(d);
}

static void sleep_for(int64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000) };

	(void)nanosleep(&ts, NULL);
}

/* Polling mode: sleep until wake_seq != SEQ or DEADLINE. */
static int poll_sleep(struct portal_doorbell *d, uint32_t seq, int64_t deadline_ns)
{
	int64_t step = POLL_MIN_NS, now, left;

	for (;;) {
		/* P1: has a notifier rung since we read SEQ (D0)? acquire,
		 * pairs with D3 in notify, like the futex compare. */
		if (atomic_load_explicit(&d->shm->wake_seq, memory_order_acquire) != seq)
			return 0;
		now = portal_db_now_ns();
		if (deadline_ns != PORTAL_DB_NO_DEADLINE && now >= deadline_ns)
			return -ETIMEDOUT;
		left = deadline_ns == PORTAL_DB_NO_DEADLINE ? step : deadline_ns - now;
		sleep_for(left < step ? left : step);
		if (step < PORTAL_IVSHMEM_POLL_MAX_NS)
			step = step * 2 > PORTAL_IVSHMEM_POLL_MAX_NS ? PORTAL_IVSHMEM_POLL_MAX_NS
								     : step * 2;
	}
}

static int ivs_sleep(struct portal_doorbell *d, uint32_t seq, int64_t deadline_ns)
{
	if (d->ivs.mode == PORTAL_DB_IVS_GUEST_POLL)
		return poll_sleep(d, seq, deadline_ns);
	return portal_doorbell_eventfd_ops.sleep(d, seq, deadline_ns);
}

/* ------------------------------------------------------------------ */
/* Polling mode, fd path: a helper thread watches wake_seq             */
/* ------------------------------------------------------------------ */

static void *poll_watch_main(void *arg)
{
	struct portal_doorbell *d = arg;
	uint32_t last = d->watch.start_seq, now;
	int64_t step = POLL_MIN_NS;
	const uint64_t one = 1;
	bool was_armed = false, armed;

	for (;;) {
		/* W2: the stop request; acquire, pairs with W3 in
		 * poll_watch_stop(). It only ends the loop. */
		if (atomic_load_explicit(&d->watch.stop, memory_order_acquire))
			break;
		/* W1: relaxed, only compared: the application's own check
		 * after poll() acquires the work, and the eventfd write/read
		 * orders the rest. */
		now = atomic_load_explicit(&d->shm->wake_seq, memory_order_relaxed);
		if (now != last) {
			last = now;
			while (write(d->efd, &one, sizeof(one)) < 0 && errno == EINTR)
				;
			step = POLL_MIN_NS;
			continue;
		}
		/* Not armed: no ring can come until the waiter arms, which it
		 * does right before it polls the fd; look at the slowest rate.
		 * Just armed: look fast again, backing off. Relaxed: a hint
		 * for the pace only (our own handle writes `armed`). */
		armed = atomic_load_explicit(&d->shm->armed, memory_order_relaxed) != 0;
		if (!armed)
			step = PORTAL_IVSHMEM_POLL_MAX_NS;
		else if (!was_armed)
			step = POLL_MIN_NS;
		was_armed = armed;
		sleep_for(step);
		if (step < PORTAL_IVSHMEM_POLL_MAX_NS)
			step = step * 2 > PORTAL_IVSHMEM_POLL_MAX_NS ? PORTAL_IVSHMEM_POLL_MAX_NS
								     : step * 2;
	}
	return NULL;
}

static int poll_watch_start(struct portal_doorbell *d)
{
	int efd, rc;

	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (efd < 0)
		return -errno;
	/* W0: wake_seq before anything is armed through the fd path;
	 * acquire, pairs with D3 (see futex.c, watch_start). */
	d->watch.start_seq = atomic_load_explicit(&d->shm->wake_seq, memory_order_acquire);
	/* Relaxed: pthread_create() orders it before the helper's first look. */
	atomic_store_explicit(&d->watch.stop, 0, memory_order_relaxed);
	d->efd = efd;
	d->efd_nonblock = true;

	rc = doorbell_helper_thread(&d->watch.tid, poll_watch_main, d);
	if (rc != 0) {
		portal_log(PORTAL_LOG_ERROR, "doorbell: cannot start the ivshmem poll thread: %d",
			   rc);
		close(efd);
		d->efd = -1;
		return -rc;
	}
	d->watch.started = true;
	return 0;
}

static void ivs_detach(struct portal_doorbell *d)
{
	if (!d->watch.started)
		return;
	/* W3: ask the helper to stop; release, pairs with W2. It sleeps at
	 * most PORTAL_IVSHMEM_POLL_MAX_NS, so the join is short. */
	atomic_store_explicit(&d->watch.stop, 1, memory_order_release);
	pthread_join(d->watch.tid, NULL);
	d->watch.started = false;
}

static int ivs_fd(struct portal_doorbell *d)
{
	int rc;

	if (d->ivs.mode != PORTAL_DB_IVS_GUEST_POLL)
		return d->efd;
	if (!d->watch.started) {
		rc = poll_watch_start(d);
		if (rc < 0)
			return rc;
	}
	return d->efd;
}

static int ivs_drain(struct portal_doorbell *d)
{
	if (d->efd < 0)
		return 0;
	return portal_db_eventfd_drain(d->efd, d->efd_nonblock);
}

const struct portal_doorbell_ops portal_doorbell_ivshmem_ops = {
	.name   = "ivshmem",
	.attach = ivs_attach,
	.detach = ivs_detach,
	.ring   = ivs_ring,
	.sleep  = ivs_sleep,
	.fd     = ivs_fd,
	.drain  = ivs_drain,
};
