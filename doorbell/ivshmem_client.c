/* SPDX-License-Identifier: MIT */
/*
 * ivshmem_client.c - a host process as a client of an ivshmem server
 * (portal-ivshmem-server, or any server speaking QEMU's protocol): receive
 * our id, the shared memory and the peers' eventfds, and keep the peer
 * table up to date as peers join and leave. The protocol is described in
 * portal/doorbell.h and ivshmem-server/README.md.
 *
 * The server is a separate process and is only half trusted: every message
 * is checked (id range, fd count, control-message truncation) before it is
 * applied, and a message that does not fit is dropped with PORTAL_EPROTO
 * and its fds closed. Nothing a server sends can make the client index out
 * of bounds or leak fds; a server can of course refuse service.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "doorbell/doorbell_internal.h"

/* Room for a few fds per message, so that a server sending more than one
 * is seen (and the extras closed) rather than silently truncated. */
#define RECV_MAX_FDS 4
/* A message that has started must end within this (the server writes 8
 * bytes at once; a split longer than this is a broken server). */
#define MSG_REST_NS (INT64_C(1000000000))
/* connect() retry interval while the socket is not there yet. */
#define CONNECT_RETRY_NS (INT64_C(10000000))

struct ivs_peer {
	uint32_t id;
	unsigned received;                     /* vector messages received */
	int fd[PORTAL_IVSHMEM_MAX_VECTORS];    /* first `vectors` of them */
};

struct portal_ivshmem_client {
	int sock;
	uint32_t id;
	unsigned vectors;
	int shm_fd;
	uint64_t shm_size;
	unsigned own_received;
	int own_fd[PORTAL_IVSHMEM_MAX_VECTORS];
	struct ivs_peer *peers;                /* sorted by id */
	size_t npeers, cap;
};

int64_t portal_ivshmem_doorbell_value(uint32_t peer, uint32_t vector)
{
	if (peer > 0xffffu || vector > 0xffffu)
		return -EINVAL;
	return (int64_t)((peer << 16) | vector);
}

static int64_t deadline_after(int64_t timeout_ns)
{
	int64_t now;

	if (timeout_ns < 0)
		return PORTAL_DB_NO_DEADLINE;
	now = portal_db_now_ns();
	return timeout_ns > PORTAL_DB_NO_DEADLINE - now ? PORTAL_DB_NO_DEADLINE : now + timeout_ns;
}

/* Wait for POLLIN until DEADLINE. Returns 1 readable (or hung up), 0 timed
 * out, or a negative errno. */
static int wait_readable(int fd, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct timespec ts, *tp;
	int k;

	for (;;) {
		tp = NULL;
		if (deadline != PORTAL_DB_NO_DEADLINE) {
			portal_db_remaining(deadline, &ts);
			tp = &ts;
		}
		k = ppoll(&p, 1, tp, NULL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return 0;
		if (p.revents & POLLNVAL)
			return -EBADF;
		return 1;
	}
}

int portal_ivshmem_recv_msg(int sock, int64_t *value, int *fd, int64_t timeout_ns)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * RECV_MAX_FDS)];
	} u;
	unsigned char msg[8];
	size_t got = 0;
	int64_t deadline;
	uint64_t le;
	int rfd = -1, bad = 0, k;

	if (sock < 0 || !value || !fd)
		return -EINVAL;
	deadline = deadline_after(timeout_ns);
	while (got < sizeof(msg)) {
		struct msghdr m;
		struct iovec iov;
		ssize_t n;

		memset(&m, 0, sizeof(m));
		memset(&u, 0, sizeof(u));
		iov.iov_base = msg + got;
		iov.iov_len = sizeof(msg) - got;
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		m.msg_control = u.buf;
		m.msg_controllen = sizeof(u.buf);
		n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* Nothing yet: wait as asked; inside a message, the
			 * rest must follow promptly. */
			int64_t dl = got ? portal_db_now_ns() + MSG_REST_NS : deadline;

			if (!got && timeout_ns == 0)
				return -ETIMEDOUT;
			k = wait_readable(sock, dl);
			if (k < 0)
				goto fail_errno;
			if (k == 0) {
				if (!got)
					return -ETIMEDOUT;
				bad = 1;
				break;
			}
			continue;
		}
		if (n < 0) {
			k = -errno;
			goto fail_errno;
		}
		if (portal_db_take_fds(&m, &rfd))
			bad = 1;
		if (n == 0) {
			if (!got && rfd < 0 && !bad)
				return PORTAL_EPEERDEAD;
			bad = 1; /* closed inside a message */
			break;
		}
		got += (size_t)n;
	}
	if (bad) {
		if (rfd >= 0)
			close(rfd);
		portal_log(PORTAL_LOG_WARN, "ivshmem: malformed message from the server");
		return PORTAL_EPROTO;
	}
	memcpy(&le, msg, sizeof(le));
	*value = (int64_t)le64toh(le);
	*fd = rfd;
	return 0;

fail_errno:
	if (rfd >= 0)
		close(rfd);
	return k;
}

/* ------------------------------------------------------------------ */
/* Peer table                                                          */
/* ------------------------------------------------------------------ */

static struct ivs_peer *peer_find(const struct portal_ivshmem_client *c, uint32_t id, size_t *pos)
{
	size_t lo = 0, hi = c->npeers;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->peers[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (pos)
		*pos = lo;
	if (lo < c->npeers && c->peers[lo].id == id)
		return &c->peers[lo];
	return NULL;
}

static struct ivs_peer *peer_add(struct portal_ivshmem_client *c, uint32_t id)
{
	struct ivs_peer *p;
	size_t pos, i;

	p = peer_find(c, id, &pos);
	if (p)
		return p;
	if (c->npeers == c->cap) {
		size_t ncap = c->cap ? c->cap * 2 : 8;
		struct ivs_peer *np = realloc(c->peers, ncap * sizeof(*np));

		if (!np)
			return NULL;
		c->peers = np;
		c->cap = ncap;
	}
	memmove(&c->peers[pos + 1], &c->peers[pos], (c->npeers - pos) * sizeof(*p));
	c->npeers++;
	p = &c->peers[pos];
	p->id = id;
	p->received = 0;
	for (i = 0; i < PORTAL_IVSHMEM_MAX_VECTORS; i++)
		p->fd[i] = -1;
	return p;
}

static void peer_remove(struct portal_ivshmem_client *c, struct ivs_peer *p)
{
	size_t pos = (size_t)(p - c->peers), i;

	for (i = 0; i < PORTAL_IVSHMEM_MAX_VECTORS; i++)
		if (p->fd[i] >= 0)
			close(p->fd[i]);
	memmove(p, p + 1, (c->npeers - pos - 1) * sizeof(*p));
	c->npeers--;
}

/* A vector fd is written by ring and by doorbell notifiers, which must not
 * block: an honest server's eventfds are non-blocking already, but a hostile
 * one could send a full pipe or a socket. The flag lives in the shared file
 * description, so the notifiers' dups get it too. */
static void vector_fd_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0 && !(fl & O_NONBLOCK))
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/*
 * Apply one message after the set-up's first three. Takes ownership of FD
 * (stored or closed). Returns 1 with *EV filled, or PORTAL_EPROTO / -ENOMEM.
 */
static int apply(struct portal_ivshmem_client *c, int64_t v, int fd,
		 struct portal_ivshmem_event *ev)
{
	struct ivs_peer *p;
	uint32_t id;

	if (v < 0 || v > PORTAL_IVSHMEM_MAX_PEER_ID) {
		portal_log(PORTAL_LOG_WARN, "ivshmem: server sent %lld%s, not a peer id",
			   (long long)v, fd >= 0 ? " with an fd" : "");
		if (fd >= 0)
			close(fd);
		return PORTAL_EPROTO;
	}
	id = (uint32_t)v;
	if (fd >= 0)
		vector_fd_nonblock(fd);
	if (fd >= 0 && id == c->id) {
		unsigned vec = c->own_received;

		if (vec < c->vectors)
			c->own_fd[vec] = fd;
		else
			close(fd); /* more vectors than we use */
		if (c->own_received < UINT32_MAX)
			c->own_received++;
		ev->kind = PORTAL_IVSHMEM_EV_OWN_VECTOR;
		ev->peer = id;
		ev->vector = vec;
		return 1;
	}
	if (fd >= 0) {
		unsigned vec;

		p = peer_add(c, id);
		if (!p) {
			close(fd);
			return -ENOMEM;
		}
		vec = p->received;
		if (vec < c->vectors)
			p->fd[vec] = fd;
		else
			close(fd);
		if (p->received < UINT32_MAX)
			p->received++;
		ev->kind = PORTAL_IVSHMEM_EV_PEER_VECTOR;
		ev->peer = id;
		ev->vector = vec;
		return 1;
	}
	if (id == c->id) {
		portal_log(PORTAL_LOG_WARN, "ivshmem: server says we (%u) left", (unsigned)id);
		return PORTAL_EPROTO;
	}
	p = peer_find(c, id, NULL);
	if (!p) {
		portal_log(PORTAL_LOG_WARN, "ivshmem: server says unknown peer %u left",
			   (unsigned)id);
		return PORTAL_EPROTO;
	}
	peer_remove(c, p);
	ev->kind = PORTAL_IVSHMEM_EV_PEER_LEFT;
	ev->peer = id;
	ev->vector = 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Connect                                                              */
/* ------------------------------------------------------------------ */

static int connect_retry(const char *path, int64_t deadline, int *out)
{
	struct sockaddr_un sa;
	size_t len = strlen(path);
	int s, err;

	if (len == 0 || len >= sizeof(sa.sun_path))
		return -EINVAL;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, len + 1);
	for (;;) {
		s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			return -errno;
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			*out = s;
			return 0;
		}
		err = errno;
		close(s);
		if (err == EINTR)
			continue;
		if (err != ENOENT && err != ECONNREFUSED && err != EAGAIN)
			return -err;
		if (deadline != PORTAL_DB_NO_DEADLINE && portal_db_now_ns() >= deadline)
			return err == ENOENT ? -ENOENT : -ECONNREFUSED;
		{
			struct timespec ts = { 0, CONNECT_RETRY_NS };

			nanosleep(&ts, NULL);
		}
	}
}

/* Receive one set-up message; an fd where none belongs is a protocol
 * error. Converts "nothing came" into -ETIMEDOUT. */
static int recv_setup(int sock, int64_t deadline, int64_t *v, int *fd)
{
	int64_t left;

	if (deadline == PORTAL_DB_NO_DEADLINE) {
		left = -1;
	} else {
		left = deadline - portal_db_now_ns();
		if (left <= 0)
			left = 0;
	}
	return portal_ivshmem_recv_msg(sock, v, fd, left);
}

int portal_ivshmem_client_connect(const char *path, unsigned vectors, int64_t timeout_ns,
				  portal_ivshmem_client_t **out)
{
	struct portal_ivshmem_client *c;
	struct stat st;
	int64_t deadline, v;
	unsigned i;
	int rc, fd;

	if (!path || !out || vectors == 0 || vectors > PORTAL_IVSHMEM_MAX_VECTORS)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->sock = -1;
	c->shm_fd = -1;
	c->vectors = vectors;
	for (i = 0; i < PORTAL_IVSHMEM_MAX_VECTORS; i++)
		c->own_fd[i] = -1;
	deadline = deadline_after(timeout_ns);

	rc = connect_retry(path, deadline, &c->sock);
	if (rc < 0)
		goto fail;

	/* 1. the version, no fd. A server that is full closes at once. */
	rc = recv_setup(c->sock, deadline, &v, &fd);
	if (rc == PORTAL_EPEERDEAD) {
		rc = -ECONNREFUSED;
		goto fail;
	}
	if (rc < 0)
		goto fail;
	if (fd >= 0) {
		close(fd);
		rc = PORTAL_EPROTO;
		goto fail;
	}
	if (v != PORTAL_IVSHMEM_PROTOCOL_VERSION) {
		portal_log(PORTAL_LOG_WARN, "ivshmem: server speaks version %lld, we speak %d",
			   (long long)v, PORTAL_IVSHMEM_PROTOCOL_VERSION);
		rc = PORTAL_EVERSION;
		goto fail;
	}

	/* 2. our id, no fd. */
	rc = recv_setup(c->sock, deadline, &v, &fd);
	if (rc < 0)
		goto fail;
	if (fd >= 0 || v < 0 || v > PORTAL_IVSHMEM_MAX_PEER_ID) {
		if (fd >= 0)
			close(fd);
		portal_log(PORTAL_LOG_WARN, "ivshmem: bad id message %lld", (long long)v);
		rc = PORTAL_EPROTO;
		goto fail;
	}
	c->id = (uint32_t)v;

	/* 3. -1 with the shared memory. */
	rc = recv_setup(c->sock, deadline, &v, &fd);
	if (rc < 0)
		goto fail;
	if (v != -1 || fd < 0) {
		if (fd >= 0)
			close(fd);
		portal_log(PORTAL_LOG_WARN, "ivshmem: expected the shared memory, got %lld",
			   (long long)v);
		rc = PORTAL_EPROTO;
		goto fail;
	}
	c->shm_fd = fd;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto fail;
	}
	if (st.st_size <= 0) {
		rc = PORTAL_EPROTO;
		goto fail;
	}
	c->shm_size = (uint64_t)st.st_size;

	/* 4, 5. the peers' vectors, then ours; done when we have ours. */
	while (c->own_received < c->vectors) {
		struct portal_ivshmem_event ev;

		rc = recv_setup(c->sock, deadline, &v, &fd);
		if (rc < 0)
			goto fail;
		rc = apply(c, v, fd, &ev);
		if (rc < 0)
			goto fail;
	}
	*out = c;
	return 0;

fail:
	portal_ivshmem_client_close(c);
	return rc;
}

void portal_ivshmem_client_close(portal_ivshmem_client_t *c)
{
	unsigned v;

	if (!c)
		return;
	while (c->npeers)
		peer_remove(c, &c->peers[c->npeers - 1]);
	free(c->peers);
	for (v = 0; v < PORTAL_IVSHMEM_MAX_VECTORS; v++)
		if (c->own_fd[v] >= 0)
			close(c->own_fd[v]);
	if (c->shm_fd >= 0)
		close(c->shm_fd);
	if (c->sock >= 0)
		close(c->sock);
	free(c);
}

uint32_t portal_ivshmem_client_id(const portal_ivshmem_client_t *c)
{
	return c->id;
}

unsigned portal_ivshmem_client_vectors(const portal_ivshmem_client_t *c)
{
	return c->vectors;
}

int portal_ivshmem_client_shm_fd(const portal_ivshmem_client_t *c)
{
	return c->shm_fd;
}

uint64_t portal_ivshmem_client_shm_size(const portal_ivshmem_client_t *c)
{
	return c->shm_size;
}

int portal_ivshmem_client_sock_fd(const portal_ivshmem_client_t *c)
{
	return c->sock;
}

int portal_ivshmem_client_process(portal_ivshmem_client_t *c, struct portal_ivshmem_event *ev,
				  int64_t timeout_ns)
{
	struct portal_ivshmem_event dummy;
	int64_t v;
	int rc, fd;

	if (!c)
		return -EINVAL;
	rc = portal_ivshmem_recv_msg(c->sock, &v, &fd, timeout_ns);
	if (rc == -ETIMEDOUT)
		return 0;
	if (rc < 0)
		return rc;
	if (v == -1) {
		/* A second shared memory: not in the protocol. */
		if (fd >= 0)
			close(fd);
		portal_log(PORTAL_LOG_WARN, "ivshmem: server sent a second shared memory");
		return PORTAL_EPROTO;
	}
	return apply(c, v, fd, ev ? ev : &dummy);
}

int portal_ivshmem_client_eventfd(const portal_ivshmem_client_t *c, uint32_t peer,
				  uint32_t vector)
{
	const struct ivs_peer *p;
	int fd;

	if (!c || vector >= c->vectors)
		return -EINVAL;
	if (peer == c->id) {
		fd = c->own_fd[vector];
	} else {
		p = peer_find(c, peer, NULL);
		if (!p)
			return -ENOENT;
		fd = p->fd[vector];
	}
	return fd >= 0 ? fd : -ENOENT;
}

int portal_ivshmem_client_ring(const portal_ivshmem_client_t *c, uint32_t peer, uint32_t vector)
{
	const uint64_t one = 1;
	int fd = portal_ivshmem_client_eventfd(c, peer, vector);
	ssize_t n;

	if (fd < 0)
		return fd;
	for (;;) {
		n = write(fd, &one, sizeof(one));
		if (n == (ssize_t)sizeof(one))
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0; /* counter saturated: readable already */
		return n < 0 ? -errno : -EIO;
	}
}

size_t portal_ivshmem_client_peers(const portal_ivshmem_client_t *c, uint32_t *ids, size_t max)
{
	size_t i;

	if (!c)
		return 0;
	for (i = 0; i < c->npeers && i < max && ids; i++)
		ids[i] = c->peers[i].id;
	return c->npeers;
}
