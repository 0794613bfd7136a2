/* SPDX-License-Identifier: MIT */
/*
 * ring_test.c - descriptor rings (SPSC, MPSC, MPMC).
 *
 * Table-driven: every behaviour test runs once per configuration in
 * {SPSC, MPSC, MPMC} x slot {8..256} x capacity {2, 16, 256}; the cmocka test
 * name is "behaviour/MODE/sSLOT/cCAP". Elements are stamped with a producer
 * id, a sequence number and a checksum (tests/test_util.h), and every
 * dequeued element is checked.
 *
 * The hostile-peer tests hold a producer and a consumer handle on the same
 * memory, scribble the peer's shared index, and check the honest side returns
 * PORTAL_EPROTO, stays quarantined (every later call -EPROTO), counts one
 * protocol error, logs it, and never touches memory outside the object
 * (memory comes from tu_mem_alloc: it ends at a guard page and its slack is
 * canaried and poisoned, so a stray access faults or is reported).
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "tests/test_util.h"

#include "portal/region.h"
#include "portal/ring.h"
#include "ring/ring_internal.h"

#define BIT63 (UINT64_C(1) << 63)

struct cfg {
	uint32_t mode, slot, cap;
};

static const uint32_t modes[] = { PORTAL_RING_SPSC, PORTAL_RING_MPSC, PORTAL_RING_MPMC };
static const uint32_t slots[] = { 8, 16, 32, 64, 128, 256 };
static const uint32_t caps[] = { 2, 16, 256 };
static struct cfg cfgs[TU_ARRAY_SIZE(modes) * TU_ARRAY_SIZE(slots) * TU_ARRAY_SIZE(caps)];

static const char *mode_name(uint32_t m)
{
	return m == PORTAL_RING_SPSC ? "SPSC" : m == PORTAL_RING_MPSC ? "MPSC" : "MPMC";
}

/* ------------------------------------------------------------------ */
/* A ring in private memory with one producer and one consumer handle.  */
/* ------------------------------------------------------------------ */

struct env {
	const struct cfg *c;
	void *mem;
	size_t len;
	struct portal_ring_hdr *hdr;
	portal_ring_t *prod, *cons;
	uint8_t *buf, *out; /* scratch, 2 * cap + 8 elements each */
	uint32_t next_put;  /* sequence of the next element put */
	uint32_t next_get;  /* sequence expected next */
};

static void env_open(struct env *e, const struct cfg *c)
{
	struct portal_ring_params p = { .mode = c->mode, .slot_size = c->slot, .capacity = c->cap };
	size_t scratch = ((size_t)c->cap * 2 + 8) * c->slot;

	memset(e, 0, sizeof(*e));
	e->c = c;
	e->len = portal_ring_memsize(&p);
	assert_int_equal(e->len, PORTAL_RING_HDR_SIZE + (size_t)c->cap * c->slot);
	e->mem = tu_mem_alloc(e->len);
	assert_non_null(e->mem);
	e->hdr = e->mem;
	assert_int_equal(portal_ring_init(e->mem, e->len, &p), 0);
	assert_int_equal(portal_ring_attach(e->mem, e->len, PORTAL_ROLE_PRODUCER, &e->prod), 0);
	assert_int_equal(portal_ring_attach(e->mem, e->len, PORTAL_ROLE_CONSUMER, &e->cons), 0);
	assert_int_equal(portal_ring_slot_size(e->prod), c->slot);
	assert_int_equal(portal_ring_capacity(e->cons), c->cap);
	assert_false(portal_ring_quarantined(e->prod));
	assert_false(portal_ring_quarantined(e->cons));
	e->buf = malloc(scratch);
	e->out = malloc(scratch);
	assert_non_null(e->buf);
	assert_non_null(e->out);
}

static void env_close(struct env *e)
{
	portal_ring_detach(e->prod);
	portal_ring_detach(e->cons);
	tu_mem_free_checked(e->mem, e->len);
	free(e->buf);
	free(e->out);
	memset(e, 0, sizeof(*e));
}

/* Burst-enqueue N fresh stamped elements; expect WANT of them to go in. */
static void put(struct env *e, unsigned n, int want)
{
	uint32_t slot = e->c->slot;
	int rc;

	for (unsigned i = 0; i < n; i++)
		tu_stamp(e->buf + (size_t)i * slot, slot, tu_tag(1, e->next_put + i));
	rc = portal_ring_enqueue_burst(e->prod, e->buf, n);
	if (rc != want)
		fail_msg("enqueue_burst(%u) at seq %u: got %d, want %d", n, e->next_put, rc, want);
	e->next_put += (uint32_t)want;
}

/* Check N elements at OUT continue the sequence. */
static void check_seq(struct env *e, const uint8_t *out, unsigned n)
{
	uint32_t slot = e->c->slot;
	uint64_t tag;

	for (unsigned i = 0; i < n; i++) {
		if (!tu_check(out + (size_t)i * slot, slot, &tag))
			fail_msg("element %u of %u (expected seq %u): bad checksum", i, n, e->next_get);
		if (tag != tu_tag(1, e->next_get))
			fail_msg("element %u: got tag %#llx, want seq %u", i, (unsigned long long)tag,
				 e->next_get);
		e->next_get++;
	}
}

/* Burst-dequeue up to N; expect WANT and check them. */
static void get(struct env *e, unsigned n, int want)
{
	int rc = portal_ring_dequeue_burst(e->cons, e->out, n);

	if (rc != want)
		fail_msg("dequeue_burst(%u) at seq %u: got %d, want %d", n, e->next_get, rc, want);
	check_seq(e, e->out, (unsigned)want);
}

static void assert_stats(portal_ring_t *r, uint64_t enq, uint64_t deq, uint64_t full,
			 uint64_t empty, uint64_t proto)
{
	struct portal_ring_stats st;

	portal_ring_stats(r, &st);
	if (st.enqueued != enq || st.dequeued != deq || st.full != full || st.empty != empty ||
	    st.proto_errors != proto || st.lapped != 0)
		fail_msg("stats enq %llu deq %llu full %llu empty %llu proto %llu lapped %llu; "
			 "want %llu %llu %llu %llu %llu 0",
			 (unsigned long long)st.enqueued, (unsigned long long)st.dequeued,
			 (unsigned long long)st.full, (unsigned long long)st.empty,
			 (unsigned long long)st.proto_errors, (unsigned long long)st.lapped,
			 (unsigned long long)enq, (unsigned long long)deq, (unsigned long long)full,
			 (unsigned long long)empty, (unsigned long long)proto);
}

/* ------------------------------------------------------------------ */
/* Behaviour, per configuration                                         */
/* ------------------------------------------------------------------ */

/* Single-element calls: FIFO, exactly cap fit, -EAGAIN at full and empty,
 * count(), stats; then a few laps of one-in one-out. */
static void t_fifo(void **state)
{
	const struct cfg *c = *state;
	struct env e;
	uint64_t tag;
	uint32_t i;

	env_open(&e, c);
	assert_int_equal(portal_ring_count(e.cons), 0);
	assert_int_equal(portal_ring_dequeue(e.cons, e.out), -EAGAIN);
	for (i = 0; i < c->cap; i++) {
		tu_stamp(e.buf, c->slot, tu_tag(1, i));
		assert_int_equal(portal_ring_enqueue(e.prod, e.buf), 0);
		assert_int_equal(portal_ring_count(e.cons), (int)i + 1);
	}
	tu_stamp(e.buf, c->slot, tu_tag(1, i));
	assert_int_equal(portal_ring_enqueue(e.prod, e.buf), -EAGAIN);
	assert_int_equal(portal_ring_enqueue(e.prod, e.buf), -EAGAIN);
	assert_int_equal(portal_ring_count(e.cons), (int)c->cap);
	for (i = 0; i < c->cap; i++) {
		memset(e.out, 0, c->slot);
		assert_int_equal(portal_ring_dequeue(e.cons, e.out), 0);
		assert_true(tu_check(e.out, c->slot, &tag));
		assert_int_equal(tag, tu_tag(1, i));
		assert_int_equal(portal_ring_count(e.cons), (int)(c->cap - i - 1));
	}
	assert_int_equal(portal_ring_dequeue(e.cons, e.out), -EAGAIN);
	assert_stats(e.prod, c->cap, 0, 2, 0, 0);
	assert_stats(e.cons, 0, c->cap, 0, 2, 0);
	/* The shared indices say the same. */
	assert_int_equal(atomic_load(&e.hdr->prod_tail), c->cap);
	assert_int_equal(atomic_load(&e.hdr->cons_tail), c->cap);

	/* Three more laps, one in, one out. */
	for (i = c->cap; i < 4 * c->cap; i++) {
		tu_stamp(e.buf, c->slot, tu_tag(1, i));
		assert_int_equal(portal_ring_enqueue(e.prod, e.buf), 0);
		assert_int_equal(portal_ring_dequeue(e.cons, e.out), 0);
		assert_true(tu_check(e.out, c->slot, &tag));
		assert_int_equal(tag, tu_tag(1, i));
	}
	assert_stats(e.prod, 4 * c->cap, 0, 2, 0, 0);
	assert_stats(e.cons, 0, 4 * c->cap, 0, 2, 0);
	env_close(&e);
}

/* Bursts: partial at full and at empty, one publish per burst. */
static void t_burst(void **state)
{
	const struct cfg *c = *state;
	unsigned half = c->cap / 2;
	struct env e;

	env_open(&e, c);
	put(&e, c->cap + 3, (int)c->cap);        /* partial: only cap fit */
	assert_int_equal(atomic_load(&e.hdr->prod_tail), c->cap);
	put(&e, 3, 0);                            /* full */
	assert_int_equal(portal_ring_count(e.cons), (int)c->cap);
	get(&e, c->cap + 5, (int)c->cap);        /* partial: only cap there */
	get(&e, 5, 0);                            /* empty */
	assert_stats(e.prod, c->cap, 0, 1, 0, 0);
	assert_stats(e.cons, 0, c->cap, 0, 1, 0);

	/* Half full, then a burst that only half fits. */
	put(&e, half, (int)half);
	put(&e, c->cap, (int)(c->cap - half));
	put(&e, 1, 0);
	/* Take one, then ask for more than is left. */
	get(&e, 1, 1);
	put(&e, 2, 1);                            /* exactly the one freed slot */
	get(&e, 2 * c->cap, (int)c->cap);
	get(&e, 1, 0);
	assert_stats(e.prod, 2 * c->cap + 1, 0, 2, 0, 0);
	assert_stats(e.cons, 0, 2 * c->cap + 1, 0, 2, 0);
	/* A zero-length burst moves nothing. */
	assert_int_equal(portal_ring_enqueue_burst(e.prod, e.buf, 0), 0);
	assert_int_equal(portal_ring_dequeue_burst(e.cons, e.out, 0), 0);
	assert_int_equal(portal_ring_count(e.cons), 0);
	env_close(&e);
}

/* A full-ring burst starting at every slot offset (so every split point of
 * the wrap is hit), dequeued in two bursts whose split also moves. */
static void t_wrap(void **state)
{
	const struct cfg *c = *state;
	struct env e;

	env_open(&e, c);
	for (uint32_t o = 0; o < c->cap; o++) {
		unsigned j = 1 + (o * 7u) % c->cap;

		assert_int_equal(atomic_load(&e.hdr->prod_tail) % c->cap, o);
		put(&e, c->cap, (int)c->cap);
		put(&e, 1, 0);
		assert_int_equal(portal_ring_count(e.cons), (int)c->cap);
		get(&e, j, (int)j);
		get(&e, c->cap, (int)(c->cap - j));
		/* Move the start by one slot. */
		put(&e, 1, 1);
		get(&e, 1, 1);
	}
	assert_int_equal(e.next_get, (uint32_t)c->cap * (c->cap + 1));
	assert_false(portal_ring_quarantined(e.prod));
	assert_false(portal_ring_quarantined(e.cons));
	env_close(&e);
}

/* The 64-bit positions may wrap: a ring whose indices start just below
 * 2^64 works across the wrap exactly as one starting at 0. */
static void t_u64_wrap(void **state)
{
	const struct cfg *c = *state;
	struct portal_ring_params p = { .mode = c->mode, .slot_size = c->slot, .capacity = c->cap };
	uint64_t start = UINT64_MAX - c->cap - c->cap / 2;
	struct env e;

	env_open(&e, c);
	portal_ring_detach(e.prod);
	portal_ring_detach(e.cons);
	assert_int_equal(portal_ring_init(e.mem, e.len, &p), 0);
	atomic_store(&e.hdr->prod_head, start);
	atomic_store(&e.hdr->prod_tail, start);
	atomic_store(&e.hdr->cons_head, start);
	atomic_store(&e.hdr->cons_tail, start);
	assert_int_equal(portal_ring_attach(e.mem, e.len, PORTAL_ROLE_PRODUCER, &e.prod), 0);
	assert_int_equal(portal_ring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &e.cons), 0);
	for (unsigned lap = 0; lap < 4; lap++) {
		unsigned j = 1 + lap % c->cap;

		put(&e, c->cap, (int)c->cap);
		assert_int_equal(portal_ring_count(e.cons), (int)c->cap);
		get(&e, j, (int)j);
		put(&e, j, (int)j);
		get(&e, 2 * c->cap, (int)c->cap);
	}
	/* The positions really did cross 2^64. */
	assert_int_equal(atomic_load(&e.hdr->prod_tail), start + e.next_put);
	assert_true(atomic_load(&e.hdr->prod_tail) < start);
	assert_int_equal(atomic_load(&e.hdr->cons_tail), start + e.next_get);
	assert_false(portal_ring_quarantined(e.prod));
	assert_false(portal_ring_quarantined(e.cons));
	env_close(&e);
}

/* Wrong role or wrong mode for the call: -EINVAL, nothing moves. */
static void t_roles(void **state)
{
	const struct cfg *c = *state;
	bool sp = c->mode == PORTAL_RING_SPSC, sc = c->mode != PORTAL_RING_MPMC;
	struct env e;

	env_open(&e, c);
	tu_stamp(e.buf, c->slot, tu_tag(1, 0));
	/* Producer calls on the consumer handle and vice versa. */
	assert_int_equal(portal_ring_enqueue(e.cons, e.buf), -EINVAL);
	assert_int_equal(portal_ring_enqueue_burst(e.cons, e.buf, 1), -EINVAL);
	assert_int_equal(portal_ring_enqueue_burst_sp(e.cons, e.buf, 1), -EINVAL);
	assert_int_equal(portal_ring_enqueue_burst_mp(e.cons, e.buf, 1), -EINVAL);
	assert_int_equal(portal_ring_dequeue(e.prod, e.out), -EINVAL);
	assert_int_equal(portal_ring_dequeue_burst(e.prod, e.out, 1), -EINVAL);
	assert_int_equal(portal_ring_dequeue_burst_sc(e.prod, e.out, 1), -EINVAL);
	assert_int_equal(portal_ring_dequeue_burst_mc(e.prod, e.out, 1), -EINVAL);
	assert_int_equal(portal_ring_count(e.prod), -EINVAL);
	/* The wrong concurrency variant for the ring's mode. */
	assert_int_equal(portal_ring_enqueue_burst_sp(e.prod, e.buf, 1), sp ? 1 : -EINVAL);
	assert_int_equal(portal_ring_enqueue_burst_mp(e.prod, e.buf, 1), sp ? -EINVAL : 1);
	assert_int_equal(portal_ring_count(e.cons), 1);
	assert_int_equal(portal_ring_dequeue_burst_sc(e.cons, e.out, 1), sc ? 1 : -EINVAL);
	assert_int_equal(portal_ring_dequeue_burst_mc(e.cons, e.out, 1), sc ? -EINVAL : 1);
	assert_int_equal(portal_ring_count(e.cons), 0);
	assert_stats(e.prod, 1, 0, 0, 0, 0);
	assert_stats(e.cons, 0, 1, 0, 0, 0);
	assert_false(portal_ring_quarantined(e.prod));
	assert_false(portal_ring_quarantined(e.cons));
	env_close(&e);
}

/* The geometry is copied at attach: a peer rewriting the immutable header
 * afterwards changes nothing for an attached handle. */
static void t_header_copied(void **state)
{
	const struct cfg *c = *state;
	struct env e;

	env_open(&e, c);
	e.hdr->capacity = c->cap * 64;
	e.hdr->slot_size = 4096;
	e.hdr->mode = 77;
	e.hdr->obj_size = UINT64_MAX;
	assert_int_equal(portal_ring_capacity(e.prod), c->cap);
	assert_int_equal(portal_ring_slot_size(e.cons), c->slot);
	put(&e, c->cap + 1, (int)c->cap);
	get(&e, c->cap + 1, (int)c->cap);
	put(&e, c->cap, (int)c->cap);
	get(&e, c->cap, (int)c->cap);
	env_close(&e);
}

/* ------------------------------------------------------------------ */
/* Hostile peer                                                         */
/* ------------------------------------------------------------------ */

/* A value written over a peer index: base + add + cap_mul * capacity, where
 * base is the index's honest value (use_base) or 0. */
struct scribble {
	const char *what;
	bool use_base;
	uint64_t add;
	int64_t cap_mul;
};

/* Every one of these is impossible for an honest peer in the state the
 * tests put the ring in (see t_hostile_prod_tail / t_hostile_cons_tail). */
static const struct scribble bad_values[] = {
	{ "backwards by one",        true,  UINT64_MAX, 0 },
	{ "backwards to zero",       false, 0, 0 },
	{ "backwards by 2^63",       true,  BIT63, 0 },
	{ "one past a full ring",    true,  1, 1 },
	{ "two rings ahead",         true,  0, 2 },
	{ "2^40 ahead",              true,  UINT64_C(1) << 40, 0 },
	{ "2^63",                    false, BIT63, 0 },
	{ "UINT64_MAX",              false, UINT64_MAX, 0 },
	{ "UINT64_MAX - capacity",   false, UINT64_MAX, -1 },
};

static uint64_t scribble_value(const struct scribble *s, uint64_t base, uint32_t cap)
{
	return (s->use_base ? base : 0) + s->add + (uint64_t)s->cap_mul * cap;
}

/* Every call on a quarantined handle returns -EPROTO. */
static void assert_quarantined(portal_ring_t *r, struct env *e)
{
	assert_true(portal_ring_quarantined(r));
	assert_int_equal(portal_ring_enqueue(r, e->buf), PORTAL_EPROTO);
	assert_int_equal(portal_ring_enqueue_burst(r, e->buf, 1), PORTAL_EPROTO);
	assert_int_equal(portal_ring_enqueue_burst_sp(r, e->buf, 1), PORTAL_EPROTO);
	assert_int_equal(portal_ring_enqueue_burst_mp(r, e->buf, 1), PORTAL_EPROTO);
	assert_int_equal(portal_ring_dequeue(r, e->out), PORTAL_EPROTO);
	assert_int_equal(portal_ring_dequeue_burst(r, e->out, 1), PORTAL_EPROTO);
	assert_int_equal(portal_ring_dequeue_burst_sc(r, e->out, 1), PORTAL_EPROTO);
	assert_int_equal(portal_ring_dequeue_burst_mc(r, e->out, 1), PORTAL_EPROTO);
	assert_int_equal(portal_ring_count(r), PORTAL_EPROTO);
	assert_true(portal_ring_quarantined(r));
}

/* Move the ring past its first lap so that "backwards" values exist. */
static void warm_up(struct env *e)
{
	for (uint32_t i = 0; i <= e->c->cap; i++) {
		put(e, 1, 1);
		get(e, 1, 1);
	}
}

/*
 * Consumer side: the ring is empty and the consumer's cache says so; the
 * producer then writes prod_tail. Every bad value gets PORTAL_EPROTO from the
 * next dequeue, and the consumer does not move its own indices.
 */
static void t_hostile_prod_tail(void **state)
{
	const struct cfg *c = *state;

	/* partial = 0: the consumer's cache says empty; 1: it still holds
	 * elements it has not taken, and asks for more than that (so a
	 * prod_tail gone backwards but still ahead of the consumer is seen). */
	for (int partial = 0; partial < 2; partial++)
	for (size_t k = 0; k < TU_ARRAY_SIZE(bad_values); k++) {
		const struct scribble *s = &bad_values[k];
		unsigned fill = c->cap < 4 ? c->cap : 4;
		struct tu_log log;
		struct env e;
		uint64_t base, bad, cons_tail, cons_head;
		int rc;

		env_open(&e, c);
		warm_up(&e);
		if (partial) {
			put(&e, fill, (int)fill);
			get(&e, 1, 1); /* the consumer now caches fill - 1 more */
		} else {
			put(&e, c->cap / 2, (int)(c->cap / 2));
			get(&e, c->cap, (int)(c->cap / 2));
		}
		base = atomic_load(&e.hdr->prod_tail);
		bad = scribble_value(s, base, c->cap);
		cons_tail = atomic_load(&e.hdr->cons_tail);
		cons_head = atomic_load(&e.hdr->cons_head);
		atomic_store(&e.hdr->prod_tail, bad);

		tu_log_capture(&log);
		rc = portal_ring_dequeue_burst(e.cons, e.out, partial ? c->cap + 1 : 1);
		tu_log_release();
		if (rc != PORTAL_EPROTO)
			fail_msg("prod_tail %s (%#llx, honest %#llx, %s): dequeue got %d, want EPROTO",
				 s->what, (unsigned long long)bad, (unsigned long long)base,
				 partial ? "consumer holds cached elements" : "consumer's cache empty",
				 rc);
		assert_quarantined(e.cons, &e);
		assert_stats(e.cons, 0, e.next_get, 0, 0, 1);
		assert_int_equal(log.count[PORTAL_LOG_ERROR], 1);
		assert_non_null(strstr(log.last, "quarantined"));
		/* The consumer acknowledged nothing. */
		assert_int_equal(atomic_load(&e.hdr->cons_tail), cons_tail);
		assert_int_equal(atomic_load(&e.hdr->cons_head), cons_head);
		/* The producer handle is not affected by the consumer's state. */
		assert_false(portal_ring_quarantined(e.prod));
		env_close(&e);
	}
}

/* count() re-reads prod_tail too, and flags the same values. */
static void t_hostile_prod_tail_count(void **state)
{
	const struct cfg *c = *state;

	for (size_t k = 0; k < TU_ARRAY_SIZE(bad_values); k++) {
		const struct scribble *s = &bad_values[k];
		struct env e;
		uint64_t base, bad;
		int rc;

		env_open(&e, c);
		warm_up(&e);
		base = atomic_load(&e.hdr->prod_tail);
		bad = scribble_value(s, base, c->cap);
		atomic_store(&e.hdr->prod_tail, bad);
		rc = portal_ring_count(e.cons);
		if (rc != PORTAL_EPROTO)
			fail_msg("prod_tail %s (%#llx): count got %d, want EPROTO", s->what,
				 (unsigned long long)bad, rc);
		assert_quarantined(e.cons, &e);
		env_close(&e);
	}
}

/*
 * Producer side: the ring is full and the producer's cache says so; the
 * consumer then writes cons_tail. Every bad value gets PORTAL_EPROTO from the
 * next enqueue, and no slot or producer index is written.
 */
static void t_hostile_cons_tail(void **state)
{
	const struct cfg *c = *state;

	/* partial = 0: the ring is full and the producer knows it; 1: the
	 * producer's cache says one slot is free and it asks for two (so a
	 * cons_tail gone backwards but still within a ring is seen). */
	for (int partial = 0; partial < 2; partial++)
	for (size_t k = 0; k < TU_ARRAY_SIZE(bad_values); k++) {
		const struct scribble *s = &bad_values[k];
		struct tu_log log;
		struct env e;
		uint64_t base, bad, prod_tail, prod_head;
		uint8_t *slots_before;
		int rc;

		env_open(&e, c);
		warm_up(&e);
		put(&e, c->cap, (int)c->cap);
		if (partial) {
			get(&e, 2, 2);
			put(&e, 1, 1); /* refreshes: the producer has seen both go */
		} else {
			put(&e, 1, 0); /* the producer has now seen the real cons_tail */
		}
		base = atomic_load(&e.hdr->cons_tail);
		bad = scribble_value(s, base, c->cap);
		atomic_store(&e.hdr->cons_tail, bad);
		prod_tail = atomic_load(&e.hdr->prod_tail);
		prod_head = atomic_load(&e.hdr->prod_head);
		slots_before = malloc((size_t)c->cap * c->slot);
		assert_non_null(slots_before);
		memcpy(slots_before, (uint8_t *)e.mem + PORTAL_RING_HDR_SIZE, (size_t)c->cap * c->slot);

		for (unsigned i = 0; i < 2; i++)
			tu_stamp(e.buf + (size_t)i * c->slot, c->slot, tu_tag(9, i));
		tu_log_capture(&log);
		rc = portal_ring_enqueue_burst(e.prod, e.buf, partial ? 2 : 1);
		tu_log_release();
		if (rc != PORTAL_EPROTO)
			fail_msg("cons_tail %s (%#llx, honest %#llx, %s): enqueue got %d, want EPROTO",
				 s->what, (unsigned long long)bad, (unsigned long long)base,
				 partial ? "one slot free" : "ring full", rc);
		assert_quarantined(e.prod, &e);
		assert_stats(e.prod, e.next_put, 0, partial ? 0 : 1, 0, 1);
		assert_int_equal(log.count[PORTAL_LOG_ERROR], 1);
		assert_int_equal(atomic_load(&e.hdr->prod_tail), prod_tail);
		assert_int_equal(atomic_load(&e.hdr->prod_head), prod_head);
		assert_memory_equal(slots_before, (uint8_t *)e.mem + PORTAL_RING_HDR_SIZE,
				    (size_t)c->cap * c->slot);
		assert_false(portal_ring_quarantined(e.cons));
		free(slots_before);
		env_close(&e);
	}
}

/*
 * Honest but unusual index values are not flagged: a consumer a full ring
 * behind, a producer that filled the whole ring since the consumer last
 * looked, a consumer that drained a whole full ring since the producer last
 * looked, and a consumer that took exactly one.
 */
static void t_honest_extremes(void **state)
{
	const struct cfg *c = *state;
	struct env e;

	env_open(&e, c);
	warm_up(&e);
	/* The consumer's cache is empty; the producer fills the whole ring. */
	get(&e, 1, 0);
	put(&e, c->cap, (int)c->cap);
	assert_int_equal(portal_ring_count(e.cons), (int)c->cap);
	/* The producer's cache is full; the consumer takes exactly one. */
	put(&e, 1, 0);
	get(&e, 1, 1);
	put(&e, 2, 1);
	/* The consumer drains a whole full ring in one go. */
	get(&e, c->cap, (int)c->cap);
	put(&e, c->cap + 1, (int)c->cap);
	get(&e, c->cap, (int)c->cap);
	/* And the consumer is slower: several partial rounds. */
	for (unsigned i = 0; i < 3 * c->cap; i++) {
		uint32_t room = c->cap - (e.next_put - e.next_get);

		put(&e, 2, room < 2 ? (int)room : 2);
		get(&e, 1, 1);
	}
	get(&e, 2 * c->cap, (int)(e.next_put - e.next_get));
	assert_false(portal_ring_quarantined(e.prod));
	assert_false(portal_ring_quarantined(e.cons));
	env_close(&e);
}

/* A header whose shared tails disagree by more than a ring is refused at
 * attach. */
static void t_attach_bad_tails(void **state)
{
	const struct cfg *c = *state;
	portal_ring_t *r = NULL;
	struct env e;

	env_open(&e, c);
	atomic_store(&e.hdr->prod_tail, atomic_load(&e.hdr->cons_tail) + c->cap + 1);
	assert_int_equal(portal_ring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &r), PORTAL_EPROTO);
	assert_int_equal(portal_ring_attach(e.mem, e.len, PORTAL_ROLE_PRODUCER, &r), PORTAL_EPROTO);
	atomic_store(&e.hdr->prod_tail, 5);
	atomic_store(&e.hdr->cons_tail, 6); /* consumer ahead of producer */
	assert_int_equal(portal_ring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &r), PORTAL_EPROTO);
	/* Exactly full, as an idle honest ring would look: fine. */
	atomic_store(&e.hdr->prod_head, 5 + c->cap);
	atomic_store(&e.hdr->prod_tail, 5 + c->cap);
	atomic_store(&e.hdr->cons_head, 5);
	atomic_store(&e.hdr->cons_tail, 5);
	assert_int_equal(portal_ring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &r), 0);
	assert_int_equal(portal_ring_count(r), (int)c->cap);
	portal_ring_detach(r);
	env_close(&e);
}

/*
 * MPMC consumer, found by fuzz/ring.c: a prod_tail forged 2^63 - 1 ahead of
 * the consumer's cached copy passes the refresh's signed checks (it is ahead
 * of the cache, and "behind" cons_head) and gets cached; the consumer then
 * sees nothing available. Once a co-consumer has moved cons_head past the
 * cached value, the same cached value reads as 2^63 elements available: the
 * claim must be refused with PORTAL_EPROTO, never cover more than the ring
 * (the burst asks for more than the capacity, which would read past the
 * slots).
 */
static void t_hostile_prod_tail_2p63(void **state)
{
	const struct cfg *c = *state;
	unsigned fill = c->cap < 8 ? c->cap : 8, big = 2 * c->cap + 8;
	portal_ring_t *co;
	struct tu_log log;
	struct env e;
	uint64_t cons_head;
	int rc;

	env_open(&e, c);
	put(&e, fill, (int)fill);
	get(&e, 1, 1); /* e.cons caches prod_tail = fill, cons_head = 1 */
	assert_int_equal(portal_ring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &co), 0);
	atomic_store(&e.hdr->prod_tail, fill + BIT63 - 1);

	tu_log_capture(&log);
	/* Asks for more than it caches: refreshes, and finds nothing to take. */
	rc = portal_ring_dequeue_burst(e.cons, e.out, fill);
	assert_true(rc == 0 || rc == PORTAL_EPROTO);
	if (rc == 0) {
		/* A co-consumer, whose cache is still honest, takes the rest. */
		rc = portal_ring_dequeue_burst(co, e.out, fill - 1);
		assert_int_equal(rc, (int)fill - 1);
		check_seq(&e, e.out, fill - 1);
		cons_head = atomic_load(&e.hdr->cons_head);
		rc = portal_ring_dequeue_burst(e.cons, e.out, big);
		if (rc != PORTAL_EPROTO)
			fail_msg("dequeue_burst(%u) with prod_tail cached 2^63 ahead: got %d, want EPROTO",
				 big, rc);
		assert_int_equal(atomic_load(&e.hdr->cons_head), cons_head);
	}
	tu_log_release();
	assert_quarantined(e.cons, &e);
	assert_int_equal(log.count[PORTAL_LOG_ERROR], 1);
	portal_ring_detach(co);
	env_close(&e);
}

/*
 * MP/MC rings: a side's own shared head (prod_head for producers, cons_head
 * for MPMC consumers) lives in shared memory too. ring.h: claimants publish
 * in claim order and wait for a preempted claimant before them (a claimant
 * that died mid-claim is left to crash recovery), so a head one ahead of the
 * tail is a legitimate in-flight claim and is not tested here. A head
 * *behind* its own tail, or 2^63 away from it, is impossible for honest
 * claimants and cheap to see; such a value must give PORTAL_EPROTO, not a
 * wait that can never end (the waiter's tail is already past the claim it
 * waits for) nor an endless "empty". Each call runs in a child under
 * alarm(), so a hang fails the test instead of stalling the suite.
 */
struct head_case {
	const char *what;
	bool cons;             /* scribble cons_head (else prod_head) */
	int64_t delta;         /* from the honest value */
};

static const struct head_case head_cases[] = {
	{ "prod_head behind prod_tail",   false, -1 },
	{ "prod_head 2^63 away",          false, INT64_MIN },
	{ "cons_head behind cons_tail",   true, -1 },
	{ "cons_head 2^63 away",          true, INT64_MIN },
};

struct head_child {
	const struct cfg *c;
	const struct head_case *h;
};

static int head_child_fn(void *arg)
{
	struct head_child *hc = arg;
	const struct cfg *c = hc->c;
	struct portal_ring_params p = { .mode = c->mode, .slot_size = c->slot, .capacity = c->cap };
	size_t len = portal_ring_memsize(&p);
	struct portal_ring_hdr *h = tu_mem_alloc(len);
	portal_ring_t *prod, *cons;
	uint8_t el[256] = { 0 };
	int rc;

	if (!h || portal_ring_init(h, len, &p) ||
	    portal_ring_attach(h, len, PORTAL_ROLE_PRODUCER, &prod) ||
	    portal_ring_attach(h, len, PORTAL_ROLE_CONSUMER, &cons))
		return 100;
	/* Some traffic, two elements left in the ring. */
	for (int i = 0; i < 5; i++)
		if (portal_ring_enqueue(prod, el) || (i < 3 && portal_ring_dequeue(cons, el)))
			return 101;
	if (hc->h->cons) {
		atomic_store(&h->cons_head, atomic_load(&h->cons_head) + (uint64_t)hc->h->delta);
		rc = portal_ring_dequeue(cons, el);
		if (rc == 0)
			rc = portal_ring_dequeue(cons, el);
	} else {
		atomic_store(&h->prod_head, atomic_load(&h->prod_head) + (uint64_t)hc->h->delta);
		rc = portal_ring_enqueue(prod, el);
	}
	return rc == PORTAL_EPROTO ? 1 : rc == 0 ? 2 : rc == -EAGAIN ? 3 : 4;
}

static void t_hostile_own_head(void **state)
{
	const struct cfg *c = *state;
	struct head_child kids[TU_ARRAY_SIZE(head_cases)];
	pid_t pids[TU_ARRAY_SIZE(head_cases)];
	int res[TU_ARRAY_SIZE(head_cases)];
	char report[1024] = "";
	bool bad = false;
	size_t n = 0;

	/* Run them side by side: each may burn its whole time limit. */
	for (size_t i = 0; i < TU_ARRAY_SIZE(head_cases); i++) {
		if (head_cases[i].cons && c->mode != PORTAL_RING_MPMC)
			continue; /* single consumers never read cons_head */
		kids[n] = (struct head_child){ c, &head_cases[i] };
		pids[n] = tu_spawn_bounded(head_child_fn, &kids[n], 1);
		assert_true(pids[n] > 0);
		n++;
	}
	for (size_t i = 0; i < n; i++)
		res[i] = tu_wait_bounded(pids[i]);
	for (size_t i = 0; i < n; i++) {
		const char *why = NULL;

		if (res[i] == TU_CHILD_TIMEOUT)
			why = "call never returned (waits in publish_in_order for a tail "
			      "that has already passed)";
		else if (res[i] >= 100)
			why = "setup failed or crashed";
		else if (res[i] != 1)
			why = res[i] == 3 ? "returned -EAGAIN (elements stay in the ring forever)"
					  : "returned, but not PORTAL_EPROTO";
		if (why) {
			bad = true;
			snprintf(report + strlen(report), sizeof(report) - strlen(report),
				 "\n  %s: %s (child result %d)", kids[i].h->what, why, res[i]);
		}
	}
	if (bad)
		fail_msg("own-head scribbles on %s:%s", mode_name(c->mode), report);
}

/* ------------------------------------------------------------------ */
/* Parameters, init and attach                                         */
/* ------------------------------------------------------------------ */

static void t_params(void **state)
{
	static const struct {
		uint32_t mode, slot, cap, flags;
		size_t want;
	} cases[] = {
		{ PORTAL_RING_SPSC, 8, 2, 0, PORTAL_RING_HDR_SIZE + 16 },
		{ PORTAL_RING_MPSC, 256, 4, 0, PORTAL_RING_HDR_SIZE + 1024 },
		{ PORTAL_RING_MPMC, 64, 1024, 0, PORTAL_RING_HDR_SIZE + 65536 },
		{ PORTAL_RING_SPSC, 8, 1u << 30, 0, PORTAL_RING_HDR_SIZE + ((size_t)8 << 30) },
		{ 0, 8, 16, 0, 0 },                     /* mode */
		{ 4, 8, 16, 0, 0 },
		{ PORTAL_RING_SPSC, 4, 16, 0, 0 },      /* slot size */
		{ PORTAL_RING_SPSC, 512, 16, 0, 0 },
		{ PORTAL_RING_SPSC, 24, 16, 0, 0 },
		{ PORTAL_RING_SPSC, 0, 16, 0, 0 },
		{ PORTAL_RING_SPSC, 8, 1, 0, 0 },       /* capacity */
		{ PORTAL_RING_SPSC, 8, 0, 0, 0 },
		{ PORTAL_RING_SPSC, 8, 3, 0, 0 },
		{ PORTAL_RING_SPSC, 8, 100, 0, 0 },
		{ PORTAL_RING_SPSC, 8, 1u << 31, 0, 0 },
		{ PORTAL_RING_SPSC, 8, 16, 1, 0 },      /* flags */
		{ PORTAL_RING_SPSC, 8, 16, 0x80000000u, 0 },
	};

	(void)state;
	assert_int_equal(portal_ring_memsize(NULL), 0);
	for (size_t i = 0; i < TU_ARRAY_SIZE(cases); i++) {
		struct portal_ring_params p = { cases[i].mode, cases[i].slot, cases[i].cap,
						cases[i].flags };
		size_t got = portal_ring_memsize(&p);

		if (got != cases[i].want)
			fail_msg("memsize(mode %u slot %u cap %u flags %#x) = %zu, want %zu",
				 p.mode, p.slot_size, p.capacity, p.flags, got, cases[i].want);
		if (cases[i].want == 0) {
			uint8_t *m = tu_mem_alloc(8192);

			assert_int_equal(portal_ring_init(m, 8192, &p), -EINVAL);
			tu_mem_free_checked(m, 8192);
		}
	}
}

static void t_init_attach_errors(void **state)
{
	struct portal_ring_params p = { PORTAL_RING_SPSC, 16, 8, 0 };
	size_t need = portal_ring_memsize(&p);
	uint8_t *m = tu_mem_alloc(need + 128);
	portal_ring_t *r = NULL;

	(void)state;
	assert_non_null(m);
	assert_int_equal(portal_ring_init(NULL, need, &p), -EINVAL);
	assert_int_equal(portal_ring_init(m, need, NULL), -EINVAL);
	assert_int_equal(portal_ring_init(m, need - 1, &p), -EINVAL);
	assert_int_equal(portal_ring_init(m, 0, &p), -EINVAL);
	assert_int_equal(portal_ring_init(m + 8, need, &p), -EINVAL);
	assert_int_equal(portal_ring_init(m + 32, need, &p), -EINVAL);
	assert_int_equal(portal_ring_init(m + 64, need, &p), 0); /* aligned, room to spare */
	assert_int_equal(portal_ring_init(m, need + 128, &p), 0);

	assert_int_equal(portal_ring_attach(NULL, need, PORTAL_ROLE_PRODUCER, &r), -EINVAL);
	assert_int_equal(portal_ring_attach(m, need, PORTAL_ROLE_PRODUCER, NULL), -EINVAL);
	assert_int_equal(portal_ring_attach(m, need, 0, &r), -EINVAL);
	assert_int_equal(portal_ring_attach(m, need, 3, &r), -EINVAL);
	assert_int_equal(portal_ring_attach(m + 8, need, PORTAL_ROLE_PRODUCER, &r), -EINVAL);
	assert_int_equal(portal_ring_attach(m, PORTAL_RING_HDR_SIZE - 1, PORTAL_ROLE_PRODUCER, &r),
			 PORTAL_EPROTO);
	assert_int_equal(portal_ring_attach(m, need - 1, PORTAL_ROLE_PRODUCER, &r), PORTAL_EPROTO);
	assert_null(r);
	assert_int_equal(portal_ring_attach(m, need, PORTAL_ROLE_PRODUCER, &r), 0);
	assert_non_null(r);
	portal_ring_detach(r);
	portal_ring_detach(NULL);
	tu_mem_free_checked(m, need + 128);
}

/* Each corrupted immutable header field makes attach return PORTAL_EPROTO. */
struct hdr_case {
	const char *what;
	size_t field_off, field_size;
	uint64_t value;
	size_t len_delta; /* subtracted from the attach length */
};

#define HF(f) offsetof(struct portal_ring_hdr, f), sizeof(((struct portal_ring_hdr *)0)->f)

static const struct hdr_case hdr_cases[] = {
	{ "magic",                 HF(magic), 0x474E5251, 0 },
	{ "magic zero",            HF(magic), 0, 0 },
	{ "version 0",             HF(version), 0, 0 },
	{ "version 2",             HF(version), 2, 0 },
	{ "mode 0",                HF(mode), 0, 0 },
	{ "mode 4",                HF(mode), 4, 0 },
	{ "slot size 4",           HF(slot_size), 4, 0 },
	{ "slot size 512",         HF(slot_size), 512, 0 },
	{ "slot size 48",          HF(slot_size), 48, 0 },
	{ "slot size doubled",     HF(slot_size), 64, 0 },
	{ "capacity 0",            HF(capacity), 0, 0 },
	{ "capacity 1",            HF(capacity), 1, 0 },
	{ "capacity 24",           HF(capacity), 24, 0 },
	{ "capacity doubled",      HF(capacity), 32, 0 },
	{ "capacity 2^31",         HF(capacity), UINT64_C(1) << 31, 0 },
	{ "obj_size + 1",          HF(obj_size), PORTAL_RING_HDR_SIZE + 16 * 32 + 1, 0 },
	{ "obj_size - 64",         HF(obj_size), PORTAL_RING_HDR_SIZE + 16 * 32 - 64, 0 },
	{ "obj_size huge",         HF(obj_size), UINT64_MAX, 0 },
	{ "obj_size > len",        HF(magic), PORTAL_RING_MAGIC, 1 },
	{ "len < header",          HF(magic), PORTAL_RING_MAGIC, 16 * 32 + 1 },
};

static void t_attach_corrupt_fields(void **state)
{
	struct portal_ring_params p = { PORTAL_RING_MPMC, 32, 16, 0 };
	size_t need = portal_ring_memsize(&p);
	uint8_t *m = tu_mem_alloc(need);

	(void)state;
	assert_non_null(m);
	for (size_t i = 0; i < TU_ARRAY_SIZE(hdr_cases); i++) {
		const struct hdr_case *hc = &hdr_cases[i];
		portal_ring_t *r = NULL;
		int rc;

		assert_int_equal(portal_ring_init(m, need, &p), 0);
		memcpy(m + hc->field_off, &hc->value, hc->field_size);
		for (int role = PORTAL_ROLE_PRODUCER; role <= PORTAL_ROLE_CONSUMER; role++) {
			rc = portal_ring_attach(m, need - hc->len_delta, role, &r);
			if (rc != PORTAL_EPROTO)
				fail_msg("header %s, role %d: attach got %d, want EPROTO", hc->what,
					 role, rc);
			assert_null(r);
		}
	}
	tu_mem_free_checked(m, need);
}

/* ------------------------------------------------------------------ */
/* Rings placed in a region                                             */
/* ------------------------------------------------------------------ */

static void t_region_glue(void **state)
{
	struct portal_region_opts o = { .size = 1 << 20 };
	struct portal_ring_params ps[3] = {
		{ PORTAL_RING_SPSC, 16, 64, 0 },
		{ PORTAL_RING_MPSC, 64, 16, 0 },
		{ PORTAL_RING_MPMC, 256, 8, 0 },
	};
	struct portal_ring_params badp = { PORTAL_RING_SPSC, 12, 64, 0 };
	portal_region_t *reg, *peer;
	struct portal_object_info info;
	char uri[96], fduri[32], name[64];
	uint8_t el[256], out[256];
	uint64_t tag;

	(void)state;
	snprintf(uri, sizeof(uri), "memfd:%s", tu_unique_name(name, sizeof(name), "rg"));
	assert_int_equal(portal_region_create(uri, &o, &reg), 0);
	snprintf(fduri, sizeof(fduri), "fd:%d", portal_region_fd(reg));
	assert_int_equal(portal_region_attach(fduri, NULL, &peer), 0);

	for (int i = 0; i < 3; i++) {
		portal_ring_t *prod, *cons;

		snprintf(name, sizeof(name), "q%d", i);
		assert_int_equal(portal_ring_create(reg, name, &ps[i], 0), 0);
		assert_int_equal(portal_ring_create(reg, name, &ps[i], 0), -EEXIST);
		assert_int_equal(portal_region_lookup(peer, name, PORTAL_OBJ_RING, &info), 0);
		assert_int_equal(info.size, portal_ring_memsize(&ps[i]));
		assert_int_equal(info.param[0], ps[i].mode);
		assert_int_equal(info.param[1], ps[i].slot_size);
		assert_int_equal(info.param[2], ps[i].capacity);
		/* Producer through the creator's mapping, consumer through the peer's. */
		assert_int_equal(portal_ring_open(reg, name, PORTAL_ROLE_PRODUCER, &prod), 0);
		assert_int_equal(portal_ring_open(peer, name, PORTAL_ROLE_CONSUMER, &cons), 0);
		for (uint32_t s = 0; s < 3 * ps[i].capacity; s++) {
			tu_stamp(el, ps[i].slot_size, tu_tag(7, s));
			assert_int_equal(portal_ring_enqueue(prod, el), 0);
			assert_int_equal(portal_ring_dequeue(cons, out), 0);
			assert_true(tu_check(out, ps[i].slot_size, &tag));
			assert_int_equal(tag, tu_tag(7, s));
		}
		portal_ring_detach(prod);
		portal_ring_detach(cons);
	}
	assert_int_equal(portal_ring_create(reg, "bad", &badp, 0), -EINVAL);
	assert_int_equal(portal_ring_create(reg, "bad", NULL, 0), -EINVAL);
	assert_int_equal(portal_ring_create(peer, "q9", &ps[0], 0), -EPERM);
	{
		portal_ring_t *r = NULL;

		assert_int_equal(portal_ring_open(peer, "nope", PORTAL_ROLE_CONSUMER, &r), -ENOENT);
		/* A user object is not a ring. */
		assert_int_equal(portal_region_alloc(reg, "user", PORTAL_OBJ_USER, 4096, 0, 0, NULL,
						     &info), 0);
		assert_int_equal(portal_ring_open(peer, "user", PORTAL_ROLE_CONSUMER, &r), -ENOENT);
		/* A ring whose header a peer corrupted is refused at open. */
		assert_int_equal(portal_region_lookup(peer, "q1", PORTAL_OBJ_RING, &info), 0);
		((struct portal_ring_hdr *)info.addr)->capacity = 1u << 20;
		assert_int_equal(portal_ring_open(peer, "q1", PORTAL_ROLE_CONSUMER, &r), PORTAL_EPROTO);
		assert_null(r);
	}
	portal_region_detach(peer);
	portal_region_detach(reg);
}

/* ------------------------------------------------------------------ */
/* Multi-threaded: per-producer order, no loss, no duplicate            */
/* ------------------------------------------------------------------ */

struct mt {
	struct cfg c;
	unsigned producers, consumers;
	uint32_t per_producer;
	void *mem;
	size_t len;
	_Atomic uint64_t *seen;     /* producers * words bits */
	size_t words;
	atomic_uint_fast64_t consumed;
	struct tu_err err;
	uint64_t enq_total, deq_total;
	pthread_mutex_t lock;
	bool rec;                   /* recoverable: -EAGAIN means try again */
	atomic_uint_fast64_t eagain; /* ... and how often it came */
};

struct mt_arg {
	struct mt *m;
	unsigned id;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *mt_producer(void *arg)
{
	struct mt_arg *a = arg;
	struct mt *m = a->m;
	uint32_t slot = m->c.slot;
	uint8_t *buf = malloc((size_t)8 * slot);
	portal_ring_t *r;
	struct portal_ring_stats st;
	uint32_t seq = 0;
	double last = now_s();
	unsigned idle = 0;

	if (!buf || portal_ring_attach(m->mem, m->len, PORTAL_ROLE_PRODUCER, &r)) {
		tu_err_set(&m->err, "producer %u: attach failed", a->id);
		free(buf);
		return NULL;
	}
	while (seq < m->per_producer && !tu_err_any(&m->err)) {
		unsigned n = 1 + (seq * 7u + a->id) % 8;
		int rc;

		if (n > m->per_producer - seq)
			n = m->per_producer - seq;
		for (unsigned i = 0; i < n; i++)
			tu_stamp(buf + (size_t)i * slot, slot, tu_tag(a->id, seq + i));
		rc = portal_ring_enqueue_burst(r, buf, n);
		if (rc == -EAGAIN && m->rec) {
			/* An earlier claim of another handle is open. */
			atomic_fetch_add(&m->eagain, 1);
			rc = 0;
		}
		if (rc < 0) {
			tu_err_set(&m->err, "producer %u: enqueue got %d", a->id, rc);
			break;
		}
		if (rc == 0) {
			if (++idle % 1024 == 0 && now_s() - last > 10) {
				tu_err_set(&m->err, "producer %u: no room for 10 s", a->id);
				break;
			}
			sched_yield();
			continue;
		}
		seq += (uint32_t)rc;
		last = now_s();
	}
	portal_ring_stats(r, &st);
	if (st.enqueued != seq || st.proto_errors)
		tu_err_set(&m->err, "producer %u: stats enqueued %llu, sent %u, proto %llu", a->id,
			   (unsigned long long)st.enqueued, seq, (unsigned long long)st.proto_errors);
	pthread_mutex_lock(&m->lock);
	m->enq_total += st.enqueued;
	pthread_mutex_unlock(&m->lock);
	portal_ring_detach(r);
	free(buf);
	return NULL;
}

static void *mt_consumer(void *arg)
{
	struct mt_arg *a = arg;
	struct mt *m = a->m;
	uint32_t slot = m->c.slot;
	uint64_t total = (uint64_t)m->producers * m->per_producer;
	uint8_t *buf = malloc((size_t)16 * slot);
	int64_t last_seq[8];
	portal_ring_t *r;
	struct portal_ring_stats st;
	double last = now_s();
	unsigned idle = 0;

	for (int i = 0; i < 8; i++)
		last_seq[i] = -1;
	if (!buf || portal_ring_attach(m->mem, m->len, PORTAL_ROLE_CONSUMER, &r)) {
		tu_err_set(&m->err, "consumer %u: attach failed", a->id);
		free(buf);
		return NULL;
	}
	while (atomic_load(&m->consumed) < total && !tu_err_any(&m->err)) {
		unsigned n = 1 + (unsigned)(atomic_load(&m->consumed) % 16);
		int rc = portal_ring_dequeue_burst(r, buf, n);

		if (rc == -EAGAIN && m->rec) {
			atomic_fetch_add(&m->eagain, 1);
			rc = 0;
		}
		if (rc < 0) {
			tu_err_set(&m->err, "consumer %u: dequeue got %d", a->id, rc);
			break;
		}
		if (rc == 0) {
			if (++idle % 1024 == 0 && now_s() - last > 10) {
				tu_err_set(&m->err, "consumer %u: nothing for 10 s", a->id);
				break;
			}
			sched_yield();
			continue;
		}
		for (int i = 0; i < rc; i++) {
			uint64_t tag;
			uint32_t who, seq;

			if (!tu_check(buf + (size_t)i * slot, slot, &tag)) {
				tu_err_set(&m->err, "consumer %u: bad checksum", a->id);
				break;
			}
			who = (uint32_t)(tag >> 32);
			seq = (uint32_t)tag;
			if (who >= m->producers || seq >= m->per_producer) {
				tu_err_set(&m->err, "consumer %u: tag %#llx out of range", a->id,
					   (unsigned long long)tag);
				break;
			}
			/* One consumer sees each producer's elements in order. */
			if ((int64_t)seq <= last_seq[who]) {
				tu_err_set(&m->err, "consumer %u: producer %u seq %u after %lld", a->id,
					   who, seq, (long long)last_seq[who]);
				break;
			}
			last_seq[who] = seq;
			if (atomic_fetch_or(&m->seen[who * m->words + seq / 64], UINT64_C(1) << (seq % 64)) &
			    (UINT64_C(1) << (seq % 64))) {
				tu_err_set(&m->err, "consumer %u: producer %u seq %u twice", a->id, who,
					   seq);
				break;
			}
		}
		atomic_fetch_add(&m->consumed, (uint64_t)rc);
		last = now_s();
	}
	portal_ring_stats(r, &st);
	if (st.proto_errors)
		tu_err_set(&m->err, "consumer %u: %llu protocol errors", a->id,
			   (unsigned long long)st.proto_errors);
	pthread_mutex_lock(&m->lock);
	m->deq_total += st.dequeued;
	pthread_mutex_unlock(&m->lock);
	portal_ring_detach(r);
	free(buf);
	return NULL;
}

struct mt_cfg {
	struct cfg c;
	unsigned producers, consumers;
	uint32_t per_producer;
	bool rec; /* recoverable: a claim record per handle, helping */
};

static void t_mt(void **state)
{
	const struct mt_cfg *mc = *state;
	struct portal_ring_params p = { mc->c.mode, mc->c.slot, mc->c.cap, 0 };
	struct portal_ring_recovery_params rp = {
		.max_producers = (uint16_t)mc->producers,
		.max_consumers = mc->c.mode == PORTAL_RING_MPMC ? (uint16_t)mc->consumers : 0,
	};
	double t0 = now_s();
	pthread_t th[8];
	struct mt_arg args[8];
	unsigned nth = 0;
	struct mt *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	m->c = mc->c;
	m->producers = mc->producers;
	m->consumers = mc->consumers;
	m->per_producer = mc->per_producer;
	m->rec = mc->rec;
	m->len = portal_ring_memsize_recoverable(&p, m->rec ? &rp : NULL);
	m->mem = tu_mem_alloc(m->len);
	m->words = (m->per_producer + 63) / 64;
	m->seen = calloc(m->producers * m->words, sizeof(*m->seen));
	pthread_mutex_init(&m->lock, NULL);
	assert_non_null(m->mem);
	assert_non_null(m->seen);
	assert_int_equal(portal_ring_init_recoverable(m->mem, m->len, &p, m->rec ? &rp : NULL), 0);

	for (unsigned i = 0; i < m->consumers; i++, nth++) {
		args[nth] = (struct mt_arg){ m, i };
		assert_int_equal(pthread_create(&th[nth], NULL, mt_consumer, &args[nth]), 0);
	}
	for (unsigned i = 0; i < m->producers; i++, nth++) {
		args[nth] = (struct mt_arg){ m, i };
		assert_int_equal(pthread_create(&th[nth], NULL, mt_producer, &args[nth]), 0);
	}
	for (unsigned i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	tu_assert_no_err(&m->err);

	/* Nothing lost: every (producer, seq) bit is set. */
	for (unsigned w = 0; w < m->producers; w++)
		for (uint32_t s = 0; s < m->per_producer; s++)
			if (!(atomic_load(&m->seen[w * m->words + s / 64]) & (UINT64_C(1) << (s % 64))))
				fail_msg("producer %u seq %u never arrived", w, s);
	assert_int_equal(m->enq_total, (uint64_t)m->producers * m->per_producer);
	assert_int_equal(m->deq_total, m->enq_total);
	assert_int_equal(atomic_load(&((struct portal_ring_hdr *)m->mem)->prod_tail), m->enq_total);
	assert_int_equal(atomic_load(&((struct portal_ring_hdr *)m->mem)->cons_tail), m->enq_total);
	if (m->rec) {
		const struct portal_ring_claim *cl = (const void *)((uint8_t *)m->mem +
			PORTAL_RING_HDR_SIZE + (size_t)m->c.cap * m->c.slot);
		unsigned nrec = rp.max_producers + rp.max_consumers, retired = 0;
		portal_ring_t *h[8];

		/* Every record is free, or retired by a detach whose claim was
		 * published later: an attach takes each back. */
		for (unsigned i = 0; i < nrec; i++) {
			uint32_t st = atomic_load(&cl[i].state);

			assert_true(st == PORTAL_CLAIM_FREE || st == PORTAL_CLAIM_RETIRED);
			retired += st == PORTAL_CLAIM_RETIRED;
		}
		for (unsigned i = 0; i < nrec; i++)
			assert_int_equal(portal_ring_attach_claim(m->mem, m->len,
					 i < rp.max_producers ? PORTAL_ROLE_PRODUCER
							      : PORTAL_ROLE_CONSUMER,
					 (int)(i < rp.max_producers ? i : i - rp.max_producers),
					 7, &h[i]), 0);
		for (unsigned i = 0; i < nrec; i++)
			portal_ring_detach(h[i]);
		printf("# mt %uP%uC recoverable: %llu elements in %.2f s, %llu -EAGAIN, "
		       "%u records retired at the end\n", m->producers, m->consumers,
		       (unsigned long long)m->enq_total, now_s() - t0,
		       (unsigned long long)atomic_load(&m->eagain), retired);
	}
	pthread_mutex_destroy(&m->lock);
	free(m->seen);
	tu_mem_free_checked(m->mem, m->len);
	free(m);
}

static struct mt_cfg mt_cfgs[] = {
	{ { PORTAL_RING_SPSC, 16, 64 }, 1, 1, 200000, false },
	{ { PORTAL_RING_SPSC, 256, 2 }, 1, 1, 20000, false },
	{ { PORTAL_RING_MPSC, 8, 64 }, 3, 1, 70000, false },
	{ { PORTAL_RING_MPSC, 128, 8 }, 2, 1, 30000, false },
	{ { PORTAL_RING_MPMC, 8, 64 }, 2, 2, 100000, false },
	{ { PORTAL_RING_MPMC, 64, 4 }, 2, 2, 30000, false },
	/* Recoverable: done marks and helping; 10^6 elements on MPMC. */
	{ { PORTAL_RING_MPSC, 16, 64 }, 3, 1, 100000, true },
	{ { PORTAL_RING_MPMC, 16, 64 }, 4, 2, 250000, true },
	{ { PORTAL_RING_MPMC, 8, 4 }, 4, 2, 20000, true },
};

/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* Crash recovery                                                       */
/* ------------------------------------------------------------------ */

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define RV_SLOT 16u
#define RV_CAP  16u

/* A recoverable ring in MAP_SHARED memory (so a forked child shares it). */
struct rv {
	void *mem;
	size_t len;
	struct portal_ring_hdr *hdr;
	struct portal_ring_claim *claims; /* producers, then consumers */
	uint32_t mode, cap, nprod, ncons;
};

static void rv_open(struct rv *v, uint32_t mode, uint32_t cap, uint16_t np, uint16_t nc,
		    const struct portal_ring_recovery_params *rpx)
{
	struct portal_ring_params p = { .mode = mode, .slot_size = RV_SLOT, .capacity = cap };
	struct portal_ring_recovery_params rp = { .max_producers = np, .max_consumers = nc };

	if (rpx)
		rp = *rpx;
	memset(v, 0, sizeof(*v));
	v->len = portal_ring_memsize_recoverable(&p, &rp);
	assert_int_equal(v->len, PORTAL_RING_HDR_SIZE + (size_t)cap * RV_SLOT +
					 (size_t)(rp.max_producers + rp.max_consumers) * 128);
	v->mem = mmap(NULL, v->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(v->mem != MAP_FAILED);
	assert_int_equal(portal_ring_init_recoverable(v->mem, v->len, &p, &rp), 0);
	v->hdr = v->mem;
	v->claims = (void *)((uint8_t *)v->mem + PORTAL_RING_HDR_SIZE + (size_t)cap * RV_SLOT);
	v->mode = mode;
	v->cap = cap;
	v->nprod = rp.max_producers;
	v->ncons = rp.max_consumers;
}

static void rv_close(struct rv *v)
{
	munmap(v->mem, v->len);
}

static portal_ring_t *rv_attach(struct rv *v, int role, int slot)
{
	portal_ring_t *r = NULL;

	assert_int_equal(portal_ring_attach_claim(v->mem, v->len, role, slot, 1000 + slot, &r), 0);
	return r;
}

static void rv_put(portal_ring_t *r, uint32_t who, uint32_t seq)
{
	uint8_t b[RV_SLOT];

	tu_stamp(b, sizeof(b), tu_tag(who, seq));
	assert_int_equal(portal_ring_enqueue(r, b), 0);
}

/* What a producer (or consumer) that dies mid-claim leaves behind: its
 * record names [head, head + n) and the side's head moved past it; nothing
 * published. Written through the ABI, exactly as the library does. */
static uint64_t die_mid_claim(struct portal_ring_claim *rec, _Atomic uint64_t *head, unsigned n,
			      bool cas)
{
	uint64_t h = atomic_load(head);

	atomic_store(&rec->count, n);
	atomic_store(&rec->head, h);
	if (cas)
		assert_true(atomic_compare_exchange_strong(head, &h, h + n));
	return h;
}

/* Take one element and say who put it (UINT32_MAX: poison). */
static uint32_t get_who(portal_ring_t *c, uint32_t *seq)
{
	uint8_t b[RV_SLOT];
	uint64_t tag = 0;

	assert_int_equal(portal_ring_dequeue(c, b), 0);
	if (portal_ring_is_poison(c, b))
		return UINT32_MAX;
	assert_true(tu_check(b, sizeof(b), &tag));
	*seq = (uint32_t)tag;
	return (uint32_t)(tag >> 32);
}

static void t_recover_params(void **state)
{
	struct portal_ring_params p = { .mode = PORTAL_RING_MPSC, .slot_size = 16, .capacity = 16 };
	struct portal_ring_recovery_params rp = { .max_producers = 2 };
	portal_ring_t *a, *b, *c, *x;
	unsigned found[4];
	struct rv v;

	(void)state;
	assert_int_equal(portal_ring_memsize_recoverable(&p, NULL), portal_ring_memsize(&p));
	assert_int_equal(portal_ring_memsize_recoverable(&p, &rp),
			 portal_ring_memsize(&p) + 2 * sizeof(struct portal_ring_claim));
	rp.max_consumers = 1; /* MPSC: the consumer is single */
	assert_int_equal(portal_ring_memsize_recoverable(&p, &rp), 0);
	rp.max_consumers = 0;
	rp.max_producers = PORTAL_RING_MAX_CLAIMS + 1;
	assert_int_equal(portal_ring_memsize_recoverable(&p, &rp), 0);
	rp.max_producers = 1;
	rp.flags = 2;
	assert_int_equal(portal_ring_memsize_recoverable(&p, &rp), 0);
	p.mode = PORTAL_RING_SPSC;
	rp.flags = 0;
	assert_int_equal(portal_ring_memsize_recoverable(&p, &rp), 0);

	rv_open(&v, PORTAL_RING_MPMC, RV_CAP, 2, 1, NULL);
	a = rv_attach(&v, PORTAL_ROLE_PRODUCER, 1);
	assert_int_equal(portal_ring_claim_slot(a), 1);
	assert_int_equal(portal_ring_attach_claim(v.mem, v.len, PORTAL_ROLE_PRODUCER, 1, 7, &x),
			 -EBUSY);
	assert_int_equal(portal_ring_attach_claim(v.mem, v.len, PORTAL_ROLE_PRODUCER, 2, 7, &x),
			 -EINVAL);
	b = rv_attach(&v, PORTAL_ROLE_PRODUCER, PORTAL_RING_CLAIM_ANY);
	assert_int_equal(portal_ring_claim_slot(b), 0);
	assert_int_equal(portal_ring_attach(v.mem, v.len, PORTAL_ROLE_PRODUCER, &x), -EBUSY);
	/* portal_ring_attach tags with the pid. */
	assert_int_equal(portal_ring_attach(v.mem, v.len, PORTAL_ROLE_CONSUMER, &c), 0);
	assert_int_equal(portal_ring_find_claims(c, PORTAL_ROLE_CONSUMER, (uint64_t)getpid(),
						 found, 4), 1);
	assert_int_equal(found[0], 0);
	assert_int_equal(portal_ring_find_claims(c, PORTAL_ROLE_PRODUCER, 1001, found, 4), 1);
	assert_int_equal(found[0], 1);
	assert_int_equal(portal_ring_find_claims(c, PORTAL_ROLE_PRODUCER, 42, found, 4), 0);
	/* Out of range, or a side without records. */
	assert_int_equal(portal_ring_recover_producer(c, 2), -EINVAL);
	assert_int_equal(portal_ring_recover_consumer(c, 1, NULL, 0), -EINVAL);
	/* Detach frees the record; recovering a free record does nothing. */
	portal_ring_detach(a);
	assert_int_equal(atomic_load(&v.claims[1].state), PORTAL_CLAIM_FREE);
	assert_int_equal(portal_ring_recover_producer(c, 1), 0);
	a = rv_attach(&v, PORTAL_ROLE_PRODUCER, 1);
	portal_ring_detach(a);
	portal_ring_detach(b);
	portal_ring_detach(c);
	rv_close(&v);

	/* SPSC rings take no records and keep their layout. */
	rv_open(&v, PORTAL_RING_SPSC, RV_CAP, 0, 0, NULL);
	a = rv_attach(&v, PORTAL_ROLE_PRODUCER, 5);
	assert_int_equal(portal_ring_claim_slot(a), -1);
	assert_int_equal(portal_ring_recover_producer(a, 0), -EINVAL);
	portal_ring_detach(a);
	rv_close(&v);
}

static void t_recover_poison(void **state)
{
	struct portal_ring_recovery_params rp = { .max_producers = 2,
						  .flags = PORTAL_RING_F_POISON,
						  .poison = UINT64_C(0xDEADBEEF00000000) };
	uint8_t b[RV_SLOT];
	portal_ring_t *c;
	struct rv v;

	(void)state;
	rv_open(&v, PORTAL_RING_MPSC, RV_CAP, 0, 0, &rp);
	c = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	memset(b, 0xFF, sizeof(b));
	assert_false(portal_ring_is_poison(c, b));
	for (unsigned i = 0; i < RV_SLOT; i += 8)
		memcpy(b + i, &rp.poison, 8);
	assert_true(portal_ring_is_poison(c, b));
	b[RV_SLOT - 1] ^= 1;
	assert_false(portal_ring_is_poison(c, b));
	portal_ring_detach(c);
	rv_close(&v);

	rv_open(&v, PORTAL_RING_MPSC, RV_CAP, 1, 0, NULL);
	c = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	memset(b, 0xFF, sizeof(b));
	assert_true(portal_ring_is_poison(c, b));
	tu_stamp(b, sizeof(b), tu_tag(1, 1));
	assert_false(portal_ring_is_poison(c, b));
	portal_ring_detach(c);
	rv_close(&v);
}

struct bg_put {
	portal_ring_t *r;
	uint32_t who, seq;
	int rc;
};

static void *bg_put_fn(void *arg)
{
	struct bg_put *b = arg;
	uint8_t buf[RV_SLOT];

	tu_stamp(buf, sizeof(buf), tu_tag(b->who, b->seq));
	b->rc = portal_ring_enqueue(b->r, buf);
	return NULL;
}

/* A producer dies after its CAS, its claim recorded: a live producer
 * behind it is stuck until recovery poisons the claim and publishes it. */
static void t_recover_producer(void **state)
{
	uint32_t mode = *(const uint32_t *)*state;
	portal_ring_t *p0, *c;
	struct portal_ring_stats st;
	struct bg_put bg;
	pthread_t th;
	uint32_t who, seq;
	uint64_t x;
	struct rv v;

	rv_open(&v, mode, RV_CAP, 3, mode == PORTAL_RING_MPMC ? 1 : 0, NULL);
	p0 = rv_attach(&v, PORTAL_ROLE_PRODUCER, 0);
	c = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	/* Producer 1 published one element before dying. */
	{
		portal_ring_t *p1 = rv_attach(&v, PORTAL_ROLE_PRODUCER, 1);

		rv_put(p1, 1, 0);
		rv_put(p0, 0, 0);
		/* Now it claims 3 and dies: the record stays HELD. */
		free(p1); /* no detach: it died */
	}
	x = die_mid_claim(&v.claims[1], &v.hdr->prod_head, 3, true);
	assert_int_equal(x, 2);
	/* It had written part of its first slot. */
	memset((uint8_t *)v.mem + PORTAL_RING_HDR_SIZE + x * RV_SLOT, 0x5A, RV_SLOT);
	/* Producer 0 claims behind it and waits in publish_in_order. */
	bg = (struct bg_put){ p0, 0, 1, 1 };
	assert_int_equal(pthread_create(&th, NULL, bg_put_fn, &bg), 0);
	while (atomic_load(&v.hdr->prod_head) != x + 4)
		sched_yield();
	assert_int_equal(portal_ring_recover_producer(c, 1), 3);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(bg.rc, 0);
	portal_ring_stats(c, &st);
	assert_int_equal(st.recovered, 3);
	assert_int_equal(atomic_load(&v.claims[1].state), PORTAL_CLAIM_FREE);
	/* Everything published arrives once, in order; the claim is poison. */
	who = get_who(c, &seq);
	assert_int_equal(who, 1);
	assert_int_equal(seq, 0);
	who = get_who(c, &seq);
	assert_int_equal(who, 0);
	assert_int_equal(seq, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(get_who(c, &seq), UINT32_MAX);
	who = get_who(c, &seq);
	assert_int_equal(who, 0);
	assert_int_equal(seq, 1);
	assert_int_equal(portal_ring_dequeue(c, &st), -EAGAIN);
	/* Recovering again: nothing left. A new producer takes the record. */
	assert_int_equal(portal_ring_recover_producer(c, 1), 0);
	{
		portal_ring_t *p1 = rv_attach(&v, PORTAL_ROLE_PRODUCER, 1);

		rv_put(p1, 1, 1);
		assert_int_equal(get_who(c, &seq), 1);
		assert_int_equal(seq, 1);
		portal_ring_detach(p1);
	}
	portal_ring_detach(p0);
	portal_ring_detach(c);
	rv_close(&v);
}

/* The dead producer named a claim but died before its CAS, or its CAS
 * failed: it holds nothing, whether the winner is in flight or done. */
static void t_recover_producer_no_claim(void **state)
{
	portal_ring_t *p0, *c;
	uint64_t x;
	uint32_t seq;
	struct rv v;

	(void)state;
	rv_open(&v, PORTAL_RING_MPSC, RV_CAP, 3, 0, NULL);
	p0 = rv_attach(&v, PORTAL_ROLE_PRODUCER, 0);
	c = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	rv_put(p0, 0, 0);

	/* Died before its CAS: the head has not moved. */
	atomic_store(&v.claims[1].state, PORTAL_CLAIM_HELD);
	x = die_mid_claim(&v.claims[1], &v.hdr->prod_head, 2, false);
	assert_int_equal(portal_ring_recover_producer(c, 1), 0);
	assert_int_equal(atomic_load(&v.claims[1].state), PORTAL_CLAIM_FREE);

	/* Its CAS at x failed: producer 2 won x and has not published yet
	 * (both records show x). Recovery cannot tell yet: -EAGAIN, nothing
	 * published, the record still held. */
	atomic_store(&v.claims[1].state, PORTAL_CLAIM_HELD);
	atomic_store(&v.claims[2].state, PORTAL_CLAIM_HELD);
	die_mid_claim(&v.claims[1], &v.hdr->prod_head, 2, false);
	die_mid_claim(&v.claims[2], &v.hdr->prod_head, 1, true);
	assert_int_equal(portal_ring_recover_producer(c, 1), -EAGAIN);
	assert_int_equal(atomic_load(&v.hdr->prod_tail), x);
	assert_int_equal(atomic_load(&v.claims[1].state), PORTAL_CLAIM_HELD);
	/* The winner publishes: now the dead one clearly held nothing. */
	tu_stamp((uint8_t *)v.mem + PORTAL_RING_HDR_SIZE + x * RV_SLOT, RV_SLOT, tu_tag(2, 0));
	atomic_store(&v.hdr->prod_tail, x + 1);
	atomic_store(&v.claims[2].state, PORTAL_CLAIM_FREE);
	assert_int_equal(portal_ring_recover_producer(c, 1), 0);
	assert_int_equal(get_who(c, &seq), 0);
	assert_int_equal(get_who(c, &seq), 2);
	assert_int_equal(portal_ring_dequeue(c, &seq), -EAGAIN);
	portal_ring_detach(p0);
	portal_ring_detach(c);
	rv_close(&v);
}

/* Two producers die with adjacent claims, recovered in either order: the
 * later one's poison is marked done at once and published (its record
 * retired meanwhile) when the earlier one is recovered. */
static void t_recover_producer_chain(void **state)
{
	portal_ring_t *c, *p0;
	uint32_t seq;
	struct rv v;

	(void)state;
	rv_open(&v, PORTAL_RING_MPSC, RV_CAP, 3, 0, NULL);
	p0 = rv_attach(&v, PORTAL_ROLE_PRODUCER, 0);
	c = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	atomic_store(&v.claims[1].state, PORTAL_CLAIM_HELD);
	atomic_store(&v.claims[2].state, PORTAL_CLAIM_HELD);
	die_mid_claim(&v.claims[1], &v.hdr->prod_head, 2, true);
	die_mid_claim(&v.claims[2], &v.hdr->prod_head, 3, true);
	assert_int_equal(portal_ring_recover_producer(c, 2), 3);
	assert_int_equal(atomic_load(&v.hdr->prod_tail), 0);
	assert_int_equal(atomic_load(&v.claims[2].state), PORTAL_CLAIM_RETIRED);
	assert_int_equal(portal_ring_recover_producer(c, 2), 0); /* still waiting */
	assert_int_equal(atomic_load(&v.claims[2].state), PORTAL_CLAIM_RETIRED);
	assert_int_equal(portal_ring_recover_producer(c, 1), 2);
	assert_int_equal(atomic_load(&v.hdr->prod_tail), 5);
	assert_int_equal(atomic_load(&v.claims[1].state), PORTAL_CLAIM_FREE);
	/* Published now: the next recovery (or an attach) frees the record. */
	assert_int_equal(portal_ring_recover_producer(c, 2), 0);
	assert_int_equal(atomic_load(&v.claims[2].state), PORTAL_CLAIM_FREE);
	rv_put(p0, 0, 7);
	for (int i = 0; i < 5; i++)
		assert_int_equal(get_who(c, &seq), UINT32_MAX);
	assert_int_equal(get_who(c, &seq), 0);
	assert_int_equal(seq, 7);
	/* A recovery already running on a record: -EBUSY. */
	atomic_store(&v.claims[1].state, PORTAL_CLAIM_RECOVERING);
	assert_int_equal(portal_ring_recover_producer(c, 1), -EBUSY);
	atomic_store(&v.claims[1].state, PORTAL_CLAIM_FREE);
	portal_ring_detach(p0);
	portal_ring_detach(c);
	rv_close(&v);
}

/* An MPMC consumer dies after its CAS: the survivor gets its elements,
 * once, and a live consumer behind it goes on. */
static void t_recover_consumer(void **state)
{
	portal_ring_t *p, *c0;
	uint8_t out[RV_CAP * RV_SLOT];
	uint8_t one[RV_SLOT];
	bool seen[8] = { false };
	uint64_t x, tag = 0;
	int n;
	struct rv v;

	(void)state;
	rv_open(&v, PORTAL_RING_MPMC, RV_CAP, 1, 2, NULL);
	p = rv_attach(&v, PORTAL_ROLE_PRODUCER, 0);
	c0 = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	for (uint32_t i = 0; i < 8; i++)
		rv_put(p, 0, i);
	/* Consumer 0 takes one; consumer 1 claims 3 and dies. */
	assert_int_equal(portal_ring_dequeue(c0, one), 0);
	assert_true(tu_check(one, RV_SLOT, &tag));
	seen[(uint32_t)tag] = true;
	atomic_store(&v.claims[2].state, PORTAL_CLAIM_HELD); /* consumer record 1 */
	x = die_mid_claim(&v.claims[2], &v.hdr->cons_head, 3, true);
	assert_int_equal(x, 1);
	/* Too small a buffer: nothing changes. */
	assert_int_equal(portal_ring_recover_consumer(c0, 1, out, 2), -EMSGSIZE);
	assert_int_equal(atomic_load(&v.hdr->cons_tail), 1);
	/* Consumer 0 takes the rest of what it can: claimed behind the dead
	 * one, it cannot publish yet - do it in the background. */
	n = portal_ring_recover_consumer(c0, 1, out, RV_CAP);
	assert_int_equal(n, 3);
	for (int i = 0; i < n; i++) {
		assert_true(tu_check(out + i * RV_SLOT, RV_SLOT, &tag));
		assert_false(seen[(uint32_t)tag]);
		seen[(uint32_t)tag] = true;
	}
	while ((n = portal_ring_dequeue_burst(c0, out, RV_CAP)) > 0)
		for (int i = 0; i < n; i++) {
			assert_true(tu_check(out + i * RV_SLOT, RV_SLOT, &tag));
			assert_false(seen[(uint32_t)tag]);
			seen[(uint32_t)tag] = true;
		}
	assert_int_equal(n, 0);
	for (int i = 0; i < 8; i++)
		assert_true(seen[i]);
	assert_int_equal(portal_ring_recover_consumer(c0, 1, out, RV_CAP), 0);
	assert_int_equal(atomic_load(&v.hdr->cons_tail), 8);
	portal_ring_detach(p);
	portal_ring_detach(c0);
	rv_close(&v);
}

/* ------------------------------------------------------------------ */
/* Done marks and helping (recoverable rings)                           */
/* ------------------------------------------------------------------ */

/* Far above the bound (about 128 spins and 4 yields), far below a hang. */
#define HELP_BOUND_S 0.1

/* Time one call: it must come back within HELP_BOUND_S. */
#define TIMED(call)                                                          \
	({                                                                   \
		double t0_ = now_s();                                        \
		int rc_ = (call);                                            \
		double dt_ = now_s() - t0_;                                  \
		if (dt_ > HELP_BOUND_S)                                      \
			fail_msg("%s took %.3f s", #call, dt_);              \
		rc_;                                                         \
	})

/* Mark the claim a dead handle's record names as done, as its holder
 * would have after its copy. */
static void mark_done(struct portal_ring_claim *rec)
{
	atomic_store(&rec->done, atomic_load(&rec->head) + atomic_load(&rec->count));
}

/* A producer dies inside its claim (not done): a live producer behind it
 * is not held: its enqueue returns at once, its next one -EAGAIN within the
 * bound; another dead producer's claim behind that one is done. After
 * recovery every element arrives, in order, poison where the dead claim
 * was. */
static void t_help_dead_producer(void **state)
{
	uint32_t mode = *(const uint32_t *)*state;
	portal_ring_t *p0, *c;
	uint8_t b[RV_SLOT];
	uint32_t seq;
	uint64_t x;
	struct rv v;

	rv_open(&v, mode, RV_CAP, 3, mode == PORTAL_RING_MPMC ? 1 : 0, NULL);
	p0 = rv_attach(&v, PORTAL_ROLE_PRODUCER, 0);
	c = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	rv_put(p0, 0, 0);
	atomic_store(&v.claims[1].state, PORTAL_CLAIM_HELD);
	x = die_mid_claim(&v.claims[1], &v.hdr->prod_head, 2, true);
	assert_int_equal(x, 1);
	/* p0 claims [3, 4): done, committed, not yet published. */
	tu_stamp(b, sizeof(b), tu_tag(0, 1));
	assert_int_equal(TIMED(portal_ring_enqueue_burst(p0, b, 1)), 1);
	assert_int_equal(atomic_load(&v.hdr->prod_tail), x);
	/* Record 2 claims [4, 6), writes it, marks it done and dies. */
	atomic_store(&v.claims[2].state, PORTAL_CLAIM_HELD);
	assert_int_equal(die_mid_claim(&v.claims[2], &v.hdr->prod_head, 2, true), 4);
	for (uint32_t i = 0; i < 2; i++)
		tu_stamp((uint8_t *)v.mem + PORTAL_RING_HDR_SIZE + (4 + i) * RV_SLOT, RV_SLOT,
			 tu_tag(2, i));
	mark_done(&v.claims[2]);
	/* p0 may not rename its record yet: -EAGAIN, within the bound, again. */
	tu_stamp(b, sizeof(b), tu_tag(0, 2));
	for (int i = 0; i < 3; i++)
		assert_int_equal(TIMED(portal_ring_enqueue_burst(p0, b, 1)), -EAGAIN);
	assert_int_equal(TIMED(portal_ring_enqueue(p0, b)), -EAGAIN);
	/* The consumer sees only what is published. */
	assert_int_equal(get_who(c, &seq), 0);
	assert_int_equal(TIMED(portal_ring_dequeue(c, b)), -EAGAIN);
	assert_int_equal(portal_ring_count(c), 0);
	/* Record 2 is done: nothing to recover, its elements stay. */
	assert_int_equal(TIMED(portal_ring_recover_producer(c, 2)), 0);
	assert_int_equal(atomic_load(&v.claims[2].state), PORTAL_CLAIM_RETIRED);
	/* Record 1: poisoned, marked done, and the tail goes past everything. */
	assert_int_equal(TIMED(portal_ring_recover_producer(c, 1)), 2);
	assert_int_equal(atomic_load(&v.hdr->prod_tail), 6);
	assert_int_equal(atomic_load(&v.claims[1].state), PORTAL_CLAIM_FREE);
	rv_put(p0, 0, 2);
	assert_int_equal(get_who(c, &seq), UINT32_MAX);
	assert_int_equal(get_who(c, &seq), UINT32_MAX);
	assert_int_equal(get_who(c, &seq), 0);
	assert_int_equal(seq, 1);
	for (uint32_t i = 0; i < 2; i++) {
		assert_int_equal(get_who(c, &seq), 2);
		assert_int_equal(seq, i);
	}
	assert_int_equal(get_who(c, &seq), 0);
	assert_int_equal(seq, 2);
	assert_int_equal(portal_ring_dequeue(c, b), -EAGAIN);
	/* The retired record comes back to an attach now. */
	{
		portal_ring_t *p2 = rv_attach(&v, PORTAL_ROLE_PRODUCER, 2);

		rv_put(p2, 2, 2);
		assert_int_equal(get_who(c, &seq), 2);
		assert_int_equal(seq, 2);
		portal_ring_detach(p2);
	}
	assert_int_equal(atomic_load(&v.claims[2].state), PORTAL_CLAIM_FREE);
	portal_ring_detach(p0);
	portal_ring_detach(c);
	rv_close(&v);
}

/* An MPMC consumer dies inside its claim: a live consumer behind it takes
 * the next element at once, then gets -EAGAIN within the bound until the
 * claim is recovered; every element is returned once. */
static void t_help_dead_consumer(void **state)
{
	portal_ring_t *p, *c0;
	uint8_t out[RV_CAP * RV_SLOT];
	uint8_t one[RV_SLOT];
	uint32_t got[8], ngot = 0;
	uint64_t tag = 0;
	int n;
	struct rv v;

	(void)state;
	rv_open(&v, PORTAL_RING_MPMC, RV_CAP, 1, 2, NULL);
	p = rv_attach(&v, PORTAL_ROLE_PRODUCER, 0);
	c0 = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	for (uint32_t i = 0; i < 6; i++)
		rv_put(p, 0, i);
	assert_int_equal(portal_ring_dequeue(c0, one), 0);
	assert_true(tu_check(one, RV_SLOT, &tag));
	got[ngot++] = (uint32_t)tag;
	/* Consumer record 1 claims [1, 3) and dies before its copy is done. */
	atomic_store(&v.claims[2].state, PORTAL_CLAIM_HELD);
	assert_int_equal(die_mid_claim(&v.claims[2], &v.hdr->cons_head, 2, true), 1);
	assert_int_equal(TIMED(portal_ring_dequeue_burst(c0, one, 1)), 1);
	assert_true(tu_check(one, RV_SLOT, &tag));
	assert_int_equal((uint32_t)tag, 3);
	got[ngot++] = (uint32_t)tag;
	assert_int_equal(atomic_load(&v.hdr->cons_tail), 1);
	for (int i = 0; i < 3; i++)
		assert_int_equal(TIMED(portal_ring_dequeue_burst(c0, out, RV_CAP)), -EAGAIN);
	/* The producer is not held: it has room and its side is clear. */
	rv_put(p, 0, 6);
	n = TIMED(portal_ring_recover_consumer(c0, 1, out, RV_CAP));
	assert_int_equal(n, 2);
	for (int i = 0; i < n; i++) {
		assert_true(tu_check(out + i * RV_SLOT, RV_SLOT, &tag));
		assert_int_equal((uint32_t)tag, 1 + i);
	}
	assert_int_equal(atomic_load(&v.hdr->cons_tail), 4);
	assert_int_equal(atomic_load(&v.claims[2].state), PORTAL_CLAIM_FREE);
	while ((n = portal_ring_dequeue_burst(c0, out, RV_CAP)) > 0)
		for (int i = 0; i < n; i++) {
			assert_true(tu_check(out + i * RV_SLOT, RV_SLOT, &tag));
			got[ngot++] = (uint32_t)tag;
		}
	assert_int_equal(n, 0);
	assert_int_equal(ngot, 5);
	assert_int_equal(got[0], 0);
	for (uint32_t i = 1; i < 5; i++)
		assert_int_equal(got[i], 2 + i); /* 3 (above), then 4, 5, 6 */
	assert_int_equal(atomic_load(&v.hdr->cons_tail), 7);
	portal_ring_detach(p);
	portal_ring_detach(c0);
	rv_close(&v);
}

/*
 * Helping across handles, in one thread through the test hook: handle i,
 * between its copy and its done mark, runs the handles in inner[i] (each
 * claims behind it, finishes and returns at once: the tail stays behind
 * the open claim). When the first finishes last, its help publishes all.
 */
#define HK_N 4

struct hook_case {
	const char *name;
	uint32_t role;
	uint8_t inner[HK_N]; /* bit j: handle j runs inside handle i */
	uint8_t outer;       /* handles called from the test, in order */
};

static struct {
	struct rv *v;
	portal_ring_t *h[HK_N];
	const struct hook_case *hc;
	bool fired[HK_N];
	uint32_t order[HK_N]; /* consumers: who got which element */
	unsigned calls;
} hk;

static void hk_run(unsigned i);

static void hk_hook(portal_ring_t *r, uint64_t head, unsigned n)
{
	_Atomic uint64_t *tail = hk.hc->role == PORTAL_ROLE_PRODUCER ? &hk.v->hdr->prod_tail
								      : &hk.v->hdr->cons_tail;

	(void)n;
	for (unsigned i = 0; i < HK_N; i++) {
		if (hk.h[i] != r || hk.fired[i])
			continue;
		hk.fired[i] = true;
		for (unsigned j = 0; j < HK_N; j++)
			if (hk.hc->inner[i] & (1u << j)) {
				hk_run(j);
				/* Our claim is open: nothing past it is published. */
				assert_true(atomic_load(tail) <= head);
			}
	}
}

/* Handle I moves one element: producer i puts (i, 0); consumer i takes. */
static void hk_run(unsigned i)
{
	uint8_t b[RV_SLOT];
	uint64_t tag = 0;

	if (hk.hc->role == PORTAL_ROLE_PRODUCER) {
		tu_stamp(b, sizeof(b), tu_tag(i, 0));
		assert_int_equal(TIMED(portal_ring_enqueue_burst(hk.h[i], b, 1)), 1);
		return;
	}
	assert_int_equal(TIMED(portal_ring_dequeue_burst(hk.h[i], b, 1)), 1);
	assert_true(tu_check(b, RV_SLOT, &tag));
	hk.order[(uint32_t)tag] = i;
}

static const struct hook_case hook_cases[] = {
	/* 0 claims first and finishes last; 1, 2, 3 finish inside it. */
	{ "first_last/producers", PORTAL_ROLE_PRODUCER, { 0xE, 0, 0, 0 }, 0x1 },
	{ "first_last/consumers", PORTAL_ROLE_CONSUMER, { 0xE, 0, 0, 0 }, 0x1 },
	/* Nested: 0 open, 1 open inside it, 2 and 3 done inside 1. */
	{ "nested/producers", PORTAL_ROLE_PRODUCER, { 0x2, 0xC, 0, 0 }, 0x1 },
	{ "nested/consumers", PORTAL_ROLE_CONSUMER, { 0x2, 0xC, 0, 0 }, 0x1 },
	/* 0 published; 1 open with 2 and 3 done behind it. */
	{ "middle_last/producers", PORTAL_ROLE_PRODUCER, { 0, 0xC, 0, 0 }, 0x3 },
	{ "middle_last/consumers", PORTAL_ROLE_CONSUMER, { 0, 0xC, 0, 0 }, 0x3 },
};

static void t_help_chain(void **state)
{
	const struct hook_case *hc = *state;
	bool prod = hc->role == PORTAL_ROLE_PRODUCER;
	portal_ring_t *other;
	uint32_t seq;
	struct rv v;

	rv_open(&v, PORTAL_RING_MPMC, RV_CAP, prod ? HK_N : 1, prod ? 1 : HK_N, NULL);
	memset(&hk, 0, sizeof(hk));
	hk.v = &v;
	hk.hc = hc;
	for (unsigned i = 0; i < HK_N; i++)
		hk.h[i] = rv_attach(&v, (int)hc->role, (int)i);
	other = rv_attach(&v, prod ? PORTAL_ROLE_CONSUMER : PORTAL_ROLE_PRODUCER, 0);
	if (!prod)
		for (uint32_t i = 0; i < HK_N; i++)
			rv_put(other, 9, i);
	ring_test_hook_before_done = hk_hook;
	for (unsigned i = 0; i < HK_N; i++)
		if (hc->outer & (1u << i))
			hk_run(i);
	ring_test_hook_before_done = NULL;
	/* The last finisher published every claim, its own and the others'. */
	assert_int_equal(atomic_load(prod ? &v.hdr->prod_tail : &v.hdr->cons_tail), HK_N);
	for (unsigned i = 0; i < HK_N; i++)
		assert_true(hk.fired[i]);
	if (prod) {
		/* Claim order: the outer handle first, then as they ran. */
		uint32_t want[HK_N], k = 0;

		for (unsigned i = 0; i < HK_N; i++)
			if (hc->outer & (1u << i))
				want[k++] = i; /* outer ones claim before their inner */
		(void)want;
		for (unsigned i = 0; i < HK_N; i++) {
			uint32_t who = get_who(other, &seq);

			assert_true(who < HK_N);
			assert_int_equal(seq, 0);
			hk.order[i] = who;
		}
	}
	/* Every handle moved its element, each once, in claim order; the
	 * claim order here is the handle order. */
	for (unsigned i = 0; i < HK_N; i++)
		assert_int_equal(hk.order[i], i);
	/* Nothing is pending: every handle goes on at once. */
	for (unsigned i = 0; i < HK_N; i++) {
		uint8_t b[RV_SLOT];

		if (prod) {
			tu_stamp(b, sizeof(b), tu_tag(i, 1));
			assert_int_equal(TIMED(portal_ring_enqueue_burst(hk.h[i], b, 1)), 1);
		} else {
			rv_put(other, 9, HK_N + i);
			assert_int_equal(TIMED(portal_ring_dequeue_burst(hk.h[i], b, 1)), 1);
		}
	}
	assert_int_equal(atomic_load(prod ? &v.hdr->prod_tail : &v.hdr->cons_tail), 2 * HK_N);
	for (unsigned i = 0; i < HK_N; i++)
		portal_ring_detach(hk.h[i]);
	for (unsigned i = 0; i < HK_N; i++)
		assert_int_equal(atomic_load(&v.claims[(prod ? 0 : 1) + i].state),
				 PORTAL_CLAIM_FREE);
	portal_ring_detach(other);
	rv_close(&v);
}

/*
 * Ring images with a head ahead of its tail and no record naming the gap
 * (what the fuzzer found): no call waits longer than the bound. The first
 * call after the gap claims, copies and returns its count (its claim stays
 * unpublished behind the gap); later calls return -EAGAIN; detach retires
 * the record instead of waiting. A record that shows a done claim beyond
 * its side's head is corrupt: PORTAL_EPROTO and quarantine.
 */
static void t_help_gap(void **state)
{
	uint32_t role = *(const uint32_t *)*state;
	bool prod = role == PORTAL_ROLE_PRODUCER;
	portal_ring_t *h, *other, *x;
	uint8_t b[RV_CAP * RV_SLOT];
	struct portal_ring_claim *mine;
	_Atomic uint64_t *head, *tail;
	struct rv v;

	rv_open(&v, PORTAL_RING_MPMC, RV_CAP, 2, 2, NULL);
	head = prod ? &v.hdr->prod_head : &v.hdr->cons_head;
	tail = prod ? &v.hdr->prod_tail : &v.hdr->cons_tail;
	mine = &v.claims[prod ? 0 : 2];
	h = rv_attach(&v, (int)role, 0);
	other = rv_attach(&v, prod ? PORTAL_ROLE_CONSUMER : PORTAL_ROLE_PRODUCER, 0);
	if (!prod)
		for (uint32_t i = 0; i < 6; i++)
			rv_put(other, 0, i);
	atomic_store(head, 3); /* [0, 3) claimed by nobody we know of */
	if (prod) {
		tu_stamp(b, RV_SLOT, tu_tag(0, 0));
		assert_int_equal(TIMED(portal_ring_enqueue_burst(h, b, 1)), 1);
	} else {
		uint64_t tag = 0;

		assert_int_equal(TIMED(portal_ring_dequeue_burst(h, b, 1)), 1);
		assert_true(tu_check(b, RV_SLOT, &tag));
		assert_int_equal(tag, tu_tag(0, 3));
	}
	assert_int_equal(atomic_load(tail), 0);
	assert_int_equal(atomic_load(head), 4);
	for (int i = 0; i < 3; i++) {
		int rc = prod ? portal_ring_enqueue_burst(h, b, 1) : portal_ring_dequeue_burst(h, b, 1);

		assert_int_equal(rc, -EAGAIN);
		assert_int_equal(TIMED(prod ? portal_ring_enqueue(h, b) : portal_ring_dequeue(h, b)),
				 -EAGAIN);
	}
	/* The other side sees nothing move on this side. */
	if (prod) {
		assert_int_equal(TIMED(portal_ring_dequeue(other, b)), -EAGAIN);
	} else {
		uint64_t pos = 1;

		assert_int_equal(portal_ring_peer_position(other, &pos), 0);
		assert_int_equal(pos, 0);
	}
	/* Recovery of a free record, or of the gap: nothing to do, no wait. */
	assert_int_equal(TIMED(prod ? portal_ring_recover_producer(other, 1)
				    : portal_ring_recover_consumer(other, 1, b, RV_CAP)), 0);
	/* Detach does not wait: the record is retired, not free, and an
	 * attach cannot take it back while the gap stays. */
	portal_ring_detach(h);
	assert_int_equal(atomic_load(&mine->state), PORTAL_CLAIM_RETIRED);
	assert_int_equal(TIMED(portal_ring_attach_claim(v.mem, v.len, (int)role, 0, 5, &x)), -EBUSY);
	/* The gap's owner (say) publishes it: the retired claim follows. */
	atomic_store(tail, 3);
	assert_int_equal(TIMED(portal_ring_attach_claim(v.mem, v.len, (int)role, 0, 5, &x)), 0);
	assert_int_equal(atomic_load(tail), 4);
	h = x;
	/* A corrupt record: a done claim at the tail reaching past the head. */
	atomic_store(&v.claims[prod ? 1 : 3].state, PORTAL_CLAIM_HELD);
	atomic_store(&v.claims[prod ? 1 : 3].count, 3);
	atomic_store(&v.claims[prod ? 1 : 3].head, 4);
	atomic_store(&v.claims[prod ? 1 : 3].done, 7);
	atomic_store(head, 5); /* a gap again, [4, 5) */
	assert_int_equal(TIMED(prod ? portal_ring_enqueue_burst(h, b, 1)
				    : portal_ring_dequeue_burst(h, b, 1)), 1);
	assert_int_equal(TIMED(prod ? portal_ring_enqueue_burst(h, b, 1)
				    : portal_ring_dequeue_burst(h, b, 1)), PORTAL_EPROTO);
	assert_true(portal_ring_quarantined(h));
	assert_int_equal(atomic_load(tail), 4);
	portal_ring_detach(h);
	portal_ring_detach(other);
	rv_close(&v);
}

static const uint32_t roles[] = { PORTAL_ROLE_PRODUCER, PORTAL_ROLE_CONSUMER };

/* A single producer or consumer restarts from the shared indices; the
 * positions say how far each side got. */
static void t_restart_spsc(void **state)
{
	portal_ring_t *p, *c;
	uint64_t pos;
	uint32_t seq;
	struct rv v;

	(void)state;
	rv_open(&v, PORTAL_RING_SPSC, RV_CAP, 0, 0, NULL);
	p = rv_attach(&v, PORTAL_ROLE_PRODUCER, 0);
	c = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	for (uint32_t i = 0; i < 5; i++)
		rv_put(p, 0, i);
	assert_int_equal(portal_ring_position(p), 5);
	free(p); /* killed: no detach */
	p = rv_attach(&v, PORTAL_ROLE_PRODUCER, 0);
	assert_int_equal(portal_ring_position(p), 5);
	rv_put(p, 0, 5);
	assert_int_equal(get_who(c, &seq), 0);
	assert_int_equal(seq, 0);
	assert_int_equal(get_who(c, &seq), 0);
	free(c);
	c = rv_attach(&v, PORTAL_ROLE_CONSUMER, 0);
	assert_int_equal(portal_ring_position(c), 2);
	assert_int_equal(portal_ring_peer_position(p, &pos), 0);
	assert_int_equal(pos, 2);
	assert_int_equal(portal_ring_peer_position(c, &pos), 0);
	assert_int_equal(pos, 6);
	for (uint32_t i = 2; i < 6; i++) {
		assert_int_equal(get_who(c, &seq), 0);
		assert_int_equal(seq, i);
	}
	portal_ring_detach(p);
	portal_ring_detach(c);
	rv_close(&v);
}

/*
 * Real processes: two producer children enqueue stamped elements into a
 * small MPSC ring as fast as they can; the parent consumes, and kills one
 * child with SIGKILL: it stops the child (SIGSTOP) until it finds it inside
 * a claim (its record names a claim the head has passed and the tail has
 * not), then kills it - a real death mid-claim - and recovers its record,
 * found by its pid. Checked: every element arrives at most once and in each
 * producer's order, the survivor's stream is complete, and the poison seen
 * equals what recovery reported.
 */
#define PK_ROUNDS 6
#define PK_ITEMS  20000u

static int pk_child(struct rv *v, uint32_t who, uint32_t items)
{
	portal_ring_t *r;
	uint8_t b[RV_SLOT];

	if (portal_ring_attach(v->mem, v->len, PORTAL_ROLE_PRODUCER, &r))
		return 2;
	for (uint32_t i = 0; i < items; i++) {
		int rc;

		tu_stamp(b, sizeof(b), tu_tag(who, i));
		while ((rc = portal_ring_enqueue(r, b)) == -EAGAIN)
			;
		if (rc)
			return 3;
	}
	portal_ring_detach(r);
	return 0;
}

/* Stop KID; kill it if it is inside a claim (or FORCE). True if killed. */
static bool pk_try_kill(struct rv *v, portal_ring_t *c, pid_t kid, bool force)
{
	unsigned slot;
	int status;
	bool mid = false;

	assert_int_equal(kill(kid, SIGSTOP), 0);
	assert_int_equal(waitpid(kid, &status, WUNTRACED), kid);
	if (WIFEXITED(status))
		return true;
	if (portal_ring_find_claims(c, PORTAL_ROLE_PRODUCER, (uint64_t)kid, &slot, 1) == 1) {
		struct portal_ring_claim *rec = &v->claims[slot];
		uint64_t h = atomic_load(&rec->head), n = atomic_load(&rec->count);

		mid = n && (int64_t)(atomic_load(&v->hdr->prod_head) - h) > 0 &&
		      (int64_t)(atomic_load(&v->hdr->prod_tail) - h) <= 0;
	}
	if (!mid && !force) {
		assert_int_equal(kill(kid, SIGCONT), 0);
		return false;
	}
	assert_int_equal(kill(kid, SIGKILL), 0);
	assert_int_equal(waitpid(kid, &status, 0), kid);
	return true;
}

static void t_recover_processes(void **state)
{
	unsigned hits = 0;

	(void)state;
	srand((unsigned)time(NULL));
	for (int round = 0; round < PK_ROUNDS; round++) {
		struct rv v;
		portal_ring_t *c;
		pid_t kid[2];
		uint32_t next[2] = { 0, 0 };
		uint64_t poison = 0, recovered = 0, got = 0;
		unsigned found[4], tries = 0;
		int status, kill_at = 20 + rand() % 500;
		bool killed = false, dead_done = false;

		rv_open(&v, PORTAL_RING_MPSC, 1024, 2, 0, NULL);
		assert_int_equal(portal_ring_attach(v.mem, v.len, PORTAL_ROLE_CONSUMER, &c), 0);
		for (int k = 0; k < 2; k++) {
			kid[k] = fork();
			assert_true(kid[k] >= 0);
			if (kid[k] == 0)
				_exit(pk_child(&v, (uint32_t)k, k ? UINT32_MAX : PK_ITEMS));
		}
		for (;;) {
			static uint8_t b[64 * RV_SLOT];
			int n = portal_ring_dequeue_burst(c, b, 64);

			/* Probe while the ring has room, so the producers are
			 * busy claiming rather than spinning on a full ring. */
			if (!killed && got >= (uint64_t)kill_at) {
				tries++;
				killed = pk_try_kill(&v, c, kid[1], tries > 4000);
			}
			if (n == 0) {
				if (killed && !dead_done) {
					int k = portal_ring_find_claims(c, PORTAL_ROLE_PRODUCER,
									(uint64_t)kid[1], found, 4);

					assert_true(k == 0 || k == 1);
					k = k ? portal_ring_recover_producer(c, found[0]) : 0;
					assert_true(k >= 0 || k == -EAGAIN);
					recovered += k > 0 ? (uint64_t)k : 0;
					hits += k > 0;
					dead_done = k >= 0;
					continue; /* drain what it published */
				}
				if (next[0] == PK_ITEMS && dead_done)
					break;
				sched_yield();
				continue;
			}
			assert_true(n > 0);
			got += (uint64_t)n;
			for (int i = 0; i < n; i++) {
				uint8_t *e = b + i * RV_SLOT;
				uint64_t tag = 0;
				uint32_t who, seq;

				if (portal_ring_is_poison(c, e)) {
					poison++;
					continue;
				}
				assert_true(tu_check(e, RV_SLOT, &tag));
				who = (uint32_t)(tag >> 32);
				seq = (uint32_t)tag;
				/* In order, at most once; the dead one may lose
				 * only its unpublished claim. */
				assert_true(who < 2);
				if (who == 0)
					assert_int_equal(seq, next[0]);
				else
					assert_true(seq >= next[1]);
				next[who] = seq + 1;
			}
		}
		assert_int_equal(poison, recovered);
		assert_int_equal(waitpid(kid[0], &status, 0), kid[0]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		portal_ring_detach(c);
		rv_close(&v);
	}
	printf("# recover/processes: %u of %d kills landed inside a claim\n", hits, PK_ROUNDS);
}

int main(void)
{
	static const struct {
		const char *name;
		CMUnitTestFunction fn;
	} per_cfg[] = {
		{ "fifo", t_fifo },
		{ "burst", t_burst },
		{ "wrap", t_wrap },
		{ "u64_wrap", t_u64_wrap },
		{ "roles", t_roles },
		{ "header_copied", t_header_copied },
		{ "hostile_prod_tail", t_hostile_prod_tail },
		{ "hostile_prod_tail_count", t_hostile_prod_tail_count },
		{ "hostile_cons_tail", t_hostile_cons_tail },
		{ "honest_extremes", t_honest_extremes },
		{ "attach_bad_tails", t_attach_bad_tails },
	};
	struct tu_suite s = { 0 };
	size_t n = 0;

	for (size_t m = 0; m < TU_ARRAY_SIZE(modes); m++)
		for (size_t sl = 0; sl < TU_ARRAY_SIZE(slots); sl++)
			for (size_t c = 0; c < TU_ARRAY_SIZE(caps); c++)
				cfgs[n++] = (struct cfg){ modes[m], slots[sl], caps[c] };
	tu_suite_add(&s, t_params, NULL, "params");
	tu_suite_add(&s, t_init_attach_errors, NULL, "init_attach_errors");
	tu_suite_add(&s, t_attach_corrupt_fields, NULL, "attach_corrupt_header");
	for (size_t t = 0; t < TU_ARRAY_SIZE(per_cfg); t++)
		for (size_t i = 0; i < n; i++)
			tu_suite_add(&s, per_cfg[t].fn, &cfgs[i], "%s/%s/s%u/c%u", per_cfg[t].name,
				     mode_name(cfgs[i].mode), cfgs[i].slot, cfgs[i].cap);
	/* Own-head scribbles: one configuration per multi-writer mode. */
	for (size_t i = 0; i < n; i++)
		if (cfgs[i].mode != PORTAL_RING_SPSC && cfgs[i].slot == 16 && cfgs[i].cap == 16)
			tu_suite_add(&s, t_hostile_own_head, &cfgs[i], "hostile_own_head/%s/s16/c16",
				     mode_name(cfgs[i].mode));
	for (size_t i = 0; i < n; i++)
		if (cfgs[i].mode == PORTAL_RING_MPMC)
			tu_suite_add(&s, t_hostile_prod_tail_2p63, &cfgs[i],
				     "hostile_prod_tail_2p63/%s/s%u/c%u", mode_name(cfgs[i].mode),
				     cfgs[i].slot, cfgs[i].cap);
	tu_suite_add(&s, t_region_glue, NULL, "region_glue");
	tu_suite_add(&s, t_recover_params, NULL, "recover/params");
	tu_suite_add(&s, t_recover_poison, NULL, "recover/poison");
	tu_suite_add(&s, t_recover_producer, (void *)&modes[1], "recover/producer/MPSC");
	tu_suite_add(&s, t_recover_producer, (void *)&modes[2], "recover/producer/MPMC");
	tu_suite_add(&s, t_recover_producer_no_claim, NULL, "recover/producer_no_claim");
	tu_suite_add(&s, t_recover_producer_chain, NULL, "recover/producer_chain");
	tu_suite_add(&s, t_recover_consumer, NULL, "recover/consumer");
	tu_suite_add(&s, t_restart_spsc, NULL, "recover/restart_spsc");
	tu_suite_add(&s, t_help_dead_producer, (void *)&modes[1], "help/dead_producer/MPSC");
	tu_suite_add(&s, t_help_dead_producer, (void *)&modes[2], "help/dead_producer/MPMC");
	tu_suite_add(&s, t_help_dead_consumer, NULL, "help/dead_consumer");
	for (size_t i = 0; i < TU_ARRAY_SIZE(hook_cases); i++)
		tu_suite_add(&s, t_help_chain, (void *)&hook_cases[i], "help/chain/%s",
			     hook_cases[i].name);
	tu_suite_add(&s, t_help_gap, (void *)&roles[0], "help/gap/producer");
	tu_suite_add(&s, t_help_gap, (void *)&roles[1], "help/gap/consumer");
	tu_suite_add(&s, t_recover_processes, NULL, "recover/processes");
	for (size_t i = 0; i < TU_ARRAY_SIZE(mt_cfgs); i++)
		tu_suite_add(&s, t_mt, &mt_cfgs[i], "mt/%s/s%u/c%u/%uP%uC%s",
			     mode_name(mt_cfgs[i].c.mode), mt_cfgs[i].c.slot, mt_cfgs[i].c.cap,
			     mt_cfgs[i].producers, mt_cfgs[i].consumers,
			     mt_cfgs[i].rec ? "/recoverable" : "");
	return tu_suite_run(&s, "portal.ring");
}
