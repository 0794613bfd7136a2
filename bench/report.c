/* SPDX-License-Identifier: MIT */
/*
 * Results: every measurement is a series of per-repetition values; rows
 * report their medians with the min-max of p50, ratios are taken per
 * repetition (the two systems ran moments apart) before the median.
 * Output: a JSON file, a markdown table on stdout, PNG plots via gnuplot.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner.h"

#define MAX_SERIES 1024
#define MAX_SKIP   128
#define MAX_NOTES  32

static struct series series[MAX_SERIES];
static int nseries;
static struct { char system[48], scenario[24], why[200]; } skips[MAX_SKIP];
static int nskips;
static char notes[MAX_NOTES][256];
static int nnotes;

struct series *series_get(const char *scenario, const char *system, uint32_t payload,
			  uint32_t burst, uint32_t producers, const char *metric)
{
	struct series *s = (struct series *)series_find(scenario, system, payload, burst,
							 producers, metric);

	if (s)
		return s;
	if (nseries == MAX_SERIES)
		die("too many result series", -ENOSPC);
	s = &series[nseries++];
	snprintf(s->scenario, sizeof(s->scenario), "%s", scenario);
	snprintf(s->system, sizeof(s->system), "%s", system);
	snprintf(s->metric, sizeof(s->metric), "%s", metric);
	s->payload = payload;
	s->burst = burst;
	s->producers = producers;
	return s;
}

const struct series *series_find(const char *scenario, const char *system, uint32_t payload,
				 uint32_t burst, uint32_t producers, const char *metric)
{
	for (int i = 0; i < nseries; i++) {
		struct series *s = &series[i];
		if (s->payload == payload && s->burst == burst && s->producers == producers &&
		    !strcmp(s->scenario, scenario) && !strcmp(s->system, system) &&
		    !strcmp(s->metric, metric))
			return s;
	}
	return NULL;
}

void series_add_pct(struct series *s, const struct bench_pct *p)
{
	if (s->reps == MAX_REPS)
		return;
	s->v[0][s->reps] = p->p50;
	s->v[1][s->reps] = p->p99;
	s->v[2][s->reps] = p->p999;
	s->v[3][s->reps] = p->max;
	s->v[4][s->reps] = p->mean;
	s->n = p->n;
	s->reps++;
}

/* A throughput or a ratio: one value per repetition in every column. */
void series_add_value(struct series *s, double v, size_t n)
{
	struct bench_pct p = { v, v, v, v, v, n };

	series_add_pct(s, &p);
}

void report_skip(const char *system, const char *scenario, const char *why)
{
	for (int i = 0; i < nskips; i++)
		if (!strcmp(skips[i].system, system) && !strcmp(skips[i].why, why))
			return; /* once per system and reason */
	if (nskips == MAX_SKIP)
		return;
	snprintf(skips[nskips].system, sizeof(skips[0].system), "%s", system);
	snprintf(skips[nskips].scenario, sizeof(skips[0].scenario), "%s", scenario);
	snprintf(skips[nskips].why, sizeof(skips[0].why), "%s", why);
	nskips++;
}

void report_note(const char *fmt, ...)
{
	va_list ap;

	if (nnotes == MAX_NOTES)
		return;
	va_start(ap, fmt);
	vsnprintf(notes[nnotes++], sizeof(notes[0]), fmt, ap);
	va_end(ap);
}

void progress(const char *fmt, ...)
{
	va_list ap;

	if (!isatty(2))
		return;
	fputs("\r\033[K", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static double median_of(const double *v, int n, double *lo, double *hi)
{
	struct bench_spread s;

	if (n <= 0) {
		*lo = *hi = NAN;
		return NAN;
	}
	bench_spread_of(v, n, &s);
	*lo = s.min;
	*hi = s.max;
	return s.median;
}

static double med(const struct series *s, int col)
{
	double lo, hi;

	return median_of(s->v[col], s->reps, &lo, &hi);
}

/* ---- ratios ---- */

struct ratio {
	const char *name, *goal;  /* goal: "<= 1.3" or ">= 1.0" */
	double goal_v;
	bool le;
	double median, min, max;
	int reps;
	char why[200];
};

static struct ratio ratios[] = {
	{ .name = "rtt_busy_p50_vs_floor", .goal = "<= 1.3", .goal_v = 1.3, .le = true },
	{ .name = "rtt_busy_p99_vs_floor", .goal = "<= 1.5", .goal_v = 1.5, .le = true },
	{ .name = "rtt_vs_iceoryx", .goal = "<= 0.5", .goal_v = 0.5, .le = true },
	{ .name = "rtt_vs_uds", .goal = "<= 0.05", .goal_v = 0.05, .le = true },
	{ .name = "rtt_blocking_vs_futex", .goal = "<= 1.1", .goal_v = 1.1, .le = true },
	{ .name = "spsc_vs_rte_ring", .goal = ">= 1.0", .goal_v = 1.0, .le = false },
	{ .name = "mpmc_vs_rte_ring", .goal = ">= 1.0", .goal_v = 1.0, .le = false },
	{ .name = "bulk_vs_memcpy_64k", .goal = ">= 0.9", .goal_v = 0.9, .le = false },
	{ .name = "bulk_vs_memcpy_4m", .goal = ">= 0.9", .goal_v = 0.9, .le = false },
	{ .name = "rtt_busy_p50_vs_floor_8", .goal = "<= 1.3", .goal_v = 1.3, .le = true },
	{ .name = "rtt_busy_p50_vs_floor_1024", .goal = "", .goal_v = 0, .le = true },
	{ .name = "bulk_vs_memcpy_floor_64k", .goal = "", .goal_v = 0, .le = false },
	{ .name = "bulk_vs_memcpy_floor_4m", .goal = "", .goal_v = 0, .le = false },
};
#define NRATIOS (int)(sizeof(ratios) / sizeof(ratios[0]))

/* Per repetition, A's column over B's column. */
static void ratio_of(struct ratio *r, const struct series *a, const struct series *b, int col)
{
	double v[MAX_REPS];
	int n = 0;

	if (!a || !b) {
		snprintf(r->why, sizeof(r->why), "not measured: %s", !a ? "Portal's side" : "the peer");
		r->median = NAN;
		return;
	}
	for (int i = 0; i < a->reps && i < b->reps; i++)
		v[n++] = a->v[col][i] / b->v[col][i];
	r->reps = n;
	r->median = median_of(v, n, &r->min, &r->max);
}

static void ratio_self(struct ratio *r, const struct series *a)
{
	if (!a) {
		snprintf(r->why, sizeof(r->why), "not measured");
		r->median = NAN;
		return;
	}
	r->reps = a->reps;
	r->median = median_of(a->v[0], a->reps, &r->min, &r->max);
}

static const char *skip_reason(const char *system)
{
	for (int i = 0; i < nskips; i++)
		if (!strcmp(skips[i].system, system))
			return skips[i].why;
	return NULL;
}

static void compute_ratios(void)
{
	const char *pm = "portal-msgring";
#define S(sc, sys, pl, b, m) series_find(sc, sys, pl, b, 0, m)
	ratio_self(&ratios[0], S("rtt_busy", pm, 64, 1, "p50_vs_floor"));
	ratio_self(&ratios[1], S("rtt_busy", pm, 64, 1, "p99_vs_floor"));
	ratio_of(&ratios[2], S("rtt_busy", pm, 64, 1, "rtt_ns"), S("rtt_busy", "iceoryx", 64, 1, "rtt_ns"), 0);
	ratio_of(&ratios[3], S("rtt_busy", pm, 64, 1, "rtt_ns"), S("rtt_busy", "uds", 64, 1, "rtt_ns"), 0);
	ratio_of(&ratios[4], S("rtt_block", pm, 64, 1, "rtt_ns"), S("rtt_block", "futex", 64, 1, "rtt_ns"), 0);
	ratio_of(&ratios[5], S("stream", "portal-spsc", 64, 32, "msgs_per_s"),
		 S("stream", "rte_ring", 64, 32, "msgs_per_s"), 0);
	ratio_of(&ratios[6], S("stream", "portal-mpmc", 64, 32, "msgs_per_s"),
		 S("stream", "rte_ring-mpmc", 64, 32, "msgs_per_s"), 0);
	ratio_self(&ratios[7], S("bulk", "portal-arena", 64u << 10, 1, "vs_copy_path"));
	ratio_self(&ratios[8], S("bulk", "portal-arena", 4u << 20, 1, "vs_copy_path"));
	ratio_self(&ratios[9], S("rtt_busy", pm, 8, 1, "p50_vs_floor"));
	ratio_self(&ratios[10], S("rtt_busy", pm, 1024, 1, "p50_vs_floor"));
	ratio_self(&ratios[11], S("bulk", "portal-arena", 64u << 10, 1, "vs_memcpy_floor"));
	ratio_self(&ratios[12], S("bulk", "portal-arena", 4u << 20, 1, "vs_memcpy_floor"));
#undef S
	/* A peer that was skipped: say why, from its own skip reason. */
	static const char *peer_of[NRATIOS] = { NULL, NULL, "iceoryx", "uds", "futex", "rte_ring",
						"rte_ring-mpmc" };
	for (int i = 0; i < NRATIOS; i++) {
		const char *why = peer_of[i] ? skip_reason(peer_of[i]) : NULL;
		if (isnan(ratios[i].median) && why)
			snprintf(ratios[i].why, sizeof(ratios[i].why), "%s skipped: %s", peer_of[i], why);
	}
}

static bool ratio_met(const struct ratio *r)
{
	return r->goal[0] && !isnan(r->median) &&
	       (r->le ? r->median <= r->goal_v : r->median >= r->goal_v);
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, double v)
{
	if (isnan(v) || isinf(v))
		fputs("null", f);
	else
		fprintf(f, "%.6g", v);
}

static void write_json(const char *path, const struct opts *o, const char *machine)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		fprintf(stderr, "portal-bench: %s: %s\n", path, strerror(errno));
		return;
	}
	fputs("{\n  \"machine\": ", f);
	json_str(f, machine);
	fprintf(f, ",\n  \"mode\": \"%s\",\n  \"repetitions\": %d,\n  \"rows\": [\n",
		o->quick ? "quick" : "full", o->reps);
	for (int i = 0; i < nseries; i++) {
		const struct series *s = &series[i];
		double lo, hi;

		median_of(s->v[0], s->reps, &lo, &hi);
		fputs("    {\"scenario\":", f);
		json_str(f, s->scenario);
		fputs(",\"system\":", f);
		json_str(f, s->system);
		fprintf(f, ",\"payload\":%u,\"burst\":%u,\"producers\":%u,\"metric\":", s->payload,
			s->burst, s->producers ? s->producers : 1);
		json_str(f, s->metric);
		const char *col[] = { "p50", "p99", "p999", "max", "mean" };
		for (int c = 0; c < 5; c++) {
			fprintf(f, ",\"%s\":", col[c]);
			json_num(f, med(s, c));
		}
		fprintf(f, ",\"n\":%zu,\"repetitions\":%d,\"spread\":[", s->n, s->reps);
		json_num(f, lo);
		fputc(',', f);
		json_num(f, hi);
		fprintf(f, "]}%s\n", i + 1 < nseries ? "," : "");
	}
	fputs("  ],\n  \"ratios\": {\n", f);
	for (int i = 0; i < NRATIOS; i++) {
		fprintf(f, "    \"%s\": ", ratios[i].name);
		json_num(f, ratios[i].median);
		fprintf(f, "%s\n", i + 1 < NRATIOS ? "," : "");
	}
	fputs("  },\n  \"ratio_detail\": {\n", f);
	for (int i = 0; i < NRATIOS; i++) {
		const struct ratio *r = &ratios[i];
		fprintf(f, "    \"%s\": {\"median\":", r->name);
		json_num(f, r->median);
		fputs(",\"min\":", f);
		json_num(f, isnan(r->median) ? NAN : r->min);
		fputs(",\"max\":", f);
		json_num(f, isnan(r->median) ? NAN : r->max);
		fprintf(f, ",\"repetitions\":%d,\"goal\":", r->reps);
		json_str(f, r->goal);
		fprintf(f, ",\"met\":%s,\"note\":", ratio_met(r) ? "true" : "false");
		json_str(f, r->why);
		fprintf(f, "}%s\n", i + 1 < NRATIOS ? "," : "");
	}
	fputs("  },\n  \"skipped\": [\n", f);
	for (int i = 0; i < nskips; i++) {
		fputs("    {\"system\":", f);
		json_str(f, skips[i].system);
		fputs(",\"scenario\":", f);
		json_str(f, skips[i].scenario);
		fputs(",\"reason\":", f);
		json_str(f, skips[i].why);
		fprintf(f, "}%s\n", i + 1 < nskips ? "," : "");
	}
	fputs("  ],\n  \"notes\": [\n", f);
	for (int i = 0; i < nnotes; i++) {
		fputs("    ", f);
		json_str(f, notes[i]);
		fprintf(f, "%s\n", i + 1 < nnotes ? "," : "");
	}
	fputs("  ]\n}\n", f);
	fclose(f);
}

/* ---- markdown ---- */

/* "| median (min–max) " of the p50 column, with PREC decimals. */
static void cell_spread(const struct series *s, double scale, int prec)
{
	double lo, hi, m = median_of(s->v[0], s->reps, &lo, &hi);

	printf("| %.*f (%.*f–%.*f) ", prec, m / scale, prec, lo / scale, prec, hi / scale);
}

static void table_rtt(const char *scenario, const char *title)
{
	bool any = false;

	for (int i = 0; i < nseries; i++) {
		const struct series *s = &series[i];
		const struct series *r50, *r99;

		if (strcmp(s->scenario, scenario) || strcmp(s->metric, "rtt_ns"))
			continue;
		if (!any) {
			printf("\n### %s\n\n| system | payload | p50 ns (min–max) | p99 | p99.9 | max | "
			       "p50 / floor | p99 / floor |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
			       title);
			any = true;
		}
		printf("| %s | %u ", s->system, s->payload);
		cell_spread(s, 1, 0);
		printf("| %.0f | %.0f | %.0f ", med(s, 1), med(s, 2), med(s, 3));
		r50 = series_find(scenario, s->system, s->payload, 1, 0, "p50_vs_floor");
		r99 = series_find(scenario, s->system, s->payload, 1, 0, "p99_vs_floor");
		if (r50 && r99)
			printf("| %.2f | %.2f |\n", med(r50, 0), med(r99, 0));
		else
			printf("| | |\n");
	}
}

static void table_stream(void)
{
	bool any = false;

	for (int i = 0; i < nseries; i++) {
		const struct series *s = &series[i], *x;

		if (strcmp(s->scenario, "stream") || strcmp(s->metric, "msgs_per_s"))
			continue;
		if (!any) {
			printf("\n### Streaming (one way)\n\n| system | payload | burst | M msg/s (min–max) | "
			       "ns/msg | msgs per floor RTT | sender CPU ns/msg | ctx switches/msg |\n"
			       "|---|---:|---:|---:|---:|---:|---:|---:|\n");
			any = true;
		}
		printf("| %s | %u | %u ", s->system, s->payload, s->burst);
		cell_spread(s, 1e6, 2);
#define COL(m, fmt)                                                                          \
	x = series_find("stream", s->system, s->payload, s->burst, 0, m);                    \
	if (x)                                                                               \
		printf("| " fmt " ", med(x, 0));                                            \
	else                                                                                 \
		printf("| ");
		COL("ns_per_msg", "%.1f");
		COL("msgs_per_floor_rtt", "%.1f");
		COL("sender_cpu_ns_per_msg", "%.1f");
		COL("ctx_switches_per_msg", "%.4f");
#undef COL
		printf("|\n");
	}
}

static void table_simple(const char *scenario, const char *metric, const char *title,
			 const char *head, double scale, bool pct)
{
	bool any = false;

	for (int i = 0; i < nseries; i++) {
		const struct series *s = &series[i];

		if (strcmp(s->scenario, scenario) || strcmp(s->metric, metric))
			continue;
		if (!any) {
			printf("\n### %s\n\n%s\n", title, head);
			any = true;
		}
		if (pct) {
			printf("| %s ", s->system);
			cell_spread(s, 1, 0);
			printf("| %.0f | %.0f | %.0f |\n", med(s, 1), med(s, 2), med(s, 3));
		} else {
			printf("| %s | %u | %u ", s->system, s->payload, s->producers ? s->producers : 1);
			cell_spread(s, scale, 2);
			printf("|\n");
		}
	}
}

static void print_markdown(const struct opts *o, const char *machine)
{
	printf("\n## portal-bench (%s mode)\n\n", o->quick ? "quick" : "full");
	printf("Machine: %s  \n", machine);
	printf("Each figure: the median over %d repetitions, with the min–max of the per-repetition\n"
	       "values. Systems are rotated within each repetition; every block of %d round trips\n"
	       "is paired with a block of the raw two-line floor in the same two processes (or\n"
	       "threads, for in-process peers), and ratios are taken per repetition.\n",
	       o->reps, BLOCK);
	for (int i = 0; i < nnotes; i++)
		printf("- %s\n", notes[i]);
	printf("\n### Ratios against the goals\n\n| ratio | median | min – max | goal | met |\n"
	       "|---|---:|---:|---:|:---:|\n");
	for (int i = 0; i < NRATIOS; i++) {
		const struct ratio *r = &ratios[i];
		if (isnan(r->median))
			printf("| %s | – | – | %s | %s |\n", r->name, r->goal,
			       r->why[0] ? r->why : "not measured");
		else
			printf("| %s | %.3f | %.3f – %.3f | %s | %s |\n", r->name, r->median, r->min,
			       r->max, r->goal, !r->goal[0] ? "" : ratio_met(r) ? "yes" : "**no**");
	}
	table_rtt("rtt_busy", "Round trip, busy-poll");
	table_rtt("rtt_block", "Round trip, blocking (the receiver sleeps)");
	table_stream();
	table_simple("load_100k", "latency_ns",
		     "Open loop at 100 000 msg/s, 64 bytes: one-way latency from the intended send "
		     "time (ns)",
		     "| system | p50 (min–max) | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|", 1, true);
	table_simple("mp", "msgs_per_s", "Several producers, one consumer (64 bytes, bursts of 32)",
		     "| system | payload | producers | M msg/s (min–max) |\n|---|---:|---:|---:|", 1e6,
		     false);
	table_simple("bulk", "bytes_per_s", "Bulk (GB/s)",
		     "| system | payload | | GB/s (min–max) |\n|---|---:|---:|---:|", 1e9, false);
	table_simple("instructions", "instructions_per_msg",
		     "Instructions per message under callgrind (send + receive in one thread, 64 bytes)",
		     "| system | payload | | instructions (min–max) |\n|---|---:|---:|---:|", 1, false);
	if (nskips) {
		printf("\n### Skipped\n\n| system | first scenario | reason |\n|---|---|---|\n");
		for (int i = 0; i < nskips; i++)
			printf("| %s | %s | %s |\n", skips[i].system, skips[i].scenario, skips[i].why);
	}
	fflush(stdout);
}

/* ---- plots ---- */

static void plots(const char *dir)
{
	char path[512], cmd[600];
	FILE *f, *g;
	bool any;

	if (system("command -v gnuplot >/dev/null 2>&1")) {
		report_note("plots skipped: gnuplot is not installed (Debian: gnuplot-nox)");
		return;
	}
	/* Latency percentiles by system, 64-byte busy round trip. */
	snprintf(path, sizeof(path), "%s/rtt.dat", dir);
	if (!(f = fopen(path, "w")))
		return;
	any = false;
	for (int i = 0; i < nseries; i++) {
		const struct series *s = &series[i];
		if (!strcmp(s->scenario, "rtt_busy") && s->payload == 64 && !strcmp(s->metric, "rtt_ns")) {
			fprintf(f, "\"%s\" %.1f %.1f %.1f\n", s->system, med(s, 0), med(s, 1), med(s, 2));
			any = true;
		}
	}
	fclose(f);
	/* Throughput by payload size: best burst per system and size. */
	snprintf(path, sizeof(path), "%s/stream.dat", dir);
	if (!(f = fopen(path, "w")))
		return;
	for (int i = 0; i < nseries; i++) {
		const struct series *s = &series[i], *s2;
		if (strcmp(s->scenario, "stream") || strcmp(s->metric, "msgs_per_s") || s->payload != 64)
			continue;
		if (series_find("stream", s->system, 64, s->burst * 4, 0, "msgs_per_s"))
			continue; /* a larger burst of the same system follows */
		s2 = series_find("stream", s->system, 1024, s->burst, 0, "msgs_per_s");
		fprintf(f, "\"%s (burst %u)\" %.3f %.3f\n", s->system, s->burst, med(s, 0) / 1e6,
			s2 ? med(s2, 0) / 1e6 : 0.0);
	}
	fclose(f);
	if (!any)
		return;
	snprintf(cmd, sizeof(cmd), "cd '%s' && gnuplot", dir);
	if (!(g = popen(cmd, "w")))
		return;
	fprintf(g,
		"set terminal pngcairo size 1100,600 noenhanced font ',10'\n"
		"set style data histogram\nset style histogram cluster gap 1\n"
		"set style fill solid 0.8 border -1\nset xtics rotate by -30\nset grid ytics\n"
		"set output 'rtt_latency.png'\n"
		"set title 'Round trip, busy-poll, 64 bytes (median of repetitions)'\n"
		"set logscale y\nset yrange [50:*]\nset ylabel 'ns'\n"
		"plot 'rtt.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p99', "
		"'' using 4 title 'p99.9'\n"
		"set output 'throughput.png'\nunset logscale y\nset yrange [0:*]\n"
		"set title 'Streaming throughput by payload size (largest burst measured)'\n"
		"set ylabel 'M msg/s'\n"
		"plot 'stream.dat' using 2:xtic(1) title '64 B', '' using 3 title '1024 B'\n");
	if (pclose(g))
		report_note("gnuplot failed; plots may be missing in %s", dir);
	else
		report_note("plots: %s/rtt_latency.png, %s/throughput.png", dir, dir);
}

void report_write(const struct opts *o, const char *machine)
{
	compute_ratios();
	if (o->outdir) {
		mkdir(o->outdir, 0755);
		plots(o->outdir);
	}
	print_markdown(o, machine);
	if (o->json)
		write_json(o->json, o, machine);
}
