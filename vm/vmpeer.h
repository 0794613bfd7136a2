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

#include "portal/doorbell.h"
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
	_Atomic uint64_t wake_id; /* ivshmem wake: our ivshmem id + 1 (0: none),
	                           * written before phase 1 */
	_Atomic uint64_t intent; /* guest_death producer: (seq << 32) | low 32
	                          * bits of the ring's prod_tail, stored before
	                          * message seq is reserved (vmlive.c) */
	uint8_t pad[128 - 40];
};
_Static_assert(sizeof(struct ctl_line) == 128, "one control line is 128 bytes");

/* How a side waits for its peer when there is nothing to do (vmwake.c):
 * polling with backoff, or a Portal doorbell per direction that the waiter
 * really sleeps on and the peer rings after it publishes. */
enum vm_wake_kind {
	VM_WAKE_POLL = 0,
	VM_WAKE_FUTEX,    /* two processes on one kernel */
	VM_WAKE_IVSHMEM,  /* ivshmem-doorbell: server eventfds / VFIO MSI-X */
	VM_WAKE_STREAM,   /* one byte per wake-up over a virtio-serial port */
};

struct vm_wake {
	const char *name;        /* the --wake string */
	enum vm_wake_kind kind;
	const char *arg;         /* after the colon: socket, PCI address, port */
	bool ivs_host;           /* ivshmem: a server client (else the guest device) */
	bool is_a;               /* we sleep on wake_a (else wake_b) */
	unsigned spins;          /* polling: idle calls since the last progress */
	bool spin_only;          /* polling: never sleep */
	portal_doorbell_t *waiter;   /* doorbell kinds: ours, we sleep on it */
	portal_doorbell_t *notifier; /* the peer's, we ring it */
	portal_ivshmem_client_t *ivc; /* ivshmem host side */
	portal_ivshmem_guest_t *ivg;  /* ivshmem guest side (owns the region's memory) */
	int stream_fd;           /* stream: our end, -1 if none */
	_Atomic uint32_t *peer_armed; /* the peer's doorbell's `armed` word */
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
	/* Liveness (vmlive.c, docs/vm.md section 8). */
	bool vm;            /* --kind vm: attach with PORTAL_REGION_F_VM and
	                     * heartbeat (every guest but the local scenario's) */
	const char *peer_kind; /* --peer-kind vm|process: check the peer's slot */
	uint32_t beat_ms;   /* heartbeat period (--kind vm) */
	uint32_t stall_ms;  /* watch: heartbeat stall that means dead */
	uint32_t check_ms;  /* watched wait: longest sleep between looks */
	uint64_t seed;      /* guest_death: random kill and pause moments */
	const char *qemu_pidfile; /* guest_death host: QEMU's -pidfile */
	const char *monitor;      /* guest_death host: QEMU's HMP monitor socket */
	const char *signal_dir;   /* guest_death: files exchanged with the harness */
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
	/* Set by vm_exchange: the largest message, and a reservation the
	 * doorbell's readiness check made for the next message (NULL: none). */
	uint32_t max;
	void *open_buf;
};
int vm_exchange(struct vm_peer *p, struct vm_exch *x);

/* Waking (vmwake.c). parse: --wake into p->wake (before anything else);
 * prepare: the guest's ivshmem device (before the region, whose memory it
 * holds); create: the creator's doorbells; attach: our waiter, our id in
 * the control block (before phase 1); peer: the notifier that rings the
 * peer (after the peer's phase 1). wait/kick: sleep until READY or
 * TIMEOUT_S, ring the peer. report: print the doorbell counters and fail
 * if the waiter never slept or the notifier never rang. All return enum
 * vm_exit (create: a Portal error). */
int vm_wake_parse(struct vm_peer *p);
enum portal_doorbell_backend vm_wake_backend(const struct vm_wake *w);
int vm_wake_prepare(struct vm_peer *p);
void *vm_wake_region_mem(const struct vm_peer *p, size_t *len);
int vm_wake_create(struct vm_peer *p);
int vm_wake_attach(struct vm_peer *p, bool is_a);
int vm_wake_peer(struct vm_peer *p, uint32_t peer_side, double deadline);
int vm_wake_wait(struct vm_peer *p, portal_doorbell_ready_fn ready, void *arg, double timeout_s);
int vm_wake_kick(struct vm_peer *p);
int vm_wake_report(struct vm_peer *p);
/* Round-trip pacing: wait up to MAX_S (not timed) until the peer's waiter
 * has armed its doorbell, so that the next round trip finds it asleep and
 * has to wake it. true if it did. */
bool vm_wake_peer_armed(struct vm_peer *p, double max_s);
void vm_wake_close(struct vm_peer *p);
void vm_wake_close_device(struct vm_peer *p);
/* Polling: one idle step (spin, yield, sleep up to 1 ms). */
void vm_poll_idle(struct vm_wake *w);

/* Checks the peer's participant slot against --peer-kind (the kind, pid
 * 0 and a heartbeat for a VM); VM_PASS when no kind is asked for. */
int vm_check_peer_slot(struct vm_peer *p, uint32_t side);

/* The guest_death test (vmlive.c): the host consumes what the guest
 * produces and watches it; the harness kills, restarts and pauses QEMU. */
int vm_run_death_host(struct vm_peer *p);
int vm_run_death_guest(struct vm_peer *p);
/* Helpers of vmpeer.c that vmlive.c uses. */
int vm_open_msgring(struct vm_peer *p, const char *name, enum portal_ring_role role,
		    portal_msgring_t **out);
uint64_t vm_now_ns(void);

/* The hostile test: the guest's side and the host's side. */
int vm_run_hostile(struct vm_peer *p);
int vm_run_honest(struct vm_peer *p);
/* Create the objects of the hostile test (host, at region creation). */
int vm_create_hostile(struct vm_peer *p);

#endif
