/* SPDX-License-Identifier: MIT */
/*
 * doorbell.c - the doorbell protocol, common to every backend.
 *
 * Why no wake-up is ever lost
 * ---------------------------
 * Let W be "there is work" as ready() sees it (the producer's published
 * ring index) and A the shared `armed` word.
 *
 *   waiter (wait / arm)                 notifier (producer, then notify)
 *   D0  seq = wake_seq      (acquire)
 *   D1  A = 1 (relaxed); fence(seq_cst)  P   publish W (release, by the ring)
 *       r = ready()  -- loads W          D2  fence(seq_cst); a = A (relaxed)
 *       r? disarm, return                    a? D3 wake_seq += 1 (release);
 *       sleep while wake_seq == seq                 wake (futex / eventfd)
 *
 * Dekker: each side stores, fences, then loads what the other stored. The
 * two seq_cst fences are totally ordered (C11 7.17.4: for seq_cst fences X
 * and Y where a store is sequenced before X, Y is sequenced before a load
 * of the same object and X precedes Y, the load sees the store or a later
 * one). So for any arming and any publish:
 *   - waiter's fence first: the notifier's load of A sees 1 (or the
 *     waiter's later disarm, which it only does after it has woken up
 *     and before it re-checks), so the notifier rings; or
 *   - notifier's fence first: the waiter's ready() sees W and it does not
 *     sleep.
 * Either the waiter sees the work or the notifier rings it.
 *
 * And the ring is not missed by the sleep that follows: the waiter read
 * wake_seq (D0) before it stored A = 1. A notify that read that A = 1
 * increments wake_seq after its load of A (D3). D0 cannot have read that
 * increment: if it had, D3 (release) synchronizes with D0 (acquire), so the
 * notifier's load of A happens before the waiter's store of A = 1 and could
 * not have read it. So seq is older than the ring's wake_seq, and
 * FUTEX_WAIT(wake_seq, seq) either sees the new value and returns at once,
 * or is queued before the FUTEX_WAKE (the kernel compares and queues under
 * the futex bucket lock). For the eventfd backend the written count stays
 * in the eventfd until the waiter reads it, so a write before poll() makes
 * poll() return at once.
 *
 * A stale A = 1 (a previous round, or a peer that lies) only costs a
 * needless ring and a spurious wake-up; the waiter re-checks and re-arms.
 *
 * wake_seq is 32 bits and wraps. The futex compare is fooled (ABA) only if
 * wake_seq moves by a multiple of 2^32 between the waiter's D0 load and the
 * kernel's compare in FUTEX_WAIT. Every bump in that window comes from a
 * notify that found A = 1, that is from a publish the waiter has not
 * consumed (at most the ring's capacity while the waiter is not running) or
 * from a notify already past its load of A (in flight). So the precise
 * condition, which the Spin model found, is: capacity + notifies in flight
 * between D0 and the futex compare < 2^32. It is not about a waiter
 * sleeping through 2^32 rings: once asleep, the first bump wakes it.
 *
 * Liveness. A waiter may be given a peer watch (portal_region_watch_*):
 * then no sleep lasts longer than the check interval, the peer is looked
 * at after each one, and a dead, gone or restarted peer ends the wait with
 * PORTAL_EPEERDEAD, but only after one more ready() finds nothing: the
 * peer's death is observed after its last publish (the OS releases its
 * lock after the process's last store; a stalled heartbeat is judged after
 * the fact), so that ready() sees everything it published.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "doorbell/doorbell_internal.h"

/* The spin phase doubles the pause count per ready() check up to this. */
#define SPIN_PAUSE_MAX 64u
/* Longest spin phase accepted (opts.spin_ns is clamped to it). */
#define SPIN_NS_MAX 1000000000
/* Shortest liveness check interval accepted. */
#define WATCH_CHECK_NS_MIN 100000

static const struct portal_doorbell_ops *ops_for(uint32_t backend)
{
	switch (backend) {
	case PORTAL_DOORBELL_FUTEX:   return &portal_doorbell_futex_ops;
	case PORTAL_DOORBELL_EVENTFD: return &portal_doorbell_eventfd_ops;
	case PORTAL_DOORBELL_IVSHMEM: return &portal_doorbell_ivshmem_ops;
	case PORTAL_DOORBELL_STREAM:  return &portal_doorbell_stream_ops;
	default:                      return NULL;
	}
}

int64_t portal_db_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void portal_db_remaining(int64_t deadline_ns, struct timespec *ts)
{
	int64_t left = deadline_ns - portal_db_now_ns();

	if (left < 0)
		left = 0;
	ts->tv_sec = (time_t)(left / 1000000000);
	ts->tv_nsec = (long)(left % 1000000000);
}

size_t portal_doorbell_memsize(void)
{
	return sizeof(struct portal_doorbell_shm);
}

int portal_doorbell_init(void *mem, size_t len, enum portal_doorbell_backend backend)
{
	struct portal_doorbell_shm *shm = mem;

	if (!mem || ((uintptr_t)mem & (PORTAL_CACHELINE - 1)))
		return -EINVAL;
	if (len < sizeof(*shm))
		return -EINVAL;
	if (!ops_for((uint32_t)backend))
		return -EINVAL;

	/* No handle is attached yet (documented precondition), so plain
	 * stores are enough; whatever later hands MEM to a peer (the region
	 * directory's release, fork, a socket) publishes them. */
	memset(shm, 0, sizeof(*shm));
	shm->magic = PORTAL_DOORBELL_MAGIC;
	shm->version = PORTAL_DOORBELL_VERSION;
	shm->backend = (uint16_t)backend;
	return 0;
}

int portal_doorbell_attach(void *mem, size_t len, enum portal_doorbell_role role,
			   const struct portal_doorbell_opts *opts, portal_doorbell_t **out)
{
	struct portal_doorbell_shm *shm = mem;
	const struct portal_doorbell_ops *ops;
	struct portal_doorbell *d;
	uint32_t magic;
	uint16_t version, backend;
	int rc;

	if (!mem || !out || ((uintptr_t)mem & (PORTAL_CACHELINE - 1)))
		return -EINVAL;
	if (role != PORTAL_DOORBELL_WAITER && role != PORTAL_DOORBELL_NOTIFIER)
		return -EINVAL;
	if (opts && opts->flags != 0)
		return -EINVAL;
	if (len < sizeof(*shm)) {
		portal_log(PORTAL_LOG_WARN, "doorbell: %zu bytes, need %zu", len, sizeof(*shm));
		return PORTAL_EPROTO;
	}

	/* Line 0 is immutable after init: read each field once, check the
	 * copies, and never look at the shared header again. */
	magic = shm->magic;
	version = shm->version;
	backend = shm->backend;
	if (magic != PORTAL_DOORBELL_MAGIC) {
		portal_log(PORTAL_LOG_WARN, "doorbell: bad magic 0x%08x", (unsigned)magic);
		return PORTAL_EPROTO;
	}
	if (version != PORTAL_DOORBELL_VERSION) {
		portal_log(PORTAL_LOG_WARN, "doorbell: version %u, this library speaks %u",
			   (unsigned)version, PORTAL_DOORBELL_VERSION);
		return PORTAL_EPROTO;
	}
	ops = ops_for(backend);
	if (!ops) {
		portal_log(PORTAL_LOG_WARN, "doorbell: unknown backend %u", (unsigned)backend);
		return PORTAL_EPROTO;
	}

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->shm = shm;
	d->ops = ops;
	d->backend = backend;
	d->role = role;
	d->efd = -1;
	d->spin_ns = PORTAL_DOORBELL_SPIN_NS_DEFAULT;
	d->peer_fd = -1;
	if (role == PORTAL_DOORBELL_WAITER && opts && opts->watch) {
		d->peer = opts->watch;
		d->peer_check_ns = opts->watch_check_ns;
		if (d->peer_check_ns < 0 || (d->peer_check_ns && d->peer_check_ns < WATCH_CHECK_NS_MIN)) {
			free(d);
			return -EINVAL;
		}
		if (!d->peer_check_ns)
			d->peer_check_ns = PORTAL_DOORBELL_WATCH_CHECK_NS_DEFAULT;
	}
	if (opts && opts->spin_ns != 0)
		d->spin_ns = opts->spin_ns;
	if (d->spin_ns > SPIN_NS_MAX)
		d->spin_ns = SPIN_NS_MAX;
	atomic_init(&d->watch.stop, 0);
	atomic_init(&d->watch.exited, 0);

	rc = ops->attach(d, opts);
	if (rc < 0) {
		free(d);
		return rc;
	}
	if (role == PORTAL_DOORBELL_WAITER) {
		/* D4: disarm; relaxed, only the waiter writes `armed`, and a
		 * stale 1 left by a dead waiter only costs a needless ring. */
		atomic_store_explicit(&shm->armed, 0, memory_order_relaxed);
	}
	*out = d;
	return 0;
}

void portal_doorbell_detach(portal_doorbell_t *d)
{
	if (!d)
		return;
	if (d->role == PORTAL_DOORBELL_WAITER) {
		/* D4: disarm, so notifiers stop making system calls for us;
		 * relaxed, only the waiter writes `armed`. */
		atomic_store_explicit(&d->shm->armed, 0, memory_order_relaxed);
	}
	d->ops->detach(d);
	if (d->efd >= 0)
		close(d->efd);
	free(d);
}

enum portal_doorbell_backend portal_doorbell_get_backend(const portal_doorbell_t *d)
{
	return (enum portal_doorbell_backend)d->backend;
}

void portal_doorbell_stats(const portal_doorbell_t *d, struct portal_doorbell_stats *st)
{
	*st = d->st;
	/* Informative counter written by the notifier side; relaxed, no data
	 * hangs on it. */
	st->shared_rings = atomic_load_explicit(&d->shm->rings, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Notifier                                                            */
/* ------------------------------------------------------------------ */

int portal_doorbell_notify(portal_doorbell_t *d)
{
	struct portal_doorbell_shm *shm;
	int rc;

	if (unlikely(!d || d->role != PORTAL_DOORBELL_NOTIFIER))
		return -EINVAL;
	shm = d->shm;
	d->st.notifies++;

	/* D2: the caller's publish of the work, then this fence, then the
	 * load of `armed`; pairs with D1 in arm_and_check(). Relaxed load:
	 * the fence orders it. */
	atomic_thread_fence(memory_order_seq_cst);
	if (likely(atomic_load_explicit(&shm->armed, memory_order_relaxed) == 0))
		return 0;

	/* D3: bump wake_seq after reading armed == 1, then wake; release,
	 * pairs with the acquire load D0 in arm_and_check() (see the top of
	 * this file: a waiter that read this value armed after we looked).
	 * An atomic add because several notifier handles may ring. */
	atomic_fetch_add_explicit(&shm->wake_seq, 1, memory_order_release);
	/* Informative counter; relaxed, nothing is ordered by it. */
	atomic_fetch_add_explicit(&shm->rings, 1, memory_order_relaxed);
	d->st.rings++;
	rc = d->ops->ring(d);
	if (rc < 0)
		return rc;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Waiter                                                              */
/* ------------------------------------------------------------------ */

static inline void disarm(struct portal_doorbell *d)
{
	/* D4: disarm; relaxed, only the waiter writes `armed`, and a notifier
	 * that still sees the old 1 only rings needlessly. */
	atomic_store_explicit(&d->shm->armed, 0, memory_order_relaxed);
}

/*
 * Arm, fence, re-check. Returns ready()'s answer (0: still armed, nothing
 * there; otherwise disarmed again). *SEQ gets wake_seq as it was before
 * arming: the value to sleep on.
 */
static int arm_and_check(struct portal_doorbell *d, portal_doorbell_ready_fn ready, void *arg,
			 uint32_t *seq)
{
	struct portal_doorbell_shm *shm = d->shm;
	int r;

	/* D0: read wake_seq, then arm; acquire, pairs with D3 in notify, so
	 * this load cannot see a bump made by a notify that saw our arming. */
	*seq = atomic_load_explicit(&shm->wake_seq, memory_order_acquire);
	/* D1: armed = 1, then the fence, then re-check the work in ready();
	 * pairs with D2 in notify. The store is relaxed: the seq_cst fence
	 * after it is what orders it before ready()'s loads. */
	atomic_store_explicit(&shm->armed, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_seq_cst);
	d->st.arms++;

	r = ready ? ready(arg) : 0;
	if (r != 0)
		disarm(d);
	return r;
}

/* Spin with exponential pause backoff until ready() answers, SPIN_END or
 * DEADLINE passes. Returns ready()'s last answer. */
static int spin_phase(struct portal_doorbell *d, portal_doorbell_ready_fn ready, void *arg,
		      int64_t deadline)
{
	int64_t end;
	unsigned pauses = 1, i;
	int r;

	if (d->spin_ns <= 0)
		return 0;
	end = portal_db_now_ns() + d->spin_ns;
	if (end > deadline)
		end = deadline;
	for (;;) {
		for (i = 0; i < pauses; i++)
			portal_cpu_relax();
		r = ready(arg);
		if (r != 0)
			return r;
		if (pauses < SPIN_PAUSE_MAX)
			pauses <<= 1;
		if (portal_db_now_ns() >= end)
			return 0;
	}
}

static inline int done(int r)
{
	return r > 0 ? 0 : r;
}

int portal_doorbell_set_watch(portal_doorbell_t *d, portal_peer_watch_t *w, int64_t check_ns)
{
	if (!d || d->role != PORTAL_DOORBELL_WAITER || check_ns < 0 ||
	    (check_ns && check_ns < WATCH_CHECK_NS_MIN))
		return -EINVAL;
	d->peer = w;
	d->peer_check_ns = check_ns ? check_ns : PORTAL_DOORBELL_WATCH_CHECK_NS_DEFAULT;
	d->peer_fd = -1;
	return 0;
}

/*
 * Waiter with a watch: 0 while the peer lives (or is not there yet), else
 * the wait's result: 0 or ready()'s error if work is there after all (one
 * last look, so nothing published before the death is lost), otherwise
 * PORTAL_EPEERDEAD. Refreshes d->peer_fd for the next sleep.
 */
static int peer_check(struct portal_doorbell *d, portal_doorbell_ready_fn ready, void *arg,
		      bool *dead)
{
	struct portal_peer_status st;
	int r;

	*dead = false;
	if (portal_region_watch_status(d->peer, &st) < 0 ||
	    st.state == PORTAL_PEER_ALIVE || st.state == PORTAL_PEER_ABSENT) {
		d->peer_fd = portal_region_watch_fd(d->peer);
		return 0;
	}
	*dead = true;
	r = ready(arg);
	return r != 0 ? done(r) : PORTAL_EPEERDEAD;
}

int portal_doorbell_wait(portal_doorbell_t *d, portal_doorbell_ready_fn ready, void *arg,
			 int64_t timeout_ns)
{
	int64_t deadline, until, now;
	uint32_t seq;
	bool dead;
	int r, rc;

	if (!d || !ready || d->role != PORTAL_DOORBELL_WAITER)
		return -EINVAL;
	d->st.waits++;

	r = ready(arg);
	if (r != 0)
		return done(r);
	if (timeout_ns == 0) {
		d->st.timeouts++;
		return -ETIMEDOUT;
	}
	if (timeout_ns < 0)
		deadline = PORTAL_DB_NO_DEADLINE;
	else {
		deadline = portal_db_now_ns();
		deadline = timeout_ns > PORTAL_DB_NO_DEADLINE - deadline
			 ? PORTAL_DB_NO_DEADLINE : deadline + timeout_ns;
	}

	r = spin_phase(d, ready, arg, deadline);
	if (r != 0) {
		if (r > 0)
			d->st.spin_hits++;
		return done(r);
	}
	if (d->peer) {
		r = peer_check(d, ready, arg, &dead);
		if (dead)
			return r;
	}

	for (;;) {
		r = arm_and_check(d, ready, arg, &seq);
		if (r != 0)
			return done(r);
		now = portal_db_now_ns();
		if (deadline != PORTAL_DB_NO_DEADLINE && now >= deadline) {
			disarm(d);
			d->st.timeouts++;
			return -ETIMEDOUT;
		}
		/* With a watch, sleep at most one check interval. */
		until = deadline;
		if (d->peer && d->peer_check_ns < until - now)
			until = now + d->peer_check_ns;

		d->st.sleeps++;
		rc = d->ops->sleep(d, seq, until);
		disarm(d);
		if (rc < 0 && rc != -ETIMEDOUT && rc != -EINTR)
			return rc;

		/* Woken, interrupted or out of time: look once more before
		 * deciding (work that came at the deadline still counts). */
		r = ready(arg);
		if (r != 0)
			return done(r);
		if (d->peer) {
			r = peer_check(d, ready, arg, &dead);
			if (dead)
				return r;
		}
		if (rc == -ETIMEDOUT) {
			if (until == deadline) {
				d->st.timeouts++;
				return -ETIMEDOUT;
			}
			continue; /* a check interval, not the deadline */
		}
		if (rc == 0)
			d->st.spurious++;
	}
}

/* ------------------------------------------------------------------ */
/* fd path                                                             */
/* ------------------------------------------------------------------ */

int portal_doorbell_fd(portal_doorbell_t *d)
{
	if (!d || d->role != PORTAL_DOORBELL_WAITER)
		return -EINVAL;
	return d->ops->fd(d);
}

int portal_doorbell_arm(portal_doorbell_t *d, portal_doorbell_ready_fn ready, void *arg)
{
	uint32_t seq;
	int rc, r;

	if (!d || d->role != PORTAL_DOORBELL_WAITER)
		return -EINVAL;
	/* The fd must watch before we arm, or a ring in between would not
	 * reach it (the futex helper starts from the current wake_seq). */
	rc = d->ops->fd(d);
	if (rc < 0)
		return rc;
	r = arm_and_check(d, ready, arg, &seq);
	if (r > 0)
		return 1;
	return r;
}

int portal_doorbell_ack(portal_doorbell_t *d)
{
	int rc;

	if (!d || d->role != PORTAL_DOORBELL_WAITER)
		return -EINVAL;
	/* Disarm, then drain: a ring that lands in between is drained too,
	 * and that is safe because the caller checks for work after ack()
	 * and arm() re-checks after arming before anyone sleeps again. */
	disarm(d);
	rc = d->ops->drain(d);
	return rc;
}
