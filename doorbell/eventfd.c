/* SPDX-License-Identifier: MIT */
/*
 * eventfd.c - doorbell backend: the notifier writes 1 to an eventfd the
 * waiter polls. Both sides hold the same eventfd (inherited over fork, or
 * passed with portal_fd_send / portal_fd_recv). wake_seq is still bumped on
 * every ring, so the shared words mean the same on every backend.
 *
 * A count written to the eventfd stays there until the waiter reads it, so
 * a ring that lands between the waiter's re-check and its poll() is not
 * lost: poll() returns at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "doorbell/doorbell_internal.h"

int portal_doorbell_eventfd_create(void)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

int portal_db_eventfd_drain(int fd, bool nonblock)
{
	uint64_t v;
	ssize_t n;

	/* Loop: an EFD_SEMAPHORE eventfd gives 1 per read. Only the waiter
	 * reads, so after poll() says readable a read cannot block. */
	for (;;) {
		if (!nonblock) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int k = poll(&p, 1, 0);

			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return -errno;
			if (k == 0 || !(p.revents & POLLIN))
				return 0;
		}
		n = read(fd, &v, sizeof(v));
		if (n == (ssize_t)sizeof(v))
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0) {
			int err = errno;

			portal_log(PORTAL_LOG_ERROR, "doorbell: eventfd read failed: errno %d", err);
			return -err;
		}
		return -EIO; /* short read: not an eventfd */
	}
}

static int efd_attach(struct portal_doorbell *d, const struct portal_doorbell_opts *o)
{
	int fd, fl;

	if (!o || o->eventfd < 0) {
		portal_log(PORTAL_LOG_WARN, "doorbell: eventfd backend needs opts->eventfd");
		return -EINVAL;
	}
	fd = fcntl(o->eventfd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		int err = errno;

		portal_log(PORTAL_LOG_WARN, "doorbell: cannot dup eventfd %d: errno %d",
			   o->eventfd, err);
		return err == EBADF ? -EINVAL : -err;
	}
	fl = fcntl(fd, F_GETFL);
	d->efd = fd;
	d->efd_nonblock = fl >= 0 && (fl & O_NONBLOCK);
	return 0;
}

static void efd_detach(struct portal_doorbell *d)
{
	(void)d; /* doorbell.c closes d->efd */
}

static int efd_ring(struct portal_doorbell *d)
{
	const uint64_t one = 1;
	ssize_t n;

	for (;;) {
		n = write(d->efd, &one, sizeof(one));
		if (n == (ssize_t)sizeof(one))
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0; /* counter saturated: readable already */
		if (n < 0) {
			int err = errno;

			portal_log(PORTAL_LOG_ERROR, "doorbell: eventfd write failed: errno %d", err);
			return -err;
		}
		return -EIO;
	}
}

static int efd_sleep(struct portal_doorbell *d, uint32_t seq, int64_t deadline_ns)
{
	struct pollfd pp[2] = { { .fd = d->efd, .events = POLLIN },
				{ .fd = d->peer_fd, .events = POLLIN } };
	struct pollfd *p = &pp[0];
	struct timespec rel, *tp = NULL;
	int k;

	(void)seq; /* the eventfd's count carries the ring, not wake_seq */
	if (deadline_ns != PORTAL_DB_NO_DEADLINE) {
		portal_db_remaining(deadline_ns, &rel);
		tp = &rel;
	}
	/* With a watched peer's pidfd, its exit wakes us too (a plain return:
	 * the wait loop looks at the peer next). */
	k = ppoll(pp, d->peer_fd >= 0 ? 2 : 1, tp, NULL);
	if (k < 0) {
		int err = errno;

		if (err == EINTR)
			return -EINTR;
		portal_log(PORTAL_LOG_ERROR, "doorbell: ppoll failed: errno %d", err);
		return -err;
	}
	if (k == 0)
		return -ETIMEDOUT;
	if (p->revents & POLLNVAL)
		return -EBADF;
	if (p->revents & POLLERR)
		return -EIO;
	return portal_db_eventfd_drain(d->efd, d->efd_nonblock);
}

static int efd_fd(struct portal_doorbell *d)
{
	return d->efd;
}

static int efd_drain(struct portal_doorbell *d)
{
	return portal_db_eventfd_drain(d->efd, d->efd_nonblock);
}

const struct portal_doorbell_ops portal_doorbell_eventfd_ops = {
	.name   = "eventfd",
	.attach = efd_attach,
	.detach = efd_detach,
	.ring   = efd_ring,
	.sleep  = efd_sleep,
	.fd     = efd_fd,
	.drain  = efd_drain,
};
