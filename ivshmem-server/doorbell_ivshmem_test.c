/* SPDX-License-Identifier: MIT */
/*
 * doorbell_ivshmem_test.c - portal.ivshmem.doorbell: the ivshmem doorbell
 * backend, host side, between two processes that joined a real
 * portal-ivshmem-server. Both doorbells and the work counters live in the
 * server's shared memory; each side waits on its own vector-0 eventfd and
 * rings the other's, as a host process and a QEMU guest would.
 *
 *   timeout      a wait with nobody ringing times out on time, disarmed
 *   fd_and_wake  the waiter's fd is its own eventfd; it becomes readable
 *                when the peer rings an armed doorbell, and only then; a
 *                sleeping wait() is woken by the other process
 *   roundtrips   ping-pong through both doorbells, every round trip with a
 *                5 s deadline (a lost wake-up fails the test), every value
 *                checked; spin off (each side sleeps on its eventfd) and
 *                default spin. Prints median, p99, min and max per run.
 *                PORTAL_IVSHMEM_ROUNDTRIPS sets the count per run (1000).
 *   peer_leaves  the server announces the child's leaving; ringing its
 *                stale eventfd is harmless
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "ivshmem-server/ivs_test.h"
#include "portal/doorbell.h"

#define SHM_SIZE   (1u << 20)
#define OFF_TO_PARENT 0        /* doorbell: parent waits, child rings */
#define OFF_TO_CHILD  1024     /* doorbell: child waits, parent rings */
#define OFF_WORDS     4096

struct words {
	_Atomic uint64_t ping;    /* parent: last value sent; release */
	uint8_t pad0[56];
	_Atomic uint64_t pong;    /* child: last value answered; release */
	uint8_t pad1[56];
};

enum child_op {
	OP_PINGPONG = 'P',  /* a = count, b = 1: default spin, 0: no spin */
	OP_NOTIFY   = 'N',  /* pong += 1, notify; reply: notify's result */
	OP_DELAYED  = 'D',  /* wait until the parent is armed, 20 ms, then as N */
	OP_QUIT     = 'Q',
};

static struct {
	struct ivs_srv srv;
	portal_ivshmem_client_t *client;
	char *shm;
	struct words *w;
	pid_t child;
	int to, from;
	uint32_t child_id;
	portal_doorbell_t *wt;   /* parent waits on to_parent */
	portal_doorbell_t *nt;   /* parent rings to_child */
} fx;

static int ready_pong(void *arg)
{
	const uint64_t *want = arg;

	/* pairs with the child's release store of pong */
	return atomic_load_explicit(&fx.w->pong, memory_order_acquire) >= *want;
}

/* ------------------------------------------------------------------ */
/* The child: its own client, its own handles                          */
/* ------------------------------------------------------------------ */

struct child_ctx {
	struct words *w;
	portal_doorbell_t *wt, *nt;
	struct portal_doorbell_shm *to_parent;
};

static int child_ready_ping(void *arg)
{
	struct child_ctx *c = arg;
	uint64_t want = atomic_load_explicit(&c->w->pong, memory_order_relaxed) + 1;

	/* pairs with the parent's release store of ping */
	return atomic_load_explicit(&c->w->ping, memory_order_acquire) >= want;
}

static portal_doorbell_t *child_attach(char *shm, size_t off, enum portal_doorbell_role role,
				       int efd, int64_t spin)
{
	struct portal_doorbell_opts o;
	portal_doorbell_t *d = NULL;

	memset(&o, 0, sizeof(o));
	o.eventfd = efd;
	o.stream_fd = -1;
	o.spin_ns = spin;
	if (portal_doorbell_attach(shm + off, 512, role, &o, &d) != 0)
		return NULL;
	return d;
}

static void child_main(const char *sock, int in, int out)
{
	portal_ivshmem_client_t *c = NULL;
	struct child_ctx cx;
	struct ivs_cmd cmd;
	struct ivs_reply r;
	char *shm;
	int own, peer;

	alarm(150);
	memset(&r, 0, sizeof(r));
	r.rc = portal_ivshmem_client_connect(sock, 2, 5 * IVS_SEC, &c);
	if (r.rc == 0)
		r.rc = (int32_t)portal_ivshmem_client_id(c);
	ivs_write_all(out, &r, sizeof(r));
	if (!c)
		_exit(2);
	shm = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		   portal_ivshmem_client_shm_fd(c), 0);
	if (shm == MAP_FAILED)
		_exit(3);
	own = portal_ivshmem_client_eventfd(c, portal_ivshmem_client_id(c), 0);
	peer = portal_ivshmem_client_eventfd(c, 0, 0); /* the parent is peer 0 */
	cx.w = (struct words *)(shm + OFF_WORDS);
	cx.to_parent = (struct portal_doorbell_shm *)(shm + OFF_TO_PARENT);
	cx.nt = child_attach(shm, OFF_TO_PARENT, PORTAL_DOORBELL_NOTIFIER, peer, 0);
	cx.wt = NULL;
	if (own < 0 || peer < 0 || !cx.nt)
		_exit(4);

	while (ivs_read_all(in, &cmd, sizeof(cmd), -1)) {
		memset(&r, 0, sizeof(r));
		switch (cmd.op) {
		case OP_PINGPONG: {
			uint64_t i, base = atomic_load_explicit(&cx.w->pong, memory_order_relaxed);

			cx.wt = child_attach(shm, OFF_TO_CHILD, PORTAL_DOORBELL_WAITER, own,
					     cmd.b ? 0 : -1);
			if (!cx.wt) {
				r.rc = -1000;
				break;
			}
			for (i = 1; i <= cmd.a; i++) {
				int rc = portal_doorbell_wait(cx.wt, child_ready_ping, &cx, 5 * IVS_SEC);

				if (rc != 0) {
					r.rc = rc;
					break;
				}
				if (atomic_load_explicit(&cx.w->ping, memory_order_acquire) != base + i) {
					r.rc = -2000; /* out of sequence */
					break;
				}
				atomic_store_explicit(&cx.w->pong, base + i, memory_order_release);
				rc = portal_doorbell_notify(cx.nt);
				if (rc < 0) {
					r.rc = rc;
					break;
				}
			}
			{
				struct portal_doorbell_stats st;

				portal_doorbell_stats(cx.wt, &st);
				r.kind = (uint32_t)st.sleeps;
				r.peer = (uint32_t)st.spin_hits;
			}
			portal_doorbell_detach(cx.wt);
			cx.wt = NULL;
			break;
		}
		case OP_DELAYED: {
			int64_t end = ivs_now() + 5 * IVS_SEC;

			while (atomic_load(&cx.to_parent->armed) == 0 && ivs_now() < end)
				ivs_sleep(IVS_MS / 10);
			ivs_sleep(20 * IVS_MS);
		}
			/* fall through */
		case OP_NOTIFY:
			atomic_fetch_add_explicit(&cx.w->pong, 1, memory_order_release);
			r.rc = portal_doorbell_notify(cx.nt);
			break;
		case OP_QUIT:
		default:
			portal_doorbell_detach(cx.nt);
			portal_ivshmem_client_close(c);
			ivs_write_all(out, &r, sizeof(r));
			_exit(0);
		}
		if (!ivs_write_all(out, &r, sizeof(r)))
			break;
	}
	_exit(5);
}

static int child_call(int op, uint32_t a, uint32_t b, int timeout_ms, struct ivs_reply *r)
{
	struct ivs_cmd cmd = { .op = op, .a = a, .b = b, .timeout_ms = timeout_ms };

	if (!ivs_write_all(fx.to, &cmd, sizeof(cmd)))
		return -1;
	return ivs_read_all(fx.from, r, sizeof(*r), timeout_ms) ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* Group set-up: server, parent client, doorbells, child                */
/* ------------------------------------------------------------------ */

static portal_doorbell_t *parent_attach(size_t off, enum portal_doorbell_role role, int efd,
					int64_t spin)
{
	struct portal_doorbell_opts o;
	portal_doorbell_t *d = NULL;

	memset(&o, 0, sizeof(o));
	o.eventfd = efd;
	o.stream_fd = -1;
	o.spin_ns = spin;
	assert_int_equal(portal_doorbell_attach(fx.shm + off, 512, role, &o, &d), 0);
	return d;
}

static int group_setup(void **state)
{
	static const char *const args[] = { "-n", "2", "-l", "1m", NULL };
	struct portal_ivshmem_event ev;
	struct ivs_reply r;
	int to[2], from[2], k, seen = 0;

	(void)state;
	if (ivs_srv_init(&fx.srv) != 0 || ivs_srv_start(&fx.srv, args) != 0) {
		ivs_log_print(&fx.srv);
		return -1;
	}
	if (portal_ivshmem_client_connect(fx.srv.sock, 2, 5 * IVS_SEC, &fx.client) != 0)
		return -1;
	fx.shm = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		      portal_ivshmem_client_shm_fd(fx.client), 0);
	if (fx.shm == MAP_FAILED)
		return -1;
	fx.w = (struct words *)(fx.shm + OFF_WORDS);
	if (portal_doorbell_init(fx.shm + OFF_TO_PARENT, 512, PORTAL_DOORBELL_IVSHMEM) != 0 ||
	    portal_doorbell_init(fx.shm + OFF_TO_CHILD, 512, PORTAL_DOORBELL_IVSHMEM) != 0)
		return -1;

	if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0)
		return -1;
	fx.child = fork();
	if (fx.child < 0)
		return -1;
	if (fx.child == 0) {
		close(to[1]);
		close(from[0]);
		child_main(fx.srv.sock, to[0], from[1]);
	}
	close(to[0]);
	close(from[1]);
	fx.to = to[1];
	fx.from = from[0];
	if (!ivs_read_all(fx.from, &r, sizeof(r), 15000) || r.rc < 0)
		return -1;
	fx.child_id = (uint32_t)r.rc;

	/* learn the child's eventfds from the server's announcement */
	while (seen < 2) {
		k = portal_ivshmem_client_process(fx.client, &ev, 5 * IVS_SEC);
		if (k != 1 || ev.kind != PORTAL_IVSHMEM_EV_PEER_VECTOR || ev.peer != fx.child_id)
			return -1;
		seen++;
	}
	return 0;
}

static int group_teardown(void **state)
{
	struct ivs_reply r;
	int status;

	(void)state;
	if (fx.child > 0) {
		(void)child_call(OP_QUIT, 0, 0, 5000, &r);
		if (ivs_wait_pid(fx.child, 5 * IVS_SEC, &status) < 0) {
			kill(fx.child, SIGKILL);
			waitpid(fx.child, &status, 0);
		}
	}
	portal_doorbell_detach(fx.wt);
	portal_doorbell_detach(fx.nt);
	if (fx.shm && fx.shm != MAP_FAILED)
		munmap(fx.shm, SHM_SIZE);
	portal_ivshmem_client_close(fx.client);
	ivs_srv_stop(&fx.srv, SIGTERM);
	ivs_srv_cleanup(&fx.srv);
	return 0;
}

static int own_efd(void)
{
	return portal_ivshmem_client_eventfd(fx.client, portal_ivshmem_client_id(fx.client), 0);
}

static int child_efd(void)
{
	return portal_ivshmem_client_eventfd(fx.client, fx.child_id, 0);
}

/* ------------------------------------------------------------------ */

static void test_timeout(void **state)
{
	portal_doorbell_t *wt = parent_attach(OFF_TO_PARENT, PORTAL_DOORBELL_WAITER, own_efd(), 0);
	uint64_t want = atomic_load(&fx.w->pong) + 1;
	int64_t t0, dt;

	(void)state;
	assert_int_equal(portal_doorbell_get_backend(wt), PORTAL_DOORBELL_IVSHMEM);
	t0 = ivs_now();
	assert_int_equal(portal_doorbell_wait(wt, ready_pong, &want, 50 * IVS_MS), -ETIMEDOUT);
	dt = ivs_now() - t0;
	assert_true(dt >= 50 * IVS_MS);
	assert_true(dt < 2 * IVS_SEC);
	assert_int_equal(atomic_load(&((struct portal_doorbell_shm *)fx.shm)->armed), 0);
	assert_int_equal(portal_doorbell_wait(wt, ready_pong, &want, 0), -ETIMEDOUT);
	portal_doorbell_detach(wt);
}

static bool fd_readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void test_fd_and_wake(void **state)
{
	portal_doorbell_t *wt = parent_attach(OFF_TO_PARENT, PORTAL_DOORBELL_WAITER, own_efd(), -1);
	struct portal_doorbell_stats st;
	struct ivs_reply r;
	uint64_t want;
	int fd;

	(void)state;
	fd = portal_doorbell_fd(wt);
	assert_true(fd >= 0);
	assert_int_equal(portal_doorbell_fd(wt), fd);
	assert_false(fd_readable(fd, 0));

	/* armed, nothing there; the other process publishes and rings */
	want = atomic_load(&fx.w->pong) + 1;
	assert_int_equal(portal_doorbell_arm(wt, ready_pong, &want), 0);
	assert_int_equal(child_call(OP_NOTIFY, 0, 0, 5000, &r), 0);
	assert_int_equal(r.rc, 1);        /* it found us armed and rang */
	assert_true(fd_readable(fd, 5000));
	assert_int_equal(portal_doorbell_ack(wt), 0);
	assert_false(fd_readable(fd, 0));
	assert_true(ready_pong(&want) > 0);

	/* disarmed: its notify makes no system call, the fd stays quiet */
	assert_int_equal(child_call(OP_NOTIFY, 0, 0, 5000, &r), 0);
	assert_int_equal(r.rc, 0);
	assert_false(fd_readable(fd, 50));

	/* a sleeping wait() is woken by the other process */
	want = atomic_load(&fx.w->pong) + 1;
	{
		struct ivs_cmd cmd = { .op = OP_DELAYED };

		assert_true(ivs_write_all(fx.to, &cmd, sizeof(cmd)));
	}
	assert_int_equal(portal_doorbell_wait(wt, ready_pong, &want, 5 * IVS_SEC), 0);
	assert_true(ivs_read_all(fx.from, &r, sizeof(r), 5000));
	assert_int_equal(r.rc, 1);
	portal_doorbell_stats(wt, &st);
	assert_true(st.sleeps >= 1);
	assert_int_equal(atomic_load(&((struct portal_doorbell_shm *)fx.shm)->armed), 0);
	portal_doorbell_detach(wt);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* One run of N round trips. Returns the median in ns. */
static int64_t roundtrip_run(uint32_t n, bool spin)
{
	portal_doorbell_t *wt = parent_attach(OFF_TO_PARENT, PORTAL_DOORBELL_WAITER, own_efd(),
					      spin ? 0 : -1);
	portal_doorbell_t *nt = parent_attach(OFF_TO_CHILD, PORTAL_DOORBELL_NOTIFIER, child_efd(), 0);
	struct portal_doorbell_stats wst, nst;
	struct ivs_cmd cmd = { .op = OP_PINGPONG, .a = n, .b = spin };
	struct ivs_reply r;
	int64_t *lat = calloc(n, sizeof(*lat)), t0, med;
	uint64_t base = atomic_load(&fx.w->pong), want;
	uint32_t i;
	int rc = 0;

	assert_non_null(lat);
	/* the earlier tests moved pong on their own; start level */
	atomic_store(&fx.w->ping, base);
	assert_true(ivs_write_all(fx.to, &cmd, sizeof(cmd)));
	for (i = 1; i <= n; i++) {
		want = base + i;
		t0 = ivs_now();
		atomic_store_explicit(&fx.w->ping, want, memory_order_release);
		rc = portal_doorbell_notify(nt);
		if (rc < 0)
			break;
		rc = portal_doorbell_wait(wt, ready_pong, &want, 5 * IVS_SEC);
		if (rc != 0)
			break;
		lat[i - 1] = ivs_now() - t0;
	}
	assert_true(ivs_read_all(fx.from, &r, sizeof(r), 30000));
	portal_doorbell_stats(wt, &wst);
	portal_doorbell_stats(nt, &nst);
	portal_doorbell_detach(wt);
	portal_doorbell_detach(nt);
	if (rc != 0 || r.rc != 0)
		fail_msg("round trip %u: parent %d, child %d (a lost wake-up shows as %d)", i, rc,
			 r.rc, -ETIMEDOUT);
	assert_int_equal(atomic_load(&fx.w->pong), base + n);

	qsort(lat, n, sizeof(*lat), cmp_i64);
	med = lat[n / 2];
	print_message("    %-12s %u round trips: median %.1f us, p99 %.1f us, min %.1f us, "
		      "max %.1f us; parent rang %llu, slept %llu; child slept %u, spin hits %u\n",
		      spin ? "default spin" : "no spin", n, (double)med / 1e3,
		      (double)lat[(size_t)n * 99 / 100] / 1e3, (double)lat[0] / 1e3,
		      (double)lat[n - 1] / 1e3, (unsigned long long)nst.rings,
		      (unsigned long long)wst.sleeps, r.kind, r.peer);
	if (!spin) {
		/* Worth something only if both sides really slept on their
		 * eventfds, many times (here typically 55% to 70% of the
		 * round trips; the rest found the answer already there). */
		assert_true(nst.rings >= n / 10);
		assert_true(r.kind >= n / 10);
		assert_true(wst.sleeps >= n / 10);
	}
	free(lat);
	return med;
}

static void test_roundtrips(void **state)
{
	const char *env = getenv("PORTAL_IVSHMEM_ROUNDTRIPS");
	uint32_t n = 1000;
	int run;

	(void)state;
	if (env && atoi(env) > 0)
		n = (uint32_t)atoi(env);
	print_message("    (machine: 2 shared cores, noisy; ivshmem host doorbell = eventfds "
		      "from portal-ivshmem-server)\n");
	for (run = 0; run < 3; run++)
		roundtrip_run(n, false);
	roundtrip_run(n, true);
}

static void test_peer_leaves(void **state)
{
	struct portal_ivshmem_event ev;
	struct ivs_reply r;
	portal_doorbell_t *nt;
	int status;

	(void)state;
	nt = parent_attach(OFF_TO_CHILD, PORTAL_DOORBELL_NOTIFIER, child_efd(), 0);
	assert_int_equal(child_call(OP_QUIT, 0, 0, 5000, &r), 0);
	assert_int_equal(ivs_wait_pid(fx.child, 5 * IVS_SEC, &status), 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	fx.child = -1;
	assert_int_equal(portal_ivshmem_client_process(fx.client, &ev, 5 * IVS_SEC), 1);
	assert_int_equal(ev.kind, PORTAL_IVSHMEM_EV_PEER_LEFT);
	assert_int_equal(ev.peer, fx.child_id);
	assert_int_equal(portal_ivshmem_client_eventfd(fx.client, fx.child_id, 0), -ENOENT);
	assert_int_equal(portal_ivshmem_client_peers(fx.client, NULL, 0), 0);
	/* a stale `armed` makes us ring the departed peer's eventfd: harmless */
	atomic_store(&((struct portal_doorbell_shm *)(fx.shm + OFF_TO_CHILD))->armed, 1);
	assert_int_equal(portal_doorbell_notify(nt), 1);
	portal_doorbell_detach(nt);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_fd_and_wake),
		cmocka_unit_test(test_roundtrips),
		cmocka_unit_test(test_peer_leaves),
	};

	(void)ivs_bindir(); /* skips (77) when not run through CTest */
	signal(SIGPIPE, SIG_IGN);
	alarm(170);
	return cmocka_run_group_tests_name("portal.ivshmem.doorbell", tests, group_setup,
					   group_teardown);
}
