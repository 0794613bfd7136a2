/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the benchmark programs: a calibrated TSC clock, sample
 * sets with percentiles, CPU pinning, and small statistics over repetitions.
 */
#ifndef PORTAL_BENCH_UTIL_H
#define PORTAL_BENCH_UTIL_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- clock ---- */

/* Calibrate the TSC against CLOCK_MONOTONIC (about 50 ms). Returns ticks/ns. */
double bench_tsc_calibrate(void);
double bench_tsc_per_ns(void);
/* Use a calibration made elsewhere (another process on the same TSC). */
void bench_tsc_set(double ticks_per_ns);
/* Cost of one bench_now() pair, in ticks (the minimum over many tries). */
uint64_t bench_timer_overhead(void);

static inline uint64_t bench_now(void)
{
#if defined(__x86_64__)
	uint32_t lo, hi;
	/* lfence: no earlier load may still be in flight when we read. */
	__asm__ __volatile__("lfence; rdtsc" : "=a"(lo), "=d"(hi)::"memory");
	return ((uint64_t)hi << 32) | lo;
#else
#error "bench_now: add a cycle counter for this architecture"
#endif
}

uint64_t bench_mono_ns(void);

/* ---- samples ---- */

struct bench_samples {
	uint64_t *v;     /* ticks */
	size_t n, cap;
};

int bench_samples_init(struct bench_samples *s, size_t cap);
void bench_samples_free(struct bench_samples *s);
static inline void bench_samples_add(struct bench_samples *s, uint64_t x)
{
	if (s->n < s->cap)
		s->v[s->n++] = x;
}
void bench_samples_reset(struct bench_samples *s);

struct bench_pct {
	double p50, p99, p999, max, mean; /* ns */
	size_t n;
};
/* Sorts the samples in place; converts ticks to ns. */
void bench_percentiles(struct bench_samples *s, struct bench_pct *out);

/* Median, minimum and maximum of N values (N <= 64); sorts a copy. */
struct bench_spread {
	double median, min, max;
};
void bench_spread_of(const double *v, int n, struct bench_spread *out);

/* ---- CPUs ---- */

/* Pin the calling thread to CPU; returns 0 or a negative errno. */
int bench_pin(int cpu);
/* A one-line description of the CPU model and the two CPUs used. */
void bench_topology(int cpu_a, int cpu_b, char *buf, size_t cap);

#endif

/* ---- hardware counters (perf_event_open), where the machine has them ---- */

struct bench_hw {
	bool valid;
	double cycles, instructions; /* per message, after bench_hw_delta */
	uint64_t raw[2];
};

/* Open cycle and instruction counters for the calling thread. Returns 0,
 * or a negative errno and a reason in WHY (e.g. unsupported in this VM). */
int bench_hw_open(char *why, size_t cap);
void bench_hw_read(struct bench_hw *h);
void bench_hw_delta(const struct bench_hw *a, const struct bench_hw *b, uint64_t n,
		    struct bench_hw *out);
