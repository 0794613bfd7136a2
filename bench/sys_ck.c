/* SPDX-License-Identifier: MIT */
/*
 * sys_ck.c - Concurrency Kit's ring (ck_ring, 0.7.1), SP/SC, between two
 * threads of one process (BSYS_INPROC: setup's state in env->priv is shared).
 *
 * Messages (round trips, open-loop load): the pointer ring,
 * ck_ring_enqueue_spsc / ck_ring_dequeue_spsc, one per direction. An entry
 * points to a buffer from that direction's pool (the length, then up to
 * BENCH_MAX_PAYLOAD bytes); reserve hands out the buffer, peek the buffer
 * the pointer names, so the payload is never copied. The receiver gives
 * each buffer back on a return ring (another SPSC pointer ring); the sender
 * takes buffers back in batches of up to CK_BATCH when its free list runs
 * dry. That return trip is what carrying data through a pointer queue costs.
 *
 * Bursts (streaming, fixed slots): ck's typed ring (CK_RING_PROTOTYPE) with
 * the slot itself as the entry: ck copies the value into the ring's buffer
 * and out of it. For fixed-size records that is ck's own way and the
 * fastest one: a pointer ring would make the same two copies (into a pool
 * buffer and out of it) and add the return ring's two operations per slot.
 * 0.7.1 has no burst call, so a burst is a loop of single enqueues (or
 * dequeues), each a load of the other side's index and a store of its own.
 *
 * Configuration: 256-entry message rings (the round trip and the load
 * scenario keep a few messages in flight), 4096-entry slot rings (Portal's
 * descriptor rings have 4096 slots), every buffer written once in setup so
 * no page fault lands in a measurement. On x86 (CK_MD_TSO) ck's fences in
 * these calls are compiler barriers only. No blocking mode in ck_ring: no
 * BSYS_BLOCK.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define CK_WHAT "Concurrency Kit ck_ring SPSC, two threads (pointer ring + pool; typed ring for bursts)"
#define CK_CAPS (BSYS_RTT | BSYS_STREAM | BSYS_BURST | BSYS_INPROC)

#ifdef BENCH_HAVE_CK

#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>

#include <ck_ring.h>

#define CK_LINE       64u
#define CK_MSG_RING   256u                   /* entries; ck_ring holds size - 1 */
#define CK_POOL       (CK_MSG_RING - 1)      /* buffers per direction: no ring ever fills */
#define CK_BATCH      32u                    /* buffers taken back at once */
#define CK_BUF        ((8u + BENCH_MAX_PAYLOAD + CK_LINE - 1) / CK_LINE * CK_LINE)
#define CK_SLOT_RING  4096u

/* A message buffer: the length and the payload share the first line. */
struct ck_msg {
	uint32_t len;          /* sender: written before the pointer is enqueued */
	uint32_t pad;
	uint8_t data[];
};

/* The typed ring's entries: one slot, copied in and out by ck. */
struct ck_slot64 {
	uint8_t b[64];
};
struct ck_slot1024 {
	uint8_t b[1024];
};
CK_RING_PROTOTYPE(slot64, ck_slot64)
CK_RING_PROTOTYPE(slot1024, ck_slot1024)

/* One direction of messages. Each ck_ring keeps its consumer and its
 * producer index on their own lines; the ring structs start on a line. */
struct ck_dir {
	alignas(CK_LINE) struct ck_ring data;  /* sender -> receiver: full buffers */
	alignas(CK_LINE) struct ck_ring ret;   /* receiver -> sender: empty buffers */
	struct ck_ring_buffer *data_buf, *ret_buf;
	uint8_t *pool;                         /* CK_POOL buffers of CK_BUF bytes */
};

struct ck_priv {
	struct ck_dir dir[2];                  /* [0] down (side 0 sends), [1] up */
	alignas(CK_LINE) struct ck_ring slots; /* bursts, down */
	void *slot_buf;
	unsigned slot;
};

struct ck_conn {
	struct ck_priv *p;
	struct ck_dir *tx, *rx;
	struct ck_msg *tx_msg;                 /* between reserve and commit */
	struct ck_msg *rx_msg;                 /* between peek and release */
	unsigned nfree;
	struct ck_msg *free[CK_BATCH];         /* the sender's free list */
};

static void *ck_zalloc(size_t n)
{
	void *p = aligned_alloc(CK_LINE, (n + CK_LINE - 1) / CK_LINE * CK_LINE);

	if (p)
		memset(p, 0, n); /* pre-fault: no page fault in a measurement */
	return p;
}

static void ck_free_priv(struct ck_priv *p)
{
	if (!p)
		return;
	for (int d = 0; d < 2; d++) {
		free(p->dir[d].data_buf);
		free(p->dir[d].ret_buf);
		free(p->dir[d].pool);
	}
	free(p->slot_buf);
	free(p);
}

static int ck_setup(struct bsys_env *env, char *why, size_t whycap)
{
	struct ck_priv *p;

	if (env->slot != 64 && env->slot != 1024) {
		snprintf(why, whycap, "slot size %d: the typed rings are built for 64 and 1024",
			 env->slot);
		return -EINVAL;
	}
	p = ck_zalloc(sizeof(*p));
	if (!p)
		goto nomem;
	p->slot = (unsigned)env->slot;
	for (int d = 0; d < 2; d++) {
		struct ck_dir *dir = &p->dir[d];

		dir->data_buf = ck_zalloc(CK_MSG_RING * sizeof(*dir->data_buf));
		dir->ret_buf = ck_zalloc(CK_MSG_RING * sizeof(*dir->ret_buf));
		dir->pool = ck_zalloc((size_t)CK_POOL * CK_BUF);
		if (!dir->data_buf || !dir->ret_buf || !dir->pool)
			goto nomem;
		ck_ring_init(&dir->data, CK_MSG_RING);
		ck_ring_init(&dir->ret, CK_MSG_RING);
		/* Every buffer starts out returned. Setup runs before the
		 * peer thread exists; creating it orders these stores before
		 * anything the thread does. */
		for (unsigned i = 0; i < CK_POOL; i++)
			ck_ring_enqueue_spsc(&dir->ret, dir->ret_buf, dir->pool + (size_t)i * CK_BUF);
	}
	p->slot_buf = ck_zalloc((size_t)CK_SLOT_RING * p->slot);
	if (!p->slot_buf)
		goto nomem;
	ck_ring_init(&p->slots, CK_SLOT_RING);
	env->priv = p;
	return 0;
nomem:
	ck_free_priv(p);
	snprintf(why, whycap, "out of memory for the rings and pools");
	return -ENOMEM;
}

static void ck_teardown(struct bsys_env *env)
{
	ck_free_priv(env->priv);
	env->priv = NULL;
}

static int ck_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	struct ck_conn *c;

	if ((side != 0 && side != 1) || flags || !env->priv)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->p = env->priv;
	c->tx = &c->p->dir[side];
	c->rx = &c->p->dir[!side];
	*conn = c;
	return 0;
}

static void ck_close(void *conn)
{
	free(conn);
}

/* ---- messages: pointers to pool buffers ---- */

/* A pointer from the ring is ours only if it is one of the pool's buffers. */
static bool ck_in_pool(const struct ck_dir *d, const void *b)
{
	uintptr_t off = (uintptr_t)b - (uintptr_t)d->pool;

	return off < (uintptr_t)CK_POOL * CK_BUF && off % CK_BUF == 0;
}

static int ck_reserve(void *conn, uint32_t len, void **buf)
{
	struct ck_conn *c = conn;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (!c->tx_msg) {
		void *b;

		/* The free list ran dry: take back up to a batch. The ring's
		 * load fence after reading p_tail pairs with the store fence
		 * before the receiver's p_tail store in ck_release. */
		if (!c->nfree) {
			while (c->nfree < CK_BATCH &&
			       ck_ring_dequeue_spsc(&c->tx->ret, c->tx->ret_buf, &b)) {
				if (!ck_in_pool(c->tx, b))
					return -EPROTO;
				c->free[c->nfree++] = b;
			}
			if (!c->nfree)
				return -EAGAIN;
		}
		c->tx_msg = c->free[--c->nfree];
	}
	*buf = c->tx_msg->data;
	return 0;
}

static int ck_commit(void *conn, uint32_t len, unsigned flags)
{
	struct ck_conn *c = conn;

	if (flags & BSYS_F_BLOCK)
		return -EOPNOTSUPP;
	if (!c->tx_msg)
		return -EINVAL;
	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	c->tx_msg->len = len;
	/* Write the buffer, then publish its pointer: the ring's store fence
	 * before the p_tail store pairs with the load fence in ck_peek's
	 * dequeue. Never full: the ring has room for the whole pool. */
	if (!ck_ring_enqueue_spsc(&c->tx->data, c->tx->data_buf, c->tx_msg))
		return -EPROTO;
	c->tx_msg = NULL;
	return 0;
}

static int ck_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct ck_conn *c = conn;
	uint32_t n;

	if (flags & BSYS_F_BLOCK)
		return -EOPNOTSUPP;
	if (!c->rx_msg) {
		void *b;

		/* Pairs with the store fence in ck_commit's enqueue. */
		if (!ck_ring_dequeue_spsc(&c->rx->data, c->rx->data_buf, &b))
			return -EAGAIN;
		if (!ck_in_pool(c->rx, b))
			return -EPROTO;
		c->rx_msg = b;
	}
	n = c->rx_msg->len; /* read once, then check */
	if (n > BENCH_MAX_PAYLOAD)
		return -EPROTO;
	*buf = c->rx_msg->data;
	*len = n;
	return 0;
}

static void ck_release(void *conn)
{
	struct ck_conn *c = conn;

	if (!c->rx_msg)
		return;
	/* Done reading, then hand the buffer back: the store fence before
	 * p_tail pairs with the load fence in ck_reserve's dequeue. Never
	 * full: the return ring has room for the whole pool. */
	ck_ring_enqueue_spsc(&c->rx->ret, c->rx->ret_buf, c->rx_msg);
	c->rx_msg = NULL;
}

/* ---- bursts: the typed ring, one slot per entry ---- */

/*
 * Enqueue copies the slot into the ring, then (store fence) moves p_tail;
 * dequeue reads p_tail, (load fence) copies the slot out, then (store
 * fence) moves c_head, which the producer reads before reusing the entry.
 */
#define CK_BURST_FNS(name, size)                                                            \
	static int ck_send_##name(struct ck_priv *p, const uint8_t *s, unsigned n)          \
	{                                                                                   \
		unsigned i;                                                                 \
		for (i = 0; i < n; i++)                                                     \
			if (!ck_ring_enqueue_spsc_##name(&p->slots, p->slot_buf,            \
							 (struct ck_##name *)(uintptr_t)(s + \
							 (size_t)i * (size))))               \
				break;                                                      \
		return (int)i;                                                              \
	}                                                                                   \
	static int ck_recv_##name(struct ck_priv *p, uint8_t *s, unsigned n)                \
	{                                                                                   \
		unsigned i;                                                                 \
		for (i = 0; i < n; i++)                                                     \
			if (!ck_ring_dequeue_spsc_##name(&p->slots, p->slot_buf,            \
							 (struct ck_##name *)(s +            \
							 (size_t)i * (size))))               \
				break;                                                      \
		return (int)i;                                                              \
	}

CK_BURST_FNS(slot64, 64)
CK_BURST_FNS(slot1024, 1024)

static int ck_send_burst(void *conn, const void *slots, unsigned n)
{
	struct ck_priv *p = ((struct ck_conn *)conn)->p;

	return p->slot == 64 ? ck_send_slot64(p, slots, n) : ck_send_slot1024(p, slots, n);
}

static int ck_recv_burst(void *conn, void *slots, unsigned n)
{
	struct ck_priv *p = ((struct ck_conn *)conn)->p;

	return p->slot == 64 ? ck_recv_slot64(p, slots, n) : ck_recv_slot1024(p, slots, n);
}

const struct bsys bsys_ck_ring = {
	.name = "ck_ring",
	.what = CK_WHAT,
	.caps = CK_CAPS,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = ck_setup,
	.open = ck_open,
	.reserve = ck_reserve,
	.commit = ck_commit,
	.peek = ck_peek,
	.release = ck_release,
	.send_burst = ck_send_burst,
	.recv_burst = ck_recv_burst,
	.close = ck_close,
	.teardown = ck_teardown,
};

#else /* !BENCH_HAVE_CK */

BSYS_NOT_BUILT(bsys_ck_ring, "ck_ring", CK_WHAT, CK_CAPS, "libck-dev");

#endif /* BENCH_HAVE_CK */
