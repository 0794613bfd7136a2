/* SPDX-License-Identifier: MIT */
/*
 * vmpeer.h - portal_vmpeer, one side of a VM test: a host process next to
 * QEMU, or a program inside a guest (the same source, linked statically for
 * the guest). See vmpeer.c for the command line and docs/vm.md for the tests.
 *
 * The region holds, besides the rings of each test, a control block "ctl":
 * one line of 128 bytes per participant side, written only by that side
 * (struct ctl_line). A side publishes its progress there (phase, step) and
 * reads its peer's as a hint only: a hostile peer can make the other side
 * wait until its deadline, nothing more.
 */
#ifndef PORTAL_VM_VMPEER_H
#define PORTAL_VM_VMPEER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "portal/region.h"
#include "portal/ring.h"

#define VM_CTL_NAME "ctl"

/* Exit codes of portal_vmpeer (and the verdict the harness prints). */
enum vm_exit {
	VM_PASS = 0,
	VM_FAIL = 1,    /* a check failed */
	VM_USAGE = 2,
	VM_SETUP = 3,   /* region or ring could not be created or opened */
	VM_TIMEOUT = 4, /* the peer did not show up or stalled */
};

struct ctl_line {
	_Atomic uint64_t phase;  /* 1 attached, 2 exchange done, 3 rtt done, ... */
	_Atomic uint64_t step;   /* hostile test: the lockstep counter */
	_Atomic uint64_t count;  /* messages received so far (diagnostics) */
	uint8_t pad[128 - 24];
};

/* How a side waits for its peer when there is nothing to do. Polling with
 * backoff is all there is today. A doorbell plugs in here: idle() would arm
 * it and sleep, kick() would ring it after publishing. The stream doorbell
 * over virtio-serial (doorbell/, being built) is the one meant for guests:
 * see wake_open() in vmpeer.c and docs/vm.md. */
struct vm_wake {
	const char *name;
	unsigned spins;          /* idle calls since the last progress */
	bool spin_only;          /* never sleep (round-trip timing) */
	void (*idle)(struct vm_wake *w);
	void (*kick)(struct vm_wake *w);
};

struct vm_opts {
	const char *role;
	const char *uri;
	const char *tag;
	const char *ready_file;
	const char *wake;
	bool create;
	uint64_t size;
	uint32_t parts;
	uint32_t side;      /* our participant slot when attaching */
	uint32_t side_a;    /* create: the sides that own a2b and b2a */
	uint32_t side_b;
	uint64_t count;     /* messages each way */
	uint64_t rtt;       /* round trips to time */
	double wait_s;      /* for the peer to show up (guest boot) */
	double timeout_s;   /* for the work once the peer is there */
	double random_s;    /* hostile: length of the random phase */
	uint32_t max_msg;
	uint32_t ring_bytes;
};

struct vm_peer {
	struct vm_opts o;
	portal_region_t *reg;
	struct ctl_line *ctl;     /* the whole control block (part_count lines) */
	uint32_t nlines;
	uint32_t side;
	struct vm_wake wake;
};

double vm_now(void);
void vm_say(const struct vm_peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Store a field of our own line (release), and load the field at offset
 * OFF of SIDE's line (acquire; 0 for a side the block has no line for). */
void vm_set(_Atomic uint64_t *field, uint64_t v);
uint64_t vm_peer_field(const struct vm_peer *p, uint32_t side, size_t off);
/* Wait until side's field (offsetof in struct ctl_line) >= v; VM_PASS or
 * VM_TIMEOUT at DEADLINE. Sleeps between polls. */
int vm_wait_field(struct vm_peer *p, uint32_t side, size_t off, uint64_t v, double deadline);

/* Message stamping, shared by the exchange and the hostile tests. */
#define VM_MSG_HDR 24u
uint32_t vm_msg_len(uint64_t seq, uint32_t dir, uint32_t max);
void vm_msg_fill(void *buf, uint64_t seq, uint32_t dir, uint32_t len);
/* 0 if BUF (N bytes) is message SEQ of direction DIR; else a reason. */
const char *vm_msg_check(const void *buf, size_t n, uint64_t seq, uint32_t dir, uint32_t max);

/* Directions, part of every message. */
#define DIR_A2B 0x41u
#define DIR_B2A 0x42u

/* N messages each way at once through TX and RX, every one checked. */
struct vm_exch {
	portal_msgring_t *tx, *rx;
	uint32_t tx_dir, rx_dir;
	uint64_t count;
	bool copy;          /* receive with portal_msgring_recv (untrusted peer) */
	uint64_t sent, recvd;
};
int vm_exchange(struct vm_peer *p, struct vm_exch *x);

/* The hostile test: the guest's side and the host's side. */
int vm_run_hostile(struct vm_peer *p);
int vm_run_honest(struct vm_peer *p);
/* Create the objects of the hostile test (host, at region creation). */
int vm_create_hostile(struct vm_peer *p);

#endif
