/* SPDX-License-Identifier: MIT */
/*
 * peer.h - the inside of portal_peer: its options, the per-process context,
 * and the role entry points (peer_stress.c: honest traffic; peer_hostile.c:
 * the hostile peer and the honest side it attacks).
 */
#ifndef PORTAL_STRESS_PEER_H
#define PORTAL_STRESS_PEER_H

#include <stdbool.h>
#include <stdint.h>

#include "portal/region.h"
#include "stress/stress.h"

/* Whether this build runs under AddressSanitizer (GCC and clang spell it
 * differently). */
#if defined(__SANITIZE_ADDRESS__)
#define PEER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PEER_ASAN 1
#endif
#endif
#ifndef PEER_ASAN
#define PEER_ASAN 0
#endif

enum peer_block {
	PEER_BLOCK_NONE    = 0,
	PEER_BLOCK_FUTEX   = 1,
	PEER_BLOCK_EVENTFD = 2,
};

struct peer {
	/* options */
	const char *uri;
	uint32_t side;
	const char *role;      /* producer | consumer | sub | hostile | honest */
	const char *kind;      /* spsc | mpsc | mpmc | msg | bcast-hold | bcast-lap | scenario */
	uint64_t count;        /* messages in the whole run */
	uint32_t id;           /* producer id / consumer index / subscriber number */
	uint32_t producers;
	uint32_t consumers;
	uint32_t burst;        /* largest burst */
	double timeout;        /* seconds for the whole role */
	enum peer_block block;
	int efd_data;          /* eventfd numbers inherited across exec */
	int efd_space;
	bool slow;             /* subscriber: pause now and then (to be lapped) */
	bool guard;            /* map the region between PROT_NONE guard pages */
	uint64_t seed;

	/* run time */
	portal_region_t *reg;
	void *map;             /* guard mapping (guard only) */
	size_t map_len;
	struct stress_ctl *ctl;
	struct stress_result *res;
	double t0;
	double deadline;
	unsigned tick;
};

/* Print a diagnostic line prefixed with the peer's identity (stderr). */
void peer_log(const struct peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Start barrier: count ourselves in and wait for every peer. 0, or an exit
 * code (STRESS_EXIT_TIMEOUT / STRESS_EXIT_ABORTED). */
int peer_barrier(struct peer *p);

/* True when the run must end now: another peer aborted or our deadline
 * passed. Cheap: looks at the clock only every 256 calls. */
bool peer_should_stop(struct peer *p);

/* Tell the others to give up (we failed). */
void peer_abort(struct peer *p);

/* Roles. Each returns the process exit code and fills p->res. */
int peer_run_stress(struct peer *p);
int peer_run_hostile(struct peer *p);
int peer_run_honest(struct peer *p);

#endif
