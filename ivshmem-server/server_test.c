/* SPDX-License-Identifier: MIT */
/*
 * server_test.c - portal.ivshmem.server: portal-ivshmem-server with real
 * client processes (ivs_test.h agents, each its own process using
 * portal_ivshmem_client_*), and raw clients that check the protocol byte by
 * byte or misbehave.
 *
 *   join_leave    three, then four clients; every join and leave checked
 *                 message by message at every other client; ids not reused
 *   setup_order   a raw client sees exactly: version, id, shm, each peer's
 *                 vectors, its own vectors; the fds are the same eventfd and
 *                 memory objects the other clients hold
 *   hostile       garbage, a flood, a close half-way through the set-up, a
 *                 half-close, SIGKILL, a close before the set-up: each one is
 *                 dropped and announced (or never announced) while two
 *                 clients keep ringing each other
 *   not_reading   a client that never reads is dropped once its queue is full
 *   max_peers     connections over --max-peers are refused and logged
 *   file_backed   -m FILE: a Portal region created in the file with the
 *                 file: backend is the memory clients get; size rules
 *   options       bad options, a live or stale socket, --help
 *   shutdown      SIGUSR1 status, SIGTERM and SIGINT (socket and pid file
 *                 removed, clients see end of stream), daemon mode
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "ivshmem-server/ivs_test.h"
#include "portal/doorbell.h"
#include "portal/region.h"

#define EV_JOIN PORTAL_IVSHMEM_EV_PEER_VECTOR
#define EV_LEFT PORTAL_IVSHMEM_EV_PEER_LEFT

static struct ivs_srv srv;

static int setup(void **state)
{
	(void)state;
	return ivs_srv_init(&srv);
}

static int teardown(void **state)
{
	(void)state;
	ivs_srv_cleanup(&srv);
	return 0;
}

static void start(const char *const *extra)
{
	if (ivs_srv_start(&srv, extra) != 0) {
		ivs_log_print(&srv);
		fail_msg("the server did not start");
	}
}

static void expect_event(struct ivs_agent *a, uint32_t kind, uint32_t peer, uint32_t vector)
{
	struct ivs_reply r;

	assert_int_equal(ivs_agent_call(a, IVS_OP_EVENT, 0, 0, 5000, &r), 0);
	if (r.rc != 1 || r.kind != kind || r.peer != peer || (kind == EV_JOIN && r.vector != vector)) {
		ivs_log_print(&srv);
		fail_msg("agent %d: got rc %d kind %u peer %u vector %u, expected kind %u peer %u "
			 "vector %u", a->id, r.rc, r.kind, r.peer, r.vector, kind, peer, vector);
	}
}

static void expect_join(struct ivs_agent *a, uint32_t peer, unsigned vectors)
{
	unsigned v;

	for (v = 0; v < vectors; v++)
		expect_event(a, EV_JOIN, peer, v);
}

static void expect_quiet(struct ivs_agent *a, int ms)
{
	struct ivs_reply r;

	assert_int_equal(ivs_agent_call(a, IVS_OP_EVENT, 0, 0, ms, &r), 0);
	if (r.rc != 0)
		fail_msg("agent %d: unexpected message: rc %d kind %u peer %u vector %u", a->id,
			 r.rc, r.kind, r.peer, r.vector);
}

static int call_rc(struct ivs_agent *a, int op, uint32_t x, uint32_t y, int ms)
{
	struct ivs_reply r;

	assert_int_equal(ivs_agent_call(a, op, x, y, ms, &r), 0);
	return r.rc;
}

static void start_agent(struct ivs_agent *a, unsigned vectors, int32_t want_id)
{
	assert_int_equal(ivs_agent_start(a, srv.sock, vectors), 0);
	if (a->id != want_id) {
		ivs_log_print(&srv);
		fail_msg("agent got id %d, expected %d", a->id, want_id);
	}
}

/* A rings B on vector V and B sees it, and back. */
static void check_working(struct ivs_agent *a, struct ivs_agent *b, unsigned v)
{
	assert_int_equal(call_rc(a, IVS_OP_RING, (uint32_t)b->id, v, 0), 0);
	assert_int_equal(call_rc(b, IVS_OP_WAIT, 0, v, 5000), 1);
	assert_int_equal(call_rc(b, IVS_OP_RING, (uint32_t)a->id, v, 0), 0);
	assert_int_equal(call_rc(a, IVS_OP_WAIT, 0, v, 5000), 1);
	/* consumed: nothing more */
	assert_int_equal(call_rc(b, IVS_OP_WAIT, 0, v, 0), 0);
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa;
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(s >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return s;
}

static void expect_msg(int s, int64_t value, bool with_fd, int *fd_out)
{
	int64_t v = 0;
	int fd = -1, rc = portal_ivshmem_recv_msg(s, &v, &fd, 5 * IVS_SEC);

	assert_int_equal(rc, 0);
	assert_int_equal(v, value);
	if (with_fd)
		assert_true(fd >= 0);
	else
		assert_int_equal(fd, -1);
	if (fd_out)
		*fd_out = fd;
	else if (fd >= 0)
		close(fd);
}

/* Read messages until the server closes; returns how many came. */
static int drain_until_eof(int s)
{
	int64_t v;
	int fd, rc, n = 0;

	for (;;) {
		rc = portal_ivshmem_recv_msg(s, &v, &fd, 5 * IVS_SEC);
		if (rc != 0)
			break;
		if (fd >= 0)
			close(fd);
		n++;
	}
	assert_int_equal(rc, PORTAL_EPEERDEAD);
	return n;
}

static bool is_eventfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strcmp(target, "anon_inode:[eventfd]") == 0;
}

/* ------------------------------------------------------------------ */

static void test_join_leave(void **state)
{
	static const char *const args[] = { "-n", "2", NULL };
	struct ivs_agent a, b, c, d;
	char line[96];

	(void)state;
	start(args);
	start_agent(&a, 2, 0);
	assert_int_equal(call_rc(&a, IVS_OP_PEERS, 0, 0, 0), 0);
	expect_quiet(&a, 100);

	start_agent(&b, 2, 1);
	expect_join(&a, 1, 2);
	expect_quiet(&a, 100);
	assert_int_equal(call_rc(&b, IVS_OP_PEERS, 0, 0, 0), 1);

	start_agent(&c, 2, 2);
	expect_join(&a, 2, 2);
	expect_join(&b, 2, 2);
	expect_quiet(&a, 100);
	expect_quiet(&b, 100);
	assert_int_equal(call_rc(&c, IVS_OP_PEERS, 0, 0, 0), 2);
	snprintf(line, sizeof(line), "peer 2 joined (pid %d", (int)c.pid);
	assert_true(ivs_log_wait(&srv, line, 1, 2 * IVS_SEC)); /* logged after announcing */

	/* B leaves: A and C hear it once, and nothing else */
	assert_int_equal(ivs_agent_quit(&b), 0);
	expect_event(&a, EV_LEFT, 1, 0);
	expect_event(&c, EV_LEFT, 1, 0);
	expect_quiet(&a, 100);
	expect_quiet(&c, 100);
	assert_int_equal(call_rc(&a, IVS_OP_PEERS, 0, 0, 0), 1);
	assert_true(ivs_log_wait(&srv, "peer 1 left: closed the connection", 1, 2 * IVS_SEC));

	/* a newcomer gets the next id, not B's */
	start_agent(&d, 2, 3);
	expect_join(&a, 3, 2);
	expect_join(&c, 3, 2);
	assert_int_equal(call_rc(&d, IVS_OP_PEERS, 0, 0, 0), 2);
	check_working(&a, &d, 1);
	check_working(&c, &d, 0);

	assert_int_equal(ivs_agent_quit(&c), 0);
	expect_event(&a, EV_LEFT, 2, 0);
	expect_event(&d, EV_LEFT, 2, 0);
	assert_int_equal(ivs_agent_quit(&d), 0);
	expect_event(&a, EV_LEFT, 3, 0);
	expect_quiet(&a, 100);
	assert_int_equal(ivs_agent_quit(&a), 0);

	assert_true(ivs_log_wait(&srv, " left: ", 4, 2 * IVS_SEC));
	assert_int_equal(ivs_log_count(&srv, " joined "), 4);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
}

static void test_setup_order(void **state)
{
	static const char *const args[] = { "-n", "2", "-l", "64k", NULL };
	struct ivs_agent a, b;
	struct stat st;
	struct ivs_reply r;
	int s, shm_fd, efd[3][2], v;
	volatile uint32_t *mem;
	const uint64_t one = 1;

	(void)state;
	start(args);
	start_agent(&a, 2, 0);
	start_agent(&b, 2, 1);
	expect_join(&a, 1, 2);

	s = raw_connect(srv.sock);
	expect_msg(s, 0, false, NULL);              /* version */
	expect_msg(s, 2, false, NULL);              /* our id */
	expect_msg(s, -1, true, &shm_fd);           /* the memory */
	assert_int_equal(fstat(shm_fd, &st), 0);
	assert_int_equal(st.st_size, 65536);
	for (v = 0; v < 2; v++)                     /* peer 0's vectors */
		expect_msg(s, 0, true, &efd[0][v]);
	for (v = 0; v < 2; v++)                     /* peer 1's vectors */
		expect_msg(s, 1, true, &efd[1][v]);
	for (v = 0; v < 2; v++)                     /* our own */
		expect_msg(s, 2, true, &efd[2][v]);
	{
		int64_t x;
		int fd;

		assert_int_equal(portal_ivshmem_recv_msg(s, &x, &fd, 300 * IVS_MS), -ETIMEDOUT);
	}
	for (v = 0; v < 6; v++)
		assert_true(is_eventfd(efd[v / 2][v % 2]));
	expect_join(&a, 2, 2);
	expect_join(&b, 2, 2);

	/* the fd for (peer 0, vector 1) is the eventfd agent 0 waits on */
	assert_int_equal(write(efd[0][1], &one, sizeof(one)), (ssize_t)sizeof(one));
	assert_int_equal(ivs_agent_call(&a, IVS_OP_WAIT, 0, 1, 5000, &r), 0);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.value, 1);
	assert_int_equal(call_rc(&a, IVS_OP_WAIT, 0, 0, 50), 0);
	/* and agent 1 rings us on vector 0 through the fd it was given */
	assert_int_equal(call_rc(&b, IVS_OP_RING, 2, 0, 0), 0);
	{
		struct pollfd pf = { .fd = efd[2][0], .events = POLLIN };

		assert_int_equal(poll(&pf, 1, 5000), 1);
	}

	/* one memory for all */
	mem = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
	assert_true(mem != MAP_FAILED);
	mem[32] = 0xc0ffee;
	assert_int_equal(ivs_agent_call(&a, IVS_OP_PEEK, 128, 0, 0, &r), 0);
	assert_int_equal(r.value, 0xc0ffee);
	assert_int_equal(ivs_agent_call(&b, IVS_OP_POKE, 65532, 77, 0, &r), 0);
	assert_int_equal(mem[65532 / 4], 77);
	munmap((void *)(uintptr_t)mem, 65536);

	close(s);
	for (v = 0; v < 6; v++)
		close(efd[v / 2][v % 2]);
	close(shm_fd);
	expect_event(&a, EV_LEFT, 2, 0);
	expect_event(&b, EV_LEFT, 2, 0);
	assert_int_equal(ivs_agent_quit(&a), 0);
	assert_int_equal(ivs_agent_quit(&b), 0);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
}

/* The peer's fate in the log: "left" (it was announced) or "never
 * announced". Waits for one of the two. */
static bool announced_then_left(uint32_t id)
{
	char left[48], dropped[48];
	int64_t end = ivs_now() + 5 * IVS_SEC;

	snprintf(left, sizeof(left), "peer %u left: ", (unsigned)id);
	snprintf(dropped, sizeof(dropped), "peer %u (pid", (unsigned)id);
	while (ivs_now() < end) {
		if (ivs_log_count(&srv, left) > 0)
			return true;
		if (ivs_log_count(&srv, dropped) > 0 &&
		    ivs_log_count(&srv, "never announced") > 0)
			return false;
		ivs_sleep(5 * IVS_MS);
	}
	ivs_log_print(&srv);
	fail_msg("peer %u: neither left nor dropped", (unsigned)id);
	return false;
}

static void test_hostile(void **state)
{
	static const char *const args[] = { "-n", "1", NULL };
	static const char garbage[] = "GET / HTTP/1.0\r\n\r\n";
	struct ivs_agent a, b, d, e;
	char block[65536];
	int s, i, status;
	ssize_t n;
	pid_t pid;

	(void)state;
	start(args);
	start_agent(&a, 1, 0);
	start_agent(&b, 1, 1);
	expect_join(&a, 1, 1);
	check_working(&a, &b, 0);

	/* garbage right after connecting: set up and announced, then
	 * dropped for the first byte and announced as gone */
	s = raw_connect(srv.sock);
	assert_int_equal(write(s, garbage, sizeof(garbage) - 1), (ssize_t)(sizeof(garbage) - 1));
	expect_join(&a, 2, 1);
	expect_event(&a, EV_LEFT, 2, 0);
	expect_join(&b, 2, 1);
	expect_event(&b, EV_LEFT, 2, 0);
	assert_true(drain_until_eof(s) >= 3); /* it got its set-up, then the door */
	close(s);
	assert_true(ivs_log_wait(&srv, "peer 2 left: sent", 1, 2 * IVS_SEC));
	check_working(&a, &b, 0);

	/* a flood: one read of it, then gone */
	s = raw_connect(srv.sock);
	assert_int_equal(fcntl(s, F_SETFL, O_NONBLOCK), 0);
	memset(block, 'x', sizeof(block));
	for (i = 0; i < 256; i++) {
		n = send(s, block, sizeof(block), MSG_NOSIGNAL);
		if (n < 0 && errno == EAGAIN) {
			ivs_sleep(IVS_MS);
			continue;
		}
		if (n < 0)
			break; /* EPIPE / ECONNRESET: the server dropped us */
	}
	expect_join(&a, 3, 1);
	expect_event(&a, EV_LEFT, 3, 0);
	expect_join(&b, 3, 1);
	expect_event(&b, EV_LEFT, 3, 0);
	close(s);
	assert_true(ivs_log_wait(&srv, "protocol violation", 2, 2 * IVS_SEC));
	check_working(&a, &b, 0);

	/* reads the version, then closes half-way through the set-up: if
	 * the server was still sending, the peer was never announced;
	 * otherwise its join and its leaving are */
	s = raw_connect(srv.sock);
	expect_msg(s, 0, false, NULL);
	close(s);
	if (announced_then_left(4)) {
		expect_join(&a, 4, 1);
		expect_event(&a, EV_LEFT, 4, 0);
		expect_join(&b, 4, 1);
		expect_event(&b, EV_LEFT, 4, 0);
	}
	expect_quiet(&a, 50);
	expect_quiet(&b, 50);

	/* sends nothing, shuts its side down (half-close) */
	s = raw_connect(srv.sock);
	assert_int_equal(shutdown(s, SHUT_WR), 0);
	expect_join(&a, 5, 1);
	expect_event(&a, EV_LEFT, 5, 0);
	expect_join(&b, 5, 1);
	expect_event(&b, EV_LEFT, 5, 0);
	assert_true(drain_until_eof(s) >= 3);
	close(s);
	check_working(&a, &b, 0);

	/* a real client killed with SIGKILL */
	start_agent(&d, 1, 6);
	expect_join(&a, 6, 1);
	expect_join(&b, 6, 1);
	check_working(&a, &d, 0);
	ivs_agent_kill(&d);
	expect_event(&a, EV_LEFT, 6, 0);
	expect_event(&b, EV_LEFT, 6, 0);
	assert_true(ivs_log_wait(&srv, "peer 6 left: ", 1, 2 * IVS_SEC));

	/* connects and dies at once: either the server got the whole set-up
	 * out first (then it was announced, and its leaving is), or the
	 * send failed (then nobody ever heard of it) */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sockaddr_un sa;
		int c = socket(AF_UNIX, SOCK_STREAM, 0);

		memset(&sa, 0, sizeof(sa));
		sa.sun_family = AF_UNIX;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv.sock);
		_exit(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(WEXITSTATUS(status), 0);
	if (announced_then_left(7)) {
		expect_join(&a, 7, 1);
		expect_event(&a, EV_LEFT, 7, 0);
		expect_join(&b, 7, 1);
		expect_event(&b, EV_LEFT, 7, 0);
	}
	expect_quiet(&a, 100);
	expect_quiet(&b, 100);

	/* and through all that: the server is up, the two still talk, and a
	 * newcomer joins normally */
	assert_int_equal(kill(srv.pid, 0), 0);
	check_working(&a, &b, 0);
	start_agent(&e, 1, 8);
	expect_join(&a, 8, 1);
	expect_join(&b, 8, 1);
	check_working(&b, &e, 0);
	assert_int_equal(ivs_agent_quit(&e), 0);
	assert_int_equal(ivs_agent_quit(&a), 0);
	assert_int_equal(ivs_agent_quit(&b), 0);
	assert_int_equal(ivs_log_count(&srv, "protocol violation"), 2);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
}

static void test_not_reading(void **state)
{
	static const char *const args[] = { "-n", "1", "--max-peers", "4", NULL };
	struct ivs_agent e;
	int stuck, s, i;

	(void)state;
	start(args);
	stuck = raw_connect(srv.sock);        /* id 0, never reads */
	assert_true(ivs_log_wait(&srv, "peer 0 joined", 1, 2 * IVS_SEC));

	/* churn: every join and leave queues messages for the stuck one */
	for (i = 0; i < 5000 && ivs_log_count(&srv, "not reading") == 0; i++) {
		s = raw_connect(srv.sock);
		expect_msg(s, 0, false, NULL);
		close(s);
		if (i % 64 == 63)
			ivs_sleep(IVS_MS);
	}
	assert_true(ivs_log_wait(&srv, "peer 0 left: not reading", 1, 5 * IVS_SEC));
	print_message("    the stuck client was dropped after %d joins and leaves\n", i);
	close(stuck);

	/* the server goes on */
	assert_int_equal(ivs_agent_start(&e, srv.sock, 1), 0);
	assert_true(e.id > 0);
	assert_int_equal(ivs_agent_quit(&e), 0);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
}

static void test_max_peers(void **state)
{
	static const char *const args[] = { "-n", "1", "--max-peers", "2", NULL };
	portal_ivshmem_client_t *c = NULL;
	struct ivs_agent a, b;
	int i;

	(void)state;
	start(args);
	start_agent(&a, 1, 0);
	start_agent(&b, 1, 1);
	expect_join(&a, 1, 1);

	for (i = 0; i < 4; i++)
		assert_int_equal(portal_ivshmem_client_connect(srv.sock, 1, 2 * IVS_SEC, &c),
				 -ECONNREFUSED);
	assert_null(c);
	assert_true(ivs_log_wait(&srv, "refused a connection", 4, 2 * IVS_SEC));
	assert_true(ivs_log_count(&srv, "--max-peers 2") >= 4);
	expect_quiet(&a, 100);
	expect_quiet(&b, 100);
	check_working(&a, &b, 0);

	/* room again once one leaves; refused ones used no id */
	assert_int_equal(ivs_agent_quit(&b), 0);
	expect_event(&a, EV_LEFT, 1, 0);
	assert_int_equal(portal_ivshmem_client_connect(srv.sock, 1, 2 * IVS_SEC, &c), 0);
	assert_int_equal(portal_ivshmem_client_id(c), 2);
	expect_join(&a, 2, 1);
	portal_ivshmem_client_close(c);
	expect_event(&a, EV_LEFT, 2, 0);
	assert_int_equal(ivs_agent_quit(&a), 0);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
}

static void test_file_backed(void **state)
{
	struct portal_region_opts ro = { .size = 1 << 20 };
	portal_region_t *host = NULL, *view = NULL;
	portal_ivshmem_client_t *c = NULL;
	char uri[160], fduri[32], name[64], shmpath[96];
	const char *args[8];
	struct stat st;
	volatile uint32_t *mem;
	int fd;

	(void)state;
	/* The host lays a Portal region into the file first (file: backend)... */
	snprintf(uri, sizeof(uri), "file:%s", srv.shm);
	assert_int_equal(portal_region_create(uri, &ro, &host), 0);

	/* ... and the server serves that very file; its size is kept */
	args[0] = "-m";
	args[1] = srv.shm;
	args[2] = NULL;
	start(args);
	assert_true(ivs_log_wait(&srv, "1048576 bytes", 1, 2 * IVS_SEC));
	assert_int_equal(portal_ivshmem_client_connect(srv.sock, 1, 2 * IVS_SEC, &c), 0);
	assert_int_equal(portal_ivshmem_client_shm_size(c), 1 << 20);

	/* a client attaches the region through the fd it was given */
	snprintf(fduri, sizeof(fduri), "fd:%d", portal_ivshmem_client_shm_fd(c));
	assert_int_equal(portal_region_attach(fduri, NULL, &view), 0);
	assert_int_equal(portal_region_epoch(view), portal_region_epoch(host));
	mem = (volatile uint32_t *)((char *)portal_region_base(view) + (1 << 19));
	mem[0] = 0x5157;
	assert_int_equal(((volatile uint32_t *)((char *)portal_region_base(host) + (1 << 19)))[0],
			 0x5157);
	assert_int_equal(portal_region_detach(view), 0);
	portal_ivshmem_client_close(c);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
	/* the server leaves the file alone */
	assert_int_equal(stat(srv.shm, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);
	assert_int_equal(portal_region_detach(host), 0);

	/* a different --size is refused, not applied */
	args[2] = "-l";
	args[3] = "2m";
	args[4] = NULL;
	assert_int_equal(ivs_srv_start(&srv, args), -1);
	assert_true(ivs_log_count(&srv, "but --size says") == 1);
	assert_int_equal(stat(srv.shm, &st), 0);
	assert_int_equal(st.st_size, 1 << 20);

	/* an existing file that is not a power of two */
	fd = open(srv.shm, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 3 << 20), 0);
	close(fd);
	args[2] = NULL;
	assert_int_equal(ivs_srv_start(&srv, args), -1);
	assert_int_equal(ivs_log_count(&srv, "not a power of two"), 1);

	/* a new file is created at --size */
	snprintf(shmpath, sizeof(shmpath), "%s/new-shm", srv.dir);
	args[1] = shmpath;
	args[2] = "-l";
	args[3] = "64k";
	args[4] = NULL;
	start(args);
	assert_int_equal(stat(shmpath, &st), 0);
	assert_int_equal(st.st_size, 65536);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);

	/* a POSIX shm object by name */
	snprintf(name, sizeof(name), "portal-ivs-test-%d", (int)getpid());
	args[0] = "-M";
	args[1] = name;
	start(args);
	snprintf(shmpath, sizeof(shmpath), "/dev/shm/%s", name);
	assert_int_equal(stat(shmpath, &st), 0);
	assert_int_equal(st.st_size, 65536);
	assert_int_equal(portal_ivshmem_client_connect(srv.sock, 1, 2 * IVS_SEC, &c), 0);
	assert_int_equal(portal_ivshmem_client_shm_size(c), 65536);
	portal_ivshmem_client_close(c);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
	unlink(shmpath);
}

/* Run the server with ARGS (foreground, our socket) and return its exit
 * code; it must exit by itself within 5 s. */
static int run_to_exit(const char *const *args)
{
	pid_t pid = ivs_srv_spawn(&srv, args, true);
	int status = 0;

	assert_true(pid > 0);
	if (ivs_wait_pid(pid, 5 * IVS_SEC, &status) < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail_msg("the server did not exit");
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_options(void **state)
{
	static const char *const bad_size[] = { "-l", "3m", NULL };
	static const char *const bad_size2[] = { "-l", "12q", NULL };
	static const char *const zero_vec[] = { "-n", "0", NULL };
	static const char *const many_vec[] = { "-n", "65", NULL };
	static const char *const zero_peers[] = { "--max-peers", "0", NULL };
	static const char *const many_peers[] = { "--max-peers", "65537", NULL };
	static const char *const unknown[] = { "--frobnicate", NULL };
	static const char *const extra[] = { "stray", NULL };
	static const char *const both[] = { "-m", "/tmp/x", "-M", "x", NULL };
	static const char *const help[] = { "--help", NULL };
	struct ivs_srv second;
	struct sockaddr_un sa;
	int s, fd;

	(void)state;
	assert_int_equal(run_to_exit(bad_size), 2);
	assert_int_equal(ivs_log_count(&srv, "not a power of two"), 1);
	assert_int_equal(run_to_exit(bad_size2), 2);
	assert_int_equal(run_to_exit(zero_vec), 2);
	assert_int_equal(run_to_exit(many_vec), 2);
	assert_int_equal(run_to_exit(zero_peers), 2);
	assert_int_equal(run_to_exit(many_peers), 2);
	assert_int_equal(run_to_exit(unknown), 2);
	assert_int_equal(run_to_exit(extra), 2);
	assert_int_equal(run_to_exit(both), 2);
	assert_int_equal(run_to_exit(help), 0);
	assert_true(ivs_log_count(&srv, "usage: portal-ivshmem-server") >= 1);

	/* a live server on the socket: the second one refuses */
	start(NULL);
	assert_int_equal(ivs_srv_init(&second), 0);
	snprintf(second.sock, sizeof(second.sock), "%s", srv.sock);
	assert_int_equal(ivs_srv_start(&second, NULL), -1);
	assert_int_equal(ivs_log_count(&second, "already listening"), 1);
	ivs_srv_cleanup(&second);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);

	/* a stale socket file (nobody listening) is replaced */
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", srv.sock);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	start(NULL);
	assert_int_equal(ivs_log_count(&srv, "removing stale socket"), 1);
	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);

	/* something else at the path is not touched */
	fd = open(srv.sock, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(run_to_exit(NULL), 1);
	assert_int_equal(ivs_log_count(&srv, "is not a socket"), 1);
	assert_int_equal(access(srv.sock, F_OK), 0);
	unlink(srv.sock);
}

static void test_shutdown(void **state)
{
	static const char *const args[] = { "-n", "1", NULL };
	static const char *const daemon_args[] = { "-n", "1", NULL };
	struct ivs_agent a, b;
	struct ivs_reply r;
	portal_ivshmem_client_t *c = NULL;
	int status;
	pid_t parent, daemon_pid;
	int64_t end;

	(void)state;
	start(args);
	start_agent(&a, 1, 0);
	start_agent(&b, 1, 1);
	expect_join(&a, 1, 1);
	kill(srv.pid, SIGUSR1);
	assert_true(ivs_log_wait(&srv, "status: 2 peers [0 1]", 1, 2 * IVS_SEC));

	assert_int_equal(ivs_srv_stop(&srv, SIGTERM), 0);
	assert_int_equal(ivs_log_count(&srv, "SIGTERM: shutting down, closing 2 peers"), 1);
	assert_int_equal(ivs_log_count(&srv, "stopped"), 1);
	assert_int_equal(access(srv.sock, F_OK), -1);
	assert_int_equal(access(srv.pidf, F_OK), -1);
	/* the clients see the end of the stream */
	assert_int_equal(ivs_agent_call(&a, IVS_OP_EVENT, 0, 0, 2000, &r), 0);
	assert_int_equal(r.rc, PORTAL_EPEERDEAD);
	assert_int_equal(ivs_agent_call(&b, IVS_OP_EVENT, 0, 0, 2000, &r), 0);
	assert_int_equal(r.rc, PORTAL_EPEERDEAD);
	/* their eventfds still work between them */
	check_working(&a, &b, 0);
	assert_int_equal(ivs_agent_quit(&a), 0);
	assert_int_equal(ivs_agent_quit(&b), 0);

	/* SIGINT too */
	start(args);
	assert_int_equal(ivs_srv_stop(&srv, SIGINT), 0);
	assert_int_equal(ivs_log_count(&srv, "SIGINT: shutting down"), 1);
	assert_int_equal(access(srv.sock, F_OK), -1);

	/* daemon mode: the parent exits once the daemon listens */
	unlink(srv.pidf);
	parent = ivs_srv_spawn(&srv, daemon_args, false);
	assert_true(parent > 0);
	assert_int_equal(ivs_wait_pid(parent, 5 * IVS_SEC, &status), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	daemon_pid = ivs_read_pid(srv.pidf);
	assert_true(daemon_pid > 0 && daemon_pid != parent);
	assert_int_equal(kill(daemon_pid, 0), 0);
	assert_int_equal(portal_ivshmem_client_connect(srv.sock, 1, 2 * IVS_SEC, &c), 0);
	portal_ivshmem_client_close(c);
	kill(daemon_pid, SIGTERM);
	end = ivs_now() + 5 * IVS_SEC;
	while ((access(srv.sock, F_OK) == 0 || access(srv.pidf, F_OK) == 0) && ivs_now() < end)
		ivs_sleep(5 * IVS_MS);
	assert_int_equal(access(srv.sock, F_OK), -1);
	assert_int_equal(access(srv.pidf, F_OK), -1);
	assert_true(ivs_log_wait(&srv, "stopped", 3, 2 * IVS_SEC));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_join_leave, setup, teardown),
		cmocka_unit_test_setup_teardown(test_setup_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_reading, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_peers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_backed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_options, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
	};

	(void)ivs_bindir(); /* skips (77) when not run through CTest */
	signal(SIGPIPE, SIG_IGN);
	alarm(170);
	return cmocka_run_group_tests_name("portal.ivshmem.server", tests, NULL, NULL);
}
