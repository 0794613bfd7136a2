/* SPDX-License-Identifier: MIT */
/*
 * ivs_test.h - helpers for the ivshmem server's process tests (header only,
 * every helper static inline):
 *
 *   ivs_srv_*    start portal-ivshmem-server from PORTAL_TEST_BINDIR in a
 *                fresh directory under /tmp (socket, pid file, log), wait for
 *                its pid file, stop it with a signal, read its log
 *   ivs_agent_*  a client process (fork, then portal_ivshmem_client_* in the
 *                child) driven over two pipes: one command, one reply. The
 *                child never uses cmocka; the driver asserts on the replies
 *   ivs_wait_pid wait for a child with a deadline
 *
 * A test that cannot run here (PORTAL_TEST_BINDIR unset: not started by
 * CTest; no QEMU) prints "skipped: <why>" and exits 77, which CTest reports
 * as a skip (SKIP_RETURN_CODE).
 */
#ifndef PORTAL_IVS_TEST_H
#define PORTAL_IVS_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "portal/doorbell.h"

#define IVS_MS  INT64_C(1000000)
#define IVS_SEC INT64_C(1000000000)

static inline int64_t ivs_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * IVS_SEC + ts.tv_nsec;
}

static inline void ivs_sleep(int64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / IVS_SEC), .tv_nsec = (long)(ns % IVS_SEC) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static inline void ivs_skip(const char *why)
{
	printf("skipped: %s\n", why);
	fflush(stdout);
	exit(77);
}

/* Wait for PID up to TIMEOUT_NS. Returns 0 with *STATUS, or -1 (still
 * running at the deadline). */
static inline int ivs_wait_pid(pid_t pid, int64_t timeout_ns, int *status)
{
	int64_t end = ivs_now() + timeout_ns;
	pid_t r;

	for (;;) {
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
		if (ivs_now() > end)
			return -1;
		ivs_sleep(2 * IVS_MS);
	}
}

/* ------------------------------------------------------------------ */
/* The server                                                          */
/* ------------------------------------------------------------------ */

struct ivs_srv {
	pid_t pid;
	char dir[64];
	char sock[100];  /* fits sun_path */
	char pidf[128];
	char log[128];
	char shm[128];   /* a path tests may give with -m */
};

static inline const char *ivs_bindir(void)
{
	const char *d = getenv("PORTAL_TEST_BINDIR");

	if (!d || !*d)
		ivs_skip("PORTAL_TEST_BINDIR unset (run through ctest)");
	return d;
}

/* A fresh directory and the paths in it. */
static inline int ivs_srv_init(struct ivs_srv *s)
{
	memset(s, 0, sizeof(*s));
	s->pid = -1;
	snprintf(s->dir, sizeof(s->dir), "/tmp/portal-ivs-XXXXXX");
	if (!mkdtemp(s->dir))
		return -1;
	snprintf(s->sock, sizeof(s->sock), "%s/ivshmem.sock", s->dir);
	snprintf(s->pidf, sizeof(s->pidf), "%s/server.pid", s->dir);
	snprintf(s->log, sizeof(s->log), "%s/server.log", s->dir);
	snprintf(s->shm, sizeof(s->shm), "%s/shm", s->dir);
	return 0;
}

/* Start the server with "-S sock -p pidf" (and -F if FOREGROUND) plus
 * EXTRA (NULL-terminated), stdout and stderr appended to the log. Returns
 * the pid of the process started (the server, or with !FOREGROUND the
 * parent that exits once the daemon listens). */
static inline pid_t ivs_srv_spawn(struct ivs_srv *s, const char *const *extra, bool foreground)
{
	char bin[512];
	const char *argv[40];
	int n = 0, i, fd;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/portal-ivshmem-server", ivs_bindir());
	argv[n++] = bin;
	if (foreground)
		argv[n++] = "-F";
	argv[n++] = "-S";
	argv[n++] = s->sock;
	argv[n++] = "-p";
	argv[n++] = s->pidf;
	for (i = 0; extra && extra[i] && n < 38; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	pid = fork();
	if (pid != 0)
		return pid;
	fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	execv(bin, (char *const *)argv);
	_exit(127);
}

static inline pid_t ivs_read_pid(const char *path)
{
	char buf[32];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return (pid_t)atoi(buf);
}

/* Start in the foreground and wait (5 s) for the pid file. Returns 0, or
 * -1 (the server exited, or no pid file in time: see the log). */
static inline int ivs_srv_start(struct ivs_srv *s, const char *const *extra)
{
	int64_t end = ivs_now() + 5 * IVS_SEC;
	int status;

	s->pid = ivs_srv_spawn(s, extra, true);
	if (s->pid < 0)
		return -1;
	while (ivs_read_pid(s->pidf) != s->pid) {
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			s->pid = -1;
			return -1;
		}
		if (ivs_now() > end)
			return -1;
		ivs_sleep(2 * IVS_MS);
	}
	return 0;
}

/* Send SIG and wait (5 s). Returns the exit code, 128 + signal if it was
 * killed, or -1 if it did not exit (it is then SIGKILLed). */
static inline int ivs_srv_stop(struct ivs_srv *s, int sig)
{
	int status = 0;

	if (s->pid <= 0)
		return -1;
	kill(s->pid, sig);
	if (ivs_wait_pid(s->pid, 5 * IVS_SEC, &status) < 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, &status, 0);
		s->pid = -1;
		return -1;
	}
	s->pid = -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

/* The whole log (malloc'd, NUL-terminated; "" if none). */
static inline char *ivs_log_read(const struct ivs_srv *s)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	ssize_t n;
	int fd = open(s->log, O_RDONLY | O_CLOEXEC);

	for (;;) {
		if (len + 4096 + 1 > cap) {
			char *nb;

			cap = cap ? cap * 2 : 8192;
			nb = realloc(buf, cap);
			if (!nb)
				break;
			buf = nb;
		}
		if (fd < 0)
			break;
		n = read(fd, buf + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (fd >= 0)
		close(fd);
	if (buf)
		buf[len] = '\0';
	return buf;
}

/* How many log lines contain NEEDLE. */
static inline int ivs_log_count(const struct ivs_srv *s, const char *needle)
{
	char *log = ivs_log_read(s), *p;
	int n = 0;

	if (!log)
		return -1;
	for (p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	free(log);
	return n;
}

/* Wait (TIMEOUT_NS) until at least COUNT log lines contain NEEDLE. */
static inline bool ivs_log_wait(const struct ivs_srv *s, const char *needle, int count,
				int64_t timeout_ns)
{
	int64_t end = ivs_now() + timeout_ns;

	while (ivs_log_count(s, needle) < count) {
		if (ivs_now() > end)
			return false;
		ivs_sleep(5 * IVS_MS);
	}
	return true;
}

static inline void ivs_log_print(const struct ivs_srv *s)
{
	char *log = ivs_log_read(s);

	if (log) {
		fprintf(stderr, "---- server log %s ----\n%s---- end of log ----\n", s->log, log);
		free(log);
	}
}

static inline void ivs_srv_cleanup(struct ivs_srv *s)
{
	char cmd[200];

	if (s->pid > 0)
		ivs_srv_stop(s, SIGKILL);
	if (s->dir[0] && !getenv("PORTAL_IVS_KEEP")) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
		if (system(cmd) != 0) { /* leftovers in /tmp only */ }
	}
}

/* ------------------------------------------------------------------ */
/* Agents: client processes driven over pipes                          */
/* ------------------------------------------------------------------ */

enum ivs_agent_op {
	IVS_OP_EVENT = 'E', /* process one server message (timeout_ms) */
	IVS_OP_RING  = 'R', /* ring peer a, vector b */
	IVS_OP_WAIT  = 'W', /* own vector b readable within timeout_ms? drain */
	IVS_OP_PEERS = 'P', /* how many peers known */
	IVS_OP_PEEK  = 'M', /* u32 at shm offset a */
	IVS_OP_POKE  = 'S', /* u32 b to shm offset a */
	IVS_OP_QUIT  = 'Q', /* close the client, exit 0 */
};

struct ivs_cmd {
	int32_t op;
	uint32_t a, b;
	int32_t timeout_ms;
};

struct ivs_reply {
	int32_t rc;
	uint32_t kind, peer, vector, value;
};

struct ivs_agent {
	pid_t pid;
	int to, from;
	int32_t id;      /* its id, or the connect error */
};

static inline bool ivs_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* Read LEN bytes within TIMEOUT_MS (< 0: forever). */
static inline bool ivs_read_all(int fd, void *buf, size_t len, int timeout_ms)
{
	char *p = buf;
	ssize_t n;

	while (len) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		int k = poll(&pf, 1, timeout_ms);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static inline void ivs_agent_main(const char *sock, unsigned vectors, int in, int out)
{
	portal_ivshmem_client_t *c = NULL;
	struct ivs_reply r;
	struct ivs_cmd cmd;
	volatile uint32_t *shm = NULL;

	alarm(120); /* a stuck agent must not outlive its test */
	memset(&r, 0, sizeof(r));
	r.rc = portal_ivshmem_client_connect(sock, vectors, 5 * IVS_SEC, &c);
	if (r.rc == 0)
		r.rc = (int32_t)portal_ivshmem_client_id(c);
	ivs_write_all(out, &r, sizeof(r));
	if (!c)
		_exit(0);
	while (ivs_read_all(in, &cmd, sizeof(cmd), -1)) {
		struct portal_ivshmem_event ev = { 0, 0, 0 };

		memset(&r, 0, sizeof(r));
		switch (cmd.op) {
		case IVS_OP_EVENT:
			r.rc = portal_ivshmem_client_process(c, &ev, (int64_t)cmd.timeout_ms * IVS_MS);
			r.kind = (uint32_t)ev.kind;
			r.peer = ev.peer;
			r.vector = ev.vector;
			break;
		case IVS_OP_RING:
			r.rc = portal_ivshmem_client_ring(c, cmd.a, cmd.b);
			break;
		case IVS_OP_WAIT: {
			int fd = portal_ivshmem_client_eventfd(c, portal_ivshmem_client_id(c), cmd.b);
			struct pollfd pf = { .fd = fd, .events = POLLIN };
			uint64_t v;

			if (fd < 0) {
				r.rc = fd;
				break;
			}
			r.rc = poll(&pf, 1, cmd.timeout_ms) > 0 && (pf.revents & POLLIN);
			if (r.rc && read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
				r.value = (uint32_t)v;
			break;
		}
		case IVS_OP_PEERS:
			r.rc = (int32_t)portal_ivshmem_client_peers(c, NULL, 0);
			break;
		case IVS_OP_PEEK:
		case IVS_OP_POKE:
			if (!shm) {
				void *p = mmap(NULL, (size_t)portal_ivshmem_client_shm_size(c),
					       PROT_READ | PROT_WRITE, MAP_SHARED,
					       portal_ivshmem_client_shm_fd(c), 0);

				if (p == MAP_FAILED) {
					r.rc = -errno;
					break;
				}
				shm = p;
			}
			if (cmd.a + 4 > portal_ivshmem_client_shm_size(c)) {
				r.rc = -ERANGE;
				break;
			}
			if (cmd.op == IVS_OP_POKE)
				shm[cmd.a / 4] = cmd.b;
			r.value = shm[cmd.a / 4];
			break;
		case IVS_OP_QUIT:
		default:
			portal_ivshmem_client_close(c);
			r.rc = 0;
			ivs_write_all(out, &r, sizeof(r));
			_exit(0);
		}
		if (!ivs_write_all(out, &r, sizeof(r)))
			break;
	}
	_exit(3);
}

/* Start an agent on SOCK. Returns 0 with a->id its id (>= 0) or the
 * connect error (< 0, the agent has exited), or -1 (no reply). */
static inline int ivs_agent_start(struct ivs_agent *a, const char *sock, unsigned vectors)
{
	int to[2], from[2];
	struct ivs_reply r;

	a->id = INT32_MIN;
	a->pid = -1;
	if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0)
		return -1;
	a->pid = fork();
	if (a->pid < 0)
		return -1;
	if (a->pid == 0) {
		close(to[1]);
		close(from[0]);
		ivs_agent_main(sock, vectors, to[0], from[1]);
	}
	close(to[0]);
	close(from[1]);
	a->to = to[1];
	a->from = from[0];
	if (!ivs_read_all(a->from, &r, sizeof(r), 15000))
		return -1;
	a->id = r.rc;
	return 0;
}

/* One command. Returns 0 with *R, or -1 (the agent died or hung). */
static inline int ivs_agent_call(struct ivs_agent *a, int op, uint32_t x, uint32_t y,
				 int timeout_ms, struct ivs_reply *r)
{
	struct ivs_cmd cmd = { .op = op, .a = x, .b = y, .timeout_ms = timeout_ms };

	if (!ivs_write_all(a->to, &cmd, sizeof(cmd)))
		return -1;
	return ivs_read_all(a->from, r, sizeof(*r), timeout_ms + 15000) ? 0 : -1;
}

/* Quit and reap. Returns the agent's exit code, or -1. */
static inline int ivs_agent_quit(struct ivs_agent *a)
{
	struct ivs_reply r;
	int status = 0;

	(void)ivs_agent_call(a, IVS_OP_QUIT, 0, 0, 0, &r);
	close(a->to);
	close(a->from);
	if (ivs_wait_pid(a->pid, 10 * IVS_SEC, &status) < 0) {
		kill(a->pid, SIGKILL);
		waitpid(a->pid, &status, 0);
		return -1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* SIGKILL and reap. */
static inline void ivs_agent_kill(struct ivs_agent *a)
{
	int status;

	kill(a->pid, SIGKILL);
	waitpid(a->pid, &status, 0);
	close(a->to);
	close(a->from);
}

#endif
