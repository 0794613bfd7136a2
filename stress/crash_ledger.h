/* SPDX-License-Identifier: MIT */
/*
 * crash_ledger.h - what the crash-injection driver (portal_crash, crash_driver.c)
 * and its peer program (portal_crash_peer, crash_peer.c) share: the kinds,
 * the named kill points, and the ledger, a raw object in the test region in
 * which the producers record what they committed and the consumers what
 * they delivered (docs/crash-injection.md).
 *
 * Who writes what. Each producer and consumer line, and each consumer's
 * detection log, is written only by the incarnations of that role (one at
 * a time: the driver starts the next one only after it has reaped the
 * last). The driver line and the recovery
 * requests' `what` words are written by the driver; a request's `state` by
 * the driver (pending, reset) and by the consumer that serves it (CAS).
 * The per-sequence arrays are written by the consumers (CAS) and by the
 * producer of that sequence (the in-doubt flags). The driver reads the rest
 * after a death (waitpid orders the dead process's stores before its loads)
 * or as progress hints while everyone runs.
 *
 * Orders (the labels in crash_peer.c and crash_driver.c):
 *   L1  producer: wal_pos, then wal_seq (release) / its successor's acquire
 *   L2  producer: commit (and doubt flag), then committed (release) /
 *       successor and driver acquire
 *   L3  peer: attached and resumed, then running (release) / driver acquire
 *   L4  driver: allow (release) / producer acquire
 *   L5  driver: stop, prod_done (release) / peers acquire
 *   L6  request: driver's what, then PENDING (release) / server's CAS
 *       (acquire); server's recovery, then DONE (release) / driver acquire
 *   L7  consumer: a detection entry, then its log's count (release) /
 *       driver acquire
 *
 * Delivery record. deliv[p][s] != 0 means message s of producer p was
 * delivered: a consumer took it, checked its stamp and checksum, and stored
 * this word with a compare-and-swap from 0. The value names the delivery:
 * on the message ring it is the message's ring position + 1, so that a
 * restarted consumer that meets the same message at the same position knows
 * it already delivered it (killed between record and release: skip it, do
 * not deliver it twice); on descriptor rings it is a token unique to the
 * consumer incarnation and take. A CAS that finds another value is a
 * duplicate delivery.
 */
#ifndef PORTAL_STRESS_CRASH_LEDGER_H
#define PORTAL_STRESS_CRASH_LEDGER_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define CRASH_LEDGER_NAME "crash.ledger"
#define CRASH_QUEUE_NAME  "crash.q"
#define CRASH_DB_NAME     "crash.db"      /* blocking kind: consumer waits, producer rings */
#define CRASH_MAGIC       UINT32_C(0x48535243) /* "CRSH" */

#define CRASH_MAX_PROD  2u
#define CRASH_MAX_CONS  2u
#define CRASH_MAX_ROLES (CRASH_MAX_PROD + CRASH_MAX_CONS)
#define CRASH_MAX_REQ   64u  /* recovery requests in flight */
#define CRASH_CLAIMS    16u  /* claim records per side of an MP/MC ring */

/* Peer exit codes besides 0 (clean stop). */
#define CRASH_EXIT_FAIL  1   /* a check failed (bad checksum, protocol error) */
#define CRASH_EXIT_USAGE 2
#define CRASH_EXIT_SETUP 3   /* could not attach or open */

enum crash_kind {
	CRASH_KIND_SPSC = 0,     /* descriptor ring, 1 producer, 1 consumer */
	CRASH_KIND_MSG,          /* message ring, busy-polling */
	CRASH_KIND_MSG_BLOCK,    /* message ring, consumer sleeps on a futex doorbell */
	CRASH_KIND_MPSC,         /* descriptor ring, 2 producers, 1 consumer */
	CRASH_KIND_MPMC,         /* descriptor ring, 2 producers, 2 consumers */
	CRASH_KIND_COUNT,
};

static const char *const crash_kind_names[CRASH_KIND_COUNT] = {
	"spsc", "msg", "msg_block", "mpsc", "mpmc",
};

static inline int crash_kind_parse(const char *s)
{
	for (int k = 0; k < CRASH_KIND_COUNT; k++)
		if (!strcmp(s, crash_kind_names[k]))
			return k;
	return -1;
}

static inline unsigned crash_kind_nprod(int k)
{
	return k == CRASH_KIND_MPSC || k == CRASH_KIND_MPMC ? 2 : 1;
}

static inline unsigned crash_kind_ncons(int k)
{
	return k == CRASH_KIND_MPMC ? 2 : 1;
}

static inline int crash_kind_is_msg(int k)
{
	return k == CRASH_KIND_MSG || k == CRASH_KIND_MSG_BLOCK;
}

/* Participant side of role index ROLE (producers first, then consumers;
 * side 0 is the driver). */
static inline uint32_t crash_role_side(unsigned role)
{
	return role + 1;
}

/*
 * Named kill points: the peer raises SIGKILL on itself there, on the N-th
 * message of its incarnation (--point NAME --after N).
 *
 *   producer        message ring                 descriptor ring
 *   before_write    reserved, nothing written    element not built
 *   after_write     written in place, not        element built in private
 *                   committed                    memory, not enqueued
 *   after_publish   committed (the ring's commit point), the ledger not
 *                   yet told: the producer's in-doubt window
 *   before_doorbell committed and in the ledger, the consumer not rung
 *                   (msg_block: it may be asleep)
 *   consumer
 *   after_take      peeked and checked,          dequeued and checked (it
 *                   not recorded                 has left the ring)
 *   after_record    recorded as delivered,       recorded
 *                   not released
 */
enum crash_point {
	CRASH_PT_NONE = 0,
	CRASH_PT_BEFORE_WRITE,
	CRASH_PT_AFTER_WRITE,
	CRASH_PT_AFTER_PUBLISH,
	CRASH_PT_BEFORE_DOORBELL,
	CRASH_PT_AFTER_TAKE,
	CRASH_PT_AFTER_RECORD,
	CRASH_PT_COUNT,
};

static const char *const crash_point_names[CRASH_PT_COUNT] = {
	"none", "before_write", "after_write", "after_publish", "before_doorbell",
	"after_take", "after_record",
};

static inline int crash_point_parse(const char *s)
{
	for (int k = 0; k < CRASH_PT_COUNT; k++)
		if (!strcmp(s, crash_point_names[k]))
			return k;
	return -1;
}

static inline int crash_point_is_producer(int pt)
{
	return pt >= CRASH_PT_BEFORE_WRITE && pt <= CRASH_PT_BEFORE_DOORBELL;
}

/* One producer's line, written only by its incarnations. */
struct crash_prod_line {
	/* Next sequence number to send: every s < committed is committed
	 * (its commit/enqueue returned) or, on MP rings, in doubt (flagged
	 * in doubt[]). Release: after the commit it counts. */
	_Atomic uint64_t committed;
	/* Write-ahead: wal_pos (the ring's producer position before the
	 * commit; single-producer rings) then wal_seq, both before the
	 * commit of wal_seq. A successor that finds wal_seq == committed
	 * decides whether that commit happened (see crash_peer.c). */
	_Atomic uint64_t wal_seq;
	_Atomic uint64_t wal_pos;
	_Atomic uint64_t in_doubt;   /* MP: sequences whose commit a death left undecided */
	_Atomic uint64_t resumed;    /* SP: successors that found the WAL'd commit done */
	_Atomic uint64_t kill_ns;    /* CLOCK_MONOTONIC ns just before raise(SIGKILL) */
	_Atomic uint32_t running;    /* incarnation number, once its loop runs */
	_Atomic uint32_t claim;      /* claim record held + 1 (0: none), informative */
	_Atomic uint64_t attach_eproto; /* ring attaches that said PORTAL_EPROTO and
	                              * succeeded when tried again (crash_peer.c) */
	uint8_t pad[64];
};
_Static_assert(sizeof(struct crash_prod_line) == 128, "line");

/* One consumer's line, written only by its incarnations. */
struct crash_cons_line {
	_Atomic uint64_t delivered;  /* deliveries recorded (informative) */
	_Atomic uint64_t skipped;    /* recorded by a predecessor, not released: skipped */
	_Atomic uint64_t dups;       /* records that found another delivery there */
	_Atomic uint64_t bad;        /* stamp, checksum or length wrong */
	_Atomic uint64_t poison;     /* poison slots (a dead producer's recovered claim) */
	_Atomic uint64_t recovered;  /* elements handed over by recover_consumer */
	_Atomic uint64_t rescues;    /* blocking: a wait that timed out found work */
	_Atomic uint64_t kill_ns;    /* as for producers */
	/* Descriptor rings: the take in flight. intent = a fresh token
	 * before the dequeue; done = intent once its record is written (or
	 * the dequeue found nothing). A death with intent != done may have
	 * taken a message out of the ring without recording it. */
	_Atomic uint64_t intent;
	_Atomic uint64_t done;
	_Atomic uint64_t intent_pos; /* single consumer: its ring position at `intent` */
	_Atomic uint64_t served;     /* recovery requests served */
	_Atomic uint64_t proto;      /* ring errors seen (quarantine): fatal */
	_Atomic uint32_t running;
	_Atomic uint32_t claim;
	_Atomic uint64_t attach_eproto; /* as for producers */
	uint8_t pad[8];
};
_Static_assert(sizeof(struct crash_cons_line) == 128, "line");

/*
 * Survivor-side detection. A consumer that learns through Portal's liveness
 * layer that a producer incarnation died (its doorbell wait returned
 * PORTAL_EPEERDEAD, or portal_region_watch_status said DEAD or RESTARTED)
 * appends one entry: which role, which incarnation (the participant epoch
 * the watch watched) and when (CLOCK_MONOTONIC). The driver matches entries
 * to the deaths it caused by role and epoch. Written only by the
 * incarnations of that consumer: the entry, then `count` (release, L7).
 * The driver drains the log every pass of its event loop (at most a
 * millisecond apart), long before 64 more deaths could wrap it.
 */
#define CRASH_DET_LOG 64u

enum crash_det_how {
	CRASH_DET_DOORBELL  = 1, /* the doorbell wait that watches the producer */
	CRASH_DET_STATUS    = 2, /* watch_status: DEAD */
	CRASH_DET_RESTARTED = 3, /* watch_status: RESTARTED, the DEAD window missed */
};

struct crash_det {
	_Atomic uint64_t epoch;      /* the dead incarnation's participant epoch */
	_Atomic uint64_t ns;         /* when this consumer learned it */
	_Atomic uint32_t role;       /* the dead role's index (a producer) */
	_Atomic uint32_t how;        /* enum crash_det_how */
	uint64_t pad;
};
_Static_assert(sizeof(struct crash_det) == 32, "det");

struct crash_det_log {
	_Atomic uint64_t count;      /* entries ever written; entry i at e[i % LOG] */
	uint8_t pad[56];
	struct crash_det e[CRASH_DET_LOG];
};

/* A recovery request: a producer or consumer died holding (perhaps) a
 * claim record of an MP/MC ring. `what` = role << 32 | pid, written by the
 * driver before `state` goes PENDING (release). */
enum crash_req_state {
	CRASH_REQ_FREE    = 0,
	CRASH_REQ_PENDING = 1,
	CRASH_REQ_DONE    = 2,
	CRASH_REQ_BUSY    = 3,   /* | server pid << 8 */
};
#define CRASH_REQ_ROLE_PROD 1u
#define CRASH_REQ_ROLE_CONS 2u

struct crash_req {
	_Atomic uint64_t what;
	_Atomic uint64_t state;
};

struct crash_ledger {
	uint32_t magic;              /* driver, before any peer starts */
	uint32_t kind;
	uint32_t nprod;
	uint32_t ncons;
	uint64_t maxseq;             /* sequences per producer in the arrays */
	uint64_t deliv_off;          /* uint64_t deliv[nprod][maxseq], from the ledger start */
	uint64_t doubt_off;          /* uint8_t doubt[nprod][maxseq] */
	uint32_t recovery;           /* 1: the ring has claim records and recovery works */
	uint32_t max_msg;            /* message ring: largest payload sent */
	uint8_t pad0[16];

	/* Driver line. */
	_Atomic uint64_t allow[CRASH_MAX_PROD]; /* a producer sends while committed < allow */
	_Atomic uint32_t stop;       /* 1: no more traffic will be allowed */
	_Atomic uint32_t prod_done;  /* 1: every producer has exited cleanly */
	_Atomic uint32_t quit[CRASH_MAX_ROLES]; /* incarnation asked to exit cleanly */
	_Atomic uint32_t req_pending; /* requests posted and not done: driver +1, server -1 */
	uint8_t pad1[20];

	struct crash_req req[CRASH_MAX_REQ];
	struct crash_prod_line prod[CRASH_MAX_PROD];
	struct crash_cons_line cons[CRASH_MAX_CONS];
	struct crash_det_log det[CRASH_MAX_CONS]; /* one per consumer */
	/* arrays follow */
};

static inline _Atomic uint64_t *crash_deliv(struct crash_ledger *l, unsigned p)
{
	return (_Atomic uint64_t *)((uint8_t *)l + l->deliv_off) + (uint64_t)p * l->maxseq;
}

static inline _Atomic uint8_t *crash_doubt(struct crash_ledger *l, unsigned p)
{
	return (_Atomic uint8_t *)((uint8_t *)l + l->doubt_off) + (uint64_t)p * l->maxseq;
}

static inline uint64_t crash_ledger_size(uint32_t nprod, uint64_t maxseq)
{
	return sizeof(struct crash_ledger) + nprod * maxseq * 9 + 64;
}

static inline uint64_t crash_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Slot sizes and geometry. Small rings, so that full and empty both
 * happen all the time. */
#define CRASH_SLOT_SPSC   64u
#define CRASH_SLOT_MP     32u
#define CRASH_RING_CAP    64u
#define CRASH_MSG_CAP     8192u
#define CRASH_MSG_MAX     400u

#endif /* PORTAL_STRESS_CRASH_LEDGER_H */
