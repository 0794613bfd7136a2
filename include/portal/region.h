/* SPDX-License-Identifier: MIT */
/*
 * portal/region.h - shared regions: create, attach, detach, destroy; the
 * directory of named objects; participant slots.
 *
 * A region is one contiguous shared mapping laid out as in portal/abi.h:
 * a 4 KiB header (magic, version, size, epoch, checksum, participant slots),
 * a directory of named objects, then the objects themselves. The backend
 * that maps it is chosen by a URI:
 *
 *   shm:NAME      POSIX shared memory (/dev/shm/NAME); the default when the
 *                 URI has no scheme
 *   memfd:NAME    an anonymous memfd, shared by fork or by passing its fd
 *                 (portal_region_fd)
 *   file:/path    any file: a plain host file, a hugetlbfs file, or the file
 *                 QEMU maps as memory-backend-file for ivshmem or virtio-pmem
 *   fd:N          attach only: an inherited file descriptor (memfd, shm, file)
 *   ivshmem:[ADDR]  inside a QEMU guest: BAR2 of an ivshmem-plain or
 *                 ivshmem-doorbell PCI device (1af4:1110), the first one in
 *                 address order, or the one at ADDR ("0000:00:04.0"); the
 *                 region is the whole BAR. The host side is file: on the
 *                 memory-backend-file
 *   pmem:/dev/daxN.M  inside a guest: a device-dax instance (virtio-pmem
 *                 configured as devdax), mapped directly; the region is the
 *                 whole device, in whole units of its alignment
 *   pmem:/path    inside a guest: a file on a filesystem mounted with DAX;
 *                 -EOPNOTSUPP if the file is not DAX
 *
 * Windows. file:, fd: and pmem: take a query that maps part of the backing:
 *   ?offset=N     start N bytes in (file: a page multiple; devdax: a
 *                 multiple of the alignment); N may end in k, M or G
 *   ?size=N       N bytes (default: to the end)
 *   ?devdax       file: only: the file is a virtio-pmem image whose
 *                 namespace a guest made devdax; map the data area that the
 *                 NVDIMM_DAX_INFO block at byte 4096 describes (offsets in
 *                 the same query count from there). This is the host's side
 *                 of pmem:/dev/daxN.M: byte k of the device is byte k here
 * e.g. "file:/var/lib/vm/pmem.img?devdax", "file:/dev/shm/x?offset=2M".
 * A window is laid into an existing backing: create never makes, truncates
 * or resizes it (opts.size must be 0 or the window's size, F_EXCL is
 * -EINVAL), and destroy refuses it (-EOPNOTSUPP). In a file: path, '?'
 * always starts the query.
 *
 * The backing outlives every handle: detach leaves it, and
 * portal_region_destroy removes it (not for ivshmem: and pmem:, whose memory
 * belongs to the host: -EOPNOTSUPP).
 *
 * Concurrency: one portal_region_t is used by one thread at a time for
 * create/alloc/detach; lookup, base, heartbeat, check_self and the
 * liveness watch calls (each watch used by one thread at a time) may run
 * concurrently. The creator (side 0) is the only side that adds directory
 * entries.
 *
 *   call                          may run concurrently with
 *   create, attach*, detach       nothing else on the handle
 *   alloc, alloc_init             lookup, heartbeat, watch_* (creator only)
 *   lookup, participant, base...  anything but detach
 *   heartbeat, check_self         anything but detach (and each other)
 *   heartbeat_start / _stop       anything but detach; not each other
 *   watch_open / _close           anything but detach
 *   watch_status / _rearm / _fd   one thread per watch
 *
 * Liveness (docs/liveness.md). Each participant's slot carries its state, a
 * random epoch that is new at every attach, and a heartbeat counter. On a
 * backing with an fd (shm:, memfd:, fd:, file:, pmem: files) attach takes an
 * OFD write lock on the slot's byte of the backing file through a private
 * close-on-exec descriptor; the kernel drops it when the process dies, so a
 * peer on the same kernel tests it (portal_region_watch_*) and knows. A
 * forked child inherits that descriptor and keeps its parent "alive" until
 * it exits or execs. Across a VM boundary, or without an fd, a survivor
 * judges by a stalled heartbeat on its own clock.
 */
#ifndef PORTAL_REGION_H
#define PORTAL_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portal/abi.h"
#include "portal/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct portal_region portal_region_t;

#define PORTAL_REGION_F_EXCL     0x1u /* create: fail with -EEXIST if it exists */
#define PORTAL_REGION_F_READONLY 0x2u /* attach: map read-only, take no slot (observers) */
/* create, attach, attach_mem: we are a guest (a VM as a whole): record kind
 * PORTAL_PART_VM and pid 0, take no OS lock; peers judge us by heartbeat
 * (start portal_region_heartbeat_start). */
#define PORTAL_REGION_F_VM       0x4u
#define PORTAL_REGION_F_MASK     0x7u

struct portal_region_opts {
	uint64_t size;          /* create: total bytes; 0 = 1 MiB (file:, ivshmem:,
	                         * pmem: and windows: the backing's size). Rounded
	                         * up to a page */
	uint32_t dir_capacity;  /* create: directory entries; 0 = 64 */
	uint32_t part_count;    /* create: participant slots; 0 = 2 */
	uint32_t region_id;     /* create: 0 = random nonzero */
	uint32_t side;          /* attach: participant slot to take, 1..part_count-1; 0 = 1 */
	uint32_t flags;         /* PORTAL_REGION_F_* */
	const char *ident;      /* free text stored in our participant slot (at
	                         * most 23 bytes kept); may be NULL */
};

/*
 * Create a region at URI and take side 0. The header, directory and slots
 * are written before anything else can attach. Creating over an existing
 * region (without PORTAL_REGION_F_EXCL) reformats it with a new epoch; never
 * do that while peers still map it (a smaller size would fault them): use
 * F_EXCL, or portal_region_destroy first.
 * Returns 0, -EINVAL (bad URI, size or flags; a device or window whose
 * size is not opts->size), -EEXIST (F_EXCL and it exists; always for
 * ivshmem: and pmem:), -EBUSY (the existing backing's side 0 is held by a
 * live creator on this kernel: its OS lock; nothing was written), or a
 * negative errno from the backend.
 */
PORTAL_API int portal_region_create(const char *uri, const struct portal_region_opts *opts,
				    portal_region_t **out);

/*
 * Attach to an existing region at URI and take side opts->side (opts may be
 * NULL for side 1). The header and every directory entry are validated;
 * attach refuses, each with its own code:
 *   PORTAL_EMAGIC     wrong magic (not a Portal region)
 *   PORTAL_EVERSION   unsupported major version
 *   PORTAL_ESIZE      header size differs from the mapping, or file truncated
 *   PORTAL_ECHECKSUM  header or directory entry checksum wrong
 *   PORTAL_EDIR       a directory entry out of bounds, overlapping another,
 *                     or of an unknown kind
 *   -EBUSY            the participant slot is held by a live participant:
 *                     its OS lock is held (a live process on this kernel,
 *                     including this one through another handle), or,
 *                     for an owner that holds no lock we can test, its
 *                     state is JOINING or its pid runs here; or another
 *                     attacher is claiming it right now
 * A slot left ACTIVE or JOINING by an owner whose OS lock is free (it died)
 * is taken over with a new epoch; so is one whose owner holds no lock we can
 * test and whose pid does not run here (a VM's slot, pid 0: judge it with a
 * watch before re-using its side). Two attachers never both win a slot: the
 * OS lock and a compare-and-swap on `state` decide.
 *   -ENOENT           no such region; -EINVAL bad arguments
 */
PORTAL_API int portal_region_attach(const char *uri, const struct portal_region_opts *opts,
				    portal_region_t **out);

/*
 * Validate memory that is already mapped (an ivshmem BAR, a DAX mapping, a
 * buffer under test) and attach to it as opts->side. The caller keeps
 * ownership of the mapping. Same errors as portal_region_attach.
 */
PORTAL_API int portal_region_attach_mem(void *base, size_t len,
					const struct portal_region_opts *opts,
					portal_region_t **out);

/* Check a mapping's header and directory without attaching. Same errors. */
PORTAL_API int portal_region_validate(const void *base, size_t len);

/*
 * Mark our participant slot gone, unmap, free the handle. The backing stays
 * (portal_region_destroy removes it). Returns 0. Safe with NULL.
 */
PORTAL_API int portal_region_detach(portal_region_t *r);

/* Remove the backing object named by URI (shm_unlink / unlink). Returns 0,
 * -ENOENT, or another negative errno. memfd: regions vanish with their fds. */
PORTAL_API int portal_region_destroy(const char *uri);

PORTAL_API void *portal_region_base(const portal_region_t *r);
PORTAL_API size_t portal_region_size(const portal_region_t *r);
PORTAL_API uint64_t portal_region_epoch(const portal_region_t *r);
PORTAL_API uint32_t portal_region_id(const portal_region_t *r);
PORTAL_API uint32_t portal_region_side(const portal_region_t *r);
/* The backing fd (memfd, shm or file), to pass to another process; -1 if
 * the region was attached from memory. Owned by the region. */
PORTAL_API int portal_region_fd(const portal_region_t *r);

/* What a directory entry says, copied out and validated. */
struct portal_object_info {
	char name[PORTAL_NAME_MAX];
	uint32_t kind;        /* enum portal_obj_kind */
	uint32_t owner_side;
	uint64_t offset;      /* from region start */
	uint64_t size;
	uint64_t param[6];
	void *addr;           /* base + offset, in this process */
};

/*
 * Creator only: place an object of SIZE bytes named NAME, aligned to ALIGN
 * (0 = 128; a power of two), zero it, and publish its directory entry.
 * Returns 0 with *info filled, -EINVAL, -EEXIST (name taken), -ENOSPC
 * (directory or region full), -EPERM (not the creator).
 * Memory order: the entry is published with release after the memory is
 * zeroed; a lookup that finds it also sees the zeroes.
 */
PORTAL_API int portal_region_alloc(portal_region_t *r, const char *name, uint32_t kind,
				   uint64_t size, uint64_t align, uint32_t owner_side,
				   const uint64_t param[6], struct portal_object_info *info);

/* Lays out an object in freshly zeroed memory at OFFSET from the region
 * start; returns 0 or a negative errno. */
typedef int (*portal_object_init_fn)(void *mem, size_t len, uint64_t offset, void *arg);

/*
 * As portal_region_alloc, but INIT(mem, size, offset, arg) runs on the zeroed object
 * before its entry is published, so no peer can find a half-built object.
 * An INIT failure is returned and the object is not published (its space is
 * not reused). INIT may be NULL.
 */
PORTAL_API int portal_region_alloc_init(portal_region_t *r, const char *name, uint32_t kind,
					uint64_t size, uint64_t align, uint32_t owner_side,
					const uint64_t param[6], portal_object_init_fn init,
					void *arg, struct portal_object_info *info);

/*
 * Find NAME in the directory (kind 0 matches any kind). The entry is copied
 * and re-validated: checksum, bounds, kind.
 * Returns 0, -ENOENT, PORTAL_ECHECKSUM or PORTAL_EDIR.
 */
PORTAL_API int portal_region_lookup(const portal_region_t *r, const char *name, uint32_t kind,
				    struct portal_object_info *info);

/*
 * Bump our heartbeat counter and mark the slot as heartbeating
 * (PORTAL_PART_F_HEARTBEAT). Cheap: two relaxed atomic operations on our
 * own slot and a check of our epoch; no system call.
 * Returns 0, -EINVAL (NULL, or a handle with no slot: read-only), or
 * PORTAL_ESTALE: our slot carries another epoch, or is no longer ACTIVE. We
 * were declared dead (a paused VM, a stalled process) and another
 * incarnation took our side over: stop using the region, detach (which then
 * leaves the slot alone) and re-attach if wanted. Nothing is written then.
 * Memory order: relaxed; a watcher only asks "did it move" on its own clock.
 */
PORTAL_API int portal_region_heartbeat(portal_region_t *r);

/*
 * Is our slot still ours? Returns 0 (it carries our epoch and is ACTIVE),
 * PORTAL_ESTALE (fenced, as for heartbeat; also once the heartbeat thread
 * found it so), or -EINVAL (no slot). Loads with acquire (pairs with the
 * release of a new owner's claim).
 */
PORTAL_API int portal_region_check_self(const portal_region_t *r);

/* Default period of portal_region_heartbeat_start. */
#define PORTAL_HEARTBEAT_PERIOD_NS_DEFAULT 100000000 /* 100 ms */

/*
 * Start a helper thread (128 KiB stack, all signals blocked) that calls
 * portal_region_heartbeat every PERIOD_NS (0 = the default; at least 1 ms),
 * after one beat made before it returns (so the slot already says
 * PORTAL_PART_F_HEARTBEAT).
 * It stops by itself when heartbeat returns PORTAL_ESTALE (then
 * portal_region_check_self says so), and portal_region_heartbeat_stop or
 * detach stops it. Returns 0, -EINVAL (no slot, bad period), -EALREADY
 * (running), PORTAL_ESTALE (already fenced), or a negative errno from
 * thread creation.
 */
PORTAL_API int portal_region_heartbeat_start(portal_region_t *r, int64_t period_ns);

/* Stop the heartbeat thread and wait for it; no-op if none. */
PORTAL_API void portal_region_heartbeat_stop(portal_region_t *r);

struct portal_participant_info {
	uint32_t state;       /* enum portal_part_state */
	uint32_t kind;        /* enum portal_part_kind */
	uint64_t epoch;
	uint64_t heartbeat;
	uint64_t pid;
	char ident[32];       /* NUL terminated (the slot keeps 23 bytes) */
	uint32_t flags;       /* enum portal_part_flags */
	uint32_t reserved;
	uint64_t lock_key;
};

/* Copy participant SIDE's slot. Returns 0 or -EINVAL.
 * Memory order: state with acquire, then the fields (pairs with the
 * owner's release of ACTIVE). */
PORTAL_API int portal_region_participant(const portal_region_t *r, uint32_t side,
					 struct portal_participant_info *out);

/* ---- liveness: watching a peer ---------------------------------------- */

/* Methods a watch may use (struct portal_liveness_opts.methods). */
#define PORTAL_LIVENESS_LOCK      0x1u /* OFD lock on the peer's slot byte */
#define PORTAL_LIVENESS_PIDFD     0x2u /* a pidfd for the peer's pid: a
                                        * pollable hint, verified by the lock */
#define PORTAL_LIVENESS_HEARTBEAT 0x4u /* heartbeat stalled for stall_ns */
#define PORTAL_LIVENESS_ALL       0x7u

/* Default stall after which a heartbeat-judged peer is dead. */
#define PORTAL_LIVENESS_STALL_NS_DEFAULT 1000000000 /* 1 s */

struct portal_liveness_opts {
	uint32_t methods;   /* PORTAL_LIVENESS_* mask; 0 = all */
	uint32_t flags;     /* reserved, must be 0 */
	int64_t stall_ns;   /* heartbeat: dead when the counter has not moved
	                     * for this long on OUR monotonic clock; 0 = default */
};

/* What a watch says about its peer. */
enum portal_peer_state {
	PORTAL_PEER_ABSENT    = 0, /* slot FREE: nobody has attached yet */
	PORTAL_PEER_ALIVE     = 1, /* the watched incarnation lives (or cannot
	                            * be judged: method NONE) */
	PORTAL_PEER_DEAD      = 2, /* it died without detaching: lock free, or
	                            * heartbeat stalled; or its slot is being
	                            * re-claimed (JOINING, old epoch) */
	PORTAL_PEER_RESTARTED = 3, /* the slot carries another epoch: a new
	                            * incarnation; our handles into the old one
	                            * are stale (see portal_region_watch_rearm) */
	PORTAL_PEER_GONE      = 4, /* it detached cleanly */
};

enum portal_liveness_method {
	PORTAL_LIVENESS_NONE        = 0, /* nothing to judge by: a peer on
	                                  * another kernel, or without a lock we
	                                  * can test, that never heartbeats */
	PORTAL_LIVENESS_BY_LOCK     = 1,
	PORTAL_LIVENESS_BY_HEARTBEAT = 2,
};

struct portal_peer_status {
	uint32_t state;         /* enum portal_peer_state */
	uint32_t method;        /* enum portal_liveness_method that decided */
	uint64_t epoch;         /* the epoch in the slot now */
	uint64_t watched_epoch; /* the incarnation being watched (0: none yet) */
	uint64_t heartbeat;     /* the counter now */
	int64_t stalled_ns;     /* heartbeat method: how long it has not moved */
};

typedef struct portal_peer_watch portal_peer_watch_t;

/*
 * Start watching participant SIDE of region R (R must outlive the watch; a
 * read-only observer may watch). Records the slot's epoch if it is ACTIVE
 * (else the first ACTIVE epoch seen later), the heartbeat and our clock,
 * and, for a peer judged by the lock, opens a pidfd for its pid if it can
 * (Linux >= 5.3, same pid namespace; silently none otherwise).
 * OPTS may be NULL. Returns 0 with *OUT, -EINVAL (bad side, flags or
 * stall_ns < 0), or -ENOMEM.
 */
PORTAL_API int portal_region_watch_open(const portal_region_t *r, uint32_t side,
					const struct portal_liveness_opts *opts,
					portal_peer_watch_t **out);

/*
 * Judge the watched peer now. The method is chosen per call from what the
 * slot says and OPTS allow: the lock when the peer holds one on our kernel
 * and file (its lock_key equals ours) and we have the region's fd; else the
 * heartbeat when the peer heartbeats; else none (ALIVE is reported). The
 * lock answer is exact and immediate; the heartbeat answer is DEAD only
 * after stall_ns without a move, measured on our clock (peer timestamps are
 * never used). One F_OFD_GETLK system call with the lock, none otherwise.
 * Returns 0 with *ST filled, or -EINVAL.
 * Memory order: `state` with acquire (pairs with the owner's release at
 * claim and detach), then the fields. A free lock is re-checked against a
 * fresh `state` load: detach stores GONE before it drops the lock, so a
 * clean detach is never reported DEAD.
 * A lock verdict of DEAD can come a moment before the dead process can be
 * reaped and before its pidfd is readable (the kernel drops its locks while
 * closing its files, then makes it a zombie): a parent that reaps on DEAD
 * waits for the exit, it does not look once with WNOHANG.
 */
PORTAL_API int portal_region_watch_status(portal_peer_watch_t *w, struct portal_peer_status *st);

/*
 * After RESTARTED: the caller has dropped what it held from the old
 * incarnation (ring and doorbell handles, spans, indices: re-open them) and
 * now watches the new one. Records the slot's current epoch (0 if not
 * ACTIVE) and re-opens the pidfd. Returns 0 or -EINVAL.
 */
PORTAL_API int portal_region_watch_rearm(portal_peer_watch_t *w);

/*
 * A pidfd for the watched peer (readable once that process has exited), to
 * add to a poll set beside a doorbell fd; or -1 when there is none (another
 * kernel or pid namespace, no pidfd support, heartbeat-judged peer, or the
 * pidfd was dropped because it fired while the lock was still held: a
 * forked child keeps the lock). Owned by the watch: do not close it; it may
 * change after watch_status or watch_rearm. It is only a hint: after it
 * fires, call portal_region_watch_status for the verdict.
 */
PORTAL_API int portal_region_watch_fd(const portal_peer_watch_t *w);

/* Close the pidfd and free the watch. NULL is fine. */
PORTAL_API void portal_region_watch_close(portal_peer_watch_t *w);

#ifdef __cplusplus
}
#endif
#endif /* PORTAL_REGION_H */
