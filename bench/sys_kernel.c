/* SPDX-License-Identifier: MIT */
/*
 * sys_kernel.c - the kernel's own IPC as benchmark peers, no library:
 *
 *   futex    shared-memory slots; the receiver sleeps in FUTEX_WAIT on the
 *            sequence word and the sender wakes it: the blocking floor
 *   eventfd  the same slots, woken through one eventfd per direction
 *   uds      socketpair(AF_UNIX, SOCK_SEQPACKET): send / recv
 *   pipe     two pipes, length-prefixed frames, a reassembly buffer
 *
 * Every kernel object is made in setup without close-on-exec, so the peer
 * (exec'd from the same binary) inherits it; env->arg carries the fd
 * numbers ("3,4,..."), which are the same in both processes.
 *
 * Sending waits for space inside commit when the kernel buffer is full
 * (uds, pipe): the contract has no "full" result for commit, and a frame
 * half in the kernel cannot be taken back. The wait is bounded by the same
 * 10 s as a blocking peek. Busy mode retries the non-blocking call, blocking
 * mode sleeps in the kernel's own wait. The shm systems report "full" from
 * reserve instead, as Portal does.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define K_TIMEOUT_NS  (10 * INT64_C(1000000000)) /* blocking peek / full send */
#define K_MAX_FDS     4
#define K_LINE        64

/* ---- common helpers ---- */

static int64_t k_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds left until DEADLINE for poll(), rounded up; 0 when past. */
static int k_left_ms(int64_t deadline)
{
	int64_t left = deadline - k_now_ns();

	return left <= 0 ? 0 : (int)((left + 999999) / 1000000);
}

/* env->arg is the comma-separated list of inherited fds. */
static int k_put_fds(struct bsys_env *env, const int *fd, int n)
{
	size_t off = 0;

	for (int i = 0; i < n; i++) {
		int w = snprintf(env->arg + off, sizeof(env->arg) - off, "%s%d", i ? "," : "", fd[i]);

		if (w < 0 || (size_t)w >= sizeof(env->arg) - off)
			return -ENAMETOOLONG;
		off += (size_t)w;
	}
	return 0;
}

static int k_get_fds(const struct bsys_env *env, int *fd, int n)
{
	const char *p = env->arg;

	for (int i = 0; i < n; i++) {
		char *end;
		long v = strtol(p, &end, 10);

		if (end == p || v < 0 || v > INT_MAX || (*end != (i + 1 < n ? ',' : '\0')))
			return -EINVAL;
		fd[i] = (int)v;
		p = end + 1;
	}
	return 0;
}

static void k_close_fds(const int *fd, int n)
{
	for (int i = 0; i < n; i++)
		if (fd[i] >= 0)
			close(fd[i]);
}

/* Closes whatever setup made, by the list it wrote. */
static void k_teardown(struct bsys_env *env)
{
	int fd[K_MAX_FDS];
	int n = 1;

	for (const char *p = env->arg; *p; p++)
		n += *p == ',';
	if (!env->arg[0] || n > K_MAX_FDS || k_get_fds(env, fd, n))
		return;
	k_close_fds(fd, n);
	env->arg[0] = '\0';
}

static int k_fail(int err, const char *what, char *why, size_t whycap)
{
	snprintf(why, whycap, "%s: %s", what, strerror(err));
	return -err;
}

/*
 * ---- futex and eventfd: slots in shared memory ----
 *
 * One ring of K_SLOTS slots per direction (dir[0] "down", dir[1] "up").
 * The sender writes the message into the slot reserve handed out, then
 * publishes it by moving `head` (release); the receiver reads it in place
 * and gives the slot back by moving `tail` (release). A round trip has one
 * slot in use per direction; the other slots let the futex system stream.
 *
 * Sleeping, with a waiter flag so a commit makes no system call when nobody
 * sleeps (the shape of Portal's doorbell, and of virtio's event suppression):
 *
 *   receiver (peek, blocking)             sender (commit, blocking)
 *   armed = 1 (relaxed); F1 fence          head = h + 1 (release)
 *   re-check head: new? disarm, return     F2 fence; a = armed (relaxed)
 *   sleep (FUTEX_WAIT head == tail          a? FUTEX_WAKE head / write efd
 *          / poll efd)
 *
 * Each side stores, fences (seq_cst), then loads what the other stored, so
 * either the receiver's re-check sees the new head, or the sender sees
 * armed == 1 and wakes. The wake is not lost to the sleep that follows:
 * FUTEX_WAIT compares head with the value the receiver saw, atomically with
 * queueing against FUTEX_WAKE, and returns at once if head moved; an
 * eventfd keeps its count until the receiver reads it. A stale armed == 1
 * only costs a needless wake. head can run at most K_SLOTS ahead of tail,
 * so the 32-bit compare cannot be fooled by a wrap.
 */
#define K_SLOTS 256u /* 1 MiB a direction: as deep as Portal's ring for 1-KiB messages */

/* The length shares the first line with the payload: a small message is
 * one cache line to move, as in Portal's message ring. */
struct k_slot {
	alignas(K_LINE) uint32_t len;          /* sender: written before head moves */
	uint32_t pad;
	uint8_t data[BENCH_MAX_PAYLOAD];       /* 8-byte aligned */
};

struct k_dir {
	alignas(K_LINE) _Atomic uint32_t head; /* sender: messages published; the futex word */
	alignas(K_LINE) _Atomic uint32_t tail; /* receiver: messages released */
	alignas(K_LINE) _Atomic uint32_t armed; /* receiver: 1 while it may sleep */
	struct k_slot slot[K_SLOTS];
};

struct k_shm {
	struct k_dir dir[2];                   /* [0] down (side 0 sends), [1] up */
};

_Static_assert(offsetof(struct k_slot, data) == 8, "k_slot layout");
_Static_assert(sizeof(struct k_slot) % K_LINE == 0, "k_slot layout");
_Static_assert(offsetof(struct k_dir, slot) == 3 * K_LINE, "k_dir layout");
_Static_assert((K_SLOTS & (K_SLOTS - 1)) == 0, "K_SLOTS is a power of two");

struct k_shm_conn {
	struct k_shm *shm;
	struct k_dir *tx, *rx;
	uint32_t tx_head;       /* next message to publish (only we write tx->head) */
	uint32_t tx_tail;       /* last tx->tail seen */
	uint32_t rx_tail;       /* next message to read (only we write rx->tail) */
	uint32_t rx_head;       /* last rx->head seen */
	int tx_efd, rx_efd;     /* eventfd system only, else -1 */
};

static long k_futex(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, (void *)word, op, val, ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

/* One memfd, sized and zeroed by ftruncate; the rings start empty. */
static int k_shm_make(int *fd, char *why, size_t whycap)
{
	*fd = memfd_create("portal-bench-kernel", 0); /* no MFD_CLOEXEC: the peer inherits it */
	if (*fd < 0)
		return k_fail(errno, "memfd_create", why, whycap);
	if (ftruncate(*fd, sizeof(struct k_shm)) < 0) {
		int err = errno;

		close(*fd);
		return k_fail(err, "ftruncate", why, whycap);
	}
	return 0;
}

static int futex_setup(struct bsys_env *env, char *why, size_t whycap)
{
	int fd, rc;

	rc = k_shm_make(&fd, why, whycap);
	if (rc)
		return rc;
	rc = k_put_fds(env, &fd, 1);
	if (rc)
		close(fd);
	return rc;
}

static int eventfd_setup(struct bsys_env *env, char *why, size_t whycap)
{
	int fd[3] = { -1, -1, -1 }, rc;

	rc = k_shm_make(&fd[0], why, whycap);
	if (rc)
		return rc;
	/* Non-blocking: peek drains the count with read() after poll() says
	 * it is there, and never sleeps in read() without a timeout. */
	for (int i = 1; i < 3; i++) {
		fd[i] = eventfd(0, EFD_NONBLOCK); /* no EFD_CLOEXEC: inherited */
		if (fd[i] < 0) {
			rc = k_fail(errno, "eventfd", why, whycap);
			k_close_fds(fd, 3);
			return rc;
		}
	}
	rc = k_put_fds(env, fd, 3);
	if (rc)
		k_close_fds(fd, 3);
	return rc;
}

static int k_shm_open(struct bsys_env *env, int side, unsigned flags, void **conn, bool efd)
{
	int fd[3], rc, d_tx = side ? 1 : 0;
	struct k_shm_conn *c;
	void *p;

	if ((side != 0 && side != 1) || (flags & ~(unsigned)BSYS_F_BLOCK))
		return -EINVAL;
	rc = k_get_fds(env, fd, efd ? 3 : 1);
	if (rc)
		return rc;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	p = mmap(NULL, sizeof(struct k_shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		 fd[0], 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		free(c);
		return rc;
	}
	c->shm = p;
	c->tx = &c->shm->dir[d_tx];
	c->rx = &c->shm->dir[!d_tx];
	/* Each side starts from the words only it writes, relaxed (a reopen
	 * carries on where the last connection stopped). The peer's tail is
	 * a cache, acquired as A1 is. */
	c->tx_head = atomic_load_explicit(&c->tx->head, memory_order_relaxed);
	c->tx_tail = atomic_load_explicit(&c->tx->tail, memory_order_acquire);
	c->rx_tail = atomic_load_explicit(&c->rx->tail, memory_order_relaxed);
	c->rx_head = c->rx_tail;
	atomic_store_explicit(&c->rx->armed, 0, memory_order_relaxed); /* only we arm rx */
	/* fd[1] wakes "down" (side 0 writes it), fd[2] wakes "up". */
	c->tx_efd = efd ? fd[1 + d_tx] : -1;
	c->rx_efd = efd ? fd[2 - d_tx] : -1;
	*conn = c;
	return 0;
}

static int futex_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	return k_shm_open(env, side, flags, conn, false);
}

static int eventfd_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	return k_shm_open(env, side, flags, conn, true);
}

static int k_shm_reserve(void *conn, uint32_t len, void **buf)
{
	struct k_shm_conn *c = conn;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (c->tx_head - c->tx_tail >= K_SLOTS) {
		/* A1: the receiver has finished with the slot before we
		 * write it again; pairs with R2 in k_shm_release. */
		c->tx_tail = atomic_load_explicit(&c->tx->tail, memory_order_acquire);
		if (c->tx_head - c->tx_tail > K_SLOTS)
			return -EPROTO;          /* a tail we never gave out */
		if (c->tx_head - c->tx_tail == K_SLOTS)
			return -EAGAIN;
	}
	*buf = c->tx->slot[c->tx_head & (K_SLOTS - 1)].data;
	return 0;
}

static int k_shm_commit(void *conn, uint32_t len, unsigned flags)
{
	struct k_shm_conn *c = conn;
	static const uint64_t one = 1;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	c->tx->slot[c->tx_head & (K_SLOTS - 1)].len = len;
	/* R1: write the message, then publish it; pairs with A2 in peek. */
	atomic_store_explicit(&c->tx->head, ++c->tx_head, memory_order_release);
	if (!(flags & BSYS_F_BLOCK))
		return 0;
	/* F2: publish head, then look for a sleeper; pairs with F1 in
	 * k_shm_wait (see the table above). Relaxed load: the fence orders it. */
	atomic_thread_fence(memory_order_seq_cst);
	if (!atomic_load_explicit(&c->tx->armed, memory_order_relaxed))
		return 0;
	if (c->tx_efd < 0) {
		/* Shared (not PRIVATE) futex: the word is in a MAP_SHARED
		 * memfd mapping, another process waits on it. */
		if (k_futex(&c->tx->head, FUTEX_WAKE, 1, NULL) < 0)
			return -errno;
		return 0;
	}
	/* EAGAIN: the count is saturated, so it is readable anyway. */
	while (write(c->tx_efd, &one, sizeof(one)) < 0) {
		if (errno == EAGAIN)
			break;
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

/* 0 when a message is there (rx_head updated), -EAGAIN when not. */
static int k_shm_poll(struct k_shm_conn *c)
{
	if (c->rx_head != c->rx_tail)
		return 0;
	/* A2: see the message before reading it; pairs with R1 in commit. */
	c->rx_head = atomic_load_explicit(&c->rx->head, memory_order_acquire);
	return c->rx_head != c->rx_tail ? 0 : -EAGAIN;
}

/* Blocking peek: arm, re-check, sleep; see the table above. */
static int k_shm_wait(struct k_shm_conn *c)
{
	int64_t deadline = k_now_ns() + K_TIMEOUT_NS;
	struct timespec abs = {
		.tv_sec = (time_t)(deadline / 1000000000),
		.tv_nsec = (long)(deadline % 1000000000),
	};
	int rc = 0;

	/* Relaxed store: F1 orders it before the re-check. */
	atomic_store_explicit(&c->rx->armed, 1, memory_order_relaxed);
	for (;;) {
		/* F1: arm, then re-check head; pairs with F2 in commit. */
		atomic_thread_fence(memory_order_seq_cst);
		if (k_shm_poll(c) == 0)
			break;
		if (c->rx_efd < 0) {
			/* FUTEX_WAIT_BITSET: an absolute CLOCK_MONOTONIC
			 * deadline, so EINTR needs no re-computation. The
			 * kernel returns EAGAIN if head is no longer rx_tail. */
			if (k_futex(&c->rx->head, FUTEX_WAIT_BITSET, c->rx_tail, &abs) < 0 &&
			    errno != EAGAIN && errno != EINTR) {
				rc = -errno;
				break;
			}
		} else {
			struct pollfd pfd = { .fd = c->rx_efd, .events = POLLIN };
			uint64_t cnt;
			int n = poll(&pfd, 1, k_left_ms(deadline));

			if (n < 0 && errno != EINTR) {
				rc = -errno;
				break;
			}
			if (n == 0) {
				rc = -ETIMEDOUT;
				break;
			}
			/* Drain the count; head is re-checked after this,
			 * so a count read here is never a wake-up lost. */
			if (n > 0 && read(c->rx_efd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN &&
			    errno != EINTR) {
				rc = -errno;
				break;
			}
		}
		if (k_now_ns() >= deadline) {
			rc = k_shm_poll(c) ? -ETIMEDOUT : 0;
			break;
		}
	}
	/* Relaxed: a late clear only costs the sender one needless wake. */
	atomic_store_explicit(&c->rx->armed, 0, memory_order_relaxed);
	return rc;
}

static int k_shm_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct k_shm_conn *c = conn;
	const struct k_slot *s;
	uint32_t n;
	int rc;

	rc = k_shm_poll(c);
	if (rc && (flags & BSYS_F_BLOCK))
		rc = k_shm_wait(c);
	if (rc)
		return rc;
	if (c->rx_head - c->rx_tail > K_SLOTS)
		return -EPROTO;                  /* a head the sender never wrote */
	s = &c->rx->slot[c->rx_tail & (K_SLOTS - 1)];
	n = s->len;                              /* read once, then check */
	if (n > BENCH_MAX_PAYLOAD)
		return -EPROTO;
	*buf = s->data;
	*len = n;
	return 0;
}

static void k_shm_release(void *conn)
{
	struct k_shm_conn *c = conn;

	/* R2: done with the slot, then hand it back; pairs with A1 in reserve. */
	atomic_store_explicit(&c->rx->tail, ++c->rx_tail, memory_order_release);
}

static void k_shm_close(void *conn)
{
	struct k_shm_conn *c = conn;

	if (!c)
		return;
	munmap(c->shm, sizeof(struct k_shm));
	free(c);
}

/*
 * Configuration: the futex calls are the shared kind (the word is in a
 * MAP_SHARED memfd; FUTEX_PRIVATE_FLAG would key on one address space);
 * mapping pre-faulted (MAP_POPULATE). No spinning before the sleep: this
 * is the cost of the kernel's wait/wake alone, the floor a blocking
 * system pays.
 */
const struct bsys bsys_futex = {
	.name = "futex",
	.what = "shared-memory slots, FUTEX_WAIT/FUTEX_WAKE on the sequence word (blocking floor)",
	.caps = BSYS_RTT | BSYS_BLOCK | BSYS_STREAM,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = futex_setup,
	.open = futex_open,
	.reserve = k_shm_reserve,
	.commit = k_shm_commit,
	.peek = k_shm_peek,
	.release = k_shm_release,
	.close = k_shm_close,
	.teardown = k_teardown,
};

/*
 * The futex system's slots with an eventfd per direction as the wake-up
 * (poll with the timeout, then read to drain). Not STREAM: busy streaming
 * would be the futex system's busy streaming, word for word.
 */
const struct bsys bsys_eventfd = {
	.name = "eventfd",
	.what = "shared-memory slots, an eventfd per direction as the wake-up",
	.caps = BSYS_RTT | BSYS_BLOCK,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = eventfd_setup,
	.open = eventfd_open,
	.reserve = k_shm_reserve,
	.commit = k_shm_commit,
	.peek = k_shm_peek,
	.release = k_shm_release,
	.close = k_shm_close,
	.teardown = k_teardown,
};

/*
 * ---- uds: socketpair(AF_UNIX, SOCK_SEQPACKET) ----
 *
 * SEQPACKET keeps message boundaries, so one send is one message and one
 * recv returns it whole. The socket is blocking; busy mode passes
 * MSG_DONTWAIT per call. SO_RCVTIMEO/SO_SNDTIMEO bound the blocking calls
 * at 10 s. Messages in flight are limited only by the sender's SO_SNDBUF
 * (each queued message is charged its whole skb, about 1 KiB for a small
 * one; a connected pair is not limited by net.unix.max_dgram_qlen). The
 * default, 208 KiB, holds about 200 small or 40 4-KiB messages; we ask for
 * K_UDS_SNDBUF so a stream can run as far ahead as in the other systems'
 * rings. The kernel caps the request at net.core.wmem_max (then it is the
 * default on a stock kernel; no error).
 */
#define K_UDS_SNDBUF (1024 * 1024)

struct k_sock_conn {
	int fd;
	uint8_t tx[BENCH_MAX_PAYLOAD];
	uint8_t rx[BENCH_MAX_PAYLOAD];
};

static int uds_setup(struct bsys_env *env, char *why, size_t whycap)
{
	int sv[2], rc;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) /* no SOCK_CLOEXEC: inherited */
		return k_fail(errno, "socketpair(AF_UNIX, SOCK_SEQPACKET)", why, whycap);
	rc = k_put_fds(env, sv, 2);
	if (rc)
		k_close_fds(sv, 2);
	return rc;
}

static int uds_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	struct timeval tv = { .tv_sec = K_TIMEOUT_NS / 1000000000 };
	int sv[2], rc, sndbuf = K_UDS_SNDBUF;
	struct k_sock_conn *c;

	if ((side != 0 && side != 1) || (flags & ~(unsigned)BSYS_F_BLOCK))
		return -EINVAL;
	rc = k_get_fds(env, sv, 2);
	if (rc)
		return rc;
	c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = sv[side];
	if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0) {
		rc = -errno;
		free(c);
		return rc;
	}
	*conn = c;
	return 0;
}

static int uds_reserve(void *conn, uint32_t len, void **buf)
{
	struct k_sock_conn *c = conn;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	*buf = c->tx;
	return 0;
}

static int uds_commit(void *conn, uint32_t len, unsigned flags)
{
	struct k_sock_conn *c = conn;
	int sflags = MSG_NOSIGNAL | ((flags & BSYS_F_BLOCK) ? 0 : MSG_DONTWAIT);
	int64_t deadline = 0;
	ssize_t n;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	for (;;) {
		n = send(c->fd, c->tx, len, sflags);
		if (n == (ssize_t)len)
			return 0;
		if (n >= 0)
			return -EPROTO;          /* SEQPACKET sends all or nothing */
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if (!(flags & BSYS_F_BLOCK)) {
			/* Busy mode, send buffer full: try again until the
			 * receiver makes room, as a blocking send would. */
			if (!deadline)
				deadline = k_now_ns() + K_TIMEOUT_NS;
			if (k_now_ns() < deadline)
				continue;
		}
		return -ETIMEDOUT;               /* SO_SNDTIMEO ran out */
	}
}

static int uds_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct k_sock_conn *c = conn;
	ssize_t n;

	for (;;) {
		n = recv(c->fd, c->rx, sizeof(c->rx), (flags & BSYS_F_BLOCK) ? 0 : MSG_DONTWAIT);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			return (flags & BSYS_F_BLOCK) ? -ETIMEDOUT : -EAGAIN;
		return -errno;
	}
	/* Our sends never exceed the buffer; 0 is an empty message (the peer
	 * cannot hang up while this process holds both ends). */
	*buf = c->rx;
	*len = (uint32_t)n;
	return 0;
}

static void k_nop_release(void *conn)
{
	(void)conn;                              /* the next recv reuses the buffer */
}

static void uds_close(void *conn)
{
	free(conn);                              /* the fds belong to setup */
}

const struct bsys bsys_uds = {
	.name = "uds",
	.what = "Unix domain socketpair, SOCK_SEQPACKET, send/recv",
	.caps = BSYS_RTT | BSYS_BLOCK | BSYS_STREAM,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = uds_setup,
	.open = uds_open,
	.reserve = uds_reserve,
	.commit = uds_commit,
	.peek = uds_peek,
	.release = k_nop_release,
	.close = uds_close,
	.teardown = k_teardown,
};

/*
 * ---- pipe: one pipe per direction ----
 *
 * A pipe is a byte stream, so each message goes as a frame: a 4-byte length,
 * then the payload, in one write() (a single writer per pipe, so frames
 * never interleave even past PIPE_BUF; a short write is continued). The
 * reader reads as much as the pipe holds into a per-connection reassembly
 * buffer and hands out frames from it, so a stream of small messages costs
 * one read() per many frames, as a buffered reader would; a frame cut by a
 * read waits there for its rest. Both ends are O_NONBLOCK: busy mode reads
 * once, blocking mode sleeps in poll() (10 s) before reading. The pipes are
 * grown to K_PIPE_SIZE (F_SETPIPE_SZ, allowed unprivileged up to
 * fs.pipe-max-size, 1 MiB by default) so a stream of 4-KiB messages can run
 * as far ahead as in the other systems; the default 64 KiB holds 15 of them.
 * Pages are taken as they fill, so a round trip does not pay for the size.
 * Best effort: a smaller fs.pipe-max-size leaves the default.
 *
 * No SIGPIPE: this process and the peer each hold both ends of both pipes
 * (setup made them, exec kept them), so a write never finds no reader.
 */
#define K_FRAME_HDR  4u
#define K_PIPE_RBUF  (64u * 1024u)
#define K_PIPE_SIZE  (1024 * 1024)

struct k_pipe_conn {
	int wfd, rfd;
	uint32_t rpos, rend;                     /* unread bytes are rbuf[rpos, rend) */
	uint32_t rlen;                           /* length of the frame peek handed out */
	alignas(8) uint8_t tx[K_FRAME_HDR + BENCH_MAX_PAYLOAD];
	alignas(8) uint8_t rbuf[K_PIPE_RBUF];
};

_Static_assert(K_PIPE_RBUF >= 2 * (K_FRAME_HDR + BENCH_MAX_PAYLOAD), "a frame fits after compaction");

static int pipe_setup(struct bsys_env *env, char *why, size_t whycap)
{
	int fd[4], rc;

	/* fd[0..1]: "down" read, write; fd[2..3]: "up" read, write.
	 * No O_CLOEXEC: inherited. */
	if (pipe2(&fd[0], O_NONBLOCK) < 0)
		return k_fail(errno, "pipe2", why, whycap);
	if (pipe2(&fd[2], O_NONBLOCK) < 0) {
		rc = k_fail(errno, "pipe2", why, whycap);
		k_close_fds(fd, 2);
		return rc;
	}
	for (int i = 1; i < 4; i += 2)
		(void)fcntl(fd[i], F_SETPIPE_SZ, K_PIPE_SIZE); /* EPERM: keep the default */
	rc = k_put_fds(env, fd, 4);
	if (rc)
		k_close_fds(fd, 4);
	return rc;
}

static int pipe_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	struct k_pipe_conn *c;
	int fd[4], rc;

	if ((side != 0 && side != 1) || (flags & ~(unsigned)BSYS_F_BLOCK))
		return -EINVAL;
	rc = k_get_fds(env, fd, 4);
	if (rc)
		return rc;
	c = malloc(sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->wfd = side ? fd[3] : fd[1];
	c->rfd = side ? fd[0] : fd[2];
	c->rpos = c->rend = c->rlen = 0;
	*conn = c;
	return 0;
}

static int pipe_reserve(void *conn, uint32_t len, void **buf)
{
	struct k_pipe_conn *c = conn;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	*buf = c->tx + K_FRAME_HDR;
	return 0;
}

static int pipe_commit(void *conn, uint32_t len, unsigned flags)
{
	struct k_pipe_conn *c = conn;
	size_t off = 0, total = K_FRAME_HDR + len;
	int64_t deadline = 0;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	memcpy(c->tx, &len, K_FRAME_HDR);
	while (off < total) {
		ssize_t n = write(c->wfd, c->tx + off, total - off);

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		/* The pipe is full: wait for the reader, as a blocking
		 * write would, but no longer than the timeout. */
		if (!deadline)
			deadline = k_now_ns() + K_TIMEOUT_NS;
		if (k_now_ns() >= deadline)
			return -ETIMEDOUT;
		if (flags & BSYS_F_BLOCK) {
			struct pollfd pfd = { .fd = c->wfd, .events = POLLOUT };

			if (poll(&pfd, 1, k_left_ms(deadline)) < 0 && errno != EINTR)
				return -errno;
		}
	}
	return 0;
}

/* 0 when rbuf holds a whole frame (its length in rlen), -EAGAIN when not. */
static int pipe_frame(struct k_pipe_conn *c)
{
	uint32_t have = c->rend - c->rpos, len;

	if (have < K_FRAME_HDR)
		return -EAGAIN;
	memcpy(&len, c->rbuf + c->rpos, K_FRAME_HDR);
	if (len > BENCH_MAX_PAYLOAD)
		return -EPROTO;
	if (have < K_FRAME_HDR + len)
		return -EAGAIN;
	c->rlen = len;
	return 0;
}

/* One read() of whatever the pipe holds; -EAGAIN when it held nothing. */
static int pipe_fill(struct k_pipe_conn *c)
{
	ssize_t n;

	/* Room for at least one whole frame after rend: move the unread
	 * tail (less than one frame) to the front. */
	if (K_PIPE_RBUF - c->rend < K_FRAME_HDR + BENCH_MAX_PAYLOAD) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rend - c->rpos);
		c->rend -= c->rpos;
		c->rpos = 0;
	}
	do
		n = read(c->rfd, c->rbuf + c->rend, K_PIPE_RBUF - c->rend);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		c->rend += (uint32_t)n;
		return 0;
	}
	if (n == 0)
		return -EPIPE;                   /* every writer gone */
	return errno == EAGAIN ? -EAGAIN : -errno;
}

static int pipe_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct k_pipe_conn *c = conn;
	int64_t deadline = 0;
	struct pollfd pfd;
	int rc, n;

	while ((rc = pipe_frame(c)) == -EAGAIN) {
		if (!(flags & BSYS_F_BLOCK)) {
			rc = pipe_fill(c);
			if (rc)
				return rc;
			continue;                /* more bytes: is a frame whole now? */
		}
		/* Blocking: sleep first, since peek is usually called before
		 * the message is sent; then read what came. */
		if (!deadline)
			deadline = k_now_ns() + K_TIMEOUT_NS;
		pfd.fd = c->rfd;
		pfd.events = POLLIN;
		n = poll(&pfd, 1, k_left_ms(deadline));
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		if (n > 0) {
			rc = pipe_fill(c);
			if (rc && rc != -EAGAIN)
				return rc;
		}
	}
	if (rc)
		return rc;
	*buf = c->rbuf + c->rpos + K_FRAME_HDR;
	*len = c->rlen;
	return 0;
}

static void pipe_release(void *conn)
{
	struct k_pipe_conn *c = conn;

	c->rpos += K_FRAME_HDR + c->rlen;
	if (c->rpos == c->rend)
		c->rpos = c->rend = 0;           /* empty: start at the front again */
}

static void pipe_close(void *conn)
{
	free(conn);                              /* the fds belong to setup */
}

const struct bsys bsys_pipe = {
	.name = "pipe",
	.what = "two pipes, length-prefixed frames, buffered reads",
	.caps = BSYS_RTT | BSYS_BLOCK | BSYS_STREAM,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = pipe_setup,
	.open = pipe_open,
	.reserve = pipe_reserve,
	.commit = pipe_commit,
	.peek = pipe_peek,
	.release = pipe_release,
	.close = pipe_close,
	.teardown = k_teardown,
};
