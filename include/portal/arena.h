/* SPDX-License-Identifier: MIT */
/*
 * portal/arena.h - owner-written arenas: slab size classes, a bump area for
 * call-local data, and the return path that hands blocks back.
 *
 * An arena is one object in a region (kind PORTAL_OBJ_ARENA), laid out as
 * struct portal_arena_hdr (portal/abi.h) followed by the blocks of each size
 * class and the bump area. Only its owner side writes it. The owner keeps all
 * allocator state - free lists, per-block generations, the allocated bits,
 * the bump cursor - in private memory (portal_arena_t), so nothing a peer
 * writes into the region can corrupt it.
 *
 * The owner allocates a block, writes it, and sends its span to a receiver
 * (over some ring). The receiver checks the span against the arena's
 * directory entry (portal_arena_resolve), reads it in place, and gives the
 * span back over a return ring (portal_arena_give_back). The owner drains the
 * return ring (portal_arena_reclaim) and checks every span before reuse: the
 * right region, inside the block area, exactly on a block boundary, no longer
 * than the block, and the block's current generation. A span that fails is
 * refused with its own error code and counted; a refused span never changes
 * allocator state.
 *
 * Generations. Every block carries a 32-bit generation, never 0, bumped each
 * time the block is freed; a span carries the generation it was allocated
 * with, so a stale or duplicated return is refused. After portal_arena_init
 * every block starts at generation 1 (or at random values with
 * PORTAL_ARENA_F_RANDOM_GEN). An owner that restarts re-attaches with
 * portal_arena_attach: every block starts free, at a random generation drawn
 * per block from a getrandom() seed, so a span still outstanding from the
 * previous incarnation is refused unless it hits its block's new 32-bit value
 * by chance (probability 2^-32 per span, and only if the block has been
 * allocated again). Generations detect stale and duplicate returns; they are
 * not secrets, and a receiver that holds a span can always give it back
 * early. With generations starting at 1, a hostile receiver can also guess
 * the span of a block it was never sent and have it freed early: the owner
 * stays memory-safe, but the block may be reused while its real receiver
 * still reads it. Where receivers are not trusted, init with
 * PORTAL_ARENA_F_RANDOM_GEN, and have receivers copy what they must not see
 * change.
 *
 * Concurrency:
 *
 *   call                               who              may run concurrently with
 *   memsize                            anyone           anything (pure)
 *   init, attach, create, open, detach owner, once      nothing on the same handle
 *   alloc, free, bump_alloc,
 *   bump_reset, reclaim, stats         owner handle     nothing on the same handle:
 *                                                       one thread at a time
 *   resolve                            receivers        anything (pure; reads no
 *                                                       arena memory)
 *   give_back, give_back_burst         receivers        the owner's reclaim; other
 *                                                       give_backs only on an MPSC
 *                                                       return ring
 *
 * Memory order: the arena itself uses no atomics - its shared header is
 * written once, by init, before the owner hands out any span, and block
 * contents are
 * published by whatever ring carries the span (a ring enqueue is a release,
 * the dequeue an acquire). In the same way, portal_arena_give_back releases
 * the receiver's last reads of the block before the span reaches the owner,
 * and portal_arena_reclaim acquires them before the block can be reused.
 */
#ifndef PORTAL_ARENA_H
#define PORTAL_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "portal/abi.h"
#include "portal/common.h"
#include "portal/region.h"
#include "portal/ring.h"
#include "portal/span.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct portal_arena portal_arena_t;

/* Most blocks one arena may have, over all its classes. Bounds the owner's
 * private metadata (about 8.1 bytes a block). */
#define PORTAL_ARENA_MAX_BLOCKS (1u << 24)
/* Largest alignment portal_arena_bump_alloc accepts. */
#define PORTAL_ARENA_MAX_ALIGN 4096u
/* Slot size of a return ring: one struct portal_span, then 8 bytes written
 * as zero and ignored. */
#define PORTAL_ARENA_RETURN_SLOT 32u

/* portal_arena_params.flags */
#define PORTAL_ARENA_F_RANDOM_GEN 0x1u /* init: random starting generations */
#define PORTAL_ARENA_F_MASK       0x1u

struct portal_arena_class_params {
	uint32_t block_size; /* bytes, a nonzero multiple of 64 */
	uint32_t count;      /* blocks, >= 1 */
};

struct portal_arena_params {
	uint32_t nclasses;   /* 0..PORTAL_ARENA_MAX_CLASSES */
	uint32_t flags;      /* PORTAL_ARENA_F_* */
	/* Classes in strictly increasing block_size; at most
	 * PORTAL_ARENA_MAX_BLOCKS blocks in all. */
	struct portal_arena_class_params cls[PORTAL_ARENA_MAX_CLASSES];
	uint64_t bump_size;  /* bytes of bump area, rounded up to 64; may be 0 */
};

/* Counters kept in the owner handle. */
struct portal_arena_stats {
	uint64_t allocs;          /* blocks handed out */
	uint64_t frees;           /* blocks taken back (free or reclaim) */
	uint64_t alloc_failed;    /* alloc calls that returned -ENOSPC */
	uint64_t bump_allocs;     /* bump allocations handed out */
	uint64_t bump_failed;     /* bump_alloc calls that returned -ENOSPC */
	uint64_t bump_resets;
	uint64_t bump_acks;       /* current-epoch bump spans given back */
	uint64_t returned;        /* spans taken off return rings */
	/* Refused spans, by reason; each refusal counts once. */
	uint64_t refused_region;  /* PORTAL_EXDEV */
	uint64_t refused_range;   /* PORTAL_ERANGE */
	uint64_t refused_forged;  /* PORTAL_EFORGED */
	uint64_t refused_stale;   /* PORTAL_ESTALE, block allocated */
	uint64_t refused_double;  /* PORTAL_ESTALE, block already free */
	uint64_t recovered;       /* blocks freed by portal_arena_recover */
	uint64_t poison_skipped;  /* poison slots (dead give-backs) reclaim skipped */
	/* Current state. */
	uint32_t blocks_total;
	uint32_t blocks_in_use;
	uint64_t bump_used;       /* bytes of the bump area handed out, with padding */
	uint32_t bump_epoch;
	uint32_t reserved;
};

/* Bytes an arena with these parameters needs; 0 if they are invalid. */
PORTAL_API size_t portal_arena_memsize(const struct portal_arena_params *p);

/*
 * Lay out an empty arena in MEM (LEN bytes, 64-byte aligned), which starts
 * REGION_OFFSET bytes into region REGION_ID: spans carry offsets from the
 * region start. Writes the shared header; does not touch the blocks. With
 * OUT non-NULL, also returns the owner handle (all blocks free, generation 1
 * or random as p->flags says), to be used by side OWNER_SIDE only.
 * Only on memory no peer holds spans into: a restarting owner re-attaches.
 * Returns 0, -EINVAL (bad params or arguments, LEN too small, MEM
 * misaligned, REGION_OFFSET + size overflows), -ENOMEM, or a negative errno
 * from getrandom (PORTAL_ARENA_F_RANDOM_GEN only).
 */
PORTAL_API int portal_arena_init(void *mem, size_t len, uint64_t region_offset,
				 uint32_t region_id, const struct portal_arena_params *p,
				 uint32_t owner_side, portal_arena_t **out);

/*
 * Take ownership of the arena laid out in MEM (an owner restarting, or the
 * owner of an arena another side placed). The header is validated and
 * copied into the handle; every block starts free, at a random generation,
 * and the bump area starts empty at a random epoch (see the top of this
 * file). Returns 0, -EINVAL (bad arguments), -ENOMEM, a negative errno from
 * getrandom, or PORTAL_EPROTO: header corrupt (magic, version, flags,
 * nclasses, sizes, a class or the bump area outside the object, unaligned,
 * overlapping another, classes not in increasing size, more than
 * PORTAL_ARENA_MAX_BLOCKS blocks).
 */
PORTAL_API int portal_arena_attach(void *mem, size_t len, uint64_t region_offset,
				   uint32_t region_id, portal_arena_t **out);

/* Free the owner handle (not the memory). Outstanding spans stay valid for
 * receivers to read, and are refused by the next owner. NULL is fine. */
PORTAL_API void portal_arena_detach(portal_arena_t *a);

/*
 * Region glue. create (region creator only): place an arena named NAME
 * owned by OWNER_SIDE and lay it out. With OWNER_HANDLE non-NULL the caller
 * must be OWNER_SIDE and gets the owner handle; otherwise the owner side
 * takes it later with portal_arena_open.
 * Returns as portal_arena_memsize (0: -EINVAL), portal_region_alloc and
 * portal_arena_init; -EINVAL also when OWNER_HANDLE is given and this side
 * is not OWNER_SIDE. If init fails (e.g. -ENOMEM for the handle), no entry
 * is published and the space is not reused.
 * Memory order: the header is written inside portal_region_alloc_init,
 * before the directory entry is published, so a peer that finds the name
 * finds a complete header; receivers never need the header anyway
 * (portal_arena_resolve uses the entry).
 * open: find NAME and portal_arena_attach it. Returns as
 * portal_region_lookup and portal_arena_attach; -EPERM when this side is not
 * the owner named in the directory, PORTAL_EPROTO when the header names
 * another owner.
 */
PORTAL_API int portal_arena_create(portal_region_t *reg, const char *name,
				   const struct portal_arena_params *p, uint32_t owner_side,
				   portal_arena_t **owner_handle);
PORTAL_API int portal_arena_open(portal_region_t *reg, const char *name,
				 portal_arena_t **owner_handle);

/*
 * Owner: allocate a block for LEN bytes from the smallest class whose
 * block_size >= LEN, or from the next larger class with a free block.
 * *SPAN gets (region id, region offset, LEN, generation, flags 0) and *PTR
 * (if not NULL) the block's address in this process. The block is not
 * cleared. Returns 0, -EINVAL (LEN 0 or NULL arguments), -EMSGSIZE (LEN
 * exceeds the largest class), -ENOSPC (no free block big enough; counted),
 * -EPROTO (the handle's private free list is inconsistent: a bug or a stray
 * write in this process, logged; cannot come from a peer).
 */
PORTAL_API int portal_arena_alloc(portal_arena_t *a, size_t len, struct portal_span *span,
				  void **ptr);

/*
 * Owner: take back the block SPAN names, after checking it, in this order:
 *   PORTAL_EXDEV    span->region_id is not this arena's region
 *   PORTAL_EFORGED  unknown flag bits
 *   PORTAL_ERANGE   [offset, offset + length) not inside the block area (or,
 *                   with PORTAL_SPAN_F_BUMP, the bump area); overflow-safe
 *   PORTAL_EFORGED  not on a block boundary of the class it falls in (or in
 *                   a gap between classes), or length > that block_size
 *   PORTAL_ESTALE   generation is not the block's current one, or the block
 *                   is already free (a double free)
 * and for a bump span, after the range check: PORTAL_ESTALE if it is not of
 * the current epoch (e.g. from before portal_arena_bump_reset), then
 * PORTAL_EFORGED if it lies beyond what this epoch handed out.
 * Each refusal bumps its counter and changes nothing else. On success the
 * block is free and its generation bumped (never to 0): every copy of the
 * span is stale from now on. A current bump span is accepted as an
 * acknowledgement (counted in bump_acks; bump memory comes back only with
 * portal_arena_bump_reset). Returns 0, -EINVAL (NULL), or one of the above
 * (-EPROTO as for portal_arena_alloc).
 */
PORTAL_API int portal_arena_free(portal_arena_t *a, const struct portal_span *span);

/*
 * Owner: carve LEN bytes aligned to ALIGN (a power of two up to
 * PORTAL_ARENA_MAX_ALIGN; 0 means 8) from the bump area, for data that
 * lives as long as one call. The alignment is of the region offset, so the
 * address is aligned when the region base is (a mapping is page-aligned).
 * The span has PORTAL_SPAN_F_BUMP and the bump epoch as its generation.
 * Returns 0, -EINVAL (LEN 0, bad ALIGN, NULL), -EMSGSIZE (LEN larger than the
 * whole bump area or UINT32_MAX), -ENOSPC (not enough left until the next
 * reset; counted).
 */
PORTAL_API int portal_arena_bump_alloc(portal_arena_t *a, size_t len, size_t align,
				       struct portal_span *span, void **ptr);

/*
 * Owner: empty the bump area and start a new epoch. Every bump span handed
 * out before becomes invalid (given back, it is refused as stale) and its
 * memory is reused, so call it only when every receiver is done with those
 * spans (for example when all replies of the calls that used them are in).
 */
PORTAL_API void portal_arena_bump_reset(portal_arena_t *a);

/*
 * Owner, as the consumer of RETURN_RING (slot size
 * PORTAL_ARENA_RETURN_SLOT): take up to MAX spans and portal_arena_free
 * each one. A refused span is counted, not fatal. Returns the number of
 * spans taken off the ring (freed, refused, or poison slots left by a
 * receiver that died mid give-back and was recovered, skipped and counted
 * in poison_skipped): less than MAX means the ring was empty. -EINVAL
 * (NULL, wrong slot size, or not the consumer), or the ring's error
 * (PORTAL_EPROTO: the receiver corrupted the ring, now quarantined) if it
 * comes before any span was taken - also when MAX is 0.
 * Memory order: acquire, through the ring: the receiver's reads of a block
 * happen before the block is reused.
 */
PORTAL_API int portal_arena_reclaim(portal_arena_t *a, portal_ring_t *return_ring, unsigned max);

/*
 * Receiver, as a producer of RETURN_RING: give SPAN back to its owner.
 * Returns 0, -EAGAIN (ring full; try again later), -EINVAL (NULL, wrong slot
 * size or role), PORTAL_EPROTO (ring quarantined).
 * Memory order: release, through the ring: stop touching the block first.
 * Exclusion: one thread per ring handle; several receivers need an MPSC ring.
 */
PORTAL_API int portal_arena_give_back(portal_ring_t *return_ring, const struct portal_span *span);
/* The same for N spans, one ring publish per 16. Returns the number
 * enqueued (0 when full; fewer than N when the ring filled up), -EINVAL, or
 * PORTAL_EPROTO if that comes before any span was enqueued. */
PORTAL_API int portal_arena_give_back_burst(portal_ring_t *return_ring,
					    const struct portal_span *spans, unsigned n);

/*
 * Receiver: check that SPAN lies inside the arena described by ARENA_OBJ, a
 * directory entry from portal_region_lookup (never the owner-written
 * header), past its header, in region REGION_ID mapped at REGION_BASE, and
 * give its address. It does not check generations (only the owner knows
 * them): the receiver must copy data it cannot trust to stay unchanged.
 * Returns 0, -EINVAL (NULL, not an arena, extent overflows, unknown span
 * flags), PORTAL_EXDEV, PORTAL_ERANGE.
 */
PORTAL_API int portal_arena_resolve(const struct portal_object_info *arena_obj,
				    uint32_t region_id, void *region_base,
				    const struct portal_span *span, void **ptr);

/*
 * Crash recovery of blocks held by a dead receiver (docs/recovery.md).
 *
 * Owner: note that the block SPAN names has been sent to receiver HOLDER
 * (any number the owner picks for the receiver, e.g. its participant
 * side) as element SEQ of the stream that carries spans to it: SEQ must
 * grow in the order the receiver takes spans, and say how far it got, e.g.
 * portal_ring_position() of the send ring before the span's enqueue. A
 * block sent again is re-tagged; a block freed loses its tag. Call it
 * before or after the send, but before any recovery of HOLDER.
 * Returns 0, -EINVAL (NULL, or a bump span), -ENOMEM (the tag table is
 * allocated on first use: 12 bytes a block), or the refusals of
 * portal_arena_free (PORTAL_EXDEV, PORTAL_ERANGE, PORTAL_EFORGED,
 * PORTAL_ESTALE: not a block this arena has handed out; not counted).
 */
PORTAL_API int portal_arena_mark_sent(portal_arena_t *a, const struct portal_span *span,
				      uint32_t holder, uint64_t seq);

/*
 * Owner: receiver HOLDER died having taken from its stream every span
 * sent with SEQ < TAKEN (for a descriptor send ring: its consumer
 * position, portal_ring_peer_position() read after the death). Free every
 * block tagged with HOLDER and SEQ < TAKEN that has not come back, bumping
 * its generation, so a give-back from the dead receiver that is still in
 * a return ring, or comes late, is refused as PORTAL_ESTALE. Blocks sent
 * at SEQ >= TAKEN are still unread in the stream: they stay allocated and
 * valid for the receiver's next life, which will find them there.
 * Drain the return ring with portal_arena_reclaim first, so the spans the
 * receiver did give back are freed as returns rather than refused.
 * Returns the number of blocks freed (counted in frees and recovered), or
 * -EINVAL (NULL).
 * Exclusion: the owner handle, like every owner call.
 */
PORTAL_API int portal_arena_recover(portal_arena_t *a, uint32_t holder, uint64_t taken);

/* Owner: copy the counters. */
PORTAL_API void portal_arena_stats(const portal_arena_t *a, struct portal_arena_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* PORTAL_ARENA_H */
