/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "bench_util.h"

static double tsc_per_ns = 1.0;

uint64_t bench_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double bench_tsc_calibrate(void)
{
	uint64_t t0 = bench_mono_ns(), c0 = bench_now(), t1, c1;

	do {
		t1 = bench_mono_ns();
	} while (t1 - t0 < 50 * 1000 * 1000);
	c1 = bench_now();
	tsc_per_ns = (double)(c1 - c0) / (double)(t1 - t0);
	return tsc_per_ns;
}

void bench_tsc_set(double v)
{
	if (v > 0)
		tsc_per_ns = v;
}

double bench_tsc_per_ns(void)
{
	return tsc_per_ns;
}

uint64_t bench_timer_overhead(void)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 10000; i++) {
		uint64_t a = bench_now(), b = bench_now();
		if (b - a < best)
			best = b - a;
	}
	return best;
}

int bench_samples_init(struct bench_samples *s, size_t cap)
{
	s->v = malloc(cap * sizeof(*s->v));
	s->n = 0;
	s->cap = s->v ? cap : 0;
	return s->v ? 0 : -ENOMEM;
}

void bench_samples_free(struct bench_samples *s)
{
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

void bench_samples_reset(struct bench_samples *s)
{
	s->n = 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double at(const struct bench_samples *s, double q)
{
	size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);

	return (double)s->v[i] / tsc_per_ns;
}

void bench_percentiles(struct bench_samples *s, struct bench_pct *out)
{
	double sum = 0;

	memset(out, 0, sizeof(*out));
	if (s->n == 0)
		return;
	qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
	for (size_t i = 0; i < s->n; i++)
		sum += (double)s->v[i];
	out->p50 = at(s, 0.50);
	out->p99 = at(s, 0.99);
	out->p999 = at(s, 0.999);
	out->max = (double)s->v[s->n - 1] / tsc_per_ns;
	out->mean = sum / (double)s->n / tsc_per_ns;
	out->n = s->n;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

void bench_spread_of(const double *v, int n, struct bench_spread *out)
{
	double c[64];

	if (n <= 0 || n > 64) {
		out->median = out->min = out->max = 0;
		return;
	}
	memcpy(c, v, (size_t)n * sizeof(*c));
	qsort(c, (size_t)n, sizeof(*c), cmp_double);
	out->median = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
	out->min = c[0];
	out->max = c[n - 1];
}

int bench_pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) ? -errno : 0;
}

void bench_topology(int cpu_a, int cpu_b, char *buf, size_t cap)
{
	char model[128] = "unknown CPU", line[256];
	FILE *f = fopen("/proc/cpuinfo", "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "model name", 10)) {
			char *c = strchr(line, ':');
			if (c) {
				snprintf(model, sizeof(model), "%s", c + 2);
				model[strcspn(model, "\n")] = '\0';
			}
			break;
		}
	}
	if (f)
		fclose(f);
	snprintf(buf, cap, "%s; %ld online CPUs; processes pinned to CPU %d and CPU %d", model,
		 sysconf(_SC_NPROCESSORS_ONLN), cpu_a, cpu_b);
}

/* ---- hardware counters ---- */

static int hw_fd[2] = { -1, -1 };

static int hw_open_one(uint64_t config, int group)
{
	struct perf_event_attr a;

	memset(&a, 0, sizeof(a));
	a.type = PERF_TYPE_HARDWARE;
	a.size = sizeof(a);
	a.config = config;
	a.exclude_hv = 1;
	a.disabled = group < 0;
	return (int)syscall(SYS_perf_event_open, &a, 0, -1, group, 0);
}

int bench_hw_open(char *why, size_t cap)
{
	hw_fd[0] = hw_open_one(PERF_COUNT_HW_CPU_CYCLES, -1);
	if (hw_fd[0] >= 0)
		hw_fd[1] = hw_open_one(PERF_COUNT_HW_INSTRUCTIONS, hw_fd[0]);
	if (hw_fd[0] < 0 || hw_fd[1] < 0) {
		int e = errno;
		snprintf(why, cap, "hardware counters unavailable: perf_event_open: %s", strerror(e));
		if (hw_fd[0] >= 0)
			close(hw_fd[0]);
		hw_fd[0] = hw_fd[1] = -1;
		return -e;
	}
	ioctl(hw_fd[0], PERF_EVENT_IOC_ENABLE, PERF_IOC_FLAG_GROUP);
	snprintf(why, cap, "hardware counters: cycles and instructions (perf_event_open)");
	return 0;
}

void bench_hw_read(struct bench_hw *h)
{
	h->valid = hw_fd[0] >= 0 && read(hw_fd[0], &h->raw[0], 8) == 8 &&
		   read(hw_fd[1], &h->raw[1], 8) == 8;
}

void bench_hw_delta(const struct bench_hw *a, const struct bench_hw *b, uint64_t n,
		    struct bench_hw *out)
{
	out->valid = a->valid && b->valid && n;
	if (out->valid) {
		out->cycles = (double)(b->raw[0] - a->raw[0]) / (double)n;
		out->instructions = (double)(b->raw[1] - a->raw[1]) / (double)n;
	}
}
