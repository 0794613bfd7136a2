/* SPDX-License-Identifier: MIT */
/*
 * The runner's internals, shared by portal_bench.c (options, processes),
 * scenario.c (the measurements and the peer's side of them) and report.c
 * (results, ratios, JSON, markdown, plots).
 */
#ifndef PORTAL_BENCH_RUNNER_H
#define PORTAL_BENCH_RUNNER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench.h"
#include "bench_util.h"

#define MAX_REPS  64
#define MAX_INST  32
#define BLOCK     1000 /* round trips per interleaved block */

enum cmd {
	CMD_NONE = 0,
	CMD_FLOOR2,     /* arg: round trips on the two-line floor */
	CMD_FLOOR1,     /* arg: round trips on one shared line */
	CMD_ECHO,       /* inst, arg: round trips, len, flags */
	CMD_DRAIN,      /* inst, arg: messages, len, burst, flags, producers */
	CMD_LOAD,       /* inst, arg: messages, len, t0, period */
	CMD_BULK,       /* arg: transfers, len: bytes */
	CMD_RUSAGE,     /* value: voluntary + involuntary context switches so far */
	CMD_OPEN,       /* inst: open side 1 (the driver opens side 0 meanwhile) */
	CMD_EXIT,
};

/*
 * One per peer, in shared memory (child process) or on the heap (thread).
 * The driver's words, the peer's words and each floor line sit on their
 * own pair of cache lines (128 bytes: the adjacent-line prefetcher pairs them).
 */
struct ctl {
	_Atomic uint32_t cmd;      /* driver: (generation << 8) | enum cmd; futex word */
	_Atomic uint32_t sleeping; /* peer: 1 while it may sleep on cmd */
	uint32_t inst, len, burst, flags, producers, pad;
	_Atomic uint64_t arg;
	uint64_t t0, period;       /* CMD_LOAD: TSC of message 0, ticks between */
	double tsc_per_ns;         /* the driver's calibration, for the peer's figures */
	_Atomic uint32_t go;       /* MP: producers start when it turns 1 */
	_Atomic uint32_t ready;    /* MP: producers that opened their side */
	_Alignas(128) _Atomic uint32_t ack; /* peer: generation of the finished command */
	_Atomic int32_t status;    /* peer: 0, or a negative errno */
	_Atomic uint64_t value;    /* peer: payload errors, or a count */
	double res[5];             /* CMD_LOAD: p50 p99 p999 max mean, ns */
	_Alignas(128) _Atomic uint64_t ping;     /* two-line floor: driver writes */
	_Alignas(128) _Atomic uint64_t pong;     /* two-line floor: peer writes */
	_Alignas(128) _Atomic uint64_t line;     /* one-line floor: both write, odd/even */
};

/* A system with one environment: what the tables call a system. */
struct inst {
	const struct bsys *sys;
	struct bsys_env env;
	char label[48];       /* system name, with the slot size when it has several */
	bool ok;
	char why[200];        /* why it is skipped */
	void *conn0;          /* the driver's side 0 */
	struct peer *peer;    /* who serves side 1 */
};

struct peer {
	struct ctl *ctl;
	uint32_t gen;
	uint64_t floor_seq, line_seq;
	bool thread;
	pid_t pid;
	pthread_t tid;
};

struct opts {
	bool quick, callgrind;
	int reps;
	int cpu_a, cpu_b;
	const char *json, *outdir, *only, *scenarios;
};

/* ---- scenario.c ---- */
void scenario_init(struct inst *insts, int ninst, const struct opts *o, uint64_t timer_ovh);
void run_rtt_busy(void);
void run_rtt_block(void);
void run_stream(void);
void run_load(void);
void run_mp(const char *self, const char *region_uri);
int scenario_bulk_setup(void *region);
void run_bulk(void *proc_peer);
void run_instructions(const char *self);
/* The body of one callgrind run (portal-bench --instr-loop). */
int instr_loop(struct inst *in, uint64_t n);

/* The peer's command loop; returns when told to exit. */
int peer_serve(struct ctl *ctl, struct inst *insts, int ninst, void *region);
/* MP producer process body. */
int producer_main(struct inst *in, struct ctl *ctl, int id, uint64_t n, int burst);

void send_cmd(struct peer *p, enum cmd c, uint64_t arg);
uint64_t wait_ack(struct peer *p, bool sleep);
void die(const char *what, int rc) __attribute__((noreturn));

/* ---- report.c ---- */
struct series {
	char scenario[24], system[48], metric[40];
	uint32_t payload, burst, producers;
	double v[5][MAX_REPS]; /* p50 p99 p999 max mean, per repetition */
	int reps;
	size_t n;              /* samples or messages per repetition */
};

struct series *series_get(const char *scenario, const char *system, uint32_t payload,
			  uint32_t burst, uint32_t producers, const char *metric);
void series_add_pct(struct series *s, const struct bench_pct *p);
void series_add_value(struct series *s, double v, size_t n);
const struct series *series_find(const char *scenario, const char *system, uint32_t payload,
				 uint32_t burst, uint32_t producers, const char *metric);
void report_skip(const char *system, const char *scenario, const char *why);
void report_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void report_write(const struct opts *o, const char *machine);

/* Progress line on a terminal; nothing otherwise. */
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
