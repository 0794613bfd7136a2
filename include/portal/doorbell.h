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
 *   PORTAL_DOORBELL_IVSHMEM  QEMU ivshmem-doorbell (host and guests). Host
 *                            side, a client of an ivshmem server: ring by
 *                            writing the peer's eventfd for a vector, wait
 *                            on its own vector's eventfd (the poll fd).
 *                            Guest side: ring by writing the BAR0 Doorbell
 *                            register; wait on the MSI-X eventfd VFIO gives,
 *                            or, without an IOMMU, poll the shared wake_seq
 *                            word (portal_ivshmem_guest_open below;
 *                            ivshmem-server/README.md, sections 5 and 6).
 *   PORTAL_DOORBELL_STREAM   one byte per wake-up over a stream (Unix or TCP
 *                            socket, virtio-serial port, pipe), coalesced:
 *                            no byte is written while one is still unread.
 *                            The waiter's end is the poll fd.
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
	PORTAL_DOORBELL_IVSHMEM = 3,
	PORTAL_DOORBELL_STREAM  = 4,
	/* reserved for a later backend: 5 whp */
};

enum portal_doorbell_role {
	PORTAL_DOORBELL_WAITER   = 1,
	PORTAL_DOORBELL_NOTIFIER = 2,
};

typedef struct portal_doorbell portal_doorbell_t;
/* An ivshmem device seen from inside a guest (portal_ivshmem_guest_open). */
typedef struct portal_ivshmem_guest portal_ivshmem_guest_t;
/* A host process's connection to an ivshmem server (portal_ivshmem_client_connect). */
typedef struct portal_ivshmem_client portal_ivshmem_client_t;

/* > 0: work is there; 0: nothing yet; < 0: error, returned by the wait. */
typedef int (*portal_doorbell_ready_fn)(void *arg);

/* Default time the waiter spins (calling ready() with exponential pause
 * backoff) before it arms and sleeps. */
#define PORTAL_DOORBELL_SPIN_NS_DEFAULT 20000

struct portal_doorbell_opts {
	/* EVENTFD backend, required on both sides: the shared eventfd.
	 * IVSHMEM backend, host side (ivshmem_guest NULL): the waiter's own
	 * eventfd for its vector, or for a notifier the eventfd of the peer
	 * and vector it rings; portal_ivshmem_client_eventfd() gives both.
	 * The handle keeps its own dup (close-on-exec); the caller may close
	 * theirs after attach. Ignored by the other backends. Note that 0 is
	 * a valid fd: set this explicitly. */
	int eventfd;
	uint32_t flags;     /* reserved, must be 0 */
	/* Waiter: nanoseconds to spin before arming. 0 = the default
	 * (PORTAL_DOORBELL_SPIN_NS_DEFAULT), < 0 = never spin (arm at once);
	 * clamped to one second. Ignored by notifiers. */
	int64_t spin_ns;

	/* IVSHMEM backend, guest side: the device (not owned; it must outlive
	 * the handle). NULL selects the host side. */
	portal_ivshmem_guest_t *ivshmem_guest;
	/* IVSHMEM guest notifier: the peer id to ring (0..65535). */
	uint32_t ivshmem_peer;
	/* IVSHMEM guest: the vector a notifier rings, or the MSI-X vector
	 * whose eventfd a waiter sleeps on (ignored in polling mode). */
	uint32_t ivshmem_vector;
	/* STREAM backend, required on both sides: this side's end of a
	 * connected stream (the waiter reads it, the notifier writes it). The
	 * handle keeps its own dup; the file status flags (O_NONBLOCK) are
	 * left as they are. Set it explicitly: 0 is a valid fd. */
	int stream_fd;

	/* Waiter, liveness: the peer to watch (portal_region_watch_open), or
	 * NULL for none (then wait behaves exactly as without these fields).
	 * Not owned; it must outlive the handle, and only this waiter's thread
	 * may use it while a wait runs. See portal_doorbell_wait. */
	portal_peer_watch_t *watch;
	/* Waiter with a watch: the longest sleep between two looks at the
	 * peer, in ns; 0 = PORTAL_DOORBELL_WATCH_CHECK_NS_DEFAULT, at least
	 * 100 us. */
	int64_t watch_check_ns;
};

/* Default interval between two liveness checks of a waiting waiter. */
#define PORTAL_DOORBELL_WATCH_CHECK_NS_DEFAULT 100000000 /* 100 ms */

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
 * futex backend (defaults); the eventfd backend needs opts->eventfd, the
 * ivshmem backend opts->eventfd (host side) or opts->ivshmem_guest (guest
 * side), the stream backend opts->stream_fd. The header is validated and
 * copied into the handle. A waiter clears `armed` (a previous waiter may
 * have died armed); a stream waiter also reads whatever is pending in the
 * stream and re-synchronises the coalescing counters.
 * Returns 0 with *OUT set, or
 *   -EINVAL        NULL argument, MEM misaligned, bad role, unknown flag
 *                  bits, or no usable fd for the backend (eventfd or
 *                  stream fd missing or closed, a stream fd that is not a
 *                  socket, pipe or character device, an ivshmem guest
 *                  notifier's peer or vector above 65535, a guest waiter's
 *                  vector not wired to an eventfd)
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
 * notifier handle), PORTAL_EPEERDEAD (stream backend: the other end
 * closed), or a negative errno from the wake system call. The stream
 * backend counts as rung a notify that found a wake-up byte still unread
 * and wrote none (coalesced): the waiter will wake for that byte.
 * The ivshmem guest side rings with a register write (no system call with
 * the sysfs mapping; a pwrite with VFIO).
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
 * With a watch (opts.watch or portal_doorbell_set_watch), the wait looks at
 * the peer before it first sleeps and never sleeps longer than the check
 * interval without looking again; with a pidfd (portal_region_watch_fd) and
 * the eventfd backend the sleep also wakes the moment the peer process
 * exits. When the watch reports DEAD, GONE or RESTARTED (ABSENT, a peer not
 * there yet, keeps the wait going), ready() is called once more: work that
 * was published before the peer died is returned first (0); only with no
 * work does the wait return PORTAL_EPEERDEAD. So a waiter whose peer dies
 * returns within: check interval + the watch's own bound (immediate for the
 * lock; stall_ns for the heartbeat) + one wake-up, whatever TIMEOUT_NS.
 * Returns 0 when ready() reported work, -ETIMEDOUT, the negative value
 * ready() returned, -EINVAL (NULL ready, not a waiter handle),
 * PORTAL_EPEERDEAD (the watched peer is dead, gone or restarted; stream
 * backend: the other end closed), or a negative errno from the sleep system
 * call. On return the doorbell is disarmed.
 * Memory order: whatever ready() itself provides (the doorbell adds a full
 * fence between arming and the re-check, pairing with notify's fence).
 */
PORTAL_API int portal_doorbell_wait(portal_doorbell_t *d, portal_doorbell_ready_fn ready,
				    void *arg, int64_t timeout_ns);

/*
 * Waiter: watch W (NULL: stop watching) during waits, looking at it at
 * least every CHECK_NS (0 = the default; >= 100 us); as opts.watch and
 * opts.watch_check_ns at attach. Returns 0 or -EINVAL (not a waiter, bad
 * interval). Not while a wait runs on the handle.
 */
PORTAL_API int portal_doorbell_set_watch(portal_doorbell_t *d, portal_peer_watch_t *w,
					 int64_t check_ns);

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
 * IVSHMEM backend: host side, the dup of the waiter's own vector eventfd;
 * guest side with VFIO, the dup of the MSI-X vector's eventfd; both free.
 * Guest side in polling mode (no interrupts): the first call starts a
 * helper thread that polls wake_seq and writes a private eventfd when it
 * moves. It costs a thread that looks every PORTAL_IVSHMEM_POLL_MAX_NS
 * (0.5 ms) while disarmed and, once armed, from 1 us backing off to 0.5 ms;
 * detach stops it.
 * STREAM backend: the dup of the waiter's end of the stream; free.
 * FUTEX backend: the kernel gives no fd for a futex, so the first call
 * starts a helper thread (128 KiB stack, all signals blocked) that sleeps in
 * FUTEX_WAIT on wake_seq and writes to a private eventfd whenever wake_seq
 * moves. It costs one thread per doorbell, and every ring then costs one
 * extra thread wake-up and eventfd write (two context switches more than
 * waking the waiter directly). While idle it sleeps and costs nothing. It
 * is stopped by detach. Prefer the eventfd backend for fd-driven waiters.
 * The fd is owned by the handle; do not close it. Returns the fd (>= 0),
 * -EINVAL (not a waiter handle), or a negative errno (eventfd, thread).
 *
 * Liveness on the fd path: the doorbell does not watch for you. Add
 * portal_region_watch_fd(w) to the poll set when it is >= 0 (readable when
 * the peer process exits), and give poll a timeout no longer than your
 * check interval (the heartbeat method and peers without a pidfd need it);
 * whenever poll returns, ack(), drain the work, then call
 * portal_region_watch_status(): DEAD, GONE or RESTARTED with nothing left
 * to drain means the peer is gone. The pidfd may change or vanish after
 * each status call: re-read it before each poll.
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
 * Returns 0, -EINVAL (not a waiter handle), PORTAL_EPEERDEAD (stream
 * backend: the other end closed), or a negative errno from read.
 * Memory order: none beyond the syscall; the caller's own check acquires
 * (the stream backend adds a full fence after publishing what it read).
 */
PORTAL_API int portal_doorbell_ack(portal_doorbell_t *d);

/* Copy the handle's counters (and the shared `rings` word, relaxed).
 * Call it from the thread that uses the handle, or while no call on the
 * handle is in flight: the counters are plain private fields. */
PORTAL_API void portal_doorbell_stats(const portal_doorbell_t *d,
				      struct portal_doorbell_stats *st);

/* The backend copied from the header at attach. */
PORTAL_API enum portal_doorbell_backend portal_doorbell_get_backend(const portal_doorbell_t *d);

/* ------------------------------------------------------------------ */
/* ivshmem: the server protocol, the host client, the guest device      */
/* ------------------------------------------------------------------ */

/*
 * QEMU's ivshmem-doorbell device shares memory and interrupts between
 * guests and host processes through an ivshmem server (portal-ivshmem-server,
 * ivshmem-server/README.md). The server protocol (QEMU's
 * docs/specs/ivshmem-spec.rst) runs over a Unix stream socket, server to
 * client only; each message is one little-endian int64, with at most one fd
 * (SCM_RIGHTS):
 *
 *   on connect, to the new client:
 *     0                  the protocol version, no fd
 *     ID                 the client's own id (0..65535), no fd
 *     -1   + shm fd      the shared memory (its size is the file's size)
 *     P    + eventfd     for each peer P already there, N times: P's
 *                        eventfds for vectors 0..N-1 (to ring P)
 *     ID   + eventfd     N times: its own eventfds for vectors 0..N-1 (to
 *                        wait on)
 *   later, to everyone:
 *     P    + eventfd     N times: peer P joined (vectors 0..N-1)
 *     P    (no fd)       peer P left
 *
 * Ringing peer P on vector V means writing the 8-byte integer 1 to P's
 * eventfd V; a guest does it by writing P << 16 | V to the Doorbell
 * register at BAR0 offset 0x0C, and QEMU writes the eventfd.
 *
 * Concurrency: a client or guest handle is used by one thread at a time;
 * doorbell handles attached through one are independent of it (each holds
 * its own dup of the eventfd it uses), but a guest device must outlive the
 * doorbell handles that use it.
 */
#define PORTAL_IVSHMEM_PROTOCOL_VERSION 0
#define PORTAL_IVSHMEM_MAX_PEER_ID      65535
/* Most vectors a Portal client or server handles (QEMU's own server: 64). */
#define PORTAL_IVSHMEM_MAX_VECTORS      64

/* BAR0 registers (32-bit accesses). */
#define PORTAL_IVSHMEM_REG_INTRMASK   0x00
#define PORTAL_IVSHMEM_REG_INTRSTATUS 0x04
#define PORTAL_IVSHMEM_REG_IVPOSITION 0x08 /* own id, read-only */
#define PORTAL_IVSHMEM_REG_DOORBELL   0x0C /* write peer << 16 | vector */
#define PORTAL_IVSHMEM_BAR0_SIZE      256

/* Polling mode (guest without interrupts): longest sleep between two looks
 * at wake_seq, so the worst added wake-up latency. */
#define PORTAL_IVSHMEM_POLL_MAX_NS 500000

/*
 * The Doorbell register value that rings PEER on VECTOR: PEER << 16 |
 * VECTOR. Returns it (>= 0, as int64), or -EINVAL if PEER or VECTOR is
 * above 65535. Pure; any thread.
 */
PORTAL_API int64_t portal_ivshmem_doorbell_value(uint32_t peer, uint32_t vector);

/*
 * Receive one raw protocol message from an ivshmem server socket: *VALUE
 * gets the int64 (converted from little-endian), *FD the fd that came with
 * it (close-on-exec) or -1. Waits up to TIMEOUT_NS (< 0 forever, 0 only
 * what is already there) for the message to start; a message that has
 * started is read whole. For clients that want to see the protocol itself
 * (tests, tools); portal_ivshmem_client_* does the bookkeeping.
 * Returns 0, -ETIMEDOUT (nothing came), PORTAL_EPEERDEAD (the server closed
 * the connection), PORTAL_EPROTO (more than one fd, a truncated control
 * message, or the connection closed inside a message; fds that came are
 * closed), -EINVAL, or a negative errno from poll/recvmsg.
 */
PORTAL_API int portal_ivshmem_recv_msg(int sock, int64_t *value, int *fd, int64_t timeout_ns);

/* Host client ------------------------------------------------------------ */

enum portal_ivshmem_event_kind {
	PORTAL_IVSHMEM_EV_PEER_VECTOR = 1, /* peer joined: one message per vector */
	PORTAL_IVSHMEM_EV_PEER_LEFT   = 2, /* peer left (no fd) */
	PORTAL_IVSHMEM_EV_OWN_VECTOR  = 3, /* one more of our own vectors
	                                    * (after connect: the server has
	                                    * more vectors than we asked for) */
};

struct portal_ivshmem_event {
	enum portal_ivshmem_event_kind kind;
	uint32_t peer;    /* the peer's id (our own for OWN_VECTOR) */
	uint32_t vector;  /* PEER_VECTOR / OWN_VECTOR: which vector; an fd for a
	                   * vector >= the client's count was closed */
};

/*
 * Connect to the ivshmem server listening on the Unix socket PATH and read
 * the set-up: the version, our id, the shared memory, the peers already
 * there, and our own VECTORS eventfds (1..PORTAL_IVSHMEM_MAX_VECTORS; the
 * server's vector count must be at least VECTORS, or the set-up never
 * completes and this times out). A socket that does not exist yet or does
 * not accept yet (ENOENT, ECONNREFUSED) is retried until TIMEOUT_NS
 * (< 0 forever).
 * Returns 0 with *OUT set, or
 *   -EINVAL          bad argument (PATH too long for a socket address)
 *   -ECONNREFUSED    the server closed the connection before the version
 *                    (it is full: --max-peers), or the socket exists but
 *                    nobody accepted in time
 *   -ENOENT          no socket at PATH in time
 *   -ETIMEDOUT       the set-up did not complete in time
 *   PORTAL_EVERSION  the server speaks another protocol version
 *   PORTAL_EPROTO    a malformed set-up (bad id, no shm fd, ...)
 *   PORTAL_EPEERDEAD the server closed the connection during the set-up
 *   -ENOMEM, or a negative errno from socket/connect/fstat.
 */
PORTAL_API int portal_ivshmem_client_connect(const char *path, unsigned vectors,
					     int64_t timeout_ns, portal_ivshmem_client_t **out);

/* Close the connection (the server announces our leaving) and every fd the
 * client holds (shm, eventfds). Doorbell handles keep their own dups. NULL
 * is fine. */
PORTAL_API void portal_ivshmem_client_close(portal_ivshmem_client_t *c);

/* Our id (0..65535). */
PORTAL_API uint32_t portal_ivshmem_client_id(const portal_ivshmem_client_t *c);
/* The vector count given to connect. */
PORTAL_API unsigned portal_ivshmem_client_vectors(const portal_ivshmem_client_t *c);
/* The shared memory fd, owned by the client (dup it to keep it), and its
 * size in bytes (a power of two with portal-ivshmem-server). Map it with
 * mmap(MAP_SHARED) or attach a region as "fd:N". */
PORTAL_API int portal_ivshmem_client_shm_fd(const portal_ivshmem_client_t *c);
PORTAL_API uint64_t portal_ivshmem_client_shm_size(const portal_ivshmem_client_t *c);
/* The server socket: poll it for POLLIN, then call
 * portal_ivshmem_client_process(). Owned by the client. */
PORTAL_API int portal_ivshmem_client_sock_fd(const portal_ivshmem_client_t *c);

/*
 * Read and apply one server message (peer joined / left), waiting up to
 * TIMEOUT_NS (< 0 forever, 0 only what is there). The peer table is updated
 * before it returns, and *EV (may be NULL) says what happened.
 * Returns 1 (one message applied), 0 (none in time), PORTAL_EPEERDEAD (the
 * server is gone; the table stays as it was and the eventfds still work),
 * PORTAL_EPROTO (a malformed message: an id out of range, our own id
 * leaving, a leave for an unknown peer, a second shm; it is dropped and the
 * connection stays usable), or an error of portal_ivshmem_recv_msg.
 */
PORTAL_API int portal_ivshmem_client_process(portal_ivshmem_client_t *c,
					     struct portal_ivshmem_event *ev, int64_t timeout_ns);

/*
 * The eventfd that interrupts PEER on VECTOR: for another peer, the fd to
 * write to ring it (a notifier's opts.eventfd); for our own id, the fd we
 * wait on (the waiter's opts.eventfd). Owned by the client.
 * Returns the fd, -ENOENT (peer not known, or not that many vectors), or
 * -EINVAL (VECTOR out of range).
 */
PORTAL_API int portal_ivshmem_client_eventfd(const portal_ivshmem_client_t *c, uint32_t peer,
					     uint32_t vector);

/* Ring PEER on VECTOR directly (no doorbell protocol: no armed check).
 * Returns 0, or an error of portal_ivshmem_client_eventfd / write. Never
 * blocks: the client makes every vector fd a server sends O_NONBLOCK (the
 * flag is in the shared file description, so a notifier's dup has it too),
 * and a vector that cannot take the write now (a full eventfd counter, or
 * a hostile server's full pipe) counts as rung: 0, nothing written. */
PORTAL_API int portal_ivshmem_client_ring(const portal_ivshmem_client_t *c, uint32_t peer,
					  uint32_t vector);

/* The ids of the peers known now (ours excluded), ascending, up to MAX
 * into IDS (may be NULL with MAX 0). Returns how many peers there are. */
PORTAL_API size_t portal_ivshmem_client_peers(const portal_ivshmem_client_t *c, uint32_t *ids,
					      size_t max);

/* Guest device ----------------------------------------------------------- */

/* Access paths for portal_ivshmem_guest_open. */
#define PORTAL_IVSHMEM_GUEST_F_SYSFS 0x1u /* sysfs resource0/resource2 mmaps;
                                          * no interrupts: polling mode */
#define PORTAL_IVSHMEM_GUEST_F_VFIO  0x2u /* VFIO: BAR0 by pread/pwrite, BAR2
                                          * by mmap, MSI-X eventfds */
#define PORTAL_IVSHMEM_GUEST_F_MASK  0x3u

struct portal_ivshmem_guest_opts {
	/* PCI address "0000:00:04.0"; NULL: the first device with vendor
	 * 0x1af4, device 0x1110 under the sysfs root. */
	const char *bdf;
	/* NULL: "/sys/bus/pci/devices". Tests point it at a fake tree. */
	const char *sysfs_root;
	/* 0: VFIO if the device is bound to vfio-pci, else sysfs; or one of
	 * PORTAL_IVSHMEM_GUEST_F_SYSFS / _F_VFIO. */
	uint32_t flags;
	/* VFIO: MSI-X vectors to wire to eventfds; 0 = all the device has
	 * (at most PORTAL_IVSHMEM_MAX_VECTORS). */
	uint32_t vectors;
};

/*
 * Open an ivshmem device from inside a guest (or a fake sysfs tree).
 * sysfs: writes 1 to the device's `enable`, maps resource0 (registers) and
 * resource2 (the shared memory). VFIO (device bound to vfio-pci, an IOMMU,
 * q35 + intel-iommu; ivshmem-server/README.md): opens the container
 * /dev/vfio/vfio and the group /dev/vfio/N named by the device's
 * iommu_group link, sets the type-1 IOMMU, gets the device fd, enables
 * memory space and bus mastering, maps BAR2, and wires MSI-X vectors to
 * fresh eventfds (VFIO_DEVICE_SET_IRQS).
 * Returns 0 with *OUT set, or -EINVAL (bad argument or flags, BAR sizes
 * wrong), -ENOENT (no such device; no ivshmem device), -ENODEV (VFIO asked
 * for but the device has no IOMMU group, the group is not viable, or no
 * MSI-X), -ENOMEM, or a negative errno from open/mmap/ioctl.
 */
PORTAL_API int portal_ivshmem_guest_open(const struct portal_ivshmem_guest_opts *opts,
					 portal_ivshmem_guest_t **out);

/* Unwire interrupts, unmap, close. NULL is fine. No doorbell handle that
 * uses the device may remain. */
PORTAL_API void portal_ivshmem_guest_close(portal_ivshmem_guest_t *g);

/* Our id: the IVPosition register, read once at open. */
PORTAL_API uint32_t portal_ivshmem_guest_id(const portal_ivshmem_guest_t *g);

/* The shared memory (BAR2) as mapped, and its size. */
PORTAL_API void *portal_ivshmem_guest_shm(const portal_ivshmem_guest_t *g, size_t *size);

/* How many MSI-X vectors are wired to eventfds (0: sysfs, polling mode). */
PORTAL_API unsigned portal_ivshmem_guest_vectors(const portal_ivshmem_guest_t *g);

/* The eventfd that becomes readable when VECTOR's interrupt fires (owned by
 * the device). Returns the fd, or -ENOENT (polling mode, or VECTOR not
 * wired). */
PORTAL_API int portal_ivshmem_guest_irq_fd(const portal_ivshmem_guest_t *g, uint32_t vector);

/* Ring PEER on VECTOR: write the Doorbell register (a release fence first,
 * so the caller's earlier stores to the shared memory are visible before
 * the interrupt). Returns 0, -EINVAL (PEER or VECTOR above 65535), or a
 * negative errno from pwrite (VFIO). No exclusion needed: a 32-bit
 * register write is one access. */
PORTAL_API int portal_ivshmem_guest_ring(const portal_ivshmem_guest_t *g, uint32_t peer,
					 uint32_t vector);

/* ------------------------------------------------------------------ */
/* stream                                                               */
/* ------------------------------------------------------------------ */

/*
 * Wait until the other end of stream FD is there: poll() stops reporting
 * POLLHUP. A virtio-serial port in a guest (/dev/vportNpM) reports POLLHUP
 * until the host side opens its chardev, and drops what is written before
 * that; a stream doorbell needs every byte to arrive. Returns 0, -ETIMEDOUT,
 * -EINVAL, or a negative errno from poll. TIMEOUT_NS < 0 waits forever.
 */
PORTAL_API int portal_doorbell_stream_wait_connected(int fd, int64_t timeout_ns);

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
