/* SPDX-License-Identifier: MIT */
/*
 * nng: the pair protocol over the ipc transport (a Unix domain socket).
 *
 * Configuration, and why:
 *   - pair0, not pair1. In nng 1.5.2 both run the same buffered send and
 *     receive path; pair1 adds a 4-byte hop-count header to every message
 *     (and checks it on receipt) to stop forwarding loops, which a single
 *     direct link cannot have. pair0 is the lighter of the two for this use.
 *   - Zero-copy as far as nng goes: reserve allocates the nng_msg the caller
 *     fills in place, commit hands it to nng_sendmsg (which takes it), peek
 *     returns the body of the message nng_recvmsg produced and release frees
 *     it. The ipc transport itself still copies through the socket.
 *   - Send and receive buffers at their maximum (8192 messages each), so a
 *     stream keeps flowing while the other side is briefly descheduled; they
 *     do not matter for round trips.
 *   - Busy mode passes NNG_FLAG_NONBLOCK to nng_sendmsg/nng_recvmsg; blocking
 *     mode uses the plain calls with 10 s send and receive timeouts.
 *   - nng moves messages on its own threads (a poller reads the socket, a
 *     task queue completes the receive), and they inherit the pinned CPU of
 *     the thread that busy-polls. A busy peek that finds nothing therefore
 *     calls sched_yield(), so they run at once rather than when the
 *     scheduler next preempts the poller (milliseconds later). It does not
 *     sleep; without it the busy tables would measure the scheduler.
 *   - commit always takes the message (the scenarios treat a failed commit
 *     as fatal): when the send buffer is full it waits for room with the
 *     blocking send, at most 10 s, as a writer on a full socket does.
 *   - Side 0 listens, side 1 dials in the background (NNG_FLAG_NONBLOCK) and
 *     retries every 10-100 ms. open then waits, at most 5 s, for the link,
 *     so that connecting is not timed as the first round trip; the runner
 *     opens both sides at once. If the other side opens later than that,
 *     open returns anyway: a message sent before the link is up waits in
 *     the sender's buffer.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define NNG_IPC_PREFIX "ipc://"

#ifdef BENCH_HAVE_NNG

#include <nng/nng.h>
#include <nng/protocol/pair0/pair.h>

#define NNG_QUEUE_MSGS  8192  /* nng's largest send/receive buffer */
#define NNG_TIMEOUT_MS  10000
#define NNG_RECONN_MIN  10
#define NNG_RECONN_MAX  100
#define NNG_LINK_WAIT_MS 5000

struct nng_conn {
	nng_socket sock;
	nng_msg *out;   /* reserved, until commit sends it */
	nng_msg *in;    /* peeked, until release */
	atomic_bool linked; /* a pipe to the other side has been added */
};

static int nng_to_errno(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NNG_EAGAIN:
		return -EAGAIN;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_EINVAL:
		return -EINVAL;
	case NNG_EMSGSIZE:
		return -EMSGSIZE;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_ECONNREFUSED:
		return -ECONNREFUSED;
	case NNG_EPROTO:
		return -EPROTO;
	case NNG_ENOTSUP:
		return -ENOTSUP;
	case NNG_ECLOSED:
	case NNG_ECONNSHUT:
	case NNG_ECONNRESET:
	case NNG_ECONNABORTED:
		return -EPIPE;
	}
	if (rv & NNG_ESYSERR)
		return -(rv & ~NNG_ESYSERR);
	return -EIO;
}

static int nng_sys_setup(struct bsys_env *env, char *why, size_t whycap)
{
	static unsigned runs;
	int n;

	/* pid and a per-process count: unique per run, short enough for sun_path. */
	n = snprintf(env->arg, sizeof(env->arg), NNG_IPC_PREFIX "/tmp/portal-bench-nng-%ld-%u.ipc",
		     (long)getpid(), ++runs);
	if (n < 0 || (size_t)n >= sizeof(env->arg)) {
		snprintf(why, whycap, "ipc path too long");
		return -ENAMETOOLONG;
	}
	unlink(env->arg + strlen(NNG_IPC_PREFIX));
	return 0;
}

static void nng_sys_teardown(struct bsys_env *env)
{
	if (strncmp(env->arg, NNG_IPC_PREFIX, strlen(NNG_IPC_PREFIX)) == 0)
		unlink(env->arg + strlen(NNG_IPC_PREFIX));
}

/* On nng's thread, once the pipe to the other side is added. */
static void nng_link_up(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct nng_conn *c = arg;

	(void)p;
	(void)ev;
	/* Relaxed: only ends open's wait; no data is published through it. */
	atomic_store_explicit(&c->linked, true, memory_order_relaxed);
}

static int nng_sys_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	struct timespec ms = { 0, 1000000 };
	struct nng_conn *c;
	int rv, waited;

	if ((side != 0 && side != 1) || (flags & ~(BSYS_F_BLOCK | BSYS_F_MP | BSYS_F_MC)))
		return -EINVAL;
	if (flags & (BSYS_F_MP | BSYS_F_MC))
		return -ENOTSUP; /* pair: one peer each side */
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	rv = nng_pair0_open(&c->sock);
	if (rv) {
		free(c);
		return nng_to_errno(rv);
	}
	if ((rv = nng_socket_set_int(c->sock, NNG_OPT_SENDBUF, NNG_QUEUE_MSGS)) ||
	    (rv = nng_socket_set_int(c->sock, NNG_OPT_RECVBUF, NNG_QUEUE_MSGS)) ||
	    (rv = nng_socket_set_ms(c->sock, NNG_OPT_SENDTIMEO, NNG_TIMEOUT_MS)) ||
	    (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECVTIMEO, NNG_TIMEOUT_MS)) ||
	    (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, NNG_RECONN_MIN)) ||
	    (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, NNG_RECONN_MAX)) ||
	    (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, nng_link_up, c)))
		goto fail;
	if (side == 0)
		rv = nng_listen(c->sock, env->arg, NULL, 0);
	else
		rv = nng_dial(c->sock, env->arg, NULL, NNG_FLAG_NONBLOCK);
	if (rv)
		goto fail;
	/* Relaxed: see nng_link_up. */
	for (waited = 0; waited < NNG_LINK_WAIT_MS &&
			 !atomic_load_explicit(&c->linked, memory_order_relaxed); waited++)
		nanosleep(&ms, NULL);
	*conn = c;
	return 0;
fail:
	nng_close(c->sock);
	free(c);
	return nng_to_errno(rv);
}

static int nng_sys_reserve(void *conn, uint32_t len, void **buf)
{
	struct nng_conn *c = conn;
	int rv;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	/* A reservation the caller abandoned is reused rather than freed. */
	if (c->out)
		rv = nng_msg_realloc(c->out, len);
	else
		rv = nng_msg_alloc(&c->out, len);
	if (rv)
		return nng_to_errno(rv);
	*buf = nng_msg_body(c->out);
	return 0;
}

static int nng_sys_commit(void *conn, uint32_t len, unsigned flags)
{
	struct nng_conn *c = conn;
	int rv;

	if (!c->out || len > nng_msg_len(c->out))
		return -EINVAL;
	/* Shrinking keeps the body where it is. */
	if (len < nng_msg_len(c->out) && (rv = nng_msg_realloc(c->out, len)))
		return nng_to_errno(rv);
	rv = NNG_EAGAIN;
	if (!(flags & BSYS_F_BLOCK))
		rv = nng_sendmsg(c->sock, c->out, NNG_FLAG_NONBLOCK);
	/* Blocking mode, or a full buffer: wait for room (NNG_OPT_SENDTIMEO). */
	if (rv == NNG_EAGAIN)
		rv = nng_sendmsg(c->sock, c->out, 0);
	if (rv)
		return nng_to_errno(rv); /* not sent: still ours, close frees it */
	c->out = NULL;
	return 0;
}

static int nng_sys_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct nng_conn *c = conn;
	int rv;

	if (!c->in) {
		rv = nng_recvmsg(c->sock, &c->in, (flags & BSYS_F_BLOCK) ? 0 : NNG_FLAG_NONBLOCK);
		if (rv) {
			/* Empty: let nng's I/O threads on this CPU deliver (see the top). */
			if (rv == NNG_EAGAIN)
				sched_yield();
			c->in = NULL;
			return nng_to_errno(rv);
		}
	}
	*buf = nng_msg_body(c->in);
	*len = (uint32_t)nng_msg_len(c->in);
	return 0;
}

static void nng_sys_release(void *conn)
{
	struct nng_conn *c = conn;

	if (c->in) {
		nng_msg_free(c->in);
		c->in = NULL;
	}
}

static void nng_sys_close(void *conn)
{
	struct nng_conn *c = conn;

	if (!c)
		return;
	/*
	 * nng has no linger: messages still in this socket's send buffer are
	 * dropped. The scenarios close a sender only after its receiver has
	 * reported, so nothing they count is in flight here.
	 */
	nng_close(c->sock);
	if (c->out)
		nng_msg_free(c->out);
	if (c->in)
		nng_msg_free(c->in);
	free(c);
}

const struct bsys bsys_nng = {
	.name = "nng",
	.what = "nng 1.5 pair0 over ipc (Unix socket), nng_msg zero-copy API",
	.caps = BSYS_RTT | BSYS_BLOCK | BSYS_STREAM,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = nng_sys_setup,
	.open = nng_sys_open,
	.reserve = nng_sys_reserve,
	.commit = nng_sys_commit,
	.peek = nng_sys_peek,
	.release = nng_sys_release,
	.close = nng_sys_close,
	.teardown = nng_sys_teardown,
};

#else /* !BENCH_HAVE_NNG */

BSYS_NOT_BUILT(bsys_nng, "nng", "nng pair0 over ipc (not built)",
	       BSYS_RTT | BSYS_BLOCK | BSYS_STREAM, "libnng-dev");

#endif
