/* SPDX-License-Identifier: MIT */
/*
 * portal-bench: two processes on two pinned CPUs exchange messages over a
 * shm region, and the same two processes measure the hardware floor (a raw
 * two-cache-line ping-pong) in the same run, interleaved block by block, so
 * every figure is a ratio to a floor taken moments before.
 *
 *   round trip, busy-poll: message ring ping-pong, 8 / 64 / 1024 bytes
 *   streaming: descriptor ring (SPSC, 64-byte slots) in bursts of 1, 8, 32,
 *              and the message ring with 64-byte messages
 *
 * The parent drives; the child (the same binary, exec'd with --child) echoes
 * or consumes. Every message carries its sequence number and a pattern the
 * receiver checks in full; a mismatch aborts the run with an error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "portal/region.h"
#include "portal/ring.h"

#define PING_RING   "ping"
#define PONG_RING   "pong"
#define STREAM_RING "stream"
#define STREAM_MSG  "stream-msg"
#define CTL_OBJ     "ctl"
#define MAX_PAYLOAD 1024
#define STREAM_SLOT 64
#define RING_CAP    4096
#define BLOCK       1000 /* round trips per interleaved block */

enum cmd {
	CMD_NONE = 0,
	CMD_FLOOR,       /* arg: round trips */
	CMD_MSG_ECHO,    /* arg: round trips, arg2: payload */
	CMD_RING_DRAIN,  /* arg: messages, arg2: burst */
	CMD_MSG_DRAIN,   /* arg: messages, arg2: payload */
	CMD_RUSAGE,      /* child reports its context switches */
	CMD_EXIT,
};

/* The control object. Parent-written and child-written words sit on
 * separate line pairs; the floor lines are the ping-pong itself. */
struct ctl {
	_Atomic uint32_t cmd;      /* parent: (generation << 8) | enum cmd */
	uint32_t arg2;             /* parent: written before cmd */
	_Atomic uint64_t arg;      /* parent: written before cmd */
	uint8_t pad0[112];
	_Atomic uint32_t ack;      /* child: generation of the finished command */
	_Atomic uint32_t status;   /* child: 0 ok, else an error code */
	_Atomic uint64_t value;    /* child: a result (errors seen, ctx switches) */
	uint8_t pad1[112];
	_Atomic uint64_t ping;     /* floor: parent writes, child polls */
	uint8_t pad2[120];
	_Atomic uint64_t pong;     /* floor: child writes, parent polls */
	uint8_t pad3[120];
};

struct bench {
	portal_region_t *reg;
	struct ctl *ctl;
	portal_ring_t *stream;      /* parent: producer; child: consumer */
	portal_msgring_t *ping, *pong, *smsg;
	uint32_t gen;
	uint64_t floor_seq;
	uint8_t tmpl[MAX_PAYLOAD];  /* the pattern every payload carries */
};

static int fail(const char *what, int rc)
{
	fprintf(stderr, "portal-bench: %s: %s\n", what, rc < 0 ? portal_strerror(rc) : "failed");
	exit(1);
}

/* ---- payloads: sequence number first and last, pattern between ---- */

static inline void fill(const struct bench *b, void *dst, uint32_t len, uint64_t seq)
{
	memcpy(dst, b->tmpl, len);
	memcpy(dst, &seq, len < 8 ? len : 8);
	if (len >= 16) {
		uint64_t inv = ~seq;
		memcpy((uint8_t *)dst + len - 8, &inv, 8);
	}
}

static inline int check(const struct bench *b, const void *src, uint32_t len, uint64_t seq)
{
	uint64_t v = 0, inv;

	memcpy(&v, src, len < 8 ? len : 8);
	if (len < 8)
		seq &= (UINT64_C(1) << (8 * len)) - 1;
	if (v != seq)
		return -1;
	if (len >= 16) {
		memcpy(&inv, (const uint8_t *)src + len - 8, 8);
		if (inv != ~seq || memcmp((const uint8_t *)src + 8, b->tmpl + 8, len - 16))
			return -1;
	}
	return 0;
}

/* ---- the child's side of each command ---- */

static void child_floor(struct bench *b, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t want = ++b->floor_seq;
		/* Acquire/release: a plain ping-pong of one line each way. */
		while (atomic_load_explicit(&b->ctl->ping, memory_order_acquire) != want)
			;
		atomic_store_explicit(&b->ctl->pong, want, memory_order_release);
	}
}

static uint64_t child_msg_echo(struct bench *b, uint64_t n, uint32_t len)
{
	uint64_t errors = 0;

	for (uint64_t i = 0; i < n; i++) {
		const void *in;
		void *out;
		size_t got;
		int rc;

		while ((rc = portal_msgring_peek(b->ping, &in, &got)) == -EAGAIN)
			;
		if (rc)
			fail("child peek", rc);
		while ((rc = portal_msgring_reserve(b->pong, got, &out)) == -EAGAIN)
			;
		if (rc)
			fail("child reserve", rc);
		memcpy(out, in, got);
		portal_msgring_commit(b->pong, got);
		/* Checked after the reply left: verification is the benchmark's
		 * work, not the ring's, and the floor does none. The parent
		 * checks the echoed copy too. */
		if (got != len || check(b, in, len, i))
			errors++;
		portal_msgring_release(b->ping);
	}
	return errors;
}

static uint64_t child_ring_drain(struct bench *b, uint64_t n, uint32_t burst)
{
	static uint8_t buf[32 * STREAM_SLOT];
	uint64_t seq = 0, errors = 0;

	while (seq < n) {
		int got = portal_ring_dequeue_burst_sc(b->stream, buf, burst);
		if (got < 0)
			fail("child dequeue", got);
		for (int k = 0; k < got; k++, seq++)
			if (check(b, buf + k * STREAM_SLOT, STREAM_SLOT, seq))
				errors++;
	}
	return errors;
}

static uint64_t child_msg_drain(struct bench *b, uint64_t n, uint32_t len)
{
	uint64_t errors = 0;

	for (uint64_t i = 0; i < n; i++) {
		const void *in;
		size_t got;
		int rc;

		while ((rc = portal_msgring_peek(b->smsg, &in, &got)) == -EAGAIN)
			;
		if (rc)
			fail("child peek", rc);
		if (got != len || check(b, in, len, i))
			errors++;
		portal_msgring_release(b->smsg);
	}
	return errors;
}

static int child_main(const char *uri, int cpu)
{
	struct portal_region_opts o = { .side = 1, .ident = "portal-bench child" };
	struct portal_object_info ci;
	struct bench b = { 0 };
	uint32_t seen = 0;
	int rc;

	if (cpu >= 0)
		bench_pin(cpu);
	for (size_t i = 0; i < sizeof(b.tmpl); i++)
		b.tmpl[i] = (uint8_t)(i * 7 + 3);
	if ((rc = portal_region_attach(uri, &o, &b.reg)))
		fail("child attach", rc);
	if ((rc = portal_region_lookup(b.reg, CTL_OBJ, PORTAL_OBJ_USER, &ci)))
		fail("child ctl", rc);
	b.ctl = ci.addr;
	if ((rc = portal_msgring_open(b.reg, PING_RING, PORTAL_ROLE_CONSUMER, &b.ping)) ||
	    (rc = portal_msgring_open(b.reg, PONG_RING, PORTAL_ROLE_PRODUCER, &b.pong)) ||
	    (rc = portal_msgring_open(b.reg, STREAM_MSG, PORTAL_ROLE_CONSUMER, &b.smsg)) ||
	    (rc = portal_ring_open(b.reg, STREAM_RING, PORTAL_ROLE_CONSUMER, &b.stream)))
		fail("child open", rc);

	for (;;) {
		uint32_t c;
		uint64_t arg, value = 0;
		struct rusage ru;

		/* A: command word, then its arguments; pairs with R in send_cmd. */
		while (((c = atomic_load_explicit(&b.ctl->cmd, memory_order_acquire)) >> 8) == seen)
			;
		seen = c >> 8;
		arg = atomic_load_explicit(&b.ctl->arg, memory_order_relaxed);
		switch (c & 0xff) {
		case CMD_FLOOR:      child_floor(&b, arg); break;
		case CMD_MSG_ECHO:   value = child_msg_echo(&b, arg, b.ctl->arg2); break;
		case CMD_RING_DRAIN: value = child_ring_drain(&b, arg, b.ctl->arg2); break;
		case CMD_MSG_DRAIN:  value = child_msg_drain(&b, arg, b.ctl->arg2); break;
		case CMD_RUSAGE:
			getrusage(RUSAGE_SELF, &ru);
			value = (uint64_t)ru.ru_nvcsw;
			break;
		case CMD_EXIT:
			atomic_store_explicit(&b.ctl->ack, seen, memory_order_release);
			portal_region_detach(b.reg);
			return 0;
		}
		atomic_store_explicit(&b.ctl->value, value, memory_order_relaxed);
		/* R: result, then ack; pairs with A in wait_ack. */
		atomic_store_explicit(&b.ctl->ack, seen, memory_order_release);
	}
}

/* ---- the parent's side ---- */

static void send_cmd(struct bench *b, enum cmd c, uint64_t arg, uint32_t arg2)
{
	b->ctl->arg2 = arg2;
	atomic_store_explicit(&b->ctl->arg, arg, memory_order_relaxed);
	/* R: arguments, then the command; pairs with A in child_main. */
	atomic_store_explicit(&b->ctl->cmd, (++b->gen << 8) | c, memory_order_release);
}

static uint64_t wait_ack(struct bench *b)
{
	uint64_t t0 = bench_mono_ns();

	/* A: ack, then the result; pairs with R in child_main. */
	while (atomic_load_explicit(&b->ctl->ack, memory_order_acquire) != b->gen)
		if (bench_mono_ns() - t0 > 60ull * 1000 * 1000 * 1000)
			fail("child did not answer within 60 s", -ETIMEDOUT);
	return atomic_load_explicit(&b->ctl->value, memory_order_relaxed);
}

/* One block of the raw floor: N round trips, one sample each. */
static void floor_block(struct bench *b, uint64_t n, struct bench_samples *s, uint64_t ovh)
{
	send_cmd(b, CMD_FLOOR, n, 0);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t want = ++b->floor_seq, t0 = bench_now();
		atomic_store_explicit(&b->ctl->ping, want, memory_order_release);
		while (atomic_load_explicit(&b->ctl->pong, memory_order_acquire) != want)
			;
		bench_samples_add(s, bench_now() - t0 - ovh);
	}
	wait_ack(b);
}

static uint64_t msg_block(struct bench *b, uint64_t n, uint32_t len, uint64_t *seq,
			  struct bench_samples *s, uint64_t ovh)
{
	uint64_t errors = 0;

	send_cmd(b, CMD_MSG_ECHO, n, len);
	/* The child counts its sequence from 0 in each block. */
	for (uint64_t i = 0; i < n; i++) {
		const void *in;
		void *out;
		size_t got;
		int rc;
		uint64_t t0 = bench_now();

		while ((rc = portal_msgring_reserve(b->ping, len, &out)) == -EAGAIN)
			;
		if (rc)
			fail("reserve", rc);
		fill(b, out, len, i);
		portal_msgring_commit(b->ping, len);
		while ((rc = portal_msgring_peek(b->pong, &in, &got)) == -EAGAIN)
			;
		if (rc)
			fail("peek", rc);
		bench_samples_add(s, bench_now() - t0 - ovh);
		if (got != len || check(b, in, len, i))
			errors++;
		portal_msgring_release(b->pong);
	}
	(*seq) += n;
	return errors + wait_ack(b);
}

struct opts {
	bool quick;
	int reps;
	int cpu_a, cpu_b;
	const char *json;
};

struct row {
	char scenario[32], system[32];
	uint32_t payload, burst;
	const char *metric;
	struct bench_spread p50, p99, p999, max, mean; /* over repetitions */
	size_t n;
	int reps;
};

static struct row rows[64];
static int nrows;

static void add_row(const char *scenario, const char *system, uint32_t payload, uint32_t burst,
		    const char *metric, const double *p50, const double *p99, const double *p999,
		    const double *max, const double *mean, int reps, size_t n)
{
	struct row *r = &rows[nrows++];

	snprintf(r->scenario, sizeof(r->scenario), "%s", scenario);
	snprintf(r->system, sizeof(r->system), "%s", system);
	r->payload = payload;
	r->burst = burst;
	r->metric = metric;
	bench_spread_of(p50, reps, &r->p50);
	bench_spread_of(p99, reps, &r->p99);
	bench_spread_of(p999, reps, &r->p999);
	bench_spread_of(max, reps, &r->max);
	bench_spread_of(mean, reps, &r->mean);
	r->reps = reps;
	r->n = n;
}

/* A throughput metric: one value per repetition, so every percentile
 * column carries the same spread. */
static void add_rate_row(const char *system, uint32_t payload, uint32_t burst, const char *metric,
			 const double *v, int reps, size_t n)
{
	add_row("stream", system, payload, burst, metric, v, v, v, v, v, reps, n);
}

static const struct row *find_row(const struct row *like, const char *metric)
{
	for (int i = 0; i < nrows; i++)
		if (!strcmp(rows[i].system, like->system) && rows[i].payload == like->payload &&
		    rows[i].burst == like->burst && !strcmp(rows[i].metric, metric))
			return &rows[i];
	return like; /* not reached: run_stream adds all four */
}

/*
 * Round trip: per repetition, blocks of the floor and of Portal alternate
 * (A B A B ...); each repetition gives percentiles for both and their ratio.
 */
static void run_rtt(struct bench *b, const struct opts *o, uint32_t len, uint64_t ovh,
		    double ratio_p50[], double ratio_p99[])
{
	int blocks = o->quick ? 10 : 50;
	double fp50[64], fp99[64], fp999[64], fmax[64], fmean[64];
	double pp50[64], pp99[64], pp999[64], pmax[64], pmean[64];
	struct bench_samples fs, ps;
	struct bench_pct f, p;
	uint64_t seq = 0, errors = 0;

	bench_samples_init(&fs, (size_t)blocks * BLOCK);
	bench_samples_init(&ps, (size_t)blocks * BLOCK);
	for (int r = 0; r < o->reps; r++) {
		bench_samples_reset(&fs);
		bench_samples_reset(&ps);
		for (int k = 0; k < blocks; k++) {
			floor_block(b, BLOCK, &fs, ovh);
			errors += msg_block(b, BLOCK, len, &seq, &ps, ovh);
		}
		bench_percentiles(&fs, &f);
		bench_percentiles(&ps, &p);
		fp50[r] = f.p50, fp99[r] = f.p99, fp999[r] = f.p999, fmax[r] = f.max, fmean[r] = f.mean;
		pp50[r] = p.p50, pp99[r] = p.p99, pp999[r] = p.p999, pmax[r] = p.max, pmean[r] = p.mean;
		ratio_p50[r] = p.p50 / f.p50;
		ratio_p99[r] = p.p99 / f.p99;
		if (isatty(2))
			fprintf(stderr, "\r  rtt %4u B: repetition %d/%d  floor p50 %.0f ns  portal p50 %.0f ns   ",
				len, r + 1, o->reps, f.p50, p.p50);
	}
	if (isatty(2))
		fprintf(stderr, "\n");
	if (errors)
		fail("payload check failed in the round-trip test", -EBADMSG);
	add_row("rtt_busy", "floor-2line", 8, 1, "rtt_ns", fp50, fp99, fp999, fmax, fmean, o->reps, fs.n);
	add_row("rtt_busy", "portal-msgring", len, 1, "rtt_ns", pp50, pp99, pp999, pmax, pmean, o->reps, ps.n);
	bench_samples_free(&fs);
	bench_samples_free(&ps);
}

/* Streaming: a floor block, then a timed slice of N messages. */
static void run_stream(struct bench *b, const struct opts *o, bool msgring, uint32_t burst,
		       uint32_t len, uint64_t ovh)
{
	uint64_t n = o->quick ? 2000000 : 10000000;
	double mps[64], nsper[64], per_floor[64], cyc[64];
	const char *sys;
	static uint8_t buf[32 * STREAM_SLOT];
	struct bench_samples fs;
	struct bench_pct f;
	uint64_t errors = 0;

	bench_samples_init(&fs, BLOCK);
	for (int r = 0; r < o->reps; r++) {
		uint64_t t0, t1, seq = 0;

		bench_samples_reset(&fs);
		floor_block(b, BLOCK, &fs, ovh);
		bench_percentiles(&fs, &f);
		send_cmd(b, msgring ? CMD_MSG_DRAIN : CMD_RING_DRAIN, n, msgring ? len : burst);
		t0 = bench_now();
		while (seq < n) {
			if (msgring) {
				void *out;
				int rc = portal_msgring_reserve(b->smsg, len, &out);
				if (rc == -EAGAIN)
					continue;
				if (rc)
					fail("reserve", rc);
				fill(b, out, len, seq++);
				portal_msgring_commit(b->smsg, len);
			} else {
				uint32_t k = burst;
				int put;

				if (k > n - seq)
					k = (uint32_t)(n - seq);
				for (uint32_t i = 0; i < k; i++)
					fill(b, buf + i * STREAM_SLOT, STREAM_SLOT, seq + i);
				do
					put = portal_ring_enqueue_burst_sp(b->stream, buf, k);
				while (put == 0);
				if (put < 0)
					fail("enqueue", put);
				/* A partial burst: resend the rest from the top. */
				if ((uint32_t)put < k)
					memmove(buf, buf + put * STREAM_SLOT, (k - put) * STREAM_SLOT);
				seq += (uint64_t)put;
			}
		}
		errors += wait_ack(b);
		t1 = bench_now();
		nsper[r] = (double)(t1 - t0) / bench_tsc_per_ns() / (double)n;
		mps[r] = 1e9 / nsper[r];
		per_floor[r] = f.p50 / nsper[r];
		cyc[r] = (double)(t1 - t0) / (double)n;
		if (isatty(2))
			fprintf(stderr, "\r  stream %s burst %u: repetition %d/%d  %.1f M msg/s   ",
				msgring ? "msgring" : "ring", burst, r + 1, o->reps, mps[r] / 1e6);
	}
	if (isatty(2))
		fprintf(stderr, "\n");
	if (errors)
		fail("payload check failed in the streaming test", -EBADMSG);
	sys = msgring ? "portal-msgring" : "portal-spsc";
	add_rate_row(sys, len, burst, "msgs_per_s", mps, o->reps, n);
	add_rate_row(sys, len, burst, "ns_per_msg", nsper, o->reps, n);
	add_rate_row(sys, len, burst, "tsc_cycles_per_msg", cyc, o->reps, n);
	add_rate_row(sys, len, burst, "msgs_per_floor_rtt", per_floor, o->reps, n);
	bench_samples_free(&fs);
}

static void print_spread(const char *label, const double *v, int n)
{
	struct bench_spread s;

	bench_spread_of(v, n, &s);
	printf("| %-38s | %8.2f | %8.2f – %-8.2f |\n", label, s.median, s.min, s.max);
}

static void write_json(const char *path, const char *topo)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		perror(path);
		return;
	}
	fprintf(f, "{\n  \"machine\": \"%s\",\n  \"rows\": [\n", topo);
	for (int i = 0; i < nrows; i++) {
		struct row *r = &rows[i];
		fprintf(f, "    {\"scenario\":\"%s\",\"system\":\"%s\",\"payload\":%u,\"burst\":%u,"
			"\"metric\":\"%s\",\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,"
			"\"mean\":%.3f,\"n\":%zu,\"repetitions\":%d,\"spread\":[%.3f,%.3f]}%s\n",
			r->scenario, r->system, r->payload, r->burst, r->metric, r->p50.median,
			r->p99.median, r->p999.median, r->max.median, r->mean.median, r->n, r->reps,
			r->p50.min, r->p50.max, i + 1 < nrows ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	fclose(f);
}

static void setup(struct bench *b, const char *uri)
{
	struct portal_region_opts ro = { .size = 8u << 20, .flags = PORTAL_REGION_F_EXCL,
					 .ident = "portal-bench parent" };
	struct portal_msgring_params mp = { .capacity = 1u << 16, .max_msg = MAX_PAYLOAD };
	struct portal_ring_params rp = { PORTAL_RING_SPSC, STREAM_SLOT, RING_CAP, 0 };
	struct portal_object_info ci;
	int rc;

	for (size_t i = 0; i < sizeof(b->tmpl); i++)
		b->tmpl[i] = (uint8_t)(i * 7 + 3);
	portal_region_destroy(uri);
	if ((rc = portal_region_create(uri, &ro, &b->reg)))
		fail("create region", rc);
	if ((rc = portal_region_alloc(b->reg, CTL_OBJ, PORTAL_OBJ_USER, sizeof(struct ctl), 0, 0,
				      NULL, &ci)))
		fail("control object", rc);
	b->ctl = ci.addr;
	if ((rc = portal_msgring_create(b->reg, PING_RING, &mp, 0)) ||
	    (rc = portal_msgring_create(b->reg, PONG_RING, &mp, 1)) ||
	    (rc = portal_msgring_create(b->reg, STREAM_MSG, &mp, 0)) ||
	    (rc = portal_ring_create(b->reg, STREAM_RING, &rp, 0)))
		fail("create rings", rc);
	if ((rc = portal_msgring_open(b->reg, PING_RING, PORTAL_ROLE_PRODUCER, &b->ping)) ||
	    (rc = portal_msgring_open(b->reg, PONG_RING, PORTAL_ROLE_CONSUMER, &b->pong)) ||
	    (rc = portal_msgring_open(b->reg, STREAM_MSG, PORTAL_ROLE_PRODUCER, &b->smsg)) ||
	    (rc = portal_ring_open(b->reg, STREAM_RING, PORTAL_ROLE_PRODUCER, &b->stream)))
		fail("open rings", rc);
}

static pid_t spawn_child(const char *self, const char *uri, int cpu)
{
	char cpu_s[16];
	pid_t pid;

	snprintf(cpu_s, sizeof(cpu_s), "%d", cpu);
	pid = fork();
	if (pid == 0) {
		execl(self, self, "--child", uri, "--child-cpu", cpu_s, (char *)NULL);
		perror("exec portal-bench --child");
		_exit(127);
	}
	return pid;
}

static void print_table(const struct opts *o, const char *topo, double rtt_ratio[][2][64],
			const uint32_t *sizes, int nsizes, long parent_csw, long child_csw,
			uint64_t busy_msgs)
{
	printf("\n## portal-bench (%s mode)\n\n", o->quick ? "quick" : "full");
	printf("Machine: %s  \n", topo);
	printf("Each figure: median over %d repetitions, with min–max. Round trips: every Portal\n"
	       "block of %d round trips is interleaved with a block of the raw two-line floor\n"
	       "in the same two processes; ratios are per repetition.\n\n", o->reps, BLOCK);
	printf("| measurement | system | payload | burst | p50 | p99 | p99.9 | max | reps |\n");
	printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < nrows; i++) {
		struct row *r = &rows[i];
		if (!strcmp(r->metric, "rtt_ns"))
			printf("| round trip, busy-poll (ns) | %s | %u | %u | %.0f (%.0f–%.0f) | %.0f | %.0f | %.0f | %d |\n",
			       r->system, r->payload, r->burst, r->p50.median, r->p50.min, r->p50.max,
			       r->p99.median, r->p999.median, r->max.median, r->reps);
	}
	printf("\n| streaming | system | payload | burst | Mmsg/s | ns/msg | TSC cycles/msg | msgs per floor RTT |\n");
	printf("|---|---|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < nrows; i++) {
		struct row *r = &rows[i];
		if (!strcmp(r->metric, "msgs_per_s"))
			printf("| stream | %s | %u | %u | %.1f (%.1f–%.1f) | %.1f | %.0f | %.1f |\n",
			       r->system, r->payload, r->burst, r->p50.median / 1e6, r->p50.min / 1e6,
			       r->p50.max / 1e6, find_row(r, "ns_per_msg")->p50.median,
			       find_row(r, "tsc_cycles_per_msg")->p50.median,
			       find_row(r, "msgs_per_floor_rtt")->p50.median);
	}
	printf("\n| ratio (Portal / floor, same run) | median | min – max |\n|---|---:|---:|\n");
	for (int k = 0; k < nsizes; k++) {
		char l[64];
		snprintf(l, sizeof(l), "rtt p50, %u-byte messages", sizes[k]);
		print_spread(l, rtt_ratio[k][0], o->reps);
		snprintf(l, sizeof(l), "rtt p99, %u-byte messages", sizes[k]);
		print_spread(l, rtt_ratio[k][1], o->reps);
	}
	printf("\nVoluntary context switches during all busy-poll work (%llu messages): "
	       "parent %ld, child %ld.\n", (unsigned long long)busy_msgs, parent_csw, child_csw);
}

static int bench_run(const struct opts *o, const char *self)
{
	static const uint32_t sizes[] = { 8, 64, 1024 };
	static double rtt_ratio[3][2][64];
	struct bench b = { 0 };
	char uri[64], topo[256];
	struct rusage ru0, ru1;
	uint64_t ovh, c0, c1, busy = 0;
	int status;
	pid_t pid;

	if (bench_pin(o->cpu_a))
		fprintf(stderr, "portal-bench: cannot pin to CPU %d; running unpinned\n", o->cpu_a);
	bench_tsc_calibrate();
	ovh = bench_timer_overhead();
	bench_topology(o->cpu_a, o->cpu_b, topo, sizeof(topo));
	snprintf(uri, sizeof(uri), "shm:portal-bench-%d", (int)getpid());
	setup(&b, uri);
	pid = spawn_child(self, uri, o->cpu_b);
	if (pid < 0)
		fail("fork", -errno);

	getrusage(RUSAGE_SELF, &ru0);
	send_cmd(&b, CMD_RUSAGE, 0, 0);
	c0 = wait_ack(&b);
	for (int k = 0; k < 3; k++) {
		run_rtt(&b, o, sizes[k], ovh, rtt_ratio[k][0], rtt_ratio[k][1]);
		busy += (uint64_t)o->reps * (o->quick ? 10 : 50) * BLOCK * 2;
	}
	run_stream(&b, o, false, 1, STREAM_SLOT, ovh);
	run_stream(&b, o, false, 8, STREAM_SLOT, ovh);
	run_stream(&b, o, false, 32, STREAM_SLOT, ovh);
	run_stream(&b, o, true, 1, 64, ovh);
	busy += (uint64_t)o->reps * 4 * (o->quick ? 2000000 : 10000000);
	send_cmd(&b, CMD_RUSAGE, 0, 0);
	c1 = wait_ack(&b);
	getrusage(RUSAGE_SELF, &ru1);

	send_cmd(&b, CMD_EXIT, 0, 0);
	wait_ack(&b);
	waitpid(pid, &status, 0);
	print_table(o, topo, rtt_ratio, sizes, 3, ru1.ru_nvcsw - ru0.ru_nvcsw, (long)(c1 - c0), busy);
	if (o->json)
		write_json(o->json, topo);
	portal_region_detach(b.reg);
	portal_region_destroy(uri);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: portal-bench [--quick] [--reps N] [--cpus A,B] [--json FILE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "quick", no_argument, 0, 'q' }, { "reps", required_argument, 0, 'r' },
		{ "cpus", required_argument, 0, 'c' }, { "json", required_argument, 0, 'j' },
		{ "child", required_argument, 0, 'C' }, { "child-cpu", required_argument, 0, 'P' },
		{ 0, 0, 0, 0 },
	};
	struct opts o = { .reps = 5, .cpu_a = 0, .cpu_b = 1 };
	const char *child_uri = NULL;
	int child_cpu = -1, c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'q': o.quick = true; break;
		case 'r': o.reps = atoi(optarg); break;
		case 'c': if (sscanf(optarg, "%d,%d", &o.cpu_a, &o.cpu_b) != 2) usage(); break;
		case 'j': o.json = optarg; break;
		case 'C': child_uri = optarg; break;
		case 'P': child_cpu = atoi(optarg); break;
		default: usage();
		}
	}
	if (child_uri)
		return child_main(child_uri, child_cpu);
	if (o.reps < 1 || o.reps > 64)
		usage();
	return bench_run(&o, argv[0]);
}
