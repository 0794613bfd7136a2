/* SPDX-License-Identifier: MIT */
/*
 * bcast_test.c - broadcast rings: one producer, several subscribers, HOLD
 * (the slowest active subscriber holds the producer) and LAP (the producer
 * never waits; a lapped subscriber is told how much it lost).
 *
 * Table-driven over mode {HOLD, LAP} x slot {8, 24, 64, 256} x capacity
 * {2, 16} x subscribers {1, 4}; names are "behaviour/MODE/sSLOT/cCAP/nSUBS".
 * Every message is stamped with its sequence number and a checksum.
 */
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "tests/test_util.h"

#include "portal/region.h"
#include "portal/ring.h"

struct cfg {
	uint32_t mode, slot, cap, subs;
};

static const uint32_t slots[] = { 8, 24, 64, 256 };
static const uint32_t caps[] = { 2, 16 };
static const uint32_t nsubs[] = { 1, 4 };
static struct cfg cfgs[2 * TU_ARRAY_SIZE(slots) * TU_ARRAY_SIZE(caps) * TU_ARRAY_SIZE(nsubs)];

#define MAX_SUBS 64

struct env {
	const struct cfg *c;
	void *mem;
	size_t len;
	struct portal_bcast_hdr *hdr;
	struct portal_bcast_sub *subline;
	uint8_t *slots;
	portal_bcast_t *prod;
	portal_bcast_t *sub[MAX_SUBS];
	uint32_t published;
	uint8_t buf[256], out[256];
};

static void env_open(struct env *e, const struct cfg *c, bool attach_subs)
{
	struct portal_bcast_params p = { c->mode, c->slot, c->cap, c->subs };

	memset(e, 0, sizeof(*e));
	e->c = c;
	e->len = portal_bcast_memsize(&p);
	assert_int_equal(e->len, PORTAL_BCAST_HDR_SIZE + (size_t)c->subs * 128 +
				 (size_t)c->cap * (8 + c->slot));
	e->mem = tu_mem_alloc(e->len);
	assert_non_null(e->mem);
	e->hdr = e->mem;
	e->subline = (struct portal_bcast_sub *)((uint8_t *)e->mem + PORTAL_BCAST_HDR_SIZE);
	e->slots = (uint8_t *)(e->subline + c->subs);
	assert_int_equal(portal_bcast_init(e->mem, e->len, &p), 0);
	assert_int_equal(portal_bcast_attach(e->mem, e->len, -1, &e->prod), 0);
	if (attach_subs)
		for (uint32_t i = 0; i < c->subs; i++)
			assert_int_equal(portal_bcast_attach(e->mem, e->len, (int)i, &e->sub[i]), 0);
}

static void env_close(struct env *e)
{
	for (uint32_t i = 0; i < MAX_SUBS; i++)
		portal_bcast_detach(e->sub[i]);
	portal_bcast_detach(e->prod);
	tu_mem_free_checked(e->mem, e->len);
}

static int publish(struct env *e)
{
	int rc;

	tu_stamp(e->buf, e->c->slot, tu_tag(3, e->published));
	rc = portal_bcast_publish(e->prod, e->buf);
	if (rc == 0)
		e->published++;
	return rc;
}

/* Read one message on subscriber I and expect sequence SEQ. */
static void read_expect(struct env *e, uint32_t i, uint32_t seq)
{
	uint64_t tag = 0, lost = 12345;
	int rc = portal_bcast_read(e->sub[i], e->out, &lost);

	if (rc != 0)
		fail_msg("sub %u: read for seq %u got %d", i, seq, rc);
	if (!tu_check(e->out, e->c->slot, &tag) || tag != tu_tag(3, seq))
		fail_msg("sub %u: want seq %u, got tag %#llx", i, seq, (unsigned long long)tag);
	assert_int_equal(lost, 12345); /* untouched unless lapped */
}

static uint32_t line_state(struct env *e, uint32_t i)
{
	return (uint32_t)atomic_load(&e->subline[i].state);
}

static uint32_t line_gen(struct env *e, uint32_t i)
{
	return (uint32_t)(atomic_load(&e->subline[i].state) >> 32);
}

static void assert_stats(portal_bcast_t *b, uint64_t enq, uint64_t deq, uint64_t full,
			 uint64_t empty, uint64_t proto, uint64_t lapped)
{
	struct portal_ring_stats st;

	portal_bcast_stats(b, &st);
	if (st.enqueued != enq || st.dequeued != deq || st.full != full || st.empty != empty ||
	    st.proto_errors != proto || st.lapped != lapped)
		fail_msg("stats enq %llu deq %llu full %llu empty %llu proto %llu lapped %llu; "
			 "want %llu %llu %llu %llu %llu %llu",
			 (unsigned long long)st.enqueued, (unsigned long long)st.dequeued,
			 (unsigned long long)st.full, (unsigned long long)st.empty,
			 (unsigned long long)st.proto_errors, (unsigned long long)st.lapped,
			 (unsigned long long)enq, (unsigned long long)deq, (unsigned long long)full,
			 (unsigned long long)empty, (unsigned long long)proto,
			 (unsigned long long)lapped);
}

/* ------------------------------------------------------------------ */
/* Behaviour                                                            */
/* ------------------------------------------------------------------ */

/* Every subscriber sees every message, in order, for several laps. */
static void t_basic(void **state)
{
	const struct cfg *c = *state;
	struct env e;
	uint32_t got = 0;

	env_open(&e, c, true);
	for (uint32_t i = 0; i < c->subs; i++) {
		assert_int_equal(portal_bcast_ready(e.sub[i]), 0);
		assert_int_equal(portal_bcast_read(e.sub[i], e.out, NULL), -EAGAIN);
	}
	for (uint32_t lap = 0; lap < 5; lap++) {
		uint32_t first = e.published;

		for (uint32_t k = 0; k < c->cap; k++)
			assert_int_equal(publish(&e), 0);
		for (uint32_t i = 0; i < c->subs; i++) {
			assert_int_equal(portal_bcast_ready(e.sub[i]), 1);
			for (uint32_t k = 0; k < c->cap; k++)
				read_expect(&e, i, first + k);
			assert_int_equal(portal_bcast_read(e.sub[i], e.out, NULL), -EAGAIN);
			assert_int_equal(portal_bcast_ready(e.sub[i]), 0);
			/* The cursor line says how far this subscriber got. */
			assert_int_equal(atomic_load(&e.subline[i].cursor), e.published);
		}
		got += c->cap;
	}
	assert_int_equal(atomic_load(&e.hdr->prod_tail), e.published);
	assert_stats(e.prod, e.published, 0, 0, 0, 0, 0);
	for (uint32_t i = 0; i < c->subs; i++)
		assert_stats(e.sub[i], 0, got, 0, 6, 0, 0);
	env_close(&e);
}

/* Misuse and attach errors. */
static void t_attach_errors(void **state)
{
	const struct cfg *c = *state;
	portal_bcast_t *b = NULL;
	struct env e;

	env_open(&e, c, true);
	assert_int_equal(portal_bcast_attach(e.mem, e.len, (int)c->subs, &b), -EINVAL);
	assert_int_equal(portal_bcast_attach(e.mem, e.len, 64, &b), -EINVAL);
	assert_int_equal(portal_bcast_attach(e.mem, e.len, INT32_MAX, &b), -EINVAL);
	for (uint32_t i = 0; i < c->subs; i++)
		assert_int_equal(portal_bcast_attach(e.mem, e.len, (int)i, &b), -EBUSY);
	assert_null(b);
	/* Detach frees the slot; the new subscriber starts at the producer. */
	assert_int_equal(publish(&e), 0);
	portal_bcast_detach(e.sub[0]);
	e.sub[0] = NULL;
	assert_int_equal(line_state(&e, 0), PORTAL_BCAST_SUB_FREE);
	assert_int_equal(portal_bcast_attach(e.mem, e.len, 0, &e.sub[0]), 0);
	assert_int_equal(line_state(&e, 0), PORTAL_BCAST_SUB_ACTIVE);
	assert_int_equal(atomic_load(&e.subline[0].cursor), 1);
	assert_int_equal(portal_bcast_read(e.sub[0], e.out, NULL), -EAGAIN);
	assert_int_equal(publish(&e), 0);
	read_expect(&e, 0, 1);
	/* Roles and arguments. */
	assert_int_equal(portal_bcast_publish(e.sub[0], e.buf), -EINVAL);
	assert_int_equal(portal_bcast_publish(e.prod, NULL), -EINVAL);
	assert_int_equal(portal_bcast_read(e.prod, e.out, NULL), -EINVAL);
	assert_int_equal(portal_bcast_read(e.sub[0], NULL, NULL), -EINVAL);
	assert_int_equal(portal_bcast_attach(NULL, e.len, 0, &b), -EINVAL);
	assert_int_equal(portal_bcast_attach(e.mem, e.len, 0, NULL), -EINVAL);
	assert_int_equal(portal_bcast_attach((uint8_t *)e.mem + 8, e.len - 8, -1, &b), -EINVAL);
	assert_int_equal(portal_bcast_attach(e.mem, e.len - 1, -1, &b), PORTAL_EPROTO);
	assert_int_equal(portal_bcast_attach(e.mem, PORTAL_BCAST_HDR_SIZE - 1, -1, &b),
			 PORTAL_EPROTO);
	assert_null(b);
	env_close(&e);
}

/*
 * HOLD: publish returns -EAGAIN when an active subscriber is a full ring
 * behind and resumes once it reads; subscribers that kept up do not hold;
 * a detached subscriber no longer holds; one that attaches later holds from
 * its starting point on.
 */
static void t_hold(void **state)
{
	const struct cfg *c = *state;
	struct env e;
	uint32_t slow = c->subs - 1, full = 0;

	env_open(&e, c, true);
	for (uint32_t k = 0; k < c->cap; k++)
		assert_int_equal(publish(&e), 0);
	assert_int_equal(publish(&e), -EAGAIN);
	full++;
	/* All but the slow one catch up: still held by the slow one. */
	for (uint32_t i = 0; i < slow; i++)
		for (uint32_t k = 0; k < c->cap; k++)
			read_expect(&e, i, k);
	assert_int_equal(publish(&e), -EAGAIN);
	full++;
	/* The slow one reads one: exactly one more fits. */
	read_expect(&e, slow, 0);
	assert_int_equal(publish(&e), 0);
	assert_int_equal(publish(&e), -EAGAIN);
	full++;
	assert_int_equal(e.published, c->cap + 1);
	/* The slow one detaches: nobody holds the producer back to it. */
	portal_bcast_detach(e.sub[slow]);
	e.sub[slow] = NULL;
	if (slow > 0) {
		/* The others are now the slowest: they catch up, then hold. */
		for (uint32_t i = 0; i < slow; i++)
			read_expect(&e, i, c->cap);
		for (uint32_t k = 0; k < c->cap; k++)
			assert_int_equal(publish(&e), 0);
		assert_int_equal(publish(&e), -EAGAIN);
		full++;
		for (uint32_t i = 0; i < slow; i++)
			for (uint32_t k = 0; k < c->cap; k++)
				read_expect(&e, i, c->cap + 1 + k);
	} else {
		for (uint32_t k = 0; k < 3 * c->cap; k++)
			assert_int_equal(publish(&e), 0);
	}
	/* A subscriber that attaches now starts here and holds from here. */
	assert_int_equal(portal_bcast_attach(e.mem, e.len, (int)slow, &e.sub[slow]), 0);
	{
		uint32_t start = e.published;

		for (uint32_t k = 0; k < c->cap; k++)
			assert_int_equal(publish(&e), 0);
		/* Everyone else keeps up: only the newcomer holds. */
		for (uint32_t i = 0; i < slow; i++)
			for (uint32_t k = 0; k < c->cap; k++)
				read_expect(&e, i, start + k);
		assert_int_equal(publish(&e), -EAGAIN);
		full++;
		for (uint32_t k = 0; k < c->cap; k++)
			read_expect(&e, slow, start + k);
		assert_int_equal(publish(&e), 0);
	}
	assert_stats(e.prod, e.published, 0, full, 0, 0, 0);
	env_close(&e);
}

/*
 * Eviction of a subscriber whose holder is "dead" (it stops reading; the
 * handle stays open so that the test can see what a wrongly evicted live
 * subscriber gets). Line 0 is tagged 1000. In HOLD mode it holds the
 * producer until evicted; in both modes eviction frees the line for a new
 * subscriber and never frees that successor's line.
 */
static void t_evict(void **state)
{
	const struct cfg *c = *state;
	unsigned found[MAX_SUBS];
	uint32_t gen, start;
	struct env e;

	env_open(&e, c, true);
	portal_bcast_detach(e.sub[0]);
	assert_int_equal(portal_bcast_attach_owner(e.mem, e.len, 0, 1000, &e.sub[0]), 0);
	assert_int_equal(atomic_load(&e.subline[0].owner), 1000);
	assert_int_equal(portal_bcast_find_subs(e.prod, 1000, found, MAX_SUBS), 1);
	assert_int_equal(found[0], 0);
	assert_int_equal(portal_bcast_find_subs(e.prod, (uint64_t)getpid(), NULL, 0),
			 (int)c->subs - 1);
	assert_int_equal(portal_bcast_find_subs(e.prod, 1001, found, MAX_SUBS), 0);
	assert_int_equal(portal_bcast_find_subs(e.prod, 1000, NULL, 1), -EINVAL);
	/* Line 0 stops reading; the others keep up. */
	for (uint32_t k = 0; k < c->cap; k++)
		assert_int_equal(publish(&e), 0);
	for (uint32_t i = 1; i < c->subs; i++)
		for (uint32_t k = 0; k < c->cap; k++)
			read_expect(&e, i, k);
	if (c->mode == PORTAL_BCAST_HOLD)
		assert_int_equal(publish(&e), -EAGAIN);
	/* Refused: wrong tag, out of range, own line; nothing changes. */
	gen = line_gen(&e, 0);
	assert_int_equal(portal_bcast_evict(e.prod, 0, 999), 0);
	assert_int_equal(portal_bcast_evict(e.prod, c->subs, 1000), -EINVAL);
	assert_int_equal(portal_bcast_evict(e.prod, 64, PORTAL_BCAST_OWNER_ANY), -EINVAL);
	assert_int_equal(portal_bcast_evict(e.sub[0], 0, 1000), -EINVAL);
	assert_int_equal(portal_bcast_evict(NULL, 0, 1000), -EINVAL);
	assert_int_equal(line_state(&e, 0), PORTAL_BCAST_SUB_ACTIVE);
	/* Evicted: the line is free, same generation; a second call finds
	 * nothing to do. */
	assert_int_equal(portal_bcast_evict(e.prod, 0, 1000), 1);
	assert_int_equal(line_state(&e, 0), PORTAL_BCAST_SUB_FREE);
	assert_int_equal(line_gen(&e, 0), gen);
	assert_int_equal(portal_bcast_evict(e.prod, 0, 1000), 0);
	assert_int_equal(portal_bcast_find_subs(e.prod, 1000, found, MAX_SUBS), 0);
	/* The producer goes on; the others read everything. */
	for (uint32_t k = 0; k < c->cap; k++)
		assert_int_equal(publish(&e), 0);
	for (uint32_t i = 1; i < c->subs; i++)
		for (uint32_t k = 0; k < c->cap; k++)
			read_expect(&e, i, c->cap + k);
	/* The evicted handle learns it, every time, and ready says so. */
	assert_int_equal(portal_bcast_ready(e.sub[0]), 1);
	assert_int_equal(portal_bcast_read(e.sub[0], e.out, NULL), -EOWNERDEAD);
	assert_int_equal(portal_bcast_read(e.sub[0], e.out, NULL), -EOWNERDEAD);
	assert_false(portal_bcast_quarantined(e.sub[0]));
	/* A successor takes the line, a generation later; the old handle's
	 * detach and an eviction under the old tag leave it alone. */
	{
		portal_bcast_t *next = NULL;

		assert_int_equal(portal_bcast_attach_owner(e.mem, e.len, 0, 2000, &next), 0);
		assert_int_equal(line_gen(&e, 0), gen + 1);
		portal_bcast_detach(e.sub[0]);
		e.sub[0] = next;
	}
	assert_int_equal(line_state(&e, 0), PORTAL_BCAST_SUB_ACTIVE);
	assert_int_equal(portal_bcast_evict(e.prod, 0, 1000), 0);
	assert_int_equal(line_state(&e, 0), PORTAL_BCAST_SUB_ACTIVE);
	start = e.published;
	assert_int_equal(publish(&e), 0);
	read_expect(&e, 0, start);
	/* OWNER_ANY frees whatever holds the line. */
	assert_int_equal(portal_bcast_evict(e.prod, 0, PORTAL_BCAST_OWNER_ANY), 1);
	assert_int_equal(portal_bcast_read(e.sub[0], e.out, NULL), -EOWNERDEAD);
	env_close(&e);
}

/*
 * A joiner that died between claiming its line and being subscribed leaves
 * the line joining: the producer does not hold for it, attach finds it
 * busy, and only an eviction (by tag, or OWNER_ANY) frees it.
 */
static void t_evict_joining(void **state)
{
	struct cfg c = { PORTAL_BCAST_HOLD, 16, 4, 2 };
	portal_bcast_t *b = NULL;
	struct env e;

	(void)state;
	env_open(&e, &c, false);
	atomic_store(&e.subline[1].state, (uint64_t)7 << 32 | PORTAL_BCAST_SUB_JOINING);
	atomic_store(&e.subline[1].owner, 55);
	for (uint32_t k = 0; k < 3 * c.cap; k++)
		assert_int_equal(publish(&e), 0);
	assert_int_equal(portal_bcast_attach(e.mem, e.len, 1, &b), -EBUSY);
	assert_int_equal(portal_bcast_find_subs(e.prod, 55, NULL, 0), 1);
	assert_int_equal(portal_bcast_evict(e.prod, 1, 56), 0);
	assert_int_equal(portal_bcast_evict(e.prod, 1, 55), 1);
	assert_int_equal(atomic_load(&e.subline[1].state), (uint64_t)7 << 32);
	assert_int_equal(portal_bcast_attach(e.mem, e.len, 1, &e.sub[1]), 0);
	assert_int_equal(line_gen(&e, 1), 8);
	/* Joining again and freed by number. */
	atomic_store(&e.subline[0].state, (uint64_t)3 << 32 | PORTAL_BCAST_SUB_JOINING);
	assert_int_equal(portal_bcast_evict(e.prod, 0, PORTAL_BCAST_OWNER_ANY), 1);
	assert_int_equal(line_state(&e, 0), PORTAL_BCAST_SUB_FREE);
	env_close(&e);
}

/*
 * A real subscriber process killed with SIGKILL while subscribed to a HOLD
 * ring in shared memory: the producer (this process) is held, learns of
 * the death (here from waitpid; in an application, from the region's
 * liveness watch), finds the dead one's line by its tag (its pid), evicts
 * it and goes on; every message the survivor reads is checked.
 */
static void t_evict_dead_process(void **state)
{
	struct portal_bcast_params p = { PORTAL_BCAST_HOLD, 64, 8, 2 };
	size_t len = portal_bcast_memsize(&p);
	portal_bcast_t *prod = NULL, *live = NULL;
	uint8_t msg[64], out[64];
	unsigned found[2];
	uint32_t seq = 0, next = 0;
	bool dead = false;
	uint64_t tag;
	int go[2], st = 0, rc;
	void *mem;
	pid_t pid;

	(void)state;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(mem != MAP_FAILED);
	assert_int_equal(portal_bcast_init(mem, len, &p), 0);
	assert_int_equal(portal_bcast_attach(mem, len, -1, &prod), 0);
	assert_int_equal(portal_bcast_attach(mem, len, 1, &live), 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		portal_bcast_t *b = NULL;
		char c = 1;

		if (portal_bcast_attach(mem, len, 0, &b) != 0 || write(go[1], &c, 1) != 1)
			_exit(1);
		/* Read three messages, then die mid-stream, still subscribed. */
		for (int n = 0; n < 3;)
			if (portal_bcast_read(b, out, NULL) == 0)
				n++;
		raise(SIGKILL);
		_exit(2);
	}
	{
		char c;

		assert_int_equal(read(go[0], &c, 1), 1);
	}
	close(go[0]);
	close(go[1]);
	/* Publish until held: the dead subscriber stops at 3. */
	for (;;) {
		tu_stamp(msg, sizeof(msg), tu_tag(5, seq));
		rc = portal_bcast_publish(prod, msg);
		if (rc == -EAGAIN) {
			/* Held after the death was known: held by the dead. */
			if (dead)
				break;
			dead = waitpid(pid, &st, WNOHANG) == pid;
			/* The survivor keeps up while the child still reads. */
			while (portal_bcast_read(live, out, NULL) == 0) {
				assert_true(tu_check(out, sizeof(out), &tag));
				assert_int_equal(tag, tu_tag(5, next++));
			}
			continue;
		}
		assert_int_equal(rc, 0);
		seq++;
	}
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	assert_int_equal(seq, 3 + p.capacity);
	assert_int_equal(portal_bcast_find_subs(prod, (uint64_t)pid, found, 2), 1);
	assert_int_equal(found[0], 0);
	assert_int_equal(portal_bcast_evict(prod, found[0], (uint64_t)pid), 1);
	/* Nothing lost for the survivor, nothing held any more. */
	for (uint32_t k = 0; k < 4 * p.capacity; k++) {
		while (portal_bcast_read(live, out, NULL) == 0) {
			assert_true(tu_check(out, sizeof(out), &tag));
			assert_int_equal(tag, tu_tag(5, next++));
		}
		tu_stamp(msg, sizeof(msg), tu_tag(5, seq));
		assert_int_equal(portal_bcast_publish(prod, msg), 0);
		seq++;
	}
	while (portal_bcast_read(live, out, NULL) == 0) {
		assert_true(tu_check(out, sizeof(out), &tag));
		assert_int_equal(tag, tu_tag(5, next++));
	}
	assert_int_equal(next, seq);
	portal_bcast_detach(live);
	portal_bcast_detach(prod);
	munmap(mem, len);
}

/*
 * LAP: the producer never waits. A subscriber a ring or more behind gets
 * -EOVERFLOW once, with *lost the number of messages it skipped, then reads
 * on from the oldest message the producer still holds; lost + read equals
 * what was published, with no message twice. Both ways to notice: from
 * prod_tail when it has nothing cached, and from a slot sequence when the
 * producer lapped it mid-way through what it had cached.
 */
static void t_lap(void **state)
{
	const struct cfg *c = *state;
	struct env e;
	uint64_t lost = 0, total_lost = 0;
	uint32_t next, reads = 0;
	int rc;

	env_open(&e, c, true);
	for (uint32_t k = 0; k < 2 * c->cap + c->cap / 2 + 3; k++)
		assert_int_equal(publish(&e), 0); /* never -EAGAIN */
	/* Subscriber 0: nothing cached, sees prod_tail far ahead. */
	rc = portal_bcast_read(e.sub[0], e.out, &lost);
	assert_int_equal(rc, -EOVERFLOW);
	/* The oldest message still held: the one after the slot being
	 * rewritten next (bcast.c: prod - capacity + 1). */
	assert_int_equal(lost, e.published - c->cap + 1);
	total_lost += lost;
	assert_int_equal(atomic_load(&e.subline[0].cursor), lost);
	for (next = (uint32_t)lost; next < e.published; next++, reads++)
		read_expect(&e, 0, next);
	assert_int_equal(portal_bcast_read(e.sub[0], e.out, &lost), -EAGAIN);
	assert_int_equal(total_lost + reads, e.published);
	assert_stats(e.sub[0], 0, reads, 0, 1, 0, total_lost);

	if (c->subs > 1 && c->cap > 2) {
		/* Subscriber 1 reads a few first (so it caches prod_tail), then
		 * the producer laps it: it notices from the slot sequence. */
		uint32_t had, read1 = 0;

		rc = portal_bcast_read(e.sub[1], e.out, &lost);
		assert_int_equal(rc, -EOVERFLOW);
		total_lost = lost;
		next = (uint32_t)lost;
		read_expect(&e, 1, next++);
		read1++;
		had = e.published;
		for (uint32_t k = 0; k < 2 * c->cap; k++)
			assert_int_equal(publish(&e), 0);
		lost = 0;
		rc = portal_bcast_read(e.sub[1], e.out, &lost);
		assert_int_equal(rc, -EOVERFLOW);
		assert_int_equal(lost, e.published - c->cap + 1 - next);
		total_lost += lost;
		next += (uint32_t)lost;
		for (; next < e.published; next++, read1++)
			read_expect(&e, 1, next);
		assert_int_equal(portal_bcast_read(e.sub[1], e.out, NULL), -EAGAIN);
		assert_int_equal(total_lost + read1, e.published);
		assert_true(had < e.published);
	}
	/* The lost count may be ignored. */
	for (uint32_t k = 0; k < 3 * c->cap; k++)
		assert_int_equal(publish(&e), 0);
	assert_int_equal(portal_bcast_read(e.sub[0], e.out, NULL), -EOVERFLOW);
	read_expect(&e, 0, e.published - c->cap + 1);
	assert_stats(e.prod, e.published, 0, 0, 0, 0, 0);
	env_close(&e);
}

/* ------------------------------------------------------------------ */
/* Hostile producer                                                     */
/* ------------------------------------------------------------------ */

static void assert_sub_quarantined(struct env *e, uint32_t i)
{
	assert_true(portal_bcast_quarantined(e->sub[i]));
	assert_int_equal(portal_bcast_read(e->sub[i], e->out, NULL), PORTAL_EPROTO);
	assert_int_equal(portal_bcast_ready(e->sub[i]), 1);
	assert_int_equal(portal_bcast_read(e->sub[i], e->out, NULL), PORTAL_EPROTO);
}

/* prod_tail going backwards, in either mode, and (HOLD) claiming more than
 * a ring past the subscriber, is a protocol error. */
static void t_hostile_prod_tail(void **state)
{
	const struct cfg *c = *state;
	static const struct {
		const char *what;
		int kind;
		bool hold_only;
	} cases[] = {
		{ "backwards by one", 0, false },
		{ "backwards by a ring", 1, false },
		{ "back to 0", 2, false },
		{ "a ring and one ahead", 3, true },
		{ "2^40 ahead", 4, true },
	};

	for (size_t k = 0; k < TU_ARRAY_SIZE(cases); k++) {
		struct tu_log log;
		struct env e;
		uint64_t bad, cursor;
		int rc;

		if (cases[k].hold_only && c->mode != PORTAL_BCAST_HOLD)
			continue;
		env_open(&e, c, true);
		for (uint32_t r = 0; r < 3; r++) {
			for (uint32_t m = 0; m < c->cap; m++)
				assert_int_equal(publish(&e), 0);
			for (uint32_t i = 0; i < c->subs; i++)
				for (uint32_t m = 0; m < c->cap; m++)
					read_expect(&e, i, r * c->cap + m);
		}
		switch (cases[k].kind) {
		case 0: bad = e.published - 1; break;
		case 1: bad = e.published - c->cap; break;
		case 2: bad = 0; break;
		case 3: bad = e.published + c->cap + 1; break;
		default: bad = e.published + (UINT64_C(1) << 40); break;
		}
		atomic_store(&e.hdr->prod_tail, bad);
		cursor = atomic_load(&e.subline[0].cursor);
		tu_log_capture(&log);
		rc = portal_bcast_read(e.sub[0], e.out, NULL);
		tu_log_release();
		if (rc != PORTAL_EPROTO)
			fail_msg("prod_tail %s (%llu, honest %u): read got %d, want EPROTO",
				 cases[k].what, (unsigned long long)bad, e.published, rc);
		assert_sub_quarantined(&e, 0);
		assert_stats(e.sub[0], 0, 3 * c->cap, 0, 0, 1, 0);
		assert_int_equal(log.count[PORTAL_LOG_ERROR], 1);
		assert_int_equal(atomic_load(&e.subline[0].cursor), cursor);
		env_close(&e);
	}
}

/* HOLD: a slot whose sequence is not the one prod_tail promised. */
static void t_hostile_slot_seq_hold(void **state)
{
	const struct cfg *c = *state;
	static const uint64_t bad_seq[] = { 0, 2, 1 + 16, UINT64_MAX };

	for (size_t k = 0; k < TU_ARRAY_SIZE(bad_seq); k++) {
		struct env e;
		int rc;

		env_open(&e, c, true);
		assert_int_equal(publish(&e), 0);
		assert_int_equal(publish(&e), 0);
		atomic_store((_Atomic uint64_t *)e.slots, bad_seq[k]); /* slot of message 0 */
		rc = portal_bcast_read(e.sub[0], e.out, NULL);
		if (rc != PORTAL_EPROTO)
			fail_msg("slot sequence %llu: read got %d, want EPROTO",
				 (unsigned long long)bad_seq[k], rc);
		assert_sub_quarantined(&e, 0);
		assert_int_equal(atomic_load(&e.subline[0].cursor), 0);
		if (c->subs > 1) /* another subscriber is not affected */
			assert_false(portal_bcast_quarantined(e.sub[1]));
		env_close(&e);
	}
}

/*
 * LAP: a slot sequence that is neither the expected one nor a later lap of
 * the same slot, while prod_tail has not moved, can only be corruption.
 * Today the subscriber is told it was lapped with *lost == 0, forever, and
 * never gets past the slot; it must get PORTAL_EPROTO instead (or at least
 * make progress). Bounded to a few reads so the test cannot spin.
 */
static void t_hostile_slot_seq_lap(void **state)
{
	const struct cfg *c = *state;
	static const uint64_t bad_seq[] = { 3, 12345, UINT64_MAX };
	const uint32_t published[] = { 2, c->cap + 5 };

	for (size_t np = 0; np < TU_ARRAY_SIZE(published); np++)
		for (size_t k = 0; k < TU_ARRAY_SIZE(bad_seq); k++) {
			uint32_t at = published[np] - 2;
			uint64_t lost = 99, first_lost = 0;
			int rc = 0, zero_laps = 0, i;
			struct env e;

			env_open(&e, c, true);
			while (e.published < published[np])
				assert_int_equal(publish(&e), 0);
			/* The subscriber catches up to two before the end. */
			while (atomic_load(&e.subline[0].cursor) < at) {
				rc = portal_bcast_read(e.sub[0], e.out, NULL);
				assert_true(rc == 0 || rc == -EOVERFLOW);
			}
			assert_int_equal(atomic_load(&e.subline[0].cursor), at);
			/* The slot it reads next now claims to hold something else. */
			atomic_store((_Atomic uint64_t *)(e.slots + (size_t)(at % c->cap) *
							  (8 + c->slot)), bad_seq[k]);
			for (i = 0; i < 4; i++) {
				lost = 99;
				rc = portal_bcast_read(e.sub[0], e.out, &lost);
				if (i == 0)
					first_lost = lost;
				if (rc == -EOVERFLOW && lost == 0)
					zero_laps++;
				if (rc == PORTAL_EPROTO || rc == 0)
					break;
			}
			if (rc != PORTAL_EPROTO)
				fail_msg("LAP slot sequence %llu at position %u of %u published: after "
					 "%d reads rc %d, first *lost %llu, %d reads -EOVERFLOW with *lost "
					 "0, cursor %llu; want PORTAL_EPROTO",
					 (unsigned long long)bad_seq[k], at, published[np], i, rc,
					 (unsigned long long)first_lost, zero_laps,
					 (unsigned long long)atomic_load(&e.subline[0].cursor));
			assert_sub_quarantined(&e, 0);
			env_close(&e);
		}
}

/*
 * HOLD: a subscriber that writes its cursor out of range is ignored from
 * then on and counted once; the well-behaved subscribers still hold the
 * producer.
 */
static void t_hostile_cursor(void **state)
{
	const struct cfg *c = *state;
	static const struct {
		const char *what;
		int kind; /* 0: far past the producer, 1: UINT64_MAX, 2: a ring + 1 behind */
	} cases[] = {
		/* Far enough that it never comes back in range during the test: a
		 * cursor that does is held for again (that is only a slow reader). */
		{ "far past the producer", 0 },
		{ "UINT64_MAX", 1 },
		{ "more than a ring behind", 2 },
	};
	uint32_t bad = c->subs - 1;

	for (size_t k = 0; k < TU_ARRAY_SIZE(cases); k++) {
		struct portal_ring_stats st;
		struct tu_log log;
		struct env e;
		uint64_t v;

		env_open(&e, c, true);
		/* A lap first, read by everyone, so "behind" values exist. */
		for (uint32_t m = 0; m < 2 * c->cap; m++) {
			assert_int_equal(publish(&e), 0);
			for (uint32_t i = 0; i < c->subs; i++)
				read_expect(&e, i, m);
		}
		for (uint32_t m = 0; m < c->cap; m++)
			assert_int_equal(publish(&e), 0);
		v = cases[k].kind == 0 ? e.published + (UINT64_C(1) << 62) :
		    cases[k].kind == 1 ? UINT64_MAX : e.published - c->cap - 1;
		atomic_store(&e.subline[bad].cursor, v);
		for (uint32_t i = 0; i < bad; i++)
			for (uint32_t m = 0; m < c->cap; m++)
				read_expect(&e, i, 2 * c->cap + m);
		/* The scan finds the bad cursor: ignored, counted, logged. */
		tu_log_capture(&log);
		assert_int_equal(publish(&e), 0);
		tu_log_release();
		portal_bcast_stats(e.prod, &st);
		if (st.proto_errors != 1)
			fail_msg("cursor %s: proto_errors %llu, want 1", cases[k].what,
				 (unsigned long long)st.proto_errors);
		assert_int_equal(log.count[PORTAL_LOG_ERROR], 1);
		/* Many laps later it still counts once, and the others still hold:
		 * the producer stops exactly a ring ahead of them. */
		for (uint32_t lap = 0; lap < 3; lap++) {
			uint32_t good = e.published - (lap == 0), n = 0;

			while (publish(&e) == 0)
				if (++n > 2 * c->cap)
					fail_msg("cursor %s: publish never held back", cases[k].what);
			assert_int_equal(n, c->cap - (lap == 0));
			assert_int_equal(e.published - good, c->cap);
			for (uint32_t i = 0; i < bad; i++)
				for (uint32_t m = 0; m < c->cap; m++)
					read_expect(&e, i, good + m);
		}
		portal_bcast_stats(e.prod, &st);
		assert_int_equal(st.proto_errors, 1);
		assert_false(portal_bcast_quarantined(e.prod));
		env_close(&e);
	}
}

/*
 * HOLD: after a subscriber that broke the protocol leaves, an honest one
 * that takes its slot must hold the producer like any other. Here the new
 * one attaches before the producer happens to scan the slot while it was
 * free; the producer must still not overwrite what the newcomer has not read
 * (a HOLD subscriber that finds its slot overwritten is quarantined).
 */
static void t_hostile_cursor_reattach(void **state)
{
	struct cfg c = { PORTAL_BCAST_HOLD, 16, 4, 2 };
	struct portal_ring_stats st;
	struct env e;
	uint32_t start, n = 0;
	int rc;

	(void)state;
	env_open(&e, &c, true);
	for (uint32_t m = 0; m < c.cap; m++)
		assert_int_equal(publish(&e), 0);
	atomic_store(&e.subline[1].cursor, UINT64_MAX); /* subscriber 1 misbehaves */
	for (uint32_t m = 0; m < c.cap; m++)
		read_expect(&e, 0, m);
	assert_int_equal(publish(&e), 0); /* scan: subscriber 1 ignored */
	portal_bcast_stats(e.prod, &st);
	assert_int_equal(st.proto_errors, 1);
	/* Subscriber 1 leaves; an honest one takes the slot straight away. */
	portal_bcast_detach(e.sub[1]);
	assert_int_equal(portal_bcast_attach(e.mem, e.len, 1, &e.sub[1]), 0);
	start = e.published;
	/* Subscriber 0 keeps up; the newcomer reads nothing yet. */
	while ((rc = publish(&e)) == 0) {
		while (portal_bcast_read(e.sub[0], e.out, NULL) == 0)
			;
		if (++n > 3 * c.cap)
			break;
	}
	if (rc != -EAGAIN || e.published - start != c.cap)
		fail_msg("the new subscriber in slot 1 did not hold the producer: %u published "
			 "past its start (capacity %u), publish rc %d", e.published - start, c.cap,
			 rc);
	for (uint32_t m = 0; m < c.cap; m++)
		read_expect(&e, 1, start + m);
	env_close(&e);
}

/* HOLD with one subscriber: a bad cursor leaves nobody to wait for. */
static void t_hostile_cursor_alone(void **state)
{
	struct cfg c = { PORTAL_BCAST_HOLD, 16, 4, 1 };
	struct portal_ring_stats st;
	struct env e;

	(void)state;
	env_open(&e, &c, true);
	for (uint32_t m = 0; m < c.cap; m++)
		assert_int_equal(publish(&e), 0);
	assert_int_equal(publish(&e), -EAGAIN);
	atomic_store(&e.subline[0].cursor, UINT64_MAX - 5);
	for (uint32_t m = 0; m < 5 * c.cap; m++)
		assert_int_equal(publish(&e), 0);
	portal_bcast_stats(e.prod, &st);
	assert_int_equal(st.proto_errors, 1);
	assert_int_equal(st.full, 1);
	env_close(&e);
}

/* ------------------------------------------------------------------ */
/* Many subscribers                                                     */
/* ------------------------------------------------------------------ */

/* 64 subscribers in HOLD mode, read round-robin at different speeds:
 * everyone sees every message and the producer waits for the slowest. */
static void t_many_subs(void **state)
{
	struct cfg c = { PORTAL_BCAST_HOLD, 32, 8, 64 };
	uint32_t next[64] = { 0 };
	struct env e;
	uint32_t target = 2000, eagain = 0;

	(void)state;
	env_open(&e, &c, true);
	while (e.published < target) {
		int rc = publish(&e);

		if (rc == -EAGAIN) {
			uint32_t slowest = UINT32_MAX;

			eagain++;
			for (uint32_t i = 0; i < 64; i++)
				slowest = next[i] < slowest ? next[i] : slowest;
			assert_int_equal(e.published - slowest, c.cap);
			/* Subscriber i reads (i % 3) + 1 messages. */
			for (uint32_t i = 0; i < 64; i++)
				for (uint32_t k = 0; k <= i % 3 && next[i] < e.published; k++)
					read_expect(&e, i, next[i]++);
		} else {
			assert_int_equal(rc, 0);
		}
	}
	for (uint32_t i = 0; i < 64; i++) {
		while (next[i] < e.published)
			read_expect(&e, i, next[i]++);
		assert_int_equal(portal_bcast_read(e.sub[i], e.out, NULL), -EAGAIN);
	}
	assert_true(eagain > target / c.cap / 2);
	env_close(&e);
}

struct mt {
	struct cfg c;
	void *mem;
	size_t len;
	uint32_t count;
	unsigned nsub;
	atomic_uint ready;
	struct tu_err err;
	uint64_t lost[8], got[8];
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

static void *mt_sub(void *arg)
{
	struct mt_arg *a = arg;
	struct mt *m = a->m;
	portal_bcast_t *b;
	uint8_t out[256];
	uint64_t next = 0;
	double t0 = now_s();

	if (portal_bcast_attach(m->mem, m->len, (int)a->id, &b)) {
		tu_err_set(&m->err, "sub %u attach", a->id);
		atomic_fetch_add(&m->ready, 1);
		return NULL;
	}
	atomic_fetch_add(&m->ready, 1);
	while (next < m->count && !tu_err_any(&m->err)) {
		uint64_t lost = 0, tag = 0;
		int rc = portal_bcast_read(b, out, &lost);

		if (rc == -EAGAIN) {
			if (now_s() - t0 > 20) {
				tu_err_set(&m->err, "sub %u stuck at %llu", a->id,
					   (unsigned long long)next);
				break;
			}
			sched_yield();
			continue;
		}
		if (rc == -EOVERFLOW && m->c.mode == PORTAL_BCAST_LAP && lost > 0) {
			next += lost;
			m->lost[a->id] += lost;
			continue;
		}
		if (rc) {
			tu_err_set(&m->err, "sub %u read %d (lost %llu) at %llu", a->id, rc,
				   (unsigned long long)lost, (unsigned long long)next);
			break;
		}
		/* The seqlock never hands out a torn message. */
		if (!tu_check(out, m->c.slot, &tag) || tag != tu_tag(3, (uint32_t)next)) {
			tu_err_set(&m->err, "sub %u: want seq %llu, got tag %#llx (checksum %s)",
				   a->id, (unsigned long long)next, (unsigned long long)tag,
				   tu_check(out, m->c.slot, &tag) ? "ok" : "BAD");
			break;
		}
		next++;
		m->got[a->id]++;
	}
	portal_bcast_detach(b);
	return NULL;
}

/* Publish message S: 1 published, 0 held (HOLD; yielded, call again),
 * -1 an error (recorded in m->err) or held for more than 20 s. */
static int mt_publish(struct mt *m, portal_bcast_t *prod, uint32_t s, double t0)
{
	uint8_t buf[256];
	int rc;

	tu_stamp(buf, m->c.slot, tu_tag(3, s));
	rc = portal_bcast_publish(prod, buf);
	if (rc == -EAGAIN && m->c.mode == PORTAL_BCAST_HOLD) {
		if (now_s() - t0 > 20) {
			tu_err_set(&m->err, "producer stuck at %u", s);
			return -1;
		}
		sched_yield();
		return 0;
	}
	if (rc) {
		tu_err_set(&m->err, "publish %u: %d", s, rc);
		return -1;
	}
	return 1;
}

static void t_threads(void **state)
{
	const struct cfg *c = *state;
	struct portal_bcast_params p = { c->mode, c->slot, c->cap, c->subs };
	struct mt *m = calloc(1, sizeof(*m));
	pthread_t th[8];
	struct mt_arg args[8];
	portal_bcast_t *prod;
	double t0;

	assert_non_null(m);
	m->c = *c;
	m->nsub = c->subs;
	m->count = c->mode == PORTAL_BCAST_HOLD ? 50000 : 200000;
	m->len = portal_bcast_memsize(&p);
	m->mem = tu_mem_alloc(m->len);
	assert_int_equal(portal_bcast_init(m->mem, m->len, &p), 0);
	assert_int_equal(portal_bcast_attach(m->mem, m->len, -1, &prod), 0);
	for (unsigned i = 0; i < m->nsub; i++) {
		args[i] = (struct mt_arg){ m, i };
		assert_int_equal(pthread_create(&th[i], NULL, mt_sub, &args[i]), 0);
	}
	while (atomic_load(&m->ready) < m->nsub)
		sched_yield();
	t0 = now_s();
	for (uint32_t s = 0; s < m->count && !tu_err_any(&m->err);) {
		int k = mt_publish(m, prod, s, t0);

		if (k < 0)
			break;
		s += (uint32_t)k;
	}
	for (unsigned i = 0; i < m->nsub; i++)
		pthread_join(th[i], NULL);
	tu_assert_no_err(&m->err);
	for (unsigned i = 0; i < m->nsub; i++) {
		assert_int_equal(m->got[i] + m->lost[i], m->count);
		if (c->mode == PORTAL_BCAST_HOLD)
			assert_int_equal(m->lost[i], 0);
	}
	portal_bcast_detach(prod);
	tu_mem_free_checked(m->mem, m->len);
	free(m);
}

/*
 * Eviction racing a reader. Subscribers 0 and 1 read everything; line 2's
 * reader (tag 42) either stops at a quarter of the stream and waits
 * (dead: the HOLD producer is held until it evicts the line) or keeps
 * reading and is evicted at half the stream while it reads (a wrong
 * verdict). Either way the producer goes on, 0 and 1 get every message
 * in order, and the victim gets each message it reads in order until
 * -EOWNERDEAD, never PORTAL_EPROTO or a torn message.
 */
struct mt_victim {
	struct mt *m;
	bool live;
	atomic_bool stopped, evicted, done;
	uint64_t got;
	int last_rc;
};

static void *mt_victim(void *arg)
{
	struct mt_victim *v = arg;
	struct mt *m = v->m;
	portal_bcast_t *b;
	uint8_t out[256];
	uint64_t tag = 0;
	double t0 = now_s();
	int rc;

	if (portal_bcast_attach_owner(m->mem, m->len, 2, 42, &b)) {
		tu_err_set(&m->err, "victim attach");
		atomic_fetch_add(&m->ready, 1);
		return NULL;
	}
	atomic_fetch_add(&m->ready, 1);
	for (;;) {
		if (!v->live && v->got == m->count / 4) {
			atomic_store(&v->stopped, true);
			while (!atomic_load(&v->done))
				sched_yield();
			rc = portal_bcast_read(b, out, NULL);
			break;
		}
		rc = portal_bcast_read(b, out, NULL);
		if (rc == -EAGAIN) {
			if (now_s() - t0 > 20) {
				tu_err_set(&m->err, "victim stuck at %llu", (unsigned long long)v->got);
				break;
			}
			sched_yield();
			continue;
		}
		if (rc)
			break;
		if (!tu_check(out, m->c.slot, &tag) || tag != tu_tag(3, (uint32_t)v->got)) {
			tu_err_set(&m->err, "victim: want seq %llu, got tag %#llx",
				   (unsigned long long)v->got, (unsigned long long)tag);
			break;
		}
		v->got++;
	}
	v->last_rc = rc;
	portal_bcast_detach(b);
	return NULL;
}

static void t_threads_evict(void **state)
{
	bool live = *state != NULL;
	struct cfg c = { PORTAL_BCAST_HOLD, 64, 8, 3 };
	struct portal_bcast_params p = { c.mode, c.slot, c.cap, c.subs };
	struct mt *m = calloc(1, sizeof(*m));
	struct mt_victim *v = calloc(1, sizeof(*v));
	struct mt_arg args[2];
	pthread_t th[3];
	portal_bcast_t *prod;
	double t0;

	assert_non_null(m);
	assert_non_null(v);
	m->c = c;
	m->nsub = 2;
	m->count = 50000;
	m->len = portal_bcast_memsize(&p);
	m->mem = tu_mem_alloc(m->len);
	v->m = m;
	v->live = live;
	assert_int_equal(portal_bcast_init(m->mem, m->len, &p), 0);
	assert_int_equal(portal_bcast_attach(m->mem, m->len, -1, &prod), 0);
	for (unsigned i = 0; i < 2; i++) {
		args[i] = (struct mt_arg){ m, i };
		assert_int_equal(pthread_create(&th[i], NULL, mt_sub, &args[i]), 0);
	}
	assert_int_equal(pthread_create(&th[2], NULL, mt_victim, v), 0);
	while (atomic_load(&m->ready) < 3)
		sched_yield();
	t0 = now_s();
	for (uint32_t s = 0; s < m->count && !tu_err_any(&m->err);) {
		int k;

		if (!atomic_load(&v->evicted) &&
		    (live ? s == m->count / 2 : atomic_load(&v->stopped) &&
		     s == m->count / 4 + c.cap)) {
			unsigned line[3];

			assert_int_equal(portal_bcast_find_subs(prod, 42, line, 3), 1);
			assert_int_equal(line[0], 2);
			assert_int_equal(portal_bcast_evict(prod, 2, 42), 1);
			atomic_store(&v->evicted, true);
		}
		k = mt_publish(m, prod, s, t0);
		if (k < 0)
			break;
		s += (uint32_t)k;
	}
	atomic_store(&v->done, true);
	for (unsigned i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	tu_assert_no_err(&m->err);
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(m->got[i], m->count);
	assert_true(atomic_load(&v->evicted));
	assert_int_equal(v->last_rc, -EOWNERDEAD);
	if (live)
		assert_true(v->got >= m->count / 2 - c.cap && v->got <= m->count);
	else
		assert_int_equal(v->got, m->count / 4);
	portal_bcast_detach(prod);
	tu_mem_free_checked(m->mem, m->len);
	free(v);
	free(m);
}

static struct cfg mt_cfgs[] = {
	{ PORTAL_BCAST_HOLD, 64, 16, 3 },
	{ PORTAL_BCAST_HOLD, 8, 2, 2 },
	{ PORTAL_BCAST_LAP, 256, 4, 2 },
	{ PORTAL_BCAST_LAP, 24, 2, 1 },
};

/* ------------------------------------------------------------------ */
/* Parameters, init, attach                                            */
/* ------------------------------------------------------------------ */

static void t_params(void **state)
{
	static const struct {
		uint32_t mode, slot, cap, subs;
		bool ok;
	} cases[] = {
		{ PORTAL_BCAST_HOLD, 8, 2, 1, true },
		{ PORTAL_BCAST_LAP, 256, 1024, 64, true },
		{ PORTAL_BCAST_HOLD, 24, 16, 3, true },
		{ 0, 8, 16, 1, false },
		{ 3, 8, 16, 1, false },
		{ PORTAL_BCAST_HOLD, 0, 16, 1, false },
		{ PORTAL_BCAST_HOLD, 4, 16, 1, false },
		{ PORTAL_BCAST_HOLD, 12, 16, 1, false },
		{ PORTAL_BCAST_HOLD, 264, 16, 1, false },
		{ PORTAL_BCAST_HOLD, 8, 0, 1, false },
		{ PORTAL_BCAST_HOLD, 8, 1, 1, false },
		{ PORTAL_BCAST_HOLD, 8, 24, 1, false },
		{ PORTAL_BCAST_HOLD, 8, 1u << 29, 1, false },
		{ PORTAL_BCAST_HOLD, 8, 16, 0, false },
		{ PORTAL_BCAST_HOLD, 8, 16, 65, false },
	};
	uint8_t *m = tu_mem_alloc(1 << 16);

	(void)state;
	assert_int_equal(portal_bcast_memsize(NULL), 0);
	for (size_t i = 0; i < TU_ARRAY_SIZE(cases); i++) {
		struct portal_bcast_params p = { cases[i].mode, cases[i].slot, cases[i].cap,
						 cases[i].subs };
		size_t got = portal_bcast_memsize(&p);
		size_t want = cases[i].ok ? PORTAL_BCAST_HDR_SIZE + (size_t)p.max_subs * 128 +
						    (size_t)p.capacity * (8 + p.slot_size)
					  : 0;

		if (got != want)
			fail_msg("memsize(mode %u slot %u cap %u subs %u) = %zu, want %zu", p.mode,
				 p.slot_size, p.capacity, p.max_subs, got, want);
		if (!cases[i].ok)
			assert_int_equal(portal_bcast_init(m, 1 << 16, &p), -EINVAL);
	}
	{
		struct portal_bcast_params p = { PORTAL_BCAST_HOLD, 8, 16, 2 };
		size_t need = portal_bcast_memsize(&p);

		assert_int_equal(portal_bcast_init(NULL, need, &p), -EINVAL);
		assert_int_equal(portal_bcast_init(m, need, NULL), -EINVAL);
		assert_int_equal(portal_bcast_init(m, need - 1, &p), -EINVAL);
		assert_int_equal(portal_bcast_init(m + 16, need, &p), -EINVAL);
		assert_int_equal(portal_bcast_init(m, need, &p), 0);
	}
	tu_mem_free_checked(m, 1 << 16);
}

struct bhdr_case {
	const char *what;
	size_t off, size;
	uint64_t value;
};

#define BF(f) offsetof(struct portal_bcast_hdr, f), sizeof(((struct portal_bcast_hdr *)0)->f)

static void t_attach_corrupt_header(void **state)
{
	static const struct bhdr_case cases[] = {
		{ "magic",            BF(magic), PORTAL_MSGRING_MAGIC },
		{ "version 0",        BF(version), 0 },
		{ "version 2",        BF(version), 2 },
		{ "mode 0",           BF(mode), 0 },
		{ "mode 3",           BF(mode), 3 },
		{ "slot size 12",     BF(slot_size), 12 },
		{ "slot size 512",    BF(slot_size), 512 },
		{ "slot size 16",     BF(slot_size), 16 }, /* stride no longer matches */
		{ "capacity 0",       BF(capacity), 0 },
		{ "capacity 24",      BF(capacity), 24 },
		{ "capacity doubled", BF(capacity), 32 },
		{ "max_subs 0",       BF(max_subs), 0 },
		{ "max_subs 65",      BF(max_subs), 65 },
		{ "max_subs + 1",     BF(max_subs), 3 },
		{ "stride 8",         BF(stride), 8 },
		{ "stride + 8",       BF(stride), 48 },
		{ "obj_size + 1",     BF(obj_size), PORTAL_BCAST_HDR_SIZE + 2 * 128 + 16 * 40 + 1 },
		{ "obj_size huge",    BF(obj_size), UINT64_MAX },
	};
	struct portal_bcast_params p = { PORTAL_BCAST_HOLD, 32, 16, 2 };
	size_t need = portal_bcast_memsize(&p);
	uint8_t *m = tu_mem_alloc(need);

	(void)state;
	for (size_t i = 0; i < TU_ARRAY_SIZE(cases); i++) {
		portal_bcast_t *b = NULL;

		assert_int_equal(portal_bcast_init(m, need, &p), 0);
		memcpy(m + cases[i].off, &cases[i].value, cases[i].size);
		for (int sub = -1; sub <= 0; sub++) {
			int rc = portal_bcast_attach(m, need, sub, &b);

			if (rc != PORTAL_EPROTO)
				fail_msg("%s, sub %d: attach got %d, want EPROTO", cases[i].what, sub, rc);
		}
		assert_null(b);
	}
	tu_mem_free_checked(m, need);
}

/* ------------------------------------------------------------------ */
/* Region glue                                                          */
/* ------------------------------------------------------------------ */

static void t_region_glue(void **state)
{
	struct portal_bcast_params p = { PORTAL_BCAST_HOLD, 64, 8, 3 };
	struct portal_bcast_params bad = { PORTAL_BCAST_HOLD, 63, 8, 3 };
	struct portal_region_opts o = { .size = 1 << 20 };
	struct portal_object_info info;
	portal_region_t *reg, *peer;
	portal_bcast_t *prod, *s0, *s2, *x = NULL;
	char name[64], uri[96], fduri[32];
	uint8_t b[64], out[64];
	uint64_t tag;

	(void)state;
	snprintf(uri, sizeof(uri), "memfd:%s", tu_unique_name(name, sizeof(name), "bc"));
	assert_int_equal(portal_region_create(uri, &o, &reg), 0);
	snprintf(fduri, sizeof(fduri), "fd:%d", portal_region_fd(reg));
	assert_int_equal(portal_region_attach(fduri, NULL, &peer), 0);
	assert_int_equal(portal_bcast_create(reg, "news", &p, 0), 0);
	assert_int_equal(portal_bcast_create(reg, "news", &p, 0), -EEXIST);
	assert_int_equal(portal_bcast_create(reg, "bad", &bad, 0), -EINVAL);
	assert_int_equal(portal_bcast_create(peer, "other", &p, 0), -EPERM);
	assert_int_equal(portal_region_lookup(peer, "news", PORTAL_OBJ_BCAST, &info), 0);
	assert_int_equal(info.param[0], PORTAL_BCAST_HOLD);
	assert_int_equal(info.param[1], 64);
	assert_int_equal(info.param[2], 8);
	assert_int_equal(info.param[3], 3);
	assert_int_equal(portal_bcast_open(reg, "news", -1, &prod), 0);
	assert_int_equal(portal_bcast_open(peer, "news", 0, &s0), 0);
	assert_int_equal(portal_bcast_open(peer, "news", 2, &s2), 0);
	assert_int_equal(portal_bcast_open(peer, "news", 2, &x), -EBUSY);
	assert_int_equal(portal_bcast_open(peer, "news", 3, &x), -EINVAL);
	assert_int_equal(portal_bcast_open(peer, "nope", 1, &x), -ENOENT);
	assert_null(x);
	for (uint32_t i = 0; i < 20; i++) {
		tu_stamp(b, 64, tu_tag(3, i));
		assert_int_equal(portal_bcast_publish(prod, b), 0);
		assert_int_equal(portal_bcast_read(s0, out, NULL), 0);
		assert_true(tu_check(out, 64, &tag) && tag == tu_tag(3, i));
		assert_int_equal(portal_bcast_read(s2, out, NULL), 0);
		assert_true(tu_check(out, 64, &tag) && tag == tu_tag(3, i));
	}
	portal_bcast_detach(s0);
	portal_bcast_detach(s2);
	portal_bcast_detach(prod);
	portal_region_detach(peer);
	portal_region_detach(reg);
}

/* ------------------------------------------------------------------ */

int main(void)
{
	static const struct {
		const char *name;
		CMUnitTestFunction fn;
		uint32_t only_mode; /* 0: both */
	} per_cfg[] = {
		{ "basic", t_basic, 0 },
		{ "attach_errors", t_attach_errors, 0 },
		{ "hold", t_hold, PORTAL_BCAST_HOLD },
		{ "evict", t_evict, 0 },
		{ "lap", t_lap, PORTAL_BCAST_LAP },
		{ "hostile_prod_tail", t_hostile_prod_tail, 0 },
		{ "hostile_slot_seq", t_hostile_slot_seq_hold, PORTAL_BCAST_HOLD },
		{ "hostile_cursor", t_hostile_cursor, PORTAL_BCAST_HOLD },
	};
	struct tu_suite s = { 0 };
	size_t n = 0;

	for (uint32_t mode = PORTAL_BCAST_HOLD; mode <= PORTAL_BCAST_LAP; mode++)
		for (size_t sl = 0; sl < TU_ARRAY_SIZE(slots); sl++)
			for (size_t c = 0; c < TU_ARRAY_SIZE(caps); c++)
				for (size_t k = 0; k < TU_ARRAY_SIZE(nsubs); k++)
					cfgs[n++] = (struct cfg){ mode, slots[sl], caps[c], nsubs[k] };
	tu_suite_add(&s, t_params, NULL, "params");
	tu_suite_add(&s, t_attach_corrupt_header, NULL, "attach_corrupt_header");
	for (size_t t = 0; t < TU_ARRAY_SIZE(per_cfg); t++)
		for (size_t i = 0; i < n; i++) {
			if (per_cfg[t].only_mode && per_cfg[t].only_mode != cfgs[i].mode)
				continue;
			if (per_cfg[t].fn == t_hostile_cursor && cfgs[i].subs < 2)
				continue;
			tu_suite_add(&s, per_cfg[t].fn, &cfgs[i], "%s/%s/s%u/c%u/n%u", per_cfg[t].name,
				     cfgs[i].mode == PORTAL_BCAST_HOLD ? "HOLD" : "LAP", cfgs[i].slot,
				     cfgs[i].cap, cfgs[i].subs);
		}
	/* The LAP corrupted-slot case is one bug; one configuration per size. */
	for (size_t i = 0; i < n; i++)
		if (cfgs[i].mode == PORTAL_BCAST_LAP && cfgs[i].subs == 1 && cfgs[i].cap == 16)
			tu_suite_add(&s, t_hostile_slot_seq_lap, &cfgs[i], "hostile_slot_seq/LAP/s%u/c%u/n%u",
				     cfgs[i].slot, cfgs[i].cap, cfgs[i].subs);
	tu_suite_add(&s, t_hostile_cursor_alone, NULL, "hostile_cursor_alone");
	tu_suite_add(&s, t_hostile_cursor_reattach, NULL, "hostile_cursor_reattach/HOLD/s16/c4/n2");
	tu_suite_add(&s, t_many_subs, NULL, "many_subs/HOLD/s32/c8/n64");
	for (size_t i = 0; i < TU_ARRAY_SIZE(mt_cfgs); i++)
		tu_suite_add(&s, t_threads, &mt_cfgs[i], "threads/%s/s%u/c%u/n%u",
			     mt_cfgs[i].mode == PORTAL_BCAST_HOLD ? "HOLD" : "LAP", mt_cfgs[i].slot,
			     mt_cfgs[i].cap, mt_cfgs[i].subs);
	tu_suite_add(&s, t_evict_joining, NULL, "evict_joining/HOLD/s16/c4/n2");
	tu_suite_add(&s, t_threads_evict, NULL, "threads_evict/dead/HOLD/s64/c8/n3");
	tu_suite_add(&s, t_threads_evict, (void *)1, "threads_evict/live/HOLD/s64/c8/n3");
	tu_suite_add(&s, t_evict_dead_process, NULL, "evict_dead_process/HOLD/s64/c8/n2");
	tu_suite_add(&s, t_region_glue, NULL, "region_glue");
	return tu_suite_run(&s, "portal.bcast");
}
