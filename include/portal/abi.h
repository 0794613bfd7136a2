/* SPDX-License-Identifier: MIT */
/*
 * portal/abi.h - the shared-memory layout of a Portal region, version 1.
 *
 * Everything here is a wire ABI: fixed-width little-endian fields, explicit
 * padding, every offset pinned by a static_assert. Nothing in shared memory
 * is a pointer. Each field says which side writes it and when it may change;
 * a field not marked "immutable" may change while a peer reads it, so a
 * reader loads it once and checks it (docs/region-format.md).
 *
 * Sides: the region creator is side 0; attachers take sides 1..part_count-1.
 * "owner" below means the side named in the object's directory entry.
 */
#ifndef PORTAL_ABI_H
#define PORTAL_ABI_H

#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Portal's shared layout is little-endian; big-endian hosts are not supported"
#endif

/* Shared words are used by several processes: their atomics must be real
 * lock-free instructions, not a lock in one process's private memory. */
static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
	      "Portal needs lock-free 32- and 64-bit atomics");

#define PORTAL_CACHELINE 64
/* Hot lines are kept 128 bytes apart so the adjacent-line prefetcher does not
 * pull a peer's line along with ours. */
#define PORTAL_LINE_PAIR 128

/* ------------------------------------------------------------------ */
/* Region header: the first 4 KiB of every region.                      */
/* ------------------------------------------------------------------ */

#define PORTAL_REGION_MAGIC        UINT64_C(0x47524C4154524F50) /* "PORTALRG" */
#define PORTAL_REGION_VERSION_MAJOR 1
#define PORTAL_REGION_VERSION_MINOR 0
#define PORTAL_REGION_HEADER_SIZE  4096u
#define PORTAL_REGION_PART_OFFSET  1024u
#define PORTAL_REGION_MAX_PARTS    48u   /* (4096 - 1024) / 64 */

struct portal_region_hdr {
	/* Line 0: written once by the creator before any peer can attach;
	 * immutable afterwards and covered by hdr_checksum. */
	uint64_t magic;           /* PORTAL_REGION_MAGIC */
	uint16_t version_major;   /* attach refuses a different major */
	uint16_t version_minor;   /* newer minors only add fields */
	uint32_t header_size;     /* PORTAL_REGION_HEADER_SIZE */
	uint64_t region_size;     /* bytes in the whole region */
	uint64_t epoch;           /* random, new each time the region is created */
	uint32_t region_id;       /* nonzero; spans carry it */
	uint32_t flags;           /* reserved, 0 */
	uint32_t dir_offset;      /* directory start, from region start */
	uint32_t dir_capacity;    /* entries the directory can hold */
	uint32_t part_offset;     /* participant slots, PORTAL_REGION_PART_OFFSET */
	uint32_t part_count;      /* participant slots, 2..PORTAL_REGION_MAX_PARTS */
	uint32_t data_offset;     /* first byte objects may use (page aligned) */
	uint32_t hdr_checksum;    /* zlib crc32 of bytes [0, 60) */

	/* Line 1: creator-written, changes as objects are added. */
	_Atomic uint32_t dir_count; /* creator: entries published; release after
	                             * the entry is written (pairs with acquire
	                             * in attach and lookup) */
	uint32_t reserved1;
	_Atomic uint64_t data_used; /* creator: bytes handed out past data_offset;
	                             * informative only, never trusted */
	uint8_t pad1[48];
};
static_assert(offsetof(struct portal_region_hdr, epoch) == 24, "abi");
static_assert(offsetof(struct portal_region_hdr, region_id) == 32, "abi");
static_assert(offsetof(struct portal_region_hdr, data_offset) == 56, "abi");
static_assert(offsetof(struct portal_region_hdr, hdr_checksum) == 60, "abi");
static_assert(offsetof(struct portal_region_hdr, dir_count) == 64, "abi");
static_assert(sizeof(struct portal_region_hdr) == 128, "abi");

/* One participant slot: 64 bytes, written only by the side that owns it.
 * How a survivor judges the owner's liveness from it: docs/liveness.md. */
enum portal_part_state {
	PORTAL_PART_FREE   = 0,
	PORTAL_PART_ACTIVE = 1,
	PORTAL_PART_GONE   = 2, /* detached cleanly */
	PORTAL_PART_JOINING = 3, /* claimed, fields being written */
};
enum portal_part_kind {
	PORTAL_PART_PROCESS = 1,
	PORTAL_PART_VM      = 2, /* a guest as a whole: pid 0, judged by heartbeat */
};
/* Bits of struct portal_participant.flags. */
enum portal_part_flags {
	/* The owner holds an OFD write lock on byte (window offset +
	 * 1024 + 64 * side) of the backing file, for as long as it lives;
	 * lock_key says which kernel and file. */
	PORTAL_PART_F_OSLOCK    = 0x1,
	/* The owner bumps `heartbeat` (it has called portal_region_heartbeat). */
	PORTAL_PART_F_HEARTBEAT = 0x2,
};
struct portal_participant {
	_Atomic uint32_t state;     /* owner: enum portal_part_state; release
	                             * after the other fields (pairs with acquire
	                             * in portal_region_participant and the
	                             * liveness watch) */
	uint16_t kind;              /* owner: enum portal_part_kind */
	_Atomic uint16_t flags;     /* owner: enum portal_part_flags; set at
	                             * attach, F_HEARTBEAT added by the first
	                             * heartbeat */
	_Atomic uint64_t epoch;     /* owner: random, new at every attach */
	_Atomic uint64_t heartbeat; /* owner: bumped by portal_region_heartbeat */
	uint64_t pid;               /* owner: pid in its own namespace, or 0
	                             * (kind VM) */
	uint64_t lock_key;          /* owner: with F_OSLOCK, a digest of (kernel
	                             * boot_id, backing st_dev, st_ino, lock
	                             * offset): a watcher that computes the same
	                             * value shares the kernel and the lock;
	                             * else 0 */
	char ident[24];             /* owner: free text, NUL padded */
};
static_assert(sizeof(struct portal_participant) == 64, "abi");
static_assert(offsetof(struct portal_participant, kind) == 4, "abi");
static_assert(offsetof(struct portal_participant, flags) == 6, "abi");
static_assert(offsetof(struct portal_participant, epoch) == 8, "abi");
static_assert(offsetof(struct portal_participant, heartbeat) == 16, "abi");
static_assert(offsetof(struct portal_participant, pid) == 24, "abi");
static_assert(offsetof(struct portal_participant, lock_key) == 32, "abi");
static_assert(offsetof(struct portal_participant, ident) == 40, "abi");

/* ------------------------------------------------------------------ */
/* Directory: named objects placed in the region.                       */
/* ------------------------------------------------------------------ */

#define PORTAL_NAME_MAX 48 /* including the NUL */

enum portal_obj_kind {
	PORTAL_OBJ_RING     = 1, /* fixed-slot descriptor ring */
	PORTAL_OBJ_MSGRING  = 2, /* variable-length message ring */
	PORTAL_OBJ_BCAST    = 3, /* broadcast ring */
	PORTAL_OBJ_ARENA    = 4,
	PORTAL_OBJ_DOORBELL = 5,
	PORTAL_OBJ_USER     = 6, /* raw bytes for the application */
	PORTAL_OBJ_KIND_MAX = 6,
};

/* 128 bytes, written once by the creator before dir_count covers it. */
struct portal_dir_entry {
	char name[PORTAL_NAME_MAX]; /* NUL terminated and padded */
	uint32_t kind;              /* enum portal_obj_kind */
	uint32_t owner_side;        /* side that writes the object's producer or
	                             * owner fields */
	uint64_t offset;            /* from region start, cache-line aligned */
	uint64_t size;              /* bytes */
	uint64_t param[6];          /* kind-specific, informative */
	uint32_t flags;             /* reserved, 0 */
	uint32_t checksum;          /* zlib crc32 of bytes [0, 124) */
};
static_assert(offsetof(struct portal_dir_entry, offset) == 56, "abi");
static_assert(offsetof(struct portal_dir_entry, checksum) == 124, "abi");
static_assert(sizeof(struct portal_dir_entry) == 128, "abi");

/* ------------------------------------------------------------------ */
/* Descriptor ring: fixed-size slots, SPSC / MPSC / MPMC.               */
/* ------------------------------------------------------------------ */

#define PORTAL_RING_MAGIC     UINT32_C(0x474E5250) /* "PRNG" */
#define PORTAL_RING_HDR_SIZE  384u                 /* slots start here */

struct portal_ring_hdr {
	/* Line 0: immutable, written by init. Each side copies it into
	 * private memory at attach and never reads it again. */
	uint32_t magic;
	uint16_t version;        /* 1 */
	uint16_t mode;           /* enum portal_ring_mode (ring.h) */
	uint32_t slot_size;      /* bytes per slot, power of two, 8..256 */
	uint32_t capacity;       /* slots, power of two */
	uint64_t obj_size;       /* PORTAL_RING_HDR_SIZE + capacity * slot_size
	                          * + PORTAL_LINE_PAIR * (max_producers +
	                          * max_consumers) */
	/* Crash recovery (ring.h, portal_ring_recovery_params). Read only when
	 * obj_size includes claim records; a ring without them may hold
	 * anything here (0 from init). */
	uint16_t max_producers;  /* producer claim records after the slots */
	uint16_t max_consumers;  /* consumer claim records after those */
	uint32_t rflags;         /* PORTAL_RING_F_POISON or 0 */
	uint64_t poison;         /* with PORTAL_RING_F_POISON: 8-byte pattern of
	                          * a recovered slot; else all bytes 0xFF */
	uint8_t pad0[PORTAL_LINE_PAIR - 40];

	/* Producer side. */
	_Atomic uint64_t prod_head; /* producers: next slot to claim (MP: CAS) */
	_Atomic uint64_t prod_tail; /* producers: slots published; release
	                             * (recoverable MP: only by CAS, any
	                             * producer, over done claims) */
	uint8_t pad1[PORTAL_LINE_PAIR - 16];

	/* Consumer side. */
	_Atomic uint64_t cons_head; /* consumers: next slot to claim (MC: CAS) */
	_Atomic uint64_t cons_tail; /* consumers: slots freed; release
	                             * (recoverable MC: only by CAS, as
	                             * prod_tail) */
	uint8_t pad2[PORTAL_LINE_PAIR - 16];
	/* slots follow: capacity * slot_size bytes, written by producers;
	 * then max_producers and max_consumers struct portal_ring_claim */
};
static_assert(offsetof(struct portal_ring_hdr, max_producers) == 24, "abi");
static_assert(offsetof(struct portal_ring_hdr, poison) == 32, "abi");
static_assert(offsetof(struct portal_ring_hdr, prod_head) == 128, "abi");
static_assert(offsetof(struct portal_ring_hdr, cons_head) == 256, "abi");
static_assert(sizeof(struct portal_ring_hdr) == PORTAL_RING_HDR_SIZE, "abi");

/* Claim record states. */
enum portal_ring_claim_state {
	PORTAL_CLAIM_FREE       = 0,
	PORTAL_CLAIM_HELD       = 1, /* a live handle (or a dead one not yet recovered) */
	PORTAL_CLAIM_RECOVERING = 2, /* locked: a recovery of its dead holder, or an
	                              * attach reclaiming a RETIRED record */
	PORTAL_CLAIM_RETIRED    = 3, /* no holder; its last claim is done but may
	                              * not be published yet: helpers may still
	                              * read it. Reclaimed (-> FREE or HELD, under
	                              * the RECOVERING lock) once the side's tail
	                              * has passed it */
};

/* One claim record of a multi-producer or multi-consumer side: where the
 * holder's claim is and whether its copy is done, so that any handle can
 * publish it (helping) and a survivor can finish it if the holder dies. */
struct portal_ring_claim {
	_Atomic uint32_t state;  /* attach: FREE -> HELD by CAS (acquire), or
	                          * RETIRED -> RECOVERING -> HELD; detach: ->
	                          * FREE or RETIRED with release; recovery:
	                          * HELD or RETIRED -> RECOVERING by CAS, then
	                          * FREE, RETIRED or HELD with release */
	uint32_t reserved;
	_Atomic uint64_t owner;  /* holder: the tag it gave at attach; relaxed */
	_Atomic uint64_t head;   /* holder: the head its claim CAS expects, stored
	                          * with release before every CAS on the side's
	                          * head (which is a release on success) */
	_Atomic uint64_t count;  /* holder: elements of that claim, stored before
	                          * head; 0 = no claim (it gave up) */
	_Atomic uint64_t done;   /* holder, or a recovery for a dead one:
	                          * head + count once the claim's copy (in or
	                          * out) is complete; seq_cst exchange. The
	                          * claim [head, head + count) is done iff
	                          * count > 0 and done == head + count */
	uint8_t pad[PORTAL_LINE_PAIR - 40];
};
static_assert(offsetof(struct portal_ring_claim, owner) == 8, "abi");
static_assert(offsetof(struct portal_ring_claim, head) == 16, "abi");
static_assert(offsetof(struct portal_ring_claim, count) == 24, "abi");
static_assert(offsetof(struct portal_ring_claim, done) == 32, "abi");
static_assert(sizeof(struct portal_ring_claim) == PORTAL_LINE_PAIR, "abi");

/* ------------------------------------------------------------------ */
/* Message ring: variable-length records, SPSC, zero-copy.              */
/* ------------------------------------------------------------------ */

#define PORTAL_MSGRING_MAGIC    UINT32_C(0x47534D50) /* "PMSG" */
#define PORTAL_MSGRING_HDR_SIZE 384u
#define PORTAL_MSG_ALIGN        8u
/* Record header: one 64-bit little-endian word, stored last with release.
 *   bits  0..30 payload length in bytes
 *   bit   31    PORTAL_MSG_PAD: skip to the ring start (wrap)
 *   bits 32..63 record sequence number, low 32 bits, starting at 1
 * The payload follows, and the record is padded to PORTAL_MSG_ALIGN. */
#define PORTAL_MSG_PAD     UINT32_C(0x80000000)
#define PORTAL_MSG_LEN_MASK UINT32_C(0x7FFFFFFF)
#define PORTAL_MSG_HDR_SIZE 8u

struct portal_msgring_hdr {
	uint32_t magic;
	uint16_t version;        /* 1 */
	uint16_t flags;          /* reserved, 0 */
	uint32_t capacity;       /* data bytes, power of two */
	uint32_t max_msg;        /* largest payload accepted */
	uint64_t obj_size;
	uint8_t pad0[PORTAL_LINE_PAIR - 24];

	_Atomic uint64_t prod_tail; /* producer: bytes committed (observers and a
	                             * restarting producer; the consumer reads
	                             * record headers instead) */
	_Atomic uint32_t prod_seq;  /* producer: next sequence number to write */
	uint8_t pad1[PORTAL_LINE_PAIR - 12];

	_Atomic uint64_t cons_head; /* consumer: bytes released; release, pairs
	                             * with the producer's acquire when full */
	_Atomic uint32_t cons_seq;  /* consumer: next sequence number expected */
	uint8_t pad2[PORTAL_LINE_PAIR - 12];
	/* data follows: capacity bytes, written by the producer */
};
static_assert(offsetof(struct portal_msgring_hdr, prod_tail) == 128, "abi");
static_assert(offsetof(struct portal_msgring_hdr, cons_head) == 256, "abi");
static_assert(sizeof(struct portal_msgring_hdr) == PORTAL_MSGRING_HDR_SIZE, "abi");

/* ------------------------------------------------------------------ */
/* Broadcast ring: one producer, up to max_subs subscribers.            */
/* ------------------------------------------------------------------ */

#define PORTAL_BCAST_MAGIC    UINT32_C(0x54434250) /* "PBCT" */
#define PORTAL_BCAST_HDR_SIZE 256u

struct portal_bcast_hdr {
	uint32_t magic;
	uint16_t version;        /* 1 */
	uint16_t mode;           /* enum portal_bcast_mode (ring.h) */
	uint32_t slot_size;      /* payload bytes per message, 8..256 */
	uint32_t capacity;       /* slots, power of two */
	uint32_t max_subs;       /* subscriber cursor lines that follow */
	uint32_t stride;         /* bytes per slot: 8 + slot_size, 8-aligned */
	uint64_t obj_size;
	uint8_t pad0[PORTAL_LINE_PAIR - 32];

	_Atomic uint64_t prod_tail; /* producer: messages published; release */
	uint8_t pad1[PORTAL_LINE_PAIR - 8];
	/* then max_subs struct portal_bcast_sub, then the slots */
};
static_assert(offsetof(struct portal_bcast_hdr, prod_tail) == 128, "abi");
static_assert(sizeof(struct portal_bcast_hdr) == PORTAL_BCAST_HDR_SIZE, "abi");

/* One per subscriber, written by that subscriber (and, to free the line
 * of a dead one, by portal_bcast_evict). */
struct portal_bcast_sub {
	_Atomic uint64_t state;   /* subscriber: bits 0-31 the line's state, 0 free,
	                           * 2 joining (claimed by CAS), 1 subscribed;
	                           * bits 32-63 the subscription's generation, +1
	                           * at every join, so that one CAS names one
	                           * subscription. (Bits 0-31 are the 32-bit
	                           * "active" word of earlier version-1 images,
	                           * whose generation reads as 0.) */
	_Atomic uint64_t cursor;  /* subscriber: messages consumed; release,
	                           * pairs with the producer's acquire (hold mode) */
	_Atomic uint64_t owner;   /* subscriber: the tag given at attach (a pid, a
	                           * participant side and epoch), stored after the
	                           * claiming CAS; read by portal_bcast_evict */
	uint8_t pad[PORTAL_LINE_PAIR - 24];
};
static_assert(offsetof(struct portal_bcast_sub, cursor) == 8, "abi");
static_assert(offsetof(struct portal_bcast_sub, owner) == 16, "abi");
static_assert(sizeof(struct portal_bcast_sub) == PORTAL_LINE_PAIR, "abi");
#define PORTAL_BCAST_SUB_FREE    0u
#define PORTAL_BCAST_SUB_ACTIVE  1u
#define PORTAL_BCAST_SUB_JOINING 2u

/* Each slot starts with a sequence word written by the producer: 0 while it
 * writes the payload, then position + 1 with release (a seqlock, so a lapped
 * subscriber detects a torn copy). */

/* ------------------------------------------------------------------ */
/* Arena: blocks owned and written by one side.                         */
/* ------------------------------------------------------------------ */

#define PORTAL_ARENA_MAGIC      UINT32_C(0x4E524150) /* "PARN" */
#define PORTAL_ARENA_MAX_CLASSES 8u
#define PORTAL_ARENA_HDR_SIZE   256u

struct portal_arena_class {
	uint32_t block_size;     /* bytes, multiple of 64 */
	uint32_t count;          /* blocks */
	uint64_t offset;         /* first block, from the arena object start */
};
static_assert(sizeof(struct portal_arena_class) == 16, "abi");

/* Written once at init (by the owner, or by the region creator placing the
 * arena for it) before the directory entry is published; immutable. A
 * receiver never needs it to stay safe (it checks spans against the
 * directory entry), only to find its way. Free lists and generations live in the owner's private
 * memory, never here. */
struct portal_arena_hdr {
	uint32_t magic;
	uint16_t version;         /* 1 */
	uint16_t nclasses;        /* <= PORTAL_ARENA_MAX_CLASSES */
	uint32_t owner_side;
	uint32_t flags;           /* reserved, 0 */
	uint64_t obj_size;
	uint64_t bump_offset;     /* bump area, from the arena object start */
	uint64_t bump_size;
	uint8_t pad0[24];
	struct portal_arena_class cls[PORTAL_ARENA_MAX_CLASSES];
	uint8_t pad1[PORTAL_ARENA_HDR_SIZE - 64 - 16 * PORTAL_ARENA_MAX_CLASSES];
};
static_assert(offsetof(struct portal_arena_hdr, cls) == 64, "abi");
static_assert(sizeof(struct portal_arena_hdr) == PORTAL_ARENA_HDR_SIZE, "abi");

/* ------------------------------------------------------------------ */
/* Doorbell: the shared words of one waiter/notifier pair.              */
/* ------------------------------------------------------------------ */

#define PORTAL_DOORBELL_MAGIC UINT32_C(0x4C424450) /* "PDBL" */

struct portal_doorbell_shm {
	uint32_t magic;
	uint16_t version;          /* 1 */
	uint16_t backend;          /* enum portal_doorbell_backend (doorbell.h) */
	uint8_t pad0[PORTAL_LINE_PAIR - 8];

	_Atomic uint32_t armed;    /* waiter: 1 = about to sleep, ring me;
	                            * seq_cst, pairs with the notifier's fence */
	uint8_t pad1[PORTAL_LINE_PAIR - 4];

	_Atomic uint32_t wake_seq; /* notifier: bumped before each wake; the
	                            * futex word */
	uint32_t reserved;
	_Atomic uint64_t rings;    /* notifier: doorbells rung, for counters */
	uint8_t pad2[PORTAL_LINE_PAIR - 16];
};
static_assert(offsetof(struct portal_doorbell_shm, armed) == 128, "abi");
static_assert(offsetof(struct portal_doorbell_shm, wake_seq) == 256, "abi");
static_assert(sizeof(struct portal_doorbell_shm) == 384, "abi");

#endif /* PORTAL_ABI_H */
