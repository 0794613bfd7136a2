/* SPDX-License-Identifier: MIT */
/*
 * sys_dpdk.c - DPDK's rte_ring as a peer, across processes, without the EAL:
 *
 *   rte_ring       SP/SC rings (RING_F_SP_ENQ | RING_F_SC_DEQ)
 *   rte_ring-mpmc  the default MP/MC rings; several producer processes
 *                  enqueue with the MP call
 *
 * What runs without the EAL. rte_ring_create() needs it (the ring lives in a
 * memzone and is listed in the EAL's tailq), so setup does not call it.
 * rte_ring_get_memsize_elem() and rte_ring_init() are plain functions of
 * librte_ring: they compute a size and write the ring's header into memory
 * we give them, touching no EAL state (no lcore, no hugepage, no memzone).
 * Every enqueue/dequeue call used here is inline in the headers and works
 * on the ring it is handed and nothing else. The ring holds no pointer into
 * itself: the elements are addressed as &r[1], and the one pointer field,
 * memzone, stays NULL after rte_ring_init() and is read only by
 * rte_ring_free(), which we never call. So setup makes a POSIX shared-memory
 * file (shm_open, the name in env->arg), rte_ring_init()s the rings in it,
 * and every side maps the file wherever mmap puts it.
 *
 * The file: a header page, then ring "down" and ring "up" for messages (one
 * per direction), then ring "burst" of env->slot-byte elements (the _elem
 * API, the same fixed payloads as Portal's descriptor rings). Each ring
 * starts on a page.
 *
 * Messages (round trips, open-loop load). rte_ring elements have one fixed
 * size per ring, so a message needs a length with it:
 *   SP/SC: rte_ring's zero-copy API (rte_ring_enqueue_zc_burst_elem_start /
 *          _finish, the same for dequeue), which DPDK offers for the SP/SC
 *          and HTS modes. One element per message: 8 bytes of length, then
 *          up to BENCH_MAX_PAYLOAD bytes, 4160 bytes in all so every element
 *          starts on a cache line. reserve hands out the element inside the
 *          ring, peek likewise; only the bytes written are touched.
 *   MP/MC: the zero-copy API does not exist for the default MP/MC mode, so
 *          the message is copied, as an MP/MC rte_ring user copies: staged
 *          in a per-connection buffer, then enqueued as 16-byte elements
 *          (the size rte_ring copies with 128-bit moves), the length in the
 *          first, in one bulk call (all or nothing). The consumer dequeues
 *          the first element, then the rest with a second bulk call: the
 *          producer moved prod.tail once for all of them, so they are there.
 *          That holds with one consumer at a time, which is how every
 *          scenario runs (BSYS_F_MC picks the MC call, not extra consumers).
 *          Both directions use the ring's own MP/MC mode (the generic
 *          calls), so the round-trip row shows what that mode costs.
 *
 * Bursts (streaming, several producers): rte_ring_{sp,mp}_enqueue_burst_elem
 * and rte_ring_{sc,mc}_dequeue_burst_elem with element size env->slot; the
 * MP and MC calls when the open flags ask for them (as Portal's MP/MC ring
 * does), the SP/SC calls otherwise.
 *
 * Configuration, chosen as a DPDK user tuning for this would: 4096-element
 * burst rings (Portal's descriptor rings have 4096 slots), message rings of
 * about 256 KiB (Portal's message rings: 256 KiB), the file mapped with
 * MAP_POPULATE so no page fault lands in a measurement. Without the EAL there
 * are no hugepages: ordinary shm pages, as Portal's shm: region uses.
 * rte_ring has no blocking mode, hence no BSYS_BLOCK.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define RR_WHAT_SPSC "DPDK rte_ring SP/SC in shared memory, no EAL (zero-copy messages, _elem bursts)"
#define RR_WHAT_MPMC "DPDK rte_ring MP/MC in shared memory, no EAL (copied messages, _elem bursts)"
#define RR_CAPS      (BSYS_RTT | BSYS_STREAM | BSYS_BURST)

#ifdef BENCH_HAVE_DPDK

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rte_ring.h>
#include <rte_ring_elem.h>

#define RR_MAGIC       0x72696e67u /* "ring" */
#define RR_PAGE        4096u
#define RR_LINE        64u
#define RR_HDR         8u          /* message length (u32), then 4 bytes unused */
#define RR_ZC_ESIZE    ((RR_HDR + BENCH_MAX_PAYLOAD + RR_LINE - 1) / RR_LINE * RR_LINE)
#define RR_ZC_COUNT    64u         /* SP/SC message elements: 63 in flight, 266 KiB */
#define RR_CELL        16u         /* MP/MC message element */
#define RR_CELL_COUNT  16384u      /* 256 KiB */
#define RR_MAX_CELLS   ((RR_HDR + BENCH_MAX_PAYLOAD + RR_CELL - 1) / RR_CELL)
#define RR_STAGE       ((RR_MAX_CELLS * RR_CELL + RR_LINE - 1) / RR_LINE * RR_LINE)
#define RR_BURST_COUNT 4096u
#define RR_SLOT_MAX    65536

_Static_assert(RR_ZC_ESIZE % 4 == 0 && RR_ZC_ESIZE % RR_LINE == 0, "zero-copy element size");
_Static_assert(RR_MAX_CELLS < RR_CELL_COUNT, "a message fits the cell ring");

enum { RR_DOWN, RR_UP, RR_BURST, RR_NRINGS };

/* The file's first page, written by setup before any side exists. */
struct rr_file {
	uint32_t magic;
	uint32_t mpmc;             /* 1: the rte_ring-mpmc layout */
	uint32_t slot;             /* burst element size */
	uint32_t pad;
	uint64_t size;             /* of the whole file */
	uint64_t off[RR_NRINGS];   /* each ring's offset */
};

/* A message as it sits in an element (zero-copy) or in the staged cells. */
struct rr_msg {
	uint32_t len;
	uint32_t pad;
	uint8_t data[];
};

_Static_assert(sizeof(struct rr_msg) == RR_HDR, "rr_msg header");

struct rr_conn {
	uint8_t *base;
	size_t size;
	struct rte_ring *tx, *rx, *burst;
	unsigned slot;
	bool mp, mc;               /* bursts: the MP enqueue / MC dequeue call */
	struct rr_msg *tx_zc;      /* SP/SC: element between reserve and commit */
	struct rr_msg *rx_zc;      /* SP/SC: element between peek and release */
	bool rx_held;              /* MP/MC: rxbuf holds a peeked message */
	struct rr_msg *txbuf, *rxbuf; /* MP/MC: RR_MAX_CELLS cells each */
};

static uint32_t rr_cells(uint32_t len)
{
	return (RR_HDR + len + RR_CELL - 1) / RR_CELL;
}

static uint64_t rr_page_up(uint64_t n)
{
	return (n + RR_PAGE - 1) / RR_PAGE * RR_PAGE;
}

/* The layout follows from (mpmc, slot) alone; both sides compute it. */
static int rr_layout(bool mpmc, uint32_t slot, struct rr_file *f)
{
	unsigned mesize = mpmc ? RR_CELL : RR_ZC_ESIZE, mcount = mpmc ? RR_CELL_COUNT : RR_ZC_COUNT;
	ssize_t msz = rte_ring_get_memsize_elem(mesize, mcount);
	ssize_t bsz = rte_ring_get_memsize_elem(slot, RR_BURST_COUNT);
	uint64_t off = RR_PAGE;

	if (msz < 0 || bsz < 0)
		return msz < 0 ? (int)msz : (int)bsz;
	memset(f, 0, sizeof(*f));
	f->magic = RR_MAGIC;
	f->mpmc = mpmc;
	f->slot = slot;
	for (int i = 0; i < RR_NRINGS; i++) {
		f->off[i] = off;
		off += rr_page_up((uint64_t)(i == RR_BURST ? bsz : msz));
	}
	f->size = off;
	return 0;
}

static int rr_fail(int rc, const char *what, char *why, size_t whycap)
{
	snprintf(why, whycap, "%s: %s", what, strerror(-rc));
	return rc;
}

static int rr_setup(struct bsys_env *env, bool mpmc, char *why, size_t whycap)
{
	static const char *const names[RR_NRINGS] = { "down", "up", "burst" };
	/* SP/SC or the default MP/MC mode, for every ring of the file. */
	unsigned flags = mpmc ? 0 : RING_F_SP_ENQ | RING_F_SC_DEQ;
	struct rr_file f;
	uint8_t *base;
	int fd, rc;

	if (env->slot < 4 || env->slot > RR_SLOT_MAX || env->slot % 4) {
		snprintf(why, whycap, "slot size %d: rte_ring elements are a multiple of 4 bytes",
			 env->slot);
		return -EINVAL;
	}
	if ((rc = rr_layout(mpmc, (uint32_t)env->slot, &f)))
		return rr_fail(rc, "rte_ring_get_memsize_elem", why, whycap);
	snprintf(env->arg, sizeof(env->arg), "/portal-bench-rte_ring%s-%d-%d", mpmc ? "-mpmc" : "",
		 env->slot, (int)getpid());
	shm_unlink(env->arg); /* a leftover of a killed run with our pid */
	fd = shm_open(env->arg, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return rr_fail(-errno, "shm_open", why, whycap);
	if (ftruncate(fd, (off_t)f.size) < 0) {
		rc = rr_fail(-errno, "ftruncate", why, whycap);
		goto fail;
	}
	base = mmap(NULL, f.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rc = rr_fail(-errno, "mmap", why, whycap);
		goto fail;
	}
	for (int i = 0; i < RR_NRINGS; i++) {
		unsigned count = i == RR_BURST ? RR_BURST_COUNT : mpmc ? RR_CELL_COUNT : RR_ZC_COUNT;

		rc = rte_ring_init((struct rte_ring *)(base + f.off[i]), names[i], count, flags);
		if (rc) {
			munmap(base, f.size);
			rc = rr_fail(rc, "rte_ring_init", why, whycap);
			goto fail;
		}
	}
	memcpy(base, &f, sizeof(f));
	munmap(base, f.size);
	close(fd);
	return 0;
fail:
	close(fd);
	shm_unlink(env->arg);
	env->arg[0] = '\0';
	return rc;
}

static int rr_setup_spsc(struct bsys_env *env, char *why, size_t whycap)
{
	return rr_setup(env, false, why, whycap);
}

static int rr_setup_mpmc(struct bsys_env *env, char *why, size_t whycap)
{
	return rr_setup(env, true, why, whycap);
}

static void rr_teardown(struct bsys_env *env)
{
	if (env->arg[0])
		shm_unlink(env->arg);
	env->arg[0] = '\0';
}

static void rr_close(void *conn)
{
	struct rr_conn *c = conn;

	if (!c)
		return;
	if (c->base)
		munmap(c->base, c->size);
	free(c->txbuf);
	free(c->rxbuf);
	free(c);
}

static int rr_open(struct bsys_env *env, int side, unsigned flags, void **conn, bool mpmc)
{
	unsigned allowed = mpmc ? BSYS_F_MP | BSYS_F_MC : 0;
	struct rr_file f, want;
	struct rr_conn *c;
	struct stat st;
	int fd, rc;

	if ((side != 0 && side != 1) || (flags & ~allowed))
		return -EINVAL;
	fd = shm_open(env->arg, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto fail;
	}
	if (st.st_size < RR_PAGE) {
		rc = -EPROTO;
		goto fail;
	}
	c->size = (size_t)st.st_size;
	c->base = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (c->base == MAP_FAILED) {
		c->base = NULL;
		rc = -errno;
		goto fail;
	}
	/* Copy the header, then accept it only if it is exactly the layout
	 * we compute ourselves: no offset from the file is used unchecked. */
	memcpy(&f, c->base, sizeof(f));
	if (f.magic != RR_MAGIC || f.mpmc != mpmc || f.slot < 4 || f.slot > RR_SLOT_MAX ||
	    f.slot % 4 || rr_layout(mpmc, f.slot, &want) || memcmp(&f, &want, sizeof(f)) ||
	    f.size != c->size) {
		rc = -EPROTO;
		goto fail;
	}
	c->tx = (struct rte_ring *)(c->base + f.off[side ? RR_UP : RR_DOWN]);
	c->rx = (struct rte_ring *)(c->base + f.off[side ? RR_DOWN : RR_UP]);
	c->burst = (struct rte_ring *)(c->base + f.off[RR_BURST]);
	c->slot = f.slot;
	c->mp = flags & BSYS_F_MP;
	c->mc = flags & BSYS_F_MC;
	if (mpmc) {
		c->txbuf = aligned_alloc(RR_LINE, RR_STAGE);
		c->rxbuf = aligned_alloc(RR_LINE, RR_STAGE);
		if (!c->txbuf || !c->rxbuf) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	close(fd);
	*conn = c;
	return 0;
fail:
	close(fd);
	rr_close(c);
	return rc;
}

static int rr_open_spsc(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	return rr_open(env, side, flags, conn, false);
}

static int rr_open_mpmc(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	return rr_open(env, side, flags, conn, true);
}

/* ---- SP/SC messages: zero-copy, one element each ---- */

static int rr_zc_reserve(void *conn, uint32_t len, void **buf)
{
	struct rr_conn *c = conn;
	struct rte_ring_zc_data zcd;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (!c->tx_zc) {
		/* Moves prod.head only: the element is ours, not yet visible. */
		if (!rte_ring_enqueue_zc_burst_elem_start(c->tx, RR_ZC_ESIZE, 1, &zcd, NULL))
			return -EAGAIN;
		c->tx_zc = zcd.ptr1; /* one element never wraps: ptr2 unused */
	}
	*buf = c->tx_zc->data;
	return 0;
}

static int rr_zc_commit(void *conn, uint32_t len, unsigned flags)
{
	struct rr_conn *c = conn;

	if (flags & BSYS_F_BLOCK)
		return -EOPNOTSUPP;
	if (!c->tx_zc)
		return -EINVAL;
	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	c->tx_zc->len = len;
	/* Write the element, then publish it: _finish stores prod.tail with
	 * release order, paired with the acquire load of prod.tail in the
	 * consumer's rte_ring_dequeue_zc_burst_elem_start (rr_zc_peek). */
	rte_ring_enqueue_zc_elem_finish(c->tx, 1);
	c->tx_zc = NULL;
	return 0;
}

static int rr_zc_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct rr_conn *c = conn;
	struct rte_ring_zc_data zcd;
	uint32_t n;

	if (flags & BSYS_F_BLOCK)
		return -EOPNOTSUPP;
	if (!c->rx_zc) {
		/* Pairs with the release in rr_zc_commit's _finish. */
		if (!rte_ring_dequeue_zc_burst_elem_start(c->rx, RR_ZC_ESIZE, 1, &zcd, NULL))
			return -EAGAIN;
		c->rx_zc = zcd.ptr1;
	}
	n = c->rx_zc->len; /* read once, then check */
	if (n > BENCH_MAX_PAYLOAD)
		return -EPROTO;
	*buf = c->rx_zc->data;
	*len = n;
	return 0;
}

static void rr_zc_release(void *conn)
{
	struct rr_conn *c = conn;

	if (!c->rx_zc)
		return;
	/* Done reading, then give the element back: _finish stores cons.tail
	 * with release order, paired with the producer's acquire load of it in
	 * rte_ring_enqueue_zc_burst_elem_start (rr_zc_reserve). */
	rte_ring_dequeue_zc_elem_finish(c->rx, 1);
	c->rx_zc = NULL;
}

/* ---- MP/MC messages: copied in 16-byte cells ---- */

static int rr_cell_reserve(void *conn, uint32_t len, void **buf)
{
	struct rr_conn *c = conn;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	/* Room now means room at commit while we are the only producer (the
	 * consumer only adds room). With several producers on the message
	 * rings, which no scenario runs, commit may still find it full. */
	if (rte_ring_free_count(c->tx) < rr_cells(len))
		return -EAGAIN;
	*buf = c->txbuf->data;
	return 0;
}

static int rr_cell_commit(void *conn, uint32_t len, unsigned flags)
{
	struct rr_conn *c = conn;

	if (flags & BSYS_F_BLOCK)
		return -EOPNOTSUPP;
	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	c->txbuf->len = len;
	/* The ring's MP mode: copy all cells in, then publish them with one
	 * release store of prod.tail (inside rte_ring), paired with the
	 * consumer's acquire load of it in the dequeue of rr_cell_peek. */
	if (!rte_ring_enqueue_bulk_elem(c->tx, c->txbuf, RR_CELL, rr_cells(len), NULL))
		return -EAGAIN;
	return 0;
}

static int rr_cell_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct rr_conn *c = conn;
	uint32_t n, k;

	if (flags & BSYS_F_BLOCK)
		return -EOPNOTSUPP;
	if (!c->rx_held) {
		/* Pairs with the release of prod.tail in rr_cell_commit. */
		if (!rte_ring_dequeue_bulk_elem(c->rx, c->rxbuf, RR_CELL, 1, NULL))
			return -EAGAIN;
		n = c->rxbuf->len;
		if (n > BENCH_MAX_PAYLOAD)
			return -EPROTO;
		/* The rest went in with the first cell, under the same
		 * prod.tail store: with one consumer it is all there. */
		k = rr_cells(n) - 1;
		if (k && rte_ring_dequeue_bulk_elem(c->rx, (uint8_t *)c->rxbuf + RR_CELL, RR_CELL,
						    k, NULL) != k)
			return -EPROTO;
		c->rx_held = true;
	}
	*buf = c->rxbuf->data;
	*len = c->rxbuf->len; /* our own copy: checked above */
	return 0;
}

static void rr_cell_release(void *conn)
{
	((struct rr_conn *)conn)->rx_held = false; /* the ring got its room back at peek */
}

/* ---- bursts of env->slot-byte elements ---- */

static int rr_send_burst(void *conn, const void *slots, unsigned n)
{
	struct rr_conn *c = conn;

	/* Copy in, then publish with a release store of prod.tail; pairs with
	 * the acquire load of prod.tail in the dequeue (rr_recv_burst). */
	return (int)(c->mp ? rte_ring_mp_enqueue_burst_elem(c->burst, slots, c->slot, n, NULL)
			   : rte_ring_sp_enqueue_burst_elem(c->burst, slots, c->slot, n, NULL));
}

static int rr_recv_burst(void *conn, void *slots, unsigned n)
{
	struct rr_conn *c = conn;

	/* Copy out, then free the room with a release store of cons.tail;
	 * pairs with the producer's acquire load of cons.tail. */
	return (int)(c->mc ? rte_ring_mc_dequeue_burst_elem(c->burst, slots, c->slot, n, NULL)
			   : rte_ring_sc_dequeue_burst_elem(c->burst, slots, c->slot, n, NULL));
}

const struct bsys bsys_rte_ring = {
	.name = "rte_ring",
	.what = RR_WHAT_SPSC,
	.caps = RR_CAPS,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = rr_setup_spsc,
	.open = rr_open_spsc,
	.reserve = rr_zc_reserve,
	.commit = rr_zc_commit,
	.peek = rr_zc_peek,
	.release = rr_zc_release,
	.send_burst = rr_send_burst,
	.recv_burst = rr_recv_burst,
	.close = rr_close,
	.teardown = rr_teardown,
};

const struct bsys bsys_rte_ring_mpmc = {
	.name = "rte_ring-mpmc",
	.what = RR_WHAT_MPMC,
	.caps = RR_CAPS | BSYS_MP,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = rr_setup_mpmc,
	.open = rr_open_mpmc,
	.reserve = rr_cell_reserve,
	.commit = rr_cell_commit,
	.peek = rr_cell_peek,
	.release = rr_cell_release,
	.send_burst = rr_send_burst,
	.recv_burst = rr_recv_burst,
	.close = rr_close,
	.teardown = rr_teardown,
};

#else /* !BENCH_HAVE_DPDK */

BSYS_NOT_BUILT(bsys_rte_ring, "rte_ring", RR_WHAT_SPSC, RR_CAPS, "libdpdk-dev");
BSYS_NOT_BUILT(bsys_rte_ring_mpmc, "rte_ring-mpmc", RR_WHAT_MPMC, RR_CAPS | BSYS_MP,
	       "libdpdk-dev");

#endif /* BENCH_HAVE_DPDK */
