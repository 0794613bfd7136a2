/* SPDX-License-Identifier: MIT */
/*
 * fuzz/fuzz_format.h - how each fuzz target reads its input. Shared by the
 * targets and by the seed writer (seeds.c), so the two cannot drift apart.
 * fuzz/README.md describes the same in prose.
 *
 * Script targets (ring, msgring, bcast, arena) read a few set-up bytes and
 * then one operation per opcode byte (taken modulo the number of operations,
 * so every byte is an operation) followed by that operation's argument
 * bytes. The input running out ends the script; missing bytes read as 0.
 */
#ifndef PORTAL_FUZZ_FORMAT_H
#define PORTAL_FUZZ_FORMAT_H

/* ------------------------------------------------------------------ */
/* region_attach: a region image                                        */
/* ------------------------------------------------------------------ */
/*
 *   u8  flags       FZR_F_* below
 *   u8  size        image length: 4096 * (1 + (size & 15)) + 8 * (size >> 4);
 *                   0xff means 4000 (shorter than a header)
 *   u8  side        opts.side for attach
 *   u8  nparts      participant slots that follow (taken modulo 49)
 *   u8  ndir        directory entries that follow
 *   u8  npatch      post-attach patches that follow
 *   128 bytes       region header, copied to offset 0
 *   nparts * 64     participant slots, copied to offset 1024
 *   ndir * 128      directory entries, copied to the header's dir_offset
 *                   (4096 if that does not fit in the image)
 *   npatch * 4      patches applied after attach (a peer rewriting the
 *                   header or directory): u16 offset (modulo the image
 *                   length), u8 value, u8 count (1 + count % 4 bytes set)
 *   the rest        object bytes, copied to the header's data_offset
 *                   (clamped to the image)
 *
 * The fix-up flags are applied after the copy, so the fuzzer can get past
 * the checksums and reach the directory and object checks.
 */
#define FZR_F_FIX_HDR_CRC  0x01u /* recompute hdr_checksum */
#define FZR_F_FIX_DIR_CRC  0x02u /* recompute each given entry's checksum */
#define FZR_F_FIX_SIZE     0x04u /* region_size := image length */
#define FZR_F_FIX_COUNT    0x08u /* dir_count := ndir */
#define FZR_F_READONLY     0x10u /* attach with PORTAL_REGION_F_READONLY */
#define FZR_F_FD_BACKEND   0x20u /* image in a memfd, attached as "fd:N" */
#define FZR_F_OBJECTS      0x40u /* open every object found, by kind */
#define FZR_F_PATCH_FIRST  0x80u /* apply the patches before the fix-ups, not after attach */

#define FZR_HDR_BYTES 128u

/* ------------------------------------------------------------------ */
/* ring: descriptor ring script                                         */
/* ------------------------------------------------------------------ */
/*
 *   u8 setup0   mode = 1 + setup0 % 3; bit 2: honest side is the consumer
 *   u8 setup1   slot_size = 8 << (setup1 % 6); capacity = 2 << ((setup1 >> 3) % 6)
 *   u8 setup2   starting position: FZ_BASE_* (setup2 % 4)
 *   then operations:
 */
enum fzq_op {
	FZQ_BURST,     /* u8 n (% 2*cap+2), u8 variant: bit0 explicit sp/mp|sc/mc call */
	FZQ_ONE,       /* single-element enqueue / dequeue */
	FZQ_COUNT,     /* portal_ring_count */
	FZQ_REATTACH,  /* detach the honest handle, attach a new one */
	FZQ_WRONG,     /* u8 which: a call this role/mode must refuse */
	FZQ_P_GOOD,    /* u8 k: the peer moves k elements, as an honest peer would */
	FZQ_P_CLAIM,   /* u8 k: a multi-writer peer claims k (head moves, tail not) */
	FZQ_P_PUBLISH, /* the peer publishes every claim in flight */
	FZQ_P_FORGE,   /* u8 field (0 tail, 1 head), fz_value: forge a peer field */
	FZQ_P_SCRIBBLE,/* u8 slot, u8 byte, u8 value: overwrite slot bytes */
	FZQ_P_HEAL,    /* the peer restores its fields (and resyncs) */
	FZQ_CO,        /* u8 k: a trusted co-producer / co-consumer of the honest side */
	FZQ_CO_FORGE,  /* u8 how, u8 d: a co-claimant leaves the honest side's claim head
	                * behind its tail (how 0) or over a ring ahead (1), or heals it (2) */
	FZQ_NOPS
};

/* Starting positions of the 64-bit counters (rings only). */
#define FZ_NBASES 4

/* ------------------------------------------------------------------ */
/* msgring: message ring script                                         */
/* ------------------------------------------------------------------ */
/*
 *   u8 setup0   bit 0: honest side is the consumer; bits 1..: starting
 *               position (% FZ_NBASES); bits 4..5: starting sequence (% 4)
 *   u8 setup1   capacity = 256 << (setup1 % 5)
 *   u16 maxsel  max_msg = 1 + maxsel % (capacity / 2 - 16)
 *   then operations:
 */
enum fzm_op {
	FZM_RESERVE,   /* producer: u16 len; consumer: peek, u8 bit0 release */
	FZM_COMMIT,    /* producer: u8 how (0 reserved len, 1 shorter, 2 longer); consumer: release */
	FZM_SEND,      /* producer: u16 len; consumer: u16 cap, recv */
	FZM_READY,     /* consumer: portal_msgring_ready; producer: a wrong-role call */
	FZM_REATTACH,
	FZM_P_GOOD,    /* peer producer: u16 len, send a record; peer consumer: take one */
	FZM_P_WORD,    /* peer producer: u8 where, header value: forge a word in the data */
	FZM_P_INDEX,   /* u8 field, fz_value: forge prod_tail/prod_seq or cons_head/cons_seq */
	FZM_P_PAYLOAD, /* peer producer: u8 record, u16 offset, u8 value: payload byte */
	FZM_P_HEAL,
	FZM_NOPS
};

/* ------------------------------------------------------------------ */
/* bcast: broadcast ring script                                         */
/* ------------------------------------------------------------------ */
/*
 *   u8 setup0   bit 0: LAP (else HOLD); bit 1: honest side is a subscriber;
 *               bits 2..3: starting position (% 3)
 *   u8 setup1   slot_size = 8 * (1 + setup1 % 8); capacity = 2 << ((setup1 >> 3) % 5)
 *   u8 setup2   max_subs = 1 + setup2 % 4; honest subscriber = (setup2 >> 2) % max_subs
 *   then operations:
 */
enum fzb_op {
	FZB_CALL,      /* producer: publish; subscriber: read */
	FZB_READY,     /* subscriber: portal_bcast_ready; producer: u8 a: a & 1 a wrong-role
	                * call, else evict line (a >> 1) % max_subs under its own tag,
	                * another or OWNER_ANY ((a >> 4) % 3) */
	FZB_REATTACH,
	FZB_P_GOOD,    /* peer producer: u8 k publish; peer subscriber: u8 line, u8 k read */
	FZB_P_BEGIN,   /* peer producer: start writing the next slot (sequence 0) */
	FZB_P_END,     /* peer producer: finish it */
	FZB_P_JOIN,    /* peer subscriber: u8 line, u8 how: join / half-join / leave.
	                * Honest subscriber: on its own line, how % 3: evicted by
	                * another / evicted and re-joined by another / it evicts
	                * itself (refused); on another line, how % 6: 0-2 as the
	                * peer subscriber's, 3-5 it evicts that line (tag as above) */
	FZB_P_FORGE,   /* u8 what/line, fz_value: prod_tail, a slot sequence, a cursor, active */
	FZB_P_PAYLOAD, /* u8 slot, u8 byte, u8 value */
	FZB_P_HEAL,
	FZB_NOPS
};

/* ------------------------------------------------------------------ */
/* arena: spans, the owner's allocator and its return ring               */
/* ------------------------------------------------------------------ */
/*
 *   u8 setup0   bit 0: seeded random generations (arena_attach_seeded);
 *               bits 1..2: region offset choice; bit 3: header-fuzz mode
 *               (the rest of the input patches the header, then attach)
 *   u8 nclasses (% 5)
 *   per class:  u8 step (block_size grows by 64 * (1 + step % 4)), u8 count (1 + % 8)
 *   u16 bump    bump_size = bump % 2048
 *   u8 ringcap  return ring capacity = 2 << (ringcap % 4)
 *   u32 region_id (0 becomes 1), u64 seed
 *   then operations:
 */
enum fza_op {
	FZA_ALLOC,     /* u16 len */
	FZA_BUMP,      /* u16 len, u8 align selector */
	FZA_BUMP_RESET,
	FZA_FREE,      /* span selector (below): portal_arena_free */
	FZA_GIVE,      /* u8 n, then n span selectors: give back over the ring */
	FZA_RAW_GIVE,  /* span selector, u64 trailer: the peer writes a slot itself */
	FZA_RECLAIM,   /* u8 max */
	FZA_FORGE,     /* fz_value: forge the return ring's prod_tail */
	FZA_HEAL,      /* restore prod_tail; re-attach the owner's ring handle */
	FZA_RESOLVE,   /* span selector, u8 entry mutation: portal_arena_resolve */
	FZA_SPAN,      /* span selector, fz_value lo, fz_value hi: portal_span_check/resolve */
	FZA_NOPS
};
/*
 * Span selector: u8 how; how % 4 == 0: a span of input bytes (u64 offset
 * from fz_value around the arena, u32 length, u32 generation, u8 region
 * choice, u8 flags); otherwise an outstanding span (u8 index) with a
 * mutation (u8 what, u8 amount) when how % 4 == 2 or 3.
 */

#endif /* PORTAL_FUZZ_FORMAT_H */
