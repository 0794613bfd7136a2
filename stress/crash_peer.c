/* SPDX-License-Identifier: MIT */
/*
 * portal_crash_peer - one incarnation of a producer or consumer under the
 * crash-injection driver (portal_crash, crash_driver.c):
 *
 *   portal_crash_peer --uri URI --side N --kind KIND --role producer|consumer
 *                     --id K --inc I [--point NAME --after N]
 *                     [--sabotage lose|dup]
 *
 * It attaches to the region as side N, finds the ledger (crash_ledger.h) and
 * the ring, takes up where the last incarnation of its role left off, and
 * moves messages until the driver asks it to stop (exit 0), kills it, or it
 * reaches its own kill point: with --point it raises SIGKILL on itself at
 * that point of its N-th message (after writing the time to its ledger
 * line, from which the driver measures detection).
 *
 * Producer restart. The ledger line says which sequence comes next
 * (`committed`) and, write-ahead, which one was being committed and where
 * (`wal_seq`, `wal_pos`). A successor that finds wal_seq == committed does
 * not know whether that commit happened. On the single-producer rings it
 * finds out from the ring (the descriptor ring's producer position moved;
 * the message ring's record header at wal_pos is no longer 0 or its
 * prod_tail moved) and counts the message as committed or sends it again,
 * so nothing is sent twice and nothing committed is skipped. On MP rings
 * the producer's claim position is not known, so the sequence is marked in
 * doubt (committed if it reached the ring, legitimately gone if not) and
 * skipped.
 *
 * Consumer restart. The message ring resumes at the message the dead
 * consumer had peeked but not released; if the ledger already holds a
 * delivery of that message at that position, it is released without being
 * delivered again (exactly-once by position). Descriptor rings copy and
 * release in one dequeue: what a consumer had dequeued and not recorded is
 * gone with it; the ledger's intent/done words let the driver count those
 * (docs/crash-injection.md, "the descriptor-ring take window").
 *
 * On MP/MC rings with claim records, consumers also serve the driver's
 * recovery requests: a dead producer's unpublished claim is turned into
 * poison (portal_ring_recover_producer), a dead consumer's claim is handed
 * to the caller and delivered (portal_ring_recover_consumer).
 *
 * Survivor-side detection. Every consumer watches each producer's
 * participant slot through Portal's liveness layer (portal_region_watch_*:
 * the slot's OS lock) and stamps the moment it learns of a death into its
 * ledger log (crash_ledger.h), from which the driver measures detection.
 * The msg_block consumer sleeps in portal_doorbell_wait with no timeout and
 * the producer's watch set on the doorbell: PORTAL_EPEERDEAD is its signal
 * (a producer that died before ringing is found by the wait's liveness
 * check, not by a timeout). The polling consumers look at the watch every
 * OBSERVE_NS.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "portal/abi.h"
#include "portal/doorbell.h"
#include "portal/region.h"
#include "portal/ring.h"
#include "stress/crash_ledger.h"
#include "stress/stress.h"

#define IDLE_US   50                        /* producer with nothing allowed: nap */
#define IDLE_SPINS 256                      /* consumer: backoff steps before it naps */
/* msg_block consumer: the longest sleep of its doorbell wait between two
 * looks at the producer's slot (the futex backend cannot poll a pidfd, so
 * this bounds the detection of a death while asleep). */
#define WATCH_CHECK_NS (INT64_C(1) * 1000000)
/* Every consumer: look at the producers' slots at least this often, busy
 * or idle (one F_OFD_GETLK per producer). */
#define OBSERVE_NS     (UINT64_C(100) * 1000)

/* A consumer's watch on one producer's slot. */
struct pwatch {
	portal_peer_watch_t *w;
	bool looked;               /* the first look is done */
	uint64_t skip;             /* epoch already dead at our first look: not ours to time */
	uint64_t done;             /* epoch last stamped (or seen leaving cleanly) */
};

struct cpeer {
	const char *uri;
	uint32_t side;
	int kind;
	bool producer;
	unsigned id;
	uint32_t inc;
	int point;
	uint64_t after;
	int sabotage;              /* harness self-test: 1 lose, 2 duplicate (see record) */

	portal_region_t *reg;
	struct crash_ledger *led;
	void *qmem;                /* the ring object (ABI header first) */
	size_t qlen;
	portal_ring_t *q;
	portal_msgring_t *m;
	portal_doorbell_t *db;
	uint64_t nmsg;             /* messages this incarnation has started */
	uint64_t tokens;           /* consumer: takes so far (token counter) */
	struct pwatch pw[CRASH_MAX_PROD]; /* consumer: one per producer */
	uint64_t last_observe;     /* consumer: crash_now_ns() of the last look */
};

static void plog(const struct cpeer *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void plog(const struct cpeer *c, const char *fmt, ...)
{
	char buf[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "portal_crash_peer[%s %s %u inc %u]: %s\n",
		c->kind >= 0 ? crash_kind_names[c->kind] : "?", c->producer ? "producer" : "consumer",
		c->id, c->inc, buf);
}

static _Atomic uint64_t *kill_word(struct cpeer *c)
{
	return c->producer ? &c->led->prod[c->id].kill_ns : &c->led->cons[c->id].kill_ns;
}

/* The named kill point PT of the current message: die here if planned. */
static void point(struct cpeer *c, int pt)
{
	if (c->point != pt || c->nmsg != c->after)
		return;
	/* Relaxed: the driver reads it after reaping us. */
	atomic_store_explicit(kill_word(c), crash_now_ns(), memory_order_relaxed);
	raise(SIGKILL);
}

static bool quit_asked(struct cpeer *c)
{
	unsigned role = c->producer ? c->id : c->led->nprod + c->id;

	return atomic_load_explicit(&c->led->quit[role], memory_order_relaxed) == c->inc;
}

static bool mp_ring(const struct cpeer *c)
{
	return c->kind == CRASH_KIND_MPSC || c->kind == CRASH_KIND_MPMC;
}

/* ------------------------------------------------------------------ */
/* Positions                                                          */
/* ------------------------------------------------------------------ */

/* Message ring producer: where the next record goes. The producer is the
 * only writer of prod_tail; the API has no producer-side position call. */
static uint64_t msg_prod_pos(const struct cpeer *c)
{
	const struct portal_msgring_hdr *h = c->qmem;

	return atomic_load_explicit(&h->prod_tail, memory_order_relaxed);
}

/* Message ring: the header word at byte position POS of the data area. */
static uint64_t msg_word(const struct cpeer *c, uint64_t pos)
{
	const struct portal_msgring_hdr *h = c->qmem;
	const uint8_t *data = (const uint8_t *)c->qmem + PORTAL_MSGRING_HDR_SIZE;

	/* Acquire: pairs with the commit's release of the header word (R1
	 * in ring/msgring.c); only its zero-ness matters here. */
	return atomic_load_explicit((const _Atomic uint64_t *)(data + (pos & (h->capacity - 1))),
				    memory_order_acquire);
}

/* Message ring consumer: the position of the message just peeked. */
static uint64_t msg_cons_pos(const struct cpeer *c)
{
	const struct portal_msgring_hdr *h = c->qmem;
	uint64_t pos;

	if (portal_msgring_position(c->m, &pos) == 0)
		return pos;
	/* Not there yet (-ENOSYS): before release, the peeked message starts
	 * at cons_head, which only this consumer writes. (A PAD record in
	 * front of it would make this the PAD's position: still unique and
	 * increasing, so just as good for the skip rule.) */
	return atomic_load_explicit(&h->cons_head, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Producer                                                            */
/* ------------------------------------------------------------------ */

/* The predecessor's write-ahead: did its commit of wal_seq happen? */
static void producer_resume(struct cpeer *c)
{
	struct crash_prod_line *pl = &c->led->prod[c->id];
	/* L2: pairs with the predecessor's release of committed. */
	uint64_t k = atomic_load_explicit(&pl->committed, memory_order_acquire);
	/* L1: wal_pos was stored before wal_seq; pairs with L1 in producer(). */
	uint64_t ws = atomic_load_explicit(&pl->wal_seq, memory_order_acquire);
	uint64_t wp = atomic_load_explicit(&pl->wal_pos, memory_order_relaxed);
	bool done;

	if (ws != k)
		return; /* no commit was in flight */
	if (mp_ring(c)) {
		atomic_store_explicit(&crash_doubt(c->led, c->id)[k], 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&pl->in_doubt, 1, memory_order_relaxed);
		done = true;
	} else if (c->kind == CRASH_KIND_SPSC) {
		done = portal_ring_position(c->q) != wp;
	} else {
		/* The record (or the PAD before it) at wal_pos is published
		 * by the commit, and nothing else writes that word while the
		 * producer is dead. */
		done = msg_prod_pos(c) != wp || msg_word(c, wp) != 0;
	}
	if (done && !mp_ring(c))
		atomic_fetch_add_explicit(&pl->resumed, 1, memory_order_relaxed);
	if (done)
		/* L2: the doubt flag, then committed; pairs with the
		 * acquire in the driver's final check. */
		atomic_store_explicit(&pl->committed, k + 1, memory_order_release);
}

static int send_one(struct cpeer *c, uint64_t k)
{
	uint64_t stamp = stress_stamp(c->id, k);
	struct stress_backoff b = { 0 };
	uint8_t elem[CRASH_SLOT_SPSC];
	int rc;

	if (crash_kind_is_msg(c->kind)) {
		size_t len = stress_msg_len(k, c->led->max_msg);
		void *buf;

		while ((rc = portal_msgring_reserve(c->m, len, &buf)) == -EAGAIN)
			stress_backoff(&b);
		if (rc)
			return rc;
		point(c, CRASH_PT_BEFORE_WRITE);
		stress_msg_fill(buf, len, stamp);
		point(c, CRASH_PT_AFTER_WRITE);
		return portal_msgring_commit(c->m, len);
	}
	point(c, CRASH_PT_BEFORE_WRITE);
	stress_fill(elem, portal_ring_slot_size(c->q), stamp);
	point(c, CRASH_PT_AFTER_WRITE);
	/* 0: full. -EAGAIN: a recoverable MP ring that has not yet published
	 * this handle's previous claim; nothing was enqueued, try again. */
	while ((rc = portal_ring_enqueue_burst(c->q, elem, 1)) == 0 || rc == -EAGAIN)
		stress_backoff(&b);
	return rc == 1 ? 0 : rc;
}

static int producer(struct cpeer *c)
{
	struct crash_prod_line *pl = &c->led->prod[c->id];
	uint64_t k;
	int rc;

	producer_resume(c);
	k = atomic_load_explicit(&pl->committed, memory_order_relaxed);
	/* L3: resumed, then running; pairs with the driver's all_running. */
	atomic_store_explicit(&pl->running, c->inc, memory_order_release);
	for (;;) {
		if (quit_asked(c))
			return 0;
		/* L4: pairs with the driver's release of a new allowance. */
		if (k >= atomic_load_explicit(&c->led->allow[c->id], memory_order_acquire)) {
			/* L5: pairs with the driver's release of stop. */
			if (atomic_load_explicit(&c->led->stop, memory_order_acquire))
				return 0;
			stress_sleep_us(IDLE_US);
			continue;
		}
		if (k >= c->led->maxseq) {
			plog(c, "sequence %llu beyond the ledger", (unsigned long long)k);
			return CRASH_EXIT_FAIL;
		}
		c->nmsg++;
		/* Write-ahead, both before the commit: the position, then
		 * (L1, release) the sequence. */
		atomic_store_explicit(&pl->wal_pos,
				      c->kind == CRASH_KIND_SPSC ? portal_ring_position(c->q)
				      : crash_kind_is_msg(c->kind) ? msg_prod_pos(c)
								   : 0,
				      memory_order_relaxed);
		atomic_store_explicit(&pl->wal_seq, k, memory_order_release);
		rc = send_one(c, k);
		if (rc) {
			plog(c, "send %llu: %d (%s)", (unsigned long long)k, rc, portal_strerror(rc));
			return CRASH_EXIT_FAIL;
		}
		point(c, CRASH_PT_AFTER_PUBLISH);
		k++;
		/* L2: committed after the commit; pairs with the acquires in
		 * producer_resume and the driver. */
		atomic_store_explicit(&pl->committed, k, memory_order_release);
		point(c, CRASH_PT_BEFORE_DOORBELL);
		if (c->db)
			portal_doorbell_notify(c->db);
	}
}

/* ------------------------------------------------------------------ */
/* Consumer                                                            */
/* ------------------------------------------------------------------ */

/* Record the delivery of STAMP under REC (position + 1, or a token).
 * SKIP_OK: a record with the same value is our predecessor's (message
 * ring: recorded, then killed before the release). */
static void record(struct cpeer *c, uint64_t stamp, uint64_t rec, bool skip_ok)
{
	struct crash_cons_line *cl = &c->led->cons[c->id];
	unsigned p = (unsigned)(stamp >> STRESS_SEQ_BITS);
	uint64_t s = stamp & STRESS_SEQ_MASK;
	uint64_t seen = 0;

	/* Self-test of the harness: a consumer that drops, or delivers
	 * twice, one message in 997 must make the driver fail. */
	if (c->sabotage && s % 997 == 500) {
		if (c->sabotage == 1)
			return;
		atomic_store_explicit(&crash_deliv(c->led, p)[s], rec ^ 1, memory_order_relaxed);
	}
	/* Relaxed is enough for the checks: the driver reads the arrays
	 * after the consumers have exited or died. */
	if (atomic_compare_exchange_strong_explicit(&crash_deliv(c->led, p)[s], &seen, rec,
						    memory_order_relaxed, memory_order_relaxed))
		atomic_fetch_add_explicit(&cl->delivered, 1, memory_order_relaxed);
	else if (skip_ok && seen == rec)
		atomic_fetch_add_explicit(&cl->skipped, 1, memory_order_relaxed);
	else {
		atomic_fetch_add_explicit(&cl->dups, 1, memory_order_relaxed);
		if (atomic_load_explicit(&cl->dups, memory_order_relaxed) <= 5)
			plog(c, "duplicate: producer %u seq %llu (recorded %#llx, now %#llx)", p,
			     (unsigned long long)s, (unsigned long long)seen,
			     (unsigned long long)rec);
	}
}

static bool stamp_ok(struct cpeer *c, uint64_t stamp)
{
	return (stamp >> STRESS_SEQ_BITS) < c->led->nprod &&
	       (stamp & STRESS_SEQ_MASK) < c->led->maxseq;
}

static void bad(struct cpeer *c, const char *what, uint64_t stamp)
{
	struct crash_cons_line *cl = &c->led->cons[c->id];

	if (atomic_fetch_add_explicit(&cl->bad, 1, memory_order_relaxed) < 5)
		plog(c, "bad message: %s (stamp %#llx)", what, (unsigned long long)stamp);
}

static uint64_t next_token(struct cpeer *c)
{
	c->tokens++;
	return ((uint64_t)(c->id + 1) << 56) | ((uint64_t)(c->inc & 0xFFFFFFu) << 32) |
	       (c->tokens & 0xFFFFFFFFu);
}

/* Check and record one descriptor element taken under TOKEN. */
static void take_elem(struct cpeer *c, const void *elem, uint64_t token)
{
	struct crash_cons_line *cl = &c->led->cons[c->id];
	uint32_t size = portal_ring_slot_size(c->q);
	uint64_t stamp = 0;

	if (portal_ring_is_poison(c->q, elem)) {
		atomic_fetch_add_explicit(&cl->poison, 1, memory_order_relaxed);
		return;
	}
	if (!stress_check(elem, size, &stamp) || !stamp_ok(c, stamp)) {
		bad(c, "descriptor checksum or stamp", stamp);
		return;
	}
	point(c, CRASH_PT_AFTER_TAKE);
	record(c, stamp, token, false);
	point(c, CRASH_PT_AFTER_RECORD);
}

/*
 * Serve the driver's recovery requests (MP/MC rings with claim records):
 * find the dead holder's claim records by its pid and recover each. A
 * request that cannot finish now (-EAGAIN, -EBUSY) goes back to pending.
 */
static int serve_requests(struct cpeer *c)
{
	struct crash_cons_line *cl = &c->led->cons[c->id];
	uint8_t objs[CRASH_RING_CAP * CRASH_SLOT_MP];
	uint64_t busy = ((uint64_t)getpid() << 8) | CRASH_REQ_BUSY;

	for (unsigned i = 0; i < CRASH_MAX_REQ; i++) {
		struct crash_req *rq = &c->led->req[i];
		uint64_t st = CRASH_REQ_PENDING, what;
		unsigned slots[CRASH_CLAIMS];
		enum portal_ring_role role;
		int n, rc = 0;

		if (atomic_load_explicit(&rq->state, memory_order_relaxed) != CRASH_REQ_PENDING)
			continue;
		/* L6: the driver's `what` before PENDING; pairs with its
		 * release in post_request. */
		if (!atomic_compare_exchange_strong_explicit(&rq->state, &st, busy,
							     memory_order_acquire,
							     memory_order_relaxed))
			continue;
		what = atomic_load_explicit(&rq->what, memory_order_relaxed);
		role = (what >> 32) == CRASH_REQ_ROLE_PROD ? PORTAL_ROLE_PRODUCER
							   : PORTAL_ROLE_CONSUMER;
		n = portal_ring_find_claims(c->q, role, (uint32_t)what, slots, CRASH_CLAIMS);
		if (n < 0) {
			plog(c, "find_claims: %d (%s)", n, portal_strerror(n));
			return CRASH_EXIT_FAIL;
		}
		for (int j = 0; j < n && j < (int)CRASH_CLAIMS && rc >= 0; j++) {
			if (role == PORTAL_ROLE_PRODUCER) {
				rc = portal_ring_recover_producer(c->q, slots[j]);
				continue;
			}
			/* The elements become ours: a take like a dequeue. */
			uint64_t tok = next_token(c);

			atomic_store_explicit(&cl->intent, tok, memory_order_relaxed);
			rc = portal_ring_recover_consumer(c->q, slots[j], objs, CRASH_RING_CAP);
			for (int e = 0; e < rc; e++) {
				atomic_fetch_add_explicit(&cl->recovered, 1, memory_order_relaxed);
				take_elem(c, objs + (size_t)e * portal_ring_slot_size(c->q), tok);
			}
			atomic_store_explicit(&cl->done, tok, memory_order_relaxed);
		}
		if (rc == -EAGAIN || rc == -EBUSY) {
			atomic_store_explicit(&rq->state, CRASH_REQ_PENDING, memory_order_relaxed);
			continue;
		}
		if (rc < 0) {
			plog(c, "recover %s pid %u: %d (%s)",
			     role == PORTAL_ROLE_PRODUCER ? "producer" : "consumer", (uint32_t)what,
			     rc, portal_strerror(rc));
			return CRASH_EXIT_FAIL;
		}
		atomic_fetch_add_explicit(&cl->served, 1, memory_order_relaxed);
		/* L6: our recovery, then DONE; pairs with the driver's
		 * acquire in requests_settled. */
		atomic_store_explicit(&rq->state, CRASH_REQ_DONE, memory_order_release);
		atomic_fetch_sub_explicit(&c->led->req_pending, 1, memory_order_relaxed);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Liveness: the consumer as the survivor of a producer                */
/* ------------------------------------------------------------------ */

/* Log that producer ROLE's incarnation EPOCH is dead, learned at NS. */
static void stamp(struct cpeer *c, unsigned role, uint64_t epoch, uint64_t ns, uint32_t how)
{
	struct crash_det_log *lg = &c->led->det[c->id];
	/* Relaxed: only this consumer's incarnations write the log, one at
	 * a time (the driver starts the next after reaping the last). */
	uint64_t n = atomic_load_explicit(&lg->count, memory_order_relaxed);
	struct crash_det *e = &lg->e[n % CRASH_DET_LOG];

	/* Relaxed: published by L7 below. */
	atomic_store_explicit(&e->epoch, epoch, memory_order_relaxed);
	atomic_store_explicit(&e->ns, ns, memory_order_relaxed);
	atomic_store_explicit(&e->role, role, memory_order_relaxed);
	atomic_store_explicit(&e->how, how, memory_order_relaxed);
	/* L7: the entry, then the count; pairs with the driver's acquire in
	 * collect_stamps. */
	atomic_store_explicit(&lg->count, n + 1, memory_order_release);
}

/*
 * Look at producer P's slot. A watched incarnation that is DEAD, or already
 * replaced (RESTARTED: we did not look between its death and its
 * successor's attach), is stamped once; HOW says who told us when DEAD. One
 * that was dead at our first look died before we watched (a "both" round
 * restarted us after it): not ours to time. RESTARTED re-arms the watch on
 * the new incarnation (our ring handle stays valid: a producer restarts
 * from the shared tails). Returns the state seen.
 */
static uint32_t observe_one(struct cpeer *c, unsigned p, uint32_t how)
{
	struct pwatch *pw = &c->pw[p];
	struct portal_peer_status st;
	uint64_t e;

	if (!pw->w || portal_region_watch_status(pw->w, &st))
		return PORTAL_PEER_ALIVE;
	e = st.watched_epoch;
	if (!pw->looked) {
		pw->looked = true;
		if (st.state == PORTAL_PEER_DEAD || st.state == PORTAL_PEER_RESTARTED)
			pw->skip = e;
	}
	switch (st.state) {
	case PORTAL_PEER_DEAD:
	case PORTAL_PEER_RESTARTED:
		if (e && e != pw->skip && e != pw->done)
			stamp(c, p, e, crash_now_ns(),
			      st.state == PORTAL_PEER_DEAD ? how : CRASH_DET_RESTARTED);
		pw->done = e;
		if (st.state == PORTAL_PEER_RESTARTED)
			portal_region_watch_rearm(pw->w);
		break;
	case PORTAL_PEER_GONE:
		pw->done = e; /* a clean exit (asked to quit): not a death */
		break;
	default:
		break; /* ALIVE; ABSENT: not attached yet */
	}
	return st.state;
}

static void observe(struct cpeer *c)
{
	c->last_observe = crash_now_ns();
	for (unsigned p = 0; p < c->led->nprod; p++)
		observe_one(c, p, CRASH_DET_STATUS);
}

/* Every OBSERVE_NS, busy or not: a consumer draining another producer's
 * messages is a survivor too. */
static void maybe_observe(struct cpeer *c)
{
	if (crash_now_ns() - c->last_observe >= OBSERVE_NS)
		observe(c);
}

/*
 * A polling consumer with nothing to do sleeps US microseconds, on the
 * producers' pidfd hints (portal_region_watch_fd) where it has them, so a
 * producer's death ends the nap at once; then it looks (the hint is not
 * the verdict: watch_status is).
 */
static void idle_sleep(struct cpeer *c, unsigned us)
{
	struct pollfd pf[CRASH_MAX_PROD];
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)us * 1000 };
	nfds_t n = 0;

	for (unsigned p = 0; p < c->led->nprod; p++) {
		int fd = c->pw[p].w ? portal_region_watch_fd(c->pw[p].w) : -1;

		if (fd >= 0)
			pf[n].fd = fd, pf[n].events = POLLIN, pf[n++].revents = 0;
	}
	if (ppoll(pf, n, &ts, NULL) > 0)
		observe(c);
}

/* The msg_block consumer's readiness: a message, or a reason to stop
 * waiting (asked to exit, or the run is over). The wait has no timeout;
 * its liveness checks call this at least every WATCH_CHECK_NS. */
static int ready_block(void *arg)
{
	struct cpeer *c = arg;
	int r = portal_msgring_ready(c->m);

	if (r != 0)
		return r;
	/* L5: as in consumer_idle. */
	return quit_asked(c) || atomic_load_explicit(&c->led->prod_done, memory_order_acquire);
}

/* Nothing to take now: 1 = the run is over, 0 = go on, < 0 error.
 * *RESCUE: the wait ended with work while the producer was not alive (it
 * died before ringing: its liveness check found the message). */
static int consumer_idle(struct cpeer *c, struct stress_backoff *b, bool *rescue)
{
	/* L5: pairs with the driver's release of prod_done, which it stores
	 * after reaping every producer (their commits came before). */
	if (atomic_load_explicit(&c->led->prod_done, memory_order_acquire))
		return 1;
	if (c->db) {
		int rc = portal_doorbell_wait(c->db, ready_block, c, -1);
		uint32_t st;

		if (rc != 0 && rc != PORTAL_EPEERDEAD)
			return rc;
		/* Who ended the wait: the producer's death (EPEERDEAD, or
		 * the last look after it found work)? Stamp it now. */
		st = observe_one(c, 0, CRASH_DET_DOORBELL);
		if (rc == 0) {
			*rescue = st != PORTAL_PEER_ALIVE && portal_msgring_ready(c->m) > 0;
			return 0;
		}
		/* Dead, gone or being replaced, and nothing left: wait for
		 * its successor without spinning. */
		if (st != PORTAL_PEER_ALIVE)
			stress_sleep_us(IDLE_US);
		return 0;
	}
	if (b->n < IDLE_SPINS) {
		stress_backoff(b);
		return 0;
	}
	idle_sleep(c, b->n++ < 1024 ? 20 : 200);
	return 0;
}

static int consumer_msg(struct cpeer *c)
{
	struct crash_cons_line *cl = &c->led->cons[c->id];
	struct stress_backoff b = { 0 };
	bool rescue = false;

	for (;;) {
		const void *buf;
		uint64_t stamp = 0, pos;
		size_t len;
		int rc;

		if (quit_asked(c))
			return 0;
		maybe_observe(c);
		rc = portal_msgring_peek(c->m, &buf, &len);
		if (rc == -EAGAIN) {
			rc = consumer_idle(c, &b, &rescue);
			if (rc)
				return rc > 0 ? 0 : CRASH_EXIT_FAIL;
			continue;
		}
		if (rc) {
			atomic_fetch_add_explicit(&cl->proto, 1, memory_order_relaxed);
			plog(c, "peek: %d (%s)", rc, portal_strerror(rc));
			return CRASH_EXIT_FAIL;
		}
		if (rescue)
			/* A wait that watched the producer found work after its
			 * death: a ring that never came (it died before notify). */
			atomic_fetch_add_explicit(&cl->rescues, 1, memory_order_relaxed);
		rescue = false;
		stress_backoff_reset(&b);
		c->nmsg++;
		pos = msg_cons_pos(c);
		if (!stress_msg_check(buf, len, &stamp) || !stamp_ok(c, stamp) ||
		    len != stress_msg_len(stamp & STRESS_SEQ_MASK, c->led->max_msg)) {
			bad(c, "message checksum, stamp or length", stamp);
		} else {
			point(c, CRASH_PT_AFTER_TAKE);
			record(c, stamp, pos + 1, true);
			point(c, CRASH_PT_AFTER_RECORD);
		}
		rc = portal_msgring_release(c->m);
		if (rc) {
			plog(c, "release: %d (%s)", rc, portal_strerror(rc));
			return CRASH_EXIT_FAIL;
		}
	}
}

static int consumer_desc(struct cpeer *c)
{
	struct crash_cons_line *cl = &c->led->cons[c->id];
	struct stress_backoff b = { 0 };
	uint8_t elem[CRASH_SLOT_SPSC];
	bool dummy = false;

	for (;;) {
		uint64_t tok;
		int n;

		if (quit_asked(c))
			return 0;
		maybe_observe(c);
		/* Before every take: a dead claimant ahead of us would hold
		 * our dequeue in publish_in_order, and then only a consumer
		 * outside dequeue (a restarted one) can recover it. */
		if (c->led->recovery &&
		    atomic_load_explicit(&c->led->req_pending, memory_order_relaxed) &&
		    serve_requests(c))
			return CRASH_EXIT_FAIL;
		tok = next_token(c);
		/* The take in flight: its position (single consumer), then the
		 * token. Relaxed: read by the driver after our death. */
		atomic_store_explicit(&cl->intent_pos, portal_ring_position(c->q),
				      memory_order_relaxed);
		atomic_store_explicit(&cl->intent, tok, memory_order_relaxed);
		n = portal_ring_dequeue_burst(c->q, elem, 1);
		if (n == -EAGAIN)
			n = 0; /* as for enqueue: nothing taken, try again */
		if (n == 0) {
			atomic_store_explicit(&cl->done, tok, memory_order_relaxed);
			if (c->led->recovery && serve_requests(c))
				return CRASH_EXIT_FAIL;
			n = consumer_idle(c, &b, &dummy);
			if (n)
				return n > 0 ? 0 : CRASH_EXIT_FAIL;
			continue;
		}
		if (n < 0) {
			atomic_fetch_add_explicit(&cl->proto, 1, memory_order_relaxed);
			plog(c, "dequeue: %d (%s)", n, portal_strerror(n));
			return CRASH_EXIT_FAIL;
		}
		stress_backoff_reset(&b);
		c->nmsg++;
		take_elem(c, elem, tok);
		atomic_store_explicit(&cl->done, tok, memory_order_relaxed);
	}
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */
/* ------------------------------------------------------------------ */

static int parse_args(struct cpeer *c, int argc, char **argv)
{
	const char *role = NULL;

	c->kind = -1;
	for (int i = 1; i + 1 < argc; i += 2) {
		const char *a = argv[i], *v = argv[i + 1];

		if (!strcmp(a, "--uri"))
			c->uri = v;
		else if (!strcmp(a, "--side"))
			c->side = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--kind"))
			c->kind = crash_kind_parse(v);
		else if (!strcmp(a, "--role"))
			role = v;
		else if (!strcmp(a, "--id"))
			c->id = (unsigned)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--inc"))
			c->inc = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--point"))
			c->point = crash_point_parse(v);
		else if (!strcmp(a, "--after"))
			c->after = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--sabotage"))
			c->sabotage = !strcmp(v, "lose") ? 1 : !strcmp(v, "dup") ? 2 : -1;
		else
			return -1;
	}
	if (!c->uri || !c->side || c->kind < 0 || !role || c->point < 0 || !c->inc ||
	    c->sabotage < 0)
		return -1;
	if (strcmp(role, "producer") && strcmp(role, "consumer"))
		return -1;
	c->producer = !strcmp(role, "producer");
	return 0;
}

/* WHAT, and the descriptor ring's indices as they are now (relaxed: a
 * diagnostic, the ring keeps moving). */
static void ring_diag(struct cpeer *c, const char *what)
{
	const struct portal_ring_hdr *h = c->qmem;

	plog(c, "%s: prod_head %llu prod_tail %llu cons_head %llu cons_tail %llu", what,
	     (unsigned long long)atomic_load_explicit(&h->prod_head, memory_order_relaxed),
	     (unsigned long long)atomic_load_explicit(&h->prod_tail, memory_order_relaxed),
	     (unsigned long long)atomic_load_explicit(&h->cons_head, memory_order_relaxed),
	     (unsigned long long)atomic_load_explicit(&h->cons_tail, memory_order_relaxed));
}

static int setup(struct cpeer *c)
{
	struct portal_region_opts opts = { .side = c->side, .ident = "crash peer" };
	struct portal_object_info info;
	enum portal_ring_role role = c->producer ? PORTAL_ROLE_PRODUCER : PORTAL_ROLE_CONSUMER;
	struct stress_backoff b = { 0 };
	int rc;

	rc = portal_region_attach(c->uri, &opts, &c->reg);
	if (rc) {
		plog(c, "attach: %d (%s)", rc, portal_strerror(rc));
		return rc;
	}
	rc = portal_region_lookup(c->reg, CRASH_LEDGER_NAME, PORTAL_OBJ_USER, &info);
	if (rc)
		return rc;
	c->led = info.addr;
	if (c->led->magic != CRASH_MAGIC || c->led->kind != (uint32_t)c->kind ||
	    (c->producer ? c->id >= c->led->nprod : c->id >= c->led->ncons))
		return -EINVAL;
	rc = portal_region_lookup(c->reg, CRASH_QUEUE_NAME, 0, &info);
	if (rc)
		return rc;
	c->qmem = info.addr;
	c->qlen = (size_t)info.size;
	if (crash_kind_is_msg(c->kind)) {
		rc = portal_msgring_attach(c->qmem, c->qlen, role, &c->m);
	} else {
		_Atomic uint64_t *eproto = c->producer ? &c->led->prod[c->id].attach_eproto
						       : &c->led->cons[c->id].attach_eproto;
		unsigned tries = 0;

		/* A dead predecessor's claim record stays held until a
		 * consumer recovers it: take any free one, waiting if none.
		 * PORTAL_EPROTO from an attach while the ring moves has been
		 * seen (rarely) with nothing wrong in the ring: attach's
		 * snapshot of the two tails is not atomic (see
		 * docs/crash-injection.md). Try again a few times, and count
		 * it: a ring that is really corrupt fails every time. */
		while ((rc = portal_ring_attach_claim(c->qmem, c->qlen, role,
						      PORTAL_RING_CLAIM_ANY, (uint64_t)getpid(),
						      &c->q)) == -EBUSY ||
		       (rc == PORTAL_EPROTO && tries++ < 3)) {
			if (rc == PORTAL_EPROTO)
				ring_diag(c, "ring attach: PORTAL_EPROTO, trying again");
			stress_backoff(&b);
		}
		if (rc == 0 && tries)
			/* Relaxed: read by the driver after our death or exit. */
			atomic_fetch_add_explicit(eproto, tries, memory_order_relaxed);
		if (rc == 0 && c->producer)
			atomic_store_explicit(&c->led->prod[c->id].claim,
					      (uint32_t)(portal_ring_claim_slot(c->q) + 1),
					      memory_order_relaxed);
		else if (rc == 0)
			atomic_store_explicit(&c->led->cons[c->id].claim,
					      (uint32_t)(portal_ring_claim_slot(c->q) + 1),
					      memory_order_relaxed);
	}
	if (rc) {
		plog(c, "ring attach: %d (%s)", rc, portal_strerror(rc));
		if (!crash_kind_is_msg(c->kind))
			ring_diag(c, "ring now");
		return rc;
	}
	/* A consumer watches every producer's slot (the OS lock; no
	 * heartbeat runs here). */
	for (unsigned p = 0; !c->producer && p < c->led->nprod; p++) {
		rc = portal_region_watch_open(c->reg, crash_role_side(p), NULL, &c->pw[p].w);
		if (rc) {
			plog(c, "watch_open side %u: %d (%s)", crash_role_side(p), rc,
			     portal_strerror(rc));
			return rc;
		}
		observe_one(c, p, CRASH_DET_STATUS); /* the first look */
	}
	if (c->kind == CRASH_KIND_MSG_BLOCK) {
		struct portal_doorbell_opts o = { .eventfd = -1, .stream_fd = -1, .spin_ns = 2000 };

		if (!c->producer) {
			o.watch = c->pw[0].w;
			o.watch_check_ns = WATCH_CHECK_NS;
		}
		rc = portal_doorbell_open(c->reg, CRASH_DB_NAME,
					  c->producer ? PORTAL_DOORBELL_NOTIFIER : PORTAL_DOORBELL_WAITER,
					  &o, &c->db);
		if (rc) {
			plog(c, "doorbell: %d (%s)", rc, portal_strerror(rc));
			return rc;
		}
	}
	return 0;
}

/* The library's own warnings (a quarantine says why): to stderr, with our
 * name, so a failed run shows them next to the driver's report. */
static void peer_log(enum portal_log_level level, const char *msg, void *arg)
{
	plog(arg, "library %s: %s", level == PORTAL_LOG_ERROR ? "error" : "warning", msg);
}

int main(int argc, char **argv)
{
	struct cpeer c = { 0 };
	int rc;

	if (parse_args(&c, argc, argv)) {
		fprintf(stderr, "usage: portal_crash_peer --uri URI --side N --kind KIND "
				"--role producer|consumer --id K --inc I [--point NAME --after N] "
				"[--sabotage lose|dup]\n");
		return CRASH_EXIT_USAGE;
	}
	portal_set_log(peer_log, &c, PORTAL_LOG_WARN);
	if (setup(&c))
		return CRASH_EXIT_SETUP;
	if (c.producer) {
		rc = producer(&c);
	} else {
		/* L3: attached, then running; pairs with all_running. */
		atomic_store_explicit(&c.led->cons[c.id].running, c.inc, memory_order_release);
		rc = crash_kind_is_msg(c.kind) ? consumer_msg(&c) : consumer_desc(&c);
	}
	portal_doorbell_detach(c.db);
	for (unsigned p = 0; p < CRASH_MAX_PROD; p++)
		portal_region_watch_close(c.pw[p].w);
	portal_ring_detach(c.q);
	portal_msgring_detach(c.m);
	portal_region_detach(c.reg);
	return rc;
}
