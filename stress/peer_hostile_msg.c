/* SPDX-License-Identifier: MIT */
/*
 * peer_hostile_msg.c - hostile peers of the message ring (see hostile.h).
 *
 *   msg_cons  honest consumer; the hostile producer writes record header
 *             words (wrong sequence numbers, lengths past max_msg or past
 *             the ring's end, PAD records that stop short of the end or
 *             repeat), payload noise, prod_tail and prod_seq
 *   msg_prod  honest producer; the hostile consumer writes cons_head and
 *             cons_seq
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "portal/ring.h"
#include "stress/hostile.h"

/* ------------------------------------------------------------------ */
/* Raw access for the hostile side                                     */
/* ------------------------------------------------------------------ */

struct hmsg {
	struct portal_msgring_hdr *h;
	uint8_t *data;
	uint32_t cap;
	uint32_t max;
	uint64_t pos;          /* our position (producer: written; consumer: read) */
	uint32_t seq;          /* next record sequence number */
	uint64_t stamps;       /* producer: next payload stamp */
	uint64_t bad;          /* consumer: records that failed the check */
};

static uint32_t rec_size(uint32_t len)
{
	return PORTAL_MSG_HDR_SIZE + ((len + PORTAL_MSG_ALIGN - 1) & ~(PORTAL_MSG_ALIGN - 1));
}

static uint32_t next_seq(uint32_t s)
{
	return s + 1 ? s + 1 : 1;
}

static _Atomic uint64_t *word(struct hmsg *m, uint64_t pos)
{
	return (_Atomic uint64_t *)(m->data + (pos & (m->cap - 1)));
}

static uint64_t hdr(uint32_t seq, uint32_t lenflags)
{
	return ((uint64_t)seq << 32) | lenflags;
}

static int open_raw(struct peer *p, struct portal_object_info *info, struct hmsg *m)
{
	int rc = portal_region_lookup(p->reg, STRESS_QUEUE_NAME, PORTAL_OBJ_MSGRING, info);

	if (rc)
		return rc;
	memset(m, 0, sizeof(*m));
	m->h = info->addr;
	m->data = (uint8_t *)info->addr + PORTAL_MSGRING_HDR_SIZE;
	m->cap = (uint32_t)info->param[0];
	m->max = (uint32_t)info->param[1];
	m->seq = 1;
	return 0;
}

/* Where the consumer is: its published position and next sequence. */
static void consumer_at(struct hmsg *m, uint64_t *pos, uint32_t *seq)
{
	/* Acquire: pairs with the consumer's release of cons_head; cons_seq
	 * is stored before it. */
	*pos = atomic_load_explicit(&m->h->cons_head, memory_order_acquire);
	*seq = atomic_load_explicit(&m->h->cons_seq, memory_order_relaxed);
	if (*seq == 0)
		*seq = 1;
}

/* Producer: one honest record of LEN (>= 16) bytes, with a PAD first if it
 * does not fit before the end. 1 if written, 0 if no room. */
static int hm_put(struct hmsg *m, uint32_t len)
{
	uint64_t cons, rec;
	uint32_t cseq, off = (uint32_t)m->pos & (m->cap - 1), need = rec_size(len), pad = 0, s;

	consumer_at(m, &cons, &cseq);
	if ((int64_t)(cons - m->pos) > 0) {
		/* The consumer followed a record we forged past our position:
		 * continue from there. */
		m->pos = cons;
		m->seq = cseq;
		off = (uint32_t)m->pos & (m->cap - 1);
	}
	if (need > m->cap - off)
		pad = m->cap - off;
	if (m->pos + pad + need + PORTAL_MSG_HDR_SIZE - cons > m->cap)
		return 0;
	s = pad ? next_seq(m->seq) : m->seq;
	rec = m->pos + pad;
	stress_msg_fill(m->data + (rec & (m->cap - 1)) + PORTAL_MSG_HDR_SIZE, len,
			stress_stamp(7, m->stamps++));
	atomic_store_explicit(word(m, rec + need), 0, memory_order_relaxed);
	atomic_store_explicit(word(m, rec), hdr(s, len), memory_order_release);
	if (pad)
		atomic_store_explicit(word(m, m->pos),
				      hdr(m->seq, PORTAL_MSG_PAD | (pad - PORTAL_MSG_HDR_SIZE)),
				      memory_order_release);
	m->seq = next_seq(s);
	m->pos = rec + need;
	atomic_store_explicit(&m->h->prod_seq, m->seq, memory_order_relaxed);
	atomic_store_explicit(&m->h->prod_tail, m->pos, memory_order_release);
	return 1;
}

/* Producer: forget our lies, go back to where the consumer is. */
static void hm_heal_prod(struct hmsg *m)
{
	uint64_t cons;
	uint32_t cseq;

	consumer_at(m, &cons, &cseq);
	m->pos = cons;
	m->seq = cseq;
	atomic_store_explicit(word(m, m->pos), 0, memory_order_release);
	atomic_store_explicit(&m->h->prod_seq, m->seq, memory_order_relaxed);
	atomic_store_explicit(&m->h->prod_tail, m->pos, memory_order_release);
}

/* Consumer: take one record (checked when CHECK). 1, or 0 if none or it
 * cannot be parsed (then we resynchronise on the producer). */
static int hm_take(struct hmsg *m, bool check)
{
	uint64_t w = atomic_load_explicit(word(m, m->pos), memory_order_acquire), stamp;
	uint32_t off = (uint32_t)m->pos & (m->cap - 1), len, adv = 0;

	if (w == 0)
		return 0;
	if ((uint32_t)(w >> 32) == m->seq && ((uint32_t)w & PORTAL_MSG_PAD) &&
	    ((uint32_t)w & PORTAL_MSG_LEN_MASK) == m->cap - off - PORTAL_MSG_HDR_SIZE) {
		adv = m->cap - off;
		m->seq = next_seq(m->seq);
		off = 0;
		w = atomic_load_explicit(word(m, m->pos + adv), memory_order_acquire);
	}
	len = (uint32_t)w & PORTAL_MSG_LEN_MASK;
	if ((uint32_t)(w >> 32) != m->seq || ((uint32_t)w & PORTAL_MSG_PAD) || len > m->max ||
	    rec_size(len) > m->cap - off) {
		m->bad += check;
		return 0;
	}
	if (check && (!stress_msg_check(m->data + off + PORTAL_MSG_HDR_SIZE, len, &stamp) ||
		      stamp != stress_stamp(1, m->stamps++)))
		m->bad++;
	m->pos += adv + rec_size(len);
	m->seq = next_seq(m->seq);
	atomic_store_explicit(&m->h->cons_seq, m->seq, memory_order_relaxed);
	atomic_store_explicit(&m->h->cons_head, m->pos, memory_order_release);
	return 1;
}

static void hm_set_cons(struct hmsg *m, uint64_t v)
{
	atomic_store_explicit(&m->h->cons_head, v, memory_order_release);
}

static void hm_heal_cons(struct hmsg *m)
{
	uint64_t prod = atomic_load_explicit(&m->h->prod_tail, memory_order_acquire);

	/* Lost track (we lied, the producer moved on): start over at the
	 * producer's position, an empty ring. */
	if ((int64_t)(m->pos - prod) > 0 || prod - m->pos > m->cap) {
		m->pos = prod;
		m->seq = atomic_load_explicit(&m->h->prod_seq, memory_order_relaxed);
		if (m->seq == 0)
			m->seq = 1;
	}
	atomic_store_explicit(&m->h->cons_seq, m->seq, memory_order_relaxed);
	atomic_store_explicit(&m->h->cons_head, m->pos, memory_order_release);
}

/* A header word chosen to hurt, for the consumer at offset OFF expecting
 * sequence S. */
static uint64_t bad_header(uint64_t *rng, struct hmsg *m, uint32_t off, uint32_t s)
{
	uint32_t to_end = m->cap - off;

	switch (pick(rng, 9)) {
	case 0:  return hdr(s + 1, 16);                            /* wrong sequence */
	case 1:  return hdr(s - 1, 16);                            /* replayed */
	case 2:  return hdr(s, m->max + 1);                        /* too long */
	case 3:  return hdr(s, PORTAL_MSG_LEN_MASK);               /* huge */
	case 4:  return hdr(s, PORTAL_MSG_PAD | (to_end - 16));    /* PAD short */
	case 5:  return hdr(s, PORTAL_MSG_PAD | m->cap);           /* PAD too long */
	case 6:  return hdr(s, to_end - PORTAL_MSG_HDR_SIZE + 8);  /* past the end */
	case 7:  return hdr(s, (uint32_t)stress_rand(rng) % (m->max + 1)); /* plausible */
	default: return stress_rand(rng);
	}
}

/* ------------------------------------------------------------------ */
/* Hostile producer (msg_cons)                                          */
/* ------------------------------------------------------------------ */

static int hostile_msg_producer(struct peer *p)
{
	struct portal_object_info info;
	struct lockstep ls = { 0 };
	struct hmsg m;
	uint64_t rng = p->seed, scribbles = 0, flips = 0, cpos;
	uint32_t cseq, off;
	int code = 0;

	if (open_raw(p, &info, &m))
		return STRESS_EXIT_SETUP;
	if ((code = peer_barrier(p)) != 0)
		return code;

	/* 1: three honest records. */
	BEGIN_TURN(); hm_put(&m, 16); hm_put(&m, 100); hm_put(&m, m.max); END_TURN();
	/* 2: the next header with the wrong sequence number. */
	BEGIN_TURN(); atomic_store(word(&m, m.pos), hdr(m.seq + 1, 16)); END_TURN();
	/* 3 */ BEGIN_TURN(); hm_heal_prod(&m); END_TURN();
	/* 4: one byte longer than max_msg. */
	BEGIN_TURN(); atomic_store(word(&m, m.pos), hdr(m.seq, m.max + 1)); END_TURN();
	/* 5 */ BEGIN_TURN(); hm_heal_prod(&m); END_TURN();
	/* 6: the largest length the header can say. */
	BEGIN_TURN(); atomic_store(word(&m, m.pos), hdr(m.seq, PORTAL_MSG_LEN_MASK)); END_TURN();
	/* 7: heal, then honest records up to close to the end of the ring. */
	BEGIN_TURN();
	hm_heal_prod(&m);
	for (;;) {
		off = (uint32_t)m.pos & (m.cap - 1);
		if (off >= m.cap - 256)
			break;
		if (!hm_put(&m, m.cap - 256 - off > m.max + 8 ? m.max
				: m.cap - 256 - off > 24 ? m.cap - 256 - off - 8 : 16))
			break;
	}
	END_TURN();
	/* 8: a length within max_msg that runs past the end of the ring. */
	BEGIN_TURN();
	off = (uint32_t)m.pos & (m.cap - 1);
	atomic_store(word(&m, m.pos), hdr(m.seq, m.cap - off));
	END_TURN();
	/* 9 */ BEGIN_TURN(); hm_heal_prod(&m); END_TURN();
	/* 10: a PAD that stops 8 bytes short of the end. */
	BEGIN_TURN();
	off = (uint32_t)m.pos & (m.cap - 1);
	atomic_store(word(&m, m.pos), hdr(m.seq, PORTAL_MSG_PAD | (m.cap - off - 16)));
	END_TURN();
	/* 11 */ BEGIN_TURN(); hm_heal_prod(&m); END_TURN();
	/* 12: a correct PAD, and another PAD at the start of the ring. */
	BEGIN_TURN();
	off = (uint32_t)m.pos & (m.cap - 1);
	atomic_store(word(&m, m.pos + (m.cap - off)),
		     hdr(next_seq(m.seq), PORTAL_MSG_PAD | (m.cap - PORTAL_MSG_HDR_SIZE)));
	atomic_store(word(&m, m.pos), hdr(m.seq, PORTAL_MSG_PAD | (m.cap - off - 8)));
	END_TURN();
	/* 13 */
	BEGIN_TURN();
	off = (uint32_t)m.pos & (m.cap - 1);
	atomic_store(word(&m, m.pos + (m.cap - off)), 0);
	hm_heal_prod(&m);
	END_TURN();
	/* 14: prod_tail and prod_seq are noise; an honest record that wraps
	 * (PAD, then the record at the start). */
	BEGIN_TURN();
	hm_put(&m, m.max);
	atomic_store(&m.h->prod_tail, UINT64_MAX);
	atomic_store(&m.h->prod_seq, 12345);
	END_TURN();
	/* 15: an honest header over a payload of noise. */
	BEGIN_TURN();
	hm_put(&m, 64);
	for (int i = 0; i < 64; i++)
		m.data[((m.pos - 64) & (m.cap - 1)) + (unsigned)i] = (uint8_t)stress_rand(&rng);
	END_TURN();
	/* 16: an honest record, then a stale header after it instead of 0. */
	BEGIN_TURN();
	hm_put(&m, 32);
	atomic_store(word(&m, m.pos), hdr(m.seq + 5, 16));
	END_TURN();
	/* 17 */ BEGIN_TURN(); hm_heal_prod(&m); END_TURN();
	/* 18: random phase after the honest side's turn 17. */
	BEGIN_TURN();

	while (!hostile_stop(p)) {
		unsigned act = pick(&rng, 100);

		if (act < 55) {
			hm_put(&m, 16 + pick(&rng, m.max - 15));
		} else if (act < 72) {
			consumer_at(&m, &cpos, &cseq);
			atomic_store_explicit(word(&m, cpos),
					      bad_header(&rng, &m, (uint32_t)cpos & (m.cap - 1), cseq),
					      memory_order_release);
			scribbles++;
		} else if (act < 80) {
			hm_heal_prod(&m);
		} else if (act < 86) {
			atomic_store_explicit(&m.h->prod_tail, stress_rand(&rng), memory_order_relaxed);
			atomic_store_explicit(&m.h->prod_seq, (uint32_t)stress_rand(&rng),
					      memory_order_relaxed);
			scribbles++;
		} else if (act < 94) {
			/* Any header-aligned word of the data area. */
			atomic_store_explicit(word(&m, stress_rand(&rng) & ~UINT64_C(7)),
					      bad_header(&rng, &m, 0, m.seq), memory_order_release);
			scribbles++;
		} else if (act < 97) {
			/* The header the consumer parses next, while it parses. */
			_Atomic uint64_t *w;

			consumer_at(&m, &cpos, &cseq);
			w = word(&m, cpos);
			flips += hostile_flip(w, atomic_load_explicit(w, memory_order_relaxed),
					      bad_header(&rng, &m, (uint32_t)cpos & (m.cap - 1), cseq));
		} else {
			m.data[pick(&rng, m.cap)] = (uint8_t)stress_rand(&rng);
			scribbles++;
		}
		for (unsigned i = pick(&rng, 256); i; i--)
			portal_cpu_relax();
	}
	hm_heal_prod(&m);
	hostile_done(p);
	p->res->messages = scribbles + flips;
	p->res->extra[0] = scribbles;
	p->res->extra[2] = flips;
out:
	return code;
}

/* ------------------------------------------------------------------ */
/* Hostile consumer (msg_prod)                                          */
/* ------------------------------------------------------------------ */

static int hostile_msg_consumer(struct peer *p)
{
	struct portal_object_info info;
	struct lockstep ls = { 0 };
	struct hmsg m;
	uint64_t rng = p->seed, scribbles = 0, flips = 0, prod;
	int code = 0;

	if (open_raw(p, &info, &m))
		return STRESS_EXIT_SETUP;
	if ((code = peer_barrier(p)) != 0)
		return code;

	/* 1 */ BEGIN_TURN(); END_TURN();
	/* 2: take the three, checked. */
	BEGIN_TURN(); while (hm_take(&m, true)) {} END_TURN();
	/* 3: claim to have read past the producer. */
	BEGIN_TURN();
	prod = atomic_load_explicit(&m.h->prod_tail, memory_order_acquire);
	hm_set_cons(&m, prod + 8);
	END_TURN();
	/* 4 */ BEGIN_TURN(); hm_heal_cons(&m); END_TURN();
	/* 5: backwards. */
	BEGIN_TURN(); hm_set_cons(&m, m.pos - 8); END_TURN();
	/* 6 */ BEGIN_TURN(); hm_heal_cons(&m); END_TURN();
	/* 7 */ BEGIN_TURN(); hm_set_cons(&m, UINT64_MAX); END_TURN();
	/* 8: heal and drain, checked. */
	BEGIN_TURN(); hm_heal_cons(&m); while (hm_take(&m, true)) {} END_TURN();
	/* 9: cons_seq is only for a restarting consumer. */
	BEGIN_TURN();
	while (hm_take(&m, true)) {}
	atomic_store(&m.h->cons_seq, 777);
	END_TURN();
	/* 10 */ BEGIN_TURN(); while (hm_take(&m, true)) {} END_TURN();
	p->res->extra[1] = m.bad;
	if (m.bad) {
		peer_log(p, "%llu records from the honest producer failed their check",
			 (unsigned long long)m.bad);
		p->res->errors++;
	}

	while (!hostile_stop(p)) {
		unsigned act = pick(&rng, 100);

		if (act < 55) {
			for (unsigned n = 1 + pick(&rng, 4); n && hm_take(&m, false); n--) {}
		} else if (act < 85) {
			static const int64_t deltas[] = { 8, -8, 1, 4096, -4096, INT64_MIN };
			uint64_t v;

			prod = atomic_load_explicit(&m.h->prod_tail, memory_order_relaxed);
			switch (pick(&rng, 4)) {
			case 0:  v = prod + (uint64_t)deltas[pick(&rng, 6)]; break;
			case 1:  v = m.pos + (uint64_t)deltas[pick(&rng, 6)]; break;
			case 2:  v = pick(&rng, 2) ? 0 : UINT64_MAX; break;
			default: v = stress_rand(&rng); break;
			}
			hm_set_cons(&m, v);
			scribbles++;
			if (pick(&rng, 2)) {
				for (int i = 0; i < 64; i++)
					portal_cpu_relax();
				hm_heal_cons(&m);
			}
		} else if (act < 88) {
			atomic_store_explicit(&m.h->cons_seq, (uint32_t)stress_rand(&rng),
					      memory_order_relaxed);
			scribbles++;
		} else if (act < 92) {
			prod = atomic_load_explicit(&m.h->prod_tail, memory_order_relaxed);
			flips += hostile_flip(&m.h->cons_head, m.pos,
					      pick(&rng, 2) ? prod + 8 : stress_rand(&rng));
		} else {
			hm_heal_cons(&m);
		}
		for (unsigned i = pick(&rng, 256); i; i--)
			portal_cpu_relax();
	}
	hm_heal_cons(&m);
	hostile_done(p);
	p->res->messages = scribbles + flips;
	p->res->extra[0] = scribbles;
	p->res->extra[2] = flips;
out:
	return code;
}

int hostile_msg(struct peer *p)
{
	return strcmp(p->kind, "msg_cons") == 0 ? hostile_msg_producer(p) : hostile_msg_consumer(p);
}

/* ------------------------------------------------------------------ */
/* Honest side                                                          */
/* ------------------------------------------------------------------ */

struct hm {
	struct honest *h;
	void *mem;
	size_t len;
	enum portal_ring_role role;
	uint8_t *data;         /* the data area: every pointer we get must be in it */
	uint32_t cap;
	uint32_t max;
	portal_msgring_t *m;
	uint64_t stamps;       /* producer: next payload stamp */
};

static int hm_attach(struct hm *x)
{
	int rc;

	if (x->m) {
		h_fail(x->h, __LINE__, "attach: a handle is still open");
		portal_msgring_detach(x->m);
		x->m = NULL;
	}
	h_start(x->h);
	rc = portal_msgring_attach(x->mem, x->len, x->role, &x->m);
	h_stop(x->h);
	if (rc == PORTAL_EPROTO)
		x->h->attach_refused++;
	else if (rc)
		h_fail(x->h, __LINE__, "attach: unexpected %d (%s)", rc, portal_strerror(rc));
	if (rc)
		x->m = NULL;
	else if (portal_msgring_max_msg(x->m) != x->max)
		h_fail(x->h, __LINE__, "attach: max_msg changed");
	return rc;
}

/* The bytes [buf, buf + len) must lie inside the data area. */
static bool in_data(const struct hm *x, const void *buf, size_t len)
{
	const uint8_t *b = buf;

	return b >= x->data && b <= x->data + x->cap && len <= (size_t)(x->data + x->cap - b);
}

/* Consumer, copying: into a heap buffer of exactly max_msg bytes. Returns
 * the length, -EAGAIN or PORTAL_EPROTO. GOOD counts messages whose payload
 * passed the check (from the hostile side's honest moments). */
static int hm_recv(struct hm *x, uint64_t *good)
{
	uint8_t *buf = malloc(x->max);
	uint64_t stamp;
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	h_start(x->h);
	n = portal_msgring_recv(x->m, buf, x->max);
	h_stop(x->h);
	if (n >= 0 && (size_t)n <= x->max) {
		if (stress_msg_check(buf, (size_t)n, &stamp))
			++*good;
		else
			x->h->garbage++;
	} else if (n == -EAGAIN) {
		x->h->empty++;
	} else if (n != PORTAL_EPROTO) {
		h_fail(x->h, __LINE__, "recv: unexpected %zd", n);
	}
	free(buf);
	return (int)n;
}

/* Consumer, zero-copy: peek, check the pointer, read every byte, release. */
static int hm_peek(struct hm *x, uint64_t *good)
{
	const void *buf;
	size_t len;
	uint64_t stamp;
	int rc;

	h_start(x->h);
	rc = portal_msgring_peek(x->m, &buf, &len);
	h_stop(x->h);
	if (rc == 0) {
		CHECK(x->h, len <= x->max && in_data(x, buf, len),
		      "peek: %zu bytes at %p outside the data area %p+%u", len, buf,
		      (void *)x->data, x->cap);
		if (len <= x->max && in_data(x, buf, len)) {
			if (stress_msg_check(buf, len, &stamp))
				++*good;
			else
				x->h->garbage++;
		}
		h_start(x->h);
		rc = portal_msgring_release(x->m);
		h_stop(x->h);
		CHECK(x->h, rc == 0, "release after peek: %d", rc);
		return (int)len;
	}
	if (rc == -EAGAIN)
		x->h->empty++;
	else if (rc != PORTAL_EPROTO)
		h_fail(x->h, __LINE__, "peek: unexpected %d", rc);
	return rc;
}

static int hm_ready(struct hm *x)
{
	int rc;

	h_start(x->h);
	rc = portal_msgring_ready(x->m);
	h_stop(x->h);
	CHECK(x->h, rc == 0 || rc == 1, "ready: %d", rc);
	return rc;
}

/* Producer: one message of LEN bytes, copying (send) or in place
 * (reserve/commit, with the pointer checked). 0, -EAGAIN, -EMSGSIZE (LEN >
 * max_msg) or PORTAL_EPROTO. */
static int hm_send(struct hm *x, uint32_t len, bool zero_copy)
{
	uint8_t *buf;
	void *dst;
	int rc;

	if (zero_copy) {
		h_start(x->h);
		rc = portal_msgring_reserve(x->m, len, &dst);
		h_stop(x->h);
		if (rc == 0) {
			CHECK(x->h, in_data(x, dst, len), "reserve: %u bytes at %p outside the ring",
			      len, dst);
			if (in_data(x, dst, len) && len >= 16)
				stress_msg_fill(dst, len, stress_stamp(1, x->stamps));
			h_start(x->h);
			rc = portal_msgring_commit(x->m, len);
			h_stop(x->h);
			CHECK(x->h, rc == 0, "commit: %d", rc);
		}
	} else {
		buf = malloc(len ? len : 1);
		if (!buf)
			return -ENOMEM;
		if (len >= 16)
			stress_msg_fill(buf, len, stress_stamp(1, x->stamps));
		h_start(x->h);
		rc = portal_msgring_send(x->m, buf, len);
		h_stop(x->h);
		free(buf);
	}
	if (rc == 0)
		x->stamps++;
	else if (rc == -EAGAIN)
		x->h->empty++;
	else if (!(rc == -EMSGSIZE && len > x->max) && rc != PORTAL_EPROTO)
		h_fail(x->h, __LINE__, "%s(%u): unexpected %d", zero_copy ? "reserve" : "send", len,
		       rc);
	return rc;
}

static void hm_quarantined(struct hm *x)
{
	const void *buf;
	size_t len;
	void *dst;
	int rc;

	x->h->quarantines++;
	CHECK(x->h, portal_msgring_quarantined(x->m), "EPROTO but not quarantined");
	if (x->role == PORTAL_ROLE_CONSUMER) {
		uint64_t good = 0;

		rc = hm_recv(x, &good);
		CHECK(x->h, rc == PORTAL_EPROTO, "quarantined recv gave %d", rc);
		h_start(x->h);
		rc = portal_msgring_peek(x->m, &buf, &len);
		h_stop(x->h);
		CHECK(x->h, rc == PORTAL_EPROTO, "quarantined peek gave %d", rc);
		CHECK(x->h, hm_ready(x) == 1, "quarantined ring not ready (it should say so)");
	} else {
		rc = hm_send(x, 16, false);
		CHECK(x->h, rc == PORTAL_EPROTO, "quarantined send gave %d", rc);
		h_start(x->h);
		rc = portal_msgring_reserve(x->m, 16, &dst);
		h_stop(x->h);
		CHECK(x->h, rc == PORTAL_EPROTO, "quarantined reserve gave %d", rc);
	}
	portal_msgring_detach(x->m);
	x->m = NULL;
}

#define MUST_QUARANTINE(x, rc, what)                                                 \
	do {                                                                         \
		MUST_PROTO((x)->h, (rc), (what));                                    \
		if ((x)->m && (rc) == PORTAL_EPROTO)                                 \
			hm_quarantined(x);                                           \
		else if ((x)->m) {                                                   \
			portal_msgring_detach((x)->m);                               \
			(x)->m = NULL;                                               \
		}                                                                    \
	} while (0)

static int honest_msg_consumer(struct peer *p, struct hm *x)
{
	struct honest *h = x->h;
	struct lockstep ls = { 1 };
	uint64_t good = 0, rng = p->seed;
	int rc, code = 0;

	if ((code = peer_barrier(p)) != 0)
		goto out;
	/* 1: three honest records, lengths intact. */
	BEGIN_TURN();
	CHECK(h, hm_recv(x, &good) == 16, "step 1: first record");
	CHECK(h, hm_peek(x, &good) == 100, "step 1: second record");
	CHECK(h, hm_recv(x, &good) == (int)x->max, "step 1: third record");
	CHECK(h, good == 3, "step 1: %llu records intact of 3", (unsigned long long)good);
	CHECK(h, hm_recv(x, &good) == -EAGAIN, "step 1: ring should be empty");
	END_TURN();
	/* 2: wrong sequence number. */
	BEGIN_TURN(); rc = hm_recv(x, &good); MUST_QUARANTINE(x, rc, "record sequence + 1"); END_TURN();
	/* 3 */
	BEGIN_TURN();
	CHECK(h, hm_attach(x) == 0, "step 3: attach after heal");
	CHECK(h, x->m && hm_recv(x, &good) == -EAGAIN, "step 3: should be empty");
	END_TURN();
	/* 4: max_msg + 1. */
	BEGIN_TURN(); rc = x->m ? hm_peek(x, &good) : -1; MUST_QUARANTINE(x, rc, "length max_msg + 1"); END_TURN();
	/* 5 */ BEGIN_TURN(); CHECK(h, hm_attach(x) == 0, "step 5: attach after heal"); END_TURN();
	/* 6: the largest length. */
	BEGIN_TURN(); rc = x->m ? hm_recv(x, &good) : -1; MUST_QUARANTINE(x, rc, "length 2^31 - 1"); END_TURN();
	/* 7: heal; honest records up to near the end. */
	BEGIN_TURN();
	CHECK(h, hm_attach(x) == 0, "step 7: attach after heal");
	good = 0;
	while (x->m && (rc = hm_recv(x, &good)) > 0) {}
	CHECK(h, rc == -EAGAIN && good > 0 && h->garbage == 0, "step 7: records damaged (%d)", rc);
	END_TURN();
	/* 8: a length that runs past the end of the ring. */
	BEGIN_TURN(); rc = x->m ? hm_recv(x, &good) : -1; MUST_QUARANTINE(x, rc, "record past the end"); END_TURN();
	/* 9 */ BEGIN_TURN(); CHECK(h, hm_attach(x) == 0, "step 9: attach after heal"); END_TURN();
	/* 10: PAD short of the end. */
	BEGIN_TURN(); rc = x->m ? hm_peek(x, &good) : -1; MUST_QUARANTINE(x, rc, "PAD short of the end"); END_TURN();
	/* 11 */ BEGIN_TURN(); CHECK(h, hm_attach(x) == 0, "step 11: attach after heal"); END_TURN();
	/* 12: two PADs in a row. */
	BEGIN_TURN(); rc = x->m ? hm_recv(x, &good) : -1; MUST_QUARANTINE(x, rc, "second PAD"); END_TURN();
	/* 13 */ BEGIN_TURN(); CHECK(h, hm_attach(x) == 0, "step 13: attach after heal"); END_TURN();
	/* 14: prod_tail is noise, the consumer does not read it; the record
	 * behind a PAD arrives intact. */
	BEGIN_TURN();
	good = 0;
	CHECK(h, x->m && hm_recv(x, &good) == (int)x->max && good == 1, "step 14: wrapped record");
	END_TURN();
	/* 15: payload noise is delivered (the ring does not judge it). */
	BEGIN_TURN();
	rc = h->garbage;
	CHECK(h, x->m && hm_peek(x, &good) == 64 && h->garbage == (uint64_t)rc + 1,
	      "step 15: noisy record");
	END_TURN();
	/* 16: a good record, then a stale header. */
	BEGIN_TURN();
	CHECK(h, x->m && hm_recv(x, &good) == 32, "step 16: good record");
	rc = x->m ? hm_recv(x, &good) : -1;
	MUST_QUARANTINE(x, rc, "stale header after a record");
	END_TURN();
	/* 17 */ BEGIN_TURN(); CHECK(h, hm_attach(x) == 0, "step 17: attach after heal"); END_TURN();

	while (honest_more(h)) {
		if (!x->m) {
			if (hm_attach(x))
				sched_yield();
			continue;
		}
		switch (pick(&rng, 3)) {
		case 0:  rc = hm_recv(x, &good); break;
		case 1:  rc = hm_peek(x, &good); break;
		default: rc = hm_ready(x) < 0 ? -1 : 0; break;
		}
		if (rc == PORTAL_EPROTO) {
			h->random_quarantines++;
			hm_quarantined(x);
		}
	}
	if ((code = honest_finish(h)) != 0)
		goto out;
	if (x->m) {
		portal_msgring_detach(x->m);
		x->m = NULL;
	}
	CHECK(h, hm_attach(x) == 0, "final attach after heal failed");
	CHECK(h, x->m && hm_recv(x, &good) == -EAGAIN, "final: healed ring should be empty");
	CHECK(h, h->random_quarantines > 0, "the random phase never tripped a check");
out:
	return code;
}

static int honest_msg_producer(struct peer *p, struct hm *x)
{
	struct honest *h = x->h;
	struct lockstep ls = { 1 };
	uint64_t rng = p->seed;
	int rc, code = 0, n;

	if ((code = peer_barrier(p)) != 0)
		goto out;
	/* 1: three records. */
	BEGIN_TURN();
	CHECK(h, hm_send(x, 16, false) == 0 && hm_send(x, 100, true) == 0 &&
		 hm_send(x, x->max, false) == 0, "step 1: send");
	END_TURN();
	/* 2: fill the ring. */
	BEGIN_TURN();
	for (n = 0; n < 100000 && (rc = hm_send(x, 200, n & 1)) == 0; n++) {}
	CHECK(h, rc == -EAGAIN && n > 0, "step 2: fill ended with %d after %d", rc, n);
	END_TURN();
	/* 3: cons_head past prod_tail. */
	BEGIN_TURN(); rc = hm_send(x, 200, false); MUST_QUARANTINE(x, rc, "cons_head = prod_tail + 8"); END_TURN();
	/* 4: healed: still full. */
	BEGIN_TURN();
	CHECK(h, hm_attach(x) == 0, "step 4: attach after heal");
	CHECK(h, x->m && hm_send(x, 200, true) == -EAGAIN, "step 4: should be full");
	END_TURN();
	/* 5: cons_head backwards. */
	BEGIN_TURN(); rc = x->m ? hm_send(x, 200, false) : -1; MUST_QUARANTINE(x, rc, "cons_head went backwards"); END_TURN();
	/* 6 */
	BEGIN_TURN();
	/* Attach may or may not refuse while the lie stood; it stands no more. */
	CHECK(h, hm_attach(x) == 0, "step 6: attach after heal");
	END_TURN();
	/* 7: cons_head = UINT64_MAX. */
	BEGIN_TURN(); rc = x->m ? hm_send(x, 200, true) : -1; MUST_QUARANTINE(x, rc, "cons_head = UINT64_MAX"); END_TURN();
	/* 8: healed and drained. */
	BEGIN_TURN();
	CHECK(h, hm_attach(x) == 0, "step 8: attach after heal");
	CHECK(h, x->m && hm_send(x, 40, false) == 0 && hm_send(x, 50, true) == 0, "step 8: send");
	END_TURN();
	/* 9: cons_seq noise: the producer does not read it. */
	BEGIN_TURN();
	CHECK(h, x->m && hm_send(x, 60, false) == 0, "step 9: send");
	CHECK(h, x->m && hm_send(x, x->max + 1, false) == -EMSGSIZE, "step 9: max_msg + 1");
	END_TURN();
	/* 10 */ BEGIN_TURN(); END_TURN();

	while (honest_more(h)) {
		if (!x->m) {
			if (hm_attach(x))
				sched_yield();
			continue;
		}
		rc = hm_send(x, pick(&rng, 16) ? 16 + pick(&rng, x->max - 15) : pick(&rng, x->max + 8),
			     pick(&rng, 2));
		if (rc == PORTAL_EPROTO) {
			h->random_quarantines++;
			hm_quarantined(x);
		}
	}
	if ((code = honest_finish(h)) != 0)
		goto out;
	if (x->m) {
		portal_msgring_detach(x->m);
		x->m = NULL;
	}
	CHECK(h, hm_attach(x) == 0, "final attach after heal failed");
	rc = x->m ? hm_send(x, 16, false) : -1;
	CHECK(h, rc == 0 || rc == -EAGAIN, "final send gave %d", rc);
	CHECK(h, h->random_quarantines > 0, "the random phase never tripped a check");
out:
	return code;
}

int honest_msg(struct peer *p)
{
	struct portal_object_info info;
	struct honest h;
	struct hm x = { 0 };
	int code;

	honest_init(&h, p);
	if (portal_region_lookup(p->reg, STRESS_QUEUE_NAME, PORTAL_OBJ_MSGRING, &info))
		return STRESS_EXIT_SETUP;
	x.h = &h;
	x.mem = info.addr;
	x.len = (size_t)info.size;
	x.data = (uint8_t *)info.addr + PORTAL_MSGRING_HDR_SIZE;
	x.cap = (uint32_t)info.param[0];
	x.max = (uint32_t)info.param[1];
	x.role = strcmp(p->kind, "msg_cons") == 0 ? PORTAL_ROLE_CONSUMER : PORTAL_ROLE_PRODUCER;
	honest_guard(&h, &info, 1);
	if (hm_attach(&x)) {
		honest_unguard(&h);
		return STRESS_EXIT_SETUP;
	}
	code = x.role == PORTAL_ROLE_CONSUMER ? honest_msg_consumer(p, &x)
					      : honest_msg_producer(p, &x);
	honest_report(&h, "random_quarantines", h.random_quarantines);
	if (x.m)
		portal_msgring_detach(x.m);
	honest_unguard(&h);
	return code;
}
