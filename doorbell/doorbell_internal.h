/* SPDX-License-Identifier: MIT */
/*
 * doorbell_internal.h - the handle and the backend ops table.
 *
 * doorbell.c runs the protocol (spin, arm, fence, re-check, disarm) that is
 * the same for every backend; a backend only knows how to wake the waiter,
 * how the waiter sleeps, and how to give it an fd. One file per backend:
 * futex.c, eventfd.c, ivshmem.c (host and guest sides; the guest device is
 * ivshmem_guest.c, the server client ivshmem_client.c), stream.c.
 */
#ifndef PORTAL_DOORBELL_INTERNAL_H
#define PORTAL_DOORBELL_INTERNAL_H

#include <assert.h>
#include <pthread.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/atomic_internal.h"
#include "common/log_internal.h"
#include "portal/doorbell.h"

/* Deadline value meaning "no deadline" (wait forever). */
#define PORTAL_DB_NO_DEADLINE INT64_MAX

struct portal_doorbell;

struct portal_doorbell_ops {
	const char *name;
	/* Set up backend state in the handle (role and shm already set).
	 * Returns 0 or a negative errno. */
	int (*attach)(struct portal_doorbell *d, const struct portal_doorbell_opts *o);
	/* Tear it down; must stop anything that still touches d->shm. */
	void (*detach)(struct portal_doorbell *d);
	/* Notifier: wake the waiter. wake_seq has been bumped already.
	 * Returns 0 or a negative errno. */
	int (*ring)(struct portal_doorbell *d);
	/* Waiter: sleep until rung, or until wake_seq != SEQ, or until
	 * DEADLINE_NS (CLOCK_MONOTONIC, or PORTAL_DB_NO_DEADLINE). Returns 0
	 * (woken, perhaps spuriously), -ETIMEDOUT, -EINTR, or a negative
	 * errno. Consumes whatever made it wake. */
	int (*sleep)(struct portal_doorbell *d, uint32_t seq, int64_t deadline_ns);
	/* Waiter: the pollable fd, created on first use. >= 0 or -errno. */
	int (*fd)(struct portal_doorbell *d);
	/* Waiter: consume the fd's readiness, if fd() was ever called.
	 * Returns 0 or a negative errno. */
	int (*drain)(struct portal_doorbell *d);
};

extern const struct portal_doorbell_ops portal_doorbell_futex_ops;
extern const struct portal_doorbell_ops portal_doorbell_eventfd_ops;
extern const struct portal_doorbell_ops portal_doorbell_ivshmem_ops;
extern const struct portal_doorbell_ops portal_doorbell_stream_ops;

/* How an ivshmem handle rings and sleeps (chosen at attach from opts). */
enum portal_db_ivshmem_mode {
	PORTAL_DB_IVS_HOST = 1,   /* eventfds from an ivshmem server */
	PORTAL_DB_IVS_GUEST_IRQ,  /* guest: ring BAR0, wait on an MSI-X eventfd */
	PORTAL_DB_IVS_GUEST_POLL, /* guest: ring BAR0, waiter polls wake_seq */
};

struct portal_doorbell {
	struct portal_doorbell_shm *shm;
	const struct portal_doorbell_ops *ops;
	/* Copied from the header at attach, never re-read from shm. */
	uint32_t backend;
	uint32_t role;               /* enum portal_doorbell_role */
	int64_t spin_ns;             /* <= 0: no spin phase */

	/* eventfd backend: our dup of the shared eventfd. futex backend and
	 * ivshmem polling mode: the private eventfd the helper thread writes.
	 * ivshmem host / guest IRQ: our dup of the eventfd we wait on or ring.
	 * stream backend: our dup of the stream fd. -1 when none; doorbell.c
	 * closes it at detach. */
	int efd;
	bool efd_nonblock;           /* O_NONBLOCK is set on efd */

	/* ivshmem backend. */
	struct {
		enum portal_db_ivshmem_mode mode;
		portal_ivshmem_guest_t *guest; /* guest modes; not owned */
		uint32_t peer, vector;         /* guest notifier: whom to ring */
	} ivs;

	/* stream backend. */
	struct {
		bool is_socket;      /* send/recv with MSG_DONTWAIT; else poll */
		uint32_t drained;    /* waiter: bytes read so far (private copy
		                      * of the shared stream_drained word) */
	} stream;

	/* futex backend and ivshmem polling mode, fd path: the helper thread. */
	struct {
		bool started;
		pthread_t tid;
		uint32_t start_seq;  /* wake_seq when the helper was started */
		_Atomic int stop;    /* set by detach; the helper exits */
		_Atomic uint32_t exited; /* set by the helper as it leaves
		                          * (a private futex word) */
	} watch;

	/* Waiter, liveness: the watched peer (not owned), the check interval,
	 * and for the sleep an extra fd to poll (the watch's pidfd; -1 none).
	 * Backends that poll (eventfd) add peer_fd to their poll set; the
	 * others ignore it and the check interval bounds the sleep. */
	portal_peer_watch_t *peer;
	int64_t peer_check_ns;
	int peer_fd;

	struct portal_doorbell_stats st;
};

/*
 * Stream backend words. They sit in padding of struct portal_doorbell_shm
 * that abi.h does not name yet (abi.h is owned elsewhere; the request to name
 * them is in ivshmem-server/README.md):
 *   stream_drained  offset 132, in the waiter's line (pad1[0..3]): bytes
 *                   the waiter has read from the stream; waiter-written
 *   stream_sent     offset 260, the notifier line's `reserved` word: bytes
 *                   notifiers have written; notifier-written (atomic add)
 * Every other backend leaves them 0.
 */
#define PORTAL_DB_STREAM_DRAINED_OFF 132
#define PORTAL_DB_STREAM_SENT_OFF    260
static_assert(offsetof(struct portal_doorbell_shm, pad1) == PORTAL_DB_STREAM_DRAINED_OFF,
	      "stream_drained overlays pad1");
static_assert(offsetof(struct portal_doorbell_shm, reserved) == PORTAL_DB_STREAM_SENT_OFF,
	      "stream_sent overlays reserved");

static inline _Atomic uint32_t *portal_db_stream_drained(struct portal_doorbell_shm *shm)
{
	return (_Atomic uint32_t *)(void *)((char *)shm + PORTAL_DB_STREAM_DRAINED_OFF);
}

static inline _Atomic uint32_t *portal_db_stream_sent(struct portal_doorbell_shm *shm)
{
	return (_Atomic uint32_t *)(void *)((char *)shm + PORTAL_DB_STREAM_SENT_OFF);
}

/* Monotonic clock in nanoseconds. */
int64_t portal_db_now_ns(void);

/* Consume an eventfd's count without blocking (poll first if the fd is
 * blocking). Returns 0 or a negative errno. */
int portal_db_eventfd_drain(int fd, bool nonblock);

/* fdpass.c: take the first fd of M's SCM_RIGHTS data into *FD (if it is
 * still -1), closing every further one. Returns 1 if M held anything else
 * (more fds, another control message, truncated control data), else 0. */
struct msghdr;
int portal_db_take_fds(const struct msghdr *m, int *fd);

/* Turn an absolute CLOCK_MONOTONIC deadline into a relative timespec
 * (zero if already past). */
void portal_db_remaining(int64_t deadline_ns, struct timespec *ts);

/* Start an fd helper thread (futex watcher, ivshmem poller): a small
 * stack, every signal blocked. Returns 0 or a pthread error number. */
int doorbell_helper_thread(pthread_t *tid, void *(*fn)(void *), void *arg);

#endif /* PORTAL_DOORBELL_INTERNAL_H */
