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

/* ------------------------------------------------------------------ */
/* ivshmem: a hostile server, or hostile clients                        */
/* ------------------------------------------------------------------ */
/*
 *   u8 mode     bit 0 (FZI_MODE_SERVER): 0 client mode (a hostile server
 *               against portal_ivshmem_client_*), 1 server mode (hostile
 *               clients against ivshmem-server/server.c)
 *
 * Client mode:
 *   u8 cfg      vectors = bit 2 ? 8 : 1 + (cfg & 3); bit 3: connect with
 *               timeout 0 rather than 50 us (FI_SHORT_WAIT_NS) when the
 *               model says the set-up will not complete with what was sent
 *   then operations (u8 % FZIC_NOPS) and their argument bytes. Server
 *   operations before the client has connected are the set-up, written
 *   when it connects; after, they are written at once. Any client
 *   operation connects first if needed (a failed connect starts a new
 *   session). Before a client call, a message left half-written is
 *   completed with zero bytes (else the client would wait a second for it).
 */
#define FZI_MODE_SERVER 0x01u

enum fzic_op {
	FZIC_SEND,     /* value sel [u64], fd sel, u8 split: a message; split % 9 in
	                * 1..7 writes it in two parts, bit 4: the fds go with the second */
	FZIC_PART,     /* u8 len (1 + len % 7), fd sel, then len raw bytes: a cut message */
	FZIC_SETUP,    /* u8 id: version 0, id, -1 + a 4096-byte memfd, our vectors */
	FZIC_JOIN,     /* u8 peer (% 16), u8 n: the peer's eventfds (n & 0x80: n % (vectors + 2)
	                * messages, else vectors) */
	FZIC_LEAVE,    /* u8 peer (% 16): the peer left (no fd) */
	FZIC_EOF,      /* the server half-closes (shutdown SHUT_WR) */
	FZIC_CONNECT,  /* connect, if not connected */
	FZIC_PROCESS,  /* u8 n: 1 + n % 4 calls of process, timeout 0 */
	FZIC_EVENTFD,  /* peer sel, u8 vector (% vectors + 2) */
	FZIC_RING,     /* peer sel, u8 vector (% vectors + 2) */
	FZIC_PEERS,    /* u8 max (% peers + 2) */
	FZIC_CLOSE,    /* close the client; the next session starts */
	FZIC_NOPS
};

/*
 * Value selector (u8 v): v & 7 is an FZIC_V_*, n = v >> 3 its argument;
 * FZIC_V_RAW is followed by eight raw bytes (the value, little-endian).
 */
enum fzic_value {
	FZIC_V_SMALL,    /* n (0..31) */
	FZIC_V_MINUS1,   /* -1 */
	FZIC_V_TOLD_ID,  /* the client's id as sent in this session */
	FZIC_V_NEAR_MAX, /* 65519 + n: around the last id */
	FZIC_V_NEG,      /* -1 - n */
	FZIC_V_MIN,      /* INT64_MIN + n */
	FZIC_V_MAX,      /* INT64_MAX - n */
	FZIC_V_RAW,      /* u64 follows */
};
#define FZIC_VAL(sel, n) ((unsigned)(sel) | (unsigned)(n) << 3)

/*
 * fd selector (u8 f): FZIC_FD_COUNTS[f & 7] fds, all of kind
 * ((f >> 3) & 7) % FZIC_NKINDS; a = f >> 6 picks the memfd size
 * (FZIC_MEMFD_SIZES) or, for FZIC_K_EFD_AGAIN, which earlier eventfd is
 * sent again (counting back from the newest; a new one if there is none).
 */
#define FZIC_FD_COUNTS { 0, 1, 1, 1, 1, 1, 2, 5 }
#define FZIC_FD_NONE 0u /* f & 7: no fd */
#define FZIC_FD_ONE  1u /* f & 7: one fd */
#define FZIC_FD_TWO  6u /* f & 7: two fds */
#define FZIC_FD_FIVE 7u /* f & 7: five fds */
#define FZIC_MEMFD_SIZES { 0, 1, 4096, 1 << 20 }
enum fzic_kind {
	FZIC_K_EFD,       /* a new eventfd (non-blocking) */
	FZIC_K_EFD_AGAIN, /* an eventfd sent before */
	FZIC_K_MEMFD,     /* a memfd of FZIC_MEMFD_SIZES[a] bytes */
	FZIC_K_PIPE_R,    /* a pipe's read end */
	FZIC_K_PIPE_W,    /* a pipe's (empty, non-blocking) write end */
	FZIC_K_NULL,      /* /dev/null */
	FZIC_K_PIPE_FULL, /* a pipe's write end, full and blocking: ringing it
	                   * must not hang (the client makes vector fds
	                   * non-blocking; a full pipe is a full counter) */
	FZIC_NKINDS
};
#define FZIC_FD(count, kind, a) \
	((unsigned)(count) | (unsigned)(kind) << 3 | (unsigned)(a) << 6)

/*
 * Peer selector (u8 p): p & 3: 0 our id, 1 a known peer (p >> 2, modulo
 * how many there are; p >> 2 itself if none), 2 the id p >> 2, 3 a raw
 * u32 follows.
 */
#define FZIC_PEER_OWN        0u
#define FZIC_PEER_KNOWN(i)   (1u | (unsigned)(i) << 2)
#define FZIC_PEER_ID(n)      (2u | (unsigned)(n) << 2)
#define FZIC_PEER_RAW        3u

/*
 * Server mode:
 *   u8 cfg      vectors = 1 + cfg % 3; max_peers = 1 + (cfg >> 2) % 6
 *   then operations (u8 % FZIS_NOPS); "which" picks among the live hostile
 *   or honest clients (modulo how many there are):
 */
enum fzis_op {
	FZIS_HONEST,   /* u8 n: an honest client connects with 1 + n % vectors vectors */
	FZIS_HOSTILE,  /* u8 how: a raw client connects; reads its whole set-up if how & 1,
	                * else only the version and id */
	FZIS_SEND,     /* u8 which, u8 len (1 + len % 300), u8 f, len bytes: a hostile
	                * client sends, with f % 4 fds (f & 0x10: eventfds, else /dev/null) */
	FZIS_SHUT,     /* u8 which: a hostile client half-closes */
	FZIS_DROP,     /* u8 which: a hostile client closes its socket */
	FZIS_READ,     /* u8 which: a hostile client reads what is there */
	FZIS_PROCESS,  /* u8 which: an honest client processes what is there */
	FZIS_LEAVE,    /* u8 which: an honest client closes */
	FZIS_STATUS,   /* the server gets SIGUSR1 (a status line) */
	FZIS_RING,     /* u8 a, u8 b, u8 vector: honest a rings honest b */
	FZIS_NOPS
};

#endif /* PORTAL_FUZZ_FORMAT_H */
