/* SPDX-License-Identifier: MIT */
/*
 * Message rings: variable-length records in one SPSC byte ring.
 *
 * Each record is an 8-byte header word and its payload, padded to 8 bytes.
 * The header carries the length and a sequence number and is stored last,
 * with release, so the consumer learns that a record is ready from the
 * record itself: one cache line to wait on, not an index and then a slot.
 *
 * Invariant that makes this safe: the header word at the consumer's position
 * is either 0 (nothing yet) or the next record's header. The producer keeps
 * it so by zeroing the header word just past each record before publishing
 * the record (it reserves 8 bytes of slack for that), so stale bytes of an
 * older lap are never mistaken for a record. Anything else at that position
 * is a protocol violation. A record that does not fit before the end of the
 * ring is preceded by a PAD record that covers the rest of the ring.
 *
 * The consumer publishes cons_head when it releases; the producer reads it
 * only when its cached copy says the ring is full.
 */
#include <stdlib.h>
#include <string.h>

#include "common/atomic_internal.h"
#include "common/log_internal.h"
#include "portal/ring.h"
#include "ring/ring_internal.h"

struct portal_msgring {
	struct portal_msgring_hdr *hdr;
	uint8_t *data;
	uint32_t capacity;     /* private copies of the immutable header */
	uint32_t mask;
	uint32_t max_msg;
	uint32_t role;
	uint64_t pos;          /* producer: bytes written; consumer: bytes consumed */
	uint64_t peer;         /* producer: cached cons_head */
	uint32_t seq;          /* next sequence number to write / expect */
	bool open;             /* producer: a reservation is open */
	bool peeked;           /* consumer: a message is being looked at */
	bool quarantined;
	uint32_t res_len;      /* reserved payload length */
	uint64_t res_pos;      /* position of the reserved record's header */
	uint32_t pad_len;      /* bytes of PAD record before it (0: none) */
	uint32_t peek_len;     /* record bytes to release, pad included */
	uint32_t peek_seq;     /* sequence number expected after release */
	struct portal_ring_stats st;
};

static inline uint32_t rec_size(uint32_t len)
{
	return PORTAL_MSG_HDR_SIZE + ((len + PORTAL_MSG_ALIGN - 1) & ~(PORTAL_MSG_ALIGN - 1));
}

static inline uint32_t next_seq(uint32_t s)
{
	return s + 1 ? s + 1 : 1; /* 0 never appears: a zero word means "empty" */
}

static inline _Atomic uint64_t *hdr_word(const portal_msgring_t *m, uint64_t pos)
{
	return (_Atomic uint64_t *)(m->data + (pos & m->mask));
}

static bool params_ok(uint32_t capacity, uint32_t max_msg)
{
	return ring_is_pow2(capacity) && capacity >= 256 && capacity <= (1u << 30) &&
	       max_msg > 0 && max_msg <= capacity / 2 - 2 * PORTAL_MSG_HDR_SIZE;
}

static uint32_t default_max(const struct portal_msgring_params *p)
{
	return p->max_msg ? p->max_msg : p->capacity / 4;
}

size_t portal_msgring_memsize(const struct portal_msgring_params *p)
{
	if (!p || p->flags || !params_ok(p->capacity, default_max(p)))
		return 0;
	return PORTAL_MSGRING_HDR_SIZE + (size_t)p->capacity;
}

int portal_msgring_init(void *mem, size_t len, const struct portal_msgring_params *p)
{
	struct portal_msgring_hdr *h = mem;
	size_t need = portal_msgring_memsize(p);

	if (!mem || !need || len < need || (uintptr_t)mem % PORTAL_CACHELINE)
		return -EINVAL;
	memset(mem, 0, need); /* every header word 0: nothing published */
	h->magic = PORTAL_MSGRING_MAGIC;
	h->version = 1;
	h->capacity = p->capacity;
	h->max_msg = default_max(p);
	h->obj_size = need;
	return 0;
}

static int quarantine(portal_msgring_t *m, const char *why, uint64_t seen)
{
	if (!m->quarantined)
		portal_log(PORTAL_LOG_ERROR, "msgring %p quarantined: %s (peer wrote %#llx)",
			   (void *)m->hdr, why, (unsigned long long)seen);
	m->quarantined = true;
	m->st.proto_errors++;
	return PORTAL_EPROTO;
}

/* ---- reading records ---- */

/* One record as found at a position: a PAD (if any) and the record. */
struct rec_view {
	uint32_t off;       /* payload's record header offset in the data */
	uint32_t len;       /* payload bytes */
	uint32_t bytes;     /* record bytes from the position, PAD included */
	uint32_t seq_after; /* sequence number of the next record */
	uint64_t word;      /* the header word last read (for the log) */
	const char *why;    /* protocol violation, when 1 is returned */
};

/*
 * Read the record at POS, expecting sequence number SEQ, without changing
 * anything. Returns 0 (*V filled), -EAGAIN (nothing published there yet),
 * or 1: not a valid record (V->why says why).
 */
static int read_record(const portal_msgring_t *m, uint64_t pos, uint32_t seq,
		       struct rec_view *v)
{
	uint32_t off = (uint32_t)pos & m->mask, lf, n;
	uint32_t bytes = 0;
	uint64_t w;

	for (;;) {
		/* A1: header, then payload; pairs with R1 in commit. Read once. */
		w = atomic_load_explicit(hdr_word(m, pos + bytes), memory_order_acquire);
		v->word = w;
		if (w == 0)
			return -EAGAIN;
		if ((uint32_t)(w >> 32) != seq) {
			v->why = "record sequence number";
			return 1;
		}
		lf = (uint32_t)w;
		if (!(lf & PORTAL_MSG_PAD))
			break;
		/* PAD: must run exactly to the end of the ring, and only once. */
		n = lf & PORTAL_MSG_LEN_MASK;
		if (bytes || n != m->capacity - off - PORTAL_MSG_HDR_SIZE) {
			v->why = "padding record";
			return 1;
		}
		bytes = m->capacity - off;
		seq = next_seq(seq);
		off = 0;
	}
	n = lf & PORTAL_MSG_LEN_MASK;
	if (n > m->max_msg || rec_size(n) > m->capacity - off) {
		v->why = "record length";
		return 1;
	}
	v->off = off;
	v->len = n;
	v->bytes = bytes + rec_size(n);
	v->seq_after = next_seq(seq);
	return 0;
}

/*
 * A restarted producer: commit publishes the record header (the commit
 * point), then prod_seq, then prod_tail. A predecessor killed between the
 * header and prod_tail left one committed record past prod_tail, with
 * prod_seq either still its number or already the next; the word at
 * prod_tail is 0 otherwise (commit zeroes the word after each record).
 * Step past such a record, or it would be overwritten - lost, and the
 * consumer would see its sequence number twice. CONS: cons_head.
 */
static int resume_producer(portal_msgring_t *m, uint64_t cons)
{
	struct rec_view v;
	uint32_t s = m->seq;

	if (read_record(m, m->pos, s, &v) == 0) {
		/* Killed before prod_seq: the record has number s. */
	} else if ((uint32_t)(v.word >> 32) != 0 &&
		   read_record(m, m->pos, (uint32_t)(v.word >> 32), &v) == 0 &&
		   v.seq_after == s) {
		/* Killed after prod_seq, before prod_tail. */
	} else {
		return v.word == 0 ? 0 : PORTAL_EPROTO;
	}
	if (m->pos + v.bytes - cons > m->capacity)
		return PORTAL_EPROTO;
	m->pos += v.bytes;
	m->seq = v.seq_after;
	/* R3, for the predecessor: sequence, then tail. */
	atomic_store_explicit(&m->hdr->prod_seq, m->seq, memory_order_relaxed);
	atomic_store_explicit(&m->hdr->prod_tail, m->pos, memory_order_release);
	return 0;
}

/*
 * A restarted consumer: release stores cons_seq, then cons_head. A
 * predecessor killed between the two released a record whose number is
 * cons_seq minus one (or two, with a PAD) while cons_head still points at
 * it; it was released, so step past it. Anything else the first peek
 * judges, as always.
 */
static int resume_consumer(portal_msgring_t *m)
{
	struct rec_view v;
	uint64_t w;

	/* Acquire: pairs with R1; read once, judged by read_record again. */
	w = atomic_load_explicit(hdr_word(m, m->pos), memory_order_acquire);
	if (w == 0 || (uint32_t)(w >> 32) == m->seq)
		return 0;
	if (read_record(m, m->pos, (uint32_t)(w >> 32), &v) == 0 && v.seq_after == m->seq) {
		m->pos += v.bytes;
		/* R2, for the predecessor; the bytes were released. */
		atomic_store_explicit(&m->hdr->cons_head, m->pos, memory_order_release);
	}
	return 0;
}

int portal_msgring_attach(void *mem, size_t len, enum portal_ring_role role,
			  portal_msgring_t **out)
{
	struct portal_msgring_hdr h;
	portal_msgring_t *m;
	uint64_t prod, cons;
	int rc;

	if (!mem || !out || (role != PORTAL_ROLE_PRODUCER && role != PORTAL_ROLE_CONSUMER) ||
	    (uintptr_t)mem % PORTAL_CACHELINE)
		return -EINVAL;
	if (len < PORTAL_MSGRING_HDR_SIZE)
		return PORTAL_EPROTO;
	memcpy(&h, mem, offsetof(struct portal_msgring_hdr, pad0));
	if (h.magic != PORTAL_MSGRING_MAGIC || h.version != 1 || !params_ok(h.capacity, h.max_msg) ||
	    h.obj_size != PORTAL_MSGRING_HDR_SIZE + (uint64_t)h.capacity || h.obj_size > len)
		return PORTAL_EPROTO;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->hdr = mem;
	m->data = (uint8_t *)mem + PORTAL_MSGRING_HDR_SIZE;
	m->capacity = h.capacity;
	m->mask = h.capacity - 1;
	m->max_msg = h.max_msg;
	m->role = role;
	/* Resume where this side's last incarnation left off (0 and 1 on a
	 * fresh ring). Acquire: pairs with R2 / R3. */
	prod = atomic_load_explicit(&m->hdr->prod_tail, memory_order_acquire);
	cons = atomic_load_explicit(&m->hdr->cons_head, memory_order_acquire);
	if (prod - cons > m->capacity || prod % PORTAL_MSG_ALIGN || cons % PORTAL_MSG_ALIGN) {
		free(m);
		return PORTAL_EPROTO;
	}
	if (role == PORTAL_ROLE_PRODUCER) {
		m->pos = prod;
		m->peer = cons;
		m->seq = atomic_load_explicit(&m->hdr->prod_seq, memory_order_relaxed);
	} else {
		m->pos = cons;
		m->seq = atomic_load_explicit(&m->hdr->cons_seq, memory_order_relaxed);
	}
	if (m->seq == 0)
		m->seq = 1;
	rc = role == PORTAL_ROLE_PRODUCER ? resume_producer(m, cons) : resume_consumer(m);
	if (rc) {
		free(m);
		return rc;
	}
	*out = m;
	return 0;
}

void portal_msgring_detach(portal_msgring_t *m)
{
	free(m);
}

/* ---- producer ---- */

int portal_msgring_reserve(portal_msgring_t *m, size_t len, void **buf)
{
	uint64_t pos, cons;
	uint32_t off, to_end, need, pad = 0;

	if (unlikely(m->quarantined))
		return PORTAL_EPROTO;
	if (unlikely(m->role != PORTAL_ROLE_PRODUCER || m->open || !buf))
		return -EINVAL;
	if (unlikely(len > m->max_msg))
		return -EMSGSIZE;
	pos = m->pos;
	off = (uint32_t)pos & m->mask;
	to_end = m->capacity - off;
	need = rec_size((uint32_t)len);
	if (need > to_end)
		pad = to_end; /* PAD to the end, record at offset 0 */
	/* + 8: room to zero the header word after the record. */
	if (unlikely(m->peer + m->capacity - pos < pad + need + PORTAL_MSG_HDR_SIZE)) {
		/* A2: the consumer is done with the bytes below cons_head;
		 * pairs with R2 in release. */
		cons = atomic_load_explicit(&m->hdr->cons_head, memory_order_acquire);
		if (PORTAL_NEVER(cons - m->peer > m->capacity || pos - cons > m->capacity))
			return quarantine(m, "consumer head out of range", cons);
		m->peer = cons;
		if (m->peer + m->capacity - pos < pad + need + PORTAL_MSG_HDR_SIZE) {
			m->st.full++;
			return -EAGAIN;
		}
	}
	m->open = true;
	m->pad_len = pad;
	m->res_pos = pos + pad;
	m->res_len = (uint32_t)len;
	*buf = m->data + ((m->res_pos & m->mask) + PORTAL_MSG_HDR_SIZE);
	return 0;
}

int portal_msgring_commit(portal_msgring_t *m, size_t len)
{
	uint64_t end;
	uint32_t seq;

	if (unlikely(m->quarantined))
		return PORTAL_EPROTO;
	if (unlikely(m->role != PORTAL_ROLE_PRODUCER || !m->open || len > m->res_len))
		return -EINVAL;
	seq = m->seq;
	if (m->pad_len)
		seq = next_seq(seq); /* the PAD record takes the first number */
	end = m->res_pos + rec_size((uint32_t)len);
	/* Keep the invariant: the word after this record reads 0 until the
	 * next record is published. Relaxed: ordered by R1 below. */
	atomic_store_explicit(hdr_word(m, end), 0, memory_order_relaxed);
	/* R1: payload and the zeroed next header, then this header; pairs
	 * with A1 in peek. */
	atomic_store_explicit(hdr_word(m, m->res_pos), ((uint64_t)seq << 32) | (uint32_t)len,
			      memory_order_release);
	if (m->pad_len)
		/* R1 again: the record at offset 0 is complete before the PAD
		 * that sends the consumer there. */
		atomic_store_explicit(hdr_word(m, m->pos),
				      ((uint64_t)m->seq << 32) | PORTAL_MSG_PAD |
					      (m->pad_len - PORTAL_MSG_HDR_SIZE),
				      memory_order_release);
	m->seq = next_seq(seq);
	m->pos = end;
	m->open = false;
	/* R3: our position for observers and a restarted producer; the
	 * consumer never reads it. Sequence first, then the tail. */
	atomic_store_explicit(&m->hdr->prod_seq, m->seq, memory_order_relaxed);
	atomic_store_explicit(&m->hdr->prod_tail, end, memory_order_release);
	m->st.enqueued++;
	return 0;
}

int portal_msgring_send(portal_msgring_t *m, const void *buf, size_t len)
{
	void *dst;
	int rc = portal_msgring_reserve(m, len, &dst);

	if (rc)
		return rc;
	memcpy(dst, buf, len);
	return portal_msgring_commit(m, len);
}

/* ---- consumer ---- */

int portal_msgring_peek(portal_msgring_t *m, const void **buf, size_t *len)
{
	struct rec_view v;
	int rc;

	if (unlikely(m->quarantined))
		return PORTAL_EPROTO;
	if (unlikely(m->role != PORTAL_ROLE_CONSUMER || !buf || !len))
		return -EINVAL;
	m->peek_len = 0;
	m->peeked = false;
	rc = read_record(m, m->pos, m->seq, &v);
	if (rc == -EAGAIN) {
		/* Nothing yet. Touch the line after the header too, so that
		 * when the record lands both of its lines are fetched at once
		 * rather than one after the other. */
		__builtin_prefetch(m->data + ((((uint32_t)m->pos & m->mask) + PORTAL_CACHELINE) &
					      m->mask & ~(uint32_t)(PORTAL_CACHELINE - 1)));
		m->st.empty++;
		return -EAGAIN;
	}
	if (PORTAL_NEVER(rc))
		return quarantine(m, v.why, v.word);
	m->peek_len = v.bytes;
	m->peek_seq = v.seq_after;
	m->peeked = true;
	*buf = m->data + v.off + PORTAL_MSG_HDR_SIZE;
	*len = v.len;
	return 0;
}

int portal_msgring_release(portal_msgring_t *m)
{
	if (unlikely(m->quarantined))
		return PORTAL_EPROTO;
	if (unlikely(m->role != PORTAL_ROLE_CONSUMER || !m->peeked))
		return -EINVAL;
	m->pos += m->peek_len;
	m->seq = m->peek_seq;
	m->peeked = false;
	/* Relaxed: read only by a restarted consumer, after R2's acquire. */
	atomic_store_explicit(&m->hdr->cons_seq, m->seq, memory_order_relaxed);
	/* R2: payload read, then cons_head; pairs with A2 in reserve. */
	atomic_store_explicit(&m->hdr->cons_head, m->pos, memory_order_release);
	m->st.dequeued++;
	return 0;
}

ssize_t portal_msgring_recv(portal_msgring_t *m, void *buf, size_t cap)
{
	const void *src;
	size_t len;
	int rc = portal_msgring_peek(m, &src, &len);

	if (rc)
		return rc;
	if (len > cap) {
		/* Unconsumed and not left peeked: the next recv (or peek)
		 * finds it again; a release now is refused. */
		m->peeked = false;
		return -EMSGSIZE;
	}
	memcpy(buf, src, len);
	portal_msgring_release(m);
	return (ssize_t)len;
}

int portal_msgring_ready(portal_msgring_t *m)
{
	if (m->quarantined)
		return 1;
	/* Acquire: pairs with R1, so a later peek sees what made us ready. */
	return atomic_load_explicit(hdr_word(m, m->pos), memory_order_acquire) != 0;
}

int portal_msgring_position(const portal_msgring_t *m, uint64_t *pos)
{
	if (!m || !pos || m->role != PORTAL_ROLE_CONSUMER || !m->peeked)
		return -EINVAL;
	*pos = m->pos;
	return 0;
}

uint32_t portal_msgring_max_msg(const portal_msgring_t *m) { return m->max_msg; }
bool portal_msgring_quarantined(const portal_msgring_t *m) { return m->quarantined; }
void portal_msgring_stats(const portal_msgring_t *m, struct portal_ring_stats *st) { *st = m->st; }

static int msgring_init_cb(void *mem, size_t len, uint64_t offset, void *params)
{
	(void)offset;
	return portal_msgring_init(mem, len, params);
}

int portal_msgring_create(portal_region_t *reg, const char *name,
			  const struct portal_msgring_params *p, uint32_t owner_side)
{
	uint64_t param[6] = { 0 };
	size_t size = portal_msgring_memsize(p);

	if (!size)
		return -EINVAL;
	param[0] = p->capacity, param[1] = default_max(p);
	return ring_region_place(reg, name, PORTAL_OBJ_MSGRING, size, owner_side, param,
				 msgring_init_cb, p);
}

int portal_msgring_open(portal_region_t *reg, const char *name, enum portal_ring_role role,
			portal_msgring_t **out)
{
	void *mem;
	size_t len;
	int rc = ring_region_find(reg, name, PORTAL_OBJ_MSGRING, &mem, &len);

	return rc ? rc : portal_msgring_attach(mem, len, role, out);
}

