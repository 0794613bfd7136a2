/* SPDX-License-Identifier: MIT */
/*
 * server.c - the ivshmem server's event loop (QEMU's ivshmem server
 * protocol; ivshmem-server/README.md has it message by message).
 *
 * Peers are untrusted processes (QEMU, host programs, or anything that can
 * connect to the socket). The rules that keep one of them from harming the
 * others:
 *
 *   - No blocking call on a client socket. Every message to a peer goes
 *     through its own queue and a non-blocking sendmsg; what the socket does
 *     not take now is sent when poll() says POLLOUT. A peer that lets more
 *     than `qlimit` messages pile up is not reading: it is dropped.
 *   - Clients never send anything in this protocol. A byte from a client is
 *     a protocol violation and the client is dropped at once, so a flood
 *     costs one read of at most 256 bytes.
 *   - A peer that fails (EOF, reset, error, violation, stuck) is only
 *     marked dead where it is noticed; reap() then removes dead peers, and
 *     announces each one that had been announced to everyone left. Announcing
 *     can make another peer's queue overflow, which only marks that one dead
 *     for the same loop: nothing is freed while it may still be in use.
 *   - A peer is announced to the others only once its whole set-up is
 *     queued; one that dies during set-up was never announced and is not.
 *   - Eventfds are shared by reference count between the peer that owns
 *     them and queued messages that carry them, so a message queued for a
 *     slow reader still carries a valid fd after its owner left.
 *   - The number of peers is capped (--max-peers); a connection over the cap
 *     is accepted and closed at once (the client sees end of stream before
 *     the version message) and logged.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "portal/doorbell.h"
#include "ivshmem-server/server.h"

#define MAX_ID 65536u
#define RECV_PROBE 256
#define ACCEPT_BATCH 16

/* ------------------------------------------------------------------ */
/* Logging                                                             */
/* ------------------------------------------------------------------ */

static int log_verbosity = IVS_LOG_INFO;

void ivs_set_verbosity(int level)
{
	log_verbosity = level;
}

void ivs_log(int level, const char *fmt, ...)
{
	char msg[512], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if (level > log_verbosity)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	/* One fprintf per line, so lines from a daemon and its parent do not
	 * interleave mid-line. */
	fprintf(stderr, "%s.%03ld portal-ivshmem-server[%d]: %s%s\n", stamp, ts.tv_nsec / 1000000,
		(int)getpid(), level == IVS_LOG_ERROR ? "error: " : "", msg);
}

/* ------------------------------------------------------------------ */
/* Data                                                                */
/* ------------------------------------------------------------------ */

/* A block of fds shared by reference: a peer's eventfds, or the shm fd. */
struct fdblock {
	unsigned refs;
	unsigned n;
	int fd[];
};

struct outmsg {
	int64_t value;
	struct fdblock *blk;  /* NULL: no fd */
	unsigned idx;
};

struct peer {
	int sock;
	uint32_t id;
	pid_t pid;
	uid_t uid;
	struct fdblock *efds;   /* `vectors` eventfds: peers ring us with them */
	struct outmsg *q;
	size_t qhead, qlen, qcap;
	size_t head_sent;       /* bytes of q[qhead] already sent */
	bool announced;         /* the others were told we joined */
	bool dead;
	char reason[128];
	struct timespec since;
};

struct ivs_server {
	const struct ivs_config *cfg;
	int listen_fd, sig_fd;
	struct fdblock *shm;
	struct peer **peers;    /* in joining order */
	size_t npeers;
	uint32_t next_id;
	uint8_t used[MAX_ID / 8];
	size_t qlimit;
	int reserve_fd;         /* spare fd to refuse a client when out of fds */
	uint64_t n_joined, n_left, n_refused;
};

static struct fdblock *blk_get(struct fdblock *b)
{
	b->refs++;
	return b;
}

static void blk_put(struct fdblock *b)
{
	unsigned i;

	if (!b || --b->refs)
		return;
	for (i = 0; i < b->n; i++)
		if (b->fd[i] >= 0)
			close(b->fd[i]);
	free(b);
}

static struct fdblock *blk_new(unsigned n)
{
	struct fdblock *b = calloc(1, sizeof(*b) + n * sizeof(int));
	unsigned i;

	if (!b)
		return NULL;
	b->refs = 1;
	b->n = n;
	for (i = 0; i < n; i++)
		b->fd[i] = -1;
	return b;
}

/* ------------------------------------------------------------------ */
/* Ids                                                                 */
/* ------------------------------------------------------------------ */

static bool id_used(const struct ivs_server *s, uint32_t id)
{
	return s->used[id / 8] & (1u << (id % 8));
}

/* The next free id at or after next_id, wrapping: ids are not reused
 * until 65536 others have been handed out (or all others are in use), so a
 * late message about a departed peer cannot reach its successor. The first
 * client gets 0, as the protocol says. */
static uint32_t id_alloc(struct ivs_server *s)
{
	uint32_t i, id;

	for (i = 0; i < MAX_ID; i++) {
		id = (s->next_id + i) % MAX_ID;
		if (!id_used(s, id)) {
			s->used[id / 8] |= (uint8_t)(1u << (id % 8));
			s->next_id = (id + 1) % MAX_ID;
			return id;
		}
	}
	return UINT32_MAX; /* cannot happen: max_peers <= 65536 */
}

static void id_free(struct ivs_server *s, uint32_t id)
{
	s->used[id / 8] &= (uint8_t)~(1u << (id % 8));
}

/* ------------------------------------------------------------------ */
/* Peers: queue, send, drop                                            */
/* ------------------------------------------------------------------ */

static void __attribute__((format(printf, 2, 3))) mark_dead(struct peer *p, const char *fmt, ...)
{
	va_list ap;

	if (p->dead)
		return;
	p->dead = true;
	va_start(ap, fmt);
	vsnprintf(p->reason, sizeof(p->reason), fmt, ap);
	va_end(ap);
}

static void enqueue(struct ivs_server *s, struct peer *p, int64_t value, struct fdblock *blk,
		    unsigned idx)
{
	if (p->dead)
		return;
	if (p->qlen - p->qhead >= s->qlimit) {
		mark_dead(p, "not reading (%zu messages queued)", p->qlen - p->qhead);
		return;
	}
	if (p->qlen == p->qcap) {
		size_t live = p->qlen - p->qhead;

		if (p->qhead && live < p->qcap / 2) {
			/* compact instead of growing */
			memmove(p->q, p->q + p->qhead, live * sizeof(*p->q));
			p->qhead = 0;
			p->qlen = live;
		} else {
			size_t ncap = p->qcap ? p->qcap * 2 : 64;
			struct outmsg *nq = realloc(p->q, ncap * sizeof(*nq));

			if (!nq) {
				mark_dead(p, "out of memory for its queue");
				return;
			}
			p->q = nq;
			p->qcap = ncap;
		}
	}
	p->q[p->qlen].value = value;
	p->q[p->qlen].blk = blk ? blk_get(blk) : NULL;
	p->q[p->qlen].idx = idx;
	p->qlen++;
}

static void describe(char *buf, size_t len, int64_t v, const struct outmsg *m)
{
	if (!m->blk)
		snprintf(buf, len, "%lld", (long long)v);
	else
		snprintf(buf, len, "%lld + fd", (long long)v);
}

/* Send what the socket takes now. Marks the peer dead on a send error. */
static void flush(struct peer *p)
{
	while (!p->dead && p->qhead < p->qlen) {
		struct outmsg *m = &p->q[p->qhead];
		union {
			struct cmsghdr hdr;
			char buf[CMSG_SPACE(sizeof(int))];
		} u;
		uint64_t le = htole64((uint64_t)m->value);
		struct msghdr msg;
		struct iovec iov;
		ssize_t n;

		memset(&msg, 0, sizeof(msg));
		iov.iov_base = (char *)&le + p->head_sent;
		iov.iov_len = sizeof(le) - p->head_sent;
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		if (m->blk && p->head_sent == 0) {
			struct cmsghdr *c;
			int fd = m->blk->fd[m->idx];

			memset(&u, 0, sizeof(u));
			msg.msg_control = u.buf;
			msg.msg_controllen = sizeof(u.buf);
			c = CMSG_FIRSTHDR(&msg);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd, sizeof(fd));
		}
		n = sendmsg(p->sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return; /* the rest when POLLOUT comes */
		if (n < 0) {
			mark_dead(p, "send failed: %s", strerror(errno));
			return;
		}
		if (p->head_sent == 0 && log_verbosity >= IVS_LOG_DEBUG) {
			char what[48];

			describe(what, sizeof(what), m->value, m);
			ivs_log(IVS_LOG_DEBUG, "-> peer %u: %s", (unsigned)p->id, what);
		}
		p->head_sent += (size_t)n;
		if (p->head_sent == sizeof(le)) {
			/* The kernel holds its own reference to a sent fd. */
			blk_put(m->blk);
			m->blk = NULL;
			p->head_sent = 0;
			p->qhead++;
		}
	}
	if (p->qhead == p->qlen)
		p->qhead = p->qlen = 0;
}

static void peer_free(struct ivs_server *s, struct peer *p)
{
	size_t i;

	for (i = p->qhead; i < p->qlen; i++)
		blk_put(p->q[i].blk);
	free(p->q);
	blk_put(p->efds);
	if (p->sock >= 0)
		close(p->sock);
	id_free(s, p->id);
	free(p);
}

static double seconds_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Remove dead peers; announce those the others knew about. Announcing can
 * kill more peers (queue overflow, send error): loop until none is dead. */
static void reap(struct ivs_server *s)
{
	bool again = true;

	while (again) {
		size_t i, j, k;

		again = false;
		for (i = 0; i < s->npeers; i++) {
			struct peer *p = s->peers[i];

			if (!p->dead)
				continue;
			memmove(&s->peers[i], &s->peers[i + 1],
				(s->npeers - i - 1) * sizeof(*s->peers));
			s->npeers--;
			s->n_left++;
			ivs_log(IVS_LOG_INFO, "peer %u left: %s (pid %d, %.1f s connected); %zu peer%s",
				(unsigned)p->id, p->reason, (int)p->pid, seconds_since(&p->since),
				s->npeers, s->npeers == 1 ? "" : "s");
			if (p->announced) {
				for (j = 0; j < s->npeers; j++) {
					struct peer *o = s->peers[j];

					enqueue(s, o, p->id, NULL, 0);
					flush(o);
				}
			}
			peer_free(s, p);
			/* Announcing may have killed others: rescan. */
			for (k = 0; k < s->npeers; k++)
				if (s->peers[k]->dead)
					again = true;
			break;
		}
	}
}

/* ------------------------------------------------------------------ */
/* Join                                                                */
/* ------------------------------------------------------------------ */

static size_t live_peers(const struct ivs_server *s)
{
	size_t i, n = 0;

	for (i = 0; i < s->npeers; i++)
		n += !s->peers[i]->dead;
	return n;
}

/* Accept one connection and close it: the way out when we are out of
 * fds (the listening socket would otherwise stay readable for ever). */
static void refuse_with_reserve(struct ivs_server *s)
{
	int c;

	if (s->reserve_fd >= 0) {
		close(s->reserve_fd);
		s->reserve_fd = -1;
	}
	c = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (c >= 0)
		close(c);
	s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void join(struct ivs_server *s, int sock)
{
	const unsigned nv = s->cfg->vectors;
	struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
	socklen_t clen = sizeof(cred);
	struct peer *p, **np;
	size_t i;
	unsigned v;

	/* Dead peers leave (and are announced) before the newcomer exists,
	 * so that it hears of no departure of a peer it never heard of. */
	reap(s);
	(void)getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen);
	if (live_peers(s) >= s->cfg->max_peers) {
		s->n_refused++;
		ivs_log(IVS_LOG_INFO, "refused a connection from pid %d: full (%zu peers, "
			"--max-peers %u)", (int)cred.pid, live_peers(s), s->cfg->max_peers);
		close(sock);
		return;
	}
	p = calloc(1, sizeof(*p));
	np = realloc(s->peers, (s->npeers + 1) * sizeof(*np));
	if (np)
		s->peers = np;
	if (!p || !np) {
		ivs_log(IVS_LOG_ERROR, "out of memory: refused a connection from pid %d",
			(int)cred.pid);
		free(p);
		close(sock);
		return;
	}
	p->sock = sock;
	p->pid = cred.pid;
	p->uid = cred.uid;
	clock_gettime(CLOCK_MONOTONIC, &p->since);
	p->efds = blk_new(nv);
	if (!p->efds) {
		ivs_log(IVS_LOG_ERROR, "out of memory: refused a connection from pid %d",
			(int)cred.pid);
		free(p);
		close(sock);
		return;
	}
	for (v = 0; v < nv; v++) {
		p->efds->fd[v] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (p->efds->fd[v] < 0) {
			ivs_log(IVS_LOG_ERROR, "cannot create eventfds (%s): refused a connection "
				"from pid %d", strerror(errno), (int)cred.pid);
			blk_put(p->efds);
			free(p);
			close(sock);
			return;
		}
	}
	p->id = id_alloc(s);

	/* The set-up, in the protocol's order: version, id, shm, the peers
	 * already there (each: id once per vector, with its eventfds), then our
	 * own id once per vector with the eventfds we listen on. */
	enqueue(s, p, PORTAL_IVSHMEM_PROTOCOL_VERSION, NULL, 0);
	enqueue(s, p, p->id, NULL, 0);
	enqueue(s, p, -1, s->shm, 0);
	for (i = 0; i < s->npeers; i++) {
		struct peer *o = s->peers[i];

		if (o->dead)
			continue;
		for (v = 0; v < nv; v++)
			enqueue(s, p, o->id, o->efds, v);
	}
	for (v = 0; v < nv; v++)
		enqueue(s, p, p->id, p->efds, v);
	flush(p);
	if (p->dead) {
		ivs_log(IVS_LOG_INFO, "peer %u (pid %d) dropped during set-up: %s; never announced",
			(unsigned)p->id, (int)p->pid, p->reason);
		peer_free(s, p);
		return;
	}

	/* Now tell everyone else. */
	for (i = 0; i < s->npeers; i++) {
		struct peer *o = s->peers[i];

		for (v = 0; v < nv; v++)
			enqueue(s, o, p->id, p->efds, v);
		flush(o);
	}
	p->announced = true;
	s->peers[s->npeers++] = p;
	s->n_joined++;
	ivs_log(IVS_LOG_INFO, "peer %u joined (pid %d, uid %d): %u vector%s; %zu peer%s",
		(unsigned)p->id, (int)p->pid, (int)p->uid, nv, nv == 1 ? "" : "s", live_peers(s),
		live_peers(s) == 1 ? "" : "s");
}

static void accept_some(struct ivs_server *s)
{
	int i, c;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		c = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c >= 0) {
			join(s, c);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			ivs_log(IVS_LOG_ERROR, "cannot accept (%s): refusing a connection",
				strerror(errno));
			s->n_refused++;
			refuse_with_reserve(s);
			return;
		}
		ivs_log(IVS_LOG_ERROR, "accept failed: %s", strerror(errno));
		return;
	}
}

/* ------------------------------------------------------------------ */
/* Client sockets                                                      */
/* ------------------------------------------------------------------ */

static void client_event(struct peer *p, short revents)
{
	char buf[RECV_PROBE];
	ssize_t n;

	if (p->dead)
		return;
	if (revents & POLLIN) {
		n = recv(p->sock, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0) {
			mark_dead(p, "sent %zd byte%s, but clients never send (protocol violation)",
				  n, n == 1 ? "" : "s");
			return;
		}
		if (n == 0) {
			mark_dead(p, "closed the connection");
			return;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			mark_dead(p, "connection error: %s", strerror(errno));
			return;
		}
	}
	if (revents & (POLLHUP | POLLERR)) {
		int err = 0;
		socklen_t len = sizeof(err);

		(void)getsockopt(p->sock, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err)
			mark_dead(p, "connection error: %s", strerror(err));
		else
			mark_dead(p, "hung up");
		return;
	}
	if (revents & POLLNVAL) {
		mark_dead(p, "socket invalid");
		return;
	}
	if (revents & POLLOUT)
		flush(p);
}

static void log_status(const struct ivs_server *s)
{
	char ids[256];
	size_t i, off = 0;

	ids[0] = '\0';
	for (i = 0; i < s->npeers && off < sizeof(ids) - 16; i++) {
		int n = snprintf(ids + off, sizeof(ids) - off, "%s%u", i ? " " : "",
				 (unsigned)s->peers[i]->id);

		if (n < 0)
			break;
		off += (size_t)n;
	}
	if (i < s->npeers)
		snprintf(ids + off, sizeof(ids) - off, " ...");
	ivs_log(IVS_LOG_ALWAYS, "status: %zu peers [%s]; since start %llu joined, %llu left, %llu refused",
		s->npeers, ids, (unsigned long long)s->n_joined, (unsigned long long)s->n_left,
		(unsigned long long)s->n_refused);
}

/* ------------------------------------------------------------------ */
/* Loop                                                                */
/* ------------------------------------------------------------------ */

int ivs_run(const struct ivs_config *cfg, int listen_fd, int shm_fd, int signal_fd)
{
	struct ivs_server *s;
	struct pollfd *pfd = NULL;
	struct peer **snap = NULL;
	size_t cap = 0, i, n;
	int rc = 0;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = cfg;
	s->listen_fd = listen_fd;
	s->sig_fd = signal_fd;
	s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	/* Room for a whole set-up (every peer's vectors) plus a join/leave
	 * churn of every peer, many times over. */
	s->qlimit = ((size_t)cfg->max_peers + 2) * ((size_t)cfg->vectors + 1) * 4 + 1024;
	s->shm = blk_new(1);
	if (!s->shm) {
		free(s);
		return -ENOMEM;
	}
	s->shm->fd[0] = shm_fd; /* the caller's; never closed here */
	s->shm->refs = UINT32_MAX / 2;

	for (;;) {
		int k;

		n = s->npeers + 2;
		if (n > cap) {
			struct pollfd *np = realloc(pfd, n * sizeof(*np));
			struct peer **ns = realloc(snap, n * sizeof(*ns));

			if (np)
				pfd = np;
			if (ns)
				snap = ns;
			if (!np || !ns) {
				rc = -ENOMEM;
				ivs_log(IVS_LOG_ERROR, "out of memory in the event loop");
				break;
			}
			cap = n;
		}
		pfd[0] = (struct pollfd){ .fd = signal_fd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = listen_fd, .events = POLLIN };
		for (i = 0; i < s->npeers; i++) {
			struct peer *p = s->peers[i];

			snap[i] = p;
			pfd[i + 2] = (struct pollfd){
				.fd = p->sock,
				.events = (short)(POLLIN | (p->qhead < p->qlen ? POLLOUT : 0)),
			};
		}
		/* The loop's only blocking call: the ivshmem fuzz target runs
		 * the loop as a coroutine by defining poll(), so any other
		 * blocking call here would hang it. */
		k = poll(pfd, n, -1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			rc = -errno;
			ivs_log(IVS_LOG_ERROR, "poll failed: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
					ivs_log(IVS_LOG_INFO, "%s: shutting down, closing %zu peers",
						si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM",
						s->npeers);
					break;
				}
				log_status(s);
			}
		}
		/* Peers first (their slots in pfd match snap), then new ones. */
		for (i = 0; i + 2 < n; i++)
			if (pfd[i + 2].revents)
				client_event(snap[i], pfd[i + 2].revents);
		reap(s);
		if (pfd[1].revents & POLLIN)
			accept_some(s);
		reap(s);
	}

	for (i = 0; i < s->npeers; i++)
		peer_free(s, s->peers[i]);
	free(s->peers);
	free(pfd);
	free(snap);
	free(s->shm);
	if (s->reserve_fd >= 0)
		close(s->reserve_fd);
	free(s);
	return rc;
}
