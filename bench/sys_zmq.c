/* SPDX-License-Identifier: MIT */
/*
 * ZeroMQ: a ZMQ_PAIR socket over the ipc transport (a Unix domain socket).
 *
 * Configuration, and why:
 *   - ZMQ_PAIR is ZeroMQ's socket for one exclusive peer: no routing, no
 *     envelopes, and it never drops (a full pipe makes the sender wait).
 *   - zmq_msg_t end to end: reserve initialises a message of the asked size
 *     (small ones live inside the zmq_msg_t itself, larger ones in one heap
 *     block) and hands out its data, which the caller fills in place;
 *     commit passes it to zmq_msg_send, which takes it. peek receives into a
 *     message kept per connection and returns its data; the next receive
 *     frees it. This avoids the extra copy zmq_send/zmq_recv make; the ipc
 *     transport itself still copies through the socket.
 *   - High-water marks of 8192 messages each way (ZeroMQ's default is 1000),
 *     so a stream keeps flowing while the other side is briefly descheduled;
 *     the writer is reactivated as the reader drains, so nothing stalls.
 *   - Busy mode passes ZMQ_DONTWAIT; blocking mode uses the plain calls with
 *     ZMQ_SNDTIMEO/ZMQ_RCVTIMEO of 10 s.
 *   - ZeroMQ moves messages on its I/O thread, which inherits the pinned CPU
 *     of the thread that busy-polls. A busy peek that finds nothing
 *     therefore calls sched_yield(), so the I/O thread runs at once rather
 *     than when the scheduler next preempts the poller (milliseconds later).
 *     It does not sleep; without it the busy tables would measure the
 *     scheduler.
 *   - commit always takes the message (the scenarios treat a failed commit
 *     as fatal): at the high-water mark, or before side 0 has a peer, it
 *     waits for room with the blocking send, at most 10 s.
 *   - One context with ZeroMQ's default single I/O thread per connection.
 *   - Side 0 binds, side 1 connects; connecting is asynchronous (retried
 *     every 10 ms). Side 1 may queue messages before the link is up; side 0
 *     cannot send until a peer is attached, so its open waits for that, at
 *     most 5 s, and connecting is not timed as the first round trip (the
 *     runner opens both sides at once). If the peer opens later than that,
 *     open returns anyway and the first commit waits.
 *   - ZMQ_LINGER of 10 s: a closing sender still delivers what it queued,
 *     but close cannot hang on a peer that has gone.
 */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define ZMQ_IPC_PREFIX "ipc://"

#ifdef BENCH_HAVE_ZMQ

#include <zmq.h>

#define ZMQ_HWM_MSGS    8192
#define ZMQ_TIMEOUT_MS  10000
#define ZMQ_RECONN_MS   10
#define ZMQ_LINK_WAIT_MS 5000

struct zmq_conn {
	void *ctx;
	void *sock;
	zmq_msg_t out;  /* valid while out_live */
	zmq_msg_t in;   /* always initialised; holds the last message received */
	bool out_live;  /* reserved, until commit sends it */
	bool in_held;   /* peeked, not yet released */
};

static int zmq_sys_setup(struct bsys_env *env, char *why, size_t whycap)
{
	static unsigned runs;
	int n;

	/* pid and a per-process count: unique per run, short enough for sun_path. */
	n = snprintf(env->arg, sizeof(env->arg), ZMQ_IPC_PREFIX "/tmp/portal-bench-zmq-%ld-%u.ipc",
		     (long)getpid(), ++runs);
	if (n < 0 || (size_t)n >= sizeof(env->arg)) {
		snprintf(why, whycap, "ipc path too long");
		return -ENAMETOOLONG;
	}
	unlink(env->arg + strlen(ZMQ_IPC_PREFIX));
	return 0;
}

static void zmq_sys_teardown(struct bsys_env *env)
{
	if (strncmp(env->arg, ZMQ_IPC_PREFIX, strlen(ZMQ_IPC_PREFIX)) == 0)
		unlink(env->arg + strlen(ZMQ_IPC_PREFIX));
}

static int zmq_setint(void *sock, int opt, int val)
{
	return zmq_setsockopt(sock, opt, &val, sizeof(val)) ? -errno : 0;
}

static void zmq_sys_close(void *conn)
{
	struct zmq_conn *c = conn;

	if (!c)
		return;
	if (c->out_live)
		zmq_msg_close(&c->out);
	zmq_msg_close(&c->in);
	if (c->sock)
		zmq_close(c->sock);
	/* Waits at most ZMQ_LINGER for queued messages to leave. */
	if (c->ctx)
		zmq_ctx_term(c->ctx);
	free(c);
}

static int zmq_sys_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	struct zmq_conn *c;
	int rc;

	if ((side != 0 && side != 1) || (flags & ~(BSYS_F_BLOCK | BSYS_F_MP | BSYS_F_MC)))
		return -EINVAL;
	if (flags & (BSYS_F_MP | BSYS_F_MC))
		return -ENOTSUP; /* ZMQ_PAIR: one peer each side */
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	zmq_msg_init(&c->in);
	c->ctx = zmq_ctx_new();
	if (!c->ctx) {
		rc = -errno;
		goto fail;
	}
	c->sock = zmq_socket(c->ctx, ZMQ_PAIR);
	if (!c->sock) {
		rc = -errno;
		goto fail;
	}
	if ((rc = zmq_setint(c->sock, ZMQ_SNDHWM, ZMQ_HWM_MSGS)) ||
	    (rc = zmq_setint(c->sock, ZMQ_RCVHWM, ZMQ_HWM_MSGS)) ||
	    (rc = zmq_setint(c->sock, ZMQ_SNDTIMEO, ZMQ_TIMEOUT_MS)) ||
	    (rc = zmq_setint(c->sock, ZMQ_RCVTIMEO, ZMQ_TIMEOUT_MS)) ||
	    (rc = zmq_setint(c->sock, ZMQ_LINGER, ZMQ_TIMEOUT_MS)) ||
	    (rc = zmq_setint(c->sock, ZMQ_RECONNECT_IVL, ZMQ_RECONN_MS)))
		goto fail;
	if ((side == 0 ? zmq_bind(c->sock, env->arg) : zmq_connect(c->sock, env->arg))) {
		rc = -errno;
		goto fail;
	}
	if (side == 0) {
		/* Writable once the peer's pipe is attached; a timeout is not an error. */
		zmq_pollitem_t it = { .socket = c->sock, .events = ZMQ_POLLOUT };

		zmq_poll(&it, 1, ZMQ_LINK_WAIT_MS);
	}
	*conn = c;
	return 0;
fail:
	zmq_sys_close(c);
	return rc;
}

static int zmq_sys_reserve(void *conn, uint32_t len, void **buf)
{
	struct zmq_conn *c = conn;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (c->out_live) {
		zmq_msg_close(&c->out);
		c->out_live = false;
	}
	if (zmq_msg_init_size(&c->out, len))
		return -errno;
	c->out_live = true;
	*buf = zmq_msg_data(&c->out);
	return 0;
}

static int zmq_sys_commit(void *conn, uint32_t len, unsigned flags)
{
	struct zmq_conn *c = conn;
	int rc;
	size_t have;

	if (!c->out_live)
		return -EINVAL;
	have = zmq_msg_size(&c->out);
	if (len > have)
		return -EINVAL;
	if (len < have) {
		/* A message cannot shrink: copy the front into one of the right size. */
		zmq_msg_t t;

		if (zmq_msg_init_size(&t, len))
			return -errno;
		memcpy(zmq_msg_data(&t), zmq_msg_data(&c->out), len);
		zmq_msg_move(&c->out, &t);
		zmq_msg_close(&t);
	}
	rc = (flags & BSYS_F_BLOCK) ? -1 : zmq_msg_send(&c->out, c->sock, ZMQ_DONTWAIT);
	/* Blocking mode, or at the high-water mark: wait for room (ZMQ_SNDTIMEO). */
	if (rc < 0 && ((flags & BSYS_F_BLOCK) || errno == EAGAIN)) {
		do
			rc = zmq_msg_send(&c->out, c->sock, 0);
		while (rc < 0 && errno == EINTR);
	}
	if (rc < 0) /* not sent: still ours, close frees it */
		return errno == EAGAIN ? -ETIMEDOUT : -errno;
	/* zmq_msg_send left an empty message behind: nothing to close. */
	c->out_live = false;
	return 0;
}

static int zmq_sys_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct zmq_conn *c = conn;

	/* zmq_msg_recv frees the previous message held in c->in. */
	if (!c->in_held &&
	    zmq_msg_recv(&c->in, c->sock, (flags & BSYS_F_BLOCK) ? 0 : ZMQ_DONTWAIT) < 0) {
		if (errno == EAGAIN && (flags & BSYS_F_BLOCK))
			return -ETIMEDOUT;
		if (errno == EAGAIN) {
			/* Empty: let ZeroMQ's I/O thread on this CPU deliver (see the top). */
			sched_yield();
			return -EAGAIN;
		}
		return errno == EINTR ? -EAGAIN : -errno;
	}
	c->in_held = true;
	*buf = zmq_msg_data(&c->in);
	*len = (uint32_t)zmq_msg_size(&c->in);
	return 0;
}

static void zmq_sys_release(void *conn)
{
	struct zmq_conn *c = conn;

	c->in_held = false;
}

const struct bsys bsys_zmq = {
	.name = "zmq",
	.what = "ZeroMQ 4.3 ZMQ_PAIR over ipc (Unix socket), zmq_msg_t API",
	.caps = BSYS_RTT | BSYS_BLOCK | BSYS_STREAM,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = zmq_sys_setup,
	.open = zmq_sys_open,
	.reserve = zmq_sys_reserve,
	.commit = zmq_sys_commit,
	.peek = zmq_sys_peek,
	.release = zmq_sys_release,
	.close = zmq_sys_close,
	.teardown = zmq_sys_teardown,
};

#else /* !BENCH_HAVE_ZMQ */

BSYS_NOT_BUILT(bsys_zmq, "zmq", "ZeroMQ ZMQ_PAIR over ipc (not built)",
	       BSYS_RTT | BSYS_BLOCK | BSYS_STREAM, "libzmq3-dev");

#endif
