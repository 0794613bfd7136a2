/* SPDX-License-Identifier: MIT */
/*
 * portal_vmpeer - one side of a Portal VM test.
 *
 *   portal_vmpeer ROLE --uri URI [options]
 *
 * Roles:
 *   create   lay out a region for an exchange (rings a2b, b2a and ctl) and
 *            exit; the guest<->guest test uses it on the host
 *   a        side A: sends on a2b, receives on b2a, then times round trips
 *            it starts (with --create: creates the region first, as side 0)
 *   b        side B: sends on b2a, receives on a2b, echoes the round trips
 *   honest   the host of the hostile test (with --create), see vmpeer_hostile.c
 *   hostile  the guest of the hostile test
 *   death-host, death-guest
 *            the guest_death test (vmlive.c): the guest produces, the host
 *            consumes asleep in a watched doorbell wait; QEMU is killed,
 *            booted again, paused and resumed
 *
 * Options:
 *   --uri URI          the region (file:..., ivshmem:, pmem:/dev/dax0.0, shm:...)
 *   --create           create the region (side 0) before running the role
 *   --size BYTES       region size at create (0: the backing's size)
 *   --parts N          participant slots at create (default 2)
 *   --side N           the slot to take when attaching (default 1)
 *   --side-a N, --side-b N   create: the sides that own a2b and b2a (0, 1)
 *   --count N          messages each way (default 10000)
 *   --rtt N            round trips to time after the exchange (default 0)
 *   --max-msg N        largest message (default 512)
 *   --ring-bytes N     message ring capacity (default 65536)
 *   --wait SEC         how long the peer may take to show up (default 120)
 *   --timeout SEC      how long the work may take once it has (default 120)
 *   --random SEC       hostile test: length of the random phase (default 3)
 *   --wake KIND        how to wait for the peer: poll (default), futex,
 *                      ivshmem:SOCK (host) / ivshmem[:BDF] (guest),
 *                      stream:PATH|NAME; see vmwake.c. With a doorbell both
 *                      sides sleep on it (spin off), the round trips
 *                      included (A starts each one once B has armed: both
 *                      wake-ups are in every figure), at least 100 round
 *                      trips are made, and the run fails unless each side
 *                      slept and rang
 *   --ready-file PATH  create PATH once the region is laid out
 *   --kind vm|process  how we attach: vm (a guest: PORTAL_REGION_F_VM, kind
 *                      VM, pid 0, no OS lock, and a heartbeat thread) or
 *                      process (the default)
 *   --peer-kind vm|process  check the peer's participant slot once it is
 *                      there (vm: kind VM, pid 0, heartbeating, no lock)
 *   --beat-ms N        heartbeat period with --kind vm (default 100)
 *   --stall-ms N       guest_death: heartbeat stall that means dead (1000)
 *   --check-ms N       guest_death: the watched wait's check interval (50)
 *   --seed N           guest_death: the random kill and pause moments
 *   --qemu-pidfile F, --monitor SOCK, --signal-dir DIR
 *                      guest_death host: QEMU's pid file and HMP monitor
 *                      socket, and where the harness and the host leave
 *                      files for each other (see vmlive.c)
 *   --tag NAME         label for the output lines
 *
 * Every message carries its sequence number, its length and a checksum of
 * its contents, all derived from the sequence number and the direction; the
 * receiver checks all three for every message, in both directions.
 * Output lines start with "PORTAL-VM[tag]:"; the last one is
 * "PORTAL-VM-RESULT[tag]: PASS" or "... FAIL (reason)". Exit codes: enum
 * vm_exit in vmpeer.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vm/vmpeer.h"

#define RTT_LEN 64u
#define STALL_S 20.0
/* Longest sleep for one round trip's answer: a lost wake-up fails. */
#define RTT_WAIT_S 10.0
/* Longest wait for the peer to go to sleep before a timed round trip. */
#define RTT_PACE_S 0.05
/* Doorbell kinds: round trips done even when --rtt is 0, so that each side
 * sleeps and rings at least this often (the exchange alone need not). */
#define RTT_MIN_WAKE 100u

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

double vm_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t vm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * The library's diagnostics: the first few, then only a count (the hostile
 * test makes thousands; a serial console is slow). They are kept in memory
 * and written out at the next line of our own: the callback runs inside
 * the calls the hostile test times, and a write to a log file on a busy
 * disk can take seconds.
 */
static unsigned long log_lines;
static char log_buf[4096];
static size_t log_len;

static void log_flush(void)
{
	if (log_len) {
		fwrite(log_buf, 1, log_len, stderr);
		fflush(stderr);
		log_len = 0;
	}
}

static void log_cb(enum portal_log_level level, const char *msg, void *arg)
{
	const char *tag = arg;
	size_t room = sizeof(log_buf) - log_len;
	int n = 0;

	if (++log_lines > 21 || room < 2)
		return;
	if (log_lines <= 20)
		n = snprintf(log_buf + log_len, room, "PORTAL-VM[%s]: portal log %d: %s\n", tag,
			     (int)level, msg);
	else
		n = snprintf(log_buf + log_len, room,
			     "PORTAL-VM[%s]: portal log: further messages counted only\n", tag);
	if (n > 0)
		log_len += (size_t)n < room ? (size_t)n : room - 1;
}

void vm_say(const struct vm_peer *p, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log_flush();
	printf("PORTAL-VM[%s]: %s\n", p->o.tag, buf);
	fflush(stdout);
}

static void sleep_us(unsigned us)
{
	struct timespec ts = { .tv_sec = us / 1000000u, .tv_nsec = (long)(us % 1000000u) * 1000 };

	nanosleep(&ts, NULL);
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static const char *wake_name(const struct vm_peer *p)
{
	static const char *const names[] = { "poll", "futex", "ivshmem", "stream" };

	return names[p->wake.kind];
}

/* ------------------------------------------------------------------ */
/* Waiting for the peer (vmwake.c has the kinds)                       */
/* ------------------------------------------------------------------ */

static void progress(struct vm_peer *p)
{
	p->wake.spins = 0;
}

/* ------------------------------------------------------------------ */
/* Control block                                                       */
/* ------------------------------------------------------------------ */

void vm_set(_Atomic uint64_t *field, uint64_t v)
{
	/* Release: what we did before, then the step that announces it;
	 * pairs with the acquire in vm_peer_field. */
	atomic_store_explicit(field, v, memory_order_release);
}

uint64_t vm_peer_field(const struct vm_peer *p, uint32_t side, size_t off)
{
	if (side >= p->nlines)
		return 0;
	return atomic_load_explicit((_Atomic uint64_t *)((uint8_t *)&p->ctl[side] + off),
				    memory_order_acquire);
}

int vm_wait_field(struct vm_peer *p, uint32_t side, size_t off, uint64_t v, double deadline)
{
	struct vm_wake w = { 0 };

	while (vm_peer_field(p, side, off) < v) {
		if (vm_now() > deadline)
			return VM_TIMEOUT;
		vm_poll_idle(&w);
	}
	return VM_PASS;
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	return x ^ (x >> 33);
}

uint32_t vm_msg_len(uint64_t seq, uint32_t dir, uint32_t max)
{
	return VM_MSG_HDR + (uint32_t)(mix(seq * 2 + dir) % (max - VM_MSG_HDR + 1));
}

static uint32_t body_sum(const uint8_t *b, uint32_t len, uint64_t seq)
{
	uint32_t h = 2166136261u ^ (uint32_t)seq;

	for (uint32_t i = VM_MSG_HDR; i < len; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

/* Layout: u64 seq, u32 len, u32 dir, u32 sum, u32 pad, then the body. */
void vm_msg_fill(void *buf, uint64_t seq, uint32_t dir, uint32_t len)
{
	uint8_t *b = buf;
	uint64_t x = mix(seq ^ ((uint64_t)dir << 56));
	uint32_t sum, zero = 0;

	for (uint32_t i = VM_MSG_HDR; i < len; i++) {
		b[i] = (uint8_t)x;
		x = (x >> 8) | (x << 56);
		if ((i & 7) == 7)
			x = mix(x + i);
	}
	sum = body_sum(b, len, seq);
	memcpy(b, &seq, 8);
	memcpy(b + 8, &len, 4);
	memcpy(b + 12, &dir, 4);
	memcpy(b + 16, &sum, 4);
	memcpy(b + 20, &zero, 4);
}

const char *vm_msg_check(const void *buf, size_t n, uint64_t seq, uint32_t dir, uint32_t max)
{
	const uint8_t *b = buf;
	uint64_t s;
	uint32_t len, d, sum;

	if (n < VM_MSG_HDR)
		return "shorter than a header";
	memcpy(&s, b, 8);
	memcpy(&len, b + 8, 4);
	memcpy(&d, b + 12, 4);
	memcpy(&sum, b + 16, 4);
	if (s != seq)
		return "wrong sequence number";
	if (d != dir)
		return "wrong direction";
	if (len != n || len != vm_msg_len(seq, dir, max))
		return "wrong length";
	if (sum != body_sum(b, len, seq))
		return "checksum mismatch";
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Set-up                                                              */
/* ------------------------------------------------------------------ */

static int create_exchange(struct vm_peer *p)
{
	struct portal_msgring_params mp = { .capacity = p->o.ring_bytes, .max_msg = p->o.max_msg };
	struct portal_object_info info;
	int rc;

	rc = portal_msgring_create(p->reg, "a2b", &mp, p->o.side_a);
	if (rc == 0)
		rc = portal_msgring_create(p->reg, "b2a", &mp, p->o.side_b);
	if (rc == 0)
		rc = portal_region_alloc(p->reg, VM_CTL_NAME, PORTAL_OBJ_USER,
					 (uint64_t)p->o.parts * sizeof(struct ctl_line), 0, 0, NULL,
					 &info);
	if (rc == 0)
		rc = vm_wake_create(p);
	return rc;
}

static bool retry_attach(int rc)
{
	return rc == -ENOENT || rc == PORTAL_EMAGIC || rc == PORTAL_ESIZE ||
	       rc == PORTAL_ECHECKSUM || rc == -ENODEV;
}

static int setup(struct vm_peer *p)
{
	struct portal_region_opts ro = { .ident = p->o.tag };
	struct portal_object_info info;
	double deadline = vm_now() + p->o.wait_s;
	size_t mem_len = 0;
	void *mem = vm_wake_region_mem(p, &mem_len);
	int rc, fd;

	if (p->o.create) {
		ro.size = p->o.size;
		ro.part_count = p->o.parts;
		rc = portal_region_create(p->o.uri, &ro, &p->reg);
		if (rc == 0)
			rc = strcmp(p->o.role, "honest") == 0 ? vm_create_hostile(p) : create_exchange(p);
		if (rc) {
			vm_say(p, "create %s: %s", p->o.uri, portal_strerror(rc));
			return VM_SETUP;
		}
		if (p->o.ready_file) {
			fd = open(p->o.ready_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
			if (fd >= 0)
				close(fd);
		}
	} else {
		ro.side = p->o.side;
		/* A guest is one participant as a whole: kind VM, pid 0, no OS
		 * lock (it would live in the guest's kernel); the host judges
		 * it by its heartbeat. */
		if (p->o.vm)
			ro.flags |= PORTAL_REGION_F_VM;
		/* Quiet while the region is not there yet. */
		portal_set_log(log_cb, (void *)p->o.tag, PORTAL_LOG_ERROR);
		/* A guest with the ivshmem doorbell has the region's memory
		 * from VFIO already (BAR2): attach to that mapping. */
		while ((rc = mem ? portal_region_attach_mem(mem, mem_len, &ro, &p->reg)
				 : portal_region_attach(p->o.uri, &ro, &p->reg)) != 0) {
			if (!retry_attach(rc) || vm_now() > deadline) {
				vm_say(p, "attach %s: %s", p->o.uri, portal_strerror(rc));
				return rc == -ENOENT || retry_attach(rc) ? VM_TIMEOUT : VM_SETUP;
			}
			sleep_us(10000);
		}
		portal_set_log(log_cb, (void *)p->o.tag, PORTAL_LOG_WARN);
	}
	p->side = portal_region_side(p->reg);
	vm_say(p, "region %s%s: %zu bytes, side %u, id %08x", p->o.uri,
	       mem ? " (BAR2 through VFIO)" : "", portal_region_size(p->reg), p->side,
	       portal_region_id(p->reg));
	if (p->o.vm && !p->o.create) {
		/* Before anything is announced in the control block: a peer
		 * that sees us there finds the slot heartbeating already. */
		rc = portal_region_heartbeat_start(p->reg, (int64_t)p->o.beat_ms * 1000000);
		if (rc) {
			vm_say(p, "heartbeat: %s", portal_strerror(rc));
			return VM_SETUP;
		}
		struct portal_participant_info pi = { 0 };

		portal_region_participant(p->reg, p->side, &pi);
		vm_say(p, "slot: kind vm, pid 0, epoch %016llx, heartbeat every %u ms",
		       (unsigned long long)pi.epoch, p->o.beat_ms);
	}
	while ((rc = portal_region_lookup(p->reg, VM_CTL_NAME, PORTAL_OBJ_USER, &info)) == -ENOENT &&
	       vm_now() < deadline)
		sleep_us(10000);
	if (rc || info.size < 2 * sizeof(struct ctl_line) || (uintptr_t)info.addr % 64) {
		vm_say(p, "control block: %s", rc ? portal_strerror(rc) : "too small");
		return VM_SETUP;
	}
	p->ctl = info.addr;
	p->nlines = (uint32_t)(info.size / sizeof(struct ctl_line));
	if (p->side >= p->nlines) {
		vm_say(p, "control block has no line for side %u", p->side);
		return VM_SETUP;
	}
	return VM_PASS;
}

int vm_open_msgring(struct vm_peer *p, const char *name, enum portal_ring_role role,
		    portal_msgring_t **out)
{
	double deadline = vm_now() + p->o.wait_s;
	int rc;

	while ((rc = portal_msgring_open(p->reg, name, role, out)) == -ENOENT && vm_now() < deadline)
		sleep_us(10000);
	if (rc)
		vm_say(p, "open %s: %s", name, portal_strerror(rc));
	return rc ? VM_SETUP : VM_PASS;
}

/* ------------------------------------------------------------------ */
/* Exchange: N messages each way at once, every one checked            */
/* ------------------------------------------------------------------ */

/*
 * The doorbell's readiness check during the exchange: a message to
 * receive, or room for the next one to send (the peer rings after it
 * publishes and after it releases). Room is tested by reserving it, which
 * touches only our own handle; the reservation is kept for the send loop.
 * An error also counts as ready: the loop meets it again and reports it.
 */
static int exch_ready(void *arg)
{
	struct vm_exch *x = arg;
	int rc;

	if (x->recvd < x->count && portal_msgring_ready(x->rx))
		return 1;
	if (x->sent < x->count) {
		if (x->open_buf)
			return 1;
		rc = portal_msgring_reserve(x->tx, vm_msg_len(x->sent, x->tx_dir, x->max),
					    &x->open_buf);
		if (rc != 0)
			x->open_buf = NULL;
		return rc != -EAGAIN;
	}
	return 0;
}

int vm_exchange(struct vm_peer *p, struct vm_exch *x)
{
	uint32_t max = p->o.max_msg;
	double t0 = vm_now(), last = t0, deadline = t0 + p->o.timeout_s;
	struct ctl_line *me = &p->ctl[p->side];
	static uint8_t copybuf[1u << 16];
	int rc;

	x->max = max;
	x->open_buf = NULL;
	while (x->sent < x->count || x->recvd < x->count) {
		unsigned moved = 0;

		for (unsigned k = 0; k < 32 && x->sent < x->count; k++) {
			uint32_t len = vm_msg_len(x->sent, x->tx_dir, max);
			void *buf = x->open_buf;

			/* A reservation exch_ready() made for this message. */
			x->open_buf = NULL;
			rc = buf ? 0 : portal_msgring_reserve(x->tx, len, &buf);
			if (rc == -EAGAIN)
				break;
			if (rc == 0) {
				vm_msg_fill(buf, x->sent, x->tx_dir, len);
				rc = portal_msgring_commit(x->tx, len);
			}
			if (rc) {
				vm_say(p, "send #%llu: %s", (unsigned long long)x->sent,
				       portal_strerror(rc));
				return VM_FAIL;
			}
			x->sent++;
			moved++;
		}
		for (unsigned k = 0; k < 32 && x->recvd < x->count; k++) {
			const void *buf;
			const char *why;
			ssize_t got;
			size_t n;

			/* A trusted peer's message is checked in place (zero-copy)
			 * and then released; an untrusted one's is copied first. */
			if (x->copy) {
				got = portal_msgring_recv(x->rx, copybuf, sizeof(copybuf));
				rc = got < 0 ? (int)got : 0;
				buf = copybuf;
				n = got < 0 ? 0 : (size_t)got;
			} else {
				rc = portal_msgring_peek(x->rx, &buf, &n);
			}
			if (rc == -EAGAIN)
				break;
			if (rc) {
				vm_say(p, "receive #%llu: %s", (unsigned long long)x->recvd,
				       portal_strerror(rc));
				return VM_FAIL;
			}
			why = vm_msg_check(buf, n, x->recvd, x->rx_dir, max);
			if (why) {
				vm_say(p, "message #%llu (%zu bytes): %s", (unsigned long long)x->recvd,
				       n, why);
				return VM_FAIL;
			}
			rc = x->copy ? 0 : portal_msgring_release(x->rx);
			if (rc) {
				vm_say(p, "release #%llu: %s", (unsigned long long)x->recvd,
				       portal_strerror(rc));
				return VM_FAIL;
			}
			x->recvd++;
			moved++;
		}
		if (moved) {
			/* What we sent or released, then the ring: the peer may
			 * sleep waiting for either. */
			rc = vm_wake_kick(p);
			if (rc)
				return rc;
			progress(p);
			/* Relaxed: a diagnostic counter only we write. */
			atomic_store_explicit(&me->count, x->recvd, memory_order_relaxed);
			last = vm_now();
			continue;
		}
		if (p->wake.waiter) {
			/* Sleep until the peer rings; a lost wake-up ends here. */
			rc = vm_wake_wait(p, exch_ready, x, STALL_S);
			if (rc) {
				vm_say(p, "stalled: sent %llu received %llu of %llu",
				       (unsigned long long)x->sent, (unsigned long long)x->recvd,
				       (unsigned long long)x->count);
				return rc;
			}
			continue;
		}
		vm_poll_idle(&p->wake);
		if ((p->wake.spins & 255) == 0) {
			double now = vm_now();

			if (now > deadline || now - last > STALL_S) {
				vm_say(p, "stalled: sent %llu received %llu of %llu",
				       (unsigned long long)x->sent, (unsigned long long)x->recvd,
				       (unsigned long long)x->count);
				return VM_TIMEOUT;
			}
		}
	}
	vm_say(p, "exchange ok: %llu messages each way, all sequence numbers and checksums "
		  "checked, %.3f s",
	       (unsigned long long)x->count, vm_now() - t0);
	return VM_PASS;
}

/* ------------------------------------------------------------------ */
/* Round trips: A sends, B echoes, A times each one                    */
/* ------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int rx_ready(void *arg)
{
	return portal_msgring_ready(arg);
}

/* Wait until a message arrives (spinning, or asleep on the doorbell); its
 * length in *n. */
static int rtt_wait(struct vm_peer *p, portal_msgring_t *rx, const void **buf, size_t *n,
		    double deadline)
{
	unsigned spins = 0;
	double left;
	int rc;

	while ((rc = portal_msgring_peek(rx, buf, n)) == -EAGAIN) {
		if (p->wake.waiter) {
			left = deadline - vm_now();
			if (left > RTT_WAIT_S)
				left = RTT_WAIT_S;
			rc = left > 0 ? vm_wake_wait(p, rx_ready, rx, left) : VM_TIMEOUT;
			if (rc) {
				vm_say(p, "round trip: no answer");
				return rc;
			}
			continue;
		}
		cpu_relax();
		if ((++spins & 4095) == 0 && vm_now() > deadline) {
			vm_say(p, "round trip: no answer");
			return VM_TIMEOUT;
		}
	}
	if (rc) {
		vm_say(p, "round trip: %s", portal_strerror(rc));
		return VM_FAIL;
	}
	return VM_PASS;
}

static int rtt_send(struct vm_peer *p, portal_msgring_t *tx, const void *src, uint64_t seq,
		    uint32_t dir, double deadline)
{
	void *buf;
	int rc;

	while ((rc = portal_msgring_reserve(tx, RTT_LEN, &buf)) == -EAGAIN)
		if (vm_now() > deadline)
			return VM_TIMEOUT;
	if (rc == 0) {
		if (src)
			memcpy(buf, src, RTT_LEN);
		else
			vm_msg_fill(buf, seq, dir, RTT_LEN);
		rc = portal_msgring_commit(tx, RTT_LEN);
	}
	if (rc) {
		vm_say(p, "round trip send: %s", portal_strerror(rc));
		return VM_FAIL;
	}
	/* The message, then the ring (the peer sleeps on its doorbell). */
	return vm_wake_kick(p);
}

/* The round trips use their own sequence space (from 1 << 32) and the
 * fixed length RTT_LEN, checked like every other message. */
static int rtt_check(struct vm_peer *p, const void *buf, size_t n, uint64_t seq, uint32_t dir)
{
	const uint8_t *b = buf;
	uint8_t want[RTT_LEN];

	if (n != RTT_LEN) {
		vm_say(p, "round trip #%llu: %zu bytes", (unsigned long long)seq, n);
		return VM_FAIL;
	}
	vm_msg_fill(want, seq, dir, RTT_LEN);
	if (memcmp(b, want, RTT_LEN) != 0) {
		vm_say(p, "round trip #%llu: contents differ", (unsigned long long)seq);
		return VM_FAIL;
	}
	return VM_PASS;
}

static int rtt_a(struct vm_peer *p, struct vm_exch *x)
{
	uint64_t *ns = calloc(p->o.rtt, sizeof(*ns));
	double deadline = vm_now() + p->o.timeout_s;
	uint64_t asleep = 0;
	int rc = VM_PASS;

	if (!ns)
		return VM_SETUP;
	for (uint64_t i = 0; i < p->o.rtt && rc == VM_PASS; i++) {
		uint64_t seq = (UINT64_C(1) << 32) + i, t0;
		const void *buf;
		size_t n;

		/* With doorbells, start each round trip once the peer sleeps
		 * (untimed; B arms right after its echo): the figure is then
		 * ring + wake-up both ways, not a peer that happened to be
		 * still awake. */
		if (p->wake.waiter && vm_wake_peer_armed(p, RTT_PACE_S))
			asleep++;
		t0 = vm_now_ns();

		rc = rtt_send(p, x->tx, NULL, seq, x->tx_dir, deadline);
		if (rc == VM_PASS)
			rc = rtt_wait(p, x->rx, &buf, &n, deadline);
		if (rc == VM_PASS) {
			ns[i] = vm_now_ns() - t0;
			rc = rtt_check(p, buf, n, seq, x->tx_dir);
		}
		if (rc == VM_PASS && portal_msgring_release(x->rx) != 0)
			rc = VM_FAIL;
	}
	if (rc == VM_PASS && p->o.rtt) {
		uint64_t r = p->o.rtt;

		qsort(ns, r, sizeof(*ns), cmp_u64);
		vm_say(p, "rtt n=%llu min_ns=%llu p50_ns=%llu p99_ns=%llu max_ns=%llu wake=%s "
			  "peer_asleep=%llu",
		       (unsigned long long)r, (unsigned long long)ns[0],
		       (unsigned long long)ns[r / 2], (unsigned long long)ns[r * 99 / 100],
		       (unsigned long long)ns[r - 1], wake_name(p), (unsigned long long)asleep);
	}
	free(ns);
	return rc;
}

static int rtt_b(struct vm_peer *p, struct vm_exch *x)
{
	double deadline = vm_now() + p->o.timeout_s;
	int rc = VM_PASS;

	for (uint64_t i = 0; i < p->o.rtt && rc == VM_PASS; i++) {
		uint64_t seq = (UINT64_C(1) << 32) + i;
		uint8_t copy[RTT_LEN];
		const void *buf;
		size_t n;

		rc = rtt_wait(p, x->rx, &buf, &n, deadline);
		if (rc == VM_PASS)
			rc = rtt_check(p, buf, n, seq, x->rx_dir);
		if (rc == VM_PASS) {
			memcpy(copy, buf, RTT_LEN);
			rc = portal_msgring_release(x->rx) ? VM_FAIL : VM_PASS;
		}
		if (rc == VM_PASS)
			rc = rtt_send(p, x->tx, copy, seq, x->rx_dir, deadline);
	}
	if (rc == VM_PASS && p->o.rtt)
		vm_say(p, "echoed %llu round trips", (unsigned long long)p->o.rtt);
	return rc;
}

int vm_check_peer_slot(struct vm_peer *p, uint32_t side)
{
	struct portal_participant_info pi;
	bool want_vm;

	if (!p->o.peer_kind)
		return VM_PASS;
	want_vm = strcmp(p->o.peer_kind, "vm") == 0;
	if (portal_region_participant(p->reg, side, &pi) != 0) {
		vm_say(p, "peer slot %u: unreadable", side);
		return VM_FAIL;
	}
	vm_say(p, "peer slot %u: kind %s, pid %llu, flags%s%s, heartbeat %llu, ident '%s'", side,
	       pi.kind == PORTAL_PART_VM ? "vm" : pi.kind == PORTAL_PART_PROCESS ? "process" : "?",
	       (unsigned long long)pi.pid, pi.flags & PORTAL_PART_F_OSLOCK ? " oslock" : "",
	       pi.flags & PORTAL_PART_F_HEARTBEAT ? " heartbeat" : "",
	       (unsigned long long)pi.heartbeat, pi.ident);
	if (pi.state != PORTAL_PART_ACTIVE ||
	    (want_vm && (pi.kind != PORTAL_PART_VM || pi.pid != 0 ||
			 !(pi.flags & PORTAL_PART_F_HEARTBEAT) || (pi.flags & PORTAL_PART_F_OSLOCK))) ||
	    (!want_vm && pi.kind != PORTAL_PART_PROCESS)) {
		vm_say(p, "peer slot %u is not what --peer-kind %s says", side, p->o.peer_kind);
		return VM_FAIL;
	}
	return VM_PASS;
}

/* The side that owns (produces into) ring NAME. */
static int owner_of(struct vm_peer *p, const char *name, uint32_t *side)
{
	struct portal_object_info info;
	int rc = portal_region_lookup(p->reg, name, PORTAL_OBJ_MSGRING, &info);

	*side = info.owner_side;
	return rc;
}

static int run_exchange(struct vm_peer *p, bool is_a)
{
	struct vm_exch x = { .tx_dir = is_a ? DIR_A2B : DIR_B2A, .rx_dir = is_a ? DIR_B2A : DIR_A2B,
			     .count = p->o.count };
	uint32_t peer_side = 0;
	double deadline;
	int rc;

	rc = vm_open_msgring(p, is_a ? "a2b" : "b2a", PORTAL_ROLE_PRODUCER, &x.tx);
	if (rc == VM_PASS)
		rc = vm_open_msgring(p, is_a ? "b2a" : "a2b", PORTAL_ROLE_CONSUMER, &x.rx);
	/* The peer is the side that produces into our receiving ring. */
	if (rc == VM_PASS && (owner_of(p, is_a ? "b2a" : "a2b", &peer_side) != 0 ||
			      peer_side >= p->nlines || peer_side == p->side)) {
		vm_say(p, "no peer side in the directory");
		rc = VM_SETUP;
	}
	/* Our doorbell (and id) before phase 1: the peer rings us only after. */
	if (rc == VM_PASS)
		rc = vm_wake_attach(p, is_a);
	if (rc != VM_PASS)
		goto out;
	vm_set(&p->ctl[p->side].phase, 1);
	deadline = vm_now() + p->o.wait_s;
	rc = vm_wait_field(p, peer_side, offsetof(struct ctl_line, phase), 1, deadline);
	if (rc != VM_PASS) {
		vm_say(p, "peer (side %u) did not show up within %.0f s", peer_side, p->o.wait_s);
		goto out;
	}
	/* The peer attached and started its heartbeat before its phase 1. */
	rc = vm_check_peer_slot(p, peer_side);
	if (rc == VM_PASS)
		rc = vm_wake_peer(p, peer_side, deadline);
	if (rc != VM_PASS)
		goto out;
	vm_say(p, "peer (side %u) is there; exchanging %llu messages each way, waking by %s",
	       peer_side, (unsigned long long)x.count, p->wake.name);
	rc = vm_exchange(p, &x);
	if (rc == VM_PASS) {
		vm_set(&p->ctl[p->side].phase, 2);
		/* Round trips start when both have finished the exchange. */
		rc = vm_wait_field(p, peer_side, offsetof(struct ctl_line, phase), 2,
				   vm_now() + p->o.timeout_s);
		if (rc != VM_PASS)
			vm_say(p, "peer did not finish its exchange");
	}
	if (rc == VM_PASS && p->o.rtt)
		rc = is_a ? rtt_a(p, &x) : rtt_b(p, &x);
	if (rc == VM_PASS) {
		struct portal_ring_stats st;

		portal_msgring_stats(x.rx, &st);
		if (st.proto_errors)
			rc = VM_FAIL;
		if (rc == VM_PASS)
			rc = vm_wake_report(p);
		vm_set(&p->ctl[p->side].phase, 3);
	}
out:
	portal_msgring_detach(x.tx);
	portal_msgring_detach(x.rx);
	return rc;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static int usage(void)
{
	fprintf(stderr, "usage: portal_vmpeer create|a|b|honest|hostile|death-host|death-guest "
			"--uri URI [options]\n"
			"       (see the comment at the top of vm/vmpeer.c)\n");
	return VM_USAGE;
}

/* A count or a size: "4096", "0x1000", "4M" (k, M, G: powers of 1024). */
static bool num(const char *s, uint64_t *v)
{
	unsigned shift = 0;
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	if (errno || end == s || *s == '-')
		return false;
	if (*end)
		shift = *end == 'k' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 64;
	if (shift == 64 || (*end && end[1]) || *v > (UINT64_MAX >> shift))
		return false;
	*v <<= shift;
	return true;
}

static int parse(int argc, char **argv, struct vm_opts *o)
{
	static const struct option opts[] = {
		{ "uri", required_argument, NULL, 'u' },   { "create", no_argument, NULL, 'c' },
		{ "size", required_argument, NULL, 's' },  { "parts", required_argument, NULL, 'P' },
		{ "side", required_argument, NULL, 'S' },  { "side-a", required_argument, NULL, 'A' },
		{ "side-b", required_argument, NULL, 'B' }, { "count", required_argument, NULL, 'n' },
		{ "rtt", required_argument, NULL, 'r' },   { "wait", required_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 't' }, { "random", required_argument, NULL, 'R' },
		{ "wake", required_argument, NULL, 'W' },  { "ready-file", required_argument, NULL, 'f' },
		{ "tag", required_argument, NULL, 'T' },   { "max-msg", required_argument, NULL, 'm' },
		{ "ring-bytes", required_argument, NULL, 'b' }, { "kind", required_argument, NULL, 'k' },
		{ "peer-kind", required_argument, NULL, 'K' }, { "beat-ms", required_argument, NULL, 'H' },
		{ "stall-ms", required_argument, NULL, 'L' }, { "check-ms", required_argument, NULL, 'C' },
		{ "seed", required_argument, NULL, 'E' },  { "qemu-pidfile", required_argument, NULL, 'Q' },
		{ "monitor", required_argument, NULL, 'M' }, { "signal-dir", required_argument, NULL, 'D' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int c;

	*o = (struct vm_opts){ .parts = 2, .side = 1, .side_a = 0, .side_b = 1, .count = 10000,
			       .wait_s = 120, .timeout_s = 120, .random_s = 3, .max_msg = 512,
			       .ring_bytes = 65536, .beat_ms = 100, .stall_ms = 1000, .check_ms = 50 };
	if (argc < 2 || argv[1][0] == '-')
		return usage();
	o->role = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'c') {
			o->create = true;
			continue;
		}
		if (c == '?')
			return usage();
		if (c == 'u' || c == 'W' || c == 'f' || c == 'T') {
			*(c == 'u' ? &o->uri : c == 'W' ? &o->wake : c == 'f' ? &o->ready_file : &o->tag) =
				optarg;
			continue;
		}
		if (c == 'Q' || c == 'M' || c == 'D' || c == 'K') {
			*(c == 'Q' ? &o->qemu_pidfile : c == 'M' ? &o->monitor
				     : c == 'D' ? &o->signal_dir : &o->peer_kind) = optarg;
			continue;
		}
		if (c == 'k') {
			if (strcmp(optarg, "vm") != 0 && strcmp(optarg, "process") != 0)
				return usage();
			o->vm = optarg[0] == 'v';
			continue;
		}
		if (c == 'w' || c == 't' || c == 'R') {
			double d = strtod(optarg, NULL);

			if (d <= 0)
				return usage();
			*(c == 'w' ? &o->wait_s : c == 't' ? &o->timeout_s : &o->random_s) = d;
			continue;
		}
		if (!num(optarg, &v))
			return usage();
		switch (c) {
		case 's': o->size = v; break;
		case 'P': o->parts = (uint32_t)v; break;
		case 'S': o->side = (uint32_t)v; break;
		case 'A': o->side_a = (uint32_t)v; break;
		case 'B': o->side_b = (uint32_t)v; break;
		case 'n': o->count = v; break;
		case 'r': o->rtt = v; break;
		case 'm': o->max_msg = (uint32_t)v; break;
		case 'b': o->ring_bytes = (uint32_t)v; break;
		case 'H': o->beat_ms = (uint32_t)v; break;
		case 'L': o->stall_ms = (uint32_t)v; break;
		case 'C': o->check_ms = (uint32_t)v; break;
		case 'E': o->seed = v; break;
		default: return usage();
		}
	}
	if (!o->uri || optind != argc || o->max_msg < VM_MSG_HDR + RTT_LEN || o->parts < 2 ||
	    o->parts > PORTAL_REGION_MAX_PARTS || o->beat_ms == 0 || o->stall_ms == 0 ||
	    o->check_ms == 0 ||
	    (o->peer_kind && strcmp(o->peer_kind, "vm") != 0 && strcmp(o->peer_kind, "process") != 0))
		return usage();
	if (!o->tag)
		o->tag = o->role;
	if (strcmp(o->role, "create") == 0)
		o->create = true;
	return VM_PASS;
}

int main(int argc, char **argv)
{
	static const char *const verdict[] = { "PASS", "FAIL (a check failed)", "FAIL (usage)",
					       "FAIL (set-up)", "FAIL (timeout)" };
	struct vm_peer p = { 0 };
	int rc = parse(argc, argv, &p.o);

	if (rc != VM_PASS)
		return rc;
	setvbuf(stdout, NULL, _IOLBF, 0);
	portal_set_log(log_cb, (void *)p.o.tag, PORTAL_LOG_WARN);
	rc = vm_wake_parse(&p);
	if (rc == VM_PASS && p.wake.kind != VM_WAKE_POLL && strcmp(p.o.role, "a") != 0 &&
	    strcmp(p.o.role, "b") != 0 && strcmp(p.o.role, "create") != 0 &&
	    strncmp(p.o.role, "death-", 6) != 0) {
		vm_say(&p, "--wake %s: only roles a, b, create and death-* use doorbells",
		       p.wake.name);
		rc = VM_USAGE;
	}
	if (rc == VM_PASS && p.wake.kind != VM_WAKE_POLL && p.o.rtt < RTT_MIN_WAKE &&
	    strncmp(p.o.role, "death-", 6) != 0)
		p.o.rtt = RTT_MIN_WAKE;
	if (rc == VM_PASS)
		rc = vm_wake_prepare(&p);
	if (rc == VM_PASS)
		rc = setup(&p);
	if (rc == VM_PASS) {
		if (strcmp(p.o.role, "create") == 0)
			rc = VM_PASS;
		else if (strcmp(p.o.role, "a") == 0 || strcmp(p.o.role, "b") == 0)
			rc = run_exchange(&p, p.o.role[0] == 'a');
		else if (strcmp(p.o.role, "honest") == 0)
			rc = vm_run_honest(&p);
		else if (strcmp(p.o.role, "hostile") == 0)
			rc = vm_run_hostile(&p);
		else if (strcmp(p.o.role, "death-host") == 0)
			rc = vm_run_death_host(&p);
		else if (strcmp(p.o.role, "death-guest") == 0)
			rc = vm_run_death_guest(&p);
		else
			rc = usage();
	}
	vm_wake_close(&p);
	portal_region_detach(p.reg);
	vm_wake_close_device(&p);
	log_flush();
	if (log_lines > 20)
		printf("PORTAL-VM[%s]: portal log: %lu messages in all\n", p.o.tag, log_lines);
	printf("PORTAL-VM-RESULT[%s]: %s\n", p.o.tag, verdict[rc >= 0 && rc <= 4 ? rc : 1]);
	return rc;
}
