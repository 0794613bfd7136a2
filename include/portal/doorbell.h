/* SPDX-License-Identifier: MIT */
/*
 * portal/doorbell.h - wake a sleeping peer, without a system call while it
 * is awake.
 *
 * A doorbell joins one waiter (typically a ring's consumer) and a notifier
 * (the producer side). Its shared words are struct portal_doorbell_shm in
 * portal/abi.h: `armed`, written only by the waiter, and `wake_seq` and
 * `rings`, written only by the notifier side.
 *
 * The protocol (DESIGN.md section 5), the same on every backend:
 *
 *   waiter                                 notifier
 *   spin: ready()? with backoff            publish work (release store)
 *   seq = wake_seq                         full fence
 *   armed = 1, full fence                  if armed:
 *   ready()?  -> work: disarm, return          wake_seq++, wake the waiter
 *   sleep until wake_seq != seq
 *   disarm, ready()?
 *
 * Lost wake-ups are impossible: the waiter stores `armed` then loads the
 * work state, the notifier stores the work state then loads `armed`, with a
 * seq_cst fence between each store and load (Dekker). At least one of the
 * two loads sees the other side's store: either the waiter finds the work
 * and does not sleep, or the notifier finds it armed and rings. The notifier
 * makes no system call while the waiter is not armed.
 *
 * Backends (chosen at init, stored in the shared header):
 *
 *   PORTAL_DOORBELL_FUTEX    the waiter sleeps in FUTEX_WAIT on `wake_seq`
 *                            (a shared, not private, futex: processes on one
 *                            host). portal_doorbell_fd() costs a helper
 *                            thread, see there.
 *   PORTAL_DOORBELL_EVENTFD  the waiter polls an eventfd the notifier writes;
 *                            both sides hold the same eventfd, shared by fork
 *                            or passed with portal_fd_send/portal_fd_recv.
 *                            The eventfd is the fd for poll/epoll, for free.
 *
 * Concurrency (per handle; a handle is used by one thread at a time):
 *
 *   call                       waiter handle        notifier handle
 *   wait / arm / ack / fd      1 thread             -
 *   notify                     -                    1 thread per handle;
 *                                                   several notifier handles
 *                                                   may notify concurrently
 *   stats, backend             the handle's thread  the handle's thread
 *   detach                     no call in flight    no call in flight
 *
 * A doorbell has one waiter at a time. Any number of notifier handles (one
 * per producer thread or process of the notifier side) may ring it: they
 * bump `wake_seq` with an atomic add. Handles do not survive fork(); a child
 * attaches its own.
 *
 * The readiness callback. wait() and arm() take `int ready(void *arg)`:
 * > 0 there is work, 0 there is none, < 0 an error that ends the wait (for
 * example PORTAL_EPROTO from a quarantined ring). It must load the shared
 * state it checks on every call (with acquire, like portal_ring_count()),
 * not answer from a cached copy, must not block, and may be called many
 * times per wait.
 *
 * Hostile peers. The header (magic, version, backend) is copied into the
 * handle at attach and never read again. A peer that scribbles on `armed`
 * or `wake_seq` can make the other side ring needlessly or wake spuriously,
 * never crash it nor make a bounded wait unbounded.
 */
#ifndef PORTAL_DOORBELL_H
#define PORTAL_DOORBELL_H

#include <stddef.h>
#include <stdint.h>

#include "portal/abi.h"
#include "portal/common.h"
#include "portal/region.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PORTAL_DOORBELL_VERSION 1

/* Values of struct portal_doorbell_shm.backend. Numbers are ABI. */
enum portal_doorbell_backend {
	PORTAL_DOORBELL_FUTEX   = 1,
	PORTAL_DOORBELL_EVENTFD = 2,
	/* reserved for later backends: 3 ivshmem, 4 stream, 5 whp */
};

enum portal_doorbell_role {
	PORTAL_DOORBELL_WAITER   = 1,
	PORTAL_DOORBELL_NOTIFIER = 2,
};

typedef struct portal_doorbell portal_doorbell_t;

/* > 0: work is there; 0: nothing yet; < 0: error, returned by the wait. */
typedef int (*portal_doorbell_ready_fn)(void *arg);

/* Default time the waiter spins (calling ready() with exponential pause
 * backoff) before it arms and sleeps. */
#define PORTAL_DOORBELL_SPIN_NS_DEFAULT 20000

struct portal_doorbell_opts {
	/* EVENTFD backend, required on both sides: the shared eventfd. The
	 * handle keeps its own dup (close-on-exec); the caller may close
	 * theirs after attach. Ignored by the futex backend. Note that 0 is a
	 * valid fd: set this explicitly. */
	int eventfd;
	uint32_t flags;     /* reserved, must be 0 */
	/* Waiter: nanoseconds to spin before arming. 0 = the default
	 * (PORTAL_DOORBELL_SPIN_NS_DEFAULT), < 0 = never spin (arm at once);
	 * clamped to one second. Ignored by notifiers. */
	int64_t spin_ns;
};

/* Counters kept in the handle's private memory. */
struct portal_doorbell_stats {
	uint64_t notifies;     /* notifier: notify calls */
	uint64_t rings;        /* notifier: notifies that found the waiter armed
	                        * and made the wake system call */
	uint64_t waits;        /* waiter: wait calls */
	uint64_t spin_hits;    /* waiter: waits satisfied while spinning */
	uint64_t arms;         /* waiter: times armed (wait and arm) */
	uint64_t sleeps;       /* waiter: sleep system calls (including those
	                        * that returned at once because the ring came
	                        * between arming and the call) */
	uint64_t spurious;     /* waiter: wake-ups that found no work */
	uint64_t timeouts;     /* waiter: waits that returned -ETIMEDOUT */
	uint64_t shared_rings; /* the shared `rings` word (all notifiers of this
	                        * doorbell); peer-written, informative only */
};

/* Bytes of shared memory a doorbell needs: sizeof(struct portal_doorbell_shm).
 * Any thread, any time. */
PORTAL_API size_t portal_doorbell_memsize(void);

/*
 * Lay out a doorbell for BACKEND in MEM (LEN bytes, 64-byte aligned): zero
 * it, then write magic, version and backend. Run it before any handle is
 * attached to MEM; it is not atomic against attach.
 * Returns 0, or -EINVAL (MEM NULL or misaligned, LEN < memsize, unknown
 * backend).
 */
PORTAL_API int portal_doorbell_init(void *mem, size_t len, enum portal_doorbell_backend backend);

/*
 * Attach a handle to the doorbell in MEM as ROLE. OPTS may be NULL for the
 * futex backend (defaults); the eventfd backend needs opts->eventfd. The
 * header is validated and copied into the handle. A waiter clears `armed`
 * (a previous waiter may have died armed).
 * Returns 0 with *OUT set, or
 *   -EINVAL        NULL argument, MEM misaligned, bad role, unknown flag
 *                  bits, or no usable eventfd for the eventfd backend
 *   PORTAL_EPROTO  bad header: wrong magic, version or backend, or LEN
 *                  smaller than the doorbell
 *   -ENOMEM, or a negative errno from dup().
 */
PORTAL_API int portal_doorbell_attach(void *mem, size_t len, enum portal_doorbell_role role,
				      const struct portal_doorbell_opts *opts,
				      portal_doorbell_t **out);

/*
 * Free the handle. A waiter disarms, and stops the futex fd helper thread if
 * there is one (before the caller may unmap MEM). Closes the handle's own
 * fds. NULL is fine. No other call on the handle may be in flight.
 */
PORTAL_API void portal_doorbell_detach(portal_doorbell_t *d);

/*
 * Place a doorbell named NAME in a region (creator only), kind
 * PORTAL_OBJ_DOORBELL, and init it for BACKEND. OWNER_SIDE is recorded in
 * the directory as the notifier side (the side that writes wake_seq);
 * param[0] is the backend, param[1] the doorbell version.
 * The doorbell is built before its directory entry is published, so a peer
 * that finds the name finds a complete doorbell.
 * Returns 0, -EINVAL (bad backend), or an error of portal_region_alloc.
 */
PORTAL_API int portal_doorbell_create(portal_region_t *reg, const char *name,
				      enum portal_doorbell_backend backend, uint32_t owner_side);

/* Find NAME (kind PORTAL_OBJ_DOORBELL) in the region and attach to it.
 * Returns 0, an error of portal_region_lookup, or one of attach. */
PORTAL_API int portal_doorbell_open(portal_region_t *reg, const char *name,
				    enum portal_doorbell_role role,
				    const struct portal_doorbell_opts *opts,
				    portal_doorbell_t **out);

/*
 * Notifier: call after publishing work. Issues a seq_cst fence, then loads
 * `armed`; only if the waiter is armed it bumps wake_seq (atomic add,
 * release) and wakes it (FUTEX_WAKE on the shared word, or writes 1 to the
 * eventfd). No system call when the waiter is not armed.
 * Returns 1 if it rang, 0 if the waiter was not armed, -EINVAL (not a
 * notifier handle), or a negative errno from the wake system call.
 * Memory order: full fence. Every store the caller made before notify is
 * ordered before the load of `armed`; if notify returns 0, the waiter's next
 * ready() check after arming sees those stores (pairs with the waiter's
 * fence in wait/arm).
 */
PORTAL_API int portal_doorbell_notify(portal_doorbell_t *d);

/*
 * Waiter: wait until READY(ARG) reports work. Calls ready() once; then spins
 * (opts.spin_ns, exponential pause backoff) calling ready(); then loops:
 * arm, full fence, ready() again, sleep in the kernel until the notifier
 * rings or the deadline passes, disarm, ready() again. Signals (EINTR) and
 * spurious wake-ups are absorbed.
 * TIMEOUT_NS < 0 waits forever, 0 checks once, > 0 is a CLOCK_MONOTONIC
 * deadline from the call (spinning included).
 * Returns 0 when ready() reported work, -ETIMEDOUT, the negative value
 * ready() returned, -EINVAL (NULL ready, not a waiter handle), or a negative
 * errno from the sleep system call. On return the doorbell is disarmed.
 * Memory order: whatever ready() itself provides (the doorbell adds a full
 * fence between arming and the re-check, pairing with notify's fence).
 */
PORTAL_API int portal_doorbell_wait(portal_doorbell_t *d, portal_doorbell_ready_fn ready,
				    void *arg, int64_t timeout_ns);

/*
 * Waiter: an fd that becomes readable when the notifier rings, for
 * poll/epoll/libuv. Use it with arm() and ack():
 *
 *     for (;;) {
 *             drain_work();
 *             if (portal_doorbell_arm(d, ready, arg) != 0)
 *                     continue;              (1: work is there; < 0: error)
 *             poll(fd) / epoll_wait(...)
 *             portal_doorbell_ack(d);
 *     }
 *
 * EVENTFD backend: the handle's dup of the shared eventfd; free.
 * FUTEX backend: the kernel gives no fd for a futex, so the first call
 * starts a helper thread (128 KiB stack, all signals blocked) that sleeps in
 * FUTEX_WAIT on wake_seq and writes to a private eventfd whenever wake_seq
 * moves. It costs one thread per doorbell, and every ring then costs one
 * extra thread wake-up and eventfd write (two context switches more than
 * waking the waiter directly). While idle it sleeps and costs nothing. It
 * is stopped by detach. Prefer the eventfd backend for fd-driven waiters.
 * The fd is owned by the handle; do not close it. Returns the fd (>= 0),
 * -EINVAL (not a waiter handle), or a negative errno (eventfd, thread).
 */
PORTAL_API int portal_doorbell_fd(portal_doorbell_t *d);

/*
 * Waiter, fd path: arm, full fence, then call READY(ARG) once. Returns 1 if
 * there is work already (the doorbell is disarmed again: handle the work,
 * do not sleep), 0 if armed with nothing there (poll the fd now), the
 * negative value ready() returned (disarmed), -EINVAL, or an error of
 * portal_doorbell_fd() (arm starts the futex helper itself if needed).
 * READY may be NULL: then arm() returns 0 and the caller must re-check its
 * work after arm() returns and before it sleeps.
 * Memory order: full fence after storing armed (pairs with notify's fence).
 */
PORTAL_API int portal_doorbell_arm(portal_doorbell_t *d, portal_doorbell_ready_fn ready,
				   void *arg);

/*
 * Waiter, fd path: after the fd was readable (or the poll timed out),
 * consume the fd's readiness and disarm. The caller then checks for work.
 * Returns 0, -EINVAL (not a waiter handle), or a negative errno from read.
 * Memory order: none beyond the syscall; the caller's own check acquires.
 */
PORTAL_API int portal_doorbell_ack(portal_doorbell_t *d);

/* Copy the handle's counters (and the shared `rings` word, relaxed).
 * Call it from the thread that uses the handle, or while no call on the
 * handle is in flight: the counters are plain private fields. */
PORTAL_API void portal_doorbell_stats(const portal_doorbell_t *d,
				      struct portal_doorbell_stats *st);

/* The backend copied from the header at attach. */
PORTAL_API enum portal_doorbell_backend portal_doorbell_get_backend(const portal_doorbell_t *d);

/*
 * A fresh eventfd for the EVENTFD backend: counter 0, non-blocking,
 * close-on-exec (clear FD_CLOEXEC before an exec that should inherit it, or
 * pass it with portal_fd_send). Returns the fd (>= 0) or a negative errno.
 */
PORTAL_API int portal_doorbell_eventfd_create(void);

/*
 * Pass FD over the connected Unix socket UNIX_SOCK (SCM_RIGHTS, with one
 * data byte). Returns 0, -EBADF (FD not open), -EPIPE (peer closed), or a
 * negative errno from sendmsg. EINTR is retried. No SIGPIPE.
 */
PORTAL_API int portal_fd_send(int unix_sock, int fd);

/*
 * Receive one fd sent by portal_fd_send; it is close-on-exec. Returns 0 with
 * *FD set, -EPIPE (peer closed, nothing received), PORTAL_EPROTO (a message
 * without exactly one fd; any fds that came with it are closed), or a
 * negative errno from recvmsg. EINTR is retried. Blocks unless the socket
 * is non-blocking (then -EAGAIN).
 */
PORTAL_API int portal_fd_recv(int unix_sock, int *fd);

#ifdef __cplusplus
}
#endif
#endif /* PORTAL_DOORBELL_H */
