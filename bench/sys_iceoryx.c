/* SPDX-License-Identifier: MIT */
/*
 * iceoryx 2.0: zero-copy publish/subscribe through shared memory managed by
 * the RouDi daemon, used through iceoryx's C binding.
 *
 * Configuration, and why:
 *   - RouDi with its built-in memory configuration (the 16 KiB pool holds
 *     1000 chunks, far more than the queues below can pin). setup starts it
 *     (unless one is already running: then the system is skipped, since its
 *     configuration and its other clients are unknown) and waits, at most
 *     10 s, for "RouDi is ready for clients".
 *   - RouDi's process monitoring is off (--monitoring-mode off). With it on,
 *     RouDi removes a process whose keep-alive it has not handled for 1.5 s,
 *     and with both CPUs held by busy pollers that happened here to live
 *     processes (twice in a few minutes on a loaded machine): their ports
 *     were destroyed under them and the next publish aborted the process.
 *     A process that exits, even through exit(1), still unregisters and
 *     frees its ports; only one that crashes is not cleaned up.
 *   - One publisher/subscriber pair per direction: side 0 publishes "down"
 *     and subscribes to "up", side 1 the reverse. Service names carry the
 *     driving process's pid and a per-run count, so runs never meet.
 *   - Zero-copy both ways: reserve loans a chunk that the caller fills in
 *     place, commit publishes it; peek takes the chunk and release hands it
 *     back. The committed length travels in a 4-byte user header, since the
 *     2.0 C binding cannot read a chunk's payload size.
 *   - No history (the publisher waits for its subscriber instead, below) and
 *     the largest subscriber queue the build allows (256). Streaming must not
 *     lose samples, so the publisher's ConsumerTooSlowPolicy is
 *     WAIT_FOR_CONSUMER and the subscriber's QueueFullPolicy BLOCK_PRODUCER:
 *     when the queue is full, publishing (commit) waits inside iceoryx,
 *     yielding the CPU, until the subscriber takes a sample or unsubscribes
 *     (a peer that exits does). This is iceoryx's own flow control and the
 *     one place an op here can wait; a peer that crashes while its queue is
 *     full leaves the publisher waiting (monitoring is off, above).
 *   - A publisher must have its subscriber before its first sample, or the
 *     sample is lost. RouDi connects a pair within its 100 ms discovery
 *     cycle; open waits, at most 5 s, until this side's publisher has its
 *     subscriber and this side's subscriber is subscribed, so connecting is
 *     not timed as the first round trip (the runner opens both sides at
 *     once). If the other side opens later than that, open returns anyway
 *     and reserve reports -EAGAIN until iox_pub_has_subscribers() is true.
 *   - Busy mode polls iox_sub_take_chunk. Blocking mode waits on a waitset
 *     attached to the subscriber's HAS_DATA state (10 s timeout); it is
 *     attached at open when BSYS_F_BLOCK is given there, else at the first
 *     blocking peek, so busy runs do not pay for waking a waiter.
 *
 * RouDi's lifetime: on shutdown RouDi sends SIGTERM to every process still
 * registered with it, and iceoryx 2.0 cannot register a process's runtime a
 * second time (nor with a new RouDi). So once this process has a runtime,
 * teardown leaves RouDi running and it is stopped at exit, after the runtime
 * has unregistered; a later setup in the same process reuses it. RouDi also
 * gets SIGTERM if this process dies (PR_SET_PDEATHSIG).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#ifdef BENCH_HAVE_ICEORYX

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include <iceoryx_binding_c/chunk.h>
#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>

#define IOX_SERVICE      "portal-bench"
#define IOX_QUEUE_CAP    256     /* MAX_SUBSCRIBER_QUEUE_CAPACITY of the Debian build */
#define IOX_WAIT_S       10
#define IOX_LINK_WAIT_MS 5000
#define ROUDI_LOCK       "/tmp/iox-unique-roudi.lock" /* RouDi's single-instance flock */
#define ROUDI_READY      "RouDi is ready for clients"
#define ROUDI_START_MS   10000
#define ROUDI_STOP_MS    5000
#define POLL_MS          10

struct iox_conn {
	iox_pub_storage_t pub_storage;
	iox_sub_storage_t sub_storage;
	iox_ws_storage_t ws_storage;
	iox_pub_t pub;
	iox_sub_t sub;
	iox_ws_t ws;        /* NULL until blocking mode is first used */
	void *out;          /* loaned payload, until published */
	uint32_t *out_len;  /* its user header */
	uint32_t out_cap;   /* bytes loaned */
	const void *in;     /* taken payload, until released */
	bool linked;        /* the publisher has seen its subscriber */
};

/* ---- RouDi, in the driving process ---- */

static pid_t roudi_pid;              /* ours, while running */
static char roudi_log[64];

/* This process's runtime. */
static pthread_once_t runtime_once = PTHREAD_ONCE_INIT;
static atomic_bool runtime_up;

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* 1 if some RouDi holds its single-instance lock, 0 if none, or -errno. */
static int roudi_running(void)
{
	int fd, rc = 0;

	fd = open(ROUDI_LOCK, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (flock(fd, LOCK_EX | LOCK_NB))
		rc = errno == EWOULDBLOCK ? 1 : -errno;
	else
		flock(fd, LOCK_UN);
	close(fd);
	return rc;
}

/* Nothing was logged after the ready line (RouDi logs warnings and worse). */
static bool roudi_log_quiet(void)
{
	char buf[16384];
	const char *ready;
	ssize_t n;
	int fd;

	fd = open(roudi_log, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	ready = strstr(buf, ROUDI_READY);
	if (!ready || n >= (ssize_t)sizeof(buf) - 1)
		return false;
	ready += strlen(ROUDI_READY);
	return strspn(ready, "\r\n") == strlen(ready);
}

/* SIGTERM, then SIGKILL if RouDi has not gone within ROUDI_STOP_MS. */
static void roudi_stop(void)
{
	int status, waited;
	pid_t pid = roudi_pid;

	if (pid <= 0)
		return;
	roudi_pid = 0;
	kill(pid, SIGTERM);
	for (waited = 0; waited < ROUDI_STOP_MS; waited += POLL_MS) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && roudi_log_quiet())
				unlink(roudi_log);
			return;
		}
		sleep_ms(POLL_MS);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
}

#ifdef BENCH_ROUDI
/*
 * Registered before this process's runtime exists, so it runs after the
 * runtime's destructor has unregistered from RouDi (exit handlers run in
 * reverse order): RouDi then has nobody left to signal.
 */
static void roudi_stop_at_exit(void)
{
	roudi_stop();
}

/* RouDi's log, its last non-empty line into why (for a skip reason). */
static void roudi_log_tail(char *why, size_t whycap, const char *what)
{
	char buf[4096], *end, *line;
	ssize_t n = 0;
	off_t size;
	int fd;

	fd = open(roudi_log, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		size = lseek(fd, 0, SEEK_END);
		size = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
		n = pread(fd, buf, sizeof(buf) - 1, size);
		close(fd);
	}
	buf[n > 0 ? n : 0] = '\0';
	end = buf + strlen(buf);
	while (end > buf && (end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	line = strrchr(buf, '\n');
	line = line ? line + 1 : buf;
	snprintf(why, whycap, "%s (%s: %s)", what, roudi_log, *line ? line : "empty log");
}

static bool roudi_log_ready(void)
{
	char buf[16384];
	ssize_t n;
	int fd;

	fd = open(roudi_log, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return strstr(buf, ROUDI_READY) != NULL;
}

static int roudi_start(char *why, size_t whycap)
{
	int fd, rc, status, waited;
	pid_t parent = getpid(), pid;

	rc = roudi_running();
	if (rc != 0) {
		if (rc > 0)
			snprintf(why, whycap, "another RouDi is already running (%s is locked); "
				 "stop it to benchmark iceoryx with a RouDi of known configuration",
				 ROUDI_LOCK);
		else
			snprintf(why, whycap, "cannot check for a running RouDi (%s: %s)", ROUDI_LOCK,
				 strerror(-rc));
		return rc > 0 ? -EBUSY : rc;
	}
	snprintf(roudi_log, sizeof(roudi_log), "/tmp/portal-bench-roudi-%ld.log", (long)parent);
	fd = open(roudi_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		snprintf(why, whycap, "cannot create %s: %s", roudi_log, strerror(errno));
		return rc;
	}
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		close(fd);
		snprintf(why, whycap, "fork: %s", strerror(-rc));
		return rc;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls between fork and exec. */
		int null = open("/dev/null", O_RDONLY);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		if (null >= 0)
			dup2(null, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execl(BENCH_ROUDI, "iox-roudi", "--monitoring-mode", "off", "--log-level", "warning",
		      (char *)NULL);
		_exit(127);
	}
	close(fd);
	roudi_pid = pid;
	for (waited = 0; waited < ROUDI_START_MS; waited += POLL_MS) {
		if (roudi_log_ready())
			return 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			char what[64];

			roudi_pid = 0;
			if (WIFEXITED(status))
				snprintf(what, sizeof(what), "RouDi exited with status %d during start-up",
					 WEXITSTATUS(status));
			else
				snprintf(what, sizeof(what), "RouDi was killed by signal %d during start-up",
					 WTERMSIG(status));
			roudi_log_tail(why, whycap, what);
			return -ECHILD;
		}
		sleep_ms(POLL_MS);
	}
	roudi_stop();
	roudi_log_tail(why, whycap, "RouDi was not ready within 10 s");
	return -ETIMEDOUT;
}
#endif

static int iox_sys_setup(struct bsys_env *env, char *why, size_t whycap)
{
#ifdef BENCH_ROUDI
	static unsigned runs;
	static bool atexit_set;
	int status, rc;

	if (roudi_pid > 0 && waitpid(roudi_pid, &status, WNOHANG) == roudi_pid)
		roudi_pid = 0; /* ours, but it has gone */
	/* Acquire: pairs with the release store in runtime_init. */
	if (roudi_pid <= 0 && atomic_load_explicit(&runtime_up, memory_order_acquire)) {
		snprintf(why, whycap, "RouDi exited after this process registered with it, "
			 "and iceoryx 2.0 cannot register a process twice");
		return -ENOTCONN;
	}
	if (roudi_pid <= 0) {
		rc = roudi_start(why, whycap);
		if (rc)
			return rc;
		if (!atexit_set && atexit(roudi_stop_at_exit) == 0)
			atexit_set = true;
	}
	/* The instance name of this run's services. */
	snprintf(env->arg, sizeof(env->arg), "%ld-%u", (long)getpid(), ++runs);
	return 0;
#else
	(void)env;
	snprintf(why, whycap, "iox-roudi not found at configure time (package iceoryx)");
	return -ENOTSUP;
#endif
}

static void iox_sys_teardown(struct bsys_env *env)
{
	(void)env;
	/* Acquire: pairs with the release store in runtime_init. */
	if (!atomic_load_explicit(&runtime_up, memory_order_acquire))
		roudi_stop();
	/* else roudi_stop_at_exit, after the runtime is gone (see the top). */
}

/* ---- connections, in either process ---- */

static void runtime_init(void)
{
	char name[64];

	/* Warnings and errors still reach stderr; nothing goes to stdout. */
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	snprintf(name, sizeof(name), "portal-bench-%ld", (long)getpid());
	iox_runtime_init(name);
	/* Release: the runtime is complete; pairs with the acquire loads in setup and teardown. */
	atomic_store_explicit(&runtime_up, true, memory_order_release);
}

static int iox_ws_attach(struct iox_conn *c)
{
	c->ws = iox_ws_init(&c->ws_storage);
	if (!c->ws)
		return -ENOMEM;
	if (iox_ws_attach_subscriber_state(c->ws, c->sub, SubscriberState_HAS_DATA, 0, NULL) !=
	    WaitSetResult_SUCCESS) {
		iox_ws_deinit(c->ws);
		c->ws = NULL;
		return -ENOSPC;
	}
	return 0;
}

static void iox_sys_close(void *conn)
{
	struct iox_conn *c = conn;

	if (!c)
		return;
	if (c->out)
		iox_pub_release_chunk(c->pub, c->out);
	if (c->in)
		iox_sub_release_chunk(c->sub, c->in);
	if (c->ws) {
		iox_ws_detach_subscriber_state(c->ws, c->sub, SubscriberState_HAS_DATA);
		iox_ws_deinit(c->ws);
	}
	if (c->sub)
		iox_sub_deinit(c->sub);
	if (c->pub)
		iox_pub_deinit(c->pub);
	free(c);
}

static int iox_sys_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	iox_pub_options_t po;
	iox_sub_options_t so;
	struct iox_conn *c;
	int rc;

	if ((side != 0 && side != 1) || (flags & ~(BSYS_F_BLOCK | BSYS_F_MP | BSYS_F_MC)))
		return -EINVAL;
	if (flags & (BSYS_F_MP | BSYS_F_MC))
		return -ENOTSUP;
	/* Without RouDi the runtime would wait a minute and then abort the process. */
	rc = roudi_running();
	if (rc <= 0)
		return rc ? rc : -ENOTCONN;
	pthread_once(&runtime_once, runtime_init);

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;

	iox_pub_options_init(&po);
	po.historyCapacity = 0;
	po.offerOnCreate = true;
	po.subscriberTooSlowPolicy = ConsumerTooSlowPolicy_WAIT_FOR_CONSUMER;
	c->pub = iox_pub_init(&c->pub_storage, IOX_SERVICE, env->arg, side ? "up" : "down", &po);

	iox_sub_options_init(&so);
	so.queueCapacity = IOX_QUEUE_CAP;
	so.historyRequest = 0;
	so.subscribeOnCreate = true;
	so.queueFullPolicy = QueueFullPolicy_BLOCK_PRODUCER;
	so.requirePublisherHistorySupport = false;
	c->sub = iox_sub_init(&c->sub_storage, IOX_SERVICE, env->arg, side ? "down" : "up", &so);

	if (!c->pub || !c->sub) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((flags & BSYS_F_BLOCK) && (rc = iox_ws_attach(c)))
		goto fail;
	for (int waited = 0; waited < IOX_LINK_WAIT_MS; waited++) {
		c->linked = iox_pub_has_subscribers(c->pub);
		if (c->linked && iox_sub_get_subscription_state(c->sub) == SubscribeState_SUBSCRIBED)
			break;
		sleep_ms(1);
	}
	*conn = c;
	return 0;
fail:
	iox_sys_close(c);
	return rc;
}

static int iox_alloc_errno(enum iox_AllocationResult r)
{
	switch (r) {
	case AllocationResult_SUCCESS:
		return 0;
	case AllocationResult_RUNNING_OUT_OF_CHUNKS:
		return -EAGAIN; /* every chunk is queued or held: the reader must release */
	case AllocationResult_TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL:
		return -EBUSY;
	case AllocationResult_NO_MEMPOOLS_AVAILABLE:
		return -EMSGSIZE;
	case AllocationResult_INVALID_PARAMETER_FOR_USER_PAYLOAD_OR_USER_HEADER:
	case AllocationResult_INVALID_PARAMETER_FOR_CHUNK:
	case AllocationResult_INVALID_PARAMETER_FOR_REQUEST_HEADER:
		return -EINVAL;
	default:
		return -EIO;
	}
}

static int iox_sys_reserve(void *conn, uint32_t len, void **buf)
{
	struct iox_conn *c = conn;
	enum iox_AllocationResult r;
	int rc;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (!c->linked) {
		/* A sample published before the subscriber is connected is lost. */
		if (!iox_pub_has_subscribers(c->pub))
			return -EAGAIN;
		c->linked = true;
	}
	if (c->out) {
		/* The caller abandoned its last reservation. */
		iox_pub_release_chunk(c->pub, c->out);
		c->out = NULL;
	}
	r = iox_pub_loan_aligned_chunk_with_user_header(c->pub, &c->out, len,
							IOX_C_CHUNK_DEFAULT_USER_PAYLOAD_ALIGNMENT,
							sizeof(uint32_t), alignof(uint32_t));
	rc = iox_alloc_errno(r);
	if (rc) {
		c->out = NULL;
		return rc;
	}
	c->out_len = iox_chunk_header_to_user_header(iox_chunk_header_from_user_payload(c->out));
	c->out_cap = len;
	*buf = c->out;
	return 0;
}

static int iox_sys_commit(void *conn, uint32_t len, unsigned flags)
{
	struct iox_conn *c = conn;

	(void)flags; /* publishing always wakes an attached waitset */
	if (!c->out || len > c->out_cap)
		return -EINVAL;
	*c->out_len = len;
	/* May wait for room in the subscriber's queue (WAIT_FOR_CONSUMER, see the top). */
	iox_pub_publish_chunk(c->pub, c->out);
	c->out = NULL;
	return 0;
}

static int iox_take(struct iox_conn *c)
{
	const void *p;

	switch (iox_sub_take_chunk(c->sub, &p)) {
	case ChunkReceiveResult_SUCCESS:
		c->in = p;
		return 0;
	case ChunkReceiveResult_NO_CHUNK_AVAILABLE:
		return -EAGAIN;
	case ChunkReceiveResult_TOO_MANY_CHUNKS_HELD_IN_PARALLEL:
		return -EBUSY;
	default:
		return -EIO;
	}
}

static int iox_sys_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct iox_conn *c = conn;
	const uint32_t *hdr;
	uint32_t n;
	int rc;

	if (!c->in) {
		rc = iox_take(c);
		if (rc == -EAGAIN && (flags & BSYS_F_BLOCK)) {
			struct timespec timeout = { IOX_WAIT_S, 0 };
			iox_notification_info_t info[1];
			uint64_t fired, missed = 0;

			if (!c->ws && (rc = iox_ws_attach(c)))
				return rc;
			fired = iox_ws_timed_wait(c->ws, timeout, info, 1, &missed);
			rc = iox_take(c);
			if (rc == -EAGAIN && fired == 0)
				rc = -ETIMEDOUT;
		}
		if (rc)
			return rc;
	}
	/* Read the peer-written length once and check it before use. */
	hdr = iox_chunk_header_to_user_header_const(
		iox_chunk_header_from_user_payload_const(c->in));
	n = *hdr;
	if (n > BENCH_MAX_PAYLOAD)
		return -EPROTO;
	*buf = c->in;
	*len = n;
	return 0;
}

static void iox_sys_release(void *conn)
{
	struct iox_conn *c = conn;

	if (c->in) {
		iox_sub_release_chunk(c->sub, c->in);
		c->in = NULL;
	}
}

const struct bsys bsys_iceoryx = {
	.name = "iceoryx",
	.what = "iceoryx 2.0 publish/subscribe via RouDi, C binding, zero-copy loan/take",
	.caps = BSYS_RTT | BSYS_BLOCK | BSYS_STREAM,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = iox_sys_setup,
	.open = iox_sys_open,
	.reserve = iox_sys_reserve,
	.commit = iox_sys_commit,
	.peek = iox_sys_peek,
	.release = iox_sys_release,
	.close = iox_sys_close,
	.teardown = iox_sys_teardown,
};

#else /* !BENCH_HAVE_ICEORYX */

BSYS_NOT_BUILT(bsys_iceoryx, "iceoryx", "iceoryx publish/subscribe via RouDi (not built)",
	       BSYS_RTT | BSYS_BLOCK | BSYS_STREAM, "libiceoryx-binding-c-dev");

#endif
