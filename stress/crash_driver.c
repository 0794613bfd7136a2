/* SPDX-License-Identifier: MIT */
/*
 * portal_crash - the crash-injection harness (issue 5, item 3;
 * docs/crash-injection.md). For each ring kind it creates a region with the
 * ring and a ledger, runs producers and consumers (portal_crash_peer) and,
 * round after round, kills the producer, the consumer or both with SIGKILL,
 * at a random moment or at a named point, restarts them, and at the end
 * checks the ledger: every committed message delivered exactly once.
 *
 *   portal_crash [--injections N] [--kinds spsc,msg,...] [--budget B]
 *                [--seed S] [--detect watch|pidfd] [--hang-seconds T]
 *                [--sabotage lose|dup] [-v]
 *
 * --sabotage is the harness's own test: the consumers drop (lose) or
 * record twice (dup) one message in 997, and the run must fail.
 *
 * N (default 300, or PORTAL_CRASH_INJECTIONS) is split evenly over the
 * kinds. One line per kind and one overall, e.g.
 *
 *   crash: kind=spsc injections=60 ... lost=0 duplicated=0 hangs=0 ...
 *
 * Exit 0 when every kind has lost == duplicated == hangs == errors == 0;
 * 1 otherwise; 77 with "skipped: <why>" when it cannot run here.
 *
 * A round: every role is running; the driver allows each producer B more
 * messages; the round's targets die (the driver's SIGKILL after a random
 * delay, or their own at the named point they were started with) and are
 * restarted at once; the round ends when the targets have died and come
 * back and the allowance has drained through the ring. A round that makes
 * no progress for --hang-seconds is a hang.
 *
 * Detection. The survivors learn of a death through Portal's liveness
 * layer: consumers watch the producers' participant slots (crash_peer.c)
 * and stamp the time into the ledger; the driver, the survivor of a dead
 * consumer, decides with portal_region_watch_status (--detect watch, the
 * default) or with a pidfd of its own (--detect pidfd). The report gives
 * both figures: the survivors' (detect_*) and the driver's pidfd wake-up
 * (pidfd_*).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "portal/abi.h"
#include "portal/doorbell.h"
#include "portal/region.h"
#include "portal/ring.h"
#include "stress/crash_ledger.h"
#include "stress/driver.h"

#define PEER_PROGRAM "portal_crash_peer"
#define MAX_WINDOW   65536u
#define MAX_SAMPLES  (1u << 17)
#define MAX_DEATHS   (1u << 17) /* per kind */
#define MAX_STAMPS   (1u << 17) /* per kind */
/* A DEAD verdict whose process has not exited after this long is false. */
#define VERDICT_CONFIRM_MS 2000
#define MAX_TOPUPS   16      /* extra allowances a round may take */

enum method { M_RANDOM = 0, M_POINT = 1 };
enum target { T_PROD = 0, T_CONS = 1, T_BOTH = 2 };

struct opts {
	uint64_t injections;
	uint32_t kinds;          /* bit mask of crash_kind */
	uint32_t budget;         /* messages per producer per round */
	uint64_t seed;
	bool watch;              /* detect through portal_region_watch_* (default) */
	const char *sabotage;    /* self-test: consumers lose or duplicate (must fail) */
	double hang_s;
	bool verbose;
};

struct role {
	bool producer;
	unsigned id;
	uint32_t side;
	pid_t pid;
	int pidfd;               /* -1: none (poll with waitid) */
	portal_peer_watch_t *watch;
	uint64_t epoch;          /* participant epoch of the live incarnation (0: not yet) */
	uint64_t pidfd_ns;       /* when the driver saw its pidfd readable (0: not yet) */
	uint64_t watch_ns;       /* when the driver's watch said DEAD (0: not yet) */
	bool alive;
	uint32_t inc;
	int plan;                /* point of the live incarnation */
	bool target;             /* round target */
	bool injected;           /* its round injection happened */
	int want_point;          /* round plan for the next incarnation */
	uint64_t want_after;
	uint64_t kill_at_ns;     /* random: when to kill (0: no) */
	bool snipe;              /* at kill_at: catch it inside a claim first */
	unsigned snipe_tries;
	unsigned watch_wrong;    /* --detect watch: wrong verdicts seen */
	uint64_t killed_ns;      /* driver kill time (0: none in flight) */
};

struct stats {
	uint64_t injections, by_point, by_random, both_rounds, rounds;
	uint64_t in_claim, in_claim_done, snipe_missed, point_missed;
	uint64_t point_hits[CRASH_PT_COUNT];
	uint64_t committed, delivered, lost, lost_taken, duplicated, hangs, errors;
	uint64_t in_doubt, doubt_delivered, phantom, skipped, poison, recovered, rescues, resumed;
	uint64_t bad, restarts;
	uint64_t det_doorbell, det_restarted, det_early, watch_false, watch_missed;
	uint64_t attach_eproto;  /* ring attaches that said EPROTO, then worked */
	/* Detection times, ns: the survivor's (a consumer's stamp, else the
	 * driver's watch verdict), split by who, and the driver's pidfd. */
	struct samples {
		uint64_t *v;
		size_t n;
	} s[4];
	const char *skip_note;
	double seconds;
};

enum { S_SURVIVOR = 0, S_PEER, S_DRIVER, S_PIDFD, S_COUNT };

/* A SIGKILL death, for matching with the survivors' stamps. */
struct death {
	uint32_t role;
	uint64_t epoch;          /* 0: died before it attached */
	uint64_t t0;             /* kill time */
	uint64_t pidfd_ns, watch_ns;
};

/* A consumer's detection stamp (crash_ledger.h, struct crash_det). */
struct stamp {
	uint32_t role, how;
	uint64_t epoch, ns;
};

struct crun {
	const struct opts *o;
	int kind;
	struct driver_run run;
	struct crash_ledger *led;
	void *qmem;
	unsigned nprod, ncons, nroles;
	struct role roles[CRASH_MAX_ROLES];
	uint64_t rng;
	bool recovery;
	uint64_t window[MAX_WINDOW];
	unsigned nwindow;
	uint64_t window_dropped;
	struct stats *st;
	bool fatal;
	bool ledger_full;
	double ewma_drain_us;
	struct death *deaths;
	size_t ndeaths;
	struct stamp *stamps;
	size_t nstamps;
	uint64_t det_read[CRASH_MAX_CONS]; /* log entries taken from each consumer */
};

static uint64_t rnd(struct crun *cr)
{
	return stress_rand(&cr->rng);
}

static uint64_t rnd_range(struct crun *cr, uint64_t lo, uint64_t hi)
{
	return lo + rnd(cr) % (hi - lo + 1);
}

/* ------------------------------------------------------------------ */
/* Liveness                                                            */
/* ------------------------------------------------------------------ */

/*
 * The one place the driver decides that a peer died, and when.
 * --detect watch (the default): the region's liveness watch on the role's
 * slot (portal_region_watch_open/_fd/_status); the watch's pidfd wakes the
 * event loop, the verdict is the slot's OS lock, looked at on every pass.
 * --detect pidfd: a pidfd of our own per incarnation. Either way a death
 * before the incarnation attached is seen from the process itself (pidfd,
 * waitid). The consumers' own detection of producer deaths is in
 * crash_peer.c; collect_stamps() gathers it.
 */

static _Atomic uint32_t *running_word(struct crun *cr, struct role *r);

/*
 * Has PID exited (a zombie not yet reaped)? Does not reap. waitid, not
 * waitpid: wait4 rejects WNOWAIT with EINVAL (the harness once asked it
 * that way and took every correct DEAD verdict for a false one), and
 * kill(pid, 0) succeeds on a zombie.
 */
static bool exited(pid_t pid)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0 &&
	       si.si_pid == pid;
}

/* Wait at most MS for R's process to exit; true if it has. */
static bool exited_within(struct role *r, int ms)
{
	struct pollfd pf = { .fd = r->pidfd, .events = POLLIN };

	if (r->pidfd >= 0) {
		if (poll(&pf, 1, ms) == 1 && !r->pidfd_ns)
			r->pidfd_ns = crash_now_ns();
		return exited(r->pid);
	}
	for (int i = 0; i < ms * 20; i++) {
		if (exited(r->pid))
			return true;
		stress_sleep_us(50);
	}
	return exited(r->pid);
}

static void watch_begin(struct crun *cr, struct role *r)
{
	(void)cr;
	r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
	r->epoch = r->pidfd_ns = r->watch_ns = 0;
}

/* Once R's incarnation runs (it has attached), note its epoch, and with
 * --detect watch open the watch: before the attach the slot still shows
 * its dead predecessor. */
static void note_running(struct crun *cr, struct role *r)
{
	struct portal_participant_info pi;

	if (r->epoch ||
	    atomic_load_explicit(running_word(cr, r), memory_order_acquire) != r->inc)
		return;
	if (portal_region_participant(cr->run.reg, r->side, &pi) == 0 && pi.pid == (uint64_t)r->pid &&
	    pi.state == PORTAL_PART_ACTIVE)
		r->epoch = pi.epoch;
	if (cr->o->watch && !r->watch)
		portal_region_watch_open(cr->run.reg, r->side, NULL, &r->watch);
}

/* The fd that wakes the event loop when R dies, or -1 (then the loop
 * ticks every 0.2 ms). */
static int watch_fd(struct crun *cr, struct role *r)
{
	int fd;

	note_running(cr, r);
	fd = cr->o->watch && r->watch ? portal_region_watch_fd(r->watch) : -1;
	return fd >= 0 ? fd : r->pidfd;
}

/* A verdict the process contradicts: say so once per incarnation. */
static void wrong_verdict(struct crun *cr, struct role *r, const struct portal_peer_status *ps,
			  const char *what)
{
	struct portal_participant_info pi;

	if (r->watch_wrong++)
		return;
	portal_region_participant(cr->run.reg, r->side, &pi);
	printf("crash: %s: watch said %u (method %u, epoch %#llx watched %#llx) for %s pid %ld; "
	       "slot: state %u pid %llu flags %#x\n",
	       crash_kind_names[cr->kind], ps->state, ps->method, (unsigned long long)ps->epoch,
	       (unsigned long long)ps->watched_epoch, what, (long)r->pid, pi.state,
	       (unsigned long long)pi.pid, pi.flags);
	cr->st->errors++;
}

/* Is R dead (or gone: a clean exit)? READABLE: its fd fired. */
static bool watch_dead(struct crun *cr, struct role *r, bool readable)
{
	struct portal_peer_status ps;

	if (!cr->o->watch || !r->watch || portal_region_watch_status(r->watch, &ps) != 0)
		return readable ? exited_within(r, VERDICT_CONFIRM_MS) : exited(r->pid);
	switch (ps.state) {
	case PORTAL_PEER_GONE:
		return exited(r->pid); /* it detached: a clean exit under way */
	case PORTAL_PEER_DEAD:
		if (!r->watch_ns)
			r->watch_ns = crash_now_ns();
		/* Check the verdict against the process. The kernel drops
		 * the lock while it tears the process down, a moment before
		 * the process can be reaped and its pidfd fires: wait for
		 * that, not just look once (once per incarnation). */
		if (r->watch_wrong ? exited(r->pid) : exited_within(r, VERDICT_CONFIRM_MS))
			return true;
		if (!r->watch_wrong)
			cr->st->watch_false++;
		wrong_verdict(cr, r, &ps, "live");
		return false;
	case PORTAL_PEER_ALIVE:
		/* The pidfd fired: the process has exited, so its lock is
		 * free; ALIVE would be a death the watch missed. */
		if (readable && exited(r->pid)) {
			cr->st->watch_missed++;
			wrong_verdict(cr, r, &ps, "exited");
			return true;
		}
		return false;
	default:
		/* RESTARTED or ABSENT: nobody else attaches our sides. */
		wrong_verdict(cr, r, &ps, "our");
		return exited(r->pid);
	}
}

static void watch_end(struct role *r)
{
	if (r->pidfd >= 0)
		close(r->pidfd);
	r->pidfd = -1;
	portal_region_watch_close(r->watch);
	r->watch = NULL;
}

/* Take the consumers' new detection stamps out of their ledger logs. */
static void collect_stamps(struct crun *cr)
{
	for (unsigned c = 0; c < cr->ncons; c++) {
		struct crash_det_log *lg = &cr->led->det[c];
		/* L7: pairs with the consumer's release in stamp(). */
		uint64_t n = atomic_load_explicit(&lg->count, memory_order_acquire);
		uint64_t i = cr->det_read[c];

		if (n - i > CRASH_DET_LOG) {
			printf("crash: %s: consumer %u detection log overrun\n",
			       crash_kind_names[cr->kind], c);
			i = n - CRASH_DET_LOG;
		}
		for (; i < n && cr->nstamps < MAX_STAMPS; i++) {
			struct crash_det *e = &lg->e[i % CRASH_DET_LOG];
			struct stamp *sp = &cr->stamps[cr->nstamps++];

			/* Relaxed: ordered by L7. */
			sp->epoch = atomic_load_explicit(&e->epoch, memory_order_relaxed);
			sp->ns = atomic_load_explicit(&e->ns, memory_order_relaxed);
			sp->role = atomic_load_explicit(&e->role, memory_order_relaxed);
			sp->how = atomic_load_explicit(&e->how, memory_order_relaxed);
		}
		cr->det_read[c] = n;
	}
}

/* ------------------------------------------------------------------ */
/* Processes                                                           */
/* ------------------------------------------------------------------ */

static unsigned role_index(const struct crun *cr, const struct role *r)
{
	return r->producer ? r->id : cr->nprod + r->id;
}

static _Atomic uint32_t *running_word(struct crun *cr, struct role *r)
{
	return r->producer ? &cr->led->prod[r->id].running : &cr->led->cons[r->id].running;
}

static int spawn(struct crun *cr, struct role *r)
{
	char side[16], id[16], inc[16], after[24];
	const char *argv[20];
	unsigned n = 0;
	int rc;

	r->inc++;
	r->plan = r->want_point;
	snprintf(side, sizeof(side), "%u", r->side);
	snprintf(id, sizeof(id), "%u", r->id);
	snprintf(inc, sizeof(inc), "%u", r->inc);
	snprintf(after, sizeof(after), "%llu", (unsigned long long)r->want_after);
	argv[n++] = "--uri", argv[n++] = cr->run.uri;
	argv[n++] = "--side", argv[n++] = side;
	argv[n++] = "--kind", argv[n++] = crash_kind_names[cr->kind];
	argv[n++] = "--role", argv[n++] = r->producer ? "producer" : "consumer";
	argv[n++] = "--id", argv[n++] = id;
	argv[n++] = "--inc", argv[n++] = inc;
	if (r->want_point) {
		argv[n++] = "--point", argv[n++] = crash_point_names[r->want_point];
		argv[n++] = "--after", argv[n++] = after;
	}
	if (cr->o->sabotage && !r->producer)
		argv[n++] = "--sabotage", argv[n++] = cr->o->sabotage;
	argv[n] = NULL;
	r->want_point = CRASH_PT_NONE;
	/* driver_spawn keeps a table of at most STRESS_MAX_PEERS; we keep
	 * our own and use only its first entry. */
	cr->run.nproc = 0;
	rc = driver_spawn(&cr->run, PEER_PROGRAM, r->producer ? "producer" : "consumer", argv, NULL);
	if (rc) {
		printf("crash: %s: spawn %s: %s\n", crash_kind_names[cr->kind], PEER_PROGRAM,
		       strerror(-rc));
		cr->st->errors++;
		cr->fatal = true;
		return rc;
	}
	r->pid = cr->run.proc[0].pid;
	r->alive = true;
	r->watch_wrong = 0;
	r->killed_ns = 0;
	r->kill_at_ns = 0;
	watch_begin(cr, r);
	cr->st->restarts++;
	return 0;
}

static void add_window(struct crun *cr, uint64_t token)
{
	if (cr->nwindow < MAX_WINDOW)
		cr->window[cr->nwindow++] = token;
	else
		cr->window_dropped++;
}

static void post_request(struct crun *cr, uint32_t role, pid_t pid)
{
	for (unsigned i = 0; i < CRASH_MAX_REQ; i++) {
		struct crash_req *rq = &cr->led->req[i];
		/* L6: a DONE request's server has finished with it. */
		uint64_t st = atomic_load_explicit(&rq->state, memory_order_acquire);

		if (st != CRASH_REQ_FREE && st != CRASH_REQ_DONE)
			continue;
		atomic_store_explicit(&rq->what, (uint64_t)role << 32 | (uint32_t)pid,
				      memory_order_relaxed);
		atomic_fetch_add_explicit(&cr->led->req_pending, 1, memory_order_relaxed);
		/* L6: `what` before the request shows; pairs with the
		 * server's acquire CAS. */
		atomic_store_explicit(&rq->state, CRASH_REQ_PENDING, memory_order_release);
		return;
	}
	printf("crash: %s: recovery request table full\n", crash_kind_names[cr->kind]);
	cr->fatal = true;
	cr->st->errors++;
}

static bool requests_settled(struct crun *cr)
{
	for (unsigned i = 0; i < CRASH_MAX_REQ; i++) {
		/* L6: pairs with the server's release of DONE. */
		uint64_t st = atomic_load_explicit(&cr->led->req[i].state, memory_order_acquire);

		if (st != CRASH_REQ_FREE && st != CRASH_REQ_DONE)
			return false;
	}
	return true;
}

/* After R's death: what it may have held, and who must recover it. */
static void after_death(struct crun *cr, struct role *r)
{
	/* A request the dead consumer was serving goes back to pending. */
	uint64_t busy = ((uint64_t)r->pid << 8) | CRASH_REQ_BUSY;
	struct crash_cons_line *cl;
	uint64_t intent, done;

	for (unsigned i = 0; i < CRASH_MAX_REQ; i++) {
		uint64_t st = busy;

		atomic_compare_exchange_strong_explicit(&cr->led->req[i].state, &st,
							CRASH_REQ_PENDING, memory_order_relaxed,
							memory_order_relaxed);
	}
	if (r->producer) {
		if (cr->recovery)
			post_request(cr, CRASH_REQ_ROLE_PROD, r->pid);
		return;
	}
	if (cr->recovery && cr->kind == CRASH_KIND_MPMC)
		post_request(cr, CRASH_REQ_ROLE_CONS, r->pid);
	if (crash_kind_is_msg(cr->kind))
		return; /* peek/release: nothing leaves the ring before release */
	cl = &cr->led->cons[r->id];
	intent = atomic_load_explicit(&cl->intent, memory_order_relaxed);
	done = atomic_load_explicit(&cl->done, memory_order_relaxed);

	if (intent == done)
		return;
	if (cr->kind != CRASH_KIND_MPMC) {
		/* Single consumer: cons_tail moves only by its dequeues; if it
		 * did not pass intent_pos, nothing was taken. */
		const struct portal_ring_hdr *h = cr->qmem;
		uint64_t tail = atomic_load_explicit(&h->cons_tail, memory_order_acquire);

		if (tail == atomic_load_explicit(&cl->intent_pos, memory_order_relaxed))
			return;
	}
	add_window(cr, intent);
}

/* R has exited with STATUS (already reaped): account for the death. */
static void reaped(struct crun *cr, struct role *r, int status)
{
	watch_end(r);
	r->alive = false;
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
		_Atomic uint64_t *kw = r->producer ? &cr->led->prod[r->id].kill_ns
						   : &cr->led->cons[r->id].kill_ns;
		uint64_t self = atomic_exchange_explicit(kw, 0, memory_order_relaxed);
		uint64_t t0 = r->killed_ns ? r->killed_ns : self;

		cr->st->injections++;
		if (r->killed_ns) {
			cr->st->by_random++;
		} else {
			cr->st->by_point++;
			cr->st->point_hits[r->plan]++;
		}
		if (t0 && cr->ndeaths < MAX_DEATHS)
			cr->deaths[cr->ndeaths++] = (struct death){
				.role = role_index(cr, r), .epoch = r->epoch, .t0 = t0,
				.pidfd_ns = r->pidfd_ns, .watch_ns = r->watch_ns,
			};
		if (r->target)
			r->injected = true;
		r->killed_ns = 0;
		after_death(cr, r);
		return;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return; /* asked to quit, or the run is over */
	printf("crash: %s: %s %u (pid %ld, incarnation %u) failed: %s %d\n",
	       crash_kind_names[cr->kind], r->producer ? "producer" : "consumer", r->id,
	       (long)r->pid, r->inc, WIFEXITED(status) ? "exit" : "signal",
	       WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	cr->st->errors++;
	cr->fatal = true;
}

/* Reap R (known dead or exiting). */
static void reap(struct crun *cr, struct role *r)
{
	int status = 0;
	pid_t w;

	do
		w = waitpid(r->pid, &status, 0);
	while (w < 0 && errno == EINTR);
	reaped(cr, r, status);
}

/*
 * Is R (stopped) inside a claim: its claim record of an MP/MC side shows a
 * claim that the side's head has passed (its CAS won) and the side's tail
 * has not (not yet published)? The same judgement recovery makes, read
 * from the ABI (claim records follow the slots). Returns 0 (no), CLAIM_COPY
 * (its copy is not done: recovery poisons or hands over its elements) or
 * CLAIM_DONE (done, waiting for an earlier claim to be published: its
 * elements already count, and recovery must publish, not poison them).
 */
enum { CLAIM_COPY = 1, CLAIM_DONE = 2 };

static int in_claim(struct crun *cr, struct role *r)
{
	const struct portal_ring_hdr *h = cr->qmem;
	const struct portal_ring_claim *recs = (const struct portal_ring_claim *)(
		(const uint8_t *)cr->qmem + PORTAL_RING_HDR_SIZE +
		(size_t)h->capacity * h->slot_size);
	unsigned nrec = r->producer ? h->max_producers : h->max_consumers;
	const _Atomic uint64_t *head = r->producer ? &h->prod_head : &h->cons_head;
	const _Atomic uint64_t *tail = r->producer ? &h->prod_tail : &h->cons_tail;

	if (!r->producer)
		recs += h->max_producers;
	for (unsigned i = 0; i < nrec; i++) {
		const struct portal_ring_claim *c = &recs[i];
		uint64_t x, n, hd, tl, dn;

		if (atomic_load_explicit(&c->state, memory_order_acquire) != PORTAL_CLAIM_HELD ||
		    atomic_load_explicit(&c->owner, memory_order_relaxed) != (uint64_t)r->pid)
			continue;
		x = atomic_load_explicit(&c->head, memory_order_acquire);
		n = atomic_load_explicit(&c->count, memory_order_relaxed);
		dn = atomic_load_explicit(&c->done, memory_order_acquire);
		hd = atomic_load_explicit(head, memory_order_acquire);
		tl = atomic_load_explicit(tail, memory_order_acquire);
		if (n == 0 || (int64_t)(hd - x) <= 0 || (int64_t)(tl - x) > 0)
			return 0;
		/* Another record at the same head: a claimant that lost its
		 * CAS there and will move on; not ours for sure. */
		for (unsigned j = 0; j < nrec; j++)
			if (j != i &&
			    atomic_load_explicit(&recs[j].state, memory_order_relaxed) != PORTAL_CLAIM_FREE &&
			    atomic_load_explicit(&recs[j].head, memory_order_relaxed) == x &&
			    atomic_load_explicit(&recs[j].count, memory_order_relaxed))
				return 0;
		return dn == x + n ? CLAIM_DONE : CLAIM_COPY;
	}
	return 0;
}

/*
 * A kill inside the library's claim window (between the claim CAS and the
 * in-order tail publish) without a hook in the library: stop R at a random
 * moment; if in_claim() says it is there, SIGKILL it stopped, else let it
 * go on and try again a little later (one try per pass of the event loop,
 * so that the other processes' deaths are still seen at once). After
 * SNIPE_TRIES misses, kill it wherever it is.
 */
#define SNIPE_TRIES 20000

static void snipe(struct crun *cr, struct role *r)
{
	int status = 0, claim;
	pid_t w;

	kill(r->pid, SIGSTOP);
	do
		w = waitpid(r->pid, &status, WUNTRACED);
	while (w < 0 && errno == EINTR);
	if (w == r->pid && !WIFSTOPPED(status)) {
		reaped(cr, r, status); /* it left on its own */
		return;
	}
	claim = in_claim(cr, r);
	if (claim) {
		cr->st->in_claim += claim == CLAIM_COPY;
		cr->st->in_claim_done += claim == CLAIM_DONE;
		r->killed_ns = crash_now_ns();
		kill(r->pid, SIGKILL);
		return;
	}
	kill(r->pid, SIGCONT);
	if (++r->snipe_tries >= SNIPE_TRIES) {
		cr->st->snipe_missed++;
		r->killed_ns = crash_now_ns();
		kill(r->pid, SIGKILL);
		return;
	}
	/* Let it run a random little while before the next look. */
	r->kill_at_ns = crash_now_ns() + rnd(cr) % 20000;
}

/* One pass of the event loop: wait at most TIMEOUT_US for a death, kill
 * whoever's random moment has come. Returns the number of deaths seen. */
static unsigned poll_once(struct crun *cr, unsigned timeout_us)
{
	struct pollfd pfd[CRASH_MAX_ROLES];
	struct role *who[CRASH_MAX_ROLES];
	bool readable[CRASH_MAX_ROLES] = { false };
	uint64_t now = crash_now_ns(), next = now + (uint64_t)timeout_us * 1000;
	unsigned n = 0, deaths = 0;
	bool all_fds = true;

	for (unsigned i = 0; i < cr->nroles; i++) {
		struct role *r = &cr->roles[i];
		int fd;

		if (!r->alive)
			continue;
		if (r->kill_at_ns && r->kill_at_ns < next)
			next = r->kill_at_ns;
		fd = watch_fd(cr, r);
		if (fd < 0) {
			all_fds = false;
			continue;
		}
		pfd[n].fd = fd;
		pfd[n].events = POLLIN;
		pfd[n].revents = 0;
		who[n++] = r;
	}
	if (!all_fds && next > now + 200000)
		next = now + 200000; /* no fd for someone: look every 0.2 ms */
	if (next > now) {
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)(next - now) };

		if (ts.tv_nsec >= 1000000000L)
			ts.tv_sec = ts.tv_nsec / 1000000000L, ts.tv_nsec %= 1000000000L;
		ppoll(pfd, n, &ts, NULL);
	}
	now = crash_now_ns();
	for (unsigned i = 0; i < n; i++)
		if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
			readable[who[i] - cr->roles] = true;
			if (!who[i]->pidfd_ns)
				who[i]->pidfd_ns = now;
		}
	/* Every live role, every pass: with --detect watch, the verdict is
	 * the slot's lock (one fcntl), whether or not a pidfd fired. */
	for (unsigned i = 0; i < cr->nroles; i++) {
		struct role *r = &cr->roles[i];

		if (r->alive && (readable[i] || cr->o->watch || r->pidfd < 0) &&
		    watch_dead(cr, r, readable[i])) {
			reap(cr, r);
			deaths++;
		}
	}
	collect_stamps(cr);
	/* Random moments that have come: kill them together ("both"). */
	now = crash_now_ns();
	for (unsigned i = 0; i < cr->nroles; i++) {
		struct role *r = &cr->roles[i];

		if (r->alive && r->kill_at_ns && r->kill_at_ns <= now) {
			r->kill_at_ns = 0;
			if (r->snipe) {
				snipe(cr, r);
				now = crash_now_ns();
				continue;
			}
			r->killed_ns = crash_now_ns();
			kill(r->pid, SIGKILL);
		}
	}
	return deaths;
}

static void kill_all(struct crun *cr)
{
	for (unsigned i = 0; i < cr->nroles; i++) {
		struct role *r = &cr->roles[i];

		if (!r->alive)
			continue;
		kill(r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
		watch_end(r);
		r->alive = false;
	}
}

/* ------------------------------------------------------------------ */
/* Progress and drain                                                  */
/* ------------------------------------------------------------------ */

static uint64_t progress(struct crun *cr)
{
	uint64_t sum = 0;

	for (unsigned p = 0; p < cr->nprod; p++)
		sum += atomic_load_explicit(&cr->led->prod[p].committed, memory_order_relaxed);
	for (unsigned c = 0; c < cr->ncons; c++) {
		struct crash_cons_line *cl = &cr->led->cons[c];

		sum += atomic_load_explicit(&cl->delivered, memory_order_relaxed) +
		       atomic_load_explicit(&cl->skipped, memory_order_relaxed) +
		       atomic_load_explicit(&cl->poison, memory_order_relaxed) +
		       atomic_load_explicit(&cl->served, memory_order_relaxed);
	}
	return sum + cr->st->restarts;
}

static bool ring_empty(struct crun *cr)
{
	if (crash_kind_is_msg(cr->kind)) {
		const struct portal_msgring_hdr *h = cr->qmem;

		return atomic_load_explicit(&h->prod_tail, memory_order_acquire) ==
		       atomic_load_explicit(&h->cons_head, memory_order_acquire);
	}
	const struct portal_ring_hdr *h = cr->qmem;
	uint64_t pt = atomic_load_explicit(&h->prod_tail, memory_order_acquire);
	uint64_t ct = atomic_load_explicit(&h->cons_tail, memory_order_acquire);

	if (pt != ct)
		return false;
	if (cr->kind == CRASH_KIND_MPSC || cr->kind == CRASH_KIND_MPMC)
		if (atomic_load_explicit(&h->prod_head, memory_order_acquire) != pt)
			return false;
	if (cr->kind == CRASH_KIND_MPMC)
		if (atomic_load_explicit(&h->cons_head, memory_order_acquire) != ct)
			return false;
	return true;
}

static bool drained(struct crun *cr)
{
	for (unsigned p = 0; p < cr->nprod; p++)
		if (atomic_load_explicit(&cr->led->prod[p].committed, memory_order_acquire) !=
		    atomic_load_explicit(&cr->led->allow[p], memory_order_relaxed))
			return false;
	return ring_empty(cr) && requests_settled(cr);
}

static bool all_running(struct crun *cr)
{
	for (unsigned i = 0; i < cr->nroles; i++) {
		struct role *r = &cr->roles[i];

		/* L3: pairs with the peer's release of running. */
		if (!r->alive || atomic_load_explicit(running_word(cr, r), memory_order_acquire) !=
					 r->inc)
			return false;
	}
	return true;
}

static void diagnose(struct crun *cr, const char *what)
{
	printf("crash: %s: HANG (%s) after %.0f s without progress\n", crash_kind_names[cr->kind],
	       what, cr->o->hang_s);
	for (unsigned p = 0; p < cr->nprod; p++)
		printf("crash:   producer %u: alive %d inc %u committed %llu allow %llu\n", p,
		       cr->roles[p].alive, cr->roles[p].inc,
		       (unsigned long long)cr->led->prod[p].committed,
		       (unsigned long long)cr->led->allow[p]);
	for (unsigned c = 0; c < cr->ncons; c++)
		printf("crash:   consumer %u: alive %d inc %u delivered %llu\n", c,
		       cr->roles[cr->nprod + c].alive, cr->roles[cr->nprod + c].inc,
		       (unsigned long long)cr->led->cons[c].delivered);
	if (crash_kind_is_msg(cr->kind)) {
		const struct portal_msgring_hdr *h = cr->qmem;

		printf("crash:   msgring prod_tail %llu cons_head %llu\n",
		       (unsigned long long)h->prod_tail, (unsigned long long)h->cons_head);
	} else {
		const struct portal_ring_hdr *h = cr->qmem;

		printf("crash:   ring prod_head %llu prod_tail %llu cons_head %llu cons_tail %llu\n",
		       (unsigned long long)h->prod_head, (unsigned long long)h->prod_tail,
		       (unsigned long long)h->cons_head, (unsigned long long)h->cons_tail);
	}
	for (unsigned i = 0; i < CRASH_MAX_REQ; i++)
		if (cr->led->req[i].state != CRASH_REQ_FREE && cr->led->req[i].state != CRASH_REQ_DONE)
			printf("crash:   request %u: what %#llx state %#llx\n", i,
			       (unsigned long long)cr->led->req[i].what,
			       (unsigned long long)cr->led->req[i].state);
}

/*
 * Run the event loop until DONE(cr) holds, restarting whoever dies.
 * Returns true, or false on a hang (no progress for hang_s) or a fatal
 * error.
 */
static bool run_until(struct crun *cr, bool (*done)(struct crun *), const char *what,
		      bool restart)
{
	uint64_t last = progress(cr), now;
	double last_t = stress_now();

	while (!cr->fatal) {
		if (done(cr))
			return true;
		poll_once(cr, 1000);
		if (restart)
			for (unsigned i = 0; i < cr->nroles; i++)
				if (!cr->roles[i].alive && spawn(cr, &cr->roles[i]))
					return false;
		now = progress(cr);
		if (now != last) {
			last = now;
			last_t = stress_now();
		} else if (stress_now() - last_t > cr->o->hang_s) {
			diagnose(cr, what);
			cr->st->hangs++;
			return false;
		}
	}
	return false;
}

static bool round_done(struct crun *cr)
{
	for (unsigned i = 0; i < cr->nroles; i++)
		if (cr->roles[i].target && !cr->roles[i].injected)
			return false;
	return all_running(cr) && drained(cr);
}

/* A point target whose point did not come this round, or a claimant not
 * yet caught inside a claim: more traffic. */
static bool topup_needed(struct crun *cr)
{
	if (!all_running(cr) || !drained(cr))
		return false;
	for (unsigned i = 0; i < cr->nroles; i++) {
		struct role *r = &cr->roles[i];

		if (r->target && !r->injected && !r->killed_ns && (!r->kill_at_ns || r->snipe))
			return true;
	}
	return false;
}

static bool round_or_topup(struct crun *cr)
{
	return round_done(cr) || topup_needed(cr);
}

static bool quit_done(struct crun *cr)
{
	for (unsigned i = 0; i < cr->nroles; i++)
		if (cr->roles[i].target && cr->roles[i].want_point && cr->roles[i].alive)
			return false;
	return true;
}

static bool producers_gone(struct crun *cr)
{
	for (unsigned p = 0; p < cr->nprod; p++)
		if (cr->roles[p].alive)
			return false;
	return true;
}

static bool all_gone(struct crun *cr)
{
	for (unsigned i = 0; i < cr->nroles; i++)
		if (cr->roles[i].alive)
			return false;
	return true;
}

static void allow_more(struct crun *cr)
{
	for (unsigned p = 0; p < cr->nprod; p++) {
		uint64_t a = atomic_load_explicit(&cr->led->allow[p], memory_order_relaxed);
		uint64_t b = a + cr->o->budget;

		if (b > cr->led->maxseq)
			b = cr->led->maxseq;
		/* L4: pairs with the producers' acquire. */
		atomic_store_explicit(&cr->led->allow[p], b, memory_order_release);
	}
}

/* ------------------------------------------------------------------ */
/* Rounds                                                              */
/* ------------------------------------------------------------------ */

/* May this combination run here? Random kills of MP producers and MC
 * consumers can land inside a claim, which only recovery can undo. */
static bool allowed(struct crun *cr, bool producer, enum method m)
{
	if (m == M_POINT || cr->recovery)
		return true;
	if (producer)
		return !(cr->kind == CRASH_KIND_MPSC || cr->kind == CRASH_KIND_MPMC);
	return cr->kind != CRASH_KIND_MPMC;
}

static int pick_point(struct crun *cr, bool producer)
{
	if (producer) {
		/* before_doorbell means something only with a doorbell. */
		unsigned n = cr->kind == CRASH_KIND_MSG_BLOCK ? 4 : 3;

		return CRASH_PT_BEFORE_WRITE + (int)(rnd(cr) % n);
	}
	return rnd(cr) & 1 ? CRASH_PT_AFTER_TAKE : CRASH_PT_AFTER_RECORD;
}

static void plan_round(struct crun *cr)
{
	enum target t;
	enum method m;
	struct role *p, *c;

	for (unsigned i = 0; i < cr->nroles; i++) {
		cr->roles[i].target = cr->roles[i].injected = false;
		cr->roles[i].want_point = CRASH_PT_NONE;
		cr->roles[i].kill_at_ns = 0;
		cr->roles[i].snipe = false;
		cr->roles[i].snipe_tries = 0;
	}
	for (;;) {
		t = (enum target)(rnd(cr) % 3);
		m = (enum method)(rnd(cr) & 1);
		p = &cr->roles[rnd(cr) % cr->nprod];
		c = &cr->roles[cr->nprod + rnd(cr) % cr->ncons];
		if ((t != T_CONS && !allowed(cr, true, m)) || (t != T_PROD && !allowed(cr, false, m)))
			continue;
		break;
	}
	if (t != T_CONS)
		p->target = true;
	if (t != T_PROD)
		c->target = true;
	if (t == T_BOTH)
		cr->st->both_rounds++;
	/* Half the random kills of claimants on rings with recovery aim
	 * inside the claim window. */
	if (m == M_RANDOM && cr->recovery) {
		p->snipe = p->target && (rnd(cr) & 1);
		c->snipe = c->target && cr->kind == CRASH_KIND_MPMC && (rnd(cr) & 1);
	}
	if (m == M_POINT) {
		uint64_t per_cons = (uint64_t)cr->o->budget * cr->nprod / cr->ncons;

		if (p->target) {
			p->want_point = pick_point(cr, true);
			p->want_after = rnd_range(cr, 1, cr->o->budget);
		}
		/* before_doorbell on the round's last message: nobody will
		 * ring the sleeping consumer; only its wait timeout (or,
		 * later, liveness) ends the wait. */
		if (p->target && p->want_point == CRASH_PT_BEFORE_DOORBELL && (rnd(cr) & 1))
			p->want_after = cr->o->budget;
		if (c->target) {
			c->want_point = pick_point(cr, false);
			c->want_after = rnd_range(cr, 1, per_cons);
		}
	}
}

static void arm_random(struct crun *cr)
{
	/* Uniform over [0, D], D following the time a round's traffic takes
	 * to drain: most kills land while messages move, some after. */
	double d_us = cr->ewma_drain_us * 1.5;
	uint64_t at;

	if (d_us < 50)
		d_us = 50;
	if (d_us > 20000)
		d_us = 20000;
	at = crash_now_ns() + rnd(cr) % (uint64_t)(d_us * 1000);
	for (unsigned i = 0; i < cr->nroles; i++)
		if (cr->roles[i].target && cr->roles[i].want_point == CRASH_PT_NONE &&
		    cr->roles[i].plan == CRASH_PT_NONE)
			cr->roles[i].kill_at_ns = at;
}

static bool one_round(struct crun *cr)
{
	bool point_round = false;
	double t0, us;

	plan_round(cr);
	/* A point target needs a fresh incarnation started with its point:
	 * ask the live one to exit cleanly first. */
	for (unsigned i = 0; i < cr->nroles; i++) {
		struct role *r = &cr->roles[i];

		if (r->want_point)
			point_round = true;
		if (r->want_point && r->alive)
			atomic_store_explicit(&cr->led->quit[role_index(cr, r)], r->inc,
					      memory_order_relaxed);
	}
	if (point_round && !run_until(cr, quit_done, "clean exit", false))
		return false;
	/* Restart the dead (point targets with their points), wait until
	 * everyone runs. */
	for (unsigned i = 0; i < cr->nroles; i++)
		if (!cr->roles[i].alive && spawn(cr, &cr->roles[i]))
			return false;
	if (!run_until(cr, all_running, "start", true))
		return false;
	allow_more(cr);
	t0 = stress_now();
	arm_random(cr);
	for (int topups = 0;; topups++) {
		if (!run_until(cr, round_or_topup, "round", true))
			return false;
		if (round_done(cr))
			break;
		/* Still not caught inside a claim, or its point never came
		 * (the other consumer took the messages): kill it now. */
		if (topups == MAX_TOPUPS)
			for (unsigned i = 0; i < cr->nroles; i++) {
				struct role *r = &cr->roles[i];

				if (r->target && !r->injected && r->alive && !r->killed_ns) {
					cr->st->snipe_missed += r->snipe;
					cr->st->point_missed += !r->snipe;
					r->snipe = false;
					r->kill_at_ns = crash_now_ns();
				}
			}
		for (unsigned p = 0; p < cr->nprod; p++)
			if (atomic_load_explicit(&cr->led->allow[p], memory_order_relaxed) +
				    cr->o->budget > cr->led->maxseq) {
				printf("crash: %s: ledger full, ending the kind early\n",
				       crash_kind_names[cr->kind]);
				cr->ledger_full = true;
				return false;
			}
		allow_more(cr);
	}
	us = (stress_now() - t0) * 1e6;
	cr->ewma_drain_us = cr->ewma_drain_us == 0 ? us : cr->ewma_drain_us * 0.9 + us * 0.1;
	cr->st->rounds++;
	return true;
}

/* ------------------------------------------------------------------ */
/* Set-up, the final check                                             */
/* ------------------------------------------------------------------ */

/* Does the ring library recover dead claimants yet? Ask a private ring. */
static bool probe_recovery(int kind)
{
	struct portal_ring_params p = { .mode = kind == CRASH_KIND_MPMC ? PORTAL_RING_MPMC
									: PORTAL_RING_MPSC,
					.slot_size = CRASH_SLOT_MP, .capacity = CRASH_RING_CAP };
	struct portal_ring_recovery_params rp = {
		.max_producers = CRASH_CLAIMS,
		.max_consumers = kind == CRASH_KIND_MPMC ? CRASH_CLAIMS : 0,
	};
	size_t len = portal_ring_memsize_recoverable(&p, &rp);
	portal_ring_t *r = NULL;
	unsigned slot;
	void *mem;
	int rc = -1;

	if (!len || posix_memalign(&mem, 64, len))
		return false;
	if (portal_ring_init_recoverable(mem, len, &p, &rp) == 0 &&
	    portal_ring_attach(mem, len, PORTAL_ROLE_CONSUMER, &r) == 0) {
		rc = portal_ring_find_claims(r, PORTAL_ROLE_PRODUCER, 1, &slot, 1);
		if (rc >= 0)
			rc = portal_ring_recover_producer(r, 0);
		if (rc == -EINVAL)
			rc = 0; /* record 0 not held: the call itself exists */
	}
	portal_ring_detach(r);
	free(mem);
	return rc >= 0;
}

static int create_queue(struct crun *cr)
{
	struct portal_object_info info;
	int rc;

	if (crash_kind_is_msg(cr->kind)) {
		struct portal_msgring_params mp = { .capacity = CRASH_MSG_CAP,
						    .max_msg = CRASH_MSG_MAX };

		rc = portal_msgring_create(cr->run.reg, CRASH_QUEUE_NAME, &mp, 1);
	} else {
		struct portal_ring_params p = {
			.mode = cr->kind == CRASH_KIND_SPSC   ? PORTAL_RING_SPSC
				: cr->kind == CRASH_KIND_MPSC ? PORTAL_RING_MPSC
							      : PORTAL_RING_MPMC,
			.slot_size = cr->kind == CRASH_KIND_SPSC ? CRASH_SLOT_SPSC : CRASH_SLOT_MP,
			.capacity = CRASH_RING_CAP,
		};
		struct portal_ring_recovery_params rp = {
			.max_producers = CRASH_CLAIMS,
			.max_consumers = cr->kind == CRASH_KIND_MPMC ? CRASH_CLAIMS : 0,
		};

		if (cr->recovery)
			rc = portal_ring_create_recoverable(cr->run.reg, CRASH_QUEUE_NAME, &p, &rp, 1);
		else
			rc = portal_ring_create(cr->run.reg, CRASH_QUEUE_NAME, &p, 1);
	}
	if (rc)
		return rc;
	if (cr->kind == CRASH_KIND_MSG_BLOCK) {
		rc = portal_doorbell_create(cr->run.reg, CRASH_DB_NAME, PORTAL_DOORBELL_FUTEX, 1);
		if (rc)
			return rc;
	}
	rc = portal_region_lookup(cr->run.reg, CRASH_QUEUE_NAME, 0, &info);
	cr->qmem = info.addr;
	return rc;
}

/* Is TOKEN recorded anywhere in the delivery arrays? Sorted search set. */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void final_check(struct crun *cr)
{
	struct stats *st = cr->st;
	uint64_t lost_total = 0, unresolved;
	bool *found = calloc(cr->nwindow + 1, sizeof(bool));

	qsort(cr->window, cr->nwindow, sizeof(uint64_t), cmp_u64);
	for (unsigned p = 0; p < cr->nprod; p++) {
		_Atomic uint64_t *deliv = crash_deliv(cr->led, p);
		_Atomic uint8_t *doubt = crash_doubt(cr->led, p);
		uint64_t committed = atomic_load_explicit(&cr->led->prod[p].committed,
							  memory_order_acquire);
		unsigned lost_shown = 0;

		for (uint64_t s = 0; s < cr->led->maxseq; s++) {
			uint64_t d = atomic_load_explicit(&deliv[s], memory_order_relaxed);

			if (d && cr->nwindow && found) {
				uint64_t *hit = bsearch(&d, cr->window, cr->nwindow,
							sizeof(uint64_t), cmp_u64);

				if (hit)
					found[hit - cr->window] = true;
			}
			if (s >= committed) {
				if (d) {
					st->phantom++;
					printf("crash: %s: producer %u seq %llu delivered, never "
					       "committed\n", crash_kind_names[cr->kind], p,
					       (unsigned long long)s);
				}
				continue;
			}
			if (atomic_load_explicit(&doubt[s], memory_order_relaxed)) {
				st->in_doubt++;
				st->doubt_delivered += d != 0;
				continue;
			}
			st->committed++;
			if (d) {
				st->delivered++;
			} else {
				lost_total++;
				if (lost_shown++ < 5 && cr->o->verbose)
					printf("crash: %s: producer %u seq %llu not delivered\n",
					       crash_kind_names[cr->kind], p, (unsigned long long)s);
			}
		}
		st->resumed += cr->led->prod[p].resumed;
		st->attach_eproto += cr->led->prod[p].attach_eproto;
	}
	/* The take window: a consumer that died between dequeue and record
	 * (its intent token never recorded) took at most one message each. */
	unresolved = cr->window_dropped;
	for (unsigned i = 0; i < cr->nwindow; i++)
		unresolved += !(found && found[i]);
	free(found);
	st->lost_taken = lost_total < unresolved ? lost_total : unresolved;
	st->lost = lost_total - st->lost_taken;
	for (unsigned c = 0; c < cr->ncons; c++) {
		struct crash_cons_line *cl = &cr->led->cons[c];

		st->duplicated += cl->dups;
		st->skipped += cl->skipped;
		st->poison += cl->poison;
		st->recovered += cl->recovered;
		st->rescues += cl->rescues;
		st->bad += cl->bad;
		st->attach_eproto += cl->attach_eproto;
	}
	st->errors += st->bad + st->phantom;
}

static void sample(struct samples *sm, uint64_t ns)
{
	if (sm->n < MAX_SAMPLES)
		sm->v[sm->n++] = ns;
}

static int cmp_stamp(const void *a, const void *b)
{
	const struct stamp *x = a, *y = b;

	if (x->role != y->role)
		return x->role < y->role ? -1 : 1;
	if (x->epoch != y->epoch)
		return x->epoch < y->epoch ? -1 : 1;
	return x->ns < y->ns ? -1 : x->ns > y->ns;
}

/*
 * Detection times of the kind's deaths. The survivor's figure: the first
 * consumer stamp for that role and incarnation (a producer's death), else
 * the driver's own watch verdict (a consumer's death, or a producer's whose
 * consumers died with it; --detect watch only). A stamp earlier than the
 * kill is a false verdict (the watch called a live producer dead): an
 * error. The pidfd figure: when the driver's event loop saw the pidfd.
 */
static void match_detections(struct crun *cr)
{
	struct stats *st = cr->st;

	qsort(cr->stamps, cr->nstamps, sizeof(*cr->stamps), cmp_stamp);
	for (size_t i = 0; i < cr->ndeaths; i++) {
		const struct death *d = &cr->deaths[i];
		struct stamp key = { .role = d->role, .epoch = d->epoch }, *sp = NULL;
		size_t lo = 0, hi = cr->nstamps;

		if (d->pidfd_ns >= d->t0)
			sample(&st->s[S_PIDFD], d->pidfd_ns - d->t0);
		while (d->epoch && lo < hi) { /* the first stamp of (role, epoch) */
			size_t mid = lo + (hi - lo) / 2;

			if (cmp_stamp(&cr->stamps[mid], &key) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (d->epoch && lo < cr->nstamps && cr->stamps[lo].role == d->role &&
		    cr->stamps[lo].epoch == d->epoch)
			sp = &cr->stamps[lo];
		if (sp && sp->ns < d->t0) {
			st->det_early++;
			st->errors++;
			printf("crash: %s: a consumer declared %s %u (epoch %#llx) dead %.1f us "
			       "before it was killed\n", crash_kind_names[cr->kind],
			       d->role < cr->nprod ? "producer" : "consumer", d->role,
			       (unsigned long long)d->epoch, (double)(d->t0 - sp->ns) / 1e3);
		} else if (sp) {
			sample(&st->s[S_SURVIVOR], sp->ns - d->t0);
			sample(&st->s[S_PEER], sp->ns - d->t0);
			st->det_doorbell += sp->how == CRASH_DET_DOORBELL;
			st->det_restarted += sp->how == CRASH_DET_RESTARTED;
		} else if (d->watch_ns >= d->t0 && d->watch_ns) {
			sample(&st->s[S_SURVIVOR], d->watch_ns - d->t0);
			sample(&st->s[S_DRIVER], d->watch_ns - d->t0);
		}
	}
}

static void run_kind(const struct opts *o, int kind, uint64_t quota, struct stats *st)
{
	struct crun *cr = calloc(1, sizeof(*cr));
	const char *skip = NULL;
	uint64_t maxseq, size;
	double t0 = stress_now();
	char tag[32];
	int rc;

	cr->o = o;
	cr->kind = kind;
	cr->st = st;
	cr->rng = o->seed * 0x9E3779B97F4A7C15ull + (uint64_t)kind + 1;
	cr->nprod = crash_kind_nprod(kind);
	cr->ncons = crash_kind_ncons(kind);
	cr->nroles = cr->nprod + cr->ncons;
	cr->ewma_drain_us = 500;
	cr->deaths = calloc(MAX_DEATHS, sizeof(*cr->deaths));
	cr->stamps = calloc(MAX_STAMPS, sizeof(*cr->stamps));
	if (!cr->deaths || !cr->stamps) {
		printf("crash: %s: out of memory\n", crash_kind_names[kind]);
		st->errors++;
		free(cr->deaths);
		free(cr->stamps);
		free(cr);
		return;
	}
	cr->recovery = (kind == CRASH_KIND_MPSC || kind == CRASH_KIND_MPMC) && probe_recovery(kind);
	if ((kind == CRASH_KIND_MPSC || kind == CRASH_KIND_MPMC) && !cr->recovery)
		st->skip_note = kind == CRASH_KIND_MPSC
			? "skipped: recovery API not available (portal_ring_recover_producer): "
			  "no random producer kills"
			: "skipped: recovery API not available (portal_ring_recover_producer/"
			  "_consumer): no random kills";
	/* Each round allows `budget` more per producer, a point round that
	 * missed its point a few more. */
	maxseq = (quota + 16) * o->budget * (cr->recovery ? 8 : 3) + 4096;
	size = crash_ledger_size(cr->nprod, maxseq) + (1u << 20);
	/* "shm:portal-crash-<kind>-<pid>": apart from the process tests' names. */
	snprintf(tag, sizeof(tag), "crash-%s", crash_kind_names[kind]);
	rc = driver_setup(&cr->run, tag, size, cr->nroles, 0, &skip);
	if (rc) {
		printf("crash: %s: %s\n", crash_kind_names[kind],
		       skip ? skip : "region set-up failed");
		if (skip)
			printf("skipped: %s\n", skip);
		st->errors += skip ? 0 : 1;
		free(cr->deaths);
		free(cr->stamps);
		free(cr);
		return;
	}
	cr->led = driver_alloc_user(&cr->run, CRASH_LEDGER_NAME, crash_ledger_size(cr->nprod, maxseq));
	if (!cr->led || create_queue(cr)) {
		printf("crash: %s: ledger or queue set-up failed\n", crash_kind_names[kind]);
		st->errors++;
		driver_teardown(&cr->run);
		free(cr->deaths);
		free(cr->stamps);
		free(cr);
		return;
	}
	cr->led->kind = (uint32_t)kind;
	cr->led->nprod = cr->nprod;
	cr->led->ncons = cr->ncons;
	cr->led->maxseq = maxseq;
	cr->led->deliv_off = (sizeof(struct crash_ledger) + 63) & ~(uint64_t)63;
	cr->led->doubt_off = cr->led->deliv_off + cr->nprod * maxseq * 8;
	cr->led->recovery = cr->recovery;
	cr->led->max_msg = CRASH_MSG_MAX;
	for (unsigned p = 0; p < cr->nprod; p++)
		atomic_store_explicit(&cr->led->prod[p].wal_seq, UINT64_MAX, memory_order_relaxed);
	/* Release: the peers find the ledger by its directory entry (itself
	 * published with release); the magic goes last all the same. */
	atomic_thread_fence(memory_order_release);
	cr->led->magic = CRASH_MAGIC;
	for (unsigned i = 0; i < cr->nroles; i++) {
		struct role *r = &cr->roles[i];

		r->producer = i < cr->nprod;
		r->id = r->producer ? i : i - cr->nprod;
		r->side = i + 1;
		r->pidfd = -1;
	}
	while (!cr->fatal && st->injections < quota) {
		if (!one_round(cr))
			break;
		if (o->verbose && st->rounds % 100 == 0)
			printf("crash: %s: %llu rounds, %llu injections\n", crash_kind_names[kind],
			       (unsigned long long)st->rounds, (unsigned long long)st->injections);
	}
	/* Settle: no more allowance; the producers finish and leave, then the
	 * consumers drain and leave. A hang here counts like any other. */
	if (!cr->fatal && !st->hangs) {
		for (unsigned i = 0; i < cr->nroles; i++) {
			cr->roles[i].target = cr->roles[i].snipe = false;
			cr->roles[i].kill_at_ns = 0;
		}
		/* L5: pairs with the peers' acquire of stop / prod_done. */
		atomic_store_explicit(&cr->led->stop, 1, memory_order_release);
		if (run_until(cr, producers_gone, "producers stopping", false)) {
			/* Dead claims of the last producers are recovered by
			 * the consumers before they may leave. */
			atomic_store_explicit(&cr->led->prod_done, 1, memory_order_release);
			run_until(cr, all_gone, "consumers draining", false);
		}
	}
	kill_all(cr);
	collect_stamps(cr);
	final_check(cr);
	match_detections(cr);
	st->seconds = stress_now() - t0;
	driver_teardown(&cr->run);
	free(cr->deaths);
	free(cr->stamps);
	free(cr);
}

/* ------------------------------------------------------------------ */
/* Report                                                              */
/* ------------------------------------------------------------------ */

static uint64_t pct(struct samples *sm, double q)
{
	return sm->n ? sm->v[(size_t)(q * (double)(sm->n - 1) + 0.5)] : 0;
}

static bool report(const char *name, struct stats *st)
{
	static const char *const sname[S_COUNT] = { "survivor", "peer", "driver_watch", "pidfd" };

	for (int i = 0; i < S_COUNT; i++)
		qsort(st->s[i].v, st->s[i].n, sizeof(uint64_t), cmp_u64);
	printf("crash: kind=%s injections=%llu points=%llu random=%llu both_rounds=%llu "
	       "committed=%llu delivered=%llu lost=%llu duplicated=%llu hangs=%llu errors=%llu "
	       "lost_taken=%llu in_doubt=%llu in_doubt_delivered=%llu skipped_redelivery=%llu "
	       "resumed_commits=%llu in_claim=%llu in_claim_done=%llu poison=%llu recovered=%llu "
	       "doorbell_rescues=%llu "
	       "snipe_missed=%llu point_missed=%llu restarts=%llu detect_n=%zu detect_by_peer=%zu "
	       "detect_p50_us=%.1f detect_p99_us=%.1f detect_max_us=%.1f pidfd_p50_us=%.1f "
	       "pidfd_p99_us=%.1f pidfd_max_us=%.1f seconds=%.1f\n",
	       name, (unsigned long long)st->injections, (unsigned long long)st->by_point,
	       (unsigned long long)st->by_random, (unsigned long long)st->both_rounds,
	       (unsigned long long)st->committed, (unsigned long long)st->delivered,
	       (unsigned long long)st->lost, (unsigned long long)st->duplicated,
	       (unsigned long long)st->hangs, (unsigned long long)st->errors,
	       (unsigned long long)st->lost_taken, (unsigned long long)st->in_doubt,
	       (unsigned long long)st->doubt_delivered, (unsigned long long)st->skipped,
	       (unsigned long long)st->resumed, (unsigned long long)st->in_claim,
	       (unsigned long long)st->in_claim_done,
	       (unsigned long long)st->poison,
	       (unsigned long long)st->recovered, (unsigned long long)st->rescues,
	       (unsigned long long)st->snipe_missed, (unsigned long long)st->point_missed,
	       (unsigned long long)st->restarts, st->s[S_SURVIVOR].n, st->s[S_PEER].n,
	       pct(&st->s[S_SURVIVOR], 0.5) / 1e3, pct(&st->s[S_SURVIVOR], 0.99) / 1e3,
	       pct(&st->s[S_SURVIVOR], 1.0) / 1e3, pct(&st->s[S_PIDFD], 0.5) / 1e3,
	       pct(&st->s[S_PIDFD], 0.99) / 1e3, pct(&st->s[S_PIDFD], 1.0) / 1e3, st->seconds);
	printf("crash: kind=%s points:", name);
	for (int p = 1; p < CRASH_PT_COUNT; p++)
		printf(" %s=%llu", crash_point_names[p], (unsigned long long)st->point_hits[p]);
	printf("\n");
	/* Who detected, and how fast: a consumer (by its doorbell wait or its
	 * watch_status; "restarted" = it looked only after the successor had
	 * attached), the driver's watch, the driver's pidfd. */
	printf("crash: kind=%s detection:", name);
	for (int i = S_PEER; i < S_COUNT; i++)
		printf(" %s n=%zu p50=%.1f p99=%.1f max=%.1f us;", sname[i], st->s[i].n,
		       pct(&st->s[i], 0.5) / 1e3, pct(&st->s[i], 0.99) / 1e3,
		       pct(&st->s[i], 1.0) / 1e3);
	printf(" by_doorbell=%llu by_restarted=%llu early=%llu watch_false_dead=%llu "
	       "watch_missed=%llu attach_eproto=%llu\n",
	       (unsigned long long)st->det_doorbell, (unsigned long long)st->det_restarted,
	       (unsigned long long)st->det_early, (unsigned long long)st->watch_false,
	       (unsigned long long)st->watch_missed, (unsigned long long)st->attach_eproto);
	if (st->skip_note)
		printf("crash: kind=%s %s\n", name, st->skip_note);
	return st->lost == 0 && st->duplicated == 0 && st->hangs == 0 && st->errors == 0;
}

static void add_stats(struct stats *a, const struct stats *b)
{
	a->injections += b->injections, a->by_point += b->by_point, a->by_random += b->by_random;
	a->both_rounds += b->both_rounds, a->rounds += b->rounds;
	a->in_claim += b->in_claim, a->in_claim_done += b->in_claim_done;
	a->snipe_missed += b->snipe_missed;
	a->point_missed += b->point_missed;
	for (int p = 0; p < CRASH_PT_COUNT; p++)
		a->point_hits[p] += b->point_hits[p];
	a->committed += b->committed, a->delivered += b->delivered, a->lost += b->lost;
	a->lost_taken += b->lost_taken, a->duplicated += b->duplicated, a->hangs += b->hangs;
	a->errors += b->errors, a->in_doubt += b->in_doubt;
	a->doubt_delivered += b->doubt_delivered, a->phantom += b->phantom;
	a->skipped += b->skipped, a->poison += b->poison, a->recovered += b->recovered;
	a->rescues += b->rescues, a->resumed += b->resumed, a->bad += b->bad;
	a->restarts += b->restarts, a->seconds += b->seconds;
	a->det_doorbell += b->det_doorbell, a->det_restarted += b->det_restarted;
	a->det_early += b->det_early, a->watch_false += b->watch_false;
	a->watch_missed += b->watch_missed, a->attach_eproto += b->attach_eproto;
	for (int i = 0; i < S_COUNT; i++)
		for (size_t j = 0; j < b->s[i].n; j++)
			sample(&a->s[i], b->s[i].v[j]);
}

static bool stats_alloc(struct stats *st)
{
	for (int i = 0; i < S_COUNT; i++)
		if (!(st->s[i].v = calloc(MAX_SAMPLES, sizeof(uint64_t))))
			return false;
	return true;
}

static void stats_free(struct stats *st)
{
	for (int i = 0; i < S_COUNT; i++)
		free(st->s[i].v);
}

static int parse(struct opts *o, int argc, char **argv)
{
	o->injections = driver_env_count("PORTAL_CRASH_INJECTIONS", 300);
	o->kinds = (1u << CRASH_KIND_COUNT) - 1;
	o->budget = 256;
	o->seed = (uint64_t)getpid();
	o->hang_s = 10;
	o->watch = true;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "-v")) {
			o->verbose = true;
			continue;
		}
		if (!v)
			return -1;
		i++;
		if (!strcmp(a, "--injections")) {
			o->injections = strtoull(v, NULL, 0);
		} else if (!strcmp(a, "--budget")) {
			o->budget = (uint32_t)strtoul(v, NULL, 0);
		} else if (!strcmp(a, "--seed")) {
			o->seed = strtoull(v, NULL, 0);
		} else if (!strcmp(a, "--hang-seconds")) {
			o->hang_s = strtod(v, NULL);
		} else if (!strcmp(a, "--sabotage")) {
			if (strcmp(v, "lose") && strcmp(v, "dup"))
				return -1;
			o->sabotage = v;
		} else if (!strcmp(a, "--detect")) {
			if (strcmp(v, "pidfd") && strcmp(v, "watch"))
				return -1;
			o->watch = !strcmp(v, "watch");
		} else if (!strcmp(a, "--kinds")) {
			char buf[128], *save, *t;

			snprintf(buf, sizeof(buf), "%s", v);
			o->kinds = 0;
			for (t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				int k = crash_kind_parse(t);

				if (k < 0)
					return -1;
				o->kinds |= 1u << k;
			}
		} else {
			return -1;
		}
	}
	return o->injections && o->budget && o->kinds && o->hang_s > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct stats all = { 0 };
	unsigned nk = 0, k_i = 0;
	bool ok = true;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse(&o, argc, argv)) {
		fprintf(stderr, "usage: portal_crash [--injections N] [--kinds spsc,msg,msg_block,"
				"mpsc,mpmc] [--budget B] [--seed S] [--detect watch|pidfd] "
				"[--hang-seconds T] [--sabotage lose|dup] [-v]\n");
		return 2;
	}
	if (!getenv("PORTAL_TEST_BINDIR") || !*getenv("PORTAL_TEST_BINDIR")) {
		printf("skipped: PORTAL_TEST_BINDIR is not set (run through ctest)\n");
		return 77;
	}
	if (!stats_alloc(&all)) {
		printf("crash: out of memory\n");
		return 1;
	}
	for (int k = 0; k < CRASH_KIND_COUNT; k++)
		nk += (o.kinds >> k) & 1;
	printf("crash: seed=%llu injections=%llu kinds=%u budget=%u detect=%s\n",
	       (unsigned long long)o.seed, (unsigned long long)o.injections, nk, o.budget,
	       o.watch ? "watch" : "pidfd");
	for (int k = 0; k < CRASH_KIND_COUNT; k++) {
		struct stats st = { 0 };
		uint64_t quota;

		if (!((o.kinds >> k) & 1))
			continue;
		quota = o.injections / nk + (k_i++ < o.injections % nk ? 1 : 0);
		if (!stats_alloc(&st)) {
			printf("crash: out of memory\n");
			return 1;
		}
		run_kind(&o, k, quota, &st);
		ok &= report(crash_kind_names[k], &st);
		add_stats(&all, &st);
		stats_free(&st);
	}
	ok &= report("all", &all);
	stats_free(&all);
	return ok ? 0 : 1;
}
