/* SPDX-License-Identifier: MIT */
/*
 * Portal itself, as the benchmark sees it: each system gets its own region
 * (shm:), made by setup in the driving process and attached by the peer.
 *
 *   portal-msgring  message rings, one per direction, zero-copy reserve/commit
 *                   and peek/release; a futex doorbell per direction for the
 *                   blocking mode (the waiter does not spin there: the
 *                   scenario asks for a receiver that sleeps)
 *   portal-spsc     a descriptor ring of fixed slots, SP/SC, bursts
 *   portal-mpsc     the same ring kind, MP/SC (several producer processes)
 *   portal-mpmc     MP/MC
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "portal/doorbell.h"
#include "portal/region.h"
#include "portal/ring.h"

#define MSG_CAP   (1u << 18)  /* bytes per message ring: room for 255 1-KiB messages */
#define SLOT_CAP  4096        /* slots per descriptor ring */
#define MAX_SIDES 8           /* creator, consumer, and producers 2.. */

struct pconn {
	portal_region_t *reg;
	bool own_reg;                  /* this conn attached the region itself */
	portal_msgring_t *tx, *rx;     /* msgring systems */
	portal_doorbell_t *tx_bell, *rx_bell;
	portal_ring_t *ring;           /* descriptor systems */
	bool mp, mc;
};

static int attach(struct bsys_env *env, int side, unsigned flags, portal_region_t **reg)
{
	struct portal_region_opts o = { .ident = "portal-bench" };

	(void)flags;
	/* The creator's handle serves side 0 in the driving process; other
	 * producer processes take sides 2.. */
	if (side == 0 && env->priv) {
		*reg = env->priv;
		return 0;
	}
	o.side = side == 1 ? 1 : (uint32_t)(2 + env->producer_id);
	return portal_region_attach(env->arg, &o, reg);
}

static int region_setup(struct bsys_env *env, const char *tag, char *why, size_t cap,
			portal_region_t **reg)
{
	struct portal_region_opts o = { .size = 4u << 20, .part_count = MAX_SIDES,
					.flags = PORTAL_REGION_F_EXCL, .ident = "portal-bench" };
	int rc;

	snprintf(env->arg, sizeof(env->arg), "shm:portal-bench-%s-%d-%d", tag, env->slot,
		 (int)getpid());
	portal_region_destroy(env->arg);
	rc = portal_region_create(env->arg, &o, reg);
	if (rc)
		snprintf(why, cap, "region %s: %s", env->arg, portal_strerror(rc));
	env->priv = rc ? NULL : *reg;
	return rc;
}

static void region_teardown(struct bsys_env *env)
{
	portal_region_detach(env->priv);
	portal_region_destroy(env->arg);
	env->priv = NULL;
}

/* ---- message rings ---- */

static int msg_setup(struct bsys_env *env, char *why, size_t cap)
{
	struct portal_msgring_params mp = { .capacity = MSG_CAP, .max_msg = BENCH_MAX_PAYLOAD };
	portal_region_t *reg;
	int rc = region_setup(env, "msg", why, cap, &reg);

	if (rc)
		return rc;
	if ((rc = portal_msgring_create(reg, "down", &mp, 0)) ||
	    (rc = portal_msgring_create(reg, "up", &mp, 1)) ||
	    (rc = portal_doorbell_create(reg, "down.bell", PORTAL_DOORBELL_FUTEX, 0)) ||
	    (rc = portal_doorbell_create(reg, "up.bell", PORTAL_DOORBELL_FUTEX, 1))) {
		snprintf(why, cap, "rings: %s", portal_strerror(rc));
		region_teardown(env);
	}
	return rc;
}

static void pconn_close(void *c)
{
	struct pconn *p = c;

	if (!p)
		return;
	portal_msgring_detach(p->tx);
	portal_msgring_detach(p->rx);
	portal_doorbell_detach(p->tx_bell);
	portal_doorbell_detach(p->rx_bell);
	portal_ring_detach(p->ring);
	if (p->own_reg)
		portal_region_detach(p->reg);
	free(p);
}

static int msg_open(struct bsys_env *env, int side, unsigned flags, void **out)
{
	/* Never spin before sleeping: blocking mode measures a sleeping receiver. */
	struct portal_doorbell_opts bo = { .eventfd = -1, .spin_ns = -1 };
	struct pconn *p = calloc(1, sizeof(*p));
	const char *tx = side ? "up" : "down", *rx = side ? "down" : "up";
	char txb[16], rxb[16];
	int rc;

	if (!p)
		return -ENOMEM;
	if ((rc = attach(env, side, flags, &p->reg))) {
		free(p);
		return rc;
	}
	p->own_reg = p->reg != env->priv;
	snprintf(txb, sizeof(txb), "%s.bell", tx);
	snprintf(rxb, sizeof(rxb), "%s.bell", rx);
	if ((rc = portal_msgring_open(p->reg, tx, PORTAL_ROLE_PRODUCER, &p->tx)) ||
	    (rc = portal_msgring_open(p->reg, rx, PORTAL_ROLE_CONSUMER, &p->rx)) ||
	    (rc = portal_doorbell_open(p->reg, txb, PORTAL_DOORBELL_NOTIFIER, &bo, &p->tx_bell)) ||
	    (rc = portal_doorbell_open(p->reg, rxb, PORTAL_DOORBELL_WAITER, &bo, &p->rx_bell))) {
		pconn_close(p);
		return rc;
	}
	*out = p;
	return 0;
}

static int msg_reserve(void *c, uint32_t len, void **buf)
{
	return portal_msgring_reserve(((struct pconn *)c)->tx, len, buf);
}

static int msg_commit(void *c, uint32_t len, unsigned flags)
{
	struct pconn *p = c;
	int rc = portal_msgring_commit(p->tx, len);

	/* Busy mode: nobody sleeps, so no fence and no armed check either. */
	if (!rc && (flags & BSYS_F_BLOCK))
		rc = portal_doorbell_notify(p->tx_bell) < 0 ? -EIO : 0;
	return rc;
}

static int msg_ready(void *arg)
{
	return portal_msgring_ready(arg);
}

static int msg_peek(void *c, const void **buf, uint32_t *len, unsigned flags)
{
	struct pconn *p = c;
	size_t n;
	int rc = portal_msgring_peek(p->rx, buf, &n);

	if (rc == -EAGAIN && (flags & BSYS_F_BLOCK)) {
		rc = portal_doorbell_wait(p->rx_bell, msg_ready, p->rx, 10ll * 1000 * 1000 * 1000);
		if (!rc)
			rc = portal_msgring_peek(p->rx, buf, &n);
	}
	if (!rc)
		*len = (uint32_t)n;
	return rc;
}

static void msg_release(void *c)
{
	portal_msgring_release(((struct pconn *)c)->rx);
}

const struct bsys bsys_portal_msgring = {
	.name = "portal-msgring",
	.what = "Portal message rings (zero-copy reserve/commit, peek/release; futex doorbell)",
	.caps = BSYS_RTT | BSYS_BLOCK | BSYS_STREAM,
	.max_payload = BENCH_MAX_PAYLOAD,
	.setup = msg_setup,
	.open = msg_open,
	.reserve = msg_reserve,
	.commit = msg_commit,
	.peek = msg_peek,
	.release = msg_release,
	.close = pconn_close,
	.teardown = region_teardown,
};

/* ---- descriptor rings ---- */

static int ring_setup_mode(struct bsys_env *env, uint32_t mode, char *why, size_t cap)
{
	struct portal_ring_params rp = { mode, (uint32_t)env->slot, SLOT_CAP, 0 };
	portal_region_t *reg;
	int rc = region_setup(env, mode == PORTAL_RING_SPSC ? "spsc" :
				   mode == PORTAL_RING_MPSC ? "mpsc" : "mpmc", why, cap, &reg);

	if (rc)
		return rc;
	if ((rc = portal_ring_create(reg, "stream", &rp, 0))) {
		snprintf(why, cap, "ring: %s", portal_strerror(rc));
		region_teardown(env);
	}
	return rc;
}

static int spsc_setup(struct bsys_env *e, char *w, size_t c) { return ring_setup_mode(e, PORTAL_RING_SPSC, w, c); }
static int mpsc_setup(struct bsys_env *e, char *w, size_t c) { return ring_setup_mode(e, PORTAL_RING_MPSC, w, c); }
static int mpmc_setup(struct bsys_env *e, char *w, size_t c) { return ring_setup_mode(e, PORTAL_RING_MPMC, w, c); }

static int ring_open(struct bsys_env *env, int side, unsigned flags, void **out)
{
	struct pconn *p = calloc(1, sizeof(*p));
	int rc;

	if (!p)
		return -ENOMEM;
	if ((rc = attach(env, side, flags, &p->reg))) {
		free(p);
		return rc;
	}
	p->own_reg = p->reg != env->priv;
	p->mp = flags & BSYS_F_MP;
	p->mc = flags & BSYS_F_MC;
	rc = portal_ring_open(p->reg, "stream", side ? PORTAL_ROLE_CONSUMER : PORTAL_ROLE_PRODUCER,
			      &p->ring);
	if (rc) {
		pconn_close(p);
		return rc;
	}
	*out = p;
	return 0;
}

static int ring_send(void *c, const void *slots, unsigned n)
{
	struct pconn *p = c;

	return p->mp ? portal_ring_enqueue_burst_mp(p->ring, slots, n)
		     : portal_ring_enqueue_burst(p->ring, slots, n);
}

static int ring_recv(void *c, void *slots, unsigned n)
{
	struct pconn *p = c;

	return p->mc ? portal_ring_dequeue_burst_mc(p->ring, slots, n)
		     : portal_ring_dequeue_burst(p->ring, slots, n);
}

#define PORTAL_RING_SYS(ident, sysname, desc, extra, setupfn)                         \
	const struct bsys ident = {                                                   \
		.name = sysname,                                                      \
		.what = desc,                                                         \
		.caps = BSYS_STREAM | BSYS_BURST | (extra),                           \
		.max_payload = 256, /* descriptor slots are 8-256 bytes by design */ \
		.setup = setupfn,                                                     \
		.open = ring_open,                                                    \
		.send_burst = ring_send,                                              \
		.recv_burst = ring_recv,                                              \
		.close = pconn_close,                                                 \
		.teardown = region_teardown,                                          \
	}

PORTAL_RING_SYS(bsys_portal_spsc, "portal-spsc", "Portal descriptor ring, SP/SC, burst calls", 0,
		spsc_setup);
PORTAL_RING_SYS(bsys_portal_mpsc, "portal-mpsc", "Portal descriptor ring, MP/SC", BSYS_MP,
		mpsc_setup);
PORTAL_RING_SYS(bsys_portal_mpmc, "portal-mpmc", "Portal descriptor ring, MP/MC", BSYS_MP,
		mpmc_setup);
