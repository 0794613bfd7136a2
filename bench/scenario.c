/* SPDX-License-Identifier: MIT */
/*
 * The scenarios, written once for every system, and the peer's side of each.
 *
 * Every measurement is paired with the floor in the same two pinned
 * processes (or threads): blocks of the system alternate with blocks of a
 * raw cache-line ping-pong, and systems are rotated from one repetition to
 * the next so none always runs first. Every payload is checked on the
 * receiving side; a mismatch ends the run with an error.
 */
#include <errno.h>
#include <linux/futex.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runner.h"
#include "common/atomic_internal.h"
#include "portal/arena.h"
#include "portal/region.h"
#include "portal/ring.h"

#define DEADLINE_NS (60ull * 1000 * 1000 * 1000)
#define SLOT_MAX    1024
#define BULK_ARENA  "bulk"
#define BULK_RING   "bulk.spans"
#define BULK_RET    "bulk.ret"
#define BULK_SMALL  (64u << 10)
#define BULK_LARGE  (4u << 20)

static struct inst *insts;
static int ninst;
static const struct opts *opt;
static uint64_t ovh;

void die(const char *what, int rc)
{
	fprintf(stderr, "\nportal-bench: %s: %s\n", what,
		rc < 0 ? portal_strerror(rc) : "failed");
	exit(1);
}

/* ---- payloads: sequence number first and inverted last, pattern between ---- */

static uint8_t pattern[BENCH_MAX_PAYLOAD];

static void pattern_init(void)
{
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (uint8_t)(i * 7 + 3);
}

void bench_fill(void *dst, uint32_t len, uint64_t seq)
{
	if (len > 16)
		memcpy((uint8_t *)dst + 8, pattern + 8, len - 16);
	memcpy(dst, &seq, len < 8 ? len : 8);
	if (len >= 16) {
		uint64_t inv = ~seq;
		memcpy((uint8_t *)dst + len - 8, &inv, 8);
	} else if (len > 8) {
		memcpy((uint8_t *)dst + 8, pattern + 8, len - 8);
	}
}

int bench_check(const void *src, uint32_t len, uint64_t seq)
{
	uint64_t v = 0, inv;

	memcpy(&v, src, len < 8 ? len : 8);
	if (len < 8)
		seq &= (UINT64_C(1) << (8 * len)) - 1;
	if (v != seq)
		return -1;
	if (len >= 16) {
		memcpy(&inv, (const uint8_t *)src + len - 8, 8);
		return inv != ~seq || memcmp((const uint8_t *)src + 8, pattern + 8, len - 16) ? -1 : 0;
	}
	return len > 8 && memcmp((const uint8_t *)src + 8, pattern + 8, len - 8) ? -1 : 0;
}

/* ---- spinning with a deadline: a stuck system ends the run, never hangs it ---- */

struct spin {
	uint64_t n, t0;
	const char *what;
};

static inline void spin_tick(struct spin *s)
{
	if ((++s->n & 0xfff) == 0) {
		uint64_t now = bench_mono_ns();
		if (!s->t0)
			s->t0 = now;
		else if (now - s->t0 > DEADLINE_NS)
			die(s->what, -ETIMEDOUT);
	}
	portal_cpu_relax();
}

/* Send one message of LEN bytes with sequence SEQ; spins while full. */
static void send_one(const struct bsys *sys, void *c, uint32_t len, uint64_t seq, unsigned flags)
{
	struct spin s = { .what = sys->name };
	int rc;

	if (sys->reserve) {
		void *buf;
		while ((rc = sys->reserve(c, len, &buf)) == -EAGAIN)
			spin_tick(&s);
		if (rc)
			die("reserve", rc);
		bench_fill(buf, len, seq);
		if ((rc = sys->commit(c, len, flags)))
			die("commit", rc);
	} else {
		uint8_t slot[SLOT_MAX];
		bench_fill(slot, len, seq);
		while ((rc = sys->send_burst(c, slot, 1)) == 0)
			spin_tick(&s);
		if (rc < 0)
			die("send_burst", rc);
	}
}

/* Receive one message and check it against SEQ; returns 1 on a mismatch. */
static int recv_one(const struct bsys *sys, void *c, uint32_t len, uint64_t seq, unsigned flags)
{
	struct spin s = { .what = sys->name };
	int rc, bad;

	if (sys->peek) {
		const void *buf;
		uint32_t got;
		while ((rc = sys->peek(c, &buf, &got, flags)) == -EAGAIN)
			spin_tick(&s);
		if (rc)
			die("peek", rc);
		bad = got != len || bench_check(buf, len, seq);
		sys->release(c);
	} else {
		uint8_t slot[SLOT_MAX];
		while ((rc = sys->recv_burst(c, slot, 1)) == 0)
			spin_tick(&s);
		if (rc < 0)
			die("recv_burst", rc);
		bad = bench_check(slot, len, seq) != 0;
	}
	return bad;
}

/* ---- the control channel ---- */

static long futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, (uint32_t *)w, op, val, ts, NULL, 0);
}

void send_cmd(struct peer *p, enum cmd c, uint64_t arg)
{
	struct ctl *k = p->ctl;

	atomic_store_explicit(&k->arg, arg, memory_order_relaxed);
	/* R: arguments, then the command; pairs with A in peer_wait. */
	atomic_store_explicit(&k->cmd, (++p->gen << 8) | c, memory_order_release);
	/* F: the command store before the sleeping load; pairs with the
	 * peer's fence between its sleeping store and its re-check. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&k->sleeping, memory_order_relaxed))
		futex(&k->cmd, FUTEX_WAKE, 1, NULL);
}

uint64_t wait_ack(struct peer *p, bool sleep)
{
	struct ctl *k = p->ctl;
	uint64_t t0 = bench_mono_ns();
	struct timespec nap = { 0, 200 * 1000 };
	int32_t st;

	/* A: ack, then status and value; pairs with R in peer_serve. */
	while (atomic_load_explicit(&k->ack, memory_order_acquire) != p->gen) {
		if (sleep)
			nanosleep(&nap, NULL);
		else
			portal_cpu_relax();
		if (bench_mono_ns() - t0 > 2 * DEADLINE_NS)
			die("the peer did not answer within 120 s", -ETIMEDOUT);
	}
	st = atomic_load_explicit(&k->status, memory_order_relaxed);
	if (st)
		return (uint64_t)(int64_t)st;
	return atomic_load_explicit(&k->value, memory_order_relaxed);
}

static int32_t ack_status(struct peer *p)
{
	return atomic_load_explicit(&p->ctl->status, memory_order_relaxed);
}

/* Peer: the next command. Spins briefly, then sleeps on the command word
 * so an idle peer leaves its CPU to whoever measures there. */
static uint32_t peer_wait(struct ctl *k, uint32_t seen)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };

	for (;;) {
		uint32_t c;
		for (int i = 0; i < 20000; i++) {
			/* A: command, then its arguments; pairs with R in send_cmd. */
			c = atomic_load_explicit(&k->cmd, memory_order_acquire);
			if ((c >> 8) != (seen & 0xffffff))
				return c;
			portal_cpu_relax();
		}
		atomic_store_explicit(&k->sleeping, 1, memory_order_relaxed);
		/* F: sleeping store before the re-check; pairs with F in send_cmd. */
		atomic_thread_fence(memory_order_seq_cst);
		c = atomic_load_explicit(&k->cmd, memory_order_acquire);
		if ((c >> 8) == (seen & 0xffffff))
			futex(&k->cmd, FUTEX_WAIT, c, &ts);
		atomic_store_explicit(&k->sleeping, 0, memory_order_relaxed);
	}
}

/* ---- the floor ---- */

static void peer_floor2(struct peer *p, struct ctl *k, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t want = ++p->floor_seq;
		/* A: the driver's line; pairs with R in floor_block. */
		while (atomic_load_explicit(&k->ping, memory_order_acquire) != want)
			;
		/* R: our line; pairs with A in floor_block. */
		atomic_store_explicit(&k->pong, want, memory_order_release);
	}
}

static void peer_floor1(struct peer *p, struct ctl *k, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t odd = 2 * ++p->line_seq - 1;
		/* A/R on one line both ways; pairs with floor_block's. */
		while (atomic_load_explicit(&k->line, memory_order_acquire) != odd)
			;
		atomic_store_explicit(&k->line, odd + 1, memory_order_release);
	}
}

/* One block of N floor round trips, one sample each. */
static void floor_block(struct peer *p, uint64_t n, bool one_line, struct bench_samples *s)
{
	struct ctl *k = p->ctl;

	send_cmd(p, one_line ? CMD_FLOOR1 : CMD_FLOOR2, n);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0 = bench_now();
		if (one_line) {
			uint64_t odd = 2 * ++p->line_seq - 1;
			atomic_store_explicit(&k->line, odd, memory_order_release);
			while (atomic_load_explicit(&k->line, memory_order_acquire) != odd + 1)
				;
		} else {
			uint64_t want = ++p->floor_seq;
			atomic_store_explicit(&k->ping, want, memory_order_release);
			while (atomic_load_explicit(&k->pong, memory_order_acquire) != want)
				;
		}
		bench_samples_add(s, bench_now() - t0 - ovh);
	}
	wait_ack(p, false);
}

/* ---- the peer ---- */

static unsigned open_flags(const struct inst *in, int side)
{
	if (side == 0)
		return in->sys->caps & BSYS_MP ? BSYS_F_MP : 0;
	/* The MP/MC systems dequeue with their multi-consumer call. */
	return strstr(in->sys->name, "mpmc") ? BSYS_F_MC : 0;
}

struct peer_state {
	struct ctl *k;
	struct inst *insts;
	void *conn[MAX_INST];
	void *region;
	struct peer p;            /* floor sequence numbers, as the driver's */
};

static uint64_t peer_echo(struct peer_state *ps, struct inst *in, uint64_t n)
{
	const struct bsys *sys = in->sys;
	void *c = ps->conn[ps->k->inst];
	uint32_t len = ps->k->len;
	unsigned flags = ps->k->flags;
	uint64_t errors = 0;

	for (uint64_t i = 0; i < n; i++) {
		struct spin s = { .what = sys->name };
		const void *src;
		void *dst;
		uint32_t got;
		int rc;

		while ((rc = sys->peek(c, &src, &got, flags)) == -EAGAIN)
			spin_tick(&s);
		if (rc)
			return (uint64_t)(int64_t)rc;
		while ((rc = sys->reserve(c, got, &dst)) == -EAGAIN)
			spin_tick(&s);
		if (rc)
			return (uint64_t)(int64_t)rc;
		memcpy(dst, src, got);
		if ((rc = sys->commit(c, got, flags)))
			return (uint64_t)(int64_t)rc;
		/* Checked after the reply left: checking is the benchmark's
		 * work, not the system's; the driver checks the echo too. */
		if (got != len || bench_check(src, len, i))
			errors++;
		sys->release(c);
	}
	return errors;
}

/* Streaming consumer. With several producers, the sequence carries the
 * producer's id in its top bits and each producer's own order is checked. */
static uint64_t peer_drain(struct peer_state *ps, struct inst *in, uint64_t n)
{
	const struct bsys *sys = in->sys;
	struct ctl *k = ps->k;
	void *c = ps->conn[k->inst];
	uint32_t len = k->len, burst = k->burst, np = k->producers ? k->producers : 1;
	uint64_t next[64] = { 0 }, errors = 0, got = 0;
	static uint8_t slots[32 * SLOT_MAX];
	struct spin s = { .what = sys->name };

	while (got < n) {
		if ((sys->caps & BSYS_BURST) && sys->recv_burst) {
			int r = sys->recv_burst(c, slots, burst);
			if (r < 0)
				return (uint64_t)(int64_t)r;
			if (r == 0) {
				spin_tick(&s);
				continue;
			}
			for (int j = 0; j < r; j++, got++) {
				uint64_t seq;
				memcpy(&seq, slots + (size_t)j * len, 8);
				uint64_t id = np > 1 ? seq >> 48 : 0;
				if (id >= np || bench_check(slots + (size_t)j * len, len,
							   (id << 48 | next[id])))
					errors++;
				else
					next[id]++;
			}
		} else {
			const void *buf;
			uint32_t l;
			int rc = sys->peek(c, &buf, &l, k->flags);
			if (rc == -EAGAIN) {
				spin_tick(&s);
				continue;
			}
			if (rc)
				return (uint64_t)(int64_t)rc;
			uint64_t seq = 0;
			memcpy(&seq, buf, 8);
			uint64_t id = np > 1 ? seq >> 48 : 0;
			if (l != len || id >= np || bench_check(buf, len, id << 48 | next[id]))
				errors++;
			else
				next[id]++;
			sys->release(c);
			got++;
		}
	}
	return errors;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Open-loop consumer: latency from each message's intended send time. */
static uint64_t peer_load(struct peer_state *ps, struct inst *in, uint64_t n)
{
	struct ctl *k = ps->k;
	struct bench_samples s;
	struct bench_pct p;
	uint64_t errors = 0;

	if (bench_samples_init(&s, n))
		return (uint64_t)(int64_t)-ENOMEM;
	bench_tsc_set(k->tsc_per_ns); /* one clock for both sides' figures */
	for (uint64_t i = 0; i < n; i++) {
		errors += (uint64_t)recv_one(in->sys, ps->conn[k->inst], k->len, i, 0);
		uint64_t now = bench_now(), due = k->t0 + i * k->period;
		bench_samples_add(&s, now > due ? now - due : 0);
	}
	bench_percentiles(&s, &p);
	k->res[0] = p.p50, k->res[1] = p.p99, k->res[2] = p.p999, k->res[3] = p.max;
	k->res[4] = p.mean;
	bench_samples_free(&s);
	(void)cmp_u64;
	return errors;
}

/* Bulk receiver: resolve each span, read all of it, give it back. */
static uint64_t peer_bulk(struct peer_state *ps, uint64_t n, uint32_t size)
{
	static struct portal_object_info ao;
	static portal_ring_t *spans, *ret;
	portal_region_t *reg = ps->region;
	uint64_t errors = 0;
	int rc;

	if (!spans) {
		if ((rc = portal_region_lookup(reg, BULK_ARENA, PORTAL_OBJ_ARENA, &ao)) ||
		    (rc = portal_ring_open(reg, BULK_RING, PORTAL_ROLE_CONSUMER, &spans)) ||
		    (rc = portal_ring_open(reg, BULK_RET, PORTAL_ROLE_PRODUCER, &ret)))
			return (uint64_t)(int64_t)rc;
	}
	for (uint64_t i = 0; i < n; i++) {
		struct spin s = { .what = "bulk" };
		struct portal_span sp;
		const uint64_t *w;
		void *addr;

		while ((rc = portal_ring_dequeue(spans, &sp)) == -EAGAIN)
			spin_tick(&s);
		if (rc)
			return (uint64_t)(int64_t)rc;
		if ((rc = portal_arena_resolve(&ao, portal_region_id(reg), portal_region_base(reg),
					       &sp, &addr)) || sp.length != size) {
			errors++;
			continue;
		}
		/* Read every word: the receiver really consumes the payload. */
		w = addr;
		uint64_t bad = 0;
		for (size_t j = 0; j < size / 8; j++)
			bad |= w[j] ^ (i + j);
		errors += bad != 0;
		while ((rc = portal_arena_give_back(ret, &sp)) == -EAGAIN)
			spin_tick(&s);
		if (rc)
			return (uint64_t)(int64_t)rc;
	}
	return errors;
}

static uint64_t csw_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return (uint64_t)(ru.ru_nvcsw + ru.ru_nivcsw);
}

int peer_serve(struct ctl *k, struct inst *all, int n_all, void *region)
{
	struct peer_state ps = { .k = k, .insts = all, .region = region };
	uint32_t seen = 0;

	pattern_init();
	for (;;) {
		uint32_t c = peer_wait(k, seen);
		uint64_t arg = atomic_load_explicit(&k->arg, memory_order_relaxed);
		uint64_t value = 0;
		int32_t status = 0;
		struct inst *in = k->inst < (uint32_t)n_all ? &all[k->inst] : NULL;

		seen = c >> 8;
		switch (c & 0xff) {
		case CMD_FLOOR2: peer_floor2(&ps.p, k, arg); break;
		case CMD_FLOOR1: peer_floor1(&ps.p, k, arg); break;
		case CMD_ECHO:   value = peer_echo(&ps, in, arg); break;
		case CMD_DRAIN:  value = peer_drain(&ps, in, arg); break;
		case CMD_LOAD:   value = peer_load(&ps, in, arg); break;
		case CMD_BULK:   value = peer_bulk(&ps, arg, k->len); break;
		case CMD_RUSAGE: value = csw_now(); break;
		case CMD_OPEN:
			if (!in)
				status = -EINVAL;
			else if (!ps.conn[k->inst])
				status = in->sys->open(&in->env, 1, open_flags(in, 1),
						       &ps.conn[k->inst]);
			break;
		case CMD_EXIT:
			for (int i = 0; i < n_all; i++)
				if (ps.conn[i])
					all[i].sys->close(ps.conn[i]);
			atomic_store_explicit(&k->status, 0, memory_order_relaxed);
			atomic_store_explicit(&k->ack, seen, memory_order_release);
			return 0;
		}
		/* A command that failed returns a negative errno as its value. */
		if ((int64_t)value < 0 && (int64_t)value > -4096)
			status = (int32_t)(int64_t)value;
		atomic_store_explicit(&k->value, value, memory_order_relaxed);
		atomic_store_explicit(&k->status, status, memory_order_relaxed);
		/* R: results, then ack; pairs with A in wait_ack. */
		atomic_store_explicit(&k->ack, seen, memory_order_release);
	}
}

/* ---- the driver's side ---- */

void scenario_init(struct inst *in, int n, const struct opts *o, uint64_t timer_ovh)
{
	insts = in;
	ninst = n;
	opt = o;
	ovh = timer_ovh;
	pattern_init();
}

/* Open both sides of an instance once; a failure skips the system. */
static bool inst_open(struct inst *in)
{
	int rc, prc;

	if (!in->ok)
		return false;
	if (in->conn0)
		return true;
	in->peer->ctl->inst = (uint32_t)(in - insts);
	send_cmd(in->peer, CMD_OPEN, 0);
	rc = in->sys->open(&in->env, 0, open_flags(in, 0), &in->conn0);
	wait_ack(in->peer, true);
	prc = ack_status(in->peer);
	if (rc || prc) {
		in->ok = false;
		snprintf(in->why, sizeof(in->why), "open failed: %s side: %s",
			 rc ? "driver" : "peer", portal_strerror(rc ? rc : prc));
		if (!rc)
			in->sys->close(in->conn0);
		in->conn0 = NULL;
		return false;
	}
	return true;
}

/* The systems of one scenario: usable, and open. Reports the others once. */
static int eligible(const char *scenario, unsigned need, uint32_t payload, int slot,
		    struct inst **out)
{
	int n = 0;

	for (int i = 0; i < ninst; i++) {
		struct inst *in = &insts[i];
		/* A system with one instance per slot size takes part once:
		 * with the slot of the scenario, or the 64-byte one. */
		if ((in->sys->caps & BSYS_BURST) && in->env.slot != (slot ? slot : 64))
			continue;
		if ((in->sys->caps & need) != need || in->sys->max_payload < payload)
			continue;
		if (!inst_open(in)) {
			report_skip(in->label, scenario, in->why);
			continue;
		}
		out[n++] = in;
	}
	return n;
}

static uint32_t cmd_args(struct inst *in, uint32_t len, uint32_t burst, uint32_t flags,
			 uint32_t producers)
{
	struct ctl *k = in->peer->ctl;

	k->inst = (uint32_t)(in - insts);
	k->len = len;
	k->burst = burst;
	k->flags = flags;
	k->producers = producers;
	return 0;
}

/* N round trips of LEN bytes, one sample each. Returns payload errors. */
static uint64_t rtt_block(struct inst *in, uint64_t n, uint32_t len, unsigned flags,
			  struct bench_samples *s)
{
	const struct bsys *sys = in->sys;
	uint64_t errors = 0, r;

	cmd_args(in, len, 1, flags, 0);
	send_cmd(in->peer, CMD_ECHO, n);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0 = bench_now();
		send_one(sys, in->conn0, len, i, flags);
		int bad = recv_one(sys, in->conn0, len, i, flags);
		bench_samples_add(s, bench_now() - t0 - ovh);
		errors += (uint64_t)bad;
	}
	r = wait_ack(in->peer, false);
	if (ack_status(in->peer))
		die(sys->name, ack_status(in->peer));
	return errors + r;
}

static void rotate(struct inst **v, int n, int by)
{
	struct inst *tmp[MAX_INST];

	for (int i = 0; i < n; i++)
		tmp[i] = v[(i + by) % n];
	memcpy(v, tmp, (size_t)n * sizeof(*v));
}

static void add_ratio(const char *scenario, const char *system, uint32_t payload,
		      uint32_t burst, const char *metric, double v)
{
	series_add_value(series_get(scenario, system, payload, burst, 0, metric), v, 1);
}

/* Round trips for every system of one kind, floor-paired. */
static void rtt_scenario(const char *scenario, unsigned flags, const uint32_t *sizes, int nsizes,
			 int blocks, uint64_t per_block)
{
	struct inst *v[MAX_INST];
	struct bench_samples fs, ps, f1;

	bench_samples_init(&fs, (size_t)blocks * per_block);
	bench_samples_init(&ps, (size_t)blocks * per_block);
	bench_samples_init(&f1, BLOCK);
	for (int z = 0; z < nsizes; z++) {
		uint32_t len = sizes[z];
		int n = eligible(scenario, BSYS_RTT | (flags ? BSYS_BLOCK : 0), len, 0, v);

		for (int r = 0; r < opt->reps; r++) {
			struct bench_pct f, p;
			struct peer *proc = NULL;

			rotate(v, n, 1);
			for (int i = 0; i < n; i++) {
				struct inst *in = v[i];
				uint64_t errors = 0;

				if (!in->peer->thread)
					proc = in->peer;
				bench_samples_reset(&fs);
				bench_samples_reset(&ps);
				for (int b = 0; b < blocks; b++) {
					floor_block(in->peer, per_block, false, &fs);
					errors += rtt_block(in, per_block, len, flags, &ps);
				}
				if (errors)
					die("payload check failed in a round trip", -EBADMSG);
				bench_percentiles(&fs, &f);
				bench_percentiles(&ps, &p);
				series_add_pct(series_get(scenario, in->label, len, 1, 0, "rtt_ns"), &p);
				add_ratio(scenario, in->label, len, 1, "p50_vs_floor", p.p50 / f.p50);
				add_ratio(scenario, in->label, len, 1, "p99_vs_floor", p.p99 / f.p99);
				/* The floor paired with Portal's own ring is the row
				 * the tables show as the floor of this scenario. */
				if (!strcmp(in->sys->name, "portal-msgring"))
					series_add_pct(series_get(scenario, "floor-2line", len, 1, 0,
								  "rtt_ns"), &f);
				progress("%s %4u B rep %d/%d  %-16s p50 %8.0f ns  floor %5.0f ns",
					 scenario, len, r + 1, opt->reps, in->label, p.p50, f.p50);
			}
			if (proc && !flags) {
				bench_samples_reset(&f1);
				floor_block(proc, BLOCK, true, &f1);
				bench_percentiles(&f1, &f);
				series_add_pct(series_get(scenario, "floor-1line", len, 1, 0, "rtt_ns"), &f);
			}
		}
	}
	bench_samples_free(&fs);
	bench_samples_free(&ps);
	bench_samples_free(&f1);
}

void run_rtt_busy(void)
{
	static const uint32_t sizes[] = { 8, 64, 1024 };

	rtt_scenario("rtt_busy", 0, sizes, 3, opt->quick ? 3 : 20, BLOCK);
}

void run_rtt_block(void)
{
	static const uint32_t sizes[] = { 64 };

	rtt_scenario("rtt_block", BSYS_F_BLOCK, sizes, 1, opt->quick ? 1 : 5,
		     opt->quick ? 300 : BLOCK);
}

/* ---- streaming ---- */

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct slice {
	double ns_per_msg, sender_cpu_ns, sender_csw, peer_csw;
	struct bench_hw hw;
};

/* One timed slice: N messages of LEN bytes in bursts of BURST. */
static void stream_slice(struct inst *in, uint64_t n, uint32_t len, uint32_t burst,
			 struct slice *out)
{
	const struct bsys *sys = in->sys;
	static uint8_t slots[32 * SLOT_MAX];
	struct spin s = { .what = sys->name };
	uint64_t seq = 0, t0, t1, c0, c1, w0, w1, pc0, pc1, errors;
	struct bench_hw h0, h1;
	bool bursts = (sys->caps & BSYS_BURST) && sys->send_burst;

	send_cmd(in->peer, CMD_RUSAGE, 0);
	pc0 = wait_ack(in->peer, false);
	cmd_args(in, len, burst, 0, 0);
	send_cmd(in->peer, CMD_DRAIN, n);
	bench_hw_read(&h0);
	c0 = cpu_ns();
	w0 = csw_now();
	t0 = bench_now();
	while (seq < n) {
		if (!bursts) {
			send_one(sys, in->conn0, len, seq++, 0);
			continue;
		}
		uint32_t k = burst;
		if (k > n - seq)
			k = (uint32_t)(n - seq);
		for (uint32_t i = 0; i < k; i++)
			bench_fill(slots + (size_t)i * len, len, seq + i);
		int put;
		while ((put = sys->send_burst(in->conn0, slots, k)) == 0)
			spin_tick(&s);
		if (put < 0)
			die("send_burst", put);
		seq += (uint64_t)put; /* a partial burst: the rest is refilled */
	}
	errors = wait_ack(in->peer, false);
	t1 = bench_now();
	c1 = cpu_ns();
	w1 = csw_now();
	bench_hw_read(&h1);
	if (ack_status(in->peer))
		die(sys->name, ack_status(in->peer));
	if (errors)
		die("payload check failed in streaming", -EBADMSG);
	send_cmd(in->peer, CMD_RUSAGE, 0);
	pc1 = wait_ack(in->peer, false);
	out->ns_per_msg = (double)(t1 - t0) / bench_tsc_per_ns() / (double)n;
	out->sender_cpu_ns = (double)(c1 - c0) / (double)n;
	out->sender_csw = (double)(w1 - w0) / (double)n;
	out->peer_csw = (double)(pc1 - pc0) / (double)n;
	bench_hw_delta(&h0, &h1, n, &out->hw);
}

/* Messages for one slice of about TARGET_NS, from a short first slice. */
static uint64_t calibrate(struct inst *in, uint32_t len, uint32_t burst, uint64_t target_ns)
{
	struct slice sl;
	uint64_t n;

	stream_slice(in, 20000, len, burst, &sl);
	n = (uint64_t)((double)target_ns / sl.ns_per_msg);
	return n < 20000 ? 20000 : n > 50000000 ? 50000000 : n;
}

void run_stream(void)
{
	static const uint32_t sizes[] = { 64, 1024 }, bursts[] = { 1, 8, 32 };
	uint64_t target = opt->quick ? 50000000 : 300000000;
	struct inst *v[MAX_INST];
	uint64_t nmsg[MAX_INST];
	struct bench_samples fs;

	bench_samples_init(&fs, BLOCK);
	for (int z = 0; z < 2; z++) {
		for (int b = 0; b < 3; b++) {
			int n = eligible("stream", BSYS_STREAM, sizes[z], (int)sizes[z], v);
			int m = 0;

			/* Systems without a burst call stream at burst 1 only. */
			for (int i = 0; i < n; i++)
				if (bursts[b] == 1 || (v[i]->sys->caps & BSYS_BURST))
					v[m++] = v[i];
			for (int i = 0; i < m; i++)
				nmsg[v[i] - insts] = calibrate(v[i], sizes[z], bursts[b], target);
			for (int r = 0; r < opt->reps; r++) {
				rotate(v, m, 1);
				for (int i = 0; i < m; i++) {
					struct inst *in = v[i];
					uint64_t cnt = nmsg[in - insts];
					struct bench_pct f;
					struct slice sl;
					const char *L = in->label;
					uint32_t P = sizes[z], B = bursts[b];

					bench_samples_reset(&fs);
					floor_block(in->peer, BLOCK, false, &fs);
					bench_percentiles(&fs, &f);
					stream_slice(in, cnt, P, B, &sl);
					series_add_value(series_get("stream", L, P, B, 0, "msgs_per_s"),
							 1e9 / sl.ns_per_msg, cnt);
					series_add_value(series_get("stream", L, P, B, 0, "ns_per_msg"),
							 sl.ns_per_msg, cnt);
					series_add_value(series_get("stream", L, P, B, 0, "msgs_per_floor_rtt"),
							 f.p50 / sl.ns_per_msg, cnt);
					series_add_value(series_get("stream", L, P, B, 0,
								    "sender_cpu_ns_per_msg"),
							 sl.sender_cpu_ns, cnt);
					series_add_value(series_get("stream", L, P, B, 0,
								    "ctx_switches_per_msg"),
							 sl.sender_csw + sl.peer_csw, cnt);
					if (sl.hw.valid) {
						series_add_value(series_get("stream", L, P, B, 0,
									    "cycles_per_msg"),
								 sl.hw.cycles, cnt);
						series_add_value(series_get("stream", L, P, B, 0,
									    "instructions_per_msg"),
								 sl.hw.instructions, cnt);
					}
					progress("stream %4u B burst %2u rep %d/%d  %-16s %8.2f M msg/s",
						 P, B, r + 1, opt->reps, L, 1e3 / sl.ns_per_msg);
				}
			}
		}
	}
	bench_samples_free(&fs);
}

/* ---- open loop at a fixed rate, corrected for coordinated omission ---- */

void run_load(void)
{
	const double rate = 100000; /* messages per second */
	uint64_t n = opt->quick ? 20000 : 200000;
	struct inst *v[MAX_INST];
	int m = eligible("load", BSYS_STREAM, 64, 64, v);

	for (int r = 0; r < opt->reps; r++) {
		rotate(v, m, 1);
		for (int i = 0; i < m; i++) {
			struct inst *in = v[i];
			struct ctl *k = in->peer->ctl;
			uint64_t errors;
			struct bench_pct p;

			cmd_args(in, 64, 1, 0, 0);
			k->tsc_per_ns = bench_tsc_per_ns();
			k->period = (uint64_t)(bench_tsc_per_ns() * 1e9 / rate);
			/* Message 0 is due 1 ms from now, so the peer is ready. */
			k->t0 = bench_now() + (uint64_t)(bench_tsc_per_ns() * 1e6);
			send_cmd(in->peer, CMD_LOAD, n);
			for (uint64_t j = 0; j < n; j++) {
				uint64_t due = k->t0 + j * k->period;
				while (bench_now() < due)
					portal_cpu_relax();
				send_one(in->sys, in->conn0, 64, j, 0);
			}
			errors = wait_ack(in->peer, false);
			if (ack_status(in->peer))
				die(in->sys->name, ack_status(in->peer));
			if (errors)
				die("payload check failed under load", -EBADMSG);
			p.p50 = k->res[0], p.p99 = k->res[1], p.p999 = k->res[2];
			p.max = k->res[3], p.mean = k->res[4], p.n = n;
			series_add_pct(series_get("load_100k", in->label, 64, 1, 0, "latency_ns"), &p);
			progress("load 100k msg/s rep %d/%d  %-16s p99 %8.0f ns", r + 1, opt->reps,
				 in->label, p.p99);
		}
	}
}

/* ---- several producers ---- */

int producer_main(struct inst *in, struct ctl *k, int id, uint64_t n, int burst)
{
	const struct bsys *sys = in->sys;
	static uint8_t slots[32 * SLOT_MAX];
	uint32_t len = (uint32_t)in->env.slot;
	struct spin s = { .what = sys->name };
	uint64_t seq = 0;
	void *c;
	int rc;

	pattern_init();
	in->env.producer_id = id;
	if ((rc = sys->open(&in->env, 0, BSYS_F_MP, &c)))
		die("producer open", rc);
	/* R: opened before counted; pairs with the driver's ready load. */
	atomic_fetch_add_explicit(&k->ready, 1, memory_order_release);
	while (!atomic_load_explicit(&k->go, memory_order_acquire))
		spin_tick(&s);
	while (seq < n) {
		uint32_t m = (uint32_t)burst;
		if (m > n - seq)
			m = (uint32_t)(n - seq);
		for (uint32_t i = 0; i < m; i++)
			bench_fill(slots + (size_t)i * len, len, (uint64_t)id << 48 | (seq + i));
		int put;
		while ((put = sys->send_burst(c, slots, m)) == 0)
			spin_tick(&s);
		if (put < 0)
			die("producer send", put);
		seq += (uint64_t)put;
	}
	sys->close(c);
	return 0;
}

static pid_t spawn_producer(const char *self, const char *region_uri, struct inst *in, int id,
			    uint64_t n, int cpu)
{
	char spec[BENCH_ARG_MAX + 64], ids[16], ns[24], cpus[16];
	pid_t pid;

	snprintf(spec, sizeof(spec), "%s:%d:%s", in->sys->name, in->env.slot, in->env.arg);
	snprintf(ids, sizeof(ids), "%d", id);
	snprintf(ns, sizeof(ns), "%llu", (unsigned long long)n);
	snprintf(cpus, sizeof(cpus), "%d", cpu);
	pid = fork();
	if (pid == 0) {
		execl(self, self, "--producer", spec, "--region", region_uri, "--id", ids, "--count",
		      ns, "--child-cpu", cpus, (char *)NULL);
		_exit(127);
	}
	return pid;
}

void run_mp(const char *self, const char *region_uri)
{
	uint64_t total = opt->quick ? 1000000 : 10000000;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	struct inst *v[MAX_INST];
	int m = eligible("mp", BSYS_MP | BSYS_BURST, 64, 64, v);
	struct bench_samples fs;

	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > 8)
		ncpu = 8;
	bench_samples_init(&fs, BLOCK);
	for (int np = 1; np <= ncpu; np++) {
		for (int r = 0; r < opt->reps; r++) {
			rotate(v, m, 1);
			for (int i = 0; i < m; i++) {
				struct inst *in = v[i];
				struct ctl *k = in->peer->ctl;
				uint64_t each = total / (uint64_t)np, t0, t1, errors;
				pid_t pids[8];
				struct bench_pct f;
				int st, bad = 0;

				bench_samples_reset(&fs);
				floor_block(in->peer, BLOCK, false, &fs);
				bench_percentiles(&fs, &f);
				atomic_store_explicit(&k->go, 0, memory_order_relaxed);
				atomic_store_explicit(&k->ready, 0, memory_order_relaxed);
				/* Producers alternate between the two CPUs; the
				 * consumer has the second one. */
				for (int p = 0; p < np; p++)
					pids[p] = spawn_producer(self, region_uri, in, p, each,
								 p % 2 ? opt->cpu_b : opt->cpu_a);
				while (atomic_load_explicit(&k->ready, memory_order_acquire) <
				       (uint32_t)np) {
					struct timespec nap = { 0, 100000 };
					nanosleep(&nap, NULL);
					for (int p = 0; p < np; p++)
						if (waitpid(pids[p], &st, WNOHANG) > 0)
							die("a producer exited before it started",
							    -ECHILD);
				}
				cmd_args(in, 64, 32, 0, (uint32_t)np);
				send_cmd(in->peer, CMD_DRAIN, each * (uint64_t)np);
				t0 = bench_now();
				/* R: go; pairs with the producers' acquire. */
				atomic_store_explicit(&k->go, 1, memory_order_release);
				errors = wait_ack(in->peer, true);
				t1 = bench_now();
				for (int p = 0; p < np; p++)
					if (waitpid(pids[p], &st, 0) < 0 || !WIFEXITED(st) ||
					    WEXITSTATUS(st))
						bad = 1;
				if (ack_status(in->peer))
					die(in->sys->name, ack_status(in->peer));
				if (errors || bad)
					die("multi-producer run failed its checks", -EBADMSG);
				double nsper = (double)(t1 - t0) / bench_tsc_per_ns() /
					       (double)(each * (uint64_t)np);
				series_add_value(series_get("mp", in->label, 64, 32, (uint32_t)np,
							    "msgs_per_s"),
						 1e9 / nsper, each * (uint64_t)np);
				series_add_value(series_get("mp", in->label, 64, 32, (uint32_t)np,
							    "msgs_per_floor_rtt"),
						 f.p50 / nsper, each * (uint64_t)np);
				progress("mp %d producer(s) rep %d/%d  %-16s %8.2f M msg/s", np, r + 1,
					 opt->reps, in->label, 1e3 / nsper);
			}
		}
	}
	bench_samples_free(&fs);
}

/* ---- bulk: arena spans (zero-copy) against memcpy of the same size ---- */

static portal_arena_t *arena;
static portal_ring_t *bulk_tx, *bulk_ret;

int scenario_bulk_setup(void *region)
{
	struct portal_arena_params ap = { .nclasses = 2 };
	struct portal_ring_params sp = { PORTAL_RING_SPSC, 32, 64, 0 };
	struct portal_ring_params rp = { PORTAL_RING_SPSC, PORTAL_ARENA_RETURN_SLOT, 64, 0 };
	int rc;

	ap.cls[0].block_size = BULK_SMALL, ap.cls[0].count = 16;
	ap.cls[1].block_size = BULK_LARGE, ap.cls[1].count = 4;
	if ((rc = portal_arena_create(region, BULK_ARENA, &ap, 0, &arena)) ||
	    (rc = portal_ring_create(region, BULK_RING, &sp, 0)) ||
	    (rc = portal_ring_create(region, BULK_RET, &rp, 1)) ||
	    (rc = portal_ring_open(region, BULK_RING, PORTAL_ROLE_PRODUCER, &bulk_tx)) ||
	    (rc = portal_ring_open(region, BULK_RET, PORTAL_ROLE_CONSUMER, &bulk_ret)))
		return rc;
	return 0;
}

/*
 * N transfers of SIZE bytes to the peer, which reads and checks every word.
 * Zero-copy: the payload is written once, in place in an arena block, and
 * its span is sent. Copy path (COPY): the payload is written in a private
 * buffer and copied into the block, as a copying API would; everything
 * else is the same, so the difference is the copy.
 */
static double bulk_slice(struct peer *peer, uint32_t size, uint64_t n, uint64_t *priv)
{
	uint64_t t0, errors;
	int rc;

	peer->ctl->len = size;
	send_cmd(peer, CMD_BULK, n);
	t0 = bench_now();
	for (uint64_t i = 0; i < n; i++) {
		struct spin s = { .what = "bulk" };
		struct portal_span sp;
		uint64_t *w;

		while ((rc = portal_arena_alloc(arena, size, &sp, (void **)&w)) == -ENOSPC) {
			if ((rc = portal_arena_reclaim(arena, bulk_ret, 16)) < 0)
				die("reclaim", rc);
			spin_tick(&s);
		}
		if (rc)
			die("arena alloc", rc);
		uint64_t *dst = priv ? priv : w;
		for (size_t j = 0; j < size / 8; j++)
			dst[j] = i + j;
		if (priv)
			memcpy(w, priv, size);
		while ((rc = portal_ring_enqueue(bulk_tx, &sp)) == -EAGAIN)
			spin_tick(&s);
		if (rc)
			die("bulk enqueue", rc);
	}
	errors = wait_ack(peer, false);
	double secs = (double)(bench_now() - t0) / bench_tsc_per_ns() / 1e9;
	while (portal_arena_reclaim(arena, bulk_ret, 64) > 0)
		;
	if (ack_status(peer))
		die("bulk", ack_status(peer));
	if (errors)
		die("payload check failed in bulk", -EBADMSG);
	return (double)size * (double)n / secs;
}

static double memcpy_slice(uint32_t size, uint64_t n, uint8_t *src, uint8_t *dst)
{
	uint64_t t0 = bench_now();

	for (uint64_t i = 0; i < n; i++) {
		src[i % size] = (uint8_t)i; /* the source changes: no copy can be skipped */
		memcpy(dst, src, size);
		__asm__ __volatile__("" ::"r"(dst) : "memory");
	}
	double secs = (double)(bench_now() - t0) / bench_tsc_per_ns() / 1e9;
	return (double)size * (double)n / secs;
}

void run_bulk(void *proc_peer)
{
	static const uint32_t sizes[] = { BULK_SMALL, BULK_LARGE };
	struct peer *peer = proc_peer;
	uint64_t budget = opt->quick ? 256ull << 20 : 2048ull << 20; /* bytes per slice */
	uint8_t *src = aligned_alloc(64, BULK_LARGE), *dst = aligned_alloc(64, BULK_LARGE);

	if (!src || !dst)
		die("bulk buffers", -ENOMEM);
	memset(src, 1, BULK_LARGE);
	memset(dst, 2, BULK_LARGE);
	for (int z = 0; z < 2; z++) {
		uint32_t size = sizes[z];
		uint64_t n = budget / size;

		for (int r = 0; r < opt->reps; r++) {
			double mc = memcpy_slice(size, n, src, dst);
			double zc = bulk_slice(peer, size, n, NULL);
			double cp = bulk_slice(peer, size, n, (uint64_t *)src);

			series_add_value(series_get("bulk", "memcpy", size, 1, 0, "bytes_per_s"), mc, n);
			series_add_value(series_get("bulk", "portal-arena", size, 1, 0, "bytes_per_s"),
					 zc, n);
			series_add_value(series_get("bulk", "portal-arena+memcpy", size, 1, 0,
						    "bytes_per_s"), cp, n);
			add_ratio("bulk", "portal-arena", size, 1, "vs_copy_path", zc / cp);
			add_ratio("bulk", "portal-arena", size, 1, "vs_memcpy_floor", zc / mc);
			progress("bulk %7u B rep %d/%d  zero-copy %6.2f GB/s  copy path %6.2f GB/s  "
				 "memcpy %6.2f GB/s", size, r + 1, opt->reps, zc / 1e9, cp / 1e9, mc / 1e9);
		}
	}
	free(src);
	free(dst);
}

/* ---- instruction counts under callgrind (optional mode) ---- */

/*
 * In one thread: open both sides, then N times send one 64-byte message and
 * receive it. Run under callgrind twice with different N by run_instructions;
 * the difference over the extra messages is the instructions per message
 * (send + receive, checks included), free of set-up costs.
 */
int instr_loop(struct inst *in, uint64_t n)
{
	void *c0, *c1;
	int rc;

	pattern_init();
	if ((rc = in->sys->open(&in->env, 0, open_flags(in, 0), &c0)) ||
	    (rc = in->sys->open(&in->env, 1, open_flags(in, 1), &c1)))
		die("open", rc);
	for (uint64_t i = 0; i < n; i++) {
		send_one(in->sys, c0, 64, i, 0);
		if (recv_one(in->sys, c1, 64, i, 0))
			die("payload check failed", -EBADMSG);
	}
	in->sys->close(c1);
	in->sys->close(c0);
	return 0;
}

/* Total instructions ("summary:" line) of one callgrind run, or -1. */
static double callgrind_run(const char *self, const struct inst *in, uint64_t n)
{
	char out[64], cmd[1024], line[256];
	double total = -1;
	FILE *f;

	snprintf(out, sizeof(out), "/tmp/portal-bench-cg-%d.out", (int)getpid());
	snprintf(cmd, sizeof(cmd),
		 "valgrind --tool=callgrind --callgrind-out-file=%s '%s' --instr-loop '%s:%d:%s' "
		 "--count %llu >/dev/null 2>&1", out, self, in->sys->name, in->env.slot, in->env.arg,
		 (unsigned long long)n);
	if (system(cmd) == 0 && (f = fopen(out, "r"))) {
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "summary:", 8))
				total = strtod(line + 8, NULL);
		fclose(f);
	}
	unlink(out);
	return total;
}

void run_instructions(const char *self)
{
	/* Systems whose two sides can live in one thread. */
	static const char *const names[] = { "portal-msgring", "portal-spsc", "rte_ring",
					     "ck_ring", "urcu-wfcqueue", "futex", "eventfd",
					     "uds", "pipe" };
	const uint64_t n1 = 10000, n2 = 60000;

	if (system("command -v valgrind >/dev/null 2>&1")) {
		report_note("instruction counts skipped: valgrind is not installed");
		return;
	}
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		for (int i = 0; i < ninst; i++) {
			struct inst *in = &insts[i];
			if (strcmp(in->sys->name, names[k]) || in->env.slot != 64)
				continue;
			if (!in->ok) {
				report_skip(in->label, "instructions", in->why);
				continue;
			}
			progress("callgrind: %s", in->label);
			double a = callgrind_run(self, in, n1), b = callgrind_run(self, in, n2);
			if (a < 0 || b < 0) {
				report_skip(in->label, "instructions", "the callgrind run failed");
				continue;
			}
			series_add_value(series_get("instructions", in->label, 64, 1, 0,
						    "instructions_per_msg"),
					 (b - a) / (double)(n2 - n1), n2 - n1);
		}
	}
}
