/* SPDX-License-Identifier: MIT */
/*
 * msgring_test.c - message rings: variable-length records, zero-copy
 * reserve/commit and peek/release, PAD records at the wrap, resume after
 * re-attach, and a hostile peer on either side.
 *
 * Table-driven over capacity {256, 1024, 4096} x max_msg {small, default
 * (capacity / 4), largest allowed (capacity / 2 - 16)}; test names are
 * "behaviour/cCAP/mMAX". The test keeps its own model of where each record
 * lands (header word, payload padded to 8, a PAD record when a record does
 * not fit before the end) and checks the shared indices and record headers
 * against it, so a change of layout fails here first.
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "tests/test_util.h"

#include "portal/region.h"
#include "portal/ring.h"

#define BIT63 (UINT64_C(1) << 63)

struct cfg {
	uint32_t cap, max;
};

static const uint32_t caps[] = { 256, 1024, 4096 };
static struct cfg cfgs[TU_ARRAY_SIZE(caps) * 3];

static uint32_t rec(uint32_t len)
{
	return 8 + ((len + 7) & ~7u);
}

/* ------------------------------------------------------------------ */
/* Environment and model                                               */
/* ------------------------------------------------------------------ */

struct env {
	const struct cfg *c;
	void *mem;
	size_t len;
	struct portal_msgring_hdr *hdr;
	uint8_t *data;
	portal_msgring_t *prod, *cons;
	uint64_t pos;        /* model: producer position after the last commit */
	uint64_t cpos;       /* model: consumer position after the last release */
	uint32_t seq;        /* model: next record sequence number */
	uint32_t put_idx;    /* messages sent */
	uint32_t get_idx;    /* messages received */
	uint32_t pads;       /* PAD records written */
	uint8_t buf[4096];
	uint8_t out[4096];
	/* FIFO of (length, index) of messages sent but not yet received */
	uint32_t q_len[1024], q_idx[1024];
	unsigned q_head, q_tail;
	/* the record end positions, to move cpos on release */
	uint64_t q_end[1024];
	uint32_t q_seq[1024]; /* sequence number expected after the record */
};

static void env_open(struct env *e, const struct cfg *c)
{
	struct portal_msgring_params p = { .capacity = c->cap, .max_msg = c->max };

	memset(e, 0, sizeof(*e));
	e->c = c;
	e->len = portal_msgring_memsize(&p);
	assert_int_equal(e->len, PORTAL_MSGRING_HDR_SIZE + c->cap);
	e->mem = tu_mem_alloc(e->len);
	assert_non_null(e->mem);
	e->hdr = e->mem;
	e->data = (uint8_t *)e->mem + PORTAL_MSGRING_HDR_SIZE;
	assert_int_equal(portal_msgring_init(e->mem, e->len, &p), 0);
	assert_int_equal(portal_msgring_attach(e->mem, e->len, PORTAL_ROLE_PRODUCER, &e->prod), 0);
	assert_int_equal(portal_msgring_attach(e->mem, e->len, PORTAL_ROLE_CONSUMER, &e->cons), 0);
	assert_int_equal(portal_msgring_max_msg(e->prod), c->max);
	assert_int_equal(portal_msgring_max_msg(e->cons), c->max);
	e->seq = 1;
}

static void env_close(struct env *e)
{
	portal_msgring_detach(e->prod);
	portal_msgring_detach(e->cons);
	tu_mem_free_checked(e->mem, e->len);
}

/* Message contents: a stamp (index, length, checksum) when there is room
 * for one, else a pattern derived from the index. */
static void msg_fill(uint8_t *b, uint32_t len, uint32_t idx)
{
	uint64_t tag = tu_tag(len & 0xFFFF, idx);

	if (len >= 8)
		tu_stamp(b, len, tag);
	else
		for (uint32_t i = 0; i < len; i++)
			b[i] = tu_fill_byte(tag, i);
}

static bool msg_ok(const uint8_t *b, uint32_t len, uint32_t idx)
{
	uint64_t tag = tu_tag(len & 0xFFFF, idx), got;

	if (len >= 8)
		return tu_check(b, len, &got) && got == tag;
	for (uint32_t i = 0; i < len; i++)
		if (b[i] != tu_fill_byte(tag, i))
			return false;
	return true;
}

static uint64_t word_at(struct env *e, uint64_t pos)
{
	uint64_t w;

	memcpy(&w, e->data + (pos & (e->c->cap - 1)), 8);
	return w;
}

/* Model of one send of LEN bytes at e->pos: does it need a PAD first? */
static bool model_pads(struct env *e, uint32_t len)
{
	uint32_t off = (uint32_t)(e->pos & (e->c->cap - 1));

	return rec(len) > e->c->cap - off;
}

/* Send LEN bytes through reserve/commit or send (alternating), then check
 * the record's header word and the PAD against the model. */
static void send_msg(struct env *e, uint32_t len)
{
	uint64_t start = e->pos, rpos;
	bool pad = model_pads(e, len);
	void *dst;
	int rc;

	if (e->put_idx & 1) {
		msg_fill(e->buf, len, e->put_idx);
		rc = portal_msgring_send(e->prod, e->buf, len);
		if (rc)
			fail_msg("send(%u) #%u at %llu: %d", len, e->put_idx,
				 (unsigned long long)start, rc);
	} else {
		rc = portal_msgring_reserve(e->prod, len, &dst);
		if (rc)
			fail_msg("reserve(%u) #%u at %llu: %d", len, e->put_idx,
				 (unsigned long long)start, rc);
		rpos = pad ? start + (e->c->cap - (start & (e->c->cap - 1))) : start;
		assert_ptr_equal(dst, e->data + (rpos & (e->c->cap - 1)) + 8);
		msg_fill(dst, len, e->put_idx);
		assert_int_equal(portal_msgring_commit(e->prod, len), 0);
	}
	if (pad) {
		uint32_t to_end = e->c->cap - (uint32_t)(start & (e->c->cap - 1));
		uint64_t w = word_at(e, start);

		assert_int_equal(w, ((uint64_t)e->seq << 32) | PORTAL_MSG_PAD | (to_end - 8));
		e->seq = e->seq + 1 ? e->seq + 1 : 1;
		e->pos += to_end;
		e->pads++;
	}
	assert_int_equal(word_at(e, e->pos), ((uint64_t)e->seq << 32) | len);
	e->seq = e->seq + 1 ? e->seq + 1 : 1;
	e->pos += rec(len);
	/* The word after the record reads 0 until the next record. */
	assert_int_equal(word_at(e, e->pos), 0);
	assert_int_equal(atomic_load(&e->hdr->prod_tail), e->pos);
	assert_int_equal(atomic_load(&e->hdr->prod_seq), e->seq);
	e->q_len[e->q_tail % 1024] = len;
	e->q_idx[e->q_tail % 1024] = e->put_idx;
	e->q_end[e->q_tail % 1024] = e->pos;
	e->q_seq[e->q_tail % 1024] = e->seq;
	e->q_tail++;
	e->put_idx++;
}

/* Receive the next message (peek twice + release, or recv, alternating)
 * and check it against the FIFO. */
static void recv_msg(struct env *e)
{
	uint32_t len, idx;
	const void *p1, *p2;
	size_t l1, l2;
	ssize_t n;

	assert_true(e->q_head != e->q_tail);
	len = e->q_len[e->q_head % 1024];
	idx = e->q_idx[e->q_head % 1024];
	assert_int_equal(portal_msgring_ready(e->cons), 1);
	if (e->get_idx & 1) {
		n = portal_msgring_recv(e->cons, e->out, sizeof(e->out));
		if (n != (ssize_t)len)
			fail_msg("recv #%u: got %zd, want %u", e->get_idx, n, len);
		if (!msg_ok(e->out, len, idx))
			fail_msg("recv #%u (len %u): bad contents", e->get_idx, len);
	} else {
		assert_int_equal(portal_msgring_peek(e->cons, &p1, &l1), 0);
		assert_int_equal(portal_msgring_peek(e->cons, &p2, &l2), 0); /* same again */
		assert_ptr_equal(p1, p2);
		assert_int_equal(l1, len);
		assert_int_equal(l2, len);
		/* Zero copy: the payload is read where the producer wrote it. */
		assert_true((const uint8_t *)p1 >= e->data + 8 &&
			    (const uint8_t *)p1 + l1 <= e->data + e->c->cap);
		if (!msg_ok(p1, len, idx))
			fail_msg("peek #%u (len %u): bad contents", e->get_idx, len);
		assert_int_equal(portal_msgring_release(e->cons), 0);
		assert_int_equal(portal_msgring_release(e->cons), -EINVAL);
	}
	e->cpos = e->q_end[e->q_head % 1024];
	assert_int_equal(atomic_load(&e->hdr->cons_head), e->cpos);
	assert_int_equal(atomic_load(&e->hdr->cons_seq), e->q_seq[e->q_head % 1024]);
	e->q_head++;
	e->get_idx++;
}

/* Move an empty ring to byte offset O (a multiple of 8) with filler
 * messages, each received at once. */
static void goto_offset(struct env *e, uint32_t o)
{
	while ((uint32_t)(e->pos & (e->c->cap - 1)) != o) {
		uint32_t off = (uint32_t)(e->pos & (e->c->cap - 1));
		uint32_t dist = o > off ? o - off : e->c->cap - off;
		uint32_t step = dist - 8 <= e->c->max ? dist : rec(e->c->max);

		if (step != dist && dist - step < 8)
			step -= 8;
		send_msg(e, step - 8);
		recv_msg(e);
	}
}

/* ------------------------------------------------------------------ */
/* Behaviour                                                            */
/* ------------------------------------------------------------------ */

/* Every length 0..max_msg, one and two in flight, across many wraps. */
static void t_lengths(void **state)
{
	const struct cfg *c = *state;
	struct env e;

	env_open(&e, c);
	assert_int_equal(portal_msgring_ready(e.cons), 0);
	do {
		for (uint32_t len = 0; len <= c->max; len++) {
			send_msg(&e, len);
			if (len % 3 == 1) {
				send_msg(&e, c->max - len);
				recv_msg(&e);
			}
			recv_msg(&e);
			assert_int_equal(portal_msgring_ready(e.cons), 0);
		}
	} while (e.pos <= 4ull * c->cap);
	/* Wrapped the ring many times, with PADs when a record did not fit. */
	assert_true(e.pos > 4ull * c->cap);
	assert_true(e.pads > 0);
	{
		struct portal_ring_stats st;

		portal_msgring_stats(e.prod, &st);
		assert_int_equal(st.enqueued, e.put_idx);
		assert_int_equal(st.proto_errors, 0);
		portal_msgring_stats(e.cons, &st);
		assert_int_equal(st.dequeued, e.get_idx);
		assert_int_equal(st.proto_errors, 0);
	}
	env_close(&e);
}

/*
 * At every 8-byte offset: a record that exactly reaches the end (no PAD),
 * the shortest record that does not fit (PAD), and a max_msg record. The
 * consumer peeks each twice (the same message, also across a PAD).
 */
static void t_pad_every_offset(void **state)
{
	const struct cfg *c = *state;
	struct env e;
	uint32_t pads_expected = 0;

	env_open(&e, c);
	for (uint32_t o = 0; o < c->cap; o += 8) {
		uint32_t to_end = c->cap - o;
		uint32_t lens[3] = { to_end - 8, to_end - 7, c->max };

		for (int k = 0; k < 3; k++) {
			if (lens[k] > c->max)
				continue;
			bool pad;

			goto_offset(&e, o);
			pad = model_pads(&e, lens[k]);
			pads_expected += pad;
			send_msg(&e, lens[k]);
			if (pad) {
				const void *p1, *p2;
				size_t l1, l2;

				/* Across the PAD: the record at offset 0, twice. */
				assert_int_equal(portal_msgring_peek(e.cons, &p1, &l1), 0);
				assert_int_equal(portal_msgring_peek(e.cons, &p2, &l2), 0);
				assert_ptr_equal(p1, e.data + 8);
				assert_ptr_equal(p2, p1);
				assert_int_equal(l1, lens[k]);
				assert_int_equal(l2, lens[k]);
				assert_int_equal(atomic_load(&e.hdr->cons_head), e.cpos);
			}
			recv_msg(&e);
			assert_int_equal(e.cpos, e.pos);
		}
	}
	assert_true(pads_expected > 0);
	env_close(&e);
}

/* Zero copy: reserve/commit/peek/release, shorter commit, misuse. */
static void t_zero_copy(void **state)
{
	const struct cfg *c = *state;
	uint32_t big = c->max, small = c->max / 4;
	const void *p;
	size_t len;
	void *dst, *dst2;
	struct env e;

	env_open(&e, c);
	/* Misuse with nothing open. */
	assert_int_equal(portal_msgring_commit(e.prod, 0), -EINVAL);
	assert_int_equal(portal_msgring_release(e.cons), -EINVAL);
	assert_int_equal(portal_msgring_reserve(e.prod, 8, NULL), -EINVAL);
	assert_int_equal(portal_msgring_peek(e.cons, NULL, &len), -EINVAL);
	assert_int_equal(portal_msgring_peek(e.cons, &p, NULL), -EINVAL);
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), -EAGAIN);

	/* Reserve big, commit small: the record is the small one. */
	assert_int_equal(portal_msgring_reserve(e.prod, big, &dst), 0);
	assert_ptr_equal(dst, e.data + 8);
	assert_int_equal(portal_msgring_reserve(e.prod, 8, &dst2), -EINVAL); /* twice */
	assert_int_equal(portal_msgring_send(e.prod, e.buf, 8), -EINVAL);
	/* Nothing is visible before the commit. */
	assert_int_equal(portal_msgring_ready(e.cons), 0);
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), -EAGAIN);
	msg_fill(dst, small, 0);
	assert_int_equal(portal_msgring_commit(e.prod, big + 1), -EINVAL); /* longer */
	assert_int_equal(portal_msgring_commit(e.prod, small), 0);
	assert_int_equal(portal_msgring_commit(e.prod, small), -EINVAL);   /* closed */
	assert_int_equal(atomic_load(&e.hdr->prod_tail), rec(small));
	assert_int_equal(word_at(&e, 0), (UINT64_C(1) << 32) | small);

	assert_int_equal(portal_msgring_ready(e.cons), 1);
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), 0);
	assert_ptr_equal(p, dst); /* read in place */
	assert_int_equal(len, small);
	assert_true(msg_ok(p, small, 0));
	/* Not released yet: the consumer index has not moved. */
	assert_int_equal(atomic_load(&e.hdr->cons_head), 0);
	assert_int_equal(portal_msgring_release(e.cons), 0);
	assert_int_equal(atomic_load(&e.hdr->cons_head), rec(small));
	assert_int_equal(portal_msgring_release(e.cons), -EINVAL);
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), -EAGAIN);

	/* A zero-length message is a message. */
	assert_int_equal(portal_msgring_reserve(e.prod, 0, &dst), 0);
	assert_int_equal(portal_msgring_commit(e.prod, 0), 0);
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), 0);
	assert_int_equal(len, 0);
	assert_int_equal(portal_msgring_recv(e.cons, e.out, 0), 0); /* recv after peek */
	assert_int_equal(portal_msgring_recv(e.cons, e.out, 0), -EAGAIN);
	assert_int_equal(atomic_load(&e.hdr->cons_head), rec(small) + 8);
	env_close(&e);
}

/* -EMSGSIZE both ways; a too-small receive buffer leaves the message. */
static void t_emsgsize(void **state)
{
	const struct cfg *c = *state;
	struct portal_ring_stats st;
	struct env e;
	void *dst;
	ssize_t n;

	env_open(&e, c);
	assert_int_equal(portal_msgring_send(e.prod, e.buf, c->max + 1), -EMSGSIZE);
	assert_int_equal(portal_msgring_reserve(e.prod, c->max + 1, &dst), -EMSGSIZE);
	assert_int_equal(portal_msgring_reserve(e.prod, SIZE_MAX, &dst), -EMSGSIZE);
	assert_int_equal(portal_msgring_reserve(e.prod, (size_t)1 << 32, &dst), -EMSGSIZE);
	assert_int_equal(atomic_load(&e.hdr->prod_tail), 0);
	send_msg(&e, c->max);
	send_msg(&e, 3);
	n = portal_msgring_recv(e.cons, e.out, c->max - 1);
	assert_int_equal(n, -EMSGSIZE);
	n = portal_msgring_recv(e.cons, e.out, 0);
	assert_int_equal(n, -EMSGSIZE);
	assert_int_equal(atomic_load(&e.hdr->cons_head), 0);
	assert_int_equal(portal_msgring_ready(e.cons), 1);
	portal_msgring_stats(e.cons, &st);
	assert_int_equal(st.dequeued, 0);
	recv_msg(&e); /* the max message, intact */
	n = portal_msgring_recv(e.cons, e.out, 2);
	assert_int_equal(n, -EMSGSIZE);
	recv_msg(&e);
	env_close(&e);
}

/* Full and empty: -EAGAIN, the stats, and the ring really fills up. */
static void t_full_empty(void **state)
{
	const struct cfg *c = *state;
	uint32_t lens[] = { 0, 13, c->max };

	for (size_t k = 0; k < TU_ARRAY_SIZE(lens); k++) {
		uint32_t len = lens[k], n = 0;
		struct portal_ring_stats st;
		struct env e;
		int rc;

		env_open(&e, c);
		goto_offset(&e, (uint32_t)(k * 8 * 3) & (c->cap - 1));
		for (;;) {
			msg_fill(e.buf, len, e.put_idx);
			rc = portal_msgring_send(e.prod, e.buf, len);
			if (rc == -EAGAIN)
				break;
			if (n > c->cap / 8)
				fail_msg("%u messages of %u bytes fit a %u-byte ring", n, len, c->cap);
			assert_int_equal(rc, 0);
			e.q_len[e.q_tail % 1024] = len;
			e.q_idx[e.q_tail % 1024] = e.put_idx++;
			e.q_tail++;
			n++;
		}
		assert_int_equal(portal_msgring_send(e.prod, e.buf, len), -EAGAIN);
		/* At most a ring's worth went in, and at least all but two records
		 * and the slack. */
		assert_true((uint64_t)n * rec(len) <= c->cap);
		assert_true((uint64_t)(n + 2) * rec(len) + 8 >= c->cap);
		portal_msgring_stats(e.prod, &st);
		assert_int_equal(st.full, 2);
		while (e.q_head != e.q_tail) {
			uint32_t l = e.q_len[e.q_head % 1024], idx = e.q_idx[e.q_head % 1024];
			ssize_t got = portal_msgring_recv(e.cons, e.out, sizeof(e.out));

			assert_int_equal(got, l);
			assert_true(msg_ok(e.out, l, idx));
			e.q_head++;
		}
		assert_int_equal(portal_msgring_recv(e.cons, e.out, sizeof(e.out)), -EAGAIN);
		assert_int_equal(portal_msgring_ready(e.cons), 0);
		portal_msgring_stats(e.cons, &st);
		assert_int_equal(st.empty, 1);
		assert_int_equal(st.dequeued, n + e.get_idx);
		/* And it is usable again. */
		assert_int_equal(portal_msgring_send(e.prod, e.buf, len), 0);
		assert_int_equal(portal_msgring_recv(e.cons, e.out, sizeof(e.out)), len);
		env_close(&e);
	}
}

/* Calls for the other role: -EINVAL, nothing moves. */
static void t_roles(void **state)
{
	const struct cfg *c = *state;
	const void *p;
	size_t len;
	void *dst;
	struct env e;

	env_open(&e, c);
	assert_int_equal(portal_msgring_reserve(e.cons, 8, &dst), -EINVAL);
	assert_int_equal(portal_msgring_send(e.cons, e.buf, 8), -EINVAL);
	assert_int_equal(portal_msgring_commit(e.cons, 8), -EINVAL);
	send_msg(&e, 8);
	assert_int_equal(portal_msgring_peek(e.prod, &p, &len), -EINVAL);
	assert_int_equal(portal_msgring_recv(e.prod, e.out, sizeof(e.out)), -EINVAL);
	assert_int_equal(portal_msgring_release(e.prod), -EINVAL);
	assert_int_equal(atomic_load(&e.hdr->cons_head), 0);
	recv_msg(&e);
	assert_false(portal_msgring_quarantined(e.prod));
	assert_false(portal_msgring_quarantined(e.cons));
	env_close(&e);
}

/* A consumer that detaches and re-attaches resumes at the right message,
 * also with a message peeked but not released; so does a producer, also
 * one that left a reservation open. */
static void t_resume(void **state)
{
	const struct cfg *c = *state;
	const void *p;
	size_t len;
	void *dst;
	struct env e;

	env_open(&e, c);
	goto_offset(&e, c->cap - 24);
	/* Four small messages, the second one behind a PAD. */
	for (int i = 0; i < 4; i++)
		send_msg(&e, (uint32_t)(i * 5 + 3) % 20);
	assert_int_equal(e.pads, 1);
	recv_msg(&e);
	/* Peek the second (across the PAD) without releasing, then go away. */
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), 0);
	portal_msgring_detach(e.cons);
	assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &e.cons), 0);
	recv_msg(&e); /* the second, again */
	recv_msg(&e);
	recv_msg(&e);
	/* The producer restarts: once cleanly, once with a reservation open. */
	portal_msgring_detach(e.prod);
	assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_PRODUCER, &e.prod), 0);
	send_msg(&e, 1);
	assert_int_equal(portal_msgring_reserve(e.prod, c->max, &dst), 0);
	memset(dst, 0xEE, c->max);
	portal_msgring_detach(e.prod);
	assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_PRODUCER, &e.prod), 0);
	recv_msg(&e);
	for (uint32_t i = 0; i < 4; i++) {
		send_msg(&e, c->max - i);
		/* The consumer restarts too, between messages. */
		if (i == 2) {
			portal_msgring_detach(e.cons);
			assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER,
							       &e.cons), 0);
		}
		recv_msg(&e);
	}
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), -EAGAIN);
	assert_false(portal_msgring_quarantined(e.cons));
	env_close(&e);
}

/* Sequence numbers wrap from 0xFFFFFFFF to 1 (0 means "no record"). */
static void t_seq_wrap(void **state)
{
	const struct cfg *c = *state;
	struct env e;

	env_open(&e, c);
	portal_msgring_detach(e.prod);
	portal_msgring_detach(e.cons);
	atomic_store(&e.hdr->prod_seq, UINT32_MAX - 2);
	atomic_store(&e.hdr->cons_seq, UINT32_MAX - 2);
	assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_PRODUCER, &e.prod), 0);
	assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &e.cons), 0);
	e.seq = UINT32_MAX - 2;
	for (int i = 0; i < 3; i++)
		send_msg(&e, 8);
	assert_int_equal(word_at(&e, 16) >> 32, UINT32_MAX - 1);
	assert_int_equal(word_at(&e, 32) >> 32, UINT32_MAX);
	assert_int_equal(e.seq, 1);
	send_msg(&e, 8);
	assert_int_equal(word_at(&e, 48) >> 32, 1);
	while (e.q_head != e.q_tail)
		recv_msg(&e);
	/* And across a PAD. */
	goto_offset(&e, c->cap - 8);
	send_msg(&e, 8);
	recv_msg(&e);
	assert_false(portal_msgring_quarantined(e.cons));
	env_close(&e);
}

/* Byte positions that cross 2^64 work like any other. */
static void t_u64_wrap(void **state)
{
	const struct cfg *c = *state;
	uint64_t start = 0 - (uint64_t)c->cap * 2 - 64;
	struct env e;

	env_open(&e, c);
	portal_msgring_detach(e.prod);
	portal_msgring_detach(e.cons);
	atomic_store(&e.hdr->prod_tail, start);
	atomic_store(&e.hdr->cons_head, start);
	assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_PRODUCER, &e.prod), 0);
	assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &e.cons), 0);
	e.pos = e.cpos = start;
	for (uint32_t i = 0; i < 4 * c->cap / rec(c->max / 2) + 4; i++) {
		send_msg(&e, c->max / 2 + i % 9);
		if (i % 2)
			send_msg(&e, i % 5);
		while (e.q_head != e.q_tail)
			recv_msg(&e);
	}
	assert_true(e.pos < start); /* crossed 2^64 */
	assert_false(portal_msgring_quarantined(e.prod));
	assert_false(portal_msgring_quarantined(e.cons));
	env_close(&e);
}

/* ------------------------------------------------------------------ */
/* Hostile producer: bad record headers                                */
/* ------------------------------------------------------------------ */

enum corrupt {
	C_SEQ_NEXT,      /* sequence one ahead */
	C_SEQ_PREV,      /* sequence of the previous record (a stale lap) */
	C_SEQ_ZERO,      /* nonzero word with sequence 0 */
	C_LEN_MAX1,      /* length max_msg + 1 */
	C_LEN_HUGE,      /* length 0x7FFFFFFF */
	C_LEN_PAST_END,  /* length <= max_msg whose record runs past the ring end */
	C_PAD_SHORT,     /* PAD that stops 8 bytes before the end */
	C_PAD_LONG,      /* PAD that runs 8 bytes past the end */
	C_PAD_HUGE,      /* PAD with length 0x7FFFFFFF */
	C_PAD_SEQ,       /* PAD with the wrong sequence */
	C_PAD_PAD,       /* valid PAD, then another PAD at offset 0 */
	C_PAD_BADSEQ,    /* valid PAD, then a record with the PAD's sequence */
	C_PAD_BADLEN,    /* valid PAD, then a record longer than max_msg */
	C_WHOLE_PAD,     /* at offset 0, a PAD covering the whole ring */
};

static const struct {
	const char *what;
	enum corrupt how;
	uint32_t where; /* bytes before the ring end; 0 = offset 0 */
} corrupt_cases[] = {
	{ "sequence one ahead",              C_SEQ_NEXT, 64 },
	{ "sequence of a stale lap",         C_SEQ_PREV, 64 },
	{ "sequence 0",                      C_SEQ_ZERO, 64 },
	{ "length max_msg + 1",              C_LEN_MAX1, 64 },
	{ "length 0x7FFFFFFF",               C_LEN_HUGE, 64 },
	{ "length past the ring end",        C_LEN_PAST_END, 16 },
	{ "PAD short of the end",            C_PAD_SHORT, 64 },
	{ "PAD past the end",                C_PAD_LONG, 64 },
	{ "PAD length 0x7FFFFFFF",           C_PAD_HUGE, 64 },
	{ "PAD with wrong sequence",         C_PAD_SEQ, 64 },
	{ "PAD then PAD",                    C_PAD_PAD, 64 },
	{ "PAD then record reusing its seq", C_PAD_BADSEQ, 64 },
	{ "PAD then record > max_msg",       C_PAD_BADLEN, 64 },
	{ "PAD covering the whole ring",     C_WHOLE_PAD, 0 },
};

static void put_word(struct env *e, uint64_t pos, uint32_t seq, uint32_t lenflags)
{
	atomic_store((_Atomic uint64_t *)(e->data + (pos & (e->c->cap - 1))),
		     ((uint64_t)seq << 32) | lenflags);
}

/* Every call a consumer can make on a quarantined handle. */
static void assert_cons_quarantined(struct env *e)
{
	const void *p;
	size_t len;

	assert_true(portal_msgring_quarantined(e->cons));
	assert_int_equal(portal_msgring_peek(e->cons, &p, &len), PORTAL_EPROTO);
	assert_int_equal(portal_msgring_recv(e->cons, e->out, sizeof(e->out)), PORTAL_EPROTO);
	assert_int_equal(portal_msgring_ready(e->cons), 1);
	assert_true(portal_msgring_release(e->cons) < 0);
	assert_int_equal(portal_msgring_peek(e->cons, &p, &len), PORTAL_EPROTO);
}

static void t_hostile_records(void **state)
{
	const struct cfg *c = *state;

	for (size_t k = 0; k < TU_ARRAY_SIZE(corrupt_cases); k++) {
		uint32_t o = corrupt_cases[k].where ? c->cap - corrupt_cases[k].where : 0;
		uint32_t to_end = c->cap - o, s;
		struct portal_ring_stats st;
		struct tu_log log;
		struct env e;
		const void *p;
		size_t len;
		uint64_t cons_head;
		int rc;

		env_open(&e, c);
		goto_offset(&e, o);
		s = e.seq;
		switch (corrupt_cases[k].how) {
		case C_SEQ_NEXT:     put_word(&e, e.pos, s + 1, 8); break;
		case C_SEQ_PREV:     put_word(&e, e.pos, s - 1, 8); break;
		case C_SEQ_ZERO:     put_word(&e, e.pos, 0, 8); break;
		case C_LEN_MAX1:     put_word(&e, e.pos, s, c->max + 1); break;
		case C_LEN_HUGE:     put_word(&e, e.pos, s, PORTAL_MSG_LEN_MASK); break;
		case C_LEN_PAST_END: put_word(&e, e.pos, s, to_end - 7); break;
		/* For the bad PADs, a well-formed record waits at offset 0, so
		 * only the PAD itself is wrong. */
		case C_PAD_SHORT:
			put_word(&e, 0, s + 1, 8);
			put_word(&e, e.pos, s, PORTAL_MSG_PAD | (to_end - 16));
			break;
		case C_PAD_LONG:
			put_word(&e, 0, s + 1, 8);
			put_word(&e, e.pos, s, PORTAL_MSG_PAD | to_end);
			break;
		case C_PAD_HUGE:
			put_word(&e, 0, s + 1, 8);
			put_word(&e, e.pos, s, PORTAL_MSG_PAD | PORTAL_MSG_LEN_MASK);
			break;
		case C_PAD_SEQ:
			put_word(&e, 0, s + 2, 8);
			put_word(&e, e.pos, s + 1, PORTAL_MSG_PAD | (to_end - 8));
			break;
		case C_PAD_PAD:
			put_word(&e, 0, s + 1, PORTAL_MSG_PAD | (c->cap - 8));
			put_word(&e, e.pos, s, PORTAL_MSG_PAD | (to_end - 8));
			break;
		case C_PAD_BADSEQ:
			put_word(&e, 0, s, 8);
			put_word(&e, e.pos, s, PORTAL_MSG_PAD | (to_end - 8));
			break;
		case C_PAD_BADLEN:
			put_word(&e, 0, s + 1, c->max + 1);
			put_word(&e, e.pos, s, PORTAL_MSG_PAD | (to_end - 8));
			break;
		case C_WHOLE_PAD:    put_word(&e, e.pos, s, PORTAL_MSG_PAD | (c->cap - 8)); break;
		}
		if (corrupt_cases[k].how == C_LEN_PAST_END)
			assert_true(to_end - 7 <= c->max); /* a length peek would otherwise accept */
		cons_head = atomic_load(&e.hdr->cons_head);
		assert_int_equal(portal_msgring_ready(e.cons), 1);
		tu_log_capture(&log);
		rc = portal_msgring_peek(e.cons, &p, &len);
		tu_log_release();
		if (rc != PORTAL_EPROTO)
			fail_msg("%s: peek got %d (len %zu), want EPROTO", corrupt_cases[k].what, rc,
				 rc == 0 ? len : 0);
		assert_cons_quarantined(&e);
		portal_msgring_stats(e.cons, &st);
		assert_int_equal(st.proto_errors, 1);
		assert_int_equal(log.count[PORTAL_LOG_ERROR], 1);
		assert_int_equal(atomic_load(&e.hdr->cons_head), cons_head);
		assert_false(portal_msgring_quarantined(e.prod));
		env_close(&e);
	}
}

/*
 * A quarantined consumer must not acknowledge anything: the producer
 * rewrites a header the consumer has already peeked, the consumer's second
 * peek sees it (EPROTO), and a release must now fail without moving
 * cons_head (ring.h: "every later call on it returns -EPROTO").
 */
static void t_hostile_after_peek(void **state)
{
	const struct cfg *c = *state;
	struct env e;
	const void *p;
	size_t len;
	uint64_t w;
	int rc;

	env_open(&e, c);
	send_msg(&e, 16);
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), 0);
	w = word_at(&e, 0);
	put_word(&e, 0, (uint32_t)(w >> 32) + 7, 16);
	assert_int_equal(portal_msgring_peek(e.cons, &p, &len), PORTAL_EPROTO);
	rc = portal_msgring_release(e.cons);
	if (rc != PORTAL_EPROTO || atomic_load(&e.hdr->cons_head) != 0 ||
	    atomic_load(&e.hdr->cons_seq) != 0)
		fail_msg("release on a quarantined consumer returned %d, cons_head %llu, cons_seq %u;"
			 " want EPROTO, 0, 0", rc,
			 (unsigned long long)atomic_load(&e.hdr->cons_head),
			 atomic_load(&e.hdr->cons_seq));
	env_close(&e);
}

/* ------------------------------------------------------------------ */
/* Hostile consumer: cons_head                                          */
/* ------------------------------------------------------------------ */

static const struct {
	const char *what;
	bool use_base;
	uint64_t add;
	int64_t cap_mul;
} bad_cons[] = {
	{ "backwards by 8",          true,  (uint64_t)-8, 0 },
	{ "backwards to 0",          false, 0, 0 },
	{ "backwards by 2^63",       true,  BIT63, 0 },
	{ "past the producer",       true,  8, 1 },
	{ "two rings ahead",         true,  0, 2 },
	{ "2^63",                    false, BIT63, 0 },
	{ "UINT64_MAX",              false, UINT64_MAX, 0 },
	{ "UINT64_MAX - capacity",   false, UINT64_MAX, -1 },
};

static void t_hostile_cons_head(void **state)
{
	const struct cfg *c = *state;

	for (size_t k = 0; k < TU_ARRAY_SIZE(bad_cons); k++) {
		struct portal_ring_stats st;
		struct env e;
		uint64_t base, bad, prod_tail;
		uint8_t *before;
		void *dst;
		int rc;

		env_open(&e, c);
		goto_offset(&e, c->cap / 2 + 8); /* some history: cons_head > 0 */
		for (uint32_t n = 0; portal_msgring_send(e.prod, e.buf, c->max / 2) == 0; n++)
			assert_true(n < c->cap / 8);
		base = atomic_load(&e.hdr->cons_head);
		bad = (bad_cons[k].use_base ? base : 0) + bad_cons[k].add +
		      (uint64_t)bad_cons[k].cap_mul * c->cap;
		atomic_store(&e.hdr->cons_head, bad);
		prod_tail = atomic_load(&e.hdr->prod_tail);
		before = malloc(c->cap);
		assert_non_null(before);
		memcpy(before, e.data, c->cap);

		/* The size that just found no room: the producer must look again. */
		rc = portal_msgring_reserve(e.prod, c->max / 2, &dst);
		if (rc != PORTAL_EPROTO)
			fail_msg("cons_head %s (%#llx, honest %#llx): reserve got %d, want EPROTO",
				 bad_cons[k].what, (unsigned long long)bad, (unsigned long long)base, rc);
		assert_true(portal_msgring_quarantined(e.prod));
		assert_int_equal(portal_msgring_reserve(e.prod, 0, &dst), PORTAL_EPROTO);
		assert_int_equal(portal_msgring_send(e.prod, e.buf, 8), PORTAL_EPROTO);
		assert_true(portal_msgring_commit(e.prod, 0) < 0);
		portal_msgring_stats(e.prod, &st);
		assert_int_equal(st.proto_errors, 1);
		/* Nothing written. */
		assert_int_equal(atomic_load(&e.hdr->prod_tail), prod_tail);
		assert_memory_equal(before, e.data, c->cap);
		free(before);
		env_close(&e);
	}

	/* Honest: the consumer took everything since the producer last looked. */
	{
		struct env e;

		env_open(&e, c);
		for (uint32_t n = 0; portal_msgring_send(e.prod, e.buf, 8) == 0; n++)
			assert_true(n < c->cap / 8);
		atomic_store(&e.hdr->cons_head, atomic_load(&e.hdr->prod_tail));
		assert_int_equal(portal_msgring_send(e.prod, e.buf, 8), 0);
		assert_false(portal_msgring_quarantined(e.prod));
		env_close(&e);
	}
}

/*
 * Resumed positions come from shared memory too. A cons_head or prod_tail
 * that is not a multiple of 8 puts the next header word across the ring end
 * (an 8-byte access at data + capacity - 4) and misaligns every atomic
 * access. Attach must refuse such a ring.
 */
static void t_attach_misaligned_positions(void **state)
{
	const struct cfg *c = *state;
	static const uint64_t bad[] = { 4, 1, 7 };

	for (size_t k = 0; k < TU_ARRAY_SIZE(bad); k++) {
		struct env e;
		portal_msgring_t *m = NULL;
		uint64_t at = (uint64_t)c->cap * 3 - bad[k];
		int rc;

		env_open(&e, c);
		atomic_store(&e.hdr->prod_tail, at);
		atomic_store(&e.hdr->cons_head, at);
		rc = portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER, &m);
		if (rc != PORTAL_EPROTO) {
			portal_msgring_detach(m);
			fail_msg("consumer attach at position %llu: got %d, want EPROTO",
				 (unsigned long long)at, rc);
		}
		rc = portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_PRODUCER, &m);
		if (rc != PORTAL_EPROTO) {
			portal_msgring_detach(m);
			fail_msg("producer attach at position %llu: got %d, want EPROTO",
				 (unsigned long long)at, rc);
		}
		env_close(&e);
	}
}

/* ------------------------------------------------------------------ */
/* Parameters, init, attach                                            */
/* ------------------------------------------------------------------ */

static void t_params(void **state)
{
	static const struct {
		uint32_t cap, max, flags;
		size_t want;
	} cases[] = {
		{ 256, 0, 0, PORTAL_MSGRING_HDR_SIZE + 256 },     /* max = 64 */
		{ 256, 1, 0, PORTAL_MSGRING_HDR_SIZE + 256 },
		{ 256, 112, 0, PORTAL_MSGRING_HDR_SIZE + 256 },   /* cap/2 - 16 */
		{ 1u << 30, 0, 0, PORTAL_MSGRING_HDR_SIZE + (1u << 30) },
		{ 256, 113, 0, 0 },
		{ 256, UINT32_MAX, 0, 0 },
		{ 128, 0, 0, 0 },
		{ 0, 0, 0, 0 },
		{ 1000, 0, 0, 0 },
		{ 384, 0, 0, 0 },
		{ 1u << 31, 0, 0, 0 },
		{ 256, 0, 1, 0 },
		{ 256, 0, 0x80000000u, 0 },
	};
	uint8_t *m = tu_mem_alloc(PORTAL_MSGRING_HDR_SIZE + 1024);

	(void)state;
	assert_int_equal(portal_msgring_memsize(NULL), 0);
	for (size_t i = 0; i < TU_ARRAY_SIZE(cases); i++) {
		struct portal_msgring_params p = { cases[i].cap, cases[i].max, cases[i].flags };
		size_t got = portal_msgring_memsize(&p);

		if (got != cases[i].want)
			fail_msg("memsize(cap %u max %u flags %#x) = %zu, want %zu", p.capacity,
				 p.max_msg, p.flags, got, cases[i].want);
		if (!got)
			assert_int_equal(portal_msgring_init(m, PORTAL_MSGRING_HDR_SIZE + 1024, &p),
					 -EINVAL);
	}
	{
		struct portal_msgring_params p = { 256, 0, 0 };
		size_t need = portal_msgring_memsize(&p);
		portal_msgring_t *r = NULL;

		assert_int_equal(portal_msgring_init(NULL, need, &p), -EINVAL);
		assert_int_equal(portal_msgring_init(m, need, NULL), -EINVAL);
		assert_int_equal(portal_msgring_init(m, need - 1, &p), -EINVAL);
		assert_int_equal(portal_msgring_init(m + 8, need, &p), -EINVAL);
		assert_int_equal(portal_msgring_init(m, need, &p), 0);
		assert_int_equal(((struct portal_msgring_hdr *)m)->max_msg, 64);
		assert_int_equal(portal_msgring_attach(NULL, need, PORTAL_ROLE_CONSUMER, &r), -EINVAL);
		assert_int_equal(portal_msgring_attach(m, need, PORTAL_ROLE_CONSUMER, NULL), -EINVAL);
		assert_int_equal(portal_msgring_attach(m, need, 0, &r), -EINVAL);
		assert_int_equal(portal_msgring_attach(m, need, 3, &r), -EINVAL);
		assert_int_equal(portal_msgring_attach(m + 64, need, PORTAL_ROLE_CONSUMER, &r),
				 PORTAL_EPROTO); /* aligned, but no ring there */
		assert_int_equal(portal_msgring_attach(m + 8, need, PORTAL_ROLE_CONSUMER, &r), -EINVAL);
		assert_int_equal(portal_msgring_attach(m, need - 1, PORTAL_ROLE_CONSUMER, &r),
				 PORTAL_EPROTO);
		assert_int_equal(portal_msgring_attach(m, PORTAL_MSGRING_HDR_SIZE - 1,
						       PORTAL_ROLE_CONSUMER, &r), PORTAL_EPROTO);
		assert_null(r);
		portal_msgring_detach(NULL);
	}
	tu_mem_free_checked(m, PORTAL_MSGRING_HDR_SIZE + 1024);
}

struct mhdr_case {
	const char *what;
	size_t off, size;
	uint64_t value;
};

#define MF(f) offsetof(struct portal_msgring_hdr, f), \
	sizeof(((struct portal_msgring_hdr *)0)->f)

static void t_attach_corrupt_header(void **state)
{
	static const struct mhdr_case cases[] = {
		{ "magic",             MF(magic), PORTAL_RING_MAGIC },
		{ "version 0",         MF(version), 0 },
		{ "version 2",         MF(version), 2 },
		{ "capacity 0",        MF(capacity), 0 },
		{ "capacity 128",      MF(capacity), 128 },
		{ "capacity 1000",     MF(capacity), 1000 },
		{ "capacity doubled",  MF(capacity), 2048 },
		{ "max_msg 0",         MF(max_msg), 0 },
		{ "max_msg too big",   MF(max_msg), 1024 / 2 - 15 },
		{ "max_msg huge",      MF(max_msg), UINT32_MAX },
		{ "obj_size + 8",      MF(obj_size), PORTAL_MSGRING_HDR_SIZE + 1024 + 8 },
		{ "obj_size - 8",      MF(obj_size), PORTAL_MSGRING_HDR_SIZE + 1024 - 8 },
		{ "prod behind cons",  MF(prod_tail), (uint64_t)-8 },
		{ "prod 2 rings ahead", MF(prod_tail), 2048 },
	};
	struct portal_msgring_params p = { 1024, 0, 0 };
	size_t need = portal_msgring_memsize(&p);
	uint8_t *m = tu_mem_alloc(need);

	(void)state;
	for (size_t i = 0; i < TU_ARRAY_SIZE(cases); i++) {
		portal_msgring_t *r = NULL;

		assert_int_equal(portal_msgring_init(m, need, &p), 0);
		memcpy(m + cases[i].off, &cases[i].value, cases[i].size);
		for (int role = PORTAL_ROLE_PRODUCER; role <= PORTAL_ROLE_CONSUMER; role++) {
			int rc = portal_msgring_attach(m, need, role, &r);

			if (rc != PORTAL_EPROTO)
				fail_msg("%s, role %d: attach got %d, want EPROTO", cases[i].what, role,
					 rc);
		}
	}
	tu_mem_free_checked(m, need);
}

/* ------------------------------------------------------------------ */
/* Region glue                                                          */
/* ------------------------------------------------------------------ */

static void t_region_glue(void **state)
{
	struct portal_msgring_params p = { 4096, 1000, 0 };
	struct portal_msgring_params bad = { 4095, 0, 0 };
	struct portal_region_opts o = { .size = 1 << 20 };
	struct portal_object_info info;
	portal_region_t *reg, *peer;
	portal_msgring_t *prod, *cons;
	char name[64], uri[96], fduri[32];

	(void)state;
	snprintf(uri, sizeof(uri), "memfd:%s", tu_unique_name(name, sizeof(name), "mr"));
	assert_int_equal(portal_region_create(uri, &o, &reg), 0);
	snprintf(fduri, sizeof(fduri), "fd:%d", portal_region_fd(reg));
	assert_int_equal(portal_region_attach(fduri, NULL, &peer), 0);
	assert_int_equal(portal_msgring_create(reg, "m", &p, 0), 0);
	assert_int_equal(portal_msgring_create(reg, "m", &p, 0), -EEXIST);
	assert_int_equal(portal_msgring_create(reg, "b", &bad, 0), -EINVAL);
	assert_int_equal(portal_msgring_create(peer, "x", &p, 0), -EPERM);
	assert_int_equal(portal_region_lookup(peer, "m", PORTAL_OBJ_MSGRING, &info), 0);
	assert_int_equal(info.param[0], 4096);
	assert_int_equal(info.param[1], 1000);
	assert_int_equal(portal_msgring_open(reg, "m", PORTAL_ROLE_PRODUCER, &prod), 0);
	assert_int_equal(portal_msgring_open(peer, "m", PORTAL_ROLE_CONSUMER, &cons), 0);
	assert_int_equal(portal_msgring_max_msg(cons), 1000);
	for (uint32_t i = 0; i < 50; i++) {
		uint8_t b[1000], out[1000];
		uint32_t len = (i * 97) % 1001;

		msg_fill(b, len, i);
		assert_int_equal(portal_msgring_send(prod, b, len), 0);
		assert_int_equal(portal_msgring_recv(cons, out, sizeof(out)), len);
		assert_true(msg_ok(out, len, i));
	}
	portal_msgring_detach(prod);
	portal_msgring_detach(cons);
	assert_int_equal(portal_msgring_open(peer, "nope", PORTAL_ROLE_CONSUMER, &cons), -ENOENT);
	assert_int_equal(portal_ring_create(reg, "r", &(struct portal_ring_params){ 1, 8, 8, 0 }, 0), 0);
	assert_int_equal(portal_msgring_open(peer, "r", PORTAL_ROLE_CONSUMER, &cons), -ENOENT);
	portal_region_detach(peer);
	portal_region_detach(reg);
}

/* ------------------------------------------------------------------ */
/* Two threads                                                          */
/* ------------------------------------------------------------------ */

struct mt {
	void *mem;
	size_t len;
	uint32_t count, max;
	struct tu_err err;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint32_t mt_len(uint32_t i, uint32_t max)
{
	return (i * 2654435761u >> 7) % (max + 1);
}

static void *mt_prod(void *arg)
{
	struct mt *m = arg;
	portal_msgring_t *r;
	double t0 = now_s();

	if (portal_msgring_attach(m->mem, m->len, PORTAL_ROLE_PRODUCER, &r)) {
		tu_err_set(&m->err, "producer attach");
		return NULL;
	}
	for (uint32_t i = 0; i < m->count && !tu_err_any(&m->err);) {
		uint32_t len = mt_len(i, m->max);
		void *dst;
		int rc = portal_msgring_reserve(r, len, &dst);

		if (rc == -EAGAIN) {
			if (now_s() - t0 > 20) {
				tu_err_set(&m->err, "producer stuck at %u", i);
				break;
			}
			sched_yield();
			continue;
		}
		if (rc) {
			tu_err_set(&m->err, "reserve %u: %d", i, rc);
			break;
		}
		msg_fill(dst, len, i);
		if (portal_msgring_commit(r, len)) {
			tu_err_set(&m->err, "commit %u", i);
			break;
		}
		i++;
	}
	portal_msgring_detach(r);
	return NULL;
}

static void *mt_cons(void *arg)
{
	struct mt *m = arg;
	portal_msgring_t *r;
	double t0 = now_s();

	if (portal_msgring_attach(m->mem, m->len, PORTAL_ROLE_CONSUMER, &r)) {
		tu_err_set(&m->err, "consumer attach");
		return NULL;
	}
	for (uint32_t i = 0; i < m->count && !tu_err_any(&m->err);) {
		const void *p;
		size_t len;
		int rc = portal_msgring_peek(r, &p, &len);

		if (rc == -EAGAIN) {
			if (now_s() - t0 > 20) {
				tu_err_set(&m->err, "consumer stuck at %u", i);
				break;
			}
			sched_yield();
			continue;
		}
		if (rc) {
			tu_err_set(&m->err, "peek %u: %d", i, rc);
			break;
		}
		if (len != mt_len(i, m->max) || !msg_ok(p, (uint32_t)len, i)) {
			tu_err_set(&m->err, "message %u: len %zu, bad contents", i, len);
			break;
		}
		portal_msgring_release(r);
		i++;
	}
	portal_msgring_detach(r);
	return NULL;
}

static void t_threads(void **state)
{
	struct cfg *c = *state;
	struct portal_msgring_params p = { c->cap, c->max, 0 };
	struct mt m = { .count = 100000, .max = c->max };
	pthread_t a, b;

	m.len = portal_msgring_memsize(&p);
	m.mem = tu_mem_alloc(m.len);
	assert_int_equal(portal_msgring_init(m.mem, m.len, &p), 0);
	assert_int_equal(pthread_create(&a, NULL, mt_cons, &m), 0);
	assert_int_equal(pthread_create(&b, NULL, mt_prod, &m), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	tu_assert_no_err(&m.err);
	assert_int_equal(atomic_load(&((struct portal_msgring_hdr *)m.mem)->cons_head),
			 atomic_load(&((struct portal_msgring_hdr *)m.mem)->prod_tail));
	tu_mem_free_checked(m.mem, m.len);
}

/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* Crash recovery: restarts, positions, recv -EMSGSIZE                  */
/* ------------------------------------------------------------------ */

static void mr_send(portal_msgring_t *p, uint32_t len, uint32_t idx)
{
	uint8_t b[4096];

	msg_fill(b, len, idx);
	assert_int_equal(portal_msgring_send(p, b, len), 0);
}

/* Receive the next message and check it is number IDX of length LEN. */
static void mr_recv(portal_msgring_t *c, uint32_t len, uint32_t idx)
{
	uint8_t b[4096];
	ssize_t n = portal_msgring_recv(c, b, sizeof(b));

	if (n != (ssize_t)len || !msg_ok(b, len, idx))
		fail_msg("recv: got %zd, want #%u of %u bytes", n, idx, len);
}

/* recv with too small a buffer leaves the message unconsumed, not peeked. */
static void t_recv_emsgsize_unpeeked(void **state)
{
	const struct cfg *c = *state;
	const void *buf;
	size_t len;
	uint64_t pos;
	struct env e;

	env_open(&e, c);
	mr_send(e.prod, c->max, 1);
	assert_int_equal(portal_msgring_recv(e.cons, e.out, c->max - 1), -EMSGSIZE);
	assert_int_equal(portal_msgring_release(e.cons), -EINVAL);
	assert_int_equal(portal_msgring_position(e.cons, &pos), -EINVAL);
	assert_int_equal(atomic_load(&e.hdr->cons_head), 0);
	assert_int_equal(portal_msgring_peek(e.cons, &buf, &len), 0);
	assert_int_equal(len, c->max);
	assert_int_equal(portal_msgring_position(e.cons, &pos), 0);
	assert_int_equal(pos, 0);
	assert_int_equal(portal_msgring_recv(e.cons, e.out, 1), -EMSGSIZE);
	mr_recv(e.cons, c->max, 1);
	assert_int_equal(portal_msgring_recv(e.cons, e.out, sizeof(e.out)), -EAGAIN);
	assert_int_equal(portal_msgring_position(e.prod, &pos), -EINVAL);
	env_close(&e);
}

/*
 * A producer killed after reserve (nothing committed) or in the middle of
 * commit - after the record header, before prod_seq and/or prod_tail - is
 * replaced by a new producer: nothing committed is lost or seen twice.
 * Run at every position of a few laps, so PAD records are torn too.
 */
static void t_restart_producer(void **state)
{
	const struct cfg *c = *state;
	uint32_t len = c->max / 3 + 5, idx = 0, got = 0;
	struct env e;

	env_open(&e, c);
	for (int round = 0; round < 48; round++) {
		uint64_t t0 = atomic_load(&e.hdr->prod_tail);
		uint32_t s0 = atomic_load(&e.hdr->prod_seq);
		void *dst;

		switch (round % 3) {
		case 0: /* killed after reserve */
			assert_int_equal(portal_msgring_reserve(e.prod, len, &dst), 0);
			memset(dst, 0xAB, len);
			break;
		case 1: /* killed after the header, before prod_seq */
			mr_send(e.prod, len, idx++);
			atomic_store(&e.hdr->prod_seq, s0);
			atomic_store(&e.hdr->prod_tail, t0);
			break;
		default: /* killed after prod_seq, before prod_tail */
			mr_send(e.prod, len, idx++);
			atomic_store(&e.hdr->prod_tail, t0);
			break;
		}
		free(e.prod); /* killed: no detach */
		assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_PRODUCER, &e.prod),
				 0);
		mr_send(e.prod, len, idx++);
		while (got < idx)
			mr_recv(e.cons, len, got++);
		assert_int_equal(portal_msgring_recv(e.cons, e.out, sizeof(e.out)), -EAGAIN);
	}
	assert_false(portal_msgring_quarantined(e.cons));
	env_close(&e);
}

/*
 * A consumer killed between peek and release sees the message again, at
 * the same position (at-least-once); one killed between cons_seq and
 * cons_head in release does not (it had released it). Positions grow.
 */
static void t_restart_consumer(void **state)
{
	const struct cfg *c = *state;
	uint32_t len = c->max / 3 + 5, idx = 0, got = 0;
	uint64_t last = 0;
	bool first = true;
	struct env e;

	env_open(&e, c);
	for (int round = 0; round < 48; round++) {
		const void *buf;
		size_t l;
		uint64_t pos, again, h0;

		mr_send(e.prod, len, idx++);
		mr_send(e.prod, len, idx++);
		assert_int_equal(portal_msgring_peek(e.cons, &buf, &l), 0);
		assert_int_equal(portal_msgring_position(e.cons, &pos), 0);
		assert_true(first || pos > last);
		first = false;
		last = pos;
		if (round & 1) {
			/* Killed while peeking. */
			free(e.cons);
			assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER,
							       &e.cons), 0);
			assert_int_equal(portal_msgring_peek(e.cons, &buf, &l), 0);
			assert_int_equal(portal_msgring_position(e.cons, &again), 0);
			assert_int_equal(again, pos);
			mr_recv(e.cons, len, got++);
		} else {
			/* Killed inside release, after cons_seq. */
			h0 = atomic_load(&e.hdr->cons_head);
			assert_int_equal(portal_msgring_release(e.cons), 0);
			got++;
			atomic_store(&e.hdr->cons_head, h0);
			free(e.cons);
			assert_int_equal(portal_msgring_attach(e.mem, e.len, PORTAL_ROLE_CONSUMER,
							       &e.cons), 0);
		}
		mr_recv(e.cons, len, got++);
		assert_int_equal(portal_msgring_recv(e.cons, e.out, sizeof(e.out)), -EAGAIN);
	}
	assert_false(portal_msgring_quarantined(e.cons));
	env_close(&e);
}

int main(void)
{
	static const struct {
		const char *name;
		CMUnitTestFunction fn;
	} per_cfg[] = {
		{ "lengths", t_lengths },
		{ "pad_every_offset", t_pad_every_offset },
		{ "zero_copy", t_zero_copy },
		{ "emsgsize", t_emsgsize },
		{ "full_empty", t_full_empty },
		{ "roles", t_roles },
		{ "resume", t_resume },
		{ "seq_wrap", t_seq_wrap },
		{ "u64_wrap", t_u64_wrap },
		{ "hostile_records", t_hostile_records },
		{ "hostile_cons_head", t_hostile_cons_head },
		{ "recv_emsgsize_unpeeked", t_recv_emsgsize_unpeeked },
		{ "restart_producer", t_restart_producer },
		{ "restart_consumer", t_restart_consumer },
	};
	struct tu_suite s = { 0 };
	size_t n = 0;

	for (size_t i = 0; i < TU_ARRAY_SIZE(caps); i++) {
		cfgs[n++] = (struct cfg){ caps[i], 40 };
		cfgs[n++] = (struct cfg){ caps[i], caps[i] / 4 };
		cfgs[n++] = (struct cfg){ caps[i], caps[i] / 2 - 16 };
	}
	/* Two bug reproductions: one configuration per capacity is enough. */
	for (size_t i = 1; i < n; i += 3) {
		tu_suite_add(&s, t_hostile_after_peek, &cfgs[i], "hostile_after_peek/c%u/m%u",
			     cfgs[i].cap, cfgs[i].max);
		tu_suite_add(&s, t_attach_misaligned_positions, &cfgs[i],
			     "attach_misaligned_positions/c%u/m%u", cfgs[i].cap, cfgs[i].max);
	}
	tu_suite_add(&s, t_params, NULL, "params");
	tu_suite_add(&s, t_attach_corrupt_header, NULL, "attach_corrupt_header");
	for (size_t t = 0; t < TU_ARRAY_SIZE(per_cfg); t++)
		for (size_t i = 0; i < n; i++)
			tu_suite_add(&s, per_cfg[t].fn, &cfgs[i], "%s/c%u/m%u", per_cfg[t].name,
				     cfgs[i].cap, cfgs[i].max);
	tu_suite_add(&s, t_region_glue, NULL, "region_glue");
	tu_suite_add(&s, t_threads, &cfgs[0], "threads/c%u/m%u", cfgs[0].cap, cfgs[0].max);
	tu_suite_add(&s, t_threads, &cfgs[5], "threads/c%u/m%u", cfgs[5].cap, cfgs[5].max);
	return tu_suite_run(&s, "portal.msgring");
}
