/* SPDX-License-Identifier: MIT */
/*
 * driver.h - the driver side of the cross-process tests: create a region
 * with a control block, fork+exec portal_peer processes into it, wait for
 * them with a deadline (kill and fail on a hang), read their reports.
 */
#ifndef PORTAL_STRESS_DRIVER_H
#define PORTAL_STRESS_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "portal/region.h"
#include "stress/stress.h"

#define DRIVER_MAX_ARGS 40

struct driver_proc {
	pid_t pid;
	char what[64];        /* for messages: "consumer 1" */
	int status;           /* from waitpid */
	bool exited;
	double seconds;       /* wall time until it exited */
};

struct driver_run {
	char uri[96];
	const char *bindir;
	portal_region_t *reg;
	struct stress_ctl *ctl;
	uint32_t npeers;      /* peers expected at the barrier */
	struct driver_proc proc[STRESS_MAX_PEERS];
	unsigned nproc;
	double t0;
};

/* Messages for a run: the environment variable NAME (a count, may use a
 * suffix k/m/g = 10^3/10^6/10^9), else DEF. */
uint64_t driver_env_count(const char *name, uint64_t def);

/*
 * Create a fresh region "shm:portal-<tag>-<pid>" of SIZE bytes for NPEERS
 * peers (sides 1..NPEERS) and its control block. Returns 0, or a negative
 * errno; *SKIP_WHY is set when the cause is the environment (no
 * PORTAL_TEST_BINDIR, no /dev/shm) rather than a bug.
 */
int driver_setup(struct driver_run *run, const char *tag, uint64_t size, uint32_t npeers,
		 uint64_t count, const char **skip_why);

/* Place a raw object (kind PORTAL_OBJ_USER) and return its address. */
void *driver_alloc_user(struct driver_run *run, const char *name, uint64_t size);

/*
 * fork+exec BINDIR/PROGRAM with ARGV (NULL-terminated, without argv[0]);
 * fds listed in KEEP_FDS (ending with -1, may be NULL) stay open across
 * exec. Returns 0 or a negative errno.
 */
int driver_spawn(struct driver_run *run, const char *program, const char *what,
		 const char *const *argv, const int *keep_fds);

/*
 * Wait for every spawned process, at most TIMEOUT seconds. When one exits
 * with a failure, the others are told to abort and get a grace period; on
 * the deadline every survivor is killed (SIGKILL). Prints one line per
 * process. Returns true when all exited with status 0.
 */
bool driver_wait(struct driver_run *run, double timeout);

/* Detach and remove the region. Safe to call twice. */
void driver_teardown(struct driver_run *run);

#endif
