/* SPDX-License-Identifier: MIT */
/*
 * fdpass.c - hand an fd (a doorbell's eventfd) to another process over a
 * Unix socket with SCM_RIGHTS.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "doorbell/doorbell_internal.h"

/* Room for a few fds, so that a peer sending more than one is seen (and
 * the extras closed) rather than silently truncated. */
#define FDPASS_MAX 4

union fdpass_cmsg {
	struct cmsghdr hdr;
	char buf[CMSG_SPACE(sizeof(int) * FDPASS_MAX)];
};

int portal_fd_send(int unix_sock, int fd)
{
	union fdpass_cmsg u;
	struct msghdr m;
	struct cmsghdr *c;
	struct iovec iov;
	char byte = 'F';
	ssize_t n;

	if (fd < 0 || fcntl(fd, F_GETFD) < 0)
		return -EBADF;
	memset(&u, 0, sizeof(u));
	memset(&m, 0, sizeof(m));
	iov.iov_base = &byte;
	iov.iov_len = 1;
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = u.buf;
	m.msg_controllen = CMSG_SPACE(sizeof(int));
	c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(fd));

	for (;;) {
		n = sendmsg(unix_sock, &m, MSG_NOSIGNAL);
		if (n == 1)
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		return -EIO;
	}
}

int portal_db_take_fds(const struct msghdr *m, int *fd)
{
	struct cmsghdr *c;
	int bad = 0;

	for (c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
		size_t i, nfds;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			bad = 1;
			continue;
		}
		nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < nfds; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
			if (*fd < 0) {
				*fd = f;
			} else {
				close(f);
				bad = 1;
			}
		}
	}
	if (m->msg_flags & MSG_CTRUNC)
		bad = 1;
	return bad;
}

int portal_fd_recv(int unix_sock, int *fd)
{
	union fdpass_cmsg u;
	struct msghdr m;
	struct iovec iov;
	char byte;
	ssize_t n;
	int got = -1, bad;

	if (!fd)
		return -EINVAL;
	memset(&u, 0, sizeof(u));
	memset(&m, 0, sizeof(m));
	iov.iov_base = &byte;
	iov.iov_len = 1;
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = u.buf;
	m.msg_controllen = sizeof(u.buf);

	do
		n = recvmsg(unix_sock, &m, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;

	bad = portal_db_take_fds(&m, &got);
	if (n == 0 && got < 0)
		return PORTAL_EPEERDEAD;
	if (bad || got < 0) {
		if (got >= 0)
			close(got);
		portal_log(PORTAL_LOG_WARN, "doorbell: fd message without exactly one fd");
		return PORTAL_EPROTO;
	}
	*fd = got;
	return 0;
}
