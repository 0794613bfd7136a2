/* SPDX-License-Identifier: MIT */
/*
 * portal/ring.h - lock-free rings in shared memory.
 *
 *   descriptor ring  fixed-size slots (8..256 bytes, power of two), SPSC, MPSC
 *                    or MPMC, burst enqueue/dequeue, cached peer indices
 *   message ring     variable-length records, SPSC, zero-copy
 *                    reserve/commit and peek/release
 *   broadcast ring   one producer, several subscribers with their own cursors;
 *                    a slow subscriber holds the producer back (HOLD) or is
 *                    lapped and told so (LAP)
 *
 * Every ring lives in caller-provided memory (*_memsize, *_init, *_attach)
 * or in a region directory (*_create, *_open). Each process attaches its own
 * handle, in private memory, which holds the authoritative copy of its own
 * index, a cached copy of the peer's, and the geometry read once at attach.
 *
 * Hostile peers. A peer-written index is read once, checked (it may not go
 * backwards nor claim more than the capacity), and a record header is copied
 * before it is checked. A violation returns PORTAL_EPROTO (-EPROTO) and
 * quarantines the handle: every later call on it returns -EPROTO. Nothing
 * out of bounds is ever read or written, and no call waits on a peer across
 * the trust boundary. (Producers of an MPSC/MPMC ring, and consumers of an
 * MPMC ring, publish in claim order. On a ring without claim records one
 * waits - spinning, then yielding, then sleeping, without a bound - for a
 * claimant before it that was preempted or died: they are one trust domain
 * by design. On a recoverable ring nobody waits for another claim: see
 * below.)
 *
 * Crash recovery (docs/recovery.md). A ring made recoverable
 * (portal_ring_init_recoverable, portal_ring_create_recoverable) gives
 * each multi-producer / multi-consumer handle a claim record in shared
 * memory. When the caller's liveness layer says the
 * holder of a record died, portal_ring_recover_producer turns the slots the
 * dead producer claimed but never published into poison (a pattern no
 * honest producer sends; portal_ring_is_poison) and publishes them, so the
 * ring flows again; portal_ring_recover_consumer hands the elements a dead
 * consumer claimed but never returned to the recovering caller, so each
 * element is returned by at most one dequeue or recover call (exactly one
 * unless a consumer dies between its done mark and its return). A
 * restarted single producer or consumer resumes from the shared tails.
 *
 * Recoverable rings never wait for another handle's claim. A multi-side
 * handle marks its claim done in its record once its copy is complete and
 * then publishes every done claim it finds at its side's tail, its own and
 * other handles' (helping); if an earlier claim is not done it returns at
 * once (its elements are committed, or delivered, by the done mark) and
 * whoever finishes the earlier claim, or recovers it, publishes its claim
 * too. Its next call must wait until that has happened: it helps and spins
 * briefly (about 128 pauses and 4 yields, no sleep), then returns -EAGAIN:
 * an earlier claim of another handle is not finished yet (a slow handle:
 * call again; a dead one: recover it).
 *
 * Concurrency (per handle; one handle per thread):
 *
 *   call                        SPSC        MPSC            MPMC
 *   enqueue_burst_sp            1 producer  -               -
 *   enqueue_burst_mp            -           any producers   any producers
 *   dequeue_burst_sc            1 consumer  1 consumer      -
 *   dequeue_burst_mc            -           -               any consumers
 *
 * The message ring and the broadcast producer are single-producer; each
 * broadcast subscriber handle is used by one thread.
 *
 * Memory order: every successful enqueue/commit/publish is a release of the
 * bytes written into the slots, and the matching dequeue/peek/read is an
 * acquire: a consumer sees the whole message its producer wrote.
 */
#ifndef PORTAL_RING_H
#define PORTAL_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "portal/abi.h"
#include "portal/common.h"
#include "portal/region.h"

#ifdef __cplusplus
extern "C" {
#endif

enum portal_ring_mode {
	PORTAL_RING_SPSC = 1,
	PORTAL_RING_MPSC = 2,
	PORTAL_RING_MPMC = 3,
};

enum portal_ring_role {
	PORTAL_ROLE_PRODUCER = 1,
	PORTAL_ROLE_CONSUMER = 2,
};

/* Counters kept in the handle (private memory). */
struct portal_ring_stats {
	uint64_t enqueued;     /* elements, messages or records this handle moved in */
	uint64_t dequeued;     /* ... and out */
	uint64_t full;         /* enqueue calls that found no room */
	uint64_t empty;        /* dequeue calls that found nothing */
	uint64_t proto_errors; /* protocol violations seen (then quarantined) */
	uint64_t lapped;       /* broadcast LAP: messages lost to overwrite */
	uint64_t recovered;    /* descriptor ring: slots this handle turned into
	                        * poison (producer recovery) or re-delivered
	                        * (consumer recovery) for a dead claimant */
};

/* ------------------------------------------------------------------ */
/* Descriptor rings                                                    */
/* ------------------------------------------------------------------ */

typedef struct portal_ring portal_ring_t;

struct portal_ring_params {
	uint32_t mode;       /* enum portal_ring_mode */
	uint32_t slot_size;  /* 8..256, power of two */
	uint32_t capacity;   /* slots, power of two, 2..2^30 */
	uint32_t flags;      /* reserved, 0 */
};

/* Most claim records per side (portal_ring_recovery_params). */
#define PORTAL_RING_MAX_CLAIMS 256u
/* portal_ring_attach_claim: take the first free claim record. */
#define PORTAL_RING_CLAIM_ANY (-1)
/* portal_ring_recovery_params.flags */
#define PORTAL_RING_F_POISON 0x1u /* use .poison instead of all bytes 0xFF */
#define PORTAL_RING_RF_MASK  0x1u

/*
 * Crash recovery of a multi-producer / multi-consumer ring: claim records
 * in shared memory, 0..PORTAL_RING_MAX_CLAIMS per side. max_producers for
 * MPSC and MPMC only; max_consumers for MPMC only. A ring made without
 * them (plain portal_ring_init, or both 0) has the layout and fast path of
 * a ring without recovery, and a claimant that dies stalls its side.
 */
struct portal_ring_recovery_params {
	uint16_t max_producers;
	uint16_t max_consumers;
	uint32_t flags;      /* PORTAL_RING_F_* */
	/* With PORTAL_RING_F_POISON: the 8-byte pattern, repeated, that fills
	 * a recovered slot; choose a value no honest producer sends. Without
	 * the flag every poison byte is 0xFF. */
	uint64_t poison;
};

/* Bytes needed for a ring with these parameters; 0 if they are invalid. */
PORTAL_API size_t portal_ring_memsize(const struct portal_ring_params *p);

/* Lay out an empty ring in MEM (LEN bytes, 64-byte aligned).
 * Returns 0, -EINVAL (bad params, LEN too small, misaligned). */
PORTAL_API int portal_ring_init(void *mem, size_t len, const struct portal_ring_params *p);

/* The same for a ring with claim records for crash recovery (RP NULL or
 * with no records: exactly memsize / init / create). -EINVAL (0 from
 * memsize) also for records on a side that is single, more than
 * PORTAL_RING_MAX_CLAIMS, or unknown flag bits. */
PORTAL_API size_t portal_ring_memsize_recoverable(const struct portal_ring_params *p,
						  const struct portal_ring_recovery_params *rp);
PORTAL_API int portal_ring_init_recoverable(void *mem, size_t len,
					    const struct portal_ring_params *p,
					    const struct portal_ring_recovery_params *rp);

/*
 * Attach a handle to the ring in MEM for ROLE. Geometry is validated and
 * copied into the handle. Returns 0, -EINVAL, -ENOMEM, or PORTAL_EPROTO
 * (header corrupt: bad magic, version, mode, sizes, or LEN too small).
 */
PORTAL_API int portal_ring_attach(void *mem, size_t len, enum portal_ring_role role,
				  portal_ring_t **out);
PORTAL_API void portal_ring_detach(portal_ring_t *r); /* NULL is fine */

/*
 * Attach like portal_ring_attach, and take claim record SLOT (or the first
 * free one with PORTAL_RING_CLAIM_ANY) of ROLE's side, tagged with OWNER:
 * any value the caller's liveness layer will later name the dead by (a pid,
 * a participant side and epoch). A multi-producer (MPSC, MPMC) producer or
 * multi-consumer (MPMC) consumer handle of a ring with claim records must
 * hold one; portal_ring_attach takes the first free one with OWNER =
 * getpid(). Handles of a side without records (single side, or 0 records)
 * take none and ignore SLOT and OWNER. The record is freed by detach, or by
 * recovery once its holder is dead; if its last claim is done but not yet
 * published (an earlier claim is open), detach and recovery retire it
 * instead (PORTAL_CLAIM_RETIRED), and an attach or a recovery that finds
 * the claim published takes it back. Detach never waits (a bounded spin).
 * Returns 0, -EINVAL (bad arguments, SLOT out of range), -EBUSY (record
 * SLOT held or retired with its claim unpublished, or none free), -ENOMEM,
 * PORTAL_EPROTO (as portal_ring_attach, or a corrupt record met while
 * helping a retired claim along).
 * Memory order: the record is taken with a CAS; acquire, pairs with the
 * release by which detach or recovery frees or retires it.
 */
PORTAL_API int portal_ring_attach_claim(void *mem, size_t len, enum portal_ring_role role,
					int slot, uint64_t owner, portal_ring_t **out);
/* The claim record this handle holds, or -1 (none). */
PORTAL_API int portal_ring_claim_slot(const portal_ring_t *r);

/* Place a ring named NAME in a region (creator only) / open it by name.
 * Returns as portal_region_alloc / portal_region_lookup and attach. */
PORTAL_API int portal_ring_create(portal_region_t *reg, const char *name,
				  const struct portal_ring_params *p, uint32_t owner_side);
PORTAL_API int portal_ring_open(portal_region_t *reg, const char *name,
				enum portal_ring_role role, portal_ring_t **out);
PORTAL_API int portal_ring_create_recoverable(portal_region_t *reg, const char *name,
					      const struct portal_ring_params *p,
					      const struct portal_ring_recovery_params *rp,
					      uint32_t owner_side);

/*
 * Enqueue up to N elements from OBJS (N * slot_size bytes, contiguous).
 * Returns the number enqueued (0 when full), -EINVAL (wrong role or mode
 * for this call), or PORTAL_EPROTO. One index publish per call.
 * Recoverable rings, _mp (and _mc below) also: -EAGAIN, an earlier claim of
 * another handle is not finished yet (nothing was enqueued; call again, or
 * recover the claim if its holder died), and -EOWNERDEAD, a recovery took
 * this handle's claim or record believing it dead (the handle is unusable
 * from then on). A count returned there is committed (dequeued) even if it
 * is not yet published: it becomes visible to the other side when every
 * earlier claim is done, without this handle's help.
 */
PORTAL_API int portal_ring_enqueue_burst_sp(portal_ring_t *r, const void *objs, unsigned n);
PORTAL_API int portal_ring_enqueue_burst_mp(portal_ring_t *r, const void *objs, unsigned n);
/* Dequeue up to N elements into OBJS. Returns the number (0 when empty),
 * -EINVAL, or PORTAL_EPROTO; recoverable _mc also -EAGAIN, -EOWNERDEAD. */
PORTAL_API int portal_ring_dequeue_burst_sc(portal_ring_t *r, void *objs, unsigned n);
PORTAL_API int portal_ring_dequeue_burst_mc(portal_ring_t *r, void *objs, unsigned n);

/* The same, choosing _sp/_mp and _sc/_mc from the ring's mode. */
PORTAL_API int portal_ring_enqueue_burst(portal_ring_t *r, const void *objs, unsigned n);
PORTAL_API int portal_ring_dequeue_burst(portal_ring_t *r, void *objs, unsigned n);
/* One element: 0, -EAGAIN (full / empty; on a recoverable ring also: an
 * earlier claim is not finished yet), -EINVAL, -EOWNERDEAD or PORTAL_EPROTO. */
PORTAL_API int portal_ring_enqueue(portal_ring_t *r, const void *obj);
PORTAL_API int portal_ring_dequeue(portal_ring_t *r, void *obj);

/* Elements a consumer could take now (reads the producer index): >= 0, or
 * PORTAL_EPROTO. Does not consume. Usable as a doorbell readiness check. */
PORTAL_API int portal_ring_count(portal_ring_t *r);
PORTAL_API uint32_t portal_ring_slot_size(const portal_ring_t *r);
PORTAL_API uint32_t portal_ring_capacity(const portal_ring_t *r);
PORTAL_API bool portal_ring_quarantined(const portal_ring_t *r);
PORTAL_API void portal_ring_stats(const portal_ring_t *r, struct portal_ring_stats *st);

/*
 * This handle's position: elements enqueued (producer) or dequeued
 * (consumer) through the ring since init, counting every side's elements;
 * a restarted single producer or consumer resumes from it. Single-side
 * handles give their own position; a multi-side handle gives its side's
 * published tail. A sender that tags what it sends with the position it
 * was enqueued at can later tell what a dead receiver had taken
 * (portal_arena_mark_sent, portal_ring_peer_position).
 */
PORTAL_API uint64_t portal_ring_position(const portal_ring_t *r);
/*
 * The other side's published position: cons_tail for a producer handle
 * (elements the consumers have finished with), prod_tail for a consumer
 * handle. Checked as every read of a peer index is. Returns 0,
 * -EINVAL (NULL), PORTAL_EPROTO.
 * Memory order: acquire, pairs with the peer's publish.
 */
PORTAL_API int portal_ring_peer_position(portal_ring_t *r, uint64_t *pos);

/*
 * Crash recovery of a multi-producer claim. Run by any handle of the ring
 * (a surviving producer or the consumer) once the caller knows that the
 * holder of producer claim record SLOT is dead and will not run again
 * (its process exited; portal_ring_find_claims maps an owner to slots).
 * If that producer claimed slots and its copy was not done, they are
 * filled with the ring's poison pattern and the claim is marked done, and
 * published with every done claim after it as soon as the claims before
 * it are done (at once if they are; else by whoever finishes or recovers
 * the earlier one), so the consumer sees poison (portal_ring_is_poison)
 * where the lost elements would have been. A claim the dead producer had
 * marked done is committed: its elements are delivered as usual, and
 * recovery only helps to publish it. Nothing published is touched. The
 * record is freed for a new producer, or retired until its claim is
 * published (then an attach, or a later recovery call, frees it).
 * Returns the number of slots turned into poison (0: the dead producer
 * held no claim that was not done, or the record was free or retired), or
 *   -EAGAIN  another record shows a claim at the same position that is
 *            not done (a live producer about to move on; call again). The
 *            record stays held, nothing is changed.
 *   -EBUSY   another recovery of this record is running.
 *   -EINVAL  SLOT out of range, or the ring has no producer records.
 *   PORTAL_EPROTO  the shared indices or a record are out of range (handle
 *            quarantined).
 * Bounded: waits at most about a millisecond, never for ever; it does not
 * wait for earlier claims at all.
 * Exclusion: none; concurrent recoveries of one record are refused with
 * -EBUSY. If the caller is wrong and the holder is alive, its next enqueue
 * fails with -EOWNERDEAD (its elements may have been poisoned).
 * Memory order: the poison is written, then the done mark (seq_cst
 * exchange), then prod_tail by CAS with release (pairs with the consumer's
 * acquire).
 */
PORTAL_API int portal_ring_recover_producer(portal_ring_t *r, unsigned slot);

/*
 * Crash recovery of a multi-consumer (MPMC) claim: as above for consumer
 * claim record SLOT. The elements of a claim the dead consumer had not
 * marked done (its dequeue had not finished its copy) are copied into
 * OBJS (room for MAX elements) and the claim is marked done: they are
 * delivered by this call, and released (cons_tail) in claim order as soon
 * as the claims before are done. Each element is returned by at most one
 * dequeue or recover call; a claim the dead consumer had marked done was
 * delivered to it (lost if it died before its dequeue returned) and is
 * only helped along. They may include poison slots. Returns the number of
 * elements copied (0: nothing held), -EMSGSIZE (the claim holds more than
 * MAX: nothing changed; capacity elements always suffice), -EAGAIN,
 * -EBUSY, -EINVAL, PORTAL_EPROTO as above.
 * Memory order: the copy, then the done mark, then cons_tail by CAS with
 * release (pairs with the producers' acquire before reuse).
 */
PORTAL_API int portal_ring_recover_consumer(portal_ring_t *r, unsigned slot, void *objs,
					    unsigned max);

/*
 * Claim records of ROLE's side held (or retired, or being recovered) with
 * tag OWNER (a holder that died is found by the tag it gave). Writes up to
 * MAX slot numbers into SLOTS and returns how many records match (may
 * exceed MAX), or -EINVAL.
 * Memory order: relaxed snapshot; recovery re-checks each record.
 */
PORTAL_API int portal_ring_find_claims(portal_ring_t *r, enum portal_ring_role role,
				       uint64_t owner, unsigned *slots, unsigned max);

/* True if the slot_size bytes at SLOT (a copy the consumer dequeued) are the
 * ring's poison pattern: a slot recovered from a dead producer. Pure. */
PORTAL_API bool portal_ring_is_poison(const portal_ring_t *r, const void *slot);

/* ------------------------------------------------------------------ */
/* Message rings (SPSC, variable length, zero-copy)                    */
/* ------------------------------------------------------------------ */

typedef struct portal_msgring portal_msgring_t;

struct portal_msgring_params {
	uint32_t capacity;   /* data bytes, power of two, 256..2^30 */
	uint32_t max_msg;    /* largest payload; 0 = capacity / 4 */
	uint32_t flags;      /* reserved, 0 */
};

PORTAL_API size_t portal_msgring_memsize(const struct portal_msgring_params *p);
PORTAL_API int portal_msgring_init(void *mem, size_t len, const struct portal_msgring_params *p);
PORTAL_API int portal_msgring_attach(void *mem, size_t len, enum portal_ring_role role,
				     portal_msgring_t **out);
PORTAL_API void portal_msgring_detach(portal_msgring_t *m);
PORTAL_API int portal_msgring_create(portal_region_t *reg, const char *name,
				     const struct portal_msgring_params *p, uint32_t owner_side);
PORTAL_API int portal_msgring_open(portal_region_t *reg, const char *name,
				   enum portal_ring_role role, portal_msgring_t **out);

/*
 * Producer: reserve room for a LEN-byte message and get its address, to
 * write in place. Returns 0, -EAGAIN (no room now), -EMSGSIZE (LEN > max_msg),
 * -EINVAL (wrong role, or a reservation already open), PORTAL_EPROTO.
 */
PORTAL_API int portal_msgring_reserve(portal_msgring_t *m, size_t len, void **buf);
/* Publish the open reservation with its final length LEN (<= reserved).
 * Returns 0, -EINVAL or PORTAL_EPROTO. Release: the payload is visible
 * before the header. */
PORTAL_API int portal_msgring_commit(portal_msgring_t *m, size_t len);

/*
 * Consumer: look at the next message in place. Returns 0 with *buf and *len
 * set, -EAGAIN (none), -EINVAL (wrong role), PORTAL_EPROTO (bad header:
 * wrong sequence, length beyond max_msg or the ring). The length is checked;
 * the payload stays in shared memory and a hostile producer may still change
 * it: copy it first (portal_msgring_recv does) if the producer is untrusted.
 */
PORTAL_API int portal_msgring_peek(portal_msgring_t *m, const void **buf, size_t *len);
/* Give back the message returned by the last peek. Returns 0, -EINVAL or
 * PORTAL_EPROTO. */
PORTAL_API int portal_msgring_release(portal_msgring_t *m);

/* Copying conveniences over reserve/commit and peek/release.
 * send: 0, -EAGAIN, -EMSGSIZE, -EINVAL, PORTAL_EPROTO.
 * recv: the message length, -EAGAIN, -EMSGSIZE (CAP too small: the message
 *       stays unconsumed and is not left peeked, so a later recv with a
 *       bigger buffer, or a peek, gets it), -EINVAL, PORTAL_EPROTO. */
PORTAL_API int portal_msgring_send(portal_msgring_t *m, const void *buf, size_t len);
PORTAL_API ssize_t portal_msgring_recv(portal_msgring_t *m, void *buf, size_t cap);

/*
 * Consumer: the position of the message the last peek returned (still
 * peeked): the ring byte position at which it starts, strictly increasing
 * from one message to the next over the ring's life. Returns 0, -EINVAL
 * (not a consumer, or no message peeked).
 * Restart. A producer killed between reserve and commit published nothing;
 * its successor resumes after the last committed record. A consumer killed
 * between peek and release resumes at that message and sees it again: the
 * message ring is at-least-once for a consumer that dies between peek and
 * release. A consumer that needs exactly-once records the position of each
 * message it has finished with, and after a restart releases without
 * processing every message whose position is not above the one recorded.
 */
PORTAL_API int portal_msgring_position(const portal_msgring_t *m, uint64_t *pos);

/* Consumer: 1 if a message (or a protocol error) is waiting, 0 if not. */
PORTAL_API int portal_msgring_ready(portal_msgring_t *m);
PORTAL_API uint32_t portal_msgring_max_msg(const portal_msgring_t *m);
PORTAL_API bool portal_msgring_quarantined(const portal_msgring_t *m);
PORTAL_API void portal_msgring_stats(const portal_msgring_t *m, struct portal_ring_stats *st);

/* ------------------------------------------------------------------ */
/* Broadcast rings                                                     */
/* ------------------------------------------------------------------ */

typedef struct portal_bcast portal_bcast_t;

enum portal_bcast_mode {
	PORTAL_BCAST_HOLD = 1, /* publish waits (-EAGAIN) for the slowest active subscriber */
	PORTAL_BCAST_LAP  = 2, /* publish never waits; a lapped subscriber gets -EOVERFLOW */
};

struct portal_bcast_params {
	uint32_t mode;       /* enum portal_bcast_mode */
	uint32_t slot_size;  /* bytes per message, 8..256, multiple of 8 */
	uint32_t capacity;   /* slots, power of two */
	uint32_t max_subs;   /* subscriber slots, 1..64 */
};

PORTAL_API size_t portal_bcast_memsize(const struct portal_bcast_params *p);
PORTAL_API int portal_bcast_init(void *mem, size_t len, const struct portal_bcast_params *p);
/* Attach as the producer (SUB < 0) or as subscriber number SUB. A new
 * subscriber starts at the producer's current position. Returns 0, -EINVAL,
 * -EBUSY (subscriber slot active or joining), -ENOMEM, PORTAL_EPROTO.
 * The subscriber's line is tagged with OWNER (portal_bcast_attach: getpid()):
 * any value the caller's liveness layer will later name the dead by (a pid,
 * a participant side and epoch); the producer ignores OWNER.
 * Memory order: the line is taken by a CAS (acquire); subscribed by a
 * seq_cst store that pairs with the producer's scan. */
PORTAL_API int portal_bcast_attach(void *mem, size_t len, int sub, portal_bcast_t **out);
PORTAL_API int portal_bcast_attach_owner(void *mem, size_t len, int sub, uint64_t owner,
					 portal_bcast_t **out);
/* Subscriber: frees its line (unless an eviction already did). */
PORTAL_API void portal_bcast_detach(portal_bcast_t *b);
PORTAL_API int portal_bcast_create(portal_region_t *reg, const char *name,
				   const struct portal_bcast_params *p, uint32_t owner_side);
PORTAL_API int portal_bcast_open(portal_region_t *reg, const char *name, int sub,
				 portal_bcast_t **out);

/*
 * Producer: publish one message of slot_size bytes.
 * Returns 0, -EAGAIN (HOLD: an active subscriber is a full ring behind),
 * -EINVAL. In HOLD mode a subscriber whose cursor is out of range is
 * counted as a protocol error and not held for while it stays out of range.
 */
PORTAL_API int portal_bcast_publish(portal_bcast_t *b, const void *msg);
/*
 * Subscriber: copy the next message into MSG (slot_size bytes).
 * Returns 0, -EAGAIN (nothing new), -EOVERFLOW (LAP: lapped; *lost, if not
 * NULL, says how many messages were skipped and the cursor has moved to the
 * oldest one still held), -EINVAL, PORTAL_EPROTO (producer index corrupt),
 * -EOWNERDEAD (an eviction freed this handle's line, believing its holder
 * dead: the handle is unusable from then on; detach it and attach again).
 */
PORTAL_API int portal_bcast_read(portal_bcast_t *b, void *msg, uint64_t *lost);
/* Subscriber: 1 if a message, a protocol error or an eviction is waiting
 * (the next read says which), 0 if not. */
PORTAL_API int portal_bcast_ready(portal_bcast_t *b);

/* portal_bcast_evict: any tag. */
#define PORTAL_BCAST_OWNER_ANY UINT64_MAX

/*
 * Crash recovery of a subscriber (docs/recovery.md). Run by any handle of
 * the ring, normally the producer, once the caller knows that the holder
 * of subscriber line SUB, tagged OWNER at attach, is dead and will not run
 * again. Frees the line: a HOLD producer no longer holds for it (its next
 * publish that finds the ring full scans the lines again), and a new
 * subscriber may take it. OWNER = PORTAL_BCAST_OWNER_ANY frees the line
 * whatever its tag (a caller that knows who holds each line by number; and
 * the only way to free a line whose joiner died between claiming it and
 * storing its tag, a window of two stores). Returns
 *   1        the line was subscribed or joining with tag OWNER; it is free.
 *   0        nothing to do: the line is free, or held under another tag.
 *   -EAGAIN  the line changed while we looked (joined, left, or evicted by
 *            someone else): look again.
 *   -EINVAL  B NULL, SUB out of range, or SUB is B's own line.
 * The eviction names one subscription (the line's generation), so it never
 * frees a successor that joined the line since. If the caller is wrong and
 * the holder is alive, its next read returns -EOWNERDEAD; a read already
 * past that check may still store its cursor into the line once.
 * Wake-up: a producer sleeping on a doorbell for room is not woken by an
 * eviction from another handle; ring it.
 * Memory order: a seq_cst CAS of the line's state word (release, pairs
 * with the producer's acquire scan).
 */
PORTAL_API int portal_bcast_evict(portal_bcast_t *b, unsigned sub, uint64_t owner);

/*
 * Subscriber lines held (subscribed or joining) with tag OWNER. Writes up
 * to MAX line numbers into SUBS and returns how many lines match (may
 * exceed MAX), or -EINVAL. Memory order: relaxed snapshot; evict
 * re-checks each line.
 */
PORTAL_API int portal_bcast_find_subs(portal_bcast_t *b, uint64_t owner, unsigned *subs,
				      unsigned max);
PORTAL_API bool portal_bcast_quarantined(const portal_bcast_t *b);
PORTAL_API void portal_bcast_stats(const portal_bcast_t *b, struct portal_ring_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* PORTAL_RING_H */
