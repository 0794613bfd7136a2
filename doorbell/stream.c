/* SPDX-License-Identifier: MIT */
/*
 * stream.c - doorbell backend: one byte per wake-up over a stream (a Unix or
 * TCP socket, a virtio-serial port such as /dev/vport0p1 in a guest and its
 * chardev socket on the host, a pipe or FIFO). It works wherever the two
 * sides share memory for the doorbell words and have any byte stream
 * between them.
 *
 * Coalescing. A notifier does not write while a byte it (or another
 * notifier) wrote is still unread: the stream never holds more than about
 * one byte per wake-up, and a burst of notifies against a sleeping waiter
 * costs one write. Two counters in the doorbell's shared memory decide it
 * (doorbell_internal.h has where they sit):
 *
 *   stream_sent     notifiers: bytes written, or about to be (atomic add
 *                   *before* the write, undone if the write fails)
 *   stream_drained  waiter: bytes read
 *
 *   notifier (in notify, after D2)          waiter (sleep / ack / attach)
 *   S0  sent, drained (relaxed, after D2)   read every byte there is
 *       sent - drained > 0: a byte is       S2  drained += n (relaxed);
 *         coming or unread: no write             fence(seq_cst)
 *   S1  sent += 1; write one byte;              then ready() (doorbell.c)
 *       failed: sent -= 1
 *
 * Why skipping loses no wake-up: bytes read <= bytes written <= sent. If a
 * notifier N skips, sent - drained > 0 as N saw them, so some byte counted
 * in sent was not yet counted in the drained value N read; it is written (or
 * being written) and the waiter will read it, then store a newer drained
 * (S2), fence and call ready(). N published its work, fenced (D2), then
 * loaded drained and did not see that newer store; the waiter stored it,
 * fenced, then loads the work. Store, fence, load on both sides (Dekker, as
 * in doorbell.c): the waiter's ready() sees N's work. And the byte makes
 * the waiter's poll() return, wherever it is: sleeping, or about to sleep.
 *
 * A waiter that attaches (again) first reads whatever is in the stream,
 * then sets drained = sent, in that order: a byte counted in sent but not
 * yet written is then still to come, and no byte already read is counted as
 * pending (which would make notifiers skip for ever).
 *
 * The stream must deliver every byte: a lost byte leaves sent - drained > 0
 * and every later notify skips until the waiter re-attaches. Sockets do; a
 * guest's virtio-serial port drops what is written before the host side has
 * opened it (portal_doorbell_stream_wait_connected waits for that).
 * The other end closing gives PORTAL_EPEERDEAD (-EPIPE) from wait() and
 * notify().
 *
 * Trust: a waiter that scribbles stream_drained only loses its own
 * wake-ups (notifiers skip) or gets more bytes; a notifier that scribbles
 * stream_sent makes itself and other notifiers skip or write needlessly,
 * the same damage as scribbling `armed`. Nothing read from the counters is
 * used as a size or an index.
 *
 * One connected stream can carry two doorbells, one per direction: each
 * side writes its rings to its end and reads the other side's from it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "doorbell/doorbell_internal.h"

#define STREAM_BYTE 'P'
#define CONNECT_POLL_NS (INT64_C(10000000))

/*
 * Read every byte available on the waiter's end without blocking and
 * publish the new count (S2). Returns 0, PORTAL_EPEERDEAD (end of stream),
 * or a negative errno.
 */
static int stream_drain(struct portal_doorbell *d)
{
	char buf[64];
	uint32_t total = 0;
	ssize_t n;
	int rc = 0;

	for (;;) {
		if (d->stream.is_socket) {
			n = recv(d->efd, buf, sizeof(buf), MSG_DONTWAIT);
		} else if (d->efd_nonblock) {
			n = read(d->efd, buf, sizeof(buf));
		} else {
			/* A blocking pipe or character device: read only what
			 * poll() says is there. Only the waiter reads. */
			struct pollfd p = { .fd = d->efd, .events = POLLIN };
			int k = poll(&p, 1, 0);

			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				rc = -errno;
				break;
			}
			if (k == 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
				break;
			n = read(d->efd, buf, sizeof(buf));
		}
		if (n > 0) {
			total += (uint32_t)n;
			if ((size_t)n < sizeof(buf) && d->stream.is_socket)
				break; /* took all there was */
			continue;
		}
		if (n == 0) {
			rc = PORTAL_EPEERDEAD;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		rc = -errno;
		break;
	}
	if (total) {
		d->stream.drained += total;
		/* S2: the new count, then the fence, then ready() in
		 * doorbell.c (or the caller's check after ack); pairs with
		 * D2 + S0 in notify. Relaxed store: only the waiter writes
		 * stream_drained, and the fence orders it. */
		atomic_store_explicit(portal_db_stream_drained(d->shm), d->stream.drained,
				      memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
	}
	if (rc == PORTAL_EPEERDEAD)
		portal_log(PORTAL_LOG_WARN, "doorbell: stream closed by the other end");
	else if (rc < 0)
		portal_log(PORTAL_LOG_ERROR, "doorbell: stream read failed: %d", rc);
	return rc;
}

static int stream_attach(struct portal_doorbell *d, const struct portal_doorbell_opts *o)
{
	struct stat st;
	int fd, fl, rc;

	if (!o || o->stream_fd < 0) {
		portal_log(PORTAL_LOG_WARN, "doorbell: stream backend needs opts->stream_fd");
		return -EINVAL;
	}
	fd = fcntl(o->stream_fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		int err = errno;

		portal_log(PORTAL_LOG_WARN, "doorbell: cannot dup stream fd %d: errno %d",
			   o->stream_fd, err);
		return err == EBADF ? -EINVAL : -err;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (!S_ISSOCK(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
		portal_log(PORTAL_LOG_WARN, "doorbell: stream fd %d is not a socket, pipe or "
			   "character device", o->stream_fd);
		close(fd);
		return -EINVAL;
	}
	fl = fcntl(fd, F_GETFL);
	d->efd = fd;
	d->efd_nonblock = fl >= 0 && (fl & O_NONBLOCK);
	d->stream.is_socket = S_ISSOCK(st.st_mode);

	if (d->role == PORTAL_DOORBELL_WAITER) {
		/* Re-synchronise (see the top of this file): read what is
		 * there, then take sent as drained. An end of stream here
		 * shows up again at the first wait. */
		rc = stream_drain(d);
		if (rc < 0 && rc != PORTAL_EPEERDEAD) {
			close(fd);
			d->efd = -1;
			return rc;
		}
		/* Relaxed: a notifier-written counter read once; the order
		 * against the drain above is program order on this thread,
		 * and the fence in stream_drain (or attach's return to the
		 * caller) is what the notifiers pair with. */
		d->stream.drained = atomic_load_explicit(portal_db_stream_sent(d->shm),
							 memory_order_relaxed);
		atomic_store_explicit(portal_db_stream_drained(d->shm), d->stream.drained,
				      memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
	}
	return 0;
}

static void stream_detach(struct portal_doorbell *d)
{
	(void)d; /* doorbell.c closes d->efd */
}

/* Write one byte without blocking. Returns 1 written, 0 would block (the
 * stream is full: bytes are pending), or a negative errno. */
static int write_byte(struct portal_doorbell *d)
{
	const char b = STREAM_BYTE;
	ssize_t n;
	int err;

	if (d->stream.is_socket) {
		do
			n = send(d->efd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
	} else {
		sigset_t pipe_set, old;
		struct pollfd p = { .fd = d->efd, .events = POLLOUT };

		if (!d->efd_nonblock) {
			int k;

			do
				k = poll(&p, 1, 0);
			while (k < 0 && errno == EINTR);
			if (k < 0)
				return -errno;
			if (p.revents & (POLLHUP | POLLERR))
				return -EPIPE;
			if (!(p.revents & POLLOUT))
				return 0;
		}
		/* A pipe whose reader is gone raises SIGPIPE: block it for
		 * the write and take a SIGPIPE this write caused, so that the
		 * library never kills the process. */
		sigemptyset(&pipe_set);
		sigaddset(&pipe_set, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
		do
			n = write(d->efd, &b, 1);
		while (n < 0 && errno == EINTR);
		err = errno;
		if (n < 0 && err == EPIPE && !sigismember(&old, SIGPIPE)) {
			const struct timespec zero = { 0, 0 };

			(void)sigtimedwait(&pipe_set, NULL, &zero);
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		errno = err;
	}
	if (n == 1)
		return 1;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	return n < 0 ? -errno : -EIO;
}

static int stream_ring(struct portal_doorbell *d)
{
	_Atomic uint32_t *sent = portal_db_stream_sent(d->shm);
	uint32_t s, dr;
	int rc;

	/* S0: after notify's D2 fence, which orders the caller's publish of
	 * the work before these loads; pairs with S2 in stream_drain.
	 * Relaxed: the fence does the ordering. */
	s = atomic_load_explicit(sent, memory_order_relaxed);
	dr = atomic_load_explicit(portal_db_stream_drained(d->shm), memory_order_relaxed);
	if ((int32_t)(s - dr) > 0)
		return 0; /* a byte is unread or on its way: coalesced */

	/* S1: count the byte before writing it (bytes written <= sent);
	 * relaxed, the counter orders nothing else. */
	atomic_fetch_add_explicit(sent, 1, memory_order_relaxed);
	rc = write_byte(d);
	if (rc == 1)
		return 0;
	atomic_fetch_sub_explicit(sent, 1, memory_order_relaxed);
	if (rc == 0)
		return 0; /* stream full: bytes are pending, the waiter will wake */
	if (rc == -EPIPE || rc == -ECONNRESET) {
		portal_log(PORTAL_LOG_WARN, "doorbell: stream closed by the other end");
		return PORTAL_EPEERDEAD;
	}
	portal_log(PORTAL_LOG_ERROR, "doorbell: stream write failed: %d", rc);
	return rc;
}

static int stream_sleep(struct portal_doorbell *d, uint32_t seq, int64_t deadline_ns)
{
	struct pollfd p = { .fd = d->efd, .events = POLLIN };
	struct timespec rel, *tp = NULL;
	int k;

	(void)seq; /* the byte carries the ring, not wake_seq */
	if (deadline_ns != PORTAL_DB_NO_DEADLINE) {
		portal_db_remaining(deadline_ns, &rel);
		tp = &rel;
	}
	k = ppoll(&p, 1, tp, NULL);
	if (k < 0) {
		int err = errno;

		if (err == EINTR)
			return -EINTR;
		portal_log(PORTAL_LOG_ERROR, "doorbell: ppoll failed: errno %d", err);
		return -err;
	}
	if (k == 0)
		return -ETIMEDOUT;
	if (p.revents & POLLNVAL)
		return -EBADF;
	return stream_drain(d);
}

static int stream_fd(struct portal_doorbell *d)
{
	return d->efd;
}

const struct portal_doorbell_ops portal_doorbell_stream_ops = {
	.name   = "stream",
	.attach = stream_attach,
	.detach = stream_detach,
	.ring   = stream_ring,
	.sleep  = stream_sleep,
	.fd     = stream_fd,
	.drain  = stream_drain,
};

int portal_doorbell_stream_wait_connected(int fd, int64_t timeout_ns)
{
	int64_t deadline = PORTAL_DB_NO_DEADLINE;
	struct pollfd p;
	int k;

	if (fd < 0)
		return -EINVAL;
	if (timeout_ns >= 0)
		deadline = portal_db_now_ns() + timeout_ns;
	for (;;) {
		p.fd = fd;
		p.events = 0; /* POLLHUP is reported whatever we ask */
		p.revents = 0;
		k = poll(&p, 1, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (p.revents & POLLNVAL)
			return -EINVAL;
		if (!(p.revents & POLLHUP))
			return 0;
		if (deadline != PORTAL_DB_NO_DEADLINE && portal_db_now_ns() >= deadline)
			return -ETIMEDOUT;
		{
			struct timespec ts = { 0, CONNECT_POLL_NS };

			nanosleep(&ts, NULL);
		}
	}
}
