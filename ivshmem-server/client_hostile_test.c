/* SPDX-License-Identifier: MIT */
/*
 * client_hostile_test.c - the host client against a hostile ivshmem server
 * (portal.ivshmem.client_hostile).
 *
 * A fake server hands the client the write end of a full, blocking pipe as
 * a peer's vector. Ringing that peer must not block: the client makes every
 * vector fd it receives non-blocking, so a full pipe reads as a full
 * counter (found by the ivshmem fuzz target). The client runs in a child
 * under alarm(), so a regression fails the test instead of hanging it.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "portal/doorbell.h"
#include "tests/test_util.h"

#define HOSTILE_PEER 7

struct fake {
	int lfd;
	int rc; /* 0, or the step that failed */
};

/* One protocol message: a little-endian int64, with FD attached if >= 0. */
static int send_msg(int s, int64_t v, int fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} u;
	uint64_t le = htole64((uint64_t)v);
	struct iovec iov = { .iov_base = &le, .iov_len = sizeof(le) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(&u, 0, sizeof(u));
	if (fd >= 0) {
		struct cmsghdr *c;

		m.msg_control = u.b;
		m.msg_controllen = sizeof(u.b);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(s, &m, 0) == (ssize_t)sizeof(le) ? 0 : -1;
}

/* The server's side: version, our id 1, the memory, then peer 7's vector 0
 * as a full blocking pipe, then our own vector 0. Keeps the socket open. */
static void *fake_server(void *arg)
{
	struct fake *f = arg;
	int s = accept(f->lfd, NULL, NULL), p[2], shm = memfd_create("ivs-hostile", MFD_CLOEXEC);

	if (s < 0 || shm < 0 || ftruncate(shm, 4096) < 0 || pipe2(p, O_NONBLOCK) < 0) {
		f->rc = 1;
		return NULL;
	}
	while (write(p[1], "xxxxxxxx", 8) == 8)
		;
	if (fcntl(p[1], F_SETFL, 0) < 0) { /* full, and blocking again */
		f->rc = 2;
		return NULL;
	}
	if (send_msg(s, 0, -1) || send_msg(s, 1, -1) || send_msg(s, -1, shm) ||
	    send_msg(s, HOSTILE_PEER, p[1]) || send_msg(s, 1, eventfd(0, EFD_CLOEXEC)))
		f->rc = 3;
	pause(); /* the child exits under us */
	return NULL;
}

/* In the child: 0 when ringing the hostile peer returned, else a step. */
static int ring_hostile_peer(void *arg)
{
	const char *path = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fake f = { .lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) };
	portal_ivshmem_client_t *c;
	pthread_t t;
	int rc;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (f.lfd < 0 || bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(f.lfd, 1) < 0 || pthread_create(&t, NULL, fake_server, &f) != 0)
		return 10;
	rc = portal_ivshmem_client_connect(path, 1, 5 * INT64_C(1000000000), &c);
	unlink(path);
	if (rc != 0 || f.rc)
		return 20 + f.rc;
	/* Blocks for ever without the fix; with it, EAGAIN is a full counter. */
	rc = portal_ivshmem_client_ring(c, HOSTILE_PEER, 0);
	return rc == 0 ? 0 : 30;
}

static void test_full_blocking_pipe(void **state)
{
	char name[64], path[108];
	int rc;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/%s.sock", tu_unique_name(name, sizeof(name), "ivs"));
	rc = tu_run_bounded(ring_hostile_peer, path, 10);
	unlink(path);
	if (rc == TU_CHILD_TIMEOUT)
		fail_msg("ringing a peer whose vector is a full blocking pipe hung");
	assert_int_equal(rc, 0);
}

int main(void)
{
	const struct CMUnitTest all[] = {
		cmocka_unit_test(test_full_blocking_pipe),
	};

	return cmocka_run_group_tests_name("portal.ivshmem.client_hostile", all, NULL, NULL);
}
