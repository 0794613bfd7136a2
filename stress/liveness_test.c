/* SPDX-License-Identifier: MIT */
/*
 * liveness_test.c - a survivor blocked in portal_doorbell_wait (no timeout)
 * while its peer, a real process, is killed at random moments.
 *
 * The program is its own peer: the survivor fork+execs /proc/self/exe with
 * "peer ..." arguments. The peer attaches side 1 of a shm: region and
 * publishes numbered messages (sequence number and a checksum) into a
 * single-producer log, ringing a doorbell after each burst. The survivor
 * drains the log, checking every sequence number and checksum, and sleeps
 * in portal_doorbell_wait(..., -1) with a liveness watch on side 1.
 *
 *   lock         the peer is SIGKILLed; the OS lock on its slot tells
 *                (futex backend: at the next check; eventfd backend: the
 *                peer's pidfd is in the poll set, so at once)
 *   heartbeat    the peer attaches as a VM (no lock; a heartbeat thread),
 *                and is SIGSTOPped: alive but silent, as a paused guest.
 *                The survivor watches with the heartbeat method only
 *   restart      a VM peer pauses itself, is judged dead, and a new
 *                incarnation takes its side: the survivor sees RESTARTED
 *                with a new epoch, the old one is resumed and finds itself
 *                fenced (portal_region_check_self: PORTAL_ESTALE), and the
 *                log goes on from the new incarnation without a gap
 *
 * Every kill must end the wait with PORTAL_EPEERDEAD within the bound, and
 * only after everything the peer published was drained. The detection
 * times (from the kill() call to the wait's return, on the survivor's
 * clock) are printed as
 *   liveness: method=lock backend=futex kills=N detect_p50_us=.. p99_us=.. max_us=.. bound_us=..
 * PORTAL_LIVENESS_KILLS sets the kills per case (default 100 for the lock,
 * 60 for the heartbeat, whose every kill costs a stall of 150 ms).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "portal/doorbell.h"
#include "portal/region.h"
#include "tests/test_util.h"

#define MS  INT64_C(1000000)
#define SEC INT64_C(1000000000)

#define LOG_CAP      1024u            /* messages in the log, power of two */
#define CHECK_NS     (10 * MS)        /* the waiter's liveness check interval */
#define STALL_NS     (150 * MS)       /* heartbeat: dead after this; well above
                                       * the scheduling gaps of a loaded
                                       * 2-core machine */
#define RESTART_STALL_NS (500 * MS)   /* restart: B must not be judged dead
                                       * while we drain it */
#define BEAT_NS      (2 * MS)         /* the VM peer's heartbeat period */
#define SLACK_NS     (1000 * MS)      /* generous: a loaded 2-core machine */
#define PAUSE_AFTER  300u             /* restart: the old peer pauses here */
#define FENCED_EXIT  3                /* the old peer's exit status once fenced */

struct msg {
	uint64_t seq;   /* 1, 2, 3, ... across incarnations */
	uint64_t check; /* msg_check(seq) */
};

/* The log: one producer (side 1), one consumer (side 0). */
struct log {
	_Atomic uint64_t published; /* producer: messages written; release after the slot */
	uint8_t pad0[120];
	_Atomic uint64_t consumed;  /* consumer: messages taken; release after reading */
	uint8_t pad1[120];
	struct msg slot[LOG_CAP];
};

static uint64_t msg_check(uint64_t seq)
{
	uint64_t x = seq * UINT64_C(0x9E3779B97F4A7C15);

	return x ^ (x >> 29) ^ UINT64_C(0x5A5A5A5A5A5A5A5A);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ------------------------------------------------------------------ */
/* The peer                                                             */
/* ------------------------------------------------------------------ */

enum peer_mode { MODE_LOCK, MODE_VM, MODE_VM_PAUSE };

/* peer URI BACKEND EVENTFD MODE SEED */
static int peer_main(int argc, char **argv)
{
	struct portal_region_opts ro = { .side = 1, .ident = "liveness peer" };
	struct portal_doorbell_opts dopts;
	struct portal_object_info info;
	portal_region_t *r;
	portal_doorbell_t *n;
	struct log *lg;
	enum peer_mode mode;
	uint64_t pub, seed, life = 0;
	int rc;

	if (argc != 7)
		return 10;
	mode = (enum peer_mode)atoi(argv[5]);
	seed = strtoull(argv[6], NULL, 0) | 1;
	if (mode != MODE_LOCK)
		ro.flags = PORTAL_REGION_F_VM;
	rc = portal_region_attach(argv[2], &ro, &r);
	if (rc) {
		fprintf(stderr, "peer: attach: %s\n", portal_strerror(rc));
		return 11;
	}
	if (mode != MODE_LOCK && portal_region_heartbeat_start(r, BEAT_NS) != 0)
		return 12;
	if (portal_region_lookup(r, "log", PORTAL_OBJ_USER, &info) != 0)
		return 13;
	lg = info.addr;
	memset(&dopts, 0, sizeof(dopts));
	dopts.eventfd = atoi(argv[4]);
	dopts.stream_fd = -1;
	if (portal_doorbell_open(r, "bell", PORTAL_DOORBELL_NOTIFIER, &dopts, &n) != 0)
		return 14;
	/* A restarting producer goes on from what the last one published. */
	pub = atomic_load_explicit(&lg->published, memory_order_acquire);
	for (;;) {
		unsigned burst = 1 + (unsigned)(rnd(&seed) % 32);

		if (mode == MODE_VM_PAUSE && life >= PAUSE_AFTER) {
			life = 0;
			raise(SIGSTOP); /* a paused guest, at a clean point */
		}
		/* Fencing: a declared-dead incarnation must stop writing. */
		if (mode != MODE_LOCK && portal_region_check_self(r) != 0)
			_exit(FENCED_EXIT);
		for (unsigned i = 0; i < burst; i++) {
			struct msg *m;

			/* A1: the consumer's progress, then reuse its slots;
			 * acquire, pairs with R2 in the survivor. */
			while (pub - atomic_load_explicit(&lg->consumed, memory_order_acquire) >=
			       LOG_CAP)
				tu_sleep_ns(100000);
			m = &lg->slot[pub % LOG_CAP];
			m->seq = pub + 1;
			m->check = msg_check(pub + 1);
			/* R1: the slot, then the count; pairs with A2. */
			atomic_store_explicit(&lg->published, pub + 1, memory_order_release);
			pub++;
			life++;
		}
		portal_doorbell_notify(n);
		tu_sleep_ns((int64_t)(rnd(&seed) % 1000) * 1000);
	}
}

/* ------------------------------------------------------------------ */
/* The survivor                                                         */
/* ------------------------------------------------------------------ */

/* Peers alive right now, killed by the group teardown if a test fails
 * half-way (cmocka leaves the test function by longjmp). */
static pid_t live_peers[4];

static void peer_track(pid_t pid, bool add)
{
	for (unsigned i = 0; i < 4; i++) {
		if (add && live_peers[i] == 0) {
			live_peers[i] = pid;
			return;
		}
		if (!add && live_peers[i] == pid) {
			live_peers[i] = 0;
			return;
		}
	}
}

static int kill_leftovers(void **state)
{
	(void)state;
	for (unsigned i = 0; i < 4; i++) {
		if (live_peers[i] > 0) {
			kill(live_peers[i], SIGKILL);
			waitpid(live_peers[i], NULL, 0);
			live_peers[i] = 0;
		}
	}
	return 0;
}

struct run {
	char uri[96];
	enum portal_doorbell_backend backend;
	int efd;                   /* eventfd backend: the shared eventfd */
	portal_region_t *reg;
	struct log *lg;
	portal_doorbell_t *wt;
	portal_peer_watch_t *watch;
	uint64_t expect;           /* next sequence number to drain */
	uint64_t seed;
	char fail[256];            /* the first content error */
};

static int ready_log(void *arg)
{
	struct run *x = arg;

	/* A2: the count, then the slots it covers; pairs with R1. */
	return atomic_load_explicit(&x->lg->published, memory_order_acquire) >
	       atomic_load_explicit(&x->lg->consumed, memory_order_relaxed);
}

/* Take every published message, checking each. Returns how many. */
static uint64_t drain(struct run *x)
{
	uint64_t pub = atomic_load_explicit(&x->lg->published, memory_order_acquire); /* A2 */
	uint64_t con = atomic_load_explicit(&x->lg->consumed, memory_order_relaxed);
	uint64_t n = 0;

	if (pub - con > LOG_CAP && !x->fail[0])
		snprintf(x->fail, sizeof(x->fail), "published %llu is %llu ahead of consumed",
			 (unsigned long long)pub, (unsigned long long)(pub - con));
	for (; con < pub; con++, n++) {
		struct msg m = x->lg->slot[con % LOG_CAP];

		if ((m.seq != x->expect || m.check != msg_check(m.seq)) && !x->fail[0])
			snprintf(x->fail, sizeof(x->fail), "message %llu: seq %llu check %s",
				 (unsigned long long)x->expect, (unsigned long long)m.seq,
				 m.check == msg_check(m.seq) ? "ok" : "bad");
		x->expect++;
	}
	/* R2: done with the slots, then give them back; pairs with A1. */
	atomic_store_explicit(&x->lg->consumed, con, memory_order_release);
	return n;
}

static bool have_shm(void)
{
	struct stat st;

	return stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode);
}

static void run_setup(struct run *x, enum portal_doorbell_backend backend, const char *tag)
{
	struct portal_region_opts co = { .size = 1 << 20, .flags = PORTAL_REGION_F_EXCL,
					 .ident = "liveness survivor" };
	struct portal_doorbell_opts o;
	struct portal_object_info info;

	memset(x, 0, sizeof(*x));
	x->backend = backend;
	x->expect = 1;
	x->seed = (uint64_t)tu_now_ns() ^ ((uint64_t)getpid() << 32);
	x->efd = -1;
	snprintf(x->uri, sizeof(x->uri), "shm:portal-live-%s-%ld", tag, (long)getpid());
	portal_region_destroy(x->uri);
	assert_int_equal(portal_region_create(x->uri, &co, &x->reg), 0);
	assert_int_equal(portal_region_alloc(x->reg, "log", PORTAL_OBJ_USER, sizeof(struct log), 0, 1,
					     NULL, &info), 0);
	x->lg = info.addr;
	assert_int_equal(portal_doorbell_create(x->reg, "bell", backend, 1), 0);
	memset(&o, 0, sizeof(o));
	o.stream_fd = -1;
	o.eventfd = -1;
	if (backend == PORTAL_DOORBELL_EVENTFD) {
		x->efd = portal_doorbell_eventfd_create();
		assert_true(x->efd >= 0);
		o.eventfd = x->efd;
	}
	o.spin_ns = -1; /* sleep at once: the point is the blocked wait */
	assert_int_equal(portal_doorbell_open(x->reg, "bell", PORTAL_DOORBELL_WAITER, &o, &x->wt), 0);
}

static void run_teardown(struct run *x)
{
	portal_doorbell_detach(x->wt);
	portal_region_watch_close(x->watch);
	portal_region_detach(x->reg);
	portal_region_destroy(x->uri);
	if (x->efd >= 0)
		close(x->efd);
}

static pid_t spawn_peer(struct run *x, enum peer_mode mode)
{
	char be[16], efd[16], md[16], seed[32];
	pid_t pid;

	snprintf(be, sizeof(be), "%d", (int)x->backend);
	snprintf(efd, sizeof(efd), "%d", x->efd);
	snprintf(md, sizeof(md), "%d", (int)mode);
	snprintf(seed, sizeof(seed), "%llu", (unsigned long long)rnd(&x->seed));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char *argv[] = { "liveness-peer", "peer", x->uri, be, efd, md, seed, NULL };

		/* The eventfd crosses exec; the region is opened by name. */
		if (x->efd >= 0)
			fcntl(x->efd, F_SETFD, 0);
		/* Never outlive the survivor (ctest waits for our stdout). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(120);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	peer_track(pid, true);
	return pid;
}

/* Wait until side 1 is ACTIVE with an epoch other than OLD. Returns it. */
static uint64_t wait_active(struct run *x, uint64_t old, pid_t pid)
{
	struct portal_participant_info pi;
	int64_t end = tu_now_ns() + 10 * SEC;
	int status;

	for (;;) {
		assert_int_equal(portal_region_participant(x->reg, 1, &pi), 0);
		if (pi.state == PORTAL_PART_ACTIVE && pi.epoch != old)
			return pi.epoch;
		if (waitpid(pid, &status, WNOHANG) == pid)
			fail_msg("peer exited before attaching: status 0x%x", status);
		if (tu_now_ns() > end)
			fail_msg("peer did not attach in 10 s");
		tu_sleep_ns(200000);
	}
}

struct killer {
	pid_t pid;
	int sig;
	int64_t delay_ns;
	_Atomic int64_t at; /* when kill() was called; 0 before */
};

static void *killer_main(void *arg)
{
	struct killer *k = arg;

	tu_sleep_ns(k->delay_ns);
	atomic_store_explicit(&k->at, tu_now_ns(), memory_order_release);
	kill(k->pid, k->sig);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *method, const char *backend, int64_t *t, unsigned n,
		   int64_t bound)
{
	qsort(t, n, sizeof(*t), cmp_i64);
	printf("liveness: method=%s backend=%s kills=%u detect_p50_us=%lld p99_us=%lld "
	       "max_us=%lld bound_us=%lld\n",
	       method, backend, n, (long long)(t[n / 2] / 1000),
	       (long long)(t[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] / 1000),
	       (long long)(t[n - 1] / 1000), (long long)(bound / 1000));
	fflush(stdout);
}

/*
 * One kill: start a peer, watch it, let it publish, kill it (SIG) at a
 * random moment while we are blocked, and time how long the wait takes to
 * say PORTAL_EPEERDEAD. Everything it published must have been drained.
 */
static int64_t one_kill(struct run *x, enum peer_mode mode, int sig, uint64_t *epoch)
{
	struct killer k = { .sig = sig };
	struct portal_peer_status st;
	pthread_t tid;
	uint64_t pub;
	int64_t detected;
	int rc, status;

	k.pid = spawn_peer(x, mode);
	*epoch = wait_active(x, *epoch, k.pid);
	assert_int_equal(portal_region_watch_rearm(x->watch), 0);
	assert_int_equal(portal_region_watch_status(x->watch, &st), 0);
	assert_int_equal(st.state, PORTAL_PEER_ALIVE);
	k.delay_ns = (int64_t)(rnd(&x->seed) % (30 * MS)) + MS;
	atomic_init(&k.at, 0);
	assert_int_equal(pthread_create(&tid, NULL, killer_main, &k), 0);
	for (;;) {
		rc = portal_doorbell_wait(x->wt, ready_log, x, -1);
		if (rc != 0)
			break;
		drain(x);
	}
	detected = tu_now_ns();
	pthread_join(tid, NULL);
	assert_int_equal(rc, PORTAL_EPEERDEAD);
	if (atomic_load_explicit(&k.at, memory_order_acquire) == 0)
		fail_msg("the wait said the peer died before it was killed");
	if (sig != SIGKILL)
		kill(k.pid, SIGKILL);
	assert_int_equal(waitpid(k.pid, &status, 0), k.pid);
	peer_track(k.pid, false);
	assert_true(WIFSIGNALED(status));
	/* Nothing published before the kill was lost: the wait drained it
	 * all before it reported the death. */
	pub = atomic_load_explicit(&x->lg->published, memory_order_acquire);
	assert_int_equal(pub, atomic_load_explicit(&x->lg->consumed, memory_order_relaxed));
	assert_int_equal(pub + 1, x->expect);
	if (x->fail[0])
		fail_msg("%s", x->fail);
	return detected - atomic_load_explicit(&k.at, memory_order_acquire);
}

/* Kills per case: PORTAL_LIVENESS_KILLS, else DEF. */
static unsigned kills(unsigned def)
{
	const char *s = getenv("PORTAL_LIVENESS_KILLS");
	long v = s ? strtol(s, NULL, 0) : 0;

	return v > 0 && v < 100000 ? (unsigned)v : def;
}

static void kill_case(enum portal_doorbell_backend backend, bool heartbeat)
{
	const char *bname = backend == PORTAL_DOORBELL_FUTEX ? "futex" : "eventfd";
	struct portal_liveness_opts lo = { .stall_ns = STALL_NS };
	unsigned n = kills(heartbeat ? 60 : 100); /* a heartbeat kill costs a stall */
	int64_t *t = calloc(n, sizeof(*t));
	int64_t bound = CHECK_NS + (heartbeat ? STALL_NS : 0) + SLACK_NS;
	uint64_t epoch = 0;
	struct run x;

	if (!have_shm()) {
		print_message("skipped: no /dev/shm\n");
		skip();
	}
	assert_non_null(t);
	run_setup(&x, backend, heartbeat ? "hb" : "lock");
	lo.methods = heartbeat ? PORTAL_LIVENESS_HEARTBEAT : 0;
	assert_int_equal(portal_region_watch_open(x.reg, 1, &lo, &x.watch), 0);
	assert_int_equal(portal_doorbell_set_watch(x.wt, x.watch, CHECK_NS), 0);
	for (unsigned i = 0; i < n; i++) {
		t[i] = one_kill(&x, heartbeat ? MODE_VM : MODE_LOCK, heartbeat ? SIGSTOP : SIGKILL,
				&epoch);
		if (t[i] > bound)
			fail_msg("kill %u: detected after %lld us, bound %lld us", i,
				 (long long)(t[i] / 1000), (long long)(bound / 1000));
	}
	printf("liveness: %s/%s: %llu messages checked across %u peers\n",
	       heartbeat ? "heartbeat" : "lock", bname, (unsigned long long)(x.expect - 1), n);
	report(heartbeat ? "heartbeat" : (backend == PORTAL_DOORBELL_EVENTFD ? "lock+pidfd" : "lock"),
	       bname, t, n, bound);
	run_teardown(&x);
	free(t);
}

static void t_lock_futex(void **state)
{
	(void)state;
	kill_case(PORTAL_DOORBELL_FUTEX, false);
}

static void t_lock_eventfd(void **state)
{
	(void)state;
	kill_case(PORTAL_DOORBELL_EVENTFD, false);
}

static void t_heartbeat_futex(void **state)
{
	(void)state;
	kill_case(PORTAL_DOORBELL_FUTEX, true);
}

static void t_heartbeat_eventfd(void **state)
{
	(void)state;
	kill_case(PORTAL_DOORBELL_EVENTFD, true);
}

/* Wait until PID stops (WUNTRACED) or fail. */
static void wait_stopped(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, WUNTRACED), pid);
	assert_true(WIFSTOPPED(status));
}

/* A paused guest is judged dead, a new incarnation takes its side, and the
 * old one, resumed, is fenced; the log goes on without a gap. */
static void t_restart(void **state)
{
	struct portal_liveness_opts lo = { .methods = PORTAL_LIVENESS_HEARTBEAT,
					   .stall_ns = RESTART_STALL_NS };
	struct portal_peer_status st;
	uint64_t epoch_a = 0, epoch_b, before;
	int64_t t0;
	pid_t a, b;
	int status, rc;
	struct run x;

	(void)state;
	if (!have_shm()) {
		print_message("skipped: no /dev/shm\n");
		skip();
	}
	run_setup(&x, PORTAL_DOORBELL_FUTEX, "restart");
	assert_int_equal(portal_region_watch_open(x.reg, 1, &lo, &x.watch), 0);
	assert_int_equal(portal_doorbell_set_watch(x.wt, x.watch, CHECK_NS), 0);
	for (int round = 0; round < 5; round++) {
		a = spawn_peer(&x, MODE_VM_PAUSE);
		epoch_a = wait_active(&x, epoch_a, a);
		assert_int_equal(portal_region_watch_rearm(x.watch), 0);
		/* A pauses itself after PAUSE_AFTER messages; we drain them
		 * and then learn it is dead. */
		while ((rc = portal_doorbell_wait(x.wt, ready_log, &x, -1)) == 0)
			drain(&x);
		assert_int_equal(rc, PORTAL_EPEERDEAD);
		wait_stopped(a);
		assert_int_equal(portal_region_watch_status(x.watch, &st), 0);
		assert_int_equal(st.state, PORTAL_PEER_DEAD);
		before = x.expect;

		/* B takes the side over: a new epoch, seen as RESTARTED. */
		b = spawn_peer(&x, MODE_VM);
		epoch_b = wait_active(&x, epoch_a, b);
		assert_int_equal(portal_region_watch_status(x.watch, &st), 0);
		assert_int_equal(st.state, PORTAL_PEER_RESTARTED);
		assert_int_equal(st.watched_epoch, epoch_a);
		assert_int_equal(st.epoch, epoch_b);
		assert_int_not_equal(epoch_a, epoch_b);
		/* What a caller does on RESTARTED: re-open, then watch anew. */
		assert_int_equal(portal_region_watch_rearm(x.watch), 0);

		/* A resumes: its next look at its slot fences it. */
		t0 = tu_now_ns();
		kill(a, SIGCONT);
		assert_int_equal(waitpid(a, &status, 0), a);
		peer_track(a, false);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), FENCED_EXIT);
		printf("liveness: restart round %d: old epoch %016llx -> new %016llx, old "
		       "incarnation fenced %lld us after resuming\n",
		       round, (unsigned long long)epoch_a, (unsigned long long)epoch_b,
		       (long long)((tu_now_ns() - t0) / 1000));

		/* The log goes on from B, numbered without a gap. */
		while (x.expect < before + 2 * PAUSE_AFTER) {
			rc = portal_doorbell_wait(x.wt, ready_log, &x, 5 * SEC);
			assert_int_equal(rc, 0);
			drain(&x);
		}
		if (x.fail[0])
			fail_msg("%s", x.fail);
		assert_int_equal(portal_region_watch_status(x.watch, &st), 0);
		assert_int_equal(st.state, PORTAL_PEER_ALIVE);
		kill(b, SIGKILL);
		assert_int_equal(waitpid(b, &status, 0), b);
		peer_track(b, false);
		/* B's last messages, then the next round. */
		while (portal_doorbell_wait(x.wt, ready_log, &x, 0) == 0)
			drain(&x);
		epoch_a = epoch_b;
	}
	run_teardown(&x);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(t_lock_futex, kill_leftovers),
		cmocka_unit_test_teardown(t_lock_eventfd, kill_leftovers),
		cmocka_unit_test_teardown(t_heartbeat_futex, kill_leftovers),
		cmocka_unit_test_teardown(t_heartbeat_eventfd, kill_leftovers),
		cmocka_unit_test_teardown(t_restart, kill_leftovers),
	};

	if (argc > 1 && strcmp(argv[1], "peer") == 0)
		return peer_main(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(300); /* last line of defence against a hang */
	return cmocka_run_group_tests_name("portal.process.liveness", tests, NULL, NULL);
}
