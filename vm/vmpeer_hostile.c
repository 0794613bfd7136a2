/* SPDX-License-Identifier: MIT */
/*
 * vmpeer_hostile.c - the hostile-guest test: the guest ("hostile", side 1)
 * scribbles on the shared fields it owns while the host ("honest", side 0,
 * the region's creator) keeps working and must see exactly the documented
 * errors (docs/region-format.md section 7): PORTAL_EPROTO and a quarantined
 * handle, never a crash, a hang or an undocumented result.
 *
 * Objects (all made by the host):
 *   seq.g2h len.g2h pad.g2h   message rings the guest produces into
 *   cons.h2g                  message ring the guest consumes
 *   desc.g2h desc.h2g         SPSC descriptor rings, 16-byte slots
 *   rnd.g2h rnd.h2g           message rings for the random phase
 *   ok.g2h ok.h2g             message rings for the closing exchange
 *   ctl                       one line per side (vmpeer.h)
 *
 * Lockstep (ctl step: the guest moves to k, then the host to k):
 *   1  warm-up: 16 honest messages on each ring, both ways, all checked
 *   2  the guest forges: a record header with the wrong sequence (seq.g2h),
 *      one longer than max_msg (len.g2h), a PAD record that stops short of
 *      the ring's end (pad.g2h), a producer tail more than a ring ahead
 *      (desc.g2h), a consumer head two rings ahead (cons.h2g), a consumer
 *      tail ahead of the producer (desc.h2g), and garbage over its
 *      participant slot. The host must get PORTAL_EPROTO from each ring,
 *      then again from the quarantined handle, proto_errors == 1; a fresh
 *      handle on desc.g2h must be refused at attach; the region header,
 *      directory and lookups must still validate.
 *   3  the guest heals every field; fresh host handles attach and work
 *   4  one more honest message each way on every ring, checked
 *   5  random phase (--random seconds): the guest mixes honest traffic on
 *      rnd.* with forged values (record headers at its position, its tail
 *      and sequence, the consumer head and sequence of rnd.h2g, its slot)
 *      and heals each after a moment; the host keeps sending and receiving,
 *      re-opens after every quarantine, and checks that every result is one
 *      the API documents and that no call takes longer than 2 s
 *   6  closing exchange of --count messages each way on ok.*, all checked
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "vm/vmpeer.h"

#define G2H 0x47u /* direction tags */
#define H2G 0x48u
#define WARM 16u
#define MR_CAP 16384u
#define MR_MAX 512u
#define DR_CAP 64u
#define DR_SLOT 16u
#define SLOW_CALL 2.0

static const char *const g2h_msg[] = { "seq.g2h", "len.g2h", "pad.g2h" };

/* ------------------------------------------------------------------ */
/* Shared helpers                                                      */
/* ------------------------------------------------------------------ */

static uint64_t rnd64(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
		v = (uint64_t)time(NULL) * UINT64_C(0x9e3779b97f4a7c15) + (uint64_t)clock();
	return v;
}

struct rng {
	uint64_t s;
};

static uint64_t next(struct rng *r)
{
	r->s += UINT64_C(0x9e3779b97f4a7c15);
	uint64_t z = r->s;
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static void nap_us(unsigned us)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)us * 1000 };

	nanosleep(&ts, NULL);
}

/* A descriptor ring element: sequence and a check word. */
static void elem_fill(uint64_t e[2], uint64_t seq, uint32_t dir)
{
	e[0] = seq;
	e[1] = (seq * UINT64_C(0x9e3779b97f4a7c15)) ^ ((uint64_t)dir << 40) ^ UINT64_C(0x5eed);
}

static bool elem_ok(const uint64_t e[2], uint64_t seq, uint32_t dir)
{
	uint64_t want[2];

	elem_fill(want, seq, dir);
	return e[0] == want[0] && e[1] == want[1];
}

static int lookup(struct vm_peer *p, const char *name, uint32_t kind,
		  struct portal_object_info *info)
{
	int rc = portal_region_lookup(p->reg, name, kind, info);

	if (rc)
		vm_say(p, "lookup %s: %s", name, portal_strerror(rc));
	return rc ? VM_SETUP : VM_PASS;
}

static int step_wait(struct vm_peer *p, uint32_t side, uint64_t k, double timeout)
{
	int rc = vm_wait_field(p, side, offsetof(struct ctl_line, step), k, vm_now() + timeout);

	if (rc != VM_PASS)
		vm_say(p, "side %u did not reach step %llu", side, (unsigned long long)k);
	return rc;
}

static void step_set(struct vm_peer *p, uint64_t k)
{
	vm_set(&p->ctl[p->side].step, k);
}

int vm_create_hostile(struct vm_peer *p)
{
	struct portal_msgring_params mp = { .capacity = MR_CAP, .max_msg = MR_MAX };
	struct portal_ring_params dp = { .mode = PORTAL_RING_SPSC, .slot_size = DR_SLOT,
					 .capacity = DR_CAP };
	struct portal_object_info info;
	int rc = 0;

	for (unsigned i = 0; i < 3 && !rc; i++)
		rc = portal_msgring_create(p->reg, g2h_msg[i], &mp, 1);
	if (!rc)
		rc = portal_msgring_create(p->reg, "cons.h2g", &mp, 0);
	if (!rc)
		rc = portal_ring_create(p->reg, "desc.g2h", &dp, 1);
	if (!rc)
		rc = portal_ring_create(p->reg, "desc.h2g", &dp, 0);
	if (!rc)
		rc = portal_msgring_create(p->reg, "rnd.g2h", &mp, 1);
	if (!rc)
		rc = portal_msgring_create(p->reg, "rnd.h2g", &mp, 0);
	if (!rc)
		rc = portal_msgring_create(p->reg, "ok.g2h", &mp, 1);
	if (!rc)
		rc = portal_msgring_create(p->reg, "ok.h2g", &mp, 0);
	if (!rc)
		rc = portal_region_alloc(p->reg, VM_CTL_NAME, PORTAL_OBJ_USER,
					 (uint64_t)p->o.parts * sizeof(struct ctl_line), 0, 0, NULL,
					 &info);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The guest: hostile                                                  */
/* ------------------------------------------------------------------ */

/* Raw views of the rings, to write what an honest peer never would. */
static struct portal_msgring_hdr *mr_hdr(struct vm_peer *p, const char *name)
{
	struct portal_object_info info;

	return lookup(p, name, PORTAL_OBJ_MSGRING, &info) ? NULL : info.addr;
}

static _Atomic uint64_t *mr_word(struct portal_msgring_hdr *h, uint64_t pos)
{
	return (_Atomic uint64_t *)((uint8_t *)h + PORTAL_MSGRING_HDR_SIZE + (pos & (MR_CAP - 1)));
}

static struct portal_ring_hdr *dr_hdr(struct vm_peer *p, const char *name)
{
	struct portal_object_info info;

	return lookup(p, name, PORTAL_OBJ_RING, &info) ? NULL : info.addr;
}

struct g_state {
	portal_msgring_t *tx[3], *cons_rx, *rnd_tx, *rnd_rx;
	portal_ring_t *dtx, *drx;
	struct portal_msgring_hdr *m[3], *cons, *rtx, *rrx;
	struct portal_ring_hdr *dg2h, *dh2g;
	uint64_t saved_cons_head, saved_prod_tail, saved_cons_tail;
	uint32_t saved_cons_seq;
	uint64_t sent[3], d_sent, cons_got, d_got, rnd_sent, rnd_got;
	uint8_t slot[64];
};

static int g_send(struct vm_peer *p, portal_msgring_t *tx, uint64_t seq)
{
	uint8_t buf[MR_MAX];
	uint32_t len = vm_msg_len(seq, G2H, MR_MAX);
	int rc;

	vm_msg_fill(buf, seq, G2H, len);
	rc = portal_msgring_send(tx, buf, len);
	if (rc && rc != -EAGAIN)
		vm_say(p, "guest send: %s", portal_strerror(rc));
	return rc;
}

/* Receive one message from the honest host: it must be right. */
static int g_recv(struct vm_peer *p, portal_msgring_t *rx, uint64_t seq, double deadline)
{
	uint8_t buf[MR_MAX];
	const char *why;
	ssize_t n;

	while ((n = portal_msgring_recv(rx, buf, sizeof(buf))) == -EAGAIN)
		if (vm_now() > deadline)
			return VM_TIMEOUT;
	if (n < 0) {
		vm_say(p, "guest receive: %s", portal_strerror((int)n));
		return VM_FAIL;
	}
	why = vm_msg_check(buf, (size_t)n, seq, H2G, MR_MAX);
	if (why) {
		vm_say(p, "guest receive #%llu: %s", (unsigned long long)seq, why);
		return VM_FAIL;
	}
	return VM_PASS;
}

static int g_dequeue(struct vm_peer *p, portal_ring_t *rx, uint64_t seq, double deadline)
{
	uint64_t e[2];
	int rc;

	while ((rc = portal_ring_dequeue(rx, e)) == -EAGAIN)
		if (vm_now() > deadline)
			return VM_TIMEOUT;
	if (rc || !elem_ok(e, seq, H2G)) {
		vm_say(p, "guest dequeue #%llu: %s", (unsigned long long)seq,
		       rc ? portal_strerror(rc) : "wrong element");
		return VM_FAIL;
	}
	return VM_PASS;
}

static int g_open(struct vm_peer *p, struct g_state *g)
{
	int rc = 0;

	for (unsigned i = 0; i < 3 && !rc; i++) {
		rc = portal_msgring_open(p->reg, g2h_msg[i], PORTAL_ROLE_PRODUCER, &g->tx[i]);
		g->m[i] = rc ? NULL : mr_hdr(p, g2h_msg[i]);
	}
	if (!rc)
		rc = portal_msgring_open(p->reg, "cons.h2g", PORTAL_ROLE_CONSUMER, &g->cons_rx);
	if (!rc)
		rc = portal_ring_open(p->reg, "desc.g2h", PORTAL_ROLE_PRODUCER, &g->dtx);
	if (!rc)
		rc = portal_ring_open(p->reg, "desc.h2g", PORTAL_ROLE_CONSUMER, &g->drx);
	if (!rc)
		rc = portal_msgring_open(p->reg, "rnd.g2h", PORTAL_ROLE_PRODUCER, &g->rnd_tx);
	if (!rc)
		rc = portal_msgring_open(p->reg, "rnd.h2g", PORTAL_ROLE_CONSUMER, &g->rnd_rx);
	if (rc) {
		vm_say(p, "guest open: %s", portal_strerror(rc));
		return VM_SETUP;
	}
	g->cons = mr_hdr(p, "cons.h2g");
	g->rtx = mr_hdr(p, "rnd.g2h");
	g->rrx = mr_hdr(p, "rnd.h2g");
	g->dg2h = dr_hdr(p, "desc.g2h");
	g->dh2g = dr_hdr(p, "desc.h2g");
	return g->m[0] && g->m[1] && g->m[2] && g->cons && g->rtx && g->rrx && g->dg2h && g->dh2g
		       ? VM_PASS
		       : VM_SETUP;
}

/* The header word at the producer's next position (0 until it commits). */
static _Atomic uint64_t *next_word(struct portal_msgring_hdr *h, uint32_t *seq)
{
	uint64_t pos = atomic_load_explicit(&h->prod_tail, memory_order_relaxed);

	*seq = atomic_load_explicit(&h->prod_seq, memory_order_relaxed);
	if (*seq == 0)
		*seq = 1;
	return mr_word(h, pos);
}

static void g_forge(struct vm_peer *p, struct g_state *g)
{
	struct portal_participant *slot =
		(struct portal_participant *)((uint8_t *)portal_region_base(p->reg) +
					      PORTAL_REGION_PART_OFFSET) + p->side;
	uint64_t pos;
	uint32_t seq;
	_Atomic uint64_t *w;

	/* A record with the wrong sequence number. */
	w = next_word(g->m[0], &seq);
	atomic_store_explicit(w, ((uint64_t)(seq + 5) << 32) | 16u, memory_order_release);
	/* A record longer than max_msg. */
	w = next_word(g->m[1], &seq);
	atomic_store_explicit(w, ((uint64_t)seq << 32) | (MR_MAX + 1), memory_order_release);
	/* A PAD record that does not reach the end of the ring. */
	w = next_word(g->m[2], &seq);
	pos = atomic_load_explicit(&g->m[2]->prod_tail, memory_order_relaxed);
	atomic_store_explicit(w, ((uint64_t)seq << 32) | PORTAL_MSG_PAD |
				      ((MR_CAP - (pos & (MR_CAP - 1)) - 8) - 64),
			      memory_order_release);
	/* desc.g2h: a producer tail that claims more than the ring holds. */
	g->saved_prod_tail = atomic_load_explicit(&g->dg2h->prod_tail, memory_order_relaxed);
	atomic_store_explicit(&g->dg2h->prod_tail, g->saved_prod_tail + DR_CAP + 7,
			      memory_order_release);
	/* cons.h2g: a consumer head two rings ahead. */
	g->saved_cons_head = atomic_load_explicit(&g->cons->cons_head, memory_order_relaxed);
	atomic_store_explicit(&g->cons->cons_head, g->saved_cons_head + 2 * MR_CAP,
			      memory_order_release);
	/* desc.h2g: a consumer tail ahead of the producer. */
	g->saved_cons_tail = atomic_load_explicit(&g->dh2g->cons_tail, memory_order_relaxed);
	atomic_store_explicit(&g->dh2g->cons_tail, g->saved_cons_tail + DR_CAP + 5,
			      memory_order_release);
	/* Our participant slot: garbage. */
	memcpy(g->slot, (void *)slot, sizeof(g->slot));
	memset((void *)slot, 0x5a, sizeof(*slot));
	vm_say(p, "forged: 3 record headers, 3 ring indices, the participant slot");
}

static void g_heal(struct vm_peer *p, struct g_state *g)
{
	struct portal_participant *slot =
		(struct portal_participant *)((uint8_t *)portal_region_base(p->reg) +
					      PORTAL_REGION_PART_OFFSET) + p->side;
	uint32_t seq;

	for (unsigned i = 0; i < 3; i++)
		atomic_store_explicit(next_word(g->m[i], &seq), 0, memory_order_release);
	atomic_store_explicit(&g->dg2h->prod_tail, g->saved_prod_tail, memory_order_release);
	atomic_store_explicit(&g->cons->cons_head, g->saved_cons_head, memory_order_release);
	atomic_store_explicit(&g->dh2g->cons_tail, g->saved_cons_tail, memory_order_release);
	memcpy((void *)slot, g->slot, sizeof(g->slot));
	vm_say(p, "healed every forged field");
}

/* Values a forger likes: off by one, a ring ahead or behind, extremes. */
static uint64_t evil(struct rng *r, uint64_t near, uint64_t cap)
{
	switch (next(r) % 7) {
	case 0: return near + 1;
	case 1: return near - 8;
	case 2: return near + cap + 8;
	case 3: return near - cap - 8;
	case 4: return UINT64_MAX;
	case 5: return 0;
	default: return next(r);
	}
}

static int g_random(struct vm_peer *p, struct g_state *g, double deadline)
{
	struct portal_participant *slot =
		(struct portal_participant *)((uint8_t *)portal_region_base(p->reg) +
					      PORTAL_REGION_PART_OFFSET) + p->side;
	struct rng r = { rnd64() };
	uint64_t forged = 0;

	while (vm_peer_field(p, 0, offsetof(struct ctl_line, step)) < 5) {
		uint64_t a = next(&r) % 10, v1, v2;
		uint32_t seq;
		_Atomic uint64_t *w;
		uint8_t buf[MR_MAX];
		ssize_t n;
		int rc;

		if (vm_now() > deadline)
			return VM_TIMEOUT;
		if (a < 5) {
			/* Honest traffic both ways. */
			rc = g_send(p, g->rnd_tx, g->rnd_sent);
			if (rc == 0)
				g->rnd_sent++;
			else if (rc != -EAGAIN)
				return VM_FAIL;
			for (int k = 0; k < 4; k++) {
				n = portal_msgring_recv(g->rnd_rx, buf, sizeof(buf));
				if (n < 0 && n != -EAGAIN) {
					vm_say(p, "guest random receive: %s", portal_strerror((int)n));
					return VM_FAIL;
				}
				if (n >= 0)
					g->rnd_got++;
			}
			continue;
		}
		forged++;
		if (a == 5) {
			/* A bad record header where the next record goes. */
			w = next_word(g->rtx, &seq);
			v1 = next(&r) % 3 == 0 ? ((uint64_t)(seq + 1 + next(&r) % 99) << 32) | 8u
			     : next(&r) % 2 ? ((uint64_t)seq << 32) | (MR_MAX + 1 + next(&r) % 1000)
					      : ((uint64_t)seq << 32) | PORTAL_MSG_PAD | 8u;
			atomic_store_explicit(w, v1, memory_order_release);
			nap_us((unsigned)(next(&r) % 500));
			atomic_store_explicit(w, 0, memory_order_release);
		} else if (a == 6) {
			/* Our tail and sequence (read by a producer re-attaching). */
			v1 = atomic_load_explicit(&g->rtx->prod_tail, memory_order_relaxed);
			v2 = atomic_load_explicit(&g->rtx->prod_seq, memory_order_relaxed);
			atomic_store_explicit(&g->rtx->prod_tail, evil(&r, v1, MR_CAP),
					      memory_order_release);
			atomic_store_explicit(&g->rtx->prod_seq, (uint32_t)next(&r),
					      memory_order_relaxed);
			nap_us((unsigned)(next(&r) % 500));
			atomic_store_explicit(&g->rtx->prod_seq, (uint32_t)v2, memory_order_relaxed);
			atomic_store_explicit(&g->rtx->prod_tail, v1, memory_order_release);
		} else if (a == 7 || a == 8) {
			/* The consumer head of rnd.h2g, which the host's producer
			 * reads when the ring looks full. */
			v1 = atomic_load_explicit(&g->rrx->cons_head, memory_order_relaxed);
			v2 = atomic_load_explicit(&g->rrx->cons_seq, memory_order_relaxed);
			atomic_store_explicit(&g->rrx->cons_head, evil(&r, v1, MR_CAP),
					      memory_order_release);
			atomic_store_explicit(&g->rrx->cons_seq, (uint32_t)next(&r),
					      memory_order_relaxed);
			nap_us((unsigned)(next(&r) % 2000));
			atomic_store_explicit(&g->rrx->cons_seq, (uint32_t)v2, memory_order_relaxed);
			atomic_store_explicit(&g->rrx->cons_head, v1, memory_order_release);
		} else {
			/* Our participant slot. */
			uint8_t save[64];

			memcpy(save, (void *)slot, sizeof(save));
			for (unsigned i = 0; i < sizeof(save); i += 8) {
				uint64_t x = next(&r);

				memcpy((uint8_t *)slot + i, &x, 8);
			}
			nap_us((unsigned)(next(&r) % 500));
			memcpy((void *)slot, save, sizeof(save));
		}
	}
	vm_say(p, "random phase: %llu forgeries, %llu messages sent, %llu received",
	       (unsigned long long)forged, (unsigned long long)g->rnd_sent,
	       (unsigned long long)g->rnd_got);
	return VM_PASS;
}

int vm_run_hostile(struct vm_peer *p)
{
	struct g_state g = { 0 };
	double t = p->o.timeout_s, deadline;
	int rc = g_open(p, &g);
	uint64_t e[2];

	/* Step 1: warm-up, honest. */
	for (unsigned i = 0; i < 3 && rc == VM_PASS; i++)
		for (g.sent[i] = 0; g.sent[i] < WARM && rc == VM_PASS; g.sent[i]++)
			rc = g_send(p, g.tx[i], g.sent[i]) ? VM_FAIL : VM_PASS;
	for (; g.d_sent < WARM && rc == VM_PASS; g.d_sent++) {
		elem_fill(e, g.d_sent, G2H);
		rc = portal_ring_enqueue(g.dtx, e) ? VM_FAIL : VM_PASS;
	}
	if (rc != VM_PASS)
		goto out;
	vm_set(&p->ctl[p->side].phase, 1);
	step_set(p, 1);
	if ((rc = step_wait(p, 0, 1, p->o.wait_s)) != VM_PASS)
		goto out;
	deadline = vm_now() + t;
	for (; g.cons_got < WARM && rc == VM_PASS; g.cons_got++)
		rc = g_recv(p, g.cons_rx, g.cons_got, deadline);
	for (; g.d_got < WARM && rc == VM_PASS; g.d_got++)
		rc = g_dequeue(p, g.drx, g.d_got, deadline);
	if (rc != VM_PASS)
		goto out;

	/* Step 2: forge. */
	g_forge(p, &g);
	step_set(p, 2);
	if ((rc = step_wait(p, 0, 2, t)) != VM_PASS)
		goto out;

	/* Step 3: heal. */
	g_heal(p, &g);
	step_set(p, 3);
	if ((rc = step_wait(p, 0, 3, t)) != VM_PASS)
		goto out;

	/* Step 4: one more honest message each way on every ring. */
	deadline = vm_now() + t;
	for (unsigned i = 0; i < 3 && rc == VM_PASS; i++)
		rc = g_send(p, g.tx[i], g.sent[i]++) ? VM_FAIL : VM_PASS;
	elem_fill(e, g.d_sent++, G2H);
	if (rc == VM_PASS)
		rc = portal_ring_enqueue(g.dtx, e) ? VM_FAIL : VM_PASS;
	if (rc == VM_PASS)
		rc = g_recv(p, g.cons_rx, g.cons_got++, deadline);
	if (rc == VM_PASS)
		rc = g_dequeue(p, g.drx, g.d_got++, deadline);
	if (rc != VM_PASS)
		goto out;
	step_set(p, 4);

	/* Step 5: random phase, until the host says stop. */
	rc = g_random(p, &g, vm_now() + p->o.random_s + t);
	if (rc != VM_PASS)
		goto out;
	step_set(p, 5);

	/* Step 6: the closing exchange, honest. */
	{
		struct vm_exch x = { .tx_dir = G2H, .rx_dir = H2G, .count = p->o.count };

		rc = portal_msgring_open(p->reg, "ok.g2h", PORTAL_ROLE_PRODUCER, &x.tx);
		if (rc == 0)
			rc = portal_msgring_open(p->reg, "ok.h2g", PORTAL_ROLE_CONSUMER, &x.rx);
		rc = rc ? VM_SETUP : vm_exchange(p, &x);
		portal_msgring_detach(x.tx);
		portal_msgring_detach(x.rx);
	}
	if (rc == VM_PASS)
		step_set(p, 6);
out:
	for (unsigned i = 0; i < 3; i++)
		portal_msgring_detach(g.tx[i]);
	portal_msgring_detach(g.cons_rx);
	portal_msgring_detach(g.rnd_tx);
	portal_msgring_detach(g.rnd_rx);
	portal_ring_detach(g.dtx);
	portal_ring_detach(g.drx);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The host: honest                                                    */
/* ------------------------------------------------------------------ */

struct h_state {
	struct vm_peer *p;
	unsigned fails;
	uint64_t must;          /* must-detect cases checked */
	uint64_t calls, quarantines, refused, empty, garbage;
	double slowest;
};

#define H_CHECK(h, cond, fmt, ...)                                                   \
	do {                                                                         \
		if (!(cond)) {                                                       \
			(h)->fails++;                                                \
			vm_say((h)->p, "CHECK FAILED (line %d): " fmt, __LINE__,     \
			       ##__VA_ARGS__);                                       \
		}                                                                    \
	} while (0)

static void must_proto(struct h_state *h, int rc, const char *what)
{
	h->must++;
	H_CHECK(h, rc == PORTAL_EPROTO, "%s: expected PORTAL_EPROTO, got %d (%s)", what, rc,
		portal_strerror(rc));
}

/* A message ring the guest produces into: the forged record must give
 * PORTAL_EPROTO, then the handle stays quarantined. */
static void h_check_msg_quarantine(struct h_state *h, portal_msgring_t *rx, const char *name)
{
	struct portal_ring_stats st;
	uint8_t buf[MR_MAX];
	char what[64];

	snprintf(what, sizeof(what), "%s: forged record", name);
	must_proto(h, (int)portal_msgring_recv(rx, buf, sizeof(buf)), what);
	snprintf(what, sizeof(what), "%s: quarantined handle", name);
	must_proto(h, (int)portal_msgring_recv(rx, buf, sizeof(buf)), what);
	must_proto(h, portal_msgring_ready(rx) == 1 ? PORTAL_EPROTO : 0, what);
	portal_msgring_stats(rx, &st);
	H_CHECK(h, portal_msgring_quarantined(rx) && st.proto_errors == 1,
		"%s: quarantined %d, proto_errors %llu", name, portal_msgring_quarantined(rx),
		(unsigned long long)st.proto_errors);
}

static int h_recv(struct h_state *h, portal_msgring_t *rx, uint64_t seq, double deadline,
		  const char *name)
{
	uint8_t buf[MR_MAX];
	const char *why;
	ssize_t n;

	while ((n = portal_msgring_recv(rx, buf, sizeof(buf))) == -EAGAIN)
		if (vm_now() > deadline) {
			vm_say(h->p, "%s: nothing arrived", name);
			return VM_TIMEOUT;
		}
	why = n < 0 ? portal_strerror((int)n) : vm_msg_check(buf, (size_t)n, seq, G2H, MR_MAX);
	H_CHECK(h, why == NULL, "%s #%llu: %s", name, (unsigned long long)seq, why);
	return VM_PASS;
}

static int h_send(struct h_state *h, portal_msgring_t *tx, uint64_t seq, const char *name)
{
	uint8_t buf[MR_MAX];
	uint32_t len = vm_msg_len(seq, H2G, MR_MAX);
	int rc;

	vm_msg_fill(buf, seq, H2G, len);
	rc = portal_msgring_send(tx, buf, len);
	H_CHECK(h, rc == 0, "%s send #%llu: %s", name, (unsigned long long)seq, portal_strerror(rc));
	return VM_PASS;
}

/* One call of the random phase, timed. */
static void h_timed(struct h_state *h, double t0)
{
	double d = vm_now() - t0;

	h->calls++;
	if (d > h->slowest)
		h->slowest = d;
}

static int h_random(struct h_state *h)
{
	struct vm_peer *p = h->p;
	portal_msgring_t *tx = NULL, *rx = NULL;
	uint64_t sent = 0, got = 0;
	double end = vm_now() + p->o.random_s, t0;
	uint8_t buf[MR_MAX];
	int rc;

	while (vm_now() < end && h->fails == 0) {
		if (!tx) {
			t0 = vm_now();
			rc = portal_msgring_open(p->reg, "rnd.h2g", PORTAL_ROLE_PRODUCER, &tx);
			h_timed(h, t0);
			H_CHECK(h, rc == 0 || rc == PORTAL_EPROTO, "open rnd.h2g: %s",
				portal_strerror(rc));
			if (rc)
				h->refused++;
		}
		if (!rx) {
			t0 = vm_now();
			rc = portal_msgring_open(p->reg, "rnd.g2h", PORTAL_ROLE_CONSUMER, &rx);
			h_timed(h, t0);
			H_CHECK(h, rc == 0 || rc == PORTAL_EPROTO, "open rnd.g2h: %s",
				portal_strerror(rc));
			if (rc)
				h->refused++;
		}
		if (tx) {
			uint32_t len = vm_msg_len(sent, H2G, MR_MAX);

			vm_msg_fill(buf, sent, H2G, len);
			t0 = vm_now();
			rc = portal_msgring_send(tx, buf, len);
			h_timed(h, t0);
			H_CHECK(h, rc == 0 || rc == -EAGAIN || rc == PORTAL_EPROTO,
				"send: undocumented %d (%s)", rc, portal_strerror(rc));
			if (rc == 0)
				sent++;
			else if (rc == -EAGAIN)
				h->empty++;
			else {
				H_CHECK(h, portal_msgring_quarantined(tx), "send: EPROTO, not quarantined");
				h->quarantines++;
				portal_msgring_detach(tx);
				tx = NULL;
			}
		}
		if (rx) {
			ssize_t n;

			t0 = vm_now();
			n = portal_msgring_recv(rx, buf, sizeof(buf));
			h_timed(h, t0);
			H_CHECK(h, n >= 0 || n == -EAGAIN || n == PORTAL_EPROTO,
				"receive: undocumented %zd (%s)", n, portal_strerror((int)n));
			if (n >= 0) {
				H_CHECK(h, (size_t)n <= MR_MAX, "receive: %zd bytes > max_msg", n);
				/* The guest may corrupt its own payloads: counted. */
				if (vm_msg_check(buf, (size_t)n, got, G2H, MR_MAX))
					h->garbage++;
				got++;
			} else if (n == -EAGAIN) {
				h->empty++;
			} else {
				H_CHECK(h, portal_msgring_quarantined(rx), "receive: EPROTO, not quarantined");
				h->quarantines++;
				portal_msgring_detach(rx);
				rx = NULL;
			}
		}
		if ((h->calls & 255) == 0) {
			struct portal_participant_info pi;

			t0 = vm_now();
			rc = portal_region_participant(p->reg, 1, &pi);
			h_timed(h, t0);
			H_CHECK(h, rc == 0, "participant: %s", portal_strerror(rc));
		}
		H_CHECK(h, h->slowest < SLOW_CALL, "a call took %.3f s", h->slowest);
		/* The region itself is the creator's: it must stay valid. */
		if ((h->calls & 1023) == 0)
			H_CHECK(h, portal_region_validate(portal_region_base(p->reg),
							  portal_region_size(p->reg)) == 0,
				"region no longer validates");
	}
	portal_msgring_detach(tx);
	portal_msgring_detach(rx);
	vm_say(p, "random phase: %llu calls, %llu quarantines, %llu attaches refused, "
		  "%llu empty/full, %llu sent, %llu received (%llu with bad contents), "
		  "slowest call %.1f us",
	       (unsigned long long)h->calls, (unsigned long long)h->quarantines,
	       (unsigned long long)h->refused, (unsigned long long)h->empty,
	       (unsigned long long)sent, (unsigned long long)got, (unsigned long long)h->garbage,
	       h->slowest * 1e6);
	return h->fails ? VM_FAIL : VM_PASS;
}

int vm_run_honest(struct vm_peer *p)
{
	struct h_state h = { .p = p };
	portal_msgring_t *rx[3] = { 0 }, *cons_tx = NULL;
	portal_ring_t *drx = NULL, *dtx = NULL, *fresh = NULL;
	struct portal_participant_info pi;
	struct portal_object_info info;
	double t = p->o.timeout_s, deadline;
	uint64_t e[2], n_cons = 0, n_d = 0;
	int rc = 0;

	for (unsigned i = 0; i < 3 && !rc; i++)
		rc = portal_msgring_open(p->reg, g2h_msg[i], PORTAL_ROLE_CONSUMER, &rx[i]);
	if (!rc)
		rc = portal_msgring_open(p->reg, "cons.h2g", PORTAL_ROLE_PRODUCER, &cons_tx);
	if (!rc)
		rc = portal_ring_open(p->reg, "desc.g2h", PORTAL_ROLE_CONSUMER, &drx);
	if (!rc)
		rc = portal_ring_open(p->reg, "desc.h2g", PORTAL_ROLE_PRODUCER, &dtx);
	if (rc) {
		vm_say(p, "host open: %s", portal_strerror(rc));
		rc = VM_SETUP;
		goto out;
	}

	/* Step 1: the guest's warm-up arrives; ours goes out. */
	if ((rc = step_wait(p, 1, 1, p->o.wait_s)) != VM_PASS)
		goto out;
	vm_say(p, "guest is there (step 1)");
	deadline = vm_now() + t;
	for (unsigned i = 0; i < 3 && rc == VM_PASS; i++)
		for (uint64_t s = 0; s < WARM && rc == VM_PASS; s++)
			rc = h_recv(&h, rx[i], s, deadline, g2h_msg[i]);
	for (uint64_t s = 0; s < WARM && rc == VM_PASS; s++) {
		while ((rc = portal_ring_dequeue(drx, e)) == -EAGAIN && vm_now() < deadline)
			;
		H_CHECK(&h, rc == 0 && elem_ok(e, s, G2H), "desc.g2h #%llu: %s",
			(unsigned long long)s, rc ? portal_strerror(rc) : "wrong element");
		rc = VM_PASS;
	}
	for (; n_cons < WARM && rc == VM_PASS; n_cons++)
		rc = h_send(&h, cons_tx, n_cons, "cons.h2g");
	for (; n_d < WARM; n_d++) {
		elem_fill(e, n_d, H2G);
		rc = portal_ring_enqueue(dtx, e);
		H_CHECK(&h, rc == 0, "desc.h2g enqueue: %s", portal_strerror(rc));
	}
	rc = h.fails ? VM_FAIL : VM_PASS;
	if (rc != VM_PASS)
		goto out;
	vm_say(p, "step 1: warm-up checked both ways");
	step_set(p, 1);

	/* Step 2: every forgery must be detected. */
	if ((rc = step_wait(p, 1, 2, t)) != VM_PASS)
		goto out;
	for (unsigned i = 0; i < 3; i++)
		h_check_msg_quarantine(&h, rx[i], g2h_msg[i]);
	must_proto(&h, portal_ring_dequeue(drx, e), "desc.g2h: producer tail a ring ahead");
	must_proto(&h, portal_ring_dequeue(drx, e), "desc.g2h: quarantined handle");
	must_proto(&h, portal_ring_count(drx), "desc.g2h: count on a quarantined handle");
	must_proto(&h, portal_ring_open(p->reg, "desc.g2h", PORTAL_ROLE_CONSUMER, &fresh),
		   "desc.g2h: fresh attach");
	{
		/* The producer reads the forged head once its cache says full. */
		uint8_t buf[MR_MAX];
		int r = 0;

		for (unsigned k = 0; k < 2 * MR_CAP / 8 && r == 0; k++) {
			uint32_t len = vm_msg_len(n_cons, H2G, MR_MAX);

			vm_msg_fill(buf, n_cons, H2G, len);
			if ((r = portal_msgring_send(cons_tx, buf, len)) == 0)
				n_cons++;
		}
		must_proto(&h, r, "cons.h2g: consumer head two rings ahead");
	}
	{
		int r = 0;

		for (unsigned k = 0; k < 2 * DR_CAP && r == 0; k++) {
			elem_fill(e, n_d, H2G);
			if ((r = portal_ring_enqueue(dtx, e)) == 0)
				n_d++;
		}
		must_proto(&h, r, "desc.h2g: consumer tail ahead of the producer");
	}
	rc = portal_region_participant(p->reg, 1, &pi);
	H_CHECK(&h, rc == 0, "participant: %s", portal_strerror(rc));
	vm_say(p, "guest's participant slot reads state %#x pid %#llx (garbage, informative only)",
	       pi.state, (unsigned long long)pi.pid);
	H_CHECK(&h, portal_region_validate(portal_region_base(p->reg), portal_region_size(p->reg)) == 0,
		"region no longer validates");
	for (unsigned i = 0; i < 3; i++)
		H_CHECK(&h, portal_region_lookup(p->reg, g2h_msg[i], PORTAL_OBJ_MSGRING, &info) == 0,
			"lookup %s", g2h_msg[i]);
	rc = h.fails ? VM_FAIL : VM_PASS;
	vm_say(p, "step 2: %llu must-detect cases, %s", (unsigned long long)h.must,
	       h.fails ? "FAILED" : "all detected (PORTAL_EPROTO, quarantined)");
	if (rc != VM_PASS)
		goto out;
	step_set(p, 2);

	/* Step 3: the guest healed: fresh handles attach and work. */
	if ((rc = step_wait(p, 1, 3, t)) != VM_PASS)
		goto out;
	for (unsigned i = 0; i < 3; i++) {
		portal_msgring_detach(rx[i]);
		rx[i] = NULL;
		rc = portal_msgring_open(p->reg, g2h_msg[i], PORTAL_ROLE_CONSUMER, &rx[i]);
		H_CHECK(&h, rc == 0, "re-open %s: %s", g2h_msg[i], portal_strerror(rc));
	}
	portal_msgring_detach(cons_tx);
	cons_tx = NULL;
	rc = portal_msgring_open(p->reg, "cons.h2g", PORTAL_ROLE_PRODUCER, &cons_tx);
	H_CHECK(&h, rc == 0, "re-open cons.h2g: %s", portal_strerror(rc));
	portal_ring_detach(drx);
	portal_ring_detach(dtx);
	drx = dtx = NULL;
	rc = portal_ring_open(p->reg, "desc.g2h", PORTAL_ROLE_CONSUMER, &drx);
	H_CHECK(&h, rc == 0, "re-open desc.g2h: %s", portal_strerror(rc));
	rc = portal_ring_open(p->reg, "desc.h2g", PORTAL_ROLE_PRODUCER, &dtx);
	H_CHECK(&h, rc == 0, "re-open desc.h2g: %s", portal_strerror(rc));
	if (h.fails) {
		rc = VM_FAIL;
		goto out;
	}
	/* The producers resume where their tails say: what they queued in
	 * step 2 before the forgery was seen is still there for the guest.
	 * If nothing was, queue the next message now. */
	if (n_cons == WARM)
		h_send(&h, cons_tx, n_cons++, "cons.h2g");
	if (n_d == WARM) {
		elem_fill(e, n_d++, H2G);
		rc = portal_ring_enqueue(dtx, e);
		H_CHECK(&h, rc == 0, "desc.h2g enqueue after heal: %s", portal_strerror(rc));
	}
	rc = h.fails ? VM_FAIL : VM_PASS;
	if (rc != VM_PASS)
		goto out;
	vm_say(p, "step 3: fresh handles attach after the guest healed");
	step_set(p, 3);

	/* Step 4: one more honest message on every guest ring. */
	if ((rc = step_wait(p, 1, 4, t)) != VM_PASS)
		goto out;
	deadline = vm_now() + t;
	for (unsigned i = 0; i < 3 && rc == VM_PASS; i++)
		rc = h_recv(&h, rx[i], WARM, deadline, g2h_msg[i]);
	while ((rc = portal_ring_dequeue(drx, e)) == -EAGAIN && vm_now() < deadline)
		;
	H_CHECK(&h, rc == 0 && elem_ok(e, WARM, G2H), "desc.g2h after heal: %s",
		rc ? portal_strerror(rc) : "wrong element");
	rc = h.fails ? VM_FAIL : VM_PASS;
	if (rc != VM_PASS)
		goto out;
	vm_say(p, "step 4: traffic flows again both ways on every ring");

	/* Step 5: random phase, then stop and wait for the guest to heal. */
	rc = h_random(&h);
	step_set(p, 5);
	if (rc != VM_PASS)
		goto out;
	if ((rc = step_wait(p, 1, 5, t)) != VM_PASS)
		goto out;

	/* Step 6: the closing exchange, checked in full. */
	{
		struct vm_exch x = { .tx_dir = H2G, .rx_dir = G2H, .count = p->o.count, .copy = true };

		rc = portal_msgring_open(p->reg, "ok.h2g", PORTAL_ROLE_PRODUCER, &x.tx);
		if (rc == 0)
			rc = portal_msgring_open(p->reg, "ok.g2h", PORTAL_ROLE_CONSUMER, &x.rx);
		rc = rc ? VM_SETUP : vm_exchange(p, &x);
		portal_msgring_detach(x.tx);
		portal_msgring_detach(x.rx);
	}
	if (rc == VM_PASS)
		rc = step_wait(p, 1, 6, t);
	if (rc == VM_PASS)
		vm_say(p, "hostile guest: %llu must-detect cases detected, the host kept working",
		       (unsigned long long)h.must);
out:
	for (unsigned i = 0; i < 3; i++)
		portal_msgring_detach(rx[i]);
	portal_msgring_detach(cons_tx);
	portal_ring_detach(drx);
	portal_ring_detach(dtx);
	portal_ring_detach(fresh);
	return rc;
}
