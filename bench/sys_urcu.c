/* SPDX-License-Identifier: MIT */
/*
 * sys_urcu.c - liburcu's wait-free concurrent queue (cds_wfcq, 0.13) between
 * two threads of one process (BSYS_INPROC: setup's state in env->priv is
 * shared).
 *
 * cds_wfcq is an unbounded linked queue: enqueue is one xchg on the tail
 * (wait-free, any number of enqueuers), dequeue and splice need the
 * dequeuers to exclude each other (one consumer thread here). The nodes are
 * embedded in payload buffers, so a message is never copied:
 *
 *   channel  data queue (sender -> receiver) and return queue (receiver ->
 *            sender) over a pool of buffers: node, length, payload.
 *   sender   takes a buffer from its private free queue; when that is empty
 *            it splices the whole return queue into it (one xchg pair), then
 *            cds_wfcq_enqueue()s the filled buffer on the data queue.
 *   receiver __cds_wfcq_dequeue_nonblocking() in busy mode: CDS_WFCQ_WOULDBLOCK
 *            (an enqueuer between its xchg and its link) is reported as
 *            -EAGAIN, never waited for inside the call; release enqueues the
 *            buffer on the return queue.
 *
 * Bursts: splice is wfcq's batch operation. send_burst links the burst into
 * a private queue and splices it onto the data queue (one xchg on the shared
 * tail per burst); recv_burst splices everything queued into a private queue
 * when that is empty, then takes from it, and returns the buffers with one
 * splice per call. The slots are copied into and out of the buffers: the
 * scenario hands over and expects back slot arrays.
 *
 * Configuration: _LGPL_SOURCE, the inline fast path (liburcu's README allows
 * it for LGPL-compatible code; this file is MIT), instead of a call into
 * liburcu-common per operation. Each queue's head (the dequeuer's) and tail
 * (the enqueuers') sit on their own cache lines. 256 message buffers per
 * direction (round trips and the open-loop load keep a few in flight), 4096
 * slot buffers (Portal's descriptor rings have 4096 slots), all written in
 * setup so no page fault lands in a measurement. wfcq has no wake-up (its
 * "blocking" calls poll and sleep 10 ms): no BSYS_BLOCK.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define UQ_WHAT "liburcu wait-free concurrent queue (cds_wfcq), two threads, nodes in pooled buffers"
#define UQ_CAPS (BSYS_RTT | BSYS_STREAM | BSYS_BURST | BSYS_INPROC)

#ifdef BENCH_HAVE_URCU

#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>

#define _LGPL_SOURCE
#include <urcu/compiler.h>
#include <urcu/wfcqueue.h>

#define UQ_LINE      64u
#define UQ_HDR       16u                      /* node, length, pad */
#define UQ_MSG_POOL  256u
#define UQ_SLOT_POOL 4096u

enum { UQ_DOWN, UQ_UP, UQ_SLOTS, UQ_NCHAN };

/* A pooled buffer: the queue links it through node. */
struct uq_buf {
	struct cds_wfcq_node node;
	uint32_t len;              /* sender: written before the enqueue */
	uint32_t pad;
	uint8_t data[];
};

_Static_assert(sizeof(struct uq_buf) == UQ_HDR, "uq_buf header");

/* A shared queue: the dequeuer's head and the enqueuers' tail apart. */
struct uq_queue {
	alignas(UQ_LINE) struct __cds_wfcq_head head;
	alignas(UQ_LINE) struct cds_wfcq_tail tail;
};

/* A private queue: one thread only. */
struct uq_local {
	struct __cds_wfcq_head head;
	struct cds_wfcq_tail tail;
};

struct uq_chan {
	struct uq_queue data;      /* sender -> receiver: full buffers */
	struct uq_queue ret;       /* receiver -> sender: empty buffers */
	uint8_t *pool;
	size_t stride;
	unsigned count;
};

struct uq_priv {
	struct uq_chan ch[UQ_NCHAN];
	unsigned slot;
};

struct uq_conn {
	struct uq_priv *p;
	struct uq_chan *tx, *rx;   /* messages */
	struct uq_buf *tx_buf;     /* between reserve and commit */
	struct uq_buf *rx_buf;     /* between peek and release */
	struct uq_local free;      /* sender: buffers taken back from tx->ret */
	struct uq_local sfree;     /* burst sender: slot buffers taken back */
	struct uq_local stash;     /* burst receiver: spliced, not yet handed out */
};

static void uq_local_init(struct uq_local *q)
{
	__cds_wfcq_init(&q->head, &q->tail);
}

static int uq_chan_init(struct uq_chan *ch, unsigned count, size_t payload)
{
	ch->stride = (UQ_HDR + payload + UQ_LINE - 1) / UQ_LINE * UQ_LINE;
	ch->count = count;
	ch->pool = aligned_alloc(UQ_LINE, ch->stride * count);
	if (!ch->pool)
		return -ENOMEM;
	memset(ch->pool, 0, ch->stride * count); /* pre-fault */
	__cds_wfcq_init(&ch->data.head, &ch->data.tail);
	__cds_wfcq_init(&ch->ret.head, &ch->ret.tail);
	/* Every buffer starts out returned. Setup runs before the peer
	 * thread exists; creating it orders these stores before its work. */
	for (unsigned i = 0; i < count; i++) {
		struct uq_buf *b = (struct uq_buf *)(void *)(ch->pool + i * ch->stride);

		cds_wfcq_node_init(&b->node);
		cds_wfcq_enqueue(&ch->ret.head, &ch->ret.tail, &b->node);
	}
	return 0;
}

static void uq_free_priv(struct uq_priv *p)
{
	if (!p)
		return;
	for (int i = 0; i < UQ_NCHAN; i++)
		free(p->ch[i].pool);
	free(p);
}

static int uq_setup(struct bsys_env *env, char *why, size_t whycap)
{
	struct uq_priv *p;

	if (env->slot < 1 || env->slot > BENCH_MAX_PAYLOAD) {
		snprintf(why, whycap, "slot size %d: 1 to %d bytes", env->slot, BENCH_MAX_PAYLOAD);
		return -EINVAL;
	}
	p = aligned_alloc(UQ_LINE, (sizeof(*p) + UQ_LINE - 1) / UQ_LINE * UQ_LINE);
	if (!p)
		goto nomem;
	memset(p, 0, sizeof(*p));
	p->slot = (unsigned)env->slot;
	if (uq_chan_init(&p->ch[UQ_DOWN], UQ_MSG_POOL, BENCH_MAX_PAYLOAD) ||
	    uq_chan_init(&p->ch[UQ_UP], UQ_MSG_POOL, BENCH_MAX_PAYLOAD) ||
	    uq_chan_init(&p->ch[UQ_SLOTS], UQ_SLOT_POOL, p->slot))
		goto nomem;
	env->priv = p;
	return 0;
nomem:
	uq_free_priv(p);
	snprintf(why, whycap, "out of memory for the buffer pools");
	return -ENOMEM;
}

static void uq_teardown(struct bsys_env *env)
{
	uq_free_priv(env->priv);
	env->priv = NULL;
}

static int uq_open(struct bsys_env *env, int side, unsigned flags, void **conn)
{
	struct uq_conn *c;

	if ((side != 0 && side != 1) || flags || !env->priv)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->p = env->priv;
	c->tx = &c->p->ch[side ? UQ_UP : UQ_DOWN];
	c->rx = &c->p->ch[side ? UQ_DOWN : UQ_UP];
	uq_local_init(&c->free);
	uq_local_init(&c->sfree);
	uq_local_init(&c->stash);
	*conn = c;
	return 0;
}

static void uq_close(void *conn)
{
	free(conn);
}

/* A node from a queue is ours only if it heads one of the pool's buffers. */
static struct uq_buf *uq_buf_of(const struct uq_chan *ch, struct cds_wfcq_node *n)
{
	uintptr_t off = (uintptr_t)n - (uintptr_t)ch->pool;

	if (off >= ch->stride * ch->count || off % ch->stride)
		return NULL;
	return caa_container_of(n, struct uq_buf, node);
}

/*
 * A free buffer of CH for the sender, or NULL (none yet, or one still being
 * linked by the receiver's enqueue). The private queue is refilled by one
 * splice of everything returned: the xchg on ret's head and tail are full
 * barriers, pairing with the receiver's xchg in cds_wfcq_enqueue (its writes
 * to the buffer happen before it links the buffer back).
 */
static struct cds_wfcq_node *uq_take(struct uq_local *fl, struct uq_chan *ch)
{
	struct cds_wfcq_node *n = __cds_wfcq_dequeue_nonblocking(&fl->head, &fl->tail);

	if (n == NULL) {
		enum cds_wfcq_ret r = __cds_wfcq_splice_nonblocking(&fl->head, &fl->tail,
								     &ch->ret.head, &ch->ret.tail);
		if (r == CDS_WFCQ_RET_SRC_EMPTY || r == CDS_WFCQ_RET_WOULDBLOCK)
			return NULL;
		n = __cds_wfcq_dequeue_nonblocking(&fl->head, &fl->tail);
	}
	return n == CDS_WFCQ_WOULDBLOCK ? NULL : n;
}

/* ---- messages ---- */

static int uq_reserve(void *conn, uint32_t len, void **buf)
{
	struct uq_conn *c = conn;

	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (!c->tx_buf) {
		struct cds_wfcq_node *n = uq_take(&c->free, c->tx);

		if (!n)
			return -EAGAIN;
		if (!(c->tx_buf = uq_buf_of(c->tx, n)))
			return -EPROTO;
	}
	*buf = c->tx_buf->data;
	return 0;
}

static int uq_commit(void *conn, uint32_t len, unsigned flags)
{
	struct uq_conn *c = conn;
	struct uq_buf *b = c->tx_buf;

	if (flags & BSYS_F_BLOCK)
		return -EOPNOTSUPP;
	if (!b)
		return -EINVAL;
	if (len > BENCH_MAX_PAYLOAD)
		return -EMSGSIZE;
	b->len = len;
	cds_wfcq_node_init(&b->node);
	/* Write the buffer, then link it: the xchg on the tail is a full
	 * barrier before the link store; pairs with the dequeuer's load of
	 * the link (and its dependent loads) in uq_peek. */
	cds_wfcq_enqueue(&c->tx->data.head, &c->tx->data.tail, &b->node);
	c->tx_buf = NULL;
	return 0;
}

static int uq_peek(void *conn, const void **buf, uint32_t *len, unsigned flags)
{
	struct uq_conn *c = conn;
	uint32_t n;

	if (flags & BSYS_F_BLOCK)
		return -EOPNOTSUPP;
	if (!c->rx_buf) {
		/* Pairs with the enqueue in uq_commit; the last node is taken
		 * with a cmpxchg on the tail, a full barrier. */
		struct cds_wfcq_node *node =
			__cds_wfcq_dequeue_nonblocking(&c->rx->data.head, &c->rx->data.tail);

		if (node == NULL || node == CDS_WFCQ_WOULDBLOCK)
			return -EAGAIN;
		if (!(c->rx_buf = uq_buf_of(c->rx, node)))
			return -EPROTO;
	}
	n = c->rx_buf->len; /* read once, then check */
	if (n > BENCH_MAX_PAYLOAD)
		return -EPROTO;
	*buf = c->rx_buf->data;
	*len = n;
	return 0;
}

static void uq_release(void *conn)
{
	struct uq_conn *c = conn;

	if (!c->rx_buf)
		return;
	cds_wfcq_node_init(&c->rx_buf->node);
	/* Done reading, then hand it back; pairs with uq_take's splice. */
	cds_wfcq_enqueue(&c->rx->ret.head, &c->rx->ret.tail, &c->rx_buf->node);
	c->rx_buf = NULL;
}

/* ---- bursts: splices both ways ---- */

static int uq_send_burst(void *conn, const void *slots, unsigned n)
{
	struct uq_conn *c = conn;
	struct uq_chan *ch = &c->p->ch[UQ_SLOTS];
	const uint8_t *s = slots;
	struct uq_local batch;
	unsigned i;

	uq_local_init(&batch);
	for (i = 0; i < n; i++) {
		struct cds_wfcq_node *node = uq_take(&c->sfree, ch);
		struct uq_buf *b;

		if (!node)
			break;
		if (!(b = uq_buf_of(ch, node)))
			return -EPROTO;
		memcpy(b->data, s + (size_t)i * c->p->slot, c->p->slot);
		b->len = c->p->slot;
		cds_wfcq_node_init(&b->node);
		cds_wfcq_enqueue(&batch.head, &batch.tail, &b->node); /* private: uncontended */
	}
	/* Write the slots, then append the whole batch: the xchg on the data
	 * queue's tail is a full barrier before the link store; pairs with
	 * the consumer's splice in uq_recv_burst. The source is private, so
	 * the splice never finds an enqueue half done. */
	if (i && __cds_wfcq_splice_nonblocking(&ch->data.head, &ch->data.tail, &batch.head,
					       &batch.tail) == CDS_WFCQ_RET_WOULDBLOCK)
		return -EPROTO;
	return (int)i;
}

static int uq_recv_burst(void *conn, void *slots, unsigned n)
{
	struct uq_conn *c = conn;
	struct uq_chan *ch = &c->p->ch[UQ_SLOTS];
	uint8_t *s = slots;
	struct uq_local done;
	bool spliced = false;
	unsigned i = 0;

	uq_local_init(&done);
	while (i < n) {
		struct cds_wfcq_node *node =
			__cds_wfcq_dequeue_nonblocking(&c->stash.head, &c->stash.tail);
		struct uq_buf *b;

		if (node == CDS_WFCQ_WOULDBLOCK)
			break;          /* the producer is still linking it */
		if (node == NULL) {
			/* Take everything queued at once; pairs with the
			 * producer's splice in uq_send_burst. */
			if (spliced || __cds_wfcq_splice_nonblocking(
					       &c->stash.head, &c->stash.tail, &ch->data.head,
					       &ch->data.tail) != CDS_WFCQ_RET_DEST_EMPTY)
				break;  /* source empty or busy (dest was empty) */
			spliced = true;
			continue;
		}
		if (!(b = uq_buf_of(ch, node)) || b->len != c->p->slot)
			return -EPROTO;
		memcpy(s + (size_t)i * c->p->slot, b->data, c->p->slot);
		cds_wfcq_node_init(&b->node);
		cds_wfcq_enqueue(&done.head, &done.tail, &b->node); /* private: uncontended */
		i++;
	}
	/* Done copying out, then give the buffers back in one splice; pairs
	 * with uq_take's splice of the return queue in uq_send_burst. */
	if (i && __cds_wfcq_splice_nonblocking(&ch->ret.head, &ch->ret.tail, &done.head,
					       &done.tail) == CDS_WFCQ_RET_WOULDBLOCK)
		return -EPROTO;
	return (int)i;
}

const struct bsys bsys_urcu_wfcq = {
	.name = "urcu-wfcqueue",
	.what = UQ_WHAT,
	.caps = UQ_CAPS,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = uq_setup,
	.open = uq_open,
	.reserve = uq_reserve,
	.commit = uq_commit,
	.peek = uq_peek,
	.release = uq_release,
	.send_burst = uq_send_burst,
	.recv_burst = uq_recv_burst,
	.close = uq_close,
	.teardown = uq_teardown,
};

#else /* !BENCH_HAVE_URCU */

BSYS_NOT_BUILT(bsys_urcu_wfcq, "urcu-wfcqueue", UQ_WHAT, UQ_CAPS, "liburcu-dev");

#endif /* BENCH_HAVE_URCU */
