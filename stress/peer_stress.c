/* SPDX-License-Identifier: MIT */
/*
 * peer_stress.c - honest traffic for the cross-process tests: producers,
 * consumers and subscribers for every ring kind, busy-polling or blocking
 * through doorbells. Every message carries its producer id, its sequence
 * number and a checksum; every receiver checks all three for every message.
 *
 *   kind        producers                     receivers
 *   spsc/mpsc   stamp per producer, 0..n-1    one consumer: per-producer
 *   mpmc                                      sequence +1 each time, checksum,
 *                                             total; several consumers
 *                                             (mpmc): increasing per producer,
 *                                             and a bitmap of what each saw
 *                                             ("stress.seen.<k>") that the
 *                                             driver unites
 *   msg         one producer, lengths vary    same, and the length
 *               with the sequence
 *   bcast-hold  one publisher                 every subscriber sees 0..n-1
 *   bcast-lap   one publisher, never waits    sequence == received + lost,
 *                                             only increasing; at the end
 *                                             received + lost == published
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portal/doorbell.h"
#include "portal/ring.h"
#include "stress/peer.h"

#define STALL_SECONDS 30.0

/* Seen bitmaps for multi-consumer runs: object "stress.seen.<consumer>",
 * producer P's bits start at P * seen_bytes_per_producer(count, producers). */
static uint64_t per_producer(uint64_t count, uint32_t producers, uint32_t id)
{
	return count / producers + (id < count % producers ? 1 : 0);
}

static uint64_t seen_bytes(uint64_t count, uint32_t producers)
{
	return (per_producer(count, producers, 0) + 63) / 64 * 8;
}

/* Progress watchdog: fail if nothing moved for STALL_SECONDS. */
struct watchdog {
	uint64_t last_count;
	double last_time;
	unsigned calls;
};

static bool stalled(struct watchdog *w, uint64_t count)
{
	double now;

	/* Called only when a call made no progress; look at the clock now
	 * and then. */
	if (++w->calls & 1023)
		return false;
	now = stress_now();
	if (count != w->last_count || w->last_time == 0) {
		w->last_count = count;
		w->last_time = now;
		return false;
	}
	return now - w->last_time > STALL_SECONDS;
}

static int fail(struct peer *p, const char *what, int rc)
{
	peer_log(p, "%s: %d (%s)", what, rc, portal_strerror(rc));
	p->res->errors++;
	return STRESS_EXIT_FAIL;
}

static int stop_code(struct peer *p, const char *where, uint64_t done, uint64_t want)
{
	if (atomic_load_explicit(&p->ctl->abort, memory_order_relaxed)) {
		peer_log(p, "%s: another peer failed; stopping at %llu of %llu", where,
			 (unsigned long long)done, (unsigned long long)want);
		return STRESS_EXIT_ABORTED;
	}
	peer_log(p, "%s: out of time or stalled at %llu of %llu", where, (unsigned long long)done,
		 (unsigned long long)want);
	return STRESS_EXIT_TIMEOUT;
}

/* A call made no progress: the exit code if this peer should give up (told
 * to stop, or nothing moved for STALL_SECONDS), else 0 to keep waiting. */
static int idle_check(struct peer *p, struct watchdog *wd, uint64_t progress, const char *who,
		      uint64_t done, uint64_t want)
{
	if (peer_should_stop(p) || stalled(wd, progress))
		return stop_code(p, who, done, want);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Blocking mode: two doorbells, "stress.db.data" (the consumer waits,     */
/* the producer rings) and "stress.db.space" (the other way round).        */
/* ------------------------------------------------------------------ */

#define WAIT_TIMEOUT_NS (INT64_C(10) * 1000000000)

struct blocking {
	portal_doorbell_t *wait;   /* the bell we sleep on */
	portal_doorbell_t *ring;   /* the bell we ring for the peer */
	portal_ring_t *q;
	const struct portal_ring_hdr *hdr; /* producer: to read cons_tail */
	uint64_t pos;              /* producer: elements enqueued (= prod_tail) */
	uint32_t capacity;
};

/* Consumer readiness: elements waiting (or the ring's error). */
static int ready_data(void *arg)
{
	struct blocking *b = arg;
	int n = portal_ring_count(b->q);

	return n > 0 ? 1 : n;
}

/*
 * Producer readiness: room in the ring. The public API has no producer-side
 * "room" query (portal_ring_count is the consumer's), so read the consumer
 * tail from the ABI header: acquire, as the ring's own refresh does. Only
 * a hint; the enqueue that follows re-checks.
 */
static int ready_space(void *arg)
{
	struct blocking *b = arg;
	uint64_t cons = atomic_load_explicit(&b->hdr->cons_tail, memory_order_acquire);

	return b->pos - cons < b->capacity ? 1 : 0;
}

static int blocking_open(struct peer *p, struct blocking *b, bool producer, portal_ring_t *q,
			 void *qmem)
{
	struct portal_doorbell_opts w = { .eventfd = -1, .spin_ns = producer ? 0 : -1 };
	struct portal_doorbell_opts n = { .eventfd = -1 };
	int rc;

	memset(b, 0, sizeof(*b));
	b->q = q;
	b->hdr = qmem;
	b->capacity = portal_ring_capacity(q);
	if (p->block == PEER_BLOCK_EVENTFD) {
		if (p->efd_data < 0 || p->efd_space < 0)
			return -EINVAL;
		w.eventfd = producer ? p->efd_space : p->efd_data;
		n.eventfd = producer ? p->efd_data : p->efd_space;
	}
	rc = portal_doorbell_open(p->reg, producer ? "stress.db.space" : "stress.db.data",
				  PORTAL_DOORBELL_WAITER, &w, &b->wait);
	if (rc)
		return rc;
	rc = portal_doorbell_open(p->reg, producer ? "stress.db.data" : "stress.db.space",
				  PORTAL_DOORBELL_NOTIFIER, &n, &b->ring);
	if (rc) {
		portal_doorbell_detach(b->wait);
		return rc;
	}
	if (portal_doorbell_get_backend(b->wait) !=
	    (p->block == PEER_BLOCK_FUTEX ? PORTAL_DOORBELL_FUTEX : PORTAL_DOORBELL_EVENTFD)) {
		portal_doorbell_detach(b->wait);
		portal_doorbell_detach(b->ring);
		b->wait = b->ring = NULL;
		return -EPROTO;
	}
	return 0;
}

static void blocking_close(struct peer *p, struct blocking *b)
{
	struct portal_doorbell_stats w, r;

	if (!b->wait)
		return;
	portal_doorbell_stats(b->wait, &w);
	portal_doorbell_stats(b->ring, &r);
	p->res->sleeps += w.sleeps;
	p->res->rings += r.rings;
	p->res->extra[0] = w.waits;
	p->res->extra[1] = w.spurious;
	p->res->extra[2] = w.timeouts;
	peer_log(p, "doorbell: waits=%llu sleeps=%llu spin_hits=%llu spurious=%llu timeouts=%llu "
		    "notifies=%llu rings=%llu",
		 (unsigned long long)w.waits, (unsigned long long)w.sleeps,
		 (unsigned long long)w.spin_hits, (unsigned long long)w.spurious,
		 (unsigned long long)w.timeouts, (unsigned long long)r.notifies,
		 (unsigned long long)r.rings);
	portal_doorbell_detach(b->wait);
	portal_doorbell_detach(b->ring);
}

/* ------------------------------------------------------------------ */
/* Descriptor rings                                                    */
/* ------------------------------------------------------------------ */

static int ring_producer(struct peer *p)
{
	struct portal_object_info info;
	struct blocking blk = { 0 };
	struct watchdog wd = { 0 };
	struct stress_backoff bo = { 0 };
	portal_ring_t *q;
	uint64_t seq = 0, want = per_producer(p->count, p->producers, p->id), rng = p->seed;
	uint32_t slot;
	uint8_t *buf;
	int rc, code = 0;

	rc = portal_region_lookup(p->reg, STRESS_QUEUE_NAME, PORTAL_OBJ_RING, &info);
	if (rc == 0)
		rc = portal_ring_open(p->reg, STRESS_QUEUE_NAME, PORTAL_ROLE_PRODUCER, &q);
	if (rc) {
		fail(p, "open ring", rc);
		return STRESS_EXIT_SETUP;
	}
	slot = portal_ring_slot_size(q);
	if (p->block && (rc = blocking_open(p, &blk, true, q, info.addr)) != 0) {
		portal_ring_detach(q);
		fail(p, "open doorbells", rc);
		return STRESS_EXIT_SETUP;
	}
	buf = malloc((size_t)p->burst * slot);
	if (!buf || (code = peer_barrier(p)) != 0)
		goto out;

	while (seq < want) {
		unsigned n = 1 + (unsigned)(stress_rand(&rng) % p->burst);

		if (n > want - seq)
			n = (unsigned)(want - seq);
		for (unsigned i = 0; i < n; i++)
			stress_fill(buf + (size_t)i * slot, slot, stress_stamp(p->id, seq + i));
		if (n == 1) {
			rc = portal_ring_enqueue(q, buf);
			rc = rc == 0 ? 1 : rc == -EAGAIN ? 0 : rc;
		} else {
			rc = portal_ring_enqueue_burst(q, buf, n);
		}
		if (rc < 0) {
			code = fail(p, "enqueue", rc);
			break;
		}
		if (rc > 0) {
			seq += (uint64_t)rc;
			stress_backoff_reset(&bo);
			if (p->block) {
				blk.pos = seq;
				rc = portal_doorbell_notify(blk.ring);
				if (rc < 0) {
					code = fail(p, "notify", rc);
					break;
				}
				/* Now and then stop for a moment, so the
				 * consumer finds the ring empty and sleeps. */
				if ((seq & 4095) < (uint64_t)n)
					stress_sleep_us(200);
			}
			continue;
		}
		if ((code = idle_check(p, &wd, seq, "producer", seq, want)) != 0)
			break;
		if (p->block) {
			blk.pos = seq;
			rc = portal_doorbell_wait(blk.wait, ready_space, &blk, WAIT_TIMEOUT_NS);
			if (rc < 0) {
				code = fail(p, "wait for space", rc);
				break;
			}
		} else {
			stress_backoff(&bo);
		}
	}
	p->res->messages = seq;
out:
	free(buf);
	blocking_close(p, &blk);
	portal_ring_detach(q);
	return code;
}

struct checker {
	uint32_t producers;
	bool multi;              /* several consumers: gaps allowed, bitmap */
	uint64_t *next;          /* per producer: next sequence expected */
	uint8_t *seen;           /* multi: our bitmap in the region */
	uint64_t seen_stride;
	uint64_t want_each[64];
};

static void check_elem(struct peer *p, struct checker *c, const uint8_t *e, uint32_t slot)
{
	uint64_t stamp, seq;
	uint32_t id;

	if (!stress_check(e, slot, &stamp)) {
		p->res->sum_errors++;
		p->res->errors++;
		if (p->res->sum_errors <= 5)
			peer_log(p, "checksum mismatch, stamp %#llx", (unsigned long long)stamp);
		return;
	}
	id = (uint32_t)(stamp >> STRESS_SEQ_BITS);
	seq = stamp & STRESS_SEQ_MASK;
	if (id >= c->producers || seq >= c->want_each[id]) {
		p->res->seq_errors++;
		p->res->errors++;
		if (p->res->seq_errors <= 5)
			peer_log(p, "bad stamp: producer %u seq %llu", id, (unsigned long long)seq);
		return;
	}
	if (!c->multi) {
		if (seq != c->next[id]) {
			p->res->seq_errors++;
			p->res->errors++;
			if (p->res->seq_errors <= 5)
				peer_log(p, "producer %u: got seq %llu, expected %llu (%s)", id,
					 (unsigned long long)seq, (unsigned long long)c->next[id],
					 seq < c->next[id] ? "duplicate or reordered" : "lost");
		}
		c->next[id] = seq + 1;
		return;
	}
	/* Several consumers: each sees a producer's messages in increasing
	 * order (gaps are the other consumers'); the bitmaps must unite to
	 * exactly everything, which the driver checks. */
	if (c->next[id] != 0 && seq < c->next[id]) {
		p->res->seq_errors++;
		p->res->errors++;
		if (p->res->seq_errors <= 5)
			peer_log(p, "producer %u: seq %llu after %llu", id, (unsigned long long)seq,
				 (unsigned long long)c->next[id] - 1);
	}
	c->next[id] = seq + 1;
	{
		uint8_t *byte = c->seen + id * c->seen_stride + seq / 8;
		uint8_t bit = (uint8_t)(1u << (seq % 8));

		if (*byte & bit) {
			p->res->seq_errors++;
			p->res->errors++;
			if (p->res->seq_errors <= 5)
				peer_log(p, "producer %u seq %llu seen twice", id,
					 (unsigned long long)seq);
		}
		*byte |= bit;
	}
}

static int ring_consumer(struct peer *p)
{
	struct portal_object_info info, seen;
	struct blocking blk = { 0 };
	struct watchdog wd = { 0 };
	struct stress_backoff bo = { 0 };
	struct checker c = { 0 };
	portal_ring_t *q;
	uint64_t got = 0, rng = p->seed;
	/* ctl->scratch[0]: elements taken by all consumers (multi only). */
	_Atomic uint64_t *taken = &p->ctl->scratch[0];
	uint32_t slot;
	uint8_t *buf = NULL;
	int rc, code = 0;
	char name[PORTAL_NAME_MAX];

	rc = portal_region_lookup(p->reg, STRESS_QUEUE_NAME, PORTAL_OBJ_RING, &info);
	if (rc == 0)
		rc = portal_ring_open(p->reg, STRESS_QUEUE_NAME, PORTAL_ROLE_CONSUMER, &q);
	if (rc) {
		fail(p, "open ring", rc);
		return STRESS_EXIT_SETUP;
	}
	slot = portal_ring_slot_size(q);
	c.producers = p->producers;
	c.multi = p->consumers > 1;
	for (uint32_t i = 0; i < p->producers; i++)
		c.want_each[i] = per_producer(p->count, p->producers, i);
	c.next = calloc(p->producers, sizeof(*c.next));
	if (c.multi) {
		snprintf(name, sizeof(name), "stress.seen.%u", p->id);
		rc = portal_region_lookup(p->reg, name, PORTAL_OBJ_USER, &seen);
		c.seen_stride = seen_bytes(p->count, p->producers);
		if (rc || seen.size < c.seen_stride * p->producers) {
			code = fail(p, "seen bitmap", rc ? rc : -EINVAL);
			goto out;
		}
		c.seen = seen.addr;
	}
	if (p->block && (rc = blocking_open(p, &blk, false, q, info.addr)) != 0) {
		code = fail(p, "open doorbells", rc);
		goto out;
	}
	buf = malloc((size_t)p->burst * slot);
	if (!buf || !c.next || (code = peer_barrier(p)) != 0)
		goto out;

	for (;;) {
		unsigned n = 1 + (unsigned)(stress_rand(&rng) % p->burst);

		if (c.multi) {
			if (atomic_load_explicit(taken, memory_order_relaxed) >= p->count)
				break;
		} else if (got >= p->count) {
			break;
		}
		if (n == 1) {
			rc = portal_ring_dequeue(q, buf);
			rc = rc == 0 ? 1 : rc == -EAGAIN ? 0 : rc;
		} else {
			rc = portal_ring_dequeue_burst(q, buf, n);
		}
		if (rc < 0) {
			code = fail(p, "dequeue", rc);
			break;
		}
		if (rc > 0) {
			for (int i = 0; i < rc; i++)
				check_elem(p, &c, buf + (size_t)i * slot, slot);
			got += (uint64_t)rc;
			if (c.multi)
				atomic_fetch_add_explicit(taken, (uint64_t)rc, memory_order_relaxed);
			stress_backoff_reset(&bo);
			if (p->block) {
				rc = portal_doorbell_notify(blk.ring);
				if (rc < 0) {
					code = fail(p, "notify", rc);
					break;
				}
				if ((got & 4095) < (uint64_t)n)
					stress_sleep_us(200);
			}
			continue;
		}
		if ((code = idle_check(p, &wd, c.multi ? atomic_load(taken) : got, "consumer", got,
				       p->count)) != 0)
			break;
		if (p->block) {
			rc = portal_doorbell_wait(blk.wait, ready_data, &blk, WAIT_TIMEOUT_NS);
			if (rc < 0) {
				code = fail(p, "wait for data", rc);
				break;
			}
		} else {
			stress_backoff(&bo);
		}
	}
	p->res->messages = got;
	if (code == 0 && !c.multi) {
		/* Everything from every producer, nothing more. */
		for (uint32_t i = 0; i < p->producers; i++)
			if (c.next[i] != c.want_each[i]) {
				peer_log(p, "producer %u: ended at %llu, expected %llu", i,
					 (unsigned long long)c.next[i],
					 (unsigned long long)c.want_each[i]);
				p->res->seq_errors++;
				p->res->errors++;
			}
		if (got != p->count || portal_ring_count(q) != 0) {
			peer_log(p, "received %llu of %llu, %d left over", (unsigned long long)got,
				 (unsigned long long)p->count, portal_ring_count(q));
			p->res->errors++;
		}
	}
out:
	free(buf);
	free(c.next);
	blocking_close(p, &blk);
	portal_ring_detach(q);
	return code;
}

/* ------------------------------------------------------------------ */
/* Message ring                                                        */
/* ------------------------------------------------------------------ */

static int msg_producer(struct peer *p)
{
	struct watchdog wd = { 0 };
	struct stress_backoff bo = { 0 };
	portal_msgring_t *m;
	uint64_t seq = 0;
	size_t max, len;
	uint8_t *buf;
	void *dst;
	int rc, code = 0;

	rc = portal_msgring_open(p->reg, STRESS_QUEUE_NAME, PORTAL_ROLE_PRODUCER, &m);
	if (rc) {
		fail(p, "open msgring", rc);
		return STRESS_EXIT_SETUP;
	}
	max = portal_msgring_max_msg(m);
	buf = malloc(max);
	if (!buf || (code = peer_barrier(p)) != 0)
		goto out;
	while (seq < p->count) {
		len = stress_msg_len(seq, max);
		if (seq & 1) {
			/* Zero-copy: reserve, write in place, commit. */
			rc = portal_msgring_reserve(m, len, &dst);
			if (rc == 0) {
				stress_msg_fill(dst, len, stress_stamp(0, seq));
				rc = portal_msgring_commit(m, len);
				if (rc) {
					code = fail(p, "commit", rc);
					break;
				}
			}
		} else {
			stress_msg_fill(buf, len, stress_stamp(0, seq));
			rc = portal_msgring_send(m, buf, len);
		}
		if (rc == 0) {
			seq++;
			stress_backoff_reset(&bo);
			continue;
		}
		if (rc != -EAGAIN) {
			code = fail(p, "send", rc);
			break;
		}
		if ((code = idle_check(p, &wd, seq, "msg producer", seq, p->count)) != 0)
			break;
		stress_backoff(&bo);
	}
	p->res->messages = seq;
out:
	free(buf);
	portal_msgring_detach(m);
	return code;
}

static void check_msg(struct peer *p, const void *msg, size_t len, uint64_t want, size_t max)
{
	uint64_t stamp;

	if (len != stress_msg_len(want, max) || !stress_msg_check(msg, len, &stamp)) {
		p->res->sum_errors++;
		p->res->errors++;
		if (p->res->sum_errors <= 5)
			peer_log(p, "message %llu: length %zu (expected %zu) or checksum wrong",
				 (unsigned long long)want, len, stress_msg_len(want, max));
		return;
	}
	if (stamp != stress_stamp(0, want)) {
		p->res->seq_errors++;
		p->res->errors++;
		if (p->res->seq_errors <= 5)
			peer_log(p, "message %llu: stamp %#llx", (unsigned long long)want,
				 (unsigned long long)stamp);
	}
}

static int msg_consumer(struct peer *p)
{
	struct watchdog wd = { 0 };
	struct stress_backoff bo = { 0 };
	portal_msgring_t *m;
	uint64_t got = 0;
	size_t max, len;
	const void *src;
	uint8_t *buf;
	ssize_t n;
	int rc, code = 0;

	rc = portal_msgring_open(p->reg, STRESS_QUEUE_NAME, PORTAL_ROLE_CONSUMER, &m);
	if (rc) {
		fail(p, "open msgring", rc);
		return STRESS_EXIT_SETUP;
	}
	max = portal_msgring_max_msg(m);
	buf = malloc(max);
	if (!buf || (code = peer_barrier(p)) != 0)
		goto out;
	while (got < p->count) {
		if (got & 1) {
			/* Zero-copy: check in place, then release. */
			rc = portal_msgring_peek(m, &src, &len);
			if (rc == 0) {
				check_msg(p, src, len, got, max);
				rc = portal_msgring_release(m);
				if (rc) {
					code = fail(p, "release", rc);
					break;
				}
			}
		} else {
			n = portal_msgring_recv(m, buf, max);
			rc = n < 0 ? (int)n : 0;
			if (n >= 0)
				check_msg(p, buf, (size_t)n, got, max);
		}
		if (rc == 0) {
			got++;
			stress_backoff_reset(&bo);
			continue;
		}
		if (rc != -EAGAIN) {
			code = fail(p, "receive", rc);
			break;
		}
		if ((code = idle_check(p, &wd, got, "msg consumer", got, p->count)) != 0)
			break;
		stress_backoff(&bo);
	}
	p->res->messages = got;
	if (code == 0 && portal_msgring_ready(m)) {
		peer_log(p, "a message more than the %llu sent", (unsigned long long)p->count);
		p->res->errors++;
	}
out:
	free(buf);
	portal_msgring_detach(m);
	return code;
}

/* ------------------------------------------------------------------ */
/* Broadcast ring                                                      */
/* ------------------------------------------------------------------ */

#define BCAST_SLOT 64u

static int bcast_publisher(struct peer *p)
{
	struct watchdog wd = { 0 };
	struct stress_backoff bo = { 0 };
	const bool lap = !strcmp(p->kind, "bcast-lap");
	struct portal_ring_stats st;
	uint8_t msg[BCAST_SLOT];
	portal_bcast_t *b;
	uint64_t seq = 0;
	int rc, code = 0;

	rc = portal_bcast_open(p->reg, STRESS_QUEUE_NAME, -1, &b);
	if (rc) {
		fail(p, "open bcast", rc);
		return STRESS_EXIT_SETUP;
	}
	if ((code = peer_barrier(p)) != 0)
		goto out;
	while (seq < p->count) {
		stress_fill(msg, sizeof(msg), stress_stamp(0, seq));
		rc = portal_bcast_publish(b, msg);
		if (rc == 0) {
			seq++;
			stress_backoff_reset(&bo);
			/* LAP never waits: let the subscribers have the CPU now
			 * and then, or on a small machine they only ever see
			 * the last lap. */
			if (lap && (seq & 255) == 0)
				sched_yield();
			continue;
		}
		if (rc != -EAGAIN || lap) {
			code = fail(p, "publish", rc);
			break;
		}
		if ((code = idle_check(p, &wd, seq, "publisher", seq, p->count)) != 0)
			break;
		stress_backoff(&bo);
	}
	p->res->messages = seq;
	portal_bcast_stats(b, &st);
	if (st.proto_errors) {
		peer_log(p, "%llu subscriber protocol errors", (unsigned long long)st.proto_errors);
		p->res->errors++;
	}
out:
	portal_bcast_detach(b);
	return code;
}

static int bcast_subscriber(struct peer *p)
{
	const bool lap = !strcmp(p->kind, "bcast-lap");
	struct watchdog wd = { 0 };
	struct stress_backoff bo = { 0 };
	uint8_t msg[BCAST_SLOT];
	portal_bcast_t *b;
	uint64_t got = 0, lost = 0, n, stamp, last = UINT64_MAX;
	int rc, code = 0;

	rc = portal_bcast_open(p->reg, STRESS_QUEUE_NAME, (int)p->id, &b);
	if (rc) {
		fail(p, "open bcast", rc);
		return STRESS_EXIT_SETUP;
	}
	if ((code = peer_barrier(p)) != 0)
		goto out;
	while (got + lost < p->count) {
		n = 0;
		rc = portal_bcast_read(b, msg, &n);
		if (rc == 0) {
			/* Position got + lost is the message the cursor is at:
			 * its sequence, and only ever increasing. */
			if (!stress_check(msg, sizeof(msg), &stamp)) {
				p->res->sum_errors++;
				p->res->errors++;
				if (p->res->sum_errors <= 5)
					peer_log(p, "checksum mismatch at %llu",
						 (unsigned long long)(got + lost));
			} else if (stamp != got + lost || (last != UINT64_MAX && stamp <= last)) {
				p->res->seq_errors++;
				p->res->errors++;
				if (p->res->seq_errors <= 5)
					peer_log(p, "got seq %llu at position %llu (last %llu)",
						 (unsigned long long)stamp,
						 (unsigned long long)(got + lost),
						 (unsigned long long)last);
			}
			last = stamp;
			got++;
			stress_backoff_reset(&bo);
			/* The slow subscriber dawdles so the publisher laps it. */
			if (p->slow && (got & 1023) == 0)
				stress_sleep_us(300);
			continue;
		}
		if (rc == -EOVERFLOW && lap) {
			lost += n;
			if (got + lost > p->count) {
				peer_log(p, "lost %llu: more than were published", (unsigned long long)n);
				p->res->errors++;
				break;
			}
			continue;
		}
		if (rc != -EAGAIN) {
			code = fail(p, "read", rc);
			break;
		}
		if ((code = idle_check(p, &wd, got + lost, "subscriber", got + lost, p->count)) != 0)
			break;
		stress_backoff(&bo);
	}
	p->res->messages = got;
	p->res->lost = lost;
	if (code == 0) {
		/* Nothing after the last message, and everything accounted
		 * for: received + lost == published. */
		rc = portal_bcast_read(b, msg, &n);
		if (rc != -EAGAIN || got + lost != p->count || (!lap && lost)) {
			peer_log(p, "end: read %d, received %llu + lost %llu != %llu", rc,
				 (unsigned long long)got, (unsigned long long)lost,
				 (unsigned long long)p->count);
			p->res->errors++;
		}
	}
out:
	portal_bcast_detach(b);
	return code;
}

int peer_run_stress(struct peer *p)
{
	bool prod = !strcmp(p->role, "producer"), cons = !strcmp(p->role, "consumer");
	bool sub = !strcmp(p->role, "sub");
	const char *k = p->kind;

	if (!strcmp(k, "spsc") || !strcmp(k, "mpsc") || !strcmp(k, "mpmc")) {
		if (p->block && strcmp(k, "spsc") != 0)
			return STRESS_EXIT_USAGE;
		if (prod)
			return ring_producer(p);
		if (cons)
			return ring_consumer(p);
	} else if (!strcmp(k, "msg")) {
		if (prod)
			return msg_producer(p);
		if (cons)
			return msg_consumer(p);
	} else if (!strcmp(k, "bcast-hold") || !strcmp(k, "bcast-lap")) {
		if (prod)
			return bcast_publisher(p);
		if (sub)
			return bcast_subscriber(p);
	}
	peer_log(p, "unknown role/kind");
	return STRESS_EXIT_USAGE;
}
