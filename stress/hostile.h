/* SPDX-License-Identifier: MIT */
/*
 * hostile.h - the hostile-peer scenarios of portal_peer (--role hostile and
 * --role honest, --kind SCENARIO). One file per ring family:
 *
 *   peer_hostile.c        lockstep, tallies, ASan poisoning; descriptor
 *                         rings (ring_cons, ring_prod, mpmc_cons, mpmc_prod)
 *   peer_hostile_msg.c    message ring (msg_cons, msg_prod)
 *   peer_hostile_bcast.c  broadcast (bcast_sub_hold, bcast_sub_lap, bcast_pub)
 *   peer_hostile_arena.c  arena return path (arena)
 *
 * "ring_cons" means: the honest side is the consumer, the hostile side the
 * producer, and so on.
 *
 * Each scenario has two phases.
 *
 * Lockstep. The two sides take turns through ctl->turn (even: hostile,
 * odd: honest). The hostile side writes one chosen value into a field its
 * role owns; the honest side then makes calls and checks the exact result:
 * a value that must be detected must give PORTAL_EPROTO, after which the
 * handle stays quarantined (every later call PORTAL_EPROTO); the hostile
 * side heals the field and a fresh handle must attach and work again.
 *
 * Random. Both sides run freely: the hostile side mixes honest traffic with
 * scribbles of random and adversarial values and heals now and then; the
 * honest side keeps calling the API and re-attaching after each
 * quarantine. Every result must be one the API documents for the call;
 * nothing may crash, hang or touch memory outside the objects it was given
 * (the honest side runs under ASan with the rest of the region poisoned,
 * between guard pages). It ends when the honest side has made its calls
 * (--count) or after HOSTILE_RANDOM_SECONDS; then the hostile side heals
 * everything and the honest side checks that a fresh handle works.
 *
 * Result slot extras (stress_result.extra[]) of the honest side:
 *   [0] API calls  [1] quarantines seen  [2] attaches refused
 *   [3] must-detect cases checked  [4] empty/full results
 *   [5] slowest call in microseconds  [6] scenario-specific  [7] ASan on
 */
#ifndef PORTAL_STRESS_HOSTILE_H
#define PORTAL_STRESS_HOSTILE_H

#include <stdbool.h>
#include <stdint.h>

#include "portal/region.h"
#include "stress/peer.h"

/* Random phase length cap, seconds; PORTAL_STRESS_HOSTILE_SECONDS overrides
 * it (the long run in the stress label). */
#define HOSTILE_RANDOM_SECONDS 4.0
/* Toggles per flipper burst (hostile_flip). */
#define HOSTILE_FLIPS 512
/* A single API call slower than this counts as a hang. Generous: the
 * honest side may be preempted on a small machine, and runs under ASan. */
#define HOSTILE_SLOW_CALL 2.0

/* ctl->scratch[1]: the hostile side has healed everything and stopped. */
#define HOSTILE_DONE_SLOT 1

struct lockstep {
	uint64_t my; /* the turn we wait for next */
};

/* Wait for our turn (0, or an exit code), and hand the turn over. */
int turn_begin(struct peer *p, struct lockstep *ls);
void turn_end(struct peer *p, struct lockstep *ls);

#define BEGIN_TURN()                                                                 \
	do {                                                                         \
		if ((code = turn_begin(p, &ls)) != 0)                                \
			goto out;                                                    \
	} while (0)
#define END_TURN() turn_end(p, &ls)

/* What the honest side saw. */
struct honest {
	struct peer *p;
	uint64_t calls;
	uint64_t quarantines;
	uint64_t attach_refused;
	uint64_t must;           /* must-detect cases checked */
	uint64_t empty;          /* 0 / -EAGAIN results */
	uint64_t overflow;       /* -EOVERFLOW (broadcast LAP) */
	uint64_t garbage;        /* contents that failed the checksum (allowed) */
	double slowest;
	double call_t0;
	double random_end;
	uint64_t random_quarantines;
};

void honest_init(struct honest *h, struct peer *p);
/* Time one call: h_start before it, h_stop after. */
static inline void h_start(struct honest *h)
{
	h->call_t0 = stress_now();
}
void h_stop(struct honest *h);
void h_fail(struct honest *h, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Copy the tallies into the result slot and print them. */
void honest_report(struct honest *h, const char *extra_name, uint64_t extra);
/* The random phase's time cap in seconds. */
double hostile_random_seconds(void);
/* Random phase: keep going? (count and time) */
bool honest_more(struct honest *h);
/* End of the random phase: tell the hostile side, wait until it healed. */
int honest_finish(struct honest *h);

#define CHECK(h, cond, ...)                                                          \
	do {                                                                         \
		if (!(cond))                                                         \
			h_fail((h), __LINE__, __VA_ARGS__);                          \
	} while (0)

/* A case the honest side must detect: RC must be PORTAL_EPROTO. */
#define MUST_PROTO(h, rc, what)                                                      \
	do {                                                                         \
		(h)->must++;                                                         \
		CHECK((h), (rc) == PORTAL_EPROTO, "%s: expected PORTAL_EPROTO, got %d (%s)", \
		      (what), (int)(rc), portal_strerror((int)(rc)));                \
	} while (0)

/*
 * ASan: poison the whole region except the objects the honest side was
 * given (and the control block), so any access elsewhere in the region is
 * reported. Call after the last directory lookup; unguard before detach.
 */
void honest_guard(struct honest *h, const struct portal_object_info *keep, unsigned n);
void honest_unguard(struct honest *h);

/* Hostile side: stop requested by the honest side? Then heal and call
 * hostile_done. */
bool hostile_stop(struct peer *p);
void hostile_done(struct peer *p);
/*
 * The flipper (TOCTOU): toggle WORD between GOOD and BAD HOSTILE_FLIPS times
 * with no pause, ending on GOOD, while the honest side parses it. A library
 * that fetched the word twice (check one value, use another) would act on
 * an unchecked value, and ASan on the honest side would see it. Returns the
 * stores made (counted as scribbles, and as flips in result extra[1]).
 */
uint64_t hostile_flip(_Atomic uint64_t *word, uint64_t good, uint64_t bad);
/* Pick one of N with a PRNG. */
static inline unsigned pick(uint64_t *rng, unsigned n)
{
	return (unsigned)(stress_rand(rng) % n);
}

int hostile_msg(struct peer *p);
int honest_msg(struct peer *p);
int hostile_bcast(struct peer *p);
int honest_bcast(struct peer *p);
int hostile_arena(struct peer *p);
int honest_arena(struct peer *p);

#endif
