/*
 * ring_doorbell.pml - a Spin model of Portal's SPSC descriptor ring and of the
 * doorbell's wait/notify protocol, as one producer and one consumer use them.
 *
 *   ring/ring.c          portal_ring_enqueue_burst_sp, portal_ring_dequeue_burst_sc,
 *                        refresh_cons, refresh_prod, copy_in, copy_out,
 *                        quarantine, portal_ring_count
 *   doorbell/doorbell.c  portal_doorbell_notify (D2, D3), portal_doorbell_wait,
 *                        spin_phase, arm_and_check (D0, D1), disarm (D4)
 *   doorbell/futex.c     futex_ring (FUTEX_WAKE), futex_sleep (FUTEX_WAIT_BITSET)
 *   stress/peer_stress.c ring_producer / ring_consumer and ready_data(): the loop
 *                        that drives them (enqueue then notify; dequeue, and
 *                        wait with ready = portal_ring_count when empty)
 *
 * Every statement below names the C function (and label, where the C code
 * has one) it models. See model/README.md for the properties, the variants
 * and what is left out. Variants, chosen with -D at `spin -a` time:
 *
 *   (none)             honest producer, honest consumer
 *   CRASH              either peer may stop forever at any statement; the
 *                      waiter's sleep has a finite timeout
 *   CRASH NO_TIMEOUT   the same with an infinite timeout: expected to strand
 *                      the consumer (shows why bounded waits are needed)
 *   MAL_PRODUCER       the producer is hostile: it writes anything, any time,
 *                      into prod_tail, the slots and wake_seq, and wakes the
 *                      futex at will; the consumer is honest
 *   MAL_CONSUMER       the consumer is hostile: anything into cons_tail and
 *                      armed; the producer is honest
 *   BUG_NO_BOUND_CHECK refresh_prod() without `prod - pos > capacity`
 *   BUG_PUBLISH_ORDER  enqueue stores prod_tail (R1) before copy_in()
 *   BUG_NO_RECHECK     arm_and_check() without the ready() after the fence
 *   NO_DETECT_ASSERT   leave out the "bad index accepted" specification, so
 *                      that only the memory-safety assertions remain
 *   TSO                stores to prod_tail and armed go through store buffers
 *                      (x86-TSO); the seq_cst fences D1 and D2 drain them
 *   BUG_NO_FENCE_D1    (with TSO) arm_and_check() without its fence
 *   BUG_NO_FENCE_D2    (with TSO) portal_doorbell_notify() without its fence
 *   WITNESS            assert that no quarantine ever happens: with a hostile
 *                      peer this must fail, which shows the check is reached
 *   NO_WATCHDOG        leave out the end-state monitor (for the LTL runs)
 *   NO_SPIN_PHASE      leave out the optional look of spin_phase()
 */

#if defined(MAL_PRODUCER) || defined(MAL_CONSUMER)
#define MALICIOUS 1
#endif
#if defined(CRASH) && !defined(NO_TIMEOUT)
#define HAS_TIMEOUT 1
#endif
#if defined(MAL_PRODUCER)
#define HAS_TIMEOUT 1
#endif

/* ---- sizes (small on purpose; the README says why they are enough) ---- */
#ifndef CAP
#define CAP 2            /* ring capacity: a power of two, as params_ok() wants */
#endif
#define MASK (CAP - 1)   /* struct portal_ring.mask */
#ifndef POSMOD
#define POSMOD 8         /* positions are uint64_t in C; 3-bit counters here */
#endif
#ifndef SEQMOD
#define SEQMOD 4         /* wake_seq is uint32_t in C; 2-bit here. Up to CAP + 1
                          * rings fit between D0 and the futex compare, so the
                          * word must not wrap in fewer: README "Findings" */
#endif
#ifndef NMSG
#define NMSG 4           /* messages the producer sends */
#endif
#ifndef START
#define START (POSMOD - 2) /* both tails start here: the run crosses the wrap */
#endif
#ifndef SPURIOUS
#if defined(HAS_TIMEOUT) || defined(MAL_PRODUCER)
#define SPURIOUS 0       /* a timeout (or the hostile producer's FUTEX_WAKE)
                          * can end any sleep already, and does more */
#else
#define SPURIOUS 1       /* spurious futex returns (or EINTR) allowed per run */
#endif
#endif

/* Largest burst a caller asks for. Facing a hostile peer the caller asks for
 * more than the ring holds (a caller's buffer can be any size): that is what
 * would make an unchecked index an out-of-bounds access in copy_out() or
 * copy_in(). Between honest peers a request above CAP behaves exactly like
 * one of CAP (the cached peer index is already exact when a refresh could
 * not find more), so CAP is enough there. */
#ifdef MAL_PRODUCER
#define CBURST (CAP + 2)
#else
#define CBURST CAP
#endif
#ifdef MAL_CONSUMER
#define PBURST (CAP + 2)
#else
#define PBURST CAP
#endif

#define EPROTO    (-71)  /* PORTAL_EPROTO */
#define ETIMEDOUT (-110)

/* uint64_t arithmetic, modulo POSMOD (POSMOD is a multiple of CAP, as 2^64 is) */
#define SUB(a, b) (((a) + POSMOD - (b)) % POSMOD)
#define ADD(a, b) (((a) + (b)) % POSMOD)


/* ---- shared memory: struct portal_ring_hdr (region-format.md 6.1) ---- */
byte prod_tail = START;      /* writer: producer. R1 release / A1 acquire */
byte cons_tail = START;      /* writer: consumer. R2 release / A2 acquire */
byte slot[CAP] = 255;        /* writer: producer. A message number; 255 = never written */

/* ---- shared memory: struct portal_doorbell_shm (region-format.md 6.5) ---- */
bit  armed;                  /* writer: waiter (the consumer) */
byte wake_seq;               /* writer: notifier (the producer); wraps at SEQMOD */

#ifdef TSO
/* ---- TSO: one-entry store buffers for the two stores of the Dekker
 * pattern, producer's prod_tail (R1) and waiter's armed (D1, D4); drained
 * by Drain below at any time, and by the fences D2 and D1 ---- */
bool p_sb_full;
byte p_sb_val;
bool c_sb_full;
bit  c_sb_val;
#endif

/* ---- kernel: the futex wait queue on wake_seq (one waiter) ---- */
bool queued;                 /* the consumer is inside FUTEX_WAIT */

/* ---- private handles (struct portal_ring), global only so that the
 * properties can name them; each is written by its own process only ---- */
byte c_pos = START;          /* consumer: r->pos (authoritative) */
byte c_peer = START;         /* consumer: r->peer, cached prod_tail */
bool c_quar;                 /* consumer: r->quarantined */
byte p_pos = START;          /* producer: r->pos */
byte p_peer = START;         /* producer: r->peer, cached cons_tail */
bool p_quar;                 /* producer: r->quarantined */

/* ---- ghosts: not in the C code, only for the properties ---- */
byte wrote_pos[CAP] = 255;   /* position whose copy_in() into this slot finished */
byte published;              /* messages the producer has published (R1) */
byte p_sent;                 /* producer: messages enqueued (its stamp counter) */
byte c_got;                  /* consumer: messages copied out */
bool c_done, p_done;         /* the process left its loop */
bool c_dead, p_dead;         /* CRASH: the process stopped forever */
bool c_gave_up;              /* CRASH: consumer stopped after its producer died */
byte spurious_left = SPURIOUS;

/* Named properties: each is set and asserted in one atomic step, so in
 * every stored state it is false; the violated assertion names it. */
bool read_out_of_bounds;     /* copy_out() touched a slot index >= capacity */
bool read_unpublished;       /* consumer copied a slot whose copy_in() had not finished */
bool read_out_of_order;      /* consumer got a message other than the next one */
bool wrote_out_of_bounds;    /* copy_in() touched a slot index >= capacity */
bool overwrote_unread;       /* producer wrote a slot the consumer had not read yet */
bool bad_index_accepted;     /* a peer index out of range was used, not quarantined */
bool took_more_than_ring;    /* a burst larger than the capacity was acted on */
bool false_quarantine;       /* an honest (or merely dead) peer caused a quarantine */
bool lost_wakeup;            /* all stopped: consumer asleep, a message published */
bool consumer_stuck;         /* all stopped: consumer neither done nor dead */
bool producer_stuck;         /* all stopped: producer not done (MAL_CONSUMER) */
bool message_lost;           /* consumer gave up with published messages unread */
bool quarantine_reached;     /* WITNESS: a quarantine happened (shows it is reachable) */

/* ==================================================================== */
/* Consumer side                                                         */
/* ==================================================================== */

/* The second half of refresh_prod()'s check: prod - pos > capacity.
 * BUG_NO_BOUND_CHECK seeds its removal. */
#ifdef BUG_NO_BOUND_CHECK
#define PROD_AHEAD(v, pos) false
#else
#define PROD_AHEAD(v, pos) (SUB(v, pos) > CAP)
#endif

/* ring.c refresh_prod(r, pos): re-read the producer tail, check, cache. */
inline refresh_prod(rc)
{
	/* refresh_prod, A1: prod = load prod_tail (acquire); read once */
	c_v = prod_tail;
	d_step {
		c_bad = (SUB(c_v, c_peer) > CAP || SUB(c_v, c_pos) > CAP);
		/* refresh_prod: PORTAL_NEVER(prod - r->peer > capacity ||
		 *                            prod - pos > capacity) */
		if
		:: (SUB(c_v, c_peer) > CAP || PROD_AHEAD(c_v, c_pos)) ->
			/* quarantine(): r->quarantined = true */
			c_quar = true;
			rc = EPROTO
		:: else ->
			/* refresh_prod: r->peer = prod */
			c_peer = c_v;
			rc = 0
		fi;
#ifndef NO_DETECT_ASSERT
		bad_index_accepted = (c_bad && !c_quar);
		assert(!bad_index_accepted);
#endif
#ifndef MAL_PRODUCER
		false_quarantine = c_quar;
		assert(!false_quarantine);
#endif
#ifdef WITNESS
		quarantine_reached = c_quar;    /* expected to fail: reachability */
		assert(!quarantine_reached);
#endif
		c_bad = false;
		c_v = 0
	}
}

/* stress ready_data() -> ring.c portal_ring_count(), single-consumer path:
 * > 0 work, 0 none, EPROTO quarantined. */
inline ready_data(r)
{
	if
	:: c_quar -> r = EPROTO                 /* portal_ring_count: quarantined */
	:: else ->
		refresh_prod(r);                /* portal_ring_count: refresh_prod(r, r->pos) */
		if
		:: r == 0 && c_peer != c_pos -> r = 1   /* ready_data: n > 0 ? 1 */
		:: else -> skip
		fi
	fi
}

/* ring.c copy_out(): one slot of the burst; slot c_i of [pos, pos + n) */
inline read_slot()
{
	d_step {
		/* copy_out: idx = pos & mask; first = capacity - idx; the first
		 * part from idx, the rest from slot 0 */
		c_idx = c_pos & MASK;
		c_off = (c_i < CAP - c_idx -> c_idx + c_i : c_i - (CAP - c_idx));
		read_out_of_bounds = (c_off >= CAP);
		assert(!read_out_of_bounds);
#ifndef MAL_PRODUCER
		c_q = ADD(c_pos, c_i);
		read_unpublished = (wrote_pos[c_off] != c_q);
		assert(!read_unpublished);
		read_out_of_order = (slot[c_off] != c_got);
		assert(!read_out_of_order);
#endif
		c_got++;
		c_idx = 0;
		c_off = 0;
		c_q = 0
	}
}

/* ring.c portal_ring_dequeue_burst_sc(r, objs, want) */
inline dequeue_sc(want, rc)
{
	if
	:: c_quar -> rc = EPROTO                /* CHECK_CALL: quarantined */
	:: else ->
		c_avail = SUB(c_peer, c_pos);   /* avail = r->peer - pos */
		rc = 0;
		if
		:: c_avail < want ->
			refresh_prod(rc);       /* rc = refresh_prod(r, pos) */
			if
			:: rc == 0 -> c_avail = SUB(c_peer, c_pos)
			:: else -> skip
			fi
		:: else -> skip
		fi;
		if
		:: rc == 0 ->
			d_step {
				/* if (n > avail) n = avail */
				if
				:: want < c_avail -> c_n = want
				:: else -> c_n = c_avail
				fi;
				c_avail = 0;
#ifndef NO_DETECT_ASSERT
				took_more_than_ring = (c_n > CAP);
				assert(!took_more_than_ring)
#endif
			}
			if
			:: c_n == 0 -> skip     /* st.empty++; return 0 */
			:: else ->
				/* copy_out(r, pos, objs, n) */
				c_i = 0;
				do
				:: c_i < c_n -> read_slot(); c_i++
				:: else ->
					/* r->pos = pos + n */
					d_step { c_pos = ADD(c_pos, c_n); c_i = 0 };
					break
				od;
				/* R2: cons_tail = pos + n (release); slots read, then
				 * the tail; pairs with A2 in refresh_cons */
				cons_tail = c_pos;
				rc = c_n;
				c_n = 0
			fi
		:: else -> skip
		fi
	fi
}

/* A relaxed store to `armed` (D1 arm, D4 disarm). Under TSO it goes
 * through the waiter's store buffer (one entry: a second store waits for
 * the first to drain, which keeps every value visible in order). */
inline store_armed(val)
{
#ifdef TSO
	atomic { !c_sb_full -> c_sb_val = val; c_sb_full = true }
#else
	armed = val
#endif
}

/* doorbell.c portal_doorbell_wait(d, ready_data, q, timeout); returns
 * done(r) (0), EPROTO or ETIMEDOUT in rc. */
inline doorbell_wait(rc)
{
	/* portal_doorbell_wait: r = ready(arg) */
	ready_data(r);
	if
	:: r == 0 ->
		/* spin_phase(): ready() with backoff until spin_ns is over;
		 * the stress consumer sets spin_ns < 0 (no spin), the
		 * default spins: zero or one more look covers both */
#ifndef NO_SPIN_PHASE
		if
		:: skip
		:: true -> ready_data(r)        /* (a guard first: Spin would
		                                 * otherwise lift ready_data's
		                                 * `else` into this `if`) */
		fi
#else
		skip
#endif
	:: else -> skip
	fi;
	if
	:: r != 0 -> skip
	:: else ->
		do
		::
		/* arm_and_check, D0: seq = wake_seq (acquire); pairs with D3 */
		seq = wake_seq;
		/* arm_and_check, D1: armed = 1 (relaxed), then fence(seq_cst).
		 * Spin's interleavings are sequentially consistent, so without
		 * TSO the fence is implicit: see README "Memory model" */
		store_armed(1);
#if defined(TSO) && !defined(BUG_NO_FENCE_D1)
		(!c_sb_full);                   /* D1: the fence drains the buffer */
#endif
#ifndef BUG_NO_RECHECK
		/* arm_and_check: r = ready(arg); if (r) disarm() (D4) */
		ready_data(r);
		if
		:: r != 0 -> store_armed(0); break
		:: else -> skip
		fi;
#endif
		/* futex.c futex_sleep: FUTEX_WAIT_BITSET(&wake_seq, seq): the
		 * kernel compares the word and queues the waiter atomically */
		atomic {
			if
			:: wake_seq != seq -> sr = 0        /* EAGAIN: moved already */
			:: else -> queued = true
			fi
		}
		/* futex_sleep: asleep until FUTEX_WAKE; a return may also be
		 * spurious (or EINTR), or, with a deadline, ETIMEDOUT */
		if
		:: !queued -> sr = 0
		:: atomic { queued && spurious_left > 0 ->
			spurious_left--; queued = false; sr = 0 }
#ifdef HAS_TIMEOUT
		:: atomic { queued -> queued = false; sr = ETIMEDOUT }
#endif
		fi;
		/* portal_doorbell_wait: disarm() after the sleep, D4: armed = 0 */
		store_armed(0);
		/* portal_doorbell_wait: r = ready(arg) once more */
		ready_data(r);
		if
		:: r != 0 -> break
		:: else -> skip
		fi;
		if
		:: sr == ETIMEDOUT -> break     /* -ETIMEDOUT */
		:: else -> skip                 /* st.spurious++; arm again */
		fi;
		seq = 0
		od
	fi;
	atomic {        /* atomic, not d_step: the loop's breaks land here */
		/* done(r): r > 0 ? 0 : r */
		if
		:: r > 0 -> rc = 0
		:: r < 0 -> rc = r
		:: else -> rc = sr               /* r == 0 only on a timeout */
		fi;
		r = 0;
		sr = 0;
		seq = 0
	}
}

/* stress ring_consumer(): dequeue; when empty, wait for data */
proctype Consumer()
{
	short rc, r, sr;
	byte want, seq;
	byte c_v, c_avail, c_n, c_i, c_idx, c_off, c_q;
	bool c_bad;
#ifdef CRASH
	bool dead_seen;
#endif
	{
	do
	:: c_got >= NMSG -> break
	:: else ->
#ifdef CRASH
		/* not in the C code yet (liveness is a later layer): learn
		 * whether the producer is gone, before looking at the ring */
		dead_seen = p_dead;
#endif
		/* the burst the caller asks for: 1 .. CBURST */
		atomic {
			want = 1;
			do
			:: want < CBURST -> want++
			:: break
			od
		};
		dequeue_sc(want, rc);
		want = 0;
		if
		:: rc < 0 -> break              /* EPROTO: fail("dequeue") */
		:: rc > 0 ->
progress_deq:		skip
		:: else ->
#ifdef CRASH
			if
			:: dead_seen ->
				/* the producer died before this dequeue found the
				 * ring empty: nothing published is left behind */
				d_step {
					message_lost = (c_got != published);
					assert(!message_lost);
					c_gave_up = true
				}
				break
			:: else -> skip
			fi;
#endif
			doorbell_wait(rc);
			if
			:: rc == EPROTO -> break        /* fail("wait for data") */
#if defined(HAS_TIMEOUT) && !defined(CRASH)
			:: rc == ETIMEDOUT -> break     /* fail("wait for data") */
#endif
			:: else -> skip     /* CRASH: after a timeout, look again */
			fi
		fi;
		rc = 0
	od;
	c_done = true
	} unless { c_dead }
}

/* ==================================================================== */
/* Producer side                                                         */
/* ==================================================================== */

/* ring.c refresh_cons(r, pos): re-read the consumer tail, check, cache. */
inline refresh_cons(rc)
{
	/* refresh_cons, A2: cons = load cons_tail (acquire); read once */
	p_v = cons_tail;
	d_step {
		p_bad = (SUB(p_v, p_peer) > CAP || SUB(p_pos, p_v) > CAP);
		/* refresh_cons: PORTAL_NEVER(cons - r->peer > capacity ||
		 *                            pos - cons > capacity) */
		if
		:: (SUB(p_v, p_peer) > CAP || SUB(p_pos, p_v) > CAP) ->
			p_quar = true;          /* quarantine() */
			rc = EPROTO
		:: else ->
			p_peer = p_v;           /* r->peer = cons */
			rc = 0
		fi;
#ifndef NO_DETECT_ASSERT
		bad_index_accepted = (p_bad && !p_quar);
		assert(!bad_index_accepted);
#endif
#ifndef MAL_CONSUMER
		false_quarantine = p_quar;
		assert(!false_quarantine);
#endif
#ifdef WITNESS
		quarantine_reached = p_quar;    /* expected to fail: reachability */
		assert(!quarantine_reached);
#endif
		p_bad = false;
		p_v = 0
	}
}

/* ring.c copy_in(): one slot of the burst; slot p_i of [pos, pos + n) */
inline write_slot()
{
	d_step {
		/* copy_in: idx = pos & mask; first = capacity - idx */
		p_idx = p_pos & MASK;
		p_off = (p_i < CAP - p_idx -> p_idx + p_i : p_i - (CAP - p_idx));
		wrote_out_of_bounds = (p_off >= CAP);
		assert(!wrote_out_of_bounds);
		p_q = ADD(p_pos, p_i);
#ifndef MAL_CONSUMER
		/* the consumer has copied out every position below c_pos */
		overwrote_unread = (SUB(p_q, c_pos) >= CAP);
		assert(!overwrote_unread);
#endif
		slot[p_off] = p_sent + p_i;     /* the element: its stamp */
		wrote_pos[p_off] = p_q;
		p_idx = 0;
		p_off = 0;
		p_q = 0
	}
}

/* R1: prod_tail = pos + n (release); slots written, then the tail; pairs
 * with A1 in refresh_prod */
inline publish()
{
#ifdef TSO
	/* the store waits in the producer's store buffer */
	atomic { !p_sb_full -> p_sb_val = ADD(p_pos, p_n); p_sb_full = true;
		 published = published + p_n }
#else
	d_step { prod_tail = ADD(p_pos, p_n); published = published + p_n }
#endif
}

/* ring.c portal_ring_enqueue_burst_sp(r, objs, want) */
inline enqueue_sp(want, rc)
{
	if
	:: p_quar -> rc = EPROTO                /* CHECK_CALL: quarantined */
	:: else ->
		/* room = r->peer + capacity - pos */
		p_room = SUB(ADD(p_peer, CAP), p_pos);
		rc = 0;
		if
		:: p_room < want ->
			refresh_cons(rc);       /* rc = refresh_cons(r, pos) */
			if
			:: rc == 0 -> p_room = SUB(ADD(p_peer, CAP), p_pos)
			:: else -> skip
			fi
		:: else -> skip
		fi;
		if
		:: rc == 0 ->
			d_step {
				/* if (n > room) n = room */
				if
				:: want < p_room -> p_n = want
				:: else -> p_n = p_room
				fi;
				p_room = 0;
#ifndef NO_DETECT_ASSERT
				took_more_than_ring = (p_n > CAP);
				assert(!took_more_than_ring)
#endif
			}
			if
			:: p_n == 0 -> skip     /* st.full++; return 0 */
			:: else ->
#ifdef BUG_PUBLISH_ORDER
				publish();      /* BUG: the tail before the slots */
#endif
				/* copy_in(r, pos, objs, n) */
				p_i = 0;
				do
				:: p_i < p_n -> write_slot(); p_i++
				:: else -> break
				od;
				p_i = 0;
#ifndef BUG_PUBLISH_ORDER
				publish();
#endif
				/* r->pos = pos + n (private; merged with nothing
				 * shared, so its place among the steps is free) */
				d_step { p_pos = ADD(p_pos, p_n); rc = p_n; p_n = 0 }
			fi
		:: else -> skip
		fi
	fi
}

/* doorbell.c portal_doorbell_notify(d) */
inline doorbell_notify()
{
	/* notify, D2: fence(seq_cst), then load armed (relaxed); pairs with
	 * D1. armed == 0: return 0, no system call */
#if defined(TSO) && !defined(BUG_NO_FENCE_D2)
	(!p_sb_full);                           /* D2: the fence drains the buffer */
#endif
	if
	:: armed == 0 -> skip
	:: else ->
		/* notify, D3: wake_seq += 1 (release, atomic add); pairs with D0 */
		wake_seq = (wake_seq + 1) % SEQMOD;
		/* futex_ring: FUTEX_WAKE(&wake_seq, INT_MAX) */
		queued = false
	fi
}

/* stress ring_producer(): enqueue a burst, then notify */
proctype Producer()
{
	short rc;
	byte want;
	byte p_v, p_room, p_n, p_i, p_idx, p_off, p_q;
	bool p_bad;
#ifdef CRASH
	bool p_dead_seen;
#endif
	{
	do
	:: p_sent >= NMSG -> break
	:: else ->
		/* the burst: 1 .. PBURST, at most what is left to send */
		atomic {
			want = 1;
			do
			:: want < PBURST -> want++
			:: break
			od
		};
		if
		:: want > NMSG - p_sent -> want = NMSG - p_sent
		:: else -> skip
		fi;
		enqueue_sp(want, rc);
		want = 0;
		if
		:: rc < 0 -> break              /* EPROTO: fail("enqueue") */
		:: rc > 0 ->
progress_enq:		p_sent = p_sent + rc;
			doorbell_notify()
		:: else ->
			/* Full: the stress producer waits for space on a second
			 * doorbell with the roles swapped, with ready_space():
			 * pos - cons_tail < capacity. That doorbell is the same
			 * protocol and is not modelled again: the wait is ideal
			 * (it returns once ready_space() holds). See README. */
			if
			:: SUB(p_pos, cons_tail) < CAP -> skip
#if defined(CRASH) && !defined(NO_TIMEOUT)
			:: p_dead_seen = c_dead;        /* the deadline passed; */
			   if                           /* is the consumer gone? */
			   :: p_dead_seen -> break       /* give up (-EPIPE) */
			   :: else -> skip               /* look again */
			   fi;
			   p_dead_seen = false
#endif
#ifdef MAL_CONSUMER
			:: break        /* the deadline passed: fail("wait for space") */
#endif
			fi
		fi;
		rc = 0
	od;
	p_done = true
	} unless { p_dead }
}

/* ==================================================================== */
/* Hostile peers                                                         */
/* ==================================================================== */

#ifdef MAL_PRODUCER
/* A producer that writes anything, any time, into what it owns. */
proctype MalProducer()
{
	byte v, k;
	do
	:: atomic {                     /* prod_tail = any 3-bit value */
		v = 0;
		do
		:: v < POSMOD - 1 -> v++
		:: break
		od;
		prod_tail = v;
		v = 0 }
	:: atomic {                     /* any slot = any contents */
		v = 0;
		do
		:: v < CAP - 1 -> v++
		:: break
		od;
		k = v;
		v = 0;
		do
		:: v < NMSG -> v++
		:: break
		od;
		slot[k] = v;
		k = 0;
		v = 0 }
	:: wake_seq = (wake_seq + 1) % SEQMOD   /* any wake_seq, by steps */
	:: queued = false               /* FUTEX_WAKE whenever it likes */
	:: break                        /* and stops at any time */
	od
}
#endif

#ifdef MAL_CONSUMER
/* A consumer that writes anything, any time, into what it owns. */
proctype MalConsumer()
{
	byte v;
	do
	:: atomic {                     /* cons_tail = any 3-bit value */
		v = 0;
		do
		:: v < POSMOD - 1 -> v++
		:: break
		od;
		cons_tail = v;
		v = 0 }
	:: armed = 0
	:: armed = 1
	:: break
	od
}
#endif

#ifdef TSO
/* The memory system: a buffered store becomes visible at any time. */
active proctype Drain()
{
end_drain:
	do
	:: atomic { p_sb_full -> prod_tail = p_sb_val; p_sb_full = false; p_sb_val = 0 }
	:: atomic { c_sb_full -> armed = c_sb_val; c_sb_full = false; c_sb_val = 0 }
	od
}
#endif

#ifdef CRASH
/* Stops one peer forever, at any point of the run (or neither). */
active proctype Crasher()
{
	if
	:: skip
	:: atomic { !p_done -> p_dead = true }
	:: atomic { !c_done -> c_dead = true }
	fi
}
#endif

/* Not in the C code: Spin's `timeout` is true when no process can move.
 * Then, unless a peer is hostile, the consumer must have finished. Left
 * out (NO_WATCHDOG) in the LTL runs, so that they stand on their own. */
#ifndef NO_WATCHDOG
active proctype Watchdog()
{
	timeout ->
	d_step {
#ifndef MALICIOUS
		lost_wakeup = (queued && prod_tail != c_pos && !p_dead);
		assert(!lost_wakeup);
		consumer_stuck = !c_done && !c_dead;
		assert(!consumer_stuck);
#ifndef CRASH
		consumer_stuck = (c_got != NMSG);
		assert(!consumer_stuck);
#endif
#elif defined(MAL_PRODUCER)
		/* the consumer's waits are bounded: it always gets out */
		consumer_stuck = !c_done;
		assert(!consumer_stuck);
#else
		/* the producer's waits are bounded: it always gets out */
		producer_stuck = !p_done;
		assert(!producer_stuck);
#endif
		skip
	}
}
#endif

init
{
	atomic {
#ifdef MAL_PRODUCER
		run MalProducer();
#else
		run Producer();
#endif
#ifdef MAL_CONSUMER
		run MalConsumer()
#else
		run Consumer()
#endif
	}
}

/* ---- liveness, honest model only: build pan without -DNOCLAIM, run
 * pan -a -f -N <name> (weak fairness); with NO_WATCHDOG, see run.sh ---- */
#if !defined(MALICIOUS) && !defined(CRASH)
/* A consumer asleep while a published message waits is woken eventually. */
ltl no_lost_wakeup { [] ((queued && prod_tail != c_pos) -> <> !queued) }
/* Every message is delivered: the consumer finishes with all NMSG. */
ltl all_delivered { <> (c_done && c_got == NMSG) }
#endif
