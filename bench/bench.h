/* SPDX-License-Identifier: MIT */
/*
 * The benchmark's systems: Portal and every peer it is compared with plug in
 * through one small interface, so each scenario is written once and runs the
 * same way for all of them.
 *
 * A system connects two sides. Side 0 lives in the driving process
 * (portal-bench), side 1 in the peer: a child process exec'd from the same
 * binary, or a thread when the system works only inside one process
 * (BSYS_INPROC). Each side's connection is bidirectional:
 *
 *   side 0 sends "down" (reserve/commit) and receives "up" (peek/release);
 *   side 1 receives "down" and sends "up".
 *
 * Round trips use both directions; streaming, open-loop load and multiple
 * producers use "down" only. reserve, peek and the bursts try once and
 * return -EAGAIN (or 0 slots) when they cannot proceed (full or empty); the
 * scenario spins. commit never returns -EAGAIN: a system that learns only
 * at commit that its buffer is full (a socket) waits there, bounded. In blocking mode
 * (flag BSYS_F_BLOCK) peek sleeps until a message arrives, as the peer's own
 * blocking API does, and commit wakes a sleeping receiver.
 *
 * Zero-copy systems hand out their own buffers from reserve and peek; copying
 * systems hand out a per-connection buffer and copy inside commit or peek,
 * which is the cost a user of that system pays.
 */
#ifndef PORTAL_BENCH_H
#define PORTAL_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_MAX_PAYLOAD 4096   /* largest message in any message scenario */
#define BENCH_ARG_MAX     256

enum bsys_caps {
	BSYS_RTT    = 1u << 0, /* reserve/commit/peek/release both ways */
	BSYS_BLOCK  = 1u << 1, /* peek can sleep (BSYS_F_BLOCK) */
	BSYS_STREAM = 1u << 2, /* one-way streaming "down" */
	BSYS_BURST  = 1u << 3, /* send_burst/recv_burst of fixed-size slots */
	BSYS_MP     = 1u << 4, /* several producer processes may open side 0 (BSYS_F_MP) */
	BSYS_INPROC = 1u << 5, /* both sides in one process (side 1 is a thread) */
};

enum bsys_flags {
	BSYS_F_BLOCK = 1u << 0, /* peek sleeps; commit wakes the receiver */
	BSYS_F_MP    = 1u << 1, /* open: this side 0 is one of several producers */
	BSYS_F_MC    = 1u << 2, /* open: use the multi-consumer dequeue on side 1 */
};

/* What setup gives to every later open, in this process and in the peer. */
struct bsys_env {
	const char *region_uri;  /* the benchmark's own region, for systems that want it */
	int slot;                /* fixed slot size for bursts (64 or 1024); a system
	                          * with BSYS_BURST gets one env (one setup) per size */
	int producers;           /* MP scenario: how many producers will open side 0 */
	int producer_id;         /* MP scenario: 0..producers-1 in each producer */
	char arg[BENCH_ARG_MAX]; /* setup writes: paths, fd numbers; passed to the peer */
	void *priv;              /* setup's private state, in the process that ran it */
};

struct bsys {
	const char *name;        /* the JSON "system", e.g. "uds" */
	const char *what;        /* one line for the table and docs */
	unsigned caps;           /* enum bsys_caps */
	uint32_t max_payload;    /* largest message carried */

	/*
	 * In the driving process, before any peer starts. Returns 0, or a
	 * negative errno with a reason written to why: the system is then
	 * reported as skipped with that reason. May be NULL.
	 */
	int (*setup)(struct bsys_env *env, char *why, size_t whycap);

	/* Open one side; flags are enum bsys_flags. Both sides' opens may
	 * run concurrently, so connect/accept pairs must not deadlock. */
	int (*open)(struct bsys_env *env, int side, unsigned flags, void **conn);

	int (*reserve)(void *conn, uint32_t len, void **buf);      /* -EAGAIN: full */
	int (*commit)(void *conn, uint32_t len, unsigned flags);
	int (*peek)(void *conn, const void **buf, uint32_t *len, unsigned flags); /* -EAGAIN: empty */
	void (*release)(void *conn);

	/* BSYS_BURST: up to n slots of env->slot bytes; returns how many
	 * went (0 when full/empty) or a negative errno. */
	int (*send_burst)(void *conn, const void *slots, unsigned n);
	int (*recv_burst)(void *conn, void *slots, unsigned n);

	void (*close)(void *conn);
	/* In the driving process, after every peer is gone. May be NULL. */
	void (*teardown)(struct bsys_env *env);
};

/* Every system the binary knows, in table order; NULL-terminated. */
extern const struct bsys *const bench_systems[];

/* Systems, one per file (sys_*.c). */
extern const struct bsys bsys_portal_msgring, bsys_portal_spsc, bsys_portal_mpsc, bsys_portal_mpmc;
extern const struct bsys bsys_futex, bsys_eventfd, bsys_uds, bsys_pipe;
extern const struct bsys bsys_nng, bsys_zmq, bsys_iceoryx;
extern const struct bsys bsys_rte_ring, bsys_rte_ring_mpmc, bsys_ck_ring, bsys_urcu_wfcq;

/*
 * A system whose library was not found at configure time stays in the
 * tables: its setup reports it skipped, naming the Debian package.
 */
int bench_not_built(char *why, size_t whycap, const char *package);
#define BSYS_NOT_BUILT(ident, sysname, desc, capbits, package)                        \
	static int ident##_not_built(struct bsys_env *env, char *why, size_t whycap)  \
	{                                                                             \
		(void)env;                                                            \
		return bench_not_built(why, whycap, package);                         \
	}                                                                             \
	const struct bsys ident = { .name = sysname, .what = desc, .caps = capbits,   \
				    .max_payload = BENCH_MAX_PAYLOAD,                  \
				    .setup = ident##_not_built }

/* ---- payloads: every message carries its sequence number and a pattern ---- */

/* Sequence first (and inverted last when len >= 16), a fixed pattern between. */
void bench_fill(void *dst, uint32_t len, uint64_t seq);
/* 0 if src is exactly what bench_fill(len, seq) wrote, else -1. */
int bench_check(const void *src, uint32_t len, uint64_t seq);

#endif
