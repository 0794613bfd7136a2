/* SPDX-License-Identifier: MIT */
/*
 * msgring.c - libFuzzer target: a message ring against a hostile peer.
 *
 * The input picks the capacity, max_msg, where the byte positions and the
 * sequence numbers start (including just below 2^64 and just below the
 * 32-bit sequence wrap, which skips 0), and which side is honest; the
 * script (fuzz_format.h, enum fzm_op) interleaves the honest side's calls
 * (reserve/commit with a shorter or a too-long length, send, peek, release,
 * recv into buffers of every size, ready, calls of the other role,
 * re-attach) with the peer's: plausible records (with PAD at the wrap) or
 * plausible consumption, forged record header words (sequence, PAD bit and
 * length chosen around the values that matter), forged indices and
 * sequence words, payload bytes.
 *
 * Invariants:
 *
 *  always  every result is documented for the call; peek, ready and
 *          reserve write nothing; a release moves cons_head past exactly
 *          the record (and PAD) the peek returned and stores the next
 *          sequence; a commit writes exactly its header, the zero word
 *          after the record and, at a wrap, the PAD header, with the right
 *          sequence numbers, and moves prod_tail/prod_seq to match; a
 *          reserved buffer and a peeked message lie inside the data area;
 *          PORTAL_EPROTO writes nothing and sticks; attach refuses exactly
 *          as region-format.md 7.4 says; ASan guards the ring and every
 *          buffer.
 *  untainted  never PORTAL_EPROTO; the consumer gets exactly the records
 *          the peer published, in order, each once, -EAGAIN only when
 *          there are none, and ready agrees; the producer is refused room
 *          (-EAGAIN) exactly when a record would not fit, and the records
 *          it publishes are found intact, in order, by a plausible
 *          consumer, with the zeroed next word after the last one.
 */
#include "fuzz/fuzz_format.h"
#include "fuzz/fuzz_util.h"

#include "portal/ring.h"

FZ_DEFINE_GLOBALS

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	fz_init();
	return 0;
}

static const uint64_t bases[FZ_NBASES] = {
	0, (UINT64_C(1) << 32) - 24, (UINT64_C(1) << 63) - 8, UINT64_C(0) - 1024,
};
static const uint32_t seq_bases[4] = { 1, 0xFFFFFFF0u, 0, 0x7FFFFFFEu };

#define OFF_PROD_TAIL 128u
#define OFF_PROD_SEQ  136u
#define OFF_CONS_HEAD 256u
#define OFF_CONS_SEQ  264u
#define QMAX 1024u

struct rec {
	uint64_t first;  /* PAD header, or the record itself */
	uint64_t at;     /* record header */
	uint64_t end;    /* next record */
	uint32_t len, seq;
	uint32_t pad_seq; /* the PAD record's, when first != at */
	uint64_t sum;    /* payload hash (honest producer) */
};

struct st {
	uint8_t *mem, *data, *snap;
	size_t len;
	struct portal_msgring_hdr *h;
	uint32_t cap, max_msg;
	bool hprod;
	portal_msgring_t *m;
	bool quar, tainted;
	bool dirty;          /* forged data words (or a tainted producer) since the last resync */
	uint64_t nonce;
	/* the peer: producer position and sequence, or consumer's */
	uint64_t ppos;
	uint32_t pseq;
	struct rec q[QMAX];
	unsigned qh, qn;
	/* honest consumer: what the last peek returned */
	bool peeked;
	bool peek_unknown;   /* peeked, but where it ends is not known here */
	uint64_t peek_new_pos;
	uint32_t peek_seq;
	/* honest producer: the open reservation */
	bool open;
	uint64_t res_pos, res_at;
	uint32_t res_len;
};

static uint32_t next_seq(uint32_t s)
{
	return s + 1 ? s + 1 : 1;
}

static uint32_t rec_size(uint32_t len)
{
	return 8 + ((len + 7) & ~7u);
}

static uint64_t ld(_Atomic uint64_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static uint32_t ld32(_Atomic uint32_t *p) { return atomic_load_explicit(p, memory_order_relaxed); }
static void st64(_Atomic uint64_t *p, uint64_t v) { atomic_store_explicit(p, v, memory_order_relaxed); }
static void st32(_Atomic uint32_t *p, uint32_t v) { atomic_store_explicit(p, v, memory_order_relaxed); }

static _Atomic uint64_t *word(struct st *s, uint64_t pos)
{
	return (_Atomic uint64_t *)(void *)(s->data + (pos & (s->cap - 1)));
}

static uint64_t hash(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;

	while (n--)
		h = (h ^ *p++) * 0x100000001b3u;
	return h;
}

static struct rec *q_head(struct st *s) { return s->qn ? &s->q[s->qh] : NULL; }

static void q_pop(struct st *s)
{
	s->qh = (s->qh + 1) % QMAX;
	s->qn--;
}

static void q_push(struct st *s, const struct rec *r)
{
	if (s->qn == QMAX) {
		s->dirty = true; /* a tainted producer can outrun any model */
		return;
	}
	s->q[(s->qh + s->qn) % QMAX] = *r;
	s->qn++;
}

static void before_call(struct st *s)
{
	if (s->hprod && ld(&s->h->cons_head) != s->ppos)
		s->tainted = true;
	if (s->tainted)
		s->dirty = true;
	memcpy(s->snap, s->mem, s->len);
}

static void check_diff(struct st *s, const struct fz_ranges *ok, const char *what)
{
	size_t at = fz_diff(s->mem, s->snap, s->len, ok);

	FZ_CHECK(at == SIZE_MAX, "%s wrote byte %zu of the ring", what, at);
}

/* Quarantine bookkeeping; true when RC is a result to check further. */
static bool judge(struct st *s, int rc, const char *what)
{
	if (s->quar) {
		FZ_CHECK(rc == PORTAL_EPROTO, "%s on a quarantined handle: %d", what, rc);
		check_diff(s, NULL, what);
		return false;
	}
	if (rc == PORTAL_EPROTO) {
		FZ_CHECK(s->tainted, "%s: PORTAL_EPROTO but the peer stayed plausible", what);
		check_diff(s, NULL, what);
		s->quar = true;
		FZ_CHECK(portal_msgring_quarantined(s->m), "%s: EPROTO but not quarantined", what);
		return false;
	}
	FZ_CHECK(!portal_msgring_quarantined(s->m), "%s: quarantined without EPROTO", what);
	return true;
}

/* Where a record of LEN goes from POS: the PAD bytes before it. */
static uint32_t pad_for(struct st *s, uint64_t pos, uint32_t len)
{
	uint32_t off = (uint32_t)(pos & (s->cap - 1));

	return rec_size(len) > s->cap - off ? s->cap - off : 0;
}

/* ------------------------------------------------------------------ */
/* Honest consumer                                                      */
/* ------------------------------------------------------------------ */

static uint32_t cons_seq_now(struct st *s)
{
	uint32_t q = ld32(&s->h->cons_seq);

	return q ? q : 1;
}

/* After a successful peek of LEN at BUF from the consumer's position. */
static void check_peeked(struct st *s, const void *buf, size_t len, const char *what)
{
	uint64_t pos = ld(&s->h->cons_head);
	uint32_t off = (uint32_t)(pos & (s->cap - 1));
	const uint8_t *b = buf;
	size_t roff;

	FZ_CHECK(b >= s->data + 8 && b <= s->data + s->cap && len <= s->max_msg &&
		 len <= (size_t)(s->data + s->cap - b), "%s: message [%td, +%zu) outside the data",
		 what, b - s->data, len);
	roff = (size_t)(b - s->data) - 8;
	FZ_CHECK(roff % 8 == 0 && (roff == off || roff == 0), "%s: record at %zu, position %u",
		 what, roff, off);
	s->peek_new_pos = pos + (roff == off ? 0 : s->cap - off) + rec_size((uint32_t)len);
	s->peek_seq = (uint32_t)(ld(word(s, s->peek_new_pos - rec_size((uint32_t)len))) >> 32);
	if (!s->tainted) {
		struct rec *r = q_head(s);

		FZ_CHECK(r, "%s: a message, but the peer published none", what);
		FZ_CHECK((r->at & (s->cap - 1)) == roff && r->len == len && r->end == s->peek_new_pos,
			 "%s: got [%zu, +%zu), the next record is [%llu, +%u)", what, roff, len,
			 (unsigned long long)(r->at & (s->cap - 1)), r->len);
	}
}

static void check_released(struct st *s, const char *what)
{
	struct fz_ranges ok = { .n = 0 };

	fz_allow(&ok, OFF_CONS_HEAD, OFF_CONS_HEAD + 8);
	fz_allow(&ok, OFF_CONS_SEQ, OFF_CONS_SEQ + 4);
	check_diff(s, &ok, what);
	s->peeked = false;
	if (s->peek_unknown) {
		uint64_t moved = ld(&s->h->cons_head) - atomic_load_explicit(
			&((struct portal_msgring_hdr *)(void *)s->snap)->cons_head, memory_order_relaxed);

		FZ_CHECK(moved > 0 && moved <= s->cap && moved % 8 == 0, "%s moved cons_head by %llu",
			 what, (unsigned long long)moved);
		return;
	}
	FZ_CHECK(ld(&s->h->cons_head) == s->peek_new_pos, "%s: cons_head %llu, expected %llu", what,
		 (unsigned long long)ld(&s->h->cons_head), (unsigned long long)s->peek_new_pos);
	FZ_CHECK(ld32(&s->h->cons_seq) == next_seq(s->peek_seq), "%s: cons_seq %u after record %u",
		 what, ld32(&s->h->cons_seq), s->peek_seq);
	if (!s->tainted)
		q_pop(s);
}

static void c_peek(struct st *s, bool release)
{
	const void *buf = NULL;
	size_t len = 0;
	int rc;

	before_call(s);
	rc = portal_msgring_peek(s->m, &buf, &len);
	FZ_TRACE("peek: %d len %zu\n", rc, len);
	s->peeked = false;
	if (!judge(s, rc, "peek"))
		return;
	FZ_CHECK(rc == 0 || rc == -EAGAIN, "peek: %d", rc);
	check_diff(s, NULL, "peek");
	if (rc == -EAGAIN) {
		FZ_CHECK(s->tainted || !q_head(s), "peek: -EAGAIN with %u records published", s->qn);
		return;
	}
	check_peeked(s, buf, len, "peek");
	(void)hash(buf, len); /* every byte readable */
	s->peeked = true;
	s->peek_unknown = false;
	if (release) {
		before_call(s);
		rc = portal_msgring_release(s->m);
		FZ_TRACE("release: %d\n", rc);
		if (judge(s, rc, "release")) {
			FZ_CHECK(rc == 0, "release after a peek: %d", rc);
			check_released(s, "release");
		}
	}
}

static void c_release(struct st *s)
{
	int rc;

	before_call(s);
	rc = portal_msgring_release(s->m);
	FZ_TRACE("release: %d\n", rc);
	if (!judge(s, rc, "release"))
		return;
	if (!s->peeked) {
		FZ_CHECK(rc == -EINVAL, "release without a peek: %d", rc);
		check_diff(s, NULL, "release");
		return;
	}
	FZ_CHECK(rc == 0, "release: %d", rc);
	check_released(s, "release");
}

static void c_recv(struct st *s, size_t cap)
{
	uint8_t *buf = malloc(cap ? cap : 1);
	uint64_t pos = ld(&s->h->cons_head);
	ssize_t n;

	before_call(s);
	n = portal_msgring_recv(s->m, buf, cap);
	FZ_TRACE("recv(%zu): %zd\n", cap, n);
	s->peeked = false;
	if (!judge(s, (int)n, "recv"))
		goto out;
	FZ_CHECK(n >= 0 || n == -EAGAIN || n == -EMSGSIZE, "recv: %zd", n);
	if (n == -EAGAIN) {
		check_diff(s, NULL, "recv");
		FZ_CHECK(s->tainted || !q_head(s), "recv: -EAGAIN with %u records published", s->qn);
	} else if (n == -EMSGSIZE) {
		/* The message stays unconsumed and is not peeked: a later
		 * recv with a larger buffer, or a peek, gets it. */
		check_diff(s, NULL, "recv");
		FZ_CHECK(s->tainted || (q_head(s) && q_head(s)->len > cap), "recv: -EMSGSIZE");
	} else {
		/* Where the record was, from the bytes the call saw. */
		uint32_t off = (uint32_t)(pos & (s->cap - 1)), roff = off, pad = 0;
		uint64_t w;

		memcpy(&w, s->snap + 384 + off, 8);
		if (w & PORTAL_MSG_PAD) {
			pad = s->cap - off;
			roff = 0;
		}
		memcpy(&w, s->snap + 384 + roff, 8);
		FZ_CHECK((size_t)n <= cap && (size_t)n <= s->max_msg, "recv copied %zd into %zu", n, cap);
		FZ_CHECK(roff + 8 + (size_t)n <= s->cap, "recv: message runs past the data");
		FZ_CHECK(!memcmp(buf, s->snap + 384 + roff + 8, (size_t)n), "recv: bytes differ");
		FZ_CHECK((uint32_t)w == (uint32_t)n, "recv: %zd, the header says %u", n, (uint32_t)w);
		s->peek_unknown = false;
		s->peek_new_pos = pos + pad + rec_size((uint32_t)n);
		s->peek_seq = (uint32_t)(w >> 32);
		if (!s->tainted) {
			struct rec *r = q_head(s);

			FZ_CHECK(r && r->len == (uint32_t)n && r->end == s->peek_new_pos,
				 "recv: not the next record");
		}
		check_released(s, "recv");
	}
out:
	free(buf);
}

static void c_ready(struct st *s)
{
	int rc;

	before_call(s);
	rc = portal_msgring_ready(s->m);
	check_diff(s, NULL, "ready");
	FZ_CHECK(rc == 0 || rc == 1, "ready: %d", rc);
	if (s->quar)
		FZ_CHECK(rc == 1, "ready on a quarantined handle: %d", rc);
	else if (!s->tainted)
		FZ_CHECK(rc == (q_head(s) != NULL), "ready: %d with %u records", rc, s->qn);
}

/* The peer producer publishes a record of LEN, as an honest one would. */
static void p_send(struct st *s, uint32_t len)
{
	uint64_t ch = ld(&s->h->cons_head), pos = s->ppos;
	uint32_t pad = pad_for(s, pos, len), need = rec_size(len), seq = s->pseq, rseq;
	struct rec r;

	if ((int64_t)(ch - pos) > 0 || pos - ch > s->cap ||
	    (uint64_t)pad + need + 8 > s->cap - (pos - ch))
		return;
	rseq = pad ? next_seq(seq) : seq;
	r.first = pos;
	r.at = pos + pad;
	r.end = r.at + need;
	r.len = len;
	r.seq = rseq;
	r.pad_seq = seq;
	r.sum = 0;
	fz_fill(s->data + (r.at & (s->cap - 1)) + 8, len, s->nonce ^ fz_mix(r.at));
	st64(word(s, r.end), 0);
	st64(word(s, r.at), (uint64_t)rseq << 32 | len);
	if (pad)
		st64(word(s, pos), (uint64_t)seq << 32 | PORTAL_MSG_PAD | (pad - 8));
	s->pseq = next_seq(rseq);
	s->ppos = r.end;
	st64(&s->h->prod_tail, s->ppos);
	st32(&s->h->prod_seq, s->pseq);
	q_push(s, &r);
	FZ_TRACE("peer sends %u at %llu (pad %u) seq %u\n", len, (unsigned long long)r.at, pad, rseq);
}

/* A header word chosen to hurt, for the word at POS. */
static uint64_t forged_header(struct st *s, struct fz *in, uint64_t pos)
{
	uint8_t a = fz_u8(in), b = fz_u8(in);
	uint32_t off = (uint32_t)(pos & (s->cap - 1)), expect = cons_seq_now(s), seq, len;

	switch (a % 6) {
	case 0:  seq = expect; break;
	case 1:  seq = expect + 1; break;
	case 2:  seq = expect - 1; break;
	case 3:  seq = s->pseq; break;
	case 4:  seq = 0; break;
	default: seq = fz_u32(in); break;
	}
	switch (b % 10) {
	case 0:  len = 0; break;
	case 1:  len = s->max_msg; break;
	case 2:  len = s->max_msg + 1; break;
	case 3:  len = s->cap - off - 8; break;           /* an exact PAD */
	case 4:  len = s->cap - off - 8 + 8; break;
	case 5:  len = s->cap - off - 16; break;
	case 6:  len = s->cap - off; break;
	case 7:  len = PORTAL_MSG_LEN_MASK; break;
	case 8:  len = fz_u8(in); break;
	default: len = fz_u32(in); break;
	}
	len &= PORTAL_MSG_LEN_MASK;
	if (a & 0x80)
		len |= PORTAL_MSG_PAD;
	return (uint64_t)seq << 32 | len;
}

static void p_word(struct st *s, struct fz *in)
{
	uint8_t where = fz_u8(in);
	uint64_t pos;

	switch (where % 4) {
	case 0:  pos = ld(&s->h->cons_head); break;
	case 1:  pos = s->ppos; break;
	case 2:  pos = q_head(s) ? q_head(s)->at : s->ppos; break;
	default: pos = (uint64_t)fz_u16(in) * 8; break;
	}
	st64(word(s, pos), forged_header(s, in, pos));
	s->dirty = true;
	if (s->m)
		s->tainted = true;
	FZ_TRACE("peer forges the word at %llu\n", (unsigned long long)(pos & (s->cap - 1)));
}

static void p_heal_producer(struct st *s)
{
	if (s->dirty) {
		/* Start over from where the consumer is. */
		memset(s->data, 0, s->cap);
		s->ppos = ld(&s->h->cons_head);
		s->pseq = cons_seq_now(s);
		s->qn = 0;
		s->dirty = false;
	}
	st64(&s->h->prod_tail, s->ppos);
	st32(&s->h->prod_seq, s->pseq);
	FZ_TRACE("peer producer heals at %llu seq %u\n", (unsigned long long)s->ppos, s->pseq);
}

/* ------------------------------------------------------------------ */
/* Honest producer                                                      */
/* ------------------------------------------------------------------ */

static uint32_t prod_seq_now(struct st *s)
{
	uint32_t q = ld32(&s->h->prod_seq);

	return q ? q : 1;
}

/* The reserve/send verdict a plausible consumer at ppos implies. */
static int room_verdict(struct st *s, uint64_t pos, uint32_t len)
{
	uint32_t pad = pad_for(s, pos, len);

	return (uint64_t)pad + rec_size(len) + 8 <= s->cap - (pos - s->ppos) ? 0 : -EAGAIN;
}

/* A commit of LEN for a reservation at RES_POS/RES_AT just returned 0. */
static void check_committed(struct st *s, uint64_t pos, uint64_t at, uint32_t len, uint32_t seq0,
			    bool payload, const char *what)
{
	struct fz_ranges ok = { .n = 0 };
	uint64_t end = at + rec_size(len);
	uint32_t rseq = at != pos ? next_seq(seq0) : seq0;
	struct rec r;

	fz_allow(&ok, OFF_PROD_TAIL, OFF_PROD_TAIL + 8);
	fz_allow(&ok, OFF_PROD_SEQ, OFF_PROD_SEQ + 4);
	fz_allow_ring(&ok, 384, s->cap, at, payload ? 8 + (uint64_t)len : 8);
	fz_allow_ring(&ok, 384, s->cap, end, 8);
	if (at != pos)
		fz_allow_ring(&ok, 384, s->cap, pos, 8);
	check_diff(s, &ok, what);
	FZ_CHECK(ld(word(s, at)) == ((uint64_t)rseq << 32 | len), "%s: header %#llx", what,
		 (unsigned long long)ld(word(s, at)));
	FZ_CHECK(ld(word(s, end)) == 0, "%s: the word after the record is not zero", what);
	if (at != pos)
		FZ_CHECK(ld(word(s, pos)) ==
				 ((uint64_t)seq0 << 32 | PORTAL_MSG_PAD | (uint32_t)(at - pos - 8)),
			 "%s: PAD header %#llx", what, (unsigned long long)ld(word(s, pos)));
	FZ_CHECK(ld(&s->h->prod_tail) == end && ld32(&s->h->prod_seq) == next_seq(rseq),
		 "%s: prod_tail/prod_seq not past the record", what);
	r.first = pos;
	r.at = at;
	r.end = end;
	r.len = len;
	r.seq = rseq;
	r.pad_seq = seq0;
	r.sum = hash(s->data + (at & (s->cap - 1)) + 8, len);
	q_push(s, &r);
}

/* Check a reserved or sent record's place: at POS, or at 0 after a PAD. */
static uint64_t check_place(struct st *s, const uint8_t *buf, uint64_t pos, uint32_t len,
			    const char *what)
{
	uint32_t off = (uint32_t)(pos & (s->cap - 1));

	FZ_CHECK(buf >= s->data + 8 && buf <= s->data + s->cap &&
		 len <= (size_t)(s->data + s->cap - buf), "%s: buffer outside the data", what);
	if ((size_t)(buf - s->data) == (size_t)off + 8) {
		FZ_CHECK(rec_size(len) <= s->cap - off, "%s: record runs past the end", what);
		return pos;
	}
	FZ_CHECK(buf == s->data + 8 && rec_size(len) > s->cap - off,
		 "%s: record at %td, position %u", what, buf - s->data - 8, off);
	return pos + (s->cap - off);
}

static void p_reserve(struct st *s, uint32_t len)
{
	uint64_t pos = ld(&s->h->prod_tail);
	void *buf = NULL;
	int rc;

	before_call(s);
	rc = portal_msgring_reserve(s->m, len, &buf);
	FZ_TRACE("reserve(%u) at %llu: %d\n", len, (unsigned long long)pos, rc);
	if (!judge(s, rc, "reserve"))
		return;
	check_diff(s, NULL, "reserve");
	if (s->open) {
		FZ_CHECK(rc == -EINVAL, "reserve with one open: %d", rc);
		return;
	}
	if (len > s->max_msg) {
		FZ_CHECK(rc == -EMSGSIZE, "reserve(%u) over max_msg: %d", len, rc);
		return;
	}
	FZ_CHECK(rc == 0 || rc == -EAGAIN, "reserve: %d", rc);
	if (!s->tainted)
		FZ_CHECK(rc == room_verdict(s, pos, len), "reserve(%u): %d, room says %d", len, rc,
			 room_verdict(s, pos, len));
	if (rc)
		return;
	s->res_at = check_place(s, buf, pos, len, "reserve");
	s->res_pos = pos;
	s->res_len = len;
	s->open = true;
	fz_fill(buf, len, s->nonce ^ fz_mix(s->res_at) ^ 5); /* write in place */
}

static void p_commit(struct st *s, uint8_t how, uint8_t extra)
{
	uint32_t len = s->res_len, seq0 = prod_seq_now(s);
	int rc;

	if (how % 3 == 1)
		len /= 2;
	else if (how % 3 == 2)
		len += 1 + extra;
	before_call(s);
	rc = portal_msgring_commit(s->m, len);
	FZ_TRACE("commit(%u): %d\n", len, rc);
	if (!judge(s, rc, "commit"))
		return;
	if (!s->open || len > s->res_len) {
		FZ_CHECK(rc == -EINVAL, "commit(%u) of %s: %d", len, s->open ? "more" : "nothing", rc);
		check_diff(s, NULL, "commit");
		return;
	}
	FZ_CHECK(rc == 0, "commit: %d", rc);
	s->open = false;
	check_committed(s, s->res_pos, s->res_at, len, seq0, false, "commit");
}

static void p_send_honest(struct st *s, uint32_t len)
{
	uint64_t pos = ld(&s->h->prod_tail);
	uint32_t seq0 = prod_seq_now(s);
	uint8_t *buf = malloc(len ? len : 1);
	uint64_t at;
	int rc;

	fz_fill(buf, len, s->nonce ^ len);
	before_call(s);
	rc = portal_msgring_send(s->m, buf, len);
	FZ_TRACE("send(%u) at %llu: %d\n", len, (unsigned long long)pos, rc);
	if (!judge(s, rc, "send"))
		goto out;
	if (s->open || len > s->max_msg) {
		FZ_CHECK(rc == (s->open ? -EINVAL : -EMSGSIZE), "send(%u): %d", len, rc);
		check_diff(s, NULL, "send");
		goto out;
	}
	FZ_CHECK(rc == 0 || rc == -EAGAIN, "send: %d", rc);
	if (!s->tainted)
		FZ_CHECK(rc == room_verdict(s, pos, len), "send(%u): %d, room says %d", len, rc,
			 room_verdict(s, pos, len));
	if (rc) {
		check_diff(s, NULL, "send");
		goto out;
	}
	at = pos + pad_for(s, pos, len);
	(void)check_place(s, s->data + (at & (s->cap - 1)) + 8, pos, len, "send");
	check_committed(s, pos, at, len, seq0, true, "send");
	FZ_CHECK(!memcmp(s->data + (at & (s->cap - 1)) + 8, buf, len), "send: payload differs");
out:
	free(buf);
}

static void p_wrong(struct st *s, uint8_t which)
{
	const void *b;
	size_t n;
	uint8_t one[1];
	int rc;

	before_call(s);
	switch (which % 3) {
	case 0:  rc = portal_msgring_peek(s->m, &b, &n); break;
	case 1:  rc = portal_msgring_release(s->m); break;
	default: rc = (int)portal_msgring_recv(s->m, one, sizeof(one)); break;
	}
	FZ_CHECK(rc == (s->quar ? PORTAL_EPROTO : -EINVAL), "consumer call %u on a producer: %d",
		 which % 3, rc);
	check_diff(s, NULL, "refused call");
}

/* The peer consumer takes the next record, checking it when it can. */
static void c_take(struct st *s)
{
	struct rec *r = q_head(s);

	if (!r)
		return;
	if (!s->dirty) {
		if (r->first != r->at)
			FZ_CHECK(ld(word(s, r->first)) == ((uint64_t)r->pad_seq << 32 | PORTAL_MSG_PAD |
							   (uint32_t)(r->at - r->first - 8)),
				 "record's PAD header overwritten");
		FZ_CHECK(ld(word(s, r->at)) == ((uint64_t)r->seq << 32 | r->len),
			 "unconsumed record header overwritten: %#llx",
			 (unsigned long long)ld(word(s, r->at)));
		FZ_CHECK(hash(s->data + (r->at & (s->cap - 1)) + 8, r->len) == r->sum,
			 "unconsumed record payload overwritten");
	}
	s->ppos = r->end;
	s->pseq = next_seq(r->seq);
	q_pop(s);
	if (!s->dirty && !q_head(s) && !s->open)
		FZ_CHECK(ld(word(s, s->ppos)) == 0, "the word after the last record is not zero");
	st64(&s->h->cons_head, s->ppos);
	st32(&s->h->cons_seq, s->pseq);
	FZ_TRACE("peer consumer takes up to %llu\n", (unsigned long long)s->ppos);
}

static void c_heal_consumer(struct st *s)
{
	uint64_t pt = ld(&s->h->prod_tail);

	if (s->dirty || pt - s->ppos > s->cap) {
		/* Skip to the producer: what it wrote while fooled is lost. */
		s->ppos = pt;
		s->pseq = prod_seq_now(s);
		s->qn = 0;
		s->dirty = false;
	}
	st64(&s->h->cons_head, s->ppos);
	st32(&s->h->cons_seq, s->pseq);
	FZ_TRACE("peer consumer heals at %llu\n", (unsigned long long)s->ppos);
}

/* ------------------------------------------------------------------ */

static void reattach(struct st *s)
{
	uint64_t prod = ld(&s->h->prod_tail), cons = ld(&s->h->cons_head), at_tail = 0;
	int want = prod - cons > s->cap || prod % 8 || cons % 8 ? PORTAL_EPROTO : 0, rc;
	struct fz_ranges ok = { 0 };
	bool stepped;

	portal_msgring_detach(s->m);
	s->m = NULL;
	memcpy(s->snap, s->mem, s->len);
	if (want == 0)
		memcpy(&at_tail, s->data + (prod & (s->cap - 1)), 8);
	rc = portal_msgring_attach(s->mem, s->len,
				   s->hprod ? PORTAL_ROLE_PRODUCER : PORTAL_ROLE_CONSUMER, &s->m);
	FZ_TRACE("reattach: %d\n", rc);
	/* A restarted producer finding a header at prod_tail steps past a
	 * whole record (a predecessor killed inside commit) and refuses
	 * anything else; an honest model never leaves one there. */
	if (s->hprod && want == 0 && at_tail != 0)
		FZ_CHECK(s->tainted || s->dirty || rc == 0 || rc == PORTAL_EPROTO, "attach: %d", rc);
	else
		FZ_CHECK(rc == want, "attach: %d, expected %d (prod %llu, cons %llu)", rc, want,
			 (unsigned long long)prod, (unsigned long long)cons);
	/* The resume may publish our own index past such a record: the
	 * producer's prod_tail and prod_seq, the consumer's cons_head. */
	if (s->hprod)
		fz_allow(&ok, 128, 144);
	else
		fz_allow(&ok, 256, 264);
	check_diff(s, &ok, "attach");
	/* If it did, it stepped past a record the model does not know. */
	stepped = memcmp(s->mem, s->snap, s->len) != 0;
	if (rc) {
		s->m = NULL;
		return;
	}
	FZ_CHECK(portal_msgring_max_msg(s->m) == s->max_msg, "max_msg");
	s->quar = false;
	s->peeked = false;
	s->open = false;
	if (stepped)
		s->dirty = true;
	s->tainted = stepped || (s->hprod ? ld(&s->h->cons_head) != s->ppos : s->dirty);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz in = { data, size };
	uint8_t s0 = fz_u8(&in), s1 = fz_u8(&in);
	uint16_t maxsel = fz_u16(&in);
	struct portal_msgring_params p = { 0 };
	struct st *s = calloc(1, sizeof(*s));
	uint64_t base = bases[(s0 >> 1) % FZ_NBASES];
	uint32_t seq = seq_bases[(s0 >> 4) % 4];
	int rc;

	s->hprod = !(s0 & 1);
	s->cap = 256u << (s1 % 5);
	s->max_msg = 1 + maxsel % (s->cap / 2 - 16);
	p.capacity = s->cap;
	p.max_msg = s->max_msg;
	s->len = portal_msgring_memsize(&p);
	FZ_CHECK(s->len == 384 + (size_t)s->cap, "memsize %zu", s->len);
	s->mem = fz_alloc(s->len);
	s->snap = malloc(s->len);
	s->h = (struct portal_msgring_hdr *)(void *)s->mem;
	s->data = s->mem + 384;
	s->nonce = fz_mix(base ^ s1 ^ maxsel);
	rc = portal_msgring_init(s->mem, s->len, &p);
	FZ_CHECK(rc == 0, "init: %d", rc);
	st64(&s->h->prod_tail, base);
	st64(&s->h->cons_head, base);
	st32(&s->h->prod_seq, seq);
	st32(&s->h->cons_seq, seq);
	s->ppos = base;
	s->pseq = seq ? seq : 1;
	rc = portal_msgring_attach(s->mem, s->len, s->hprod ? PORTAL_ROLE_PRODUCER : PORTAL_ROLE_CONSUMER,
				   &s->m);
	FZ_CHECK(rc == 0, "attach: %d", rc);
	FZ_TRACE("msgring: cap %u max %u base %llu seq %u honest %s\n", s->cap, s->max_msg,
		 (unsigned long long)base, seq, s->hprod ? "producer" : "consumer");

	for (unsigned steps = 0; fz_more(&in) && steps < 4096; steps++) {
		unsigned op = fz_u8(&in) % FZM_NOPS;
		uint8_t a;
		uint16_t w;

		switch (op) {
		case FZM_RESERVE:
			if (s->hprod) {
				w = fz_u16(&in) % (s->max_msg + 17);
				if (s->m)
					p_reserve(s, w);
			} else {
				a = fz_u8(&in);
				if (s->m)
					c_peek(s, a & 1);
			}
			break;
		case FZM_COMMIT:
			if (s->hprod) {
				a = fz_u8(&in);
				w = fz_u8(&in);
				if (s->m)
					p_commit(s, a, (uint8_t)w);
			} else if (s->m) {
				c_release(s);
			}
			break;
		case FZM_SEND:
			w = fz_u16(&in) % (s->max_msg + 17);
			if (s->m)
				s->hprod ? p_send_honest(s, w) : c_recv(s, w);
			break;
		case FZM_READY:
			a = fz_u8(&in);
			if (s->m)
				s->hprod ? p_wrong(s, a) : c_ready(s);
			break;
		case FZM_REATTACH:
			reattach(s);
			break;
		case FZM_P_GOOD:
			if (s->hprod)
				c_take(s);
			else
				p_send(s, fz_u16(&in) % (s->max_msg + 1));
			break;
		case FZM_P_WORD:
			if (s->hprod) {
				/* The consumer scribbles the producer's data: the producer
				 * never reads it; only our checks of it are off. */
				w = fz_u16(&in);
				st64(word(s, (uint64_t)w * 8), fz_u64(&in));
				s->dirty = true;
			} else {
				p_word(s, &in);
			}
			break;
		case FZM_P_INDEX:
			a = fz_u8(&in);
			if (a & 1) {
				st32(s->hprod ? &s->h->cons_seq : &s->h->prod_seq, fz_u32(&in));
			} else {
				uint64_t own = ld(s->hprod ? &s->h->prod_tail : &s->h->cons_head);

				st64(s->hprod ? &s->h->cons_head : &s->h->prod_tail,
				     fz_value(&in, s->ppos, own, s->cap));
			}
			FZ_TRACE("peer forges an index\n");
			break;
		case FZM_P_PAYLOAD: {
			uint8_t k = fz_u8(&in);
			uint16_t off = fz_u16(&in);
			uint8_t v = fz_u8(&in);
			struct rec *r;

			if (s->hprod || !s->qn)
				break;
			r = &s->q[(s->qh + k % s->qn) % QMAX];
			if (r->len)
				s->data[((r->at & (s->cap - 1)) + 8 + off % r->len)] = v;
			break;
		}
		case FZM_P_HEAL:
			s->hprod ? c_heal_consumer(s) : p_heal_producer(s);
			break;
		}
	}
	portal_msgring_detach(s->m);
	free(s->snap);
	free(s->mem);
	free(s);
	return 0;
}
