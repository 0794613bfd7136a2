/* SPDX-License-Identifier: MIT */
/*
 * vmlive.c - the guest_death test: liveness across the VM boundary with a
 * real QEMU guest (docs/vm.md section 8, docs/liveness.md).
 *
 * The region is the exchange's (rings a2b and b2a, the control block, the
 * doorbells wake_a and wake_b); only b2a is used. The guest (side 1, kind
 * VM, heartbeating) produces numbered messages into b2a and rings wake_a;
 * the host (side 0) consumes them, asleep in portal_doorbell_wait(..., -1)
 * with a liveness watch on side 1: no timeout, the watch is all that can
 * end the wait. The host drives the test, through the files and sockets
 * the harness gives it:
 *
 *   life 1   a helper thread of the host kills QEMU (SIGKILL, pid from
 *            --qemu-pidfile) at a random moment after the first message.
 *            The wait must return PORTAL_EPEERDEAD within stall + check +
 *            SLACK, after every message the guest published: the count
 *            drained is checked against the guest's own counter (its
 *            control line's `count`, stored after each commit), which
 *            survives QEMU because the region is a host file.
 *   restart  the host creates SIGNAL_DIR/restart; the harness boots QEMU
 *            again and the new guest attaches side 1 (the dead guest's
 *            slot is taken over with a new epoch). The host's watch must
 *            say RESTARTED with another epoch; the host re-opens its ring
 *            handle, re-arms the watch, and the new guest's first message
 *            must carry the next sequence number (no gap, no duplicate).
 *   life 2   the helper thread sends "stop" to QEMU's HMP monitor (a
 *            paused guest: alive, silent). The wait must return
 *            PORTAL_EPEERDEAD within the same bound, all messages drained.
 *            The host then takes side 1 over itself (a successor
 *            incarnation, kind VM) and sends "cont": the resumed guest
 *            must find itself fenced (portal_region_check_self and
 *            portal_region_heartbeat: PORTAL_ESTALE), say so, stop
 *            writing and detach without touching the successor's slot.
 *            The harness creates SIGNAL_DIR/guest-done when that QEMU has
 *            powered off; at most one more message may have arrived (the
 *            residual window of docs/liveness.md: a guest paused between
 *            its check and its commit finishes that one commit).
 *
 * How the new guest knows where to go on: before reserving message SEQ the
 * producer stores one word, intent = SEQ << 32 | low 32 bits of the ring's
 * prod_tail. A successor opens the ring as producer (the library steps past
 * a record its predecessor committed without publishing prod_tail), then
 * reads prod_tail: if it moved past the intent's position, message SEQ was
 * committed and it goes on with SEQ + 1, else with SEQ. One word, so no
 * kill point leaves a half-written intent.
 *
 * The detection times are printed as
 *   liveness: event=kill|pause detect_ms=.. bound_ms=.. stall_ms=.. ...
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vm/vmpeer.h"

#define NS_PER_MS UINT64_C(1000000)
/* Detection bound: stall + check interval + this. Generous: TCG guests
 * and a shared 2-core machine. */
#define SLACK_MS 1000u
/* The random moment of the kill and of the pause, after the life's first
 * message: [MIN, MIN + SPAN) ms. */
#define ACT_MIN_MS  300u
#define ACT_SPAN_MS 2200u
/* The guest's bursts: 1..BURST_MAX messages, then 0..GAP_US of sleep. */
#define BURST_MAX 32u
#define GAP_US    2000u
/* Monitor replies. */
#define MON_WAIT_MS 5000

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u),
			       .tv_nsec = (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ------------------------------------------------------------------ */
/* The host: the kill and the pause                                    */
/* ------------------------------------------------------------------ */

enum act_kind { ACT_KILL, ACT_STOP };

struct live_host {
	struct vm_peer *p;
	portal_msgring_t *rx;
	portal_peer_watch_t *w;
	uint64_t next;            /* the sequence number we expect next */
	uint64_t rng;
	int mon_fd;               /* HMP monitor connection, -1 if none */
	/* The helper thread that kills or pauses QEMU. */
	pthread_t thr;
	bool thr_running;
	enum act_kind act;
	uint64_t act_delay_ns;
	_Atomic uint64_t t_act;   /* our clock when it was done; 0 before */
	_Atomic int act_rc;       /* VM_PASS, or why it could not be done */
	char act_err[160];
};

/* Read the monitor until its prompt "(qemu) " (after a banner or a
 * command's answer); 0, or -1 on error or after MON_WAIT_MS. */
static int mon_prompt(int fd)
{
	static const char prompt[] = "(qemu) ";
	char buf[512], tail[sizeof(prompt)] = "";
	uint64_t end = vm_now_ns() + MON_WAIT_MS * NS_PER_MS;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int left = (int)((int64_t)(end - vm_now_ns()) / (int64_t)NS_PER_MS);
		ssize_t n;

		if (left <= 0 || poll(&pfd, 1, left) <= 0)
			return -1;
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			return -1;
		/* Keep the last bytes seen: the prompt may come in pieces. */
		for (ssize_t i = 0; i < n; i++) {
			memmove(tail, tail + 1, sizeof(tail) - 2);
			tail[sizeof(tail) - 2] = buf[i];
		}
		if (memcmp(tail, prompt, sizeof(prompt) - 1) == 0)
			return 0;
	}
}

/* Send one HMP command and wait for the next prompt (QEMU has done it:
 * "stop" returns once the vCPUs are paused). */
static int mon_cmd(struct live_host *h, const char *cmd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char line[32];
	int n;

	if (h->mon_fd < 0) {
		if (!h->p->o.monitor || strlen(h->p->o.monitor) >= sizeof(sa.sun_path))
			return -EINVAL;
		strcpy(sa.sun_path, h->p->o.monitor);
		h->mon_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (h->mon_fd < 0)
			return -errno;
		if (connect(h->mon_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
		    mon_prompt(h->mon_fd) != 0) {
			close(h->mon_fd);
			h->mon_fd = -1;
			return -EIO;
		}
	}
	n = snprintf(line, sizeof(line), "%s\n", cmd);
	if (write(h->mon_fd, line, (size_t)n) != n)
		return -EIO;
	return mon_prompt(h->mon_fd) == 0 ? 0 : -ETIMEDOUT;
}

/* QEMU's pid from its -pidfile, checked against /proc/PID/comm. */
static int qemu_pid(struct live_host *h, pid_t *pid)
{
	char buf[64], path[64];
	FILE *f;
	long v = 0;

	if (!h->p->o.qemu_pidfile)
		return -EINVAL;
	f = fopen(h->p->o.qemu_pidfile, "r");
	if (!f)
		return -errno;
	if (fscanf(f, "%ld", &v) != 1)
		v = 0;
	fclose(f);
	if (v <= 1)
		return -EINVAL;
	snprintf(path, sizeof(path), "/proc/%ld/comm", v);
	f = fopen(path, "r");
	if (!f)
		return -ESRCH;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	if (strncmp(buf, "qemu", 4) != 0)
		return -ESRCH;
	*pid = (pid_t)v;
	return 0;
}

static void *act_main(void *arg)
{
	struct live_host *h = arg;
	pid_t pid = 0;
	int rc;

	sleep_ns(h->act_delay_ns);
	if (h->act == ACT_KILL) {
		rc = qemu_pid(h, &pid);
		if (rc == 0 && kill(pid, SIGKILL) != 0)
			rc = -errno;
	} else {
		rc = mon_cmd(h, "stop");
	}
	if (rc) {
		snprintf(h->act_err, sizeof(h->act_err), "%s QEMU: %s",
			 h->act == ACT_KILL ? "kill" : "stop", strerror(-rc));
		atomic_store_explicit(&h->act_rc, VM_SETUP, memory_order_relaxed);
	}
	/* Release: the error text, then the time; pairs with the acquire
	 * in life(). */
	atomic_store_explicit(&h->t_act, vm_now_ns(), memory_order_release);
	return NULL;
}

static int act_start(struct live_host *h, enum act_kind k)
{
	h->act = k;
	h->act_delay_ns = (ACT_MIN_MS + rnd(&h->rng) % ACT_SPAN_MS) * NS_PER_MS;
	atomic_store_explicit(&h->t_act, 0, memory_order_relaxed);
	atomic_store_explicit(&h->act_rc, VM_PASS, memory_order_relaxed);
	if (pthread_create(&h->thr, NULL, act_main, h) != 0)
		return VM_SETUP;
	h->thr_running = true;
	vm_say(h->p, "%s QEMU in %.3f s (at a random moment)", k == ACT_KILL ? "killing" : "pausing",
	       (double)h->act_delay_ns * 1e-9);
	return VM_PASS;
}

static void act_join(struct live_host *h)
{
	if (h->thr_running)
		pthread_join(h->thr, NULL);
	h->thr_running = false;
}

/* ------------------------------------------------------------------ */
/* The host: consuming                                                  */
/* ------------------------------------------------------------------ */

static int rx_ready(void *arg)
{
	return portal_msgring_ready(arg);
}

/* Take every message there is, each checked; their number in *N. */
static int drain(struct live_host *h, uint64_t *n)
{
	const void *buf;
	const char *why;
	size_t len;
	int rc;

	*n = 0;
	while ((rc = portal_msgring_peek(h->rx, &buf, &len)) == 0) {
		why = vm_msg_check(buf, len, h->next, DIR_B2A, h->p->o.max_msg);
		if (why) {
			vm_say(h->p, "message #%llu (%zu bytes): %s", (unsigned long long)h->next, len,
			       why);
			return VM_FAIL;
		}
		rc = portal_msgring_release(h->rx);
		if (rc)
			break;
		h->next++;
		(*n)++;
	}
	if (rc == -EAGAIN)
		return VM_PASS;
	vm_say(h->p, "receive #%llu: %s", (unsigned long long)h->next, portal_strerror(rc));
	return VM_FAIL;
}

/* The guest's published counter against what we drained: every message
 * it counted is here, and at most the one it committed but had not
 * counted yet when it stopped. */
static int check_drained(struct live_host *h, const char *when)
{
	uint64_t pub = vm_peer_field(h->p, 1, offsetof(struct ctl_line, count));

	vm_say(h->p, "%s: drained up to #%llu, the guest's published counter says %llu", when,
	       (unsigned long long)h->next, (unsigned long long)pub);
	if (h->next < pub || h->next > pub + 1) {
		vm_say(h->p, "%s: %s", when,
		       h->next < pub ? "messages the guest published were not delivered"
				     : "more messages than the guest published");
		return VM_FAIL;
	}
	return VM_PASS;
}

/*
 * One life of the guest: consume, asleep in the watched wait with no
 * timeout, until it returns PORTAL_EPEERDEAD; start the kill or pause at a
 * random moment after the first message. *DETECT_NS: from the act to the
 * wait's return.
 */
static int life(struct live_host *h, enum act_kind k, uint64_t *detect_ns, uint64_t *got)
{
	struct vm_peer *p = h->p;
	uint64_t start = h->next, n, t_dead, t_act;
	uint64_t bound = ((uint64_t)p->o.stall_ms + p->o.check_ms + SLACK_MS) * NS_PER_MS;
	int rc;

	for (;;) {
		rc = drain(h, &n);
		if (rc)
			return rc;
		if (n && !h->thr_running) {
			vm_say(p, "first message of this life: #%llu", (unsigned long long)start);
			/* It heartbeats before it produces. */
			rc = vm_check_peer_slot(p, 1);
			if (rc == VM_PASS)
				rc = act_start(h, k);
			if (rc)
				return rc;
		}
		rc = portal_doorbell_wait(p->wake.waiter, rx_ready, h->rx, -1);
		if (rc == 0)
			continue;
		t_dead = vm_now_ns();
		break;
	}
	if (rc != PORTAL_EPEERDEAD) {
		vm_say(p, "doorbell wait: %s", portal_strerror(rc));
		return VM_FAIL;
	}
	/* Acquire: pairs with the release in act_main. */
	t_act = atomic_load_explicit(&h->t_act, memory_order_acquire);
	if (!h->thr_running || t_act == 0 || t_act > t_dead) {
		vm_say(p, "the wait said the peer was dead before QEMU was %s",
		       k == ACT_KILL ? "killed" : "paused");
		return VM_FAIL;
	}
	act_join(h);
	if (atomic_load_explicit(&h->act_rc, memory_order_relaxed) != VM_PASS) {
		vm_say(p, "%s", h->act_err);
		return VM_SETUP;
	}
	/* Nothing may be left: the wait looked once more before giving up. */
	rc = drain(h, &n);
	if (rc)
		return rc;
	if (n) {
		vm_say(p, "%llu messages were left after PORTAL_EPEERDEAD", (unsigned long long)n);
		return VM_FAIL;
	}
	*detect_ns = t_dead - t_act;
	*got = h->next - start;
	vm_say(p, "%s: PORTAL_EPEERDEAD %.1f ms after the %s (bound %.0f ms), %llu messages in "
		  "this life",
	       k == ACT_KILL ? "kill" : "pause", (double)*detect_ns * 1e-6,
	       k == ACT_KILL ? "SIGKILL" : "monitor's stop", (double)bound * 1e-6,
	       (unsigned long long)*got);
	if (*detect_ns > bound) {
		vm_say(p, "detection took longer than stall + check + %u ms", SLACK_MS);
		return VM_FAIL;
	}
	return check_drained(h, k == ACT_KILL ? "kill" : "pause");
}

static int signal_file(struct vm_peer *p, const char *name)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", p->o.signal_dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		vm_say(p, "create %s: %s", path, strerror(errno));
		return VM_SETUP;
	}
	close(fd);
	return VM_PASS;
}

static int wait_file(struct vm_peer *p, const char *name, double deadline)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", p->o.signal_dir, name);
	while (access(path, F_OK) != 0) {
		if (vm_now() > deadline) {
			vm_say(p, "the harness did not create %s", path);
			return VM_TIMEOUT;
		}
		sleep_ns(20 * NS_PER_MS);
	}
	return VM_PASS;
}

static const char *state_name(uint32_t s)
{
	static const char *const n[] = { "ABSENT", "ALIVE", "DEAD", "RESTARTED", "GONE" };

	return s < 5 ? n[s] : "?";
}

/* Poll the watch until it says STATE (or the deadline passes). */
static int wait_state(struct live_host *h, uint32_t state, double deadline,
		      struct portal_peer_status *st)
{
	for (;;) {
		if (portal_region_watch_status(h->w, st) != 0)
			return VM_FAIL;
		if (st->state == state)
			return VM_PASS;
		if (vm_now() > deadline) {
			vm_say(h->p, "the watch says %s, waited for %s", state_name(st->state),
			       state_name(state));
			return VM_TIMEOUT;
		}
		sleep_ns((uint64_t)h->p->o.check_ms * NS_PER_MS);
	}
}

/* Between the lives: the new guest comes, the watch says RESTARTED, and
 * everything held from the old incarnation is dropped and re-opened. */
static int restart(struct live_host *h)
{
	struct vm_peer *p = h->p;
	struct portal_peer_status st;
	int rc;

	rc = signal_file(p, "restart");
	if (rc)
		return rc;
	rc = wait_state(h, PORTAL_PEER_RESTARTED, vm_now() + p->o.wait_s, &st);
	if (rc)
		return rc;
	if (st.epoch == st.watched_epoch || st.epoch == 0) {
		vm_say(p, "RESTARTED without a new epoch");
		return VM_FAIL;
	}
	vm_say(p, "restart: the watch says RESTARTED, epoch %016llx -> %016llx",
	       (unsigned long long)st.watched_epoch, (unsigned long long)st.epoch);
	/* Our consumer handle's private state is the old life's: re-open
	 * it (it resumes at cons_head, all of which we released). */
	portal_msgring_detach(h->rx);
	h->rx = NULL;
	rc = vm_open_msgring(p, "b2a", PORTAL_ROLE_CONSUMER, &h->rx);
	if (rc)
		return rc;
	/* The new guest's slot is checked at its first message: it may be
	 * between its claim and its first heartbeat now. */
	return portal_region_watch_rearm(h->w) != 0 ? VM_FAIL : VM_PASS;
}

/* After the pause: take side 1 over (a successor), resume the old guest,
 * and check that it was fenced. */
static int fence(struct live_host *h, uint64_t *late)
{
	struct vm_peer *p = h->p;
	struct portal_region_opts ro = { .side = 1, .flags = PORTAL_REGION_F_VM,
					 .ident = "successor" };
	struct portal_participant_info pi;
	struct portal_peer_status st;
	portal_region_t *succ = NULL;
	uint64_t before = h->next, n, epoch;
	int rc;

	rc = portal_region_attach(p->o.uri, &ro, &succ);
	if (rc) {
		vm_say(p, "successor: attach side 1: %s", portal_strerror(rc));
		return VM_FAIL;
	}
	/* The successor's own epoch, from its slot. */
	rc = portal_region_participant(succ, 1, &pi) ? VM_FAIL : VM_PASS;
	epoch = pi.epoch;
	if (rc == VM_PASS)
		rc = portal_region_watch_status(h->w, &st) ? VM_FAIL : VM_PASS;
	if (rc == VM_PASS && (st.state != PORTAL_PEER_RESTARTED || st.epoch != epoch)) {
		vm_say(p, "successor: the watch says %s, epoch %016llx", state_name(st.state),
		       (unsigned long long)st.epoch);
		rc = VM_FAIL;
	}
	if (rc == VM_PASS) {
		vm_say(p, "successor: side 1 taken over, epoch %016llx; resuming the paused guest",
		       (unsigned long long)st.epoch);
		rc = mon_cmd(h, "cont") == 0 ? VM_PASS : VM_SETUP;
		if (rc)
			vm_say(p, "monitor: cont failed");
	}
	/* The harness: QEMU powered off (the fenced guest said so and left). */
	if (rc == VM_PASS)
		rc = wait_file(p, "guest-done", vm_now() + p->o.wait_s);
	if (rc == VM_PASS)
		rc = drain(h, &n);
	if (rc == VM_PASS) {
		*late = h->next - before;
		vm_say(p, "fencing: %llu message(s) from the old guest after the successor took "
			  "over (at most 1: a commit it had begun before the pause)",
		       (unsigned long long)*late);
		if (*late > 1)
			rc = VM_FAIL;
	}
	/* The fenced guest's detach must have left the successor's slot as
	 * it was. */
	if (rc == VM_PASS &&
	    (portal_region_participant(p->reg, 1, &pi) != 0 || pi.state != PORTAL_PART_ACTIVE ||
	     pi.epoch != epoch || portal_region_check_self(succ) != 0)) {
		vm_say(p, "the fenced guest changed the successor's slot (state %u, epoch %016llx)",
		       pi.state, (unsigned long long)pi.epoch);
		rc = VM_FAIL;
	}
	portal_region_detach(succ);
	return rc;
}

int vm_run_death_host(struct vm_peer *p)
{
	struct live_host h = { .p = p, .mon_fd = -1 };
	struct portal_liveness_opts lo = { .stall_ns = (int64_t)p->o.stall_ms * 1000000 };
	uint64_t kill_ns = 0, pause_ns = 0, n1 = 0, n2 = 0, late = 0;
	int rc;

	if (!p->o.signal_dir || !p->o.qemu_pidfile || !p->o.monitor || p->wake.kind == VM_WAKE_POLL) {
		vm_say(p, "death-host needs --signal-dir, --qemu-pidfile, --monitor and a --wake "
			  "doorbell");
		return VM_USAGE;
	}
	h.rng = p->o.seed ? p->o.seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	vm_say(p, "seed %llu (--seed / PORTAL_VM_SEED to repeat)", (unsigned long long)h.rng);
	h.rng |= 1;
	rc = vm_open_msgring(p, "b2a", PORTAL_ROLE_CONSUMER, &h.rx);
	if (rc == VM_PASS)
		rc = vm_wake_attach(p, true);
	if (rc == VM_PASS && (portal_region_watch_open(p->reg, 1, &lo, &h.w) != 0 ||
			      portal_doorbell_set_watch(p->wake.waiter, h.w,
							(int64_t)p->o.check_ms * 1000000) != 0))
		rc = VM_SETUP;
	if (rc != VM_PASS)
		goto out;
	vm_set(&p->ctl[p->side].phase, 1);
	rc = vm_wait_field(p, 1, offsetof(struct ctl_line, phase), 1, vm_now() + p->o.wait_s);
	if (rc) {
		vm_say(p, "the guest did not show up within %.0f s", p->o.wait_s);
		goto out;
	}
	vm_say(p, "guest is there; consuming asleep in a watched doorbell wait (%s), no timeout; "
		  "stall %u ms, check %u ms",
	       p->wake.name, p->o.stall_ms, p->o.check_ms);
	rc = life(&h, ACT_KILL, &kill_ns, &n1);
	if (rc == VM_PASS)
		rc = restart(&h);
	if (rc == VM_PASS)
		rc = life(&h, ACT_STOP, &pause_ns, &n2);
	if (rc == VM_PASS)
		rc = fence(&h, &late);
	if (rc == VM_PASS) {
		struct portal_doorbell_stats ds;

		/* The host really slept on the doorbell: woken by the guest's
		 * rings (its BAR0 Doorbell writes reach our server eventfd)
		 * or by the watch's check interval. */
		portal_doorbell_stats(p->wake.waiter, &ds);
		vm_say(p, "doorbell kind=%s waits=%llu sleeps=%llu spurious=%llu timeouts=%llu",
		       p->wake.kind == VM_WAKE_IVSHMEM ? "ivshmem" : p->wake.name,
		       (unsigned long long)ds.waits, (unsigned long long)ds.sleeps,
		       (unsigned long long)ds.spurious, (unsigned long long)ds.timeouts);
		if (ds.sleeps == 0) {
			vm_say(p, "doorbell: the host never slept in its wait");
			rc = VM_FAIL;
		}
	}
	if (rc == VM_PASS) {
		uint64_t bound = (uint64_t)p->o.stall_ms + p->o.check_ms + SLACK_MS;

		vm_say(p, "liveness: event=kill detect_ms=%.1f bound_ms=%llu stall_ms=%u check_ms=%u",
		       (double)kill_ns * 1e-6, (unsigned long long)bound, p->o.stall_ms,
		       p->o.check_ms);
		vm_say(p, "liveness: event=pause detect_ms=%.1f bound_ms=%llu stall_ms=%u check_ms=%u",
		       (double)pause_ns * 1e-6, (unsigned long long)bound, p->o.stall_ms,
		       p->o.check_ms);
		vm_say(p, "guest_death ok: %llu messages from the first guest, %llu from the second "
			  "(+%llu after the fence), every sequence number and checksum checked, no "
			  "gap, no duplicate",
		       (unsigned long long)n1, (unsigned long long)n2, (unsigned long long)late);
	}
out:
	act_join(&h);
	if (p->wake.waiter)
		portal_doorbell_set_watch(p->wake.waiter, NULL, 0);
	portal_region_watch_close(h.w);
	portal_msgring_detach(h.rx);
	if (h.mon_fd >= 0)
		close(h.mon_fd);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The guest: producing until killed or fenced                          */
/* ------------------------------------------------------------------ */

/* Fenced: say so with what heartbeat and check_self answer, write nothing. */
static int fenced(struct vm_peer *p, uint64_t seq)
{
	int hb = portal_region_heartbeat(p->reg), cs = portal_region_check_self(p->reg);

	vm_say(p, "fenced: portal_region_heartbeat says %s, portal_region_check_self %s; "
		  "stopped writing before #%llu",
	       hb == PORTAL_ESTALE ? "PORTAL_ESTALE" : portal_strerror(hb),
	       cs == PORTAL_ESTALE ? "PORTAL_ESTALE" : portal_strerror(cs), (unsigned long long)seq);
	return hb == PORTAL_ESTALE && cs == PORTAL_ESTALE ? VM_PASS : VM_FAIL;
}

int vm_run_death_guest(struct vm_peer *p)
{
	struct ctl_line *me = &p->ctl[p->side];
	struct portal_msgring_hdr *hdr;
	struct portal_object_info info;
	portal_msgring_t *tx = NULL;
	double deadline;
	uint64_t intent, tail, seq, rng = p->o.seed | 1;
	uint32_t ipos;
	int rc;

	rc = vm_open_msgring(p, "b2a", PORTAL_ROLE_PRODUCER, &tx);
	if (rc == VM_PASS && (portal_region_lookup(p->reg, "b2a", PORTAL_OBJ_MSGRING, &info) != 0 ||
			      info.size < sizeof(*hdr))) {
		vm_say(p, "b2a: no header");
		rc = VM_SETUP;
	}
	if (rc != VM_PASS)
		goto out;
	hdr = info.addr;
	/* Where the last incarnation stopped (0 on a fresh region). Acquire:
	 * pairs with the release of the intent below, in the predecessor;
	 * it is dead, what it stored before dying is all there is. prod_tail
	 * is ours now: the open above set it past any committed record. */
	intent = atomic_load_explicit(&me->intent, memory_order_acquire);
	tail = atomic_load_explicit(&hdr->prod_tail, memory_order_acquire);
	seq = intent >> 32;
	ipos = (uint32_t)intent;
	if ((uint32_t)tail != ipos) {
		/* The intended message was committed, and only it: nothing is
		 * committed between an intent and the next one. */
		if ((uint32_t)tail - ipos > PORTAL_MSG_HDR_SIZE * 2 + p->o.max_msg + p->o.ring_bytes) {
			vm_say(p, "intent at %u, ring tail at %u: not one record apart", ipos,
			       (uint32_t)tail);
			rc = VM_FAIL;
			goto out;
		}
		seq++;
	}
	vm_say(p, "producing from #%llu (predecessor's intent #%llu at %u, ring tail %u)",
	       (unsigned long long)seq, (unsigned long long)(intent >> 32), ipos, (uint32_t)tail);
	rc = vm_wait_field(p, 0, offsetof(struct ctl_line, phase), 1, vm_now() + p->o.wait_s);
	if (rc == VM_PASS)
		rc = vm_wake_peer(p, 0, vm_now() + p->o.wait_s);
	if (rc != VM_PASS)
		goto out;
	vm_set(&me->phase, 1);
	deadline = vm_now() + p->o.timeout_s;
	for (;;) {
		unsigned burst = 1 + (unsigned)(rnd(&rng) % BURST_MAX);

		for (unsigned i = 0; i < burst; i++) {
			uint32_t len = vm_msg_len(seq, DIR_B2A, p->o.max_msg);
			void *buf;

			/* Fencing: a declared-dead incarnation writes nothing
			 * more (the heartbeat thread has stopped by then too). */
			if (portal_region_check_self(p->reg) != 0) {
				rc = fenced(p, seq);
				goto out;
			}
			if (seq >> 32) {
				vm_say(p, "sequence numbers exhausted");
				rc = VM_FAIL;
				goto out;
			}
			/* Relaxed: prod_tail is ours (the ring's producer). */
			tail = atomic_load_explicit(&hdr->prod_tail, memory_order_relaxed);
			/* Release: the intent, then the reservation and commit
			 * of message seq; pairs with the successor's acquire. */
			atomic_store_explicit(&me->intent, seq << 32 | (uint32_t)tail,
					      memory_order_release);
			while ((rc = portal_msgring_reserve(tx, len, &buf)) == -EAGAIN) {
				if (vm_now() > deadline)
					break;
				if (portal_region_check_self(p->reg) != 0) {
					rc = fenced(p, seq);
					goto out;
				}
				sleep_ns(NS_PER_MS);
			}
			if (rc == 0) {
				vm_msg_fill(buf, seq, DIR_B2A, len);
				rc = portal_msgring_commit(tx, len);
			}
			if (rc) {
				vm_say(p, "send #%llu: %s", (unsigned long long)seq,
				       rc == -EAGAIN ? "the host stopped consuming" : portal_strerror(rc));
				rc = rc == -EAGAIN ? VM_TIMEOUT : VM_FAIL;
				goto out;
			}
			seq++;
			/* Our published counter, for the host's count after
			 * we die: commit, then count. */
			vm_set(&me->count, seq);
		}
		rc = vm_wake_kick(p);
		if (rc)
			goto out;
		if (vm_now() > deadline) {
			vm_say(p, "never killed nor fenced within %.0f s", p->o.timeout_s);
			rc = VM_TIMEOUT;
			goto out;
		}
		sleep_ns((rnd(&rng) % GAP_US) * 1000u);
	}
out:
	portal_msgring_detach(tx);
	return rc;
}
